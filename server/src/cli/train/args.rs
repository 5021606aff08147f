//! `glmtune train`'s flags, and the [`TrainJob`] they describe.

use std::path::PathBuf;

use anyhow::bail;
use clap::builder::TypedValueParser;
use clap::Args;
use glmtune_shared::api::{BestMetric, OptimName, Precision, QuantizationBit, RunSettings};
use glmtune_shared::train_job::{defaults, TrainJob};

use crate::cli::data::DatasetArgs;
use crate::cli::model_args::{DTypeArg, DeviceArg};

/// `--num-train-epochs`: a positive, finite number of epochs.
fn parse_epochs(text: &str) -> Result<f64, String> {
    let epochs: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if epochs.is_finite() && epochs > 0.0 {
        Ok(epochs)
    } else {
        Err(format!("{text}: must be a positive number"))
    }
}

/// The flags build a [`TrainJob`] (as `--job FILE` reads one); the run takes only the job.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("teacher").args(["teacher_adapter", "teacher_model"]).multiple(true)))]
pub struct TrainArgs {
    /// Read flags from a TOML or JSON file (keys are flag names); flags typed after it win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run the training job a JSON file holds (the server starts its runs so: the run folder's
    /// job.json); no other flag goes with it.
    #[arg(long, value_name = "FILE", exclusive = true)]
    job: Option<PathBuf>,
    /// Base checkpoint folder (frozen).
    #[arg(long, value_name = "DIR", required_unless_present = "job")]
    model: Option<PathBuf>,
    /// Precision of the frozen base weights; the prefix, its gradients, AdamW and the loss are
    /// always f32. An f16 base trains with dynamic loss scaling (as the Trainer's --fp16).
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
    /// The Trainer's --fp16: an f16 base with dynamic loss scaling (= --dtype f16).
    #[arg(long, conflicts_with_all = ["bf16", "dtype"])]
    fp16: bool,
    /// The Trainer's --bf16: a bf16 base (= --dtype bf16).
    #[arg(long, conflicts_with = "dtype")]
    bf16: bool,
    /// The official --quantization_bit: keep the frozen base's linear layers quantized in memory
    /// (q8_0 / q4_0 blocks), each dequantized only for its own product; a base already quantized
    /// on disk (`glmtune quantize`) trains as it is without this flag.
    #[arg(long, value_parser = clap::value_parser!(u8).range(4..=8))]
    quantization_bit: Option<u8>,
    #[command(flatten)]
    device: DeviceArg,
    /// Training data (JSON lines or a JSON array).
    #[arg(long, value_name = "FILE", required_unless_present = "job")]
    train_file: Option<PathBuf>,
    /// Validation data; its loss is logged every --eval-steps.
    #[arg(long, value_name = "FILE")]
    validation_file: Option<PathBuf>,
    #[command(flatten)]
    dataset: DatasetArgs,
    #[arg(long, default_value_t = defaults::MAX_SOURCE_LENGTH)]
    max_source_length: u64,
    #[arg(long, default_value_t = defaults::MAX_TARGET_LENGTH)]
    max_target_length: u64,
    /// Text put before every prompt (the official --source_prefix); give the same to
    /// `glmtune eval`, and as the system prompt when chatting with the adapter.
    #[arg(long, value_name = "TEXT", default_value = "")]
    source_prefix: String,
    /// Where the log, checkpoints and the final adapter go.
    #[arg(long, value_name = "DIR", required_unless_present = "job")]
    output_dir: Option<PathBuf>,
    /// Prefix length (128 unless given; with --init-adapter it must match the adapter's).
    #[arg(long)]
    pre_seq_len: Option<u64>,
    /// Encode the prefix through a two-layer MLP.
    #[arg(long)]
    prefix_projection: bool,
    /// Start from an existing adapter (incremental tuning on new data).
    #[arg(long, value_name = "DIR")]
    init_adapter: Option<PathBuf>,
    #[arg(long, default_value_t = defaults::PER_DEVICE_TRAIN_BATCH_SIZE)]
    per_device_train_batch_size: u64,
    #[arg(long, default_value_t = defaults::GRADIENT_ACCUMULATION_STEPS)]
    gradient_accumulation_steps: u64,
    /// Sequences per forward/backward (default: the per-device batch size). Only speed and memory
    /// change: `1 × 16` can run as one forward of 16 with the same trajectory.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=RunSettings::MAX_FORWARD_BATCH_SIZE))]
    forward_batch_size: Option<u64>,
    /// Data-parallel ranks: each step's sequences split over N devices from `--device` on (CUDA:
    /// summed with NCCL; CPU: N threads of this process), the same trajectory as one device's.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=RunSettings::MAX_NPROC_PER_NODE))]
    nproc_per_node: Option<u64>,
    /// Recompute each layer in the backward instead of keeping its activations (less memory,
    /// about one more forward of work; the same gradients).
    #[arg(long)]
    gradient_checkpointing: bool,
    #[arg(long, default_value_t = defaults::LEARNING_RATE)]
    learning_rate: f64,
    #[arg(long, default_value_t = defaults::WEIGHT_DECAY)]
    weight_decay: f64,
    /// The Trainer's optimizer (`adamw_hf`: transformers' AdamW; `adamw_torch`: torch's). Default:
    /// the one the model generation's official script uses (adamw_torch for ChatGLM3).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(OptimName::ALL.map(OptimName::as_str))
        .try_map(|name: String| name.parse::<OptimName>()))]
    optim: Option<OptimName>,
    #[arg(long, default_value_t = defaults::WARMUP_STEPS)]
    warmup_steps: u64,
    #[arg(long, default_value_t = defaults::MAX_GRAD_NORM)]
    max_grad_norm: f64,
    /// Optimizer steps; replaces --num-train-epochs.
    #[arg(long, conflicts_with = "num_train_epochs", value_parser = clap::value_parser!(u64).range(1..=RunSettings::MAX_STEPS))]
    max_steps: Option<u64>,
    #[arg(long, default_value_t = defaults::NUM_TRAIN_EPOCHS, value_parser = parse_epochs)]
    num_train_epochs: f64,
    /// Dropout on the prefix keys and values, as the official model (0.1).
    #[arg(long, default_value_t = defaults::PREFIX_DROPOUT)]
    prefix_dropout: f64,
    /// Keep the file order instead of shuffling each epoch.
    #[arg(long)]
    no_shuffle: bool,
    #[arg(long, default_value_t = defaults::SEED)]
    seed: u64,
    #[arg(long, default_value_t = defaults::LOGGING_STEPS)]
    logging_steps: u64,
    #[arg(long, default_value_t = defaults::SAVE_STEPS)]
    save_steps: u64,
    #[arg(long, default_value_t = defaults::EVAL_STEPS)]
    eval_steps: u64,
    /// Stop after N evaluations in a row (every --eval-steps) that do not beat the best
    /// --metric-for-best-model; the best one's checkpoint is kept. Needs --validation-file.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    early_stopping_patience: Option<u64>,
    /// What the best evaluation is: `eval_loss` (lower is better; `loss` names it too), or
    /// `forgetting_kl` (with --forgetting-guard: the checkpoint closest to the base).
    #[arg(long, value_name = "METRIC", value_parser = clap::builder::PossibleValuesParser::new(["eval_loss", "loss", "forgetting_kl"])
        .try_map(|name: String| name.parse::<BestMetric>()))]
    metric_for_best_model: Option<BestMetric>,
    /// Write the best evaluation's prefix as the run's adapter instead of the last step's.
    /// Needs --validation-file.
    #[arg(long)]
    load_best_model_at_end: bool,
    /// At every evaluation, score how far the prefix moves the model from the base on general
    /// prompts (our default set, or --forgetting-probe-file): the KL of the next-token
    /// distributions on the base model's own answers, logged beside the validation loss.
    #[arg(long)]
    forgetting_guard: bool,
    /// The general prompts of the forgetting guard, one a line (`#` comments); implies
    /// --forgetting-guard.
    #[arg(long, value_name = "FILE")]
    forgetting_probe_file: Option<PathBuf>,
    /// Warn when the forgetting guard's KL (nats a token) is over this.
    #[arg(long, value_name = "KL")]
    forgetting_threshold: Option<f64>,
    /// Mix R general examples per training example into training: the base model's own answers
    /// to the general prompts (the default set, or --forgetting-probe-file), so the prefix learns
    /// the domain without unlearning the rest.
    #[arg(long, value_name = "R")]
    replay_ratio: Option<f64>,
    /// Distil the prefix from a teacher with this adapter (on --teacher-model, or on --model
    /// loaded unquantized): the loss becomes the KL of the teacher's next-token distributions
    /// from the student's at every labelled position (say, a tuned adapter's answers taught to a
    /// new prefix on a --quantization-bit 4 base).
    #[arg(long, value_name = "DIR")]
    teacher_adapter: Option<PathBuf>,
    /// The teacher's base folder (default: --model, unquantized).
    #[arg(long, value_name = "DIR")]
    teacher_model: Option<PathBuf>,
    /// Soften both distributions by T (the loss is scaled by T², as Hinton's).
    #[arg(long, value_name = "T", requires = "teacher")]
    distill_temperature: Option<f64>,
    /// Mix in the labels' cross-entropy with this weight (0 to 1).
    #[arg(long, value_name = "W", requires = "teacher")]
    distill_hard_weight: Option<f64>,
    /// Continue from the newest checkpoint-N in --output-dir.
    #[arg(long)]
    resume: bool,
}

