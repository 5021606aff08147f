//! Weights as the model holds them: dense tensors (any float dtype; gradients flow through them to
//! the activations), or GGML block-quantized matrices (q8_0, q4_0: 32 weights and one f16 scale a
//! block) that are multiplied block by block without widening the matrix, for inference.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Module, Tensor};

use candle_core::Device;

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::kernels::{self, BlockFormat, Packed};
use crate::model::gemv;

/// A weight matrix `[out, in]`.
#[derive(Debug, Clone)]
pub enum Matrix {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
    /// GGML blocks repacked in 16-row tiles for this CPU's AVX-512 VNNI kernels (see
    /// [`kernels::packed`]): the same bytes reordered; [`Matrix::ggml`] gives the blocks back.
    Packed(Arc<Packed>),
}

impl Matrix {
    /// The matrix stored as `format` (dense ones are quantized; quantized ones stay as they are).
    pub fn quantized(&self, format: GgmlDType) -> Result<Matrix> {
        Ok(match self {
            Matrix::Dense(t) => Matrix::Quantized(quantize(t, format)?),
            Matrix::Quantized(_) | Matrix::Packed(_) => self.clone(),
        })
    }

    /// The matrix as dense f32 (quantized ones dequantized).
    pub fn dequantized(&self) -> Result<Matrix> {
        Ok(match self.ggml()? {
            Some(q) => Matrix::Dense(q.dequantize(&q.device())?),
            None => self.clone(),
        })
    }

    /// The GGML blocks of a quantized matrix (a packed one unpacked, byte for byte); `None` for
    /// a dense one.
    pub fn ggml(&self) -> Result<Option<Arc<QTensor>>> {
        Ok(match self {
            Matrix::Dense(_) => None,
            Matrix::Quantized(q) => Some(q.clone()),
            Matrix::Packed(p) => {
                let dtype = match p.format() {
                    BlockFormat::Q4_0 => GgmlDType::Q4_0,
                    BlockFormat::Q8_0 => GgmlDType::Q8_0,
                };
                let storage =
                    QStorage::from_data(std::borrow::Cow::Owned(p.unpack()), &Device::Cpu, dtype)?;
                Some(Arc::new(QTensor::new(storage, p.dims())?))
            }
        })
    }

    /// The matrix as the fastest CPU kernels read it: q4_0/q8_0 blocks on a CPU with AVX-512
    /// VNNI repacked in 16-row tiles (when the rows fill tiles); anything else as it is.
    pub fn packed_for_cpu(&self) -> Result<Matrix> {
        let Matrix::Quantized(q) = self else {
            return Ok(self.clone());
        };
        let format = match q.dtype() {
            GgmlDType::Q4_0 => BlockFormat::Q4_0,
            GgmlDType::Q8_0 => BlockFormat::Q8_0,
            _ => return Ok(self.clone()),
        };
        if kernels::Isa::detected() != Some(kernels::Isa::Avx512Vnni)
            || !matches!(q.device(), Device::Cpu)
        {
            return Ok(self.clone());
        }
        let (n, k) = q.shape().dims2()?;
        Ok(match Packed::pack(format, &q.data()?, n, k) {
            Some(packed) => Matrix::Packed(Arc::new(packed)),
            None => self.clone(),
        })
    }

    /// The matrix in GGML's layout when it is packed (what training and other devices read).
    pub fn unpacked(&self) -> Result<Matrix> {
        Ok(match self {
            Matrix::Packed(_) => Matrix::Quantized(
                self.ggml()?
                    .ok_or_else(|| candle_core::Error::Msg("a packed matrix has blocks".into()))?,
            ),
            _ => self.clone(),
        })
    }

    /// The GGML format of a quantized matrix.
    pub fn format(&self) -> Option<GgmlDType> {
        match self {
            Matrix::Dense(_) => None,
            Matrix::Quantized(q) => Some(q.dtype()),
            Matrix::Packed(p) => Some(match p.format() {
                BlockFormat::Q4_0 => GgmlDType::Q4_0,
                BlockFormat::Q8_0 => GgmlDType::Q8_0,
            }),
        }
    }

