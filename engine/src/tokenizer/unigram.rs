//! Unigram segmentation: sentencepiece's optimized Viterbi (`EncodeOptimized`).
//!
//! Ties and rounding follow the C++ code exactly, because a different but equally
//! scored path would give different ids: candidates are compared in the order the C++
//! visits them (start position ascending, then piece length ascending, then the unknown
//! node), a candidate replaces the best only when strictly better, and the arithmetic
//! mixes `f32` and `f64` the way the C++ expression types do.

use std::ops::Range;

use super::proto::PieceType;
use super::sentencepiece::Vocab;
use super::trie::Trie;
use super::utf8;

/// sentencepiece's `kUnkPenalty`: an unknown character costs this much below the worst piece.
const UNK_PENALTY: f32 = 10.0;

#[derive(Debug)]
pub(crate) struct Unigram {
    trie: Trie,
    min_score: f32,
    max_score: f32,
}

#[derive(Clone, Copy)]
struct Best {
    id: u32,
    score: f32,
    /// Start of the last piece of the best path ending here; `None` while unreached.
    starts_at: Option<usize>,
}

impl Unigram {
    pub(crate) fn new(vocab: &Vocab) -> Result<Self, String> {
        let trie = Trie::build(vocab.normal_pieces());
        if trie.is_empty() {
            return Err("unigram model has no NORMAL, USER_DEFINED or UNUSED pieces".into());
        }
        // The C++ starts max at FLT_MIN (the smallest positive float), not at -FLT_MAX, so
        // with all-negative scores user-defined pieces score about -0.1.
        let (mut min_score, mut max_score) = (f32::MAX, f32::MIN_POSITIVE);
        for e in vocab.entries.iter().filter(|e| e.kind == PieceType::Normal) {
            min_score = min_score.min(e.score);
            max_score = max_score.max(e.score);
        }
        Ok(Self {
            trie,
            min_score,
            max_score,
        })
    }

    /// Segments normalized text into `(byte range, id)`; unknown characters get the unknown id.
    pub(crate) fn encode(&self, vocab: &Vocab, normalized: &[u8]) -> Vec<(Range<usize>, u32)> {
        let size = normalized.len();
        let unk_score = self.min_score - UNK_PENALTY;
        let mut best = vec![
            Best {
                id: vocab.unk_id,
                score: 0.0,
                starts_at: None
            };
            size + 1
        ];
        let mut starts_at = 0;
        while starts_at < size {
            let till_here = best[starts_at].score;
            let mblen = utf8::one_char_len(normalized[starts_at]).min(size - starts_at);
            let mut has_single_node = false;
            for (length, id) in self.trie.prefixes(&normalized[starts_at..]) {
                let kind = vocab.kind(id);
                if kind == Some(PieceType::Unused) {
                    continue;
                }
                // `length * max_score_ - 0.1` is a double in C++; piece scores are floats.
                let score = if kind == Some(PieceType::UserDefined) {
                    f64::from(length as f32 * self.max_score) - 0.1
                } else {
                    f64::from(vocab.score(id))
                };
                let candidate = score + f64::from(till_here);
                let target = &mut best[starts_at + length];
                if target.starts_at.is_none() || candidate > f64::from(target.score) {
                    *target = Best {
                        id,
                        score: candidate as f32,
                        starts_at: Some(starts_at),
                    };
                }
                if length == mblen {
                    has_single_node = true;
                }
            }
            if !has_single_node {
                let candidate = unk_score + till_here;
                let target = &mut best[starts_at + mblen];
                if target.starts_at.is_none() || candidate > target.score {
                    *target = Best {
                        id: vocab.unk_id,
                        score: candidate,
                        starts_at: Some(starts_at),
                    };
                }
            }
            starts_at += mblen;
        }

        let mut out = Vec::new();
        let mut end = size;
        while end > 0 {
            // Every position a character ends at was reached (at worst by an unknown node).
            let Some(start) = best[end].starts_at else {
                break;
            };
            out.push((start..end, best[end].id));
            end = start;
        }
        out.reverse();
        out
    }
}
