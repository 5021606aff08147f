//! The ChatGLM2-6B / ChatGLM3-6B tokenizer (`SPTokenizer` + `ChatGLMTokenizer` of their
//! `tokenization_chatglm.py`, run by transformers 4.33).
//!
//! Unlike ChatGLM-6B's, it leaves text to sentencepiece as it is (no whitespace tokens, no
//! image-token offset) and keeps its special tokens outside the sentencepiece model: they get the
//! ids right after its vocabulary, in the order `[MASK] [gMASK] [sMASK] sop eop`, then, for
//! ChatGLM3, `<|system|> <|user|> <|assistant|> <|observation|>`. `tokenizer(text)` puts
//! `[gMASK] sop` first. A piece is looked up among those names before the vocabulary, as
//! `convert_token_to_id` does, and ids decode through `DecodePieces` (special ids as their names,
//! sentencepiece's `<s>`, `</s>` and `<unk>` as nothing).

use serde_json::Value;

use super::processor::SentencePiece;
use super::text;
use super::SpecialIds;
use crate::config::Family;

/// Special tokens of both generations, in id order after the vocabulary.
const COMMON: [&str; 5] = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"];
/// ChatGLM3's role tokens, after [`COMMON`].
pub(crate) const ROLES: [&str; 4] = ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"];

#[derive(Debug)]
pub(crate) struct Glm2Tokenizer {
    sp: SentencePiece,
    family: Family,
    /// Names of the special tokens; token `i` has id `sp.len() + i`.
    specials: Vec<&'static str>,
    /// Strings transformers cuts the text at before tokenizing (the special tokens named in
    /// `tokenizer_config.json`), longest first.
    no_split: Vec<String>,
    /// sentencepiece's own `<s>`, `</s>` and `<unk>` (the pad id), which decode to nothing.
    bos: Option<u32>,
    eos: u32,
    unk: u32,
}

impl Glm2Tokenizer {
    pub(crate) fn new(sp: SentencePiece, family: Family, config: Option<&Value>) -> Self {
        let mut specials = COMMON.to_vec();
        if family == Family::ChatGlm3 {
            specials.extend(ROLES);
        }
        let control = |piece: &str| sp.lookup(piece);
        let bos = control("<s>");
        let eos = control("</s>").unwrap_or(2);
        let unk = sp.piece_to_id("<unk>");
        let mut no_split: Vec<String> = config
            .and_then(Value::as_object)
            .map(|obj| {
                ["bos_token", "eos_token", "unk_token", "pad_token"]
                    .iter()
                    .filter_map(|key| match obj.get(*key)? {
                        Value::String(s) => Some(s.clone()),
                        Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
                        _ => None,
                    })
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        no_split.sort_by_key(|s| std::cmp::Reverse(s.len()));
        no_split.dedup();
        Self {
            sp,
            family,
            specials,
            no_split,
            bos,
            eos,
            unk,
        }
    }

    pub(crate) fn family(&self) -> Family {
        self.family
    }

    /// The id of a special token by name (`get_command`), `None` when this generation lacks it.
    pub(crate) fn command(&self, name: &str) -> Option<u32> {
        self.specials
            .iter()
            .position(|s| *s == name)
            .map(|i| (self.sp.len() + i) as u32)
    }

    fn command_or_unk(&self, name: &str) -> u32 {
        self.command(name).unwrap_or(self.unk)
    }

    /// `convert_token_to_id`: special names first, then the vocabulary.
    fn convert_token(&self, token: &str) -> u32 {
        self.command(token)
            .unwrap_or_else(|| self.sp.piece_to_id(token))
    }

    /// `SPTokenizer.encode(text)`: sentencepiece ids, nothing else.
    pub(crate) fn sp_encode(&self, text: &str) -> Vec<u32> {
        self.sp.encode_ids(text)
    }

    /// `tokenizer.encode(text, add_special_tokens=False)`.
    pub(crate) fn encode_plain(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            // The earliest no-split token, longest at a position.
            let cut = self
                .no_split
                .iter()
                .filter_map(|t| rest.find(t.as_str()).map(|at| (at, t)))
                .min_by_key(|(at, t)| (*at, std::cmp::Reverse(t.len())));
            // transformers strips whitespace on both sides of a special token given as a string.
            let (chunk, token) = match cut {
                Some((at, token)) => (text::py_rstrip(&rest[..at]), Some((at, token))),
                None => (rest, None),
            };
            if !chunk.is_empty() {
                ids.extend(
                    self.sp
                        .encode_pieces(chunk)
                        .into_iter()
                        .map(|p| self.convert_token(p)),
                );
            }
            match token {
                Some((at, token)) => {
                    ids.push(self.convert_token(token));
                    rest = text::py_lstrip(&rest[at + token.len()..]);
                }
                None => break,
            }
        }
        ids
    }

    /// `[gMASK] sop`, which `tokenizer(text)` puts before the text.
    pub(crate) fn prefix(&self) -> [u32; 2] {
        [self.command_or_unk("[gMASK]"), self.command_or_unk("sop")]
    }

    /// `tokenizer.decode(ids)`.
    pub(crate) fn decode(&self, ids: &[u32]) -> String {
        let pieces: Vec<&str> = ids.iter().map(|&id| self.id_to_token(id)).collect();
        self.sp.decode_pieces(&pieces)
    }

    /// `convert_id_to_token`: special names, nothing for `<s>`, `</s>`, `<unk>` and ids past the
    /// vocabulary, the piece otherwise.
    fn id_to_token(&self, id: u32) -> &str {
        let n = self.sp.len() as u32;
        if let Some(name) = id
            .checked_sub(n)
            .and_then(|i| self.specials.get(i as usize))
        {
            return name;
        }
        if id == self.eos || Some(id) == self.bos || id == self.unk {
            return "";
        }
        self.sp.id_to_piece(id).unwrap_or("")
    }

    pub(crate) fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.command(piece).or_else(|| self.sp.lookup(piece))
    }

    pub(crate) fn piece(&self, id: u32) -> Option<&str> {
        let n = self.sp.len() as u32;
        match id.checked_sub(n) {
            Some(i) => self.specials.get(i as usize).copied(),
            None => self.sp.id_to_piece(id),
        }
    }

    /// The vocabulary and the special tokens (the padded embedding may have more rows).
    pub(crate) fn vocab_size(&self) -> usize {
        self.sp.len() + self.specials.len()
    }

    pub(crate) fn special_ids(&self) -> SpecialIds {
        SpecialIds {
            mask: self.command_or_unk("[MASK]"),
            gmask: self.command_or_unk("[gMASK]"),
            smask: self.command_or_unk("[sMASK]"),
            bos: self.command_or_unk("sop"),
            eos: self.eos,
            pad: self.unk,
            unk: self.unk,
        }
    }

    /// The ids generation stops at: `</s>`, and for ChatGLM3 `<|user|>` and `<|observation|>`
    /// (the next turn is not the model's).
    pub(crate) fn stop_ids(&self) -> Vec<u32> {
        let mut ids = vec![self.eos];
        ids.extend(
            ["<|user|>", "<|observation|>"]
                .iter()
                .filter_map(|n| self.command(n)),
        );
        ids
    }
}
