//! The normalisations of both generations: LayerNorm (ChatGLM-6B, and ChatGLM2 configs with
//! `rmsnorm: false`) and RMSNorm (ChatGLM2/3), each statistics in float32 as the official code.
//!
//! When nothing tracks gradients the fused candle kernels run; on the training path, ours with a
//! backward on the CPU (`fused.rs`), elsewhere the same arithmetic composed of differentiable ops
//! (candle's fused kernels have no backward).

use candle_core::{DType, Tensor, D};

use crate::error::Result;

#[derive(Debug, Clone)]
pub(crate) struct Norm {
    pub(crate) weight: Tensor,
    /// LayerNorm's shift; `None` for RMSNorm.
    pub(crate) bias: Option<Tensor>,
    pub(crate) eps: f64,
    /// RMSNorm: no centring, no bias.
    pub(crate) rms: bool,
}

impl Norm {
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let tracking = x.track_op() || self.weight.track_op();
        if !tracking {
            if self.rms {
                return Ok(candle_nn::ops::rms_norm(x, &self.weight, self.eps as f32)?);
            }
            if let Some(bias) = &self.bias {
                return Ok(candle_nn::ops::layer_norm(
                    x,
                    &self.weight,
                    bias,
                    self.eps as f32,
                )?);
            }
        }
        if crate::model::fused::applies(x) && !self.weight.track_op() {
            return crate::model::fused::norm(
                x,
                &self.weight,
                self.bias.as_ref(),
                self.eps,
                self.rms,
            );
        }
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let centered = if self.rms {
            x
        } else {
            x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?
        };
        let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        let mut out = normed.broadcast_mul(&self.weight.to_dtype(DType::F32)?)?;
        if let Some(bias) = &self.bias {
            out = out.broadcast_add(&bias.to_dtype(DType::F32)?)?;
        }
        Ok(out.to_dtype(dtype)?)
    }
}
