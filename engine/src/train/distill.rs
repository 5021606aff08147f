//! Prefix distillation: the prefix learns to make its (often quantized) base answer as a teacher
//! does — another model, or the same one in higher precision, with its own adapter. Each labelled
//! position's target is then the teacher's next-token distribution at temperature `T` rather than
//! the label alone, and the loss is `KL(teacher_T ‖ student_T) · T²` (Hinton's scaling, so the
//! gradient's size does not shrink with `T`), optionally mixed with the label's cross-entropy.
//!
//! The per-position value handed on in place of `log p(label)` is
//! `hard · log p(label) − (1 − hard) · T² · KL`, so the trainer's loss (its negated mean) is the
//! mixture, and 0 for a student that matches the teacher exactly (with `hard` 0). Its gradient with
//! respect to the student's logits `z` is `hard · (onehot − softmax(z)) + (1 − hard) · T ·
//! (p_T − softmax(z / T))`.

use std::sync::Arc;

use candle_core::{DType, Tensor, D};

use crate::error::{EngineError, Result};
use crate::generation::generate::sequence_logits;
use crate::model::{ChatGlmModel, PrefixEncoder};

/// A teacher and how its answers are weighed.
pub struct Teacher {
    pub model: Arc<ChatGlmModel>,
    /// The teacher's adapter (none: its base alone).
    pub prefix: Option<PrefixEncoder>,
    /// Softens both distributions (1: as they are).
    pub temperature: f64,
    /// The weight of the label's own cross-entropy (0: distillation alone).
    pub hard_weight: f64,
}

