//! A run's hyperparameters as the dashboard, the API, a training job and `glmtune train`'s flags
//! all give them, with the checks every one of those goes through.

use serde::{Deserialize, Serialize};

/// Hyper-parameters of a run: the flags of `glmtune train`. Unset ones take the preset's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_seq_len: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_projection: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_train_epochs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_device_train_batch_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_accumulation_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_source_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_target_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_dropout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shuffle: Option<bool>,
    /// Text put before every prompt in training and evaluation (the official `--source_prefix`);
    /// chats with the run's adapter use it as their system prompt unless given another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_prefix: Option<String>,
    /// Validation records answered for BLEU/ROUGE after training (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_samples: Option<u64>,
    /// Sequences per forward/backward (`--forward-batch-size`): speed and memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_batch_size: Option<u64>,
    /// Recompute each layer in the backward (`--gradient-checkpointing`): less memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_checkpointing: Option<bool>,
    /// Data-parallel ranks (`--nproc-per-node`, torchrun's name in THUDM's scripts): each step's
    /// sequences split over this many devices from the run's device on (CUDA: NCCL; CPU: threads
    /// of one process), the gradients summed before the update; the trajectory is one process's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nproc_per_node: Option<u64>,
    /// The frozen base's precision (`--bf16` / `--fp16`); the prefix always trains in f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// The Trainer's optimizer (`--optim`); unset: the model generation's official one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optim: Option<OptimName>,
    /// The frozen base's linear layers kept quantized in memory (`--quantization-bit 4|8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_bit: Option<QuantizationBit>,
    /// Stop after this many evaluations in a row without a better `metric_for_best_model`
    /// (`--early-stopping-patience`, the Trainer's `EarlyStoppingCallback`); needs validation data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping_patience: Option<u64>,
    /// What "better" means for early stopping and the best checkpoint (`--metric-for-best-model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_for_best_model: Option<BestMetric>,
    /// Make the run's adapter the best evaluated checkpoint's rather than the last step's
    /// (`--load-best-model-at-end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_best_model_at_end: Option<bool>,
    /// Score every evaluation against the base model on general prompts (`--forgetting-guard`):
    /// the KL divergence of the next-token distributions on the base model's own answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgetting_guard: Option<bool>,
    /// The KL (nats a token) above which an evaluation warns that the prefix is making the model
    /// forget (`--forgetting-threshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgetting_threshold: Option<f64>,
    /// General examples mixed into training, this many per training example
    /// (`--replay-ratio`): the base model's own answers to the general prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_ratio: Option<f64>,
    /// With a teacher: the temperature both next-token distributions are softened by
    /// (`--distill-temperature`, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill_temperature: Option<f64>,
    /// With a teacher: the weight of the labels' own cross-entropy beside the teacher's KL
    /// (`--distill-hard-weight`, 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill_hard_weight: Option<f64>,
}

/// A metric the best checkpoint is chosen by: those computed at every evaluation during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BestMetric {
    /// The validation loss (lower is better); the Trainer's `loss` names it too.
    #[serde(rename = "eval_loss", alias = "loss")]
    EvalLoss,
    /// The forgetting guard's KL from the base on general prompts (lower is better; needs
    /// `forgetting_guard`): the checkpoint that stayed closest to the base.
    #[serde(rename = "forgetting_kl")]
    ForgettingKl,
}

impl BestMetric {
    pub const ALL: [BestMetric; 2] = [BestMetric::EvalLoss, BestMetric::ForgettingKl];

    pub fn as_str(self) -> &'static str {
        match self {
            BestMetric::EvalLoss => "eval_loss",
            BestMetric::ForgettingKl => "forgetting_kl",
        }
    }

    /// Refuses settings whose evaluations do not compute this metric, naming the field.
    pub fn check_scored(self, settings: &RunSettings) -> Result<(), String> {
        if self == BestMetric::ForgettingKl && settings.forgetting_guard != Some(true) {
            return Err(
                "settings.forgetting_guard: the metric forgetting_kl is computed by the forgetting \
                 guard; turn it on"
                    .into(),
            );
        }
        Ok(())
    }

    /// This metric in an evaluation row (`None`: the row lacks it).
    pub fn of(self, row: &crate::run_log::EvalRow) -> Option<f64> {
        match self {
            BestMetric::EvalLoss => Some(row.eval_loss),
            BestMetric::ForgettingKl => row.forgetting_kl,
        }
    }

    /// Whether `value` is better than `best`.
    pub fn better(self, value: f64, best: f64) -> bool {
        match self {
            // Both lower is better.
            BestMetric::EvalLoss | BestMetric::ForgettingKl => value < best,
        }
    }

    /// The better of `a` and `b` first (for sorting best first; equal when neither is better).
    pub fn order(self, a: f64, b: f64) -> std::cmp::Ordering {
        if self.better(a, b) {
            std::cmp::Ordering::Less
        } else if self.better(b, a) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    }
}

impl std::str::FromStr for BestMetric {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "eval_loss" | "loss" => Ok(BestMetric::EvalLoss),
            "forgetting_kl" => Ok(BestMetric::ForgettingKl),
            _ => Err(format!(
                "unknown metric {text:?}: the best model is chosen by a metric every evaluation \
                 during training computes, eval_loss or forgetting_kl (with the forgetting guard)"
            )),
        }
    }
}

