//! One leased run on one device: its files fetched (the datasets by hash, an earlier attempt's
//! newest checkpoint and log), `glmtune train --job` started on them, its log sent in batches and
//! each checkpoint uploaded before the row that names it, a heartbeat kept on another thread, then
//! the evaluation, the adapter's upload and the run's end.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glmtune_shared::api::Run;
use glmtune_shared::run_layout::RunLayout;
use glmtune_shared::run_log::{LogRow, TRAINER_LOG};
use glmtune_shared::train_job::TrainJob;
use glmtune_shared::worker::{Completion, FileDigest, Lease, LeasedDataset, LogBatch, Outcome};

use super::client::{encode, ClientError, ClientResult};
use super::{io, Shared, WorkerError};
use crate::device::DeviceSpec;
use crate::serve::supervisor::child::{eval_args, flag, spawn_child, EvalFiles, Tail};

const FOLLOW: Duration = Duration::from_millis(250);

/// The run's log and notes on their way to the server.
struct Reporter<'a> {
    shared: &'a Shared,
    lease: &'a str,
    layout: &'a RunLayout,
    log: Tail,
    stderr: Tail,
    rows: Vec<LogRow>,
    notes: Vec<String>,
    /// Notes of this lease the server has been sent.
    sent_notes: u64,
    /// The trainer's error row, else its last line: why it stopped.
    error: Option<String>,
    last_line: Option<String>,
    step: u64,
    /// The step of the checkpoint the run resumed from (0: it started afresh).
    resumed_from: u64,
}

impl Reporter<'_> {
    /// Reads what the trainer wrote since the last call, uploads any checkpoint a row names
    /// (before the row itself is sent), and sends the batch.
    fn follow(&mut self) -> Result<(), WorkerError> {
        for line in self.log.lines() {
            let Some(row) = LogRow::parse(&line) else {
                continue;
            };
            match &row {
                // The rows of an earlier attempt (the log it resumes is read from its start)
                // name checkpoints the server already holds.
                LogRow::Checkpoint(checkpoint) if checkpoint.step > self.resumed_from => {
                    let folder = self.layout.dir().join(&checkpoint.checkpoint);
                    upload_files(self.shared, self.lease, self.layout.dir(), &folder)?;
                }
                LogRow::Error(error) => self.error = Some(error.error.clone()),
                _ => {}
            }
            self.step = self.step.max(row.step());
            self.rows.push(row);
        }
        for line in self.stderr.lines() {
            let text = line.trim_end_matches('\r').trim();
            if !text.is_empty() && !text.starts_with("step ") {
                self.last_line = Some(text.strip_prefix("glmtune: ").unwrap_or(text).to_owned());
            }
            self.notes.push(line);
        }
        self.send()
    }

    fn send(&mut self) -> Result<(), WorkerError> {
        if self.rows.is_empty() && self.notes.is_empty() {
            return Ok(());
        }
        let batch = LogBatch {
            rows: std::mem::take(&mut self.rows),
            notes: std::mem::take(&mut self.notes),
            first_note: self.sent_notes,
        };
        match self.shared.client.log(self.lease, &batch) {
            Ok(()) => {
                self.sent_notes += batch.notes.len() as u64;
                Ok(())
            }
            Err(lost @ ClientError::Lost(_)) => Err(lost.into()),
            Err(error) => {
                // Kept for the next call: the server tells each row and note once.
                eprintln!("glmtune: sending the log: {error}; again shortly");
                self.rows = batch.rows;
                self.notes = batch.notes;
                Ok(())
            }
        }
    }

    fn note(&mut self, text: String) {
        self.notes.push(text);
    }
}

/// Uploads every file of `folder` (under the run's folder `dir`) and commits them together.
fn upload_files(
    shared: &Shared,
    lease: &str,
    dir: &Path,
    folder: &Path,
) -> Result<Vec<FileDigest>, WorkerError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(io(format!("reading {}", folder.display())))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    upload_paths(shared, lease, dir, &paths)
}

