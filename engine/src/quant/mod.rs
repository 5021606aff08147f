//! Block-quantized checkpoints: `glmtune quantize` turns an official checkpoint into one GGUF file,
//! `model.gguf`, beside its `config.json` and tokenizer.
//!
//! The four linear layers of every block take q8_0 or q4_0 (GGML's formats: 32 weights and one f16
//! scale a block; q4_0 packs two weights a byte, low nibbles first); the word embeddings and the
//! output layer (tied to them in ChatGLM-6B, separate in ChatGLM2/3) take q8_0 or f16; norms and
//! biases stay f32. Tensors keep their official
//! names, so the file reads with any GGUF reader, and [`ChatGlmModel::load`] picks it up when the
//! folder has one. Adapters are not part of it: many domain adapters share one quantized base.
//!
//! [`ChatGlmModel::load`]: crate::model::ChatGlmModel::load

mod index;

pub use index::{GgufIndex, TensorEntry};

use std::cell::RefCell;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::config::ChatGlmConfig;
use crate::error::{EngineError, Result};
use crate::model::weights::{quantize, DenseSource, Matrix, WeightSource};
use crate::model::ChatGlmModel;

pub use crate::model::gguf::QUANTIZED_FILE;

/// Files copied beside it, when the source folder has them.
const COPIED_FILES: [&str; 6] = [
    "config.json",
    "generation_config.json",
    "ice_text.model",
    "tokenizer.model",
    "tokenizer_config.json",
    // ChatGLM2 and ChatGLM3 are told apart by it.
    "tokenization_chatglm.py",
];

/// How the linear layers are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bits {
    Eight,
    Four,
}

/// How the word embeddings (and the tied output layer) are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingFormat {
    Q8,
    F16,
}

impl Bits {
    fn format(self) -> GgmlDType {
        match self {
            Bits::Eight => GgmlDType::Q8_0,
            Bits::Four => GgmlDType::Q4_0,
        }
    }
}

impl EmbeddingFormat {
    fn format(self) -> GgmlDType {
        match self {
            EmbeddingFormat::Q8 => GgmlDType::Q8_0,
            EmbeddingFormat::F16 => GgmlDType::F16,
        }
    }
}

/// What `quantize_checkpoint` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeReport {
    pub path: PathBuf,
    /// Tensors written per storage format (`q4_0`, `q8_0`, `f16`, `f32`).
    pub tensors: Vec<(String, usize)>,
    /// Bytes of the weights at f32, and in the file.
    pub f32_bytes: u64,
    pub file_bytes: u64,
}

impl fmt::Display for QuantizeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<String> = self
            .tensors
            .iter()
            .map(|(format, n)| format!("{n} {format}"))
            .collect();
        write!(
            f,
            "{}: {} tensors ({}), {:.1} MiB ({:.2}× smaller than f32)",
            self.path.display(),
            self.tensors.iter().map(|t| t.1).sum::<usize>(),
            counts.join(", "),
            self.file_bytes as f64 / (1 << 20) as f64,
            self.f32_bytes as f64 / self.file_bytes.max(1) as f64
        )
    }
}

/// Reads an official checkpoint and records every tensor the model asks for, quantized as it
/// goes: the names and shapes come from the model's own loader.
struct Quantizing<'a> {
    dense: DenseSource<'a>,
    bits: Bits,
    embeddings: EmbeddingFormat,
    written: RefCell<Vec<(String, Arc<QTensor>)>>,
}

impl Quantizing<'_> {
    fn record(&self, name: &str, tensor: Arc<QTensor>) {
        self.written.borrow_mut().push((name.to_owned(), tensor));
    }
}

