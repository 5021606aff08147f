//! A run's progress as Server-Sent Events. Each event carries its number as the SSE id, so a
//! client that reconnects with `Last-Event-ID` (browsers do it by themselves) gets exactly what
//! it missed. The stream ends after the run's final state.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use glmtune_shared::api::{List, RunEvent};
use serde::Deserialize;

use crate::serve::error::ApiError;
use crate::serve::state::AppState;

#[derive(Debug, Deserialize)]
pub struct After {
    /// Events after this id (as `Last-Event-ID`, which wins when both are given).
    #[serde(default)]
    after: Option<i64>,
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::invalid("Last-Event-ID must be an event id (a number)")),
    }
}

fn sse_event(event: &RunEvent) -> Event {
    Event::default()
        .id(event.id.to_string())
        .event(event.kind.clone())
        .data(serde_json::to_string(event).unwrap_or_default())
}

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
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<After>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if state.db.run(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("run {id} does not exist")));
    }
    let after = last_event_id(&headers)?.or(query.after).unwrap_or(0);
    Ok(Sse::new(follow(state, id, after))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn follow(
    state: AppState,
    id: String,
    after: i64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(
        (state, id, after, Vec::<RunEvent>::new(), false),
        |(state, id, mut after, mut pending, mut done)| async move {
            loop {
                if let Some(event) = (!pending.is_empty()).then(|| pending.remove(0)) {
                    after = event.id;
                    let sse = sse_event(&event);
                    return Some((Ok(sse), (state, id, after, pending, done)));
                }
                if done
                    || state
                        .supervisor
                        .stopping
                        .load(std::sync::atomic::Ordering::SeqCst)
                {
                    return None;
                }
                // Read the state before the events, so that the events of a final state are
                // always read after it is set.
                let finished =
                    matches!(state.db.run(&id).await, Ok(Some(run)) if run.state.is_final());
                match state.db.events_after(&id, after).await {
                    Ok(events) if !events.is_empty() => pending = events,
                    Ok(_) if finished => done = true,
                    Ok(_) => {
                        let notified = state.supervisor.events.notified();
                        let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
                    }
                    Err(_) => return None,
                }
            }
        },
    )
}

/// The events as a JSON list (for clients that poll).
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/events.json",
    summary = "Progress events as JSON",
    params(("after" = Option<i64>, Query, description = "Only the events after this id")),
    responses((status = 200, body = List<RunEvent>))
)]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<After>,
) -> Result<axum::Json<List<RunEvent>>, ApiError> {
    if state.db.run(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("run {id} does not exist")));
    }
    let data = state.db.events_after(&id, query.after.unwrap_or(0)).await?;
    Ok(axum::Json(glmtune_shared::api::List { data }))
}
