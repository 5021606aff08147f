//! The training loop, step for step as the Hugging Face Trainer runs `ptuning/main.py`.
//!
//! Epochs walk the examples in file order (or a seeded shuffle), in micro-batches of
//! `batch_size` (the last one of an epoch may be partial). Each micro-batch's loss is divided by
//! `grad_accum` before backward; an optimizer step comes every `grad_accum` micro-batches, counted
//! across epochs, and also at the end of an epoch shorter than `grad_accum`. Gradients are clipped
//! to a global norm, then `adamw_hf` updates the prefix with the linear schedule's rate.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::error::{EngineError, Result};
use crate::model::{ChatGlmModel, PrefixEncoder};
use crate::train::collective::{Collective, Single};
use crate::train::distill::Teacher;
use crate::train::optimizer::{clip, global_norm, linear_lr, AdamW, AdamWConfig};
use crate::train::prefix_params::PrefixParams;
use crate::train::scaler::{LossScaling, ScalerState};
use crate::train::step::{mean_loss, step_gradients, Row, StepGradients, StepShape};

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
    /// Sequences per forward/backward (default: `per_device_train_batch_size`). A step's rows are
    /// run in forwards of this many whatever their micro-batches; only speed and memory change.
    pub forward_batch_size: Option<usize>,
    /// Recompute each layer in the backward instead of keeping its activations.
    pub gradient_checkpointing: bool,
    /// Dynamic loss scaling (for an f16 base, as the Trainer's `--fp16`).
    pub loss_scaling: Option<LossScaling>,
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
            forward_batch_size: None,
            gradient_checkpointing: false,
            loss_scaling: None,
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
    /// With loss scaling: the scale this step's backward used, and whether its gradients
    /// overflowed, so that the update was skipped.
    pub loss_scale: Option<f64>,
    pub skipped: bool,
}

/// The counters of `trainer_state.json` in a checkpoint folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken, skipped ones included (the Trainer's `global_step`).
    pub global_step: u64,
    pub micro_batches_done: u64,
    pub seed: u64,
    /// Steps the schedule and AdamW have taken: fewer than `global_step` when loss scaling
    /// skipped some (absent in checkpoints written before loss scaling: `global_step`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scaler: Option<ScalerState>,
}

/// Trains a prefix encoder against a frozen model.
pub struct Trainer {
    /// The base as [`ChatGlmModel::for_training`] multiplies it (weights shared, not copied).
    model: ChatGlmModel,
    params: PrefixParams,
    optimizer: AdamW,
    options: TrainOptions,
    /// Micro-batches run so far, across epochs (the Trainer's `total_batched_samples`).
    micro_batches_done: u64,
    /// Optimizer steps so far, skipped ones included; the schedule follows `optimizer.step`.
    global_step: u64,
    scaler: Option<ScalerState>,
    /// With a teacher, the prefix is distilled from it: the losses, training and evaluation,
    /// are the distillation objective (`distill`).
    teacher: Option<Arc<Teacher>>,
    /// The data-parallel group this trainer is a rank of ([`Single`] alone).
    collective: Arc<dyn Collective>,
}

impl Trainer {
    pub fn new(model: &ChatGlmModel, init: &PrefixEncoder, options: TrainOptions) -> Result<Self> {
        if options.per_device_train_batch_size == 0
            || options.gradient_accumulation_steps == 0
            || options.forward_batch_size == Some(0)
        {
            return Err(EngineError::Input(
                "batch size, forward batch size and gradient accumulation steps must be at least 1"
                    .into(),
            ));
        }
        let params = PrefixParams::from_encoder(init)?;
        let optimizer = AdamW::new(options.adam, &params.sizes(), &params.decays());
        Ok(Self {
            model: model.for_training(),
            params,
            optimizer,
            scaler: options.loss_scaling.as_ref().map(ScalerState::new),
            options,
            micro_batches_done: 0,
            global_step: 0,
            teacher: None,
            collective: Arc::new(Single),
        })
    }

    /// Runs as one rank of a data-parallel group: each step's rows are split over the ranks and
    /// their gradients summed before the update (see [`crate::train::collective`]). Every rank
    /// takes the same examples and options; they end on the same prefix as one process would, to
    /// float reassociation.
    pub fn with_collective(mut self, collective: Arc<dyn Collective>) -> Self {
        self.collective = collective;
        self
    }

