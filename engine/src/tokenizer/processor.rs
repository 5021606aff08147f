//! sentencepiece's `SentencePieceProcessor` as ChatGLM's Python code uses it, on a
//! `tokenizers::Tokenizer`: `EncodeAsIds`, `EncodeAsPieces`, `PieceToId`, `IdToPiece` and
//! `DecodePieces`.
//!
//! It works on pieces as well as ids because ChatGLM's Python tokenizer does: it asks
//! sentencepiece for pieces and maps each through `PieceToId`, and decodes by handing
//! `IdToPiece` strings back to `DecodePieces`. What `tokenizers` has no notion of stays here:
//! the dummy `▁` prefix (see [`super::pipeline`]) and which pieces `DecodePieces` drops,
//! replaces or strips the leading `▁` from.

use std::borrow::Cow;
use std::str::FromStr;

use tokenizers::normalizers::Precompiled;
use tokenizers::{Decoder, Tokenizer};

use super::pipeline::{self, LoadError, SPACE_SYMBOL};
use super::proto::{ModelProto, Piece, PieceType};
use super::vocab::{self, Vocab};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dummy {
    /// No dummy `▁`, or one the normalizer adds (with `remove_extra_whitespaces`).
    None,
    Prefix,
    /// `treat_whitespace_as_suffix`: the `▁` goes after the text.
    Suffix,
}

pub(crate) struct SentencePiece {
    vocab: Vocab,
    tokenizer: Tokenizer,
    /// The `▁` (or, without whitespace escaping, the space) added around non-empty text.
    dummy: Dummy,
    space: &'static str,
    unk_surface: String,
    /// Decoding strips the first `▁` only when encoding could have added one.
    strip_leading_space: bool,
    remove_extra_whitespaces: bool,
    denormalizer: Option<Precompiled>,
}

impl std::fmt::Debug for SentencePiece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentencePiece")
            .field("pieces", &self.vocab.len())
            .field("dummy", &self.dummy)
            .finish_non_exhaustive()
    }
}

impl SentencePiece {
    pub(crate) fn new(model: &ModelProto) -> Result<Self, LoadError> {
        let vocab =
            Vocab::new(&model.pieces, model.trainer.byte_fallback).map_err(LoadError::Malformed)?;
        let tokenizer = pipeline::build(model, &vocab)?;
        let spec = &model.normalizer;
        let denormalizer = match &model.denormalizer {
            Some(d) => {
                pipeline::precompiled(&d.precompiled_charsmap).map_err(LoadError::Malformed)?
            }
            None => None,
        };
        let dummy = match (spec.add_dummy_prefix, spec.remove_extra_whitespaces) {
            (true, false) if model.trainer.treat_whitespace_as_suffix => Dummy::Suffix,
            (true, false) => Dummy::Prefix,
            _ => Dummy::None,
        };
        Ok(Self {
            vocab,
            tokenizer,
            dummy,
            space: if spec.escape_whitespaces {
                SPACE_SYMBOL
            } else {
                " "
            },
            unk_surface: model.trainer.unk_surface.clone(),
            strip_leading_space: spec.add_dummy_prefix || spec.remove_extra_whitespaces,
            remove_extra_whitespaces: spec.remove_extra_whitespaces,
            denormalizer,
        })
    }

    /// A folder's `tokenizer.json`, taken as it is: its own normalizer, pre-tokenizer, model and
    /// decoder. The piece types sentencepiece would know come from its model's unknown token and
    /// byte fallback and from its added tokens (special ones are control pieces, the others
    /// user-defined). The error is a reason without the file name.
    pub(crate) fn from_json(json: &str) -> Result<Self, String> {
        let tokenizer = Tokenizer::from_str(json).map_err(|e| e.to_string())?;
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let model = &value["model"];
        let byte_fallback = model["byte_fallback"].as_bool().unwrap_or(false);
        let unk = match model["unk_id"].as_u64() {
            Some(id) => u32::try_from(id)
                .ok()
                .and_then(|id| tokenizer.id_to_token(id)),
            None => model["unk_token"].as_str().map(str::to_owned),
        };
        // Unigram vocabularies carry scores (`[piece, score]` pairs); they are informational here.
        let score = |id: usize| model["vocab"][id][1].as_f64().unwrap_or(0.0) as f32;
        let added = tokenizer.get_added_tokens_decoder();
        let size = u32::try_from(tokenizer.get_vocab_size(true)).map_err(|e| e.to_string())?;
        let mut pieces = Vec::with_capacity(size as usize);
        for id in 0..size {
            let piece = tokenizer
                .id_to_token(id)
                .ok_or_else(|| format!("id {id} has no token"))?;
            let kind = match added.get(&id) {
                _ if unk.as_ref() == Some(&piece) => PieceType::Unknown,
                Some(t) if t.special => PieceType::Control,
                Some(_) => PieceType::UserDefined,
                None if byte_fallback && vocab::is_byte_piece(&piece) => PieceType::Byte,
                None => PieceType::Normal,
            };
            pieces.push(Piece {
                score: score(id as usize),
                piece,
                kind,
            });
        }
        let vocab = Vocab::new(&pieces, byte_fallback)?;
        let unk_surface = vocab
            .get(vocab.unk_id)
            .map(|e| e.piece.clone())
            .unwrap_or_default();
        Ok(Self {
            vocab,
            tokenizer,
            dummy: Dummy::None,
            space: SPACE_SYMBOL,
            unk_surface,
            strip_leading_space: false,
            remove_extra_whitespaces: false,
            denormalizer: None,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.vocab.len()
    }

    pub(crate) fn lookup(&self, piece: &str) -> Option<u32> {
        self.vocab.lookup(piece)
    }

    pub(crate) fn piece_to_id(&self, piece: &str) -> u32 {
        self.vocab.piece_to_id(piece)
    }

    pub(crate) fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.vocab.get(id).map(|e| e.piece.as_str())
    }

    /// `EncodeAsIds`.
    pub(crate) fn encode_ids(&self, text: &str) -> Vec<u32> {
        if text.is_empty() {
            return Vec::new();
        }
        let input: Cow<'_, str> = match self.dummy {
            Dummy::None => Cow::Borrowed(text),
            Dummy::Prefix => Cow::Owned(format!("{}{text}", self.space)),
            Dummy::Suffix => Cow::Owned(format!("{text}{}", self.space)),
        };
        match self.tokenizer.encode_fast(input.as_ref(), false) {
            Ok(encoding) => encoding.get_ids().to_vec(),
            // Unreachable with the pipelines built here (every model has its unknown piece); an
            // unknown piece stands for text that could not be segmented.
            Err(_) => vec![self.vocab.unk_id],
        }
    }

