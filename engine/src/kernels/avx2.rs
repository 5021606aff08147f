//! AVX2 products for CPUs without VNNI: one block per 256-bit register, `vpmaddubsw` (unsigned ×
//! signed bytes into 16-bit pairs) then `vpmaddwd` into eight 32-bit lanes. q4_0 weights are
//! unsigned nibbles (the activation's −8 × Σ is added after); q8_0 products use the sign trick
//! (|w| × a·sign(w)), since an unsigned activation could overflow the 16-bit pairs.

use std::arch::x86_64::*;

use super::blocks::{BlockFormat, Pair, BLOCK};

pub fn supported() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// See [`super::portable::tile`].
///
/// # Safety
/// The CPU must have the features [`supported`] checks; every row holds the blocks its
/// activations' pairs cover, and `out` has `rows.len() × acts.len()` places.
pub unsafe fn tile(format: BlockFormat, rows: &[&[u8]], acts: &[&[Pair]], out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match (format, rows.len(), acts.len()) {
            (BlockFormat::Q4_0, 4, 1) => q4_0::<4, 1>(rows, acts, out),
            (BlockFormat::Q4_0, 2, 4) => q4_0::<2, 4>(rows, acts, out),
            (BlockFormat::Q8_0, 4, 1) => q8_0::<4, 1>(rows, acts, out),
            (BlockFormat::Q8_0, 2, 4) => q8_0::<2, 4>(rows, acts, out),
            _ => {
                for (r, row) in rows.iter().enumerate() {
                    for (c, act) in acts.iter().enumerate() {
                        let mut one = [0f32];
                        match format {
                            BlockFormat::Q4_0 => q4_0::<1, 1>(&[row], &[act], &mut one),
                            BlockFormat::Q8_0 => q8_0::<1, 1>(&[row], &[act], &mut one),
                        }
                        out[r * acts.len() + c] = one[0];
                    }
                }
            }
        }
    }
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn scale(block: *const u8) -> __m256 {
    // SAFETY: `block` points at a block's f16 scale (caller).
    let bits = unsafe { (block as *const u16).read_unaligned() };
    _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
        bits,
    )))))
}

/// The sum of the eight lanes (the dense kernels' too).
#[target_feature(enable = "avx2,fma")]
pub(crate) fn horizontal_sum(v: __m256) -> f32 {
    let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let pair = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0<const R: usize, const C: usize>(rows: &[&[u8]], acts: &[&[Pair]], out: &mut [f32]) {
    const BYTES: usize = 18;
    let blocks = rows[0].len() / BYTES;
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    for b in 0..blocks {
        let (p, half) = (b / 2, b % 2);
        for r in 0..R {
            // SAFETY: block b lies inside the row (caller).
            let (w, d) = unsafe {
                let block = rows[r].as_ptr().add(b * BYTES);
                // Two groups of rows ahead (see avx512.rs).
                _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(2 * R * rows[r].len()) as *const i8);
                let q = _mm_loadu_si128(block.add(2) as *const __m128i);
                let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
                (_mm256_and_si256(both, low), scale(block))
            };
            for c in 0..C {
                let pair = &acts[c][p];
                // SAFETY: each half of a pair's fields is 32 bytes.
                let (a, offset, s) = unsafe {
                    (
                        _mm256_loadu_si256(pair.qs.as_ptr().add(BLOCK * half) as *const __m256i),
                        _mm256_loadu_si256(pair.offset.as_ptr().add(8 * half) as *const __m256i),
                        _mm256_loadu_ps(pair.scale.as_ptr().add(8 * half)),
                    )
                };
                let sums =
                    _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(w, a), ones), offset);
                acc[r][c] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(d, s), acc[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[r * C + c] = horizontal_sum(acc[r][c]);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0<const R: usize, const C: usize>(rows: &[&[u8]], acts: &[&[Pair]], out: &mut [f32]) {
    const BYTES: usize = 34;
    let blocks = rows[0].len() / BYTES;
    let ones = _mm256_set1_epi16(1);
    let flip = _mm256_set1_epi8(-128);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    for b in 0..blocks {
        let (p, half) = (b / 2, b % 2);
        for r in 0..R {
            // SAFETY: block b lies inside the row (caller).
            let (w, d) = unsafe {
                let block = rows[r].as_ptr().add(b * BYTES);
                // Two groups of rows ahead (see avx512.rs).
                _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(2 * R * rows[r].len()) as *const i8);
                (
                    _mm256_loadu_si256(block.add(2) as *const __m256i),
                    scale(block),
                )
            };
            let magnitude = _mm256_sign_epi8(w, w);
            for c in 0..C {
                let pair = &acts[c][p];
                // SAFETY: each half of a pair's fields is 32 bytes.
                let (a, s) = unsafe {
                    (
                        _mm256_loadu_si256(pair.qs.as_ptr().add(BLOCK * half) as *const __m256i),
                        _mm256_loadu_ps(pair.scale.as_ptr().add(8 * half)),
                    )
                };
                // Back to signed, then the sign of w moved onto the activation.
                let signed = _mm256_sign_epi8(_mm256_xor_si256(a, flip), w);
                let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, signed), ones);
                acc[r][c] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(d, s), acc[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[r * C + c] = horizontal_sum(acc[r][c]);
        }
    }
}
