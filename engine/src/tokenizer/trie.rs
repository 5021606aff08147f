//! A compact byte trie over vocabulary pieces.
//!
//! sentencepiece keeps its pieces in a darts double array and walks it byte by byte; the
//! encoders only need "every piece that is a prefix of this text, shortest first", which
//! this trie answers the same way without depending on darts' layout.

use std::collections::BTreeMap;

/// Sentinel for "no key ends at this node".
const NO_VALUE: u32 = u32::MAX;

#[derive(Debug, Default)]
pub(crate) struct Trie {
    /// Children of node `i` are `labels/targets[child_start[i]..child_start[i + 1]]`,
    /// sorted by label.
    child_start: Vec<u32>,
    labels: Vec<u8>,
    targets: Vec<u32>,
    values: Vec<u32>,
}

impl Trie {
    /// Builds a trie from `(key, value)` pairs; a repeated key keeps its last value.
    pub(crate) fn build<'a>(entries: impl IntoIterator<Item = (&'a [u8], u32)>) -> Self {
        // Build with maps first, then flatten breadth-first so lookups touch contiguous memory.
        let mut nodes: Vec<(BTreeMap<u8, usize>, u32)> = vec![(BTreeMap::new(), NO_VALUE)];
        for (key, value) in entries {
            let mut cur = 0;
            for &b in key {
                let next = nodes.len();
                let child = *nodes[cur].0.entry(b).or_insert(next);
                if child == next {
                    nodes.push((BTreeMap::new(), NO_VALUE));
                }
                cur = child;
            }
            nodes[cur].1 = value;
        }

        let mut order = vec![0usize];
        let mut new_index = vec![0u32; nodes.len()];
        let mut i = 0;
        while i < order.len() {
            for &child in nodes[order[i]].0.values() {
                new_index[child] = order.len() as u32;
                order.push(child);
            }
            i += 1;
        }
        let mut trie = Trie::default();
        for &old in &order {
            trie.child_start.push(trie.labels.len() as u32);
            trie.values.push(nodes[old].1);
            for (&label, &child) in &nodes[old].0 {
                trie.labels.push(label);
                trie.targets.push(new_index[child]);
            }
        }
        trie.child_start.push(trie.labels.len() as u32);
        trie
    }

    fn child(&self, node: u32, label: u8) -> Option<u32> {
        let lo = *self.child_start.get(node as usize)? as usize;
        let hi = *self.child_start.get(node as usize + 1)? as usize;
        let labels = self.labels.get(lo..hi)?;
        let k = labels.binary_search(&label).ok()?;
        self.targets.get(lo + k).copied()
    }

    /// Every key that is a prefix of `text`, as `(byte length, value)`, shortest first.
    pub(crate) fn prefixes<'t>(
        &'t self,
        text: &'t [u8],
    ) -> impl Iterator<Item = (usize, u32)> + 't {
        let mut node = Some(0u32);
        text.iter()
            .enumerate()
            .map_while(move |(i, &b)| {
                let next = self.child(node?, b)?;
                node = Some(next);
                let value = self.values.get(next as usize).copied().unwrap_or(NO_VALUE);
                Some((i + 1, value))
            })
            .filter(|&(_, v)| v != NO_VALUE)
    }

    /// Byte length of the longest key that is a prefix of `text`.
    pub(crate) fn longest_prefix(&self, text: &[u8]) -> Option<usize> {
        self.prefixes(text).last().map(|(len, _)| len)
    }

    /// Whether no key was inserted.
    pub(crate) fn is_empty(&self) -> bool {
        self.values.iter().all(|&v| v == NO_VALUE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_shortest_first() {
        let t = Trie::build([(&b"a"[..], 1), (b"abc", 3), (b"ab", 2), (b"b", 9)]);
        let got: Vec<_> = t.prefixes(b"abcd").collect();
        assert_eq!(got, vec![(1, 1), (2, 2), (3, 3)]);
        assert_eq!(t.longest_prefix(b"abx"), Some(2));
        assert_eq!(t.longest_prefix(b"x"), None);
        assert!(!t.is_empty());
        assert!(Trie::build(std::iter::empty()).is_empty());
    }
}
