//! ChatGLM2-6B / ChatGLM3-6B's block as their `modeling_chatglm.py` computes it.
//!
//! Pre-norm: `h = x + Attn(Norm(x))`, `out = h + MLP(Norm(h))` (with
//! `apply_residual_connection_post_layernorm` the residuals start from the normed inputs
//! instead). With multi-query attention `query_key_value` yields, contiguously, the query heads
//! then the key and the value of each group, and query head `i` reads group
//! `i / (heads / groups)`; without it, q, k and v come interleaved per head. The first half
//! of every query and key head is rotated in interleaved pairs; scores are scaled by `1/√d` and
//! the softmax is float32. The MLP is SwiGLU: `dense_4h_to_h(silu(gate) · up)`.

use candle_core::{DType, Tensor, D};

use crate::config::{ChatGlmConfig, Glm2Config};
use crate::error::Result;
use crate::model::chatglm::{attend_slots, softmax, Block, ChatGlmModel, LayerContext, Slot};
use crate::model::norm::Norm;
use crate::model::rotary;
use crate::model::weights::Linear;

/// Score of a masked slot: far below any real score, yet finite, so a fully masked row (left
/// padding) averages instead of turning into NaN.
const MASKED_SCORE: f32 = -1e30;

/// One block's sub-modules under their official names (`self_attention.*`, `mlp.*`): grouped
/// query/key/value, biases as the config says, SwiGLU's gate and up projection in one matrix.
pub(crate) fn block_layout(
    config: &ChatGlmConfig,
    g: &Glm2Config,
    norm: impl Fn(&str) -> Result<Norm>,
    linear: impl Fn(&str, usize, usize, bool) -> Result<Linear>,
) -> Result<Block> {
    let (h, inner) = (config.hidden_size, config.inner_hidden_size);
    let projection = config.num_attention_heads * config.head_dim();
    let qkv = projection + 2 * config.kv_width();
    Ok(Block {
        input_layernorm: norm("input_layernorm")?,
        query_key_value: linear("self_attention.query_key_value", qkv, h, g.add_qkv_bias)?,
        dense: linear("self_attention.dense", h, projection, g.add_bias_linear)?,
        post_attention_layernorm: norm("post_attention_layernorm")?,
        // SwiGLU: the gate and the up projection in one matrix.
        dense_h_to_4h: linear("mlp.dense_h_to_4h", 2 * inner, h, g.add_bias_linear)?,
        dense_4h_to_h: linear("mlp.dense_4h_to_h", h, inner, g.add_bias_linear)?,
    })
}

/// One block over `x`: pre-norm residuals, multi-query attention, SwiGLU.
pub(crate) fn block(
    model: &ChatGlmModel,
    g: &Glm2Config,
    block: &Block,
    x: &Tensor,
    rows: &LayerContext,
    slots: &mut [Slot],
) -> Result<Tensor> {
    let post_ln_residual = g.apply_residual_connection_post_layernorm;
    let normed = block.input_layernorm.forward(x)?;
    let qkv = block.query_key_value.forward(&normed)?;
    let (query, key, value) = project(model, g, &qkv, &rows.rotations)?;
    let context = attend_slots(
        [&query, &key, &value],
        slots,
        1.0,
        |query, keys, values, context| attention(model, query, keys, values, context),
    )?;
    let (batch, seq, _) = qkv.dims3()?;
    let context = context.transpose(1, 2)?.reshape((batch, seq, ()))?;
    let attention = block.dense.forward(&context)?;
    let residual = if post_ln_residual { &normed } else { x };
    let hidden = (residual + attention)?;
    let normed = block.post_attention_layernorm.forward(&hidden)?;
    let up = block.dense_h_to_4h.forward(&normed)?;
    let inner = model.config.inner_hidden_size;
    let gate = up.narrow(D::Minus1, 0, inner)?;
    let up = up.narrow(D::Minus1, inner, inner)?;
    let mlp = block.dense_4h_to_h.forward(&(gate.silu()? * up)?)?;
    let residual = if post_ln_residual { &normed } else { &hidden };
    Ok((residual + mlp)?)
}

/// Every row's query (scaled), key and value, rotated by its positions:
/// `[batch, heads or groups, seq, d]`.
fn project(
    model: &ChatGlmModel,
    g: &Glm2Config,
    qkv: &Tensor,
    rotations: &[(Tensor, Tensor)],
) -> Result<(Tensor, Tensor, Tensor)> {
    let (batch, seq, _) = qkv.dims3()?;
    let config = &model.config;
    let (heads, groups, d) = (
        config.num_attention_heads,
        config.kv_heads(),
        config.head_dim(),
    );
    let multi_query = g.multi_query;
    let (query, key, value) = if multi_query {
        let part = |start: usize, n: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(D::Minus1, start * d, n * d)?
                .reshape((batch, seq, n, d))?)
        };
        (
            part(0, heads)?,
            part(heads, groups)?,
            part(heads + groups, groups)?,
        )
    } else {
        let per_head = qkv.reshape((batch, seq, heads, 3 * d))?;
        (
            per_head.narrow(D::Minus1, 0, d)?,
            per_head.narrow(D::Minus1, d, d)?,
            per_head.narrow(D::Minus1, 2 * d, d)?,
        )
    };
    let (cos, sin) = &rotations[0];
    let query = rotate_first_half(&query, cos, sin)?;
    let key = rotate_first_half(&key, cos, sin)?;
    // [batch, heads, seq, d]
    let query = (query.transpose(1, 2)? / (d as f64).sqrt())?.contiguous()?;
    let key = key.transpose(1, 2)?.contiguous()?;
    let value = value.transpose(1, 2)?.contiguous()?;
    Ok((query, key, value))
}

/// The attention context `[batch, heads, seq, d]` of one slot's rows over its whole cache
/// (`key`, `value`).
fn attention(
    model: &ChatGlmModel,
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    context: &LayerContext,
) -> Result<Tensor> {
    let mask = context.mask.as_ref();
    let (batch, heads, seq, d) = query.dims4()?;
    let groups = model.config.kv_heads();
    let total = key.dim(2)?;
    // Query heads of one group share its key and value: fold them into the row axis, so the
    // group's keys are read once instead of copied per head.
    let per_group = heads / groups;
    let grouped_query = query.reshape((batch, groups, per_group * seq, d))?;
    let scores = grouped_query
        .matmul(&key.t()?)?
        .reshape((batch, heads, seq, total))?
        .to_dtype(DType::F32)?;
    let scores = match mask {
        Some(mask) => {
            let fill = Tensor::new(MASKED_SCORE, scores.device())?.broadcast_as(scores.shape())?;
            mask.where_cond(&fill, &scores)?
        }
        None => scores,
    };
    let probs = softmax(&scores)?;
    let context = probs
        .to_dtype(model.dtype)?
        .reshape((batch, groups, per_group * seq, total))?
        .matmul(value)?
        .reshape((batch, heads, seq, d))?;
    Ok(context)
}

/// Rotates the first half of each head of `x` (`[batch, seq, heads, d]`) in interleaved pairs
/// `(x₂ᵢ, x₂ᵢ₊₁)`; the second half passes through.
fn rotate_first_half(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let rotated = rotary::apply_interleaved(&x.narrow(D::Minus1, 0, d / 2)?, cos, sin)?;
    Ok(Tensor::cat(
        &[&rotated, &x.narrow(D::Minus1, d / 2, d / 2)?],
        D::Minus1,
    )?)
}
