//! The job supervisor: takes queued runs from the database and trains each as a child process
//! (`glmtune train …`, then `glmtune eval …` when the run has validation data), turning the
//! run's `trainer_log.jsonl` and stderr into events.
//!
//! It lives on one dedicated thread. Children are started from that thread with
//! `PR_SET_PDEATHSIG`, so a server killed outright takes its children with it. Each run it trains
//! is leased in its name (`identity`) and renewed while it trains: the next start on the same host
//! finds its dead predecessor's runs, puts them back in the queue and resumes them from their last
//! checkpoint (`--resume`), which ends on the same adapter as an uninterrupted run; another server
//! sharing the database leaves them alone while the lease holds. Leases that run out (a worker's or
//! a server's) send their runs back to the queue on every tick. A sweep's trial trains to the step
//! its sweep gives (`TrialOf::pause_at`) and is then `paused`.

pub(crate) mod child;
pub(crate) mod identity;
mod spawn;

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use glmtune_shared::api::{Run, RunState};
use glmtune_shared::run_event::{EvalScores, Note, RunEventData, Stall};
use glmtune_shared::run_log::LogRow;
use tokio::runtime::Handle as Runtime;

use crate::db::runs::Progress;
use crate::db::{Db, DbResult};
use crate::serve::blobs::Blobs;
use crate::serve::gpus::Gpus;
use crate::serve::log_events::{note_event, row_message};
use crate::serve::metrics::Metrics;
use crate::serve::state::{run_layout, Settings};
use child::Tail;
use identity::ServerIdentity;

/// What stops the supervisor from starting or following a child.
#[derive(Debug, thiserror::Error)]
enum SupervisorError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A run that names a model or dataset that is gone.
    #[error("{0}")]
    Missing(String),
}

impl SupervisorError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SupervisorError {
        let what = what.into();
        move |source| SupervisorError::Io { what, source }
    }
}

const INFO: RunEventData = RunEventData::Note(Note::Info);
const WARNING: RunEventData = RunEventData::Note(Note::Warning);
const TICK: Duration = Duration::from_millis(200);
/// How long a stopping child may take to write its checkpoint.
const CHECKPOINT_GRACE: Duration = Duration::from_secs(120);

enum Message {
    Wake,
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

/// The server's side of the supervisor.
pub struct Handle {
    sender: Mutex<mpsc::Sender<Message>>,
    /// Set when the server stops: event streams end.
    pub stopping: AtomicBool,
    /// Rung whenever events were written, so that streams need not poll fast.
    pub events: tokio::sync::Notify,
}

impl Handle {
    /// A new run was queued or a run changed: look now rather than at the next tick.
    pub fn wake(&self) {
        let _ = self.sender.lock().send(Message::Wake);
    }

    /// Ends the event streams (the server is going down).
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.events.notify_waiters();
    }

