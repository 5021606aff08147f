//! Datasets: uploads validated as `glmtune data` reads them (every bad record listed by line and
//! field, nothing stored when any is bad), token statistics against a model's tokenizer, a
//! preview, and deterministic train/validation splits. `/v1/files` stores through here too.

use std::path::{Path as FsPath, PathBuf};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_engine::data::{check_dataset, read_records, Record, Unusable};
use glmtune_engine::tokenizer::ChatGlmTokenizer;
use glmtune_shared::api::{Dataset, Derivation, List, PreviewRecord, ReadOptions, RecordFormat};
use glmtune_shared::error::{InvalidRecords, RecordIssue};
use serde::Deserialize;

use crate::db::{new_id, now, Db};
use crate::serve::auth::Caller;
use crate::serve::blobs::{Blobs, Upload};
use crate::serve::openapi::Binary;
use crate::serve::{ApiError, AppState};

/// How many records a dataset shows as its preview.
pub(super) const PREVIEW: usize = 5;
/// How many bad records an error lists.
const MAX_LISTED: usize = 100;

/// What a valid file yields.
pub(crate) struct Validated {
    pub(crate) records: Vec<Record>,
    options: ReadOptions,
    skipped_empty: usize,
    /// Whether prompts use the `[Round i]` template (a history column).
    pub(crate) history: bool,
    stats: Option<serde_json::Value>,
}

pub(crate) fn preview_record(record: &Record) -> PreviewRecord {
    PreviewRecord {
        prompt: record.prompt.clone(),
        response: record.response.clone(),
        history: record
            .history
            .iter()
            .map(|(query, response)| [query.clone(), response.clone()])
            .collect(),
    }
}

/// Reads and checks a stored or uploaded file (blocking).
pub(crate) fn validate(
    path: &FsPath,
    name: &str,
    options: &ReadOptions,
    measure: Option<(&ChatGlmTokenizer, Lengths)>,
) -> Result<Validated, ApiError> {
    let format = crate::dataset::format_of(options).map_err(ApiError::invalid)?;
    let (records, report) = read_records(path, &format, true).map_err(|e| {
        // Messages name the upload, never the server's temporary path.
        ApiError::invalid(e.to_string().replace(&path.display().to_string(), name))
    })?;
    let measure = measure.map(|(tokenizer, lengths)| {
        (
            tokenizer,
            lengths.max_source_length,
            lengths.max_target_length,
        )
    });
    let stats = check_dataset(&records, &report, measure).map_err(|unusable| {
        let error = ApiError::invalid(format!("{name}: {unusable}"));
        match &unusable {
            Unusable::Invalid(issues) => {
                let invalid_records = issues[..issues.len().min(MAX_LISTED)]
                    .iter()
                    .map(|issue| RecordIssue {
                        location: issue.location.to_string(),
                        line: issue.line().map(|l| l as u64),
                        field: issue.field.clone(),
                        message: issue.message.clone(),
                    })
                    .collect();
                match serde_json::to_value(InvalidRecords { invalid_records }) {
                    Ok(details) => error.with_details(details),
                    Err(_) => error,
                }
            }
            _ => error,
        }
    })?;
    let stats = stats
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Validated {
        options: crate::dataset::options_of(&report.format),
        skipped_empty: report.skipped_empty.len(),
        history: report.history_column,
        records,
        stats,
    })
}

/// The truncation limits statistics are measured against (the official defaults: 64/64).
#[derive(Debug, Clone, Copy)]
pub struct Lengths {
    pub max_source_length: usize,
    pub max_target_length: usize,
}

impl Default for Lengths {
    fn default() -> Self {
        Lengths {
            max_source_length: 64,
            max_target_length: 64,
        }
    }
}

/// Where to store an upload, and how to read it.
pub struct Intake {
    pub name: String,
    pub options: ReadOptions,
    pub purpose: String,
    /// A registered model whose tokenizer measures the records.
    pub model: Option<String>,
    pub lengths: Lengths,
}

