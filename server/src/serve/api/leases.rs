//! What a worker does with a lease: heartbeats, the trainer's log in batches, the run's datasets
//! and resume files, uploads in chunks that go on after a cut, commits, and the run's end. Every
//! call first finds the lease held, unexpired and the caller's (`held`): a late worker gets
//! `410 Gone` and changes nothing.

use std::io::{Seek, Write};

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use glmtune_shared::api::{Run, RunState};
use glmtune_shared::run_event::{EvalScores, RunEventData};
use glmtune_shared::run_log::{LogRow, TRAINER_LOG};
use glmtune_shared::worker::{
    is_run_file, Commit, Completion, FileDigest, Heartbeat, LogBatch, Outcome, UploadState,
};
use serde::Deserialize;

use super::workers::{digest, own_worker};
use crate::db::runs::Progress;
use crate::db::workers::Leased;
use crate::serve::auth::Caller;
use crate::serve::log_events::{append_new_rows, note_event, row_message, LogMark};
use crate::serve::{ApiError, AppState};

/// The largest chunk of an upload one call may carry.
pub const CHUNK_LIMIT: usize = 16 << 20;

/// The run `lease` holds, when it is held, unexpired and the caller's worker's.
async fn held(state: &AppState, caller: &Caller, lease: &str) -> Result<Leased, ApiError> {
    let leased = state.db.leased(lease).await?.ok_or_else(|| {
        ApiError::gone(format!(
            "lease {lease} is not held: it ran out, its run was cancelled or it ended"
        ))
    })?;
    let worker = leased
        .run
        .worker
        .clone()
        .ok_or_else(|| ApiError::internal("a leased run without its worker"))?;
    own_worker(state, caller, &worker).await?;
    state.db.worker_seen(&worker).await?;
    Ok(leased)
}

#[utoipa::path(
    post,
    path = "/api/v1/leases/{id}/heartbeat",
    summary = "Keep a lease (410 once it is lost: stop the run)",
    responses((status = 200, body = Heartbeat), (status = 410, description = "The lease is not held"))
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Heartbeat>, ApiError> {
    held(&state, &caller, &id).await?;
    let ttl = state.settings.lease.as_millis() as i64;
    let expires_at_ms = state
        .db
        .heartbeat(&id, ttl)
        .await?
        .ok_or_else(|| ApiError::gone(format!("lease {id} ran out")))?;
    Ok(Json(Heartbeat { expires_at_ms }))
}

#[utoipa::path(
    post,
    path = "/api/v1/leases/{id}/log",
    summary = "The trainer's log rows and notes since the last batch (a batch sent again is told once)",
    request_body = LogBatch,
    responses((status = 204, description = "Recorded"))
)]
pub async fn log(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<LogBatch>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(batch) = body?;
    // Two tries: a batch racing another call about the same lease reads the mark again.
    for _ in 0..2 {
        let leased = held(&state, &caller, &id).await?;
        let mut mark = LogMark::from_i64(leased.log_mark);
        let mut events = Vec::new();
        let (mut step, mut max_steps) = (leased.run.step, leased.run.max_steps.unwrap_or(0));
        let mut tokens = leased.run.trained_tokens;
        let mut metrics = false;
        for row in &batch.rows {
            if !mark.admits(row) {
                continue;
            }
            mark.note(row);
            if let LogRow::Step(row) = row {
                tokens += row.tokens as i64;
                max_steps = row.max_steps as i64;
                metrics = true;
            }
            metrics |= matches!(row, LogRow::Eval(_));
            step = step.max(row.step() as i64);
            if let Some(message) = row_message(row) {
                events.push((message, RunEventData::Log(row.clone())));
            }
        }
        let told = u64::try_from(leased.notes).unwrap_or(0);
        let skip = told.saturating_sub(batch.first_note) as usize;
        events.extend(
            batch
                .notes
                .iter()
                .skip(skip)
                .filter_map(|line| note_event(line)),
        );
        let notes = told.max(batch.first_note + batch.notes.len() as u64);
        let progress = metrics.then_some(Progress {
            step,
            max_steps,
            trained_tokens: tokens,
        });
        let recorded = state
            .db
            .record_leased_log(&leased, &events, progress, mark.to_i64(), notes as i64)
            .await?;
        if recorded {
            // The server's copy of the log (sweeps and the best checkpoint read it), after the
            // events: a crash between the two is caught up by the next batch.
            let path = state.run_layout(&leased.run.id).trainer_log();
            tokio::task::spawn_blocking(move || append_new_rows(&path, &batch.rows))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))??;
            state.supervisor.events.notify_waiters();
            return Ok(StatusCode::NO_CONTENT);
        }
    }
    Err(ApiError::conflict(
        "another call about this lease moved its log at the same time; send the batch again",
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/leases/{id}/datasets/{sha256}",
    summary = "A dataset of the leased run, by its hash",
    responses((status = 200, body = crate::serve::openapi::Binary, content_type = "application/octet-stream"))
)]
pub async fn dataset(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, sha256)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let leased = held(&state, &caller, &id).await?;
    let run = &leased.run;
    let mut hashes = Vec::new();
    for dataset in std::iter::once(&run.train_dataset).chain(run.validation_dataset.as_ref()) {
        if let Some(found) = state.db.dataset(dataset).await? {
            hashes.push(found.sha256);
        }
    }
    if !hashes.contains(&sha256) {
        return Err(ApiError::not_found(format!(
            "run {} reads no dataset {sha256}",
            run.id
        )));
    }
    super::models::serve_file(state.blobs.path(&sha256), request).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct FileQuery {
    /// A file of the run's folder, `/`-separated.
    path: String,
    /// Where this chunk goes in the file (an upload).
    #[serde(default)]
    offset: Option<u64>,
}

