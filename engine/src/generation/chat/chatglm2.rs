//! ChatGLM2-6B's chat: `[Round i]\n\n问：…\n\n答：` with rounds counted from 1; the answer trimmed
//! and its training-date placeholder filled.

use super::{ChatFormat, Turn};
use crate::generation::cleanup::Rules;
use crate::tokenizer::{ChatGlmTokenizer, Family};

pub(super) struct ChatGlm2;

impl ChatFormat for ChatGlm2 {
    fn family(&self) -> Family {
        Family::ChatGlm2
    }

    fn prompt_ids(
        &self,
        tokenizer: &ChatGlmTokenizer,
        system: Option<&str>,
        history: &[Turn],
        query: &str,
    ) -> Vec<u32> {
        super::template_ids(tokenizer, system, &build_prompt_glm2(query, history))
    }

    fn response_text(&self, decoded: &str) -> String {
        decoded
            .trim()
            .replace(super::TRAINING_DATE, super::TRAINING_DATE_TEXT)
    }

    fn cleanup(&self) -> Rules {
        Rules {
            metadata_line: false,
            full_width_punctuation: false,
        }
    }
}

/// ChatGLM2's `build_prompt`: rounds counted from 1, blank lines between the parts.
pub fn build_prompt_glm2(query: &str, history: &[Turn]) -> String {
    let mut prompt = String::new();
    for (i, turn) in history.iter().enumerate() {
        prompt.push_str(&format!(
            "[Round {}]\n\n问：{}\n\n答：{}\n\n",
            i + 1,
            turn.query,
            turn.response
        ));
    }
    prompt.push_str(&format!(
        "[Round {}]\n\n问：{query}\n\n答：",
        history.len() + 1
    ));
    prompt
}
