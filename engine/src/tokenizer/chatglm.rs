//! ChatGLM-6B's tokenizer layer (`SPTokenizer` + `ChatGLMTokenizer` as run by
//! transformers 4.33) on top of the sentencepiece processor.
//!
//! Encoding `tokenizer(text)` goes: lowercase outside special tokens (if configured),
//! cut the text at special-token occurrences and strip whitespace next to them, then per
//! chunk `remove_space`/lowercase, `\n`/`\t`/space runs → `<n>`/`<|tab|>`/`<|blank_N|>`,
//! sentencepiece pieces, each piece → id (+ `num_image_tokens`), and `[gMASK] <sop>` last.
//! Decoding reverses it: drop `<pad>`, ids → pieces, `DecodePieces`, whitespace tokens
//! back, `clean_up_tokenization`.

use std::borrow::Cow;

use super::config::{SpecialToken, TokenizerConfig};
use super::processor::SentencePiece;
use super::text;

/// `SPTokenizer.max_blank_length`: the longest run one `<|blank_N|>` token stands for.
const MAX_BLANK_LENGTH: usize = 80;

/// Ids of ChatGLM's special tokens (with the image-token offset applied).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub mask: u32,
    pub gmask: u32,
    pub smask: u32,
    /// `<sop>`, the start of the generated part.
    pub bos: u32,
    /// `<eop>`, which ends generation.
    pub eos: u32,
    pub pad: u32,
    pub unk: u32,
}

/// The ChatGLM-6B tokenizer, equal in ids and decoded text to the official Python one.
#[derive(Debug)]
pub(crate) struct Glm1Tokenizer {
    sp: SentencePiece,
    num_image_tokens: u32,
    do_lower_case: bool,
    remove_space: bool,
    /// transformers' `unique_no_split_tokens`: sorted, deduplicated special tokens.
    no_split: Vec<SpecialToken>,
    /// Special tokens absent from the vocabulary get ids past it, as transformers'
    /// `sanitize_special_tokens` adds them.
    added: Vec<(String, u32)>,
    /// `[gMASK]`, `<sop>` as `build_inputs_with_special_tokens` looks them up.
    suffix: [u32; 2],
    special: SpecialIds,
    /// Dropped before decoding; `None` when the config unsets `pad_token`.
    pad_id: Option<u32>,
}

impl Glm1Tokenizer {
    pub(crate) fn build(sp: SentencePiece, config: TokenizerConfig) -> Self {
        let specials: Vec<SpecialToken> = [
            &config.bos,
            &config.eos,
            &config.unk,
            &config.sep,
            &config.pad,
            &config.cls,
            &config.mask,
        ]
        .into_iter()
        .flatten()
        .chain(&config.additional)
        .filter(|t| !t.content.is_empty())
        .cloned()
        .collect();

        let mut tok = Self {
            sp,
            num_image_tokens: config.num_image_tokens,
            do_lower_case: config.do_lower_case,
            remove_space: config.remove_space,
            no_split: Vec::new(),
            added: Vec::new(),
            suffix: [0, 0],
            special: SpecialIds::default(),
            pad_id: None,
        };

        let unk_content = config.unk.as_ref().map_or("<unk>", |t| t.content.as_str());
        let unk_id = tok.sp_lookup(unk_content);
        let base = tok.vocab_size() as u32;
        for t in &specials {
            let missing = t.content != unk_content && tok.sp_lookup(&t.content) == unk_id;
            if missing && !tok.added.iter().any(|(c, _)| *c == t.content) {
                let id = base + tok.added.len() as u32;
                tok.added.push((t.content.clone(), id));
            }
        }
        // transformers looks strip flags up in a dict of the AddedToken objects, so the
        // last object with a given content wins and plain strings never override one.
        for t in specials {
            match tok.no_split.iter_mut().find(|s| s.content == t.content) {
                Some(s) if t.added_token => *s = t,
                Some(_) => {}
                None => tok.no_split.push(t),
            }
        }
        tok.no_split.sort_by(|a, b| a.content.cmp(&b.content));

        let content = |t: &Option<SpecialToken>, default: &str| {
            t.as_ref()
                .map_or(default.to_string(), |t| t.content.clone())
        };
        let bos = content(&config.bos, "<sop>");
        tok.suffix = [tok.sp_lookup(&config.gmask), tok.sp_lookup(&bos)];
        tok.special = SpecialIds {
            mask: tok.convert_token(&content(&config.mask, "[MASK]")),
            gmask: tok.convert_token(&config.gmask),
            smask: tok.sp_lookup("[sMASK]"),
            bos: tok.convert_token(&bos),
            eos: tok.convert_token(&content(&config.eos, "<eop>")),
            pad: tok.convert_token(&content(&config.pad, "<pad>")),
            unk: tok.convert_token(unk_content),
        };
        tok.pad_id = config.pad.is_some().then_some(tok.special.pad);
        tok
    }

