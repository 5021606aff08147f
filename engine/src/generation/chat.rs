//! The official `chat()` conventions: the `[Round i]` prompt with history, the response clean-up,
//! and turning a growing list of ids into streamed text.

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
