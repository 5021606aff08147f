//! `config.json` of a ChatGLM checkpoint (ChatGLM-6B, or ChatGLM2-6B / ChatGLM3-6B) and of a
//! P-Tuning v2 adapter.
//!
//! Fields are read one by one rather than through a derived `Deserialize` so that a bad value is
//! reported with its field name. The generation is told by the fields themselves: ChatGLM2/3
//! configs carry `multi_query_attention`, `kv_channels` and `padded_vocab_size`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{EngineError, Result};

/// A generation of ChatGLM. ChatGLM2 and ChatGLM3 share the network and differ in the tokenizer's
/// special tokens and the chat format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[serde(rename = "chatglm")]
    ChatGlm,
    #[serde(rename = "chatglm2")]
    ChatGlm2,
    #[serde(rename = "chatglm3")]
    ChatGlm3,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::ChatGlm => "ChatGLM-6B",
            Family::ChatGlm2 => "ChatGLM2-6B",
            Family::ChatGlm3 => "ChatGLM3-6B",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which network a config describes.
#[derive(Debug, Clone, PartialEq)]
pub enum Architecture {
    /// ChatGLM-6B: post-LN GLM blocks with α-scaled residuals, 2D rotary positions, GeLU, the
    /// output layer tied to the embeddings.
    Glm,
    /// ChatGLM2-6B and ChatGLM3-6B: pre-norm blocks, multi-query attention, SwiGLU, rotary on
    /// half of each head, a separate output layer.
    Glm2(Glm2Config),
}

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
    /// Positions are divided by it before the rotary tables (ChatGLM3-6B-32k: 50).
    pub rope_ratio: f64,
    /// Read for completeness: the official `RotaryEmbedding` stores it and never reads it.
    pub original_rope: bool,
}

/// The architecture fields of a ChatGLM `config.json`, in ChatGLM-6B's names (a ChatGLM2/3
/// config's `padded_vocab_size`, `ffn_hidden_size`, `seq_length` and `kv_channels` land in
/// `vocab_size`, `inner_hidden_size`, `max_sequence_length` and [`ChatGlmConfig::head_dim`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatGlmConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_attention_heads: usize,
    pub inner_hidden_size: usize,
    pub layernorm_epsilon: f64,
    pub max_sequence_length: usize,
    /// Channels per attention head (`kv_channels` for ChatGLM2/3).
    pub kv_channels: usize,
    pub position_encoding_2d: bool,
    /// ChatGLM-6B's special ids, which its positions depend on. ChatGLM2/3 keep theirs in the
    /// tokenizer and use only `eos_token_id` and `pad_token_id` here (the rest are 0).
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub mask_token_id: u32,
    pub gmask_token_id: u32,
    pub pad_token_id: u32,
    /// Set when the checkpoint itself carries a prefix encoder.
    pub prefix: Option<PrefixConfig>,
}

/// The shape of a P-Tuning v2 prefix encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixConfig {
    pub pre_seq_len: usize,
    pub prefix_projection: bool,
}

impl ChatGlmConfig {
    pub fn head_dim(&self) -> usize {
        self.kv_channels
    }

    /// Heads of keys and values: all heads for ChatGLM-6B, the multi-query groups after.
    pub fn kv_heads(&self) -> usize {
        match &self.architecture {
            Architecture::Glm => self.num_attention_heads,
            Architecture::Glm2(g) => g.kv_groups,
        }
    }

    /// The ChatGLM2/3 fields, `None` for ChatGLM-6B.
    pub fn glm2(&self) -> Option<&Glm2Config> {
        match &self.architecture {
            Architecture::Glm => None,
            Architecture::Glm2(g) => Some(g),
        }
    }

    /// Width of one layer's keys (or values): `kv_heads · head_dim`.
    pub fn kv_width(&self) -> usize {
        self.kv_heads() * self.head_dim()
    }

