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
            *out = dot_f32(&w[start + row * in_dim..start + (row + 1) * in_dim], &input)
        }),
        Storage::Cpu(CpuStorage::F16(w)) => run(&mut output, |row, out| {
            *out = dot_f16(&w[start..end][row * in_dim..(row + 1) * in_dim], &input)
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

/// f32 weights · input, with AVX2/FMA when the CPU has them.
fn dot_f32(row: &[f32], input: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: `available` checked the CPU features the kernel is compiled for.
        return unsafe { x86::dot_f32(row, input) };
    }
    dot(row, input)
}

/// f16 weights · input, widened with F16C when the CPU has it.
fn dot_f16(row: &[f16], input: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: `available` checked the CPU features the kernel is compiled for.
        return unsafe { x86::dot_f16(row, input) };
    }
    dot_widened(row, input, <[f16]>::convert_to_f32_slice)
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

/// AVX2 + FMA (+ F16C) kernels: baseline x86-64 builds only vectorise with SSE2, and widening f16
/// one element at a time costs more than reading it.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    use half::f16;

    pub fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }

    #[target_feature(enable = "avx2,fma")]
    fn horizontal_sum(v: __m256) -> f32 {
        let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pair = _mm_hadd_ps(pair, pair);
        _mm_cvtss_f32(_mm_hadd_ps(pair, pair))
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA ([`available`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 8 floats at an offset + 8 ≤ n of both slices.
        unsafe {
            while i + 32 <= n {
                for (k, lane) in acc.iter_mut().enumerate() {
                    let offset = i + 8 * k;
                    *lane = _mm256_fmadd_ps(
                        _mm256_loadu_ps(pa.add(offset)),
                        _mm256_loadu_ps(pb.add(offset)),
                        *lane,
                    );
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i)),
                    _mm256_loadu_ps(pb.add(i)),
                    acc[0],
                );
                i += 8;
            }
        }
        let total = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut sum = horizontal_sum(total);
        for j in i..n {
            sum += a[j] * b[j];
        }
        sum
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C ([`available`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 8 halves / 8 floats at an offset + 8 ≤ n of both slices.
        unsafe {
            while i + 32 <= n {
                for (k, lane) in acc.iter_mut().enumerate() {
                    let offset = i + 8 * k;
                    let weights =
                        _mm256_cvtph_ps(_mm_loadu_si128(pa.add(offset) as *const __m128i));
                    *lane = _mm256_fmadd_ps(weights, _mm256_loadu_ps(pb.add(offset)), *lane);
                }
                i += 32;
            }
            while i + 8 <= n {
                let weights = _mm256_cvtph_ps(_mm_loadu_si128(pa.add(i) as *const __m128i));
                acc[0] = _mm256_fmadd_ps(weights, _mm256_loadu_ps(pb.add(i)), acc[0]);
                i += 8;
            }
        }
        let total = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut sum = horizontal_sum(total);
        for j in i..n {
            sum += a[j].to_f32() * b[j];
        }
        sum
    }
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
