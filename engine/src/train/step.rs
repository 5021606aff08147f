//! The gradients of one optimizer step: its micro-batches' rows go through the model in forwards of
//! up to `forward_batch_size` sequences, optionally recomputing each layer in the backward
//! (gradient checkpointing). Neither changes the numbers beyond float reassociation: every labelled
//! token is weighted `1 / (gradient_accumulation_steps · labelled tokens of its micro-batch)`, which
//! is the Trainer's sum over micro-batches of each one's mean loss divided by the accumulation,
//! wherever the token's row lands.

use candle_core::{DType, Tensor, Var};

use crate::error::{EngineError, Result};
use crate::model::prefix::split_key_values;
use crate::model::{Batch, ChatGlmModel, LayerCache, LayerContext, PrefixEncoder};
use crate::train::collective::{share, Collective};
use crate::train::distill::Teacher;
use crate::train::head::head_log_probs;
use crate::train::prefix_params::PrefixParams;
use crate::train::trainer::Example;

/// One row of a step: an example, the micro-batch of the step it belongs to, and its place in it
/// (which seed its prefix dropout, so a row draws the same mask in whichever forward it lands).
#[derive(Clone, Copy)]
pub(crate) struct Row<'e> {
    pub example: &'e Example,
    pub micro_batch: usize,
    pub row_in_micro_batch: usize,
}

/// How a step's rows are run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepShape {
    pub forward_batch_size: usize,
    pub accumulation: usize,
    pub gradient_checkpointing: bool,
    /// The loss scaler's factor (1 without scaling): the gradients come back multiplied by it.
    pub loss_scale: f64,
}

/// What a step's forwards and backwards produced.
pub(crate) struct StepGradients {
    /// Each micro-batch's mean loss, in order.
    pub losses: Vec<f64>,
    /// Per parameter, flattened f32.
    pub grads: Vec<Vec<f32>>,
    /// Tokens fed through the model (padding included).
    pub tokens: usize,
}

/// Transforms the batched prefix output of a forward's rows (dropout in training).
pub(crate) type PrefixTransform<'f> = &'f dyn Fn(&Tensor, &[Row]) -> Result<Tensor>;

/// Runs this rank's share of a step's rows (every row with a single rank) and returns the
/// gradients and each micro-batch's loss summed over every rank's share.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_gradients(
    model: &ChatGlmModel,
    teacher: Option<&Teacher>,
    params: &PrefixParams,
    rows: &[Row],
    micro_batches: usize,
    shape: StepShape,
    transform: PrefixTransform,
    collective: &dyn Collective,
) -> Result<StepGradients> {
    // Labelled tokens per micro-batch: each one's mean is over its own tokens.
    let mut labelled = vec![0usize; micro_batches];
    for row in rows {
        labelled[row.micro_batch] += count_labelled(&row.example.labels);
    }
    if let Some(empty) = labelled.iter().position(|&n| n == 0) {
        return Err(EngineError::Input(format!(
            "micro-batch {empty} of the step has no labelled position: every label is -100"
        )));
    }
    let mut sums = vec![0f64; micro_batches];
    let mut grads: Vec<Vec<f32>> = params.sizes().iter().map(|&n| vec![0.0; n]).collect();
    let mut tokens = 0;
    let mine: Vec<Row> = share(rows.len(), collective.rank(), collective.world_size())
        .map(|i| rows[i])
        .collect();
    for group in mine.chunks(shape.forward_batch_size.max(1)) {
        let weights: Vec<f32> = group
            .iter()
            .map(|r| {
                (shape.loss_scale / (shape.accumulation * labelled[r.micro_batch]) as f64) as f32
            })
            .collect();
        let forward = Forward::new(model, teacher, params, group, transform)?;
        let (log_probs, owners) = if shape.gradient_checkpointing {
            forward.checkpointed(&weights, &mut grads)?
        } else {
            forward.whole(&weights, &mut grads)?
        };
        for (value, row) in log_probs.iter().zip(owners) {
            sums[group[row].micro_batch] -= f64::from(*value);
        }
        tokens += forward.tokens();
    }
    if collective.world_size() > 1 {
        reduce(collective, &mut sums, &mut grads, &mut tokens)?;
    }
    let losses = sums
        .iter()
        .zip(&labelled)
        .map(|(sum, &n)| sum / n as f64)
        .collect();
    Ok(StepGradients {
        losses,
        grads,
        tokens,
    })
}

