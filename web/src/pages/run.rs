//! One run, live: its events arrive over Server-Sent Events (the browser reconnects with
//! `Last-Event-ID` by itself; a reload replays everything), drawn as loss, learning-rate and
//! grad-norm charts with progress, ETA, tokens/s, a stall warning and the log.

use futures_util::StreamExt;
use glmtune_shared::api::{Checkpoint, Evaluation, List, Run, RunEvent, ScoreTable};
use glmtune_shared::run_event::RunEventData;
use glmtune_shared::run_log::LogRow;
use gloo_net::eventsource::futures::EventSource;
use leptos::prelude::*;

use crate::api;
use crate::chart::{LineChart, Series};
use crate::pages::{ErrorNote, Table};

/// What the events so far say.
#[derive(Debug, Clone, Default, PartialEq)]
struct Progress {
    loss: Vec<(f64, f64)>,
    eval_loss: Vec<(f64, f64)>,
    /// The forgetting guard's KL at each evaluation, and its last warning.
    forgetting: Vec<(f64, f64)>,
    forgetting_warning: Option<String>,
    learning_rate: Vec<(f64, f64)>,
    grad_norm: Vec<(f64, f64)>,
    state: String,
    step: i64,
    max_steps: i64,
    tokens_per_second: f64,
    elapsed_s: f64,
    stalled: Option<String>,
    /// Where the run trains, its base's precision and its peak memory (from the latest row).
    device: Option<String>,
    dtype: Option<String>,
    peak_memory_bytes: Option<u64>,
    log: Vec<(String, String)>,
    scores: Option<ScoreTable>,
}

impl Progress {
    fn apply(&mut self, event: &RunEvent) {
        let note = (event.kind.clone(), event.message.clone());
        match event.data() {
            Some(RunEventData::Log(LogRow::Step(row))) => {
                self.stalled = None;
                let step = row.step as f64;
                self.loss.push((step, row.loss));
                self.step = row.step as i64;
                self.learning_rate.push((step, row.learning_rate));
                self.grad_norm.push((step, row.grad_norm));
                self.max_steps = row.max_steps as i64;
                self.tokens_per_second = row.tokens_per_second;
                self.elapsed_s = row.elapsed_s;
                self.device = row.device.or(self.device.take());
                self.dtype = row.dtype.or(self.dtype.take());
                self.peak_memory_bytes = row.peak_memory_bytes.or(self.peak_memory_bytes);
            }
            Some(RunEventData::Log(LogRow::Eval(row))) => {
                self.stalled = None;
                self.eval_loss.push((row.step as f64, row.eval_loss));
                if let Some(kl) = row.forgetting_kl {
                    self.forgetting.push((row.step as f64, kl));
                }
                if row.forgetting_warning {
                    self.forgetting_warning = Some(format!(
                        "at step {} the prefix moves the model from its base on general prompts by {:.4} nats a token, over the run's threshold: it may be forgetting what it knew outside the domain",
                        row.step,
                        row.forgetting_kl.unwrap_or_default()
                    ));
                }
            }
            Some(RunEventData::State(change)) => {
                self.state = change.state.as_str().to_owned();
                self.log.push(note);
            }
            Some(RunEventData::Stall(_)) => {
                self.stalled = Some(event.message.clone());
                self.log.push(note);
            }
            Some(RunEventData::Scores(scores)) => {
                self.scores = Some(scores.scores);
                self.log.push(note);
            }
            _ => self.log.push(note),
        }
    }

    fn eta(&self) -> Option<f64> {
        (self.step > 0 && self.max_steps > self.step)
            .then(|| self.elapsed_s / self.step as f64 * (self.max_steps - self.step) as f64)
    }
}

/// Every name `RunEventData::kind` gives a run's events: an EventSource hears only the names it
/// listens for (`scores` was missed once, and the evaluation card never showed live).
const EVENT_KINDS: [&str; 10] = [
    "metrics",
    "checkpoint",
    "finished",
    "trainer-error",
    "error",
    "state",
    "scores",
    "stall",
    "info",
    "warning",
];

