//! Decoding on the GPU: the generation loop of `generation::generate` for one sequence (a full
//! pass over the prompt, then one token a step over the GPU cache), and whole-sequence logits.

use candle_core::{Device, Tensor};
use std::ops::ControlFlow;

use super::model::{GpuModel, Logits};
use crate::error::Result;
use crate::generation::sampling::Sampler;
use crate::generation::GenerationOptions;
use crate::model::{Batch, PrefixEncoder, Step};

impl GpuModel {
    /// Decodes one prompt (the same loop as `generation::generate` for one sequence): a full
    /// pass over the prompt, then one token a step over the GPU cache.
    pub async fn generate(
        &self,
        prefix: Option<&PrefixEncoder>,
        prompt: &[u32],
        options: &GenerationOptions,
        mut on_token: impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Vec<u32>> {
        let config = &self.config;
        let device = Device::Cpu;
        let prefix_len = prefix.map_or(0, |p| p.config.pre_seq_len);
        let batch = Batch::new(&[prompt.to_vec()], config, prefix_len, &device)?;
        let budget = options.new_token_budget(prompt.len())?;
        let mut cache = self.new_cache(prefix_len + prompt.len() + budget, prefix)?;
        let mut sampler = Sampler::new(options.sampling.clone(), options.repetition_penalty);
        let mut seen = prompt.to_vec();
        let mut state = batch.next.clone();
        let inputs = SequenceInputs::of(&batch)?;
        let mut logits = self
            .forward(
                prompt,
                &inputs.positions,
                inputs.mask.as_deref(),
                &mut cache,
                Logits::Last,
            )
            .await?;
        let mut outputs = Vec::new();
        while outputs.len() < budget {
            let token = sampler.choose(&mut logits, &seen);
            seen.push(token);
            outputs.push(token);
            if options.is_stop(token, config.eos_token_id)
                || on_token(token) == ControlFlow::Break(())
                || outputs.len() == budget
            {
                break;
            }
            let step = Step::new(
                &[token],
                &mut state,
                &batch.padding,
                prefix_len,
                cache.len,
                config,
                &device,
            )?;
            let positions = step.positions.squeeze(0)?.to_vec2::<u32>()?;
            logits = self
                .forward(&[token], &positions, None, &mut cache, Logits::Last)
                .await?;
        }
        Ok(outputs)
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
