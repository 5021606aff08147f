//! Position ids and attention masks, as the official tokenizer's `_pad` and the model build them.
//!
//! ChatGLM2/3 are causal with positions 0, 1, 2, … per sequence. For ChatGLM-6B, everything before `<sop>` (the context) sees the whole context; from `<sop>` on, attention is
//! causal. Positions count up to the `[gMASK]`/`[MASK]` token and stay there from `<sop>` on, while
//! the second ("block") position counts 1, 2, … from `<sop>`. Left padding gets position 0 and is
//! masked out in both directions, so a padded sequence computes what it computes alone.

use candle_core::{Device, Tensor};

use crate::config::ChatGlmConfig;
use crate::error::{EngineError, Result};

/// Where one unpadded sequence stands: what its next generated token's positions will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequencePositions {
    /// The first position stays at the mask token for every token from `<sop>` on.
    pub last_position: u32,
    pub last_block_position: u32,
    /// Unpadded length so far.
    pub length: usize,
    /// Whether the sequence holds a `[gMASK]` (which then anchors the positions).
    pub has_gmask: bool,
    /// Whether a `[gMASK]` or `[MASK]` anchors the first position; without one it counts up.
    pub anchored: bool,
}

/// Position ids (`[n_dims][seq]`, `n_dims` 2 for 2D encoding) and the context length of `ids`.
pub fn position_ids(ids: &[u32], config: &ChatGlmConfig) -> (Vec<Vec<u32>>, usize) {
    let len = ids.len();
    if config.glm2().is_some() {
        return (vec![(0..len as u32).collect()], 0);
    }
    let context_length = ids
        .iter()
        .position(|&id| id == config.bos_token_id)
        .unwrap_or(len);
    let mask_token = if ids.contains(&config.gmask_token_id) {
        config.gmask_token_id
    } else {
        config.mask_token_id
    };
    let mut positions: Vec<u32> = (0..len as u32).collect();
    if let Some(mask_position) = ids.iter().position(|&id| id == mask_token) {
        for p in positions.iter_mut().skip(context_length) {
            *p = mask_position as u32;
        }
    }
    if !config.position_encoding_2d {
        return (vec![positions], context_length);
    }
    let block: Vec<u32> = (0..len)
        .map(|i| {
            if i < context_length {
                0
            } else {
                (i - context_length + 1) as u32
            }
        })
        .collect();
    (vec![positions, block], context_length)
}

/// A left-padded batch ready for a full forward pass.
#[derive(Debug)]
pub struct Batch {
    /// `[batch, seq]` u32.
    pub ids: Tensor,
    /// `[batch, n_dims, seq]` u32.
    pub positions: Tensor,
    /// `[batch, 1, seq, prefix + seq]` u8, 1 where attention is forbidden; `None` when nothing is.
    pub mask: Option<Tensor>,
    /// Left padding of each sequence.
    pub padding: Vec<usize>,
    /// Positions for the next token of each sequence.
    pub next: Vec<SequencePositions>,
}

impl Batch {
    /// Builds a batch from unpadded sequences; `prefix_len` prefix columns are always visible.
    pub fn new(
        sequences: &[Vec<u32>],
        config: &ChatGlmConfig,
        prefix_len: usize,
        device: &Device,
    ) -> Result<Self> {
        let batch = sequences.len();
        let seq = sequences.iter().map(Vec::len).max().unwrap_or(0);
        if batch == 0 || seq == 0 {
            return Err(EngineError::Input("empty input: no token ids".into()));
        }
        if let Some(&id) = sequences
            .iter()
            .flatten()
            .find(|&&id| id as usize >= config.vocab_size)
        {
            return Err(EngineError::Input(format!(
                "token id {id} is outside the vocabulary (vocab_size {})",
                config.vocab_size
            )));
        }
        let n_dims = if config.position_encoding_2d { 2 } else { 1 };
        let total = prefix_len + seq;
        let mut ids = Vec::with_capacity(batch * seq);
        let mut positions = Vec::with_capacity(batch * n_dims * seq);
        let mut mask = vec![0u8; batch * seq * total];
        let mut any_masked = false;
        let mut padding = Vec::with_capacity(batch);
        let mut next = Vec::with_capacity(batch);
        for (b, sequence) in sequences.iter().enumerate() {
            let pad = seq - sequence.len();
            padding.push(pad);
            ids.extend(std::iter::repeat_n(config.pad_token_id, pad));
            ids.extend_from_slice(sequence);
            let (dims, context_length) = position_ids(sequence, config);
            for dim in &dims {
                positions.extend(std::iter::repeat_n(0u32, pad));
                positions.extend_from_slice(dim);
            }
            let glm = config.glm2().is_none();
            next.push(SequencePositions {
                last_position: *dims[0].last().unwrap_or(&0),
                last_block_position: dims.get(1).and_then(|d| d.last().copied()).unwrap_or(0),
                length: sequence.len(),
                has_gmask: glm && sequence.contains(&config.gmask_token_id),
                anchored: glm
                    && (sequence.contains(&config.gmask_token_id)
                        || sequence.contains(&config.mask_token_id)),
            });
            for row in 0..seq {
                let row_mask = &mut mask[(b * seq + row) * total..(b * seq + row + 1) * total];
                for col in 0..seq {
                    let visible = if row < pad || col < pad {
                        false
                    } else {
                        let (r, c) = (row - pad, col - pad);
                        c <= r || c < context_length
                    };
                    if !visible {
                        row_mask[prefix_len + col] = 1;
                        any_masked = true;
                    }
                }
            }
        }
        let mask = if any_masked {
            Some(Tensor::from_vec(mask, (batch, 1, seq, total), device)?)
        } else {
            None
        };
        Ok(Self {
            ids: Tensor::from_vec(ids, (batch, seq), device)?,
            positions: Tensor::from_vec(positions, (batch, n_dims, seq), device)?,
            mask,
            padding,
            next,
        })
    }
}

