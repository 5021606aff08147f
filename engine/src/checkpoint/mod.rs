//! Tensors from a Hugging Face checkpoint folder, in any of its published layouts.
//!
//! `pytorch_model.bin` (torch zip pickle), `pytorch_model-0000k-of-0000n.bin` with
//! `pytorch_model.bin.index.json`, `model.safetensors` and its sharded index. Safetensors files are
//! memory-mapped; torch pickles are read one tensor at a time, so the weights are never held twice.

mod bounds;
mod thudm_int;
pub mod torch_writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::quantized::QTensor;
use candle_core::safetensors::{BufferedSafetensors, MmapedSafetensors};
use candle_core::{DType, Device, Tensor};

use crate::error::{EngineError, Result};

const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
const SAFETENSORS_SINGLE: &str = "model.safetensors";
const PTH_INDEX: &str = "pytorch_model.bin.index.json";
const PTH_SINGLE: &str = "pytorch_model.bin";

/// One open weight file.
enum Shard {
    Pth(PthTensors),
    Safetensors(MmapedSafetensors),
    /// A safetensors file's bytes (a browser that downloaded it).
    Buffered(BufferedSafetensors),
}

/// The tensors of one checkpoint, found by name across its shards.
pub struct Checkpoint {
    dir: PathBuf,
    shard_paths: Vec<PathBuf>,
    shards: Vec<Shard>,
    /// Tensor name → index into `shards`.
    locations: HashMap<String, usize>,
}

impl Checkpoint {
    /// Opens the checkpoint in `dir`, preferring safetensors over torch pickles as transformers does.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_extra(dir, &[])
    }

    /// Like [`Checkpoint::open`], also accepting single-file names beyond the standard ones
    /// (adapters are saved as `adapter.safetensors` too).
    pub fn open_with_extra(dir: &Path, extra_single_files: &[&str]) -> Result<Self> {
        if !dir.is_dir() {
            return Err(EngineError::checkpoint(dir, "not a directory"));
        }
        for index in [SAFETENSORS_INDEX, PTH_INDEX] {
            let path = dir.join(index);
            if path.is_file() {
                return Self::open_sharded(dir, &path);
            }
        }
        let singles = [SAFETENSORS_SINGLE, PTH_SINGLE]
            .into_iter()
            .chain(extra_single_files.iter().copied());
        for name in singles {
            let path = dir.join(name);
            if path.is_file() {
                let mut checkpoint = Self::empty(dir);
                checkpoint.add_shard(&path)?;
                return Ok(checkpoint);
            }
        }
        let mut expected = vec![SAFETENSORS_INDEX, SAFETENSORS_SINGLE, PTH_INDEX, PTH_SINGLE];
        expected.extend_from_slice(extra_single_files);
        Err(EngineError::checkpoint(
            dir,
            format!("no weights found: expected one of {}", expected.join(", ")),
        ))
    }

    /// A checkpoint of one safetensors file held in memory; `path` names it in messages.
    pub fn from_safetensors_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let st = BufferedSafetensors::new(bytes).map_err(|e| {
            EngineError::checkpoint(path, format!("not a valid safetensors file: {e}"))
        })?;
        let names: Vec<String> = st.tensors().into_iter().map(|(name, _)| name).collect();
        let mut checkpoint = Self::empty(path.parent().unwrap_or(Path::new("")));
        checkpoint.record_shard(Shard::Buffered(st), names, path);
        Ok(checkpoint)
    }

    fn empty(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            shard_paths: Vec::new(),
            shards: Vec::new(),
            locations: HashMap::new(),
        }
    }

    fn open_sharded(dir: &Path, index_path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(index_path).map_err(|e| EngineError::io(index_path, e))?;
        let index: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            EngineError::checkpoint(
                index_path,
                format!("invalid JSON at line {}: {e}", e.line()),
            )
        })?;
        let weight_map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                EngineError::config(index_path, "weight_map", "missing or not an object")
            })?;
        let mut checkpoint = Self::empty(dir);
        let mut shard_of_file: HashMap<String, usize> = HashMap::new();
        for (tensor, file) in weight_map {
            let file = file.as_str().ok_or_else(|| {
                EngineError::config(
                    index_path,
                    format!("weight_map.{tensor}"),
                    "expected a file name",
                )
            })?;
            if file.contains('/') || file.contains('\\') || file == ".." {
                return Err(EngineError::config(
                    index_path,
                    format!("weight_map.{tensor}"),
                    format!("{file:?} is not a file name inside the checkpoint folder"),
                ));
            }
            let shard = match shard_of_file.get(file) {
                Some(&shard) => shard,
                None => {
                    let shard = checkpoint.add_shard(&dir.join(file))?;
                    shard_of_file.insert(file.to_owned(), shard);
                    shard
                }
            };
            match checkpoint.locations.get(tensor) {
                Some(&found) if found == shard => {}
                _ => {
                    return Err(EngineError::tensor(
                        dir.join(file),
                        tensor,
                        format!(
                            "listed in {} but not stored in this shard",
                            index_path.display()
                        ),
                    ))
                }
            }
        }
        Ok(checkpoint)
    }

    /// Opens one weight file and records where its tensors are; returns its shard index.
    fn add_shard(&mut self, path: &Path) -> Result<usize> {
        if !path.is_file() {
            return Err(EngineError::checkpoint(path, "weight file not found"));
        }
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let (shard, names): (Shard, Vec<String>) = if is_safetensors {
            // SAFETY: the file is mapped read-only; like every safetensors reader, we rely on it not
            // being truncated by another process while the model loads.
            let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| {
                EngineError::checkpoint(path, format!("not a valid safetensors file: {e}"))
            })?;
            let names = st.tensors().into_iter().map(|(name, _)| name).collect();
            (Shard::Safetensors(st), names)
        } else {
            bounds::check_zip_entries(path)?;
            let pth = PthTensors::new(path, None).map_err(|e| {
                EngineError::checkpoint(path, format!("not a valid torch checkpoint: {e}"))
            })?;
            let names = pth.tensor_infos().keys().cloned().collect();
            (Shard::Pth(pth), names)
        };
        Ok(self.record_shard(shard, names, path))
    }

    fn record_shard(&mut self, shard: Shard, names: Vec<String>, path: &Path) -> usize {
        let index = self.shards.len();
        for name in names {
            self.locations.insert(name, index);
        }
        self.shards.push(shard);
        self.shard_paths.push(path.to_owned());
        index
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The names of every tensor stored.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.locations.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.locations.contains_key(name)
    }

    /// The file a tensor lives in, or the folder when it is absent (for error messages).
    pub fn path_of(&self, name: &str) -> &Path {
        match self.locations.get(name) {
            Some(&shard) => &self.shard_paths[shard],
            None => &self.dir,
        }
    }

    /// Loads `name` as `dtype` on `device`, checking its shape when `shape` is given.
    pub fn load(
        &self,
        name: &str,
        shape: Option<&[usize]>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let Some(&shard) = self.locations.get(name) else {
            return Err(EngineError::tensor(
                &self.dir,
                name,
                "missing from the checkpoint",
            ));
        };
        let path = &self.shard_paths[shard];
        let tensor = self.read(shard, name, device)?;
        let tensor = self.widen_thudm_int(name, tensor, shape, device)?;
        if let Some(shape) = shape {
            if tensor.dims() != shape {
                return Err(EngineError::tensor(
                    path,
                    name,
                    format!("has shape {:?}, expected {shape:?}", tensor.dims()),
                ));
            }
        }
        let stored = tensor.dtype();
        if !matches!(stored, DType::F32 | DType::F16 | DType::BF16) {
            return Err(EngineError::tensor(
                path,
                name,
                format!("is stored as {stored:?}; only f32, f16 and bf16 weights are supported"),
            ));
        }
        tensor.to_dtype(dtype).map_err(|e| {
            EngineError::tensor(path, name, format!("cannot be converted to {dtype:?}: {e}"))
        })
    }
}

