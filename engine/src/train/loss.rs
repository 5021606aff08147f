//! The causal language-model loss of `ChatGLMForConditionalGeneration`: logits at position t
//! predict the label at t + 1, mean cross-entropy over labels other than -100, in float32.

use candle_core::{Tensor, D};

use crate::error::{EngineError, Result};

/// Label value that excludes a position from the loss.
pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy of `logits` (`[batch, seq, vocab]`, f32) against `labels` (`batch` rows of
/// `seq`), differentiable with respect to the logits.
pub fn causal_lm_loss(logits: &Tensor, labels: &[Vec<i64>]) -> Result<Tensor> {
    let (log_probs, _) = labelled_log_probs(logits, labels)?;
    Ok(log_probs.mean_all()?.neg()?)
}

/// The log-probability of each label other than -100 (`[n]`, in row-major order, differentiable
/// with respect to the logits) and the row it belongs to.
pub fn labelled_log_probs(logits: &Tensor, labels: &[Vec<i64>]) -> Result<(Tensor, Vec<usize>)> {
    let (batch, seq, vocab) = logits.dims3()?;
    if labels.len() != batch || labels.iter().any(|row| row.len() != seq) {
        return Err(EngineError::Input(format!(
            "labels must be {batch} rows of {seq}, the shape of the inputs"
        )));
    }
    let mut rows = Vec::new();
    let mut owners = Vec::new();
    let mut targets = Vec::new();
    for (b, row) in labels.iter().enumerate() {
        for t in 0..seq.saturating_sub(1) {
            let label = row[t + 1];
            if label == IGNORE_INDEX {
                continue;
            }
            if label < 0 || label as usize >= vocab {
                return Err(EngineError::Input(format!(
                    "label {label} is outside the vocabulary ({vocab})"
                )));
            }
            rows.push((b * seq + t) as u32);
            owners.push(b);
            targets.push(label as u32);
        }
    }
    if rows.is_empty() {
        return Err(EngineError::Input(
            "no position has a label: every label is -100".into(),
        ));
    }
    let device = logits.device();
    let count = rows.len();
    let rows = Tensor::from_vec(rows, count, device)?;
    let targets = Tensor::from_vec(targets, (count, 1), device)?;
    let picked = logits
        .reshape((batch * seq, vocab))?
        .index_select(&rows, 0)?;
    let log_probs = candle_nn::ops::log_softmax(&picked, D::Minus1)?;
    Ok((log_probs.gather(&targets, 1)?.squeeze(1)?, owners))
}
