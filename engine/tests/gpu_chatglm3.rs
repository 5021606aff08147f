//! ChatGLM3 (the ChatGLM2 architecture) on the wgpu backend against the CPU model: the f32 model
//! and a q4_0 `model.gguf` streamed tensor by tensor, logits and greedy ids of the fixture's chat
//! inputs, without and with the adapter. Runs on whatever adapter wgpu finds (lavapipe in CI).
#![cfg(feature = "gpu")]

mod common;

use std::ops::ControlFlow;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use glmtune_engine::generation::{generate, sequence_logits, GenerationOptions};
use glmtune_engine::gpu::{Gpu, GpuModel, GpuModelBuilder};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::quant::{
    quantize_checkpoint, Bits, EmbeddingFormat, GgufIndex, QUANTIZED_FILE,
};
use glmtune_engine::tokenizer::ChatGlmTokenizer;
use glmtune_engine::ChatGlmConfig;

use common::{ids_of, relative_error};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chatglm3-tiny")
}

fn chat_inputs() -> Vec<Vec<u32>> {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    expected["chat_cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| ids_of(&c["chat_ids"]))
        .collect()
}

fn options() -> GenerationOptions {
    let tokenizer = ChatGlmTokenizer::from_dir(&fixture().join("model")).unwrap();
    GenerationOptions {
        max_new_tokens: Some(10),
        stop_ids: tokenizer.stop_ids(),
        ..GenerationOptions::default()
    }
}

fn adapter(model: &ChatGlmModel) -> PrefixEncoder {
    PrefixEncoder::load_adapter(
        &fixture().join("adapter_init"),
        model.config(),
        &Device::Cpu,
    )
    .unwrap()
}

/// `gpu` against `reference` on the CPU: logits within `tolerance` and the same greedy ids.
fn check(gpu: &GpuModel, reference: &ChatGlmModel, tolerance: f32, label: &str) {
    let prefix = adapter(reference);
    for (i, ids) in chat_inputs().iter().enumerate() {
        for p in [None, Some(&prefix)] {
            let ours: Tensor = pollster::block_on(gpu.sequence_logits(p, ids)).unwrap();
            let error = relative_error(&ours, &sequence_logits(reference, p, ids).unwrap());
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
                &options(),
                |_, _| ControlFlow::Continue(()),
            )
            .unwrap()
            .remove(0);
            let greedy =
                pollster::block_on(gpu.generate(p, ids, &options(), |_| ControlFlow::Continue(())))
                    .unwrap();
            assert_eq!(greedy, expected, "{label} case {i}: greedy ids");
        }
    }
}

#[test]
fn f32_chatglm3_matches_the_cpu() {
    let model = ChatGlmModel::load(&fixture().join("model"), DType::F32, &Device::Cpu).unwrap();
    for row_per_invocation in [false, true] {
        let mut gpu = Gpu::blocking().unwrap();
        gpu.row_per_invocation = row_per_invocation;
        let gpu = GpuModel::upload(gpu, &model).unwrap();
        check(
            &gpu,
            &model,
            2e-5,
            &format!("f32 (row per invocation {row_per_invocation})"),
        );
    }
}

#[test]
fn quantized_chatglm3_streamed_from_its_file_matches_the_cpu() {
    let dir = std::env::temp_dir().join(format!("glmtune-gpu-glm3-{}", std::process::id()));
    quantize_checkpoint(
        &fixture().join("model"),
        &dir,
        Bits::Four,
        EmbeddingFormat::Q8,
    )
    .unwrap();
    // The folder keeps its tokenizer, so it is still a ChatGLM3 checkpoint.
    let tokenizer = ChatGlmTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tokenizer.family(), glmtune_engine::config::Family::ChatGlm3);
    let bytes = std::fs::read(dir.join(QUANTIZED_FILE)).unwrap();
    let index = GgufIndex::parse(QUANTIZED_FILE, &bytes, bytes.len() as u64)
        .unwrap()
        .unwrap();
    let config = ChatGlmConfig::from_file(&dir.join("config.json")).unwrap();
    let mut builder = GpuModelBuilder::new(Gpu::blocking().unwrap(), config);
    for entry in &index.tensors {
        let range = entry.start as usize..(entry.start + entry.len) as usize;
        builder
            .add(&entry.name, entry.tensor(&bytes[range]).unwrap())
            .unwrap();
    }
    let streamed = builder.finish().unwrap();
    // The CPU backend on the same file. Both round the activations to 8 bits before a quantized
    // product, so they compute the same numbers, except where a value lies within the backends'
    // f32 differences (~1e-7 here) of a rounding boundary (one block one step apart: about 5e-3
    // of the logits in one case), hence the tolerance; the greedy ids are the same.
    let loaded = ChatGlmModel::load(&dir, DType::F32, &Device::Cpu).unwrap();
    check(&streamed, &loaded, 1e-2, "q4_0 file");
    std::fs::remove_dir_all(&dir).unwrap();
}