fn upload_paths(
    shared: &Shared,
    lease: &str,
    dir: &Path,
    paths: &[PathBuf],
) -> Result<Vec<FileDigest>, WorkerError> {
    let mut files = Vec::new();
    for path in paths {
        let name = path
            .strip_prefix(dir)
            .unwrap_or(path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        files.push(shared.client.upload(lease, &name, path)?);
    }
    shared.client.commit(lease, files.clone())?;
    Ok(files)
}

/// Heartbeats until `done`; sets `lost` (and stops) when the server says the lease is over.
fn heartbeat(shared: Arc<HeartbeatShared>) {
    while !shared.done.load(Ordering::SeqCst) {
        std::thread::sleep(shared.every);
        if shared.done.load(Ordering::SeqCst) {
            return;
        }
        match shared.client.heartbeat(&shared.lease) {
            Ok(_) => {}
            Err(ClientError::Lost(_)) => {
                shared.lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(error) => eprintln!("glmtune: heartbeat: {error}"),
        }
    }
}

struct HeartbeatShared {
    client: super::client::Client,
    lease: String,
    every: Duration,
    done: AtomicBool,
    lost: AtomicBool,
}

/// Waits for `child`, following the run as it goes; `None` when the lease was lost (the child is
/// killed then).
fn wait(
    child: &mut Child,
    reporter: &mut Reporter<'_>,
    lost: &AtomicBool,
) -> Result<Option<std::process::ExitStatus>, WorkerError> {
    loop {
        if lost.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        let status = child.try_wait().map_err(io("waiting for the trainer"))?;
        let followed = reporter.follow();
        if let Err(error) = followed {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        if status.is_some() {
            return Ok(status);
        }
        std::thread::sleep(FOLLOW);
    }
}

/// Trains the leased run to its end here; says how it ended.
pub(super) fn train(shared: &Shared, device: &str, lease: Lease) -> Result<String, WorkerError> {
    let beat = Arc::new(HeartbeatShared {
        client: super::client::Client::new(shared.client.base(), shared.client.token()),
        lease: lease.id.clone(),
        every: Duration::from_millis(lease.heartbeat_ms.max(50)),
        done: AtomicBool::new(false),
        lost: AtomicBool::new(false),
    });
    let beating = {
        let beat = beat.clone();
        std::thread::spawn(move || heartbeat(beat))
    };
    let result = train_held(shared, device, &lease, &beat.lost);
    let result = match result {
        Err(WorkerError::Client(ClientError::Lost(_))) => Ok("the lease was lost".into()),
        // Whatever stopped this worker from training the run (its disk, a file it could not
        // send) would stop it again: the run fails with the reason rather than come back here.
        Err(error) => {
            let failed = Completion {
                outcome: Outcome::Failed,
                error: Some(format!("on worker {}: {error}", shared.name)),
                files: Vec::new(),
            };
            if let Err(also) = shared.client.complete(&lease.id, &failed) {
                eprintln!("glmtune: reporting the failure: {also}");
            }
            Err(error)
        }
        ended => ended,
    };
    beat.done.store(true, Ordering::SeqCst);
    let _ = beating.join();
    result
}

fn train_held(
    shared: &Shared,
    device: &str,
    lease: &Lease,
    lost: &AtomicBool,
) -> Result<String, WorkerError> {
    let run = &lease.run;
    let layout = RunLayout::new(shared.work_dir.join("runs").join(&run.id));
    let dir = layout.dir().to_path_buf();
    // What the server holds is the run: a copy left here by an earlier lease may be older.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(format!("clearing {}", dir.display())))?;
    }
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    for file in &lease.resume {
        let path = format!(
            "/api/v1/leases/{}/files?path={}",
            lease.id,
            encode(&file.path)
        );
        shared
            .client
            .download(&path, &dir.join(&file.path), &file.sha256)?;
    }
    let train_file = dataset(shared, &lease.id, &lease.train)?;
    let validation_file = match &lease.validation {
        Some(validation) => Some(dataset(shared, &lease.id, validation)?),
        None => None,
    };
    let model = shared.models.get(&run.model).cloned().ok_or_else(|| {
        WorkerError::ModelArg(format!("{} (leased, but not on this worker)", run.model))
    })?;
    let job = TrainJob {
        model: model.clone(),
        train_file,
        validation_file: validation_file.clone(),
        dataset: lease.train.read_options.clone(),
        skip_invalid: false,
        output_dir: dir.clone(),
        init_adapter: None,
        probe_file: None,
        teacher_model: None,
        teacher_adapter: None,
        resume: layout.trainer_log().exists(),
        stop_after_step: run.pause_step(),
        device: device.to_owned(),
        settings: run.settings.clone(),
    };
    if job.resume {
        crate::run_folder::cut_log_for_resume(&dir).map_err(io(format!(
            "cutting {} back",
            layout.trainer_log().display()
        )))?;
    }
    job.write(&layout.job())
        .map_err(io(format!("writing {}", layout.job().display())))?;
    let mut child = spawn_child(
        &[
            "train".to_owned(),
            flag("job", &layout.job().to_string_lossy()),
        ],
        &layout.train_stderr(),
        None,
    )
    .map_err(io("starting glmtune train"))?;
    let mut reporter = Reporter {
        shared,
        lease: &lease.id,
        layout: &layout,
        log: Tail::new(layout.trainer_log()),
        stderr: Tail::new(layout.train_stderr()),
        rows: Vec::new(),
        notes: Vec::new(),
        sent_notes: 0,
        error: None,
        last_line: None,
        step: 0,
        resumed_from: lease
            .resume
            .iter()
            .filter_map(|file| RunLayout::checkpoint_step(file.path.split('/').next()?))
            .max()
            .unwrap_or(0),
    };
    let Some(status) = wait(&mut child, &mut reporter, lost)? else {
        return Ok("the lease was lost; the trainer was stopped".into());
    };
    let paused = job.stop_after_step.is_some_and(|at| {
        reporter.step >= at && reporter.step < run.max_steps.unwrap_or(i64::MAX) as u64
    });
    let outcome = if status.success() && layout.adapter().is_file() {
        if let Some(validation) =
            validation_file.filter(|_| run.settings.eval_samples.unwrap_or(0) > 0)
        {
            evaluate(
                shared,
                lease,
                &layout,
                &model,
                &validation,
                device,
                &mut reporter,
                lost,
            )?;
        }
        let paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io(format!("reading {}", dir.display())))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_file() && is_adapter_file(path))
            .collect();
        let files = upload_paths(shared, &lease.id, &dir, &paths)?;
        Completion {
            outcome: Outcome::Succeeded,
            error: None,
            files,
        }
    } else if status.success() && paused {
        Completion {
            outcome: Outcome::Paused,
            error: None,
            files: Vec::new(),
        }
    } else {
        let error = if status.success() {
            "training stopped before its last step".to_owned()
        } else {
            reporter
                .error
                .clone()
                .or_else(|| reporter.last_line.clone())
                .unwrap_or_else(|| status.to_string())
        };
        Completion {
            outcome: Outcome::Failed,
            error: Some(error),
            files: Vec::new(),
        }
    };
    reporter.send()?;
    let ended: Run = shared.client.complete(&lease.id, &outcome)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ended.state.as_str().to_owned())
}

