//! Matrix × vector for single-token decoding on the CPU.
//!
//! Decoding one token multiplies every weight matrix by one activation row, so it is bound by how
//! fast the weights stream from memory. A general matrix-multiply kernel packs and tiles for reuse
//! that a vector product never gets; reading each weight row once, on every core, is what reaches
//! the bandwidth. Half-precision rows are widened to f32 in small blocks on the fly.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use half::slice::HalfFloatSliceExt;
use half::vec::HalfFloatVecExt;
use half::{bf16, f16};

use crate::error::Result;

/// Rows handed to one task: large enough to amortise scheduling, small enough to balance cores.
const ROWS_PER_TASK: usize = 16;
/// Width of the f32 scratch block used to widen half-precision weights.
const BLOCK: usize = 256;

/// Activation rows this path takes at most: one token of each of that many streams. Each row's
/// products are computed exactly as a lone row's, so a stream decodes the same tokens batched or
/// alone; longer inputs (prompts) go to the general matmul, which reuses the weights in cache.
pub const MAX_ROWS: usize = 16;

/// `x · Wᵀ (+ bias)` for `x` holding up to [`MAX_ROWS`] rows, when the weights are a contiguous
/// CPU matrix; `None` when this fast path does not apply (the caller then uses the general
/// matmul).
pub fn row_times_transposed(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if !matches!(weight.device(), Device::Cpu) || weight.rank() != 2 {
        return Ok(None);
    }
    let (out_dim, in_dim) = weight.dims2()?;
    let rows = x.elem_count() / in_dim.max(1);
    if x.dim(candle_core::D::Minus1)? != in_dim || rows == 0 || rows > MAX_ROWS {
        return Ok(None);
    }
    let input = widened(x)?;
    let (storage, layout) = weight.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    let mut output = vec![0f32; rows * out_dim];
    match &*storage {
        Storage::Cpu(CpuStorage::F32(w)) => rows_times(&w[start..end], in_dim, &input, &mut output),
        Storage::Cpu(CpuStorage::F16(w)) => rows_times(&w[start..end], in_dim, &input, &mut output),
        Storage::Cpu(CpuStorage::BF16(w)) => {
            rows_times(&w[start..end], in_dim, &input, &mut output)
        }
        _ => return Ok(None),
    }
    drop(storage);
    let mut shape = x.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = out_dim;
    }
    if let Some(b) = bias {
        let b = widened(b)?;
        if b.len() != out_dim {
            return Ok(None);
        }
        crate::kernels::add_to_rows(&mut output, &b);
    }
    // Rounded once to the input's type, as the f32 product plus bias converted by `to_dtype`
    // (a decode step of a half-precision model converted every product's input and output
    // element by element through tensor ops, on one thread while the others waited).
    let y = match x.dtype() {
        DType::F16 => Tensor::from_vec(Vec::<f16>::from_f32_slice(&output), shape, x.device())?,
        DType::BF16 => Tensor::from_vec(Vec::<bf16>::from_f32_slice(&output), shape, x.device())?,
        _ => Tensor::from_vec(output, shape, x.device())?.to_dtype(x.dtype())?,
    };
    Ok(Some(y))
}

/// Every value of `t` in order, as f32 (half-precision ones widened with SIMD).
fn widened(t: &Tensor) -> Result<Vec<f32>> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        drop(storage);
        return Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?);
    };
    let values = match &*storage {
        Storage::Cpu(CpuStorage::F16(v)) => v[start..end].to_f32_vec(),
        Storage::Cpu(CpuStorage::BF16(v)) => v[start..end].to_f32_vec(),
        Storage::Cpu(CpuStorage::F32(v)) => v[start..end].to_vec(),
        _ => {
            drop(storage);
            return Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?);
        }
    };
    Ok(values)
}

/// A weight element: f32, or a half-precision one widened in registers.
#[cfg(target_arch = "x86_64")]
pub(crate) trait Weight: x86::Lanes + Copy + Send + Sync + 'static {
    fn widen(row: &[Self], out: &mut [f32]);
}

/// A weight element: f32, or a half-precision one widened to f32.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) trait Weight: Copy + Send + Sync + 'static {
    fn widen(row: &[Self], out: &mut [f32]);
}

impl Weight for f32 {
    fn widen(row: &[f32], out: &mut [f32]) {
        out.copy_from_slice(row);
    }
}

impl Weight for f16 {
    fn widen(row: &[f16], out: &mut [f32]) {
        row.convert_to_f32_slice(out);
    }
}

impl Weight for bf16 {
    fn widen(row: &[bf16], out: &mut [f32]) {
        row.convert_to_f32_slice(out);
    }
}

/// `output[i, j] = weights[j, ·] · inputs[i, ·]` for `weights` of rows of `in_dim`, split over
/// the CPU thread pool by groups of weight rows (the pool candle's ops and the quantized kernels
/// use, so no two pools spin against each other). A group's rows are read from memory once and
/// from the core's caches for the other inputs.
fn rows_times<W: Weight>(weights: &[W], in_dim: usize, inputs: &[f32], output: &mut [f32]) {
    let out = crate::kernels::Shared(output.as_mut_ptr());
    let m = inputs.len() / in_dim;
    let n = output.len() / m;
    crate::kernels::parallel(n.div_ceil(ROWS_PER_TASK), |task| {
        for (i, input) in inputs.chunks_exact(in_dim).enumerate() {
            rows_times_one(weights, in_dim, input, task, n, |j, dot| {
                // SAFETY: each output column belongs to one task.
                unsafe { out.write(i * n + j, dot) }
            });
        }
    });
}

