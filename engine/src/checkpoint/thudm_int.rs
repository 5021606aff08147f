//! THUDM's own quantized checkpoints (`chatglm-6b-int4`, `-int8`, and what `quantize(bits)` then
//! `save_pretrained` writes): each quantized `X.weight` is stored as int8 with a per-row f16
//! `X.weight_scale`. At 8 bits a byte is one weight; at 4 bits a byte holds two, the first in the
//! high nibble, both signed (`quantization.py`'s `int4WeightCompression`). A weight is
//! `q · scale[row]`, computed exactly in f32 (the official kernels multiply in half precision,
//! which rounds the same exact product once).

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Tensor};
use half::f16;

/// The name of the scale that goes with a quantized weight.
pub fn scale_name(weight: &str) -> String {
    format!("{weight}_scale")
}

/// A THUDM quantized weight read back: its raw bytes a row, its per-row scales, and how many
/// weights a byte holds.
struct Packed {
    raw: Vec<u8>,
    bytes: usize,
    scales: Vec<f32>,
    per_byte: usize,
}

impl Packed {
    fn read(packed: &Tensor, scale: &Tensor, cols: usize) -> Result<Self, String> {
        let (rows, bytes) = packed
            .dims2()
            .map_err(|e| format!("a quantized weight must be a matrix: {e}"))?;
        let per_byte = match cols {
            c if c == bytes => 1,
            c if c == 2 * bytes => 2,
            _ => {
                return Err(format!(
                "holds {bytes} bytes a row, which is neither {cols} int8 nor {cols} int4 weights"
            ))
            }
        };
        let scales: Vec<f32> = scale
            .to_dtype(DType::F32)
            .and_then(|s| s.flatten_all()?.to_vec1())
            .map_err(|e| format!("its scale cannot be read: {e}"))?;
        if scales.len() != rows {
            return Err(format!("has {rows} rows but {} scales", scales.len()));
        }
        let raw: Vec<u8> = packed
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(|e| format!("cannot be read: {e}"))?;
        Ok(Self {
            raw,
            bytes,
            scales,
            per_byte,
        })
    }

