//! The ChatGLM generations, and how a checkpoint folder tells which one it holds. A leaf: the
//! config, the tokenizer, the model and the trainer all depend on it, and it on none of them.

use std::path::Path;

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

/// The official Python tokenizer of a ChatGLM2/3 folder.
pub const PYTHON_TOKENIZER_FILE: &str = "tokenization_chatglm.py";
/// The tokenizer's settings file.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// The generation a ChatGLM2/3 checkpoint folder belongs to, from its `tokenization_chatglm.py`
/// and `tokenizer_config.json` (without loading the vocabulary); unreadable files count as absent.
pub fn family_of_dir(dir: &Path) -> Family {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let config = read(TOKENIZER_CONFIG_FILE).and_then(|text| serde_json::from_str(&text).ok());
    glm2_family(config.as_ref(), read(PYTHON_TOKENIZER_FILE).as_deref())
}

/// ChatGLM2 or ChatGLM3: their configs and sentencepiece models are alike, so the evidence is
/// the official Python tokenizer beside them (ChatGLM3's knows `<|observation|>`), a name in
/// `tokenizer_config.json`, or role tokens it lists; without any, ChatGLM3, the current release.
pub(crate) fn glm2_family(config: Option<&serde_json::Value>, python: Option<&str>) -> Family {
    if let Some(code) = python {
        return if code.contains("<|observation|>") {
            Family::ChatGlm3
        } else {
            Family::ChatGlm2
        };
    }
    let text = config
        .map(|c| c.to_string().to_lowercase())
        .unwrap_or_default();
    if text.contains("<|observation|>") || text.contains("<|user|>") || text.contains("chatglm3") {
        Family::ChatGlm3
    } else if text.contains("chatglm2") || text.contains("codegeex2") {
        Family::ChatGlm2
    } else {
        Family::ChatGlm3
    }
}
