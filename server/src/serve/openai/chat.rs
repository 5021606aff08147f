//! `/v1/models` and `/v1/chat/completions`, as the official `openai` client expects them.
//!
//! Messages become ChatGLM's prompt: earlier user/assistant pairs are the `[Round i]` history, the
//! last user message is the query, and the system messages (joined by newlines) are put before
//! the whole prompt, as `--source-prefix` is in training; without one, a fine-tuned model uses its
//! run's source prefix. Unset
//! sampling parameters take the official `chat()` defaults (top-p 0.7, temperature 0.95);
//! `temperature: 0` decodes greedily. A fine-tuned job's `ft:MODEL:JOB` name is a model here.

use std::convert::Infallible;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_engine::generation::Turn;
use glmtune_shared::api::RunState;
use glmtune_shared::openai::{
    ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage,
    ChunkChoice, Delta, Model, ModelList, Usage,
};
use tokio_stream::StreamExt;

use crate::serve::answer::{answer, answer_whole, Limits, Question};
use crate::serve::{registry, ApiError, AppState};

#[utoipa::path(
    get,
    path = "/v1/models",
    summary = "OpenAI: models and fine-tuned models",
    responses((status = 200, body = ModelList))
)]
pub async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let mut data: Vec<Model> = state
        .db
        .models()
        .await?
        .into_iter()
        .map(|model| Model {
            id: model.name,
            object: "model".into(),
            created: model.created_at.max(0) as u64,
            owned_by: "glmtune".into(),
        })
        .collect();
    for run in state.db.runs_in_state(RunState::Succeeded).await? {
        if let Some(name) = run.fine_tuned_model {
            data.push(Model {
                id: name,
                object: "model".into(),
                created: run.finished_at.unwrap_or(run.created_at).max(0) as u64,
                owned_by: run.owner_id.unwrap_or_else(|| "glmtune".into()),
            });
        }
    }
    Ok(Json(ModelList {
        object: "list".into(),
        data,
    }))
}

/// Fields that change nothing in the answer, accepted and ignored: who asks (`user`), and what
/// OpenAI would keep about the request (`metadata`, `store`).
const IGNORED_FIELDS: [&str; 3] = ["user", "metadata", "store"];

/// The parameters this server does not apply are refused with a 400 naming them, rather than
/// silently ignored: an answer must be what was asked for. Unset, null, `false` or their neutral
/// value (n 1, penalties 0) they are fine.
fn refuse_unsupported(request: &ChatCompletionRequest) -> Result<(), ApiError> {
    if let Some(n) = request.n.filter(|&n| n != 1) {
        return Err(ApiError::invalid(format!(
            "n: {n} choices asked for; this server makes one per request (send n 1 or leave it out)"
        )));
    }
    for (name, value) in [
        ("presence_penalty", request.presence_penalty),
        ("frequency_penalty", request.frequency_penalty),
    ] {
        if let Some(value) = value.filter(|&v| v != 0.0) {
            return Err(ApiError::invalid(format!(
                "{name}: {value} is not supported by this server (only 0); ChatGLM's own \
                 repetition penalty is not an OpenAI parameter"
            )));
        }
    }
    if let (Some(a), Some(b)) = (request.max_tokens, request.max_completion_tokens) {
        if a != b {
            return Err(ApiError::invalid(format!(
                "max_tokens ({a}) and max_completion_tokens ({b}) disagree; send one"
            )));
        }
    }
    let mut unsupported: Vec<&str> = request
        .other
        .iter()
        .filter(|(name, value)| {
            !IGNORED_FIELDS.contains(&name.as_str())
                && !matches!(
                    value,
                    serde_json::Value::Null | serde_json::Value::Bool(false)
                )
        })
        .map(|(name, _)| name.as_str())
        .collect();
    unsupported.sort_unstable();
    if !unsupported.is_empty() {
        return Err(ApiError::invalid(format!(
            "{}: not supported by this server (supported: model, messages, temperature, top_p, \
             max_tokens or max_completion_tokens, stop, seed, stream, n 1, penalties 0, user)",
            unsupported.join(", ")
        )));
    }
    Ok(())
}

