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

use glmtune_engine::data::augment::record_as_it_was;
use glmtune_engine::data::Record;
use glmtune_shared::api::{Derivation, ReadOptions, VersionChanges};
use glmtune_shared::teach::{
    TeachDocument, TeachJob, TeachJobState, TeachReport, TeachRequest, TeachTask,
};
use tokio::runtime::Handle as Runtime;

use super::api::dataset_changes::changes_of;
use super::api::datasets::{find, store_derived, validate, version_options, Derived};
use super::supervisor::child::{flag, read_flags, spawn_child_with};
use super::{secrets, ApiError, AppState};
use crate::teach_journal as journal;

/// The job's output; its journal, report and inputs lie beside it.
fn job_file(data_dir: &Path, job: &str) -> PathBuf {
    data_dir.join("teach").join(format!("{job}.jsonl"))
}

/// A file of the job's beside its output (`JOB.SUFFIX`).
fn job_input(data_dir: &Path, job: &str, suffix: &str) -> PathBuf {
    data_dir.join("teach").join(format!("{job}.{suffix}"))
}

/// Answers a job's journal holds so far.
pub fn written(data_dir: &Path, job: &str) -> i64 {
    std::fs::read_to_string(journal::journal_path(&job_file(data_dir, job)))
        .map_or(0, |t| t.lines().count() as i64)
}

/// What the job's command last reported (tokens, retries, what it dropped).
pub fn report(data_dir: &Path, job: &str) -> Option<TeachReport> {
    journal::read_report(&job_file(data_dir, job))
}

struct Active {
    job: TeachJob,
    child: Child,
}

/// Starts the runner's thread; the receiver hears when it has stopped its child and left the
/// runtime (the server waits for it before the runtime ends: a thread inside `block_on` then
/// would panic).
pub fn start(state: AppState) -> tokio::sync::oneshot::Receiver<()> {
    let runtime = Runtime::current();
    let (done, stopped) = tokio::sync::oneshot::channel();
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
            let _ = done.send(());
        });
    if let Err(error) = spawned {
        tracing::error!("teaching jobs: no thread: {error}");
    }
    stopped
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
                        made.as_deref(),
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

/// `records` as lines of the layout a version of theirs has (`version_options`): the job's
/// command reads its parent and validation set, whatever their own columns, in one layout.
fn normalized(records: &[Record], conversations: bool, with_history: bool) -> String {
    let mut text = String::new();
    for record in records {
        // A validation set's records in the parent's layout: only their prompts are compared.
        let mut record = record.clone();
        match (conversations, record.messages.is_empty()) {
            (true, true) => record.messages = record.conversation(),
            (false, false) => record.messages.clear(),
            _ => {}
        }
        text.push_str(&record_as_it_was(&record, with_history));
        text.push('\n');
    }
    text
}

/// Writes the job's inputs (the parent and validation set in one layout, the documents), and
/// records the layout for [`finish`]: the command's arguments that read them.
async fn inputs(state: &AppState, job: &TeachJob) -> Result<Vec<String>, ApiError> {
    let data_dir = &state.settings.data_dir;
    let dataset = find(state, &job.dataset_id).await?;
    let parent = validate(
        &state.blobs.path(&dataset.sha256),
        &dataset.name,
        &dataset.read_options,
        None,
    )?;
    let conversations = parent.records.iter().any(|r| !r.messages.is_empty());
    let layout = version_options(conversations, parent.history);
    let parent_file = job_input(data_dir, &job.id, "parent.jsonl");
    std::fs::write(
        &parent_file,
        normalized(&parent.records, conversations, parent.history),
    )?;
    std::fs::write(
        job_input(data_dir, &job.id, "layout.json"),
        serde_json::to_vec(&layout).map_err(|e| ApiError::invalid(e.to_string()))?,
    )?;
    let request = &job.request;
    let mut args = Vec::new();
    if request.task == TeachTask::Questions {
        let folder = job_input(data_dir, &job.id, "documents");
        std::fs::create_dir_all(&folder)?;
        for document in &request.documents {
            std::fs::write(folder.join(&document.name), &document.text)?;
        }
        args.push(folder.to_string_lossy().into_owned());
        args.push(flag("parent", &parent_file.to_string_lossy()));
    } else {
        args.push(parent_file.to_string_lossy().into_owned());
    }
    if let Some(id) = &request.validation_dataset {
        let held_out = find(state, id).await?;
        let validation = validate(
            &state.blobs.path(&held_out.sha256),
            &held_out.name,
            &held_out.read_options,
            None,
        )?;
        let file = job_input(data_dir, &job.id, "validation.jsonl");
        std::fs::write(
            &file,
            normalized(&validation.records, conversations, parent.history),
        )?;
        args.push(flag("validation-file", &file.to_string_lossy()));
    }
    args.extend(read_flags(&layout));
    Ok(args)
}