    /// Bytes the weights take (and one product reads).
    pub fn bytes(&self) -> u64 {
        match self {
            Matrix::Dense(t) => (t.elem_count() * t.dtype().size_in_bytes()) as u64,
            Matrix::Quantized(q) => q.storage_size_in_bytes() as u64,
            Matrix::Packed(p) => p.bytes() as u64,
        }
    }

    /// Whether both name the very same weights (a tied output layer).
    pub fn same(&self, other: &Matrix) -> bool {
        match (self, other) {
            (Matrix::Dense(a), Matrix::Dense(b)) => a.id() == b.id(),
            (Matrix::Quantized(a), Matrix::Quantized(b)) => Arc::ptr_eq(a, b),
            (Matrix::Packed(a), Matrix::Packed(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    pub fn dims2(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Matrix::Dense(t) => t.dims2()?,
            Matrix::Quantized(q) => q.shape().dims2()?,
            Matrix::Packed(p) => p.dims(),
        })
    }
}

/// `x · Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Matrix,
    pub bias: Option<Tensor>,
    /// A quantized weight is dequantized for each product and multiplied in the activations'
    /// dtype (see [`ChatGlmModel::for_training`](crate::model::ChatGlmModel::for_training)).
    pub exact: bool,
}

impl Linear {
    pub fn new(weight: Matrix, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            exact: false,
        }
    }

    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear::new(Matrix::Dense(weight), bias)
    }

    /// The `[out, in]` matrix as dense `dtype`, as training multiplies by it: a quantized one
    /// dequantized (a fresh tensor each call), a dense one as it is (already in the activations'
    /// dtype).
    pub fn weight_in(&self, dtype: DType) -> Result<Tensor> {
        Ok(match &self.weight {
            Matrix::Dense(weight) => weight.to_dtype(dtype)?,
            Matrix::Quantized(q) => q.dequantize(&q.device())?.to_dtype(dtype)?,
            Matrix::Packed(_) => match self.weight.dequantized()? {
                Matrix::Dense(weight) => weight.to_dtype(dtype)?,
                _ => unreachable!("dequantized matrices are dense"),
            },
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Our kernels' f32 products take the bias as they write their rows (the same f32 sums as
        // a separate add, without a tensor op on one thread while the others wait).
        let bias = self
            .bias
            .as_ref()
            .filter(|b| x.dtype() == DType::F32 && b.dtype() == DType::F32);
        // The product, and whether it has the bias already.
        let (y, biased) = match &self.weight {
            // Training: the dequantized matrix exists only for this product (and the backward
            // that needs it), and the activations keep their precision, so the numbers are those
            // of the dense dequantized model and gradients flow to the activations.
            Matrix::Quantized(_) | Matrix::Packed(_) if self.exact => {
                (x.broadcast_matmul(&self.weight_in(x.dtype())?.t()?)?, false)
            }
            Matrix::Dense(weight) => {
                let rows = x.elem_count() / x.dim(candle_core::D::Minus1)?.max(1);
                if rows <= gemv::MAX_ROWS && !x.track_op() {
                    if let Some(y) = gemv::row_times_transposed(x, weight, self.bias.as_ref())? {
                        return Ok(y);
                    }
                }
                (x.broadcast_matmul(&weight.t()?)?, false)
            }
            // The quantized kernels take f32 activations (they quantize them to q8 blocks).
            Matrix::Quantized(q) => {
                let x32 = x.to_dtype(DType::F32)?;
                let (y, biased) = match blocks_times(q, &x32, bias)? {
                    Some(y) => (y, bias.is_some()),
                    None => (QMatMul::QTensor(q.clone()).forward(&x32)?, false),
                };
                (y.to_dtype(x.dtype())?, biased)
            }
            Matrix::Packed(p) => (
                packed_times(p, &x.to_dtype(DType::F32)?, bias)?.to_dtype(x.dtype())?,
                bias.is_some(),
            ),
        };
        Ok(match &self.bias {
            Some(b) if !biased => y.broadcast_add(b)?,
            _ => y,
        })
    }
}

/// `x · Wᵀ` by our CPU kernels (see [`crate::kernels`]) when they cover the matrix's format on
/// this CPU; `None` otherwise.
fn blocks_times(q: &QTensor, x: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    let format = match q.dtype() {
        GgmlDType::Q4_0 => BlockFormat::Q4_0,
        GgmlDType::Q8_0 => BlockFormat::Q8_0,
        _ => return Ok(None),
    };
    let Some(isa) = kernels::Isa::detected() else {
        return Ok(None);
    };
    if !matches!(q.device(), Device::Cpu) {
        return Ok(None);
    }
    let (n, k) = q.shape().dims2()?;
    let data = q.data()?;
    cpu_product(x, n, k, bias, |values, out| {
        kernels::matmul(isa, format, &data, n, k, values, out)
    })
}

/// `x · Wᵀ` for a packed `W` (packed only where the AVX-512 kernels run).
fn packed_times(p: &Packed, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (n, k) = p.dims();
    #[cfg(target_arch = "x86_64")]
    let product = cpu_product(x, n, k, bias, |values, out| {
        kernels::packed::matmul(p, values, out)
    })?;
    #[cfg(not(target_arch = "x86_64"))]
    let product: Option<Tensor> = {
        // Never packed there (`Matrix::packed_for_cpu`).
        let _ = (x, bias);
        None
    };
    product.ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "a packed {n}×{k} matrix multiplies f32 CPU rows on a CPU with AVX-512 VNNI"
        ))
        .into()
    })
}

