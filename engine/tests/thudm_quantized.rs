//! THUDM's own int4/int8 checkpoints (`quantization.py`: int8 weights, two int4 a byte with the
//! first in the high nibble, a per-row f16 `weight_scale`), made by THUDM's `model.quantize(bits)` and
//! `save_pretrained` (`tests/fixtures/thudm_quantized/`, see its README), load to the logits THUDM's
//! model computes with those weights extracted to f32 (`extract_weight_to_float`'s formula), as a
//! torch pickle and as a safetensors copy of the same tensors.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use glmtune_engine::generation::sequence_logits;
use glmtune_engine::model::ChatGlmModel;
use glmtune_engine::quant::{quantize_checkpoint, Bits, EmbeddingFormat};

use common::*;

/// THUDM's f32 forward against ours on the same weights (the f32 parity bound of
/// `model_parity.rs`).
const TOLERANCE: f32 = 5e-5;

fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/thudm_quantized")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glmtune-thudm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of THUDM's folder with its pickle rewritten as safetensors, tensor for tensor (int8 bytes,
/// f16 scales, f32 rest), so the safetensors reader meets the same layout.
fn as_safetensors(bits: u32) -> PathBuf {
    as_edited_safetensors(bits, |_| {})
}

/// [`as_safetensors`] with the tensors edited before they are written.
fn as_edited_safetensors(
    bits: u32,
    edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>),
) -> PathBuf {
    let source = reference_dir().join(format!("int{bits}"));
    let dir = scratch(&format!("int{bits}-safetensors"));
    let tensors = candle_core::pickle::read_all(source.join("pytorch_model.bin")).unwrap();
    assert!(
        tensors.iter().any(|(_, t)| t.dtype() == DType::U8),
        "THUDM's pickle holds int8 tensors"
    );
    let mut map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    edit(&mut map);
    candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
    std::fs::copy(source.join("config.json"), dir.join("config.json")).unwrap();
    dir
}

fn logits(dir: &Path, ids: &[u32]) -> Tensor {
    let model = ChatGlmModel::load(dir, DType::F32, &Device::Cpu).unwrap();
    sequence_logits(&model, None, ids).unwrap()
}

#[test]
fn thudm_int8_and_int4_checkpoints_give_thudms_logits() {
    let reference = reference_logits_at(&reference_dir().join("logits.safetensors"));
    for bits in [8, 4] {
        let pickle = reference_dir().join(format!("int{bits}"));
        let safetensors = as_safetensors(bits);
        for (i, ids) in cases().iter().enumerate() {
            let expected = &reference[&format!("int{bits}_float.{i}")];
            for (dir, form) in [(&pickle, "pickle"), (&safetensors, "safetensors")] {
                let error = relative_error(&logits(dir, ids), expected);
                eprintln!("int{bits} {form} case {i}: relative error {error:.2e}");
                assert!(error < TOLERANCE, "int{bits} {form} case {i}: {error}");
            }
            // The quantization visibly moved the logits, so the layout really was decoded.
            let moved = relative_error(expected, &reference[&format!("f32.{i}")]);
            assert!(
                moved > 100.0 * TOLERANCE,
                "int{bits} case {i}: moved {moved}"
            );
        }
        std::fs::remove_dir_all(&safetensors).unwrap();
    }
}

fn reference_logits_at(path: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[test]
fn a_quantized_weight_of_the_wrong_width_is_named() {
    // 20 bytes a row where the model needs 64 weights: neither one nor two a byte.
    let name = "transformer.layers.0.attention.query_key_value.weight";
    let quantized = as_edited_safetensors(4, |tensors| {
        let bytes = Tensor::zeros((192, 20), DType::U8, &Device::Cpu).unwrap();
        tensors.insert(name.to_owned(), bytes);
    });
    let error = ChatGlmModel::load(&quantized, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(name) && error.contains("int4") && error.contains("20 bytes"),
        "{error}"
    );
    std::fs::remove_dir_all(&quantized).unwrap();
}

#[test]
fn thudm_weights_stay_quantized_value_for_value() {
    // `load_keeping_quantized` (a training base) repacks THUDM's int8/int4 rows into q8_0/q4_0
    // blocks: the same logits as the widened weights, bit for bit, as the blocks hold the values.
    // `glmtune quantize` to the same bits repacks them the same way instead of rounding again.
    let ids = &cases()[0];
    for (bits, quant_bits) in [(8, Bits::Eight), (4, Bits::Four)] {
        let dir = reference_dir().join(format!("int{bits}"));
        let kept = ChatGlmModel::load_keeping_quantized(&dir, DType::F32, &Device::Cpu).unwrap();
        assert!(kept.linear_format().is_some(), "int{bits}");
        let exact = sequence_logits(&kept.dequantized().unwrap(), None, ids).unwrap();
        assert_eq!(relative_error(&exact, &logits(&dir, ids)), 0.0, "int{bits}");

        let out = scratch(&format!("int{bits}-quantized"));
        let (_, quantized) =
            quantize_checkpoint(&dir, &out, quant_bits, EmbeddingFormat::F16).unwrap();
        let expected = kept
            .quantized(
                kept.linear_format().unwrap(),
                candle_core::quantized::GgmlDType::F16,
            )
            .unwrap();
        let ours = sequence_logits(&quantized.dequantized().unwrap(), None, ids).unwrap();
        let theirs = sequence_logits(&expected.dequantized().unwrap(), None, ids).unwrap();
        assert_eq!(relative_error(&ours, &theirs), 0.0, "int{bits}");
        std::fs::remove_dir_all(&out).unwrap();
    }
}
