//! Choosing the next token from logits, in the order the Hugging Face `generate` applies its
//! processors: repetition penalty, then temperature, top-k and top-p, then a draw.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// Always the most likely token (ties go to the lowest id, as `argmax` does).
    Greedy,
    Sample {
        temperature: f32,
        /// Keep the smallest set of tokens whose probability reaches `top_p` (1.0 keeps all).
        top_p: f32,
        /// Keep the `top_k` most likely tokens (0 keeps all).
        top_k: usize,
        seed: u64,
    },
}

impl Sampling {
    /// The official `chat()` defaults: sampling with top-p 0.7 and temperature 0.95.
    pub fn chat_default(seed: u64) -> Self {
        Self::Sample {
            temperature: 0.95,
            top_p: 0.7,
            top_k: 0,
            seed,
        }
    }
}

/// Stateful token chooser (it owns the random generator).
pub struct Sampler {
    sampling: Sampling,
    repetition_penalty: f32,
    rng: StdRng,
}

impl Sampler {
    pub fn new(sampling: Sampling, repetition_penalty: f32) -> Self {
        let seed = match &sampling {
            Sampling::Sample { seed, .. } => *seed,
            Sampling::Greedy => 0,
        };
        Self {
            sampling,
            repetition_penalty,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Picks the next token from one row of logits; `seen` are the ids so far (prompt included),
    /// which the repetition penalty discourages.
    pub fn choose(&mut self, logits: &mut [f32], seen: &[u32]) -> u32 {
        replace_invalid_scores(logits);
        if self.repetition_penalty != 1.0 {
            apply_repetition_penalty(logits, seen, self.repetition_penalty);
        }
        match self.sampling.clone() {
            Sampling::Greedy => argmax(logits),
            Sampling::Sample {
                temperature,
                top_p,
                top_k,
                ..
            } => {
                if temperature <= 0.0 {
                    return argmax(logits);
                }
                for l in logits.iter_mut() {
                    *l /= temperature;
                }
                let candidates = filter_top_k_top_p(logits, top_k, top_p);
                self.draw(&candidates)
            }
        }
    }

    fn draw(&mut self, candidates: &[(u32, f32)]) -> u32 {
        let max = candidates
            .iter()
            .map(|c| c.1)
            .fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = candidates
            .iter()
            .map(|c| ((c.1 - max) as f64).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut point = self.rng.random::<f64>() * total;
        for (candidate, weight) in candidates.iter().zip(&weights) {
            if point < *weight {
                return candidate.0;
            }
            point -= weight;
        }
        candidates.last().map_or(0, |c| c.0)
    }
}

/// The official `InvalidScoreLogitsProcessor` replaces a row holding NaN or infinity; we keep the
/// finite scores and push the invalid ones to the bottom instead of forcing a fixed token.
fn replace_invalid_scores(logits: &mut [f32]) {
    for l in logits.iter_mut() {
        if !l.is_finite() {
            *l = if *l == f32::INFINITY {
                f32::MAX
            } else {
                f32::MIN
            };
        }
    }
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// HF `RepetitionPenaltyLogitsProcessor`: positive scores divided, negative multiplied.
fn apply_repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    let mut done = vec![false; logits.len()];
    for &id in seen {
        let i = id as usize;
        if i < logits.len() && !done[i] {
            done[i] = true;
            logits[i] = if logits[i] < 0.0 {
                logits[i] * penalty
            } else {
                logits[i] / penalty
            };
        }
    }
}

/// The tokens that survive top-k then top-p, as `(id, logit)`, most likely first.
fn filter_top_k_top_p(logits: &[f32], top_k: usize, top_p: f32) -> Vec<(u32, f32)> {
    let mut sorted: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if top_k > 0 && top_k < sorted.len() {
        // Ties with the k-th score survive, as HF keeps every logit ≥ the k-th value.
        let threshold = sorted[top_k - 1].1;
        sorted.retain(|c| c.1 >= threshold);
    }
    if top_p < 1.0 {
        let max = sorted[0].1;
        let weights: Vec<f64> = sorted.iter().map(|c| ((c.1 - max) as f64).exp()).collect();
        let total: f64 = weights.iter().sum();
        // HF drops the tokens whose ascending cumulative probability stays ≤ 1 − top_p; from the
        // top that keeps every token until the mass before it reaches top_p.
        let mut kept = 0;
        let mut mass_before = 0.0;
        for w in &weights {
            if kept > 0 && mass_before >= top_p as f64 {
                break;
            }
            mass_before += w / total;
            kept += 1;
        }
        sorted.truncate(kept.max(1));
    }
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut sampler = Sampler::new(Sampling::Greedy, 1.0);
        assert_eq!(sampler.choose(&mut [0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_discourages_seen_tokens() {
        let mut sampler = Sampler::new(Sampling::Greedy, 2.0);
        assert_eq!(sampler.choose(&mut [1.0, 1.5, -1.0], &[1]), 0);
        let mut logits = [2.0, -2.0];
        apply_repetition_penalty(&mut logits, &[0, 1, 1], 2.0);
        assert_eq!(logits, [1.0, -4.0]);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let logits = [0.0, 5.0, 4.0, -10.0];
        let ids: Vec<u32> = filter_top_k_top_p(&logits, 2, 1.0)
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        // Token 1 alone holds ~73% of the mass: top_p 0.5 keeps only it, 0.9 adds token 2.
        let ids: Vec<u32> = filter_top_k_top_p(&logits, 0, 0.5)
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(ids, vec![1]);
        let ids: Vec<u32> = filter_top_k_top_p(&logits, 0, 0.9)
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn sampling_is_reproducible_for_a_seed() {
        let draw = |seed| {
            let mut sampler = Sampler::new(
                Sampling::Sample {
                    temperature: 1.0,
                    top_p: 1.0,
                    top_k: 0,
                    seed,
                },
                1.0,
            );
            (0..20)
                .map(|_| sampler.choose(&mut [0.0; 50], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }
}
