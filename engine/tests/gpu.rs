//! The wgpu backend against the CPU model on the tiny fixture: logits at every position of every
//! case without and with the trained adapter, and greedy ids, at f32 and block-quantized. Runs on whatever adapter
//! wgpu finds (Mesa's lavapipe in CI: `tests/setup-deps.sh` installs it).
#![cfg(feature = "gpu")]

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use glmtune_engine::generation::{generate, GenerationOptions};
use glmtune_engine::gpu::{Gpu, GpuModel, GpuModelBuilder, Logits};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::quant::{
    quantize_checkpoint, Bits, EmbeddingFormat, GgufIndex, QUANTIZED_FILE,
};
use glmtune_engine::ChatGlmConfig;
use std::ops::ControlFlow;

use common::*;

fn cpu_model() -> ChatGlmModel {
    ChatGlmModel::load(&fixture_dir().join("model"), DType::F32, &Device::Cpu).unwrap()
}

fn adapter(model: &ChatGlmModel) -> PrefixEncoder {
    PrefixEncoder::load_adapter(
        &fixture_dir().join("adapter_trained"),
        model.config(),
        &Device::Cpu,
    )
    .unwrap()
}

/// Logits of every position, on the GPU and on the CPU.
fn gpu_logits(gpu: &GpuModel, prefix: Option<&PrefixEncoder>, ids: &[u32]) -> Tensor {
    pollster::block_on(gpu.sequence_logits(prefix, ids)).unwrap()
}

fn cpu_logits(model: &ChatGlmModel, prefix: Option<&PrefixEncoder>, ids: &[u32]) -> Tensor {
    glmtune_engine::generation::sequence_logits(model, prefix, ids).unwrap()
}

fn greedy(options_tokens: usize) -> GenerationOptions {
    GenerationOptions {
        max_new_tokens: Some(options_tokens),
        stop_at_eos: false,
        stop_ids: Vec::new(),
        ..GenerationOptions::default()
    }
}

/// `model` on the GPU: logits within `tolerance` of `reference` on the CPU and the same greedy
/// ids, without and with the adapter, with either way of running matrix products.
fn check(model: &ChatGlmModel, reference: &ChatGlmModel, tolerance: f32, label: &str) {
    check_with(model, reference, tolerance, label, true);
}

fn check_with(
    model: &ChatGlmModel,
    reference: &ChatGlmModel,
    tolerance: f32,
    label: &str,
    round_activations: bool,
) {
    for row_per_invocation in [false, true] {
        let mut gpu = Gpu::blocking().unwrap();
        gpu.row_per_invocation = row_per_invocation;
        gpu.round_activations = round_activations;
        let label = format!("{label} (row per invocation: {row_per_invocation})");
        check_on(gpu, model, reference, tolerance, &label);
    }
}

fn check_on(gpu: Gpu, model: &ChatGlmModel, reference: &ChatGlmModel, tolerance: f32, label: &str) {
    let gpu = GpuModel::upload(gpu, model).unwrap();
    eprintln!("{label} on {}", gpu.description());
    let prefix = adapter(model);
    for (i, ids) in cases().iter().enumerate() {
        for p in [None, Some(&prefix)] {
            let error = relative_error(&gpu_logits(&gpu, p, ids), &cpu_logits(reference, p, ids));
            eprintln!(
                "{label} case {i} adapter {}: relative error {error:.2e}",
                p.is_some()
            );
            assert!(
                error < tolerance,
                "{label} case {i}: relative error {error}"
            );
            let expected = generate(
                reference,
                p,
                std::slice::from_ref(ids),
                &greedy(8),
                |_, _| ControlFlow::Continue(()),
            )
            .unwrap()
            .remove(0);
            let ours =
                pollster::block_on(gpu.generate(p, ids, &greedy(8), |_| ControlFlow::Continue(())))
                    .unwrap();
            assert_eq!(ours, expected, "{label} case {i}: greedy ids");
        }
    }
}

#[test]
fn f32_model_matches_the_cpu() {
    let model = cpu_model();
    check(&model, &model, 2e-5, "f32");
}

