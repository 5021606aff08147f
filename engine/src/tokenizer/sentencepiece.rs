//! A pure-Rust `SentencePieceProcessor`: the vocabulary with sentencepiece's lookup rules,
//! `EncodeAsPieces` (normalize, segment, byte fallback or unknown merging) and
//! `DecodePieces` (byte runs, unknown surface, dummy-prefix removal, `▁` → space).
//!
//! It works on pieces rather than ids because ChatGLM's Python tokenizer does: it asks
//! sentencepiece for pieces and maps each through `PieceToId`, and decodes by handing
//! `IdToPiece` strings back to `DecodePieces`.

use std::borrow::Cow;
use std::collections::HashMap;

use super::bpe;
use super::normalizer::{Normalizer, SPACE_SYMBOL};
use super::proto::{ModelProto, ModelType, PieceType};
use super::trie::Trie;
use super::unigram::Unigram;
use super::utf8;

/// One vocabulary entry.
#[derive(Debug)]
pub(crate) struct Entry {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
    /// The byte a `<0xXX>` piece stands for.
    pub byte: Option<u8>,
}

/// The pieces and sentencepiece's two lookup tables: NORMAL/USER_DEFINED/UNUSED pieces
/// are what the segmenters may produce; the others (unknown, control, byte) are
/// "reserved" and win when `PieceToId` is asked for a string found in both.
#[derive(Debug)]
pub(crate) struct Vocab {
    pub entries: Vec<Entry>,
    normal: HashMap<Vec<u8>, u32>,
    reserved: HashMap<Vec<u8>, u32>,
    pub unk_id: u32,
}

fn byte_piece(b: u8) -> String {
    format!("<0x{b:02X}>")
}

impl Vocab {
    /// Checks the pieces as sentencepiece's `InitializePieces` does.
    fn new(model: &ModelProto) -> Result<Self, String> {
        let byte_pieces: HashMap<String, u8> = (0..=255u8).map(|b| (byte_piece(b), b)).collect();
        let mut entries = Vec::with_capacity(model.pieces.len());
        let mut normal = HashMap::new();
        let mut reserved = HashMap::new();
        let mut unk_id = None;
        let mut bytes_found = [false; 256];
        for (i, p) in model.pieces.iter().enumerate() {
            let id = u32::try_from(i).map_err(|_| "too many pieces".to_string())?;
            if p.piece.is_empty() {
                return Err(format!("piece #{i} is empty"));
            }
            if p.piece.contains('\0') {
                return Err(format!("piece #{i} contains a NUL character"));
            }
            let is_normal = matches!(
                p.kind,
                PieceType::Normal | PieceType::UserDefined | PieceType::Unused
            );
            let map = if is_normal {
                &mut normal
            } else {
                &mut reserved
            };
            if map.insert(p.piece.as_bytes().to_vec(), id).is_some() {
                return Err(format!("piece {:?} is defined twice", p.piece));
            }
            let mut byte = None;
            match p.kind {
                PieceType::Unknown if unk_id.is_some() => {
                    return Err(format!("a second unknown piece {:?} (#{i})", p.piece));
                }
                PieceType::Unknown => unk_id = Some(id),
                PieceType::Byte => {
                    if !model.trainer.byte_fallback {
                        return Err(format!(
                            "byte piece {:?} found although byte_fallback is false",
                            p.piece
                        ));
                    }
                    let b = *byte_pieces.get(&p.piece).ok_or_else(|| {
                        format!("byte piece {:?} is not of the form <0xXX>", p.piece)
                    })?;
                    bytes_found[usize::from(b)] = true;
                    byte = Some(b);
                }
                _ => {}
            }
            entries.push(Entry {
                piece: p.piece.clone(),
                score: p.score,
                kind: p.kind,
                byte,
            });
        }
        let unk_id = unk_id.ok_or("no piece of type UNKNOWN")?;
        if model.trainer.byte_fallback {
            if let Some(b) = bytes_found.iter().position(|&f| !f) {
                return Err(format!(
                    "byte_fallback is set but piece <0x{b:02X}> is missing"
                ));
            }
        }
        Ok(Self {
            entries,
            normal,
            reserved,
            unk_id,
        })
    }

