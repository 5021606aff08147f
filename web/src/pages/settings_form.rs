//! The settings of a run as form fields: the model and data, the preset, the system prompt, and
//! every official flag
//! under "Advanced", empty for "the preset's value". The new-run form and the sweep form (its base
//! run) both use them.

use glmtune_shared::api::{
    BestMetric, Dataset, List, ModelInfo, Preset, QuantizationBit, RunSettings,
};
use leptos::prelude::*;

use crate::api;
use crate::pages::{dataset_options, model_options};

/// A number field, empty (or not a number) for "the preset's value".
pub fn parsed<T: std::str::FromStr>(text: &str) -> Option<T> {
    text.trim().parse().ok()
}

/// The fields' signals.
#[derive(Clone)]
pub struct SettingsForm {
    fields: Vec<(&'static str, RwSignal<String>)>,
    /// Memory and speed: the base's precision, the optimizer, per-layer recomputation.
    precision: RwSignal<String>,
    optim: RwSignal<String>,
    quantization_bit: RwSignal<String>,
    checkpointing: RwSignal<bool>,
    /// The best evaluation's prefix as the run's adapter (needs validation data).
    load_best: RwSignal<bool>,
    /// Score evaluations against the base on general prompts (needs validation data).
    forgetting_guard: RwSignal<bool>,
    /// What "best" means for early stopping and the best checkpoint (empty: eval_loss).
    metric: RwSignal<String>,
}

impl SettingsForm {
    pub fn new() -> Self {
        let fields = [
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
        SettingsForm {
            fields,
            precision: RwSignal::new(String::new()),
            optim: RwSignal::new(String::new()),
            quantization_bit: RwSignal::new(String::new()),
            checkpointing: RwSignal::new(false),
            load_best: RwSignal::new(false),
            forgetting_guard: RwSignal::new(false),
            metric: RwSignal::new(String::new()),
        }
    }

    fn value(&self, name: &str) -> String {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.get_untracked())
            .unwrap_or_default()
    }

    /// The settings the fields give, with `source_prefix`.
    pub fn settings(&self, source_prefix: String) -> RunSettings {
        let value = |name: &str| self.value(name);
        RunSettings {
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
            // Unset is eval_loss.
            metric_for_best_model: self
                .metric
                .get_untracked()
                .parse()
                .ok()
                .filter(|m| *m != BestMetric::EvalLoss),
            load_best_model_at_end: self.load_best.get_untracked().then_some(true),
            forgetting_guard: self.forgetting_guard.get_untracked().then_some(true),
            forgetting_threshold: parsed(&value("forgetting_threshold")),
            replay_ratio: parsed(&value("replay_ratio")),
            gradient_checkpointing: self.checkpointing.get_untracked().then_some(true),
            precision: serde_json::from_value(serde_json::Value::String(
                self.precision.get_untracked(),
            ))
            .ok(),
            optim: self.optim.get_untracked().parse().ok(),
            quantization_bit: self
                .quantization_bit
                .get_untracked()
                .parse::<u8>()
                .ok()
                .and_then(|bits| QuantizationBit::try_from(bits).ok()),
            source_prefix: Some(source_prefix),
            ..RunSettings::default()
        }
    }