impl WeightSource for Quantizing<'_> {
    fn contains(&self, name: &str) -> bool {
        self.dense.contains(name)
    }

    fn dense(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let tensor = self.dense.dense(name, shape)?;
        self.record(name, quantize(&tensor, GgmlDType::F32)?);
        Ok(tensor)
    }

    fn matrix(&self, name: &str, out_dim: usize, in_dim: usize) -> Result<Matrix> {
        let embedding = name.ends_with("word_embeddings.weight")
            || name == "lm_head.weight"
            || name.ends_with("output_layer.weight");
        let format = if embedding {
            self.embeddings.format()
        } else {
            self.bits.format()
        };
        if !in_dim.is_multiple_of(format.block_size()) {
            return Err(EngineError::tensor(
                self.dense.checkpoint.path_of(name),
                name,
                format!(
                    "has rows of {in_dim} weights, not a multiple of the {format:?} block ({})",
                    format.block_size()
                ),
            ));
        }
        // THUDM's int8/int4 weights already are q8_0/q4_0 blocks, exactly: repacked, not rounded
        // a second time.
        let repacked = self.dense.checkpoint.load_thudm_int_blocks(
            name,
            (out_dim, in_dim),
            self.dense.device,
        )?;
        let quantized = match repacked {
            Some(blocks) if blocks.dtype() == format => Arc::new(blocks),
            _ => quantize(&self.dense.dense(name, &[out_dim, in_dim])?, format)?,
        };
        self.record(name, quantized.clone());
        Ok(Matrix::Quantized(quantized))
    }

    fn identical(&self, a: &str, b: &str, shape: &[usize]) -> Result<bool> {
        self.dense.identical(a, b, shape)
    }
}

/// Quantizes the checkpoint folder `source` into the folder `out`, returning what was written and
/// the quantized model (to measure its error against the original).
pub fn quantize_checkpoint(
    source: &Path,
    out: &Path,
    bits: Bits,
    embeddings: EmbeddingFormat,
) -> Result<(QuantizeReport, ChatGlmModel)> {
    let config = ChatGlmConfig::from_file(&source.join("config.json"))?;
    let checkpoint = Checkpoint::open(source)?;
    let device = Device::Cpu;
    let recorder = Quantizing {
        dense: DenseSource {
            checkpoint: &checkpoint,
            dtype: DType::F32,
            device: &device,
            keep_thudm_int: false,
        },
        bits,
        embeddings,
        written: RefCell::new(Vec::new()),
    };
    let model = ChatGlmModel::from_source(config, &recorder, DType::F32, &device)?;
    let written = recorder.written.into_inner();

    std::fs::create_dir_all(out).map_err(|e| EngineError::io(out, e))?;
    let path = out.join(QUANTIZED_FILE);
    let partial = out.join(format!("{QUANTIZED_FILE}.partial"));
    let architecture = gguf_file::Value::String("chatglm".into());
    let quantization = gguf_file::Value::String(format!("{:?}", bits.format()).to_lowercase());
    let metadata = [
        ("general.architecture", &architecture),
        ("glmtune.quantization", &quantization),
    ];
    let tensors: Vec<(&str, &QTensor)> = written
        .iter()
        .map(|(name, tensor)| (name.as_str(), tensor.as_ref()))
        .collect();
    {
        let file = File::create(&partial).map_err(|e| EngineError::io(&partial, e))?;
        let mut writer = std::io::BufWriter::new(file);
        gguf_file::write(&mut writer, &metadata, &tensors)?;
        let file = writer
            .into_inner()
            .map_err(|e| EngineError::io(&partial, e.into_error()))?;
        file.sync_all().map_err(|e| EngineError::io(&partial, e))?;
    }
    std::fs::rename(&partial, &path).map_err(|e| EngineError::io(&path, e))?;
    for name in COPIED_FILES {
        let from = source.join(name);
        if from.is_file() {
            std::fs::copy(&from, out.join(name)).map_err(|e| EngineError::io(&from, e))?;
        }
    }

    let mut counts: Vec<(String, usize)> = Vec::new();
    for (_, tensor) in &written {
        let format = format!("{:?}", tensor.dtype()).to_lowercase();
        match counts.iter_mut().find(|(f, _)| *f == format) {
            Some((_, n)) => *n += 1,
            None => counts.push((format, 1)),
        }
    }
    let f32_bytes = written
        .iter()
        .map(|(_, t)| t.shape().elem_count() as u64 * 4)
        .sum();
    let file_bytes = std::fs::metadata(&path)
        .map_err(|e| EngineError::io(&path, e))?
        .len();
    let report = QuantizeReport {
        path,
        tensors: counts,
        f32_bytes,
        file_bytes,
    };
    Ok((report, model))
}
