//! Base models: list, register a checkpoint folder on the server's disk (admins), and hand out
//! the files of a model's folder (the browser measures datasets with the tokenizer, and will run
//! quantized models itself), with range requests so an interrupted download resumes.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_shared::api::{List, ModelFile, ModelInfo, RegisterModel};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::serve::openapi::Binary;
use crate::serve::{register_model, ApiError, AppState};

#[utoipa::path(
    get,
    path = "/api/v1/models",
    summary = "List base models",
    responses((status = 200, body = List<ModelInfo>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<List<ModelInfo>>, ApiError> {
    Ok(Json(List {
        data: state.db.models().await?,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/models",
    summary = "Register a checkpoint folder on the server",
    request_body = RegisterModel,
    responses((status = 201, body = ModelInfo))
)]
pub async fn register(
    State(state): State<AppState>,
    body: Result<Json<RegisterModel>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    if request.name.is_empty() || request.name.starts_with("ft:") || request.name.contains('/') {
        return Err(ApiError::invalid(
            "name: must be non-empty, without '/', and not start with ft:",
        ));
    }
    register_model(
        &state.db,
        &request.name,
        std::path::Path::new(&request.path),
        request.adapter.as_deref().map(std::path::Path::new),
    )
    .await?;
    let model = state
        .db
        .model(&request.name)
        .await?
        .ok_or_else(|| ApiError::internal("the model vanished after registering"))?;
    Ok((StatusCode::CREATED, Json(model)).into_response())
}

/// The regular files directly in a registered model's folder.
#[utoipa::path(
    get,
    path = "/api/v1/models/{name}/files",
    summary = "The files of a model's folder",
    responses((status = 200, body = List<ModelFile>))
)]
pub async fn files(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<List<ModelFile>>, ApiError> {
    let dir = folder_of(&state, &name).await?;
    let mut data = Vec::new();
    let mut entries = tokio::fs::read_dir(&dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if servable_name(&file) && resolve(&dir, &file).is_some() {
            let metadata = tokio::fs::metadata(entry.path()).await?;
            let modified = metadata
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            data.push(ModelFile {
                name: file,
                bytes: metadata.len(),
                modified,
            });
        }
    }
    data.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(List { data }))
}

/// One file of a model's folder, by name; `Range` requests are honoured.
#[utoipa::path(
    get,
    path = "/api/v1/models/{name}/files/{file}",
    summary = "One file of a model's folder (range requests)",
    responses((status = 200, body = Binary, content_type = "application/octet-stream"), (status = 206, body = Binary, content_type = "application/octet-stream", description = "The range asked for"))
)]
pub async fn file(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let dir = folder_of(&state, &name).await?;
    let missing = || ApiError::not_found(format!("model {name} has no file {file}"));
    if !servable_name(&file) {
        return Err(missing());
    }
    let path = resolve(&dir, &file).ok_or_else(missing)?;
    serve_file(path, request).await
}

/// `path` as the answer to `request`, ranges and conditional requests included.
pub async fn serve_file(path: std::path::PathBuf, request: Request) -> Result<Response, ApiError> {
    let response = ServeFile::new(path)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(response.map(axum::body::Body::new))
}

async fn folder_of(state: &AppState, name: &str) -> Result<std::path::PathBuf, ApiError> {
    let model = state
        .db
        .model(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no model {name}")))?;
    Ok(std::path::PathBuf::from(model.path))
}

/// A plain file name: no separators, not hidden, so no request can leave the folder by its name.
fn servable_name(file: &str) -> bool {
    !file.is_empty() && !file.starts_with('.') && !file.contains(['/', '\\', '\0'])
}

/// `dir/file` when it is a regular file whose real path (links followed) is still in `dir`.
fn resolve(dir: &std::path::Path, file: &str) -> Option<std::path::PathBuf> {
    let real_dir = dir.canonicalize().ok()?;
    let real = dir.join(file).canonicalize().ok()?;
    (real.parent() == Some(real_dir.as_path()) && real.is_file()).then_some(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_folder_are_refused() {
        for bad in ["", "..", ".hidden", "a/b", "..\\x", "x\0y"] {
            assert!(!servable_name(bad), "{bad:?}");
        }
        assert!(servable_name("ice_text.model"));
    }

    #[test]
    fn links_out_of_the_folder_are_not_served() {
        let root = std::env::temp_dir().join(format!("glmtune-files-{}", std::process::id()));
        let dir = root.join("model");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(root.join("secret"), "x").unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        std::os::unix::fs::symlink(root.join("secret"), dir.join("link")).unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        assert!(resolve(&dir, "config.json").is_some());
        assert!(resolve(&dir, "link").is_none());
        assert!(resolve(&dir, "sub").is_none());
        assert!(resolve(&dir, "absent").is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