    /// `SPTokenizer.__getitem__(str)`: `<image_N>` is N, anything else is `PieceToId` plus
    /// the image offset (unknown strings give the unknown id).
    fn sp_lookup(&self, token: &str) -> u32 {
        self.image_index(token).unwrap_or_else(|| {
            self.sp
                .piece_to_id(token)
                .saturating_add(self.num_image_tokens)
        })
    }

    fn image_index(&self, token: &str) -> Option<u32> {
        let digits = token.strip_prefix("<image_")?.strip_suffix('>')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// transformers' `convert_tokens_to_ids` for one token: added tokens first.
    fn convert_token(&self, token: &str) -> u32 {
        match self.added.iter().find(|(c, _)| c == token) {
            Some(&(_, id)) => id,
            None => self.sp_lookup(token),
        }
    }

    fn no_split_token(&self, chunk: &str) -> Option<&SpecialToken> {
        self.no_split.iter().find(|t| t.content == chunk)
    }

    /// The special token starting at the beginning of `s`, if any (longest wins).
    fn special_at(&self, s: &str) -> Option<&str> {
        self.no_split
            .iter()
            .map(|t| t.content.as_str())
            .filter(|c| s.starts_with(c))
            .max_by_key(|c| c.len())
    }

    /// `do_lower_case` as transformers applies it before splitting: character by character,
    /// leaving occurrences of special tokens alone.
    fn lower_outside_specials(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while let Some(c) = text[i..].chars().next() {
            if let Some(sp) = self
                .no_split
                .iter()
                .map(|t| t.content.as_str())
                .find(|t| text[i..].starts_with(t))
            {
                out.push_str(sp);
                i += sp.len();
            } else {
                out.extend(c.to_lowercase());
                i += c.len_utf8();
            }
        }
        out
    }

    /// transformers' `tokens_trie.split`: text cut before and after special tokens.
    fn split_specials(&self, text: &str) -> Vec<String> {
        let mut chunks = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < text.len() {
            if let Some(sp) = self.special_at(&text[i..]) {
                if start < i {
                    chunks.push(text[start..i].to_string());
                }
                chunks.push(sp.to_string());
                i += sp.len();
                start = i;
            } else {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
        if start < text.len() {
            chunks.push(text[start..].to_string());
        }
        chunks
    }

    /// `ChatGLMTokenizer._tokenize` for one chunk without special tokens: the pieces.
    fn tokenize_chunk(&self, chunk: &str) -> Vec<&str> {
        let mut s = Cow::Borrowed(chunk);
        if self.remove_space {
            s = Cow::Owned(text::collapse_spaces(&s));
        }
        if self.do_lower_case {
            s = Cow::Owned(s.to_lowercase());
        }
        self.sp
            .encode_pieces(&text::encode_whitespaces(&s, MAX_BLANK_LENGTH))
    }

    /// Text ids without special tokens: `tokenizer.encode(text, add_special_tokens=False)`.
    pub fn encode_plain(&self, text: &str) -> Vec<u32> {
        let text: Cow<'_, str> = if self.do_lower_case {
            Cow::Owned(self.lower_outside_specials(text))
        } else {
            Cow::Borrowed(text)
        };
        let mut chunks = self.split_specials(&text);
        for i in 0..chunks.len() {
            let Some(tok) = self.no_split_token(&chunks[i]) else {
                continue;
            };
            let (lstrip, rstrip) = (tok.lstrip, tok.rstrip);
            if rstrip && i + 1 < chunks.len() && !chunks[i + 1].is_empty() {
                chunks[i + 1] = text::py_lstrip(&chunks[i + 1]).to_string();
            }
            if lstrip && i > 0 && !chunks[i - 1].is_empty() {
                chunks[i - 1] = text::py_rstrip(&chunks[i - 1]).to_string();
            }
        }
        let mut ids = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            if self.no_split_token(chunk).is_some() {
                ids.push(self.convert_token(chunk));
            } else {
                ids.extend(
                    self.tokenize_chunk(chunk)
                        .into_iter()
                        .map(|p| self.convert_token(p)),
                );
            }
        }
        ids
    }

    /// Model input ids: `tokenizer(text)["input_ids"]`, i.e. the text ids + `[gMASK]` + `<sop>`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = self.encode_plain(text);
        ids.extend_from_slice(&self.suffix);
        ids
    }

