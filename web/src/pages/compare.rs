//! Runs side by side (`/compare/ID,ID,…`): loss curves overlaid, a table of their metrics, and
//! the settings in which they differ.

use glmtune_shared::run_event::RunEventData;
use glmtune_shared::run_log::LogRow;
use std::collections::BTreeSet;

use glmtune_shared::api::{Evaluation, List, Run, RunEvent, ScoreTable};
use leptos::prelude::*;
use leptos_router::components::A;

use crate::api;
use crate::chart::{LineChart, Series};
use crate::pages::ErrorNote;

/// What one run brings to the comparison.
#[derive(Debug, Clone, PartialEq)]
struct Compared {
    run: Run,
    loss: Vec<(f64, f64)>,
    eval_loss: Vec<(f64, f64)>,
    tokens_per_second: Option<f64>,
    scores: Option<ScoreTable>,
}

/// Every event of a run, page by page.
async fn all_events(id: &str) -> Result<Vec<RunEvent>, api::Failure> {
    let mut events = Vec::new();
    loop {
        let after = events.last().map_or(0, |e: &RunEvent| e.id);
        let page: List<RunEvent> =
            api::get(&format!("/api/v1/runs/{id}/events.json?after={after}")).await?;
        if page.data.is_empty() {
            return Ok(events);
        }
        events.extend(page.data);
    }
}

async fn compared(id: String) -> Result<Compared, api::Failure> {
    let run: Run = api::get(&format!("/api/v1/runs/{id}")).await?;
    let mut loss = Vec::new();
    let mut eval_loss = Vec::new();
    let mut tokens_per_second = None;
    for event in all_events(&id).await? {
        match event.data() {
            Some(RunEventData::Log(LogRow::Step(row))) => {
                loss.push((row.step as f64, row.loss));
                tokens_per_second = Some(row.tokens_per_second);
            }
            Some(RunEventData::Log(LogRow::Eval(row))) => {
                eval_loss.push((row.step as f64, row.eval_loss))
            }
            _ => {}
        }
    }
    let scores = api::get::<Evaluation>(&format!("/api/v1/runs/{id}/evaluation"))
        .await
        .ok()
        .map(|e| e.scores);
    Ok(Compared {
        run,
        loss,
        eval_loss,
        tokens_per_second,
        scores,
    })
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.4}"))
}

#[component]
pub fn Compare(ids: Vec<String>) -> impl IntoView {
    let runs = LocalResource::new(move || {
        let ids = ids.clone();
        async move {
            let mut all = Vec::new();
            for id in ids {
                all.push(compared(id).await?);
            }
            Ok::<_, api::Failure>(all)
        }
    });
    view! {
        <section class="compare-runs">
            <h1>"Compare runs"</h1>
            <p><A href="/runs">"← all runs"</A></p>
            {move || match runs.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(Err(error)) => view! { <ErrorNote error=error /> }.into_any(),
                Some(Ok(all)) => view! { <Comparison runs=all /> }.into_any(),
            }}
        </section>
    }
}

#[component]
fn Comparison(runs: Vec<Compared>) -> impl IntoView {
    let curves =
        |pick: fn(&Compared) -> Vec<(f64, f64)>, runs: &[Compared]| -> Signal<Vec<Series>> {
            let series: Vec<Series> = runs.iter().map(|c| (c.run.id.clone(), pick(c))).collect();
            Signal::derive(move || series.clone())
        };
    let train = curves(|c| c.loss.clone(), &runs);
    let validation = curves(|c| c.eval_loss.clone(), &runs);
    let score_names: BTreeSet<String> = runs
        .iter()
        .filter_map(|c| c.scores.as_ref())
        .flat_map(|table| table.keys().cloned())
        .collect();
    let settings: Vec<serde_json::Value> = runs
        .iter()
        .map(|c| serde_json::to_value(&c.run.settings).unwrap_or_default())
        .collect();
    let keys: BTreeSet<String> = settings
        .iter()
        .filter_map(|s| s.as_object())
        .flat_map(|o| o.keys().cloned())
        .collect();
    let (differ, same): (Vec<String>, Vec<String>) = keys
        .into_iter()
        .partition(|k| settings.iter().any(|s| s.get(k) != settings[0].get(k)));
    let setting_rows = move |keys: Vec<String>| {
        let settings = settings.clone();
        keys.into_iter()
            .map(|key| {
                let cells = settings
                    .iter()
                    .map(|s| {
                        let text = s
                            .get(&key)
                            .map_or_else(|| "–".to_owned(), |v| v.to_string());
                        view! { <td class="mono">{text}</td> }
                    })
                    .collect_view();
                view! { <tr><th scope="row">{key}</th>{cells}</tr> }
            })
            .collect_view()
    };
    let ids: Vec<String> = runs.iter().map(|c| c.run.id.clone()).collect();
    let run_headers = move || {
        ids.iter()
            .map(|id| {
                // A link's children outlive this closure: owned, not borrowed.
                let id = id.clone();
                view! { <th><A href=format!("/runs/{id}")>{id}</A></th> }
            })
            .collect_view()
    };
    let metric_rows = runs
        .iter()
        .map(|c| {
            let best_eval = c.eval_loss.iter().map(|p| p.1).reduce(f64::min);
            let scores = score_names
                .iter()
                .map(|name| {
                    let value = c.scores.as_ref().and_then(|s| s.get(name).copied());
                    view! { <td>{number(value)}</td> }
                })
                .collect_view();
            let run_id = c.run.id.clone();
            view! {
                <tr>
                    <td><A href=format!("/runs/{run_id}")>{run_id.clone()}</A></td>
                    <td>{c.run.state.as_str()}</td>
                    <td>{c.run.step}</td>
                    <td>{number(c.loss.last().map(|p| p.1))}</td>
                    <td>{number(best_eval)}</td>
                    <td>{c.tokens_per_second.map_or_else(|| "–".to_owned(), |t| format!("{t:.0}"))}</td>
                    {scores}
                </tr>
            }
        })
        .collect_view();
    let score_headers = score_names
        .iter()
        .map(|n| view! { <th>{n.clone()}</th> })
        .collect_view();
    let differ_count = differ.len();
    view! {
        <div class="charts">
            <LineChart title="Training loss" series=train />
            <LineChart title="Validation loss" series=validation />
        </div>
        <h2>"Metrics"</h2>
        <div class="table-scroll"><table class="metrics">
            <thead><tr>
                <th>"Run"</th><th>"State"</th><th>"Step"</th><th>"Last loss"</th>
                <th>"Best eval loss"</th><th>"Tokens/s"</th>{score_headers}
            </tr></thead>
            <tbody>{metric_rows}</tbody>
        </table></div>
        <h2>{format!("Settings that differ ({differ_count})")}</h2>
        <div class="table-scroll"><table class="config-diff">
            <thead><tr><th>"Setting"</th>{run_headers()}</tr></thead>
            <tbody>{setting_rows(differ)}</tbody>
        </table></div>
        <details>
            <summary>"Settings in common"</summary>
            <div class="table-scroll"><table class="config-same">
                <thead><tr><th>"Setting"</th>{run_headers()}</tr></thead>
                <tbody>{setting_rows(same)}</tbody>
            </table></div>
        </details>
    }
}
