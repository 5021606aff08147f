//! Starting a run's children: `glmtune train --job` with the run's [`TrainJob`] written to its
//! folder, then `glmtune eval` on its validation set.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Instant;

use glmtune_shared::api::{ReadOptions, Run};
use glmtune_shared::train_job::TrainJob;

use super::child::{device_of, eval_args, flag, spawn_child, EvalFiles, Tail};
use super::{Phase, Running, Supervisor, SupervisorError, INFO};
use crate::serve::{run_dir, run_layout};

impl Supervisor {
    pub(super) fn spawn_training(
        &self,
        run: &Run,
        gpu: Option<usize>,
    ) -> Result<Running, SupervisorError> {
        let layout = run_layout(&self.settings.data_dir, &run.id);
        let dir = layout.dir();
        std::fs::create_dir_all(dir)
            .map_err(SupervisorError::io(format!("creating {}", dir.display())))?;
        let model = self.model_path(run)?;
        let (train_file, dataset) = self.dataset_path(&run.train_dataset)?;
        let validation_file = match &run.validation_dataset {
            Some(validation) => Some(self.dataset_path(validation)?.0),
            None => None,
        };
        let job = TrainJob {
            model: PathBuf::from(model),
            train_file,
            validation_file,
            // The run's validation set was checked to read with the same options.
            dataset,
            skip_invalid: false,
            output_dir: dir.to_path_buf(),
            init_adapter: run
                .init_run
                .as_deref()
                .map(|init| run_dir(&self.settings.data_dir, init)),
            // A run asking for the forgetting guard uses our default probe set.
            probe_file: None,
            // A distillation run's teacher: that run's adapter on the same base, unquantized.
            teacher_model: None,
            teacher_adapter: run
                .teacher_run
                .as_deref()
                .map(|teacher| run_dir(&self.settings.data_dir, teacher)),
            resume: layout.trainer_log().exists(),
            // A sweep's trial pauses at its rung for the sweep to rank it there.
            stop_after_step: run.pause_step(),
            device: device_of(gpu).to_string(),
            settings: run.settings.clone(),
        };
        if job.resume {
            crate::run_folder::cut_log_for_resume(dir).map_err(SupervisorError::io(format!(
                "cutting {} back to its checkpoint",
                layout.trainer_log().display()
            )))?;
        }
        job.write(&layout.job())
            .map_err(SupervisorError::io(format!(
                "writing {}",
                layout.job().display()
            )))?;
        let args = [
            "train".to_owned(),
            flag("job", &layout.job().to_string_lossy()),
        ];
        let stderr_path = layout.train_stderr();
        // Lines an earlier attempt wrote were turned into events then.
        let mut stderr = Tail::new(stderr_path.clone());
        stderr.offset = std::fs::metadata(&stderr_path).map_or(0, |m| m.len());
        let process = spawn_child(&args, &stderr_path, None)
            .map_err(SupervisorError::io("starting glmtune train"))?;
        let log = Tail::new(layout.trainer_log());
        let current = self
            .block(self.db.run(&run.id))?
            .unwrap_or_else(|| run.clone());
        if let Some(gpu) = gpu {
            self.event(&run.id, &format!("training on GPU {gpu}"), INFO);
        }
        Ok(Running {
            gpu,
            emitted_step: current.step,
            trained_tokens: current.trained_tokens,
            run: current,
            process,
            phase: Phase::Train,
            log,
            stderr,
            last_progress: Instant::now(),
            stalled: false,
            error: None,
            last_line: None,
        })
    }

    pub(super) fn spawn_eval(
        &self,
        run: &Run,
        gpu: Option<usize>,
    ) -> Result<Child, SupervisorError> {
        let layout = run_layout(&self.settings.data_dir, &run.id);
        let (dir, eval_dir) = (layout.dir(), layout.eval_dir());
        std::fs::create_dir_all(&eval_dir).map_err(SupervisorError::io(format!(
            "creating {}",
            eval_dir.display()
        )))?;
        let model = self.model_path(run)?;
        let validation = run
            .validation_dataset
            .as_deref()
            .ok_or_else(|| SupervisorError::Missing("no validation dataset".into()))?;
        let (path, options) = self.dataset_path(validation)?;
        let args = eval_args(&EvalFiles {
            model: Path::new(&model),
            adapter: dir,
            validation: &path,
            options: &options,
            output: &eval_dir,
            settings: &run.settings,
            device: device_of(gpu),
        });
        spawn_child(&args, &layout.eval_stderr(), Some(&layout.scores()))
            .map_err(SupervisorError::io("starting glmtune eval"))
    }

    /// The folder of the run's base model.
    fn model_path(&self, run: &Run) -> Result<String, SupervisorError> {
        let model = self.block(self.db.model(&run.model))?.ok_or_else(|| {
            SupervisorError::Missing(format!("model {:?} is not registered", run.model))
        })?;
        Ok(model.path)
    }

    /// The stored file of a dataset and how to read it.
    fn dataset_path(&self, id: &str) -> Result<(PathBuf, ReadOptions), SupervisorError> {
        let dataset = self
            .block(self.db.dataset(id))?
            .ok_or_else(|| SupervisorError::Missing(format!("dataset {id} does not exist")))?;
        Ok((self.blobs.path(&dataset.sha256), dataset.read_options))
    }
}
