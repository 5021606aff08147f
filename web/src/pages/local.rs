//! "In this browser": a quantized model (a folder holding `model.gguf`, from `glmtune quantize`)
//! and, optionally, a finished run's adapter, downloaded once with progress into the browser's
//! Cache API and then answering right here, in a Web Worker (on WebGPU when the browser has it,
//! candle on the CPU when not), with no server involved after the download. Conversations stay in
//! this browser (IndexedDB), one per model and adapter.

use std::rc::Rc;

use glmtune_shared::api::{List, ModelInfo, Run, RunState};
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::api::{self, Failure};
use crate::local::history;
use crate::local::protocol::{FromWorker, ToWorker};
use crate::pages::{model_options, ErrorNote};

/// The worker with the handler that keeps its messages flowing into the page.
struct Thread {
    worker: web_sys::Worker,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
}

impl Drop for Thread {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}

/// The page's picture of the worker.
#[derive(Clone, Copy)]
struct Signals {
    progress: RwSignal<Option<(f64, f64)>>,
    status: RwSignal<String>,
    error: RwSignal<Option<Failure>>,
    /// (backend, "cache" or "network").
    ready: RwSignal<Option<(String, &'static str)>>,
    turns: RwSignal<Vec<(String, String)>>,
    partial: RwSignal<Option<String>>,
    /// The question being answered.
    asked: RwSignal<Option<String>>,
    /// The conversation's key in this browser's history, and whether it was read back.
    conversation: RwSignal<String>,
    restored: RwSignal<bool>,
}

impl Signals {
    fn receive(
        self,
        message: FromWorker,
        pending: &mut Option<ToWorker>,
        worker: &web_sys::Worker,
    ) {
        match message {
            FromWorker::Ready => {
                if let Some(first) = pending.take() {
                    let _ = worker.post_message(&JsValue::from_str(&first.to_text()));
                }
            }
            FromWorker::Progress { done, total } => self.progress.set(Some((done, total))),
            FromWorker::Status { text } => self.status.set(text),
            FromWorker::Loaded {
                backend,
                from_cache,
                downloaded,
                cached,
            } => {
                let source = if from_cache { "cache" } else { "network" };
                self.status.set(format!(
                    "Answers in this browser on {backend}; weights: {downloaded} pieces downloaded, {cached} from this browser's cache."
                ));
                self.ready.set(Some((backend, source)));
                let key = self.conversation.get_untracked();
                leptos::task::spawn_local(async move {
                    match history::load(&key).await {
                        Ok(saved) => self.turns.set(saved),
                        Err(e) => self.error.set(Some(Failure::local(format!(
                            "the saved conversation cannot be read: {e}"
                        )))),
                    }
                    self.restored.set(true);
                });
            }
            FromWorker::Delta { text } => self
                .partial
                .update(|p| p.get_or_insert_with(String::new).push_str(&text)),
            FromWorker::Answer { text } => {
                if let Some(query) = self.asked.get_untracked() {
                    self.turns.update(|t| t.push((query, text)));
                    self.save();
                }
                self.asked.set(None);
                self.partial.set(None);
            }
            FromWorker::Failed { message } => {
                self.asked.set(None);
                self.partial.set(None);
                self.status.set(String::new());
                self.error.set(Some(Failure::local(message)));
            }
        }
    }
}

impl Signals {
    /// Keeps the conversation in this browser (IndexedDB).
    fn save(self) {
        let (key, turns, error) = (
            self.conversation.get_untracked(),
            self.turns.get_untracked(),
            self.error,
        );
        leptos::task::spawn_local(async move {
            if let Err(e) = history::save(&key, &turns).await {
                error.set(Some(Failure::local(format!(
                    "the conversation cannot be saved in this browser: {e}"
                ))));
            }
        });
    }
}

/// Starts a worker that will load `first` once its module is up.
fn start_worker(signals: Signals, first: ToWorker) -> Result<Thread, Failure> {
    let options = web_sys::WorkerOptions::new();
    options.set_type(web_sys::WorkerType::Module);
    let worker = web_sys::Worker::new_with_options("/local-worker.js", &options)?;
    let mut pending = Some(first);
    let target = worker.clone();
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
            let text = event.data().as_string().unwrap_or_default();
            match serde_json::from_str::<FromWorker>(&text) {
                Ok(message) => signals.receive(message, &mut pending, &target),
                Err(e) => signals.error.set(Some(Failure::local(format!(
                    "unreadable message from the worker: {e}"
                )))),
            }
        });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    Ok(Thread {
        worker,
        _on_message: on_message,
    })
}

/// Succeeded runs, whose adapters can join the model here.
async fn finished_runs() -> Result<Vec<Run>, Failure> {
    let runs: List<Run> = api::get("/api/v1/runs").await?;
    Ok(runs
        .data
        .into_iter()
        .filter(|r| r.state == RunState::Succeeded)
        .collect())
}

