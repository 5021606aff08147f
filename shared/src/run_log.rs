//! A run's `trainer_log.jsonl`: one [`LogRow`] a line, written by `glmtune train` and read by the
//! server's supervisor (which turns rows into `metrics` events), the checkpoints API and the
//! dashboard (from those events' data). The rows keep the shape of the HF Trainer's `log_history`
//! (a training row has `loss`, an evaluation row `eval_loss`), so a log from before the optional
//! fields existed still reads.

use serde::{Deserialize, Serialize};

/// The file name of the log in a run's folder.
pub const TRAINER_LOG: &str = "trainer_log.jsonl";

/// One line of the log. A row is told by its fields (`loss`, `eval_loss`, `checkpoint`,
/// `adapter`, `error`), so each kind reads back as itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogRow {
    Step(StepRow),
    Eval(EvalRow),
    Checkpoint(CheckpointRow),
    Finished(FinishedRow),
    Error(ErrorRow),
}

impl LogRow {
    /// The optimizer step the row is about.
    pub fn step(&self) -> u64 {
        match self {
            LogRow::Step(row) => row.step,
            LogRow::Eval(row) => row.step,
            LogRow::Checkpoint(row) => row.step,
            LogRow::Finished(row) => row.step,
            LogRow::Error(row) => row.step,
        }
    }

    /// Parses one line; `None` for a line that is not a row (a torn last line of a killed run).
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str(line).ok()
    }
}

/// JSON has no NaN or infinity: serde_json writes them as `null` (the gradient norm of an f16 step
/// that overflowed, the loss of a diverged run), read back here as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A training step (logged every `--logging-steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRow {
    pub step: u64,
    #[serde(deserialize_with = "null_as_nan")]
    pub loss: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub learning_rate: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub grad_norm: f64,
    /// Sequence tokens a second since the previous row.
    pub tokens_per_second: f64,
    /// Sequence tokens trained since the previous row.
    pub tokens: u64,
    pub max_steps: u64,
    /// Seconds since this attempt of the run started.
    pub elapsed_s: f64,
    /// f16 training: the loss scale this step used, and whether an overflow skipped its update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<bool>,
    /// Where the run trains (`cpu`, `cuda:N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The frozen base's precision (`f32`, `bf16`, `f16`), with its layers' block format when
    /// quantized (`bf16+q4_0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Peak memory so far: the GPU's on a GPU, the process's resident set on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
}

/// An evaluation on the validation set (every `--eval-steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    pub step: u64,
    #[serde(deserialize_with = "null_as_nan")]
    pub eval_loss: f64,
    /// The step of the best evaluation so far (this one's, when it is the best), with
    /// `--early-stopping-patience` or `--load-best-model-at-end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_step: Option<u64>,
    /// The forgetting guard (`forgetting_guard`): mean KL(base ‖ tuned) of the next-token
    /// distributions on the base model's answers to general prompts, nats a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgetting_kl: Option<f64>,
    /// The mean change of those answers' token log-likelihood (tuned − base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgetting_logprob_delta: Option<f64>,
    /// Whether `forgetting_kl` is over the run's `forgetting_threshold`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forgetting_warning: bool,
}

/// A checkpoint saved after `step` (a folder of the run's, named by
/// [`crate::run_layout::RunLayout::checkpoint`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRow {
    pub step: u64,
    /// The folder's name in the run's folder (`checkpoint-12`).
    pub checkpoint: String,
}

/// The run trained its last step and wrote its adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedRow {
    pub step: u64,
    /// The adapter's file name in the run's folder.
    pub adapter: String,
    /// The best evaluation's step (its checkpoint is kept), where the run chose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_step: Option<u64>,
    /// The step whose prefix the adapter holds, when not the last (`--load-best-model-at-end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_step: Option<u64>,
    /// Whether early stopping ended the run before its last step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped_early: bool,
}

/// The run stopped on an error (after its log was opened; the last step it completed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRow {
    pub step: u64,
    /// The error, with its causes.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_as_written_and_old_rows_still_read() {
        let step = LogRow::Step(StepRow {
            step: 3,
            loss: 2.5,
            learning_rate: 1e-2,
            grad_norm: 0.5,
            tokens_per_second: 100.0,
            tokens: 64,
            max_steps: 10,
            elapsed_s: 1.5,
            loss_scale: None,
            skipped: None,
            device: Some("cuda:1".into()),
            dtype: Some("bf16+q4_0".into()),
            peak_memory_bytes: Some(7 << 30),
        });
        let eval = LogRow::Eval(EvalRow {
            step: 3,
            eval_loss: 2.0,
            best_step: None,
            forgetting_kl: None,
            forgetting_logprob_delta: None,
            forgetting_warning: false,
        });
        let checkpoint = LogRow::Checkpoint(CheckpointRow {
            step: 3,
            checkpoint: "checkpoint-3".into(),
        });
        let finished = LogRow::Finished(FinishedRow {
            step: 10,
            adapter: "pytorch_model.bin".into(),
            best_step: None,
            adapter_step: None,
            stopped_early: false,
        });
        let error = LogRow::Error(ErrorRow {
            step: 4,
            error: "writing checkpoint-4: No space left on device".into(),
        });
        for row in [&step, &eval, &checkpoint, &finished, &error] {
            let line = serde_json::to_string(row).unwrap();
            assert_eq!(LogRow::parse(&line).as_ref(), Some(row), "{line}");
        }
        // A row written before device, dtype and peak memory were logged.
        let old = r#"{"step":1,"loss":3.0,"learning_rate":0.02,"grad_norm":1.0,"tokens_per_second":9.0,"tokens":8,"max_steps":2,"elapsed_s":0.5}"#;
        assert!(matches!(LogRow::parse(old), Some(LogRow::Step(r)) if r.device.is_none()));
        assert_eq!(
            LogRow::parse(r#"{"step":4,"eval_loss":1.25}"#).map(|r| r.step()),
            Some(4)
        );
        assert_eq!(LogRow::parse(r#"{"step":4,"loss":"#), None);
        // An f16 step whose gradients overflowed: its norm is not a number.
        let mut overflow = step.clone();
        if let LogRow::Step(row) = &mut overflow {
            row.grad_norm = f64::INFINITY;
        }
        let line = serde_json::to_string(&overflow).unwrap();
        assert!(line.contains(r#""grad_norm":null"#), "{line}");
        assert!(matches!(LogRow::parse(&line), Some(LogRow::Step(r)) if r.grad_norm.is_nan()));
    }
}
