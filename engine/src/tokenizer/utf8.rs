//! UTF-8 stepping exactly as sentencepiece's `string_util` does it.
//!
//! sentencepiece walks normalized text by lead byte and decodes byte-fallback runs one
//! character at a time, turning each structurally invalid byte into one U+FFFD. Rust's
//! `from_utf8_lossy` groups invalid bytes differently, so decoded text would not match.

/// U+FFFD, what sentencepiece emits for each byte that does not start a valid character.
pub(crate) const REPLACEMENT: &str = "\u{FFFD}";

/// Length of the character that starts with `lead`, judged by the lead byte alone
/// (sentencepiece's `OneCharLen`); continuation bytes count as one.
pub(crate) fn one_char_len(lead: u8) -> usize {
    match lead >> 4 {
        0xC | 0xD => 2,
        0xE => 3,
        0xF => 4,
        _ => 1,
    }
}

/// Length of the character at the start of `bytes` when `bytes` starts with a valid
/// UTF-8 sequence (no overlong forms, no surrogates), `None` otherwise.
pub(crate) fn valid_char_len(bytes: &[u8]) -> Option<usize> {
    let b0 = *bytes.first()?;
    if b0 < 0x80 {
        return Some(1);
    }
    let trail = |i: usize| bytes.get(i).copied().filter(|b| b & 0xC0 == 0x80);
    let valid = |cp: u32| cp < 0xD800 || (0xE000..=0x10FFFF).contains(&cp);
    if b0 & 0xE0 == 0xC0 {
        let b1 = trail(1)?;
        let cp = (u32::from(b0 & 0x1F) << 6) | u32::from(b1 & 0x3F);
        (cp >= 0x80 && valid(cp)).then_some(2)
    } else if b0 & 0xF0 == 0xE0 {
        let (b1, b2) = (trail(1)?, trail(2)?);
        let cp = (u32::from(b0 & 0x0F) << 12) | (u32::from(b1 & 0x3F) << 6) | u32::from(b2 & 0x3F);
        (cp >= 0x800 && valid(cp)).then_some(3)
    } else if b0 & 0xF8 == 0xF0 {
        let (b1, b2, b3) = (trail(1)?, trail(2)?, trail(3)?);
        let cp = (u32::from(b0 & 0x07) << 18)
            | (u32::from(b1 & 0x3F) << 12)
            | (u32::from(b2 & 0x3F) << 6)
            | u32::from(b3 & 0x3F);
        (cp >= 0x10000 && valid(cp)).then_some(4)
    } else {
        None
    }
}

/// Decodes bytes the way sentencepiece turns a run of `<0xXX>` pieces into text.
pub(crate) fn decode_bytes_lossy(bytes: &[u8], out: &mut String) {
    let mut rest = bytes;
    while !rest.is_empty() {
        match valid_char_len(rest) {
            Some(n) => {
                // valid_char_len only accepts what Rust also accepts as UTF-8.
                out.push_str(std::str::from_utf8(&rest[..n]).unwrap_or(REPLACEMENT));
                rest = &rest[n..];
            }
            None => {
                out.push_str(REPLACEMENT);
                rest = &rest[1..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_invalid_byte_becomes_one_replacement() {
        let mut s = String::new();
        // A truncated 3-byte sequence is two invalid bytes, then a valid 'a'.
        decode_bytes_lossy(&[0xE4, 0xBD, b'a'], &mut s);
        assert_eq!(s, "\u{FFFD}\u{FFFD}a");
        let mut s = String::new();
        decode_bytes_lossy("你😀".as_bytes(), &mut s);
        assert_eq!(s, "你😀");
    }

    #[test]
    fn surrogates_and_overlongs_are_invalid() {
        assert_eq!(valid_char_len(&[0xED, 0xA0, 0x80]), None);
        assert_eq!(valid_char_len(&[0xC0, 0x80]), None);
        assert_eq!(valid_char_len("\u{FFFD}".as_bytes()), Some(3));
    }
}
