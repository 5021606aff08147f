//! Typed, field-named access to a `config.json` object: every bad value is reported with its
//! field's name.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::PrefixConfig;
use crate::error::{EngineError, Result};

/// A JSON object with typed, field-named accessors.
pub(super) struct Fields {
    map: Map<String, Value>,
    path: PathBuf,
}

impl Fields {
    pub(super) fn parse(text: &str, path: &Path) -> Result<Self> {
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

    pub(super) fn error(&self, field: &str, message: impl Into<String>) -> EngineError {
        EngineError::config(&self.path, field, message)
    }

    pub(super) fn present(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    pub(super) fn refuse_other_architectures(&self) -> Result<()> {
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
    pub(super) fn is_glm2(&self) -> bool {
        [
            "multi_query_attention",
            "kv_channels",
            "padded_vocab_size",
            "ffn_hidden_size",
        ]
        .iter()
        .any(|marker| self.present(marker).is_some())
    }

    pub(super) fn optional_usize(&self, field: &str) -> Result<Option<usize>> {
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

    pub(super) fn usize(&self, field: &str, default: Option<usize>) -> Result<usize> {
        match (self.optional_usize(field)?, default) {
            (Some(v), _) => Ok(v),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.error(field, "missing")),
        }
    }

    pub(super) fn token_id(&self, field: &str, default: u32) -> Result<u32> {
        let value = self.usize(field, Some(default as usize))?;
        u32::try_from(value)
            .map_err(|_| self.error(field, format!("{value} does not fit a token id")))
    }

    pub(super) fn f64(&self, field: &str, default: Option<f64>) -> Result<f64> {
        match (self.present(field), default) {
            (Some(v), _) => v
                .as_f64()
                .ok_or_else(|| self.error(field, format!("expected a number, found {v}"))),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.error(field, "missing")),
        }
    }

    pub(super) fn bool(&self, field: &str, default: Option<bool>) -> Result<bool> {
        match (self.present(field), default) {
            (Some(v), _) => v
                .as_bool()
                .ok_or_else(|| self.error(field, format!("expected true or false, found {v}"))),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.error(field, "missing")),
        }
    }

    pub(super) fn prefix(&self) -> Result<Option<PrefixConfig>> {
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
