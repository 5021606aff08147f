//! Word segmentation for ROUGE: jieba's default mode with HMM, as `jieba.cut(text)` in Python.
//!
//! The segmenter is built once and shared: loading jieba's dictionary (about 350,000 words)
//! takes a noticeable fraction of a second, far more than scoring a line.
//!
//! `jieba-rs` departs from Python's jieba in three ways that change words, all undone here:
//! - in the HMM fallback, Python splits non-Chinese runs with `[a-zA-Z0-9]+(?:\.\d+)?%?`, so
//!   `ChatGLM-6B` is `ChatGLM`, `-`, `6B`; jieba-rs lets `.`, `_` and `-` join alphanumeric
//!   runs (`ChatGLM-6B`, `example.com`) — such words are split again by Python's rule;
//! - Python takes only U+4E00..U+9FD5 as Chinese, jieba-rs also U+9FD6..U+9FFF and the CJK
//!   extensions; Python yields each such character alone, so they are split out again;
//! - Python's `dict.txt` lists `B超 3 n` twice and its total frequency counts both; jieba-rs's
//!   copy has it once, so its total is 3 lower — restored, since the total weighs every path.
//!
//! Native builds use the dictionary compiled into `jieba-rs`. A wasm32 build has none (its
//! compression needs C code there), so a browser must call [`install_dictionary`] with jieba's
//! `dict.txt` before scoring; without it, words come from the HMM alone and differ from the
//! official segmentation.

use std::io::BufRead;
use std::sync::OnceLock;

use jieba_rs::Jieba;

use super::MetricsError;

static SEGMENTER: OnceLock<Jieba> = OnceLock::new();

/// Uses `dictionary` (jieba's `dict.txt` format: `word freq [tag]` a line) instead of the
/// built-in one. It must come before the first segmentation: the segmenter is fixed once built.
pub fn install_dictionary<R: BufRead>(dictionary: &mut R) -> Result<(), MetricsError> {
    let jieba =
        Jieba::with_dict(dictionary).map_err(|e| MetricsError::Dictionary(e.to_string()))?;
    SEGMENTER
        .set(jieba)
        .map_err(|_| MetricsError::DictionaryAlreadySet)
}

fn segmenter() -> &'static Jieba {
    SEGMENTER.get_or_init(default_segmenter)
}

#[cfg(not(target_arch = "wasm32"))]
fn default_segmenter() -> Jieba {
    let mut jieba = Jieba::new();
    // Python's total frequency counts the duplicate `B超 3` line. A key holding a newline never
    // matches, since words are only looked up inside runs without whitespace, so this only
    // adds 3 to the total.
    jieba.add_word("\n", Some(3), None);
    jieba
}

#[cfg(target_arch = "wasm32")]
fn default_segmenter() -> Jieba {
    Jieba::empty()
}

/// The words of `text`, as `list(jieba.cut(text))` gives them (default mode, HMM on).
pub fn cut(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for token in segmenter().cut(text, true) {
        for piece in split_foreign(token.word) {
            if piece.len() > 1 && piece.is_ascii() && piece.contains(['.', '_', '-']) {
                python_skip_split(piece, &mut words);
            } else {
                words.push(piece);
            }
        }
    }
    words
}

/// Python jieba's `re_han_default` class: what may be cut as part of a longer word.
fn is_python_han_default(c: char) -> bool {
    ('\u{4E00}'..='\u{9FD5}').contains(&c) || c.is_ascii_alphanumeric() || "+#&._%-".contains(c)
}

/// Splits out of `word` each character that Python jieba can only yield alone (outside its
/// `re_han_default` and not whitespace), keeping the runs between them.
fn split_foreign(word: &str) -> Vec<&str> {
    let foreign = |c: char| !is_python_han_default(c) && !super::rouge::is_python_space(c);
    if word.chars().nth(1).is_none() || !word.chars().any(foreign) {
        return vec![word];
    }
    let mut pieces = Vec::new();
    let mut run_start = 0;
    for (i, c) in word.char_indices() {
        if foreign(c) {
            if run_start < i {
                pieces.push(&word[run_start..i]);
            }
            pieces.push(&word[i..i + c.len_utf8()]);
            run_start = i + c.len_utf8();
        }
    }
    if run_start < word.len() {
        pieces.push(&word[run_start..]);
    }
    pieces
}

/// `re.split("([a-zA-Z0-9]+(?:\.\d+)?%?)", word)` without the empty pieces: the matches and
/// the gaps between them, as Python's HMM fallback yields them. On a word that is already one
/// such match (or one gap) it gives the word back, so it is safe on any ASCII word.
fn python_skip_split<'a>(word: &'a str, out: &mut Vec<&'a str>) {
    let bytes = word.as_bytes();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(start) = (pos..bytes.len()).find(|&i| bytes[i].is_ascii_alphanumeric()) else {
            out.push(&word[pos..]);
            return;
        };
        if start > pos {
            out.push(&word[pos..start]);
        }
        let mut end = start;
        while end < bytes.len() && bytes[end].is_ascii_alphanumeric() {
            end += 1;
        }
        if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
            end += 1;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
        }
        if end < bytes.len() && bytes[end] == b'%' {
            end += 1;
        }
        out.push(&word[start..end]);
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(word: &str) -> Vec<&str> {
        let mut out = Vec::new();
        python_skip_split(word, &mut out);
        out
    }

    #[test]
    fn skip_split_follows_python_finalseg() {
        assert_eq!(split("ChatGLM-6B"), ["ChatGLM", "-", "6B"]);
        assert_eq!(split("v1.2.3"), ["v1.2", ".", "3"]);
        assert_eq!(split("30.5%"), ["30.5%"]);
        assert_eq!(split("a_b"), ["a", "_", "b"]);
        assert_eq!(split("--"), ["--"]);
        assert_eq!(split("x."), ["x", "."]);
    }

    #[test]
    fn characters_python_does_not_cut_stand_alone() {
        assert_eq!(
            split_foreign("\u{9FD6}\u{9FD7}+&"),
            ["\u{9FD6}", "\u{9FD7}", "+&"]
        );
        assert_eq!(split_foreign("好人"), ["好人"]);
        assert_eq!(split_foreign("\r\n"), ["\r\n"]);
    }
}
