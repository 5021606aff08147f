//! `glmtune sweep --config sweep.toml`: a hyperparameter sweep on this machine. Each trial is an
//! ordinary run folder (`trial-N`: its log, checkpoints and adapter, readable as any run's),
//! trained by the same code as `glmtune train`. With successive halving, every trial trains to
//! the first rung and pauses there (a checkpoint); the best `1 / eta` by their evaluations go on
//! to the next rung from their checkpoints, and so on; the rest stay stopped. The leaderboard
//! (best first) is printed as JSON and written to `sweep.json` ([`SweepReport`]).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use glmtune_shared::api::RunSettings;
use glmtune_shared::run_log::LogRow;
use glmtune_shared::sweep::{
    LearningRates, SearchKind, SweepConfig, SweepReport, TrialResult, TrialState,
};
use glmtune_shared::train_job::{defaults, TrainJob};

use super::train::best::Best;

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The sweep (TOML or JSON): the base run, `[settings]`, `[space]`, `[search]`,
    /// `[halving]`; see the README.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Continue an interrupted sweep: the trials already in its folder go on from their
    /// checkpoints, and the halving decisions are made again from their logs.
    #[arg(long)]
    resume: bool,
}

pub fn run(args: SweepArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config: SweepConfig = if args.config.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{}", args.config.display()))?
    } else {
        toml::from_str(&text).with_context(|| format!("{}", args.config.display()))?
    };
    config
        .check()
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let report = sweep(&config, args.resume)?;
    let path = config.output_dir.join("sweep.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "glmtune: leaderboard ({}, best first):",
        report.metric.as_str()
    );
    for trial in &report.trials {
        let state = match trial.state {
            TrialState::Completed => "completed".to_owned(),
            TrialState::Stopped { rung } => format!("stopped at step {rung}"),
        };
        eprintln!(
            "  {:10} {:.4} (step {:>5})  {state:22} {}",
            trial.name,
            trial.metric,
            trial.metric_step,
            serde_json::to_string(&trial.settings)?
        );
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The settings each trial takes from the space, in order, at most `search.trials`.
pub fn trial_settings(config: &SweepConfig) -> Vec<RunSettings> {
    let space = &config.space;
    let learning_rates: Vec<f64> = match &space.learning_rate {
        None => Vec::new(),
        Some(LearningRates::Values(values)) => values.clone(),
        Some(LearningRates::LogRange {
            min,
            max,
            grid_points,
        }) => (0..*grid_points)
            .map(|i| {
                let t = if *grid_points == 1 {
                    0.0
                } else {
                    i as f64 / (*grid_points - 1) as f64
                };
                (min.ln() + t * (max.ln() - min.ln())).exp()
            })
            .collect(),
    };
    // Each dimension as a list of edits to the base settings; an empty one leaves it alone.
    type Edit = Box<dyn Fn(&mut RunSettings)>;
    fn edits<T: Clone + 'static>(values: &[T], set: fn(&mut RunSettings, T)) -> Vec<Edit> {
        values
            .iter()
            .cloned()
            .map(|v| Box::new(move |s: &mut RunSettings| set(s, v.clone())) as Edit)
            .collect()
    }
    let dimensions: Vec<Vec<Edit>> = vec![
        edits(&learning_rates, |s, v| s.learning_rate = Some(v)),
        edits(&space.pre_seq_len, |s, v| s.pre_seq_len = Some(v)),
        edits(&space.prefix_projection, |s, v| {
            s.prefix_projection = Some(v)
        }),
        edits(&space.max_steps, |s, v| {
            s.max_steps = Some(v);
            s.num_train_epochs = None;
        }),
        edits(&space.max_source_length, |s, v| {
            s.max_source_length = Some(v)
        }),
        edits(&space.max_target_length, |s, v| {
            s.max_target_length = Some(v)
        }),
        edits(&space.source_prefix, |s, v| s.source_prefix = Some(v)),
    ]
    .into_iter()
    .filter(|d| !d.is_empty())
    .collect();
    let trials = config.search.trials;
    let choose = |pick: &mut dyn FnMut(usize, usize) -> usize| -> RunSettings {
        let mut settings = config.settings.clone();
        for (d, dimension) in dimensions.iter().enumerate() {
            dimension[pick(d, dimension.len())](&mut settings);
        }
        settings
    };
    match config.search.kind {
        SearchKind::Grid => {
            let points: usize = dimensions.iter().map(Vec::len).product();
            (0..points.min(trials))
                .map(|mut index| {
                    // The last dimension varies fastest.
                    let mut picks = vec![0; dimensions.len()];
                    for (d, dimension) in dimensions.iter().enumerate().rev() {
                        picks[d] = index % dimension.len();
                        index /= dimension.len();
                    }
                    choose(&mut |d, _| picks[d])
                })
                .collect()
        }
        SearchKind::Random => {
            let mut state = config.search.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            (0..trials)
                .map(|_| {
                    let mut settings = choose(&mut |_, len| (next() % len as u64) as usize);
                    // A log range is drawn log-uniformly, not from its grid points.
                    if let Some(LearningRates::LogRange { min, max, .. }) = &space.learning_rate {
                        let t = (next() >> 11) as f64 / (1u64 << 53) as f64;
                        settings.learning_rate = Some((min.ln() + t * (max.ln() - min.ln())).exp());
                    }
                    settings
                })
                .collect()
        }
    }
}

