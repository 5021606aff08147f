//! ChatGLM2-6B / ChatGLM3-6B configs: the fields ChatGLM-6B has no counterpart for, their
//! defaults (those of their `ChatGLMConfig`), their checks, and the `config.json` they write.

use std::path::Path;

use serde_json::Value;

use super::fields::Fields;
use super::{Architecture, ChatGlmConfig};
use crate::error::{EngineError, Result};

/// The fields of a ChatGLM2/3 `config.json` that ChatGLM-6B has no counterpart for.
#[derive(Debug, Clone, PartialEq)]
pub struct Glm2Config {
    /// Key/value heads (`multi_query_group_num`; all heads without multi-query attention).
    pub kv_groups: usize,
    /// `multi_query_attention`: `query_key_value` yields all query heads, then the key and value
    /// groups. Without it, q, k and v are interleaved per head as in ChatGLM-6B.
    pub multi_query: bool,
    pub add_qkv_bias: bool,
    pub add_bias_linear: bool,
    pub rmsnorm: bool,
    pub post_layer_norm: bool,
    pub apply_residual_connection_post_layernorm: bool,
    /// The long-context factor of the rotary embedding (ChatGLM3-6B-32k: 50), applied as
    /// [`rope_scaling`](Self::rope_scaling) says.
    pub rope_ratio: f64,
    pub rope_scaling: RopeScaling,
    /// Read for completeness: the official `RotaryEmbedding` stores it and never reads it.
    pub original_rope: bool,
}

/// How `rope_ratio` stretches the rotary embedding: the two generations' code differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeScaling {
    /// ChatGLM3's `RotaryEmbedding`: the base 10000 is multiplied by `rope_ratio`.
    Base,
    /// ChatGLM2-6B-32k's: positions are divided by `rope_ratio` (interpolation).
    Positions,
}

impl Glm2Config {
    /// The official `config.json` fields of `config`, a ChatGLM2/3 config.
    pub(super) fn json(&self, config: &ChatGlmConfig) -> Value {
        serde_json::json!({
            "architectures": ["ChatGLMModel"],
            "model_type": "chatglm",
            "add_bias_linear": self.add_bias_linear,
            "add_qkv_bias": self.add_qkv_bias,
            "apply_query_key_layer_scaling": true,
            "apply_residual_connection_post_layernorm": self.apply_residual_connection_post_layernorm,
            "attention_softmax_in_fp32": true,
            "eos_token_id": config.eos_token_id,
            "ffn_hidden_size": config.inner_hidden_size,
            "hidden_size": config.hidden_size,
            "kv_channels": config.kv_channels,
            "layernorm_epsilon": config.layernorm_epsilon,
            "multi_query_attention": self.multi_query,
            "multi_query_group_num": self.kv_groups,
            "num_attention_heads": config.num_attention_heads,
            "num_layers": config.num_layers,
            "original_rope": self.original_rope,
            "pad_token_id": config.pad_token_id,
            "padded_vocab_size": config.vocab_size,
            "post_layer_norm": self.post_layer_norm,
            "rmsnorm": self.rmsnorm,
            "rope_ratio": self.rope_ratio,
            "seq_length": config.max_sequence_length,
            "vocab_size": config.vocab_size,
            "torch_dtype": "float32",
        })
    }
}

impl ChatGlmConfig {
    /// A ChatGLM2/3 config, with the defaults of their `ChatGLMConfig`.
    pub(super) fn glm2_from_fields(fields: &Fields) -> Result<Self> {
        let hidden_size = fields.usize("hidden_size", Some(4096))?;
        let num_attention_heads = fields.usize("num_attention_heads", Some(32))?;
        let kv_channels = fields.usize(
            "kv_channels",
            Some(hidden_size / num_attention_heads.max(1)),
        )?;
        let multi_query = fields.bool("multi_query_attention", Some(false))?;
        let kv_groups = if multi_query {
            fields.usize("multi_query_group_num", Some(1))?
        } else {
            num_attention_heads
        };
        let padded_vocab_size = fields.usize("padded_vocab_size", Some(65024))?;
        Ok(Self {
            architecture: Architecture::Glm2(Glm2Config {
                kv_groups,
                multi_query,
                add_qkv_bias: fields.bool("add_qkv_bias", Some(false))?,
                add_bias_linear: fields.bool("add_bias_linear", Some(false))?,
                rmsnorm: fields.bool("rmsnorm", Some(true))?,
                post_layer_norm: fields.bool("post_layer_norm", Some(true))?,
                apply_residual_connection_post_layernorm: fields
                    .bool("apply_residual_connection_post_layernorm", Some(false))?,
                rope_ratio: fields.f64("rope_ratio", Some(1.0))?,
                // ChatGLM3 unless the folder says ChatGLM2 (see `ChatGlmConfig::for_family`).
                rope_scaling: RopeScaling::Base,
                original_rope: fields.bool("original_rope", Some(true))?,
            }),
            vocab_size: padded_vocab_size,
            hidden_size,
            num_layers: fields.usize("num_layers", Some(28))?,
            num_attention_heads,
            inner_hidden_size: fields.usize("ffn_hidden_size", Some(13696))?,
            layernorm_epsilon: fields.f64("layernorm_epsilon", Some(1e-5))?,
            max_sequence_length: fields.usize("seq_length", Some(2048))?,
            kv_channels,
            position_encoding_2d: false,
            bos_token_id: 0,
            eos_token_id: fields.token_id("eos_token_id", 2)?,
            mask_token_id: 0,
            gmask_token_id: 0,
            pad_token_id: fields.token_id("pad_token_id", 0)?,
            prefix: fields.prefix()?,
        })
    }

    pub(super) fn validate_glm2(&self, g: &Glm2Config, path: &Path) -> Result<()> {
        let fail = |field: &str, message: String| Err(EngineError::config(path, field, message));
        if self.kv_channels == 0 || !self.kv_channels.is_multiple_of(4) {
            // Rotary pairs over the first half of each head.
            return fail(
                "kv_channels",
                format!("{} must be a positive multiple of 4", self.kv_channels),
            );
        }
        if g.kv_groups == 0 || !self.num_attention_heads.is_multiple_of(g.kv_groups) {
            return fail(
                "multi_query_group_num",
                format!(
                    "{} must divide num_attention_heads {}",
                    g.kv_groups, self.num_attention_heads
                ),
            );
        }
        if g.rope_ratio.is_nan() || g.rope_ratio <= 0.0 {
            return fail("rope_ratio", format!("{} must be positive", g.rope_ratio));
        }
        if self.eos_token_id as usize >= self.vocab_size {
            return fail(
                "eos_token_id",
                format!(
                    "{} is outside the vocabulary (padded_vocab_size {})",
                    self.eos_token_id, self.vocab_size
                ),
            );
        }
        Ok(())
    }
}
