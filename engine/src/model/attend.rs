//! One new token's attention over its cache on the CPU, fused: for each head the scores of every
//! cached position, their softmax and the weighted sum of the values in one pass over the cache,
//! in f32, with no tensor operation in between (a decode step otherwise runs about ten small
//! tensor ops per layer and stream, each allocating and dispatching more than it computes).
//!
//! It computes what the general path computes: `softmax(q·kᵀ × score_scale) · v`, a query head
//! reading the keys and values of its group (multi-query attention).

use candle_core::{DType, Device, Storage, Tensor};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

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

/// A stream's inputs as slices: its query heads, and where each of its key and value rows start
/// (rows of `d` contiguous, positions `d` apart, groups `group` apart).
struct Views<'s, T> {
    query: &'s [T],
    keys: (&'s [T], usize, usize),
    values: (&'s [T], usize, usize),
    len: usize,
}

/// An element type of the cache the fused kernel reads: f32, or a half-precision one whose
/// general path rounds the scores, the probabilities and the context to it (see [`half_head`]).
trait Element: candle_core::WithDType {
    /// One head (see [`head`]).
    fn head(query: &[Self], keys: &[Self], values: &[Self], score_scale: f32, out: &mut [Self]);
}

impl Element for f32 {
    fn head(query: &[f32], keys: &[f32], values: &[f32], score_scale: f32, out: &mut [f32]) {
        head(query, keys, values, score_scale, out)
    }
}

/// A half-precision element, widened a row at a time with half's SIMD conversions.
trait Half: candle_core::WithDType {
    fn widen(from: &[Self], into: &mut [f32]);
}

impl Half for f16 {
    fn widen(from: &[f16], into: &mut [f32]) {
        from.convert_to_f32_slice(into);
    }
}

impl Half for bf16 {
    fn widen(from: &[bf16], into: &mut [f32]) {
        from.convert_to_f32_slice(into);
    }
}

impl<T: Half> Element for T {
    fn head(query: &[T], keys: &[T], values: &[T], score_scale: f32, out: &mut [T]) {
        half_head(query, keys, values, score_scale, out)
    }
}

/// The elements of a CPU storage of `T`'s type.
fn slice_of<T: Element>(storage: &Storage) -> Option<&[T]> {
    match storage {
        Storage::Cpu(cpu) => T::cpu_storage_as_slice(cpu).ok(),
        _ => None,
    }
}

/// The attention contexts `[streams, 1, heads × d]` of one new token of each of `streams`, all
/// heads of all streams handed to the thread pool at once; `None` when the fast path does not
/// apply to one of them (another device, a dtype other than f32/f16/bf16 or a mix, a batch, a
/// tracked graph, other shapes).
pub(crate) fn one_token(streams: &[OneToken], score_scale: f32) -> Result<Option<Tensor>> {
    let Some(first) = streams.first() else {
        return Ok(None);
    };
    match first.query.dtype() {
        DType::F32 => one_token_of::<f32>(streams, score_scale),
        DType::F16 => one_token_of::<f16>(streams, score_scale),
        DType::BF16 => one_token_of::<bf16>(streams, score_scale),
        _ => Ok(None),
    }
}

fn one_token_of<T: Element>(streams: &[OneToken], score_scale: f32) -> Result<Option<Tensor>> {
    let applies =
        |t: &Tensor| matches!(t.device(), Device::Cpu) && t.dtype() == T::DTYPE && !t.track_op();
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
    fn rows<'s, T: Element>(
        storage: &'s Storage,
        layout: &candle_core::Layout,
        d: usize,
    ) -> Option<(&'s [T], usize, usize)> {
        let data = slice_of::<T>(storage)?;
        let stride = layout.stride();
        (stride[3] == 1 && stride[2] == d).then(|| (data, layout.start_offset(), stride[1]))
    }
    let mut views = Vec::with_capacity(streams.len());
    for ([(q_storage, q_layout), (k_storage, k_layout), (v_storage, v_layout)], s) in
        guards.iter().zip(streams)
    {
        let (Some(q), Some(keys), Some(values)) = (
            slice_of::<T>(q_storage),
            rows::<T>(k_storage, k_layout, d),
            rows::<T>(v_storage, v_layout, d),
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
    let mut out = vec![T::zero(); streams.len() * heads * d];
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
        T::head(
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

/// Longest head [`half_head`] widens on the stack (ChatGLM's heads have 128 values).
const MAX_HALF_HEAD: usize = 256;

/// [`head`] for a half-precision cache, rounding where the general path's tensors of the
/// model's dtype round: each score `q·k` (computed in f32, as the CPU's half matmul computes)
/// before it is scaled, each probability before it weighs the values, and the context. A head
/// wider than [`MAX_HALF_HEAD`] is widened on the heap.
fn half_head<T: Half>(query: &[T], keys: &[T], values: &[T], score_scale: f32, context: &mut [T]) {
    let d = query.len();
    let mut stack = [0f32; 3 * MAX_HALF_HEAD];
    let mut heap = Vec::new();
    let scratch: &mut [f32] = if d <= MAX_HALF_HEAD {
        &mut stack[..3 * d]
    } else {
        heap.resize(3 * d, 0f32);
        &mut heap
    };
    let (q, rest) = scratch.split_at_mut(d);
    let (row, sum_out) = rest.split_at_mut(d);
    T::widen(query, q);
    // From f64 (exact for an f32) to the type: the same rounding as from the f32.
    let round_to = |v: f32| T::from_f64(f64::from(v));
    let round = |v: f32| round_to(v).to_f64() as f32;
    let mut scores: Vec<f32> = keys
        .chunks_exact(d)
        .map(|key| {
            T::widen(key, row);
            round(dot(q, row)) * score_scale
        })
        .collect();
    let sum = exp_shifted(&mut scores);
    sum_out.fill(0.0);
    for (&p, value) in scores.iter().zip(values.chunks_exact(d)) {
        T::widen(value, row);
        add_scaled(sum_out, round(p / sum), row);
    }
    for (c, &v) in context.iter_mut().zip(sum_out.iter()) {
        *c = round_to(v);
    }
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

    /// The general path of a half-precision model by tensor operations: the scores and the
    /// context are products of the model's dtype, the softmax is taken in f32 and rounded back.
    fn general_half(query: &Tensor, keys: &Tensor, values: &Tensor, scale: f32) -> Vec<f32> {
        let dtype = query.dtype();
        let scores = query
            .matmul(&keys.t().unwrap())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&(scores * scale as f64).unwrap()).unwrap();
        let context = probs.to_dtype(dtype).unwrap().matmul(values).unwrap();
        flat(&context)
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        let t = t.to_dtype(DType::F32).unwrap();
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// The same in f64 for one head, rounded to `round` where the model's dtype rounds (the
    /// scores, the probabilities, the context): what the fused kernel computes, summed exactly.
    fn rounded_reference(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        scale: f32,
        round: impl Fn(f64) -> f64,
    ) -> Vec<f64> {
        let d = q.len();
        let scores: Vec<f64> = keys
            .chunks_exact(d)
            .map(|k| {
                let dot: f64 = q
                    .iter()
                    .zip(k)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                round(dot) * f64::from(scale)
            })
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = exp.iter().sum();
        let mut out = vec![0f64; d];
        for (e, v) in exp.iter().zip(values.chunks_exact(d)) {
            let p = round(e / sum);
            for (o, &x) in out.iter_mut().zip(v) {
                *o += p * f64::from(x);
            }
        }
        out.into_iter().map(round).collect()
    }

    #[test]
    fn half_caches_attend_rounded_where_the_general_path_rounds() {
        type Round = fn(f64) -> f64;
        let cases: [(DType, Round, f32); 2] = [
            (DType::F16, |v| f16::from_f64(v).to_f64(), 2e-2),
            (DType::BF16, |v| bf16::from_f64(v).to_f64(), 6e-2),
        ];
        for (dtype, round, tolerance) in cases {
            for len in [1, 9, 300] {
                let (heads, d) = (4, 128);
                let half = |t: Tensor| t.to_dtype(dtype).unwrap();
                let query = half(tensor((1, heads, 1, d), 5));
                let keys = half(tensor((1, heads, len, d), 6));
                let values = half(tensor((1, heads, len, d), 7));
                let stream = OneToken {
                    query: &query,
                    keys: &keys,
                    values: &values,
                };
                let got = one_token(&[stream], 0.3)
                    .unwrap()
                    .expect("the fast path applies");
                assert_eq!(got.dtype(), dtype);
                let got = flat(&got);
                let (q, k, v) = (flat(&query), flat(&keys), flat(&values));
                let mut exact = 0;
                for h in 0..heads {
                    let want = rounded_reference(
                        &q[h * d..(h + 1) * d],
                        &k[h * len * d..(h + 1) * len * d],
                        &v[h * len * d..(h + 1) * len * d],
                        0.3,
                        round,
                    );
                    for (i, (&a, &b)) in got[h * d..(h + 1) * d].iter().zip(&want).enumerate() {
                        // f32 sums round differently from exact ones, at most an ulp of the
                        // dtype's after rounding.
                        let ulp = (round(b.abs() * (1.0 + 1.0 / 128.0)) - b.abs()).max(1e-7);
                        assert!(
                            (f64::from(a) - b).abs() <= ulp * 1.01,
                            "{dtype:?} len={len} head {h} value {i}: {a} vs {b}"
                        );
                        exact += usize::from(f64::from(a) == b);
                    }
                }
                assert!(
                    exact * 10 >= got.len() * 9,
                    "{dtype:?} len={len}: {exact} exact"
                );
                // And close to the tensor operations: candle's half matmul of one row sums in
                // the half type at places (1 % off at 300 positions), the kernel in f32.
                let general = general_half(&query, &keys, &values, 0.3);
                let largest = general.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (i, (a, b)) in got.iter().zip(&general).enumerate() {
                    assert!(
                        (a - b).abs() <= tolerance * largest,
                        "{dtype:?} len={len} value {i}: {a} vs general {b}"
                    );
                }
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
