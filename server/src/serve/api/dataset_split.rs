//! Splitting a dataset into train and validation datasets.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_engine::data::Record;
use glmtune_shared::api::{Derivation, ReadOptions, RecordFormat, SplitRequest, SplitResponse};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::datasets::{find, store_derived, validate, Derived};
use crate::serve::auth::Caller;
use crate::serve::{ApiError, AppState};

/// Splits a dataset into two new ones (records shuffled with the seed), written as JSON lines
/// with prompt/response(/history) columns.
#[utoipa::path(
    post,
    path = "/api/v1/datasets/{id}/split",
    summary = "Split into train and validation datasets",
    request_body = SplitRequest,
    responses((status = 201, body = SplitResponse))
)]
pub async fn split(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<SplitRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    if !(request.validation_fraction > 0.0 && request.validation_fraction < 1.0) {
        return Err(ApiError::invalid(
            "validation_fraction: must be between 0 and 1 (exclusive)",
        ));
    }
    let dataset = find(&state, &id).await?;
    let path = state.blobs.path(&dataset.sha256);
    let blobs = state.blobs.clone();
    let source = dataset.clone();
    let parts = tokio::task::spawn_blocking(move || {
        let validated = validate(&path, &source.name, &source.read_options, None)?;
        let mut order: Vec<usize> = (0..validated.records.len()).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(request.seed));
        let count = validated.records.len();
        let validation = ((count as f64 * request.validation_fraction).round() as usize)
            .clamp(1, count.saturating_sub(1).max(1));
        if count < 2 {
            return Err(ApiError::invalid(format!(
                "dataset {}: {count} record(s) cannot be split",
                source.id
            )));
        }
        let (validation_part, train_part) = order.split_at(validation);
        let mut parts = Vec::new();
        for (label, indices) in [("train", train_part), ("validation", validation_part)] {
            let mut text = String::new();
            for &i in indices {
                let record = &validated.records[i];
                let mut row =
                    serde_json::json!({"prompt": record.prompt, "response": record.response});
                if validated.history {
                    row["history"] = serde_json::json!(record.history);
                }
                text.push_str(&row.to_string());
                text.push('\n');
            }
            let upload = blobs.prepare(text.as_bytes())?;
            let records: Vec<Record> = indices
                .iter()
                .map(|&i| validated.records[i].clone())
                .collect();
            parts.push((label, upload, records));
        }
        Ok::<_, ApiError>((parts, validated.history))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let (parts, history) = parts;
    let mut made = Vec::new();
    for (label, upload, records) in parts {
        let derived = Derived {
            name: format!("{} ({label})", dataset.name),
            upload,
            records,
            read_options: ReadOptions {
                format: RecordFormat::Columns,
                prompt_column: Some("prompt".into()),
                response_column: Some("response".into()),
                history_column: history.then(|| "history".into()),
            },
            derivation: Derivation::Split {
                part: label.to_owned(),
                validation_fraction: request.validation_fraction,
                seed: request.seed,
            },
        };
        made.push(store_derived(&state, Some(caller.principal.clone()), &dataset, derived).await?);
    }
    let validation = made.pop();
    let train = made.pop();
    match (train, validation) {
        (Some(train), Some(validation)) => Ok((
            axum::http::StatusCode::CREATED,
            Json(SplitResponse { train, validation }),
        )
            .into_response()),
        _ => Err(ApiError::internal("the split made no datasets")),
    }
}
