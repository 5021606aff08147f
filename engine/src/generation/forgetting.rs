//! The forgetting guard: how far a tuned prefix moves the model away from its base on general
//! prompts outside the domain it was tuned for — the failure THUDM's trackers report most about
//! P-Tuning v2 (the tuned model no longer answers anything else).
//!
//! The base model answers the probe prompts once (greedy). Every later score compares, at each
//! token of those answers, the next-token distribution of the model with the prefix against the
//! base model's: the mean KL divergence `KL(base ‖ tuned)` (0 when the prefix changes nothing),
//! and the mean change in the log-likelihood of the base's own answer tokens (negative when the
//! tuned model has drifted away from answering as the base did).
//!
//! The same comparison between any two sides — a model with or without an adapter — is
//! [`divergence`]: prefix distillation measures with it how close a student (say a q4_0 base with
//! its distilled prefix) answers to its teacher, adding the share of positions where both would
//! choose the same next token.

use candle_core::{DType, Tensor};
use std::ops::ControlFlow;

use super::generate::{generate, sequence_logits, GenerationOptions};
use super::sampling::Sampling;
use crate::error::{EngineError, Result};
use crate::model::{ChatGlmModel, PrefixEncoder};

/// Our default probe prompts: one a line, `#` lines are comments.
const GENERAL_PROBES: &str = include_str!("../../data/general_probes.txt");

/// The prompts of a probe file's text: one a line, blank lines and `#` comments left out.
pub fn probe_prompts(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The default probe set: a few dozen short general prompts in Chinese and English that the
/// project wrote and ships.
pub fn general_probes() -> Vec<String> {
    probe_prompts(GENERAL_PROBES)
}

/// A probe prompt's ids followed by the base model's greedy answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// Which of the prompts [`base_answers`] was given it answers.
    pub prompt: usize,
    pub ids: Vec<u32>,
    /// Where the answer starts in `ids`.
    pub prompt_len: usize,
}

/// The base model's greedy answers (at most `max_new_tokens` each) to `prompts` (chat prompt
/// ids); a prompt answered with nothing is left out (no token to compare).
pub fn base_answers(
    model: &ChatGlmModel,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
) -> Result<Vec<ProbeAnswer>> {
    answers(Side::base(model), prompts, max_new_tokens)
}

/// A model with an adapter or without: one side of a comparison.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub model: &'a ChatGlmModel,
    pub prefix: Option<&'a PrefixEncoder>,
}

impl<'a> Side<'a> {
    pub fn base(model: &'a ChatGlmModel) -> Self {
        Side {
            model,
            prefix: None,
        }
    }
}

/// `side`'s greedy answers (at most `max_new_tokens` each) to `prompts`, as [`base_answers`].
pub fn answers(
    side: Side,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
) -> Result<Vec<ProbeAnswer>> {
    let model = side.model;
    let options = GenerationOptions {
        max_new_tokens: Some(max_new_tokens),
        max_length: None,
        sampling: Sampling::Greedy,
        repetition_penalty: 1.0,
        stop_at_eos: true,
        stop_ids: Vec::new(),
    };
    let mut answers = Vec::with_capacity(prompts.len());
    for (index, prompt) in prompts.iter().enumerate() {
        let answer = generate(
            model,
            side.prefix,
            std::slice::from_ref(prompt),
            &options,
            |_, _| ControlFlow::Continue(()),
        )?
        .pop()
        .unwrap_or_default();
        if answer.is_empty() {
            continue;
        }
        let mut ids = prompt.clone();
        ids.extend(answer);
        answers.push(ProbeAnswer {
            prompt: index,
            ids,
            prompt_len: prompt.len(),
        });
    }
    Ok(answers)
}

/// How far a prefix moves the model from its base on the probes' answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forgetting {
    /// Mean over answer tokens of `KL(base ‖ tuned)` of the next-token distributions, in nats.
    pub kl: f64,
    /// Mean over answer tokens of `log p_tuned − log p_base` of the base's own token.
    pub logprob_delta: f64,
    /// Answer tokens compared.
    pub tokens: usize,
}

