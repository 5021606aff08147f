//! The prefix encoder's parameters as trainable candle `Var`s with f32 host copies for the optimizer.

use candle_core::{Device, Tensor, Var};

use crate::config::PrefixConfig;
use crate::error::Result;
use crate::model::prefix::{PrefixEncoder, Projection};

/// Trainable prefix parameters, in the order of [`PrefixEncoder::named_tensors`].
pub struct PrefixParams {
    config: PrefixConfig,
    vars: Vec<Var>,
}

impl PrefixParams {
    /// Copies an encoder's tensors into fresh f32 variables.
    pub fn from_encoder(encoder: &PrefixEncoder) -> Result<Self> {
        let vars = encoder
            .named_tensors()
            .into_iter()
            .map(|(_, t)| Var::from_tensor(&t.to_dtype(candle_core::DType::F32)?.contiguous()?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            config: encoder.config,
            vars,
        })
    }

    /// An encoder whose tensors are the variables themselves, so the loss tracks them.
    pub fn encoder(&self) -> PrefixEncoder {
        let t = |i: usize| self.vars[i].as_tensor().clone();
        PrefixEncoder {
            config: self.config,
            embedding: t(0),
            projection: self.config.prefix_projection.then(|| Projection {
                in_weight: t(1),
                in_bias: t(2),
                out_weight: t(3),
                out_bias: t(4),
            }),
        }
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Per parameter, whether the Trainer's weight decay applies to it (not to biases).
    pub fn decays(&self) -> Vec<bool> {
        self.encoder()
            .named_tensors()
            .into_iter()
            .map(|(name, _)| crate::train::optimizer::decays(name))
            .collect()
    }

    pub fn sizes(&self) -> Vec<usize> {
        self.vars.iter().map(|v| v.elem_count()).collect()
    }

    /// Host copies of every parameter, flattened.
    pub fn values(&self) -> Result<Vec<Vec<f32>>> {
        self.vars
            .iter()
            .map(|v| Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?))
            .collect()
    }

    /// Overwrites every parameter from flattened host values.
    pub fn set_values(&self, values: &[Vec<f32>], device: &Device) -> Result<()> {
        for (var, value) in self.vars.iter().zip(values) {
            var.set(&Tensor::from_slice(value, var.shape(), device)?)?;
        }
        Ok(())
    }
}
