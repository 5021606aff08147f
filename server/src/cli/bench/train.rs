//! `glmtune bench train`: P-Tuning v2 training speed and peak memory at a model's real shape, with
//! random weights drawn in the target precision (no checkpoint needed), as one JSON object.

use std::ops::ControlFlow;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::quantized::GgmlDType;
use candle_core::DType;
use clap::Args;
use glmtune::memory::PeakMemory;
use glmtune_engine::config::shapes;
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::train::{AdamWConfig, Example, LossScaling, TrainOptions, Trainer};
use glmtune_engine::{ChatGlmConfig, PrefixConfig};
use serde::Serialize;

use crate::cli::model_args::DeviceArg;

#[derive(Debug, Args)]
pub struct TrainBenchArgs {
    /// `chatglm-6b`, `chatglm2-6b`, `chatglm3-6b`, or `h{hidden}l{layers}` (a smaller ChatGLM-6B,
    /// e.g. h1024l12).
    #[arg(long)]
    config: String,
    /// Draw the weights at random (the only source for now: no checkpoint is read).
    #[arg(long, required = true)]
    random_weights: bool,
    #[arg(long, default_value_t = 128)]
    pre_seq_len: usize,
    #[arg(long)]
    prefix_projection: bool,
    #[arg(long, default_value_t = 64)]
    max_source_length: usize,
    #[arg(long, default_value_t = 64)]
    max_target_length: usize,
    #[arg(long, default_value_t = 1)]
    per_device_train_batch_size: usize,
    #[arg(long, default_value_t = 16)]
    gradient_accumulation_steps: usize,
    /// Sequences per forward/backward (default: the per-device batch size).
    #[arg(long)]
    forward_batch_size: Option<usize>,
    #[arg(long, conflicts_with = "bf16")]
    fp16: bool,
    #[arg(long)]
    bf16: bool,
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Keep the linear layers quantized (q8_0 / q4_0), as `train --quantization-bit`.
    #[arg(long, value_parser = ["4", "8"])]
    quantization_bit: Option<String>,
    /// Optimizer steps to time (the first is reported apart when there are more).
    #[arg(long, default_value_t = 2)]
    steps: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    device: DeviceArg,
}

/// What `bench train` prints.
#[derive(Debug, Serialize)]
struct TrainBenchReport {
    config: String,
    device: String,
    dtype: String,
    /// `q8_0` / `q4_0` linear layers, or `dense`.
    linear_layers: String,
    parameters: u64,
    pre_seq_len: usize,
    sequence_tokens: usize,
    batch: String,
    forward_batch_size: usize,
    gradient_checkpointing: bool,
    steps: u64,
    /// Sequence tokens (prefix excluded) per second over the timed steps.
    tokens_per_second: f64,
    seconds_per_step: f64,
    /// The first step alone (allocations and warm-up), when more than one ran.
    first_step_seconds: f64,
    /// Seconds to draw the random weights.
    setup_seconds: f64,
    /// Peak memory, whole run: the GPU's used memory on a GPU (sampled; the CUDA context
    /// included), the process's peak resident set on the CPU (`glmtune::memory`).
    peak_memory_bytes: u64,
    final_loss: f64,
}

