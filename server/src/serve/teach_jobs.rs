//! The teaching jobs' runner: one job at a time, as a child `glmtune data teach` (its key in the
//! child's environment only) writing `DATA_DIR/teach/JOB.jsonl` line by line. A job that was
//! running when the server stopped is started again at the next start and the command goes on
//! from its file, so nothing is lost or asked twice. When the child succeeds, its file becomes a
//! new version of the dataset (`Derivation::Teach`).
//!
//! It lives on its own thread: children die with the thread that started them
//! (`PR_SET_PDEATHSIG`), which must outlive them.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use glmtune_shared::api::Derivation;
use glmtune_shared::teach::{TeachJob, TeachJobState};
use tokio::runtime::Handle as Runtime;

use super::api::datasets::{find, store_derived, validate, version_options, Derived};
use super::supervisor::child::{flag, read_flags, spawn_child_with};
use super::{secrets, ApiError, AppState};

fn job_file(data_dir: &Path, job: &str) -> PathBuf {
    data_dir.join("teach").join(format!("{job}.jsonl"))
}

/// Records a job's file holds so far.
pub fn written(data_dir: &Path, job: &str) -> i64 {
    std::fs::read_to_string(job_file(data_dir, job)).map_or(0, |t| t.lines().count() as i64)
}

struct Active {
    job: TeachJob,
    child: Child,
}

/// Starts the runner's thread.
pub fn start(state: AppState) {
    let runtime = Runtime::current();
    let spawned = std::thread::Builder::new()
        .name("glmtune-teach".into())
        .spawn(move || {
            let mut active: Option<Active> = None;
            while !state
                .supervisor
                .stopping
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                if let Err(error) = runtime.block_on(step(&state, &mut active)) {
                    tracing::error!("teaching jobs: {error}");
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            if let Some(mut running) = active {
                // Stopped with the server; it goes on from its file at the next start.
                let _ = running.child.kill();
                let _ = running.child.wait();
            }
        });
    if let Err(error) = spawned {
        tracing::error!("teaching jobs: no thread: {error}");
    }
}

async fn step(state: &AppState, active: &mut Option<Active>) -> Result<(), ApiError> {
    if let Some(running) = active {
        let Some(status) = running.child.try_wait()? else {
            return Ok(());
        };
        let job = running.job.clone();
        *active = None;
        let outcome = if status.success() {
            finish(state, &job).await
        } else {
            let log = job_file(&state.settings.data_dir, &job.id).with_extension("stderr");
            let last = std::fs::read_to_string(&log)
                .ok()
                .and_then(|t| {
                    t.lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| status.to_string());
            Err(ApiError::invalid(last))
        };
        match outcome {
            Ok(made) => {
                state
                    .db
                    .teach_job_transition(
                        &job.id,
                        TeachJobState::Running,
                        TeachJobState::Succeeded,
                        None,
                        Some(&made),
                    )
                    .await?;
            }
            Err(error) => fail(state, &job, &error).await?,
        }
        return Ok(());
    }
    // A job left running by a stopped server first, then the oldest queued one.
    let job = match state
        .db
        .teach_jobs_in_state(TeachJobState::Running)
        .await?
        .pop()
    {
        Some(job) => job,
        None => {
            let Some(job) = state
                .db
                .teach_jobs_in_state(TeachJobState::Queued)
                .await?
                .into_iter()
                .next()
            else {
                return Ok(());
            };
            if !state
                .db
                .teach_job_transition(
                    &job.id,
                    TeachJobState::Queued,
                    TeachJobState::Running,
                    None,
                    None,
                )
                .await?
            {
                return Ok(());
            }
            job
        }
    };
    match spawn(state, &job).await {
        Ok(child) => *active = Some(Active { job, child }),
        Err(error) => fail(state, &job, &error).await?,
    }
    Ok(())
}

/// Marks a running job failed, saying why.
async fn fail(state: &AppState, job: &TeachJob, error: &ApiError) -> Result<(), ApiError> {
    state
        .db
        .teach_job_transition(
            &job.id,
            TeachJobState::Running,
            TeachJobState::Failed,
            Some(&error.to_string()),
            None,
        )
        .await?;
    Ok(())
}

/// Starts the job's `glmtune data teach`.
async fn spawn(state: &AppState, job: &TeachJob) -> Result<Child, ApiError> {
    let dataset = find(state, &job.dataset_id).await?;
    let (teacher, sealed) = state
        .db
        .teacher(&job.request.teacher)
        .await?
        .ok_or_else(|| ApiError::invalid(format!("teacher {} is gone", job.request.teacher)))?;
    let key = match (&sealed, &teacher.key_env) {
        (Some(sealed), _) => Some(secrets::open(&state.settings.data_dir, sealed)?),
        (None, Some(variable)) => Some(std::env::var(variable).map_err(|_| {
            ApiError::invalid(format!("the server has no environment variable {variable}"))
        })?),
        (None, None) => None,
    };
    let out = job_file(&state.settings.data_dir, &job.id);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let request = &job.request;
    let mut args = vec![
        "data".to_owned(),
        "teach".to_owned(),
        state
            .blobs
            .path(&dataset.sha256)
            .to_string_lossy()
            .into_owned(),
        flag("out", &out.to_string_lossy()),
        flag("teacher-url", &teacher.base_url),
        flag("teacher-model", &teacher.model),
        flag("task", request.task.as_str()),
        flag("samples", &request.samples.to_string()),
        flag("max-tokens", &request.max_tokens.to_string()),
        flag("concurrency", &teacher.concurrency.to_string()),
    ];
    if let Some(rpm) = teacher.requests_per_minute {
        args.push(flag("requests-per-minute", &rpm.to_string()));
    }
    if let Some(template) = &request.template {
        args.push(flag("template", template));
    }
    args.extend(read_flags(&dataset.read_options));
    let env: Vec<(&str, &str)> = key
        .as_deref()
        .map(|k| vec![("GLMTUNE_TEACHER_KEY", k)])
        .unwrap_or_default();
    Ok(spawn_child_with(
        &args,
        &out.with_extension("stderr"),
        None,
        &env,
    )?)
}

/// Stores the job's file as the dataset's new version; its id.
async fn finish(state: &AppState, job: &TeachJob) -> Result<String, ApiError> {
    let parent = find(state, &job.dataset_id).await?;
    let teacher = state
        .db
        .teacher(&job.request.teacher)
        .await?
        .map_or_else(|| job.request.teacher.clone(), |(t, _)| t.name);
    let out = job_file(&state.settings.data_dir, &job.id);
    let bytes = std::fs::read(&out)?;
    // The job wrote the parent's layout: its conversations or its columns.
    let parent_records = validate(
        &state.blobs.path(&parent.sha256),
        &parent.name,
        &parent.read_options,
        None,
    )?;
    let messages = parent_records
        .records
        .iter()
        .any(|r| !r.messages.is_empty());
    let read_options = version_options(messages, parent_records.history);
    let validated = validate(&out, &format!("{}.jsonl", job.id), &read_options, None)?;
    let upload = state.blobs.prepare(&bytes)?;
    let derived = Derived {
        name: format!("{} (taught: {})", parent.name, job.request.task.as_str()),
        upload,
        records: validated.records.clone(),
        read_options,
        derivation: Derivation::Teach {
            request: job.request.clone(),
            teacher,
            records: validated.records.len() as i64,
        },
    };
    Ok(store_derived(state, job.owner_id.clone(), &parent, derived)
        .await?
        .id)
}
