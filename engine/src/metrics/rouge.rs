//! ROUGE-1, ROUGE-2 and ROUGE-L F-scores exactly as the `rouge_chinese` package (1.0.3) computes
//! them for `Rouge().get_scores(hypothesis, reference)`, on space-joined jieba words.
//!
//! `rouge_chinese` differs from textbook ROUGE in ways that change the numbers, all kept here:
//! - the text is first split into sentences by its `cut_sent` rules, then each sentence's words
//!   (split on whitespace) are concatenated again: the sentence split only matters where it
//!   falls inside a word, and where a sentence is only whitespace (it becomes one empty word);
//! - ROUGE-N counts *distinct* n-grams (sets, its default `exclusive=True`), not clipped counts;
//!   n-grams run across sentence boundaries;
//! - ROUGE-L is one longest common subsequence over all the words (not the summary-level union
//!   of per-sentence LCS its docstring describes), with F = 2PR / (P + R + 1e-8), no beta;
//! - every F-score is `2 * (P * R / (P + R + 1e-8))`, so a perfect match scores 0.99999999.

use std::collections::HashSet;

/// Characters Python's `str.isspace` accepts: Unicode White_Space plus the four ASCII
/// separators U+001C..U+001F, which Python counts and Rust's `char::is_whitespace` does not.
pub(crate) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` with no separator: runs of whitespace separate, none are empty.
fn python_split_whitespace(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_python_space).filter(|word| !word.is_empty())
}

const SENTENCE_ENDS: [char; 4] = ['。', '！', '？', '?'];
const CLOSING_QUOTES: [char; 2] = ['”', '’'];

/// One `re.sub(r"(PATTERN)([^”’])", r"\1\n\2", text)` pass: wherever `head_len(chars, i)`
/// matches a head of that many characters at `i` followed by a character that is not a closing
/// quote (`allowed_next`), a newline goes between them. Matches never overlap: the scan
/// continues after the following character, as `re.sub` does.
fn insert_breaks(
    chars: &[char],
    head_len: impl Fn(&[char], usize) -> Option<usize>,
    allowed_next: impl Fn(char) -> bool,
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        if let Some(len) = head_len(chars, i) {
            if let Some(&next) = chars.get(i + len) {
                if allowed_next(next) {
                    out.extend_from_slice(&chars[i..i + len]);
                    out.push('\n');
                    out.push(next);
                    i += len + 1;
                    continue;
                }
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// `chars[i..]` starts with `count` copies of `c`.
fn repeated(chars: &[char], i: usize, c: char, count: usize) -> Option<usize> {
    let run = chars.get(i..i + count)?;
    run.iter().all(|&x| x == c).then_some(count)
}

/// `Rouge.cut_sent`: its four substitutions in order, then `rstrip()` and `split("\n")`.
fn cut_sentences(text: &str) -> Vec<String> {
    let not_quote = |c: char| !CLOSING_QUOTES.contains(&c);
    let chars: Vec<char> = text.chars().collect();
    // ([。！？\?])([^”’])
    let chars = insert_breaks(
        &chars,
        |s, i| SENTENCE_ENDS.contains(&s[i]).then_some(1),
        not_quote,
    );
    // (\.{6})([^”’])
    let chars = insert_breaks(&chars, |s, i| repeated(s, i, '.', 6), not_quote);
    // (\…{2})([^”’])
    let chars = insert_breaks(&chars, |s, i| repeated(s, i, '…', 2), not_quote);
    // ([。！？\?][”’])([^，。！？\?])
    let chars = insert_breaks(
        &chars,
        |s, i| {
            let quoted = SENTENCE_ENDS.contains(&s[i])
                && s.get(i + 1).is_some_and(|c| CLOSING_QUOTES.contains(c));
            quoted.then_some(2)
        },
        |c| c != '，' && !SENTENCE_ENDS.contains(&c),
    );
    let text: String = chars.into_iter().collect();
    text.trim_end_matches(is_python_space)
        .split('\n')
        .map(str::to_owned)
        .collect()
}

/// The word list `rouge_chinese` scores: for each non-empty sentence,
/// `" ".join(sentence.split())`, then all of them split on single spaces and concatenated.
/// `None` where no sentence is left (the text was empty or whitespace), where `rouge_chinese`
/// raises `ValueError`.
pub(crate) fn words(text: &str) -> Option<Vec<String>> {
    let sentences: Vec<String> = cut_sentences(text)
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if sentences.is_empty() {
        return None;
    }
    let mut words = Vec::new();
    for sentence in &sentences {
        let mut any = false;
        for word in python_split_whitespace(sentence) {
            words.push(word.to_owned());
            any = true;
        }
        // A whitespace-only sentence joins to "" and `"".split(" ")` is `[""]`: one empty word.
        if !any {
            words.push(String::new());
        }
    }
    Some(words)
}

/// `2 * (P * R / (P + R + 1e-8))`, the F-score of `rouge_chinese`, in its order of operations.
fn f_score(precision: f64, recall: f64) -> f64 {
    2.0 * ((precision * recall) / (precision + recall + 1e-8))
}

fn distinct_ngrams(words: &[String], n: usize) -> HashSet<&[String]> {
    if words.len() < n {
        return HashSet::new();
    }
    words.windows(n).collect()
}

/// ROUGE-N F-score on distinct n-grams (`f_r_p_rouge_n`: 0 precision or recall where a side
/// has no n-gram).
pub(crate) fn rouge_n(hypothesis: &[String], reference: &[String], n: usize) -> f64 {
    let hyp = distinct_ngrams(hypothesis, n);
    let reference = distinct_ngrams(reference, n);
    let overlap = hyp.intersection(&reference).count() as f64;
    let precision = if hyp.is_empty() {
        0.0
    } else {
        overlap / hyp.len() as f64
    };
    let recall = if reference.is_empty() {
        0.0
    } else {
        overlap / reference.len() as f64
    };
    f_score(precision, recall)
}

/// Length of the longest common subsequence, in O(len(a)·len(b)) time and O(len(b)) memory.
fn lcs_len(a: &[String], b: &[String]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// ROUGE-L F-score: one LCS over all words. Both sides are non-empty (see [`words`]).
pub(crate) fn rouge_l(hypothesis: &[String], reference: &[String]) -> f64 {
    let lcs = lcs_len(reference, hypothesis) as f64;
    let recall = lcs / reference.len() as f64;
    let precision = lcs / hypothesis.len() as f64;
    f_score(precision, recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn sentences_split_like_cut_sent() {
        assert_eq!(cut_sentences("是的。是的！好"), ["是的。", "是的！", "好"]);
        // Non-overlapping matches: the third 。 follows a consumed one, so no break before it.
        assert_eq!(cut_sentences("。。。a"), ["。", "。。", "a"]);
        assert_eq!(cut_sentences("他说“你好。”然后"), ["他说“你好。”", "然后"]);
        assert_eq!(cut_sentences("......好"), ["......", "好"]);
        assert_eq!(cut_sentences("等等……好"), ["等等……", "好"]);
        assert_eq!(cut_sentences("a \n \nb  "), ["a ", " ", "b"]);
    }

    #[test]
    fn words_keep_empty_word_of_blank_sentence() {
        assert_eq!(words("a \n \nb").unwrap(), owned(&["a", "", "b"]));
        assert_eq!(words(" \t "), None);
        assert_eq!(words(""), None);
    }

    #[test]
    fn scores_follow_rouge_chinese() {
        let h = owned(&["a", "b", "a", "b"]);
        let r = owned(&["a", "b"]);
        // Distinct unigrams {a, b} both sides: P = R = 1.
        assert_eq!(rouge_n(&h, &r, 1), f_score(1.0, 1.0));
        // LCS 2: P = 2/4, R = 2/2.
        assert_eq!(rouge_l(&h, &r), f_score(0.5, 1.0));
        assert_eq!(rouge_n(&owned(&["a"]), &r, 2), 0.0);
    }
}