    /// Distils the prefix from `teacher` instead of fitting the labels alone.
    pub fn with_teacher(mut self, teacher: Arc<Teacher>) -> Result<Self> {
        teacher.check_student(&self.model)?;
        self.teacher = Some(teacher);
        Ok(self)
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
        let mut total = 0.0;
        for batch in examples.chunks(self.options.per_device_train_batch_size) {
            let rows: Vec<Row> = batch
                .iter()
                .enumerate()
                .map(|(i, example)| Row {
                    example,
                    micro_batch: 0,
                    row_in_micro_batch: i,
                })
                .collect();
            total += mean_loss(&self.model, self.teacher.as_deref(), &self.params, &rows)?
                * batch.len() as f64;
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
        let state = TrainerState {
            global_step: self.global_step,
            micro_batches_done: self.micro_batches_done,
            seed: self.options.seed,
            applied_steps: Some(self.optimizer.step),
            loss_scaler: self.scaler,
        };
        let text = serde_json::to_string(&state)
            .map_err(|e| EngineError::checkpoint(dir.join(STATE_FILE), e.to_string()))?;
        crate::checkpoint::write_atomically(&dir.join(STATE_FILE), text.as_bytes())
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
        let state: TrainerState = serde_json::from_str(&text)
            .map_err(|e| EngineError::checkpoint(&state_path, format!("invalid state: {e}")))?;
        self.global_step = state.global_step;
        self.optimizer.step = state.applied_steps.unwrap_or(state.global_step);
        self.micro_batches_done = state.micro_batches_done;
        if let (Some(scaler), Some(saved)) = (&mut self.scaler, state.loss_scaler) {
            *scaler = saved;
        }
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

    /// Optimizer steps done so far (skipped ones included).
    pub fn step(&self) -> u64 {
        self.global_step
    }

    /// Runs until `max_steps` optimizer steps are done (resuming where a restored checkpoint left
    /// off), calling `on_step` after each; `ControlFlow::Break(())` from it ends the run after that step.
    pub fn run(
        &mut self,
        examples: &[Example],
        mut on_step: impl FnMut(&StepLog, &Trainer) -> Result<ControlFlow<()>>,
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
        let micro_per_epoch = examples.len().div_ceil(options.per_device_train_batch_size) as u64;
        let shape = StepShape {
            forward_batch_size: options
                .forward_batch_size
                .unwrap_or(options.per_device_train_batch_size),
            accumulation: options.gradient_accumulation_steps,
            gradient_checkpointing: options.gradient_checkpointing,
            loss_scale: 1.0,
        };
        let mut order: Option<(u64, Vec<usize>)> = None;
        while self.global_step < options.max_steps {
            // This step's micro-batches, by the Trainer's rule: every `accumulation` micro-batches
            // counted across epochs, and at the end of an epoch shorter than that. Checkpoints fall
            // on step boundaries, so a resumed run starts at one.
            let first_micro_batch = self.micro_batches_done;
            let mut rows = Vec::new();
            let mut micro_batches = 0;
            loop {
                let epoch = self.micro_batches_done / micro_per_epoch;
                let index_in_epoch = (self.micro_batches_done % micro_per_epoch) as usize;
                if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    order = Some((epoch, self.epoch_order(epoch, examples.len())));
                }
                let chunk = order.as_ref().map_or(&[][..], |(_, o)| {
                    o.chunks(options.per_device_train_batch_size)
                        .nth(index_in_epoch)
                        .unwrap_or(&[])
                });
                rows.extend(chunk.iter().enumerate().map(|(row, &i)| Row {
                    example: &examples[i],
                    micro_batch: micro_batches,
                    row_in_micro_batch: row,
                }));
                micro_batches += 1;
                self.micro_batches_done += 1;
                let epoch_end = index_in_epoch as u64 + 1 == micro_per_epoch;
                let short_epoch = micro_per_epoch <= accumulation;
                if self.micro_batches_done.is_multiple_of(accumulation)
                    || (short_epoch && epoch_end)
                {
                    break;
                }
            }
            let dropout = |encoded: &Tensor, rows: &[Row]| {
                self.prefix_dropout(encoded, first_micro_batch, rows)
            };
            let StepGradients {
                losses,
                grads: mut step_grads,
                tokens,
            } = step_gradients(
                &self.model,
                self.teacher.as_deref(),
                &self.params,
                &rows,
                micro_batches,
                StepShape {
                    loss_scale: self.scaler.map_or(1.0, |s| s.scale),
                    ..shape
                },
                &dropout,
                self.collective.as_ref(),
            )?;
            let loss_scale = self.scaler.map(|s| s.scale);
            // GradScaler: unscale before clipping; an overflow skips the update and the schedule.
            let finite = match &self.scaler {
                Some(scaler) => scaler.unscale(&mut step_grads),
                None => true,
            };
            if let (Some(scaler), Some(settings)) = (&mut self.scaler, &options.loss_scaling) {
                scaler.update(settings, !finite);
            }
            let grad_norm = global_norm(&step_grads);
            let learning_rate = linear_lr(
                options.learning_rate,
                self.optimizer.step,
                options.warmup_steps,
                options.max_steps,
            );
            if finite {
                clip(&mut step_grads, grad_norm, options.max_grad_norm);
                let mut values = self.params.values()?;
                self.optimizer
                    .update(learning_rate, &mut values, &step_grads);
                self.params.set_values(&values, self.model.device())?;
            }
            self.global_step += 1;
            let log = StepLog {
                step: self.global_step,
                loss: losses.iter().sum::<f64>() / accumulation as f64,
                learning_rate,
                grad_norm,
                micro_batches,
                tokens,
                loss_scale,
                skipped: !finite,
            };
            if on_step(&log, self)? == ControlFlow::Break(()) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Inverted dropout on the prefix output of a forward's rows. Each row's mask is seeded by its
    /// micro-batch's number in the run and its place in it, so a resumed run, or another
    /// `forward_batch_size`, draws the same masks.
    fn prefix_dropout(
        &self,
        encoded: &Tensor,
        first_micro_batch: u64,
        rows: &[Row],
    ) -> Result<Tensor> {
        let p = self.options.prefix_dropout;
        if p <= 0.0 {
            return Ok(encoded.clone());
        }
        let scale = 1.0 / (1.0 - p);
        let per_row = encoded.elem_count() / rows.len().max(1);
        let mut mask: Vec<f32> = Vec::with_capacity(encoded.elem_count());
        for row in rows {
            let micro_batch = first_micro_batch + row.micro_batch as u64;
            let mut rng = StdRng::seed_from_u64(
                self.options.seed
                    ^ micro_batch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ (row.row_in_micro_batch as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F),
            );
            mask.extend((0..per_row).map(|_| if rng.random::<f32>() < p { 0.0 } else { scale }));
        }
        let mask =
            Tensor::from_vec(mask, encoded.shape(), encoded.device())?.to_dtype(encoded.dtype())?;
        Ok((encoded * mask)?)
    }
}