    /// `PieceToId` without the unknown fallback.
    pub(crate) fn lookup(&self, piece: &[u8]) -> Option<u32> {
        self.reserved
            .get(piece)
            .or_else(|| self.normal.get(piece))
            .copied()
    }

    /// `PieceToId`: unknown strings map to the unknown piece.
    pub(crate) fn piece_to_id(&self, piece: &[u8]) -> u32 {
        self.lookup(piece).unwrap_or(self.unk_id)
    }

    /// Lookup among the pieces a segmenter may produce (what BPE merges against).
    pub(crate) fn normal_id(&self, piece: &[u8]) -> Option<u32> {
        self.normal.get(piece).copied()
    }

    pub(crate) fn normal_pieces(&self) -> impl Iterator<Item = (&[u8], u32)> {
        self.normal.iter().map(|(k, &v)| (k.as_slice(), v))
    }

    pub(crate) fn kind(&self, id: u32) -> Option<PieceType> {
        self.entries.get(id as usize).map(|e| e.kind)
    }

    pub(crate) fn score(&self, id: u32) -> f32 {
        self.entries.get(id as usize).map_or(0.0, |e| e.score)
    }

    /// Trie of the user-defined pieces, which are never split or normalized.
    pub(crate) fn user_defined_trie(&self) -> Trie {
        Trie::build(
            self.entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.kind == PieceType::UserDefined)
                .map(|(i, e)| (e.piece.as_bytes(), i as u32)),
        )
    }
}

#[derive(Debug)]
enum Model {
    Unigram(Unigram),
    Bpe(Option<Trie>),
}

#[derive(Debug)]
pub(crate) struct SentencePiece {
    vocab: Vocab,
    normalizer: Normalizer,
    denormalizer: Option<Normalizer>,
    model: Model,
    byte_fallback: bool,
    unk_surface: String,
    /// Decoding strips the first `▁` only when encoding could have added one.
    strip_leading_space: bool,
    remove_extra_whitespaces: bool,
    byte_pieces: Vec<String>,
}

/// Why a model cannot be used: broken, or valid but of a kind this code does not run.
pub(crate) enum LoadError {
    Malformed(String),
    Unsupported(String),
}

