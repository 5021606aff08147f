//! The ChatGLM tokenizers, in pure Rust and without the sentencepiece library.
//!
//! It loads ChatGLM-6B's `ice_text.model` or ChatGLM2/3's `tokenizer.model` (sentencepiece
//! `ModelProto`s) with `tokenizer_config.json`, and reproduces the official
//! `tokenization_chatglm.py` of each generation as run under transformers 4.33 and
//! sentencepiece 0.2: the same ids for `tokenizer(text)` and the same text from
//! `tokenizer.decode(ids)`. Loading from bytes does no I/O, so it also runs in wasm.
//!
//! Layers, bottom up: `proto` reads the model file, `vocab` keeps its pieces with
//! sentencepiece's lookup rules, `pipeline` builds from it the `tokenizers::Tokenizer` that
//! normalizes, segments and decodes, and `processor` answers ChatGLM's sentencepiece calls with
//! it; `chatglm` adds ChatGLM-6B's whitespace tokens, special tokens and image-token offset,
//! `glm2` the special tokens of ChatGLM2/3 after the vocabulary.
//! [`ChatGlmTokenizer`] is either, chosen by the files; [`Family`] says which generation.

mod chatglm;
mod config;
mod glm2;
mod pipeline;
mod processor;
mod proto;
mod text;
mod vocab;

use std::path::Path;

use crate::family::glm2_family;
pub use crate::family::Family;
pub use chatglm::SpecialIds;

use chatglm::Glm1Tokenizer;
use glm2::Glm2Tokenizer;

/// File name of the sentencepiece model in a ChatGLM-6B checkpoint directory.
pub const MODEL_FILE: &str = "ice_text.model";
/// File name of the sentencepiece model in a ChatGLM2-6B / ChatGLM3-6B checkpoint directory.
pub const GLM2_MODEL_FILE: &str = "tokenizer.model";
/// A `tokenizers` pipeline; a folder with one is read from it rather than from its sentencepiece
/// model.
pub const JSON_FILE: &str = "tokenizer.json";
/// The official Python tokenizer (read only to tell ChatGLM2 from ChatGLM3) and the tokenizer
/// settings of a checkpoint directory.
pub use crate::family::{PYTHON_TOKENIZER_FILE, TOKENIZER_CONFIG_FILE as CONFIG_FILE};

pub use crate::error::TokenizerError;

/// A ChatGLM tokenizer of any generation, equal in ids and decoded text to the official one.
#[derive(Debug)]
pub struct ChatGlmTokenizer {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Glm1(Glm1Tokenizer),
    Glm2(Glm2Tokenizer),
}

/// Who speaks a chat message, as ChatGLM3's role tokens name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Observation,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Observation => "observation",
        }
    }

    fn token(self) -> &'static str {
        glm2::ROLES[self as usize]
    }
}

