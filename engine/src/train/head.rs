//! The output layer and the label log-probabilities of a forward's labelled positions, a chunk of
//! rows at a time.
//!
//! Done whole, the `[labelled rows, vocabulary]` logits and every step of their log-softmax stay in
//! the autograd graph until the backward: at ChatGLM's 130528-word vocabulary that is 33 MB a
//! sequence for each of half a dozen tensors, the largest activations of a step, and with a forward
//! of 16 sequences each is 535 MB, freshly mapped and faulted in. Here each chunk's logits live only
//! while the chunk is computed. The gradient of `log p(label)` with respect to a row's hidden state
//! is `(onehot(label) − softmax(logits)) · W`: it is computed in the forward, from the chunk's own
//! logits (the same two products, forward and backward, as autograd would run), and handed to
//! autograd through a product whose value is exactly zero.

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::model::ChatGlmModel;
use crate::train::distill::Teacher;
use crate::train::loss::Labelled;

/// Rows through the output layer at once: enough for the product to run near the matmul's full
/// rate (64 rows reach half of it on this project's CPU), few enough that a chunk's f32 logits stay
/// around 64 MB at ChatGLM's vocabulary.
const CHUNK_ROWS: usize = 128;

/// The log-probability of each label of `labels` after the last layer's output `hidden`
/// (`[batch, seq, width]`, before the final norm), and the row each belongs to.
///
/// Only the labelled positions go through the output layer: a position's logits depend on its own
/// hidden state alone, and for ChatGLM-6B the 130528-wide layer is the largest product and the
/// largest activation of the step (half of whose positions, the prompt's, have no label).
///
/// With a teacher (and the forward's `sequences`, unpadded), each value is the distillation
/// objective of [`Teacher::values_and_directions`] instead.
pub(crate) fn head_log_probs(
    model: &ChatGlmModel,
    hidden: &Tensor,
    labels: &[Vec<i64>],
    teacher: Option<(&Teacher, &[Vec<u32>])>,
) -> Result<(Tensor, Vec<usize>)> {
    let (batch, seq, width) = hidden.dims3()?;
    let labelled = Labelled::of(labels, batch, seq, model.config().vocab_size)?;
    let normed = model.final_norm(hidden)?;
    let picked = labelled.pick(&normed.reshape((batch * seq, width))?)?;
    let soft = match teacher {
        Some((teacher, sequences)) => {
            // Row b is left-padded to `seq`: its position t is t − padding in the sequence.
            let positions: Vec<(usize, usize)> = labelled
                .rows
                .iter()
                .zip(&labelled.owners)
                .map(|(&row, &b)| (b, row as usize - b * seq - (seq - sequences[b].len())))
                .collect();
            Some((teacher, teacher.targets(sequences, &positions)?))
        }
        None => None,
    };
    let soft = soft.as_ref().map(|(teacher, targets)| (*teacher, targets));
    let log_probs = label_log_probs(model, &picked, &labelled, soft)?;
    Ok((log_probs, labelled.owners))
}

