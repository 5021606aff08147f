//! Evaluation metrics of the official P-Tuning v2 script (`ptuning/main.py`, `compute_metrics`):
//! ROUGE-1, ROUGE-2, ROUGE-L and BLEU-4, each ×100, per (prediction, reference) pair, then
//! averaged over the pairs.
//!
//! Per pair, as the official code does:
//! - ROUGE: both texts are cut into words by jieba (default mode, HMM on; [`segment`]), joined
//!   with spaces and scored by `rouge_chinese`'s rules ([`rouge`]), taking the F-scores;
//! - BLEU-4: NLTK's `sentence_bleu` on characters with `SmoothingFunction().method3` ([`bleu`]).
//!
//! Each per-pair value ×100 is rounded to 4 decimals (`round(v * 100, 4)`) before averaging, as
//! the official code does; the mean is summed like NumPy's `np.mean` (bit for bit) and then
//! rounded to 4 decimals too (the official code leaves the mean unrounded).
//!
//! One deliberate difference: the official code crashes (`rouge_chinese` raises ValueError) on
//! an empty or whitespace-only prediction or reference; here that pair scores 0 on all four
//! metrics and [`score_corpus`] returns a warning naming it.

pub mod bleu;
pub mod rouge;
pub mod segment;

use serde::{Deserialize, Serialize};

pub use segment::install_dictionary;

/// The four scores, each ×100. Serialized with the official key names.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Scores {
    #[serde(rename = "bleu-4")]
    pub bleu_4: f64,
    #[serde(rename = "rouge-1")]
    pub rouge_1: f64,
    #[serde(rename = "rouge-2")]
    pub rouge_2: f64,
    #[serde(rename = "rouge-l")]
    pub rouge_l: f64,
}

/// Why metrics could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{predictions} predictions but {references} references: they must pair up one to one")]
    LengthMismatch {
        predictions: usize,
        references: usize,
    },
    #[error("no predictions to score")]
    NoExamples,
    #[error("invalid jieba dictionary: {0}")]
    Dictionary(String),
    #[error("a jieba dictionary is already in use: install one before the first scoring")]
    DictionaryAlreadySet,
}

/// Which side of a pair ROUGE cannot score (`rouge_chinese` raises on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmptySide {
    Prediction,
    Reference,
}

fn try_score_pair(prediction: &str, reference: &str) -> Result<Scores, EmptySide> {
    // `' '.join(jieba.cut(text))`: rouge_chinese then splits it on whitespace again.
    let hypothesis =
        rouge::words(&segment::cut(prediction).join(" ")).ok_or(EmptySide::Prediction)?;
    let reference_words =
        rouge::words(&segment::cut(reference).join(" ")).ok_or(EmptySide::Reference)?;
    Ok(Scores {
        bleu_4: bleu::sentence_bleu(prediction, reference) * 100.0,
        rouge_1: rouge::rouge_n(&hypothesis, &reference_words, 1) * 100.0,
        rouge_2: rouge::rouge_n(&hypothesis, &reference_words, 2) * 100.0,
        rouge_l: rouge::rouge_l(&hypothesis, &reference_words) * 100.0,
    })
}

/// The scores of one pair, ×100 and not rounded. An empty or whitespace-only prediction or
/// reference scores 0 everywhere (the official code raises there).
pub fn score_pair(prediction: &str, reference: &str) -> Scores {
    try_score_pair(prediction, reference).unwrap_or_default()
}

/// Whether a prediction gives the labelled answer: equal after trimming, collapsing runs of
/// whitespace and folding ASCII case (labelled domain answers: a diagnosis code, a class, a
/// number). Not one of the official metrics; scored beside them as `exact-match`.
pub fn exact_match(prediction: &str, reference: &str) -> bool {
    let normal = |text: &str| {
        text.split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join(" ")
    };
    normal(prediction) == normal(reference)
}

/// The share of pairs that [`exact_match`], ×100 and rounded to 4 decimals (accuracy for
/// labelled answers).
pub fn exact_match_rate(predictions: &[String], references: &[String]) -> f64 {
    if predictions.is_empty() {
        return 0.0;
    }
    let hits = predictions
        .iter()
        .zip(references)
        .filter(|(p, r)| exact_match(p, r))
        .count();
    round4(100.0 * hits as f64 / predictions.len() as f64)
}

