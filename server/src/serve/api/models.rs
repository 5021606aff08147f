//! Base models: list, and register a checkpoint folder on the server's disk (admins).

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_shared::api::{List, ModelInfo, RegisterModel};

use crate::serve::{register_model, ApiError, AppState};

pub async fn list(State(state): State<AppState>) -> Result<Json<List<ModelInfo>>, ApiError> {
    Ok(Json(List {
        data: state.db.models().await?,
    }))
}

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