/// Inputs for one decoding step after `past_len` cached positions (prefix included).
#[derive(Debug)]
pub struct Step {
    pub ids: Tensor,
    pub positions: Tensor,
    pub mask: Option<Tensor>,
}

impl Step {
    /// Advances each sequence's positions and builds the step's tensors. Padding columns stay
    /// masked: `prefix_len` tells where they start in the cache.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tokens: &[u32],
        state: &mut [SequencePositions],
        padding: &[usize],
        prefix_len: usize,
        past_len: usize,
        config: &ChatGlmConfig,
        device: &Device,
    ) -> Result<Self> {
        let batch = tokens.len();
        let two_d = config.position_encoding_2d;
        let n_dims = if two_d { 2 } else { 1 };
        let mut positions = Vec::with_capacity(batch * n_dims);
        for (s, &token) in state.iter_mut().zip(tokens) {
            // The official loop looks the mask token up again in the whole sequence each step, so a
            // generated [gMASK] in a [MASK] prompt becomes the new anchor.
            if config.glm2().is_none() && token == config.gmask_token_id && !s.has_gmask {
                s.has_gmask = true;
                s.anchored = true;
                s.last_position = s.length as u32;
            } else if !s.anchored {
                s.last_position = s.length as u32;
            }
            s.length += 1;
            if two_d {
                s.last_block_position += 1;
                positions.extend([s.last_position, s.last_block_position]);
            } else {
                positions.push(s.last_position);
            }
        }
        let total = past_len + 1;
        let mask = if padding.iter().any(|&p| p > 0) {
            let mut mask = vec![0u8; batch * total];
            for (b, &pad) in padding.iter().enumerate() {
                for col in prefix_len..prefix_len + pad {
                    mask[b * total + col] = 1;
                }
            }
            Some(Tensor::from_vec(mask, (batch, 1, 1, total), device)?)
        } else {
            None
        };
        Ok(Self {
            ids: Tensor::from_vec(tokens.to_vec(), (batch, 1), device)?,
            positions: Tensor::from_vec(positions, (batch, n_dims, 1), device)?,
            mask,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ChatGlmConfig {
        ChatGlmConfig::synthetic(512, 64, 2, 4, 256)
    }

    #[test]
    fn positions_follow_the_mask_token() {
        // text text [gMASK] <sop> generated
        let (dims, context) = position_ids(&[20, 21, 5, 8, 30], &tiny());
        assert_eq!(context, 3);
        assert_eq!(dims[0], vec![0, 1, 2, 2, 2]);
        assert_eq!(dims[1], vec![0, 0, 0, 1, 2]);
    }

    #[test]
    fn padding_is_masked_both_ways() {
        let config = tiny();
        let batch = Batch::new(&[vec![20, 5, 8], vec![5, 8]], &config, 2, &Device::Cpu).unwrap();
        assert_eq!(batch.padding, vec![0, 1]);
        let mask = batch
            .mask
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<u8>()
            .unwrap();
        // Second sequence, 3 rows × (2 prefix + 3) columns; its first row and column are padding.
        let second = &mask[15..];
        assert_eq!(&second[0..5], &[0, 0, 1, 1, 1]);
        assert_eq!(&second[5..10], &[0, 0, 1, 0, 1]);
        assert_eq!(&second[10..15], &[0, 0, 1, 0, 0]);
        // First sequence: the context before <sop> is bidirectional, <sop> is causal.
        assert_eq!(&mask[0..15], &[0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
    }
}
