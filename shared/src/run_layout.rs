//! The files of a run's folder, named in one place: `glmtune train` and `glmtune eval` write them
//! (the trainer's log, `checkpoint-N/` folders, the final adapter; the evaluation's scores and
//! predictions), and the server's supervisor and API read them.

use std::path::{Path, PathBuf};

use crate::run_log::TRAINER_LOG;

/// A run's folder.
#[derive(Debug, Clone)]
pub struct RunLayout {
    dir: PathBuf,
}

impl RunLayout {
    /// The final adapter in THUDM's layout (a checkpoint folder holds one too).
    pub const ADAPTER: &'static str = "pytorch_model.bin";
    /// `glmtune eval`'s sampled generations, one JSON object a line.
    pub const PREDICTIONS: &'static str = "generated_predictions.jsonl";
    const CHECKPOINT_PREFIX: &'static str = "checkpoint-";

    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunLayout { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The [`crate::train_job::TrainJob`] the supervisor starts `glmtune train --job` with.
    pub fn job(&self) -> PathBuf {
        self.dir.join("job.json")
    }

    /// The trainer's JSON-lines log ([`crate::run_log::LogRow`]s).
    pub fn trainer_log(&self) -> PathBuf {
        self.dir.join(TRAINER_LOG)
    }

    pub fn adapter(&self) -> PathBuf {
        self.dir.join(Self::ADAPTER)
    }

    /// The folder of the checkpoint saved after optimizer step `step`.
    pub fn checkpoint(&self, step: u64) -> PathBuf {
        self.dir.join(Self::checkpoint_name(step))
    }

    /// The name of that folder (`checkpoint-12`).
    pub fn checkpoint_name(step: u64) -> String {
        format!("{}{step}", Self::CHECKPOINT_PREFIX)
    }

    /// The step of a checkpoint folder's name (`checkpoint-12` → 12); `None` for any other name.
    pub fn checkpoint_step(name: &str) -> Option<u64> {
        name.strip_prefix(Self::CHECKPOINT_PREFIX)?.parse().ok()
    }

    /// The training process's standard error, as the supervisor captures it.
    pub fn train_stderr(&self) -> PathBuf {
        self.dir.join("train.stderr.log")
    }

    /// Where a worker's uploads under `lease` are written until they are committed (hidden:
    /// a run's files are never read from there).
    pub fn uploads(&self, lease: &str) -> PathBuf {
        self.dir.join(".uploads").join(lease)
    }

    /// The folder `glmtune eval` writes into.
    pub fn eval_dir(&self) -> PathBuf {
        self.dir.join("eval")
    }

    /// The evaluation process's standard error.
    pub fn eval_stderr(&self) -> PathBuf {
        self.dir.join("eval.stderr.log")
    }

    /// The evaluation's scores (`glmtune eval`'s standard output).
    pub fn scores(&self) -> PathBuf {
        self.eval_dir().join("scores.json")
    }

    pub fn predictions(&self) -> PathBuf {
        self.eval_dir().join(Self::PREDICTIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_names_round_trip() {
        let run = RunLayout::new("/data/runs/r1");
        let folder = run.checkpoint(40);
        let name = folder.file_name().unwrap().to_str().unwrap();
        assert_eq!(RunLayout::checkpoint_step(name), Some(40));
        for other in [
            "checkpoint-",
            "checkpoint-x",
            "checkpoints-3",
            "eval",
            "checkpoint--1",
        ] {
            assert_eq!(RunLayout::checkpoint_step(other), None, "{other}");
        }
    }
}
