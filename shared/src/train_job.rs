//! A training run as one value: everything `glmtune train` needs. The server's supervisor writes
//! it to the run's folder ([`crate::run_layout::RunLayout::job`]) and starts the child as
//! `glmtune train --job job.json`; `glmtune train`'s flags build the same value. Hyperparameters
//! are the dashboard's [`RunSettings`]: an unset one takes the official default
//! ([`defaults`]), wherever the job came from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::{ReadOptions, RunSettings};

/// A training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainJob {
    /// The base checkpoint folder (frozen).
    pub model: PathBuf,
    /// Training records (JSON lines or a JSON array).
    pub train_file: PathBuf,
    /// Validation records: their loss is logged every `eval_steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_file: Option<PathBuf>,
    /// How both files' records are laid out.
    #[serde(default)]
    pub dataset: ReadOptions,
    /// Skip unusable records (listing them) instead of stopping at the first.
    #[serde(default)]
    pub skip_invalid: bool,
    /// Where the log, the checkpoints and the final adapter go.
    pub output_dir: PathBuf,
    /// Start from this adapter (incremental tuning on new data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_adapter: Option<PathBuf>,
    /// General prompts for the forgetting guard, one a line (`settings.forgetting_guard` with our
    /// default set when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_file: Option<PathBuf>,
    /// Distil the prefix from a teacher: this model folder (none: `model`, loaded unquantized)
    /// with `teacher_adapter` (none: its base alone). Either one turns distillation on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_model: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_adapter: Option<PathBuf>,
    /// Continue from the newest checkpoint in `output_dir`.
    #[serde(default)]
    pub resume: bool,
    /// Pause after this optimizer step (a checkpoint saved, no adapter written; `resume` goes
    /// on): a sweep's trial stops at its halving rungs so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_after_step: Option<u64>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "cpu")]
    pub device: String,
    #[serde(default)]
    pub settings: RunSettings,
}

fn cpu() -> String {
    "cpu".into()
}

/// The official defaults of an unset setting (`ptuning/main.py` and the HF Trainer's, with
/// `train.sh`'s prefix length).
pub mod defaults {
    pub const PRE_SEQ_LEN: u64 = 128;
    pub const LEARNING_RATE: f64 = 2e-2;
    pub const NUM_TRAIN_EPOCHS: f64 = 3.0;
    pub const PER_DEVICE_TRAIN_BATCH_SIZE: u64 = 1;
    pub const GRADIENT_ACCUMULATION_STEPS: u64 = 16;
    pub const MAX_SOURCE_LENGTH: u64 = 64;
    pub const MAX_TARGET_LENGTH: u64 = 64;
    pub const WARMUP_STEPS: u64 = 0;
    pub const WEIGHT_DECAY: f64 = 0.0;
    pub const MAX_GRAD_NORM: f64 = 1.0;
    pub const PREFIX_DROPOUT: f64 = 0.1;
    pub const SEED: u64 = 42;
    pub const LOGGING_STEPS: u64 = 10;
    pub const SAVE_STEPS: u64 = 500;
    pub const EVAL_STEPS: u64 = 500;
}

/// A job file that cannot be used: the file, and what is wrong (with the line and column of a
/// syntax or type error).
#[derive(Debug, Clone, PartialEq)]
pub struct JobFileError(pub String);

impl std::fmt::Display for JobFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JobFileError {}

impl TrainJob {
    /// Reads a job file, and checks its settings.
    pub fn read(path: &Path) -> Result<TrainJob, JobFileError> {
        let fail = |what: String| JobFileError(format!("{}: {what}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let job: TrainJob = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        job.settings.check().map_err(fail)?;
        Ok(job)
    }

    /// Writes the job as a file for [`TrainJob::read`].
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text + "\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Precision, QuantizationBit};

    #[test]
    fn a_job_reads_back_as_written_and_bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("glmtune-job-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("job.json");
        let job = TrainJob {
            model: "/models/chatglm-6b".into(),
            train_file: "/data/train.json".into(),
            validation_file: Some("/data/dev.json".into()),
            dataset: ReadOptions {
                prompt_column: Some("content".into()),
                response_column: Some("summary".into()),
                ..ReadOptions::default()
            },
            skip_invalid: true,
            output_dir: "/runs/r1".into(),
            init_adapter: None,
            probe_file: Some("/data/probes.txt".into()),
            teacher_model: None,
            teacher_adapter: Some("/runs/teacher".into()),
            resume: true,
            stop_after_step: Some(40),
            device: "cuda:1".into(),
            settings: RunSettings {
                max_steps: Some(3000),
                source_prefix: Some("-x --help".into()),
                precision: Some(Precision::Bf16),
                quantization_bit: Some(QuantizationBit::try_from(4).unwrap()),
                ..RunSettings::default()
            },
        };
        job.write(&path).unwrap();
        assert_eq!(TrainJob::read(&path).unwrap(), job);

        // The least a job needs; everything else has its default.
        std::fs::write(
            &path,
            r#"{"model": "m", "train_file": "t.json", "output_dir": "o"}"#,
        )
        .unwrap();
        let least = TrainJob::read(&path).unwrap();
        assert_eq!(least.device, "cpu");
        assert_eq!(least.settings, RunSettings::default());

        for (text, says) in [
            (
                r#"{"model": "m", "train_file": "t", "output_dir": "o", "lr": 1}"#,
                "unknown field `lr`",
            ),
            (
                r#"{"model": "m", "output_dir": "o"}"#,
                "missing field `train_file`",
            ),
            (
                r#"{"model": "m", "train_file": "t", "output_dir": "o",
                 "settings": {"max_steps": 0}}"#,
                "settings.max_steps: must be at least 1",
            ),
            ("{\"model\": \"m\",\n \"train_file\": 5}", "line 2 column"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = TrainJob::read(&path).unwrap_err().to_string();
            assert!(error.starts_with(&path.display().to_string()), "{error}");
            assert!(error.contains(says), "{error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
