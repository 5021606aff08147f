//! sentencepiece's text normalizer (`normalizer.cc`), byte for byte.
//!
//! The rules (NFKC for `nmt_nfkc`) come precompiled in the model: a darts-clone double
//! array mapping input byte strings to offsets into a blob of NUL-terminated replacements.
//! At every position the longest rule wins; without a rule one character is copied.
//! User-defined pieces are matched first and copied verbatim so that rules never split
//! them (`<n>`, `<|blank_4|>`, ...). Around that sit the whitespace options: dropping
//! leading/trailing/repeated spaces, the dummy `▁` prefix, and `' '` → `▁`.

use super::proto::NormalizerSpec;
use super::trie::Trie;
use super::utf8;

/// U+2581, sentencepiece's visible space.
pub(crate) const SPACE_SYMBOL: &str = "\u{2581}";

/// A darts-clone double array as stored in `precompiled_charsmap`, read in place.
#[derive(Debug)]
struct CharsMap {
    units: Vec<u32>,
    normalized: Vec<u8>,
}

impl CharsMap {
    /// Splits the blob: `<trie size: u32 LE><double array units><normalized strings>`.
    fn parse(blob: &[u8]) -> Result<Self, String> {
        let header: [u8; 4] = blob
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or("precompiled_charsmap is shorter than its 4-byte header")?;
        let trie_size = u32::from_le_bytes(header) as usize;
        let trie = blob
            .get(4..)
            .and_then(|rest| rest.get(..trie_size))
            .filter(|_| trie_size < blob.len())
            .ok_or_else(|| {
                format!(
                    "precompiled_charsmap declares a {trie_size}-byte trie but holds {} bytes",
                    blob.len()
                )
            })?;
        let units = trie
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Self {
            units,
            normalized: blob[4 + trie_size..].to_vec(),
        })
    }

    /// Darts `commonPrefixSearch`, keeping only the longest hit: `(length, value)`.
    /// Indices that leave the array end the walk instead of reading out of bounds.
    fn longest_match(&self, key: &[u8]) -> Option<(usize, usize)> {
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let has_leaf = |u: u32| (u >> 8) & 1 == 1;
        let label = |u: u32| u & ((1 << 31) | 0xFF);
        let value = |u: u32| (u & ((1 << 31) - 1)) as usize;

        let mut node = offset(*self.units.first()?);
        let mut best = None;
        for (i, &b) in key.iter().enumerate() {
            node ^= usize::from(b);
            let unit = *self.units.get(node)?;
            if label(unit) != u32::from(b) {
                break;
            }
            node ^= offset(unit);
            if has_leaf(unit) {
                let leaf = *self.units.get(node)?;
                best = Some((i + 1, value(leaf)));
            }
        }
        best
    }

    /// The NUL-terminated replacement at `offset`; `None` when the offset is outside the blob.
    fn replacement(&self, offset: usize) -> Option<&[u8]> {
        let rest = self.normalized.get(offset..)?;
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        Some(&rest[..end])
    }
}

#[derive(Debug)]
pub(crate) struct Normalizer {
    charsmap: Option<CharsMap>,
    /// User-defined pieces, which bypass the rules.
    matcher: Option<Trie>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    treat_whitespace_as_suffix: bool,
}

impl Normalizer {
    pub(crate) fn new(
        spec: &NormalizerSpec,
        treat_whitespace_as_suffix: bool,
        matcher: Option<Trie>,
    ) -> Result<Self, String> {
        let charsmap = if spec.precompiled_charsmap.is_empty() {
            None
        } else {
            Some(CharsMap::parse(&spec.precompiled_charsmap)?)
        };
        Ok(Self {
            charsmap,
            matcher: matcher.filter(|m| !m.is_empty()),
            add_dummy_prefix: spec.add_dummy_prefix,
            remove_extra_whitespaces: spec.remove_extra_whitespaces,
            escape_whitespaces: spec.escape_whitespaces,
            treat_whitespace_as_suffix,
        })
    }

