//! The training loop, step for step as the Hugging Face Trainer runs `ptuning/main.py`.
//!
//! Epochs walk the examples in file order (or a seeded shuffle), in micro-batches of
//! `batch_size` (the last one of an epoch may be partial). Each micro-batch's loss is divided by
//! `grad_accum` before backward; an optimizer step comes every `grad_accum` micro-batches, counted
//! across epochs, and also at the end of an epoch shorter than `grad_accum`. Gradients are clipped
//! to a global norm, then `adamw_hf` updates the prefix with the linear schedule's rate.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::error::{EngineError, Result};
use crate::generation::Flow;
use crate::model::prefix::split_key_values;
use crate::model::{Batch, ChatGlmModel, KvCache, PrefixEncoder};
use crate::train::loss::{causal_lm_loss, IGNORE_INDEX};
use crate::train::optimizer::{clip, global_norm, linear_lr, AdamW, AdamWConfig};
use crate::train::prefix_params::PrefixParams;

/// Optimizer moments inside a checkpoint folder.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Step counters inside a checkpoint folder.
pub const STATE_FILE: &str = "trainer_state.json";

/// One preprocessed training example (see `preprocess_function_train`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

/// Hyper-parameters, named as the official flags.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub per_device_train_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub learning_rate: f64,
    pub max_steps: u64,
    pub warmup_steps: u64,
    pub max_grad_norm: f64,
    pub adam: AdamWConfig,
    /// Dropout on the prefix keys and values (0.1 in the official model).
    pub prefix_dropout: f32,
    pub shuffle: bool,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            per_device_train_batch_size: 1,
            gradient_accumulation_steps: 16,
            learning_rate: 2e-2,
            max_steps: 3000,
            warmup_steps: 0,
            max_grad_norm: 1.0,
            adam: AdamWConfig::default(),
            prefix_dropout: 0.1,
            shuffle: true,
            seed: 42,
        }
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLog {
    /// 1-based optimizer step.
    pub step: u64,
    /// What the Trainer logs: the sum of the step's micro-batch losses divided by
    /// `gradient_accumulation_steps` (their mean, except in a step cut short at an epoch's end).
    pub loss: f64,
    pub learning_rate: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub micro_batches: usize,
    /// Tokens fed through the model in this step (padding included).
    pub tokens: usize,
}

/// Trains a prefix encoder against a frozen model.
pub struct Trainer<'a> {
    model: &'a ChatGlmModel,
    params: PrefixParams,
    optimizer: AdamW,
    options: TrainOptions,
    /// Micro-batches run so far, across epochs (the Trainer's `total_batched_samples`).
    micro_batches_done: u64,
}

impl<'a> Trainer<'a> {
    pub fn new(
        model: &'a ChatGlmModel,
        init: &PrefixEncoder,
        options: TrainOptions,
    ) -> Result<Self> {
        if options.per_device_train_batch_size == 0 || options.gradient_accumulation_steps == 0 {
            return Err(EngineError::Input(
                "batch size and gradient accumulation steps must be at least 1".into(),
            ));
        }
        let params = PrefixParams::from_encoder(init)?;
        let optimizer = AdamW::new(options.adam, &params.sizes(), &params.decays());
        Ok(Self {
            model,
            params,
            optimizer,
            options,
            micro_batches_done: 0,
        })
    }

    /// A copy of the prefix as it stands, detached from the graph.
    pub fn encoder(&self) -> Result<PrefixEncoder> {
        let encoder = self.params.encoder();
        Ok(PrefixEncoder {
            config: encoder.config,
            embedding: encoder.embedding.detach().copy()?,
            projection: match encoder.projection {
                Some(p) => Some(crate::model::prefix::Projection {
                    in_weight: p.in_weight.detach().copy()?,
                    in_bias: p.in_bias.detach().copy()?,
                    out_weight: p.out_weight.detach().copy()?,
                    out_bias: p.out_bias.detach().copy()?,
                }),
                None => None,
            },
        })
    }

    /// Mean loss over `examples` (weighted by example, as the Trainer's eval loop), no dropout.
    pub fn evaluate(&self, examples: &[Example]) -> Result<f64> {
        if examples.is_empty() {
            return Err(EngineError::Input("no evaluation examples".into()));
        }
        let encoder = self.encoder()?;
        let mut total = 0.0;
        for batch in examples.chunks(self.options.per_device_train_batch_size) {
            let batch: Vec<&Example> = batch.iter().collect();
            let loss = batch_loss(self.model, &encoder, &batch, None)?;
            total += loss.to_scalar::<f32>()? as f64 * batch.len() as f64;
        }
        Ok(total / examples.len() as f64)
    }

