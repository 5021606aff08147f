//! Many generations decoded together (continuous batching). Decoding is bound by reading the
//! weights, so a step that advances every active stream by one token reads them once for all:
//! the linear layers multiply one row per stream, while each stream attends to its own cache with
//! its own positions, adapter prefix, sampling, stops and budget. Streams join (their prompt
//! processed on its own) and leave between steps.
//!
//! A stream's tokens are those it would get decoded alone: the quantized kernels give each row
//! the very sums of a single-row product, and the dense ones multiply rows one at a time.

use std::ops::ControlFlow;

use candle_core::Tensor;

use super::generate::{forward_batch, initial_cache};
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

/// The active streams of one model.
pub struct Streams<'m> {
    model: &'m ChatGlmModel,
    active: Vec<Stream>,
    next_id: usize,
}

impl<'m> Streams<'m> {
    pub fn new(model: &'m ChatGlmModel) -> Self {
        Streams {
            model,
            active: Vec::new(),
            next_id: 0,
        }
    }

    /// Streams still generating.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Processes `request`'s prompt on its own cache; the stream takes part from the next
    /// [`step`](Self::step). Returns its id.
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
        let mut cache = initial_cache(model, request.prefix, 1)?;
        cache.reserve(prefix_len + prompt_len + budget);
        let hidden = forward_batch(model, &batch, &mut cache)?;
        let last = hidden.narrow(1, prompt_len - 1, 1)?;
        let logits = model.logits(&last)?.flatten_all()?.to_vec1()?;
        let positions = batch
            .next
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::Input("a stream's prompt gave no positions".into()))?;
        let id = self.next_id;
        self.next_id += 1;
        self.active.push(Stream {
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
            logits,
            options: request.options,
        });
        Ok(id)
    }

    /// Chooses every active stream's next token (`on_token(stream, id)` sees it; breaking ends
    /// that stream), retires the streams that stopped or spent their budget, and feeds the others'
    /// tokens through the model in one pass. Returns the streams that ended.
    pub fn step(
        &mut self,
        mut on_token: impl FnMut(usize, u32) -> ControlFlow<()>,
    ) -> Result<Vec<Finished>> {
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
