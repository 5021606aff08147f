//! Sentence BLEU-4 on characters, exactly as NLTK's (3.x)
//! `sentence_bleu([list(reference)], list(hypothesis), smoothing_function=SmoothingFunction().method3)`.
//!
//! The rules that shape the numbers:
//! - modified precision p_n = Σ min(count_hyp, count_ref) / max(1, number of hypothesis n-grams);
//! - no matching character at all (p_1 = 0): the score is 0, before any smoothing;
//! - method3 ("NIST geometric sequence smoothing"): the k-th order with no match, counting
//!   from 1, gets p_n = 1 / (2^k · denominator);
//! - brevity penalty: 1 when the hypothesis is longer than the reference, else
//!   exp(1 - ref_len / hyp_len) (0 for an empty hypothesis);
//! - BLEU = bp · exp(fsum(¼ · ln p_n)), the sum exactly rounded like Python's `math.fsum`.

use std::collections::HashMap;

/// Maximum n-gram order: BLEU-4 with uniform weights ¼.
const ORDER: usize = 4;

fn ngram_counts(chars: &[char], n: usize) -> HashMap<&[char], usize> {
    let mut counts = HashMap::new();
    if chars.len() >= n {
        for gram in chars.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// NLTK's `modified_precision` for one reference: (clipped matches, max(1, hypothesis n-grams)).
fn modified_precision(hypothesis: &[char], reference: &[char], n: usize) -> (usize, usize) {
    let hyp = ngram_counts(hypothesis, n);
    let reference = ngram_counts(reference, n);
    let matches = hyp
        .iter()
        .map(|(gram, &count)| count.min(reference.get(gram).copied().unwrap_or(0)))
        .sum();
    let total: usize = hyp.values().sum();
    (matches, total.max(1))
}

/// Python's `math.fsum`: the correctly rounded sum, by Shewchuk's exact partial sums and the
/// same final half-way correction as CPython.
pub(crate) fn fsum(values: &[f64]) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for &value in values {
        let mut x = value;
        let mut kept = 0;
        for i in 0..partials.len() {
            let mut y = partials[i];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        partials.truncate(kept);
        partials.push(x);
    }
    let Some(mut n) = partials.len().checked_sub(1) else {
        return 0.0;
    };
    let mut hi = partials[n];
    let mut lo = 0.0;
    while n > 0 {
        let x = hi;
        n -= 1;
        let y = partials[n];
        hi = x + y;
        lo = y - (hi - x);
        if lo != 0.0 {
            break;
        }
    }
    // Round half-even correctly where the rest of the partials push past a half-way point.
    if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        if y == x - hi {
            hi = x;
        }
    }
    hi
}

/// BLEU-4 of `hypothesis` against `reference` on characters (Unicode scalar values, as Python's
/// `list(str)`), in [0, 1].
pub fn sentence_bleu(hypothesis: &str, reference: &str) -> f64 {
    let hyp: Vec<char> = hypothesis.chars().collect();
    let reference: Vec<char> = reference.chars().collect();
    let precisions: Vec<(usize, usize)> = (1..=ORDER)
        .map(|n| modified_precision(&hyp, &reference, n))
        .collect();
    if precisions[0].0 == 0 {
        return 0.0;
    }
    let brevity_penalty = if hyp.len() > reference.len() {
        1.0
    } else {
        // hyp.len() > 0 here: a match was found.
        (1.0 - reference.len() as f64 / hyp.len() as f64).exp()
    };
    let mut unmatched_orders = 0u32;
    let logs: Vec<f64> = precisions
        .iter()
        .map(|&(matches, total)| {
            let p = if matches == 0 {
                unmatched_orders += 1;
                1.0 / ((1usize << unmatched_orders) * total) as f64
            } else {
                matches as f64 / total as f64
            };
            0.25 * p.ln()
        })
        .collect();
    brevity_penalty * fsum(&logs).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsum_is_exact() {
        assert_eq!(fsum(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(fsum(&[0.1; 10]), 1.0);
        assert_eq!(fsum(&[]), 0.0);
    }

    #[test]
    fn identical_long_sentence_scores_one() {
        assert!((sentence_bleu("我爱北京天安门", "我爱北京天安门") - 1.0).abs() < 1e-15);
        assert_eq!(sentence_bleu("", "好"), 0.0);
        assert_eq!(sentence_bleu("甲", "乙"), 0.0);
    }

    #[test]
    fn method3_smooths_missing_orders() {
        // One character, matching: p1 = 1, p2..p4 = 1/2, 1/4, 1/8 of denominator 1; bp = 1.
        let expected = fsum(&[
            0.0,
            0.25 * 0.5f64.ln(),
            0.25 * 0.25f64.ln(),
            0.25 * 0.125f64.ln(),
        ])
        .exp();
        assert_eq!(sentence_bleu("好", "好"), expected);
    }
}
