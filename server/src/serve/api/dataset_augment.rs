//! Augmenting a dataset: a new version of it, its records followed by new prompts made by rule,
//! each naming its parent record and method (`glmtune_engine::data::augment`, as `glmtune data
//! augment`). The version names its parent dataset and the request that made it.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_engine::data::augment::{
    augment as make, version_lines, AugmentOptions, Augmentation, Method,
};
use glmtune_shared::api::{AugmentExample, AugmentPreview, AugmentRequest, Dataset, Derivation};

use super::datasets::{find, store_derived, validate, version_options, Derived, Validated};
use crate::serve::auth::Caller;
use crate::serve::blobs::Blobs;
use crate::serve::{ApiError, AppState};

/// The most new prompts one request may make.
const MAX_NEW: u64 = 1_000_000;

#[utoipa::path(
    post,
    path = "/api/v1/datasets/{id}/augment",
    summary = "Make a new version with new prompts by rule, near-duplicates and validation leaks dropped",
    request_body = AugmentRequest,
    responses((status = 201, body = Dataset))
)]
pub async fn augment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<AugmentRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let (parent, validation, options) = checked(&state, &id, &request).await?;
    let blobs = state.blobs.clone();
    let source = parent.clone();
    let (upload, records, made, read_options) = tokio::task::spawn_blocking(move || {
        let (validated, made) = generate(&blobs, &source, validation.as_ref(), &options)?;
        let text = version_lines(&validated.records, &made, validated.history);
        let upload = blobs.prepare(text.as_bytes())?;
        let messages = validated.records.iter().any(|r| !r.messages.is_empty());
        let read_options = version_options(messages, validated.history);
        // The new version read back as training will read it: its preview and count.
        let records = validate(&upload.temp, &source.name, &read_options, None)?.records;
        Ok::<_, ApiError>((upload, records, made, read_options))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let derived = Derived {
        name: format!("{} (augmented)", parent.name),
        upload,
        records,
        read_options,
        derivation: Derivation::Augment {
            request,
            new_records: made.kept.len() as i64,
            dropped_duplicates: made.dropped_duplicates as i64,
            dropped_leaking: made.dropped_leaking as i64,
        },
    };
    let dataset = store_derived(&state, Some(caller.principal.clone()), &parent, derived).await?;
    Ok((StatusCode::CREATED, Json(dataset)).into_response())
}

/// The parent's records as read, and what `options` make of them with `validation`'s prompts
/// kept clear of (blocking: reads both datasets).
fn generate(
    blobs: &Blobs,
    parent: &Dataset,
    validation: Option<&Dataset>,
    options: &AugmentOptions,
) -> Result<(Validated, Augmentation), ApiError> {
    let read = |d: &Dataset| validate(&blobs.path(&d.sha256), &d.name, &d.read_options, None);
    let validated = read(parent)?;
    let held_out = match validation {
        Some(v) => read(v)?.records,
        None => Vec::new(),
    };
    let made = make(&validated.records, &held_out, options);
    Ok((validated, made))
}

/// The dataset, its validation set and the options `request` asks for, checked.
async fn checked(
    state: &AppState,
    id: &str,
    request: &AugmentRequest,
) -> Result<(Dataset, Option<Dataset>, AugmentOptions), ApiError> {
    let methods = request
        .methods
        .iter()
        .map(|m| m.parse::<Method>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::invalid(format!("methods: {e}")))?;
    if !(0.0..=1.0).contains(&request.rate) || !(0.0..=1.0).contains(&request.threshold) {
        return Err(ApiError::invalid(
            "rate, threshold: give numbers from 0 to 1",
        ));
    }
    let parent = find(state, id).await?;
    let per_record = request.copies.saturating_mul(if methods.is_empty() {
        Method::ALL.len() as u64
    } else {
        methods.len() as u64
    });
    if request.copies == 0 || per_record.saturating_mul(parent.records.max(0) as u64) > MAX_NEW {
        return Err(ApiError::invalid(format!(
            "copies: give 1 or more, and at most {MAX_NEW} new prompts in all"
        )));
    }
    let validation = match &request.validation_dataset {
        Some(v) => Some(
            find(state, v)
                .await
                .map_err(|e| e.context("validation_dataset"))?,
        ),
        None => None,
    };
    let options = AugmentOptions {
        methods: if methods.is_empty() {
            Method::ALL.to_vec()
        } else {
            methods
        },
        copies: request.copies as usize,
        rate: request.rate,
        seed: request.seed,
        threshold: request.threshold,
    };
    Ok((parent, validation, options))
}

/// Up to this many new prompts a method are shown by a preview.
const PREVIEW_EXAMPLES: usize = 5;

#[utoipa::path(
    post,
    path = "/api/v1/datasets/{id}/augment/preview",
    summary = "What an augmentation would make, without saving it: counts and examples a method",
    request_body = AugmentRequest,
    responses((status = 200, body = AugmentPreview))
)]
pub async fn preview(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<AugmentRequest>, JsonRejection>,
) -> Result<Json<AugmentPreview>, ApiError> {
    let Json(request) = body?;
    let (parent, validation, options) = checked(&state, &id, &request).await?;
    let blobs = state.blobs.clone();
    let preview = tokio::task::spawn_blocking(move || {
        let (validated, made) = generate(&blobs, &parent, validation.as_ref(), &options)?;
        let records = validated.records;
        let examples = made
            .kept
            .iter()
            .filter({
                let mut shown = std::collections::HashMap::<Method, usize>::new();
                move |k| {
                    let n = shown.entry(k.provenance.method).or_default();
                    *n += 1;
                    *n <= PREVIEW_EXAMPLES
                }
            })
            .map(|k| AugmentExample {
                method: k.provenance.method.as_str().to_owned(),
                from: records[k.provenance.parent - 1].prompt.clone(),
                to: k.prompt.clone(),
            })
            .collect();
        Ok::<_, ApiError>(AugmentPreview {
            new_records: made.kept.len() as i64,
            dropped_duplicates: made.dropped_duplicates as i64,
            dropped_leaking: made.dropped_leaking as i64,
            examples,
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(preview))
}
