//! `/v1/models` and `/v1/chat/completions`, as the official `openai` client expects them.
//!
//! Messages become ChatGLM's prompt: earlier user/assistant pairs are the `[Round i]` history, the
//! last user message is the query, and system messages are put before the first query. Unset
//! sampling parameters take the official `chat()` defaults (top-p 0.7, temperature 0.95);
//! `temperature: 0` decodes greedily.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_engine::generation::{
    build_prompt, generate, process_response, stable_response, Flow, GenerationOptions, Sampling,
    TextStream, Turn,
};
use glmtune_shared::openai::{
    ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage,
    ChunkChoice, Delta, Model, ModelList, Usage,
};
use tokio_stream::StreamExt;

use super::metrics::Metrics;
use super::{ApiError, AppState, Served};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    let data = state
        .models
        .keys()
        .map(|name| Model {
            id: name.clone(),
            object: "model".into(),
            created: 0,
            owned_by: "glmtune".into(),
        })
        .collect();
    Json(ModelList {
        object: "list".into(),
        data,
    })
}

/// A request turned into what the engine needs.
struct Job {
    model: String,
    query: String,
    history: Vec<Turn>,
    options: GenerationOptions,
    stops: Vec<String>,
}

fn plan(request: ChatCompletionRequest) -> Result<Job, ApiError> {
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
    let mut history: Vec<Turn> = turns
        .into_iter()
        .map(|(query, response)| Turn {
            query,
            response: response.unwrap_or_default(),
        })
        .collect();
    let system = system.join("\n");
    let query = match (&mut history.first_mut(), system.is_empty()) {
        (_, true) => query,
        (Some(first), false) => {
            first.query = format!("{system}\n{}", first.query);
            query
        }
        (None, false) => format!("{system}\n{query}"),
    };
    let sampling = match request.temperature {
        Some(t) if t <= 0.0 => Sampling::Greedy,
        temperature => Sampling::Sample {
            temperature: temperature.unwrap_or(0.95),
            top_p: request.top_p.unwrap_or(0.7),
            top_k: 0,
            seed: request.seed.unwrap_or_else(now),
        },
    };
    Ok(Job {
        model: request.model,
        query,
        history,
        options: GenerationOptions {
            max_new_tokens: request.max_tokens,
            max_length: Some(2048),
            sampling,
            repetition_penalty: 1.0,
            stop_at_eos: true,
        },
        stops: request.stop.map(|s| s.sequences()).unwrap_or_default(),
    })
}

/// The answer so far, cut at the first stop sequence (second value: whether one was found).
fn cut_at_stop(text: &str, stops: &[String]) -> (String, bool) {
    match stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
    {
        Some(at) => (text[..at].to_owned(), true),
        None => (text.to_owned(), false),
    }
}

struct Outcome {
    text: String,
    finish_reason: &'static str,
    prompt_tokens: usize,
    completion_tokens: usize,
}

/// Runs generation for `job`, calling `on_text` with each new piece of the answer.
fn run_job(
    served: &Served,
    metrics: &Metrics,
    job: &Job,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Outcome, ApiError> {
    // A request that panicked left nothing half-written (the weights are read-only): go on.
    let _turn = served
        .turn
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let loaded = &served.loaded;
    let prompt = loaded
        .tokenizer
        .encode(&build_prompt(&job.query, &job.history));
    let eos = loaded.model.config().eos_token_id;
    let started = std::time::Instant::now();
    let mut new_ids = Vec::new();
    let mut stream = TextStream::new();
    let mut stopped_by_sequence = false;
    let mut produced_eos = false;
    let outputs = generate(
        &loaded.model,
        loaded.prefix.as_ref(),
        std::slice::from_ref(&prompt),
        &job.options,
        |_, id| {
            if id == eos {
                produced_eos = true;
                return Flow::Continue;
            }
            new_ids.push(id);
            let (text, stop) = cut_at_stop(
                &stable_response(&loaded.tokenizer.decode(&new_ids)),
                &job.stops,
            );
            stopped_by_sequence = stop;
            let keep_going = match stream.next_chunk(&text) {
                Some(chunk) => on_text(&chunk),
                None => true,
            };
            if stop || !keep_going {
                Flow::Stop
            } else {
                Flow::Continue
            }
        },
    )?;
    let (text, _) = cut_at_stop(
        &process_response(&loaded.tokenizer.decode(&new_ids)),
        &job.stops,
    );
    if let Some(chunk) = stream.finish(&text) {
        on_text(&chunk);
    }
    let completion_tokens = outputs.first().map_or(0, Vec::len);
    metrics.observe_generation(completion_tokens, started.elapsed());
    let finish_reason = if produced_eos || stopped_by_sequence {
        "stop"
    } else {
        "length"
    };
    Ok(Outcome {
        text,
        finish_reason,
        prompt_tokens: prompt.len(),
        completion_tokens,
    })
}

pub async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Json<ChatCompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let streaming = request.stream.unwrap_or(false);
    let job = plan(request)?;
    let served: Arc<Served> =
        state.models.get(&job.model).cloned().ok_or_else(|| {
            ApiError::not_found(format!("model {:?} is not registered", job.model))
        })?;
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let serial = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("chatcmpl-{}-{serial}", now());
    let created = now();
    let metrics = state.metrics.clone();
    if !streaming {
        let (job, served) = (Arc::new(job), served.clone());
        let task_job = job.clone();
        let outcome =
            tokio::task::spawn_blocking(move || run_job(&served, &metrics, &task_job, |_| true))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))??;
        let completion = ChatCompletion {
            id,
            object: "chat.completion".into(),
            created,
            model: job.model.clone(),
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
        return Ok(Json(completion).into_response());
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<ChatCompletionChunk>(64);
    let model = job.model.clone();
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
        let outcome = run_job(&served, &metrics, &job, |text| {
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
