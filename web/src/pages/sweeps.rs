//! Sweeps: the form (a base run as on the runs page, the search space, the search, successive
//! halving, how many trials at once), the list, and a sweep's page: its leaderboard, a scatter
//! plot of each swept setting against the metric, cancel/resume, and "promote" to make a trial's
//! adapter the one the sweep's chat model answers with.

use glmtune_shared::api::{BestMetric, List, RunSettings};
use glmtune_shared::sweep::{
    CreateSweep, Halving, LearningRates, Promote, Search, SearchKind, SearchSpace, Sweep,
    SweepState, SweepTrial,
};
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_navigate;

use crate::api;
use crate::chart::ScatterChart;
use crate::pages::settings_form::{metric_options, parsed, DataPicker, PresetPicker, SettingsForm};
use crate::pages::{loaded, ErrorNote, Table};

/// The numbers of a comma-separated list; `None` names the first entry that is not one.
fn list<T: std::str::FromStr>(field: &str, text: &str) -> Result<Vec<T>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse()
                .map_err(|_| format!("{field}: {t:?} is not a number"))
        })
        .collect()
}

#[component]
pub fn Sweeps() -> impl IntoView {
    let sweeps = LocalResource::new(|| api::get::<List<Sweep>>("/api/v1/sweeps"));
    let data = DataPicker::new();
    let presets = PresetPicker::new();
    let form = SettingsForm::new();
    // The space: comma-separated values; an empty field is not swept.
    let space_fields = [
        "learning_rate",
        "learning_rate_min",
        "learning_rate_max",
        "learning_rate_points",
        "pre_seq_len",
        "max_steps",
        "max_source_length",
        "max_target_length",
    ]
    .map(|name| (name, RwSignal::new(String::new())));
    let prefix_projection = RwSignal::new(false);
    let source_prefixes = RwSignal::new(String::new());
    let (kind, trials, seed) = (
        RwSignal::new("grid".to_owned()),
        RwSignal::new("16".to_owned()),
        RwSignal::new("0".to_owned()),
    );
    let (rungs, eta, parallelism) = (
        RwSignal::new(String::new()),
        RwSignal::new("2".to_owned()),
        RwSignal::new("1".to_owned()),
    );
    let metric = RwSignal::new(BestMetric::EvalLoss.as_str().to_owned());
    let error = RwSignal::new(None::<api::Failure>);
    let navigate = use_navigate();
    let values = form.clone();
    let build = move || -> Result<CreateSweep, String> {
        let space_value = |name: &str| {
            space_fields
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.get_untracked())
                .unwrap_or_default()
        };
        let (min, max) = (
            parsed::<f64>(&space_value("learning_rate_min")),
            parsed::<f64>(&space_value("learning_rate_max")),
        );
        let learning_rate = match (min, max) {
            (Some(min), Some(max)) => Some(LearningRates::LogRange {
                min,
                max,
                grid_points: parsed(&space_value("learning_rate_points")).unwrap_or(3),
            }),
            _ => Some(LearningRates::Values(list(
                "learning_rate",
                &space_value("learning_rate"),
            )?))
            .filter(|v| !matches!(v, LearningRates::Values(v) if v.is_empty())),
        };
        let space = SearchSpace {
            learning_rate,
            pre_seq_len: list("pre_seq_len", &space_value("pre_seq_len"))?,
            prefix_projection: if prefix_projection.get_untracked() {
                vec![false, true]
            } else {
                Vec::new()
            },
            max_steps: list("max_steps", &space_value("max_steps"))?,
            max_source_length: list("max_source_length", &space_value("max_source_length"))?,
            max_target_length: list("max_target_length", &space_value("max_target_length"))?,
            source_prefix: source_prefixes
                .get_untracked()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        let rungs: Vec<u64> = list("halving rungs", &rungs.get_untracked())?;
        Ok(CreateSweep {
            model: data.model.get_untracked(),
            train_dataset: data.train.get_untracked(),
            validation_dataset: data.validation.get_untracked(),
            preset: Some(presets.name()),
            settings: values.settings(presets.system_prompt()),
            space,
            search: Search {
                kind: if kind.get_untracked() == "random" {
                    SearchKind::Random
                } else {
                    SearchKind::Grid
                },
                trials: parsed(&trials.get_untracked()).ok_or("trials: give a number")?,
                seed: parsed(&seed.get_untracked()).unwrap_or(0),
            },
            halving: (!rungs.is_empty()).then(|| Halving {
                rungs,
                eta: parsed(&eta.get_untracked()).unwrap_or(2),
            }),
            metric: metric
                .get_untracked()
                .parse()
                .unwrap_or(BestMetric::EvalLoss),
            parallelism: parsed(&parallelism.get_untracked())
                .ok_or("parallelism: give a number")?,
        })
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let request = match build() {
            Ok(request) => request,
            Err(message) => return error.set(Some(api::Failure::local(message))),
        };
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            match api::post::<_, Sweep>("/api/v1/sweeps", &request).await {
                Ok(sweep) => navigate(&format!("/sweeps/{}", sweep.id), Default::default()),
                Err(failure) => error.set(Some(failure)),
            }
        });
    };
    view! {
        <section>
            <h1>"Sweeps"</h1>
            <form class="card" on:submit=submit>
                <h2>"New sweep"</h2>
                <p class="muted">"Each trial is a run in the queue, on the base settings with the swept values; trials are ranked by the chosen metric at their evaluations."</p>
                <div class="row">
                    {data.view(true)}
                    {presets.select()}
                </div>
                {presets.system_prompt_field()}
                {form.view(presets.placeholder())}
                <h3>"Search space (comma-separated values; empty: not swept)"</h3>
                <div class="grid">
                    {space_fields.iter().map(|(name, signal)| {
                        let (signal, field) = (*signal, *name);
                        let field_name = format!("space_{field}");
                        view! { <label>{field}<input name=field_name bind:value=signal inputmode="decimal" /></label> }
                    }).collect_view()}
                    <label>"prefix_projection: try both"
                        <input type="checkbox" name="space_prefix_projection" bind:checked=prefix_projection />
                    </label>
                </div>
                <label>"System prompts to try (source_prefix), one a line"
                    <textarea name="space_source_prefix" rows="2" bind:value=source_prefixes></textarea>
                </label>
                <div class="row">
                    <label>"Search"
                        <select name="search_kind" on:change=move |ev| kind.set(event_target_value(&ev))>
                            <option value="grid">"grid"</option>
                            <option value="random">"random"</option>
                        </select>
                    </label>
                    <label>"Trials (budget)"<input name="trials" bind:value=trials inputmode="numeric" /></label>
                    <label>"Seed"<input name="seed" bind:value=seed inputmode="numeric" /></label>
                    <label>"At once"<input name="parallelism" bind:value=parallelism inputmode="numeric" /></label>
                    <label>"Halving rungs (steps)"<input name="rungs" bind:value=rungs placeholder="none" /></label>
                    <label>"Keep 1 in"<input name="eta" bind:value=eta inputmode="numeric" /></label>
                    <label>"Ranked by"
                        <select name="sweep_metric" on:change=move |ev| metric.set(event_target_value(&ev))>
                            {metric_options()}
                        </select>
                    </label>
                </div>
                <button type="submit">"Start sweep"</button>
                {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
            </form>
            <h2>"All sweeps"</h2>
            {loaded(sweeps, move |list| view! {
                <Table headers=&["Sweep", "Model", "State", "Trials", "Best"]>
                    {list.data.into_iter().map(|s| {
                        let best = s.trials.first().and_then(|t| t.metric).map(|m| format!("{m:.4}"));
                        view! {
                            <tr>
                                <td><A href=format!("/sweeps/{}", s.id)>{s.id.clone()}</A></td>
                                <td>{s.request.model.clone()}</td>
                                <td><span class=format!("state {}", s.state.as_str())>{s.state.as_str()}</span></td>
                                <td>{s.trials.len()}</td>
                                <td>{best}</td>
                            </tr>
                        }
                    }).collect_view()}
                </Table>
            }.into_any())}
        </section>
    }
}

