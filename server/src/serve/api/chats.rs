//! Chats: sessions bound to a model (and optionally a succeeded run's adapter) whose messages are
//! kept. A question is answered with the chat's history and stored with its answer, whole.

use std::convert::Infallible;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_engine::generation::Turn;
use glmtune_shared::api::{
    Chat, ChatMessageRecord, ChatWithMessages, CreateChat, List, PostMessage, RunState,
};
use glmtune_shared::chat_stream::{ChatDelta, ChatDone, ChatStreamError, ChatStreamEvent};

use crate::db::runs::fine_tuned_name;
use crate::db::{new_id, now};
use crate::serve::answer::{answer, answer_whole, Question};
use crate::serve::auth::Caller;
use crate::serve::{registry, ApiError, AppState};

/// The model name a chat answers with.
fn served_name(chat: &Chat) -> String {
    match &chat.run_id {
        Some(run) => fine_tuned_name(&chat.model, run),
        None => chat.model.clone(),
    }
}

async fn own_chat(state: &AppState, caller: &Caller, id: &str) -> Result<Chat, ApiError> {
    let chat = state
        .db
        .chat(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("chat {id} does not exist")))?;
    // Chats are private: only their owner (and admins) see them.
    if chat.owner_id.as_deref() != Some(caller.principal.as_str())
        && caller.role != glmtune_shared::api::Role::Admin
    {
        return Err(ApiError::not_found(format!("chat {id} does not exist")));
    }
    Ok(chat)
}

#[utoipa::path(
    post,
    path = "/api/v1/chats",
    summary = "Start a chat with a model or a run's adapter",
    request_body = CreateChat,
    responses((status = 201, body = Chat))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateChat>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    if state.db.model(&request.model).await?.is_none() {
        return Err(ApiError::invalid(format!(
            "model: {:?} is not registered",
            request.model
        )));
    }
    if let Some(run_id) = &request.run_id {
        let run = state.db.run(run_id).await?;
        if !run.is_some_and(|r| r.state == RunState::Succeeded && r.model == request.model) {
            return Err(ApiError::invalid(format!(
                "run_id: {run_id} is not a succeeded run on model {}",
                request.model
            )));
        }
    }
    let chat = Chat {
        id: new_id("chat-"),
        title: request.title.unwrap_or_else(|| "New chat".into()),
        model: request.model,
        run_id: request.run_id,
        system: request.system,
        owner_id: Some(caller.principal.clone()),
        created_at: now(),
    };
    state.db.insert_chat(&chat).await?;
    Ok((StatusCode::CREATED, Json(chat)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/chats",
    summary = "The caller's chats",
    responses((status = 200, body = List<Chat>))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<List<Chat>>, ApiError> {
    Ok(Json(List {
        data: state.db.chats(Some(&caller.principal)).await?,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/chats/{id}",
    summary = "A chat with its messages",
    responses((status = 200, body = ChatWithMessages))
)]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ChatWithMessages>, ApiError> {
    let chat = own_chat(&state, &caller, &id).await?;
    let messages = state.db.chat_messages(&id).await?;
    Ok(Json(ChatWithMessages { chat, messages }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/chats/{id}",
    summary = "Delete a chat",
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    own_chat(&state, &caller, &id).await?;
    state.db.delete_chat(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn history_of(messages: &[ChatMessageRecord]) -> Vec<Turn> {
    messages
        .chunks(2)
        .filter_map(|pair| match pair {
            [question, answer] => Some(Turn {
                query: question.content.clone(),
                response: answer.content.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// Asks the chat a question: the answer as JSON, or streamed (`delta` events, then `done` with
/// the stored message) when `stream` is set.
#[utoipa::path(
    post,
    path = "/api/v1/chats/{id}/messages",
    summary = "Ask; the answer is stored (streamed with stream: true)",
    request_body = PostMessage,
    responses((status = 200, description = "The stored answer, or with `stream` its events (`ChatStreamEvent`s)", content((ChatMessageRecord = "application/json"), (ChatStreamEvent = "text/event-stream"))))
)]
pub async fn post_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<PostMessage>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    if request.content.trim().is_empty() {
        return Err(ApiError::invalid("content: must not be empty"));
    }
    let chat = own_chat(&state, &caller, &id).await?;
    let history = history_of(&state.db.chat_messages(&id).await?);
    let served = registry::serve(&state, &served_name(&chat)).await?;
    let question = Question {
        system: chat.system.clone(),
        query: request.content.clone(),
        history,
        options: Question::options(
            request.max_tokens,
            Question::sampling(request.temperature, None, request.seed),
            &state.settings.limits,
        )?,
        stops: Vec::new(),
    };
    let question = question.check(&served, &state.settings.limits)?;
    let metrics = state.metrics.clone();
    if !request.stream {
        let outcome = answer_whole(served, metrics, question).await?;
        state
            .db
            .append_turn(&id, &request.content, &outcome.text)
            .await?;
        return Ok(Json(ChatMessageRecord {
            role: "assistant".into(),
            content: outcome.text,
            created_at: now(),
        })
        .into_response());
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Event>(64);
    let db = state.db.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let send = |event: ChatStreamEvent| {
            sender
                .blocking_send(Event::default().event(event.name()).data(event.data()))
                .is_ok()
        };
        let outcome = answer(&served, &metrics, &question, |text| {
            send(ChatStreamEvent::Delta(ChatDelta {
                content: text.to_owned(),
            }))
        });
        let failed = |message: String| ChatStreamEvent::Error(ChatStreamError { message });
        let last = match outcome {
            Ok(outcome) => {
                match runtime.block_on(db.append_turn(&id, &request.content, &outcome.text)) {
                    Ok(()) => ChatStreamEvent::Done(ChatDone {
                        role: "assistant".into(),
                        content: outcome.text,
                        finish_reason: outcome.finish_reason.into(),
                    }),
                    Err(e) => failed(e.to_string()),
                }
            }
            Err(e) => failed(e.to_string()),
        };
        send(last);
    });
    let events = futures_util::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(receiver),
        Ok::<_, Infallible>,
    );
    Ok(Sse::new(events).into_response())
}
