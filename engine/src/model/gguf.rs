//! A folder's `model.gguf` (written by `glmtune quantize`) read as the model's weights, tensor by
//! tensor as the model asks for them; block-quantized layers stay quantized.

use std::cell::RefCell;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::{EngineError, Result};
use crate::model::weights::{Matrix, WeightSource};

/// The quantized weights' file in a model folder.
pub const QUANTIZED_FILE: &str = "model.gguf";

/// Something a GGUF file is read from: the file, or its bytes in memory (a browser).
trait Source: std::io::Read + std::io::Seek {}
impl<T: std::io::Read + std::io::Seek> Source for T {}

/// An open `model.gguf`, read tensor by tensor as the model asks for them.
pub(crate) struct QuantizedFile {
    path: PathBuf,
    content: gguf_file::Content,
    reader: RefCell<Box<dyn Source>>,
    dtype: DType,
    device: Device,
}

impl QuantizedFile {
    /// The folder's quantized file, if it has one.
    pub(crate) fn find(dir: &Path, dtype: DType, device: &Device) -> Result<Option<Self>> {
        let path = dir.join(QUANTIZED_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let file = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
        Self::read(path, Box::new(BufReader::new(file)), dtype, device).map(Some)
    }

    /// A GGUF file's bytes (`name` only names it in messages).
    pub(crate) fn from_bytes(
        name: &str,
        bytes: Vec<u8>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let reader = Box::new(std::io::Cursor::new(bytes));
        Self::read(PathBuf::from(name), reader, dtype, device)
    }

    fn read(
        path: PathBuf,
        mut reader: Box<dyn Source>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let content =
            gguf_file::Content::read(&mut reader).map_err(|e| EngineError::Checkpoint {
                path: path.clone(),
                message: format!("not a readable GGUF file: {e}"),
            })?;
        Ok(Self {
            path,
            content,
            reader: RefCell::new(reader),
            dtype,
            device: device.clone(),
        })
    }

    fn tensor(&self, name: &str, shape: &[usize]) -> Result<QTensor> {
        let tensor = self
            .content
            .tensor(&mut *self.reader.borrow_mut(), name, &self.device)
            .map_err(|e| EngineError::tensor(&self.path, name, format!("cannot be read: {e}")))?;
        if tensor.shape().dims() != shape {
            return Err(EngineError::tensor(
                &self.path,
                name,
                format!("has shape {:?}, expected {shape:?}", tensor.shape().dims()),
            ));
        }
        Ok(tensor)
    }
}

impl WeightSource for QuantizedFile {
    fn contains(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn dense(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self
            .tensor(name, shape)?
            .dequantize(&self.device)?
            .to_dtype(self.dtype)?)
    }

    fn matrix(&self, name: &str, out_dim: usize, in_dim: usize) -> Result<Matrix> {
        let tensor = self.tensor(name, &[out_dim, in_dim])?;
        Ok(match tensor.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                Matrix::Dense(tensor.dequantize(&self.device)?.to_dtype(self.dtype)?)
            }
            _ => Matrix::Quantized(Arc::new(tensor)),
        })
    }

    fn identical(&self, _: &str, _: &str, _: &[usize]) -> Result<bool> {
        // The file stores a tied output layer once, under the embeddings' name.
        Ok(false)
    }
}