#[component]
pub fn InBrowser() -> impl IntoView {
    let models = LocalResource::new(|| api::get::<List<ModelInfo>>("/api/v1/models"));
    let runs = LocalResource::new(finished_runs);
    let model = RwSignal::new(String::new());
    let adapter_run = RwSignal::new(String::new());
    let signals = Signals {
        progress: RwSignal::new(None),
        status: RwSignal::new(String::new()),
        error: RwSignal::new(None),
        ready: RwSignal::new(None),
        turns: RwSignal::new(Vec::new()),
        partial: RwSignal::new(None),
        asked: RwSignal::new(None),
        conversation: RwSignal::new(String::new()),
        restored: RwSignal::new(false),
    };
    let thread = StoredValue::new_local(None::<Rc<Thread>>);
    let question = RwSignal::new(String::new());
    let max_tokens = RwSignal::new("64".to_owned());

    let load = move |_| {
        signals.error.set(None);
        signals.ready.set(None);
        signals.progress.set(None);
        signals.turns.set(Vec::new());
        signals.restored.set(false);
        signals.status.set("Starting the model's worker…".into());
        let adapter = adapter_run.get_untracked();
        signals
            .conversation
            .set(history::key(&model.get_untracked(), &adapter));
        let request = ToWorker::Load {
            model: model.get_untracked(),
            adapter_run: (!adapter.is_empty()).then_some(adapter),
        };
        // A new model gets a new worker: the old one's GPU buffers go with it.
        thread.set_value(None);
        match start_worker(signals, request) {
            Ok(started) => thread.set_value(Some(Rc::new(started))),
            Err(failure) => signals.error.set(Some(failure)),
        }
    };
    let ask = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(worker) = thread.get_value() else {
            return;
        };
        let query = question.get_untracked();
        if query.trim().is_empty() || signals.asked.get_untracked().is_some() {
            return;
        }
        question.set(String::new());
        let request = ToWorker::Ask {
            query: query.clone(),
            history: signals.turns.get_untracked(),
            max_tokens: max_tokens.get_untracked().trim().parse().unwrap_or(64),
        };
        signals.asked.set(Some(query));
        signals.partial.set(Some(String::new()));
        let _ = worker
            .worker
            .post_message(&JsValue::from_str(&request.to_text()));
    };
    let run_options = move || {
        runs.get().and_then(Result::ok).map(|list| {
            list.into_iter()
                .map(|r| {
                    let label = format!("run {} (tuned on {})", r.id, r.model);
                    view! { <option value=r.id>{label}</option> }
                })
                .collect_view()
        })
    };
    view! {
        <section>
            <h1>"In this browser"</h1>
            <div class="card">
                <p class="muted">"A quantized model is downloaded once (then kept in this browser's cache) and answers here, in a background thread on WebGPU or on the CPU, without the server. An interrupted download resumes where it stopped."</p>
                <div class="row">
                    <label>"Quantized model"
                        <select name="local_model" on:change=move |ev| model.set(event_target_value(&ev))>
                            <option value="">"choose…"</option>
                            {model_options(models)}
                        </select>
                    </label>
                    <label>"Adapter"
                        <select name="local_adapter" on:change=move |ev| adapter_run.set(event_target_value(&ev))>
                            <option value="">"none (base model)"</option>
                            {run_options}
                        </select>
                    </label>
                    <button name="load" disabled=move || model.get().is_empty() on:click=load>"Download and load"</button>
                    {move || signals.progress.get().map(|(done, total)| {
                        let percent = if total > 0.0 { 100.0 * done / total } else { 0.0 };
                        view! {
                            <progress max="100" value=percent></progress>
                            <span class="muted">{format!("{percent:.0}%")}</span>
                        }
                    })}
                </div>
                <p class="status" aria-live="polite">{move || signals.status.get()}</p>
                {move || signals.error.get().map(|e| view! { <ErrorNote error=e /> })}
            </div>
            {move || signals.ready.get().map(|(backend, source)| view! {
                <div class="conversation card local-chat" data-backend=backend data-source=source
                    data-history=move || if signals.restored.get() { "loaded" } else { "loading" }>
                    <ol class="messages">
                        {move || signals.turns.get().into_iter().map(|(q, a)| view! {
                            <li class="message user">{q}</li>
                            <li class="message assistant">{a}</li>
                        }).collect_view()}
                        {move || signals.asked.get().map(|q| view! { <li class="message user">{q}</li> })}
                        {move || signals.partial.get().map(|s| view! { <li class="message assistant streaming">{s}</li> })}
                    </ol>
                    <form on:submit=ask class="ask">
                        <textarea name="local_question" bind:value=question placeholder="Ask…" rows="2"></textarea>
                        <label>"max tokens"<input name="local_max_tokens" bind:value=max_tokens size="4" /></label>
                        <button type="submit" disabled=move || signals.asked.get().is_some()>"Send"</button>
                        <button type="button" name="local_clear" class="secondary"
                            disabled=move || signals.turns.get().is_empty() || signals.asked.get().is_some()
                            on:click=move |_| { signals.turns.set(Vec::new()); signals.save(); }>"Clear"</button>
                    </form>
                </div>
            })}
        </section>
    }
}
