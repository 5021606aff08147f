//! The answer clean-up of `chat()` applied to a stream of text a piece at a time, so that a
//! streamed answer costs the same per token at its end as at its start. Each generation's rules
//! (`chat::ChatFormat::cleanup`) are the ones its whole-text [`response_text`] applies:
//! the ChatGLM3 metadata line dropped, surrounding whitespace trimmed, the training-date
//! placeholder filled, and (ChatGLM-6B) ASCII punctuation next to Chinese made full-width.
//!
//! Every rule looks at most one character beyond a position, or at a placeholder that may still be
//! completing: text is released once no later piece can change it, and the released pieces
//! together equal the whole-text clean-up (checked against it in the tests below).
//!
//! [`response_text`]: crate::generation::chat::ChatFormat::response_text

use super::chat::chatglm::{is_cjk, PUNCTUATION};
use super::chat::{TRAINING_DATE, TRAINING_DATE_TEXT};

/// What a generation's clean-up does beyond trimming and the training-date placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The answer starts with a metadata line, dropped when it is blank (ChatGLM3).
    pub metadata_line: bool,
    /// ASCII `,!:;?` next to a Chinese character become full-width (ChatGLM-6B).
    pub full_width_punctuation: bool,
}

/// The clean-up of one answer in progress.
#[derive(Debug)]
pub struct Cleanup {
    rules: Rules,
    /// Text before the first new line while it is all whitespace (it may be a metadata line).
    metadata: Option<String>,
    /// Whether text other than leading whitespace has been seen.
    started: bool,
    /// Raw text that a later piece may still change.
    pending: String,
    /// The last character released, the left neighbour of what comes next.
    last: Option<char>,
}

impl Cleanup {
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            metadata: rules.metadata_line.then(String::new),
            started: false,
            pending: String::new(),
            last: None,
        }
    }

    /// Takes the next piece of decoded text; returns the cleaned text no later piece can change.
    pub fn push(&mut self, piece: &str) -> String {
        let Some(text) = self.past_metadata(piece) else {
            return String::new();
        };
        self.take(&text);
        let keep = self.unsettled_suffix();
        let settled_len = self.pending.len() - keep;
        let next = self.pending[settled_len..].chars().next();
        let settled: String = self.pending.drain(..settled_len).collect();
        self.release(&settled, next)
    }

    /// The rest once the answer is complete.
    pub fn finish(mut self) -> String {
        let text = match self.metadata.take() {
            // No new line came: all of it was whitespace, which trimming removes.
            Some(_) => return String::new(),
            None => std::mem::take(&mut self.pending),
        };
        self.release(text.trim_end(), None)
    }

    /// The text after the metadata line: `None` while undecided. The line is the answer's
    /// beginning up to the first new line; it is dropped when blank, otherwise it is content.
    fn past_metadata(&mut self, piece: &str) -> Option<String> {
        let Some(line) = self.metadata.as_mut() else {
            return Some(piece.to_owned());
        };
        line.push_str(piece);
        let text = match line.split_once('\n') {
            Some((metadata, content)) if metadata.trim().is_empty() => content.to_owned(),
            Some(_) => std::mem::take(line),
            None if line.trim().is_empty() => return None,
            None => std::mem::take(line),
        };
        self.metadata = None;
        Some(text)
    }

    /// Adds text to what is pending, leading whitespace dropped.
    fn take(&mut self, text: &str) {
        if self.started {
            self.pending.push_str(text);
        } else {
            let text = text.trim_start();
            self.started = !text.is_empty();
            self.pending.push_str(text);
        }
    }

    /// Bytes at the end of `pending` that a later piece may still change: a beginning of the
    /// placeholder; otherwise trailing whitespace (trimmed if the answer ends there) and
    /// punctuation (whose right neighbour is not known yet).
    fn unsettled_suffix(&self) -> usize {
        let text = &self.pending;
        let placeholder = super::text::partial_match_len(text, [TRAINING_DATE]);
        if placeholder > 0 {
            return placeholder;
        }
        let punctuation = self.rules.full_width_punctuation;
        let settled = text.trim_end_matches(|c: char| {
            c.is_whitespace() || (punctuation && PUNCTUATION.iter().any(|&(a, _)| a == c))
        });
        text.len() - settled.len()
    }

    /// Cleans settled raw text whose next raw character is `next` (`None`: the end).
    fn release(&mut self, settled: &str, next: Option<char>) -> String {
        let text = settled.replace(TRAINING_DATE, TRAINING_DATE_TEXT);
        let text = if self.rules.full_width_punctuation {
            // A placeholder's first character, raw ('[') or filled ('2'), is not Chinese.
            let chars: Vec<char> = text.chars().collect();
            let mut out = String::with_capacity(text.len());
            for (i, &c) in chars.iter().enumerate() {
                let left = if i == 0 {
                    self.last
                } else {
                    Some(chars[i - 1])
                };
                let right = chars.get(i + 1).copied().or(next);
                let full = PUNCTUATION.iter().find(|&&(a, _)| a == c).map(|&(_, f)| f);
                match full {
                    Some(f) if left.is_some_and(is_cjk) || right.is_some_and(is_cjk) => out.push(f),
                    _ => out.push(c),
                }
            }
            out
        } else {
            text
        };
        if let Some(c) = text.chars().last() {
            self.last = Some(c);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::chat::chat_format;
    use crate::tokenizer::Family;

    /// Every split of `text` into pieces of 1..=3 characters, cleaned piece by piece, gives the
    /// whole-text clean-up.
    fn check(family: Family, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        let expected = chat_format(family).response_text(text);
        for width in 1..=3 {
            let mut cleanup = Cleanup::new(chat_format(family).cleanup());
            let mut got = String::new();
            for piece in chars.chunks(width) {
                got.push_str(&cleanup.push(&piece.iter().collect::<String>()));
            }
            got.push_str(&cleanup.finish());
            assert_eq!(got, expected, "{family} {text:?} in pieces of {width}");
        }
    }

    #[test]
    fn piecewise_clean_up_equals_the_whole_text_clean_up() {
        let texts = [
            "  你好,世界!  ",
            "a,b",
            "时间是[[训练时间]],对吗?",
            "[[[训练时间]]",
            "[[训练",
            "好?",
            "好 , 的!\n\n",
            "\n你好",
            "  \n  内容,很好 ",
            "metadata\n内容",
            "   ",
            "",
            "好,,好",
            ",好",
            "x, 好:y;z?好",
        ];
        for family in [Family::ChatGlm, Family::ChatGlm2, Family::ChatGlm3] {
            for text in texts {
                check(family, text);
            }
        }
    }

    #[test]
    fn random_text_from_a_small_alphabet_cleans_up_the_same() {
        let alphabet: Vec<char> = "好a ,!\n[]训练时间?".chars().collect();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..3000 {
            let len = (state % 14) as usize;
            let text: String = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            for family in [Family::ChatGlm, Family::ChatGlm2, Family::ChatGlm3] {
                check(family, &text);
            }
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
    }
}
