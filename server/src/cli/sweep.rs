//! `glmtune sweep --config sweep.toml`: a hyperparameter sweep on this machine. Each trial is an
//! ordinary run folder (`trial-N`: its log, checkpoints and adapter, readable as any run's),
//! trained by the same code as `glmtune train`, one after another, in the order the halving's
//! [`plan`] (shared with the server's sweeps) names them. The leaderboard (best first) is printed
//! as JSON and written to `sweep.json` ([`SweepReport`]).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use glmtune::run_folder::read_log;
use glmtune::sweep::{plan, trial_settings, TrialStatus};
use glmtune_shared::api::RunSettings;
use glmtune_shared::sweep::{SweepConfig, SweepReport, TrialResult, TrialState};
use glmtune_shared::train_job::{defaults, TrainJob};

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

struct Trial {
    name: String,
    settings: RunSettings,
    /// Seconds trained by this invocation.
    seconds: f64,
}

impl Trial {
    fn dir(&self, config: &SweepConfig) -> PathBuf {
        config.output_dir.join(&self.name)
    }

    fn log(&self, config: &SweepConfig) -> PathBuf {
        self.dir(config).join(glmtune_shared::run_log::TRAINER_LOG)
    }

    /// Trains on from where it stands (its checkpoint, once it has a log), up to `until` (a
    /// rung) or its end.
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
            teacher_model: None,
            teacher_adapter: None,
            resume: self.log(config).exists(),
            stop_after_step: until,
            device: config.device.clone(),
            settings: self.settings.clone(),
        };
        let started = Instant::now();
        super::train::run_job(&job).with_context(|| format!("sweep trial {}", self.name))?;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    /// What its log says.
    fn status(&self, config: &SweepConfig) -> TrialStatus {
        let rows = read_log(&self.log(config));
        TrialStatus::of_log(&rows, config.metric)
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
    let settings = trial_settings(&config.settings, &config.space, &config.search);
    let mut trials: Vec<Trial> = settings
        .iter()
        .enumerate()
        .map(|(i, settings)| Trial {
            name: format!("trial-{}", i + 1),
            settings: settings.clone(),
            seconds: 0.0,
        })
        .collect();
    eprintln!("glmtune: sweep of {} trials", trials.len());
    // One training at a time, the first the plan names, until it names none.
    let plan = loop {
        let status: Vec<TrialStatus> = trials.iter().map(|t| t.status(config)).collect();
        let plan = plan(&settings, config.halving.as_ref(), metric, &status)
            .map_err(|e| anyhow::anyhow!("sweep {e}"))?;
        let Some(&(i, until)) = plan.next.first() else {
            break plan;
        };
        let trial = &mut trials[i];
        trial.train(config, until)?;
        // The plan would name it again (an interrupted training): never loop on it.
        let now = trial.status(config);
        if !now.finished && until.is_none_or(|rung| now.steps < rung) {
            bail!("sweep trial {}: training stopped short", trial.name);
        }
    };
    let mut results = Vec::with_capacity(trials.len());
    for (trial, stopped) in trials.iter().zip(&plan.stopped) {
        let status = trial.status(config);
        let Some((metric_step, value)) = status.best(metric) else {
            bail!(
                "sweep trial {}: no evaluation (settings.eval_steps {})",
                trial.name,
                trial.settings.eval_steps.unwrap_or(defaults::EVAL_STEPS)
            );
        };
        results.push(TrialResult {
            name: trial.name.clone(),
            settings: trial.settings.clone(),
            state: match stopped {
                Some(rung) => TrialState::Stopped { rung: *rung },
                None => TrialState::Completed,
            },
            metric: value,
            metric_step,
            steps: status.steps,
            seconds: trial.seconds,
        });
    }
    results.sort_by(|a, b| metric.order(a.metric, b.metric));
    Ok(SweepReport {
        metric,
        trials: results,
    })
}
