//! Every kernel this CPU runs against the portable one, and the portable one against candle's
//! quantized matmul (the product the answers were made with).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use super::*;

/// Values in (−2, 2) from a xorshift stream.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 22) as f32 - 2.0
        })
        .collect()
}

fn weights(format: BlockFormat, n: usize, k: usize, seed: u64) -> QTensor {
    let w = candle_core::Tensor::from_vec(values(n * k, seed), (n, k), &Device::Cpu).unwrap();
    let dtype = match format {
        BlockFormat::Q4_0 => GgmlDType::Q4_0,
        BlockFormat::Q8_0 => GgmlDType::Q8_0,
    };
    QTensor::quantize(&w, dtype).unwrap()
}

/// candle's reference CPU matmul (`k_quants::matmul`: activations rounded to q8_0 blocks, one
/// `vec_dot` per output). Its AVX-512 path for q8_0 (`repack_x86`) rounds to 256-value blocks
/// instead, so `QMatMul` itself differs by machine.
fn candle(q: &QTensor, x: &[f32], m: usize) -> Vec<f32> {
    use candle_core::quantized::k_quants::{matmul, BlockQ4_0, BlockQ8_0};
    let (n, k) = q.shape().dims2().unwrap();
    let data = q.data().unwrap();
    let mut out = vec![0f32; m * n];
    // SAFETY: the storage is a Vec of the dtype's blocks (repr(C), 2-byte aligned).
    unsafe {
        match q.dtype() {
            GgmlDType::Q4_0 => {
                let blocks = std::slice::from_raw_parts(
                    data.as_ptr() as *const BlockQ4_0,
                    data.len() / std::mem::size_of::<BlockQ4_0>(),
                );
                matmul((m, k, n), x, blocks, &mut out).unwrap();
            }
            _ => {
                let blocks = std::slice::from_raw_parts(
                    data.as_ptr() as *const BlockQ8_0,
                    data.len() / std::mem::size_of::<BlockQ8_0>(),
                );
                matmul((m, k, n), x, blocks, &mut out).unwrap();
            }
        }
    }
    out
}

fn close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    // Sums in another order differ by rounding relative to the largest outputs, not to each one.
    let scale = want.iter().fold(1f32, |m, w| m.max(w.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tolerance * scale,
            "{what} at {i}: {g} vs {w}"
        );
    }
}

#[test]
fn every_kernel_matches_the_portable_one_and_candle() {
    let shapes = [
        (1, 32, 1),
        (5, 96, 3),
        (17, 64, 2),
        (64, 2048, 1),
        (33, 320, 9),
        (8, 256, 4),
    ];
    for format in [BlockFormat::Q4_0, BlockFormat::Q8_0] {
        for (seed, &(n, k, m)) in shapes.iter().enumerate() {
            let q = weights(format, n, k, seed as u64);
            let xs = values(m * k, 100 + seed as u64);
            let data = q.data().unwrap();
            let mut reference = vec![0f32; m * n];
            matmul(Isa::Portable, format, &data, n, k, &xs, &mut reference).unwrap();
            let what = format!("{format:?} n={n} k={k} m={m}");
            // The integer sums are candle's; only the order of the float sums differs.
            close(
                &reference,
                &candle(&q, &xs, m),
                1e-5,
                &format!("portable vs candle, {what}"),
            );
            for isa in Isa::ALL.into_iter().filter(|isa| isa.supported()) {
                let mut got = vec![f32::NAN; m * n];
                matmul(isa, format, &data, n, k, &xs, &mut got).unwrap();
                close(
                    &got,
                    &reference,
                    1e-5,
                    &format!("{isa:?} vs portable, {what}"),
                );
            }
        }
    }
}