    /// Stops every child at its next step with a checkpoint, and returns once they are down.
    pub async fn shutdown(&self) {
        self.begin_stopping();
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.sender.lock().send(Message::Shutdown(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// Puts runs that a previous server left `running` back in the queue and starts the thread.
pub async fn start(
    db: Db,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    blobs: Blobs,
    gpus: Arc<Gpus>,
) -> DbResult<Arc<Handle>> {
    // Runs of another server sharing the database, and runs on workers, keep their leases: they
    // go back to the queue if their holder goes quiet.
    let identity = ServerIdentity::new();
    db.requeue_abandoned(
        |holder| identity.is_gone(holder),
        "the server restarted: the run resumes from its last checkpoint",
    )
    .await?;
    let (sender, receiver) = mpsc::channel();
    let handle = Arc::new(Handle {
        sender: Mutex::new(sender),
        stopping: AtomicBool::new(false),
        events: tokio::sync::Notify::new(),
    });
    let supervisor = Supervisor {
        db,
        settings,
        metrics,
        blobs,
        runtime: Runtime::current(),
        handle: handle.clone(),
        gpus,
        children: Vec::new(),
        identity: identity.to_string(),
        renewed: Instant::now(),
    };
    std::thread::Builder::new()
        .name("glmtune-supervisor".into())
        .spawn(move || supervisor.run(receiver))
        .map_err(|e| crate::db::DbError::Connect {
            url: "supervisor".into(),
            message: e.to_string(),
        })?;
    Ok(handle)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Train,
    Eval,
}

struct Running {
    run: Run,
    /// The GPU the run holds (`--gpus`), `None` on the CPU.
    gpu: Option<usize>,
    process: Child,
    phase: Phase,
    log: Tail,
    stderr: Tail,
    /// Training rows up to this step were turned into events by an earlier attempt.
    emitted_step: i64,
    trained_tokens: i64,
    last_progress: Instant,
    stalled: bool,
    /// Why the child stopped: the trainer's error row, else (an error before its log was open,
    /// an evaluation's) the last line of its stderr.
    error: Option<String>,
    last_line: Option<String>,
}

struct Supervisor {
    db: Db,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    /// Where datasets are stored (the server's store: making another would clear its uploads).
    blobs: Blobs,
    runtime: Runtime,
    handle: Arc<Handle>,
    /// With `--gpus`: a run a GPU, held until it ends.
    gpus: Arc<Gpus>,
    children: Vec<Running>,
    /// The name this server's runs are leased in (`HOST:PID:NONCE`).
    identity: String,
    /// When their leases were last renewed.
    renewed: Instant,
}

impl Supervisor {
    fn run(mut self, receiver: mpsc::Receiver<Message>) {
        loop {
            match receiver.recv_timeout(TICK) {
                Ok(Message::Shutdown(done)) => {
                    self.stop_all();
                    let _ = done.send(());
                    return;
                }
                Ok(Message::Wake) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.stop_all();
                    return;
                }
            }
            if let Err(error) = self.tick() {
                tracing::error!("supervisor: {error}");
            }
        }
    }

    fn block<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }

    fn event(&self, run_id: &str, message: &str, data: RunEventData) {
        if let Err(error) = self.block(self.db.append_event(run_id, message, &data)) {
            tracing::error!(run = run_id, "recording an event: {error}");
        }
        self.handle.events.notify_waiters();
    }

    fn finish(&self, run_id: &str, to: RunState, error: Option<&str>, message: &str) {
        if let Err(e) =
            self.block(
                self.db
                    .transition(run_id, RunState::Running, to, error, message),
            )
        {
            tracing::error!(run = run_id, "finishing: {e}");
        }
        self.handle.events.notify_waiters();
    }

    fn tick(&mut self) -> Result<(), SupervisorError> {
        // Leases that ran out: their runs wait in the queue again (for any worker, or for us).
        let expired = self.block(self.db.expire_leases())?;
        for lapsed in &expired {
            tracing::warn!(run = lapsed.run_id, holder = lapsed.holder, "lease ended");
        }
        self.renew_leases();
        if !expired.is_empty() {
            self.handle.events.notify_waiters();
        }
        let mut index = 0;
        while index < self.children.len() {
            if self.watch(index)? {
                let done = self.children.remove(index);
                if let Some(gpu) = done.gpu {
                    self.gpus.release(gpu);
                }
            } else {
                index += 1;
            }
        }
        self.metrics.set_active_runs(self.children.len());
        // With GPUs, one run each; without, --max-concurrent-runs on the CPU.
        let capacity = if self.gpus.is_empty() {
            self.settings.max_concurrent_runs
        } else {
            self.gpus.len()
        };
        while self.children.len() < capacity {
            let queued = self.block(self.db.runs_in_state(RunState::Queued))?;
            let Some(run) = queued.into_iter().next() else {
                break;
            };
            let gpu = if self.gpus.is_empty() {
                None
            } else {
                match self.gpus.take() {
                    Some(gpu) => Some(gpu),
                    None => break,
                }
            };
            let ttl = self.settings.lease.as_millis() as i64;
            let claimed = self.block(self.db.claim_run(&run.id, &self.identity, ttl))?;
            if !claimed {
                if let Some(gpu) = gpu {
                    self.gpus.release(gpu);
                }
                continue;
            }
            self.handle.events.notify_waiters();
            match self.spawn_training(&run, gpu) {
                Ok(child) => self.children.push(child),
                Err(error) => {
                    if let Some(gpu) = gpu {
                        self.gpus.release(gpu);
                    }
                    self.finish(
                        &run.id,
                        RunState::Failed,
                        Some(&error.to_string()),
                        &format!("could not start: {error}"),
                    )
                }
            }
        }
        Ok(())
    }

    /// Follows one child; true once it is done with.
    fn watch(&mut self, index: usize) -> Result<bool, SupervisorError> {
        self.read_progress(index);
        let run_id = self.children[index].run.id.clone();
        if self.block(self.db.cancel_requested(&run_id))? {
            let child = &mut self.children[index];
            let _ = child.process.kill();
            let _ = child.process.wait();
            self.finish(&run_id, RunState::Cancelled, None, "cancelled");
            return Ok(true);
        }
        let status = self.children[index]
            .process
            .try_wait()
            .map_err(SupervisorError::io("waiting for a child"))?;
        let Some(status) = status else {
            self.check_stall(index);
            return Ok(false);
        };
        self.read_progress(index);
        let child = &self.children[index];
        let layout = run_layout(&self.settings.data_dir, &run_id);
        let reason = child
            .error
            .clone()
            .or_else(|| child.last_line.clone())
            .unwrap_or_else(|| status.to_string());
        match child.phase {
            Phase::Train if status.success() && layout.adapter().is_file() => {
                let samples = child.run.settings.eval_samples.unwrap_or(0);
                if child.run.validation_dataset.is_some() && samples > 0 {
                    let (run, gpu) = (child.run.clone(), child.gpu);
                    match self.spawn_eval(&run, gpu) {
                        Ok(process) => {
                            let child = &mut self.children[index];
                            child.process = process;
                            child.phase = Phase::Eval;
                            child.stderr = Tail::new(layout.eval_stderr());
                            child.last_line = None;
                            self.event(&run_id, "training done; evaluating", INFO);
                            return Ok(false);
                        }
                        Err(error) => self.event(
                            &run_id,
                            &format!("evaluation could not start: {error}"),
                            WARNING,
                        ),
                    }
                }
                self.finish(&run_id, RunState::Succeeded, None, "succeeded");
            }
            Phase::Train
                if status.success()
                    && child
                        .run
                        .sweep
                        .as_ref()
                        .and_then(|trial| trial.pause_at)
                        .is_some_and(|at| child.run.step >= at) =>
            {
                let message = format!(
                    "paused at step {}: its sweep ranks its trials there",
                    child.run.step
                );
                self.finish(&run_id, RunState::Paused, None, &message);
            }
            Phase::Train => {
                let message = if status.success() {
                    "training stopped before its last step".to_owned()
                } else {
                    reason
                };
                self.finish(&run_id, RunState::Failed, Some(&message), &message);
            }
            Phase::Eval => {
                let scores = std::fs::read_to_string(layout.scores())
                    .ok()
                    .and_then(|text| serde_json::from_str(&text).ok());
                match (status.success(), scores) {
                    (true, Some(scores)) => self.event(
                        &run_id,
                        "evaluation scores",
                        RunEventData::Scores(EvalScores { scores }),
                    ),
                    _ => self.event(&run_id, &format!("evaluation failed: {reason}"), WARNING),
                }
                self.finish(&run_id, RunState::Succeeded, None, "succeeded");
            }
        }
        Ok(true)
    }

    fn read_progress(&mut self, index: usize) {
        let child = &mut self.children[index];
        let run_id = child.run.id.clone();
        let mut events = Vec::new();
        if child.phase == Phase::Train {
            for line in child.log.lines() {
                let Some(row) = LogRow::parse(&line) else {
                    continue;
                };
                let step = row.step() as i64;
                if step <= child.emitted_step && child.emitted_step > 0 {
                    continue;
                }
                child.last_progress = Instant::now();
                child.stalled = false;
                match &row {
                    LogRow::Step(row) => {
                        child.trained_tokens += row.tokens as i64;
                        self.metrics.set_training_rate(row.tokens_per_second);
                        child.run.max_steps = Some(row.max_steps as i64);
                    }
                    // Told by the failure's own event, once the child has exited.
                    LogRow::Error(row) => child.error = Some(row.error.clone()),
                    _ => {}
                }
                let Some(message) = row_message(&row) else {
                    continue;
                };
                child.run.step = child.run.step.max(step);
                events.push((message, RunEventData::Log(row)));
            }
        }
        for line in child.stderr.lines() {
            if let Some((text, note)) = note_event(&line) {
                child.last_line = Some(text.clone());
                events.push((text, note));
            }
        }
        if events.is_empty() {
            return;
        }
        let had_metrics = events
            .iter()
            .any(|(_, data)| matches!(data, RunEventData::Log(LogRow::Step(_) | LogRow::Eval(_))));
        let progress = had_metrics.then(|| Progress {
            step: child.run.step,
            max_steps: child.run.max_steps.unwrap_or(0),
            trained_tokens: child.trained_tokens,
        });
        if let Err(error) = self.block(self.db.record_log(&run_id, &events, progress)) {
            tracing::error!(run = run_id, "recording the log's events: {error}");
        }
        self.handle.events.notify_waiters();
    }

    /// Renews the leases of this server's runs a third of the way through them; a run whose lease
    /// was taken back meanwhile (the database out of reach for longer) is another's now: its
    /// trainer is stopped here.
    fn renew_leases(&mut self) {
        if self.renewed.elapsed() < self.settings.lease / 3 {
            return;
        }
        self.renewed = Instant::now();
        let ttl = self.settings.lease.as_millis() as i64;
        let held = match self.block(self.db.renew_server_leases(&self.identity, ttl)) {
            Ok(held) => held,
            Err(error) => {
                tracing::error!("renewing this server's leases: {error}");
                return;
            }
        };
        let mut index = 0;
        while index < self.children.len() {
            if held.contains(&self.children[index].run.id) {
                index += 1;
                continue;
            }
            let mut lost = self.children.remove(index);
            tracing::warn!(
                run = lost.run.id,
                "the run's lease was taken back: stopping its trainer"
            );
            let _ = lost.process.kill();
            let _ = lost.process.wait();
            if let Some(gpu) = lost.gpu {
                self.gpus.release(gpu);
            }
        }
    }

    fn check_stall(&mut self, index: usize) {
        let child = &mut self.children[index];
        if child.phase != Phase::Train
            || child.stalled
            || child.last_progress.elapsed() < self.settings.stall
        {
            return;
        }
        child.stalled = true;
        let seconds = child.last_progress.elapsed().as_secs();
        let (run_id, step) = (child.run.id.clone(), child.run.step);
        self.event(
            &run_id,
            &format!("no training step for {seconds} s (at step {step})"),
            RunEventData::Stall(Stall { seconds, step }),
        );
    }

    /// Server shutdown: each child checkpoints at its next step and exits; its run goes back
    /// to the queue for the next start.
    fn stop_all(&mut self) {
        for child in &self.children {
            // SIGINT: the trainer saves a checkpoint and exits.
            unsafe {
                libc::kill(child.process.id() as libc::pid_t, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + CHECKPOINT_GRACE;
        for index in 0..self.children.len() {
            loop {
                match self.children[index].process.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = self.children[index].process.kill();
                        let _ = self.children[index].process.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            self.read_progress(index);
            let run_id = self.children[index].run.id.clone();
            let finished = self.children[index].phase == Phase::Train
                && run_layout(&self.settings.data_dir, &run_id)
                    .adapter()
                    .is_file();
            let (to, message) = if finished {
                (RunState::Succeeded, "succeeded")
            } else {
                (
                    RunState::Queued,
                    "the server stopped: the run resumes from its checkpoint at the next start",
                )
            };
            self.finish(&run_id, to, None, message);
            if let Some(gpu) = self.children[index].gpu {
                self.gpus.release(gpu);
            }
        }
        self.children.clear();
    }
}
