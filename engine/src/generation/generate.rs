//! The decoding loop: one full pass over the (left-padded) prompts, then one token per step with
//! the key/value cache, until `<eop>` or the length limit.

use candle_core::Tensor;
use std::ops::ControlFlow;

use crate::error::{EngineError, Result};
use crate::generation::sampling::{Sampler, Sampling};
use crate::model::{Batch, ChatGlmModel, KvCache, PrefixEncoder, Step};

/// Limits and the decoding strategy for one call.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOptions {
    /// New tokens at most (takes precedence over `max_length`).
    pub max_new_tokens: Option<usize>,
    /// Prompt plus new tokens at most, as the official `max_length`.
    pub max_length: Option<usize>,
    pub sampling: Sampling,
    pub repetition_penalty: f32,
    /// End a sequence at `<eop>` (benchmarks turn this off to decode a fixed length).
    pub stop_at_eos: bool,
    /// More ids that end a sequence like the config's eos does (ChatGLM3's `<|user|>` and
    /// `<|observation|>`: [`ChatGlmTokenizer::stop_ids`](crate::tokenizer::ChatGlmTokenizer::stop_ids)).
    pub stop_ids: Vec<u32>,
}

impl GenerationOptions {
    /// Whether `token` ends a sequence under these options.
    pub fn is_stop(&self, token: u32, eos_token_id: u32) -> bool {
        self.stop_at_eos && (token == eos_token_id || self.stop_ids.contains(&token))
    }
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: Some(256),
            max_length: None,
            sampling: Sampling::Greedy,
            repetition_penalty: 1.0,
            stop_at_eos: true,
            stop_ids: Vec::new(),
        }
    }
}

impl GenerationOptions {
    pub(crate) fn new_token_budget(&self, padded_prompt_len: usize) -> Result<usize> {
        match (self.max_new_tokens, self.max_length) {
            (Some(n), _) => Ok(n),
            (None, Some(max_length)) if max_length > padded_prompt_len => Ok(max_length - padded_prompt_len),
            (None, Some(max_length)) => Err(EngineError::Input(format!(
                "max_length {max_length} leaves no room after a prompt of {padded_prompt_len} tokens"
            ))),
            (None, None) => Ok(GenerationOptions::default().max_new_tokens.unwrap_or(256)),
        }
    }
}

/// Generates for each prompt (token ids, special tokens included). `on_token(sequence, id)` sees
/// every new token as it is chosen, `<eop>` included; returning `ControlFlow::Break(())` ends generation.
/// Returns the new ids of each sequence, `<eop>` included when produced.
pub fn generate(
    model: &ChatGlmModel,
    prefix: Option<&PrefixEncoder>,
    prompts: &[Vec<u32>],
    options: &GenerationOptions,
    mut on_token: impl FnMut(usize, u32) -> ControlFlow<()>,
) -> Result<Vec<Vec<u32>>> {
    let config = model.config();
    let device = model.device();
    let batch_size = prompts.len();
    let prefix_len = prefix.map_or(0, |p| p.config.pre_seq_len);
    let batch = Batch::new(prompts, config, prefix_len, device)?;
    let budget = options.new_token_budget(batch.ids.dim(1)?)?;
    let mut cache = initial_cache(model, prefix, batch_size)?;
    let mut samplers: Vec<Sampler> = (0..batch_size)
        .map(|i| {
            let sampling = match &options.sampling {
                Sampling::Sample {
                    temperature,
                    top_p,
                    top_k,
                    seed,
                } => Sampling::Sample {
                    temperature: *temperature,
                    top_p: *top_p,
                    top_k: *top_k,
                    seed: seed.wrapping_add(i as u64),
                },
                Sampling::Greedy => Sampling::Greedy,
            };
            Sampler::new(sampling, options.repetition_penalty)
        })
        .collect();
    let mut seen: Vec<Vec<u32>> = prompts.to_vec();
    let mut outputs = vec![Vec::new(); batch_size];
    let mut finished = vec![false; batch_size];
    let mut state = batch.next.clone();
    let hidden = model.forward(
        &batch.ids,
        &batch.positions,
        batch.mask.as_ref(),
        &mut cache,
    )?;
    let mut last_hidden = hidden.narrow(1, hidden.dim(1)? - 1, 1)?;
    for _ in 0..budget {
        let logits = model.logits(&last_hidden)?.squeeze(1)?;
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        let mut tokens = Vec::with_capacity(batch_size);
        let mut stop = false;
        for (i, mut row) in rows.into_iter().enumerate() {
            if finished[i] {
                tokens.push(config.pad_token_id);
                continue;
            }
            let token = samplers[i].choose(&mut row, &seen[i]);
            seen[i].push(token);
            outputs[i].push(token);
            tokens.push(token);
            if options.is_stop(token, config.eos_token_id) {
                finished[i] = true;
            }
            if on_token(i, token) == ControlFlow::Break(()) {
                stop = true;
            }
        }
        if stop || finished.iter().all(|&f| f) {
            break;
        }
        let step = Step::new(
            &tokens,
            &mut state,
            &batch.padding,
            prefix_len,
            cache.len(),
            config,
            device,
        )?;
        let hidden = model.forward(&step.ids, &step.positions, step.mask.as_ref(), &mut cache)?;
        last_hidden = hidden;
    }
    Ok(outputs)
}

/// Logits `[seq, vocab]` (f32) for one unpadded sequence: the `glmtune logits` contract.
pub fn sequence_logits(
    model: &ChatGlmModel,
    prefix: Option<&PrefixEncoder>,
    ids: &[u32],
) -> Result<Tensor> {
    let config = model.config();
    let prefix_len = prefix.map_or(0, |p| p.config.pre_seq_len);
    let batch = Batch::new(&[ids.to_vec()], config, prefix_len, model.device())?;
    let mut cache = initial_cache(model, prefix, 1)?;
    let hidden = model.forward(
        &batch.ids,
        &batch.positions,
        batch.mask.as_ref(),
        &mut cache,
    )?;
    Ok(model.logits(&hidden)?.squeeze(0)?.contiguous()?)
}

/// An empty cache, or one holding the adapter's prefix keys and values for `batch` sequences.
fn initial_cache(
    model: &ChatGlmModel,
    prefix: Option<&PrefixEncoder>,
    batch: usize,
) -> Result<KvCache> {
    Ok(match prefix {
        Some(p) => KvCache::from_prefix(p.key_values(model.config(), batch, model.dtype())?),
        None => KvCache::new(model.config().num_layers),
    })
}
