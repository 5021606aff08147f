//! `data inspect`: what a dataset will look like to training, before spending time on it.
//!
//! Token lengths are those of the official preprocessing before truncation (the rendered prompt
//! with prefix and history, and the answer), so the report shows how many examples
//! `max_source_length - 1` and `max_target_length - 2` will cut and by how much.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::preprocess::{preprocess_record, rendered_prompt, PreprocessOptions, IGNORE_INDEX};
use super::records::{ReadReport, Record};
use super::{DataError, Issue};
use crate::tokenizer::{ChatGlmTokenizer, Family};

/// Width of the histogram bars, in characters.
const BAR_WIDTH: usize = 40;
/// Number of histogram rows at most.
const BUCKETS: usize = 10;

/// Distribution of token lengths.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LengthStats {
    pub count: usize,
    pub min: usize,
    pub mean: f64,
    pub p50: usize,
    pub p90: usize,
    pub p99: usize,
    pub max: usize,
    /// `(low, high, count)`: lengths in `low..=high`, equal-width buckets from min to max.
    pub histogram: Vec<(usize, usize, usize)>,
}

impl LengthStats {
    /// Percentiles by nearest rank: the smallest length with at least p% of values at or below.
    pub fn from_lengths(lengths: &[usize]) -> Self {
        let mut sorted = lengths.to_vec();
        sorted.sort_unstable();
        let (Some(&min), Some(&max)) = (sorted.first(), sorted.last()) else {
            return Self::default();
        };
        let n = sorted.len();
        let rank = |p: usize| sorted[(p * n).div_ceil(100).clamp(1, n) - 1];
        let width = (max - min + 1).div_ceil(BUCKETS);
        let mut histogram: Vec<(usize, usize, usize)> = (min..=max)
            .step_by(width)
            .map(|low| (low, (low + width - 1).min(max), 0))
            .collect();
        for &len in &sorted {
            histogram[(len - min) / width].2 += 1;
        }
        Self {
            count: n,
            min,
            mean: sorted.iter().sum::<usize>() as f64 / n as f64,
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
            max,
            histogram,
        }
    }
}

impl fmt::Display for LengthStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  min {}  mean {:.1}  p50 {}  p90 {}  p99 {}  max {}",
            self.min, self.mean, self.p50, self.p90, self.p99, self.max
        )?;
        let top = self.histogram.iter().map(|h| h.2).max().unwrap_or(0).max(1);
        for &(low, high, count) in &self.histogram {
            let bar = "#".repeat((count * BAR_WIDTH).div_ceil(top));
            writeln!(f, "  {:>6}..{:<6} {:>7} {bar}", low, high, count)?;
        }
        Ok(())
    }
}

/// How many examples a length limit cuts, and by how many tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Truncation {
    /// Tokens kept at most.
    pub limit: usize,
    /// Examples longer than `limit`.
    pub count: usize,
    /// Tokens cut over all examples.
    pub total_cut: usize,
    /// The largest cut of one example.
    pub max_cut: usize,
}

impl Truncation {
    fn from_cuts(limit: usize, cuts: impl Iterator<Item = usize>) -> Self {
        let mut t = Self {
            limit,
            ..Self::default()
        };
        for cut in cuts.filter(|&c| c > 0) {
            t.count += 1;
            t.total_cut += cut;
            t.max_cut = t.max_cut.max(cut);
        }
        t
    }
}

/// The first record as training will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The rendered prompt, prefix included.
    pub prompt: String,
    pub response: String,
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
    /// `decode(input_ids)` (padding dropped by the decoder).
    pub decoded_input: String,
    /// `decode` of the labels that count in the loss.
    pub decoded_labels: String,
}

/// Everything `data inspect` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectReport {
    pub read: ReadReport,
    pub options: PreprocessOptions,
    /// The generation whose preprocessing was measured.
    pub family: Family,
    pub prompts: LengthStats,
    pub answers: LengthStats,
    pub prompt_truncation: Truncation,
    pub answer_truncation: Truncation,
    pub example: Option<Example>,
}

/// The token-length part of a report: what the server stores with a dataset and the dashboard
/// draws (computed there in the browser before an upload, with the same code).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenStats {
    pub max_source_length: usize,
    pub max_target_length: usize,
    pub prompt_tokens: LengthStats,
    pub answer_tokens: LengthStats,
    pub prompt_truncation: Truncation,
    pub answer_truncation: Truncation,
}

impl InspectReport {
    pub fn token_stats(&self) -> TokenStats {
        TokenStats {
            max_source_length: self.options.max_source_length,
            max_target_length: self.options.max_target_length,
            prompt_tokens: self.prompts.clone(),
            answer_tokens: self.answers.clone(),
            prompt_truncation: self.prompt_truncation,
            answer_truncation: self.answer_truncation,
        }
    }
}

/// Why a read file cannot become a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// Records that do not fit the format: every one, by line and field.
    Invalid(Vec<Issue>),
    /// No record is left once those with an empty prompt or answer are skipped.
    NoRecords { total: usize, empty: usize },
    /// The truncation limits asked for are not usable.
    Limits(String),
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Invalid(issues) => match issues.first() {
                Some(first) => write!(f, "{} invalid record(s); the first: {first}", issues.len()),
                None => write!(f, "invalid records"),
            },
            Unusable::NoRecords { total, empty } => write!(
                f,
                "no usable records ({total} in the file, {empty} with an empty prompt or response)"
            ),
            Unusable::Limits(reason) => write!(f, "{reason}"),
        }
    }
}

