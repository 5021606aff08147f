//! The GGML block formats the product stores (q4_0, q8_0: 32 weights and one f16 scale a block)
//! and the activations as the kernels read them: rounded to q8_0 blocks exactly as candle's
//! `BlockQ8_0::from_float` rounds them (so a product's integer sums are the ones candle's kernels
//! form, and the answers do not change), laid out two blocks at a time for 512-bit registers.

use half::f16;

/// Values in one block.
pub const BLOCK: usize = 32;

/// A block format of weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFormat {
    /// A f16 scale, then 16 bytes: value `i` is the low nibble of byte `i` (`i < 16`) or the high
    /// nibble of byte `i - 16`, minus 8.
    Q4_0,
    /// A f16 scale, then 32 signed bytes.
    Q8_0,
}

impl BlockFormat {
    /// Bytes of one block.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q8_0 => 34,
        }
    }
}

/// Two consecutive q8 activation blocks as every kernel reads them. The `qs` of a q4_0 product
/// are the signed values; of a q8_0 product the values plus 128 (unsigned, so that a weight byte
/// can be the signed operand of `vpdpbusd`). A missing second block (an odd count) has scale 0.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Pair {
    pub qs: [u8; 2 * BLOCK],
    /// The blocks' f16 scales as f32, each repeated over the eight 32-bit lanes of its half.
    pub scale: [f32; 16],
    /// q4_0 products: −8 × the sum of each lane's four values (the weights' offset of 8, paid
    /// once per activation instead of once per weight row).
    pub offset: [i32; 16],
}

impl Default for Pair {
    fn default() -> Self {
        Pair {
            qs: [0; 2 * BLOCK],
            scale: [0.0; 16],
            offset: [0; 16],
        }
    }
}

/// Pairs of one activation row of `k` values.
pub const fn pairs(k: usize) -> usize {
    k.div_ceil(2 * BLOCK)
}

/// Rounds one row of `k` (a multiple of 32) values to q8 blocks into `out` (`pairs(k)` pairs),
/// prepared for `format`'s products.
pub fn prepare_row(row: &[f32], format: BlockFormat, out: &mut [Pair]) {
    for (pair, values) in out.iter_mut().zip(row.chunks(2 * BLOCK)) {
        *pair = Pair::default();
        for (half, block) in values.chunks(BLOCK).enumerate() {
            let (d, qs) = quantize_block(block);
            pair.scale[8 * half..8 * half + 8].fill(d.to_f32());
            for (lane, four) in qs.chunks(4).enumerate() {
                let sum: i32 = four.iter().map(|&q| i32::from(q)).sum();
                pair.offset[8 * half + lane] = -8 * sum;
            }
            for (slot, &q) in pair.qs[BLOCK * half..BLOCK * (half + 1)]
                .iter_mut()
                .zip(&qs)
            {
                *slot = match format {
                    BlockFormat::Q4_0 => q as u8,
                    BlockFormat::Q8_0 => (q as u8) ^ 0x80,
                };
            }
        }
    }
}

/// One block as candle's `BlockQ8_0::from_float`: scale `max|x| / 127` stored as f16, values
/// `round(x / scale)` (half away from zero) with the unrounded reciprocal.
pub fn quantize_block(block: &[f32]) -> (f16, [i8; BLOCK]) {
    let amax = block.iter().fold(0f32, |m, &x| m.max(x.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; BLOCK];
    for (q, &x) in qs.iter_mut().zip(block) {
        *q = round_half_away(x * id) as i8;
    }
    (f16::from_f32(d), qs)
}

/// `f32::round` (half away from zero) without the library call it compiles to on baseline
/// x86-64 (a fifth of a prompt's activation rounding): exact for |v| < 2³¹, and beyond that the
/// `as i8` cast saturates either way (NaN gives 0 both ways).
#[inline(always)]
fn round_half_away(v: f32) -> i32 {
    let t = v as i32;
    // Exact: t is v without its fraction, so the difference has no rounding.
    let fraction = v - t as f32;
    t + i32::from(fraction >= 0.5) - i32::from(fraction <= -0.5)
}

/// The f16 scale at the start of a block.
#[inline(always)]
pub fn block_scale(block: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{BlockQ8_0, GgmlType};

    #[test]
    fn rounding_is_round_half_away_from_zero() {
        for v in [
            0.0f32,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            126.5,
            -126.5,
            0.49999997,
            -0.49999997,
            127.4,
            3.0,
        ] {
            assert_eq!(round_half_away(v), v.round() as i32, "{v}");
        }
        for i in 0..100_000 {
            let v = (i as f32 - 50_000.0) / 391.0;
            assert_eq!(round_half_away(v), v.round() as i32, "{v}");
        }
    }

    #[test]
    fn blocks_round_as_candle_does() {
        let mut values: Vec<f32> = (0..32 * 64)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 37.0)
            .collect();
        // Exact halves after scaling, zero blocks and a single outlier.
        values[..32].fill(0.0);
        values[32..64]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as f32 - 16.0);
        values[64] = 1e6;
        // A block of scale 1 (its largest value 127) whose other values are exact halves.
        values[96..128]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = if i == 0 { 127.0 } else { i as f32 - 15.5 });
        let mut candle = vec![BlockQ8_0::zeros(); values.len() / 32];
        BlockQ8_0::from_float(&values, &mut candle);
        for (block, reference) in values.chunks(32).zip(&candle) {
            // SAFETY: BlockQ8_0 is repr(C): a f16 then 32 bytes.
            let bytes: &[u8; 34] = unsafe { &*(reference as *const BlockQ8_0 as *const [u8; 34]) };
            let (d, qs) = quantize_block(block);
            assert_eq!(d.to_bits().to_le_bytes(), [bytes[0], bytes[1]]);
            assert_eq!(&qs.map(|q| q as u8)[..], &bytes[2..]);
        }
    }
}
