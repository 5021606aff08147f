//! THUDM's own int4/int8 checkpoint layout (`quantization.py`): int8 weights, two int4 a byte
//! with the first in the high nibble, a per-row f16 `weight_scale`. A copy of the fixture quantized
//! the official way, saved as a torch pickle (int8) and as safetensors (int4), loads to the same
//! logits as the fixture with those dequantized weights written out in f32.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use glmtune_engine::checkpoint::{torch_writer, Checkpoint};
use glmtune_engine::generation::sequence_logits;
use glmtune_engine::model::ChatGlmModel;

use common::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glmtune-thudm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The weights `quantize(bits)` replaces: the four linear layers of each block and the embeddings.
fn quantized_by_thudm(name: &str) -> bool {
    name.ends_with("word_embeddings.weight")
        || [
            "query_key_value",
            "attention.dense",
            "dense_h_to_4h",
            "dense_4h_to_h",
        ]
        .iter()
        .any(|layer| name.ends_with(&format!("{layer}.weight")))
}

/// `quantization.py`: scale = max|row| / (2^(bits-1) - 1) in f16, q = round(w / scale); at 4 bits
/// `(q[2j] << 4) | (q[2j+1] & 0xF)`. Returns the stored (bytes, scale) and the dequantized f32.
fn quantize_row_wise(weight: &Tensor, bits: u32) -> (Tensor, Tensor, Tensor) {
    let (rows, cols) = weight.dims2().unwrap();
    let values: Vec<Vec<f32>> = weight.to_vec2().unwrap();
    let limit = ((1 << (bits - 1)) - 1) as f32;
    let (mut bytes, mut scales, mut widened) = (Vec::new(), Vec::new(), Vec::new());
    for row in &values {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = half::f16::from_f32(max / limit);
        let s = scale.to_f32();
        let q: Vec<i8> = row
            .iter()
            .map(|v| (v / s).round().clamp(-limit, limit) as i8)
            .collect();
        widened.extend(q.iter().map(|&q| f32::from(q) * s));
        if bits == 8 {
            bytes.extend(q.iter().map(|&q| q as u8));
        } else {
            bytes.extend(q.chunks(2).map(|p| ((p[0] << 4) | (p[1] & 0x0F)) as u8));
        }
        scales.push(scale);
    }
    let packed_cols = if bits == 8 { cols } else { cols / 2 };
    (
        Tensor::from_vec(bytes, (rows, packed_cols), &Device::Cpu).unwrap(),
        Tensor::from_vec(scales, rows, &Device::Cpu).unwrap(),
        Tensor::from_vec(widened, (rows, cols), &Device::Cpu).unwrap(),
    )
}

/// Writes the THUDM-quantized copy and the f32 reference of the fixture into two folders.
fn write_pair(bits: u32, pickle: bool) -> (PathBuf, PathBuf) {
    let quantized_dir = scratch(&format!("int{bits}"));
    let reference_dir = scratch(&format!("int{bits}-reference"));
    let checkpoint = Checkpoint::open(&fixture_dir().join("model")).unwrap();
    let mut names: Vec<String> = checkpoint.names().map(str::to_owned).collect();
    names.sort();
    let (mut quantized, mut reference) = (Vec::new(), Vec::new());
    for name in names {
        let tensor = checkpoint
            .load(&name, None, DType::F32, &Device::Cpu)
            .unwrap();
        if quantized_by_thudm(&name) {
            let (bytes, scale, widened) = quantize_row_wise(&tensor, bits);
            quantized.push((name.clone(), bytes));
            quantized.push((format!("{name}_scale"), scale));
            reference.push((name, widened));
        } else {
            quantized.push((name.clone(), tensor.clone()));
            reference.push((name, tensor));
        }
    }
    if pickle {
        torch_writer::save(&quantized_dir.join("pytorch_model.bin"), &quantized).unwrap();
    } else {
        save_safetensors(&quantized_dir.join("model.safetensors"), &quantized);
    }
    save_safetensors(&reference_dir.join("model.safetensors"), &reference);
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("model/config.json")).unwrap(),
    )
    .unwrap();
    config["quantization_bit"] = bits.into();
    std::fs::write(quantized_dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        fixture_dir().join("model/config.json"),
        reference_dir.join("config.json"),
    )
    .unwrap();
    (quantized_dir, reference_dir)
}

fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) {
    let map: std::collections::HashMap<String, Tensor> = tensors.iter().cloned().collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

fn logits(dir: &Path, ids: &[u32]) -> Tensor {
    let model = ChatGlmModel::load(dir, DType::F32, &Device::Cpu).unwrap();
    sequence_logits(&model, None, ids).unwrap()
}

#[test]
fn thudm_int8_and_int4_checkpoints_load_as_their_dequantized_weights() {
    for (bits, pickle) in [(8, true), (4, false), (4, true)] {
        let (quantized, reference) = write_pair(bits, pickle);
        for ids in cases() {
            let error = relative_error(&logits(&quantized, &ids), &logits(&reference, &ids));
            assert_eq!(
                error, 0.0,
                "int{bits} (pickle {pickle}): relative error {error}"
            );
        }
        // And they are not the original weights: the layout really was decoded.
        let original =
            ChatGlmModel::load(&fixture_dir().join("model"), DType::F32, &Device::Cpu).unwrap();
        let ids = &cases()[0];
        let moved = relative_error(
            &logits(&quantized, ids),
            &sequence_logits(&original, None, ids).unwrap(),
        );
        assert!(moved > 0.0, "int{bits}: no quantization error at all");
        std::fs::remove_dir_all(&quantized).unwrap();
        std::fs::remove_dir_all(&reference).unwrap();
    }
}

#[test]
fn a_quantized_weight_of_the_wrong_width_is_named() {
    let (quantized, reference) = write_pair(4, false);
    // Claim a wider model than the bytes hold: the first quantized weight read says so.
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(quantized.join("config.json")).unwrap())
            .unwrap();
    config["hidden_size"] = 256.into();
    std::fs::write(quantized.join("config.json"), config.to_string()).unwrap();
    let error = ChatGlmModel::load(&quantized, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("word_embeddings.weight") && error.contains("int4"),
        "{error}"
    );
    std::fs::remove_dir_all(&quantized).unwrap();
    std::fs::remove_dir_all(&reference).unwrap();
}
