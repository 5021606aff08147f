//! The Python string handling the official tokenizer relies on, reproduced exactly:
//! `str.isspace`/`strip`/`split`, ChatGLM's whitespace tokens (`<n>`, `<|tab|>`,
//! `<|blank_N|>`) in both directions, and transformers' `clean_up_tokenization`.

/// Python's `str.isspace`: Rust's `char::is_whitespace` plus the four ASCII separators
/// U+001C..U+001F, which Python counts as whitespace and Rust does not.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

pub(crate) fn py_lstrip(s: &str) -> &str {
    s.trim_start_matches(is_py_space)
}

pub(crate) fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

/// `" ".join(s.strip().split())`.
pub(crate) fn collapse_spaces(s: &str) -> String {
    s.split(is_py_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) const NEWLINE_TOKEN: &str = "<n>";
pub(crate) const TAB_TOKEN: &str = "<|tab|>";

fn push_blank(out: &mut String, n: usize) {
    out.push_str("<|blank_");
    out.push_str(&n.to_string());
    out.push_str("|>");
}

/// `SPTokenizer._preprocess`: `\n` → `<n>`, `\t` → `<|tab|>`, then
/// `for i in range(max_len, 1, -1): text = text.replace(" " * i, blank(i))`.
///
/// Those sequential replacements amount to: a run of `r` spaces becomes `r / max_len`
/// `<|blank_{max_len}|>` tokens followed by `<|blank_{r % max_len}|>`, except that a
/// remainder of one stays a plain space (after the full-length blanks).
pub(crate) fn encode_whitespaces(text: &str, max_len: usize) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut run = 0usize;
    let flush = |out: &mut String, run: usize| {
        for _ in 0..run / max_len {
            push_blank(out, max_len);
        }
        match run % max_len {
            0 => {}
            1 => out.push(' '),
            m => push_blank(out, m),
        }
    };
    for c in text.chars() {
        if c == ' ' {
            run += 1;
            continue;
        }
        flush(&mut out, run);
        run = 0;
        match c {
            '\n' => out.push_str(NEWLINE_TOKEN),
            '\t' => out.push_str(TAB_TOKEN),
            c => out.push(c),
        }
    }
    flush(&mut out, run);
    out
}

/// `SPTokenizer.postprocess`: the tokens back to `\n`, `\t` and runs of spaces.
///
/// The official code does one `str.replace` per token; since no token can overlap
/// another and the replacements contain no `<`, a single left-to-right scan is the same.
pub(crate) fn decode_whitespaces(text: &str, max_len: usize) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('<') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        if let Some(r) = rest.strip_prefix(NEWLINE_TOKEN) {
            out.push('\n');
            rest = r;
        } else if let Some(r) = rest.strip_prefix(TAB_TOKEN) {
            out.push('\t');
            rest = r;
        } else if let Some((n, r)) = blank_token(rest, max_len) {
            out.extend(std::iter::repeat_n(' ', n));
            rest = r;
        } else {
            out.push('<');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Parses `<|blank_N|>` (N written as Python's `str(int)` would, 2 ≤ N ≤ max_len).
fn blank_token(s: &str, max_len: usize) -> Option<(usize, &str)> {
    let digits_and_rest = s.strip_prefix("<|blank_")?;
    let end = digits_and_rest.find("|>")?;
    let digits = &digits_and_rest[..end];
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = digits.parse().ok()?;
    (2..=max_len)
        .contains(&n)
        .then(|| (n, &digits_and_rest[end + 2..]))
}

/// transformers' `clean_up_tokenization`, applied by `decode` by default in 4.33.
pub(crate) fn clean_up_tokenization(s: String) -> String {
    const RULES: [(&str, &str); 10] = [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ];
    RULES.iter().fold(s, |acc, (from, to)| {
        if acc.contains(from) {
            acc.replace(from, to)
        } else {
            acc
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The official algorithm, literally, to check the run-length shortcut against.
    fn reference(text: &str, max_len: usize) -> String {
        let mut t = text.replace('\n', "<n>").replace('\t', "<|tab|>");
        for i in (2..=max_len).rev() {
            t = t.replace(&" ".repeat(i), &format!("<|blank_{i}|>"));
        }
        t
    }

    #[test]
    fn whitespace_runs_match_sequential_replace() {
        for r in 0..200 {
            let s = format!("a{}b\t\n{}", " ".repeat(r), " ".repeat(r / 3));
            assert_eq!(encode_whitespaces(&s, 80), reference(&s, 80), "run {r}");
        }
    }

    #[test]
    fn whitespace_round_trip() {
        let s = "x  y\t\tz\n   ".to_string() + &" ".repeat(170);
        assert_eq!(decode_whitespaces(&encode_whitespaces(&s, 80), 80), s);
        assert_eq!(
            decode_whitespaces("<|blank_1|><|blank_81|><|blank_02|><", 80),
            "<|blank_1|><|blank_81|><|blank_02|><"
        );
    }

    #[test]
    fn python_whitespace() {
        assert_eq!(collapse_spaces("\u{1F} a \u{3000}b\n"), "a b");
        assert_eq!(py_lstrip("\u{1C}\u{A0}x "), "x ");
        assert_eq!(
            clean_up_tokenization("a . b ' c do n't".into()),
            "a. b'c don't"
        );
    }
}
