//! Matrix × vector for single-token decoding on the CPU.
//!
//! Decoding one token multiplies every weight matrix by one activation row, so it is bound by how
//! fast the weights stream from memory. A general matrix-multiply kernel packs and tiles for reuse
//! that a vector product never gets; reading each weight row once, on every core, is what reaches
//! the bandwidth. Half-precision rows are widened to f32 in small blocks on the fly.

use candle_core::{CpuStorage, Device, Storage, Tensor};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::error::Result;

/// Rows handed to one task: large enough to amortise scheduling, small enough to balance cores.
#[cfg(not(target_arch = "wasm32"))]
const ROWS_PER_TASK: usize = 64;
/// Width of the f32 scratch block used to widen half-precision weights.
const BLOCK: usize = 256;

/// `x · Wᵀ (+ bias)` for `x` holding one row, when the weights are a contiguous CPU matrix;
/// `None` when this fast path does not apply (the caller then uses the general matmul).
pub fn row_times_transposed(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if !matches!(weight.device(), Device::Cpu)
        || x.elem_count() != weight.dim(1)?
        || weight.rank() != 2
    {
        return Ok(None);
    }
    let (out_dim, in_dim) = weight.dims2()?;
    let input: Vec<f32> = x
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    let (storage, layout) = weight.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    let mut output = vec![0f32; out_dim];
    match &*storage {
        Storage::Cpu(CpuStorage::F32(w)) => run(&mut output, |row, out| {
            *out = dot(&w[start + row * in_dim..start + (row + 1) * in_dim], &input)
        }),
        Storage::Cpu(CpuStorage::F16(w)) => run(&mut output, |row, out| {
            *out = dot_widened(
                &w[start..end][row * in_dim..(row + 1) * in_dim],
                &input,
                <[f16]>::convert_to_f32_slice,
            )
        }),
        Storage::Cpu(CpuStorage::BF16(w)) => run(&mut output, |row, out| {
            *out = dot_widened(
                &w[start..end][row * in_dim..(row + 1) * in_dim],
                &input,
                <[bf16]>::convert_to_f32_slice,
            )
        }),
        _ => return Ok(None),
    }
    drop(storage);
    let mut shape = x.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = out_dim;
    }
    let mut y = Tensor::from_vec(output, shape, x.device())?;
    if let Some(b) = bias {
        y = y.broadcast_add(&b.to_dtype(candle_core::DType::F32)?)?;
    }
    Ok(Some(y.to_dtype(x.dtype())?))
}

/// Fills `output[row]` with `kernel(row)`, spread over the CPU's cores.
fn run(output: &mut [f32], kernel: impl Fn(usize, &mut f32) + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        output
            .par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(chunk, outs)| {
                for (i, out) in outs.iter_mut().enumerate() {
                    kernel(chunk * ROWS_PER_TASK + i, out);
                }
            });
    }
    #[cfg(target_arch = "wasm32")]
    for (row, out) in output.iter_mut().enumerate() {
        kernel(row, out);
    }
}

/// Dot product with eight independent accumulators, so the compiler vectorises it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (x, y) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in a[chunks..].iter().zip(&b[chunks..]) {
        sum += x * y;
    }
    sum
}

fn dot_widened<T>(row: &[T], input: &[f32], widen: impl Fn(&[T], &mut [f32])) -> f32 {
    let mut block = [0f32; BLOCK];
    let mut sum = 0f32;
    for (part, x) in row.chunks(BLOCK).zip(input.chunks(BLOCK)) {
        let block = &mut block[..part.len()];
        widen(part, block);
        sum += dot(block, x);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn matches_the_general_matmul() {
        let device = Device::Cpu;
        let weight = crate::model::init::normal((37, 300), 1.0, 1, &device).unwrap();
        let bias = crate::model::init::normal(37, 1.0, 2, &device).unwrap();
        let x = crate::model::init::normal((1, 1, 300), 1.0, 3, &device).unwrap();
        let expected = x
            .broadcast_matmul(&weight.t().unwrap())
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let w = weight.to_dtype(dtype).unwrap();
            let got = row_times_transposed(&x, &w, Some(&bias)).unwrap().unwrap();
            let reference = x
                .broadcast_matmul(&w.to_dtype(DType::F32).unwrap().t().unwrap())
                .unwrap()
                .broadcast_add(&bias)
                .unwrap();
            let diff = (got - &reference)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-3, "{dtype:?}: {diff}");
        }
        let got = row_times_transposed(&x, &weight, Some(&bias))
            .unwrap()
            .unwrap();
        let diff = (got - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "{diff}");
    }
}
