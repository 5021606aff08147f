//! The pieces of a sentencepiece vocabulary with sentencepiece's lookup rules.
//!
//! The segmentation runs in `tokenizers`, but ChatGLM's Python code talks to sentencepiece in
//! piece strings (`PieceToId`, `IdToPiece`, `DecodePieces`), whose rules `tokenizers` does not
//! model: NORMAL/USER_DEFINED/UNUSED pieces are one table, the "reserved" ones (unknown, control,
//! byte) another that wins when a string is in both. This table answers those questions.

use std::collections::HashMap;

use super::proto::{Piece, PieceType};

/// One vocabulary entry.
#[derive(Debug)]
pub(crate) struct Entry {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
    /// The byte a `<0xXX>` piece stands for.
    pub byte: Option<u8>,
}

#[derive(Debug)]
pub(crate) struct Vocab {
    pub entries: Vec<Entry>,
    normal: HashMap<String, u32>,
    reserved: HashMap<String, u32>,
    pub unk_id: u32,
    /// Unknown text is spelled in byte pieces, all 256 of which are present.
    pub byte_fallback: bool,
}

pub(crate) fn byte_piece(b: u8) -> String {
    format!("<0x{b:02X}>")
}

impl Vocab {
    /// Checks the pieces as sentencepiece's `InitializePieces` does.
    pub(crate) fn new(pieces: &[Piece], byte_fallback: bool) -> Result<Self, String> {
        let byte_pieces: HashMap<String, u8> = (0..=255u8).map(|b| (byte_piece(b), b)).collect();
        let mut entries = Vec::with_capacity(pieces.len());
        let mut normal = HashMap::new();
        let mut reserved = HashMap::new();
        let mut unk_id = None;
        let mut bytes_found = [false; 256];
        for (i, p) in pieces.iter().enumerate() {
            let id = u32::try_from(i).map_err(|_| "too many pieces".to_string())?;
            if p.piece.is_empty() {
                return Err(format!("piece #{i} is empty"));
            }
            if p.piece.contains('\0') {
                return Err(format!("piece #{i} contains a NUL character"));
            }
            let map = if is_normal(p.kind) {
                &mut normal
            } else {
                &mut reserved
            };
            if map.insert(p.piece.clone(), id).is_some() {
                return Err(format!("piece {:?} is defined twice", p.piece));
            }
            let mut byte = None;
            match p.kind {
                PieceType::Unknown if unk_id.is_some() => {
                    return Err(format!("a second unknown piece {:?} (#{i})", p.piece));
                }
                PieceType::Unknown => unk_id = Some(id),
                PieceType::Byte => {
                    if !byte_fallback {
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
        if byte_fallback {
            if let Some(b) = bytes_found.iter().position(|&found| !found) {
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
            byte_fallback,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// `PieceToId` without the unknown fallback.
    pub(crate) fn lookup(&self, piece: &str) -> Option<u32> {
        self.reserved
            .get(piece)
            .or_else(|| self.normal.get(piece))
            .copied()
    }

    /// `PieceToId`: unknown strings map to the unknown piece.
    pub(crate) fn piece_to_id(&self, piece: &str) -> u32 {
        self.lookup(piece).unwrap_or(self.unk_id)
    }

    pub(crate) fn get(&self, id: u32) -> Option<&Entry> {
        self.entries.get(id as usize)
    }
}

/// Whether `piece` is spelled as a byte piece, `<0xXX>` with upper-case hex digits.
pub(crate) fn is_byte_piece(piece: &str) -> bool {
    let b = piece.as_bytes();
    b.len() == 6
        && piece.starts_with("<0x")
        && b[5] == b'>'
        && b[3..5]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
}

/// Pieces a segmenter may produce (sentencepiece's first lookup table).
pub(crate) fn is_normal(kind: PieceType) -> bool {
    matches!(
        kind,
        PieceType::Normal | PieceType::UserDefined | PieceType::Unused
    )
}
