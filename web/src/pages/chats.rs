//! Chats: sessions with a model or a run's adapter, kept by the server, answers streamed as they
//! are generated; and a side-by-side view that asks the base model and adapters the same question.

use glmtune_shared::api::{
    Chat, ChatMessageRecord, ChatWithMessages, CreateChat, List, ModelInfo, PostMessage, Run,
    RunState,
};
use glmtune_shared::chat_stream::ChatStreamEvent;
use glmtune_shared::openai::{self, ChatCompletionChunk, ChatCompletionRequest};
use leptos::prelude::*;

use crate::api;
use crate::pages::ErrorNote;

#[component]
pub fn Chats() -> impl IntoView {
    let chats = LocalResource::new(|| api::get::<List<Chat>>("/api/v1/chats"));
    let models = LocalResource::new(|| api::get::<List<ModelInfo>>("/api/v1/models"));
    let runs = LocalResource::new(|| api::get::<List<Run>>("/api/v1/runs"));
    let choice = RwSignal::new(String::new());
    // Filled with a run's source_prefix when its adapter is chosen: the prompt it was trained with.
    let system = RwSignal::new(String::new());
    let open = RwSignal::new(None::<String>);
    let error = RwSignal::new(None::<api::Failure>);
    // "MODEL" or "MODEL|RUN".
    let targets = move || {
        let mut all: Vec<(String, String)> = Vec::new();
        if let Some(Ok(list)) = models.get() {
            all.extend(
                list.data
                    .into_iter()
                    .map(|m| (m.name.clone(), format!("{} (base)", m.name))),
            );
        }
        if let Some(Ok(list)) = runs.get() {
            all.extend(
                list.data
                    .into_iter()
                    .filter(|r| r.state == RunState::Succeeded)
                    .map(|r| {
                        (
                            format!("{}|{}", r.model, r.id),
                            format!("{} + {}", r.model, r.id),
                        )
                    }),
            );
        }
        all
    };
    let create = move |_| {
        let picked = choice.get_untracked();
        let (model, run) = match picked.split_once('|') {
            Some((m, r)) => (m.to_owned(), Some(r.to_owned())),
            None => (picked.clone(), None),
        };
        leptos::task::spawn_local(async move {
            let request = CreateChat {
                model,
                run_id: run,
                title: None,
                system: Some(system.get_untracked()).filter(|s| !s.is_empty()),
            };
            match api::post::<_, Chat>("/api/v1/chats", &request).await {
                Ok(chat) => {
                    open.set(Some(chat.id));
                    chats.refetch();
                }
                Err(failure) => error.set(Some(failure)),
            }
        });
    };
    view! {
        <section>
            <h1>"Chats"</h1>
            <div class="card row">
                <label>"Model and adapter"
                    <select name="target" on:change=move |ev| {
                        let picked = event_target_value(&ev);
                        let trained = picked.split_once('|').and_then(|(_, run)| {
                            runs.get_untracked()
                                .and_then(Result::ok)
                                .and_then(|list| list.data.into_iter().find(|r| r.id == run))
                                .and_then(|r| r.settings.source_prefix)
                        });
                        system.set(trained.unwrap_or_default());
                        choice.set(picked);
                    }>
                        <option value="">"choose…"</option>
                        {move || targets().into_iter().map(|(value, label)| view! { <option value=value>{label}</option> }).collect_view()}
                    </select>
                </label>
                <label class="wide">"System prompt (put before every question; an adapter's own by default)"
                    <textarea name="system" rows="1" bind:value=system placeholder="none"></textarea>
                </label>
                <button on:click=create disabled=move || choice.get().is_empty()>"New chat"</button>
            </div>
            {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
            <div class="split">
                <ul class="chat-list">
                    {move || chats.get().and_then(Result::ok).map(|list| list.data.into_iter().map(|c| {
                        let id = c.id.clone();
                        let label = match &c.run_id {
                            Some(run) => format!("{} + {run}", c.model),
                            None => c.model.clone(),
                        };
                        view! { <li><button class="link" on:click=move |_| open.set(Some(id.clone()))>{label}</button></li> }
                    }).collect_view())}
                </ul>
                {move || open.get().map(|id| view! { <Conversation id=id /> })}
            </div>
            <Compare targets=Signal::derive(targets) />
        </section>
    }
}

#[component]
fn Conversation(id: String) -> impl IntoView {
    let messages = RwSignal::new(Vec::<ChatMessageRecord>::new());
    let streaming = RwSignal::new(None::<String>);
    let question = RwSignal::new(String::new());
    let max_tokens = RwSignal::new("64".to_owned());
    let temperature = RwSignal::new("0.95".to_owned());
    let error = RwSignal::new(None::<api::Failure>);
    let system = RwSignal::new(None::<String>);
    let load_id = id.clone();
    leptos::task::spawn_local(async move {
        match api::get::<ChatWithMessages>(&format!("/api/v1/chats/{load_id}")).await {
            Ok(chat) => {
                system.set(chat.chat.system);
                messages.set(chat.messages);
            }
            Err(failure) => error.set(Some(failure)),
        }
    });
    let ask = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let content = question.get_untracked();
        if content.trim().is_empty() || streaming.get_untracked().is_some() {
            return;
        }
        question.set(String::new());
        messages.update(|m| {
            m.push(ChatMessageRecord {
                role: "user".into(),
                content: content.clone(),
                created_at: 0,
            })
        });
        streaming.set(Some(String::new()));
        let id = id.clone();
        leptos::task::spawn_local(async move {
            let request = PostMessage {
                content,
                stream: true,
                max_tokens: max_tokens.get_untracked().trim().parse().ok(),
                temperature: temperature.get_untracked().trim().parse().ok(),
                seed: None,
            };
            let outcome = api::post_stream(
                &format!("/api/v1/chats/{id}/messages"),
                &request,
                |event, data| match ChatStreamEvent::parse(event, data) {
                    Some(ChatStreamEvent::Delta(delta)) => streaming.update(|s| {
                        if let Some(s) = s {
                            s.push_str(&delta.content);
                        }
                    }),
                    Some(ChatStreamEvent::Done(done)) => {
                        messages.update(|m| {
                            m.push(ChatMessageRecord {
                                role: done.role,
                                content: done.content,
                                created_at: 0,
                            })
                        });
                        streaming.set(None);
                    }
                    Some(ChatStreamEvent::Error(failed)) => error.set(Some(api::Failure {
                        status: 500,
                        message: failed.message,
                        details: serde_json::Value::Null,
                    })),
                    None => {}
                },
            )
            .await;
            streaming.set(None);
            if let Err(failure) = outcome {
                error.set(Some(failure));
            }
        });
    };
    view! {
        <div class="conversation card">
            {move || system.get().map(|s| view! { <p class="system muted">"System: "{s}</p> })}
            <ol class="messages">
                {move || messages.get().into_iter().map(|m| view! {
                    <li class=format!("message {}", m.role)>{m.content}</li>
                }).collect_view()}
                {move || streaming.get().map(|s| view! { <li class="message assistant streaming">{s}</li> })}
            </ol>
            <form on:submit=ask class="ask">
                <textarea name="question" bind:value=question placeholder="Ask…" rows="2"></textarea>
                <label>"max tokens"<input name="max_tokens" bind:value=max_tokens size="4" /></label>
                <label>"temperature"<input name="temperature" bind:value=temperature size="4" /></label>
                <button type="submit" disabled=move || streaming.get().is_some()>"Send"</button>
            </form>
            {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
        </div>
    }
}

/// One question to several models at once, answers streamed side by side.
#[component]
fn Compare(targets: Signal<Vec<(String, String)>>) -> impl IntoView {
    let question = RwSignal::new(String::new());
    let answers = RwSignal::new(Vec::<(String, String)>::new());
    let ask = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let content = question.get_untracked();
        let names: Vec<String> = targets
            .get_untracked()
            .into_iter()
            .map(|(value, _)| match value.split_once('|') {
                Some((model, run)) => format!("ft:{model}:{run}"),
                None => value,
            })
            .collect();
        answers.set(names.iter().map(|n| (n.clone(), String::new())).collect());
        for (index, name) in names.into_iter().enumerate() {
            let content = content.clone();
            leptos::task::spawn_local(async move {
                let request = ChatCompletionRequest {
                    model: name,
                    messages: vec![openai::ChatMessage {
                        role: "user".into(),
                        content,
                    }],
                    temperature: Some(0.0),
                    max_tokens: Some(64),
                    stream: Some(true),
                    ..ChatCompletionRequest::default()
                };
                let _ = api::post_stream("/v1/chat/completions", &request, |_, data| {
                    let Ok(chunk) = serde_json::from_str::<ChatCompletionChunk>(data) else {
                        return; // the closing `[DONE]`
                    };
                    let piece = chunk
                        .choices
                        .into_iter()
                        .next()
                        .and_then(|c| c.delta.content);
                    if let Some(piece) = piece {
                        answers.update(|a| a[index].1.push_str(&piece));
                    }
                })
                .await;
            });
        }
    };
    view! {
        <div class="card compare">
            <h2>"Side by side"</h2>
            <form on:submit=ask class="ask">
                <input name="compare" bind:value=question placeholder="One question for the base model and every adapter" />
                <button type="submit">"Compare"</button>
            </form>
            <div class="columns">
                {move || answers.get().into_iter().map(|(name, text)| view! {
                    <div class="column"><h3>{name}</h3><p class="answer">{text}</p></div>
                }).collect_view()}
            </div>
        </div>
    }
}
