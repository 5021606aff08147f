//! A sweep's trials and how successive halving moves them on, as pure functions of what each
//! trial's log says. `glmtune sweep` trains the trials one after another on this machine; the
//! server's sweeps queue them as runs, several at once. Both follow the same [`plan`], and a
//! sweep picked up after an interruption (a killed command, a restarted server) decides again
//! from the logs exactly what it had decided.
//!
//! The halving is synchronous: every trial still in the sweep trains to a rung and pauses there
//! (a checkpoint); once all of them have, the best `1 / eta` by their last evaluation up to the
//! rung go on, the rest stay stopped.

use glmtune_shared::api::{BestMetric, RunSettings};
use glmtune_shared::run_log::LogRow;
use glmtune_shared::sweep::{Halving, LearningRates, Search, SearchKind, SearchSpace};

use crate::best::Best;

/// The settings each trial takes from the space, in order, at most `search.trials`.
pub fn trial_settings(
    base: &RunSettings,
    space: &SearchSpace,
    search: &Search,
) -> Vec<RunSettings> {
    let learning_rates: Vec<f64> = match &space.learning_rate {
        None => Vec::new(),
        Some(LearningRates::Values(values)) => values.clone(),
        Some(LearningRates::LogRange {
            min,
            max,
            grid_points,
        }) => (0..*grid_points)
            .map(|i| {
                let t = if *grid_points == 1 {
                    0.0
                } else {
                    i as f64 / (*grid_points - 1) as f64
                };
                (min.ln() + t * (max.ln() - min.ln())).exp()
            })
            .collect(),
    };
    // Each dimension as a list of edits to the base settings; an empty one leaves it alone.
    type Edit = Box<dyn Fn(&mut RunSettings)>;
    fn edits<T: Clone + 'static>(values: &[T], set: fn(&mut RunSettings, T)) -> Vec<Edit> {
        values
            .iter()
            .cloned()
            .map(|v| Box::new(move |s: &mut RunSettings| set(s, v.clone())) as Edit)
            .collect()
    }
    let dimensions: Vec<Vec<Edit>> = vec![
        edits(&learning_rates, |s, v| s.learning_rate = Some(v)),
        edits(&space.pre_seq_len, |s, v| s.pre_seq_len = Some(v)),
        edits(&space.prefix_projection, |s, v| {
            s.prefix_projection = Some(v)
        }),
        edits(&space.max_steps, |s, v| {
            s.max_steps = Some(v);
            s.num_train_epochs = None;
        }),
        edits(&space.max_source_length, |s, v| {
            s.max_source_length = Some(v)
        }),
        edits(&space.max_target_length, |s, v| {
            s.max_target_length = Some(v)
        }),
        edits(&space.source_prefix, |s, v| s.source_prefix = Some(v)),
    ]
    .into_iter()
    .filter(|d| !d.is_empty())
    .collect();
    let trials = search.trials;
    let choose = |pick: &mut dyn FnMut(usize, usize) -> usize| -> RunSettings {
        let mut settings = base.clone();
        for (d, dimension) in dimensions.iter().enumerate() {
            dimension[pick(d, dimension.len())](&mut settings);
        }
        settings
    };
    match search.kind {
        SearchKind::Grid => {
            let points: usize = dimensions.iter().map(Vec::len).product();
            (0..points.min(trials))
                .map(|mut index| {
                    // The last dimension varies fastest.
                    let mut picks = vec![0; dimensions.len()];
                    for (d, dimension) in dimensions.iter().enumerate().rev() {
                        picks[d] = index % dimension.len();
                        index /= dimension.len();
                    }
                    choose(&mut |d, _| picks[d])
                })
                .collect()
        }
        SearchKind::Random => {
            // xorshift64: a few lines give reproducible draws without a generator crate.
            let mut state = search.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            (0..trials)
                .map(|_| {
                    let mut settings = choose(&mut |_, len| (next() % len as u64) as usize);
                    // A log range is drawn log-uniformly, not from its grid points.
                    if let Some(LearningRates::LogRange { min, max, .. }) = &space.learning_rate {
                        let t = (next() >> 11) as f64 / (1u64 << 53) as f64;
                        settings.learning_rate = Some((min.ln() + t * (max.ln() - min.ln())).exp());
                    }
                    settings
                })
                .collect()
        }
    }
}