/// Applies the run's events to `progress` as they arrive, until the run ends or the page goes.
fn follow_events(id: &str, progress: RwSignal<Progress>) {
    let Ok(mut source) = EventSource::new(&format!("/api/v1/runs/{id}/events")) else {
        return;
    };
    let Ok(subscriptions) = EVENT_KINDS
        .iter()
        .map(|kind| source.subscribe(*kind))
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    // Closing it (here, when the page goes) ends every subscription, and so the task below.
    let closer = send_wrapper::SendWrapper::new(source.clone());
    on_cleanup(move || closer.take().close());
    leptos::task::spawn_local(async move {
        let mut events = futures_util::stream::select_all(subscriptions);
        // An error while the browser reconnects is not reported; one that is, is final.
        while let Some(Ok((_, message))) = events.next().await {
            let Some(event) = message
                .data()
                .as_string()
                .and_then(|text| serde_json::from_str::<RunEvent>(&text).ok())
            else {
                continue;
            };
            let ended = matches!(
                event.data(),
                Some(RunEventData::State(change)) if change.state.is_final()
            );
            // The page may have gone between the event and now.
            if progress.try_update(|p| p.apply(&event)).is_none() || ended {
                break;
            }
        }
        // The server ends the stream after the final state; closing it keeps the browser from
        // reconnecting.
        source.close();
    });
}