impl RunSettings {
    /// The most optimizer steps a run may take: far beyond any real run, and small enough that
    /// step counts never wrap where they are stored as signed numbers (the server's database) or
    /// multiplied into token counts.
    pub const MAX_STEPS: u64 = 1_000_000_000;
    /// The most sequences one forward may take.
    pub const MAX_FORWARD_BATCH_SIZE: u64 = 4096;
    pub const MAX_NPROC_PER_NODE: u64 = 64;

    /// Refuses values no run can use, naming the field (`settings.max_steps: …`).
    pub fn check(&self) -> Result<(), String> {
        let s = self;
        if s.max_steps.is_some_and(|v| v > Self::MAX_STEPS) {
            return Err(format!(
                "settings.max_steps: must be at most {}",
                Self::MAX_STEPS
            ));
        }
        if s.forward_batch_size
            .is_some_and(|v| v > Self::MAX_FORWARD_BATCH_SIZE)
        {
            return Err(format!(
                "settings.forward_batch_size: must be at most {}",
                Self::MAX_FORWARD_BATCH_SIZE
            ));
        }
        if s.nproc_per_node
            .is_some_and(|v| v > Self::MAX_NPROC_PER_NODE)
        {
            return Err(format!(
                "settings.nproc_per_node: must be at most {}",
                Self::MAX_NPROC_PER_NODE
            ));
        }
        for (field, value) in [
            ("weight_decay", s.weight_decay),
            ("max_grad_norm", s.max_grad_norm),
            ("forgetting_threshold", s.forgetting_threshold),
            ("replay_ratio", s.replay_ratio),
        ] {
            if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(format!("settings.{field}: must be a number at least 0"));
            }
        }
        let positive = [
            ("forward_batch_size", s.forward_batch_size),
            ("nproc_per_node", s.nproc_per_node),
            ("pre_seq_len", s.pre_seq_len),
            ("max_steps", s.max_steps),
            ("per_device_train_batch_size", s.per_device_train_batch_size),
            ("gradient_accumulation_steps", s.gradient_accumulation_steps),
            ("logging_steps", s.logging_steps),
            ("save_steps", s.save_steps),
            ("eval_steps", s.eval_steps),
            ("early_stopping_patience", s.early_stopping_patience),
        ];
        for (field, value) in positive {
            if value == Some(0) {
                return Err(format!("settings.{field}: must be at least 1"));
            }
        }
        for (field, value) in [
            ("max_source_length", s.max_source_length),
            ("max_target_length", s.max_target_length),
        ] {
            if value.is_some_and(|v| !(3..=8192).contains(&v)) {
                return Err(format!("settings.{field}: must be between 3 and 8192"));
            }
        }
        if s.learning_rate.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
            return Err("settings.learning_rate: must be a positive number".into());
        }
        if s.num_train_epochs
            .is_some_and(|v| !(v.is_finite() && v > 0.0))
        {
            return Err("settings.num_train_epochs: must be a positive number".into());
        }
        if s.prefix_dropout.is_some_and(|v| !(0.0..1.0).contains(&v)) {
            return Err("settings.prefix_dropout: must be in [0, 1)".into());
        }
        if s.distill_temperature
            .is_some_and(|v| !(v.is_finite() && v > 0.0))
        {
            return Err("settings.distill_temperature: must be a positive number".into());
        }
        if s.distill_hard_weight
            .is_some_and(|v| !(0.0..=1.0).contains(&v))
        {
            return Err("settings.distill_hard_weight: must be in [0, 1]".into());
        }
        if let Some(metric) = s.metric_for_best_model {
            metric.check_scored(s)?;
        }
        Ok(())
    }
}

/// THUDM's `--quantization_bit`: 4 or 8 bits a weight (q4_0 / q8_0 blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "u8", into = "u8")]
pub enum QuantizationBit {
    Four,
    Eight,
}

impl TryFrom<u8> for QuantizationBit {
    type Error = String;

    fn try_from(bits: u8) -> Result<Self, Self::Error> {
        match bits {
            4 => Ok(QuantizationBit::Four),
            8 => Ok(QuantizationBit::Eight),
            _ => Err(format!("quantization_bit must be 4 or 8, not {bits}")),
        }
    }
}

impl From<QuantizationBit> for u8 {
    fn from(bits: QuantizationBit) -> u8 {
        match bits {
            QuantizationBit::Four => 4,
            QuantizationBit::Eight => 8,
        }
    }
}

/// The precision of a run's frozen base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    Bf16,
    /// f16 with dynamic loss scaling (the Trainer's `--fp16`).
    Fp16,
}

/// An optimizer by the Trainer's `--optim` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OptimName {
    #[serde(rename = "adamw_hf")]
    AdamwHf,
    #[serde(rename = "adamw_torch")]
    AdamwTorch,
}

impl OptimName {
    pub const ALL: [OptimName; 2] = [OptimName::AdamwHf, OptimName::AdamwTorch];

    pub fn as_str(self) -> &'static str {
        match self {
            OptimName::AdamwHf => "adamw_hf",
            OptimName::AdamwTorch => "adamw_torch",
        }
    }
}

impl std::str::FromStr for OptimName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        OptimName::ALL
            .into_iter()
            .find(|o| o.as_str() == text)
            .ok_or_else(|| format!("unknown optimizer {text:?} (adamw_hf, adamw_torch)"))
    }
}