/// What a trial's log (and, in the server, its run) says of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrialStatus {
    /// The last step it trained (0: not started).
    pub steps: u64,
    /// It wrote its adapter: it reached its end or stopped early on its own.
    pub finished: bool,
    /// It failed, or was cancelled outside the sweep: left out of the halving from now on.
    pub dropped: bool,
    /// Its evaluations in order: (step, the sweep's metric).
    pub evaluations: Vec<(u64, f64)>,
}

impl TrialStatus {
    /// A trial's status from its log's rows.
    pub fn of_log(rows: &[LogRow], metric: BestMetric) -> Self {
        TrialStatus {
            // Training rows come only every `logging_steps`; a pause always saves a checkpoint.
            steps: rows.iter().map(LogRow::step).max().unwrap_or(0),
            finished: rows.iter().any(|row| matches!(row, LogRow::Finished(_))),
            dropped: false,
            evaluations: rows
                .iter()
                .filter_map(|row| match row {
                    LogRow::Eval(row) => metric.of(row).map(|value| (row.step, value)),
                    _ => None,
                })
                .collect(),
        }
    }

    /// Its best evaluation (step, value), as its run chose its best checkpoint.
    pub fn best(&self, metric: BestMetric) -> Option<(u64, f64)> {
        let mut best = Best::new(metric, None);
        for &(step, value) in &self.evaluations {
            best.observe(step, value);
        }
        best.best()
    }
}

/// Where a sweep stands and what to train next.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Per trial: the rung successive halving stopped it at.
    pub stopped: Vec<Option<u64>>,
    /// The trials to train now, in order, each with the step it pauses at (`None`: its end).
    /// Empty once the sweep is over.
    pub next: Vec<(usize, Option<u64>)>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "trial {trial}: no evaluation by step {rung}; give settings.eval_steps that fall at or \
         before the halving rungs"
    )]
    NoEvaluation { trial: usize, rung: u64 },
}