/// `[.., k]` f32 CPU rows `x` times an `n × k` matrix by `product(rows, out)`, plus `bias` (f32,
/// `n` values) when given, as `[.., n]`; `None` when `x` is not f32 on the CPU.
fn cpu_product(
    x: &Tensor,
    n: usize,
    k: usize,
    bias: Option<&Tensor>,
    product: impl FnOnce(&[f32], &mut [f32]) -> std::result::Result<(), kernels::KernelError>,
) -> Result<Option<Tensor>> {
    let x = x.contiguous()?;
    let mut out = vec![0f32; x.elem_count() / k.max(1) * n];
    {
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(values)) = &*storage else {
            return Ok(None);
        };
        let values = &values[layout.start_offset()..layout.start_offset() + x.elem_count()];
        product(values, &mut out).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    }
    if let Some(bias) = bias {
        let bias = bias.flatten_all()?.to_vec1::<f32>()?;
        if bias.len() != n {
            return Err(candle_core::Error::Msg(format!(
                "a bias of {} values for {n} outputs",
                bias.len()
            ))
            .into());
        }
        kernels::add_to_rows(&mut out, &bias);
    }
    let mut shape = x.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = n;
    }
    Ok(Some(Tensor::from_vec(out, shape, x.device())?))
}

/// Rows looked up by token id.
#[derive(Debug, Clone)]
pub struct Embedding(pub Matrix);

impl Embedding {
    /// The rows of `ids` (any shape), as `[..ids, hidden]` in `dtype`.
    pub fn gather(&self, ids: &Tensor, dtype: DType) -> Result<Tensor> {
        let mut shape = ids.dims().to_vec();
        let flat = ids.flatten_all()?;
        let rows = match &self.0 {
            Matrix::Dense(table) => table.index_select(&flat, 0)?,
            Matrix::Quantized(q) => quantized_rows(q, &flat.to_vec1::<u32>()?)?,
            // Embedding tables are never packed (a row gather reads GGML rows); this is exact.
            Matrix::Packed(_) => match self.0.ggml()? {
                Some(q) => quantized_rows(&q, &flat.to_vec1::<u32>()?)?,
                None => unreachable!("packed matrices have blocks"),
            },
        };
        shape.push(rows.dim(1)?);
        Ok(rows.reshape(shape)?.to_dtype(dtype)?)
    }

