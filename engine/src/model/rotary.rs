//! Rotary position tables as ChatGLM-6B and ChatGLM2/3 compute them.
//!
//! ChatGLM2/3 build their tables in float32 (`rope_ratio` multiplying the base in ChatGLM3's code,
//! dividing the positions in ChatGLM2-32k's) and cast them to the model's dtype; they rotate
//! interleaved pairs ([`apply_interleaved`]). ChatGLM-6B's
//! `RotaryEmbedding` rounds `inv_freq` to float16 when it is built; the tables are
//! then computed in the dtype the model was cast to (`model.float()` gives float32 arithmetic on
//! those rounded frequencies, `model.half()` float16 throughout). We reproduce each rounding so
//! that logits match the reference to 1e-5 rather than 1e-3.

use candle_core::{DType, Device, Tensor, D};
use half::{bf16, f16};

use crate::config::{ChatGlmConfig, Glm2Config, RopeScaling};
use crate::error::Result;

/// cos/sin tables indexed by position, for one rotary width.
#[derive(Debug, Clone)]
pub struct Rotary {
    pub(crate) cos: Tensor,
    pub(crate) sin: Tensor,
    max_positions: usize,
}

/// Rounds an f32 to what `dtype` can hold, as a tensor cast to it would.
fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F16 => f16::from_f32(x).to_f32(),
        DType::BF16 => bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

impl Rotary {
    /// The tables `config`'s model uses: half the head for each of the two positions when the
    /// encoding is 2D, up to the longest position generation can reach.
    pub fn of(config: &ChatGlmConfig, dtype: DType, device: &Device) -> Result<Self> {
        if let Some(g) = config.glm2() {
            return Self::glm2(
                config.head_dim() / 2,
                config.max_sequence_length.max(2048) + 1,
                g,
                dtype,
                device,
            );
        }
        let rotary_dim = if config.position_encoding_2d {
            config.head_dim() / 2
        } else {
            config.head_dim()
        };
        // Generation moves only the block position, so positions stay below the sequence length.
        let max_positions = config.max_sequence_length.max(2048) + 1;
        Self::new(rotary_dim, max_positions, dtype, device)
    }

    /// Tables for `rotary_dim` channels and positions `0..max_positions`, in `dtype`.
    pub fn new(
        rotary_dim: usize,
        max_positions: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let inv_freq: Vec<f32> = (0..rotary_dim)
            .step_by(2)
            .map(|i| {
                let exponent = i as f32 / rotary_dim as f32;
                round_to(dtype, f16::from_f32(1.0 / 10000f32.powf(exponent)).to_f32())
            })
            .collect();
        let mut cos = Vec::with_capacity(max_positions * rotary_dim);
        let mut sin = Vec::with_capacity(max_positions * rotary_dim);
        for position in 0..max_positions {
            let t = round_to(dtype, position as f32);
            let row: Vec<f32> = inv_freq.iter().map(|f| round_to(dtype, t * f)).collect();
            // The table is cat(freqs, freqs): both halves of the rotated pair share a frequency.
            for _ in 0..2 {
                cos.extend(row.iter().map(|x| round_to(dtype, x.cos())));
                sin.extend(row.iter().map(|x| round_to(dtype, x.sin())));
            }
        }
        let cos = Tensor::from_vec(cos, (max_positions, rotary_dim), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (max_positions, rotary_dim), device)?.to_dtype(dtype)?;
        Ok(Self {
            cos,
            sin,
            max_positions,
        })
    }

    /// ChatGLM2/3's tables for `rotary_dim` channels: one column per rotated pair.
    fn glm2(
        rotary_dim: usize,
        max_positions: usize,
        config: &Glm2Config,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let (base, position_scale) = match config.rope_scaling {
            RopeScaling::Base => (10000.0 * config.rope_ratio as f32, 1.0),
            RopeScaling::Positions => (10000.0, config.rope_ratio as f32),
        };
        let theta: Vec<f32> = (0..rotary_dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / rotary_dim as f32))
            .collect();
        let pairs = theta.len();
        let mut cos = Vec::with_capacity(max_positions * pairs);
        let mut sin = Vec::with_capacity(max_positions * pairs);
        for position in 0..max_positions {
            let t = position as f32 / position_scale;
            for f in &theta {
                let angle = t * f;
                cos.push(round_to(dtype, angle.cos()));
                sin.push(round_to(dtype, angle.sin()));
            }
        }
        let cos = Tensor::from_vec(cos, (max_positions, pairs), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (max_positions, pairs), device)?.to_dtype(dtype)?;
        Ok(Self {
            cos,
            sin,
            max_positions,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// cos and sin gathered for `positions` (u32 `[batch, seq]`), shaped `[batch, seq, 1, dim]`.
    pub fn gather(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let (batch, seq) = positions.dims2()?;
        let flat = positions.flatten_all()?;
        let cos = self
            .cos
            .index_select(&flat, 0)?
            .reshape((batch, seq, 1, ()))?;
        let sin = self
            .sin
            .index_select(&flat, 0)?
            .reshape((batch, seq, 1, ()))?;
        Ok((cos, sin))
    }
}

/// `x·cos + rotate_half(x)·sin` for `x` of shape `[batch, seq, heads, dim]`.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dim = x.dim(D::Minus1)?;
    let first = x.narrow(D::Minus1, 0, dim / 2)?;
    let second = x.narrow(D::Minus1, dim / 2, dim / 2)?;
    let rotated = Tensor::cat(&[&second.neg()?, &first], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// ChatGLM2/3's rotation of pairs `(x₂ᵢ, x₂ᵢ₊₁)` by table column `i`, for `x` of shape
/// `[batch, seq, heads, dim]` and tables `[batch, seq, 1, dim / 2]`.
pub fn apply_interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (batch, seq, heads, dim) = x.dims4()?;
    let pairs = x.reshape((batch, seq, heads, dim / 2, 2))?;
    let even = pairs.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?;
    let odd = pairs.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?;
    let rotated_even = (even.broadcast_mul(cos)? - odd.broadcast_mul(sin)?)?;
    let rotated_odd = (odd.broadcast_mul(cos)? + even.broadcast_mul(sin)?)?;
    Ok(Tensor::stack(&[&rotated_even, &rotated_odd], D::Minus1)?
        .reshape((batch, seq, heads, dim))?)
}