/// The loss sums, the gradients and the tokens of every rank's share, summed in one call.
fn reduce(
    collective: &dyn Collective,
    sums: &mut [f64],
    grads: &mut [Vec<f32>],
    tokens: &mut usize,
) -> Result<()> {
    let mut all: Vec<f64> = sums.to_vec();
    all.push(*tokens as f64);
    for g in grads.iter() {
        all.extend(g.iter().map(|&v| f64::from(v)));
    }
    collective.all_reduce_sum(&mut all)?;
    let (head, rest) = all.split_at(sums.len() + 1);
    sums.copy_from_slice(&head[..sums.len()]);
    *tokens = head[sums.len()] as usize;
    let mut rest = rest.iter();
    for g in grads.iter_mut() {
        g.iter_mut()
            .zip(rest.by_ref())
            .for_each(|(v, &sum)| *v = sum as f32);
    }
    Ok(())
}

/// The mean loss over the labelled tokens of `rows` under the current prefix, no dropout, no
/// backward (evaluation).
pub(crate) fn mean_loss(
    model: &ChatGlmModel,
    teacher: Option<&Teacher>,
    params: &PrefixParams,
    rows: &[Row],
) -> Result<f64> {
    let forward = Forward::new(model, teacher, params, rows, &|encoded, _| {
        Ok(encoded.clone())
    })?;
    let hidden = forward.last_hidden()?;
    let (log_probs, _) = head_log_probs(model, &hidden, &forward.labels, forward.soft())?;
    Ok(f64::from(log_probs.mean_all()?.neg()?.to_scalar::<f32>()?))
}

fn count_labelled(labels: &[i64]) -> usize {
    labels
        .iter()
        .skip(1)
        .filter(|&&l| l != crate::data::preprocess::IGNORE_INDEX)
        .count()
}

/// One forward's left-padded inputs and prefix.
struct Forward<'a> {
    model: &'a ChatGlmModel,
    /// With a teacher, the loss is the distillation objective (`distill`).
    teacher: Option<&'a Teacher>,
    params: &'a PrefixParams,
    /// The rows' ids, unpadded (what the teacher reads).
    sequences: Vec<Vec<u32>>,
    inputs: Batch,
    labels: Vec<Vec<i64>>,
    /// The prefix keys and values of every layer, tracking the prefix parameters.
    prefix: Vec<(Tensor, Tensor)>,
}

impl<'a> Forward<'a> {
    fn new(
        model: &'a ChatGlmModel,
        teacher: Option<&'a Teacher>,
        params: &'a PrefixParams,
        rows: &[Row],
        transform: PrefixTransform,
    ) -> Result<Self> {
        let config = model.config();
        let sequences: Vec<Vec<u32>> = rows.iter().map(|r| r.example.input_ids.clone()).collect();
        let width = sequences.iter().map(Vec::len).max().unwrap_or(0);
        // Shorter rows are left-padded by `Batch`; their labels get the same padding.
        let labels = rows
            .iter()
            .map(|r| {
                let mut row =
                    vec![crate::data::preprocess::IGNORE_INDEX; width - r.example.labels.len()];
                row.extend_from_slice(&r.example.labels);
                row
            })
            .collect();
        let encoder: PrefixEncoder = params.encoder();
        let pre_seq_len = encoder.config.pre_seq_len;
        let inputs = Batch::new(&sequences, config, pre_seq_len, model.device())?;
        // The prefix is encoded once per forward and shared by its rows.
        let encoded = encoder.encode()?.to_dtype(model.dtype())?.unsqueeze(0)?;
        let encoded = encoded.broadcast_as((rows.len(), encoded.dim(1)?, encoded.dim(2)?))?;
        let encoded = transform(&encoded, rows)?;
        let prefix = split_key_values(&encoded, config)?;
        Ok(Self {
            model,
            teacher,
            params,
            sequences,
            inputs,
            labels,
            prefix,
        })
    }

    fn soft(&self) -> Option<(&Teacher, &[Vec<u32>])> {
        self.teacher.map(|t| (t, self.sequences.as_slice()))
    }

    fn tokens(&self) -> usize {
        self.labels.len() * self.labels.first().map_or(0, Vec::len)
    }

