//! Fixture access shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use glmtune_engine::model::{Batch, ChatGlmModel, KvCache, PrefixEncoder};

/// Greedy decoding of at most `max_new_tokens`, stopping at the end token.
pub fn greedy(max_new_tokens: usize) -> glmtune_engine::generation::GenerationOptions {
    glmtune_engine::generation::GenerationOptions {
        max_new_tokens: Some(max_new_tokens),
        max_length: None,
        sampling: glmtune_engine::generation::Sampling::Greedy,
        repetition_penalty: 1.0,
        stop_at_eos: true,
        stop_ids: Vec::new(),
    }
}

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chatglm6b-tiny")
}

/// The fixture model (f32) and the adapter the official training run started from.
pub fn model_and_initial_adapter() -> (ChatGlmModel, PrefixEncoder) {
    let model = ChatGlmModel::load(
        &fixture_dir().join("model"),
        candle_core::DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let init = PrefixEncoder::load_adapter(
        &fixture_dir().join("adapter_init"),
        model.config(),
        &Device::Cpu,
    )
    .unwrap();
    (model, init)
}

pub fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

/// Training examples from a reference's `features` (`input_ids`, `labels`), the first `count`.
pub fn examples_of(
    features: &serde_json::Value,
    count: usize,
) -> Vec<glmtune_engine::train::Example> {
    features.as_array().expect("features")[..count]
        .iter()
        .map(|f| glmtune_engine::train::Example {
            input_ids: ids_of(&f["input_ids"]),
            labels: f["labels"]
                .as_array()
                .expect("labels")
                .iter()
                .map(|v| v.as_i64().expect("label"))
                .collect(),
        })
        .collect()
}

pub fn ids_of(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .expect("id list")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

pub fn reference_logits(file: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir().join(file), &Device::Cpu)
        .expect("reference logits")
}

/// max |a − b| / max |b|, the parity measure the issue asks for.
/// |a − b| relative to |b| (guarded at 1e-12).
pub fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

pub fn relative_error(actual: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(actual.dims(), reference.dims(), "shapes differ");
    let diff = (actual - reference)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap();
    let scale = reference
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap()
}

/// The token ids of every fixture case.
pub fn cases() -> Vec<Vec<u32>> {
    expected()["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| ids_of(&c["ids"]))
        .collect()
}

/// Logits `[seq, vocab]` of one sequence through a fresh cache (holding the prefix, if any).
pub fn logits_of(model: &ChatGlmModel, prefix: Option<&PrefixEncoder>, ids: &[u32]) -> Tensor {
    let prefix_len = prefix.map_or(0, |p| p.config.pre_seq_len);
    let batch = Batch::new(&[ids.to_vec()], model.config(), prefix_len, &Device::Cpu).unwrap();
    let mut cache = match prefix {
        Some(p) => {
            KvCache::from_prefix(p.key_values(model.config(), 1, model.dtype()).unwrap()).unwrap()
        }
        None => KvCache::new(model.config().num_layers),
    };
    let hidden = model
        .forward(
            &batch.ids,
            &batch.positions,
            batch.mask.as_ref(),
            &mut cache,
        )
        .unwrap();
    model.logits(&hidden).unwrap().squeeze(0).unwrap()
}

/// Runs `trainer` over `examples` to its last step; each step's logged loss.
pub fn train_losses(
    trainer: &mut glmtune_engine::train::Trainer,
    examples: &[glmtune_engine::train::Example],
) -> Vec<f64> {
    let mut losses = Vec::new();
    trainer
        .run(examples, |log, _| {
            losses.push(log.loss);
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .expect("training runs");
    losses
}
