//! `config.json` of a ChatGLM-6B checkpoint and of a P-Tuning v2 adapter.
//!
//! Fields are read one by one rather than through a derived `Deserialize` so that a bad value is
//! reported with its field name and a config of another architecture (ChatGLM2/3, a quantized
//! THUDM export) is refused with the field that gave it away.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{EngineError, Result};

/// The architecture fields of a ChatGLM-6B (v1) `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatGlmConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_attention_heads: usize,
    pub inner_hidden_size: usize,
    pub layernorm_epsilon: f64,
    pub max_sequence_length: usize,
    pub position_encoding_2d: bool,
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
        self.hidden_size / self.num_attention_heads
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
        let hidden_size = fields.usize("hidden_size", None)?;
        let config = Self {
            vocab_size: fields.usize("vocab_size", None)?,
            hidden_size,
            num_layers: fields.usize("num_layers", None)?,
            num_attention_heads: fields.usize("num_attention_heads", None)?,
            inner_hidden_size: fields.usize("inner_hidden_size", Some(4 * hidden_size))?,
            layernorm_epsilon: fields.f64("layernorm_epsilon", Some(1e-5))?,
            max_sequence_length: fields.usize("max_sequence_length", Some(2048))?,
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
            vocab_size,
            hidden_size,
            num_layers,
            num_attention_heads,
            inner_hidden_size,
            layernorm_epsilon: 1e-5,
            max_sequence_length: 2048,
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
        for marker in ["multi_query_attention", "kv_channels", "padded_vocab_size"] {
            if self.present(marker).is_some() {
                return Err(self.error(
                    marker,
                    "this is a ChatGLM2/ChatGLM3 config; only ChatGLM-6B (v1) is supported",
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
        let v2 = parse(&TINY.replace("\"pre_seq_len\":null", "\"multi_query_attention\":true"))
            .unwrap_err()
            .to_string();
        assert!(v2.contains("ChatGLM2"), "{v2}");
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
