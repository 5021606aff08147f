//! Where each tensor of a `model.gguf` lies, read from the file's first bytes alone, so that a
//! reader fetching byte ranges (a browser, from its cache or the network) takes one tensor at a
//! time and never holds the whole file.

use candle_core::quantized::gguf_file;
use candle_core::quantized::{ggml_file, GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{EngineError, Result};

/// A header larger than this is not a model's (ChatGLM-6B's takes a few kilobytes).
const LONGEST_HEADER: usize = 64 << 20;

/// One tensor's place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: GgmlDType,
    pub dims: Vec<usize>,
    /// Byte offset in the file, and length.
    pub start: u64,
    pub len: u64,
}

/// The tensors of a GGUF file, in file order.
#[derive(Debug, Clone)]
pub struct GgufIndex {
    pub tensors: Vec<TensorEntry>,
}

fn unreadable(name: &str, message: String) -> EngineError {
    EngineError::Checkpoint {
        path: name.into(),
        message,
    }
}

impl GgufIndex {
    /// Reads the index from `head`, the first bytes of the file `name` of `file_len` bytes.
    /// `Ok(None)` means the header goes on past `head`: read more and ask again.
    pub fn parse(name: &str, head: &[u8], file_len: u64) -> Result<Option<Self>> {
        let content = match gguf_file::Content::read(&mut std::io::Cursor::new(head)) {
            Ok(content) => content,
            Err(_) if (head.len() as u64) < file_len && head.len() < LONGEST_HEADER => {
                return Ok(None)
            }
            Err(e) => return Err(unreadable(name, format!("not a readable GGUF file: {e}"))),
        };
        let mut tensors = Vec::with_capacity(content.tensor_infos.len());
        for (tensor, info) in &content.tensor_infos {
            let dims = info.shape.dims().to_vec();
            let elements = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            if elements % block != 0 {
                return Err(unreadable(
                    name,
                    format!(
                        "{tensor}: {elements} values are not whole {:?} blocks",
                        info.ggml_dtype
                    ),
                ));
            }
            let len = (elements / block * info.ggml_dtype.type_size()) as u64;
            let start = content.tensor_data_offset + info.offset;
            if start.checked_add(len).is_none_or(|end| end > file_len) {
                return Err(unreadable(
                    name,
                    format!("{tensor}: bytes {start}..+{len} lie past the end of the file ({file_len} bytes)"),
                ));
            }
            tensors.push(TensorEntry {
                name: tensor.clone(),
                dtype: info.ggml_dtype,
                dims,
                start,
                len,
            });
        }
        tensors.sort_by_key(|t| t.start);
        Ok(Some(Self { tensors }))
    }
}

impl TensorEntry {
    /// The tensor from its bytes (`len` of them, read at `start`).
    pub fn tensor(&self, bytes: &[u8]) -> Result<QTensor> {
        if bytes.len() as u64 != self.len {
            return Err(EngineError::tensor(
                super::QUANTIZED_FILE,
                &self.name,
                format!("{} bytes read, {} expected", bytes.len(), self.len),
            ));
        }
        Ok(ggml_file::qtensor_from_ggml(
            self.dtype,
            bytes,
            self.dims.clone(),
            &Device::Cpu,
        )?)
    }
}