impl Teacher {
    pub fn new(
        model: Arc<ChatGlmModel>,
        prefix: Option<PrefixEncoder>,
        temperature: f64,
        hard_weight: f64,
    ) -> Result<Self> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(EngineError::Input(format!(
                "the distillation temperature must be positive, not {temperature}"
            )));
        }
        if !(0.0..=1.0).contains(&hard_weight) {
            return Err(EngineError::Input(format!(
                "the weight of the labels' loss must be in [0, 1], not {hard_weight}"
            )));
        }
        Ok(Teacher {
            model,
            prefix,
            temperature,
            hard_weight,
        })
    }

    /// Checks that the student reads the same tokens (the distributions are over one
    /// vocabulary).
    pub fn check_student(&self, student: &ChatGlmModel) -> Result<()> {
        let (t, s) = (self.model.config().vocab_size, student.config().vocab_size);
        if t != s {
            return Err(EngineError::Input(format!(
                "the teacher's vocabulary ({t} tokens) is not the student's ({s})"
            )));
        }
        Ok(())
    }

    /// The teacher's distributions at temperature `T` (`[n, vocab]`, f32) at `positions`: for
    /// each, the sequence and the position in it whose next token is predicted, in the order of
    /// the labelled rows.
    pub(crate) fn targets(
        &self,
        sequences: &[Vec<u32>],
        positions: &[(usize, usize)],
    ) -> Result<Tensor> {
        let mut rows = Vec::with_capacity(positions.len());
        let mut start = 0;
        // Each sequence's logits once, its positions picked in order.
        while start < positions.len() {
            let sequence = positions[start].0;
            let end = start
                + positions[start..]
                    .iter()
                    .take_while(|p| p.0 == sequence)
                    .count();
            let logits = sequence_logits(&self.model, self.prefix.as_ref(), &sequences[sequence])?;
            let at: Vec<u32> = positions[start..end].iter().map(|p| p.1 as u32).collect();
            let at = Tensor::from_vec(at, end - start, logits.device())?;
            rows.push(logits.index_select(&at, 0)?.to_dtype(DType::F32)?);
            start = end;
        }
        let logits = Tensor::cat(&rows, 0)?;
        Ok(candle_nn::ops::softmax_last_dim(
            &(logits / self.temperature)?,
        )?)
    }

    /// The value of each labelled row (`[n]`) and the gradient of the values with respect to the
    /// student's logits (`[n, vocab]`), from the student's `logits` and log-softmax at T = 1,
    /// the teacher's `targets` and the label of each row.
    pub(crate) fn values_and_directions(
        &self,
        logits: &Tensor,
        log_probs: &Tensor,
        targets: &Tensor,
        labels: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let t = self.temperature;
        let soft_log_q = candle_nn::ops::log_softmax(&(logits / t)?, D::Minus1)?;
        // p log p with 0 log 0 = 0.
        let log_p = targets.clamp(f32::MIN_POSITIVE, 1.0)?.log()?;
        let kl = targets.mul(&log_p.sub(&soft_log_q)?)?.sum(D::Minus1)?;
        let soft_direction = targets.sub(&soft_log_q.exp()?)?.affine(t, 0.)?;
        let soft = (1.0 - self.hard_weight) * t * t;
        let mut values = kl.affine(-soft, 0.)?;
        let mut directions = soft_direction.affine((1.0 - self.hard_weight) * 1.0, 0.)?;
        if self.hard_weight > 0.0 {
            let count = labels.dim(0)?;
            let ones = Tensor::ones((count, 1), DType::F32, logits.device())?;
            let hard_direction = log_probs.exp()?.neg()?.scatter_add(labels, &ones, 1)?;
            let hard_values = log_probs.gather(labels, 1)?.squeeze(1)?;
            values = values.add(&hard_values.affine(self.hard_weight, 0.)?)?;
            directions = directions.add(&hard_direction.affine(self.hard_weight, 0.)?)?;
        }
        Ok((values, directions))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::config::shapes;

    /// The directions are the gradient of the values with respect to the logits, as autograd
    /// finds it through the plain log-softmax, for a pure and a mixed objective at T ≠ 1.
    #[test]
    fn directions_are_the_values_gradient() {
        let (config, _) = shapes::named("h128l1").unwrap();
        let model = Arc::new(ChatGlmModel::random(config, DType::F32, &Device::Cpu, 3).unwrap());
        let (rows, vocab) = (5, 11);
        let logits = Var::randn(0f32, 2., (rows, vocab), &Device::Cpu).unwrap();
        let teacher_logits = Tensor::randn(0f32, 2., (rows, vocab), &Device::Cpu).unwrap();
        let labels = Tensor::from_vec(vec![0u32, 3, 10, 7, 7], (rows, 1), &Device::Cpu).unwrap();
        for (temperature, hard) in [(2.0, 0.0), (0.5, 0.3)] {
            let teacher = Teacher::new(model.clone(), None, temperature, hard).unwrap();
            let targets =
                candle_nn::ops::softmax_last_dim(&(&teacher_logits / temperature).unwrap())
                    .unwrap();
            let z = logits.as_tensor();
            let log_probs = candle_nn::ops::log_softmax(z, D::Minus1).unwrap();
            let (values, directions) = teacher
                .values_and_directions(&z.detach(), &log_probs.detach(), &targets, &labels)
                .unwrap();
            // The same values with autograd: hard · log p(label) − (1 − hard) · T² · KL.
            let soft_log_q =
                candle_nn::ops::log_softmax(&(z / temperature).unwrap(), D::Minus1).unwrap();
            let cross = targets
                .mul(&soft_log_q)
                .unwrap()
                .sum(D::Minus1)
                .unwrap()
                .affine((1.0 - hard) * temperature * temperature, 0.)
                .unwrap();
            let hard_values = log_probs
                .gather(&labels, 1)
                .unwrap()
                .squeeze(1)
                .unwrap()
                .affine(hard, 0.)
                .unwrap();
            let objective = cross.add(&hard_values).unwrap().sum_all().unwrap();
            let grad = objective.backward().unwrap();
            let expected = grad.get(z).unwrap().to_vec2::<f32>().unwrap();
            let ours = directions.to_vec2::<f32>().unwrap();
            for (a, b) in ours.iter().flatten().zip(expected.iter().flatten()) {
                assert!((a - b).abs() < 1e-5, "T {temperature}: {a} vs {b}");
            }
            // The values differ from autograd's only by the teacher's entropy (a constant).
            let entropy: Vec<f32> = targets
                .mul(
                    &targets
                        .clamp(f32::MIN_POSITIVE, 1.0)
                        .unwrap()
                        .log()
                        .unwrap(),
                )
                .unwrap()
                .sum(D::Minus1)
                .unwrap()
                .to_vec1()
                .unwrap();
            let plain = cross.add(&hard_values).unwrap().to_vec1::<f32>().unwrap();
            let soft = (1.0 - hard) as f32 * (temperature * temperature) as f32;
            for ((v, p), h) in values
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .zip(&plain)
                .zip(&entropy)
            {
                assert!((v - (p - soft * h)).abs() < 1e-4, "{v} vs {p} − {soft}·{h}");
            }
        }
    }
}