    /// Reads and validates `config.json` at `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses a config from JSON text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let fields = Fields::parse(text, path)?;
        fields.refuse_other_architectures()?;
        if fields.is_glm2() {
            let config = Self::glm2_from_fields(&fields)?;
            config.validate(path)?;
            return Ok(config);
        }
        let hidden_size = fields.usize("hidden_size", None)?;
        let num_attention_heads = fields.usize("num_attention_heads", None)?;
        let config = Self {
            architecture: Architecture::Glm,
            vocab_size: fields.usize("vocab_size", None)?,
            hidden_size,
            num_layers: fields.usize("num_layers", None)?,
            num_attention_heads,
            inner_hidden_size: fields.usize("inner_hidden_size", Some(4 * hidden_size))?,
            layernorm_epsilon: fields.f64("layernorm_epsilon", Some(1e-5))?,
            max_sequence_length: fields.usize("max_sequence_length", Some(2048))?,
            kv_channels: hidden_size / num_attention_heads.max(1),
            position_encoding_2d: fields.bool("position_encoding_2d", Some(true))?,
            bos_token_id: fields.token_id("bos_token_id", 130004)?,
            eos_token_id: fields.token_id("eos_token_id", 130005)?,
            mask_token_id: fields.token_id("mask_token_id", 130000)?,
            gmask_token_id: fields.token_id("gmask_token_id", 130001)?,
            pad_token_id: fields.token_id("pad_token_id", 3)?,
            prefix: fields.prefix()?,
        };
        config.validate(path)?;
        Ok(config)
    }

    /// The official `config.json` fields of this architecture (what an adapter folder repeats).
    pub fn to_json(&self) -> Map<String, Value> {
        let value = match &self.architecture {
            Architecture::Glm => serde_json::json!({
                "architectures": ["ChatGLMModel"],
                "model_type": "chatglm",
                "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size,
                "num_layers": self.num_layers,
                "num_attention_heads": self.num_attention_heads,
                "inner_hidden_size": self.inner_hidden_size,
                "layernorm_epsilon": self.layernorm_epsilon,
                "max_sequence_length": self.max_sequence_length,
                "position_encoding_2d": self.position_encoding_2d,
                "bos_token_id": self.bos_token_id,
                "eos_token_id": self.eos_token_id,
                "mask_token_id": self.mask_token_id,
                "gmask_token_id": self.gmask_token_id,
                "pad_token_id": self.pad_token_id,
                "torch_dtype": "float32",
            }),
            Architecture::Glm2(g) => serde_json::json!({
                "architectures": ["ChatGLMModel"],
                "model_type": "chatglm",
                "add_bias_linear": g.add_bias_linear,
                "add_qkv_bias": g.add_qkv_bias,
                "apply_query_key_layer_scaling": true,
                "apply_residual_connection_post_layernorm": g.apply_residual_connection_post_layernorm,
                "attention_softmax_in_fp32": true,
                "eos_token_id": self.eos_token_id,
                "ffn_hidden_size": self.inner_hidden_size,
                "hidden_size": self.hidden_size,
                "kv_channels": self.kv_channels,
                "layernorm_epsilon": self.layernorm_epsilon,
                "multi_query_attention": g.multi_query,
                "multi_query_group_num": g.kv_groups,
                "num_attention_heads": self.num_attention_heads,
                "num_layers": self.num_layers,
                "original_rope": g.original_rope,
                "pad_token_id": self.pad_token_id,
                "padded_vocab_size": self.vocab_size,
                "post_layer_norm": g.post_layer_norm,
                "rmsnorm": g.rmsnorm,
                "rope_ratio": g.rope_ratio,
                "seq_length": self.max_sequence_length,
                "vocab_size": self.vocab_size,
                "torch_dtype": "float32",
            }),
        };
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// A ChatGLM2/3 config, with the defaults of their `ChatGLMConfig`.
    fn glm2_from_fields(fields: &Fields) -> Result<Self> {
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

    fn validate(&self, path: &Path) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("inner_hidden_size", self.inner_hidden_size),
            ("max_sequence_length", self.max_sequence_length),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(EngineError::config(path, field, "must be greater than 0"));
            }
        }
        if let Some(g) = self.glm2() {
            return self.validate_glm2(g, path);
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(EngineError::config(
                path,
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        // The 2D rotary splits each head in two halves, each rotated by pairs.
        let rotary_multiple = if self.position_encoding_2d { 4 } else { 2 };
        if !self.head_dim().is_multiple_of(rotary_multiple) {
            return Err(EngineError::config(
                path,
                "hidden_size",
                format!(
                    "head size {} (hidden_size / num_attention_heads) must be a multiple of {rotary_multiple}",
                    self.head_dim()
                ),
            ));
        }
        for (field, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
            ("mask_token_id", self.mask_token_id),
            ("gmask_token_id", self.gmask_token_id),
        ] {
            if id as usize >= self.vocab_size {
                return Err(EngineError::config(
                    path,
                    field,
                    format!(
                        "{id} is outside the vocabulary (vocab_size {})",
                        self.vocab_size
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_glm2(&self, g: &Glm2Config, path: &Path) -> Result<()> {
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
        if !(g.rope_ratio > 0.0) {
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

    /// Builds a config for a model of the given size with the real model's special ids shifted
    /// into a small vocabulary; used by benchmarks and tests that make random models.
    pub fn synthetic(
        vocab_size: usize,
        hidden_size: usize,
        num_layers: usize,
        num_attention_heads: usize,
        inner_hidden_size: usize,
    ) -> Self {
        Self {
            architecture: Architecture::Glm,
            vocab_size,
            hidden_size,
            num_layers,
            num_attention_heads,
            inner_hidden_size,
            layernorm_epsilon: 1e-5,
            max_sequence_length: 2048,
            kv_channels: hidden_size / num_attention_heads.max(1),
            position_encoding_2d: true,
            bos_token_id: 8,
            eos_token_id: 9,
            mask_token_id: 4,
            gmask_token_id: 5,
            pad_token_id: 3,
            prefix: None,
        }
    }
}

/// `config.json` of an adapter folder as the official `ptuning/main.py` writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    pub prefix: PrefixConfig,
    /// Architecture fields when present, to check the adapter against the base model.
    pub hidden_size: Option<usize>,
    pub num_layers: Option<usize>,
}

impl AdapterConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses an adapter's config from JSON text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let fields = Fields::parse(text, path)?;
        let prefix = fields.prefix()?.ok_or_else(|| {
            EngineError::config(
                path,
                "pre_seq_len",
                "missing or null: an adapter config must give the prefix length",
            )
        })?;
        Ok(Self {
            prefix,
            hidden_size: fields.optional_usize("hidden_size")?,
            num_layers: fields.optional_usize("num_layers")?,
        })
    }
}

/// A JSON object with typed, field-named accessors.
struct Fields {
    map: Map<String, Value>,
    path: PathBuf,
}

impl Fields {
    fn parse(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            EngineError::checkpoint(path, format!("invalid JSON at line {}: {e}", e.line()))
        })?;
        match value {
            Value::Object(map) => Ok(Self {
                map,
                path: path.to_owned(),
            }),
            _ => Err(EngineError::checkpoint(path, "expected a JSON object")),
        }
    }

    fn error(&self, field: &str, message: impl Into<String>) -> EngineError {
        EngineError::config(&self.path, field, message)
    }

    fn present(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn refuse_other_architectures(&self) -> Result<()> {
        if let Some(model_type) = self.present("model_type") {
            if model_type.as_str() != Some("chatglm") {
                return Err(self.error(
                    "model_type",
                    format!("{model_type} is not supported (expected \"chatglm\")"),
                ));
            }
        }
        // THUDM's int4/int8 checkpoints are read by the checkpoint loader (weights with scales).
        if let Some(bits) = self.present("quantization_bit") {
            if !matches!(bits.as_u64(), Some(0 | 4 | 8)) {
                return Err(self.error(
                    "quantization_bit",
                    format!("{bits}: THUDM's checkpoints are quantized to 4 or 8 bits, or not at all (0)"),
                ));
            }
        }
        Ok(())
    }

    /// ChatGLM2/3 configs name fields ChatGLM-6B never had.
    fn is_glm2(&self) -> bool {
        [
            "multi_query_attention",
            "kv_channels",
            "padded_vocab_size",
            "ffn_hidden_size",
        ]
        .iter()
        .any(|marker| self.present(marker).is_some())
    }

    fn optional_usize(&self, field: &str) -> Result<Option<usize>> {
        match self.present(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.error(field, format!("expected a non-negative integer, found {v}"))
                }),
        }
    }

    fn usize(&self, field: &str, default: Option<usize>) -> Result<usize> {
        match (self.optional_usize(field)?, default) {
            (Some(v), _) => Ok(v),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.error(field, "missing")),
        }
    }

    fn token_id(&self, field: &str, default: u32) -> Result<u32> {
        let value = self.usize(field, Some(default as usize))?;
        u32::try_from(value)
            .map_err(|_| self.error(field, format!("{value} does not fit a token id")))
    }

    fn f64(&self, field: &str, default: Option<f64>) -> Result<f64> {
        match (self.present(field), default) {
            (Some(v), _) => v
                .as_f64()
                .ok_or_else(|| self.error(field, format!("expected a number, found {v}"))),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.error(field, "missing")),
        }
    }

    fn bool(&self, field: &str, default: Option<bool>) -> Result<bool> {
        match (self.present(field), default) {
            (Some(v), _) => v
                .as_bool()
                .ok_or_else(|| self.error(field, format!("expected true or false, found {v}"))),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.error(field, "missing")),
        }
    }

    fn prefix(&self) -> Result<Option<PrefixConfig>> {
        let Some(pre_seq_len) = self.optional_usize("pre_seq_len")? else {
            return Ok(None);
        };
        if pre_seq_len == 0 {
            return Err(self.error("pre_seq_len", "must be greater than 0"));
        }
        Ok(Some(PrefixConfig {
            pre_seq_len,
            prefix_projection: self.bool("prefix_projection", Some(false))?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ChatGlmConfig> {
        ChatGlmConfig::from_json_str(text, Path::new("config.json"))
    }

    const TINY: &str = r#"{"model_type":"chatglm","vocab_size":512,"hidden_size":64,"num_layers":3,
        "num_attention_heads":4,"inner_hidden_size":256,"bos_token_id":8,"eos_token_id":9,
        "mask_token_id":4,"gmask_token_id":5,"pad_token_id":3,"pre_seq_len":null}"#;

    #[test]
    fn parses_tiny_config() {
        let config = parse(TINY).unwrap();
        assert_eq!(config.head_dim(), 16);
        assert_eq!(config.prefix, None);
        assert!(config.position_encoding_2d);
    }

    #[test]
    fn errors_name_the_field() {
        let missing = parse(r#"{"vocab_size":512}"#).unwrap_err().to_string();
        assert!(missing.contains("`hidden_size`"), "{missing}");
        let wrong_type = parse(&TINY.replace("\"num_layers\":3", "\"num_layers\":\"3\""))
            .unwrap_err()
            .to_string();
        assert!(
            wrong_type.contains("`num_layers`") && wrong_type.contains("integer"),
            "{wrong_type}"
        );
        let v2 = parse(&TINY.replace(
            "\"pre_seq_len\":null",
            "\"multi_query_attention\":true,\"multi_query_group_num\":3",
        ))
        .unwrap_err()
        .to_string();
        assert!(v2.contains("`multi_query_group_num`"), "{v2}");
        let heads = parse(&TINY.replace("\"num_attention_heads\":4", "\"num_attention_heads\":5"))
            .unwrap_err()
            .to_string();
        assert!(heads.contains("`num_attention_heads`"), "{heads}");
        assert!(parse(&TINY.replace("\"pre_seq_len\":null", "\"quantization_bit\":4")).is_ok());
        let quantized = parse(&TINY.replace("\"pre_seq_len\":null", "\"quantization_bit\":3"))
            .unwrap_err()
            .to_string();
        assert!(quantized.contains("`quantization_bit`"), "{quantized}");
        let bad_json = parse("{").unwrap_err().to_string();
        assert!(
            bad_json.contains("config.json") && bad_json.contains("line 1"),
            "{bad_json}"
        );
    }
}