#[component]
pub fn RunPage(id: String) -> impl IntoView {
    let progress = RwSignal::new(Progress::default());
    let run_id = id.clone();
    let run = LocalResource::new(move || {
        let id = run_id.clone();
        async move { api::get::<Run>(&format!("/api/v1/runs/{id}")).await }
    });
    let checkpoints_id = id.clone();
    let checkpoints = LocalResource::new(move || {
        let id = checkpoints_id.clone();
        // Refetched when the state changes.
        let _ = progress.with(|p| p.state.clone());
        async move { api::get::<List<Checkpoint>>(&format!("/api/v1/runs/{id}/checkpoints")).await }
    });
    let evaluation_id = id.clone();
    // The final adapter's answers, the worst first, once the run has scores.
    let evaluation = LocalResource::new(move || {
        let id = evaluation_id.clone();
        let scored = progress.with(|p| p.scores.is_some());
        async move {
            if scored {
                api::get::<Evaluation>(&format!("/api/v1/runs/{id}/evaluation"))
                    .await
                    .ok()
            } else {
                None
            }
        }
    });
    let error = RwSignal::new(None::<api::Failure>);

    follow_events(&id, progress);

    let act = move |action: &'static str| {
        let id = id.clone();
        move |_| {
            let id = id.clone();
            leptos::task::spawn_local(async move {
                match api::post::<_, Run>(
                    &format!("/api/v1/runs/{id}/{action}"),
                    &serde_json::json!({}),
                )
                .await
                {
                    Ok(_) => {
                        run.refetch();
                        if action == "resume" {
                            // A resumed run streams again: reload to follow it.
                            if let Some(window) = web_sys::window() {
                                let _ = window.location().reload();
                            }
                        }
                    }
                    Err(failure) => error.set(Some(failure)),
                }
            });
        }
    };
    let series =
        move |pick: fn(&Progress) -> Vec<Series>| Signal::derive(move || progress.with(pick));
    view! {
        <section>
            {move || run.get().map(|r| match r {
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
                Ok(r) => view! {
                    <h1>{format!("Run {}", r.id)}</h1>
                    <p class="muted settings">{format!("model {} · data {} · settings {}", r.model, r.train_dataset, serde_json::to_string(&r.settings).unwrap_or_default())}</p>
                    {r.fine_tuned_model.clone().map(|m| view! { <p>"Chat with it as " <code>{m}</code> " in Chats, or download the "
                        <a href=format!("/api/v1/runs/{}/adapter", r.id) download>"adapter (zip, official layout)"</a>"."</p> })}
                }.into_any(),
            })}
            <div class="card status-line">
                {move || progress.with(|p| view! {
                    <span class=format!("state {}", p.state)>{if p.state.is_empty() { "connecting".to_owned() } else { p.state.clone() }}</span>
                    <progress max=p.max_steps.max(1) value=p.step></progress>
                    <span class="step">{format!("step {} / {}", p.step, p.max_steps)}</span>
                    <span>{format!("{:.0} tokens/s", p.tokens_per_second)}</span>
                    <span>{p.eta().map(|s| format!("ETA {s:.0} s")).unwrap_or_default()}</span>
                    <span class="device">{p.device.clone().unwrap_or_default()}</span>
                    <span class="dtype">{p.dtype.clone().unwrap_or_default()}</span>
                    <span class="peak-memory">{p.peak_memory_bytes.map(|b| format!("peak {:.2} GiB", b as f64 / (1u64 << 30) as f64)).unwrap_or_default()}</span>
                })}
                {move || {
                    let state = progress.with(|p| p.state.clone());
                    let live = matches!(state.as_str(), "queued" | "running" | "");
                    let resumable = matches!(state.as_str(), "failed" | "cancelled");
                    view! {
                        <button on:click=act("cancel") hidden=!live>"Cancel"</button>
                        <button on:click=act("resume") hidden=!resumable>"Resume"</button>
                    }
                }}
            </div>
            {move || progress.with(|p| p.stalled.clone()).map(|m| view! { <div class="warning" role="alert">{format!("Stalled: {m}")}</div> })}
            {move || progress.with(|p| p.forgetting_warning.clone()).map(|m| view! { <div class="warning" role="alert">{format!("Forgetting: {m}")}</div> })}
            {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
            <div class="charts">
                <LineChart title="Loss" series=series(|p| vec![("train".into(), p.loss.clone()), ("validation".into(), p.eval_loss.clone())]) />
                <LineChart title="Learning rate" series=series(|p| vec![("learning rate".into(), p.learning_rate.clone())]) />
                <LineChart title="Gradient norm" series=series(|p| vec![("grad norm".into(), p.grad_norm.clone())]) />
                {move || (!progress.with(|p| p.forgetting.is_empty())).then(|| view! {
                    <LineChart title="Forgetting: KL from the base on general prompts" series=series(|p| vec![("KL (nats a token)".into(), p.forgetting.clone())]) />
                })}
            </div>
            {move || progress.with(|p| p.scores.clone()).map(|s| view! {
                <div class="card evaluation"><h2>"Evaluation of the final adapter"</h2>
                    <dl class="scores">{s.into_iter().map(|(name, value)| view! {
                        <dt>{name}</dt><dd>{format!("{value:.4}")}</dd>
                    }).collect_view()}</dl>
                    {move || evaluation.get().flatten().map(|e| view! {
                        <h3>"Answers, the worst first"</h3>
                        <Table class="samples" headers=&["Prompt", "Reference", "Answer", "ROUGE-L", "BLEU-4", "Exact"]>
                            {e.samples.into_iter().map(|p| {
                                let score = |name: &str| p.scores.as_ref().and_then(|s| s.get(name).copied());
                                let (rouge, bleu, exact) = (score("rouge-l"), score("bleu-4"), score("exact-match"));
                                view! {
                                    <tr>
                                        <td>{p.prompt.clone()}</td>
                                        <td>{p.labels.clone()}</td>
                                        <td>{p.predict.clone()}</td>
                                        <td>{rouge.map(|v| format!("{v:.2}"))}</td>
                                        <td>{bleu.map(|v| format!("{v:.2}"))}</td>
                                        <td>{exact.map(|v| if v > 0.0 { "yes" } else { "no" })}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </Table>
                    })}
                </div>
            })}
            <h2>"Checkpoints"</h2>
            {move || checkpoints.get().and_then(Result::ok).map(|list| view! {
                <Table class="checkpoints" headers=&["Checkpoint", "Training loss", "Validation loss", "Evaluated at step", "Forgetting KL"]>
                    {list.data.into_iter().map(|c| view! {
                        <tr>
                            <td class="mono">{c.name}</td>
                            <td>{c.loss.map(|v| format!("{v:.4}"))}</td>
                            <td>{c.eval_loss.map(|v| format!("{v:.4}"))}</td>
                            <td>{c.eval_step}</td>
                            <td>{c.forgetting_kl.map(|v| format!("{v:.4}"))}</td>
                        </tr>
                    }).collect_view()}
                </Table>
            })}
            <h2>"Log"</h2>
            <ol class="log">
                {move || progress.with(|p| p.log.iter().map(|(kind, message)| view! {
                    <li class=kind.clone()>{message.clone()}</li>
                }).collect_view())}
            </ol>
        </section>
    }
}
