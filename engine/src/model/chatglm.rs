//! ChatGLM-6B (GLM) as `modeling_chatglm.py` computes it.
//!
//! Per block: `x₁ = LN(x)`, `h = x₁·α + Attn(x₁)`, `x₂ = LN(h)`, `out = x₂·α + MLP(x₂)` with
//! `α = √56` (see [`RESIDUAL_ALPHA`]). Attention splits `query_key_value` per head (q, k, v interleaved by head),
//! rotates the two halves of each head by the position and the block position, scales the query by
//! `1/(√d·(layer+1))` and the scores back by `layer+1` in float32 before the softmax, and fills
//! masked scores with -10000. Tensors are laid out `[batch, seq, …]`.
//!
//! When no input tracks gradients, the fused (non-differentiable) candle kernels are used; on the
//! training path every op is a differentiable composition.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};

use crate::checkpoint::Checkpoint;
use crate::config::ChatGlmConfig;
use crate::error::{EngineError, Result};
use crate::model::init;
use crate::model::rotary::{self, Rotary};
use crate::model::weights::{DenseSource, Embedding, Linear, Matrix, WeightSource};
use crate::quant::QuantizedFile;

/// Score written into masked attention slots, as the official code does (a fill, not an addition).
const MASKED_SCORE: f64 = -10000.0;

/// The residual scale `√(2·28)`. The official `GLMBlock` takes `num_layers` with a default of 28
/// that `ChatGLMModel` never overrides, so every ChatGLM-6B checkpoint, whatever its depth, was
/// trained (and must run) with the 28-layer value.
pub(crate) const RESIDUAL_ALPHA: f64 = 7.483314773547883;

#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) eps: f64,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !x.track_op() && !self.weight.track_op() {
            return Ok(candle_nn::ops::layer_norm(
                x,
                &self.weight,
                &self.bias,
                self.eps as f32,
            )?);
        }
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        let weight = self.weight.to_dtype(DType::F32)?;
        let bias = self.bias.to_dtype(DType::F32)?;
        Ok(normed
            .broadcast_mul(&weight)?
            .broadcast_add(&bias)?
            .to_dtype(dtype)?)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) input_layernorm: LayerNorm,
    pub(crate) query_key_value: Linear,
    pub(crate) dense: Linear,
    pub(crate) post_attention_layernorm: LayerNorm,
    pub(crate) dense_h_to_4h: Linear,
    pub(crate) dense_4h_to_h: Linear,
}

impl Block {
    /// One block's layout: the official sub-module names with their shapes, each made by
    /// `norm(name)` or `linear(name, out, in)` (loaded from a checkpoint or drawn at random).
    fn build(
        config: &ChatGlmConfig,
        norm: impl Fn(&str) -> Result<LayerNorm>,
        linear: impl Fn(&str, usize, usize) -> Result<Linear>,
    ) -> Result<Self> {
        let (h, inner) = (config.hidden_size, config.inner_hidden_size);
        Ok(Self {
            input_layernorm: norm("input_layernorm")?,
            query_key_value: linear("attention.query_key_value", 3 * h, h)?,
            dense: linear("attention.dense", h, h)?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            dense_h_to_4h: linear("mlp.dense_h_to_4h", inner, h)?,
            dense_4h_to_h: linear("mlp.dense_4h_to_h", h, inner)?,
        })
    }
}

/// Cached keys and values of every layer, each `[batch, heads, len, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
        }
    }

    /// A cache that starts with the prefix keys and values of a P-Tuning v2 adapter.
    pub fn from_prefix(prefix: Vec<(Tensor, Tensor)>) -> Self {
        Self {
            layers: prefix.into_iter().map(Some).collect(),
        }
    }

    /// Number of cached positions (prefix included).
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(2).unwrap_or(0),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The whole model: embeddings, GLM blocks, final LayerNorm and the LM head.
#[derive(Debug, Clone)]
pub struct ChatGlmModel {
    pub(crate) config: ChatGlmConfig,
    pub(crate) word_embeddings: Embedding,
    pub(crate) blocks: Vec<Block>,
    pub(crate) final_layernorm: LayerNorm,
    pub(crate) lm_head: Linear,
    pub(crate) rotary: Rotary,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
}

