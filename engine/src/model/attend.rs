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

/// One stream's new token: its query `[1, heads, 1, d]` (already scaled as the general path
/// scales it), its keys and values `[1, kv_heads, len, d]` (views of its cache, the new token's
/// included).
pub(crate) struct OneToken<'t> {
    pub query: &'t Tensor,
    pub keys: &'t Tensor,
    pub values: &'t Tensor,
}

/// A stream's inputs as slices of f32: its query heads, and where each of its key and value rows
/// start (rows of `d` contiguous, positions `d` apart, groups `group` apart).
struct Views<'s> {
    query: &'s [f32],
    keys: (&'s [f32], usize, usize),
    values: (&'s [f32], usize, usize),
    len: usize,
}

/// The attention contexts `[streams, 1, heads × d]` of one new token of each of `streams`, all
/// heads of all streams handed to the thread pool at once; `None` when the fast path does not
/// apply to one of them (another device or dtype, a batch, a tracked graph, other shapes).
pub(crate) fn one_token(streams: &[OneToken], score_scale: f32) -> Result<Option<Tensor>> {
    let applies =
        |t: &Tensor| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32 && !t.track_op();
    let Some(first) = streams.first() else {
        return Ok(None);
    };
    let (_, heads, _, d) = first.query.dims4()?;
    // Every stream has the first one's heads and key/value groups (the model's).
    let groups = first.keys.dim(1)?;
    if groups == 0 || heads % groups != 0 {
        return Ok(None);
    }
    for s in streams {
        if ![s.query, s.keys, s.values].iter().all(|t| applies(t)) {
            return Ok(None);
        }
        let (b, h, seq, qd) = s.query.dims4()?;
        let (kb, g, len, kd) = s.keys.dims4()?;
        if (b, h, seq, qd) != (1, heads, 1, d) || (kb, g, kd) != (1, groups, d) || len == 0 {
            return Ok(None);
        }
        if s.values.dims4()? != (1, groups, len, d) {
            return Ok(None);
        }
    }
    let queries = streams
        .iter()
        .map(|s| s.query.contiguous())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let guards: Vec<_> = streams
        .iter()
        .zip(&queries)
        .map(|(s, q)| {
            [
                q.storage_and_layout(),
                s.keys.storage_and_layout(),
                s.values.storage_and_layout(),
            ]
        })
        .collect();
    // A cache view: rows of d contiguous, positions d apart, groups `stride[1]` apart.
    fn rows<'s>(
        storage: &'s Storage,
        layout: &candle_core::Layout,
        d: usize,
    ) -> Option<(&'s [f32], usize, usize)> {
        let Storage::Cpu(CpuStorage::F32(data)) = storage else {
            return None;
        };
        let stride = layout.stride();
        (stride[3] == 1 && stride[2] == d)
            .then(|| (data.as_slice(), layout.start_offset(), stride[1]))
    }
    let mut views = Vec::with_capacity(streams.len());
    for ([(q_storage, q_layout), (k_storage, k_layout), (v_storage, v_layout)], s) in
        guards.iter().zip(streams)
    {
        let (Storage::Cpu(CpuStorage::F32(q)), Some(keys), Some(values)) = (
            &**q_storage,
            rows(k_storage, k_layout, d),
            rows(v_storage, v_layout, d),
        ) else {
            return Ok(None);
        };
        let at = q_layout.start_offset();
        views.push(Views {
            query: &q[at..at + heads * d],
            keys,
            values,
            len: s.keys.dim(2)?,
        });
    }
    let per_group = heads / groups;
    let mut out = vec![0f32; streams.len() * heads * d];
    let shared = crate::kernels::Shared(out.as_mut_ptr());
    let task = |i: usize| {
        let (view, h) = (&views[i / heads], i % heads);
        let g = h / per_group;
        // Rows of d contiguous, positions d apart: one group's cache is one slice.
        let (keys, at, group) = view.keys;
        let keys = &keys[at + g * group..][..view.len * d];
        let (values, at, group) = view.values;
        let values = &values[at + g * group..][..view.len * d];
        // SAFETY: the d outputs of head h of stream i / heads are written by task i alone.
        let context = unsafe { shared.slice(i * d, d) };
        head(
            &view.query[h * d..(h + 1) * d],
            keys,
            values,
            score_scale,
            context,
        );
    };
    let tasks = streams.len() * heads;
    let work: usize = views.iter().map(|v| heads * v.len * d).sum();
    // Handing the heads to the pool costs more than a short cache's few thousand products.
    if work < PARALLEL_WORK {
        (0..tasks).for_each(task);
    } else {
        crate::kernels::parallel(tasks, task);
    }
    drop(views);
    drop(guards);
    Ok(Some(Tensor::from_vec(
        out,
        (streams.len(), 1, heads * d),
        &Device::Cpu,
    )?))
}

