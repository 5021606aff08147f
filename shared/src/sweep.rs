//! A hyperparameter sweep as one value: the base run, the search space, how trials are chosen and
//! how bad ones are stopped (successive halving), and the leaderboard it ends with. `glmtune
//! sweep --config sweep.toml` reads a [`SweepConfig`] and writes a [`SweepReport`] to
//! `OUTPUT_DIR/sweep.json`; the server takes a [`CreateSweep`] (`POST /api/v1/sweeps`) and
//! answers with a [`Sweep`], its trials the leaderboard.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::api::{BestMetric, ReadOptions, RunSettings, RunState};

/// What to sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// The base checkpoint folder (frozen).
    pub model: PathBuf,
    pub train_file: PathBuf,
    /// Every trial is scored on it (needed: trials are compared by their evaluations).
    pub validation_file: PathBuf,
    #[serde(default)]
    pub dataset: ReadOptions,
    /// The sweep's folder: one run folder a trial (`trial-1`, …) and `sweep.json`.
    pub output_dir: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "cpu")]
    pub device: String,
    /// The base run's settings; the space's values replace them trial by trial.
    #[serde(default)]
    pub settings: RunSettings,
    #[serde(default)]
    pub space: SearchSpace,
    #[serde(default)]
    pub search: Search,
    /// Stop the worse trials at given steps; none: every trial runs to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halving: Option<Halving>,
    /// How trials are ranked (lower validation loss is better).
    #[serde(default = "eval_loss")]
    pub metric: BestMetric,
}

fn cpu() -> String {
    "cpu".into()
}

fn eval_loss() -> BestMetric {
    BestMetric::EvalLoss
}

/// The values each swept setting takes; a setting not named keeps the base's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SearchSpace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<LearningRates>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_seq_len: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_projection: Vec<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub max_steps: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub max_source_length: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub max_target_length: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_prefix: Vec<String>,
}

/// Learning rates: the values given, or a range on a log scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum LearningRates {
    Values(Vec<f64>),
    /// Log-uniform draws in a random search; `grid_points` log-spaced values in a grid.
    LogRange {
        min: f64,
        max: f64,
        #[serde(default = "three")]
        grid_points: usize,
    },
}

fn three() -> usize {
    3
}

/// How trials are chosen from the space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Search {
    #[serde(default)]
    pub kind: SearchKind,
    /// The trial budget: a grid's first `trials` points, or `trials` random draws.
    #[serde(default = "default_trials")]
    pub trials: usize,
    /// The random search's seed.
    #[serde(default)]
    pub seed: u64,
}

impl Search {
    /// The most trials one sweep may have.
    pub const MAX_TRIALS: usize = 1024;
}

impl Default for Search {
    fn default() -> Self {
        Search {
            kind: SearchKind::Grid,
            trials: default_trials(),
            seed: 0,
        }
    }
}

fn default_trials() -> usize {
    16
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SearchKind {
    #[default]
    Grid,
    Random,
}

/// Successive halving: at each rung (an optimizer step), the trials that reached it are ranked
/// by their last evaluation so far, and only the best `1 / eta` (rounded up) go on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Halving {
    pub rungs: Vec<u64>,
    #[serde(default = "two")]
    pub eta: u64,
}

fn two() -> u64 {
    2
}

impl SweepConfig {
    /// Refuses a sweep no trial can run, naming the field.
    pub fn check(&self) -> Result<(), String> {
        self.settings.check()?;
        self.metric.check_scored(&self.settings)?;
        check_search(&self.space, &self.search, self.halving.as_ref())
    }
}

/// The checks of the space, the search and the halving, naming the field.
fn check_search(
    space: &SearchSpace,
    search: &Search,
    halving: Option<&Halving>,
) -> Result<(), String> {
    if search.trials == 0 || search.trials > Search::MAX_TRIALS {
        return Err(format!(
            "search.trials: give 1 to {} (a sweep's trials are made at once)",
            Search::MAX_TRIALS
        ));
    }
    if let Some(LearningRates::LogRange {
        min,
        max,
        grid_points,
    }) = &space.learning_rate
    {
        if !(min.is_finite() && *min > 0.0 && max.is_finite() && max >= min) {
            return Err("space.learning_rate: needs 0 < min <= max".into());
        }
        if *grid_points == 0 {
            return Err("space.learning_rate.grid_points: must be at least 1".into());
        }
    }
    if let Some(LearningRates::Values(values)) = &space.learning_rate {
        if values.is_empty() || values.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err("space.learning_rate: needs positive values".into());
        }
    }
    if let Some(halving) = halving {
        if halving.eta < 2 {
            return Err("halving.eta: must be at least 2".into());
        }
        if halving.rungs.is_empty() || halving.rungs.contains(&0) {
            return Err("halving.rungs: give the steps (at least 1) to compare trials at".into());
        }
    }
    Ok(())
}

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TrialState {
    Completed,
    /// Stopped by successive halving at this rung.
    Stopped {
        rung: u64,
    },
}

