//! Many generations decoded together (continuous batching). Decoding is bound by reading the
//! weights, so a step that advances every active stream by one token reads them once for all:
//! the linear layers multiply one row per stream, while each stream attends to its own cache with
//! its own positions, adapter prefix, sampling, stops and budget. Streams join and leave between
//! steps. A joining stream's prompt is processed on its own cache a chunk per step (at most
//! [`Streams::with_chunk`] tokens, where the attention mask lets the prompt be cut there), so a
//! long prompt delays the streams already decoding by one chunk a step, not by the whole prompt.
//!
//! A stream's tokens are those it would get decoded alone: the quantized kernels give each row
//! the very sums of a single-row product, and the dense ones multiply rows one at a time. A prompt
//! processed in chunks computes what it computes whole up to the order of float sums in its
//! attention (the fixtures' greedy answers are the same; tested).

use std::collections::VecDeque;
use std::ops::ControlFlow;

use candle_core::Tensor;

use super::generate::initial_cache;
use super::sampling::Sampler;
use super::GenerationOptions;
use crate::error::{EngineError, Result};
use crate::model::{Batch, ChatGlmModel, KvCache, PrefixEncoder, SequencePositions, Step};

/// What a stream generates from.
pub struct StreamRequest<'p> {
    /// Token ids, special tokens included.
    pub prompt: Vec<u32>,
    pub options: GenerationOptions,
    pub prefix: Option<&'p PrefixEncoder>,
}

/// A stream that ended, with every token it produced (a stop token included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub stream: usize,
    pub tokens: Vec<u32>,
}

/// Prompt tokens a joining stream processes in one step unless [`Streams::with_chunk`] says
/// otherwise.
pub const PREFILL_CHUNK: usize = 64;

/// A prompt being processed: its inputs, the tokens done, and where it may be cut.
struct Joining {
    batch: Batch,
    done: usize,
    /// `cuts[a]`: no token before `a` attends to one from `a` on, so the tokens up to `a` can be
    /// processed before the rest (always at the causal models' tokens; for ChatGLM-6B, whose
    /// context attends both ways, only from `<sop>` on).
    cuts: Vec<bool>,
}

struct Stream {
    id: usize,
    cache: KvCache,
    positions: SequencePositions,
    prefix_len: usize,
    sampler: Sampler,
    options: GenerationOptions,
    seen: Vec<u32>,
    produced: Vec<u32>,
    budget: usize,
    /// The logits for the stream's next token.
    logits: Vec<f32>,
}

/// The streams of one model: decoding, and joining (their prompts in progress, in arrival order).
pub struct Streams<'m> {
    model: &'m ChatGlmModel,
    active: Vec<Stream>,
    joining: VecDeque<(Stream, Joining)>,
    next_id: usize,
    chunk: usize,
}

impl<'m> Streams<'m> {
    pub fn new(model: &'m ChatGlmModel) -> Self {
        Self::with_chunk(model, PREFILL_CHUNK)
    }

    /// Streams whose prompts are processed `chunk` tokens a step (at least one).
    pub fn with_chunk(model: &'m ChatGlmModel, chunk: usize) -> Self {
        Streams {
            model,
            active: Vec::new(),
            joining: VecDeque::new(),
            next_id: 0,
            chunk: chunk.max(1),
        }
    }

