//! The official `chat()` conventions of each generation: the prompt with history (ChatGLM-6B's
//! `[Round i]\n问：…\n答：`, ChatGLM2's `[Round i]\n\n问：…\n\n答：`, ChatGLM3's role tokens), the
//! response clean-up, and turning a growing list of ids into streamed text.

use crate::tokenizer::{ChatGlmTokenizer, Family, Role};

/// One finished exchange of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub query: String,
    pub response: String,
}

/// The prompt ChatGLM-6B was tuned on: the bare query without history, otherwise every round as
/// `[Round i]\n问：…\n答：…\n` followed by the open round.
pub fn build_prompt(query: &str, history: &[Turn]) -> String {
    if history.is_empty() {
        return query.to_owned();
    }
    let mut prompt = String::new();
    for (i, turn) in history.iter().enumerate() {
        prompt.push_str(&format!(
            "[Round {i}]\n问：{}\n答：{}\n",
            turn.query, turn.response
        ));
    }
    prompt.push_str(&format!("[Round {}]\n问：{query}\n答：", history.len()));
    prompt
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

/// One message of a conversation, as `--history` and ChatGLM3 name them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// The model input for answering `query` after `history`, in the family's own chat format, with
/// `system` as its system prompt: ChatGLM3's `build_chat_input` (a system message first), or for
/// the earlier generations the `[Round i]` prompt with `system` put before it as text (as
/// `--source_prefix` puts it in training).
pub fn chat_prompt_ids(
    tokenizer: &ChatGlmTokenizer,
    system: Option<&str>,
    history: &[Turn],
    query: &str,
) -> Vec<u32> {
    let system = system.filter(|s| !s.is_empty());
    match tokenizer.family() {
        Family::ChatGlm => tokenizer.encode(&format!(
            "{}{}",
            system.unwrap_or_default(),
            build_prompt(query, history)
        )),
        Family::ChatGlm2 => tokenizer.encode(&format!(
            "{}{}",
            system.unwrap_or_default(),
            build_prompt_glm2(query, history)
        )),
        Family::ChatGlm3 => {
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
            glm3_chat_ids(tokenizer, &messages)
        }
    }
}

/// ChatGLM3's `build_chat_input`: `[gMASK] sop`, each message as `build_single_message`, then
/// `<|assistant|>`.
fn glm3_chat_ids(tokenizer: &ChatGlmTokenizer, messages: &[ChatMessage]) -> Vec<u32> {
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

/// The model input for a conversation given as messages whose last one is the new query
/// (`glmtune generate --chat --history`). ChatGLM3 takes the messages as they are; the earlier
/// generations need leading system messages (their text goes before the prompt, joined by
/// newlines), then user and assistant turns alternating, and a user message last.
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
    if tokenizer.family() == Family::ChatGlm3 {
        return Ok(glm3_chat_ids(tokenizer, messages));
    }
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
                    "message {}: {} takes system messages first, then user and assistant turns alternating",
                    system_count + 2 * i,
                    tokenizer.family()
                ))
            }
        }
    }
    if query.role != Role::User || rest.len().is_multiple_of(2) {
        return Err(format!(
            "message {}: {} takes system messages first, then user and assistant turns alternating, ending with a user message",
            messages.len() - 1,
            tokenizer.family()
        ));
    }
    let system = (!system.is_empty()).then(|| format!("{}\n", system.join("\n")));
    Ok(chat_prompt_ids(
        tokenizer,
        system.as_deref(),
        &history,
        &query.content,
    ))
}

fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

/// The official `process_response`: trim, the training-date placeholder, and ASCII punctuation
/// next to a CJK character turned into its full-width form.
pub fn process_response(response: &str) -> String {
    let response = response.trim().replace("[[训练时间]]", "2023年");
    const PAIRS: [(char, char); 5] = [
        (',', '，'),
        ('!', '！'),
        (':', '：'),
        (';', '；'),
        ('?', '？'),
    ];
    // The official code applies one regex substitution per punctuation mark and direction, each
    // over the output of the previous one; a single left-to-right pass per rule reproduces that.
    let mut chars: Vec<char> = response.chars().collect();
    for (ascii, full) in PAIRS {
        // `([CJK]),` → `\1，`: non-overlapping matches left to right.
        let mut i = 0;
        while i + 1 < chars.len() {
            if is_cjk(chars[i]) && chars[i + 1] == ascii {
                chars[i + 1] = full;
                i += 2;
            } else {
                i += 1;
            }
        }
        // `,([CJK])` → `，\1`.
        let mut i = 0;
        while i + 1 < chars.len() {
            if chars[i] == ascii && is_cjk(chars[i + 1]) {
                chars[i] = full;
                i += 2;
            } else {
                i += 1;
            }
        }
    }
    chars.into_iter().collect()
}

/// Emits the text of a growing id list piece by piece, holding back an incomplete UTF-8 character
/// (decoded as U+FFFD) until the bytes that complete it arrive, and never re-emitting: text that
/// no longer extends what was shown waits for the next call.
#[derive(Debug, Default)]
pub struct TextStream {
    emitted: String,
}

