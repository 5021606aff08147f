//! `/v1/files`: fine-tuning data uploaded as multipart (`file`, `purpose`), stored and validated
//! as a dataset: chat `messages` JSONL, or ChatGLM's prompt/response (or content/summary) columns.

use axum::extract::{Multipart, Path, State};
use axum::response::Response;
use axum::Json;
use futures_util::StreamExt;
use glmtune_shared::api::{Dataset, ReadOptions};
use glmtune_shared::openai::{FileObject, Page};

use crate::serve::api::datasets::{self, ingest, Intake, Lengths};
use crate::serve::auth::Caller;
use crate::serve::{ApiError, AppState};

fn file_object(dataset: Dataset) -> FileObject {
    FileObject {
        id: dataset.id,
        object: "file".into(),
        bytes: dataset.bytes,
        created_at: dataset.created_at,
        filename: dataset.name,
        purpose: dataset.purpose,
        status: "processed".into(),
    }
}

pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    mut form: Multipart,
) -> Result<Json<FileObject>, ApiError> {
    let mut purpose = None;
    let mut received = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::invalid(format!("multipart body: {e}")))?
    {
        match field.name() {
            Some("purpose") => {
                purpose = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| ApiError::invalid(format!("purpose: {e}")))?,
                )
            }
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload.jsonl").to_owned();
                let limit = state.settings.max_upload_bytes;
                let chunks = field.map(|chunk| chunk.map_err(|e| e.to_string()));
                let upload = state.blobs.receive(Box::pin(chunks), limit).await?;
                received = Some((filename, upload));
            }
            _ => {}
        }
    }
    let purpose = purpose.ok_or_else(|| ApiError::invalid("purpose: missing form field"))?;
    if purpose != "fine-tune" {
        return Err(ApiError::invalid(format!(
            "purpose: {purpose:?} is not supported (only fine-tune)"
        )));
    }
    let (filename, upload) =
        received.ok_or_else(|| ApiError::invalid("file: missing form field"))?;
    let intake = Intake {
        name: filename,
        options: ReadOptions::default(),
        purpose,
        model: None,
        lengths: Lengths::default(),
    };
    Ok(Json(file_object(
        ingest(&state, &caller, upload, intake).await?,
    )))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Page<FileObject>>, ApiError> {
    let files = state
        .db
        .datasets()
        .await?
        .into_iter()
        .map(file_object)
        .collect();
    Ok(Json(Page::of(files)))
}

pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<FileObject>, ApiError> {
    Ok(Json(file_object(datasets::find(&state, &id).await?)))
}

pub async fn content(state: State<AppState>, id: Path<String>) -> Result<Response, ApiError> {
    datasets::content(state, id).await
}

pub async fn delete(
    state: State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    datasets::delete(state, caller, Path(id.clone())).await?;
    Ok(Json(
        serde_json::json!({"id": id, "object": "file", "deleted": true}),
    ))
}
