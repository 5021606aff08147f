//! AVX-512 VNNI products: two blocks per 512-bit register, and one `vpdpbusd` multiplies their 64
//! byte pairs and adds them four at a time into sixteen 32-bit lanes (eight per block), so a
//! block's integer sum never needs a horizontal add; the lanes are scaled by their block's two
//! scales and summed once per row at the end.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes. q4_0 weights are unsigned nibbles (0..15, the
//! value plus 8), so they go in as they are and the activation's precomputed `−8 × Σ` starts the
//! lanes. q8_0 weights are signed; the activations come offset to unsigned (value + 128) and one
//! more `vpdpbusd` of 128 × the weights takes the offset back out.

use std::arch::x86_64::*;

use super::blocks::{BlockFormat, Pair};
use super::packed::ActBlock;

pub fn supported() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("f16c")
        && is_x86_feature_detected!("fma")
}

/// See [`super::portable::tile`].
///
/// # Safety
/// The CPU must have the features [`supported`] checks; every row holds `acts[c].len()` pairs of
/// blocks (the last possibly one block), and `out` has `rows.len() × acts.len()` places.
pub unsafe fn tile(format: BlockFormat, rows: &[&[u8]], acts: &[&[Pair]], out: &mut [f32]) {
    /// The kernel for `$rows` weight rows and `acts.len()` (1 to 8) activation rows.
    macro_rules! by_acts {
        ($kernel:ident, $rows:literal) => {
            match acts.len() {
                1 => $kernel::<$rows, 1>(rows, acts, out),
                2 => $kernel::<$rows, 2>(rows, acts, out),
                3 => $kernel::<$rows, 3>(rows, acts, out),
                4 => $kernel::<$rows, 4>(rows, acts, out),
                5 => $kernel::<$rows, 5>(rows, acts, out),
                6 => $kernel::<$rows, 6>(rows, acts, out),
                7 => $kernel::<$rows, 7>(rows, acts, out),
                _ => $kernel::<$rows, 8>(rows, acts, out),
            }
        };
    }
    debug_assert!((1..=ACTS).contains(&acts.len()) && (1..=4).contains(&rows.len()));
    // SAFETY: forwarded from the caller.
    unsafe {
        match (format, rows.len()) {
            (BlockFormat::Q4_0, 4) if acts.len() == 1 => q4_0::<4, 1>(rows, acts, out),
            (BlockFormat::Q8_0, 4) if acts.len() == 1 => q8_0::<4, 1>(rows, acts, out),
            (BlockFormat::Q4_0, 2) => by_acts!(q4_0, 2),
            (BlockFormat::Q8_0, 2) => by_acts!(q8_0, 2),
            (BlockFormat::Q4_0, _) => by_acts!(q4_0, 1),
            (BlockFormat::Q8_0, _) => by_acts!(q8_0, 1),
        }
    }
}

/// Activation rows one prompt tile multiplies at once (2 × 8 accumulators and the operands fit
/// the 32 registers).
pub const ACTS: usize = 8;

/// The two blocks' f16 scales (at the start of each block), as eight lanes each.
#[target_feature(enable = "avx512f,f16c")]
unsafe fn weight_scales(first: *const u8, second: *const u8) -> __m512 {
    // SAFETY: both point at a block's scale (caller).
    let bits = unsafe {
        u32::from((first as *const u16).read_unaligned())
            | u32::from((second as *const u16).read_unaligned()) << 16
    };
    let both = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    let spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(both))
}

