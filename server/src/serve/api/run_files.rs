//! What a run leaves: its logs, its checkpoints (with the losses logged up to each), its
//! evaluation, and its adapter, whole as a zip in the official layout or file by file.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_shared::api::{Checkpoint, Evaluation, List, Prediction, RunState};
use glmtune_shared::run_layout::RunLayout;
use glmtune_shared::run_log::LogRow;

use super::runs::find;
use crate::serve::openapi::Binary;
use crate::serve::{ApiError, AppState};

/// Files of an adapter folder that make up the official layout (and ours).
const ADAPTER_FILES: [&str; 4] = [
    "config.json",
    "generation_config.json",
    RunLayout::ADAPTER,
    "adapter.safetensors",
];

/// The trainer's stderr and log, as text.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/logs",
    summary = "The trainer's output",
    responses((status = 200, body = String))
)]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    find(&state, &id).await?;
    let layout = state.run_layout(&id);
    let mut text = String::new();
    for path in [layout.train_stderr(), layout.eval_stderr()] {
        if let Ok(part) = tokio::fs::read_to_string(path).await {
            text.push_str(&part);
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/checkpoints",
    summary = "Saved checkpoints",
    responses((status = 200, body = List<Checkpoint>))
)]
pub async fn checkpoints(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<List<Checkpoint>>, ApiError> {
    find(&state, &id).await?;
    Ok(Json(List {
        data: list_checkpoints(&state, &id),
    }))
}

/// Complete `checkpoint-N` folders of a run, oldest first, with the losses logged up to each.
pub fn list_checkpoints(state: &AppState, id: &str) -> Vec<Checkpoint> {
    let layout = state.run_layout(id);
    let log = std::fs::read_to_string(layout.trainer_log()).unwrap_or_default();
    let rows: Vec<LogRow> = log.lines().filter_map(LogRow::parse).collect();
    // The last row at or before `step` that `value` reads: (its step, the value).
    let last_until = |step: i64, value: fn(&LogRow) -> Option<f64>| {
        rows.iter()
            .rev()
            .filter_map(|row| Some((row.step() as i64, value(row)?)))
            .find(|(at, _)| *at <= step)
    };
    let mut found: Vec<Checkpoint> = crate::run_folder::complete_checkpoints(layout.dir())
        .flatten()
        .filter_map(|(step, path)| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            let step = i64::try_from(step).ok()?;
            let state_file = path.join(glmtune_engine::train::trainer::STATE_FILE);
            let created_at = state_file
                .metadata()
                .ok()?
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs() as i64;
            let evaluated = last_until(step, |row| match row {
                LogRow::Eval(row) => Some(row.eval_loss),
                _ => None,
            });
            let forgetting = evaluated.and_then(|(at, _)| {
                rows.iter().rev().find_map(|row| match row {
                    LogRow::Eval(row) if row.step as i64 == at => row.forgetting_kl,
                    _ => None,
                })
            });
            Some(Checkpoint {
                step,
                name,
                created_at,
                loss: last_until(step, |row| match row {
                    LogRow::Step(row) => Some(row.loss),
                    _ => None,
                })
                .map(|(_, loss)| loss),
                eval_loss: evaluated.map(|(_, loss)| loss),
                eval_step: evaluated.map(|(at, _)| at),
                forgetting_kl: forgetting,
            })
        })
        .collect();
    found.sort_by_key(|c| c.step);
    found
}

/// Predictions the evaluation endpoint returns, the worst first.
const EVALUATION_SAMPLES: usize = 20;

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/evaluation",
    summary = "BLEU/ROUGE and sample predictions",
    responses((status = 200, body = Evaluation))
)]
pub async fn evaluation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Evaluation>, ApiError> {
    find(&state, &id).await?;
    let layout = state.run_layout(&id);
    let scores = tokio::fs::read_to_string(layout.scores())
        .await
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "run {id} has no evaluation (it needs validation data and eval_samples > 0)"
            ))
        })?;
    let mut samples: Vec<Prediction> = tokio::fs::read_to_string(layout.predictions())
        .await
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // The worst answers first (those scored pair by pair; older files keep their order).
    samples.sort_by(|a, b| match (a.rank(), b.rank()) {
        (Some(a), Some(b)) => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
        _ => std::cmp::Ordering::Equal,
    });
    samples.truncate(EVALUATION_SAMPLES);
    Ok(Json(Evaluation { scores, samples }))
}

/// Refuses runs that have not succeeded: their final adapter does not exist yet.
async fn adapter_ready(state: &AppState, id: &str) -> Result<(), ApiError> {
    let run = find(state, id).await?;
    if run.state != RunState::Succeeded {
        return Err(ApiError::conflict(format!(
            "run {id} is {}; its adapter is ready once it succeeded",
            run.state.as_str()
        )));
    }
    Ok(())
}

/// The final adapter as a zip: `config.json` and `pytorch_model.bin` as the official scripts
/// write them (plus `adapter.safetensors`).
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/adapter",
    summary = "The adapter as a zip in the official layout",
    responses((status = 200, body = Binary, content_type = "application/zip"))
)]
pub async fn adapter(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    adapter_ready(&state, &id).await?;
    let dir = state.run_dir(&id);
    let bytes = tokio::task::spawn_blocking(move || zip_adapter(&dir))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}-adapter.zip\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// One file of a succeeded run's final adapter (`config.json`, `adapter.safetensors`, …), served
/// as is with `Range` support: the in-browser chat fetches and caches them one by one.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/adapter/{file}",
    summary = "One file of the adapter",
    responses((status = 200, body = Binary, content_type = "application/octet-stream"), (status = 206, body = Binary, content_type = "application/octet-stream", description = "The range asked for"))
)]
pub async fn adapter_file(
    State(state): State<AppState>,
    Path((id, file)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    adapter_ready(&state, &id).await?;
    let path = state.run_dir(&id).join(&file);
    if !ADAPTER_FILES.contains(&file.as_str()) || !path.is_file() {
        return Err(ApiError::not_found(format!(
            "run {id}'s adapter has no file {file} (it has {})",
            ADAPTER_FILES.join(", ")
        )));
    }
    super::models::serve_file(path, request).await
}

fn zip_adapter(dir: &std::path::Path) -> Result<Vec<u8>, ApiError> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for name in ADAPTER_FILES {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        writer
            .start_file(name, options)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        writer.write_all(&bytes)?;
    }
    let cursor = writer
        .finish()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(cursor.into_inner())
}
