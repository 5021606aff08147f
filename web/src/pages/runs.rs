//! Runs: the list, and a new-run form with the server's presets (the official recipe, a quick
//! try, domain templates with a suggested system prompt) and every official flag under "Advanced".

use glmtune_shared::api::{
    CreateRun, Dataset, List, ModelInfo, Preset, QuantizationBit, Run, RunSettings,
};
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_navigate;

use crate::api;
use crate::pages::{loaded, model_options, ErrorNote, Table};

/// A number field of the advanced settings, empty for "the preset's value".
fn parsed<T: std::str::FromStr>(text: &str) -> Option<T> {
    text.trim().parse().ok()
}

#[component]
pub fn Runs() -> impl IntoView {
    let runs = LocalResource::new(|| api::get::<List<Run>>("/api/v1/runs"));
    let models = LocalResource::new(|| api::get::<List<ModelInfo>>("/api/v1/models"));
    let datasets = LocalResource::new(|| api::get::<List<Dataset>>("/api/v1/datasets"));
    let model = RwSignal::new(String::new());
    let train = RwSignal::new(String::new());
    let validation = RwSignal::new(String::new());
    let presets = LocalResource::new(|| api::get::<List<Preset>>("/api/v1/presets"));
    let preset = RwSignal::new("quick".to_owned());
    let system = RwSignal::new(String::new());
    // The chosen preset's settings as JSON: the placeholders of the advanced fields.
    let chosen = move || -> Option<Preset> {
        let name = preset.get();
        presets
            .get()
            .and_then(Result::ok)
            .and_then(|list| list.data.into_iter().find(|p| p.name == name))
    };
    Effect::new(move |_| {
        if let Some(p) = chosen() {
            system.set(p.settings.source_prefix.unwrap_or_default());
        }
    });
    let preset_value = move |field: &str| {
        chosen()
            .and_then(|p| serde_json::to_value(p.settings).ok())
            .and_then(|v| v.get(field).map(|v| v.to_string()))
            .unwrap_or_default()
    };
    let fields: Vec<(&'static str, RwSignal<String>)> = [
        "pre_seq_len",
        "learning_rate",
        "max_steps",
        "num_train_epochs",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "max_source_length",
        "max_target_length",
        "warmup_steps",
        "weight_decay",
        "max_grad_norm",
        "prefix_dropout",
        "seed",
        "logging_steps",
        "save_steps",
        "eval_steps",
        "eval_samples",
        "forward_batch_size",
        "early_stopping_patience",
        "forgetting_threshold",
        "replay_ratio",
    ]
    .into_iter()
    .map(|name| (name, RwSignal::new(String::new())))
    .collect();
    // Memory and speed: the base's precision, the optimizer, per-layer recomputation.
    let precision = RwSignal::new(String::new());
    let optim = RwSignal::new(String::new());
    let quantization_bit = RwSignal::new(String::new());
    let checkpointing = RwSignal::new(false);
    // The best evaluation's prefix as the run's adapter (needs validation data).
    let load_best = RwSignal::new(false);
    // Score evaluations against the base on general prompts (needs validation data).
    let forgetting_guard = RwSignal::new(false);
    let error = RwSignal::new(None::<api::Failure>);
    // Runs ticked for the compare view.
    let picked = RwSignal::new(Vec::<String>::new());
    let values = fields.clone();
    let navigate = use_navigate();
    let compare = {
        let navigate = navigate.clone();
        move |_| {
            let ids = picked.get_untracked().join(",");
            navigate(&format!("/compare/{ids}"), Default::default());
        }
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let value = |name: &str| {
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.get_untracked())
                .unwrap_or_default()
        };
        let settings = RunSettings {
            pre_seq_len: parsed(&value("pre_seq_len")),
            learning_rate: parsed(&value("learning_rate")),
            max_steps: parsed(&value("max_steps")),
            num_train_epochs: parsed(&value("num_train_epochs")),
            per_device_train_batch_size: parsed(&value("per_device_train_batch_size")),
            gradient_accumulation_steps: parsed(&value("gradient_accumulation_steps")),
            max_source_length: parsed(&value("max_source_length")),
            max_target_length: parsed(&value("max_target_length")),
            warmup_steps: parsed(&value("warmup_steps")),
            weight_decay: parsed(&value("weight_decay")),
            max_grad_norm: parsed(&value("max_grad_norm")),
            prefix_dropout: parsed(&value("prefix_dropout")),
            seed: parsed(&value("seed")),
            logging_steps: parsed(&value("logging_steps")),
            save_steps: parsed(&value("save_steps")),
            eval_steps: parsed(&value("eval_steps")),
            eval_samples: parsed(&value("eval_samples")),
            forward_batch_size: parsed(&value("forward_batch_size")),
            early_stopping_patience: parsed(&value("early_stopping_patience")),
            load_best_model_at_end: load_best.get_untracked().then_some(true),
            forgetting_guard: forgetting_guard.get_untracked().then_some(true),
            forgetting_threshold: parsed(&value("forgetting_threshold")),
            replay_ratio: parsed(&value("replay_ratio")),
            gradient_checkpointing: checkpointing.get_untracked().then_some(true),
            precision: serde_json::from_value(serde_json::Value::String(precision.get_untracked()))
                .ok(),
            optim: optim.get_untracked().parse().ok(),
            quantization_bit: quantization_bit
                .get_untracked()
                .parse::<u8>()
                .ok()
                .and_then(|bits| QuantizationBit::try_from(bits).ok()),
            source_prefix: Some(system.get_untracked()),
            ..RunSettings::default()
        };
        let request = CreateRun {
            model: model.get_untracked(),
            train_dataset: train.get_untracked(),
            validation_dataset: Some(validation.get_untracked()).filter(|v| !v.is_empty()),
            preset: Some(preset.get_untracked()),
            settings,
            init_run: None,
        };
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            match api::post::<_, Run>("/api/v1/runs", &request).await {
                Ok(run) => navigate(&format!("/runs/{}", run.id), Default::default()),
                Err(failure) => error.set(Some(failure)),
            }
        });
    };
    let dataset_options = move || {
        datasets.get().and_then(Result::ok).map(|list| {
            list.data
                .into_iter()
                .map(|d| {
                    let label = format!("{} ({} records)", d.name, d.records);
                    view! { <option value=d.id.clone()>{label}</option> }
                })
                .collect_view()
        })
    };
    view! {
        <section>
            <h1>"Runs"</h1>
            <form class="card" on:submit=submit>
                <h2>"New run"</h2>
                <div class="row">
                    <label>"Model"
                        <select name="model" required on:change=move |ev| model.set(event_target_value(&ev))>
                            <option value="">"choose…"</option>
                            {model_options(models)}
                        </select>
                    </label>
                    <label>"Training data"
                        <select name="train" required on:change=move |ev| train.set(event_target_value(&ev))>
                            <option value="">"choose…"</option>
                            {dataset_options}
                        </select>
                    </label>
                    <label>"Validation data"
                        <select name="validation" on:change=move |ev| validation.set(event_target_value(&ev))>
                            <option value="">"none"</option>
                            {dataset_options}
                        </select>
                    </label>
                    <label>"Preset"
                        <select name="preset" on:change=move |ev| preset.set(event_target_value(&ev))>
                            {move || presets.get().and_then(Result::ok).map(|list| list.data.into_iter().map(|p| {
                                let selected = p.name == preset.get_untracked();
                                view! { <option value=p.name.clone() selected=selected>{p.label.clone()}</option> }
                            }).collect_view())}
                        </select>
                    </label>
                </div>
                <p class="muted">{move || chosen().map(|p| p.description)}</p>
                <label>"System prompt, put before every prompt in training and chats (source_prefix)"
                    <textarea name="source_prefix" rows="2" bind:value=system placeholder="none"></textarea>
                </label>
                <details>
                    <summary>"Advanced (empty: the preset's value)"</summary>
                    <div class="grid">
                        {fields.iter().map(|(name, signal)| {
                            let signal = *signal;
                            let field = *name;
                            view! { <label>{field}<input name=field bind:value=signal inputmode="decimal" placeholder=move || preset_value(field) /></label> }
                        }).collect_view()}
                        <label>"precision"
                            <select name="precision" on:change=move |ev| precision.set(event_target_value(&ev))>
                                <option value="">"f32"</option>
                                <option value="bf16">"bf16 base"</option>
                                <option value="fp16">"fp16 base (loss scaling)"</option>
                            </select>
                        </label>
                        <label>"optim"
                            <select name="optim" on:change=move |ev| optim.set(event_target_value(&ev))>
                                <option value="">"the model's official"</option>
                                <option value="adamw_hf">"adamw_hf"</option>
                                <option value="adamw_torch">"adamw_torch"</option>
                            </select>
                        </label>
                        <label>"base weights"
                            <select name="quantization_bit" on:change=move |ev| quantization_bit.set(event_target_value(&ev))>
                                <option value="">"as stored"</option>
                                <option value="8">"8-bit (q8_0)"</option>
                                <option value="4">"4-bit (q4_0)"</option>
                            </select>
                        </label>
                        <label>"gradient checkpointing"
                            <input type="checkbox" name="gradient_checkpointing" bind:checked=checkpointing />
                        </label>
                        <label>"best evaluation as the adapter (load_best_model_at_end)"
                            <input type="checkbox" name="load_best_model_at_end" bind:checked=load_best />
                        </label>
                        <label>"forgetting guard: score evaluations against the base on general prompts"
                            <input type="checkbox" name="forgetting_guard" bind:checked=forgetting_guard />
                        </label>
                    </div>
                </details>
                <button type="submit">"Start run"</button>
                {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
            </form>
            <h2>"All runs"</h2>
            {loaded(runs, move |list| view! {
                    <Table headers=&["", "Run", "Model", "Preset", "State", "Step"]>
                            {list.data.into_iter().map(|r| {
                                let id = r.id.clone();
                                let toggle = move |ev: leptos::ev::Event| {
                                    let on = event_target_checked(&ev);
                                    picked.update(|p| {
                                        p.retain(|x| *x != id);
                                        if on { p.push(id.clone()); }
                                    });
                                };
                                view! {
                                <tr>
                                    <td><input type="checkbox" name="compare_run" aria-label=format!("compare {}", r.id) on:change=toggle /></td>
                                    <td><A href=format!("/runs/{}", r.id)>{r.id.clone()}</A></td>
                                    <td>{r.model.clone()}</td>
                                    <td>{r.settings.source_prefix.clone().filter(|s| !s.is_empty()).map(|s| format!("system: {s}"))}</td>
                                    <td><span class=format!("state {}", r.state.as_str())>{r.state.as_str()}</span></td>
                                    <td>{format!("{} / {}", r.step, r.max_steps.map_or("?".into(), |m| m.to_string()))}</td>
                                </tr>
                            }}).collect_view()}
                        </Table>
                }.into_any())}
            <button name="compare" disabled=move || picked.with(|p| p.len() < 2)
                on:click=compare>
                "Compare selected runs"
            </button>
        </section>
    }
}
