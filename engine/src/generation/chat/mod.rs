//! The official `chat()` conventions, one file per generation (`chatglm.rs`, `chatglm2.rs`,
//! `chatglm3.rs`): the prompt with history, a conversation given as messages, and the answer's
//! clean-up. [`chat_format`] is the one place that maps a [`Family`] to its conventions.

pub(crate) mod chatglm;
mod chatglm2;
mod chatglm3;

pub use chatglm::{build_prompt, process_response};
pub use chatglm2::build_prompt_glm2;

use crate::generation::cleanup::Rules;
use crate::tokenizer::{ChatGlmTokenizer, Family, Role};

/// The placeholder the official answers may hold, and what `chat()` puts in its place.
pub(crate) const TRAINING_DATE: &str = "[[训练时间]]";
pub(crate) const TRAINING_DATE_TEXT: &str = "2023年";

/// One finished exchange of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub query: String,
    pub response: String,
}

/// One message of a conversation, as `--history` and ChatGLM3 name them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// What a generation's `chat()` does with a conversation and with the text it generates.
pub trait ChatFormat: Send + Sync {
    fn family(&self) -> Family;

    /// The model input for answering `query` after `history`, with `system` as the system prompt
    /// (ChatGLM3: a system message; before it: text put before the prompt, as `--source_prefix`
    /// puts it in training).
    fn prompt_ids(
        &self,
        tokenizer: &ChatGlmTokenizer,
        system: Option<&str>,
        history: &[Turn],
        query: &str,
    ) -> Vec<u32>;

    /// The model input for a conversation whose last message is the query. Generations with a
    /// text template take leading system messages (joined by new lines, before the prompt), then
    /// user and assistant turns alternating, ending with a user message.
    fn messages_ids(
        &self,
        tokenizer: &ChatGlmTokenizer,
        messages: &[ChatMessage],
    ) -> Result<Vec<u32>, String> {
        let (system, history, query) = template_conversation(self.family(), messages)?;
        Ok(self.prompt_ids(tokenizer, system.as_deref(), &history, query))
    }

    /// The answer as `chat()` returns it, from the whole decoded text.
    fn response_text(&self, decoded: &str) -> String;

    /// A prediction of `glmtune eval` (as THUDM's `main.py` writes it): the decoded text trimmed.
    fn prediction_text(&self, decoded: &str) -> String {
        decoded.trim().to_owned()
    }

    /// The clean-up of [`ChatFormat::response_text`] as rules a stream can apply a piece at a
    /// time (`generation::cleanup`).
    fn cleanup(&self) -> Rules;
}

/// The conventions of `family`.
pub fn chat_format(family: Family) -> &'static dyn ChatFormat {
    match family {
        Family::ChatGlm => &chatglm::ChatGlm,
        Family::ChatGlm2 => &chatglm2::ChatGlm2,
        Family::ChatGlm3 => &chatglm3::ChatGlm3,
    }
}

/// [`ChatFormat::prompt_ids`] of the tokenizer's generation; an empty system prompt is none.
pub fn chat_prompt_ids(
    tokenizer: &ChatGlmTokenizer,
    system: Option<&str>,
    history: &[Turn],
    query: &str,
) -> Vec<u32> {
    let system = system.filter(|s| !s.is_empty());
    chat_format(tokenizer.family()).prompt_ids(tokenizer, system, history, query)
}

/// [`ChatFormat::messages_ids`] of the tokenizer's generation (`glmtune generate --chat
/// --history`), after checking that the last message is a query.
pub fn chat_ids(
    tokenizer: &ChatGlmTokenizer,
    messages: &[ChatMessage],
) -> Result<Vec<u32>, String> {
    match messages.last() {
        Some(last) if last.role != Role::Assistant => {}
        Some(_) => {
            return Err("the last message must be the query, not an assistant message".into())
        }
        None => return Err("no messages: there is no query to answer".into()),
    }
    chat_format(tokenizer.family()).messages_ids(tokenizer, messages)
}

/// [`ChatFormat::response_text`] of `family`.
pub fn response_text(family: Family, decoded: &str) -> String {
    chat_format(family).response_text(decoded)
}

/// The ids of a text-template prompt with the system prompt as text before it (as
/// `--source_prefix` puts it in training).
fn template_ids(tokenizer: &ChatGlmTokenizer, system: Option<&str>, prompt: &str) -> Vec<u32> {
    tokenizer.encode(&format!("{}{prompt}", system.unwrap_or_default()))
}

/// A conversation for a text template: the system prompt (leading system messages, each line
/// ended), the finished turns and the query.
fn template_conversation(
    family: Family,
    messages: &[ChatMessage],
) -> Result<(Option<String>, Vec<Turn>, &str), String> {
    let system_count = messages
        .iter()
        .take_while(|m| m.role == Role::System)
        .count();
    let system: Vec<&str> = messages[..system_count]
        .iter()
        .map(|m| m.content.as_str())
        .collect();
    let rest = &messages[system_count..];
    let Some((query, turns)) = rest.split_last() else {
        return Err("only system messages: there is no query to answer".into());
    };
    let mut history = Vec::new();
    for (i, pair) in turns.chunks(2).enumerate() {
        match pair {
            [q, a] if q.role == Role::User && a.role == Role::Assistant => history.push(Turn {
                query: q.content.clone(),
                response: a.content.clone(),
            }),
            _ => {
                return Err(format!(
                    "message {}: {family} takes system messages first, then user and assistant turns alternating",
                    system_count + 2 * i,
                ))
            }
        }
    }
    if query.role != Role::User || rest.len().is_multiple_of(2) {
        return Err(format!(
            "message {}: {family} takes system messages first, then user and assistant turns alternating, ending with a user message",
            messages.len() - 1,
        ));
    }
    let system = (!system.is_empty()).then(|| format!("{}\n", system.join("\n")));
    Ok((system, history, &query.content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_messages_in_the_wrong_order_are_errors_not_panics() {
        let tokenizer = crate::tokenizer::ChatGlmTokenizer::from_bytes(
            include_bytes!("../../../../tests/fixtures/chatglm6b-tiny/model/ice_text.model"),
            None,
        )
        .unwrap();
        let message = |role, content: &str| ChatMessage {
            role,
            content: content.into(),
        };
        let cases = [
            vec![],
            vec![message(Role::System, "s")],
            vec![message(Role::User, "q"), message(Role::Assistant, "a")],
            vec![message(Role::Assistant, "a"), message(Role::User, "q")],
            vec![message(Role::User, "q"), message(Role::User, "q")],
        ];
        for messages in cases {
            assert!(chat_ids(&tokenizer, &messages).is_err(), "{messages:?}");
        }
        let ok = [message(Role::System, "s"), message(Role::User, "q")];
        assert_eq!(
            chat_ids(&tokenizer, &ok).unwrap(),
            chat_prompt_ids(&tokenizer, Some("s\n"), &[], "q")
        );
    }
}
