//! Incremental detokenization: the text each new id adds, found by decoding a short window of the
//! latest ids rather than everything generated so far (the idea of candle's `TokenOutputStream`),
//! so the cost per token does not grow with the answer.
//!
//! The window starts at the ids of the last piece emitted: decoding it with and without the new
//! ids and keeping the difference gives the new text with its leading space (which a decoder drops
//! at the start of a text) and with a character split over several byte pieces held back until its
//! last byte arrives.

use crate::tokenizer::ChatGlmTokenizer;

pub struct Detokenizer<'t> {
    tokenizer: &'t ChatGlmTokenizer,
    ids: Vec<u32>,
    /// Where the window starts: the first id of the last emitted piece.
    start: usize,
    /// The text of `ids[start..end]`, already emitted.
    shown: String,
    /// The first id not yet emitted.
    end: usize,
}

impl<'t> Detokenizer<'t> {
    pub fn new(tokenizer: &'t ChatGlmTokenizer) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            start: 0,
            shown: String::new(),
            end: 0,
        }
    }

    /// Adds `id`; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Option<String> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids[self.start..]);
        // An unfinished character (U+FFFD for now), or a decoder that rewrote the window's
        // shown text (its clean-up of spaces before punctuation can): wait for more ids.
        if text.ends_with('\u{fffd}') || text.len() <= self.shown.len() {
            return None;
        }
        let new = text.strip_prefix(self.shown.as_str())?.to_owned();
        self.start = self.end;
        self.end = self.ids.len();
        self.shown = self.tokenizer.decode(&self.ids[self.start..self.end]);
        Some(new)
    }

    /// The text of the ids pushed but not returned yet (an unfinished character, or a window whose
    /// shown text the decoder rewrote: then what follows the common beginning).
    pub fn finish(&self) -> Option<String> {
        super::text::unshown(&self.shown, &self.tokenizer.decode(&self.ids[self.start..]))
    }

    /// Every id pushed.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> ChatGlmTokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name)
            .join("model");
        ChatGlmTokenizer::from_dir(&dir).unwrap()
    }

    #[test]
    fn pieces_add_up_to_the_whole_decoded_text() {
        let texts = [
            "头痛的原因有很多,比如睡眠不足、压力过大:请注意休息!",
            "If the pain lasts longer than three days, see a doctor; it's a migraine?",
            "```python\ndef f(x):\n    return x * 2\n```\n\t\t缩进  两个空格",
            "emoji 🤖 and rare 龘 characters, then  spaces   and\n\nnew lines",
        ];
        for name in ["chatglm6b-tiny", "chatglm3-tiny"] {
            let tokenizer = fixture(name);
            for text in texts {
                let ids = tokenizer.encode_plain(text);
                let mut stream = Detokenizer::new(&tokenizer);
                let mut got = String::new();
                for &id in &ids {
                    if let Some(piece) = stream.push(id) {
                        got.push_str(&piece);
                    }
                }
                got.push_str(stream.finish().as_deref().unwrap_or_default());
                assert_eq!(got, tokenizer.decode(&ids), "{name}: {text:?}");
                assert_eq!(stream.ids(), ids.as_slice());
            }
        }
    }
}
