//! ChatGLM-6B's GLM block as its `modeling_chatglm.py` computes it.
//!
//! Per block: `x₁ = LN(x)`, `h = x₁·α + Attn(x₁)`, `x₂ = LN(h)`, `out = x₂·α + MLP(x₂)` with
//! `α = √56` (see [`RESIDUAL_ALPHA`]). Attention splits `query_key_value` per head (q, k, v
//! interleaved by head), rotates the two halves of each head by the position and the block
//! position, scales the query by `1/(√d·(layer+1))` and the scores back by `layer+1` in float32
//! before the softmax, and fills masked scores with -10000. Tensors are laid out `[batch, seq, …]`.

use candle_core::{DType, Tensor, D};

use crate::config::ChatGlmConfig;
use crate::error::Result;
use crate::model::chatglm::{attend_slots, softmax, Block, ChatGlmModel, LayerContext, Slot};
use crate::model::norm::Norm;
use crate::model::rotary;
use crate::model::weights::Linear;

/// Score written into masked attention slots, as the official code does (a fill, not an addition).
const MASKED_SCORE: f64 = -10000.0;

/// The residual scale `√(2·28)`. The official `GLMBlock` takes `num_layers` with a default of 28
/// that `ChatGLMModel` never overrides, so every ChatGLM-6B checkpoint, whatever its depth, was
/// trained (and must run) with the 28-layer value.
pub(crate) const RESIDUAL_ALPHA: f64 = 7.483314773547883;

/// One block's sub-modules under their official names (`attention.*`, `mlp.*`), all with biases.
pub(crate) fn block_layout(
    config: &ChatGlmConfig,
    norm: impl Fn(&str) -> Result<Norm>,
    linear: impl Fn(&str, usize, usize, bool) -> Result<Linear>,
) -> Result<Block> {
    let (h, inner) = (config.hidden_size, config.inner_hidden_size);
    Ok(Block {
        input_layernorm: norm("input_layernorm")?,
        query_key_value: linear("attention.query_key_value", 3 * h, h, true)?,
        dense: linear("attention.dense", h, h, true)?,
        post_attention_layernorm: norm("post_attention_layernorm")?,
        dense_h_to_4h: linear("mlp.dense_h_to_4h", inner, h, true)?,
        dense_4h_to_h: linear("mlp.dense_4h_to_h", h, inner, true)?,
    })
}

/// Block `layer` over `hidden`: α-scaled residuals from the normed inputs, tanh GeLU MLP.
pub(crate) fn block(
    model: &ChatGlmModel,
    block: &Block,
    layer: usize,
    hidden: &Tensor,
    rows: &LayerContext,
    slots: &mut [Slot],
) -> Result<Tensor> {
    let alpha = RESIDUAL_ALPHA;
    let attention_input = block.input_layernorm.forward(hidden)?;
    let qkv = block.query_key_value.forward(&attention_input)?;
    let (query, key, value) = project(model, layer, &qkv, &rows.rotations)?;
    let coeff = (layer + 1) as f64;
    let context = attend_slots(
        [&query, &key, &value],
        slots,
        coeff as f32,
        |query, keys, values, context| attention(model, coeff, query, keys, values, context),
    )?;
    let (batch, seq, _) = qkv.dims3()?;
    let context = context.transpose(1, 2)?.reshape((batch, seq, ()))?;
    let attention = block.dense.forward(&context)?;
    let residual = ((&attention_input * alpha)? + attention)?;
    let mlp_input = block.post_attention_layernorm.forward(&residual)?;
    let mlp = block
        .dense_4h_to_h
        .forward(&block.dense_h_to_4h.forward(&mlp_input)?.gelu()?)?;
    Ok(((&mlp_input * alpha)? + mlp)?)
}

/// Every row's query (scaled as the official code scales it), key and value, rotated by its
/// positions: `[batch, heads, seq, head_dim]` each.
fn project(
    model: &ChatGlmModel,
    layer: usize,
    qkv: &Tensor,
    rotations: &[(Tensor, Tensor)],
) -> Result<(Tensor, Tensor, Tensor)> {
    let (batch, seq, _) = qkv.dims3()?;
    let (heads, head_dim) = (model.config.num_attention_heads, model.config.head_dim());
    let qkv = qkv.reshape((batch, seq, heads, 3 * head_dim))?;
    let query = qkv.narrow(D::Minus1, 0, head_dim)?;
    let key = qkv.narrow(D::Minus1, head_dim, head_dim)?;
    let value = qkv.narrow(D::Minus1, 2 * head_dim, head_dim)?;
    let (query, key) = rotate(model, &query, &key, rotations)?;
    let coeff = (layer + 1) as f64;
    let query = (query.transpose(1, 2)? / ((head_dim as f64).sqrt() * coeff))?.contiguous()?;
    let key = key.transpose(1, 2)?.contiguous()?;
    let value = value.transpose(1, 2)?.contiguous()?;
    Ok((query, key, value))
}

/// The attention context `[batch, heads, seq, head_dim]` of one slot's rows over its whole cache
/// (`key`, `value`), the scores scaled back by the layer's `coeff`.
fn attention(
    model: &ChatGlmModel,
    coeff: f64,
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    context: &LayerContext,
) -> Result<Tensor> {
    let mask = context.mask.as_ref();
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
    let probs = softmax(&scores)?;
    Ok(probs.to_dtype(model.dtype)?.matmul(value)?)
}

/// Applies the rotary embedding: with 2D encoding, the first half of each head by the position
/// and the second half by the block position.
fn rotate(
    model: &ChatGlmModel,
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
    let half = model.config.head_dim() / 2;
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