fn check_path(path: &str) -> Result<(), ApiError> {
    if is_run_file(path) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "path: {path:?} is not a file of a run's folder"
        )))
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/leases/{id}/files",
    summary = "A file an earlier attempt left (a checkpoint's, the trainer's log), to resume from",
    params(FileQuery),
    responses((status = 200, body = crate::serve::openapi::Binary, content_type = "application/octet-stream"))
)]
pub async fn file(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<FileQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let leased = held(&state, &caller, &id).await?;
    check_path(&query.path)?;
    if !(query.path == TRAINER_LOG || query.path.starts_with("checkpoint-")) {
        return Err(ApiError::not_found(format!(
            "{}: a worker reads a run's checkpoints and log only",
            query.path
        )));
    }
    let path = state.run_dir(&leased.run.id).join(&query.path);
    if !path.is_file() {
        return Err(ApiError::not_found(format!(
            "run {} has no file {}",
            leased.run.id, query.path
        )));
    }
    super::models::serve_file(path, request).await
}

#[utoipa::path(
    get,
    path = "/api/v1/leases/{id}/uploads",
    summary = "How much of an uploaded file the server holds (to go on after a cut)",
    params(FileQuery),
    responses((status = 200, body = UploadState))
)]
pub async fn upload_state(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<FileQuery>,
) -> Result<Json<UploadState>, ApiError> {
    let leased = held(&state, &caller, &id).await?;
    check_path(&query.path)?;
    let path = state
        .run_layout(&leased.run.id)
        .uploads(&id)
        .join(&query.path);
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    Ok(Json(UploadState {
        path: query.path,
        bytes,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/leases/{id}/uploads",
    summary = "A chunk of a file of the run, written at `offset` (409 with the size held when that is not where the file ends)",
    params(FileQuery),
    request_body(content = crate::serve::openapi::Binary, content_type = "application/octet-stream"),
    responses((status = 200, body = UploadState), (status = 409, description = "The offset is not the file's end"))
)]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<FileQuery>,
    body: Bytes,
) -> Result<Json<UploadState>, ApiError> {
    let leased = held(&state, &caller, &id).await?;
    check_path(&query.path)?;
    let offset = query
        .offset
        .ok_or_else(|| ApiError::invalid("offset: say where the chunk goes"))?;
    let path = state
        .run_layout(&leased.run.id)
        .uploads(&id)
        .join(&query.path);
    let name = query.path.clone();
    let bytes = tokio::task::spawn_blocking(move || -> Result<u64, ApiError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let held = file.seek(std::io::SeekFrom::End(0))?;
        if held != offset {
            return Err(ApiError::conflict(format!(
                "{name}: the server holds {held} bytes; send from there, not from {offset}"
            ))
            .with_details(serde_json::json!({ "bytes": held })));
        }
        file.write_all(&body)?;
        file.sync_data()?;
        Ok(held + body.len() as u64)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(UploadState {
        path: query.path,
        bytes,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/leases/{id}/commit",
    summary = "Check uploaded files against their hashes and put them in the run's folder together",
    request_body = Commit,
    responses((status = 204, description = "In place"))
)]
pub async fn commit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<Commit>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(commit) = body?;
    let leased = held(&state, &caller, &id).await?;
    for file in &commit.files {
        check_path(&file.path)?;
    }
    let layout = state.run_layout(&leased.run.id);
    let (uploads, dir) = (layout.uploads(&id), layout.dir().to_path_buf());
    tokio::task::spawn_blocking(move || place(&uploads, &dir, &commit.files))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}

/// Checks each uploaded file, then moves each top-level entry they are under (a checkpoint's
/// folder as a whole) into the run's folder, replacing what an earlier attempt left there.
fn place(
    uploads: &std::path::Path,
    dir: &std::path::Path,
    files: &[FileDigest],
) -> Result<(), ApiError> {
    let mut tops = Vec::new();
    for expected in files {
        let found = digest(uploads, &expected.path).map_err(|_| {
            ApiError::invalid(format!("{}: not uploaded under this lease", expected.path))
        })?;
        if found.bytes != expected.bytes || found.sha256 != expected.sha256 {
            // A bad copy is dropped, to be sent again from its start.
            let _ = std::fs::remove_file(uploads.join(&expected.path));
            return Err(ApiError::invalid(format!(
                "{}: the server got {} bytes with SHA-256 {}, not {} bytes with {}",
                expected.path, found.bytes, found.sha256, expected.bytes, expected.sha256
            )));
        }
        std::fs::File::open(uploads.join(&expected.path))?.sync_all()?;
        let top = expected
            .path
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        if !tops.contains(&top) {
            tops.push(top);
        }
    }
    for top in tops {
        let (from, to) = (uploads.join(&top), dir.join(&top));
        if from.is_dir() && to.is_dir() {
            std::fs::remove_dir_all(&to)?;
        }
        std::fs::rename(&from, &to)?;
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/leases/{id}/complete",
    summary = "End the leased run: once, from the lease's holder, its files checked",
    request_body = Completion,
    responses((status = 200, body = Run), (status = 410, description = "The lease is not held"))
)]
pub async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<Completion>, JsonRejection>,
) -> Result<Json<Run>, ApiError> {
    let Json(completion) = body?;
    let leased = held(&state, &caller, &id).await?;
    let run_id = leased.run.id.clone();
    let layout = state.run_layout(&run_id);
    let dir = layout.dir().to_path_buf();
    let listed = completion.files.clone();
    let found = tokio::task::spawn_blocking(move || {
        listed
            .iter()
            .map(|file| {
                check_path(&file.path)?;
                digest(&dir, &file.path)
                    .map_err(|_| ApiError::invalid(format!("{}: not committed", file.path)))
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    if let Some((file, _)) = completion
        .files
        .iter()
        .zip(&found)
        .find(|(expected, found)| expected != found)
    {
        return Err(ApiError::invalid(format!(
            "{}: the run's folder holds another file; commit it again",
            file.path
        )));
    }
    let (to, error, message) = match completion.outcome {
        Outcome::Succeeded => {
            if !layout.adapter().is_file() {
                return Err(ApiError::invalid(format!(
                    "files: a succeeded run's adapter ({}) is not committed",
                    glmtune_shared::run_layout::RunLayout::ADAPTER
                )));
            }
            (RunState::Succeeded, None, "succeeded".to_owned())
        }
        Outcome::Paused => (
            RunState::Paused,
            None,
            format!(
                "paused at step {}: its sweep ranks its trials there",
                leased.run.step
            ),
        ),
        Outcome::Failed => {
            let why = completion
                .error
                .clone()
                .unwrap_or_else(|| "the worker gave no reason".to_owned());
            (RunState::Failed, Some(why.clone()), why)
        }
    };
    // The evaluation's scores are told with the run's end, in its transaction.
    let mut events = Vec::new();
    if to == RunState::Succeeded {
        let scores = std::fs::read_to_string(layout.scores())
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        if let Some(scores) = scores {
            events.push((
                "evaluation scores".to_owned(),
                RunEventData::Scores(EvalScores { scores }),
            ));
        }
    }
    if !state
        .db
        .complete_lease(&id, &run_id, to, error.as_deref(), &message, &events)
        .await?
    {
        return Err(ApiError::gone(format!(
            "lease {id} ran out before the run ended"
        )));
    }
    state.supervisor.events.notify_waiters();
    let _ = std::fs::remove_dir_all(layout.uploads(&id));
    tracing::info!(run = run_id, outcome = ?completion.outcome, "lease completed");
    let run = state
        .db
        .run(&run_id)
        .await?
        .ok_or_else(|| ApiError::internal("a completed run is gone"))?;
    Ok(Json(run))
}