/// The log-probability of each label of `labelled` (`[n]`, f32) from the final hidden states of
/// the labelled positions (`picked`, `[n, width]`, after the final norm), differentiable with
/// respect to `picked` when it tracks gradients.
fn label_log_probs(
    model: &ChatGlmModel,
    picked: &Tensor,
    labelled: &Labelled,
    soft: Option<(&Teacher, &Tensor)>,
) -> Result<Tensor> {
    let tracking = picked.track_op();
    let rows = picked.detach();
    let head = &model.lm_head;
    // Dequantized once for all chunks, as the product multiplies it (training's exact path).
    let weight = if tracking {
        Some(head.weight_in(picked.dtype())?)
    } else {
        None
    };
    let count = labelled.targets.len();
    let mut values = Vec::with_capacity(count.div_ceil(CHUNK_ROWS));
    let mut directions = Vec::with_capacity(values.capacity());
    for start in (0..count).step_by(CHUNK_ROWS) {
        let len = CHUNK_ROWS.min(count - start);
        let chunk = rows.narrow(0, start, len)?;
        let logits = match &weight {
            // `model.logits` without its per-call dequantization: the output layer has no bias
            // in any generation (chatglm.rs builds it with none).
            Some(weight) => chunk.matmul(&weight.t()?)?.to_dtype(DType::F32)?,
            None => model.logits(&chunk)?,
        };
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let targets = Tensor::from_slice(
            &labelled.targets[start..start + len],
            (len, 1),
            picked.device(),
        )?;
        let (value, direction) = match soft {
            Some((teacher, soft_targets)) => {
                let (value, direction) = teacher.values_and_directions(
                    &logits,
                    &log_probs,
                    &soft_targets.narrow(0, start, len)?,
                    &targets,
                )?;
                (value, Some(direction))
            }
            None => (log_probs.gather(&targets, 1)?.squeeze(1)?, None),
        };
        values.push(value);
        if let Some(weight) = &weight {
            let direction = match direction {
                Some(direction) => direction,
                None => {
                    // d log p(label) / d logits = onehot(label) − softmax.
                    let ones = Tensor::ones((len, 1), DType::F32, picked.device())?;
                    log_probs.exp()?.neg()?.scatter_add(&targets, &ones, 1)?
                }
            };
            directions.push(direction.to_dtype(weight.dtype())?.matmul(weight)?);
        }
    }
    let values = Tensor::cat(&values, 0)?;
    if !tracking {
        return Ok(values);
    }
    // Σ_width picked · direction has the labels' gradient with respect to `picked`; subtracting
    // its own detached value leaves exactly zero, so the values are the log-probabilities bit for
    // bit. In f32, so a half-precision gradient is rounded once, where autograd rounds it.
    let directions = Tensor::cat(&directions, 0)?.to_dtype(DType::F32)?;
    let linear = picked
        .to_dtype(DType::F32)?
        .mul(&directions)?
        .sum(D::Minus1)?;
    Ok(values.add(&linear.sub(&linear.detach())?)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::config::shapes;

    /// Against the whole-matrix form (all rows' logits through `log_softmax` and autograd), over
    /// three chunks with a short last one: the same values, the same gradient.
    #[test]
    fn chunked_rows_give_the_whole_forms_values_and_gradient() {
        let (config, _) = shapes::named("h128l1").unwrap();
        let vocab = config.vocab_size;
        let model = ChatGlmModel::random(config, DType::F32, &Device::Cpu, 3).unwrap();
        let rows = 2 * CHUNK_ROWS + 37;
        let picked = Var::randn(0f32, 1., (rows, 128), &Device::Cpu).unwrap();
        let labelled = Labelled {
            rows: (0..rows as u32).collect(),
            owners: vec![0; rows],
            targets: (0..rows).map(|i| ((i * 7919) % vocab) as u32).collect(),
        };
        // Different weights per row, so a gradient sent to the wrong row shows.
        let weights: Vec<f32> = (0..rows).map(|i| 1. + (i % 5) as f32).collect();
        let weights = Tensor::from_vec(weights, rows, &Device::Cpu).unwrap();

        let ours = label_log_probs(&model, picked.as_tensor(), &labelled, None).unwrap();
        let whole = labelled
            .log_probs(&model.logits(picked.as_tensor()).unwrap())
            .unwrap();
        let values = |t: &Tensor| t.to_vec1::<f32>().unwrap();
        for (a, b) in values(&ours).iter().zip(values(&whole)) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.), "{a} vs {b}");
        }
        let grad = |t: &Tensor| {
            let store = t
                .mul(&weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g = store
                .get(picked.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap();
            g.to_vec1::<f32>().unwrap()
        };
        let (ours, whole) = (grad(&ours), grad(&whole));
        let scale = whole.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in ours.iter().zip(&whole) {
            assert!((a - b).abs() <= 1e-5 * scale, "{a} vs {b}");
        }
    }
}
