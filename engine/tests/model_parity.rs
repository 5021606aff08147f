//! Logits of the tiny ChatGLM-6B fixture against THUDM's own PyTorch outputs.

mod common;

use candle_core::{DType, Device};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};

use common::*;

const TOLERANCE: f32 = 2e-5;

fn model() -> ChatGlmModel {
    ChatGlmModel::load(&fixture_dir().join("model"), DType::F32, &Device::Cpu).expect("model loads")
}

/// Every fixture case against `{key}.{i}` in logits.safetensors.
fn check_cases(model: &ChatGlmModel, prefix: Option<&PrefixEncoder>, key: &str) {
    let reference = reference_logits("logits.safetensors");
    for (i, case) in expected()["cases"].as_array().unwrap().iter().enumerate() {
        let ids = ids_of(&case["ids"]);
        let error = relative_error(
            &logits_of(model, prefix, &ids),
            &reference[&format!("{key}.{i}")],
        );
        assert!(error < TOLERANCE, "{key} case {i}: relative error {error}");
        eprintln!("{key}.{i}: relative error {error:.2e}");
    }
}

#[test]
fn base_logits_match_reference() {
    check_cases(&model(), None, "base");
}

#[test]
fn ptuned_logits_match_reference() {
    let model = model();
    let prefix = PrefixEncoder::load_adapter(
        &fixture_dir().join("adapter_init"),
        model.config(),
        &Device::Cpu,
    )
    .unwrap();
    check_cases(&model, Some(&prefix), "ptuned");
}

#[test]
fn trained_adapter_reproduces_logits_after_training() {
    let model = model();
    let prefix = PrefixEncoder::load_adapter(
        &fixture_dir().join("adapter_trained"),
        model.config(),
        &Device::Cpu,
    )
    .unwrap();
    let expected = expected();
    let features = &expected["train"]["features"][0];
    let input_ids = ids_of(&features["input_ids"]);
    // The reference scored the first training prompt up to and including <sop>.
    let sop = model.config().bos_token_id;
    let end = input_ids.iter().position(|&id| id == sop).unwrap() + 1;
    let prompt: Vec<u32> = input_ids[..end]
        .iter()
        .copied()
        .filter(|&id| id != model.config().pad_token_id)
        .collect();
    let reference = reference_logits("logits_after_training.safetensors");
    let error = relative_error(
        &logits_of(&model, Some(&prefix), &prompt),
        &reference["after.0"],
    );
    assert!(error < TOLERANCE, "relative error {error}");
    eprintln!("after.0: relative error {error:.2e}");
}