/// [`Forgetting`] of the model with `prefix` (none: the base against itself, 0 and 0) on
/// `answers`.
pub fn forgetting(
    model: &ChatGlmModel,
    prefix: Option<&PrefixEncoder>,
    answers: &[ProbeAnswer],
) -> Result<Forgetting> {
    let tuned = Side { model, prefix };
    let d = divergence(Side::base(model), tuned, answers)?;
    Ok(Forgetting {
        kl: d.kl,
        logprob_delta: d.logprob_delta,
        tokens: d.tokens,
    })
}

/// How far one side's next-token distributions are from a reference's on the reference's
/// answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Divergence {
    /// Mean over answer tokens of `KL(reference ‖ other)`, in nats.
    pub kl: f64,
    /// Mean over answer tokens of `log p_other − log p_reference` of the answer's token.
    pub logprob_delta: f64,
    /// The share of answer positions where both sides' most likely next token is the same
    /// (teacher-forced greedy agreement).
    pub agreement: f64,
    /// Answer tokens compared.
    pub tokens: usize,
}

/// [`Divergence`] of `other` from `reference` on `answers` (the same side twice: 0, 0 and 1).
pub fn divergence(reference: Side, other: Side, answers: &[ProbeAnswer]) -> Result<Divergence> {
    let same = std::ptr::eq(reference.model, other.model)
        && match (reference.prefix, other.prefix) {
            (None, None) => true,
            (Some(a), Some(b)) => std::ptr::eq(a, b),
            _ => false,
        };
    let (mut kl, mut delta, mut agreed, mut tokens) = (0f64, 0f64, 0usize, 0usize);
    for answer in answers {
        let n = answer.ids.len();
        if answer.prompt_len == 0 || answer.prompt_len >= n {
            return Err(EngineError::Input(format!(
                "a probe answer starts at {} of {n} ids",
                answer.prompt_len
            )));
        }
        // Row r predicts token r + 1: rows prompt_len − 1 .. n − 1 predict the answer.
        let rows = |side: Side| -> Result<Vec<Vec<f64>>> {
            let logits = sequence_logits(side.model, side.prefix, &answer.ids)?;
            let logits = logits.narrow(0, answer.prompt_len - 1, n - answer.prompt_len)?;
            log_softmax(&logits)
        };
        let base = rows(reference)?;
        let tuned = if same { base.clone() } else { rows(other)? };
        for (i, (b, t)) in base.iter().zip(&tuned).enumerate() {
            kl += b
                .iter()
                .zip(t)
                .map(|(&lb, &lt)| lb.exp() * (lb - lt))
                .sum::<f64>();
            let token = answer.ids[answer.prompt_len + i] as usize;
            delta += t[token] - b[token];
            agreed += usize::from(argmax(b) == argmax(t));
            tokens += 1;
        }
    }
    let mean = |total: f64| {
        if tokens == 0 {
            0.0
        } else {
            total / tokens as f64
        }
    };
    Ok(Divergence {
        kl: mean(kl),
        logprob_delta: mean(delta),
        agreement: if tokens == 0 {
            1.0
        } else {
            agreed as f64 / tokens as f64
        },
        tokens,
    })
}

/// The first index of the largest value.
fn argmax(row: &[f64]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// Row-wise log-softmax of `[rows, vocab]` logits, in f64.
fn log_softmax(logits: &Tensor) -> Result<Vec<Vec<f64>>> {
    let rows: Vec<Vec<f64>> = logits.to_dtype(DType::F64)?.to_vec2()?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_sum = row.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
            row.into_iter().map(|v| v - log_sum).collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_probes_are_general_prompts_in_both_languages() {
        let probes = general_probes();
        assert!(probes.len() >= 30, "{}", probes.len());
        assert!(probes.iter().all(|p| !p.starts_with('#')));
        assert!(probes.iter().any(|p| p.is_ascii()));
        assert!(probes.iter().any(|p| !p.is_ascii()));
        assert_eq!(probe_prompts("# note\n\n a \nb\n"), ["a", "b"]);
    }
}
