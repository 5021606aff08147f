//! CPU inference throughput: prompt (prefill) and decode tokens/s for random models of the
//! ChatGLM-6B architecture, f32, f16 and block-quantized (q8_0, q4_0 linear layers with q8_0
//! embeddings, as `glmtune quantize` writes them), set against this machine's memory bandwidth measured in
//! the same process (decoding reads every weight once per token, so bandwidth ÷ weight bytes is the
//! ceiling).
//!
//! `cargo bench -p glmtune-engine --bench inference` runs the mid-size model (hidden 1024,
//! 12 layers, vocab 64k); `GLMTUNE_BENCH_SHAPE=perf` adds the shape of `performance.md` (hidden
//! 2048, 16 layers, inner 8192, vocab 512) to compare with chatglm.cpp's published figures, and
//! `GLMTUNE_BENCH_SHAPE=6b` runs ChatGLM-6B's own shape alone.
//!
//! With `--features gpu` the quantized models also decode on the wgpu backend in the same run,
//! set against the device's copy bandwidth measured in the same process;
//! `GLMTUNE_BENCH_BACKEND=wgpu` skips the CPU rows and `GLMTUNE_BENCH_WEIGHTS=q4_0` keeps one
//! format (`scripts/bench-gpu-6b.sh` runs both on a GPU machine).

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use glmtune_engine::generation::{generate, GenerationOptions, Sampling};
use glmtune_engine::model::ChatGlmModel;
use glmtune_engine::ChatGlmConfig;

const PROMPT_TOKENS: usize = 146;
const NEW_TOKENS: usize = 64;
const RUNS: usize = 3;

struct Shape {
    name: &'static str,
    config: ChatGlmConfig,
}

fn shapes() -> Vec<Shape> {
    let chosen = std::env::var("GLMTUNE_BENCH_SHAPE").unwrap_or_default();
    if chosen == "6b" {
        return vec![Shape {
            name: "ChatGLM-6B (h4096 L28 v130k)",
            config: ChatGlmConfig::synthetic(130528, 4096, 28, 32, 16384),
        }];
    }
    let mut shapes = vec![Shape {
        name: "mid (h1024 L12 v64k)",
        config: ChatGlmConfig::synthetic(65024, 1024, 12, 16, 4096),
    }];
    if chosen == "perf" || chosen == "all" {
        shapes.push(Shape {
            name: "perf.md (h2048 L16 v512)",
            config: ChatGlmConfig::synthetic(512, 2048, 16, 16, 8192),
        });
    }
    shapes
}

/// GB/s of a large sequential read on every core, the ceiling for weight-streaming decode.
fn memory_bandwidth() -> f64 {
    use rayon::prelude::*;
    let data = vec![1u64; 1 << 28]; // 2 GiB
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let sum: u64 = data
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |acc, &x| acc.wrapping_add(x)))
            .reduce(|| 0, u64::wrapping_add);
        let seconds = start.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max((data.len() * 8) as f64 / seconds / 1e9);
    }
    best
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// How the bench stores the weights.
#[derive(Debug, Clone, Copy)]
enum Weights {
    Dense(DType),
    Quantized(GgmlDType),
}

impl Weights {
    fn label(self) -> String {
        match self {
            Weights::Dense(dtype) => format!("{dtype:?}").to_lowercase(),
            Weights::Quantized(format) => format!("{format:?}").to_lowercase(),
        }
    }

    /// Bytes a weight takes (a q8_0 block: 32 weights in 34 bytes; q4_0: in 18).
    fn bytes_per_weight(self) -> f64 {
        match self {
            Weights::Dense(dtype) => dtype.size_in_bytes() as f64,
            Weights::Quantized(GgmlDType::Q4_0) => 18.0 / 32.0,
            Weights::Quantized(_) => 34.0 / 32.0,
        }
    }

    fn model(self, config: &ChatGlmConfig) -> Result<ChatGlmModel, Box<dyn std::error::Error>> {
        Ok(match self {
            Weights::Dense(dtype) => ChatGlmModel::random(config.clone(), dtype, &Device::Cpu, 7)?,
            Weights::Quantized(format) => {
                ChatGlmModel::random(config.clone(), DType::F32, &Device::Cpu, 7)?
                    .quantized(format, GgmlDType::Q8_0)?
            }
        })
    }
}

fn weight_bytes(config: &ChatGlmConfig, weights: Weights) -> f64 {
    let (h, inner, vocab, layers) = (
        config.hidden_size as f64,
        config.inner_hidden_size as f64,
        config.vocab_size as f64,
        config.num_layers as f64,
    );
    let per_layer = 3.0 * h * h + h * h + 2.0 * h * inner;
    // Decoding reads the blocks and the LM head; embedding rows are only gathered.
    let head = match weights {
        Weights::Quantized(_) => vocab * h * 34.0 / 32.0,
        dense => vocab * h * dense.bytes_per_weight(),
    };
    layers * per_layer * weights.bytes_per_weight() + head
}