    /// Normalizes one unit at the start of `input`: `(replacement, bytes consumed)`.
    fn normalize_prefix<'a>(&'a self, input: &'a [u8]) -> (&'a [u8], usize) {
        if let Some(len) = self.matcher.as_ref().and_then(|m| m.longest_prefix(input)) {
            return (&input[..len], len);
        }
        if let Some(map) = &self.charsmap {
            if let Some((len, offset)) = map.longest_match(input) {
                // A rule pointing outside the blob is treated as "no rule".
                if let Some(rep) = map.replacement(offset) {
                    return (rep, len);
                }
            }
        }
        match utf8::valid_char_len(input) {
            Some(len) => (&input[..len], len),
            // sentencepiece consumes one byte of malformed UTF-8 and emits U+FFFD.
            None => (utf8::REPLACEMENT.as_bytes(), 1),
        }
    }

    fn push_space(&self, out: &mut Vec<u8>) {
        if self.escape_whitespaces {
            out.extend_from_slice(SPACE_SYMBOL.as_bytes());
        } else {
            out.push(b' ');
        }
    }

    /// The normalized form of `input` (empty input stays empty: no dummy prefix).
    pub(crate) fn normalize(&self, mut input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() * 3);
        if input.is_empty() {
            return out;
        }
        if self.remove_extra_whitespaces {
            // Leading spaces are judged after normalization (U+3000 counts as one).
            while !input.is_empty() {
                let (rep, consumed) = self.normalize_prefix(input);
                if rep != b" " {
                    break;
                }
                input = &input[consumed..];
            }
            if input.is_empty() {
                return out;
            }
        }

        if !self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            self.push_space(&mut out);
        }

        // With remove_extra_whitespaces the dummy prefix counts as a preceding space, so
        // the text's own spaces after it are dropped; otherwise this flag never sticks.
        let mut is_prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut rep, consumed) = self.normalize_prefix(input);
            while is_prev_space && rep.first() == Some(&b' ') {
                rep = &rep[1..];
            }
            if !rep.is_empty() {
                for &b in rep {
                    if self.escape_whitespaces && b == b' ' {
                        out.extend_from_slice(SPACE_SYMBOL.as_bytes());
                    } else {
                        out.push(b);
                    }
                }
                is_prev_space = rep.last() == Some(&b' ');
            }
            input = &input[consumed..];
            if !self.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }

        if self.remove_extra_whitespaces {
            let space: &[u8] = if self.escape_whitespaces {
                SPACE_SYMBOL.as_bytes()
            } else {
                b" "
            };
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }

        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            self.push_space(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(add: bool, remove: bool) -> NormalizerSpec {
        NormalizerSpec {
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: add,
            remove_extra_whitespaces: remove,
            escape_whitespaces: true,
        }
    }

    fn norm(n: &Normalizer, s: &str) -> String {
        String::from_utf8(n.normalize(s.as_bytes())).unwrap()
    }

    #[test]
    fn whitespace_options() {
        let keep = Normalizer::new(&spec(true, false), false, None).unwrap();
        assert_eq!(norm(&keep, " a  b "), "▁▁a▁▁b▁");
        assert_eq!(norm(&keep, ""), "");
        let squash = Normalizer::new(&spec(true, true), false, None).unwrap();
        assert_eq!(norm(&squash, "  a  b  "), "▁a▁b");
        assert_eq!(norm(&squash, "   "), "");
        let suffix = Normalizer::new(&spec(true, false), true, None).unwrap();
        assert_eq!(norm(&suffix, "a b"), "a▁b▁");
    }

    #[test]
    fn user_defined_pieces_are_copied() {
        let m = Trie::build([("<n>".as_bytes(), 0)]);
        let n = Normalizer::new(&spec(true, false), false, Some(m)).unwrap();
        assert_eq!(norm(&n, "a<n>b"), "▁a<n>b");
    }

    #[test]
    fn broken_charsmap_is_an_error() {
        let mut s = spec(true, false);
        s.precompiled_charsmap = vec![0xFF, 0, 0, 0, 1, 2];
        assert!(Normalizer::new(&s, false, None).is_err());
        s.precompiled_charsmap = vec![1];
        assert!(Normalizer::new(&s, false, None).is_err());
    }
}