impl ChatGlmModel {
    /// Loads `config.json` and the weights of the folder `dir`: the official checkpoint as
    /// `dtype`, or, when the folder holds one, the block-quantized `model.gguf` of `glmtune quantize`.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = ChatGlmConfig::from_file(&dir.join("config.json"))?;
        if let Some(quantized) = QuantizedFile::find(dir, dtype, device)? {
            return Self::from_source(config, &quantized, dtype, device);
        }
        let checkpoint = Checkpoint::open(dir)?;
        Self::from_checkpoint(config, &checkpoint, dtype, device)
    }

    /// Builds the model from the bytes of a `model.gguf` written by `glmtune quantize` (a browser
    /// that downloaded it); `name` names it in messages.
    pub fn from_quantized_bytes(
        config: ChatGlmConfig,
        name: &str,
        bytes: Vec<u8>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let file = QuantizedFile::from_bytes(name, bytes, dtype, device)?;
        Self::from_source(config, &file, dtype, device)
    }

    /// Builds the model from an open checkpoint, checking every tensor's shape.
    pub fn from_checkpoint(
        config: ChatGlmConfig,
        checkpoint: &Checkpoint,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let source = DenseSource {
            checkpoint,
            dtype,
            device,
        };
        Self::from_source(config, &source, dtype, device)
    }

    /// Builds the model from any source of its official tensor names, checking every shape.
    pub(crate) fn from_source(
        config: ChatGlmConfig,
        source: &dyn WeightSource,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        // Exports of the bare `ChatGLMModel` omit the `transformer.` prefix.
        let prefix = if source.contains("transformer.word_embeddings.weight") {
            "transformer."
        } else {
            ""
        };
        let (h, vocab) = (config.hidden_size, config.vocab_size);
        let load = |name: &str, shape: &[usize]| source.dense(&format!("{prefix}{name}"), shape);
        let load_norm = |name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: load(&format!("{name}.weight"), &[h])?,
                bias: load(&format!("{name}.bias"), &[h])?,
                eps: config.layernorm_epsilon,
            })
        };
        let load_linear = |name: &str, out_dim: usize, in_dim: usize| -> Result<Linear> {
            Ok(Linear {
                weight: source.matrix(&format!("{prefix}{name}.weight"), out_dim, in_dim)?,
                bias: Some(load(&format!("{name}.bias"), &[out_dim])?),
            })
        };
        let word_embeddings =
            Embedding(source.matrix(&format!("{prefix}word_embeddings.weight"), vocab, h)?);
        let blocks = (0..config.num_layers)
            .map(|i| {
                let p = format!("layers.{i}");
                Block::build(
                    &config,
                    |name| load_norm(&format!("{p}.{name}")),
                    |name, out_dim, in_dim| load_linear(&format!("{p}.{name}"), out_dim, in_dim),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let final_layernorm = load_norm("final_layernorm")?;
        let embeddings_name = format!("{prefix}word_embeddings.weight");
        let lm_head = if source.contains("lm_head.weight")
            && !source.identical("lm_head.weight", &embeddings_name, &[vocab, h])?
        {
            Linear {
                weight: source.matrix("lm_head.weight", vocab, h)?,
                bias: None,
            }
        } else {
            word_embeddings.as_linear()
        };
        Self::from_parts(
            config,
            word_embeddings,
            blocks,
            final_layernorm,
            lm_head,
            dtype,
            device,
        )
    }

    fn from_parts(
        config: ChatGlmConfig,
        word_embeddings: Embedding,
        blocks: Vec<Block>,
        final_layernorm: LayerNorm,
        lm_head: Linear,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let rotary = Rotary::of(&config, dtype, device)?;
        Ok(Self {
            config,
            word_embeddings,
            blocks,
            final_layernorm,
            lm_head,
            rotary,
            dtype,
            device: device.clone(),
        })
    }

    /// A model of random weights (normal, std 0.02; LayerNorms at identity), for benchmarks.
    pub fn random(config: ChatGlmConfig, dtype: DType, device: &Device, seed: u64) -> Result<Self> {
        let (h, vocab) = (config.hidden_size, config.vocab_size);
        let counter = std::cell::Cell::new(seed);
        let normal = |shape: &[usize]| -> Result<Tensor> {
            counter.set(counter.get().wrapping_add(1));
            Ok(init::normal(shape, 0.02, counter.get(), device)?.to_dtype(dtype)?)
        };
        let norm = || -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: Tensor::ones(h, dtype, device)?,
                bias: Tensor::zeros(h, dtype, device)?,
                eps: config.layernorm_epsilon,
            })
        };
        let linear = |out_dim: usize, in_dim: usize| -> Result<Linear> {
            Ok(Linear::dense(
                normal(&[out_dim, in_dim])?,
                Some(normal(&[out_dim])?),
            ))
        };
        let blocks = (0..config.num_layers)
            .map(|_| {
                Block::build(
                    &config,
                    |_| norm(),
                    |_, out_dim, in_dim| linear(out_dim, in_dim),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let word_embeddings = Embedding(Matrix::Dense(normal(&[vocab, h])?));
        let lm_head = word_embeddings.as_linear();
        let final_layernorm = norm()?;
        Self::from_parts(
            config,
            word_embeddings,
            blocks,
            final_layernorm,
            lm_head,
            dtype,
            device,
        )
    }

    pub fn config(&self) -> &ChatGlmConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the blocks over `ids` (`[batch, seq]`), appending to `cache`; returns the final hidden
    /// states `[batch, seq, hidden]`. `positions` is `[batch, n_dims, seq]`; `mask` (u8, 1 =
    /// forbidden) is `[batch, 1, seq, cache.len() + seq]`.
    pub fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        if cache.layers.len() != self.blocks.len() {
            return Err(EngineError::Input(format!(
                "cache has {} layers, the model {}",
                cache.layers.len(),
                self.blocks.len()
            )));
        }
        if let Ok(max) = positions.flatten_all()?.max(0)?.to_scalar::<u32>() {
            if max as usize >= self.rotary.max_positions() {
                return Err(EngineError::Input(format!(
                    "position {max} is beyond the model's {} positions",
                    self.rotary.max_positions()
                )));
            }
        }
        let rotations = (0..positions.dim(1)?)
            .map(|d| self.rotary.gather(&positions.get_on_dim(1, d)?))
            .collect::<Result<Vec<_>>>()?;
        let mask = match mask {
            Some(m) => {
                Some(m.broadcast_as((batch, self.config.num_attention_heads, seq, m.dim(3)?))?)
            }
            None => None,
        };
        let mut hidden = self.word_embeddings.gather(ids, self.dtype)?;
        let alpha = RESIDUAL_ALPHA;
        for (layer, block) in self.blocks.iter().enumerate() {
            let attention_input = block.input_layernorm.forward(&hidden)?;
            let attention = self.attention(
                block,
                layer,
                &attention_input,
                &rotations,
                mask.as_ref(),
                &mut cache.layers[layer],
            )?;
            let residual = ((&attention_input * alpha)? + attention)?;
            let mlp_input = block.post_attention_layernorm.forward(&residual)?;
            let mlp = block
                .dense_4h_to_h
                .forward(&block.dense_h_to_4h.forward(&mlp_input)?.gelu()?)?;
            hidden = ((&mlp_input * alpha)? + mlp)?;
        }
        self.final_layernorm.forward(&hidden)
    }

    fn attention(
        &self,
        block: &Block,
        layer: usize,
        x: &Tensor,
        rotations: &[(Tensor, Tensor)],
        mask: Option<&Tensor>,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let (batch, seq, hidden) = x.dims3()?;
        let (heads, head_dim) = (self.config.num_attention_heads, self.config.head_dim());
        let qkv = block
            .query_key_value
            .forward(x)?
            .reshape((batch, seq, heads, 3 * head_dim))?;
        let query = qkv.narrow(D::Minus1, 0, head_dim)?;
        let key = qkv.narrow(D::Minus1, head_dim, head_dim)?;
        let value = qkv.narrow(D::Minus1, 2 * head_dim, head_dim)?;
        let (query, key) = self.rotate(&query, &key, rotations)?;
        let coeff = (layer + 1) as f64;
        let query = (query.transpose(1, 2)? / ((head_dim as f64).sqrt() * coeff))?.contiguous()?;
        let key = key.transpose(1, 2)?.contiguous()?;
        let value = value.transpose(1, 2)?.contiguous()?;
        let (key, value) = match cache.take() {
            Some((past_key, past_value)) => (
                Tensor::cat(&[&past_key, &key], 2)?,
                Tensor::cat(&[&past_value, &value], 2)?,
            ),
            None => (key, value),
        };
        let scores = query.matmul(&key.t()?)?;
        let scores = match mask {
            Some(mask) => {
                let fill = Tensor::new(MASKED_SCORE as f32, scores.device())?
                    .to_dtype(scores.dtype())?
                    .broadcast_as(scores.shape())?;
                mask.where_cond(&fill, &scores)?
            }
            None => scores,
        };
        let scores = (scores.to_dtype(DType::F32)? * coeff)?;
        let probs = if scores.track_op() {
            let max = scores.max_keepdim(D::Minus1)?.detach();
            let exp = scores.broadcast_sub(&max)?.exp()?;
            exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let context = probs.to_dtype(self.dtype)?.matmul(&value)?;
        *cache = Some((key, value));
        let context = context.transpose(1, 2)?.reshape((batch, seq, hidden))?;
        block.dense.forward(&context)
    }

    /// Applies the rotary embedding: with 2D encoding, the first half of each head by the position
    /// and the second half by the block position.
    fn rotate(
        &self,
        query: &Tensor,
        key: &Tensor,
        rotations: &[(Tensor, Tensor)],
    ) -> Result<(Tensor, Tensor)> {
        if let [(cos, sin)] = rotations {
            return Ok((
                rotary::apply(query, cos, sin)?,
                rotary::apply(key, cos, sin)?,
            ));
        }
        let half = self.config.head_dim() / 2;
        let mut queries = Vec::with_capacity(2);
        let mut keys = Vec::with_capacity(2);
        for (i, (cos, sin)) in rotations.iter().enumerate() {
            queries.push(rotary::apply(
                &query.narrow(D::Minus1, i * half, half)?,
                cos,
                sin,
            )?);
            keys.push(rotary::apply(
                &key.narrow(D::Minus1, i * half, half)?,
                cos,
                sin,
            )?);
        }
        Ok((
            Tensor::cat(&queries, D::Minus1)?,
            Tensor::cat(&keys, D::Minus1)?,
        ))
    }

    /// Logits `[batch, seq, vocab]` in f32 for final hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(hidden)?.to_dtype(DType::F32)?)
    }
}