/// `context = softmax(keys · query × score_scale) · values` for one head: `keys` and `values`
/// hold `context.len()`-value rows, one a position.
fn head(query: &[f32], keys: &[f32], values: &[f32], score_scale: f32, context: &mut [f32]) {
    let d = query.len();
    #[cfg(target_arch = "x86_64")]
    if x86::wide() {
        // SAFETY: `wide` checked the features; the slices hold whole rows of d values.
        match d {
            64 => return unsafe { x86::head::<4>(query, keys, values, score_scale, context) },
            128 => return unsafe { x86::head::<8>(query, keys, values, score_scale, context) },
            _ => {}
        }
    }
    let mut scores: Vec<f32> = keys
        .chunks_exact(d)
        .map(|key| dot(query, key) * score_scale)
        .collect();
    let sum = exp_shifted(&mut scores);
    for (&p, value) in scores.iter().zip(values.chunks_exact(d)) {
        add_scaled(context, p / sum, value);
    }
}

/// `exp(s − max)` in place; their sum.
fn exp_shifted(scores: &mut [f32]) -> f32 {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in scores {
        *s = (*s - max).exp();
        sum += *s;
    }
    sum
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

    /// AVX-512 beside [`available`]'s features: [`head`] runs.
    pub fn wide() -> bool {
        static WIDE: OnceLock<bool> = OnceLock::new();
        *WIDE.get_or_init(|| available() && is_x86_feature_detected!("avx512f"))
    }

    /// Positions ahead that [`head`] prefetches (the keys to L1, the values to L2 for the second
    /// pass: two streams in flight instead of one).
    const AHEAD: usize = 8;

    /// [`super::head`] for `d = 16 × N`, the query and the context in registers, giving the bits
    /// of [`dot`] and [`add_scaled`]: each 512-bit lane sums the products [`dot`]'s 256-bit
    /// lanes sum, in the same order, and its two halves are added as [`dot`] adds its two
    /// accumulators.
    ///
    /// # Safety
    /// The CPU must have the features [`wide`] checks; `query` and `context` hold `16 × N`
    /// values, `keys` and `values` whole rows of them.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn head<const N: usize>(
        query: &[f32],
        keys: &[f32],
        values: &[f32],
        score_scale: f32,
        context: &mut [f32],
    ) {
        let d = 16 * N;
        let len = keys.len() / d;
        // SAFETY (loads and stores below): every access is 16 floats inside a row of d of the
        // slices the caller sized; prefetches never fault.
        let q: [__m512; N] =
            std::array::from_fn(|n| unsafe { _mm512_loadu_ps(query.as_ptr().add(16 * n)) });
        let mut scores = Vec::with_capacity(len);
        for t in 0..len {
            unsafe {
                let key = keys.as_ptr().add(t * d);
                let ahead = key.wrapping_add(AHEAD * d) as *const i8;
                let value = values.as_ptr().wrapping_add((t + AHEAD) * d) as *const i8;
                for line in 0..N {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
                    _mm_prefetch::<_MM_HINT_T1>(value.wrapping_add(64 * line));
                }
                let mut acc = _mm512_mul_ps(q[0], _mm512_loadu_ps(key));
                for (n, q) in q.iter().enumerate().skip(1) {
                    acc = _mm512_fmadd_ps(*q, _mm512_loadu_ps(key.add(16 * n)), acc);
                }
                let halves = _mm256_add_ps(
                    _mm512_castps512_ps256(acc),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)),
                );
                scores.push(crate::kernels::horizontal_sum(halves) * score_scale);
            }
        }
        let sum = super::exp_shifted(&mut scores);
        let mut out = [_mm512_setzero_ps(); N];
        for (t, &p) in scores.iter().enumerate() {
            let weight = _mm512_set1_ps(p / sum);
            let value = unsafe { values.as_ptr().add(t * d) };
            for (n, out) in out.iter_mut().enumerate() {
                *out = _mm512_fmadd_ps(weight, unsafe { _mm512_loadu_ps(value.add(16 * n)) }, *out);
            }
        }
        for (n, out) in out.iter().enumerate() {
            unsafe { _mm512_storeu_ps(context.as_mut_ptr().add(16 * n), *out) };
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn tensor(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
        let len = shape.0 * shape.1 * shape.2 * shape.3;
        Tensor::from_vec(values(len, seed), shape, &Device::Cpu).unwrap()
    }

    /// `softmax(q·kᵀ × scale) · v` by tensor operations, a query head reading its group.
    fn general(query: &Tensor, keys: &Tensor, values: &Tensor, scale: f32) -> Vec<f32> {
        let heads = query.dim(1).unwrap();
        let groups = keys.dim(1).unwrap();
        let mut out = Vec::new();
        for h in 0..heads {
            let g = h / (heads / groups);
            let q = query.narrow(1, h, 1).unwrap();
            let k = keys.narrow(1, g, 1).unwrap();
            let v = values.narrow(1, g, 1).unwrap();
            let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale as f64).unwrap();
            let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
            out.extend(
                probs
                    .matmul(&v)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
        }
        out
    }

    #[test]
    fn streams_attend_as_the_tensor_operations_do() {
        for (d, heads, groups) in [(64, 4, 4), (128, 4, 2), (8, 2, 1)] {
            let lens = [1, 7, 300];
            let parts: Vec<(Tensor, Tensor, Tensor)> = lens
                .iter()
                .enumerate()
                .map(|(i, &len)| {
                    let seed = 10 * i as u64 + d as u64;
                    (
                        tensor((1, heads, 1, d), seed),
                        tensor((1, groups, len, d), seed + 1),
                        tensor((1, groups, len, d), seed + 2),
                    )
                })
                .collect();
            let streams: Vec<OneToken> = parts
                .iter()
                .map(|(query, keys, values)| OneToken {
                    query,
                    keys,
                    values,
                })
                .collect();
            let got = one_token(&streams, 0.3)
                .unwrap()
                .expect("the fast path applies");
            assert_eq!(got.dims(), [3, 1, heads * d]);
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want: Vec<f32> = parts
                .iter()
                .flat_map(|(q, k, v)| general(q, k, v, 0.3))
                .collect();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-5, "d={d} value {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_batch_or_a_prompt_is_left_to_the_general_path() {
        let (query, keys) = (tensor((1, 2, 3, 8), 1), tensor((1, 2, 5, 8), 2));
        let prompt = OneToken {
            query: &query,
            keys: &keys,
            values: &keys,
        };
        assert!(one_token(&[prompt], 1.0).unwrap().is_none());
        assert!(one_token(&[], 1.0).unwrap().is_none());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_wide_kernel_gives_the_bits_of_the_narrow_one() {
        if !x86::wide() {
            return;
        }
        for d in [64, 128] {
            let len = 37;
            let (query, keys, values) = (
                values(d, 1),
                super::tests::values(len * d, 2),
                super::tests::values(len * d, 3),
            );
            let mut wide = vec![0f32; d];
            head(&query, &keys, &values, 0.125, &mut wide);
            let mut scores: Vec<f32> = keys
                .chunks_exact(d)
                .map(|key| dot(&query, key) * 0.125)
                .collect();
            let sum = exp_shifted(&mut scores);
            let mut narrow = vec![0f32; d];
            for (&p, value) in scores.iter().zip(values.chunks_exact(d)) {
                add_scaled(&mut narrow, p / sum, value);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&wide), bits(&narrow), "d={d}");
        }
    }
}