    /// The weighted loss `−Σ w_row · log p(label)` of the last layer's output (before the final
    /// norm), and the labelled log-probabilities with the row each belongs to.
    fn loss(&self, hidden: &Tensor, weights: &[f32]) -> Result<(Tensor, Vec<f32>, Vec<usize>)> {
        let (log_probs, owners) = head_log_probs(self.model, hidden, &self.labels, self.soft())?;
        let w: Vec<f32> = owners.iter().map(|&row| weights[row]).collect();
        let w = Tensor::from_vec(w, owners.len(), log_probs.device())?;
        let loss = (log_probs.mul(&w)?.sum_all()?.neg())?;
        Ok((loss, log_probs.to_vec1::<f32>()?, owners))
    }

    /// What every layer of this forward reads.
    fn context(&self) -> Result<LayerContext> {
        self.model.layer_context(
            &self.inputs.ids,
            &self.inputs.positions,
            self.inputs.mask.as_ref(),
        )
    }

    /// The last layer's output, one graph from the prefix.
    fn last_hidden(&self) -> Result<Tensor> {
        let model = self.model;
        let context = self.context()?;
        let mut hidden = model.embed(&self.inputs.ids)?;
        for (layer, prefix) in self.prefix.iter().enumerate() {
            let mut cache = Some(LayerCache::new(prefix.0.clone(), prefix.1.clone())?);
            hidden = model.layer(layer, &hidden, &context, &mut cache)?;
        }
        Ok(hidden)
    }

    /// One graph from the prefix to the loss, one backward.
    fn whole(&self, weights: &[f32], grads: &mut [Vec<f32>]) -> Result<(Vec<f32>, Vec<usize>)> {
        let hidden = self.last_hidden()?;
        let (loss, values, owners) = self.loss(&hidden, weights)?;
        let store = loss.backward()?;
        self.add_prefix_grads(&store, grads)?;
        Ok((values, owners))
    }

    /// Gradient checkpointing: a forward without a graph keeps each layer's input; the backward
    /// then recomputes one layer at a time from its input, with the gradient of its output,
    /// so only one layer's activations are ever held.
    fn checkpointed(
        &self,
        weights: &[f32],
        grads: &mut [Vec<f32>],
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let model = self.model;
        let context = self.context()?;
        let mut inputs = Vec::with_capacity(model.num_layers());
        let mut hidden = model.embed(&self.inputs.ids)?;
        for (layer, (key, value)) in self.prefix.iter().enumerate() {
            let mut cache = Some(LayerCache::new(key.detach(), value.detach())?);
            let output = model.layer(layer, &hidden, &context, &mut cache)?;
            inputs.push(hidden);
            hidden = output;
        }
        let last = Var::from_tensor(&hidden)?;
        let (loss, values, owners) = self.loss(last.as_tensor(), weights)?;
        let store = loss.backward()?;
        let mut upstream = gradient_of(&store, last.as_tensor())?;
        for (layer, input) in inputs.iter().enumerate().rev() {
            // The embeddings are frozen: the first layer's input needs no gradient.
            let input = if layer > 0 {
                Some(Var::from_tensor(input)?)
            } else {
                None
            };
            let x = input.as_ref().map_or(&inputs[0], |v| v.as_tensor());
            let (key, value) = &self.prefix[layer];
            let mut cache = Some(LayerCache::new(key.clone(), value.clone())?);
            let output = model.layer(layer, x, &context, &mut cache)?;
            // Σ output ⊙ upstream has the layer's gradients for that upstream gradient.
            let surrogate = output
                .to_dtype(DType::F32)?
                .mul(&upstream.to_dtype(DType::F32)?)?
                .sum_all()?;
            let store = surrogate.backward()?;
            self.add_prefix_grads(&store, grads)?;
            if let Some(input) = &input {
                upstream = gradient_of(&store, input.as_tensor())?;
            }
        }
        Ok((values, owners))
    }

    fn add_prefix_grads(
        &self,
        store: &candle_core::backprop::GradStore,
        grads: &mut [Vec<f32>],
    ) -> Result<()> {
        for (var, total) in self.params.vars().iter().zip(grads.iter_mut()) {
            if let Some(g) = store.get(var.as_tensor()) {
                let g = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                total.iter_mut().zip(&g).for_each(|(t, g)| *t += g);
            }
        }
        Ok(())
    }
}

fn gradient_of(store: &candle_core::backprop::GradStore, tensor: &Tensor) -> Result<Tensor> {
    store
        .get(tensor)
        .cloned()
        .ok_or_else(|| EngineError::Input("a checkpointed layer's output has no gradient".into()))
}