pub(super) fn run(args: TrainBenchArgs) -> anyhow::Result<()> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let (config, family) = shapes::named(&args.config)?;
    let dtype = match (args.fp16, args.bf16) {
        (true, _) => DType::F16,
        (_, true) => DType::BF16,
        _ => DType::F32,
    };
    let device = args.device.device()?;
    glmtune::memory::reuse_freed_memory();
    let memory = PeakMemory::watch(&device);
    let setup = Instant::now();
    let linear = args.quantization_bit.as_deref().map(|bits| match bits {
        "4" => GgmlDType::Q4_0,
        _ => GgmlDType::Q8_0,
    });
    // Quantized as each matrix is drawn: no dense copy of the model is ever held.
    let model = ChatGlmModel::random_with(config.clone(), dtype, linear, &device, args.seed)
        .context("drawing the random model")?;
    let prefix = PrefixConfig {
        pre_seq_len: args.pre_seq_len,
        prefix_projection: args.prefix_projection,
    };
    let init = PrefixEncoder::random(prefix, &config, args.seed, &device)?;
    let setup_seconds = setup.elapsed().as_secs_f64();
    let batch = args.per_device_train_batch_size * args.gradient_accumulation_steps;
    let examples: Vec<Example> = (0..batch)
        .map(|i| example(&config, &args, i as u32))
        .collect();
    let options = TrainOptions {
        per_device_train_batch_size: args.per_device_train_batch_size,
        gradient_accumulation_steps: args.gradient_accumulation_steps,
        max_steps: args.steps,
        prefix_dropout: 0.1,
        adam: AdamWConfig {
            optim: glmtune_engine::train::Optim::official(family),
            ..AdamWConfig::default()
        },
        forward_batch_size: args.forward_batch_size,
        gradient_checkpointing: args.gradient_checkpointing,
        loss_scaling: (dtype == DType::F16).then(LossScaling::default),
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(&model, &init, options)?;
    let mut times = Vec::new();
    let (mut tokens, mut final_loss) = (Vec::new(), 0.0);
    let mut last = Instant::now();
    trainer.run(&examples, |log, _| {
        times.push(last.elapsed().as_secs_f64());
        tokens.push(log.tokens);
        final_loss = log.loss;
        last = Instant::now();
        Ok(ControlFlow::Continue(()))
    })?;
    // With several steps the first (allocations, first touches) is left out of the rate.
    let timed = if times.len() > 1 { 1 } else { 0 };
    let seconds: f64 = times[timed..].iter().sum();
    let timed_tokens: usize = tokens[timed..].iter().sum();
    let sequence_tokens = examples[0].input_ids.len();
    let report = TrainBenchReport {
        config: args.config.clone(),
        device: args.device.spec.to_string(),
        dtype: format!("{dtype:?}").to_lowercase(),
        linear_layers: match args.quantization_bit.as_deref() {
            Some("4") => "q4_0".into(),
            Some(_) => "q8_0".into(),
            None => "dense".into(),
        },
        parameters: parameters(&config),
        pre_seq_len: args.pre_seq_len,
        sequence_tokens,
        batch: format!(
            "{} × {}",
            args.per_device_train_batch_size, args.gradient_accumulation_steps
        ),
        forward_batch_size: args
            .forward_batch_size
            .unwrap_or(args.per_device_train_batch_size),
        gradient_checkpointing: args.gradient_checkpointing,
        steps: args.steps,
        tokens_per_second: timed_tokens as f64 / seconds.max(1e-9),
        seconds_per_step: seconds / (times.len() - timed) as f64,
        first_step_seconds: times[0],
        setup_seconds,
        peak_memory_bytes: memory.bytes().unwrap_or(0),
        final_loss,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// A training example of the official lengths: `max_source_length` prompt tokens (the
/// generation's `[gMASK] sop` included) and `max_target_length` answer tokens (eos included),
/// labels on the answer; the ids are arbitrary ordinary tokens.
fn example(config: &ChatGlmConfig, args: &TrainBenchArgs, seed: u32) -> Example {
    let ordinary = |i: u32, stride: u32| 1000 + (i * stride + seed * 131) % 20000;
    let source = args.max_source_length.max(3) as u32;
    let target = args.max_target_length.max(2) as u32;
    let specials = [config.gmask_token_id, config.bos_token_id];
    let mut input_ids: Vec<u32> = if config.glm2().is_some() {
        specials
            .into_iter()
            .chain((0..source - 2).map(|i| ordinary(i, 7)))
            .collect()
    } else {
        (0..source - 2)
            .map(|i| ordinary(i, 7))
            .chain(specials)
            .collect()
    };
    let context = input_ids.len();
    input_ids.extend((0..target - 1).map(|i| ordinary(i, 13)));
    input_ids.push(config.eos_token_id);
    let labels = input_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| if i < context { -100 } else { i64::from(id) })
        .collect();
    Example { input_ids, labels }
}

/// Weights of the model (embeddings and every block's matrices and vectors).
fn parameters(config: &ChatGlmConfig) -> u64 {
    let h = config.hidden_size as u64;
    let kv = (config.kv_heads() * config.head_dim()) as u64;
    let inner = config.inner_hidden_size as u64;
    let glm2 = config.glm2().is_some();
    let mlp_in = if glm2 { 2 * inner } else { inner };
    let per_layer = h * (h + 2 * kv) + h * h + mlp_in * h + inner * h + 4 * h;
    let embeddings = config.vocab_size as u64 * h * if glm2 { 2 } else { 1 };
    per_layer * config.num_layers as u64 + embeddings
}