impl TextStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Given the full decoded text so far, returns what has not been emitted yet.
    pub fn next_chunk(&mut self, decoded: &str) -> Option<String> {
        if decoded.ends_with('\u{fffd}') {
            return None;
        }
        let rest = decoded.strip_prefix(self.emitted.as_str())?;
        if rest.is_empty() {
            return None;
        }
        self.emitted.push_str(rest);
        Some(rest.to_owned())
    }

    /// The rest of the text once generation is over. If the final text rewrote part of what was
    /// shown (tokenizer clean-up can), what follows the common beginning is emitted, so no text
    /// is lost.
    pub fn finish(&mut self, decoded: &str) -> Option<String> {
        let common = self
            .emitted
            .char_indices()
            .zip(decoded.chars())
            .find(|((_, a), b)| a != b)
            .map_or(self.emitted.len().min(decoded.len()), |((i, _), _)| i);
        let rest = &decoded[common..];
        self.emitted = decoded.to_owned();
        (!rest.is_empty()).then(|| rest.to_owned())
    }
}

/// The answer of a chat as the family's `chat()` returns it: ChatGLM-6B's [`process_response`];
/// ChatGLM2 trims and fills the training-date placeholder; ChatGLM3 also drops the metadata line
/// its answers start with (empty for plain answers).
pub fn response_text(family: Family, decoded: &str) -> String {
    match family {
        Family::ChatGlm => process_response(decoded),
        Family::ChatGlm2 => decoded.trim().replace("[[训练时间]]", "2023年"),
        Family::ChatGlm3 => {
            let content = match decoded.split_once('\n') {
                Some((metadata, content)) if metadata.trim().is_empty() => content,
                _ => decoded,
            };
            content.trim().replace("[[训练时间]]", "2023年")
        }
    }
}

/// The streamable part of an answer so far: for ChatGLM-6B [`stable_response`]; later
/// generations hold back only while the metadata line is not finished.
pub fn stable_response_text(family: Family, decoded: &str) -> String {
    match family {
        Family::ChatGlm => stable_response(decoded),
        Family::ChatGlm3 if !decoded.contains('\n') && decoded.trim().is_empty() => String::new(),
        // Trailing whitespace may still be trimmed away by the final text.
        _ => response_text(family, decoded).trim_end().to_owned(),
    }
}

/// The streamable part of a chat response: [`process_response`] of the text so far, without a
/// trailing ASCII mark that the next character may still turn full-width.
pub fn stable_response(decoded: &str) -> String {
    let processed = process_response(decoded);
    match processed.strip_suffix([',', '!', ':', ';', '?']) {
        Some(stable) => stable.to_owned(),
        None => processed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_with_history_matches_the_official_format() {
        assert_eq!(build_prompt("你好", &[]), "你好");
        let history = [Turn {
            query: "你好".into(),
            response: "你好！".into(),
        }];
        assert_eq!(
            build_prompt("头痛怎么办", &history),
            "[Round 0]\n问：你好\n答：你好！\n[Round 1]\n问：头痛怎么办\n答："
        );
    }

    #[test]
    fn chat_messages_in_the_wrong_order_are_errors_not_panics() {
        let tokenizer = crate::tokenizer::ChatGlmTokenizer::from_bytes(
            include_bytes!("../../../tests/fixtures/chatglm6b-tiny/model/ice_text.model"),
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

    #[test]
    fn response_punctuation_becomes_full_width_next_to_chinese() {
        assert_eq!(process_response("  你好,世界!  "), "你好，世界！");
        assert_eq!(process_response("a,b"), "a,b");
        assert_eq!(process_response("时间是[[训练时间]]"), "时间是2023年");
        assert_eq!(process_response("好?"), "好？");
    }

    #[test]
    fn stream_holds_back_incomplete_characters() {
        let mut stream = TextStream::new();
        assert_eq!(stream.next_chunk("你").as_deref(), Some("你"));
        assert_eq!(stream.next_chunk("你\u{fffd}"), None);
        assert_eq!(stream.next_chunk("你好").as_deref(), Some("好"));
        assert_eq!(stream.finish("你好").as_deref(), None);
        // A rewrite of what was shown is not re-emitted while streaming; the end shows what
        // follows the common beginning.
        assert_eq!(stream.next_chunk("你们").as_deref(), None);
        assert_eq!(stream.finish("你们好").as_deref(), Some("们好"));
    }

    #[test]
    fn streamed_chat_text_never_needs_rewriting() {
        let mut stream = TextStream::new();
        let mut shown = String::new();
        let steps = ["好", "好,", "好,的", "好,的!", "好,的!  "];
        for step in steps {
            if let Some(chunk) = stream.next_chunk(&stable_response(step)) {
                shown.push_str(&chunk);
            }
        }
        if let Some(chunk) = stream.finish(&process_response(steps[steps.len() - 1])) {
            shown.push_str(&chunk);
        }
        assert_eq!(shown, process_response("好,的!"));
        assert_eq!(shown, "好，的！");
    }
}