/// Splits OpenAI messages into ChatGLM's query and history.
fn plan(request: &ChatCompletionRequest, limits: &Limits) -> Result<Question, ApiError> {
    refuse_unsupported(request)?;
    let mut system = Vec::new();
    let mut turns: Vec<(String, Option<String>)> = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        match message.role.as_str() {
            "system" => system.push(message.content.clone()),
            "user" => turns.push((message.content.clone(), None)),
            "assistant" => match turns.last_mut() {
                Some((_, answer @ None)) => *answer = Some(message.content.clone()),
                _ => {
                    return Err(ApiError::invalid(format!(
                        "messages[{i}]: an assistant message must follow a user message"
                    )))
                }
            },
            other => {
                return Err(ApiError::invalid(format!(
                    "messages[{i}].role: unknown role {other:?}"
                )))
            }
        }
    }
    let Some((query, None)) = turns.pop() else {
        return Err(ApiError::invalid(
            "messages: the last message must come from the user",
        ));
    };
    let history: Vec<Turn> = turns
        .into_iter()
        .map(|(query, response)| Turn {
            query,
            response: response.unwrap_or_default(),
        })
        .collect();
    let system = (!system.is_empty()).then(|| system.join("\n"));
    let sampling = Question::sampling(request.temperature, request.top_p, request.seed);
    Ok(Question {
        system,
        query,
        history,
        options: Question::options(
            request.max_tokens.or(request.max_completion_tokens),
            sampling,
            limits,
        )?,
        stops: request
            .stop
            .as_ref()
            .map(|s| s.sequences())
            .unwrap_or_default(),
    })
}

#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    summary = "OpenAI: chat completion (streaming or not)",
    request_body = ChatCompletionRequest,
    responses((status = 200, description = "The completion, or with `stream` its chunks", content((ChatCompletion = "application/json"), (ChatCompletionChunk = "text/event-stream"))))
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Json<ChatCompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let streaming = request.stream.unwrap_or(false);
    let limits = state.settings.limits;
    let question = plan(&request, &limits)?;
    let served = registry::serve(&state, &request.model).await?;
    let question = question.check(&served, &limits)?;
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let serial = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let created = crate::db::now().max(0) as u64;
    let id = format!("chatcmpl-{created}-{serial}");
    let metrics = state.metrics.clone();
    let model = request.model;
    if !streaming {
        let outcome = answer_whole(served, metrics, question).await?;
        let completion = ChatCompletion {
            id,
            object: "chat.completion".into(),
            created,
            model,
            choices: vec![ChatChoice {
                index: 0,
                message: ChatMessage {
                    role: "assistant".into(),
                    content: outcome.text,
                },
                finish_reason: outcome.finish_reason.into(),
            }],
            usage: Usage {
                prompt_tokens: outcome.prompt_tokens,
                completion_tokens: outcome.completion_tokens,
                total_tokens: outcome.prompt_tokens + outcome.completion_tokens,
            },
        };
        let mut response = Json(completion).into_response();
        if let Ok(value) = format!("{:.6}", outcome.model_seconds).parse() {
            response
                .headers_mut()
                .insert("x-glmtune-model-seconds", value);
        }
        return Ok(response);
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<ChatCompletionChunk>(64);
    let chunk = move |delta: Delta, finish_reason: Option<String>| ChatCompletionChunk {
        id: id.clone(),
        object: "chat.completion.chunk".into(),
        created,
        model: model.clone(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason,
        }],
    };
    tokio::task::spawn_blocking(move || {
        let first = Delta {
            role: Some("assistant".into()),
            content: None,
        };
        if sender.blocking_send(chunk(first, None)).is_err() {
            return;
        }
        let outcome = answer(&served, &metrics, &question, |text| {
            let delta = Delta {
                role: None,
                content: Some(text.to_owned()),
            };
            // A closed connection stops generation.
            sender.blocking_send(chunk(delta, None)).is_ok()
        });
        let finish_reason = match outcome {
            Ok(outcome) => outcome.finish_reason.to_owned(),
            Err(_) => "error".to_owned(),
        };
        let _ = sender.blocking_send(chunk(Delta::default(), Some(finish_reason)));
    });
    let events = tokio_stream::wrappers::ReceiverStream::new(receiver)
        .map(|chunk| {
            Ok::<_, Infallible>(
                Event::default().data(serde_json::to_string(&chunk).unwrap_or_default()),
            )
        })
        .chain(tokio_stream::once(Ok(Event::default().data("[DONE]"))));
    Ok(Sse::new(events).into_response())
}
