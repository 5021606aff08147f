//! Where each generation keeps its tensors in an official checkpoint: ChatGLM-6B's
//! `transformer.word_embeddings`, `transformer.layers.N`, `transformer.final_layernorm` and a tied
//! or separate `lm_head`; ChatGLM2/3's `transformer.embedding.word_embeddings`,
//! `transformer.encoder.layers.N`, `transformer.encoder.final_layernorm` and
//! `transformer.output_layer` (exports of the bare model lack `transformer.`).

use candle_core::Tensor;

use crate::config::{Architecture, ChatGlmConfig};
use crate::error::Result;
use crate::model::norm::Norm;
use crate::model::weights::WeightSource;

/// Where a generation keeps its tensors in the checkpoint.
pub(crate) struct Names {
    pub(crate) embeddings: String,
    pub(crate) layers: String,
    pub(crate) final_norm: String,
    pub(crate) output: String,
}

impl Names {
    pub(crate) fn of(config: &ChatGlmConfig, source: &dyn WeightSource) -> Self {
        match config.architecture {
            Architecture::Glm => {
                // Exports of the bare `ChatGLMModel` omit the `transformer.` prefix.
                let t = if source.contains("transformer.word_embeddings.weight") {
                    "transformer."
                } else {
                    ""
                };
                Self {
                    embeddings: format!("{t}word_embeddings.weight"),
                    layers: format!("{t}layers"),
                    final_norm: format!("{t}final_layernorm"),
                    output: "lm_head.weight".into(),
                }
            }
            Architecture::Glm2(_) => {
                let t = if source.contains("transformer.embedding.word_embeddings.weight") {
                    "transformer."
                } else {
                    ""
                };
                Self {
                    embeddings: format!("{t}embedding.word_embeddings.weight"),
                    layers: format!("{t}encoder.layers"),
                    final_norm: format!("{t}encoder.final_layernorm"),
                    output: format!("{t}output_layer.weight"),
                }
            }
        }
    }

    /// A LayerNorm (weight and bias) or, for ChatGLM2/3 with `rmsnorm`, an RMSNorm (weight only).
    pub(crate) fn norm(
        &self,
        config: &ChatGlmConfig,
        name: &str,
        load: &dyn Fn(&str, &[usize]) -> Result<Tensor>,
    ) -> Result<Norm> {
        let h = config.hidden_size;
        let rms = config.glm2().is_some_and(|g| g.rmsnorm);
        Ok(Norm {
            weight: load(&format!("{name}.weight"), &[h])?,
            bias: if rms {
                None
            } else {
                Some(load(&format!("{name}.bias"), &[h])?)
            },
            eps: config.layernorm_epsilon,
            rms,
        })
    }
}
