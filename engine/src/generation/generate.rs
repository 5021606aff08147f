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

/// A model with its key/value cache, fed a step at a time: the CPU model here, the wgpu one in
/// `gpu::decode`. [`decode`] is the one sampling loop over either.
pub(crate) trait Session {
    /// Feeds the prompts; returns each sequence's logits for its next token.
    async fn start(&mut self) -> Result<Vec<Vec<f32>>>;
    /// Feeds one token per sequence (padding for finished ones); returns the next logits.
    async fn step(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>>;
}

/// The sampling loop: up to `budget` tokens a sequence, each sequence sampled on its own (its
/// seed offset by its index), ended at a stop id or when `on_token(sequence, id)` breaks. The last
/// token chosen is not fed back (nothing would read its logits).
pub(crate) async fn decode(
    session: &mut impl Session,
    prompts: &[Vec<u32>],
    budget: usize,
    options: &GenerationOptions,
    eos_token_id: u32,
    pad_token_id: u32,
    mut on_token: impl FnMut(usize, u32) -> ControlFlow<()>,
) -> Result<Vec<Vec<u32>>> {
    let batch_size = prompts.len();
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
    let mut rows = session.start().await?;
    for produced in 1..=budget {
        let mut tokens = Vec::with_capacity(batch_size);
        let mut stop = false;
        for (i, row) in rows.iter_mut().enumerate() {
            if finished[i] {
                tokens.push(pad_token_id);
                continue;
            }
            let token = samplers[i].choose(row, &seen[i]);
            seen[i].push(token);
            outputs[i].push(token);
            tokens.push(token);
            if options.is_stop(token, eos_token_id) {
                finished[i] = true;
            }
            if on_token(i, token) == ControlFlow::Break(()) {
                stop = true;
            }
        }
        if stop || produced == budget || finished.iter().all(|&f| f) {
            break;
        }
        rows = session.step(&tokens).await?;
    }
    Ok(outputs)
}

/// The CPU model decoding a (left-padded) batch.
struct CpuSession<'m> {
    model: &'m ChatGlmModel,
    batch: Batch,
    cache: KvCache,
    state: Vec<crate::model::SequencePositions>,
    prefix_len: usize,
}

impl CpuSession<'_> {
    fn logits(&self, last_hidden: &Tensor) -> Result<Vec<Vec<f32>>> {
        Ok(self.model.logits(last_hidden)?.squeeze(1)?.to_vec2()?)
    }
}

impl Session for CpuSession<'_> {
    async fn start(&mut self) -> Result<Vec<Vec<f32>>> {
        let batch = &self.batch;
        let hidden = self.model.forward(
            &batch.ids,
            &batch.positions,
            batch.mask.as_ref(),
            &mut self.cache,
        )?;
        self.logits(&hidden.narrow(1, hidden.dim(1)? - 1, 1)?)
    }

    async fn step(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let step = Step::new(
            tokens,
            &mut self.state,
            &self.batch.padding,
            self.prefix_len,
            self.cache.len(),
            self.model.config(),
            self.model.device(),
        )?;
        let hidden = self.model.forward(
            &step.ids,
            &step.positions,
            step.mask.as_ref(),
            &mut self.cache,
        )?;
        self.logits(&hidden)
    }
}

/// Runs a future that never waits (CPU decoding) to its end on this thread.
pub fn run_ready<F: std::future::Future>(future: F) -> Result<F::Output> {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => Err(EngineError::Input(
            "a decoding step waited for a device: run it with an async executor".into(),
        )),
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
    on_token: impl FnMut(usize, u32) -> ControlFlow<()>,
) -> Result<Vec<Vec<u32>>> {
    let config = model.config();
    let prefix_len = prefix.map_or(0, |p| p.config.pre_seq_len);
    let batch = Batch::new(prompts, config, prefix_len, model.device())?;
    let budget = options.new_token_budget(batch.ids.dim(1)?)?;
    let mut cache = initial_cache(model, prefix, prompts.len())?;
    // The prompt and the whole answer: the cache never grows while decoding.
    cache.reserve(prefix_len + batch.ids.dim(1)? + budget);
    let mut session = CpuSession {
        model,
        cache,
        state: batch.next.clone(),
        batch,
        prefix_len,
    };
    run_ready(decode(
        &mut session,
        prompts,
        budget,
        options,
        config.eos_token_id,
        config.pad_token_id,
        on_token,
    ))?
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
    let hidden = forward_batch(model, &batch, &mut cache)?;
    Ok(model.logits(&hidden)?.squeeze(0)?.contiguous()?)
}

/// The final hidden states of a whole batch (prompts), appended to `cache`.
pub(crate) fn forward_batch(
    model: &ChatGlmModel,
    batch: &Batch,
    cache: &mut KvCache,
) -> Result<Tensor> {
    model.forward(&batch.ids, &batch.positions, batch.mask.as_ref(), cache)
}

/// An empty cache, or one holding the adapter's prefix keys and values for `batch` sequences.
pub(crate) fn initial_cache(
    model: &ChatGlmModel,
    prefix: Option<&PrefixEncoder>,
    batch: usize,
) -> Result<KvCache> {
    Ok(match prefix {
        Some(p) => KvCache::from_prefix(p.key_values(model.config(), batch, model.dtype())?)?,
        None => KvCache::new(model.config().num_layers),
    })
}