/// Validates a received upload, stores it under its hash and records it.
pub async fn ingest(
    state: &AppState,
    caller: &Caller,
    upload: Upload,
    intake: Intake,
) -> Result<Dataset, ApiError> {
    let model_dir = match &intake.model {
        Some(name) => Some(PathBuf::from(
            state
                .db
                .model(name)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("model {name:?} is not registered")))?
                .path,
        )),
        None => None,
    };
    let (name, options, lengths) = (intake.name.clone(), intake.options.clone(), intake.lengths);
    if !(3..=8192).contains(&lengths.max_source_length)
        || !(3..=8192).contains(&lengths.max_target_length)
    {
        return Err(ApiError::invalid(
            "max_source_length and max_target_length: must be between 3 and 8192",
        ));
    }
    let (validated, upload) = tokio::task::spawn_blocking(move || {
        let tokenizer = match &model_dir {
            Some(dir) => Some(
                ChatGlmTokenizer::from_dir(dir).map_err(|e| ApiError::internal(e.to_string()))?,
            ),
            None => None,
        };
        let measure = tokenizer.as_ref().map(|t| (t, lengths));
        let validated = validate(&upload.temp, &name, &options, measure)?;
        Ok::<_, ApiError>((validated, upload))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let (sha256, bytes) = (upload.sha256.clone(), upload.bytes);
    let dataset = Dataset {
        id: new_id("file-"),
        name: intake.name,
        sha256,
        bytes: bytes as i64,
        format: validated.options.format.to_string(),
        read_options: validated.options,
        records: validated.records.len() as i64,
        skipped_empty: validated.skipped_empty as i64,
        purpose: intake.purpose,
        owner_id: Some(caller.principal.clone()),
        created_at: now(),
        stats: validated.stats,
        preview: validated
            .records
            .iter()
            .take(PREVIEW)
            .map(preview_record)
            .collect(),
        parent_id: None,
        derivation: None,
    };
    record(&state.db, &state.blobs, upload, &dataset).await?;
    Ok(dataset)
}

/// Stores `upload` under its hash and inserts `dataset`, which names it, as one step against
/// deletions (see [`Blobs::references`]).
pub async fn record(
    db: &Db,
    blobs: &Blobs,
    upload: Upload,
    dataset: &Dataset,
) -> Result<(), ApiError> {
    let _references = blobs.references().await;
    let committing = blobs.clone();
    tokio::task::spawn_blocking(move || committing.commit(upload))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    db.insert_dataset(dataset).await?;
    Ok(())
}

/// Stores a dataset made from `parent` (a split part, an augmented version): its bytes already
/// prepared in the store, its records as read back, in the parent's purpose.
pub async fn store_derived(
    state: &AppState,
    owner: Option<String>,
    parent: &Dataset,
    made: Derived,
) -> Result<Dataset, ApiError> {
    let dataset = Dataset {
        id: new_id("file-"),
        name: made.name,
        sha256: made.upload.sha256.clone(),
        bytes: made.upload.bytes as i64,
        format: made.read_options.format.to_string(),
        read_options: made.read_options,
        records: made.records.len() as i64,
        skipped_empty: 0,
        purpose: parent.purpose.clone(),
        owner_id: owner,
        created_at: now(),
        stats: None,
        preview: made
            .records
            .iter()
            .take(PREVIEW)
            .map(preview_record)
            .collect(),
        parent_id: Some(parent.id.clone()),
        derivation: Some(made.derivation),
    };
    record(&state.db, &state.blobs, made.upload, &dataset).await?;
    Ok(dataset)
}

/// How a new version written by `glmtune_engine::data::augment::record_line` reads: its
/// conversations, or its `prompt`/`response` columns (and `history`, when the parent had one).
pub fn version_options(messages: bool, history: bool) -> ReadOptions {
    if messages {
        ReadOptions {
            format: RecordFormat::Messages,
            ..ReadOptions::default()
        }
    } else {
        ReadOptions {
            format: RecordFormat::Columns,
            prompt_column: Some("prompt".into()),
            response_column: Some("response".into()),
            history_column: history.then(|| "history".into()),
        }
    }
}

/// A dataset made from another, before it is stored.
pub struct Derived {
    pub name: String,
    pub upload: Upload,
    pub records: Vec<Record>,
    pub read_options: ReadOptions,
    pub derivation: Derivation,
}

/// [`forget_held`], taking the blob references itself.
#[cfg(test)]
async fn forget(db: &Db, blobs: &Blobs, dataset: &Dataset) -> Result<(), ApiError> {
    let _references = blobs.references().await;
    forget_held(db, blobs, dataset).await
}

/// Deletes a dataset's row, and its blob when no other row names it. The caller holds the blob
/// references ([`Blobs::references`]), so this is one step against uploads of the same bytes and
/// against runs being queued on the dataset.
async fn forget_held(db: &Db, blobs: &Blobs, dataset: &Dataset) -> Result<(), ApiError> {
    db.delete_dataset(&dataset.id).await?;
    if db.datasets_using_blob(&dataset.sha256).await? == 0 {
        let _ = std::fs::remove_file(blobs.path(&dataset.sha256));
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    name: Option<String>,
    #[serde(default)]
    format: Option<RecordFormat>,
    prompt_column: Option<String>,
    response_column: Option<String>,
    history_column: Option<String>,
    model: Option<String>,
    max_source_length: Option<usize>,
    max_target_length: Option<usize>,
}

/// `POST /api/v1/datasets?name=…&format=…&model=…` with the file as the body.
#[utoipa::path(
    post,
    path = "/api/v1/datasets",
    summary = "Upload a dataset (the body is the file)",
    params(UploadQuery),
    request_body(
        content = Binary,
        content_type = "application/octet-stream",
        description = "The file, as it is"
    ),
    responses((status = 201, body = Dataset))
)]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let upload = state
        .blobs
        .receive(body.into_data_stream(), state.settings.max_upload_bytes)
        .await?;
    let intake = Intake {
        name: query.name.unwrap_or_else(|| "dataset.jsonl".into()),
        options: ReadOptions {
            format: query.format.unwrap_or_default(),
            prompt_column: query.prompt_column,
            response_column: query.response_column,
            history_column: query.history_column,
        },
        purpose: "fine-tune".into(),
        model: query.model,
        lengths: Lengths {
            max_source_length: query.max_source_length.unwrap_or(64),
            max_target_length: query.max_target_length.unwrap_or(64),
        },
    };
    let dataset = ingest(&state, &caller, upload, intake).await?;
    Ok((axum::http::StatusCode::CREATED, Json(dataset)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/datasets",
    summary = "List datasets",
    responses((status = 200, body = List<Dataset>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<List<Dataset>>, ApiError> {
    Ok(Json(List {
        data: state.db.datasets().await?,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/datasets/{id}",
    summary = "A dataset with statistics and preview",
    responses((status = 200, body = Dataset))
)]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Dataset>, ApiError> {
    Ok(Json(find(&state, &id).await?))
}

pub async fn find(state: &AppState, id: &str) -> Result<Dataset, ApiError> {
    state
        .db
        .dataset(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("dataset {id} does not exist")))
}

/// The stored bytes, as uploaded.
#[utoipa::path(
    get,
    path = "/api/v1/datasets/{id}/content",
    summary = "The stored file",
    responses((status = 200, body = Binary, content_type = "application/octet-stream"))
)]
pub async fn content(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let dataset = find(&state, &id).await?;
    let file = tokio::fs::File::open(state.blobs.path(&dataset.sha256)).await?;
    let body = Body::from_stream(tokio_util_stream(file));
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> {
    futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 64 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(axum::body::Bytes::from(buffer)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

#[utoipa::path(
    delete,
    path = "/api/v1/datasets/{id}",
    summary = "Delete a dataset no run uses",
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    let dataset = find(&state, &id).await?;
    caller.check_owner(dataset.owner_id.as_deref(), &format!("dataset {id}"))?;
    // Held from the check to the removal: a run being queued on this dataset (which holds it
    // from its own check to its insertion) is either counted here or finds the dataset gone.
    let _references = state.blobs.references().await;
    if state.db.runs_using_dataset(&id).await? > 0 {
        return Err(ApiError::conflict(format!(
            "dataset {id} is used by a run; runs keep their data"
        )));
    }
    forget_held(&state.db, &state.blobs, &dataset).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(sha256: &str) -> Dataset {
        Dataset {
            id: new_id("file-"),
            name: "same.jsonl".into(),
            sha256: sha256.to_owned(),
            bytes: 3,
            format: RecordFormat::Columns.to_string(),
            read_options: ReadOptions::default(),
            records: 1,
            skipped_empty: 0,
            purpose: "fine-tune".into(),
            owner_id: None,
            created_at: now(),
            stats: None,
            preview: Vec::new(),
            parent_id: None,
            derivation: None,
        }
    }

    /// A deletion and an upload of the same bytes, interleaved where they used to race: the
    /// upload has committed its blob (a no-op: the file is there) but not yet inserted its row
    /// when the deletion runs. The deletion waits for the upload's row, counts it, and keeps the
    /// blob.
    #[tokio::test]
    async fn a_deletion_never_removes_the_blob_of_an_upload_in_flight() {
        let dir = std::env::temp_dir().join(new_id("glmtune-blob-race-"));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::open(&crate::db::default_url(&dir)).await.unwrap();
        let blobs = Blobs::new(&dir).unwrap();
        let old = blobs.prepare(b"abc").unwrap();
        let old_dataset = dataset(&old.sha256);
        record(&db, &blobs, old, &old_dataset).await.unwrap();
        let path = blobs.path(&old_dataset.sha256);
        assert!(path.is_file());

        // The new upload's step, held open between its commit and its insert.
        let upload = blobs.prepare(b"abc").unwrap();
        let new_dataset = dataset(&upload.sha256);
        let references = blobs.references().await;
        blobs.commit(upload).unwrap();
        let mut deletion = tokio::spawn({
            let (db, blobs, old_dataset) = (db.clone(), blobs.clone(), old_dataset.clone());
            async move { forget(&db, &blobs, &old_dataset).await }
        });
        // The deletion cannot end while the upload's step is open, however long it is given
        // (without the lock it ends in milliseconds, having removed the blob).
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(500), &mut deletion).await;
        assert!(waited.is_err(), "the deletion did not wait for the upload");
        db.insert_dataset(&new_dataset).await.unwrap();
        drop(references);
        deletion.await.unwrap().unwrap();

        assert!(db.dataset(&old_dataset.id).await.unwrap().is_none());
        assert!(db.dataset(&new_dataset.id).await.unwrap().is_some());
        assert!(path.is_file(), "the new dataset's blob was removed");
        // The last reference gone, the blob goes.
        forget(&db, &blobs, &new_dataset).await.unwrap();
        assert!(!path.is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
