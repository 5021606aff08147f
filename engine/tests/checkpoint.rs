//! Checkpoint layouts (single and sharded safetensors, f16 storage, tied LM head) give the same
//! logits as the fixture's torch pickle; broken checkpoints fail with the file and tensor named.
//!
//! Past 500 lines on purpose: every layout in one test binary over shared helpers (each test binary
//! links the engine again, which costs CI minutes and disk).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use glmtune_engine::checkpoint::Checkpoint;
use glmtune_engine::generation::sequence_logits;
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};

use common::*;

/// A fresh empty folder under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glmtune-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture_tensors() -> Vec<(String, Tensor)> {
    let checkpoint = Checkpoint::open(&fixture_dir().join("model")).unwrap();
    let mut names: Vec<String> = checkpoint.names().map(str::to_owned).collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let t = checkpoint.load(&n, None, DType::F32, &Device::Cpu).unwrap();
            (n, t)
        })
        .collect()
}

fn copy_config(dir: &Path) {
    std::fs::copy(
        fixture_dir().join("model/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
}

fn save(path: &Path, tensors: &[(String, Tensor)]) {
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

fn case_ids() -> Vec<u32> {
    ids_of(&expected()["cases"][2]["ids"])
}

fn reference() -> Tensor {
    let model = ChatGlmModel::load(&fixture_dir().join("model"), DType::F32, &Device::Cpu).unwrap();
    sequence_logits(&model, None, &case_ids()).unwrap()
}

fn logits_of(dir: &Path) -> Tensor {
    let model = ChatGlmModel::load(dir, DType::F32, &Device::Cpu).unwrap();
    sequence_logits(&model, None, &case_ids()).unwrap()
}

#[test]
fn single_safetensors_matches_torch_pickle() {
    let dir = scratch("single");
    copy_config(&dir);
    save(&dir.join("model.safetensors"), &fixture_tensors());
    assert!(relative_error(&logits_of(&dir), &reference()) < 1e-7);
}

#[test]
fn sharded_safetensors_with_index_matches() {
    let dir = scratch("sharded");
    copy_config(&dir);
    let tensors = fixture_tensors();
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        save(&dir.join(shard), part);
        for (name, _) in part {
            weight_map.insert(name.clone(), shard.into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert!(relative_error(&logits_of(&dir), &reference()) < 1e-7);
}

#[test]
fn sharded_torch_pickles_with_index_match() {
    let dir = scratch("sharded-bin");
    copy_config(&dir);
    let tensors = fixture_tensors();
    let (first, second) = tensors.split_at(tensors.len() / 3);
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [
        ("pytorch_model-00001-of-00002.bin", first),
        ("pytorch_model-00002-of-00002.bin", second),
    ] {
        glmtune_engine::checkpoint::torch_writer::save(&dir.join(shard), part).unwrap();
        for (name, _) in part {
            weight_map.insert(name.clone(), shard.into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("pytorch_model.bin.index.json"), index.to_string()).unwrap();
    assert!(relative_error(&logits_of(&dir), &reference()) < 1e-7);
}

#[test]
fn f16_storage_converts_to_the_requested_dtype() {
    let dir = scratch("f16");
    copy_config(&dir);
    let halves: Vec<(String, Tensor)> = fixture_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.to_dtype(DType::F16).unwrap()))
        .collect();
    save(&dir.join("model.safetensors"), &halves);
    // f16-rounded weights move the logits by ~1e-3 at most.
    let error = relative_error(&logits_of(&dir), &reference());
    assert!(error < 1e-2, "{error}");
    for dtype in [DType::F16, DType::BF16] {
        let model = ChatGlmModel::load(&dir, dtype, &Device::Cpu).unwrap();
        let logits = sequence_logits(&model, None, &case_ids()).unwrap();
        let error = relative_error(&logits, &reference());
        assert!(error < 0.1, "{dtype:?}: {error}");
    }
}

#[test]
fn missing_lm_head_ties_to_the_embeddings() {
    let dir = scratch("tied");
    copy_config(&dir);
    let mut tensors = fixture_tensors();
    let embeddings = tensors
        .iter()
        .find(|(n, _)| n == "transformer.word_embeddings.weight")
        .unwrap()
        .1
        .clone();
    tensors.retain(|(n, _)| n != "lm_head.weight");
    save(&dir.join("model.safetensors"), &tensors);
    let model = ChatGlmModel::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let logits = sequence_logits(&model, None, &case_ids()).unwrap();
    // With a tied head, logits are the final hidden states against the embedding rows.
    assert_eq!(logits.dim(1).unwrap(), embeddings.dim(0).unwrap());
    assert!(
        relative_error(&logits, &reference()) > 1e-2,
        "the head must have changed"
    );
}

fn load_error(dir: &Path) -> String {
    ChatGlmModel::load(dir, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string()
}

#[test]
fn missing_tensor_is_named() {
    let dir = scratch("missing-tensor");
    copy_config(&dir);
    let mut tensors = fixture_tensors();
    tensors.retain(|(n, _)| n != "transformer.layers.1.mlp.dense_4h_to_h.weight");
    save(&dir.join("model.safetensors"), &tensors);
    let error = load_error(&dir);
    assert!(
        error.contains("transformer.layers.1.mlp.dense_4h_to_h.weight")
            && error.contains("missing"),
        "{error}"
    );
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let dir = scratch("wrong-shape");
    copy_config(&dir);
    let mut tensors = fixture_tensors();
    for (name, tensor) in tensors.iter_mut() {
        if name == "transformer.layers.0.attention.dense.weight" {
            *tensor = tensor.narrow(0, 0, 32).unwrap();
        }
    }
    save(&dir.join("model.safetensors"), &tensors);
    let error = load_error(&dir);
    assert!(
        error.contains("model.safetensors")
            && error.contains("attention.dense.weight")
            && error.contains("[32, 64]")
            && error.contains("[64, 64]"),
        "{error}"
    );
}

#[test]
fn truncated_files_are_errors_naming_the_file() {
    for (name, source) in [
        (
            "pytorch_model.bin",
            fixture_dir().join("model/pytorch_model.bin"),
        ),
        ("model.safetensors", PathBuf::new()),
    ] {
        let dir = scratch(&format!("truncated-{name}"));
        copy_config(&dir);
        let bytes = if name == "model.safetensors" {
            save(&dir.join(name), &fixture_tensors());
            std::fs::read(dir.join(name)).unwrap()
        } else {
            std::fs::read(source).unwrap()
        };
        for cut in [bytes.len() / 2, 100, 7] {
            std::fs::write(dir.join(name), &bytes[..cut]).unwrap();
            let error = load_error(&dir);
            assert!(error.contains(name), "{name} cut at {cut}: {error}");
        }
    }
}

#[test]
fn corrupt_tensor_data_in_a_torch_pickle_is_an_error() {
    let dir = scratch("corrupt-pickle");
    copy_config(&dir);
    let mut bytes = std::fs::read(fixture_dir().join("model/pytorch_model.bin")).unwrap();
    // Cut a stored tensor short while keeping the zip's directory: the declared sizes disagree.
    let zip_directory = bytes.len() - 4096;
    bytes.drain(zip_directory - 20_000..zip_directory - 10_000);
    std::fs::write(dir.join("pytorch_model.bin"), &bytes).unwrap();
    let error = load_error(&dir);
    assert!(error.contains("pytorch_model.bin"), "{error}");
}

#[test]
fn missing_files_are_reported() {
    let dir = scratch("empty");
    let error = load_error(&dir);
    assert!(error.contains("config.json"), "{error}");
    copy_config(&dir);
    let error = load_error(&dir);
    assert!(
        error.contains("no weights found") && error.contains("pytorch_model.bin"),
        "{error}"
    );
    let index =
        serde_json::json!({"weight_map": {"lm_head.weight": "pytorch_model-00002-of-00002.bin"}});
    std::fs::write(dir.join("pytorch_model.bin.index.json"), index.to_string()).unwrap();
    let error = load_error(&dir);
    assert!(
        error.contains("pytorch_model-00002-of-00002.bin") && error.contains("not found"),
        "{error}"
    );
    std::fs::write(
        dir.join("pytorch_model.bin.index.json"),
        "{\"weight_map\": 3}",
    )
    .unwrap();
    let error = load_error(&dir);
    assert!(error.contains("weight_map"), "{error}");
}

fn adapter_dir(name: &str, config: serde_json::Value, tensors: &[(String, Tensor)]) -> PathBuf {
    let dir = scratch(name);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    save(&dir.join("adapter.safetensors"), tensors);
    dir
}

fn adapter_error(dir: &Path) -> String {
    let model = ChatGlmModel::load(&fixture_dir().join("model"), DType::F32, &Device::Cpu).unwrap();
    PrefixEncoder::load_adapter(dir, model.config(), &Device::Cpu)
        .unwrap_err()
        .to_string()
}

#[test]
fn adapter_pre_seq_len_mismatch_shows_both_values() {
    let rows = Tensor::zeros((4, 3 * 2 * 64), DType::F32, &Device::Cpu).unwrap();
    let dir = adapter_dir(
        "adapter-len",
        serde_json::json!({"pre_seq_len": 128, "prefix_projection": false}),
        &[("transformer.prefix_encoder.embedding.weight".into(), rows)],
    );
    let error = adapter_error(&dir);
    assert!(
        error.contains("pre_seq_len=128") && error.contains("pre_seq_len=4"),
        "{error}"
    );
}

#[test]
fn adapter_projection_mismatch_is_explained() {
    let rows = Tensor::zeros((4, 3 * 2 * 64), DType::F32, &Device::Cpu).unwrap();
    let dir = adapter_dir(
        "adapter-projection",
        serde_json::json!({"pre_seq_len": 4, "prefix_projection": true}),
        &[("transformer.prefix_encoder.embedding.weight".into(), rows)],
    );
    let error = adapter_error(&dir);
    assert!(
        error.contains("prefix_projection") && error.contains("lack"),
        "{error}"
    );
}

#[test]
fn adapter_for_another_model_is_refused() {
    let rows = Tensor::zeros((4, 5 * 2 * 64), DType::F32, &Device::Cpu).unwrap();
    let dir = adapter_dir(
        "adapter-layers",
        serde_json::json!({"pre_seq_len": 4, "num_layers": 5}),
        &[(
            "transformer.prefix_encoder.embedding.weight".into(),
            rows.clone(),
        )],
    );
    let error = adapter_error(&dir);
    assert!(error.contains("num_layers 5"), "{error}");
    let dir = adapter_dir(
        "adapter-width",
        serde_json::json!({"pre_seq_len": 4}),
        &[("transformer.prefix_encoder.embedding.weight".into(), rows)],
    );
    let error = adapter_error(&dir);
    assert!(
        error.contains("[4, 640]") && error.contains("[4, 384]"),
        "{error}"
    );
    let dir = scratch("adapter-no-config");
    let error = adapter_error(&dir);
    assert!(error.contains("config.json"), "{error}");
}

#[test]
fn projection_adapter_loads_and_changes_logits() {
    let device = Device::Cpu;
    let (h, width) = (64, 3 * 2 * 64);
    let seed = std::cell::Cell::new(0);
    let randn = |shape: &[usize]| {
        seed.set(seed.get() + 1);
        glmtune_engine::model::init::normal(shape, 0.5, seed.get(), &device).unwrap()
    };
    let tensors = vec![
        (
            "transformer.prefix_encoder.embedding.weight".to_owned(),
            randn(&[4, h]),
        ),
        (
            "transformer.prefix_encoder.trans.0.weight".to_owned(),
            randn(&[h, h]),
        ),
        (
            "transformer.prefix_encoder.trans.0.bias".to_owned(),
            randn(&[h]),
        ),
        (
            "transformer.prefix_encoder.trans.2.weight".to_owned(),
            randn(&[width, h]),
        ),
        (
            "transformer.prefix_encoder.trans.2.bias".to_owned(),
            randn(&[width]),
        ),
    ];
    let dir = adapter_dir(
        "adapter-mlp",
        serde_json::json!({"pre_seq_len": 4, "prefix_projection": true}),
        &tensors,
    );
    let model = ChatGlmModel::load(&fixture_dir().join("model"), DType::F32, &device).unwrap();
    let prefix = PrefixEncoder::load_adapter(&dir, model.config(), &device).unwrap();
    assert!(prefix.projection.is_some());
    let encoded = prefix.encode().unwrap();
    assert_eq!(encoded.dims(), &[4, width]);
    // Embedding → Linear → Tanh → Linear, computed by hand for the first row.
    let row = tensors[0].1.get(0).unwrap();
    let hidden = (tensors[1]
        .1
        .matmul(&row.unsqueeze(1).unwrap())
        .unwrap()
        .squeeze(1)
        .unwrap()
        + &tensors[2].1)
        .unwrap()
        .tanh()
        .unwrap();
    let expected_row = (tensors[3]
        .1
        .matmul(&hidden.unsqueeze(1).unwrap())
        .unwrap()
        .squeeze(1)
        .unwrap()
        + &tensors[4].1)
        .unwrap();
    assert!(relative_error(&encoded.get(0).unwrap(), &expected_row) < 1e-6);
    let with = sequence_logits(&model, Some(&prefix), &case_ids()).unwrap();
    assert!(relative_error(&with, &reference()) > 1e-3);
}

/// A browser holds an adapter's files as bytes: the same encoder as from the folder, and the same
/// refusals, naming the adapter.
#[test]
fn adapter_from_bytes_matches_the_folder() {
    let model = ChatGlmModel::load(&fixture_dir().join("model"), DType::F32, &Device::Cpu).unwrap();
    let trained = fixture_dir().join("adapter_trained");
    let config = std::fs::read_to_string(trained.join("config.json")).unwrap();
    let folder = PrefixEncoder::load_adapter(&trained, model.config(), &Device::Cpu).unwrap();
    let dir = adapter_dir(
        "adapter-bytes",
        serde_json::from_str(&config).unwrap(),
        &folder
            .named_tensors()
            .into_iter()
            .map(|(name, t)| (name.to_owned(), t))
            .collect::<Vec<_>>(),
    );
    let bytes = std::fs::read(dir.join("adapter.safetensors")).unwrap();
    let loaded = PrefixEncoder::from_bytes(
        "run-1",
        &config,
        bytes.clone(),
        model.config(),
        &Device::Cpu,
    )
    .unwrap();
    let ids = case_ids();
    let a = sequence_logits(&model, Some(&folder), &ids).unwrap();
    let b = sequence_logits(&model, Some(&loaded), &ids).unwrap();
    assert_eq!(relative_error(&a, &b), 0.0);

    let error = PrefixEncoder::from_bytes(
        "run-1",
        &config,
        bytes[..100].to_vec(),
        model.config(),
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("run-1/adapter.safetensors"), "{error}");
    let error = PrefixEncoder::from_bytes(
        "run-1",
        "{\"pre_seq_len\": 4,",
        bytes,
        model.config(),
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("run-1/config.json") && error.contains("line 1"),
        "{error}"
    );
}

/// The error opening a checkpoint folder whose `pytorch_model.bin` is `bytes`.
fn refusal_of_torch_file(bytes: &[u8], name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("glmtune-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pytorch_model.bin"), bytes).unwrap();
    let error = glmtune_engine::checkpoint::Checkpoint::open(&dir)
        .err()
        .expect("refused")
        .to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    error
}

/// Found by `fuzz/fuzz_targets/torch_checkpoint.rs`: a zip whose central directory declares a
/// petabyte-sized entry made the reader reserve it. Now every entry is checked (header and declared
/// size against the file's length) before anything is read, and this file is refused by name.
#[test]
fn a_zip_entry_larger_than_its_file_is_refused_before_reading() {
    let error = refusal_of_torch_file(
        include_bytes!("../../fuzz/corpus/torch_checkpoint/regression-zip-entry-size"),
        "zip-size",
    );
    assert!(
        error.contains("pytorch_model.bin") && error.contains("zip entry"),
        "{error}"
    );
}

/// Found by the same target: a pickle string declaring 4 GB made the unpickler reserve it before
/// reading; its buffer now grows with the bytes that are there (vendor/candle-core/PATCHED.md).
#[test]
fn a_pickle_string_longer_than_its_file_is_an_error() {
    let error = refusal_of_torch_file(
        include_bytes!("../../fuzz/corpus/torch_checkpoint/regression-pickle-string-length"),
        "pickle-len",
    );
    assert!(error.contains("pytorch_model.bin"), "{error}");
}

/// Found by the same target in a longer run: a pickle whose tensor rebuild tuple is too short made
/// the unpickler panic (`Vec::remove` out of range). Now that entry is an error the reader skips:
/// the file opens, and every tensor it still names loads or is refused, without a panic.
#[test]
fn a_pickle_with_a_short_rebuild_tuple_does_not_panic() {
    let dir = std::env::temp_dir().join(format!("glmtune-short-tuple-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pytorch_model.bin"),
        include_bytes!("../../fuzz/corpus/torch_checkpoint/regression-short-rebuild-tuple"),
    )
    .unwrap();
    if let Ok(checkpoint) = glmtune_engine::checkpoint::Checkpoint::open(&dir) {
        let names: Vec<String> = checkpoint.names().map(str::to_owned).collect();
        for name in names {
            let _ = checkpoint.load(&name, None, DType::F32, &Device::Cpu);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A zip archive of one entry, written by hand so that its headers can say what no zip writer
/// would: `method` 0 (stored) or 8 (deflate), and `declared` as the entry's uncompressed size.
fn zip_with_entry(name: &str, method: u16, data: &[u8], declared: u32) -> Vec<u8> {
    let stored = u32::try_from(data.len()).unwrap();
    let name_len = u16::try_from(name.len()).unwrap();
    let mut zip = Vec::new();
    zip.extend(0x0403_4b50u32.to_le_bytes());
    zip.extend(20u16.to_le_bytes()); // version needed
    zip.extend(0u16.to_le_bytes()); // flags
    zip.extend(method.to_le_bytes());
    zip.extend([0u8; 8]); // time, date, crc32
    zip.extend(stored.to_le_bytes());
    zip.extend(declared.to_le_bytes());
    zip.extend(name_len.to_le_bytes());
    zip.extend(0u16.to_le_bytes()); // extra field length
    zip.extend(name.as_bytes());
    zip.extend(data);
    let directory = u32::try_from(zip.len()).unwrap();
    zip.extend(0x0201_4b50u32.to_le_bytes());
    zip.extend(20u16.to_le_bytes()); // version made by
    zip.extend(20u16.to_le_bytes()); // version needed
    zip.extend(0u16.to_le_bytes());
    zip.extend(method.to_le_bytes());
    zip.extend([0u8; 8]);
    zip.extend(stored.to_le_bytes());
    zip.extend(declared.to_le_bytes());
    zip.extend(name_len.to_le_bytes());
    zip.extend([0u8; 12]); // extra, comment, disk, internal and external attributes
    zip.extend(0u32.to_le_bytes()); // the local header's offset
    zip.extend(name.as_bytes());
    let directory_len = u32::try_from(zip.len()).unwrap() - directory;
    zip.extend(0x0605_4b50u32.to_le_bytes());
    zip.extend([0u8; 4]); // this disk, the directory's disk
    zip.extend(1u16.to_le_bytes());
    zip.extend(1u16.to_le_bytes());
    zip.extend(directory_len.to_le_bytes());
    zip.extend(directory.to_le_bytes());
    zip.extend(0u16.to_le_bytes()); // comment length
    zip
}

/// A zip bomb: a compressed entry that says it expands 100 000 times (deflate reaches about 1 000)
/// is refused before anything is inflated.
#[test]
fn a_compressed_entry_that_expands_past_the_limit_is_refused() {
    let bomb = zip_with_entry("archive/data.pkl", 8, &[0x03, 0x00], 100_000 * 200);
    let error = refusal_of_torch_file(&bomb, "zip-bomb");
    assert!(
        error.contains("zip entry \"archive/data.pkl\" declares 20000000 bytes"),
        "{error}"
    );
}

/// Entry names are never used as paths, but a name that climbs out of the archive marks a crafted
/// file: it is refused by name, whatever the entry holds.
#[test]
fn zip_entries_named_outside_the_archive_are_refused() {
    for name in ["../../etc/passwd", "/etc/passwd", "archive/../../x"] {
        let zip = zip_with_entry(name, 0, b"x", 1);
        let error = refusal_of_torch_file(&zip, "zip-traversal");
        assert!(
            error.contains("outside the archive") && error.contains(name),
            "{name}: {error}"
        );
    }
    // The same file with a plain name gets past this check (it holds no tensor, whether it opens
    // or not).
    let dir = std::env::temp_dir().join(format!("glmtune-zip-plain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = zip_with_entry("archive/data.pkl", 0, b"x", 1);
    std::fs::write(dir.join("pytorch_model.bin"), plain).unwrap();
    if let Err(error) = glmtune_engine::checkpoint::Checkpoint::open(&dir) {
        assert!(
            !error.to_string().contains("outside the archive"),
            "{error}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
