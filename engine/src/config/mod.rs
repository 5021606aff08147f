//! `config.json` of a ChatGLM checkpoint (ChatGLM-6B, or ChatGLM2-6B / ChatGLM3-6B) and of a
//! P-Tuning v2 adapter.
//!
//! Fields are read one by one rather than through a derived `Deserialize` so that a bad value is
//! reported with its field name. The generation is told by the fields themselves: ChatGLM2/3
//! configs carry `multi_query_attention`, `kv_channels` and `padded_vocab_size`.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{EngineError, Result};

mod fields;
mod glm2;
pub mod shapes;

pub use crate::family::Family;
use fields::Fields;
pub use glm2::{Glm2Config, RopeScaling};

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

    /// Reads and validates `config.json` at `path`; for ChatGLM2/3, the files beside it tell
    /// which of the two it is ([`Self::for_family`]).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        let config = Self::from_json_str(&text, path)?;
        match (&config.architecture, path.parent()) {
            (Architecture::Glm2(_), Some(dir)) => {
                Ok(config.for_family(crate::family::family_of_dir(dir)))
            }
            _ => Ok(config),
        }
    }

    /// This config for a ChatGLM2 or ChatGLM3 checkpoint: they differ in how `rope_ratio`
    /// stretches the rotary embedding. A config read from text alone is taken as ChatGLM3's.
    pub fn for_family(mut self, family: Family) -> Self {
        if let Architecture::Glm2(g) = &mut self.architecture {
            g.rope_scaling = match family {
                Family::ChatGlm2 => RopeScaling::Positions,
                _ => RopeScaling::Base,
            };
        }
        self
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
            Architecture::Glm2(g) => g.json(self),
        };
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn validate(&self, path: &Path) -> Result<()> {
        // The field as the file spells it: ChatGLM2/3 call it `seq_length`.
        let length_field = if self.glm2().is_some() {
            "seq_length"
        } else {
            "max_sequence_length"
        };
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("inner_hidden_size", self.inner_hidden_size),
            (length_field, self.max_sequence_length),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(EngineError::config(path, field, "must be greater than 0"));
            }
        }
        // The rotary tables are built for every position up front: a hostile length must not
        // ask for terabytes, nor wrap the position count.
        if self.max_sequence_length > MAX_SEQUENCE_LENGTH {
            return Err(EngineError::config(
                path,
                length_field,
                format!(
                    "{} is more than {MAX_SEQUENCE_LENGTH}, the longest sequence this engine builds position tables for",
                    self.max_sequence_length
                ),
            ));
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

/// The longest `max_sequence_length` (`seq_length`) a config may give: twice the longest
/// ChatGLM checkpoint's (ChatGLM3-6B-128k's 131072).
pub const MAX_SEQUENCE_LENGTH: usize = 1 << 18;

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
        for (field, text) in [
            (
                "max_sequence_length",
                TINY.replace(
                    "\"pre_seq_len\":null",
                    "\"max_sequence_length\":1000000000000",
                ),
            ),
            (
                "max_sequence_length",
                TINY.replace(
                    "\"pre_seq_len\":null",
                    "\"max_sequence_length\":18446744073709551615",
                ),
            ),
        ] {
            let long = parse(&text).unwrap_err().to_string();
            assert!(
                long.contains("config.json") && long.contains(&format!("`{field}`")),
                "{long}"
            );
            assert!(long.contains("262144"), "{long}");
        }
        let bad_json = parse("{").unwrap_err().to_string();
        assert!(
            bad_json.contains("config.json") && bad_json.contains("line 1"),
            "{bad_json}"
        );
    }
}
