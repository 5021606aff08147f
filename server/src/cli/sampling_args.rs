//! Decoding flags shared by `generate` and `chat`.

use clap::Args;
use glmtune_engine::generation::Sampling;

#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Always take the most likely token (the default for `generate`).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k"])]
    pub greedy: bool,
    /// Sampling temperature; giving any sampling flag switches sampling on.
    #[arg(long, value_parser = parse_positive)]
    pub temperature: Option<f32>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long, value_parser = parse_probability)]
    pub top_p: Option<f32>,
    /// Keep only the K most likely tokens (0 keeps all).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Penalty for tokens already present (1.0 disables it).
    #[arg(long, default_value_t = 1.0, value_parser = parse_positive)]
    pub repetition_penalty: f32,
}

impl SamplingArgs {
    fn sampling_requested(&self) -> bool {
        self.temperature.is_some() || self.top_p.is_some() || self.top_k.is_some()
    }

    /// Greedy unless a sampling flag is given; unset sampling flags take the official defaults.
    pub fn sampling(&self) -> Sampling {
        self.sampling_or(false)
    }

    /// Like [`SamplingArgs::sampling`], but sampling unless `--greedy` when `sample_by_default`.
    pub fn sampling_or(&self, sample_by_default: bool) -> Sampling {
        if self.greedy || !(self.sampling_requested() || sample_by_default) {
            return Sampling::Greedy;
        }
        Sampling::Sample {
            temperature: self.temperature.unwrap_or(0.95),
            top_p: self.top_p.unwrap_or(0.7),
            top_k: self.top_k.unwrap_or(0),
            seed: self.seed,
        }
    }
}

/// Parses a probability in (0, 1].
pub fn parse_probability(text: &str) -> Result<f32, String> {
    let value: f32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(format!("{value} is not in (0, 1]"))
    }
}

/// Parses a positive number.
pub fn parse_positive(text: &str) -> Result<f32, String> {
    let value: f32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if value > 0.0 && value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{value} must be greater than 0"))
    }
}