struct Trial {
    name: String,
    settings: RunSettings,
    state: TrialState,
    started: bool,
    /// Whether its run wrote its adapter (it reached its end, or stopped early on its own).
    finished: bool,
    seconds: f64,
}

impl Trial {
    fn dir(&self, config: &SweepConfig) -> PathBuf {
        config.output_dir.join(&self.name)
    }

    /// Trains on from where it stands, up to `until` (a rung) or its end.
    fn train(&mut self, config: &SweepConfig, until: Option<u64>) -> anyhow::Result<()> {
        let job = TrainJob {
            model: config.model.clone(),
            train_file: config.train_file.clone(),
            validation_file: Some(config.validation_file.clone()),
            dataset: config.dataset.clone(),
            skip_invalid: false,
            output_dir: self.dir(config),
            init_adapter: None,
            probe_file: None,
            resume: self.started,
            stop_after_step: until,
            device: config.device.clone(),
            settings: self.settings.clone(),
        };
        let started = Instant::now();
        super::train::run_job(&job).with_context(|| format!("sweep trial {}", self.name))?;
        self.seconds += started.elapsed().as_secs_f64();
        self.started = true;
        self.finished = self.log_finished(config);
        Ok(())
    }

    /// The rows of its log (none before it started).
    fn log(&self, config: &SweepConfig) -> Vec<LogRow> {
        super::train::read_log(&self.dir(config).join(glmtune_shared::run_log::TRAINER_LOG))
    }

    /// Whether its log says its run wrote its adapter.
    fn log_finished(&self, config: &SweepConfig) -> bool {
        self.log(config)
            .iter()
            .any(|row| matches!(row, LogRow::Finished(_)))
    }

    /// The evaluations in its log: (step, eval_loss).
    fn evaluations(&self, config: &SweepConfig) -> Vec<(u64, f64)> {
        self.log(config)
            .into_iter()
            .filter_map(|row| match row {
                LogRow::Eval(row) => Some((row.step, row.eval_loss)),
                _ => None,
            })
            .collect()
    }

    /// The last step it trained: the furthest its log's rows reach (training rows come only
    /// every `logging_steps`; a pause always saves a checkpoint).
    fn steps(&self, config: &SweepConfig) -> u64 {
        self.log(config).iter().map(LogRow::step).max().unwrap_or(0)
    }
}