impl TrainArgs {
    /// The job these flags describe, or the one `--job` names.
    pub fn into_job(self) -> anyhow::Result<TrainJob> {
        if let Some(path) = &self.job {
            return Ok(TrainJob::read(path)?);
        }
        let (Some(model), Some(train_file), Some(output_dir)) =
            (self.model, self.train_file, self.output_dir)
        else {
            bail!("--model, --train-file and --output-dir are needed (or --job FILE)");
        };
        let precision = match (self.fp16, self.bf16, self.dtype) {
            (true, _, _) | (_, _, DTypeArg::F16) => Precision::Fp16,
            (_, true, _) | (_, _, DTypeArg::Bf16) => Precision::Bf16,
            _ => Precision::F32,
        };
        let quantization_bit = self
            .quantization_bit
            .map(QuantizationBit::try_from)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--quantization-bit: {e}"))?;
        let settings = RunSettings {
            pre_seq_len: self.pre_seq_len,
            prefix_projection: self.prefix_projection.then_some(true),
            learning_rate: Some(self.learning_rate),
            max_steps: self.max_steps,
            num_train_epochs: self.max_steps.is_none().then_some(self.num_train_epochs),
            per_device_train_batch_size: Some(self.per_device_train_batch_size),
            gradient_accumulation_steps: Some(self.gradient_accumulation_steps),
            max_source_length: Some(self.max_source_length),
            max_target_length: Some(self.max_target_length),
            warmup_steps: Some(self.warmup_steps),
            weight_decay: Some(self.weight_decay),
            max_grad_norm: Some(self.max_grad_norm),
            prefix_dropout: Some(self.prefix_dropout),
            seed: Some(self.seed),
            logging_steps: Some(self.logging_steps),
            save_steps: Some(self.save_steps),
            eval_steps: Some(self.eval_steps),
            shuffle: Some(!self.no_shuffle),
            source_prefix: Some(self.source_prefix),
            eval_samples: None,
            forward_batch_size: self.forward_batch_size,
            nproc_per_node: self.nproc_per_node,
            gradient_checkpointing: self.gradient_checkpointing.then_some(true),
            precision: Some(precision),
            optim: self.optim,
            quantization_bit,
            early_stopping_patience: self.early_stopping_patience,
            metric_for_best_model: self.metric_for_best_model,
            load_best_model_at_end: self.load_best_model_at_end.then_some(true),
            forgetting_guard: (self.forgetting_guard || self.forgetting_probe_file.is_some())
                .then_some(true),
            forgetting_threshold: self.forgetting_threshold,
            replay_ratio: self.replay_ratio,
            distill_temperature: self.distill_temperature,
            distill_hard_weight: self.distill_hard_weight,
        };
        settings.check().map_err(|e| anyhow::anyhow!("{e}"))?;
        if (self.early_stopping_patience.is_some()
            || self.load_best_model_at_end
            || settings.forgetting_guard == Some(true))
            && self.validation_file.is_none()
        {
            bail!(
                "--early-stopping-patience, --load-best-model-at-end and --forgetting-guard need \
                 --validation-file: they act at its evaluations"
            );
        }
        Ok(TrainJob {
            model,
            train_file,
            validation_file: self.validation_file,
            dataset: self.dataset.options(),
            skip_invalid: self.dataset.skip_invalid,
            output_dir,
            init_adapter: self.init_adapter,
            probe_file: self.forgetting_probe_file,
            teacher_model: self.teacher_model,
            teacher_adapter: self.teacher_adapter,
            resume: self.resume,
            stop_after_step: None,
            device: self.device.spec.to_string(),
            settings,
        })
    }
}