/// A top-level file of a run's folder that is part of its final adapter (not the job, the log
/// or the children's standard error, which reach the server otherwise).
fn is_adapter_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    !(name == "job.json" || name == TRAINER_LOG || name.ends_with(".log") || name.starts_with('.'))
}

/// `glmtune eval` on the trained adapter; its scores and predictions uploaded, or a note of why
/// there are none (the run still succeeds, as on the server).
#[allow(clippy::too_many_arguments)]
fn evaluate(
    shared: &Shared,
    lease: &Lease,
    layout: &RunLayout,
    model: &Path,
    validation: &Path,
    device: &str,
    reporter: &mut Reporter<'_>,
    lost: &AtomicBool,
) -> Result<(), WorkerError> {
    let eval_dir = layout.eval_dir();
    std::fs::create_dir_all(&eval_dir).map_err(io(format!("creating {}", eval_dir.display())))?;
    let options = lease
        .validation
        .as_ref()
        .map(|v| v.read_options.clone())
        .unwrap_or_default();
    let device_spec: DeviceSpec = device.parse().unwrap_or_default();
    let args = eval_args(&EvalFiles {
        model,
        adapter: layout.dir(),
        validation,
        options: &options,
        output: &eval_dir,
        settings: &lease.run.settings,
        device: device_spec,
    });
    let mut child = spawn_child(&args, &layout.eval_stderr(), Some(&layout.scores()))
        .map_err(io("starting glmtune eval"))?;
    let mut eval_stderr = Tail::new(layout.eval_stderr());
    let status = loop {
        if lost.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ClientError::Lost(lease.id.clone()).into());
        }
        if let Some(status) = child.try_wait().map_err(io("waiting for glmtune eval"))? {
            break status;
        }
        std::thread::sleep(FOLLOW);
    };
    let scores_ok = std::fs::read_to_string(layout.scores())
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some();
    if status.success() && scores_ok {
        let mut paths = vec![layout.scores()];
        if layout.predictions().is_file() {
            paths.push(layout.predictions());
        }
        upload_paths(shared, &lease.id, layout.dir(), &paths)?;
    } else {
        let last = eval_stderr
            .lines()
            .into_iter()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or_else(|| status.to_string());
        reporter.note(format!("evaluation failed: {last}"));
    }
    Ok(())
}

/// The dataset's file in the worker's cache (by hash), fetched once.
fn dataset(shared: &Shared, lease: &str, dataset: &LeasedDataset) -> ClientResult<PathBuf> {
    let path = shared.work_dir.join("datasets").join(&dataset.sha256);
    if !path.is_file() {
        shared.client.download(
            &format!("/api/v1/leases/{lease}/datasets/{}", dataset.sha256),
            &path,
            &dataset.sha256,
        )?;
    }
    Ok(path)
}
