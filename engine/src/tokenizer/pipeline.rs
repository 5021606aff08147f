//! A `tokenizers::Tokenizer` that segments like sentencepiece, built from a `ModelProto`.
//!
//! The mapping follows transformers' `SpmConverter` in spirit, with the changes that make the ids
//! equal to sentencepiece's rather than to the converted fast tokenizers':
//!
//! * Unigram: the vocabulary keeps every id, but sentencepiece leaves the unknown, control,
//!   byte and unused pieces out of its lattice, so that text spelling them is not them. Here the
//!   byte pieces keep their names (`tokenizers`' byte fallback looks them up by name) with a
//!   score no path through them can win with, and the others are renamed to strings normalized
//!   text never holds (U+0020, which the pre-tokenizer escapes, and a noncharacter). User-defined
//!   pieces score `length * max_score - 0.1` and the unknown penalty starts from the lowest
//!   NORMAL score, both as sentencepiece computes them.
//! * BPE: sentencepiece merges the adjacent pair whose concatenation is the best-scoring piece;
//!   as `tokenizers` ranks merge rules instead, every split of a piece into two pieces becomes a
//!   rule, ranked by the piece's score.
//! * User-defined pieces are added tokens that skip normalization, as sentencepiece copies them.
//! * The dummy `▁` prefix is added by the caller before the text (sentencepiece adds it whenever
//!   the input is not empty, even when normalization then removes everything, and before
//!   user-defined pieces, which `tokenizers`' `Prepend` or `Metaspace` would not do).
//!
//! Where `tokenizers` cannot give sentencepiece's result, and why (found by running both this
//! and the hand-written implementation it replaced on the fixture vocabularies, 40,000 random
//! texts and 20,000 random id sequences each; only the first two were ever seen):
//!
//! * Normalization by a precompiled charsmap (`nmt_nfkc`, as in the ChatGLM-6B fixture's
//!   `ice_text.model`; ChatGLM2/3's `tokenizer.model` has none). `tokenizers`' `Precompiled`
//!   works on grapheme clusters: one under 6 bytes is replaced by the output of the *shortest*
//!   rule matching its start and the rest of the cluster is dropped, where sentencepiece applies
//!   the longest rule at each position and goes on. So `Ａ\u{301}` gives `A` (sentencepiece
//!   `A\u{301}`), `①\u{301}` gives `1`, `½\u{FE0F}` gives `1⁄2`; and a text starting with a
//!   combining mark loses it to the dummy `▁`'s cluster (`\u{302}` encodes as `▁` alone).
//! * Clusters of 6 bytes or more are normalized a character at a time, so rules over several
//!   characters do not apply: half-width `ｶﾞ` gives `カ\u{3099}` (sentencepiece `ガ`), and
//!   decomposed Hangul jamo stay decomposed.
//! * Unigram: a run of characters the vocabulary lacks is one unknown token, which
//!   `tokenizers` spells in bytes unless the run is itself the name of a piece; sentencepiece
//!   always spells it. Only a vocabulary without `<`, `0`, `x` and hex digits could meet a run
//!   named like a byte piece (`<0x41>`); control and unknown pieces are renamed (see above).
//! * Unigram path scores add up in `f64`, where sentencepiece rounds to `f32` at every node;
//!   paths that tie in one and not the other could resolve differently.
//! * BPE: merges of equal score into different pieces go by piece id rather than leftmost
//!   position (sentencepiece's BPE trainer gives every piece its own score), and merges into
//!   UNUSED pieces are not made (sentencepiece makes them and splits them again at the end).
//! * With `remove_extra_whitespaces` (no ChatGLM model sets it), whitespace squeezing and the
//!   dummy prefix apply to each stretch of text between user-defined pieces.

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::metaspace::{Metaspace, PrependScheme};
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab as BpeVocab, BPE};
use tokenizers::models::unigram::Unigram;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{NormalizerWrapper, Precompiled, Prepend, Replace, Sequence};
use tokenizers::{AddedToken, Tokenizer};

use super::proto::{ModelProto, ModelType, NormalizerSpec, PieceType};
use super::vocab::{is_normal, Vocab};

/// U+2581, sentencepiece's visible space.
pub(crate) const SPACE_SYMBOL: &str = "\u{2581}";

/// Why a model cannot be used: broken, or valid but of a kind this code does not run.
#[derive(Debug)]
pub(crate) enum LoadError {
    Malformed(String),
    Unsupported(String),
}