    /// The same table as an output projection (tied `lm_head`).
    pub fn as_linear(&self) -> Linear {
        Linear::new(self.0.clone(), None)
    }
}

/// Dequantizes only the rows asked for: a block-quantized row is a contiguous run of blocks.
fn quantized_rows(table: &QTensor, ids: &[u32]) -> Result<Tensor> {
    let (rows, width) = table.shape().dims2()?;
    let dtype = table.dtype();
    let row_bytes = width / dtype.block_size() * dtype.type_size();
    let data = table.data()?;
    let mut picked = Vec::with_capacity(ids.len() * row_bytes);
    for &id in ids {
        let id = id as usize;
        if id >= rows {
            return Err(candle_core::Error::Msg(format!(
                "token id {id} is outside the embedding table of {rows} rows"
            ))
            .into());
        }
        picked.extend_from_slice(&data[id * row_bytes..(id + 1) * row_bytes]);
    }
    let device = table.device();
    let storage = QStorage::from_data(std::borrow::Cow::Owned(picked), &device, dtype)?;
    Ok(QTensor::new(storage, (ids.len(), width))?.dequantize(&device)?)
}

/// Block-quantizes a dense matrix (its last dimension a multiple of 32).
pub fn quantize(weight: &Tensor, format: GgmlDType) -> Result<Arc<QTensor>> {
    Ok(Arc::new(QTensor::quantize(weight, format)?))
}

/// Where a model's tensors come from, by their official names: a checkpoint, or a quantized file.
pub(crate) trait WeightSource {
    fn contains(&self, name: &str) -> bool;
    /// A tensor kept dense (LayerNorms, biases), with its shape checked.
    fn dense(&self, name: &str, shape: &[usize]) -> Result<Tensor>;
    /// A weight matrix `[out_dim, in_dim]`, quantized when stored so.
    fn matrix(&self, name: &str, out_dim: usize, in_dim: usize) -> Result<Matrix>;
    /// Whether two stored tensors of `shape` hold the same values (an output layer tied to the
    /// embeddings, which checkpoints save twice).
    fn identical(&self, a: &str, b: &str, shape: &[usize]) -> Result<bool>;
}

/// An official checkpoint, every tensor as `dtype`.
pub(crate) struct DenseSource<'a> {
    pub checkpoint: &'a Checkpoint,
    pub dtype: DType,
    pub device: &'a Device,
    /// THUDM's int8/int4 weights stay quantized (as the q8_0/q4_0 blocks that hold exactly their
    /// values) instead of being widened to `dtype`.
    pub keep_thudm_int: bool,
}

impl WeightSource for DenseSource<'_> {
    fn contains(&self, name: &str) -> bool {
        self.checkpoint.contains(name)
    }

    fn dense(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.checkpoint
            .load(name, Some(shape), self.dtype, self.device)
    }

    fn matrix(&self, name: &str, out_dim: usize, in_dim: usize) -> Result<Matrix> {
        if self.keep_thudm_int {
            let blocks =
                self.checkpoint
                    .load_thudm_int_blocks(name, (out_dim, in_dim), self.device)?;
            if let Some(blocks) = blocks {
                return Ok(Matrix::Quantized(Arc::new(blocks)));
            }
        }
        Ok(Matrix::Dense(self.dense(name, &[out_dim, in_dim])?))
    }

    fn identical(&self, a: &str, b: &str, shape: &[usize]) -> Result<bool> {
        let load = |name| {
            self.checkpoint
                .load(name, Some(shape), self.dtype, self.device)
        };
        let (a, b) = (load(a)?, load(b)?);
        if a.dims() != b.dims() {
            return Ok(false);
        }
        // Counted in f32: a u8 sum of the differing places would wrap.
        let differing = a.ne(&b)?.to_dtype(DType::F32)?.sum_all()?;
        Ok(differing.to_scalar::<f32>()? == 0.0)
    }
}