/// Rows × activations of q4_0 blocks.
// `p` indexes a pair in every activation row and two blocks in every weight row.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
unsafe fn q4_0<const R: usize, const C: usize>(rows: &[&[u8]], acts: &[&[Pair]], out: &mut [f32]) {
    const BYTES: usize = 18;
    let pairs = acts[0].len();
    let blocks = rows[0].len() / BYTES;
    let low = _mm512_set1_epi8(0x0F);
    // Per 128-bit quarter: [block 0 bytes, block 0 bytes >> 4, block 1, block 1 >> 4].
    let shifts = _mm512_set_epi64(
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
        0,
        0,
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
        0,
        0,
    );
    let spread = _mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    for p in 0..pairs {
        // An odd last block pairs with itself; the activation's missing half has scale 0.
        let second = if 2 * p + 1 < blocks { 2 * p + 1 } else { 2 * p };
        for r in 0..R {
            // SAFETY: blocks 2p and `second` lie inside the row (caller).
            let (w, scales) = unsafe {
                let b0 = rows[r].as_ptr().add(2 * p * BYTES);
                let b1 = rows[r].as_ptr().add(second * BYTES);
                // Two groups of rows ahead (this thread's next tasks): the hardware prefetcher
                // does not follow four interleaved short rows far enough (a third more speed).
                _mm_prefetch::<_MM_HINT_T0>(b0.wrapping_add(2 * R * rows[r].len()) as *const i8);
                let q0 = _mm_loadu_si128(b0.add(2) as *const __m128i);
                let q1 = _mm_loadu_si128(b1.add(2) as *const __m128i);
                let both = _mm512_castsi256_si512(_mm256_set_m128i(q1, q0));
                let nibbles = _mm512_srlv_epi16(_mm512_permutexvar_epi64(spread, both), shifts);
                (_mm512_and_si512(nibbles, low), weight_scales(b0, b1))
            };
            for c in 0..C {
                let pair = &acts[c][p];
                // SAFETY: `Pair` is 64-byte aligned and its fields are 64 bytes each.
                let (a, offset, scale) = unsafe {
                    (
                        _mm512_load_si512(pair.qs.as_ptr() as *const __m512i),
                        _mm512_load_si512(pair.offset.as_ptr() as *const __m512i),
                        _mm512_load_ps(pair.scale.as_ptr()),
                    )
                };
                let sums = _mm512_dpbusd_epi32(offset, w, a);
                acc[r][c] = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(sums),
                    _mm512_mul_ps(scales, scale),
                    acc[r][c],
                );
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[r * C + c] = _mm512_reduce_add_ps(acc[r][c]);
        }
    }
}

/// Rows × activations of q8_0 blocks.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
unsafe fn q8_0<const R: usize, const C: usize>(rows: &[&[u8]], acts: &[&[Pair]], out: &mut [f32]) {
    const BYTES: usize = 34;
    let pairs = acts[0].len();
    let blocks = rows[0].len() / BYTES;
    let offset = _mm512_set1_epi8(-128);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    for p in 0..pairs {
        let second = if 2 * p + 1 < blocks { 2 * p + 1 } else { 2 * p };
        for r in 0..R {
            // SAFETY: blocks 2p and `second` lie inside the row (caller).
            let (w, scales) = unsafe {
                let b0 = rows[r].as_ptr().add(2 * p * BYTES);
                let b1 = rows[r].as_ptr().add(second * BYTES);
                _mm_prefetch::<_MM_HINT_T0>(b0.wrapping_add(2 * R * rows[r].len()) as *const i8);
                let q0 = _mm256_loadu_si256(b0.add(2) as *const __m256i);
                let q1 = _mm256_loadu_si256(b1.add(2) as *const __m256i);
                (
                    _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1),
                    weight_scales(b0, b1),
                )
            };
            // −128 × Σ w per lane: the activations' +128 taken back out.
            let start = _mm512_sub_epi32(
                _mm512_setzero_si512(),
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, w),
            );
            for c in 0..C {
                let pair = &acts[c][p];
                // SAFETY: `Pair` is 64-byte aligned and its fields are 64 bytes each.
                let (a, scale) = unsafe {
                    (
                        _mm512_load_si512(pair.qs.as_ptr() as *const __m512i),
                        _mm512_load_ps(pair.scale.as_ptr()),
                    )
                };
                let sums = _mm512_dpbusd_epi32(start, a, w);
                acc[r][c] = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(sums),
                    _mm512_mul_ps(scales, scale),
                    acc[r][c],
                );
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[r * C + c] = _mm512_reduce_add_ps(acc[r][c]);
        }
    }
}

