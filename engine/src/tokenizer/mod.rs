//! The ChatGLM-6B tokenizer, in pure Rust and without the sentencepiece library.
//!
//! It loads `ice_text.model` (a sentencepiece `ModelProto`) and `tokenizer_config.json`
//! and reproduces the official `tokenization_chatglm.py` as run under transformers 4.33
//! and sentencepiece 0.2: the same ids for `tokenizer(text)` and the same text from
//! `tokenizer.decode(ids)`. Loading from bytes does no I/O, so it also runs in wasm.
//!
//! Layers, bottom up: `proto` reads the model file, `normalizer` applies its
//! normalization rules, `unigram` / `bpe` segment, `sentencepiece` ties them into
//! pieces in and out, and `chatglm` adds ChatGLM's whitespace tokens, special tokens and
//! image-token offset.

mod bpe;
mod chatglm;
mod config;
mod normalizer;
mod proto;
mod sentencepiece;
mod text;
mod trie;
mod unigram;
mod utf8;

use std::path::{Path, PathBuf};

pub use chatglm::{ChatGlmTokenizer, SpecialIds};

/// File name of the sentencepiece model in a ChatGLM-6B checkpoint directory.
pub const MODEL_FILE: &str = "ice_text.model";
/// File name of the tokenizer settings in a checkpoint directory.
pub const CONFIG_FILE: &str = "tokenizer_config.json";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a usable sentencepiece model: {reason}")]
    MalformedModel { file: String, reason: String },
    #[error("{file}: unsupported sentencepiece model: {reason}")]
    UnsupportedModel { file: String, reason: String },
    #[error("{file}: bad tokenizer config: {reason}")]
    MalformedConfig { file: String, reason: String },
}

impl ChatGlmTokenizer {
    /// Loads `ice_text.model` and, when present, `tokenizer_config.json` from `dir`.
    /// Without the config the official constructor defaults apply (`num_image_tokens`
    /// 20000).
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let model_path = dir.join(MODEL_FILE);
        let model = std::fs::read(&model_path).map_err(|source| TokenizerError::Io {
            path: model_path.clone(),
            source,
        })?;
        let config_path = dir.join(CONFIG_FILE);
        let config = match std::fs::read_to_string(&config_path) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(TokenizerError::Io {
                    path: config_path,
                    source,
                })
            }
        };
        Self::load(
            &model,
            config.as_deref(),
            &model_path.display().to_string(),
            &config_path.display().to_string(),
        )
    }

    /// Builds the tokenizer from the bytes of `ice_text.model` and the text of
    /// `tokenizer_config.json` (`None`: constructor defaults). Does no I/O.
    pub fn from_bytes(
        model: &[u8],
        tokenizer_config_json: Option<&str>,
    ) -> Result<Self, TokenizerError> {
        Self::load(model, tokenizer_config_json, MODEL_FILE, CONFIG_FILE)
    }

    fn load(
        model: &[u8],
        config: Option<&str>,
        model_name: &str,
        config_name: &str,
    ) -> Result<Self, TokenizerError> {
        let malformed = |reason: String| TokenizerError::MalformedModel {
            file: model_name.to_string(),
            reason,
        };
        let proto = proto::parse_model(model).map_err(malformed)?;
        if proto.pieces.is_empty() {
            return Err(malformed("it holds no pieces".to_string()));
        }
        let sp = sentencepiece::SentencePiece::new(&proto).map_err(|e| match e {
            sentencepiece::LoadError::Malformed(reason) => malformed(reason),
            sentencepiece::LoadError::Unsupported(reason) => TokenizerError::UnsupportedModel {
                file: model_name.to_string(),
                reason,
            },
        })?;
        let config = config::parse(config).map_err(|reason| TokenizerError::MalformedConfig {
            file: config_name.to_string(),
            reason,
        })?;
        Ok(Self::build(sp, config))
    }
}
