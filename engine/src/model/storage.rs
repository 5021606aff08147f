//! Whole-model changes of weight storage: a dense model block-quantized (what `glmtune quantize`
//! stores, and what benchmarks measure without a file), or a quantized one widened back to dense
//! f32 (the exact reference other backends are checked against).

use candle_core::quantized::GgmlDType;

use crate::error::Result;
use crate::model::chatglm::Block;
use crate::model::weights::{Embedding, Linear, Matrix};
use crate::model::ChatGlmModel;

impl ChatGlmModel {
    /// This model with its linear layers block-quantized to `linear` and its word embeddings (and
    /// the output layer tied to them) to `embeddings`, as `glmtune quantize` stores them.
    pub fn quantized(&self, linear: GgmlDType, embeddings: GgmlDType) -> Result<Self> {
        self.map_matrices(|m| m.quantized(linear), |m| m.quantized(embeddings))?
            .packed_for_cpu()
    }

    /// This model with its blocks' quantized linear layers as this CPU's fastest kernels read
    /// them ([`Matrix::packed_for_cpu`]): for inference; the same numbers.
    pub fn packed_for_cpu(&self) -> Result<Self> {
        self.map_matrices(Matrix::packed_for_cpu, |m| Ok(m.clone()))
    }

    /// This model with its blocks' linear layers block-quantized to `format` and the embeddings
    /// (and a tied output layer) as they are: THUDM's `quantize(bits)` keeps the embeddings, and
    /// the output layer's product is the one the loss backpropagates through first.
    pub fn quantized_layers(&self, format: GgmlDType) -> Result<Self> {
        self.map_matrices(|m| m.quantized(format), |m| Ok(m.clone()))
    }

    /// This model for training: every linear layer multiplies exactly (a quantized weight is
    /// dequantized one matrix at a time inside the forward and the backward, the activations
    /// keep their precision), so gradients reach the activations and the prefix, and a quantized
    /// base trains as the dense model of its dequantized weights. The weights stay as stored.
    pub fn for_training(&self) -> Self {
        // Training dequantizes each matrix per product: from GGML blocks, not from tiles.
        let exact = |layer: &Linear| Linear {
            exact: true,
            weight: layer
                .weight
                .unpacked()
                .unwrap_or_else(|_| layer.weight.clone()),
            ..layer.clone()
        };
        Self {
            blocks: self
                .blocks
                .iter()
                .map(|b| Block {
                    query_key_value: exact(&b.query_key_value),
                    dense: exact(&b.dense),
                    dense_h_to_4h: exact(&b.dense_h_to_4h),
                    dense_4h_to_h: exact(&b.dense_4h_to_h),
                    ..b.clone()
                })
                .collect(),
            lm_head: exact(&self.lm_head),
            ..self.clone()
        }
    }

    /// The GGML format the layers' linear weights are held in, `None` when they are dense.
    pub fn linear_format(&self) -> Option<GgmlDType> {
        self.blocks.first()?.query_key_value.weight.format()
    }

    /// This model with every block-quantized matrix widened back to dense f32: the same numbers,
    /// multiplied without rounding the activations (a reference for other backends).
    pub fn dequantized(&self) -> Result<Self> {
        self.map_matrices(Matrix::dequantized, Matrix::dequantized)
    }

    /// This model with `linear` applied to the blocks' matrices and `embedding` to the word
    /// embeddings and the output layer (once when they are tied).
    fn map_matrices(
        &self,
        linear: impl Fn(&Matrix) -> Result<Matrix>,
        embedding: impl Fn(&Matrix) -> Result<Matrix>,
    ) -> Result<Self> {
        let map = |layer: &Linear, f: &dyn Fn(&Matrix) -> Result<Matrix>| -> Result<Linear> {
            Ok(Linear {
                weight: f(&layer.weight)?,
                ..layer.clone()
            })
        };
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                Ok(Block {
                    query_key_value: map(&b.query_key_value, &linear)?,
                    dense: map(&b.dense, &linear)?,
                    dense_h_to_4h: map(&b.dense_h_to_4h, &linear)?,
                    dense_4h_to_h: map(&b.dense_4h_to_h, &linear)?,
                    ..b.clone()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let word_embeddings = Embedding(embedding(&self.word_embeddings.0)?);
        let tied = self.word_embeddings.0.same(&self.lm_head.weight);
        let lm_head = if tied {
            word_embeddings.as_linear()
        } else {
            map(&self.lm_head, &embedding)?
        };
        Ok(Self {
            lm_head,
            word_embeddings,
            blocks,
            ..self.clone()
        })
    }
}