impl ChatGlmTokenizer {
    /// Loads the tokenizer of `dir`: its `tokenizer.json` when it has one, else the sentencepiece
    /// model (`ice_text.model` for ChatGLM-6B, `tokenizer.model` for ChatGLM2/3), with
    /// `tokenizer_config.json` when present. Without the config the official constructor
    /// defaults apply (for ChatGLM-6B, `num_image_tokens` 20000).
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let config_path = dir.join(CONFIG_FILE);
        let config_name = config_path.display().to_string();
        let json_path = dir.join(JSON_FILE);
        if let Some(json) = read_optional(&json_path)? {
            let sp = processor::SentencePiece::from_json(&json).map_err(|reason| {
                TokenizerError::MalformedModel {
                    file: json_path.display().to_string(),
                    reason,
                }
            })?;
            let config = read_optional(&config_path)?;
            let python = read_optional(&dir.join(PYTHON_TOKENIZER_FILE))?;
            return Self::layered(sp, config.as_deref(), python.as_deref(), &config_name);
        }
        let model_path = dir.join(Self::model_file(dir));
        let model = std::fs::read(&model_path).map_err(|source| TokenizerError::Io {
            path: model_path.clone(),
            source,
        })?;
        let config = read_optional(&config_path)?;
        let python = read_optional(&dir.join(PYTHON_TOKENIZER_FILE))?;
        Self::load(
            &model,
            config.as_deref(),
            python.as_deref(),
            &model_path.display().to_string(),
            &config_name,
        )
    }

    /// Builds the tokenizer from the bytes of the sentencepiece model (either generation's) and
    /// the text of `tokenizer_config.json` (`None`: constructor defaults). Does no I/O.
    pub fn from_bytes(
        model: &[u8],
        tokenizer_config_json: Option<&str>,
    ) -> Result<Self, TokenizerError> {
        Self::from_files(model, tokenizer_config_json, None)
    }

    /// [`Self::from_bytes`] with the text of the folder's `tokenization_chatglm.py` when it has
    /// one, which tells ChatGLM2 from ChatGLM3 as [`Self::from_dir`] does.
    pub fn from_files(
        model: &[u8],
        tokenizer_config_json: Option<&str>,
        python_tokenizer: Option<&str>,
    ) -> Result<Self, TokenizerError> {
        let name = format!("sentencepiece model ({MODEL_FILE} or {GLM2_MODEL_FILE})");
        Self::load(
            model,
            tokenizer_config_json,
            python_tokenizer,
            &name,
            CONFIG_FILE,
        )
    }

    /// [`Self::from_bytes`] for a known generation (ChatGLM2 and ChatGLM3 share a vocabulary
    /// file); refused when the model is of the other kind.
    pub fn from_bytes_for(
        model: &[u8],
        tokenizer_config_json: Option<&str>,
        family: Family,
    ) -> Result<Self, TokenizerError> {
        let hint = match family {
            Family::ChatGlm3 => Some("<|observation|>"),
            _ => Some(""),
        };
        let tokenizer = Self::from_files(model, tokenizer_config_json, hint)?;
        if tokenizer.family() != family {
            return Err(TokenizerError::UnsupportedModel {
                file: MODEL_FILE.into(),
                reason: format!(
                    "this is a {} vocabulary, not {family}'s",
                    tokenizer.family()
                ),
            });
        }
        Ok(tokenizer)
    }

    /// The sentencepiece model's file name in a checkpoint folder of either generation: the one
    /// `dir` has, or ChatGLM-6B's when it has neither.
    pub fn model_file(dir: &Path) -> &'static str {
        if !dir.join(MODEL_FILE).is_file() && dir.join(GLM2_MODEL_FILE).is_file() {
            GLM2_MODEL_FILE
        } else {
            MODEL_FILE
        }
    }

    fn load(
        model: &[u8],
        config: Option<&str>,
        python: Option<&str>,
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
        let sp = processor::SentencePiece::new(&proto).map_err(|e| match e {
            pipeline::LoadError::Malformed(reason) => malformed(reason),
            pipeline::LoadError::Unsupported(reason) => TokenizerError::UnsupportedModel {
                file: model_name.to_string(),
                reason,
            },
        })?;
        Self::layered(sp, config, python, config_name)
    }

    /// The ChatGLM layer of the generation the vocabulary belongs to, over `sp`.
    fn layered(
        sp: processor::SentencePiece,
        config: Option<&str>,
        python: Option<&str>,
        config_name: &str,
    ) -> Result<Self, TokenizerError> {
        let bad_config = |reason: String| TokenizerError::MalformedConfig {
            file: config_name.to_string(),
            reason,
        };
        // ChatGLM-6B's model holds its special tokens; ChatGLM2/3 append them after it.
        if sp.lookup("[gMASK]").is_some() {
            let config = config::parse(config).map_err(bad_config)?;
            return Ok(Self {
                inner: Inner::Glm1(Glm1Tokenizer::build(sp, config)),
            });
        }
        let config: Option<serde_json::Value> = config
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| bad_config(format!("invalid JSON: {e}")))?;
        let family = glm2_family(config.as_ref(), python);
        Ok(Self {
            inner: Inner::Glm2(Glm2Tokenizer::new(sp, family, config.as_ref())),
        })
    }

    /// Which generation of ChatGLM this tokenizer belongs to.
    pub fn family(&self) -> Family {
        match &self.inner {
            Inner::Glm1(_) => Family::ChatGlm,
            Inner::Glm2(t) => t.family(),
        }
    }

    /// Text ids without special tokens: `tokenizer.encode(text, add_special_tokens=False)`.
    pub fn encode_plain(&self, text: &str) -> Vec<u32> {
        match &self.inner {
            Inner::Glm1(t) => t.encode_plain(text),
            Inner::Glm2(t) => t.encode_plain(text),
        }
    }

    /// Model input ids, `tokenizer(text)["input_ids"]`: ChatGLM-6B puts `[gMASK] <sop>` after
    /// the text, ChatGLM2/3 put `[gMASK] sop` before it.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match &self.inner {
            Inner::Glm1(t) => t.encode(text),
            Inner::Glm2(t) => {
                let mut ids = t.prefix().to_vec();
                ids.extend(t.encode_plain(text));
                ids
            }
        }
    }

    /// The ids `tokenizer(text)` puts before the text (none for ChatGLM-6B, whose go after).
    pub fn prefix_ids(&self) -> Vec<u32> {
        match &self.inner {
            Inner::Glm1(_) => Vec::new(),
            Inner::Glm2(t) => t.prefix().to_vec(),
        }
    }

    /// The raw sentencepiece ids of `text`, bypassing special tokens: ChatGLM-6B's
    /// `SPTokenizer.encode(text, add_dummy_prefix)`, ChatGLM2/3's `SPTokenizer.encode(text)`
    /// (which always adds sentencepiece's dummy prefix).
    pub fn sp_encode(&self, text: &str, add_dummy_prefix: bool) -> Vec<u32> {
        match &self.inner {
            Inner::Glm1(t) => t.sp_encode(text, add_dummy_prefix),
            Inner::Glm2(t) => t.sp_encode(text),
        }
    }

    /// `tokenizer.decode(ids)`.
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.inner {
            Inner::Glm1(t) => t.decode(ids),
            Inner::Glm2(t) => t.decode(ids),
        }
    }

    /// The id of a vocabulary piece or special token, `None` when it has none.
    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        match &self.inner {
            Inner::Glm1(t) => t.token_to_id(piece),
            Inner::Glm2(t) => t.token_to_id(piece),
        }
    }

    /// The piece (or special token name) of an id.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        match &self.inner {
            Inner::Glm1(t) => t.id_to_token(id),
            Inner::Glm2(t) => t.piece(id),
        }
    }

    /// Ids the tokenizer can produce (the model's embedding may be padded past it).
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Glm1(t) => t.vocab_size(),
            Inner::Glm2(t) => t.vocab_size(),
        }
    }

    pub fn special_ids(&self) -> SpecialIds {
        match &self.inner {
            Inner::Glm1(t) => t.special_ids(),
            Inner::Glm2(t) => t.special_ids(),
        }
    }

    /// The offset of text ids (ChatGLM-6B: 0 in current configs, 20000 in older ones; 0 later).
    pub fn num_image_tokens(&self) -> u32 {
        match &self.inner {
            Inner::Glm1(t) => t.num_image_tokens(),
            Inner::Glm2(_) => 0,
        }
    }

    /// The ids that end a generated answer: `<eop>` for ChatGLM-6B, `</s>` for ChatGLM2, and
    /// also `<|user|>` and `<|observation|>` for ChatGLM3.
    pub fn stop_ids(&self) -> Vec<u32> {
        match &self.inner {
            Inner::Glm1(t) => vec![t.special_ids().eos],
            Inner::Glm2(t) => t.stop_ids(),
        }
    }

    /// The id of a role token, `None` before ChatGLM3.
    pub fn role_id(&self, role: Role) -> Option<u32> {
        match &self.inner {
            Inner::Glm1(_) => None,
            Inner::Glm2(t) => t.command(role.token()),
        }
    }

    /// ChatGLM3's `build_single_message(role, metadata, content)`: the role token, the ids of
    /// `metadata + "\n"`, then the ids of the content (sentencepiece ids, special names not
    /// recognised in text). `None` before ChatGLM3.
    pub fn single_message(&self, role: Role, metadata: &str, content: &str) -> Option<Vec<u32>> {
        let Inner::Glm2(t) = &self.inner else {
            return None;
        };
        let mut ids = vec![t.command(role.token())?];
        ids.extend(t.sp_encode(&format!("{metadata}\n")));
        ids.extend(t.sp_encode(content));
        Some(ids)
    }
}

/// Reads a file that may be absent.
fn read_optional(path: &Path) -> Result<Option<String>, TokenizerError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenizerError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}
