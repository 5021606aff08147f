//! Training workers: registering (`glmtune worker` at its start), the list the dashboard shows,
//! and leasing a queued run for a free device. What a worker then does with its lease is in
//! `leases`.

use std::path::Path as FsPath;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_shared::api::{Dataset, List};
use glmtune_shared::run_layout::RunLayout;
use glmtune_shared::run_log::TRAINER_LOG;
use glmtune_shared::worker::{
    FileDigest, Lease, LeaseRequest, LeasedDataset, Worker, WorkerRegistration,
};

use crate::db::workers::WorkerRow;
use crate::serve::auth::Caller;
use crate::serve::log_events::LogMark;
use crate::serve::{ApiError, AppState};

#[utoipa::path(
    post,
    path = "/api/v1/workers",
    summary = "Register a training worker (or update the one this key registered under the name)",
    request_body = WorkerRegistration,
    responses((status = 200, body = Worker))
)]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<WorkerRegistration>, JsonRejection>,
) -> Result<Json<Worker>, ApiError> {
    let Json(registration) = body?;
    let name = registration.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::invalid("name: give 1 to 200 characters"));
    }
    if registration.devices.is_empty() {
        return Err(ApiError::invalid("devices: a worker needs at least one"));
    }
    for (i, device) in registration.devices.iter().enumerate() {
        if device.device != "cpu" && !device.device.starts_with("cuda:") {
            return Err(ApiError::invalid(format!(
                "devices[{i}].device: expected cpu or cuda:N, got {:?}",
                device.device
            )));
        }
    }
    let row = state
        .db
        .register_worker(&caller.principal, &registration)
        .await?;
    tracing::info!(
        worker = row.worker.id,
        name = row.worker.name,
        "worker registered"
    );
    Ok(Json(row.worker))
}

#[utoipa::path(
    get,
    path = "/api/v1/workers",
    summary = "The training workers: their devices, models, runs and when they were last heard from",
    responses((status = 200, body = List<Worker>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<List<Worker>>, ApiError> {
    Ok(Json(List {
        data: state.db.workers().await?,
    }))
}

/// The worker `id`, when the caller's key registered it.
pub async fn own_worker(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<WorkerRow, ApiError> {
    let row = state
        .db
        .worker(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("worker {id} is not registered")))?;
    if row.principal != caller.principal {
        return Err(ApiError::forbidden(format!(
            "worker {id} was registered with another key"
        )));
    }
    Ok(row)
}

#[utoipa::path(
    post,
    path = "/api/v1/workers/{id}/lease",
    summary = "Lease the oldest queued run this worker can train, for one of its devices",
    request_body = LeaseRequest,
    responses(
        (status = 200, body = Lease),
        (status = 204, description = "No run waits that this worker can train")
    )
)]
pub async fn lease(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<LeaseRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let row = own_worker(&state, &caller, &id).await?;
    state.db.worker_seen(&id).await?;
    let worker = row.worker;
    if !worker.devices.iter().any(|d| d.device == request.device) {
        return Err(ApiError::invalid(format!(
            "device: {:?} is not one of worker {}'s devices",
            request.device, worker.name
        )));
    }
    let models: Vec<String> = worker.models.iter().map(|m| m.name.clone()).collect();
    let ttl = state.settings.lease.as_millis() as i64;
    let Some(leased) = state
        .db
        .lease_run(&worker, &request.device, &models, ttl)
        .await?
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    state.supervisor.events.notify_waiters();
    let run = leased.run.clone();
    let layout = state.run_layout(&run.id);
    std::fs::create_dir_all(layout.dir())?;
    // Rows a server-run attempt told: the worker's log, cut back to its checkpoint, repeats them.
    let mark = LogMark::of_file(&layout.trainer_log()).to_i64();
    state.db.set_log_mark(&run.id, mark).await?;
    let train = leased_dataset(&state, &run.train_dataset).await?;
    let validation = match &run.validation_dataset {
        Some(id) => Some(leased_dataset(&state, id).await?),
        None => None,
    };
    let dir = layout.dir().to_path_buf();
    let resume = tokio::task::spawn_blocking(move || resume_files(&dir))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    tracing::info!(
        run = run.id,
        worker = worker.name,
        device = request.device,
        "leased"
    );
    Ok(Json(Lease {
        id: leased.lease_id,
        run,
        expires_at_ms: leased.expires_ms,
        heartbeat_ms: (ttl / 3).max(100) as u64,
        train,
        validation,
        resume,
    })
    .into_response())
}

async fn leased_dataset(state: &AppState, id: &str) -> Result<LeasedDataset, ApiError> {
    let dataset: Dataset = state
        .db
        .dataset(id)
        .await?
        .ok_or_else(|| ApiError::conflict(format!("the run's dataset {id} is gone")))?;
    Ok(LeasedDataset {
        sha256: dataset.sha256,
        bytes: dataset.bytes,
        read_options: dataset.read_options,
    })
}

/// What a run resumes from: its newest checkpoint's files and the trainer's log; nothing when
/// it has no checkpoint.
fn resume_files(dir: &FsPath) -> Result<Vec<FileDigest>, ApiError> {
    // The checkpoint `glmtune train --resume` will pick: the newest complete one.
    let Some((step, folder)) = crate::run_folder::newest_checkpoint(dir)? else {
        return Ok(Vec::new());
    };
    let checkpoint = RunLayout::checkpoint_name(step);
    let mut files = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(folder)?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        files.push(digest(dir, &format!("{checkpoint}/{name}"))?);
    }
    if dir.join(TRAINER_LOG).is_file() {
        files.push(digest(dir, TRAINER_LOG)?);
    }
    Ok(files)
}

/// The hash and size of `path` under `dir`.
pub fn digest(dir: &FsPath, path: &str) -> Result<FileDigest, ApiError> {
    Ok(crate::run_folder::file_digest(&dir.join(path), path)?)
}
