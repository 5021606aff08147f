//! Weight matrices on the GPU in the kernels' layouts, uploaded one at a time from the CPU model
//! (never the whole model in memory twice). GGML blocks are split on the way: the f16 scales widen
//! to f32 (no `shader-f16` needed), the quants pack into u32 words. A matrix larger than the
//! adapter's binding limit is cut into row chunks, each its own buffers.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};
use half::f16;

use super::{gpu_error, Gpu};
use crate::error::Result;
use crate::model::weights::Matrix;

/// The kernels' weight layouts, in the order of `Kernels::matmul`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    F32 = 0,
    F16 = 1,
    Q8_0 = 2,
    Q4_0 = 3,
}

impl Layout {
    /// (scale bytes, quant bytes) of one row of `cols` weights.
    fn row_bytes(self, cols: usize) -> (usize, usize) {
        match self {
            Layout::F32 => (cols * 4, 0),
            Layout::F16 => (0, cols * 2),
            Layout::Q8_0 => (cols / 32 * 4, cols),
            Layout::Q4_0 => (cols / 32 * 4, cols / 2),
        }
    }
}

/// Rows `start..start + rows` of a matrix.
#[derive(Clone)]
pub struct Chunk {
    pub start: usize,
    pub rows: usize,
    pub scales: wgpu::Buffer,
    pub quants: wgpu::Buffer,
}

#[derive(Clone)]
pub struct GpuMatrix {
    pub layout: Layout,
    pub rows: usize,
    pub cols: usize,
    pub chunks: Vec<Chunk>,
}

/// A matrix's rows as (scales, quants) bytes in the kernels' layout.
struct Packed {
    layout: Layout,
    rows: usize,
    cols: usize,
    scales: Vec<u8>,
    quants: Vec<u8>,
}

fn pack_dense(tensor: &Tensor) -> Result<Packed> {
    let (rows, cols) = tensor.dims2()?;
    if tensor.dtype() == DType::F16 && cols % 2 == 0 {
        let values: Vec<f16> = tensor.flatten_all()?.to_vec1()?;
        return Ok(Packed {
            layout: Layout::F16,
            rows,
            cols,
            scales: Vec::new(),
            quants: bytemuck::cast_slice(&values).to_vec(),
        });
    }
    let values = super::floats(tensor)?;
    Ok(Packed {
        layout: Layout::F32,
        rows,
        cols,
        scales: bytemuck::cast_slice(&values).to_vec(),
        quants: Vec::new(),
    })
}

/// Splits GGML blocks (an f16 scale, then the quants) into f32 scales and the quant bytes.
fn pack_blocks(tensor: &QTensor, layout: Layout, block_bytes: usize) -> Result<Packed> {
    let (rows, cols) = tensor.shape().dims2()?;
    let data = tensor.data()?;
    let blocks = rows * cols / 32;
    if data.len() != blocks * block_bytes {
        return Err(gpu_error(format!(
            "a {:?} matrix of {rows}×{cols} holds {} bytes, expected {}",
            tensor.dtype(),
            data.len(),
            blocks * block_bytes
        )));
    }
    let mut scales = Vec::with_capacity(blocks * 4);
    let mut quants = Vec::with_capacity(blocks * (block_bytes - 2));
    for block in data.chunks_exact(block_bytes) {
        let scale = f16::from_le_bytes([block[0], block[1]]).to_f32();
        scales.extend_from_slice(&scale.to_le_bytes());
        quants.extend_from_slice(&block[2..]);
    }
    Ok(Packed {
        layout,
        rows,
        cols,
        scales,
        quants,
    })
}

fn pack(matrix: &Matrix) -> Result<Packed> {
    match matrix {
        Matrix::Dense(tensor) => pack_dense(tensor),
        Matrix::Quantized(q) => match q.dtype() {
            GgmlDType::Q8_0 => pack_blocks(q, Layout::Q8_0, 34),
            GgmlDType::Q4_0 => pack_blocks(q, Layout::Q4_0, 18),
            _ => pack_dense(&q.dequantize(&q.device())?),
        },
        Matrix::Packed(_) => pack(&matrix.unpacked()?),
    }
}

impl GpuMatrix {
    /// Uploads `matrix`, in row chunks that each fit one binding.
    pub fn upload(gpu: &Gpu, label: &str, matrix: &Matrix) -> Result<Self> {
        let packed = pack(matrix)?;
        let (scale_row, quant_row) = packed.layout.row_bytes(packed.cols);
        let widest = scale_row.max(quant_row).max(1) as u64;
        let rows_per_chunk = (gpu.max_binding / widest).max(1) as usize;
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < packed.rows {
            let rows = rows_per_chunk.min(packed.rows - start);
            let slice = |bytes: &[u8], per_row: usize| -> Vec<u8> {
                bytes[start * per_row..(start + rows) * per_row].to_vec()
            };
            chunks.push(Chunk {
                start,
                rows,
                scales: gpu.storage(label, &slice(&packed.scales, scale_row)),
                quants: gpu.storage(label, &slice(&packed.quants, quant_row)),
            });
            start += rows;
        }
        Ok(GpuMatrix {
            layout: packed.layout,
            rows: packed.rows,
            cols: packed.cols,
            chunks,
        })
    }
}
