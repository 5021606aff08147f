//! `glmtune bench generate`: prompt and decode tokens/s of greedy generations on the CPU (or the
//! wgpu backend), set against the read bandwidth measured in the same run: this machine's with the
//! same threads, or the device's buffer copy rate (decoding reads every weight once per token, so
//! bandwidth ÷ weight bytes is the ceiling).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use glmtune_engine::config::shapes;
use glmtune_engine::generation::speed::{
    cache_bytes_per_token, generation_speed, read_bandwidth, speed_inputs, streams_speed,
    time_generations, weight_bytes_per_token, GenerationSpeed, WeightFormat,
};
use glmtune_engine::model::ChatGlmModel;
use serde::Serialize;

use crate::cli::model_args::BackendArg;

#[derive(Debug, Args)]
pub struct GenerateBenchArgs {
    /// A checkpoint folder (its weights stored as `--weights`).
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    model: Option<PathBuf>,
    /// `chatglm-6b`, `chatglm2-6b`, `chatglm3-6b`, `mid` (performance.md's 0.8 B decode model) or
    /// `h{hidden}l{layers}`, with `--random-weights`.
    #[arg(long, requires = "random_weights")]
    config: Option<String>,
    /// Draw the weights at random (with `--config`).
    #[arg(long)]
    random_weights: bool,
    /// `f32`, `f16`, `bf16`, `q8_0` or `q4_0` (quantized: the blocks' linear layers, with q8_0
    /// embeddings, as `glmtune quantize` writes them).
    #[arg(long, default_value = "q4_0")]
    weights: WeightFormat,
    #[arg(long, default_value_t = 146)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Generations to time (the medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also decode this many streams together (different prompts, shared steps) and report their
    /// aggregate rate, its ratio to one stream's, and whether each got its tokens alone.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Where the model decodes: `cpu`, or `wgpu` (its bound then the device's buffer copy rate).
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    backend: BackendArg,
    /// Bytes the bandwidth read streams through (far past the caches).
    #[arg(long, default_value_t = 1 << 30)]
    bandwidth_bytes: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// What `bench generate` prints.
#[derive(Debug, Serialize)]
struct GenerateBenchReport {
    model: String,
    weights: WeightFormat,
    backend: BackendArg,
    /// The wgpu adapter, with `--backend wgpu`.
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    threads: usize,
    prompt_tokens: usize,
    new_tokens: usize,
    runs: usize,
    prompt_tokens_per_second: f64,
    decode_tokens_per_second: f64,
    /// Bytes of weights one decode step reads (blocks, norms, output layer).
    weight_bytes_per_token: u64,
    /// Bytes of cached keys and values one decode step reads, on average over the answer.
    cache_bytes_per_token: u64,
    /// A read over `bandwidth_bytes` with the same threads, best of three, the higher of one
    /// before loading the model and one after; with `--backend wgpu`, the device's copy of
    /// `bandwidth_bytes` (each byte counted once), best of three.
    read_bytes_per_second: f64,
    /// decode tok/s × (weight + cache bytes per token) ÷ read bandwidth: 1 is the memory-bound
    /// ceiling.
    decode_fraction_of_bound: f64,
    streams: usize,
    /// With `--streams N` (N > 1): every stream's new tokens per second, decoded together.
    #[serde(skip_serializing_if = "Option::is_none")]
    aggregate_decode_tokens_per_second: Option<f64>,
    /// The aggregate rate ÷ one stream's decode rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    streams_over_one: Option<f64>,
    /// Whether each stream's greedy tokens are those of its prompt generated alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    streams_identical_to_alone: Option<bool>,
}

pub(super) fn run(args: GenerateBenchArgs) -> anyhow::Result<()> {
    // The global --threads (see cli::use_threads): the model's and the bandwidth read's.
    let threads = candle_core::utils::get_num_threads();
    if args.streams == 0 {
        bail!("--streams must be at least 1");
    }
    if args.backend == BackendArg::Wgpu && args.streams > 1 {
        bail!("--streams: the wgpu backend decodes one generation at a time; use --backend cpu");
    }
    // On the CPU, measured before the model takes memory and after it is dropped: the higher (the
    // stricter bound) is reported, as the machine's bandwidth drifts with its neighbours. (The
    // wgpu backend's bound is the device's, measured there.)
    let bandwidth_before = if args.backend == BackendArg::Cpu {
        read_bandwidth(args.bandwidth_bytes, threads)
    } else {
        0.0
    };
    let (name, model) = match (&args.model, &args.config) {
        (Some(dir), None) => (dir.display().to_string(), load(dir, args.weights)?),
        (None, Some(name)) => {
            let (config, _) = shapes::named(name)?;
            (name.clone(), args.weights.random_model(&config, args.seed)?)
        }
        _ => bail!("give --model DIR, or --config NAME --random-weights"),
    };
    let weight_bytes = weight_bytes_per_token(&model);
    let cache_bytes = cache_bytes_per_token(&model, args.prompt_tokens, args.new_tokens);
    let (speed, streams, bandwidth, device) = match args.backend {
        BackendArg::Cpu => {
            let speed = generation_speed(&model, args.prompt_tokens, args.new_tokens, args.runs)?;
            let streams = if args.streams > 1 {
                Some(streams_speed(
                    &model,
                    args.prompt_tokens,
                    args.new_tokens,
                    args.streams,
                    args.runs,
                )?)
            } else {
                None
            };
            drop(model);
            let bandwidth = read_bandwidth(args.bandwidth_bytes, threads).max(bandwidth_before);
            (speed, streams, bandwidth, None)
        }
        BackendArg::Wgpu => {
            let device = glmtune_engine::gpu::Gpu::blocking()?;
            let bandwidth = device.copy_bandwidth(args.bandwidth_bytes as u64)? * 1e9;
            let description = device.description.clone();
            let gpu = glmtune_engine::gpu::GpuModel::upload(device, &model)
                .with_context(|| format!("uploading the model to {description}"))?;
            drop(model);
            let speed = gpu_speed(&gpu, args.prompt_tokens, args.new_tokens, args.runs)?;
            (speed, None, bandwidth, Some(description))
        }
    };
    let report = GenerateBenchReport {
        model: name,
        weights: args.weights,
        backend: args.backend,
        device,
        threads,
        prompt_tokens: args.prompt_tokens,
        new_tokens: args.new_tokens,
        runs: args.runs,
        prompt_tokens_per_second: speed.prompt_tokens_per_second,
        decode_tokens_per_second: speed.decode_tokens_per_second,
        weight_bytes_per_token: weight_bytes,
        cache_bytes_per_token: cache_bytes,
        read_bytes_per_second: bandwidth,
        decode_fraction_of_bound: speed.decode_tokens_per_second
            * (weight_bytes + cache_bytes) as f64
            / bandwidth,
        streams: args.streams,
        aggregate_decode_tokens_per_second: streams.map(|s| s.aggregate_decode_tokens_per_second),
        streams_over_one: streams
            .map(|s| s.aggregate_decode_tokens_per_second / speed.decode_tokens_per_second),
        streams_identical_to_alone: streams.map(|s| s.identical_to_alone),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Greedy generations on the wgpu backend, timed as on the CPU.
fn gpu_speed(
    gpu: &glmtune_engine::gpu::GpuModel,
    prompt_tokens: usize,
    new_tokens: usize,
    runs: usize,
) -> anyhow::Result<GenerationSpeed> {
    let (prompt, options) = speed_inputs(gpu.config(), prompt_tokens, new_tokens, runs)?;
    Ok(time_generations(prompt.len(), runs, |token| {
        pollster::block_on(gpu.generate(None, &prompt, &options, |_| {
            token();
            std::ops::ControlFlow::Continue(())
        }))
        .map(|_| ())
    })?)
}

/// A checkpoint folder's model with its weights stored as `weights`.
fn load(dir: &std::path::Path, weights: WeightFormat) -> anyhow::Result<ChatGlmModel> {
    let (dtype, _) = weights.storage();
    let model = ChatGlmModel::load(dir, dtype, &candle_core::Device::Cpu)
        .with_context(|| format!("loading {}", dir.display()))?;
    Ok(weights.store(model)?)
}