#[test]
fn quantized_models_match_the_cpu_with_the_same_weights() {
    // With the activations kept exact, the GPU computes the dequantized model.
    for format in [GgmlDType::Q8_0, GgmlDType::Q4_0] {
        let quantized = cpu_model().quantized(format, GgmlDType::Q8_0).unwrap();
        check_with(
            &quantized,
            &quantized.dequantized().unwrap(),
            2e-5,
            &format!("{format:?} exact activations"),
            false,
        );
    }
    // Rounding them to 8 bits as the CPU's quantized products do, the GPU computes what the CPU
    // backend does (~1e-7), except where a value lies within the two backends' f32 differences
    // (~1e-6 for ChatGLM-6B) of a rounding boundary: one block one step apart, which here moves
    // one case's logits by ~2e-2.
    let quantized = cpu_model()
        .quantized(GgmlDType::Q4_0, GgmlDType::Q8_0)
        .unwrap();
    let gpu = GpuModel::upload(Gpu::blocking().unwrap(), &quantized).unwrap();
    let errors: Vec<f32> = cases()
        .iter()
        .map(|ids| {
            let error = relative_error(
                &gpu_logits(&gpu, None, ids),
                &cpu_logits(&quantized, None, ids),
            );
            eprintln!("Q4_0 rounded activations: relative error {error:.2e}");
            error
        })
        .collect();
    let off_boundary = errors.iter().filter(|&&e| e < 1e-6).count();
    assert!(off_boundary + 1 >= errors.len(), "{errors:?}");
    assert!(errors.iter().all(|&e| e < 5e-2), "{errors:?}");
}

#[test]
fn bad_input_is_refused() {
    let gpu = GpuModel::upload(Gpu::blocking().unwrap(), &cpu_model()).unwrap();
    let mut cache = gpu.new_cache(4, None).unwrap();
    let positions = vec![vec![0u32], vec![0u32]];
    let error =
        pollster::block_on(gpu.forward(&[100_000], &positions, None, &mut cache, Logits::Last))
            .unwrap_err()
            .to_string();
    assert!(error.contains("outside the vocabulary"), "{error}");
    let long: Vec<u32> = vec![5; 8];
    let error = pollster::block_on(gpu.forward(
        &long,
        &[vec![0; 8], vec![0; 8]],
        None,
        &mut cache,
        Logits::Last,
    ))
    .unwrap_err()
    .to_string();
    assert!(error.contains("cache holds"), "{error}");
}

/// A browser's way in: the index from the first bytes of `model.gguf` (read in growing pieces),
/// then each tensor from its own byte range straight to the GPU. Same logits as uploading the
/// model loaded from that file, to the last bit.
#[test]
fn a_model_streamed_tensor_by_tensor_from_its_file_matches_the_loaded_one() {
    let dir = std::env::temp_dir().join(format!("glmtune-gpu-stream-{}", std::process::id()));
    quantize_checkpoint(
        &fixture_dir().join("model"),
        &dir,
        Bits::Four,
        EmbeddingFormat::Q8,
    )
    .unwrap();
    let bytes = std::fs::read(dir.join(QUANTIZED_FILE)).unwrap();
    let mut head = 64;
    let index = loop {
        match GgufIndex::parse(QUANTIZED_FILE, &bytes[..head], bytes.len() as u64).unwrap() {
            Some(index) => break index,
            None => head = (head * 2).min(bytes.len()),
        }
    };
    assert!(head < bytes.len(), "the header alone needed the whole file");
    let config = ChatGlmConfig::from_file(&dir.join("config.json")).unwrap();
    let mut builder = GpuModelBuilder::new(Gpu::blocking().unwrap(), config.clone());
    for entry in &index.tensors {
        let range = entry.start as usize..(entry.start + entry.len) as usize;
        builder
            .add(&entry.name, entry.tensor(&bytes[range]).unwrap())
            .unwrap();
    }
    let streamed = builder.finish().unwrap();
    let loaded = ChatGlmModel::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let uploaded = GpuModel::upload(Gpu::blocking().unwrap(), &loaded).unwrap();
    let prefix = adapter(&loaded);
    for ids in cases() {
        let a = gpu_logits(&streamed, Some(&prefix), &ids);
        let b = gpu_logits(&uploaded, Some(&prefix), &ids);
        assert_eq!(relative_error(&a, &b), 0.0);
    }

    // A file cut short, and a model missing a tensor, are refused by name.
    let error = GgufIndex::parse(QUANTIZED_FILE, &bytes[..head], head as u64 + 10)
        .unwrap_err()
        .to_string();
    assert!(error.contains("past the end of the file"), "{error}");
    let mut builder = GpuModelBuilder::new(Gpu::blocking().unwrap(), config);
    for entry in index
        .tensors
        .iter()
        .filter(|e| !e.name.contains("layers.1.mlp"))
    {
        let range = entry.start as usize..(entry.start + entry.len) as usize;
        builder
            .add(&entry.name, entry.tensor(&bytes[range]).unwrap())
            .unwrap();
    }
    let error = builder.finish().err().unwrap().to_string();
    assert!(
        error.contains("layers.1.mlp.dense_h_to_4h.weight"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
