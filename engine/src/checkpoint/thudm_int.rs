//! THUDM's own quantized checkpoints (`chatglm-6b-int4`, `-int8`, and what `quantize(bits)` then
//! `save_pretrained` writes): each quantized `X.weight` is stored as int8 with a per-row f16
//! `X.weight_scale`. At 8 bits a byte is one weight; at 4 bits a byte holds two, the first in the
//! high nibble, both signed (`quantization.py`'s `int4WeightCompression`). A weight is
//! `q · scale[row]`, computed exactly in f32 (the official kernels multiply in half precision,
//! which rounds the same exact product once).

use candle_core::{DType, Tensor};

/// The name of the scale that goes with a quantized weight.
pub fn scale_name(weight: &str) -> String {
    format!("{weight}_scale")
}

/// Widens `packed` (`[rows, bytes]`, the raw int8 bytes) with `scale` (`[rows]`) to f32
/// `[rows, cols]`; `cols` says whether a byte holds one weight or two.
pub fn dequantize(packed: &Tensor, scale: &Tensor, cols: usize) -> Result<Tensor, String> {
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
    let mut values = Vec::with_capacity(rows * cols);
    for (row, bytes) in raw.chunks_exact(bytes).enumerate() {
        let scale = scales[row];
        for &byte in bytes {
            let q = byte as i8;
            if per_byte == 1 {
                values.push(f32::from(q) * scale);
            } else {
                // Arithmetic shifts keep the sign of each nibble.
                values.push(f32::from(q >> 4) * scale);
                values.push(f32::from((q << 4) >> 4) * scale);
            }
        }
    }
    Tensor::from_vec(values, (rows, cols), packed.device()).map_err(|e| e.to_string())
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
}