/// Python's `round(value, 4)`: the decimal nearest to the exact binary value, ties to even.
/// Rust's fixed-precision formatting rounds the exact value the same way.
pub fn round4(value: f64) -> f64 {
    format!("{value:.4}").parse().unwrap_or(value)
}

impl Scores {
    fn map(self, f: impl Fn(f64) -> f64) -> Scores {
        Scores {
            bleu_4: f(self.bleu_4),
            rouge_1: f(self.rouge_1),
            rouge_2: f(self.rouge_2),
            rouge_l: f(self.rouge_l),
        }
    }
}

/// NumPy's float64 summation (`np.add.reduce` on a contiguous array): pairwise, adding in 8
/// interleaved accumulators and splitting blocks over 128 in halves. Matching it keeps the mean
/// bit-identical to `np.mean` before rounding (checked against NumPy in the tests).
fn numpy_sum(values: &[f64]) -> f64 {
    fn pairwise(a: &[f64]) -> f64 {
        let n = a.len();
        if n < 8 {
            a.iter().fold(-0.0, |sum, &x| sum + x)
        } else if n <= 128 {
            let mut r = [0.0; 8];
            r.copy_from_slice(&a[..8]);
            let whole = n - n % 8;
            for block in a[8..whole].chunks_exact(8) {
                for (acc, &x) in r.iter_mut().zip(block) {
                    *acc += x;
                }
            }
            let mut sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
            for &x in &a[whole..] {
                sum += x;
            }
            sum
        } else {
            let mut half = n / 2;
            half -= half % 8;
            pairwise(&a[..half]) + pairwise(&a[half..])
        }
    }
    pairwise(values)
}

/// `float(np.mean(values))`.
pub fn numpy_mean(values: &[f64]) -> f64 {
    numpy_sum(values) / values.len() as f64
}

/// Scores every pair and averages them as the official `compute_metrics` does.
///
/// Returns the mean (rounded to 4 decimals), the per-pair scores (each rounded to 4 decimals:
/// the values the official code averages), and one warning per pair that could not be scored
/// and counts as 0. Errors where the lists differ in length or are empty.
pub fn score_corpus(
    predictions: &[String],
    references: &[String],
) -> Result<(Scores, Vec<Scores>, Vec<String>), MetricsError> {
    if predictions.len() != references.len() {
        return Err(MetricsError::LengthMismatch {
            predictions: predictions.len(),
            references: references.len(),
        });
    }
    if predictions.is_empty() {
        return Err(MetricsError::NoExamples);
    }
    let mut per_example = Vec::with_capacity(predictions.len());
    let mut warnings = Vec::new();
    for (index, (prediction, reference)) in predictions.iter().zip(references).enumerate() {
        let scores = match try_score_pair(prediction, reference) {
            Ok(scores) => scores,
            Err(side) => {
                let side = match side {
                    EmptySide::Prediction => "prediction",
                    EmptySide::Reference => "reference",
                };
                warnings.push(format!(
                    "example {}: empty {side}: scored 0 (the official compute_metrics raises ValueError here)",
                    index + 1
                ));
                Scores::default()
            }
        };
        per_example.push(scores.map(round4));
    }
    let column = |get: fn(&Scores) -> f64| {
        round4(numpy_mean(&per_example.iter().map(get).collect::<Vec<_>>()))
    };
    let mean = Scores {
        bleu_4: column(|s| s.bleu_4),
        rouge_1: column(|s| s.rouge_1),
        rouge_2: column(|s| s.rouge_2),
        rouge_l: column(|s| s.rouge_l),
    };
    Ok((mean, per_example, warnings))
}

#[cfg(test)]
mod exact_match_tests {
    use super::*;

    #[test]
    fn exact_match_ignores_spacing_and_ascii_case_only() {
        assert!(exact_match(" I10  高血压\n", "i10 高血压"));
        assert!(!exact_match("I10", "I11"));
        assert!(!exact_match("高血压。", "高血压"));
        let (p, r) = (
            vec!["a".to_owned(), "b".to_owned(), "c".to_owned()],
            vec!["A".to_owned(), "x".to_owned(), "c".to_owned()],
        );
        assert_eq!(exact_match_rate(&p, &r), 66.6667);
        assert_eq!(exact_match_rate(&[], &[]), 0.0);
    }
}
