//! The OpenAI-compatible API under `/v1`: models, chat completions, files and fine-tuning jobs,
//! shaped so that the official `openai` client works unchanged.

mod chat;
mod files;
mod fine_tuning;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::serve::state::AppState;

pub fn routes(max_upload_bytes: u64) -> Router<AppState> {
    let upload_limit =
        DefaultBodyLimit::max(usize::try_from(max_upload_bytes).unwrap_or(usize::MAX));
    Router::new()
        .route("/v1/models", get(chat::list_models))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route(
            "/v1/files",
            get(files::list).post(files::upload).layer(upload_limit),
        )
        .route("/v1/files/{id}", get(files::get_one).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route(
            "/v1/fine_tuning/jobs",
            get(fine_tuning::list).post(fine_tuning::create),
        )
        .route("/v1/fine_tuning/jobs/{id}", get(fine_tuning::get_one))
        .route("/v1/fine_tuning/jobs/{id}/events", get(fine_tuning::events))
        .route(
            "/v1/fine_tuning/jobs/{id}/checkpoints",
            get(fine_tuning::checkpoints),
        )
        .route(
            "/v1/fine_tuning/jobs/{id}/cancel",
            post(fine_tuning::cancel),
        )
}