    /// `EncodeAsPieces`, for callers that map pieces through `PieceToId` themselves. An unknown
    /// run is the unknown piece rather than its text; `PieceToId` gives the same id for both.
    pub(crate) fn encode_pieces(&self, text: &str) -> Vec<&str> {
        self.encode_ids(text)
            .into_iter()
            .filter_map(|id| self.id_to_piece(id))
            .collect()
    }

    /// `DecodePieces`: the pieces `tokenizers`' decoders see are the visible ones, with the
    /// first one's `▁` already gone where sentencepiece drops it.
    pub(crate) fn decode_pieces<S: AsRef<str>>(&self, pieces: &[S]) -> String {
        let mut tokens: Vec<String> = Vec::with_capacity(pieces.len());
        let mut is_bos_ws = true;
        let mut bos_ws_seen = false;
        let mut emitted = false;
        let mut run = Vec::new();
        for piece in pieces.iter().map(AsRef::as_ref) {
            let id = self.vocab.piece_to_id(piece);
            let Some(entry) = self.vocab.get(id) else {
                continue;
            };
            if let Some(b) = entry.byte {
                run.push(b);
                emitted = true;
                continue;
            }
            push_byte_run(&mut run, &mut tokens);
            // Only the very first visible piece may lose its leading `▁`.
            if bos_ws_seen || emitted {
                is_bos_ws = false;
            }
            bos_ws_seen = false;
            let text = match entry.kind {
                PieceType::Control => continue,
                PieceType::Unknown if entry.piece == piece => self.unk_surface.as_str(),
                PieceType::Unknown => piece,
                _ => match piece.strip_prefix(SPACE_SYMBOL) {
                    Some(rest) if is_bos_ws && self.strip_leading_space => {
                        // With extra-whitespace removal every leading `▁` goes.
                        bos_ws_seen = !self.remove_extra_whitespaces;
                        rest
                    }
                    _ => piece,
                },
            };
            if !text.is_empty() {
                tokens.push(text.to_string());
                emitted = true;
            }
        }
        push_byte_run(&mut run, &mut tokens);
        let text = match self.tokenizer.get_decoder() {
            Some(decoder) => decoder.decode(tokens).unwrap_or_default(),
            None => tokens.concat(),
        };
        match &self.denormalizer {
            Some(rules) => rules.normalize_string(&text),
            None => text,
        }
    }
}

