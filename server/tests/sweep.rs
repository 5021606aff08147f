//! `glmtune sweep`: a grid of 4 trials on the fixture with successive halving stops the worse
//! two at the rung, trains the others to the end, and ranks them by their own evaluations.

mod common;

use std::path::{Path, PathBuf};

use glmtune_shared::run_log::{LogRow, TRAINER_LOG};
use glmtune_shared::sweep::{SweepReport, TrialState};

use common::{fixture, glmtune, shifted_validation};

fn scratch(name: &str) -> PathBuf {
    common::scratch("sweep", name)
}

/// The settings of the fixture recipe, the two settings swept, halved at step 4.
const GRID: &str = r#"
[settings]
max_steps = 8
eval_steps = 2
save_steps = 100
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
max_source_length = 24
max_target_length = 16
prefix_dropout = 0.0

[space]
learning_rate = [0.02, 0.5]
pre_seq_len = [4, 8]

[halving]
rungs = [4]
eta = 2
"#;

/// A sweep file in `dir` on the fixture: its data and folder, then `body`.
fn config(dir: &Path, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let validation = shifted_validation(dir);
    let text = format!(
        "model = {model:?}\ntrain_file = {train:?}\nvalidation_file = {validation:?}\noutput_dir = {out:?}\n{body}",
        model = fixture("model"),
        train = fixture("train.jsonl"),
        validation = validation.display().to_string(),
        out = dir.join("out").display().to_string(),
    );
    let path = dir.join("sweep.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the sweep `path` describes; its report.
fn sweep_ok(path: &Path) -> SweepReport {
    let output = glmtune(&["sweep", "--config", &path.to_string_lossy()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A trial's evaluations: (step, eval_loss).
fn evaluations(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join(TRAINER_LOG))
        .unwrap()
        .lines()
        .filter_map(LogRow::parse)
        .filter_map(|row| match row {
            LogRow::Eval(row) => Some((row.step, row.eval_loss)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_sweep_halves_its_trials_and_ranks_them_by_their_own_evaluations() {
    let dir = scratch("grid");
    let path = config(&dir, GRID);
    let report = sweep_ok(&path);
    let written: SweepReport =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/sweep.json")).unwrap())
            .unwrap();
    assert_eq!(report, written);
    assert_eq!(report.trials.len(), 4);
    let out = dir.join("out");
    // The leaderboard is each trial's own best evaluation, best first.
    for trial in &report.trials {
        let evals = evaluations(&out.join(&trial.name));
        let best = evals
            .iter()
            .copied()
            .fold((0, f64::INFINITY), |b, e| if e.1 < b.1 { e } else { b });
        assert_eq!((trial.metric_step, trial.metric), best, "{}", trial.name);
    }
    assert!(report.trials.windows(2).all(|w| w[0].metric <= w[1].metric));
    let stopped: Vec<_> = report
        .trials
        .iter()
        .filter(|t| t.state == TrialState::Stopped { rung: 4 })
        .collect();
    let completed: Vec<_> = report
        .trials
        .iter()
        .filter(|t| t.state == TrialState::Completed)
        .collect();
    assert_eq!((stopped.len(), completed.len()), (2, 2), "{report:?}");
    // Stopped at the rung (a checkpoint, no adapter); the others trained on to their end.
    for trial in &stopped {
        assert_eq!(trial.steps, 4);
        assert!(out.join(&trial.name).join("checkpoint-4").is_dir());
        assert!(!out.join(&trial.name).join("pytorch_model.bin").exists());
    }
    for trial in &completed {
        assert_eq!(trial.steps, 8);
        assert!(out.join(&trial.name).join("pytorch_model.bin").is_file());
    }
    // At the rung, every stopped trial had evaluated worse than every one that went on.
    let at_rung = |name: &str| {
        evaluations(&out.join(name))
            .into_iter()
            .rfind(|e| e.0 <= 4)
            .unwrap()
            .1
    };
    for s in &stopped {
        for c in &completed {
            assert!(
                at_rung(&s.name) >= at_rung(&c.name),
                "{} vs {}",
                s.name,
                c.name
            );
        }
    }
    // A sweep's folder is not swept over again.
    let again = glmtune(&["sweep", "--config", &path.to_string_lossy()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a sweep"));
}

#[test]
fn bad_sweeps_are_refused_naming_the_field() {
    for (extra, says) in [
        ("[search]\ntrials = 0\n", "search.trials"),
        ("lr = 1\n", "unknown field `lr`"),
    ] {
        let dir = scratch(&format!("bad-{}", says.len()));
        let path = config(&dir, &format!("{extra}{GRID}"));
        let output = glmtune(&["sweep", "--config", &path.to_string_lossy()]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }
}

#[test]
fn the_medical_example_sweep_is_valid_and_its_files_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("examples/medical/sweep.toml")).unwrap();
    let config: glmtune_shared::sweep::SweepConfig = toml::from_str(&text).unwrap();
    config.check().unwrap();
    for path in [&config.model, &config.train_file, &config.validation_file] {
        assert!(root.join(path).exists(), "{}", path.display());
    }
    for file in ["train.jsonl", "validation.jsonl"] {
        let text = std::fs::read_to_string(root.join("examples/medical").join(file)).unwrap();
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(record["content"].is_string() && record["summary"].is_string());
        }
    }
}

#[test]
fn a_trial_that_stops_early_on_its_own_is_not_resumed_at_a_later_rung() {
    let dir = scratch("early");
    let path = config(
        &dir,
        r#"
[settings]
max_steps = 30
eval_steps = 1
save_steps = 100
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
max_source_length = 24
max_target_length = 16
prefix_dropout = 0.0
early_stopping_patience = 1

[space]
learning_rate = [2.0]

[halving]
rungs = [20]
"#,
    );
    let output = glmtune(&["sweep", "--config", &path.to_string_lossy()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Trained once: never resumed past its own end.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("resuming from"), "{stderr}");
    let report: SweepReport = serde_json::from_slice(&output.stdout).unwrap();
    let trial = &report.trials[0];
    assert_eq!(trial.state, TrialState::Completed);
    assert!(trial.steps < 20, "{trial:?}");
    let rows: Vec<LogRow> = std::fs::read_to_string(dir.join("out/trial-1").join(TRAINER_LOG))
        .unwrap()
        .lines()
        .filter_map(LogRow::parse)
        .collect();
    let finished: Vec<_> = rows
        .iter()
        .filter_map(|row| match row {
            LogRow::Finished(row) => Some(row),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1, "{rows:?}");
    assert!(finished[0].stopped_early);
}

#[test]
fn a_killed_sweep_resumes_to_the_same_leaderboard() {
    let body = GRID
        .replace("max_steps = 8", "max_steps = 160")
        .replace("eval_steps = 2", "eval_steps = 10")
        .replace("rungs = [4]", "rungs = [80]");
    let whole = scratch("whole");
    let path = config(&whole, &body);
    let output = glmtune(&["sweep", "--config", &path.to_string_lossy()]);
    assert!(output.status.success());
    let uninterrupted: SweepReport = serde_json::from_slice(&output.stdout).unwrap();

    let dir = scratch("killed");
    let path = config(&dir, &body);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(["sweep", "--config", &path.to_string_lossy()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the second trial has paused at the rung: the third is under way.
    let paused = dir.join("out/trial-2/checkpoint-80/pytorch_model.bin");
    let started = std::time::Instant::now();
    while !paused.exists() {
        assert!(
            started.elapsed().as_secs() < 120,
            "the sweep never got there"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!dir.join("out/sweep.json").exists(), "killed too late");
    let refused = glmtune(&["sweep", "--config", &path.to_string_lossy()]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
    let output = glmtune(&["sweep", "--config", &path.to_string_lossy(), "--resume"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let resumed: SweepReport = serde_json::from_slice(&output.stdout).unwrap();
    let board = |r: &SweepReport| -> Vec<(String, TrialState, u64, f64, u64)> {
        r.trials
            .iter()
            .map(|t| (t.name.clone(), t.state, t.metric_step, t.metric, t.steps))
            .collect()
    };
    assert_eq!(board(&resumed), board(&uninterrupted));
}

#[test]
fn a_sweep_ranks_by_the_forgetting_guard_when_asked() {
    let dir = scratch("by-forgetting");
    let body = GRID.replace(
        "prefix_dropout = 0.0",
        "prefix_dropout = 0.0\nforgetting_guard = true",
    );
    let path = config(&dir, &format!("metric = \"forgetting_kl\"\n{body}"));
    let report = sweep_ok(&path);
    assert_eq!(report.metric, glmtune_shared::api::BestMetric::ForgettingKl);
    // Each trial's value is its own least KL from the base; the board is ordered by it.
    for trial in &report.trials {
        let least = std::fs::read_to_string(dir.join("out").join(&trial.name).join(TRAINER_LOG))
            .unwrap()
            .lines()
            .filter_map(LogRow::parse)
            .filter_map(|row| match row {
                LogRow::Eval(row) => Some((row.step, row.forgetting_kl.unwrap())),
                _ => None,
            })
            .fold((0, f64::INFINITY), |b, e| if e.1 < b.1 { e } else { b });
        assert_eq!((trial.metric_step, trial.metric), least, "{}", trial.name);
    }
    assert!(report.trials.windows(2).all(|w| w[0].metric <= w[1].metric));
    // Without the guard the metric is not computed: refused, naming the setting.
    let dir = scratch("by-forgetting-refused");
    let path = config(&dir, &format!("metric = \"forgetting_kl\"\n{GRID}"));
    let output = glmtune(&["sweep", "--config", &path.to_string_lossy()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("settings.forgetting_guard"), "{stderr}");
}
