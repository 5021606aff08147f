//! A small protobuf reader for sentencepiece's `ModelProto`.
//!
//! `tokenizers` cannot read a `.model` file (transformers converts them in Python), and a
//! generated reader (prost) would need `sentencepiece_model.proto` and a build step for the dozen
//! fields used here, so these few wire-format rules are written out by hand.
//!
//! Only the fields the tokenizer needs are kept; everything else is skipped the way any
//! protobuf parser skips unknown fields, so models written by newer trainers still load.
//! Proto2 rules apply: a scalar seen twice keeps the last value, a sub-message seen twice
//! is merged, and an enum value this code does not know leaves the field at its default.

/// Piece types of `ModelProto.SentencePiece.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_wire(v: u64) -> Option<Self> {
        Some(match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }
}

/// `TrainerSpec.ModelType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModelType {
    Unigram,
    Bpe,
    Word,
    Char,
}

#[derive(Debug, Clone)]
pub(crate) struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

#[derive(Debug, Clone)]
pub(crate) struct TrainerSpec {
    pub model_type: ModelType,
    pub byte_fallback: bool,
    pub treat_whitespace_as_suffix: bool,
    pub unk_surface: String,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        Self {
            model_type: ModelType::Unigram,
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
            // Proto default of `unk_surface`: " ⁇ ".
            unk_surface: " \u{2047} ".to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct NormalizerSpec {
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        Self {
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ModelProto {
    pub pieces: Vec<Piece>,
    pub trainer: TrainerSpec,
    pub normalizer: NormalizerSpec,
    pub denormalizer: Option<NormalizerSpec>,
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// One field as read off the wire.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Which message is being read, for error messages.
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    fn err(&self, msg: &str) -> String {
        format!(
            "{} at byte {} of {}: {msg}",
            self.what,
            self.pos,
            self.buf.len()
        )
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err(&format!("field of {n} bytes runs past the end")))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Next `(field number, value)`, or `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(self.err("field number 0"));
        }
        let value = match (key & 7) as u8 {
            VARINT => Value::Varint(self.varint()?),
            FIXED64 => {
                self.take(8)?;
                Value::Fixed64
            }
            LEN => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| self.err("length does not fit"))?;
                Value::Bytes(self.take(n)?)
            }
            FIXED32 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            w => return Err(self.err(&format!("unsupported wire type {w}"))),
        };
        Ok(Some((field, value)))
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
}

fn parse_piece(buf: &[u8], index: usize) -> Result<Piece, String> {
    let mut r = Reader::new(buf, "SentencePiece");
    let mut p = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => p.piece = utf8(b, &format!("piece #{index}"))?,
            (2, Value::Fixed32(bits)) => p.score = f32::from_bits(bits),
            (3, Value::Varint(v)) => {
                if let Some(kind) = PieceType::from_wire(v) {
                    p.kind = kind;
                }
            }
            _ => {}
        }
    }
    Ok(p)
}

fn parse_trainer(buf: &[u8], spec: &mut TrainerSpec) -> Result<(), String> {
    let mut r = Reader::new(buf, "TrainerSpec");
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (3, Value::Varint(v)) => {
                spec.model_type = match v {
                    1 => ModelType::Unigram,
                    2 => ModelType::Bpe,
                    3 => ModelType::Word,
                    4 => ModelType::Char,
                    _ => spec.model_type,
                }
            }
            (24, Value::Varint(v)) => spec.treat_whitespace_as_suffix = v != 0,
            (35, Value::Varint(v)) => spec.byte_fallback = v != 0,
            (44, Value::Bytes(b)) => spec.unk_surface = utf8(b, "unk_surface")?,
            _ => {}
        }
    }
    Ok(())
}

fn parse_normalizer(buf: &[u8], spec: &mut NormalizerSpec) -> Result<(), String> {
    let mut r = Reader::new(buf, "NormalizerSpec");
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (2, Value::Bytes(b)) => spec.precompiled_charsmap = b.to_vec(),
            (3, Value::Varint(v)) => spec.add_dummy_prefix = v != 0,
            (4, Value::Varint(v)) => spec.remove_extra_whitespaces = v != 0,
            (5, Value::Varint(v)) => spec.escape_whitespaces = v != 0,
            _ => {}
        }
    }
    Ok(())
}

/// Parses a serialized `ModelProto`. The error is a reason without the file name.
pub(crate) fn parse_model(buf: &[u8]) -> Result<ModelProto, String> {
    let mut model = ModelProto::default();
    let mut r = Reader::new(buf, "ModelProto");
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => {
                let index = model.pieces.len();
                model.pieces.push(parse_piece(b, index)?);
            }
            (2, Value::Bytes(b)) => parse_trainer(b, &mut model.trainer)?,
            (3, Value::Bytes(b)) => parse_normalizer(b, &mut model.normalizer)?,
            (5, Value::Bytes(b)) => parse_normalizer(
                b,
                model
                    .denormalizer
                    .get_or_insert_with(NormalizerSpec::default),
            )?,
            _ => {}
        }
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn field(num: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    #[test]
    fn reads_pieces_and_specs() {
        let mut piece = Vec::new();
        field(1, "▁a".as_bytes(), &mut piece);
        piece.push(2 << 3 | 5);
        piece.extend_from_slice(&(-1.5f32).to_le_bytes());
        piece.extend_from_slice(&[3 << 3, 4]);
        let mut trainer = Vec::new();
        trainer.extend_from_slice(&[3 << 3, 2]);
        varint(35 << 3, &mut trainer);
        trainer.push(1);
        let mut norm = Vec::new();
        norm.extend_from_slice(&[4 << 3, 0]);
        let mut model = Vec::new();
        field(1, &piece, &mut model);
        field(2, &trainer, &mut model);
        field(3, &norm, &mut model);
        let m = parse_model(&model).unwrap();
        assert_eq!(m.pieces.len(), 1);
        assert_eq!(m.pieces[0].piece, "▁a");
        assert_eq!(m.pieces[0].score, -1.5);
        assert_eq!(m.pieces[0].kind, PieceType::UserDefined);
        assert_eq!(m.trainer.model_type, ModelType::Bpe);
        assert!(m.trainer.byte_fallback);
        assert!(!m.normalizer.remove_extra_whitespaces);
        assert!(m.normalizer.add_dummy_prefix);
    }

    #[test]
    fn truncation_is_an_error() {
        let mut model = Vec::new();
        field(1, &[10, 5, b'a'], &mut model);
        assert!(parse_model(&model).is_err());
        assert!(parse_model(&[0x0A, 0x80]).is_err());
    }
}