/// Hands a run of byte pieces to the decoders. `ByteFallback` turns a run that is not valid
/// UTF-8 into one U+FFFD per byte, where sentencepiece keeps the valid characters and replaces
/// each invalid byte; so the run is cut (by empty tokens, which decode to nothing) into its
/// valid stretches and single invalid bytes. A maximal invalid sequence is a lead byte and
/// continuation bytes, none of which can start a character, so no valid character is lost.
fn push_byte_run(run: &mut Vec<u8>, tokens: &mut Vec<String>) {
    let mut rest = run.as_slice();
    while !rest.is_empty() {
        let (valid, invalid) = match std::str::from_utf8(rest) {
            Ok(_) => (rest.len(), 0),
            Err(e) => (
                e.valid_up_to(),
                e.error_len().unwrap_or(rest.len() - e.valid_up_to()),
            ),
        };
        tokens.extend(rest[..valid].iter().map(|&b| vocab::byte_piece(b)));
        for &b in &rest[valid..valid + invalid] {
            tokens.push(String::new());
            tokens.push(vocab::byte_piece(b));
        }
        tokens.push(String::new());
        rest = &rest[valid + invalid..];
    }
    run.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::proto::{ModelType, NormalizerSpec, TrainerSpec};

    /// A small model: `<unk>`, the 256 byte pieces, then `normal` with descending scores.
    fn model(model_type: ModelType, normal: &[&str], spec: NormalizerSpec) -> ModelProto {
        let piece = |piece: String, score: f32, kind| Piece { piece, score, kind };
        let mut pieces = vec![piece("<unk>".into(), 0.0, PieceType::Unknown)];
        pieces.extend((0..=255u8).map(|b| piece(vocab::byte_piece(b), 0.0, PieceType::Byte)));
        pieces.extend(
            normal
                .iter()
                .enumerate()
                .map(|(i, p)| piece(p.to_string(), -(i as f32) - 1.0, PieceType::Normal)),
        );
        pieces.push(piece("<n>".into(), 0.0, PieceType::UserDefined));
        ModelProto {
            pieces,
            trainer: TrainerSpec {
                model_type,
                byte_fallback: true,
                ..TrainerSpec::default()
            },
            normalizer: spec,
            denormalizer: None,
        }
    }

    fn spec(add_dummy_prefix: bool, remove_extra_whitespaces: bool) -> NormalizerSpec {
        NormalizerSpec {
            add_dummy_prefix,
            remove_extra_whitespaces,
            ..NormalizerSpec::default()
        }
    }

    fn pieces(sp: &SentencePiece, text: &str) -> Vec<String> {
        sp.encode_pieces(text)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    // Scores fall in this order, so both segmenters agree on these texts.
    const NORMAL: &[&str] = &[
        "▁a", "▁ab", "ab", "▁", "a", "b", "<", "0", "x", "4", "1", ">",
    ];

    #[test]
    fn whitespace_options() {
        for kind in [ModelType::Unigram, ModelType::Bpe] {
            let keep = SentencePiece::new(&model(kind, NORMAL, spec(true, false))).unwrap();
            assert_eq!(pieces(&keep, " a  b "), ["▁", "▁a", "▁", "▁", "b", "▁"]);
            assert!(pieces(&keep, "").is_empty());
            let squash = SentencePiece::new(&model(kind, NORMAL, spec(true, true))).unwrap();
            assert_eq!(pieces(&squash, "  a  b  "), ["▁a", "▁", "b"]);
            assert!(pieces(&squash, "   ").is_empty());
        }
    }

    #[test]
    fn user_defined_pieces_unknown_bytes_and_decoding() {
        for kind in [ModelType::Unigram, ModelType::Bpe] {
            let sp = SentencePiece::new(&model(kind, NORMAL, spec(true, false))).unwrap();
            assert_eq!(pieces(&sp, "<n>ab"), ["▁", "<n>", "ab"]);
            // Text spelling a byte piece or the unknown piece is not that piece.
            assert_eq!(pieces(&sp, "é<unk>")[..3], ["▁", "<0xC3>", "<0xA9>"]);
            assert_eq!(pieces(&sp, "<0x41>"), ["▁", "<", "0", "x", "4", "1", ">"]);
            let decoded = sp.decode_pieces(&["▁ab", "<0xE4>", "<0xBD>", "<0xA0>", "▁", "<unk>"]);
            assert_eq!(decoded, "ab你  \u{2047} ");
            assert_eq!(sp.decode_pieces(&["<0xE4>", "▁a"]), "\u{FFFD} a");
            // Invalid bytes inside a run are replaced one by one, valid characters kept.
            let run = [
                "<0xE4>", "<0xBD>", "<0x61>", "<0xE4>", "<0xBD>", "<0xA0>", "<0xE4>",
            ];
            assert_eq!(sp.decode_pieces(&run), "\u{FFFD}\u{FFFD}a你\u{FFFD}");
        }
    }

    /// Pins the known difference (see `pipeline`), so that a `tokenizers` that changes it is
    /// noticed: sentencepiece gives `A\u{301}` and `ガ`.
    #[test]
    fn charsmap_rules_apply_per_grapheme_cluster() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/chatglm6b-tiny/model/ice_text.model"
        );
        let proto = crate::tokenizer::proto::parse_model(&std::fs::read(path).unwrap()).unwrap();
        let sp = SentencePiece::new(&proto).unwrap();
        assert_eq!(sp.decode_pieces(&pieces(&sp, "Ａ\u{301}")), "A");
        assert_eq!(sp.decode_pieces(&pieces(&sp, "ｶﾞ")), "カ\u{3099}");
        assert_eq!(sp.decode_pieces(&pieces(&sp, "e\u{301}")), "é");
    }

    #[test]
    fn damaged_charsmap_is_an_error() {
        assert!(pipeline::precompiled(&[0xFF, 0, 0, 0, 1, 2]).is_err());
        assert!(pipeline::precompiled(&[1]).is_err());
        // A unit whose offset leaves the array.
        let mut blob = 4u32.to_le_bytes().to_vec();
        blob.extend_from_slice(&(u32::MAX >> 1).to_le_bytes());
        assert!(pipeline::precompiled(&blob).is_err());
        assert!(pipeline::precompiled(&[]).unwrap().is_none());
    }
}