impl Checkpoint {
    /// The tensor `name` of `shard` as stored.
    fn read(&self, shard: usize, name: &str, device: &Device) -> Result<Tensor> {
        match &self.shards[shard] {
            Shard::Safetensors(st) => st.load(name, device),
            Shard::Buffered(st) => st.load(name, device),
            Shard::Pth(pth) => pth
                .get(name)
                .and_then(|t| t.ok_or_else(|| candle_core::Error::Msg("not a tensor".into())))
                .and_then(|t| t.to_device(device)),
        }
        .map_err(|e| {
            EngineError::tensor(
                &self.shard_paths[shard],
                name,
                format!("cannot be read: {e}"),
            )
        })
    }

    /// `name` (`[rows, cols]`) as GGML blocks (q8_0 / q4_0) when it is one of THUDM's int8/int4
    /// weights and the blocks hold exactly its values (`thudm_int::repack`); `None` for any other
    /// tensor, which `load` then reads as a dense one.
    pub fn load_thudm_int_blocks(
        &self,
        name: &str,
        (rows, cols): (usize, usize),
        device: &Device,
    ) -> Result<Option<QTensor>> {
        let scale_name = thudm_int::scale_name(name);
        let Some(&shard) = self.locations.get(name) else {
            return Ok(None);
        };
        if !self.contains(&scale_name) {
            return Ok(None);
        }
        let packed = self.read(shard, name, device)?;
        if packed.dtype() != DType::U8 {
            return Ok(None);
        }
        let path = self.path_of(name);
        if packed.dim(0).ok() != Some(rows) {
            return Err(EngineError::tensor(
                path,
                name,
                format!(
                    "(THUDM int4/int8 layout) has {:?} rows, expected {rows}",
                    packed.dims().first()
                ),
            ));
        }
        let scale = self.load(&scale_name, None, DType::F32, device)?;
        thudm_int::repack(&packed, &scale, cols).map_err(|message| {
            EngineError::tensor(path, name, format!("(THUDM int4/int8 layout) {message}"))
        })
    }

    /// An int8 tensor with a `_scale` beside it is one of THUDM's quantized weights: widened to
    /// f32 here, so every caller sees an ordinary weight. Anything else passes through.
    fn widen_thudm_int(
        &self,
        name: &str,
        tensor: Tensor,
        shape: Option<&[usize]>,
        device: &Device,
    ) -> Result<Tensor> {
        let scale_name = thudm_int::scale_name(name);
        if tensor.dtype() != DType::U8 || !self.contains(&scale_name) {
            return Ok(tensor);
        }
        let path = self.path_of(name);
        // The expected width tells one int8 weight a byte from two int4 ones.
        let Some(&[_, cols]) = shape else {
            return Err(EngineError::tensor(
                path,
                name,
                "is a THUDM int4/int8 weight; its expected shape is needed to read it",
            ));
        };
        let scale = self.load(&scale_name, None, DType::F32, device)?;
        thudm_int::dequantize(&tensor, &scale, cols).map_err(|message| {
            EngineError::tensor(path, name, format!("(THUDM int4/int8 layout) {message}"))
        })
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`, so a crash never
/// leaves a half-written file under the real name.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        EngineError::io(path, e)
    })
}
