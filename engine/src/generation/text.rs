//! Two string questions a stream of text asks at every piece: what of a final text is not yet
//! shown, and how much of a text's end may still grow into one of some patterns (and so must be
//! held back).

/// What of `text` follows its common beginning with `shown` (when a decoder rewrote text already
/// shown, the stream can only add, so what differs from there on is handed out), if anything.
pub(crate) fn unshown(shown: &str, text: &str) -> Option<String> {
    let common = shown
        .char_indices()
        .zip(text.chars())
        .find(|((_, a), b)| a != b)
        .map_or(shown.len().min(text.len()), |((i, _), _)| i);
    let rest = &text[common..];
    (!rest.is_empty()).then(|| rest.to_owned())
}

/// Bytes of the longest end of `text` that is a beginning (not the whole) of one of `patterns`.
pub(crate) fn partial_match_len<'a>(
    text: &str,
    patterns: impl IntoIterator<Item = &'a str>,
) -> usize {
    patterns
        .into_iter()
        .flat_map(|p| p.char_indices().skip(1).map(move |(at, _)| &p[..at]))
        .filter(|start| text.ends_with(start))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshown_text_follows_the_common_beginning() {
        assert_eq!(unshown("你", "你好").as_deref(), Some("好"));
        assert_eq!(unshown("你好", "你好"), None);
        assert_eq!(unshown("你们", "你好").as_deref(), Some("好"));
        assert_eq!(unshown("", "a").as_deref(), Some("a"));
    }

    #[test]
    fn partial_matches_are_proper_beginnings_of_a_pattern() {
        assert_eq!(partial_match_len("x[[训", ["[[训练时间]]"]), "[[训".len());
        assert_eq!(partial_match_len("x[[训练时间]]", ["[[训练时间]]"]), 0);
        assert_eq!(partial_match_len("abc", ["cd", "bcx"]), 2);
        assert_eq!(partial_match_len("abc", [""]), 0);
    }
}
