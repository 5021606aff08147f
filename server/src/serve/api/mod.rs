//! The dashboard's own API under `/api/v1`.

mod account;
pub mod chats;
pub mod datasets;
mod models;
mod presets;
pub mod runs;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;

use crate::serve::events;
use crate::serve::state::AppState;

pub fn routes(max_upload_bytes: u64) -> Router<AppState> {
    let upload_limit =
        DefaultBodyLimit::max(usize::try_from(max_upload_bytes).unwrap_or(usize::MAX));
    Router::new()
        .route("/api/v1/auth/status", get(account::status))
        .route("/api/v1/auth/setup", post(account::setup))
        .route("/api/v1/auth/login", post(account::login))
        .route("/api/v1/auth/logout", post(account::logout))
        .route("/api/v1/auth/me", get(account::me))
        .route(
            "/api/v1/users",
            get(account::list_users).post(account::create_user),
        )
        .route("/api/v1/users/{id}", delete(account::delete_user))
        .route(
            "/api/v1/keys",
            get(account::list_keys).post(account::create_key),
        )
        .route("/api/v1/keys/{id}", delete(account::revoke_key))
        .route("/api/v1/models", get(models::list).post(models::register))
        .route("/api/v1/models/{name}/files", get(models::files))
        .route("/api/v1/models/{name}/files/{file}", get(models::file))
        .route(
            "/api/v1/datasets",
            get(datasets::list)
                .post(datasets::upload)
                .layer(upload_limit),
        )
        .route(
            "/api/v1/datasets/{id}",
            get(datasets::get_one).delete(datasets::delete),
        )
        .route("/api/v1/datasets/{id}/content", get(datasets::content))
        .route("/api/v1/datasets/{id}/split", post(datasets::split))
        .route("/api/v1/presets", get(presets::list))
        .route("/api/v1/runs", get(runs::list).post(runs::create))
        .route("/api/v1/runs/{id}", get(runs::get_one))
        .route("/api/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/api/v1/runs/{id}/resume", post(runs::resume))
        .route("/api/v1/runs/{id}/logs", get(runs::logs))
        .route("/api/v1/runs/{id}/events", get(events::stream))
        .route("/api/v1/runs/{id}/events.json", get(events::list))
        .route("/api/v1/runs/{id}/checkpoints", get(runs::checkpoints))
        .route("/api/v1/runs/{id}/evaluation", get(runs::evaluation))
        .route("/api/v1/runs/{id}/adapter", get(runs::adapter))
        .route("/api/v1/runs/{id}/adapter/{file}", get(runs::adapter_file))
        .route("/api/v1/chats", get(chats::list).post(chats::create))
        .route(
            "/api/v1/chats/{id}",
            get(chats::get_one).delete(chats::delete),
        )
        .route("/api/v1/chats/{id}/messages", post(chats::post_message))
}