/// The sweep's decisions so far and its next trainings, from each trial's status (`settings`
/// and `status` index the trials alike, from 0; errors name trials from 1).
pub fn plan(
    settings: &[RunSettings],
    halving: Option<&Halving>,
    metric: BestMetric,
    status: &[TrialStatus],
) -> Result<Plan, PlanError> {
    let mut stopped = vec![None; settings.len()];
    let mut rungs = halving.map(|h| h.rungs.clone()).unwrap_or_default();
    rungs.sort_unstable();
    rungs.dedup();
    let eta = halving.map_or(2, |h| h.eta) as usize;
    // Still trained by the sweep: not stopped, not done on its own, not dropped.
    let going = |i: usize, stopped: &[Option<u64>]| {
        stopped[i].is_none() && !status[i].finished && !status[i].dropped
    };
    for rung in rungs {
        // Every trial that was still in the sweep at this rung: the decision stays the same
        // once they train on, finish or fail after it.
        let at_rung: Vec<usize> = (0..settings.len())
            .filter(|&i| {
                let ended_before =
                    (status[i].finished || status[i].dropped) && status[i].steps < rung;
                stopped[i].is_none()
                    && !ended_before
                    && settings[i].max_steps.unwrap_or(u64::MAX) > rung
            })
            .collect();
        let waiting: Vec<(usize, Option<u64>)> = at_rung
            .iter()
            .filter(|&&i| status[i].steps < rung)
            .map(|&i| (i, Some(rung)))
            .collect();
        if !waiting.is_empty() {
            return Ok(Plan {
                stopped,
                next: waiting,
            });
        }
        // Ranked by the last evaluation up to the rung.
        let mut reached = Vec::with_capacity(at_rung.len());
        for i in at_rung {
            let Some(&(_, value)) = status[i].evaluations.iter().rfind(|e| e.0 <= rung) else {
                return Err(PlanError::NoEvaluation { trial: i + 1, rung });
            };
            reached.push((i, value));
        }
        // Stable: equal trials keep their order.
        reached.sort_by(|a, b| metric.order(a.1, b.1));
        let keep = reached.len().div_ceil(eta);
        for &(i, _) in &reached[keep..] {
            // One that ended on its own right at the rung stopped itself.
            if !(status[i].finished && status[i].steps == rung) {
                stopped[i] = Some(rung);
            }
        }
    }
    let next = (0..settings.len())
        .filter(|&i| going(i, &stopped))
        .map(|i| (i, None))
        .collect();
    Ok(Plan { stopped, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> SearchSpace {
        SearchSpace {
            learning_rate: Some(LearningRates::LogRange {
                min: 1e-3,
                max: 1e-1,
                grid_points: 3,
            }),
            pre_seq_len: vec![4, 8],
            ..SearchSpace::default()
        }
    }

    fn base() -> RunSettings {
        RunSettings {
            seed: Some(3),
            ..RunSettings::default()
        }
    }

    #[test]
    fn grids_enumerate_the_space_and_random_draws_stay_in_it() {
        let space = space();
        let grid = trial_settings(&base(), &space, &Search::default());
        let points: Vec<(f64, u64)> = grid
            .iter()
            .map(|s| (s.learning_rate.unwrap(), s.pre_seq_len.unwrap()))
            .collect();
        assert_eq!(points.len(), 6);
        for (i, lr) in [1e-3, 1e-2, 1e-1].iter().enumerate() {
            assert!((points[2 * i].0 - lr).abs() < 1e-12 * lr);
            assert_eq!((points[2 * i].1, points[2 * i + 1].1), (4, 8));
        }
        assert!(
            grid.iter().all(|s| s.seed == Some(3)),
            "the base's settings stay"
        );
        let budget = Search {
            trials: 4,
            ..Search::default()
        };
        assert_eq!(trial_settings(&base(), &space, &budget).len(), 4);
        let random = Search {
            kind: SearchKind::Random,
            trials: 20,
            seed: 9,
        };
        let drawn = trial_settings(&base(), &space, &random);
        assert_eq!(drawn.len(), 20);
        assert!(drawn.iter().all(|s| {
            let lr = s.learning_rate.unwrap();
            (1e-3..=1e-1).contains(&lr) && [4, 8].contains(&s.pre_seq_len.unwrap())
        }));
        assert_eq!(drawn, trial_settings(&base(), &space, &random), "seeded");
    }

    fn trial(steps: u64, evaluations: &[(u64, f64)]) -> TrialStatus {
        TrialStatus {
            steps,
            evaluations: evaluations.to_vec(),
            ..TrialStatus::default()
        }
    }

    #[test]
    fn halving_waits_for_every_trial_at_a_rung_then_keeps_the_best_half() {
        let settings = vec![
            RunSettings {
                max_steps: Some(8),
                ..RunSettings::default()
            };
            4
        ];
        let halving = Halving {
            rungs: vec![4],
            eta: 2,
        };
        let loss = BestMetric::EvalLoss;
        let none = vec![TrialStatus::default(); 4];
        let first = plan(&settings, Some(&halving), loss, &none).unwrap();
        assert_eq!(first.next, (0..4).map(|i| (i, Some(4))).collect::<Vec<_>>());
        // Three at the rung, one not yet: it alone is to train.
        let mut status = vec![
            trial(4, &[(2, 3.0), (4, 2.0)]),
            trial(4, &[(2, 3.0), (4, 1.0)]),
            trial(2, &[(2, 3.0)]),
            trial(4, &[(2, 3.0), (4, 4.0)]),
        ];
        let waiting = plan(&settings, Some(&halving), loss, &status).unwrap();
        assert_eq!(waiting.next, vec![(2, Some(4))]);
        assert_eq!(waiting.stopped, vec![None; 4]);
        status[2] = trial(4, &[(2, 3.0), (4, 1.5)]);
        let ranked = plan(&settings, Some(&halving), loss, &status).unwrap();
        assert_eq!(ranked.stopped, vec![Some(4), None, None, Some(4)]);
        assert_eq!(ranked.next, vec![(1, None), (2, None)]);
        // Done: nothing more to train, and the same trials stopped.
        for i in [1, 2] {
            status[i].finished = true;
            status[i].steps = 8;
            status[i].evaluations.push((8, 0.5 * i as f64));
        }
        let done = plan(&settings, Some(&halving), loss, &status).unwrap();
        assert!(done.next.is_empty());
        assert_eq!(done.stopped, ranked.stopped);
        // A trial that fails after the rung still counts at it.
        let mut failed = status.clone();
        failed[1].finished = false;
        failed[1].dropped = true;
        assert_eq!(
            plan(&settings, Some(&halving), loss, &failed).unwrap(),
            done
        );
        // A dropped trial is not waited for nor ranked; one with no evaluation is an error.
        let mut status = vec![trial(4, &[(4, 2.0)]), TrialStatus::default()];
        status[1].dropped = true;
        let two = &settings[..2];
        assert_eq!(
            plan(two, Some(&halving), loss, &status).unwrap().next,
            vec![(0, None)]
        );
        let status = vec![trial(4, &[]), trial(4, &[(4, 1.0)])];
        assert_eq!(
            plan(two, Some(&halving), loss, &status),
            Err(PlanError::NoEvaluation { trial: 1, rung: 4 })
        );
    }
}
