//! `checkpoint::torch_writer::save` read back through our own `Checkpoint` loader (candle's torch
//! pickle reader). Compatibility with real PyTorch was checked by hand, since tests must not need
//! Python.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use glmtune_engine::checkpoint::torch_writer::save;
use glmtune_engine::checkpoint::Checkpoint;
use glmtune_engine::error::EngineError;

/// A fresh folder per call, removed on drop, so parallel tests never share files.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "glmtune-torch-writer-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ramp(shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::arange(0f32, n as f32, &Device::Cpu)
        .unwrap()
        .affine(0.25, -1.5)
        .unwrap()
        .reshape(shape)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn sample_tensors() -> Vec<(String, Tensor)> {
    vec![
        (
            "transformer.prefix_encoder.embedding.weight".to_owned(),
            ramp(&[4, 6], DType::F32),
        ),
        ("scalar".to_owned(), ramp(&[], DType::F32)),
        ("half.vector".to_owned(), ramp(&[5], DType::F16)),
        ("bf16.cube".to_owned(), ramp(&[2, 3, 4], DType::BF16)),
        ("f32.rank4".to_owned(), ramp(&[2, 1, 3, 2], DType::F32)),
        ("empty".to_owned(), ramp(&[0, 3], DType::F16)),
    ]
}

fn assert_same(loaded: &Tensor, expected: &Tensor) {
    assert_eq!(loaded.dims(), expected.dims());
    assert_eq!(loaded.dtype(), expected.dtype());
    let as_f32 = |t: &Tensor| {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(as_f32(loaded), as_f32(expected));
}

fn load_all(dir: &Path, tensors: &[(String, Tensor)]) -> Vec<Tensor> {
    let checkpoint = Checkpoint::open(dir).unwrap();
    let mut names: Vec<&str> = checkpoint.names().collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    tensors
        .iter()
        .map(|(name, t)| {
            checkpoint
                .load(name, Some(t.dims()), t.dtype(), &Device::Cpu)
                .unwrap()
        })
        .collect()
}

#[test]
fn round_trips_dtypes_and_shapes() {
    let dir = TempDir::new("roundtrip");
    let tensors = sample_tensors();
    save(&dir.path().join("pytorch_model.bin"), &tensors).unwrap();
    for (loaded, (_, expected)) in load_all(dir.path(), &tensors).iter().zip(&tensors) {
        assert_same(loaded, expected);
    }
    // Only the checkpoint itself is left: the temporary file was renamed away.
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["pytorch_model.bin"]);
}

#[test]
fn stored_dtype_is_kept() {
    // `Checkpoint::load` converts, so ask for f32 and check the values survived the round trip
    // exactly: f16/bf16 ramps of quarter steps are exactly representable.
    let dir = TempDir::new("dtype");
    let tensors = sample_tensors();
    save(&dir.path().join("pytorch_model.bin"), &tensors).unwrap();
    let pth =
        candle_core::pickle::PthTensors::new(dir.path().join("pytorch_model.bin"), None).unwrap();
    for (name, expected) in &tensors {
        let info = &pth.tensor_infos()[name];
        assert_eq!(info.dtype, expected.dtype(), "{name}");
        assert_same(&pth.get(name).unwrap().unwrap(), expected);
    }
}

#[test]
fn saving_is_deterministic() {
    let a = TempDir::new("det-a");
    let b = TempDir::new("det-b");
    let tensors = sample_tensors();
    save(&a.path().join("pytorch_model.bin"), &tensors).unwrap();
    // A different file name too: the archive's contents do not depend on it.
    save(&b.path().join("other.bin"), &tensors).unwrap();
    let bytes_a = std::fs::read(a.path().join("pytorch_model.bin")).unwrap();
    let bytes_b = std::fs::read(b.path().join("other.bin")).unwrap();
    assert!(!bytes_a.is_empty());
    assert!(bytes_a == bytes_b, "two saves of the same tensors differ");
}

#[test]
fn saves_non_contiguous_tensors_in_logical_order() {
    let dir = TempDir::new("strided");
    let base = ramp(&[3, 5], DType::F32);
    let transposed = base.t().unwrap();
    assert!(!transposed.is_contiguous());
    let narrowed = ramp(&[4, 6], DType::BF16).narrow(1, 2, 3).unwrap();
    assert!(!narrowed.is_contiguous());
    let tensors = vec![
        ("transposed".to_owned(), transposed.clone()),
        ("narrowed".to_owned(), narrowed.clone()),
    ];
    save(&dir.path().join("pytorch_model.bin"), &tensors).unwrap();
    let loaded = load_all(dir.path(), &tensors);
    assert_same(&loaded[0], &transposed);
    assert_same(&loaded[1], &narrowed);
    assert_eq!(
        loaded[0].to_vec2::<f32>().unwrap(),
        transposed.to_vec2::<f32>().unwrap()
    );
}

#[test]
fn overwrites_an_existing_checkpoint() {
    let dir = TempDir::new("overwrite");
    let path = dir.path().join("pytorch_model.bin");
    save(&path, &[("w".to_owned(), ramp(&[8], DType::F32))]).unwrap();
    let tensors = vec![("w".to_owned(), ramp(&[2], DType::F16))];
    save(&path, &tensors).unwrap();
    assert_same(&load_all(dir.path(), &tensors)[0], &tensors[0].1);
}

#[test]
fn builds_sharded_checkpoints() {
    let dir = TempDir::new("sharded");
    let tensors = sample_tensors();
    let (first, second) = tensors.split_at(3);
    let shards = [
        ("pytorch_model-00001-of-00002.bin", first),
        ("pytorch_model-00002-of-00002.bin", second),
    ];
    let mut weight_map = serde_json::Map::new();
    for (file, part) in shards {
        save(&dir.path().join(file), part).unwrap();
        for (name, _) in part {
            weight_map.insert(name.clone(), file.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(
        dir.path().join("pytorch_model.bin.index.json"),
        index.to_string(),
    )
    .unwrap();
    for (loaded, (_, expected)) in load_all(dir.path(), &tensors).iter().zip(&tensors) {
        assert_same(loaded, expected);
    }
}

#[test]
fn missing_folder_is_an_error() {
    let dir = TempDir::new("missing");
    let path = dir.path().join("no-such-folder").join("pytorch_model.bin");
    let err = save(&path, &sample_tensors()).unwrap_err();
    assert!(matches!(err, EngineError::Io { .. }), "{err}");
    // The message names the file asked for, not the temporary one.
    assert!(
        err.to_string().starts_with(&path.display().to_string()),
        "{err}"
    );
    assert!(!path.exists());
}

#[test]
fn duplicate_names_are_an_error() {
    let dir = TempDir::new("dup");
    let path = dir.path().join("pytorch_model.bin");
    let t = ramp(&[2], DType::F32);
    let err = save(&path, &[("w".to_owned(), t.clone()), ("w".to_owned(), t)]).unwrap_err();
    assert!(matches!(err, EngineError::Tensor { .. }), "{err}");
    assert!(!path.exists());
}

#[test]
fn unsupported_dtype_is_an_error() {
    let dir = TempDir::new("dtype-err");
    let path = dir.path().join("pytorch_model.bin");
    let ids = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
    let err = save(&path, &[("ids".to_owned(), ids)]).unwrap_err();
    assert!(matches!(err, EngineError::Tensor { .. }), "{err}");
    assert!(!path.exists());
}
