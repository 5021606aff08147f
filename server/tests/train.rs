//! `glmtune train` and `glmtune data` as a user runs them: the official trajectory through the CLI,
//! a run killed with SIGKILL and resumed, and bad datasets.
//!
//! Past 500 lines on purpose: one test binary for training through the CLI (each binary links the
//! whole server again, which costs CI minutes and disk); each test is short.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use candle_core::Device;
use glmtune_shared::api::{ReadOptions, RunSettings};
use glmtune_shared::run_log::{FinishedRow, LogRow, StepRow, TRAINER_LOG};
use glmtune_shared::train_job::TrainJob;

mod common;
use common::{fixture, glmtune, shifted_validation};

fn scratch(name: &str) -> PathBuf {
    common::scratch("train", name)
}

/// Runs `glmtune ARGS` and fails the test, with its stderr, unless it succeeded.
fn glmtune_ok(args: &[String]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The fixture's recipe: `expected.json` → `train`.
fn fixture_run_args(output_dir: &Path) -> Vec<String> {
    [
        "train",
        "--model",
        &fixture("model"),
        "--train-file",
        &fixture("train.jsonl"),
        "--init-adapter",
        &fixture("adapter_init"),
        "--prefix-dropout",
        "0",
        "--no-shuffle",
        "--logging-steps",
        "1",
        "--max-source-length",
        "24",
        "--max-target-length",
        "16",
        "--per-device-train-batch-size",
        "2",
        "--gradient-accumulation-steps",
        "1",
        "--learning-rate",
        "0.02",
        "--max-steps",
        "12",
        "--output-dir",
        &output_dir.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn log_rows(dir: &Path) -> Vec<LogRow> {
    std::fs::read_to_string(dir.join(TRAINER_LOG))
        .unwrap()
        .lines()
        .map(|l| LogRow::parse(l).unwrap_or_else(|| panic!("not a log row: {l}")))
        .collect()
}

/// The training rows of a log (evaluation rows left out).
fn step_rows(dir: &Path) -> Vec<StepRow> {
    log_rows(dir)
        .into_iter()
        .filter_map(|row| match row {
            LogRow::Step(row) => Some(row),
            _ => None,
        })
        .collect()
}

#[test]
fn cli_reproduces_the_official_trajectory() {
    let dir = scratch("trajectory");
    check_official_trajectory(&dir, &[]);
}

/// Forwards of four sequences (two micro-batches each) with per-layer recomputation: the same
/// trajectory and adapter, as only speed and memory change.
#[test]
fn forward_batching_and_checkpointing_keep_the_trajectory() {
    let dir = scratch("trajectory-fb4-ckpt");
    check_official_trajectory(
        &dir,
        &["--forward-batch-size", "4", "--gradient-checkpointing"],
    );
}

/// `--nproc-per-node`: each step's two sequences split over 2 ranks (one each), and over 3 (one
/// rank idle every step): the official trajectory and adapter, as one process trains them.
#[test]
fn data_parallel_ranks_keep_the_trajectory() {
    for ranks in ["2", "3"] {
        let dir = scratch(&format!("trajectory-ranks-{ranks}"));
        check_official_trajectory(&dir, &["--nproc-per-node", ranks]);
    }
    let refused = glmtune(&["train", "--nproc-per-node", "0"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--nproc-per-node"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// The fixture's recipe as a job training into `output_dir` (12 steps of 2 sequences, lengths
/// 24 and 16, a log row each step), `settings` given beside it.
fn fixture_job(output_dir: &Path, settings: RunSettings) -> TrainJob {
    TrainJob {
        model: fixture("model").into(),
        train_file: fixture("train.jsonl").into(),
        validation_file: None,
        dataset: ReadOptions::default(),
        skip_invalid: false,
        output_dir: output_dir.to_path_buf(),
        init_adapter: Some(fixture("adapter_init").into()),
        probe_file: None,
        teacher_model: None,
        teacher_adapter: None,
        resume: false,
        stop_after_step: None,
        device: "cpu".into(),
        settings: RunSettings {
            max_steps: Some(12),
            logging_steps: Some(1),
            max_source_length: Some(24),
            max_target_length: Some(16),
            per_device_train_batch_size: Some(2),
            gradient_accumulation_steps: Some(1),
            ..settings
        },
    }
}

/// A job that pauses at a step (a sweep's rung), started again once it is there — its server
/// killed after the checkpoint was written, before it saw the child exit — trains no further step.
#[test]
fn a_job_restarted_at_its_pause_stays_there() {
    let dir = scratch("pause-again");
    std::fs::create_dir_all(&dir).unwrap();
    let mut job = fixture_job(&dir.join("run"), RunSettings::default());
    job.stop_after_step = Some(4);
    let path = dir.join("job.json");
    let run = |job: &TrainJob| {
        job.write(&path).unwrap();
        glmtune_ok(&[
            "train".into(),
            "--job".into(),
            path.to_string_lossy().into(),
        ])
    };
    run(&job);
    job.resume = true;
    let again = run(&job);
    assert!(String::from_utf8_lossy(&again.stderr).contains("paused after step 4"));
    let last = log_rows(&dir.join("run")).iter().map(LogRow::step).max();
    assert_eq!(last, Some(4), "no step past the pause");
    assert!(!dir.join("run/pytorch_model.bin").exists());
}

/// The fixture's recipe as a job file (what the server's supervisor writes): the same trajectory
/// and adapter as the flags give. Settings left out take the official defaults, as unset flags do.
#[test]
fn a_job_file_trains_as_the_flags_do() {
    let dir = scratch("trajectory-job");
    std::fs::create_dir_all(&dir).unwrap();
    let job = fixture_job(
        &dir.join("run"),
        RunSettings {
            prefix_dropout: Some(0.0),
            shuffle: Some(false),
            ..RunSettings::default()
        },
    );
    let path = dir.join("job.json");
    job.write(&path).unwrap();
    check_official_run(
        &dir.join("run"),
        vec![
            "train".into(),
            "--job".into(),
            path.to_string_lossy().into(),
        ],
    );
    // A job goes alone: a flag beside it is refused, not silently dropped.
    let output = glmtune(&[
        "train",
        "--job",
        &path.to_string_lossy(),
        "--max-steps",
        "3",
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs the fixture's recipe with `extra` flags and checks the log and the adapter against the
/// official run.
fn check_official_trajectory(dir: &Path, extra: &[&str]) {
    let mut args = fixture_run_args(dir);
    args.extend(extra.iter().map(|s| s.to_string()));
    check_official_run(dir, args);
}

/// Runs `glmtune ARGS`, training into `dir`, and checks the log and the adapter against the
/// official run.
fn check_official_run(dir: &Path, args: Vec<String>) {
    glmtune_ok(&args);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    let rows = step_rows(dir);
    let trajectory = expected["train"]["trajectory"].as_array().unwrap();
    assert_eq!(rows.len(), trajectory.len());
    for (row, reference) in rows.iter().zip(trajectory) {
        let reference_loss = reference["loss"].as_f64().unwrap();
        assert!(
            (row.loss - reference_loss).abs() / reference_loss < 1e-6,
            "{row:?} vs {reference}"
        );
        // Where it trained, the base's precision and the peak memory so far.
        assert_eq!(row.device.as_deref(), Some("cpu"), "{row:?}");
        assert_eq!(row.dtype.as_deref(), Some("f32"), "{row:?}");
        assert!(row.peak_memory_bytes.is_some_and(|b| b > 0), "{row:?}");
        assert!(
            row.tokens_per_second > 0.0 && row.elapsed_s > 0.0,
            "{row:?}"
        );
    }
    let ours =
        candle_core::safetensors::load(dir.join("adapter.safetensors"), &Device::Cpu).unwrap();
    let reference =
        candle_core::safetensors::load(fixture("trained_prefix.safetensors"), &Device::Cpu)
            .unwrap();
    let (a, b) = (
        &ours["transformer.prefix_encoder.embedding.weight"],
        &reference["embedding.weight"],
    );
    let error = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        / b.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
    assert!(error < 5e-5, "{error}");
    for file in ["config.json", "pytorch_model.bin", "adapter.safetensors"] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    // The log ends with the row that says the adapter was written.
    assert_eq!(
        log_rows(dir).last(),
        Some(&LogRow::Finished(FinishedRow {
            step: 12,
            adapter: "pytorch_model.bin".into(),
            best_step: None,
            adapter_step: None,
            stopped_early: false,
        }))
    );
    // The trained adapter is an adapter: generation loads it.
    let generated = glmtune(&[
        "generate",
        "--model",
        &fixture("model"),
        "--adapter",
        &dir.to_string_lossy(),
        "--prompt",
        "你好",
        "--max-new-tokens",
        "3",
        "--json",
    ]);
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
}

/// `--fp16` (an f16 base with loss scaling), `--bf16` and `--quantization-bit 4` train; each log
/// row of an `--fp16` run carries the scale it used; the Trainer's flags and `--dtype` exclude
/// each other.
#[test]
fn fp16_bf16_and_quantized_bases_train() {
    for flag in ["--fp16", "--bf16", "--quantization-bit=4"] {
        let dir = scratch(&format!("precision{flag}"));
        let mut args = fixture_run_args(&dir);
        let i = args.iter().position(|a| a == "--max-steps").unwrap();
        args[i + 1] = "3".into();
        args.push(flag.into());
        glmtune_ok(&args);
        let rows = step_rows(&dir);
        assert_eq!(rows.len(), 3);
        let dtype = match flag {
            "--fp16" => "f16",
            "--bf16" => "bf16",
            _ => "f32+q4_0",
        };
        for row in &rows {
            assert!(row.loss.is_finite(), "{row:?}");
            assert_eq!(row.loss_scale.is_some(), flag == "--fp16", "{row:?}");
            assert_eq!(row.dtype.as_deref(), Some(dtype), "{row:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let refused = glmtune(&["train", "--fp16", "--dtype", "bf16", "--model", "x"]);
    assert_eq!(refused.status.code(), Some(2));
}

/// A longer run with dropout and shuffling, checkpointing every 10 steps.
fn long_run_args(output_dir: &Path) -> Vec<String> {
    let mut args = fixture_run_args(output_dir);
    for (flag, value) in [
        ("--max-steps", "120"),
        ("--prefix-dropout", "0.1"),
        ("--logging-steps", "10"),
    ] {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = value.into();
    }
    args.retain(|a| a != "--no-shuffle");
    args.extend(["--save-steps".into(), "10".into()]);
    args
}

/// Polls until `path` exists (a checkpoint being written by a running child).
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Continues the long run in `dir` with `--resume` and checks it picked up a checkpoint.
fn resume_long_run(dir: &Path) {
    let mut resume = long_run_args(dir);
    resume.push("--resume".into());
    let output = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(&resume)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("resuming from"), "{stderr}");
}

#[test]
fn a_killed_run_resumes_to_the_same_adapter() {
    let straight = scratch("straight");
    let output = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(long_run_args(&straight))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let killed = scratch("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(long_run_args(&killed))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&killed.join("checkpoint-20/trainer_state.json"));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !killed.join("adapter.safetensors").exists(),
        "the run finished before it was killed"
    );

    resume_long_run(&killed);
    for file in ["adapter.safetensors", "pytorch_model.bin"] {
        let a = std::fs::read(straight.join(file)).unwrap();
        let b = std::fs::read(killed.join(file)).unwrap();
        assert!(a == b, "{file} differs after resume");
    }
    // One row of each kind a step, as if the run had never stopped: the killed attempt's rows
    // past its last checkpoint are gone.
    let every_ten: Vec<u64> = (1..=12).map(|i| i * 10).collect();
    let rows = log_rows(&killed);
    let of_kind = |kind: fn(&LogRow) -> bool| -> Vec<u64> {
        rows.iter().filter(|r| kind(r)).map(LogRow::step).collect()
    };
    assert_eq!(
        of_kind(|r| matches!(r, LogRow::Step(_))),
        every_ten,
        "step rows after resume"
    );
    assert_eq!(
        of_kind(|r| matches!(r, LogRow::Checkpoint(_))),
        every_ten,
        "checkpoint rows after resume"
    );
    assert!(matches!(rows.last(), Some(LogRow::Finished(r)) if r.step == 120));
}

/// A run that fails once its log is open says why in the log (the server's supervisor reads it
/// there), and a folder whose log holds only that failed start takes a new run without --resume.
/// Checkpoints are logged as they are saved.
#[test]
fn a_failed_start_is_logged_and_checkpoints_are_rows() {
    let dir = scratch("failed-start");
    let mut args = fixture_run_args(&dir);
    let missing = dir.join("no-such-adapter");
    let at = args.iter().position(|a| a == "--init-adapter").unwrap();
    args[at + 1] = missing.to_string_lossy().into_owned();
    let output = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    match log_rows(&dir).as_slice() {
        [LogRow::Error(row)] => {
            assert_eq!(row.step, 0);
            assert!(
                row.error.contains(&*missing.to_string_lossy()),
                "{}",
                row.error
            );
        }
        rows => panic!("{rows:?}"),
    }
    let mut args = fixture_run_args(&dir);
    args.extend(["--save-steps", "5"].map(String::from));
    glmtune_ok(&args);
    let rows = log_rows(&dir);
    assert!(
        !rows.iter().any(|r| matches!(r, LogRow::Error(_))),
        "{rows:?}"
    );
    let saved: Vec<(u64, String)> = rows
        .iter()
        .filter_map(|row| match row {
            LogRow::Checkpoint(row) => Some((row.step, row.checkpoint.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        saved,
        [(5, "checkpoint-5".into()), (10, "checkpoint-10".into())]
    );
    for (_, name) in &saved {
        assert!(dir.join(name).is_dir(), "{name}");
    }
}

#[test]
fn an_existing_run_is_not_overwritten() {
    let dir = scratch("twice");
    let args = fixture_run_args(&dir);
    assert!(Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(&args)
        .output()
        .unwrap()
        .status
        .success());
    let again = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
}

#[test]
fn bad_training_data_names_file_line_and_field() {
    let dir = scratch("bad-data");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"content\": \"a\", \"summary\": \"b\"}\n{\"content\": \"c\"}\n",
    )
    .unwrap();
    let mut args = fixture_run_args(&dir.join("out"));
    let i = args.iter().position(|a| a == "--train-file").unwrap();
    args[i + 1] = data.to_string_lossy().into_owned();
    let output = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.jsonl") && stderr.contains("line 2") && stderr.contains("summary"),
        "{stderr}"
    );
}

#[test]
fn data_inspect_reports_lengths_and_truncation() {
    let output = glmtune(&[
        "data",
        "inspect",
        &fixture("train.jsonl"),
        "--model",
        &fixture("model"),
        "--max-source-length",
        "24",
        "--max-target-length",
        "16",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains('8'), "{stdout}");
    assert!(stdout.to_lowercase().contains("truncat"), "{stdout}");
}

/// `glmtune eval` of the trained fixture adapter over the training file, greedy.
fn run_eval(dir: &Path, batch_size: &str) -> Output {
    glmtune(&[
        "eval",
        "--model",
        &fixture("model"),
        "--adapter",
        &fixture("adapter_trained"),
        "--validation-file",
        &fixture("train.jsonl"),
        "--max-source-length",
        "24",
        "--max-target-length",
        "16",
        "--greedy",
        "--per-device-eval-batch-size",
        batch_size,
        "--output-dir",
        &dir.to_string_lossy(),
    ])
}

#[test]
fn eval_writes_predictions_and_scores_them() {
    let dir = scratch("eval");
    let output = run_eval(&dir, "3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let scores: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for key in ["bleu-4", "rouge-1", "rouge-2", "rouge-l", "exact-match"] {
        let value = scores[key].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&value), "{key}: {value}");
    }
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.join("generated_predictions.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(lines.len(), 8);
    assert!(lines
        .iter()
        .all(|l| l["labels"].is_string() && l["predict"].is_string()));
    // Each line also has its prompt and its own scores; their mean is the corpus score.
    assert!(lines.iter().all(|l| l["prompt"].is_string()));
    let exact: Vec<f64> = lines
        .iter()
        .map(|l| l["scores"]["exact-match"].as_f64().unwrap())
        .collect();
    assert!(exact.iter().all(|&e| e == 0.0 || e == 100.0));
    let mean = exact.iter().sum::<f64>() / exact.len() as f64;
    assert!((scores["exact-match"].as_f64().unwrap() - mean).abs() < 1e-3);
    let rouge: f64 = lines
        .iter()
        .map(|l| l["scores"]["rouge-l"].as_f64().unwrap())
        .sum::<f64>()
        / lines.len() as f64;
    assert!((scores["rouge-l"].as_f64().unwrap() - rouge).abs() < 1e-3);
    // Batching does not change greedy answers; as in the official batched `generate`, the length
    // limit counts the padded prompt, so short prompts in a batch may stop sooner.
    let single = scratch("eval-single");
    let output = run_eval(&single, "1");
    assert!(output.status.success());
    let predictions = |dir: &Path| -> Vec<String> {
        std::fs::read_to_string(dir.join("generated_predictions.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["predict"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    for (batched, alone) in predictions(&dir).iter().zip(predictions(&single)) {
        let batched = batched.trim_end_matches(|c: char| c == '\u{fffd}' || c.is_whitespace());
        assert!(
            alone.starts_with(batched),
            "{batched:?} is not a prefix of {alone:?}"
        );
    }
}

#[test]
fn validation_loss_is_logged_every_eval_steps() {
    let dir = scratch("validation");
    let mut args = fixture_run_args(&dir);
    args.extend([
        "--validation-file".into(),
        fixture("train.jsonl"),
        "--eval-steps".into(),
        "6".into(),
    ]);
    glmtune_ok(&args);
    let evals: Vec<(u64, f64)> = log_rows(&dir)
        .iter()
        .filter_map(|row| match row {
            LogRow::Eval(row) => Some((row.step, row.eval_loss)),
            _ => None,
        })
        .collect();
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), vec![6, 12]);
    assert!(
        evals[1].1 < evals[0].1,
        "validation loss should fall on the training data: {evals:?}"
    );
}

#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes() {
    let dir = scratch("interrupted");
    let child = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(long_run_args(&dir))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&dir.join("checkpoint-10/trainer_state.json"));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        !dir.join("adapter.safetensors").exists(),
        "the run finished before the interrupt"
    );
    resume_long_run(&dir);
    assert!(dir.join("adapter.safetensors").is_file());
}

#[test]
fn flags_can_come_from_a_json_config_file() {
    let dir = scratch("config");
    std::fs::create_dir_all(&dir).unwrap();
    let config = serde_json::json!({
        "model": fixture("model"), "train_file": fixture("train.jsonl"), "init_adapter": fixture("adapter_init"),
        "prefix_dropout": 0, "no_shuffle": true, "logging_steps": 1, "max_source_length": 24, "max_target_length": 16,
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "learning_rate": 0.02, "max_steps": 40,
    });
    let path = dir.join("run.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = dir.join("out");
    // The typed --max-steps overrides the file's.
    let output = glmtune(&[
        "train",
        "--config",
        &path.to_string_lossy(),
        "--max-steps",
        "12",
        "--output-dir",
        &out.to_string_lossy(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = step_rows(&out);
    assert_eq!(rows.len(), 12);
    assert!((rows[0].loss - 13.715119361877441).abs() < 1e-3);
}

#[test]
fn early_stopping_keeps_the_best_evaluation_and_makes_it_the_adapter() {
    let data = scratch("early-stopping-data");
    let validation = shifted_validation(&data);
    for load_best in [true, false] {
        let dir = scratch(&format!("early-stopping-{load_best}"));
        let mut args = fixture_run_args(&dir);
        // A step size that overshoots now and then, and evaluations at every step.
        let at = args.iter().position(|a| a == "--learning-rate").unwrap();
        args[at + 1] = "2".into();
        let at = args.iter().position(|a| a == "--max-steps").unwrap();
        args[at + 1] = "30".into();
        args.extend(
            [
                "--validation-file",
                &validation.to_string_lossy(),
                "--eval-steps",
                "1",
                "--early-stopping-patience",
                "1",
            ]
            .map(String::from),
        );
        if load_best {
            args.push("--load-best-model-at-end".into());
        }
        glmtune_ok(&args);
        let rows = log_rows(&dir);
        let evals: Vec<(u64, f64, Option<u64>)> = rows
            .iter()
            .filter_map(|row| match row {
                LogRow::Eval(row) => Some((row.step, row.eval_loss, row.best_step)),
                _ => None,
            })
            .collect();
        let (best, best_loss) =
            evals.iter().fold(
                (0, f64::INFINITY),
                |b, e| if e.1 < b.1 { (e.0, e.1) } else { b },
            );
        // Every evaluation names the best so far; the run stops at the first that does not beat
        // it (patience 1), long before its last step.
        for (i, &(step, _, best_step)) in evals.iter().enumerate() {
            let so_far =
                evals[..=i].iter().fold(
                    (0, f64::INFINITY),
                    |b, e| if e.1 < b.1 { (e.0, e.1) } else { b },
                );
            assert_eq!(best_step, Some(so_far.0), "step {step}: {evals:?}");
        }
        let last = evals.last().unwrap();
        assert!(last.1 >= best_loss && last.0 == best + 1, "{evals:?}");
        assert!(last.0 < 30, "{evals:?}");
        let Some(LogRow::Finished(finished)) = rows.last() else {
            panic!("no finished row: {rows:?}");
        };
        assert!(finished.stopped_early);
        assert_eq!(finished.step, last.0);
        assert_eq!(finished.best_step, Some(best));
        assert!(rows.iter().any(|row| matches!(row,
            LogRow::Checkpoint(c) if c.step == best && c.checkpoint == format!("checkpoint-{best}"))));
        let adapter = |dir: &Path| std::fs::read(dir.join("pytorch_model.bin")).unwrap();
        let best_adapter = adapter(&dir.join(format!("checkpoint-{best}")));
        if load_best {
            assert_eq!(finished.adapter_step, Some(best));
            assert_eq!(
                adapter(&dir),
                best_adapter,
                "the adapter is the best checkpoint's"
            );
        } else {
            assert_eq!(finished.adapter_step, None);
            assert_ne!(
                adapter(&dir),
                best_adapter,
                "the adapter is the last step's"
            );
        }
    }
    // The best model is chosen by evaluations: without validation data the flags are refused.
    let dir = scratch("early-stopping-refused");
    let mut args = fixture_run_args(&dir);
    args.extend(["--early-stopping-patience", "2"].map(String::from));
    let output = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(&args)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--validation-file"));
}

#[test]
fn the_best_model_can_be_the_one_that_forgot_least() {
    let data = scratch("least-forgetting-data");
    let validation = shifted_validation(&data);
    let dir = scratch("least-forgetting");
    let mut args = fixture_run_args(&dir);
    let at = args.iter().position(|a| a == "--max-steps").unwrap();
    args[at + 1] = "8".into();
    let scored = [
        "--validation-file",
        &validation.to_string_lossy(),
        "--eval-steps",
        "2",
        "--forgetting-guard",
        "--metric-for-best-model",
        "forgetting_kl",
    ];
    args.extend(scored.map(String::from));
    args.push("--load-best-model-at-end".into());
    glmtune_ok(&args);
    let rows = log_rows(&dir);
    let evals: Vec<(u64, f64, f64)> = rows
        .iter()
        .filter_map(|row| match row {
            LogRow::Eval(row) => Some((row.step, row.forgetting_kl.unwrap(), row.eval_loss)),
            _ => None,
        })
        .collect();
    let least = evals.iter().fold(
        (0, f64::INFINITY),
        |b, e| if e.1 < b.1 { (e.0, e.1) } else { b },
    );
    let lowest_loss = evals.iter().fold(
        (0, f64::INFINITY),
        |b, e| if e.2 < b.1 { (e.0, e.2) } else { b },
    );
    // The two metrics choose different checkpoints here, so the test tells them apart.
    assert_ne!(least.0, lowest_loss.0, "{evals:?}");
    let Some(LogRow::Finished(finished)) = rows.last() else {
        panic!("no finished row: {rows:?}");
    };
    assert_eq!(
        (finished.best_step, finished.adapter_step),
        (Some(least.0), Some(least.0))
    );
    let adapter = |dir: &Path| std::fs::read(dir.join("pytorch_model.bin")).unwrap();
    assert_eq!(
        adapter(&dir),
        adapter(&dir.join(format!("checkpoint-{}", least.0)))
    );
    // Without the guard there is no such metric to choose by.
    let dir = scratch("least-forgetting-refused");
    let mut args = fixture_run_args(&dir);
    args.extend(
        scored
            .iter()
            .filter(|a| **a != "--forgetting-guard")
            .map(|a| a.to_string()),
    );
    let output = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(&args)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("forgetting_guard"), "{stderr}");
}

#[test]
fn the_forgetting_guard_scores_every_evaluation_and_warns_over_its_threshold() {
    let data = scratch("forgetting-data");
    let validation = shifted_validation(&data);
    let probes = data.join("probes.txt");
    std::fs::write(
        &probes,
        "# ours\n你好\n请介绍一下长城。\nWhat is the capital of France?\n",
    )
    .unwrap();
    let dir = scratch("forgetting");
    let mut args = fixture_run_args(&dir);
    args.extend(
        [
            "--validation-file",
            &validation.to_string_lossy(),
            "--eval-steps",
            "4",
            "--forgetting-probe-file",
            &probes.to_string_lossy(),
            "--forgetting-threshold",
            "0",
        ]
        .map(String::from),
    );
    let output = glmtune_ok(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("answered 3 of 3 general prompts")
            || stderr.contains("of 3 general prompts"),
        "{stderr}"
    );
    let scored: Vec<(u64, f64, f64, bool)> = log_rows(&dir)
        .iter()
        .filter_map(|row| match row {
            LogRow::Eval(row) => Some((
                row.step,
                row.forgetting_kl.unwrap(),
                row.forgetting_logprob_delta.unwrap(),
                row.forgetting_warning,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(scored.iter().map(|s| s.0).collect::<Vec<_>>(), [4, 8, 12]);
    // Any change of the prefix moves the distributions (the threshold 0 warns at once).
    assert!(scored.iter().all(|s| s.1 > 0.0 && s.3), "{scored:?}");
    assert!(stderr.contains("over --forgetting-threshold 0"), "{stderr}");
}

#[test]
fn replay_of_the_base_models_answers_keeps_the_model_closer_to_its_base() {
    let data = scratch("replay-data");
    let validation = shifted_validation(&data);
    let probes = data.join("probes.txt");
    std::fs::write(
        &probes,
        "你好\n中国的首都是哪里？\n请写一句关于春天的话。\nWhat is the capital of France?\nName three colors.\n",
    )
    .unwrap();
    // The forgetting guard's KL at the last evaluation of the fixture recipe (at a step size
    // that moves the prefix far), with `extra` flags.
    let last_kl = |name: &str, extra: &[&str]| -> (f64, String) {
        let dir = scratch(name);
        let mut args = fixture_run_args(&dir);
        let at = args.iter().position(|a| a == "--learning-rate").unwrap();
        args[at + 1] = "0.5".into();
        args.extend(
            [
                "--validation-file",
                &validation.to_string_lossy(),
                "--eval-steps",
                "12",
                "--forgetting-probe-file",
                &probes.to_string_lossy(),
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        let output = glmtune_ok(&args);
        let kl = log_rows(&dir)
            .iter()
            .rev()
            .find_map(|row| match row {
                LogRow::Eval(row) => row.forgetting_kl,
                _ => None,
            })
            .unwrap();
        (kl, String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (without, _) = last_kl("replay-without", &[]);
    let (with, stderr) = last_kl("replay-with", &["--replay-ratio", "1"]);
    println!(
        "forgetting KL after 12 steps: without replay {without:.4}, with replay 1:1 {with:.4}"
    );
    assert!(stderr.contains("replay: 8 general examples"), "{stderr}");
    assert!(with < without, "without {without}, with {with}");
}

/// `glmtune fidelity`'s report.
fn fidelity(student_adapter: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "fidelity",
        "--model",
        &FIXTURE_MODEL,
        "--adapter",
        student_adapter,
        "--teacher-adapter",
        &TRAINED_ADAPTER,
        "--max-new-tokens",
        "8",
    ];
    args.extend_from_slice(extra);
    let output = glmtune_ok(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    serde_json::from_slice(&output.stdout).unwrap()
}

static FIXTURE_MODEL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| fixture("model"));
static TRAINED_ADAPTER: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| fixture("adapter_trained"));

#[test]
fn a_prefix_distilled_onto_a_4_bit_base_answers_closer_to_its_teacher() {
    // The teacher against itself: no divergence, full agreement.
    let itself = fidelity(&TRAINED_ADAPTER, &[]);
    assert_eq!(
        (itself["kl"].as_f64(), itself["greedy_agreement"].as_f64()),
        (Some(0.0), Some(1.0))
    );
    // The teacher's adapter reused on the q4_0 base.
    let reused = fidelity(&TRAINED_ADAPTER, &["--quantization-bit", "4"]);
    let dir = scratch("distilled");
    let mut args = fixture_run_args(&dir);
    let at = args.iter().position(|a| a == "--init-adapter").unwrap();
    args[at + 1] = TRAINED_ADAPTER.clone();
    let at = args.iter().position(|a| a == "--max-steps").unwrap();
    args[at + 1] = "40".into();
    args.extend(
        [
            "--quantization-bit",
            "4",
            "--teacher-adapter",
            &TRAINED_ADAPTER,
        ]
        .map(String::from),
    );
    let output = glmtune_ok(&args);
    assert!(String::from_utf8_lossy(&output.stderr).contains("distilling from"));
    // The loss is the KL from the teacher: over the same four batches it falls.
    let losses: Vec<f64> = log_rows(&dir)
        .iter()
        .filter_map(|row| match row {
            LogRow::Step(row) => Some(row.loss),
            _ => None,
        })
        .collect();
    let epoch = |start: usize| losses[start..start + 4].iter().sum::<f64>();
    assert!(epoch(losses.len() - 4) < epoch(0), "{losses:?}");
    let distilled = fidelity(&dir.to_string_lossy(), &["--quantization-bit", "4"]);
    println!("reused on q4_0 {reused}; distilled {distilled}");
    assert!(
        distilled["kl"].as_f64() < reused["kl"].as_f64(),
        "{reused} vs {distilled}"
    );
    assert!(
        distilled["greedy_agreement"].as_f64() >= reused["greedy_agreement"].as_f64(),
        "{reused} vs {distilled}"
    );
    // Distillation settings without a teacher are refused.
    let refused = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(fixture_run_args(&scratch("no-teacher")))
        .args(["--distill-temperature", "2"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--teacher"));
}