/// Runs every trial (with successive halving when configured), or with `resume` goes on with
/// those an interrupted sweep left; the leaderboard, best first.
pub fn sweep(config: &SweepConfig, resume: bool) -> anyhow::Result<SweepReport> {
    if config.output_dir.join("sweep.json").exists() {
        bail!(
            "{} already holds a sweep (sweep.json); give another output_dir",
            config.output_dir.display()
        );
    }
    if !resume && config.output_dir.join("trial-1").exists() {
        bail!(
            "{} holds the trials of an interrupted sweep: --resume goes on with them",
            config.output_dir.display()
        );
    }
    std::fs::create_dir_all(&config.output_dir)
        .with_context(|| format!("creating {}", config.output_dir.display()))?;
    let metric = config.metric;
    let mut trials: Vec<Trial> = trial_settings(config)
        .into_iter()
        .enumerate()
        .map(|(i, settings)| Trial {
            name: format!("trial-{}", i + 1),
            settings,
            state: TrialState::Completed,
            started: false,
            finished: false,
            seconds: 0.0,
        })
        .collect();
    for trial in &mut trials {
        let log = trial.dir(config).join(glmtune_shared::run_log::TRAINER_LOG);
        trial.started = log.exists();
        trial.finished = trial.started && trial.log_finished(config);
    }
    eprintln!("glmtune: sweep of {} trials", trials.len());
    let mut rungs = config
        .halving
        .as_ref()
        .map(|h| h.rungs.clone())
        .unwrap_or_default();
    rungs.sort_unstable();
    rungs.dedup();
    let eta = config.halving.as_ref().map_or(2, |h| h.eta) as usize;
    for rung in rungs {
        let mut reached = Vec::new();
        for (i, trial) in trials.iter_mut().enumerate() {
            let end = trial.settings.max_steps.unwrap_or(u64::MAX);
            if trial.state != TrialState::Completed || trial.finished || end <= rung {
                continue;
            }
            // A resumed sweep's trial may have got there already.
            if !trial.started || trial.steps(config) < rung {
                trial.train(config, Some(rung))?;
            }
            // Its last evaluation up to the rung: what it is ranked by there.
            let Some((_, value)) = trial
                .evaluations(config)
                .into_iter()
                .rfind(|&(step, _)| step <= rung)
            else {
                bail!(
                    "sweep trial {}: no evaluation by step {rung}; give settings.eval_steps \
                     that fall at or before the halving rungs",
                    trial.name
                );
            };
            reached.push((i, value));
        }
        reached.sort_by(|a, b| metric.order(a.1, b.1));
        let keep = reached.len().div_ceil(eta);
        for &(i, _) in &reached[keep..] {
            trials[i].state = TrialState::Stopped { rung };
            eprintln!("glmtune: {} stopped at step {rung}", trials[i].name);
        }
    }
    for trial in trials.iter_mut() {
        if trial.state == TrialState::Completed && !trial.finished {
            trial.train(config, None)?;
        }
    }
    let mut results = Vec::with_capacity(trials.len());
    for trial in &trials {
        // Its best evaluation, as its run chose its best checkpoint.
        let mut best = Best::new(metric, None);
        best.replay(&trial.log(config));
        let Some((metric_step, value)) = best.best() else {
            bail!(
                "sweep trial {}: no evaluation (settings.eval_steps {})",
                trial.name,
                trial.settings.eval_steps.unwrap_or(defaults::EVAL_STEPS)
            );
        };
        results.push(TrialResult {
            name: trial.name.clone(),
            settings: trial.settings.clone(),
            state: trial.state,
            metric: value,
            metric_step,
            steps: trial.steps(config),
            seconds: trial.seconds,
        });
    }
    results.sort_by(|a, b| metric.order(a.metric, b.metric));
    Ok(SweepReport {
        metric,
        trials: results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use glmtune_shared::sweep::{Search, SearchSpace};

    fn config(space: SearchSpace, search: Search) -> SweepConfig {
        SweepConfig {
            model: "m".into(),
            train_file: "t".into(),
            validation_file: "v".into(),
            dataset: Default::default(),
            output_dir: "o".into(),
            device: "cpu".into(),
            settings: RunSettings {
                seed: Some(3),
                ..RunSettings::default()
            },
            space,
            search,
            halving: None,
            metric: glmtune_shared::api::BestMetric::EvalLoss,
        }
    }

    #[test]
    fn grids_enumerate_the_space_and_random_draws_stay_in_it() {
        let space = SearchSpace {
            learning_rate: Some(LearningRates::LogRange {
                min: 1e-3,
                max: 1e-1,
                grid_points: 3,
            }),
            pre_seq_len: vec![4, 8],
            ..SearchSpace::default()
        };
        let grid = trial_settings(&config(space.clone(), Search::default()));
        let points: Vec<(f64, u64)> = grid
            .iter()
            .map(|s| (s.learning_rate.unwrap(), s.pre_seq_len.unwrap()))
            .collect();
        assert_eq!(points.len(), 6);
        for (i, lr) in [1e-3, 1e-2, 1e-1].iter().enumerate() {
            assert!((points[2 * i].0 - lr).abs() < 1e-12 * lr);
            assert_eq!((points[2 * i].1, points[2 * i + 1].1), (4, 8));
        }
        assert!(
            grid.iter().all(|s| s.seed == Some(3)),
            "the base's settings stay"
        );
        let budget = Search {
            trials: 4,
            ..Search::default()
        };
        assert_eq!(trial_settings(&config(space.clone(), budget)).len(), 4);
        let random = Search {
            kind: SearchKind::Random,
            trials: 20,
            seed: 9,
        };
        let drawn = trial_settings(&config(space.clone(), random.clone()));
        assert_eq!(drawn.len(), 20);
        assert!(drawn.iter().all(|s| {
            let lr = s.learning_rate.unwrap();
            (1e-3..=1e-1).contains(&lr) && [4, 8].contains(&s.pre_seq_len.unwrap())
        }));
        assert_eq!(drawn, trial_settings(&config(space, random)), "seeded");
    }
}