/// What the server and the dashboard require of a dataset before storing it: no invalid record
/// and at least one usable one. With a tokenizer and `(max_source_length, max_target_length)`,
/// also its token lengths.
pub fn check_dataset(
    records: &[Record],
    read: &ReadReport,
    measure: Option<(&ChatGlmTokenizer, usize, usize)>,
) -> Result<Option<TokenStats>, Unusable> {
    if !read.skipped_invalid.is_empty() {
        return Err(Unusable::Invalid(read.skipped_invalid.clone()));
    }
    if records.is_empty() {
        return Err(Unusable::NoRecords {
            total: read.total,
            empty: read.skipped_empty.len(),
        });
    }
    let Some((tokenizer, max_source_length, max_target_length)) = measure else {
        return Ok(None);
    };
    let options = PreprocessOptions::new(max_source_length, max_target_length, read.history_column);
    let report =
        inspect(records, read, tokenizer, &options).map_err(|e| Unusable::Limits(e.to_string()))?;
    Ok(Some(report.token_stats()))
}

/// Preprocesses `records` (read with `read`) and summarises them.
pub fn inspect(
    records: &[Record],
    read: &ReadReport,
    tokenizer: &ChatGlmTokenizer,
    options: &PreprocessOptions,
) -> Result<InspectReport, DataError> {
    options.validate()?;
    let features: Vec<_> = records
        .iter()
        .map(|r| preprocess_record(r, tokenizer, options))
        .collect();
    let prompt_lengths: Vec<usize> = features.iter().map(|f| f.prompt_tokens).collect();
    let answer_lengths: Vec<usize> = features.iter().map(|f| f.answer_tokens).collect();
    let example = records.first().zip(features.first()).map(|(record, f)| {
        let counted: Vec<u32> = f
            .labels
            .iter()
            .filter(|&&l| l != IGNORE_INDEX)
            .filter_map(|&l| u32::try_from(l).ok())
            .collect();
        Example {
            prompt: rendered_prompt(record, tokenizer, options),
            response: record.response.clone(),
            input_ids: f.input_ids.clone(),
            labels: f.labels.clone(),
            decoded_input: tokenizer.decode(&f.input_ids),
            decoded_labels: tokenizer.decode(&counted),
        }
    });
    Ok(InspectReport {
        read: read.clone(),
        options: options.clone(),
        family: tokenizer.family(),
        prompts: LengthStats::from_lengths(&prompt_lengths),
        answers: LengthStats::from_lengths(&answer_lengths),
        prompt_truncation: Truncation::from_cuts(
            features.first().map_or(0, |f| f.prompt_limit),
            features.iter().map(|f| f.prompt_cut),
        ),
        answer_truncation: Truncation::from_cuts(
            features.first().map_or(0, |f| f.answer_limit),
            features.iter().map(|f| f.answer_cut),
        ),
        example,
    })
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.read)?;
        let o = &self.options;
        let rules = super::preprocessing(self.family);
        if rules.history_template() {
            writeln!(
                f,
                "max_source_length {}, max_target_length {} (sequence length {}), history template {}",
                o.max_source_length,
                o.max_target_length,
                rules.sequence_length(o),
                if o.use_history { "on" } else { "off" }
            )?;
        } else {
            writeln!(
                f,
                "{}: max_source_length {}, max_target_length {} (sequence length {})",
                self.family,
                o.max_source_length,
                o.max_target_length,
                rules.sequence_length(o)
            )?;
        }
        writeln!(f, "\nprompt tokens (rendered, before truncation):")?;
        write!(f, "{}", self.prompts)?;
        truncation_line(f, "prompts", &self.prompt_truncation, self.prompts.count)?;
        writeln!(f, "\nanswer tokens (before truncation):")?;
        write!(f, "{}", self.answers)?;
        truncation_line(f, "answers", &self.answer_truncation, self.answers.count)?;
        if let Some(e) = &self.example {
            writeln!(f, "\nfirst example:")?;
            writeln!(f, "  prompt: {:?}", e.prompt)?;
            writeln!(f, "  response: {:?}", e.response)?;
            writeln!(f, "  input_ids: {:?}", e.input_ids)?;
            writeln!(f, "  inputs: {:?}", e.decoded_input)?;
            writeln!(f, "  labels: {:?}", e.labels)?;
            writeln!(f, "  label text: {:?}", e.decoded_labels)?;
        }
        Ok(())
    }
}

fn truncation_line(
    f: &mut fmt::Formatter<'_>,
    what: &str,
    t: &Truncation,
    n: usize,
) -> fmt::Result {
    if t.count == 0 {
        return writeln!(f, "  no {what} truncated (limit {} tokens)", t.limit);
    }
    writeln!(
        f,
        "  {} of {n} {what} truncated to {} tokens: {} tokens cut in all, at most {} from one",
        t.count, t.limit, t.total_cut, t.max_cut
    )
}