impl SentencePiece {
    pub(crate) fn new(model: &ModelProto) -> Result<Self, LoadError> {
        let vocab = Vocab::new(model).map_err(LoadError::Malformed)?;
        let seg = match model.trainer.model_type {
            ModelType::Unigram => {
                Model::Unigram(Unigram::new(&vocab).map_err(LoadError::Malformed)?)
            }
            ModelType::Bpe => {
                let matcher = vocab.user_defined_trie();
                Model::Bpe((!matcher.is_empty()).then_some(matcher))
            }
            other => {
                return Err(LoadError::Unsupported(format!(
                    "model_type {other:?} (only UNIGRAM and BPE are implemented)"
                )))
            }
        };
        let normalizer = Normalizer::new(
            &model.normalizer,
            model.trainer.treat_whitespace_as_suffix,
            Some(vocab.user_defined_trie()),
        )
        .map_err(LoadError::Malformed)?;
        let denormalizer = match &model.denormalizer {
            Some(spec) if !spec.precompiled_charsmap.is_empty() => {
                Some(Normalizer::new(spec, false, None).map_err(LoadError::Malformed)?)
            }
            _ => None,
        };
        Ok(Self {
            vocab,
            normalizer,
            denormalizer,
            model: seg,
            byte_fallback: model.trainer.byte_fallback,
            unk_surface: model.trainer.unk_surface.clone(),
            strip_leading_space: model.normalizer.add_dummy_prefix
                || model.normalizer.remove_extra_whitespaces,
            remove_extra_whitespaces: model.normalizer.remove_extra_whitespaces,
            byte_pieces: (0..=255u8).map(byte_piece).collect(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.vocab.entries.len()
    }

    pub(crate) fn lookup(&self, piece: &str) -> Option<u32> {
        self.vocab.lookup(piece.as_bytes())
    }

    pub(crate) fn piece_to_id(&self, piece: &str) -> u32 {
        self.vocab.piece_to_id(piece.as_bytes())
    }

    pub(crate) fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.vocab
            .entries
            .get(id as usize)
            .map(|e| e.piece.as_str())
    }

    /// `EncodeAsPieces`.
    pub(crate) fn encode_pieces(&self, text: &str) -> Vec<Cow<'_, str>> {
        self.encode(text)
            .into_iter()
            .map(|(piece, _)| piece)
            .collect()
    }

    /// `EncodeAsIds`. Not always `PieceToId` of the pieces: a piece whose string is also
    /// a control or byte piece maps to that one by `PieceToId`.
    pub(crate) fn encode_ids(&self, text: &str) -> Vec<u32> {
        self.encode(text).into_iter().map(|(_, id)| id).collect()
    }

    fn encode(&self, text: &str) -> Vec<(Cow<'_, str>, u32)> {
        let normalized = self.normalizer.normalize(text.as_bytes());
        if normalized.is_empty() {
            return Vec::new();
        }
        let segments = match &self.model {
            Model::Unigram(u) => u.encode(&self.vocab, &normalized),
            Model::Bpe(matcher) => bpe::encode(&self.vocab, matcher.as_ref(), &normalized),
        };
        let mut out: Vec<(Cow<'_, str>, u32)> = Vec::with_capacity(segments.len());
        let mut prev_unknown = false;
        for (range, id) in segments {
            let surface = normalized.get(range).unwrap_or_default();
            let is_unknown = self.vocab.kind(id) == Some(PieceType::Unknown);
            if is_unknown && self.byte_fallback {
                out.extend(surface.iter().map(|&b| {
                    let piece = self.byte_pieces[usize::from(b)].as_str();
                    (
                        Cow::Borrowed(piece),
                        self.vocab.piece_to_id(piece.as_bytes()),
                    )
                }));
            } else if is_unknown {
                let s = String::from_utf8_lossy(surface);
                // Runs of unknown characters become one unknown piece.
                match out.last_mut() {
                    Some((last, _)) if prev_unknown => last.to_mut().push_str(&s),
                    _ => out.push((Cow::Owned(s.into_owned()), id)),
                }
            } else {
                // A segmenter only emits pieces it found, so the surface is the piece.
                let piece = match self.vocab.entries.get(id as usize) {
                    Some(e) if e.piece.as_bytes() == surface => Cow::Borrowed(e.piece.as_str()),
                    _ => Cow::Owned(String::from_utf8_lossy(surface).into_owned()),
                };
                out.push((piece, id));
            }
            prev_unknown = is_unknown;
        }
        out
    }

    /// `DecodePieces`.
    pub(crate) fn decode_pieces<S: AsRef<str>>(&self, pieces: &[S]) -> String {
        let mut text = String::new();
        let mut bytes = Vec::new();
        let mut is_bos_ws = true;
        let mut bos_ws_seen = false;
        for piece in pieces {
            let piece = piece.as_ref();
            let id = self.vocab.piece_to_id(piece.as_bytes());
            let entry = self.vocab.entries.get(id as usize);
            if let Some(b) = entry.and_then(|e| e.byte) {
                bytes.push(b);
                continue;
            }
            utf8::decode_bytes_lossy(&bytes, &mut text);
            bytes.clear();
            // Only the very first visible piece may lose its leading `▁`.
            if bos_ws_seen || !text.is_empty() {
                is_bos_ws = false;
            }
            bos_ws_seen = false;
            match entry.map(|e| e.kind) {
                Some(PieceType::Control) => {}
                Some(PieceType::Unknown) => {
                    if entry.is_some_and(|e| e.piece == piece) {
                        text.push_str(&self.unk_surface);
                    } else {
                        text.push_str(piece);
                    }
                }
                _ => {
                    let mut p = piece;
                    if is_bos_ws && self.strip_leading_space {
                        if let Some(rest) = p.strip_prefix(SPACE_SYMBOL) {
                            p = rest;
                            // With extra-whitespace removal every leading `▁` goes.
                            bos_ws_seen = !self.remove_extra_whitespaces;
                        }
                    }
                    text.push_str(&p.replace(SPACE_SYMBOL, " "));
                }
            }
        }
        utf8::decode_bytes_lossy(&bytes, &mut text);
        match &self.denormalizer {
            Some(d) => String::from_utf8_lossy(&d.normalize(text.as_bytes())).into_owned(),
            None => text,
        }
    }
}
