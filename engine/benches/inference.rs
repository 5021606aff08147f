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

use glmtune_engine::generation::speed::{
    generation_speed, read_bandwidth, weight_bytes_per_token, WeightFormat,
};
#[cfg(feature = "gpu")]
use glmtune_engine::generation::speed::{speed_inputs, time_generations};
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

fn cpu_rates(model: &ChatGlmModel) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let speed = generation_speed(model, PROMPT_TOKENS, NEW_TOKENS, RUNS)?;
    Ok((
        speed.prompt_tokens_per_second,
        speed.decode_tokens_per_second,
    ))
}

#[cfg(feature = "gpu")]
fn gpu_rates(
    gpu: &glmtune_engine::gpu::GpuModel,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let (prompt, options) = speed_inputs(gpu.config(), PROMPT_TOKENS, NEW_TOKENS, RUNS)?;
    let speed = time_generations(prompt.len(), RUNS, |token| {
        pollster::block_on(gpu.generate(None, &prompt, &options, |_| {
            token();
            std::ops::ControlFlow::Continue(())
        }))
        .map(|_| ())
    })?;
    Ok((
        speed.prompt_tokens_per_second,
        speed.decode_tokens_per_second,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cpu_rows = std::env::var("GLMTUNE_BENCH_BACKEND").map_or(true, |b| b != "wgpu");
    let only = std::env::var("GLMTUNE_BENCH_WEIGHTS").ok();
    let threads = candle_core::utils::get_num_threads();
    let bandwidth = read_bandwidth(1 << 31, threads) / 1e9;
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
            WeightFormat::F32,
            WeightFormat::F16,
            WeightFormat::Q8_0,
            WeightFormat::Q4_0,
        ] {
            if only.as_ref().is_some_and(|w| w != weights.as_str()) {
                continue;
            }
            let on_gpu = cfg!(feature = "gpu") && weights.storage().1.is_some();
            if !cpu_rows && !on_gpu {
                continue;
            }
            let model = weights.random_model(&shape.config, 7)?;
            let bytes = weight_bytes_per_token(&model) as f64;
            let row = |backend: &str, (prompt, decode): (f64, f64), bandwidth: f64| {
                println!(
                    "| {} | {} | {backend} | {prompt:.1} | {decode:.2} | {:.0} % |",
                    shape.name,
                    weights.as_str(),
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