/// (prompt tok/s, decode tok/s) of one greedy generation, from the times of its tokens: the
/// first token ends the prompt, the rest are decode.
fn rates(
    start: Instant,
    first: Option<Instant>,
    end: Instant,
    produced: usize,
) -> (f64, Option<f64>) {
    let first = first.unwrap_or(end);
    let prompt = PROMPT_TOKENS as f64 / (first - start).as_secs_f64();
    let decode = (produced > 1).then(|| (produced - 1) as f64 / (end - first).as_secs_f64());
    (prompt, decode)
}

fn prompt_of(config: &ChatGlmConfig) -> Vec<u32> {
    let mut prompt: Vec<u32> = (0..PROMPT_TOKENS as u32 - 2)
        .map(|i| 20 + i % 400)
        .collect();
    prompt.extend([config.gmask_token_id, config.bos_token_id]);
    prompt
}

fn options() -> GenerationOptions {
    GenerationOptions {
        max_new_tokens: Some(NEW_TOKENS),
        max_length: None,
        sampling: Sampling::Greedy,
        repetition_penalty: 1.0,
        stop_at_eos: false,
        stop_ids: Vec::new(),
    }
}

/// Median (prompt, decode) tok/s of `RUNS` greedy generations; `run` generates once, calling
/// its argument at every new token.
fn measure(
    mut run: impl FnMut(&mut dyn FnMut()) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let (mut prompt_rates, mut decode_rates) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut first = None;
        let mut produced = 0usize;
        run(&mut || {
            first.get_or_insert_with(Instant::now);
            produced += 1;
        })?;
        let (p, d) = rates(start, first, Instant::now(), produced);
        prompt_rates.push(p);
        decode_rates.extend(d);
    }
    Ok((median(prompt_rates), median(decode_rates)))
}

fn cpu_rates(model: &ChatGlmModel) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let prompt = prompt_of(model.config());
    measure(|token| {
        generate(
            model,
            None,
            std::slice::from_ref(&prompt),
            &options(),
            |_, _| {
                token();
                ControlFlow::Continue(())
            },
        )?;
        Ok(())
    })
}

#[cfg(feature = "gpu")]
fn gpu_rates(
    gpu: &glmtune_engine::gpu::GpuModel,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let prompt = prompt_of(gpu.config());
    measure(|token| {
        pollster::block_on(gpu.generate(None, &prompt, &options(), |_| {
            token();
            ControlFlow::Continue(())
        }))?;
        Ok(())
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cpu_rows = std::env::var("GLMTUNE_BENCH_BACKEND").map_or(true, |b| b != "wgpu");
    let only = std::env::var("GLMTUNE_BENCH_WEIGHTS").ok();
    let bandwidth = memory_bandwidth();
    println!("memory read bandwidth: {bandwidth:.1} GB/s; prompt {PROMPT_TOKENS} tokens, {NEW_TOKENS} greedy new tokens, median of {RUNS}");
    #[cfg(feature = "gpu")]
    let gpu_bandwidth = {
        let gpu = glmtune_engine::gpu::Gpu::blocking()?;
        let measured = gpu.copy_bandwidth(1 << 30)?;
        println!(
            "wgpu device: {}, buffer copy bandwidth {measured:.1} GB/s",
            gpu.description
        );
        measured
    };
    println!();
    println!(
        "| model | weights | backend | prompt tok/s | decode tok/s | decode ÷ bandwidth bound |"
    );
    println!("|---|---|---|---:|---:|---:|");
    for shape in shapes() {
        for weights in [
            Weights::Dense(DType::F32),
            Weights::Dense(DType::F16),
            Weights::Quantized(GgmlDType::Q8_0),
            Weights::Quantized(GgmlDType::Q4_0),
        ] {
            if only.as_ref().is_some_and(|w| *w != weights.label()) {
                continue;
            }
            let on_gpu = cfg!(feature = "gpu") && matches!(weights, Weights::Quantized(_));
            if !cpu_rows && !on_gpu {
                continue;
            }
            let model = weights.model(&shape.config)?;
            let bytes = weight_bytes(model.config(), weights);
            let row = |backend: &str, (prompt, decode): (f64, f64), bandwidth: f64| {
                println!(
                    "| {} | {} | {backend} | {prompt:.1} | {decode:.2} | {:.0} % |",
                    shape.name,
                    weights.label(),
                    100.0 * decode / (bandwidth * 1e9 / bytes)
                );
            };
            if cpu_rows {
                row("candle CPU", cpu_rates(&model)?, bandwidth);
            }
            #[cfg(feature = "gpu")]
            if on_gpu {
                let gpu = glmtune_engine::gpu::GpuModel::upload(
                    glmtune_engine::gpu::Gpu::blocking()?,
                    &model,
                )?;
                drop(model);
                row("wgpu", gpu_rates(&gpu)?, gpu_bandwidth);
            }
        }
    }
    Ok(())
}
