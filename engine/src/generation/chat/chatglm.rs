//! ChatGLM-6B's chat: the `[Round i]\n问：…\n答：` prompt and `process_response`, which trims,
//! fills the training-date placeholder and turns ASCII punctuation next to Chinese full-width.

use super::{ChatFormat, Turn};
use crate::generation::cleanup::Rules;
use crate::tokenizer::{ChatGlmTokenizer, Family};

pub(super) struct ChatGlm;

impl ChatFormat for ChatGlm {
    fn family(&self) -> Family {
        Family::ChatGlm
    }

    fn prompt_ids(
        &self,
        tokenizer: &ChatGlmTokenizer,
        system: Option<&str>,
        history: &[Turn],
        query: &str,
    ) -> Vec<u32> {
        super::template_ids(tokenizer, system, &build_prompt(query, history))
    }

    fn response_text(&self, decoded: &str) -> String {
        process_response(decoded)
    }

    fn cleanup(&self) -> Rules {
        Rules {
            metadata_line: false,
            full_width_punctuation: true,
        }
    }
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

pub(crate) fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

/// The ASCII marks `process_response` turns full-width next to a Chinese character.
pub(crate) const PUNCTUATION: [(char, char); 5] = [
    (',', '，'),
    ('!', '！'),
    (':', '：'),
    (';', '；'),
    ('?', '？'),
];

/// The official `process_response`: trim, the training-date placeholder, and ASCII punctuation
/// next to a CJK character turned into its full-width form.
pub fn process_response(response: &str) -> String {
    let response = response
        .trim()
        .replace(super::TRAINING_DATE, super::TRAINING_DATE_TEXT);
    // The official code applies one regex substitution per punctuation mark and direction, each
    // over the output of the previous one; a single left-to-right pass per rule reproduces that.
    let mut chars: Vec<char> = response.chars().collect();
    for (ascii, full) in PUNCTUATION {
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
}