/// Starts the job's `glmtune data teach`.
async fn spawn(state: &AppState, job: &TeachJob) -> Result<Child, ApiError> {
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
    let mut args = vec!["data".to_owned(), "teach".to_owned()];
    args.extend(inputs(state, job).await?);
    args.extend([
        flag("out", &out.to_string_lossy()),
        flag("teacher-url", &teacher.base_url),
        flag("teacher-model", &teacher.model),
        flag("task", request.task.as_str()),
        flag("samples", &request.samples.to_string()),
        flag("keep", request.keep.as_str()),
        flag("threshold", &request.threshold.to_string()),
        flag("max-tokens", &request.max_tokens.to_string()),
        flag("concurrency", &teacher.concurrency.to_string()),
    ]);
    if let Some(rpm) = teacher.requests_per_minute {
        args.push(flag("requests-per-minute", &rpm.to_string()));
    }
    for (name, value) in [
        ("template", &request.template),
        ("then-template", &request.then_template),
        ("judge-template", &request.judge_template),
    ] {
        if let Some(value) = value {
            args.push(flag(name, value));
        }
    }
    if let Some(limit) = request.preview {
        args.push(flag("limit", &limit.to_string()));
    }
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

/// The layout the job's inputs were written in, which its output has too.
fn layout(data_dir: &Path, job: &str) -> Result<ReadOptions, ApiError> {
    serde_json::from_slice(&std::fs::read(job_input(data_dir, job, "layout.json"))?)
        .map_err(|e| ApiError::invalid(format!("the job's layout: {e}")))
}

/// A preview job's new records beside the parent's records they were made from.
pub async fn preview(state: &AppState, job: &TeachJob) -> Result<VersionChanges, ApiError> {
    let data_dir = state.settings.data_dir.clone();
    let job = job.clone();
    tokio::task::spawn_blocking(move || {
        let layout = layout(&data_dir, &job.id)?;
        let parent = validate(
            &job_input(&data_dir, &job.id, "parent.jsonl"),
            "the parent",
            &layout,
            None,
        )?;
        let mut changes = changes_of(
            &job_file(&data_dir, &job.id),
            &format!("{}.jsonl", job.id),
            &layout,
            &parent.records,
            100,
        )?;
        changes.parent_id = Some(job.dataset_id.clone());
        Ok(changes)
    })
    .await
    .map_err(|e| ApiError::invalid(e.to_string()))?
}

/// Stores the job's output as the dataset's new version; its id (none for a preview, which is
/// only shown).
async fn finish(state: &AppState, job: &TeachJob) -> Result<Option<String>, ApiError> {
    if job.request.preview.is_some() {
        return Ok(None);
    }
    let data_dir = &state.settings.data_dir;
    let parent = find(state, &job.dataset_id).await?;
    let teacher = state
        .db
        .teacher(&job.request.teacher)
        .await?
        .map_or_else(|| job.request.teacher.clone(), |(t, _)| t.name);
    let out = job_file(data_dir, &job.id);
    let layout = layout(data_dir, &job.id)?;
    let validated = validate(&out, &format!("{}.jsonl", job.id), &layout, None)?;
    let upload = state.blobs.prepare(&std::fs::read(&out)?)?;
    let derived = Derived {
        name: format!("{} (taught: {})", parent.name, job.request.task.as_str()),
        upload,
        records: validated.records.clone(),
        read_options: layout,
        derivation: Derivation::Teach {
            request: Box::new(TeachRequest {
                // The documents' names only (each record names its own): their text, up to
                // 8 MiB, would ride along in every listing of datasets.
                documents: job
                    .request
                    .documents
                    .iter()
                    .map(|d| TeachDocument {
                        name: d.name.clone(),
                        text: String::new(),
                    })
                    .collect(),
                ..job.request.clone()
            }),
            teacher,
            records: validated.records.len() as i64,
            report: journal::read_report(&out),
        },
    };
    Ok(Some(
        store_derived(state, job.owner_id.clone(), &parent, derived)
            .await?
            .id,
    ))
}