#[test]
fn bad_shapes_are_refused_with_the_shape() {
    let q = weights(BlockFormat::Q4_0, 4, 64, 1);
    let data = q.data().unwrap();
    let mut out = vec![0f32; 4];
    let error = matmul(
        Isa::Portable,
        BlockFormat::Q4_0,
        &data,
        4,
        48,
        &[0.0; 48],
        &mut out,
    )
    .unwrap_err();
    assert!(error.to_string().contains("4×48"), "{error}");
    let error = matmul(
        Isa::Portable,
        BlockFormat::Q4_0,
        &data,
        4,
        64,
        &[0.0; 65],
        &mut out,
    )
    .unwrap_err();
    assert!(error.to_string().contains("65 activations"), "{error}");
    let error = matmul(
        Isa::Portable,
        BlockFormat::Q8_0,
        &data,
        4,
        64,
        &[0.0; 64],
        &mut out,
    )
    .unwrap_err();
    assert!(error.to_string().contains("bytes of blocks"), "{error}");
}

#[test]
fn packed_tiles_unpack_exactly_and_multiply_as_the_portable_kernel() {
    for format in [BlockFormat::Q4_0, BlockFormat::Q8_0] {
        for (seed, &(n, k, m)) in [
            (16, 32, 1),
            (32, 96, 3),
            (48, 320, 9),
            (16, 2048, 17),
            (32, 64, 16),
            (16, 96, 33),
        ]
        .iter()
        .enumerate()
        {
            let q = weights(format, n, k, 50 + seed as u64);
            let data = q.data().unwrap();
            let packed = Packed::pack(format, &data, n, k).unwrap();
            assert_eq!(packed.bytes(), data.len());
            assert_eq!(packed.unpack(), data.to_vec(), "{format:?} {n}×{k}");
            if !Isa::Avx512Vnni.supported() {
                continue;
            }
            let xs = values(m * k, 200 + seed as u64);
            let mut reference = vec![0f32; m * n];
            matmul(Isa::Portable, format, &data, n, k, &xs, &mut reference).unwrap();
            let mut got = vec![f32::NAN; m * n];
            #[cfg(target_arch = "x86_64")]
            packed::matmul(&packed, &xs, &mut got).unwrap();
            close(
                &got,
                &reference,
                1e-5,
                &format!("packed {format:?} n={n} k={k} m={m}"),
            );
        }
    }
    assert!(Packed::pack(BlockFormat::Q4_0, &[0; 18], 1, 32).is_none());
}

#[cfg(target_arch = "x86_64")]
#[test]
fn vector_rounding_gives_the_scalar_blocks_bit_for_bit() {
    use packed::ActBlock;
    if !Isa::Avx512Vnni.supported() {
        return;
    }
    let mut row = values(32 * 40, 7);
    // Scaled up so the rounding sees every kind of fraction; a zero block, a block whose values
    // are exact halves after scaling (scale 1), a lone outlier, and negative halves.
    row.iter_mut().for_each(|v| *v *= 300.0);
    row[..32].fill(0.0);
    for (i, v) in row[32..64].iter_mut().enumerate() {
        *v = if i == 0 { 127.0 } else { i as f32 - 15.5 };
    }
    for (i, v) in row[64..96].iter_mut().enumerate() {
        *v = if i == 5 { -127.0 } else { -(i as f32) - 0.5 };
    }
    row[100] = 1e6;
    row[140] = -3e-30;
    let blocks = row.len() / 32;
    let (mut scalar, mut vector) = (
        vec![ActBlock::default(); blocks],
        vec![ActBlock::default(); blocks],
    );
    packed::round_row(&row, &mut scalar);
    // SAFETY: the CPU has AVX-512 VNNI (checked above); one place per block.
    unsafe { avx512::round_row(&row, &mut vector) };
    for (b, (s, v)) in scalar.iter().zip(&vector).enumerate() {
        assert_eq!(s.qs, v.qs, "block {b}");
        assert_eq!(s.d.to_bits(), v.d.to_bits(), "block {b}");
        assert_eq!(s.sum, v.sum, "block {b}");
    }
    // The scalar rounding is the one the products are tested with: it must see halves.
    assert!(scalar[1].qs.iter().any(|&q| q % 2 != 0));
}