    /// Streams still generating, joining ones included.
    pub fn len(&self) -> usize {
        self.active.len() + self.joining.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Streams whose prompt is still being processed.
    pub fn joining(&self) -> usize {
        self.joining.len()
    }

    /// Queues `request`: its prompt is checked now and processed a chunk per
    /// [`step`](Self::step) (after the prompts queued before it); the stream decodes from the
    /// step that finishes it. Returns its id.
    pub fn admit(&mut self, request: StreamRequest) -> Result<usize> {
        let model = self.model;
        let config = model.config();
        let prefix_len = request.prefix.map_or(0, |p| p.config.pre_seq_len);
        let batch = Batch::new(
            std::slice::from_ref(&request.prompt),
            config,
            prefix_len,
            model.device(),
        )?;
        let prompt_len = batch.ids.dim(1)?;
        let budget = request.options.new_token_budget(prompt_len)?;
        if budget == 0 {
            return Err(EngineError::Input(
                "a stream needs a budget of one token at least".into(),
            ));
        }
        model.check_positions(&batch.positions)?;
        let mut cache = initial_cache(model, request.prefix, 1)?;
        cache.reserve(prefix_len + prompt_len + budget);
        let positions = batch
            .next
            .first()
            .copied()
            .ok_or_else(|| EngineError::Input("a stream's prompt gave no positions".into()))?;
        let cuts = cuts(&batch, prefix_len, prompt_len)?;
        let id = self.next_id;
        self.next_id += 1;
        let stream = Stream {
            id,
            cache,
            positions,
            prefix_len,
            sampler: Sampler::new(
                request.options.sampling.clone(),
                request.options.repetition_penalty,
            ),
            seen: request.prompt,
            produced: Vec::new(),
            budget,
            logits: Vec::new(),
            options: request.options,
        };
        let joining = Joining {
            batch,
            done: 0,
            cuts,
        };
        self.joining.push_back((stream, joining));
        Ok(id)
    }

    /// Processes every joining prompt to its end now, each whole (as alone): what a measurement
    /// of decoding alone calls before its first step.
    pub fn join_all(&mut self) -> Result<()> {
        while let Some((mut stream, mut joining)) = self.joining.pop_front() {
            self.advance(&mut stream, &mut joining, usize::MAX)?;
            self.active.push(stream);
        }
        Ok(())
    }

    /// The next chunk of the first joining prompt; the stream decodes once it is done.
    fn advance_joining(&mut self) -> Result<()> {
        let Some((mut stream, mut joining)) = self.joining.pop_front() else {
            return Ok(());
        };
        if self.advance(&mut stream, &mut joining, self.chunk)? {
            self.active.push(stream);
        } else {
            self.joining.push_front((stream, joining));
        }
        Ok(())
    }

    /// Feeds `stream`'s prompt (`joining`) on from where it stands, about `chunk` tokens (up to
    /// the nearest place the prompt may be cut); whether the prompt is done (its logits then set).
    fn advance(&self, stream: &mut Stream, joining: &mut Joining, chunk: usize) -> Result<bool> {
        let seq = joining.cuts.len() - 1;
        let from = joining.done;
        let target = from.saturating_add(chunk).min(seq);
        let end = (from + 1..=target)
            .rev()
            .find(|&a| joining.cuts[a])
            .or_else(|| (target + 1..=seq).find(|&a| joining.cuts[a]))
            .unwrap_or(seq);
        let len = end - from;
        let batch = &joining.batch;
        let ids = batch.ids.narrow(1, from, len)?;
        let positions = batch.positions.narrow(2, from, len)?;
        let mask = match &batch.mask {
            Some(mask) => Some(
                mask.narrow(2, from, len)?
                    .narrow(3, 0, stream.prefix_len + end)?
                    .contiguous()?,
            ),
            None => None,
        };
        let hidden = self
            .model
            .forward(&ids, &positions, mask.as_ref(), &mut stream.cache)?;
        joining.done = end;
        if end < seq {
            return Ok(false);
        }
        let last = hidden.narrow(1, len - 1, 1)?;
        stream.logits = self.model.logits(&last)?.flatten_all()?.to_vec1()?;
        Ok(true)
    }

    /// Processes the next chunk of the first joining prompt, then chooses every decoding stream's
    /// next token (`on_token(stream, id)` sees it; breaking ends that stream), retires the
    /// streams that stopped or spent their budget, and feeds the others' tokens through the model
    /// in one pass. Returns the streams that ended.
    pub fn step(
        &mut self,
        mut on_token: impl FnMut(usize, u32) -> ControlFlow<()>,
    ) -> Result<Vec<Finished>> {
        self.advance_joining()?;
        let eos = self.model.config().eos_token_id;
        let mut finished = Vec::new();
        let mut going = Vec::with_capacity(self.active.len());
        for mut stream in std::mem::take(&mut self.active) {
            let token = stream.sampler.choose(&mut stream.logits, &stream.seen);
            stream.seen.push(token);
            stream.produced.push(token);
            let broke = on_token(stream.id, token) == ControlFlow::Break(());
            if broke || stream.options.is_stop(token, eos) || stream.produced.len() >= stream.budget
            {
                finished.push(Finished {
                    stream: stream.id,
                    tokens: stream.produced,
                });
            } else {
                going.push(stream);
            }
        }
        if !going.is_empty() {
            self.feed(&mut going)?;
        }
        self.active = going;
        Ok(finished)
    }

    /// One forward of each stream's last token, every stream on its own cache.
    fn feed(&self, streams: &mut [Stream]) -> Result<()> {
        let model = self.model;
        let config = model.config();
        let device = model.device();
        let mut ids = Vec::with_capacity(streams.len());
        let mut positions = Vec::with_capacity(streams.len());
        for stream in streams.iter_mut() {
            let token = *stream.produced.last().unwrap_or(&config.pad_token_id);
            let step = Step::new(
                &[token],
                std::slice::from_mut(&mut stream.positions),
                &[0],
                stream.prefix_len,
                stream.cache.len(),
                config,
                device,
            )?;
            ids.push(step.ids);
            positions.push(step.positions);
        }
        let ids = Tensor::cat(&ids, 0)?;
        let positions = Tensor::cat(&positions, 0)?;
        let mut caches: Vec<&mut KvCache> = streams.iter_mut().map(|s| &mut s.cache).collect();
        let hidden = model.forward_streams(&ids, &positions, &mut caches)?;
        let logits: Vec<Vec<f32>> = model.logits(&hidden)?.squeeze(1)?.to_vec2()?;
        for (stream, row) in streams.iter_mut().zip(logits) {
            stream.logits = row;
        }
        Ok(())
    }
}

/// `cuts[a]` for `a` in `0..=seq` (see [`Joining::cuts`]): from the prompt's mask, no token
/// before `a` sees one from `a` on. Where nothing is masked every token sees every other.
fn cuts(batch: &Batch, prefix_len: usize, seq: usize) -> Result<Vec<bool>> {
    let mut cuts = vec![false; seq + 1];
    cuts[0] = true;
    cuts[seq] = true;
    let Some(mask) = &batch.mask else {
        return Ok(cuts);
    };
    let rows: Vec<Vec<u8>> = mask.squeeze(0)?.squeeze(0)?.to_vec2()?;
    // The furthest prompt column any row up to r sees.
    let mut furthest = 0usize;
    for (r, row) in rows.iter().enumerate().take(seq) {
        let seen = row[prefix_len..]
            .iter()
            .rposition(|&forbidden| forbidden == 0)
            .unwrap_or(0);
        furthest = furthest.max(seen);
        cuts[r + 1] = furthest < r + 1;
    }
    cuts[seq] = true;
    Ok(cuts)
}