    /// Saves what a resumed run needs into `dir`: the adapter (official layout), the optimizer
    /// moments (`optimizer.safetensors`) and the counters (`trainer_state.json`).
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.encoder()?.save_adapter(dir, self.model.config())?;
        let device = self.model.device();
        let mut tensors = HashMap::new();
        for (i, m) in self.optimizer.moments.iter().enumerate() {
            tensors.insert(
                format!("exp_avg.{i}"),
                Tensor::from_slice(&m.exp_avg, m.exp_avg.len(), device)?,
            );
            tensors.insert(
                format!("exp_avg_sq.{i}"),
                Tensor::from_slice(&m.exp_avg_sq, m.exp_avg_sq.len(), device)?,
            );
        }
        let optimizer_path = dir.join(OPTIMIZER_FILE);
        candle_core::safetensors::save(&tensors, &optimizer_path)
            .map_err(|e| EngineError::checkpoint(&optimizer_path, e.to_string()))?;
        let state = serde_json::json!({
            "global_step": self.optimizer.step,
            "micro_batches_done": self.micro_batches_done,
            "seed": self.options.seed,
        });
        crate::checkpoint::write_atomically(&dir.join(STATE_FILE), state.to_string().as_bytes())
    }

    /// Restores the prefix, the optimizer and the counters saved by [`Trainer::save_checkpoint`].
    pub fn restore_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let device = self.model.device().clone();
        let encoder = PrefixEncoder::load_adapter(dir, self.model.config(), &device)?;
        if encoder.config != self.params.encoder().config {
            return Err(EngineError::adapter(
                dir,
                "the checkpoint's prefix shape differs from this run's",
            ));
        }
        let values = encoder
            .named_tensors()
            .into_iter()
            .map(|(_, t)| Ok(t.flatten_all()?.to_vec1::<f32>()?))
            .collect::<Result<Vec<_>>>()?;
        self.params.set_values(&values, &device)?;
        let optimizer_path = dir.join(OPTIMIZER_FILE);
        let tensors = candle_core::safetensors::load(&optimizer_path, &device)
            .map_err(|e| EngineError::checkpoint(&optimizer_path, e.to_string()))?;
        for (i, m) in self.optimizer.moments.iter_mut().enumerate() {
            for (name, target) in [
                (format!("exp_avg.{i}"), &mut m.exp_avg),
                (format!("exp_avg_sq.{i}"), &mut m.exp_avg_sq),
            ] {
                let t = tensors
                    .get(&name)
                    .ok_or_else(|| EngineError::tensor(&optimizer_path, &name, "missing"))?;
                let v = t.to_vec1::<f32>()?;
                if v.len() != target.len() {
                    return Err(EngineError::tensor(
                        &optimizer_path,
                        &name,
                        format!("has {} values, expected {}", v.len(), target.len()),
                    ));
                }
                *target = v;
            }
        }
        let state_path = dir.join(STATE_FILE);
        let text =
            std::fs::read_to_string(&state_path).map_err(|e| EngineError::io(&state_path, e))?;
        let state: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::checkpoint(&state_path, format!("invalid JSON: {e}")))?;
        let field = |name: &str| {
            state[name].as_u64().ok_or_else(|| {
                EngineError::config(&state_path, name, "missing or not a non-negative integer")
            })
        };
        self.optimizer.step = field("global_step")?;
        self.micro_batches_done = field("micro_batches_done")?;
        Ok(())
    }

    /// The order of example indices in `epoch`.
    fn epoch_order(&self, epoch: u64, count: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..count).collect();
        if self.options.shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(
                self.options.seed.wrapping_add(epoch),
            ));
        }
        order
    }

    /// Optimizer steps done so far.
    pub fn step(&self) -> u64 {
        self.optimizer.step
    }

    /// Runs until `max_steps` optimizer steps are done (resuming where a restored checkpoint left
    /// off), calling `on_step` after each; [`Flow::Stop`] from it ends the run after that step.
    pub fn run(
        &mut self,
        examples: &[Example],
        mut on_step: impl FnMut(&StepLog, &Trainer) -> Result<Flow>,
    ) -> Result<()> {
        if examples.is_empty() {
            return Err(EngineError::Input("no training examples".into()));
        }
        if let Some(i) = examples
            .iter()
            .position(|e| e.labels.len() != e.input_ids.len() || e.input_ids.is_empty())
        {
            return Err(EngineError::Input(format!(
                "training example {i}: labels and input ids differ in length"
            )));
        }
        let options = self.options.clone();
        let accumulation = options.gradient_accumulation_steps as u64;
        let micro_per_epoch = examples.len().div_ceil(options.per_device_train_batch_size);
        let mut step = self.optimizer.step;
        let mut grads: Option<Vec<Vec<f32>>> = None;
        let (mut losses, mut tokens) = (Vec::new(), 0usize);
        // Checkpoints fall on step boundaries, so a resumed run starts with no pending gradients.
        let mut epoch = self.micro_batches_done / micro_per_epoch as u64;
        let mut skip = (self.micro_batches_done % micro_per_epoch as u64) as usize;
        while step < options.max_steps {
            let order = self.epoch_order(epoch, examples.len());
            let chunks = order
                .chunks(options.per_device_train_batch_size)
                .enumerate()
                .skip(skip);
            skip = 0;
            for (index_in_epoch, chunk) in chunks {
                let batch: Vec<&Example> = chunk.iter().map(|&i| &examples[i]).collect();
                let (loss, micro_grads, micro_tokens) =
                    self.micro_batch(&batch, accumulation as f64)?;
                losses.push(loss);
                tokens += micro_tokens;
                match &mut grads {
                    Some(total) => total.iter_mut().zip(&micro_grads).for_each(|(t, g)| {
                        t.iter_mut().zip(g).for_each(|(t, g)| *t += g);
                    }),
                    None => grads = Some(micro_grads),
                }
                self.micro_batches_done += 1;
                let epoch_end = index_in_epoch + 1 == micro_per_epoch;
                let short_epoch = micro_per_epoch as u64 <= accumulation;
                if self.micro_batches_done.is_multiple_of(accumulation)
                    || (short_epoch && epoch_end)
                {
                    let mut step_grads = grads.take().unwrap_or_default();
                    let grad_norm = global_norm(&step_grads);
                    clip(&mut step_grads, grad_norm, options.max_grad_norm);
                    let learning_rate = linear_lr(
                        options.learning_rate,
                        step,
                        options.warmup_steps,
                        options.max_steps,
                    );
                    let mut values = self.params.values()?;
                    self.optimizer
                        .update(learning_rate, &mut values, &step_grads);
                    self.params.set_values(&values, self.model.device())?;
                    step += 1;
                    let log = StepLog {
                        step,
                        loss: losses.iter().sum::<f64>() / accumulation as f64,
                        learning_rate,
                        grad_norm,
                        micro_batches: losses.len(),
                        tokens,
                    };
                    losses.clear();
                    tokens = 0;
                    if on_step(&log, self)? == Flow::Stop || step >= options.max_steps {
                        return Ok(());
                    }
                }
            }
            epoch += 1;
        }
        Ok(())
    }

    /// Forward and backward of one micro-batch; returns its (undivided) loss, the gradients of
    /// `loss / accumulation` per parameter, and the tokens it fed.
    fn micro_batch(
        &self,
        batch: &[&Example],
        accumulation: f64,
    ) -> Result<(f64, Vec<Vec<f32>>, usize)> {
        let encoder = self.params.encoder();
        let loss = batch_loss(
            self.model,
            &encoder,
            batch,
            Some(&|encoded| self.prefix_dropout(encoded)),
        )?;
        let loss_value = loss.to_scalar::<f32>()? as f64;
        let gradients = (loss / accumulation)?.backward()?;
        let grads = self
            .params
            .vars()
            .iter()
            .map(|var| match gradients.get(var.as_tensor()) {
                Some(g) => Ok(g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
                None => Ok(vec![0.0; var.elem_count()]),
            })
            .collect::<Result<Vec<_>>>()?;
        let width = batch.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        Ok((loss_value, grads, batch.len() * width))
    }

    /// Inverted dropout on the batched prefix output, seeded by the micro-batch count so a resumed
    /// run draws the same masks.
    fn prefix_dropout(&self, encoded: &Tensor) -> Result<Tensor> {
        let p = self.options.prefix_dropout;
        if p <= 0.0 {
            return Ok(encoded.clone());
        }
        let mut rng = StdRng::seed_from_u64(
            self.options.seed ^ self.micro_batches_done.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let scale = 1.0 / (1.0 - p);
        let mask: Vec<f32> = (0..encoded.elem_count())
            .map(|_| if rng.random::<f32>() < p { 0.0 } else { scale })
            .collect();
        let mask =
            Tensor::from_vec(mask, encoded.shape(), encoded.device())?.to_dtype(encoded.dtype())?;
        Ok((encoded * mask)?)
    }
}

/// Transforms the batched prefix output before it reaches the layers (dropout in training).
type PrefixTransform<'f> = &'f dyn Fn(&Tensor) -> Result<Tensor>;

/// The loss of one batch under `encoder`'s prefix.
fn batch_loss(
    model: &ChatGlmModel,
    encoder: &PrefixEncoder,
    batch: &[&Example],
    transform: Option<PrefixTransform>,
) -> Result<Tensor> {
    let config = model.config();
    let sequences: Vec<Vec<u32>> = batch.iter().map(|e| e.input_ids.clone()).collect();
    let width = sequences.iter().map(Vec::len).max().unwrap_or(0);
    let labels: Vec<Vec<i64>> = batch
        .iter()
        .map(|e| {
            // Shorter examples are left-padded by `Batch`; their labels get the same padding.
            let mut row = vec![IGNORE_INDEX; width - e.labels.len()];
            row.extend_from_slice(&e.labels);
            row
        })
        .collect();
    let inputs = Batch::new(
        &sequences,
        config,
        encoder.config.pre_seq_len,
        model.device(),
    )?;
    let encoded = encoder.encode()?.to_dtype(model.dtype())?.unsqueeze(0)?;
    let encoded = encoded.broadcast_as((batch.len(), encoded.dim(1)?, encoded.dim(2)?))?;
    let encoded = match transform {
        Some(f) => f(&encoded)?,
        None => encoded,
    };
    let mut cache = KvCache::from_prefix(split_key_values(&encoded, config)?);
    let hidden = model.forward(
        &inputs.ids,
        &inputs.positions,
        inputs.mask.as_ref(),
        &mut cache,
    )?;
    causal_lm_loss(&model.logits(&hidden)?, &labels)
}
