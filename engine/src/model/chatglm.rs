//! ChatGLM (all generations) as their `modeling_chatglm.py` compute it: the model, its loading,
//! its cache and its forward over the layers. What differs by generation is one file each, chosen
//! by the config's [`Architecture`]: ChatGLM-6B's GLM block in [`super::glm`], ChatGLM2/3's in
//! [`super::glm2`] (each with its layout and its forward).
//! When no input tracks gradients, the fused (non-differentiable) candle kernels are used; on the
//! training path every op is a differentiable composition.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};

use crate::checkpoint::Checkpoint;
use crate::config::{Architecture, ChatGlmConfig};
use crate::error::{EngineError, Result};
use crate::model::attend::{self, OneToken};
use crate::model::gguf::QuantizedFile;
use crate::model::init;
use crate::model::kv_cache::{self, KvCache, LayerCache};
use crate::model::names::Names;
use crate::model::norm::Norm;
use crate::model::rotary::Rotary;
use crate::model::weights::{DenseSource, Embedding, Linear, Matrix, WeightSource};
use crate::model::{glm, glm2};

#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) input_layernorm: Norm,
    pub(crate) query_key_value: Linear,
    pub(crate) dense: Linear,
    pub(crate) post_attention_layernorm: Norm,
    pub(crate) dense_h_to_4h: Linear,
    pub(crate) dense_4h_to_h: Linear,
}

/// One block's layout in the config's generation: the official sub-module names with their
/// shapes, each made by `norm(name)` or `linear(name, out, in, has_bias)` (loaded from a
/// checkpoint or drawn at random).
fn block_layout(
    config: &ChatGlmConfig,
    norm: impl Fn(&str) -> Result<Norm>,
    linear: impl Fn(&str, usize, usize, bool) -> Result<Linear>,
) -> Result<Block> {
    match &config.architecture {
        Architecture::Glm => glm::block_layout(config, norm, linear),
        Architecture::Glm2(g) => glm2::block_layout(config, g, norm, linear),
    }
}

/// The per-forward inputs every layer reads (see [`ChatGlmModel::layer_context`]).
#[derive(Debug, Clone)]
pub struct LayerContext {
    pub(crate) rotations: Vec<(Tensor, Tensor)>,
    pub(crate) mask: Option<Tensor>,
    /// Positions a layer's cache buffers are made for (see [`KvCache::reserve`]).
    pub(crate) capacity: usize,
}

/// The whole model: embeddings, blocks, final norm and the output layer.
#[derive(Debug, Clone)]
pub struct ChatGlmModel {
    pub(crate) config: ChatGlmConfig,
    pub(crate) word_embeddings: Embedding,
    pub(crate) blocks: Vec<Block>,
    /// `None` for a ChatGLM2/3 config with `post_layer_norm: false`.
    pub(crate) final_layernorm: Option<Norm>,
    pub(crate) lm_head: Linear,
    pub(crate) rotary: Rotary,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
}