    /// Each row's scale and signed weights, in column order.
    fn rows(&self) -> impl Iterator<Item = (f32, impl Iterator<Item = i8> + '_)> + '_ {
        let per_byte = self.per_byte;
        self.raw
            .chunks_exact(self.bytes)
            .zip(&self.scales)
            .map(move |(row, &scale)| {
                let weights = row.iter().flat_map(move |&byte| {
                    let q = byte as i8;
                    // Arithmetic shifts keep the sign of each nibble.
                    let pair = if per_byte == 1 {
                        [Some(q), None]
                    } else {
                        [Some(q >> 4), Some((q << 4) >> 4)]
                    };
                    pair.into_iter().flatten()
                });
                (scale, weights)
            })
    }
}

/// Widens `packed` (`[rows, bytes]`, the raw int8 bytes) with `scale` (`[rows]`) to f32
/// `[rows, cols]`; `cols` says whether a byte holds one weight or two.
pub fn dequantize(packed: &Tensor, scale: &Tensor, cols: usize) -> Result<Tensor, String> {
    let weights = Packed::read(packed, scale, cols)?;
    let rows = weights.scales.len();
    let mut values = Vec::with_capacity(rows * cols);
    for (scale, row) in weights.rows() {
        values.extend(row.map(|q| f32::from(q) * scale));
    }
    Tensor::from_vec(values, (rows, cols), packed.device()).map_err(|e| e.to_string())
}

/// The same weight as GGML blocks holding exactly its values, so a quantized base stays quantized
/// in memory: int8 as q8_0 (`q · d`), int4 as q4_0 (`(n - 8) · d` with the nibble `n = q + 8`),
/// every block's `d` its row's scale. `None` when no blocks can: a row that is not whole blocks of
/// 32, or a scale that is not an f16 (the blocks' scales are).
pub fn repack(packed: &Tensor, scale: &Tensor, cols: usize) -> Result<Option<QTensor>, String> {
    const BLOCK: usize = 32;
    let weights = Packed::read(packed, scale, cols)?;
    let exact_f16 = |s: &f32| f16::from_f32(*s).to_f32() == *s;
    if !cols.is_multiple_of(BLOCK) || !weights.scales.iter().all(exact_f16) {
        return Ok(None);
    }
    let rows = weights.scales.len();
    let (format, block_bytes) = match weights.per_byte {
        1 => (GgmlDType::Q8_0, 2 + BLOCK),
        _ => (GgmlDType::Q4_0, 2 + BLOCK / 2),
    };
    let mut data = Vec::with_capacity(rows * cols / BLOCK * block_bytes);
    for (scale, row) in weights.rows() {
        let row: Vec<i8> = row.collect();
        for block in row.chunks_exact(BLOCK) {
            data.extend_from_slice(&f16::from_f32(scale).to_ne_bytes());
            if format == GgmlDType::Q8_0 {
                data.extend(block.iter().map(|&q| q as u8));
            } else {
                // q4_0 keeps weight j in the low nibble of byte j and weight j + 16 in its high one.
                let (low, high) = block.split_at(BLOCK / 2);
                data.extend(
                    low.iter()
                        .zip(high)
                        .map(|(&l, &h)| ((l + 8) as u8) | (((h + 8) as u8) << 4)),
                );
            }
        }
    }
    let device = packed.device();
    QStorage::from_data(std::borrow::Cow::Owned(data), device, format)
        .and_then(|storage| QTensor::new(storage, (rows, cols)))
        .map(Some)
        .map_err(|e| format!("cannot be held as {format:?} blocks: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn nibbles_are_high_first_and_signed() {
        // 0x7F: +7 then -1; 0x80: -8 then 0; one row scaled by 0.5.
        let packed = Tensor::from_vec(vec![0x7Fu8, 0x80], (1, 2), &Device::Cpu).unwrap();
        let scale = Tensor::from_vec(vec![half::f16::from_f32(0.5)], 1, &Device::Cpu).unwrap();
        let four = dequantize(&packed, &scale, 4).unwrap();
        assert_eq!(four.to_vec2::<f32>().unwrap(), [[3.5, -0.5, -4.0, 0.0]]);
        let eight = dequantize(&packed, &scale, 2).unwrap();
        assert_eq!(eight.to_vec2::<f32>().unwrap(), [[63.5, -64.0]]);
        assert!(dequantize(&packed, &scale, 3)
            .unwrap_err()
            .contains("neither"));
    }

    #[test]
    fn repacked_blocks_hold_the_dequantized_values() {
        // Two rows of 64 weights covering every int4 and int8 value, scales 0.5 and 3/1024.
        let device = Device::Cpu;
        let raw: Vec<u8> = (0..128u32).map(|i| (i * 37 + 11) as u8).collect();
        let scale = Tensor::from_vec(
            vec![half::f16::from_f32(0.5), half::f16::from_f32(3.0 / 1024.0)],
            2,
            &device,
        )
        .unwrap();
        for (cols, bytes, format) in [(64, 64, GgmlDType::Q8_0), (128, 64, GgmlDType::Q4_0)] {
            let packed = Tensor::from_vec(raw.clone(), (2, bytes), &device).unwrap();
            let blocks = repack(&packed, &scale, cols).unwrap().unwrap();
            assert_eq!(blocks.dtype(), format);
            let ours = blocks
                .dequantize(&device)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let dense = dequantize(&packed, &scale, cols).unwrap();
            assert_eq!(ours, dense.to_vec2::<f32>().unwrap(), "{format:?}");
        }
        // A row that is not whole blocks, or a scale no f16 holds: no blocks, the dense path.
        let narrow = Tensor::from_vec(raw[..96].to_vec(), (2, 48), &device).unwrap();
        assert!(repack(&narrow, &scale, 48).unwrap().is_none());
        let packed = Tensor::from_vec(raw.clone(), (2, 64), &device).unwrap();
        let wide = Tensor::from_vec(vec![0.5f32, 0.1], 2, &device).unwrap();
        assert!(repack(&packed, &wide, 64).unwrap().is_none());
    }
}
