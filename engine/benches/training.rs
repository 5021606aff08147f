//! CPU P-Tuning v2 training throughput and peak memory for a random model of the ChatGLM-6B
//! architecture, against the forward pass alone measured in the same process (training costs a
//! forward plus the activation gradients, so ~3× a forward is the cost to aim under).
//!
//! `cargo bench -p glmtune-engine --bench training`

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::{DType, Device};
use glmtune_engine::model::{Batch, ChatGlmModel, KvCache, PrefixEncoder};
use glmtune_engine::train::{Example, TrainOptions, Trainer};
use glmtune_engine::{ChatGlmConfig, PrefixConfig};

const SOURCE: usize = 64;
const TARGET: usize = 64;
const STEPS: u64 = 3;

/// Peak resident memory of this process so far, in MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn example(config: &ChatGlmConfig, seed: u32) -> Example {
    let mut input_ids: Vec<u32> = (0..SOURCE as u32 - 1)
        .map(|i| 20 + (i * 7 + seed) % 400)
        .collect();
    input_ids.extend([config.gmask_token_id, config.bos_token_id]);
    input_ids.extend((0..TARGET as u32 - 1).map(|i| 20 + (i * 13 + seed) % 400));
    let context = SOURCE;
    let labels = input_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| if i < context { -100 } else { id as i64 })
        .collect();
    Example { input_ids, labels }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ChatGlmConfig::synthetic(65024, 1024, 12, 16, 4096);
    let device = Device::Cpu;
    let model = ChatGlmModel::random(config.clone(), DType::F32, &device, 5)?;
    let prefix = PrefixConfig {
        pre_seq_len: 32,
        prefix_projection: false,
    };
    let init = PrefixEncoder::random(prefix, &config, 1, &device)?;
    let examples: Vec<Example> = (0..4).map(|s| example(&config, s)).collect();
    let tokens_per_example = examples[0].input_ids.len();

    // Baseline: the forward pass alone over the same inputs.
    let start = Instant::now();
    for e in &examples {
        let batch = Batch::new(
            std::slice::from_ref(&e.input_ids),
            &config,
            prefix.pre_seq_len,
            &device,
        )?;
        let mut cache = KvCache::from_prefix(init.key_values(&config, 1, DType::F32)?)?;
        let hidden = model.forward(
            &batch.ids,
            &batch.positions,
            batch.mask.as_ref(),
            &mut cache,
        )?;
        model.logits(&hidden)?;
    }
    let forward_rate = (examples.len() * tokens_per_example) as f64 / start.elapsed().as_secs_f64();

    let options = TrainOptions {
        per_device_train_batch_size: 1,
        gradient_accumulation_steps: examples.len(),
        max_steps: STEPS,
        prefix_dropout: 0.1,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(&model, &init, options)?;
    let start = Instant::now();
    let mut tokens = 0usize;
    trainer.run(&examples, |log, _| {
        tokens += log.tokens;
        Ok(ControlFlow::Continue(()))
    })?;
    let train_rate = tokens as f64 / start.elapsed().as_secs_f64();
    println!(
        "model h1024 L12 v64k f32, prefix 32, {SOURCE}+{TARGET} tokens, batch 1 × accumulation {}",
        examples.len()
    );
    println!();
    println!("| pass | tokens/s | ÷ forward |");
    println!("|---|---:|---:|");
    println!("| forward only | {forward_rate:.1} | 1.00 |");
    println!(
        "| training step (forward + backward + AdamW) | {train_rate:.1} | {:.2} |",
        train_rate / forward_rate
    );
    if let Some(peak) = peak_rss_mib() {
        println!();
        println!(
            "peak resident memory: {peak:.0} MiB (weights: {:.0} MiB)",
            weight_mib(&config)
        );
    }
    Ok(())
}

fn weight_mib(config: &ChatGlmConfig) -> f64 {
    let (h, inner, vocab, layers) = (
        config.hidden_size as f64,
        config.inner_hidden_size as f64,
        config.vocab_size as f64,
        config.num_layers as f64,
    );
    (layers * (4.0 * h * h + 2.0 * h * inner) + vocab * h) * 4.0 / (1024.0 * 1024.0)
}
