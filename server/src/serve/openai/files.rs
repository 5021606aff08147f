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
use crate::serve::openapi::Binary;
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

/// The form `POST /v1/files` reads (described for the OpenAPI document; the handler reads the
/// fields as they stream in, so that a large file is never held whole).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct FileUpload {
    /// `fine-tune`, the only purpose supported.
    purpose: String,
    #[schema(value_type = Binary)]
    file: Vec<u8>,
}

/// What deleting a file answers, as OpenAI's API does.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct FileDeleted {
    id: String,
    /// `file`.
    object: String,
    deleted: bool,
}

#[utoipa::path(
    post,
    path = "/v1/files",
    summary = "OpenAI: upload a fine-tuning file (multipart)",
    request_body(content = inline(FileUpload), content_type = "multipart/form-data"),
    responses((status = 200, body = FileObject))
)]
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

#[utoipa::path(
    get,
    path = "/v1/files",
    summary = "OpenAI: list files",
    responses((status = 200, body = Page<FileObject>))
)]
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

#[utoipa::path(
    get,
    path = "/v1/files/{id}",
    summary = "OpenAI: a file",
    responses((status = 200, body = FileObject))
)]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<FileObject>, ApiError> {
    Ok(Json(file_object(datasets::find(&state, &id).await?)))
}

#[utoipa::path(
    get,
    path = "/v1/files/{id}/content",
    summary = "OpenAI: a file's bytes",
    responses((status = 200, body = Binary, content_type = "application/octet-stream"))
)]
pub async fn content(state: State<AppState>, id: Path<String>) -> Result<Response, ApiError> {
    datasets::content(state, id).await
}

#[utoipa::path(
    delete,
    path = "/v1/files/{id}",
    summary = "OpenAI: delete a file",
    responses((status = 200, body = FileDeleted))
)]
pub async fn delete(
    state: State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<FileDeleted>, ApiError> {
    datasets::delete(state, caller, Path(id.clone())).await?;
    Ok(Json(FileDeleted {
        id,
        object: "file".into(),
        deleted: true,
    }))
}