    /// The "Advanced" block; `placeholder` gives a field's preset value.
    pub fn view(
        &self,
        placeholder: impl Fn(&str) -> String + Copy + Send + Sync + 'static,
    ) -> impl IntoView {
        let (precision, optim, quantization_bit) =
            (self.precision, self.optim, self.quantization_bit);
        let (checkpointing, load_best, forgetting_guard) =
            (self.checkpointing, self.load_best, self.forgetting_guard);
        let metric = self.metric;
        view! {
            <details>
                <summary>"Advanced (empty: the preset's value)"</summary>
                <div class="grid">
                    {self.fields.iter().map(|(name, signal)| {
                        let signal = *signal;
                        let field = *name;
                        view! { <label>{field}<input name=field bind:value=signal inputmode="decimal" placeholder=move || placeholder(field) /></label> }
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
                    <label>"metric_for_best_model"
                        <select name="metric_for_best_model" on:change=move |ev| metric.set(event_target_value(&ev))>
                            {metric_options()}
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
        }
    }
}

/// The preset chooser (the server's presets) and the system prompt it suggests.
#[derive(Clone, Copy)]
pub struct PresetPicker {
    presets: LocalResource<Result<List<Preset>, api::Failure>>,
    preset: RwSignal<String>,
    system: RwSignal<String>,
}

impl PresetPicker {
    pub fn new() -> Self {
        let picker = PresetPicker {
            presets: LocalResource::new(|| api::get::<List<Preset>>("/api/v1/presets")),
            preset: RwSignal::new("quick".to_owned()),
            system: RwSignal::new(String::new()),
        };
        Effect::new(move |_| {
            if let Some(p) = picker.chosen() {
                picker
                    .system
                    .set(p.settings.source_prefix.unwrap_or_default());
            }
        });
        picker
    }

    fn chosen(self) -> Option<Preset> {
        let name = self.preset.get();
        self.presets
            .get()
            .and_then(Result::ok)
            .and_then(|list| list.data.into_iter().find(|p| p.name == name))
    }

    pub fn name(self) -> String {
        self.preset.get_untracked()
    }

    pub fn system_prompt(self) -> String {
        self.system.get_untracked()
    }

    /// A field's value in the chosen preset, as the placeholder of its input.
    pub fn placeholder(self) -> impl Fn(&str) -> String + Copy + Send + Sync + 'static {
        move |field: &str| {
            self.chosen()
                .and_then(|p| serde_json::to_value(p.settings).ok())
                .and_then(|v| v.get(field).map(|v| v.to_string()))
                .unwrap_or_default()
        }
    }

    pub fn select(self) -> impl IntoView {
        let (presets, preset) = (self.presets, self.preset);
        view! {
            <label>"Preset"
                <select name="preset" on:change=move |ev| preset.set(event_target_value(&ev))>
                    {move || presets.get().and_then(Result::ok).map(|list| list.data.into_iter().map(|p| {
                        let selected = p.name == preset.get_untracked();
                        view! { <option value=p.name.clone() selected=selected>{p.label.clone()}</option> }
                    }).collect_view())}
                </select>
            </label>
        }
    }

    /// The preset's description and the system prompt field.
    pub fn system_prompt_field(self) -> impl IntoView {
        let system = self.system;
        view! {
            <p class="muted">{move || self.chosen().map(|p| p.description)}</p>
            <label>"System prompt, put before every prompt in training and chats (source_prefix)"
                <textarea name="source_prefix" rows="2" bind:value=system placeholder="none"></textarea>
            </label>
        }
    }
}

/// The base model and the training and validation datasets.
#[derive(Clone, Copy)]
pub struct DataPicker {
    pub model: RwSignal<String>,
    pub train: RwSignal<String>,
    /// Empty: none.
    pub validation: RwSignal<String>,
}

impl DataPicker {
    pub fn new() -> Self {
        DataPicker {
            model: RwSignal::new(String::new()),
            train: RwSignal::new(String::new()),
            validation: RwSignal::new(String::new()),
        }
    }

    /// The three selects; a sweep needs validation data, a run may go without.
    pub fn view(self, validation_required: bool) -> impl IntoView {
        let models = LocalResource::new(|| api::get::<List<ModelInfo>>("/api/v1/models"));
        let datasets = LocalResource::new(|| api::get::<List<Dataset>>("/api/v1/datasets"));
        let options = dataset_options(datasets);
        let DataPicker {
            model,
            train,
            validation,
        } = self;
        let no_validation = if validation_required {
            "choose…"
        } else {
            "none"
        };
        view! {
            <label>"Model"
                <select name="model" required on:change=move |ev| model.set(event_target_value(&ev))>
                    <option value="">"choose…"</option>
                    {model_options(models)}
                </select>
            </label>
            <label>"Training data"
                <select name="train" required on:change=move |ev| train.set(event_target_value(&ev))>
                    <option value="">"choose…"</option>
                    {options}
                </select>
            </label>
            <label>"Validation data"
                <select name="validation" required=validation_required on:change=move |ev| validation.set(event_target_value(&ev))>
                    <option value="">{no_validation}</option>
                    {options}
                </select>
            </label>
        }
    }
}

/// The `<option>`s of the metrics a best checkpoint (or a sweep's ranking) is chosen by.
pub fn metric_options() -> impl IntoView {
    BestMetric::ALL
        .map(|m| view! { <option value=m.as_str()>{m.as_str()}</option> })
        .collect_view()
}