impl ChatGlmModel {
    /// Loads `config.json` and the weights of the folder `dir`: the official checkpoint as
    /// `dtype`, or, when the folder holds one, the block-quantized `model.gguf` of `glmtune quantize`.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_with(dir, dtype, device, false)
    }

    /// As `load`, but THUDM's int8/int4 weights stay quantized in memory (repacked, value for value,
    /// into q8_0/q4_0 blocks) instead of being widened to `dtype`: a quantized base for training,
    /// which multiplies every layer exactly (`for_training`). Inference keeps `load`, which
    /// multiplies THUDM's weights as the official kernels do, dense.
    pub fn load_keeping_quantized(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_with(dir, dtype, device, true)
    }

    fn load_with(dir: &Path, dtype: DType, device: &Device, keep_thudm_int: bool) -> Result<Self> {
        let config = ChatGlmConfig::from_file(&dir.join("config.json"))?;
        if let Some(quantized) = QuantizedFile::find(dir, dtype, device)? {
            return Self::from_source(config, &quantized, dtype, device);
        }
        let checkpoint = Checkpoint::open(dir)?;
        let source = DenseSource {
            checkpoint: &checkpoint,
            dtype,
            device,
            keep_thudm_int,
        };
        Self::from_source(config, &source, dtype, device)
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
            keep_thudm_int: false,
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
        let names = Names::of(&config, source);
        let (h, vocab) = (config.hidden_size, config.vocab_size);
        let load = |name: &str, shape: &[usize]| source.dense(name, shape);
        let load_norm = |name: &str| -> Result<Norm> { names.norm(&config, name, &load) };
        let load_linear =
            |name: &str, out_dim: usize, in_dim: usize, has_bias: bool| -> Result<Linear> {
                Ok(Linear::new(
                    source.matrix(&format!("{name}.weight"), out_dim, in_dim)?,
                    if has_bias {
                        Some(load(&format!("{name}.bias"), &[out_dim])?)
                    } else {
                        None
                    },
                ))
            };
        let word_embeddings = Embedding(source.matrix(&names.embeddings, vocab, h)?);
        let blocks = (0..config.num_layers)
            .map(|i| {
                let p = format!("{}.{i}", names.layers);
                block_layout(
                    &config,
                    |name| load_norm(&format!("{p}.{name}")),
                    |name, out_dim, in_dim, has_bias| {
                        load_linear(&format!("{p}.{name}"), out_dim, in_dim, has_bias)
                    },
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let final_layernorm = match config.glm2() {
            Some(g) if !g.post_layer_norm => None,
            _ => Some(load_norm(&names.final_norm)?),
        };
        let lm_head = if source.contains(&names.output)
            && !source.identical(&names.output, &names.embeddings, &[vocab, h])?
        {
            Linear::new(source.matrix(&names.output, vocab, h)?, None)
        } else if config.glm2().is_some() {
            return Err(EngineError::tensor(
                Path::new("checkpoint"),
                &names.output,
                "missing: ChatGLM2/3 checkpoints have an output layer of their own",
            ));
        } else {
            word_embeddings.as_linear()
        };
        // Quantized layers as this CPU's fastest kernels read them (a no-op elsewhere).
        Self::from_parts(
            config,
            word_embeddings,
            blocks,
            final_layernorm,
            lm_head,
            dtype,
            device,
        )?
        .packed_for_cpu()
    }

    fn from_parts(
        config: ChatGlmConfig,
        word_embeddings: Embedding,
        blocks: Vec<Block>,
        final_layernorm: Option<Norm>,
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

    /// A model of random weights (normal, std 0.02; norms at identity), for benchmarks.
    pub fn random(config: ChatGlmConfig, dtype: DType, device: &Device, seed: u64) -> Result<Self> {
        Self::random_with(config, dtype, None, device, seed)
    }

    /// [`random`](Self::random) with the blocks' linear layers block-quantized to `linear` as each
    /// is drawn (the embeddings stay in `dtype`), so no dense copy of the model ever exists: a
    /// 6B model at q4_0 without 12 GB of dense weights on the way.
    pub fn random_with(
        config: ChatGlmConfig,
        dtype: DType,
        linear: Option<candle_core::quantized::GgmlDType>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let (h, vocab) = (config.hidden_size, config.vocab_size);
        let counter = std::cell::Cell::new(seed);
        let normal = |shape: &[usize]| -> Result<Tensor> {
            counter.set(counter.get().wrapping_add(1));
            init::normal_as(shape, 0.02, counter.get(), dtype, device)
        };
        let rms = config.glm2().is_some_and(|g| g.rmsnorm);
        let norm = || -> Result<Norm> {
            Ok(Norm {
                weight: Tensor::ones(h, dtype, device)?,
                bias: if rms {
                    None
                } else {
                    Some(Tensor::zeros(h, dtype, device)?)
                },
                eps: config.layernorm_epsilon,
                rms,
            })
        };
        let linear = |out_dim: usize, in_dim: usize, has_bias: bool| -> Result<Linear> {
            let bias = if has_bias {
                Some(normal(&[out_dim])?)
            } else {
                None
            };
            let weight = normal(&[out_dim, in_dim])?;
            Ok(match linear {
                Some(format) => Linear::new(
                    crate::model::weights::Matrix::Quantized(crate::model::weights::quantize(
                        &weight, format,
                    )?),
                    bias,
                ),
                None => Linear::dense(weight, bias),
            })
        };
        let blocks = (0..config.num_layers)
            .map(|_| block_layout(&config, |_| norm(), |_, o, i, b| linear(o, i, b)))
            .collect::<Result<Vec<_>>>()?;
        let word_embeddings = Embedding(Matrix::Dense(normal(&[vocab, h])?));
        let lm_head = match config.glm2() {
            Some(_) => Linear::dense(normal(&[vocab, h])?, None),
            None => word_embeddings.as_linear(),
        };
        let final_layernorm = match config.glm2() {
            Some(g) if !g.post_layer_norm => None,
            _ => Some(norm()?),
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
        if cache.layers.len() != self.blocks.len() {
            return Err(EngineError::Input(format!(
                "cache has {} layers, the model {}",
                cache.layers.len(),
                self.blocks.len()
            )));
        }
        let mut context = self.layer_context(ids, positions, mask)?;
        context.capacity = cache.capacity;
        let mut hidden = self.embed(ids)?;
        for (layer, cache) in cache.layers.iter_mut().enumerate() {
            hidden = self.layer(layer, &hidden, &context, cache)?;
        }
        self.final_norm(&hidden)
    }

    /// One decoding step of independent streams: row `i` of `ids` (`[streams, 1]`) is stream
    /// `i`'s next token, row `i` of `positions` (`[streams, n_dims, 1]`) its positions and
    /// `caches[i]` its cache (no stream is padded, so none needs a mask). Returns the final hidden
    /// states `[streams, 1, hidden]`.
    pub fn forward_streams(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor> {
        if ids.dim(0)? != caches.len() {
            return Err(EngineError::Input(format!(
                "{} token rows for {} caches",
                ids.dim(0)?,
                caches.len()
            )));
        }
        if let Some(cache) = caches.iter().find(|c| c.layers.len() != self.blocks.len()) {
            return Err(EngineError::Input(format!(
                "a stream's cache has {} layers, the model {}",
                cache.layers.len(),
                self.blocks.len()
            )));
        }
        // Every stream's rotations at once; each stream's own context only sizes its cache.
        let rows = self.layer_context(ids, positions, None)?;
        let contexts: Vec<LayerContext> = caches
            .iter()
            .map(|cache| LayerContext {
                rotations: Vec::new(),
                mask: None,
                capacity: cache.capacity,
            })
            .collect();
        let mut hidden = self.embed(ids)?;
        for layer in 0..self.blocks.len() {
            let mut slots: Vec<Slot> = contexts
                .iter()
                .zip(caches.iter_mut())
                .map(|(context, cache)| Slot {
                    context,
                    cache: &mut cache.layers[layer],
                })
                .collect();
            hidden = self.layer_slots(layer, &hidden, &rows, &mut slots)?;
        }
        self.final_norm(&hidden)
    }

    /// The input embeddings of `ids` (`[batch, seq]`) in the model's dtype.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.word_embeddings.gather(ids, self.dtype)
    }

    /// An error when a position of `positions` is beyond the model's rotary tables.
    pub fn check_positions(&self, positions: &Tensor) -> Result<()> {
        if let Ok(max) = positions.flatten_all()?.max(0)?.to_scalar::<u32>() {
            if max as usize >= self.rotary.max_positions() {
                return Err(EngineError::Input(format!(
                    "position {max} is beyond the model's {} positions",
                    self.rotary.max_positions()
                )));
            }
        }
        Ok(())
    }

    /// What every layer of one forward shares: the rotary tables of `positions` and the mask
    /// broadcast over the heads.
    pub fn layer_context(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<LayerContext> {
        let (batch, seq) = ids.dims2()?;
        self.check_positions(positions)?;
        let rotations = (0..positions.dim(1)?)
            .map(|d| self.rotary.gather(&positions.get_on_dim(1, d)?))
            .collect::<Result<Vec<_>>>()?;
        let mask = match mask {
            Some(m) => {
                Some(m.broadcast_as((batch, self.config.num_attention_heads, seq, m.dim(3)?))?)
            }
            None => None,
        };
        Ok(LayerContext {
            rotations,
            mask,
            capacity: 0,
        })
    }

    /// Layer `layer` over `hidden`, appending its keys and values to `cache` (which may start
    /// with a prefix): the block of the config's generation.
    pub fn layer(
        &self,
        layer: usize,
        hidden: &Tensor,
        context: &LayerContext,
        cache: &mut Option<LayerCache>,
    ) -> Result<Tensor> {
        self.layer_slots(layer, hidden, context, &mut [Slot { context, cache }])
    }

    /// Layer `layer` over `hidden` whose batch rows are split evenly over `slots`: each slot's
    /// rows attend to their own cache with their own mask (independent streams decoded in one
    /// step), while the linear layers and the rotary embedding take every row at once (`rows`:
    /// the rotations of every row, in order).
    pub fn layer_slots(
        &self,
        layer: usize,
        hidden: &Tensor,
        rows: &LayerContext,
        slots: &mut [Slot],
    ) -> Result<Tensor> {
        let block = self
            .blocks
            .get(layer)
            .ok_or_else(|| EngineError::Input(format!("layer {layer} of {}", self.blocks.len())))?;
        match &self.config.architecture {
            Architecture::Glm => glm::block(self, block, layer, hidden, rows, slots),
            Architecture::Glm2(g) => glm2::block(self, g, block, hidden, rows, slots),
        }
    }

    /// The final LayerNorm/RMSNorm, where the model has one.
    pub fn final_norm(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.final_layernorm {
            Some(norm) => norm.forward(hidden),
            None => Ok(hidden.clone()),
        }
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// Logits `[batch, seq, vocab]` in f32 for final hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(hidden)?.to_dtype(DType::F32)?)
    }
}

/// Rows of a layer with their own positions and cache (see [`ChatGlmModel::layer_slots`]).
pub struct Slot<'a> {
    pub context: &'a LayerContext,
    pub cache: &'a mut Option<LayerCache>,
}

/// Each slot's rows of `query`, `key` and `value` (`[batch, heads, seq, d]`, the batch split
/// evenly over the slots) attended to the slot's cache after appending its keys and values,
/// joined back in order. When every slot brings one token and no mask, all of them go through
/// the fused one-token kernel in one pass over the thread pool (`score_scale` times the scores:
/// what the generation's general path multiplies them by); otherwise each slot through
/// `general(query, keys, values, context)`, its keys and values being its whole cache.
pub(crate) fn attend_slots(
    [query, key, value]: [&Tensor; 3],
    slots: &mut [Slot],
    score_scale: f32,
    mut general: impl FnMut(&Tensor, &Tensor, &Tensor, &LayerContext) -> Result<Tensor>,
) -> Result<Tensor> {
    let batch = query.dim(0)?;
    if slots.is_empty() || !batch.is_multiple_of(slots.len()) {
        return Err(EngineError::Input(format!(
            "{batch} rows cannot be split over {} streams",
            slots.len()
        )));
    }
    let per = batch / slots.len();
    // A lone slot's narrow is the whole tensor (candle returns it as it is).
    let mine = |t: &Tensor, i: usize| t.narrow(0, i * per, per);
    let mut parts = Vec::with_capacity(slots.len());
    for (i, slot) in slots.iter_mut().enumerate() {
        let (keys, values) = kv_cache::append(
            slot.cache,
            mine(key, i)?,
            mine(value, i)?,
            slot.context.capacity,
        )?;
        parts.push((mine(query, i)?, keys, values));
    }
    if slots.iter().all(|slot| slot.context.mask.is_none()) {
        let streams: Vec<OneToken> = parts
            .iter()
            .map(|(query, keys, values)| OneToken {
                query,
                keys,
                values,
            })
            .collect();
        if let Some(context) = attend::one_token(&streams, score_scale)? {
            return Ok(context);
        }
    }
    let contexts = parts
        .iter()
        .zip(slots.iter())
        .map(|((query, keys, values), slot)| general(query, keys, values, slot.context))
        .collect::<Result<Vec<_>>>()?;
    // At least one slot (checked above); one slot's context is returned as it is.
    Ok(Tensor::cat(&contexts, 0)?)
}

/// Softmax over the last axis: the fused kernel for inference, a differentiable composition
/// (the fused one has no backward) when the scores track gradients.
pub(crate) fn softmax(scores: &Tensor) -> Result<Tensor> {
    if !scores.track_op() {
        return Ok(candle_nn::ops::softmax_last_dim(scores)?);
    }
    if crate::model::fused::applies(scores) {
        return crate::model::fused::softmax(scores);
    }
    let max = scores.max_keepdim(D::Minus1)?.detach();
    let exp = scores.broadcast_sub(&max)?.exp()?;
    Ok(exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?)
}
