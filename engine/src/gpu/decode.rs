//! Decoding on the GPU: one sequence fed to the wgpu model step by step (a full pass over the
//! prompt, then one token a step over the GPU cache) through `generation::generate`'s sampling
//! loop, and whole-sequence logits.

use candle_core::{Device, Tensor};
use std::ops::ControlFlow;

use super::cache::GpuCache;
use super::model::{GpuModel, Logits};
use crate::error::{EngineError, Result};
use crate::generation::generate::{decode, Session};
use crate::generation::{Backend, GenerationOptions};
use crate::model::{Batch, PrefixEncoder, SequencePositions, Step};

/// The wgpu model decoding one sequence.
struct GpuSession<'m> {
    model: &'m GpuModel,
    prompt: &'m [u32],
    batch: Batch,
    cache: GpuCache,
    state: Vec<SequencePositions>,
    prefix_len: usize,
}

impl Session for GpuSession<'_> {
    async fn start(&mut self) -> Result<Vec<Vec<f32>>> {
        let inputs = SequenceInputs::of(&self.batch)?;
        let logits = self
            .model
            .forward(
                self.prompt,
                &inputs.positions,
                inputs.mask.as_deref(),
                &mut self.cache,
                Logits::Last,
            )
            .await?;
        Ok(vec![logits])
    }

    async fn step(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let step = Step::new(
            tokens,
            &mut self.state,
            &self.batch.padding,
            self.prefix_len,
            self.cache.len,
            &self.model.config,
            &Device::Cpu,
        )?;
        let positions = step.positions.squeeze(0)?.to_vec2::<u32>()?;
        let logits = self
            .model
            .forward(tokens, &positions, None, &mut self.cache, Logits::Last)
            .await?;
        Ok(vec![logits])
    }
}

impl GpuModel {
    /// Decodes one prompt with `generation::generate`'s loop: a full pass over the prompt, then
    /// one token a step over the GPU cache.
    pub async fn generate(
        &self,
        prefix: Option<&PrefixEncoder>,
        prompt: &[u32],
        options: &GenerationOptions,
        mut on_token: impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Vec<u32>> {
        let config = &self.config;
        let prefix_len = prefix.map_or(0, |p| p.config.pre_seq_len);
        let batch = Batch::new(&[prompt.to_vec()], config, prefix_len, &Device::Cpu)?;
        let budget = options.new_token_budget(prompt.len())?;
        let mut session = GpuSession {
            model: self,
            prompt,
            cache: self.new_cache(prefix_len + prompt.len() + budget, prefix)?,
            state: batch.next.clone(),
            batch,
            prefix_len,
        };
        let prompts = [prompt.to_vec()];
        let mut outputs = decode(
            &mut session,
            &prompts,
            budget,
            options,
            config.eos_token_id,
            config.pad_token_id,
            |_, id| on_token(id),
        )
        .await?;
        outputs
            .pop()
            .ok_or_else(|| EngineError::Gpu("decoding returned no sequence".into()))
    }
}

impl Backend for GpuModel {
    fn eos_token_id(&self) -> u32 {
        self.config.eos_token_id
    }

    async fn generate_one(
        &self,
        prefix: Option<&PrefixEncoder>,
        prompt: &[u32],
        options: &GenerationOptions,
        on_token: impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Vec<u32>> {
        self.generate(prefix, prompt, options, on_token).await
    }
}

/// A one-sequence batch as [`GpuModel::forward`] takes it.
pub struct SequenceInputs {
    /// `[segments][tokens]`.
    pub positions: Vec<Vec<u32>>,
    /// `[tokens × (prefix + tokens)]`, nonzero where attention is forbidden.
    pub mask: Option<Vec<u8>>,
}

impl SequenceInputs {
    pub fn of(batch: &Batch) -> Result<Self> {
        Ok(SequenceInputs {
            positions: batch.positions.squeeze(0)?.to_vec2::<u32>()?,
            mask: batch
                .mask
                .as_ref()
                .map(|m| m.flatten_all()?.to_vec1::<u8>())
                .transpose()?,
        })
    }
}

impl GpuModel {
    /// Logits `[seq, vocab]` of one unpadded sequence: the `glmtune logits` contract on the GPU.
    pub async fn sequence_logits(
        &self,
        prefix: Option<&PrefixEncoder>,
        ids: &[u32],
    ) -> Result<Tensor> {
        let prefix_len = prefix.map_or(0, |p| p.config.pre_seq_len);
        let batch = Batch::new(&[ids.to_vec()], &self.config, prefix_len, &Device::Cpu)?;
        let inputs = SequenceInputs::of(&batch)?;
        let mut cache = self.new_cache(prefix_len + ids.len(), prefix)?;
        let logits = self
            .forward(
                ids,
                &inputs.positions,
                inputs.mask.as_deref(),
                &mut cache,
                Logits::Every,
            )
            .await?;
        Ok(Tensor::from_vec(
            logits,
            (ids.len(), self.vocab),
            &Device::Cpu,
        )?)
    }
}
