//! Fixture access shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::{Device, Tensor};

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chatglm6b-tiny")
}

pub fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
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