/// Sums of one 16-row tile of packed blocks (see [`super::packed`]) with `count` (1 to 8)
/// activation rows of `nb` blocks each: `sums[c][r]`.
///
/// # Safety
/// The CPU must have the features [`supported`] checks; `tile` holds `nb` tile blocks of
/// `format`, `acts` `count × nb` blocks, `sums` `count` rows.
pub unsafe fn packed_tile(
    format: BlockFormat,
    tile: &[u8],
    nb: usize,
    acts: &[ActBlock],
    count: usize,
    sums: &mut [[f32; 16]],
) {
    macro_rules! by_count {
        ($kernel:ident) => {
            match count {
                1 => $kernel::<1>(tile, nb, acts, sums),
                2 => $kernel::<2>(tile, nb, acts, sums),
                3 => $kernel::<3>(tile, nb, acts, sums),
                4 => $kernel::<4>(tile, nb, acts, sums),
                5 => $kernel::<5>(tile, nb, acts, sums),
                6 => $kernel::<6>(tile, nb, acts, sums),
                7 => $kernel::<7>(tile, nb, acts, sums),
                _ => $kernel::<8>(tile, nb, acts, sums),
            }
        };
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        match format {
            BlockFormat::Q4_0 => by_count!(packed_q4_0),
            BlockFormat::Q8_0 => by_count!(packed_q8_0),
        }
    }
}

/// One row of `k` (a multiple of 32) values rounded to q8_0 activation blocks, bit for bit as
/// [`super::blocks::quantize_block`] rounds each (same operations in the same order, 16 lanes at
/// a time): a decode step rounds its single row on one thread while the other waits, so the
/// scalar loop (about 2.7 ns a value) was a few per cent of every step.
///
/// # Safety
/// The CPU must have the features [`supported`] checks; `blocks` has `row.len() / 32` places.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn round_row(row: &[f32], blocks: &mut [ActBlock]) {
    let half = _mm512_set1_ps(0.5);
    let minus_half = _mm512_set1_ps(-0.5);
    let one = _mm512_set1_epi32(1);
    for (values, block) in row.chunks_exact(32).zip(blocks.iter_mut()) {
        // SAFETY: a chunk holds 32 values.
        let (lo, hi) = unsafe {
            (
                _mm512_loadu_ps(values.as_ptr()),
                _mm512_loadu_ps(values.as_ptr().add(16)),
            )
        };
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let id = _mm512_set1_ps(id);
        // round_half_away: the truncation, plus one where the fraction is ≥ ½, minus one where
        // it is ≤ −½ (the difference is exact, as in the scalar code).
        let round = |x: __m512| {
            let v = _mm512_mul_ps(x, id);
            let t = _mm512_cvttps_epi32(v);
            let fraction = _mm512_sub_ps(v, _mm512_cvtepi32_ps(t));
            let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(fraction, half);
            let down = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(fraction, minus_half);
            let t = _mm512_mask_add_epi32(t, up, t, one);
            _mm512_mask_sub_epi32(t, down, t, one)
        };
        let (lo, hi) = (round(lo), round(hi));
        let bytes = _mm256_set_m128i(_mm512_cvtepi32_epi8(hi), _mm512_cvtepi32_epi8(lo));
        // SAFETY: `qs` is 32 bytes.
        unsafe { _mm256_storeu_si256(block.qs.as_mut_ptr() as *mut __m256i, bytes) };
        // The values as stored (wrapped to 8 bits, as `as i8` wraps), summed.
        let wrapped = |t: __m512i| _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(t));
        block.sum = _mm512_reduce_add_epi32(_mm512_add_epi32(wrapped(lo), wrapped(hi)));
        block.d = half::f16::from_f32(d).to_f32();
    }
}

/// How far ahead of the block being multiplied the packed kernels prefetch, every line of the
/// tile block there (prefetching one line a block left 8 activation rows taking the time of the
/// reads plus the multiplications instead of the longer of the two; 4 KiB ahead decoded q8_0
/// 4 % faster than 2 KiB on this machine, 8 KiB no faster).
const AHEAD_BYTES: usize = 4096;

