//! ChatGLM3-6B's chat: role tokens (`build_chat_input`) instead of a text template, and answers
//! that start with a metadata line (empty for plain answers) which `chat()` drops.

use super::{ChatFormat, ChatMessage, Turn};
use crate::generation::cleanup::Rules;
use crate::tokenizer::{ChatGlmTokenizer, Family, Role};

pub(super) struct ChatGlm3;

impl ChatFormat for ChatGlm3 {
    fn family(&self) -> Family {
        Family::ChatGlm3
    }

    fn prompt_ids(
        &self,
        tokenizer: &ChatGlmTokenizer,
        system: Option<&str>,
        history: &[Turn],
        query: &str,
    ) -> Vec<u32> {
        let mut messages = Vec::with_capacity(2 * history.len() + 2);
        if let Some(system) = system {
            messages.push(ChatMessage {
                role: Role::System,
                content: system.to_owned(),
            });
        }
        for turn in history {
            messages.push(ChatMessage {
                role: Role::User,
                content: turn.query.clone(),
            });
            messages.push(ChatMessage {
                role: Role::Assistant,
                content: turn.response.clone(),
            });
        }
        messages.push(ChatMessage {
            role: Role::User,
            content: query.to_owned(),
        });
        chat_input_ids(tokenizer, &messages)
    }

    /// The messages as they are: ChatGLM3 takes any order of roles.
    fn messages_ids(
        &self,
        tokenizer: &ChatGlmTokenizer,
        messages: &[ChatMessage],
    ) -> Result<Vec<u32>, String> {
        Ok(chat_input_ids(tokenizer, messages))
    }

    fn response_text(&self, decoded: &str) -> String {
        let content = match decoded.split_once('\n') {
            Some((metadata, content)) if metadata.trim().is_empty() => content,
            _ => decoded,
        };
        content
            .trim()
            .replace(super::TRAINING_DATE, super::TRAINING_DATE_TEXT)
    }

    /// Predictions are compared without the metadata line, as `chat()` returns them.
    fn prediction_text(&self, decoded: &str) -> String {
        self.response_text(decoded)
    }

    fn cleanup(&self) -> Rules {
        Rules {
            metadata_line: true,
            full_width_punctuation: false,
        }
    }
}

/// ChatGLM3's `build_chat_input`: `[gMASK] sop`, each message as `build_single_message`, then
/// `<|assistant|>`.
fn chat_input_ids(tokenizer: &ChatGlmTokenizer, messages: &[ChatMessage]) -> Vec<u32> {
    let mut ids = tokenizer.prefix_ids();
    for message in messages {
        ids.extend(
            tokenizer
                .single_message(message.role, "", &message.content)
                .unwrap_or_default(),
        );
    }
    ids.extend(tokenizer.role_id(Role::Assistant));
    ids
}
