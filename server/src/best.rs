//! The best evaluation of a run so far, and early stopping on it (the Trainer's
//! `metric_for_best_model`, `EarlyStoppingCallback` and `load_best_model_at_end`).

use glmtune_shared::api::BestMetric;
use glmtune_shared::run_log::{EvalRow, LogRow};

/// What a run tracks when it keeps its best checkpoint or stops early.
#[derive(Debug, Clone)]
pub struct Best {
    metric: BestMetric,
    patience: Option<u64>,
    /// The best evaluation's step and value.
    best: Option<(u64, f64)>,
    /// Evaluations since the best one.
    since: u64,
}

impl Best {
    pub fn new(metric: BestMetric, patience: Option<u64>) -> Self {
        Best {
            metric,
            patience,
            best: None,
            since: 0,
        }
    }

    /// Takes the evaluations a resumed run's log already holds, in order.
    pub fn replay(&mut self, rows: &[LogRow]) {
        for row in rows {
            if let LogRow::Eval(row) = row {
                self.observe_row(row);
            }
        }
    }

    /// Counts the evaluation at `step`; whether it is the best so far (a NaN never is).
    pub fn observe(&mut self, step: u64, value: f64) -> bool {
        let improved = !value.is_nan()
            && self
                .best
                .is_none_or(|(_, best)| self.metric.better(value, best));
        if improved {
            self.best = Some((step, value));
            self.since = 0;
        } else {
            self.since += 1;
        }
        improved
    }

    /// Counts an evaluation by its value of the metric (one without it never improves).
    pub fn observe_row(&mut self, row: &EvalRow) -> bool {
        self.observe(row.step, self.metric.of(row).unwrap_or(f64::NAN))
    }

    /// The best evaluation's step.
    pub fn step(&self) -> Option<u64> {
        self.best.map(|(step, _)| step)
    }

    /// The best evaluation: its step and value.
    pub fn best(&self) -> Option<(u64, f64)> {
        self.best
    }

    /// Whether `patience` evaluations in a row have not beaten the best.
    pub fn exhausted(&self) -> bool {
        self.patience.is_some_and(|p| self.since >= p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glmtune_shared::run_log::EvalRow;

    #[test]
    fn patience_counts_evaluations_since_the_best_and_replays_a_log() {
        let mut best = Best::new(BestMetric::EvalLoss, Some(2));
        let losses = [3.0, 2.0, 2.5, 1.5, 1.6, f64::NAN];
        let mut seen = Vec::new();
        for (i, &loss) in losses.iter().enumerate() {
            seen.push((best.observe(i as u64 + 1, loss), best.exhausted()));
        }
        assert_eq!(
            seen,
            [
                (true, false),
                (true, false),
                (false, false),
                (true, false),
                (false, false),
                (false, true)
            ]
        );
        assert_eq!(best.step(), Some(4));
        let rows: Vec<LogRow> = losses[..5]
            .iter()
            .enumerate()
            .map(|(i, &eval_loss)| {
                LogRow::Eval(EvalRow {
                    step: i as u64 + 1,
                    eval_loss,
                    best_step: None,
                    forgetting_kl: None,
                    forgetting_logprob_delta: None,
                    forgetting_warning: false,
                })
            })
            .collect();
        let mut resumed = Best::new(BestMetric::EvalLoss, Some(2));
        resumed.replay(&rows);
        assert_eq!(resumed.step(), Some(4));
        assert!(!resumed.exhausted());
        assert!(!resumed.observe(6, 1.7));
        assert!(resumed.exhausted());
    }
}