/// A Unigram score no segmentation through the piece can win with (every character also has a
/// path of single pieces or unknown nodes, each a few dozen at worst), yet far from overflowing.
const NEVER: f64 = -1e30;

pub(crate) fn build(model: &ModelProto, vocab: &Vocab) -> Result<Tokenizer, LoadError> {
    let tk_err = |e: tokenizers::Error| LoadError::Malformed(e.to_string());
    let segmenter: ModelWrapper = match model.trainer.model_type {
        ModelType::Unigram => unigram(vocab)?.into(),
        ModelType::Bpe => bpe(vocab).map_err(tk_err)?.into(),
        other => {
            return Err(LoadError::Unsupported(format!(
                "model_type {other:?} (only UNIGRAM and BPE are implemented)"
            )))
        }
    };
    let mut tokenizer = Tokenizer::new(segmenter);
    let normalizer = normalizer(&model.normalizer, model.trainer.treat_whitespace_as_suffix)?;
    tokenizer.with_normalizer(normalizer).map_err(tk_err)?;
    if model.normalizer.escape_whitespaces {
        // Spaces become `▁` after the rules, as sentencepiece escapes them; the whole text stays
        // one word (sentencepiece does not split at spaces before segmenting).
        let escape = Metaspace::new('\u{2581}', PrependScheme::Never, false);
        tokenizer.with_pre_tokenizer(Some(escape));
    }
    // `▁` → space everywhere: the processor strips the first piece's `▁` itself, because
    // `Metaspace`'s own prepend handling drops every `▁` of the first token (`▁▁x` → `x`).
    let mut decoders = vec![DecoderWrapper::Metaspace(Metaspace::new(
        '\u{2581}',
        PrependScheme::Never,
        false,
    ))];
    if vocab.byte_fallback {
        decoders.push(DecoderWrapper::ByteFallback(ByteFallback::new()));
    }
    decoders.push(DecoderWrapper::Fuse(Fuse::new()));
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    let user_defined = vocab
        .entries
        .iter()
        .filter(|e| e.kind == PieceType::UserDefined)
        .map(|e| AddedToken::from(e.piece.clone(), false).normalized(false));
    tokenizer.add_tokens(user_defined).map_err(tk_err)?;
    Ok(tokenizer)
}

/// A name no escaped normalized text contains (see the module comment), unique per id.
fn hidden(id: usize) -> String {
    format!(" \u{FDD0}{id}")
}

fn unigram(vocab: &Vocab) -> Result<Unigram, LoadError> {
    // The C++ starts max at FLT_MIN (the smallest positive float), not at -FLT_MAX, so with
    // all-negative scores user-defined pieces score about -0.1.
    let (mut min_score, mut max_score) = (f32::MAX, f32::MIN_POSITIVE);
    for e in vocab.entries.iter().filter(|e| e.kind == PieceType::Normal) {
        min_score = min_score.min(e.score);
        max_score = max_score.max(e.score);
    }
    if !vocab
        .entries
        .iter()
        .any(|e| matches!(e.kind, PieceType::Normal | PieceType::UserDefined))
    {
        return Err(LoadError::Malformed(
            "unigram model has no NORMAL or USER_DEFINED pieces".into(),
        ));
    }
    let pieces = vocab
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| match e.kind {
            PieceType::Normal => (e.piece.clone(), f64::from(e.score)),
            // `length * max_score_ - 0.1` is a double in C++; the product is a float.
            PieceType::UserDefined => (
                e.piece.clone(),
                f64::from(e.piece.len() as f32 * max_score) - 0.1,
            ),
            PieceType::Byte => (e.piece.clone(), NEVER),
            _ => (hidden(i), f64::from(min_score)),
        })
        .collect();
    let byte_fallback = vocab.byte_fallback;
    let mut model = Unigram::from(pieces, Some(vocab.unk_id as usize), byte_fallback)
        .map_err(|e| LoadError::Malformed(e.to_string()))?;
    // `tokenizers` takes the minimum over every piece; sentencepiece over NORMAL ones.
    model.min_score = f64::from(min_score);
    Ok(model)
}

