//! One new token's attention over its cache on the CPU, fused: for each head the scores of every
//! cached position, their softmax and the weighted sum of the values in one pass over the cache,
//! in f32, with no tensor operation in between (a decode step otherwise runs about ten small
//! tensor ops per layer and stream, each allocating and dispatching more than it computes).
//!
//! It computes what the general path computes: `softmax(q·kᵀ × score_scale) · v`, a query head
//! reading the keys and values of its group (multi-query attention).

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

use crate::error::Result;

/// Multiply-adds below which one token's attention runs on the calling thread.
const PARALLEL_WORK: usize = 1 << 16;

/// The attention context `[1, heads, 1, d]` of one token of one sequence: `query`
/// `[1, heads, 1, d]` (already scaled as the general path scales it), `keys` and `values`
/// `[1, kv_heads, len, d]` (views of the cache, the new token's included); `None` when the fast
/// path does not apply (another device or dtype, a batch, a tracked graph).
pub(crate) fn one_token(
    query: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    score_scale: f32,
) -> Result<Option<Tensor>> {
    let applies =
        |t: &Tensor| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32 && !t.track_op();
    if ![query, keys, values].iter().all(|t| applies(t)) {
        return Ok(None);
    }
    let (b, heads, seq, d) = query.dims4()?;
    let (kb, groups, len, kd) = keys.dims4()?;
    if b != 1 || seq != 1 || kb != 1 || kd != d || values.dims4()? != (1, groups, len, d) {
        return Ok(None);
    }
    if groups == 0 || heads % groups != 0 || len == 0 {
        return Ok(None);
    }
    let query = query.contiguous()?;
    let (q_storage, q_layout) = query.storage_and_layout();
    let (k_storage, k_layout) = keys.storage_and_layout();
    let (v_storage, v_layout) = values.storage_and_layout();
    let (
        Storage::Cpu(CpuStorage::F32(q)),
        Storage::Cpu(CpuStorage::F32(k)),
        Storage::Cpu(CpuStorage::F32(v)),
    ) = (&*q_storage, &*k_storage, &*v_storage)
    else {
        return Ok(None);
    };
    // A cache view: rows of d contiguous, positions d apart, groups `stride[1]` apart.
    let rows = |layout: &candle_core::Layout| {
        let stride = layout.stride();
        (stride[3] == 1 && stride[2] == d).then(|| (layout.start_offset(), stride[1]))
    };
    let (Some((k_start, k_group)), Some((v_start, v_group))) = (rows(k_layout), rows(v_layout))
    else {
        return Ok(None);
    };
    let q = &q[q_layout.start_offset()..q_layout.start_offset() + heads * d];
    let per_group = heads / groups;
    let mut out = vec![0f32; heads * d];
    let shared = crate::kernels::Shared(out.as_mut_ptr());
    let head = |h: usize| {
        let g = h / per_group;
        let query = &q[h * d..(h + 1) * d];
        let key = |t: usize| &k[k_start + g * k_group + t * d..][..d];
        let value = |t: usize| &v[v_start + g * v_group + t * d..][..d];
        let mut scores: Vec<f32> = (0..len).map(|t| dot(query, key(t)) * score_scale).collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for s in &mut scores {
            *s = (*s - max).exp();
            sum += *s;
        }
        // SAFETY: head h's d outputs are written by task h alone.
        let context = unsafe { shared.slice(h * d, d) };
        for (t, &p) in scores.iter().enumerate() {
            add_scaled(context, p / sum, value(t));
        }
    };
    // Handing the heads to the pool costs more than a short cache's few thousand products (many
    // small streams decoded together would spend their step dispatching).
    if heads * len * d < PARALLEL_WORK {
        (0..heads).for_each(head);
    } else {
        crate::kernels::parallel(heads, head);
    }
    drop((q_storage, k_storage, v_storage));
    Ok(Some(Tensor::from_vec(
        out,
        (1, 1, heads * d),
        &Device::Cpu,
    )?))
}

/// Dot product: AVX2 + FMA where the CPU has them (baseline x86-64 builds vectorise with SSE2
/// only), eight independent accumulators otherwise.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: `available` checked the features the kernel is compiled for.
        return unsafe { x86::dot(a, b) };
    }
    portable_dot(a, b)
}

/// `into += weight × x`.
fn add_scaled(into: &mut [f32], weight: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: `available` checked the features the kernel is compiled for.
        return unsafe { x86::add_scaled(into, weight, x) };
    }
    for (c, &v) in into.iter_mut().zip(x) {
        *c += weight * v;
    }
}

fn portable_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (x, y) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a[chunks..]
        .iter()
        .zip(&b[chunks..])
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE
            .get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA ([`available`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn add_scaled(into: &mut [f32], weight: f32, x: &[f32]) {
        let n = into.len().min(x.len());
        let w = _mm256_set1_ps(weight);
        let mut i = 0;
        // SAFETY: every access is 8 floats at an offset + 8 ≤ n of both slices.
        unsafe {
            while i + 8 <= n {
                let at = into.as_mut_ptr().add(i);
                _mm256_storeu_ps(
                    at,
                    _mm256_fmadd_ps(w, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(at)),
                );
                i += 8;
            }
        }
        for j in i..n {
            into[j] += weight * x[j];
        }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA ([`available`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut i = 0;
        // SAFETY: every load reads 8 floats at an offset + 8 ≤ n of both slices.
        unsafe {
            while i + 16 <= n {
                for (k, lane) in acc.iter_mut().enumerate() {
                    let at = i + 8 * k;
                    *lane = _mm256_fmadd_ps(
                        _mm256_loadu_ps(a.as_ptr().add(at)),
                        _mm256_loadu_ps(b.as_ptr().add(at)),
                        *lane,
                    );
                }
                i += 16;
            }
        }
        let mut sum = crate::kernels::horizontal_sum(_mm256_add_ps(acc[0], acc[1]));
        for j in i..n {
            sum += a[j] * b[j];
        }
        sum
    }
}