/// Task `task`'s group of weight rows times one input.
fn rows_times_one<W: Weight>(
    weights: &[W],
    in_dim: usize,
    input: &[f32],
    task: usize,
    n: usize,
    mut write: impl FnMut(usize, f32),
) {
    let first = task * ROWS_PER_TASK;
    let last = n.min(first + ROWS_PER_TASK);
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut group = first;
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        while group + x86::ROWS <= last {
            let rows = &weights[group * in_dim..(group + x86::ROWS) * in_dim];
            // SAFETY: `available` checked the CPU features; `rows` holds ROWS rows of in_dim.
            let dots = unsafe { x86::dot4(rows, in_dim, input) };
            for (i, dot) in dots.into_iter().enumerate() {
                write(group + i, dot);
            }
            group += x86::ROWS;
        }
    }
    for row in group..last {
        write(
            row,
            dot_widened(&weights[row * in_dim..(row + 1) * in_dim], input),
        );
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

fn dot_widened<W: Weight>(row: &[W], input: &[f32]) -> f32 {
    let mut block = [0f32; BLOCK];
    let mut sum = 0f32;
    for (part, x) in row.chunks(BLOCK).zip(input.chunks(BLOCK)) {
        let block = &mut block[..part.len()];
        W::widen(part, block);
        sum += dot(block, x);
    }
    sum
}

/// AVX2 + FMA (+ F16C) kernels: baseline x86-64 builds only vectorise with SSE2, and widening a
/// half-precision weight one element at a time costs more than reading it.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    use half::{bf16, f16};

    use crate::kernels::horizontal_sum;

    /// Rows one kernel call multiplies: the input is loaded once for all of them.
    pub const ROWS: usize = 4;

    pub fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }

    /// Eight weights widened to f32 in a register.
    pub trait Lanes: Copy {
        /// # Safety
        /// Eight elements must be readable at `at`; the CPU has [`available`]'s features.
        unsafe fn load8(at: *const Self) -> __m256;
    }

    impl Lanes for f32 {
        #[inline(always)]
        unsafe fn load8(at: *const f32) -> __m256 {
            // SAFETY: the caller's.
            unsafe { _mm256_loadu_ps(at) }
        }
    }

    impl Lanes for f16 {
        #[inline(always)]
        unsafe fn load8(at: *const f16) -> __m256 {
            // SAFETY: the caller's.
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(at as *const __m128i)) }
        }
    }

    impl Lanes for bf16 {
        /// A bf16 is the high half of the f32 it stands for.
        #[inline(always)]
        unsafe fn load8(at: *const bf16) -> __m256 {
            // SAFETY: the caller's.
            unsafe {
                let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(at as *const __m128i));
                _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16))
            }
        }
    }

    /// How far ahead each of the four rows is prefetched, in bytes: past the row's end, at the
    /// same distance into the row of the next group that continues its lane. Measured on this
    /// machine's mid model, against the two groups ahead it replaced: f32 decode 4–8 % faster,
    /// f16 and bf16 about 3 % (1 KiB and 4 KiB no better, in-row only worse for f16).
    const AHEAD_BYTES: usize = 2048;

    /// Four consecutive rows of `in_dim` · `input`, each row's lane prefetched [`AHEAD_BYTES`]
    /// ahead (the hardware prefetcher does not follow four interleaved streams far enough).
    ///
    /// # Safety
    /// The CPU has [`available`]'s features; `rows` holds ROWS rows of `in_dim`, `input` `in_dim`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4<W: super::Weight>(rows: &[W], in_dim: usize, input: &[f32]) -> [f32; ROWS] {
        let base = rows.as_ptr();
        let x = input.as_ptr();
        let mut acc = [_mm256_setzero_ps(); ROWS];
        let mut i = 0;
        let ahead = AHEAD_BYTES / std::mem::size_of::<W>();
        // Elements of a cache line: one prefetch each.
        let line = 64 / std::mem::size_of::<W>();
        // SAFETY: every load reads 8 elements at an offset + 8 ≤ in_dim of a row and the input;
        // prefetches never fault.
        unsafe {
            while i + 8 <= in_dim {
                let xs = _mm256_loadu_ps(x.add(i));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let at = base.add(r * in_dim + i);
                    if i % line == 0 {
                        let further = i + ahead;
                        let target = if further < in_dim {
                            base.wrapping_add(r * in_dim + further)
                        } else {
                            base.wrapping_add((ROWS + r) * in_dim + further - in_dim)
                        };
                        _mm_prefetch::<_MM_HINT_T0>(target as *const i8);
                    }
                    *acc = _mm256_fmadd_ps(W::load8(at), xs, *acc);
                }
                i += 8;
            }
        }
        let mut sums = [0f32; ROWS];
        for (r, sum) in sums.iter_mut().enumerate() {
            *sum = horizontal_sum(acc[r]);
            let row = &rows[r * in_dim..(r + 1) * in_dim];
            let mut tail = [0f32; 8];
            super::Weight::widen(&row[i..], &mut tail[..in_dim - i]);
            for (w, x) in tail.iter().zip(&input[i..]) {
                *sum += w * x;
            }
        }
        sums
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