fn bpe(vocab: &Vocab) -> tokenizers::Result<BPE> {
    // Reserved pieces last: where a string is both, `PieceToId` gives the reserved id.
    let mut ids: BpeVocab = BpeVocab::default();
    for reserved in [false, true] {
        for (i, e) in vocab.entries.iter().enumerate() {
            if is_normal(e.kind) != reserved {
                ids.insert(e.piece.clone(), i as u32);
            }
        }
    }
    // sentencepiece merges into any NORMAL or USER_DEFINED piece (UNUSED ones are merged and
    // split again afterwards, which merge rules cannot express; they are left out).
    let mergeable: HashMap<&str, u32> = vocab
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.kind, PieceType::Normal | PieceType::UserDefined))
        .map(|(i, e)| (e.piece.as_str(), i as u32))
        .collect();
    let mut rules: Vec<(f32, u32, &str, &str)> = Vec::new();
    for (&piece, &id) in &mergeable {
        for (at, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(at);
            if ids.contains_key(left) && ids.contains_key(right) {
                rules.push((vocab.entries[id as usize].score, id, left, right));
            }
        }
    }
    // Best score first; equal scores (not produced by sentencepiece's BPE trainer) by id.
    rules.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then_with(|| a.2.len().cmp(&b.2.len()))
    });
    let merges = rules
        .into_iter()
        .map(|(_, _, l, r)| (l.to_string(), r.to_string()))
        .collect();
    let unk = vocab
        .get(vocab.unk_id)
        .map(|e| e.piece.clone())
        .unwrap_or_default();
    BPE::builder()
        .vocab_and_merges(ids, merges)
        .unk_token(unk)
        .fuse_unk(true)
        .byte_fallback(vocab.byte_fallback)
        .build()
}

fn normalizer(spec: &NormalizerSpec, suffix: bool) -> Result<Option<Sequence>, LoadError> {
    let regex = |pattern: &str, content: &str| {
        Replace::new(ReplacePattern::Regex(pattern.into()), content)
            .map(NormalizerWrapper::Replace)
            .map_err(|e| LoadError::Malformed(e.to_string()))
    };
    let mut steps = Vec::new();
    if let Some(rules) = precompiled(&spec.precompiled_charsmap).map_err(LoadError::Malformed)? {
        steps.push(NormalizerWrapper::Precompiled(rules));
    }
    if spec.remove_extra_whitespaces {
        // Spaces are judged after the rules (U+3000 has become one); only U+0020 counts.
        steps.push(regex(" {2,}", " ")?);
        steps.push(regex("^ | $", "")?);
        if spec.add_dummy_prefix && !suffix {
            steps.push(NormalizerWrapper::Prepend(Prepend::new(" ".into())));
        }
    }
    Ok((!steps.is_empty()).then(|| Sequence::new(steps)))
}

/// `precompiled_charsmap` as `tokenizers` reads it, or `None` when it holds no rules.
///
/// `tokenizers` walks the darts-clone array with unchecked indexing and slices its replacement
/// strings without checks, so a damaged model file could make it panic. The array is padded to
/// a power of two, so that offsets smaller than its length keep every walk inside it, and every
/// rule must point at a character boundary of the replacement blob; real files pass unchanged.
pub(crate) fn precompiled(blob: &[u8]) -> Result<Option<Precompiled>, String> {
    if blob.is_empty() {
        return Ok(None);
    }
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
    let normalized = std::str::from_utf8(&blob[4 + trie_size..])
        .map_err(|_| "precompiled_charsmap's replacements are not valid UTF-8")?;
    let mut units: Vec<u32> = trie
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if units.is_empty() {
        return Ok(None);
    }
    let size = units.len().max(256).next_power_of_two();
    units.resize(size, 0);
    let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
    let is_node = |u: u32| u & (1 << 31) == 0;
    for (at, &unit) in units.iter().enumerate() {
        if (at == 0 || is_node(unit)) && offset(unit) >= size {
            return Err(format!("precompiled_charsmap unit {at} points outside it"));
        }
        if is_node(unit) && (unit >> 8) & 1 == 1 {
            let value = (units[at ^ offset(unit)] & ((1 << 31) - 1)) as usize;
            if !normalized.is_char_boundary(value) {
                return Err(format!("precompiled_charsmap rule {at} points outside it"));
            }
        }
    }
    let mut padded = Vec::with_capacity(4 + size * 4 + normalized.len());
    padded.extend_from_slice(&((size * 4) as u32).to_le_bytes());
    units
        .iter()
        .for_each(|u| padded.extend_from_slice(&u.to_le_bytes()));
    padded.extend_from_slice(normalized.as_bytes());
    Precompiled::from(&padded)
        .map(Some)
        .map_err(|e| format!("precompiled_charsmap: {e}"))
}
