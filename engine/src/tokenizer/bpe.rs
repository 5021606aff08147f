//! BPE segmentation as sentencepiece's `bpe::Model` does it (without dropout).
//!
//! sentencepiece's BPE has no merge list: it repeatedly merges the adjacent pair whose
//! concatenation is the highest-scoring vocabulary piece (leftmost on ties). User-defined
//! pieces are frozen whole symbols, and merges into UNUSED pieces are undone at the end.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::ops::Range;

use super::proto::PieceType;
use super::sentencepiece::Vocab;
use super::trie::Trie;
use super::utf8;

struct Symbol {
    range: Range<usize>,
    prev: Option<usize>,
    next: Option<usize>,
    freeze: bool,
}

struct Pair {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pair {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Segments normalized text into `(byte range, id)`.
pub(crate) fn encode(
    vocab: &Vocab,
    matcher: Option<&Trie>,
    normalized: &[u8],
) -> Vec<(Range<usize>, u32)> {
    let mut symbols: Vec<Symbol> = Vec::new();
    let mut pos = 0;
    while pos < normalized.len() {
        let rest = &normalized[pos..];
        let user = matcher.and_then(|m| m.longest_prefix(rest));
        let len = user.unwrap_or_else(|| utf8::one_char_len(rest[0]).min(rest.len()));
        let index = symbols.len();
        symbols.push(Symbol {
            range: pos..pos + len,
            prev: index.checked_sub(1),
            next: (pos + len < normalized.len()).then_some(index + 1),
            freeze: user.is_some(),
        });
        pos += len;
    }

    let mut agenda = BinaryHeap::new();
    // Merged text → its two halves, for pieces that must be split again (UNUSED).
    let mut rev_merge: HashMap<&[u8], (Range<usize>, Range<usize>)> = HashMap::new();
    let mut add_pair = |symbols: &[Symbol],
                        left: Option<usize>,
                        right: Option<usize>,
                        agenda: &mut BinaryHeap<Pair>| {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (l, r) = (&symbols[left], &symbols[right]);
        if l.freeze || r.freeze {
            return;
        }
        let merged = &normalized[l.range.start..r.range.end];
        let Some(id) = vocab.normal_id(merged) else {
            return;
        };
        agenda.push(Pair {
            score: vocab.score(id),
            left,
            right,
            size: merged.len(),
        });
        if vocab.kind(id) == Some(PieceType::Unused) {
            rev_merge.insert(merged, (l.range.clone(), r.range.clone()));
        }
    };
    for i in 1..symbols.len() {
        add_pair(&symbols, Some(i - 1), Some(i), &mut agenda);
    }

    while let Some(top) = agenda.pop() {
        let (l, r) = (&symbols[top.left], &symbols[top.right]);
        // Skip pairs made stale by an earlier merge.
        if l.range.is_empty() || r.range.is_empty() || l.range.len() + r.range.len() != top.size {
            continue;
        }
        let right_next = r.next;
        symbols[top.left].range.end = symbols[top.right].range.end;
        symbols[top.left].next = right_next;
        if let Some(n) = right_next {
            symbols[n].prev = Some(top.left);
        }
        let right_start = symbols[top.right].range.start;
        symbols[top.right].range = right_start..right_start;
        add_pair(
            &symbols,
            symbols[top.left].prev,
            Some(top.left),
            &mut agenda,
        );
        add_pair(
            &symbols,
            Some(top.left),
            symbols[top.left].next,
            &mut agenda,
        );
    }

    let mut out = Vec::new();
    let mut index = (!symbols.is_empty()).then_some(0);
    while let Some(i) = index {
        let mut stack = vec![symbols[i].range.clone()];
        while let Some(range) = stack.pop() {
            let text = &normalized[range.clone()];
            let id = vocab.piece_to_id(text);
            match rev_merge.get(text) {
                Some((a, b)) if vocab.kind(id) == Some(PieceType::Unused) => {
                    stack.push(b.clone());
                    stack.push(a.clone());
                }
                _ => out.push((range, id)),
            }
        }
        index = symbols[i].next;
    }
    out
}