/// One row of the leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    /// Its run folder's name in the sweep's folder.
    pub name: String,
    /// Its settings: the base's, with the space's values.
    pub settings: RunSettings,
    #[serde(flatten)]
    pub state: TrialState,
    /// Its best evaluation's metric, and that step.
    pub metric: f64,
    pub metric_step: u64,
    /// Optimizer steps trained and seconds taken (by this invocation, when resumed): what the
    /// trial cost.
    pub steps: u64,
    pub seconds: f64,
}

/// The sweep's outcome: the leaderboard, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    pub metric: BestMetric,
    pub trials: Vec<TrialResult>,
}

/// A sweep for the server to run (`POST /api/v1/sweeps`): a run's request, the space, the
/// search and the halving as in a sweep file, and how many trials may train at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSweep {
    pub model: String,
    pub train_dataset: String,
    /// Every trial is scored on it (trials are compared by their evaluations).
    pub validation_dataset: String,
    /// `official` or `quick`: the base settings, which `settings` override.
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub settings: RunSettings,
    #[serde(default)]
    pub space: SearchSpace,
    #[serde(default)]
    pub search: Search,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halving: Option<Halving>,
    #[serde(default = "eval_loss")]
    pub metric: BestMetric,
    /// Trials training at once (each is a run in the server's queue, which has its own bound).
    #[serde(default = "one")]
    pub parallelism: u64,
}

fn one() -> u64 {
    1
}

impl CreateSweep {
    /// Refuses a sweep no trial can run, naming the field (the settings are checked per trial,
    /// once the preset is applied).
    pub fn check(&self) -> Result<(), String> {
        if self.parallelism == 0 {
            return Err("parallelism: must be at least 1".into());
        }
        check_search(&self.space, &self.search, self.halving.as_ref())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SweepState {
    /// Its trials are training or waiting for their turn.
    Running,
    /// Every trial ended.
    Succeeded,
    /// The halving could not go on (its message says why).
    Failed,
    Cancelled,
}

impl SweepState {
    pub const ALL: [SweepState; 4] = [
        SweepState::Running,
        SweepState::Succeeded,
        SweepState::Failed,
        SweepState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SweepState::Running => "running",
            SweepState::Succeeded => "succeeded",
            SweepState::Failed => "failed",
            SweepState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<SweepState> {
        SweepState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A run's place in a sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrialOf {
    pub sweep_id: String,
    /// From 1, in the order the search chose the trials.
    pub trial: i64,
    /// The step the run pauses at (a halving rung), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_at: Option<i64>,
    /// The rung successive halving stopped it at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
}

/// One row of a server sweep's leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SweepTrial {
    pub trial: i64,
    pub run_id: String,
    pub run_state: RunState,
    /// Its settings, the preset applied: the base's, with the space's values.
    pub settings: RunSettings,
    /// The rung successive halving stopped it at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
    /// Its best evaluation so far, and that step (none before its first evaluation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_step: Option<i64>,
    /// What it cost: optimizer steps and tokens trained.
    pub steps: i64,
    pub trained_tokens: i64,
}

/// A sweep on the server; `trials` is its leaderboard, best first (trials with no evaluation
/// yet last, in their order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Sweep {
    pub id: String,
    pub request: CreateSweep,
    pub state: SweepState,
    pub error: Option<String>,
    pub owner_id: Option<String>,
    /// The trial run whose adapter answers as `chat_model`.
    pub promoted_run: Option<String>,
    /// The model name chats use for the promoted trial (`ft:MODEL:SWEEP`): promoting another
    /// trial changes what it answers with, not the name.
    pub chat_model: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub trials: Vec<SweepTrial>,
}

/// `POST /api/v1/sweeps/{id}/promote`: which trial's adapter chats with the sweep use (unset:
/// the leaderboard's best).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Promote {
    #[serde(default)]
    pub trial: Option<i64>,
}
