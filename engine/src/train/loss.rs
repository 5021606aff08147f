//! The causal language-model loss of `ChatGLMForConditionalGeneration`: logits at position t
//! predict the label at t + 1, mean cross-entropy over labels other than -100, in float32.

use candle_core::{Tensor, D};

use crate::data::preprocess::IGNORE_INDEX;
use crate::error::{EngineError, Result};

/// Mean cross-entropy of `logits` (`[batch, seq, vocab]`, f32) against `labels` (`batch` rows of
/// `seq`), differentiable with respect to the logits.
pub fn causal_lm_loss(logits: &Tensor, labels: &[Vec<i64>]) -> Result<Tensor> {
    let (log_probs, _) = labelled_log_probs(logits, labels)?;
    Ok(log_probs.mean_all()?.neg()?)
}

/// The positions whose next token has a label other than -100: their flat row (`b · seq + t`), the
/// batch row each belongs to, and the label.
pub struct Labelled {
    pub rows: Vec<u32>,
    pub owners: Vec<usize>,
    pub targets: Vec<u32>,
}

impl Labelled {
    /// Checks `labels` against the inputs' `[batch, seq]` and the vocabulary.
    pub fn of(labels: &[Vec<i64>], batch: usize, seq: usize, vocab: usize) -> Result<Self> {
        if labels.len() != batch || labels.iter().any(|row| row.len() != seq) {
            return Err(EngineError::Input(format!(
                "labels must be {batch} rows of {seq}, the shape of the inputs"
            )));
        }
        let mut picked = Labelled {
            rows: Vec::new(),
            owners: Vec::new(),
            targets: Vec::new(),
        };
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
                picked.rows.push((b * seq + t) as u32);
                picked.owners.push(b);
                picked.targets.push(label as u32);
            }
        }
        if picked.rows.is_empty() {
            return Err(EngineError::Input(
                "no position has a label: every label is -100".into(),
            ));
        }
        Ok(picked)
    }

    /// The rows of `flat` (`[batch · seq, …]`) at the labelled positions.
    pub fn pick(&self, flat: &Tensor) -> Result<Tensor> {
        let rows = Tensor::from_vec(self.rows.clone(), self.rows.len(), flat.device())?;
        Ok(flat.index_select(&rows, 0)?)
    }

    /// The log-probability of each label (`[n]`) from the logits of the labelled positions
    /// (`[n, vocab]`, f32), differentiable with respect to them.
    pub fn log_probs(&self, picked_logits: &Tensor) -> Result<Tensor> {
        let count = self.targets.len();
        let targets = Tensor::from_vec(self.targets.clone(), (count, 1), picked_logits.device())?;
        let log_probs = candle_nn::ops::log_softmax(picked_logits, D::Minus1)?;
        Ok(log_probs.gather(&targets, 1)?.squeeze(1)?)
    }
}

/// The log-probability of each label other than -100 (`[n]`, in row-major order, differentiable
/// with respect to the logits) and the row it belongs to.
pub fn labelled_log_probs(logits: &Tensor, labels: &[Vec<i64>]) -> Result<(Tensor, Vec<usize>)> {
    let (batch, seq, vocab) = logits.dims3()?;
    let labelled = Labelled::of(labels, batch, seq, vocab)?;
    let picked = labelled.pick(&logits.reshape((batch * seq, vocab))?)?;
    Ok((labelled.log_probs(&picked)?, labelled.owners))
}