/// A swept setting: its name, its value in a trial's settings, whether it reads on a log scale.
type Dimension = (&'static str, fn(&RunSettings) -> Option<f64>, bool);

const DIMENSIONS: [Dimension; 5] = [
    ("learning_rate", |s| s.learning_rate, true),
    ("pre_seq_len", |s| s.pre_seq_len.map(|v| v as f64), false),
    ("max_steps", |s| s.max_steps.map(|v| v as f64), false),
    (
        "max_source_length",
        |s| s.max_source_length.map(|v| v as f64),
        false,
    ),
    (
        "max_target_length",
        |s| s.max_target_length.map(|v| v as f64),
        false,
    ),
];

/// The settings that differ between the trials.
fn swept(trials: &[SweepTrial]) -> Vec<Dimension> {
    DIMENSIONS
        .into_iter()
        .filter(|(_, of, _)| {
            let mut values = trials.iter().filter_map(|t| of(&t.settings));
            values
                .next()
                .is_some_and(|first| values.any(|v| v != first))
        })
        .collect()
}

#[component]
pub fn SweepPage(id: String) -> impl IntoView {
    let path = format!("/api/v1/sweeps/{id}");
    let sweep = LocalResource::new(move || {
        let path = path.clone();
        async move { api::get::<Sweep>(&path).await }
    });
    // Follow a running sweep.
    if let Ok(handle) = set_interval_with_handle(
        move || {
            let running = sweep
                .get_untracked()
                .and_then(Result::ok)
                .is_some_and(|s| s.state == SweepState::Running);
            if running {
                sweep.refetch();
            }
        },
        std::time::Duration::from_secs(2),
    ) {
        on_cleanup(move || handle.clear());
    }
    let error = RwSignal::new(None::<api::Failure>);
    let act = move |id: String, action: &'static str, trial: Option<i64>| {
        move |_| {
            let id = id.clone();
            leptos::task::spawn_local(async move {
                let path = format!("/api/v1/sweeps/{id}/{action}");
                match api::post::<_, Sweep>(&path, &Promote { trial }).await {
                    Ok(_) => {
                        error.set(None);
                        sweep.refetch();
                    }
                    Err(failure) => error.set(Some(failure)),
                }
            });
        }
    };
    view! {
        <section>
            {loaded(sweep, move |s| {
                let metric = s.request.metric.as_str();
                let dimensions = swept(&s.trials);
                let running = s.state == SweepState::Running;
                let resumable = matches!(s.state, SweepState::Cancelled | SweepState::Failed);
                let promoted = s.promoted_run.clone();
                let plots = dimensions.iter().map(|&(name, of, log)| {
                    let points = s.trials.iter().filter_map(|t| {
                        Some((of(&t.settings)?, t.metric?, format!("#{}", t.trial)))
                    }).collect::<Vec<_>>();
                    view! { <ScatterChart title=format!("{name} vs {metric}") x_desc=name y_desc=metric log_x=log points=points /> }
                }).collect_view();
                view! {
                    <h1>{format!("Sweep {}", s.id)}</h1>
                    <p>
                        <span class=format!("state {}", s.state.as_str())>{s.state.as_str()}</span>
                        " · chat model "<code>{s.chat_model.clone()}</code>
                        {match &promoted {
                            Some(run) => format!(" · answers with {run}"),
                            None => " · no trial promoted yet".to_owned(),
                        }}
                    </p>
                    {s.error.clone().map(|e| view! { <p class="error">{e}</p> })}
                    <div class="row">
                        <button name="cancel_sweep" hidden=!running on:click=act(s.id.clone(), "cancel", None)>"Cancel"</button>
                        <button name="resume_sweep" hidden=!resumable on:click=act(s.id.clone(), "resume", None)>"Resume"</button>
                        <button name="promote_best" on:click=act(s.id.clone(), "promote", None)>"Promote the best"</button>
                    </div>
                    {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
                    <h2>{format!("Leaderboard (best {metric} first)")}</h2>
                    <Table class="leaderboard" headers=&["Rank", "Trial", "Run", "State", "Metric", "At step", "Steps", "Tokens", "Settings", ""]>
                        {s.trials.clone().into_iter().enumerate().map(|(rank, t)| {
                            let (sweep_id, dimensions) = (s.id.clone(), dimensions.clone());
                            let state = match t.stopped_at {
                                Some(rung) => format!("stopped at step {rung}"),
                                None => t.run_state.as_str().to_owned(),
                            };
                            let settings = dimensions.iter().filter_map(|(name, of, _)| {
                                of(&t.settings).map(|v| format!("{name} {v}"))
                            }).collect::<Vec<_>>().join(", ");
                            let is_promoted = promoted.as_deref() == Some(t.run_id.as_str());
                            let (trial, run_id, metric, metric_step) = (t.trial, t.run_id.clone(), t.metric, t.metric_step);
                            let can_promote = t.run_state == glmtune_shared::api::RunState::Succeeded && !is_promoted;
                            view! {
                                <tr class:promoted=is_promoted>
                                    <td>{rank + 1}</td>
                                    <td>{format!("#{trial}")}</td>
                                    <td><A href=format!("/runs/{run_id}")>{run_id.clone()}</A></td>
                                    <td><span class=format!("state {}", t.run_state.as_str())>{state}</span></td>
                                    <td>{metric.map(|m| format!("{m:.4}"))}</td>
                                    <td>{metric_step}</td>
                                    <td>{t.steps}</td>
                                    <td>{t.trained_tokens}</td>
                                    <td>{settings}</td>
                                    <td>
                                        {is_promoted.then_some("promoted")}
                                        <button name="promote" hidden=!can_promote on:click=act(sweep_id, "promote", Some(trial))>"Promote"</button>
                                    </td>
                                </tr>
                            }
                        }).collect_view()}
                    </Table>
                    <div class="charts">{plots}</div>
                }.into_any()
            })}
        </section>
    }
}
