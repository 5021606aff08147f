//! The routes of a run's progress events, documented here. Their handlers live in `serve::events`
//! beside the stream they read; each is called through axum's `Handler`, so it keeps its own
//! extractors and answers exactly as it would routed directly.

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::response::Response;
use glmtune_shared::api::{List, RunEvent};

use crate::serve::{events, AppState};

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/events",
    summary = "Progress as Server-Sent Events (Last-Event-ID replays)",
    params(
        ("after" = Option<i64>, Query, description = "Replay the events after this id"),
        ("Last-Event-ID" = Option<i64>, Header, description = "As `after`, and wins over it"),
    ),
    responses((
        status = 200,
        body = RunEvent,
        content_type = "text/event-stream",
        description = "One event a message, with the event's id"
    ))
)]
pub async fn stream(State(state): State<AppState>, request: Request) -> Response {
    Handler::call(events::stream, request, state).await
}

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/events.json",
    summary = "Progress events as JSON",
    params(("after" = Option<i64>, Query, description = "Only the events after this id")),
    responses((status = 200, body = List<RunEvent>))
)]
pub async fn list(State(state): State<AppState>, request: Request) -> Response {
    Handler::call(events::list, request, state).await
}