/// Prefetches every line of the tile block [`AHEAD_BYTES`] (rounded up to whole blocks of
/// `bytes`) after the one at `at`; a prefetch never faults, past the tile's end included.
#[inline]
#[target_feature(enable = "sse")]
fn prefetch_ahead(at: *const u8, bytes: usize) {
    let ahead = at.wrapping_add(AHEAD_BYTES.div_ceil(bytes) * bytes);
    for line in 0..bytes.div_ceil(64) {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line) as *const i8);
    }
}

/// Four activation values as one 32-bit lane, in all 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn broadcast4(qs: &[i8; 32], at: usize) -> __m512i {
    _mm512_set1_epi32(i32::from_le_bytes([
        qs[at] as u8,
        qs[at + 1] as u8,
        qs[at + 2] as u8,
        qs[at + 3] as u8,
    ]))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
unsafe fn packed_q4_0<const C: usize>(
    tile: &[u8],
    nb: usize,
    acts: &[ActBlock],
    sums: &mut [[f32; 16]],
) {
    const BYTES: usize = 16 * 18;
    let low = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); C];
    for b in 0..nb {
        // SAFETY: tile block b lies inside the tile (caller); 32 + 4 × 64 = 288 bytes.
        let (scales, groups) = unsafe {
            let at = tile.as_ptr().add(b * BYTES);
            prefetch_ahead(at, BYTES);
            let scales = _mm512_cvtph_ps(_mm256_loadu_si256(at as *const __m256i));
            let group = |g: usize| _mm512_loadu_si512(at.add(32 + 64 * g) as *const __m512i);
            (scales, [group(0), group(1), group(2), group(3)])
        };
        let mut ints = [_mm512_setzero_si512(); C];
        for c in 0..C {
            ints[c] = _mm512_set1_epi32(-8 * acts[c * nb + b].sum);
        }
        for (g, &v) in groups.iter().enumerate() {
            let lo = _mm512_and_si512(v, low);
            let hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
            for c in 0..C {
                let qs = &acts[c * nb + b].qs;
                ints[c] = _mm512_dpbusd_epi32(ints[c], lo, broadcast4(qs, 4 * g));
                ints[c] = _mm512_dpbusd_epi32(ints[c], hi, broadcast4(qs, 16 + 4 * g));
            }
        }
        for c in 0..C {
            let scale = _mm512_mul_ps(scales, _mm512_set1_ps(acts[c * nb + b].d));
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ints[c]), scale, acc[c]);
        }
    }
    for c in 0..C {
        // SAFETY: sums[c] holds 16 floats.
        unsafe { _mm512_storeu_ps(sums[c].as_mut_ptr(), acc[c]) };
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
unsafe fn packed_q8_0<const C: usize>(
    tile: &[u8],
    nb: usize,
    acts: &[ActBlock],
    sums: &mut [[f32; 16]],
) {
    const BYTES: usize = 16 * 34;
    let mut acc = [_mm512_setzero_ps(); C];
    for b in 0..nb {
        // SAFETY: tile block b lies inside the tile (caller); 32 + 8 × 64 = 544 bytes.
        let (scales, at) = unsafe {
            let at = tile.as_ptr().add(b * BYTES);
            prefetch_ahead(at, BYTES);
            (
                _mm512_cvtph_ps(_mm256_loadu_si256(at as *const __m256i)),
                at,
            )
        };
        let mut ints = [_mm512_setzero_si512(); C];
        for c in 0..C {
            ints[c] = _mm512_set1_epi32(-128 * acts[c * nb + b].sum);
        }
        for g in 0..8 {
            // SAFETY: group g of the tile block.
            let v = unsafe { _mm512_loadu_si512(at.add(32 + 64 * g) as *const __m512i) };
            for c in 0..C {
                ints[c] = _mm512_dpbusd_epi32(ints[c], v, broadcast4(&acts[c * nb + b].qs, 4 * g));
            }
        }
        for c in 0..C {
            let scale = _mm512_mul_ps(scales, _mm512_set1_ps(acts[c * nb + b].d));
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ints[c]), scale, acc[c]);
        }
    }
    for c in 0..C {
        // SAFETY: sums[c] holds 16 floats.
        unsafe { _mm512_storeu_ps(sums[c].as_mut_ptr(), acc[c]) };
    }
}
