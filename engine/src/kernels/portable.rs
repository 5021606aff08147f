//! The reference products in plain Rust: every target has them, and every SIMD kernel is tested
//! against them.

use super::blocks::{block_scale, BlockFormat, Pair, BLOCK};

/// `out[r * acts.len() + c]` = row `r` of the weights · activation row `c`.
pub fn tile(format: BlockFormat, rows: &[&[u8]], acts: &[&[Pair]], out: &mut [f32]) {
    for (r, row) in rows.iter().enumerate() {
        for (c, act) in acts.iter().enumerate() {
            out[r * acts.len() + c] = dot(format, row, act);
        }
    }
}

fn dot(format: BlockFormat, row: &[u8], act: &[Pair]) -> f32 {
    let mut sum = 0f32;
    for (b, block) in row.chunks_exact(format.block_bytes()).enumerate() {
        let pair = &act[b / 2];
        let half = b % 2;
        let qs = &pair.qs[BLOCK * half..BLOCK * (half + 1)];
        let integer: i32 = match format {
            BlockFormat::Q4_0 => (0..BLOCK)
                .map(|i| {
                    let byte = block[2 + i % 16];
                    let w = if i < 16 { byte & 0x0F } else { byte >> 4 };
                    (i32::from(w) - 8) * i32::from(qs[i] as i8)
                })
                .sum(),
            BlockFormat::Q8_0 => (0..BLOCK)
                .map(|i| i32::from(block[2 + i] as i8) * i32::from((qs[i] ^ 0x80) as i8))
                .sum(),
        };
        sum += block_scale(block) * pair.scale[8 * half] * integer as f32;
    }
    sum
}