    /// `SPTokenizer.encode(text, add_dummy_prefix=...)`, which bypasses special-token
    /// handling. Without the dummy prefix it encodes `"<n>" + text` and drops the first two
    /// ids (`▁` and `<n>`), which is how the official code avoids the leading `▁`.
    pub fn sp_encode(&self, text: &str, add_dummy_prefix: bool) -> Vec<u32> {
        let mut t = text::encode_whitespaces(text, MAX_BLANK_LENGTH);
        if !add_dummy_prefix {
            t.insert_str(0, text::NEWLINE_TOKEN);
        }
        let skip = if add_dummy_prefix { 0 } else { 2 };
        let ids = self.sp.encode_ids(&t).into_iter().skip(skip);
        ids.map(|id| id.saturating_add(self.num_image_tokens))
            .collect()
    }

    /// `tokenizer.decode(ids)`. Ids past the vocabulary, which make the Python code raise,
    /// are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut sub_texts: Vec<String> = Vec::new();
        let mut pieces: Vec<Cow<'_, str>> = Vec::new();
        let flush = |pieces: &mut Vec<Cow<'_, str>>, sub_texts: &mut Vec<String>| {
            if !pieces.is_empty() {
                let s = self.sp.decode_pieces(pieces);
                sub_texts.push(text::decode_whitespaces(&s, MAX_BLANK_LENGTH));
                pieces.clear();
            }
        };
        for &id in ids.iter().filter(|&&id| Some(id) != self.pad_id) {
            if let Some((content, _)) = self.added.iter().find(|(_, a)| *a == id) {
                flush(&mut pieces, &mut sub_texts);
                sub_texts.push(content.clone());
            } else if id < self.num_image_tokens {
                pieces.push(Cow::Owned(format!("<image_{id}>")));
            } else if let Some(p) = self.sp.id_to_piece(id - self.num_image_tokens) {
                pieces.push(Cow::Borrowed(p));
            }
        }
        flush(&mut pieces, &mut sub_texts);
        text::clean_up_tokenization(sub_texts.join(" "))
    }

    /// The id of a vocabulary piece (or `<image_N>`), `None` when it is not in the vocabulary.
    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        if let Some(n) = self.image_index(piece) {
            return (n < self.num_image_tokens).then_some(n);
        }
        if let Some(&(_, id)) = self.added.iter().find(|(c, _)| c == piece) {
            return Some(id);
        }
        self.sp
            .lookup(piece)
            .map(|id| id.saturating_add(self.num_image_tokens))
    }

    /// The piece of a text id; `None` for image ids (they have no piece) and unknown ids.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        if let Some((content, _)) = self.added.iter().find(|(_, a)| *a == id) {
            return Some(content);
        }
        self.sp.id_to_piece(id.checked_sub(self.num_image_tokens)?)
    }

    /// `num_image_tokens` + the sentencepiece vocabulary size (the model's embedding rows).
    pub fn vocab_size(&self) -> usize {
        self.num_image_tokens as usize + self.sp.len()
    }

    pub fn special_ids(&self) -> SpecialIds {
        self.special
    }

    /// The offset of text ids (0 in current chatglm-6b configs, 20000 in older ones).
    pub fn num_image_tokens(&self) -> u32 {
        self.num_image_tokens
    }
}
