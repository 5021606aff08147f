//! `glmtune train`: P-Tuning v2 as `ptuning/main.py --do_train` runs it, with the official flag
//! names, a JSON-lines log, `checkpoint-N/` folders, resume and a clean stop on Ctrl-C. Flags may
//! also come from a TOML or JSON file with `--config FILE` (see `config_file`).

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use glmtune_engine::data::Record;
use glmtune_engine::data::{preprocess_train, PreprocessOptions};
use glmtune_engine::generation::forgetting::forgetting;
use glmtune_engine::model::PrefixEncoder;
use glmtune_engine::train::{
    AdamWConfig, Collective, Example, InProcess, LossScaling, Optim, StepLog, TrainOptions, Trainer,
};
use glmtune_engine::PrefixConfig;

use glmtune::device::DeviceSpec;
use glmtune_shared::api::{BestMetric, Precision, QuantizationBit, RunSettings};
use glmtune_shared::train_job::{defaults, TrainJob};

use super::data::read_usable;
use super::model_args::load_tokenizer;

mod args;
mod probes;
mod ranks;
mod teacher;
pub use args::TrainArgs;
use glmtune::best::Best;
use probes::{probe_answers, replay_examples};

use glmtune_shared::run_layout::RunLayout;
use glmtune_shared::run_log::{CheckpointRow, ErrorRow, EvalRow, FinishedRow, LogRow, StepRow};

fn load_examples(
    job: &TrainJob,
    path: &Path,
    tokenizer: &glmtune_engine::tokenizer::ChatGlmTokenizer,
) -> anyhow::Result<Vec<Example>> {
    let (records, report) = read_usable(&job.dataset, job.skip_invalid, path)?;
    examples(job, &records, tokenizer, report.history_column)
}

/// `records` as training examples with the run's lengths and source prefix.
pub(super) fn examples(
    job: &TrainJob,
    records: &[Record],
    tokenizer: &glmtune_engine::tokenizer::ChatGlmTokenizer,
    use_history: bool,
) -> anyhow::Result<Vec<Example>> {
    let s = &job.settings;
    let options = PreprocessOptions {
        source_prefix: s.source_prefix.clone().unwrap_or_default(),
        ..PreprocessOptions::new(
            s.max_source_length.unwrap_or(defaults::MAX_SOURCE_LENGTH) as usize,
            s.max_target_length.unwrap_or(defaults::MAX_TARGET_LENGTH) as usize,
            use_history,
        )
    };
    let features = preprocess_train(records, tokenizer, &options)?;
    Ok(features
        .into_iter()
        .map(|f| Example {
            input_ids: f.input_ids,
            labels: f.labels,
        })
        .collect())
}

/// The newest `checkpoint-N` folder in `dir`, if any.
/// Appends one row to the run's log (`path` names it in the error).
fn write_row(
    log: &mut std::fs::File,
    path: &Path,
    row: &LogRow,
) -> Result<(), glmtune_engine::EngineError> {
    let line = serde_json::to_string(row)
        .map_err(|e| glmtune_engine::EngineError::Input(format!("a log row: {e}")))?;
    writeln!(log, "{line}")
        .map_err(|e| glmtune_engine::EngineError::Input(format!("writing {}: {e}", path.display())))
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    run_job(&args.into_job()?)
}

/// Trains as `job` says. Once the run's log is open, an error is also written to it as its last
/// row, where the server reads why the run stopped.
pub fn run_job(job: &TrainJob) -> anyhow::Result<()> {
    // A device that cannot be opened is refused before anything is written.
    let spec: DeviceSpec = job
        .device
        .parse()
        .map_err(|e| anyhow::anyhow!("device {:?}: {e}", job.device))?;
    let device = spec.open()?;
    std::fs::create_dir_all(&job.output_dir)
        .with_context(|| format!("creating {}", job.output_dir.display()))?;
    let layout = RunLayout::new(&job.output_dir);
    let log_path = layout.trainer_log();
    if !job.resume && log_path.exists() {
        if holds_a_run(&log_path) {
            bail!(
                "{} already holds a run; pass --resume to continue it or choose another --output-dir",
                job.output_dir.display()
            );
        }
        // Only a failed start's error: nothing to keep.
        glmtune::run_folder::truncate_log(&log_path, 0)
            .with_context(|| format!("rewriting {}", log_path.display()))?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let last_step = std::cell::Cell::new(0);
    let result = train(job, (spec, &device), &layout, &mut log, &last_step);
    if let Err(error) = &result {
        let row = LogRow::Error(ErrorRow {
            step: last_step.get(),
            error: format!("{error:#}"),
        });
        // The error itself is what the caller reports; a log that cannot take it adds nothing.
        let _ = write_row(&mut log, &log_path, &row);
    }
    result
}

/// Whether a log records a run (anything but a failed start's error).
fn holds_a_run(path: &Path) -> bool {
    std::fs::read_to_string(path).map_or(true, |text| {
        text.lines()
            .any(|line| !matches!(LogRow::parse(line), Some(LogRow::Error(_))))
    })
}

/// The frozen base on `device`, its linear layers quantized when the settings ask.
fn load_base(
    job: &TrainJob,
    dtype: DType,
    device: &Device,
) -> anyhow::Result<glmtune_engine::model::ChatGlmModel> {
    let mut model =
        glmtune_engine::model::ChatGlmModel::load_keeping_quantized(&job.model, dtype, device)
            .with_context(|| format!("loading model {}", job.model.display()))?;
    if let Some(bits) = job.settings.quantization_bit {
        let format = match bits {
            QuantizationBit::Four => GgmlDType::Q4_0,
            QuantizationBit::Eight => GgmlDType::Q8_0,
        };
        model = model.quantized_layers(format).with_context(|| {
            format!(
                "quantizing {} to {} bits",
                job.model.display(),
                u8::from(bits)
            )
        })?;
    }
    Ok(model)
}

/// The collectives of `ranks` data-parallel ranks from `spec` on, and ranks 1..'s replicas of
/// what rank 0 trains with (on the CPU its very weights; on CUDA a copy on each rank's device).
fn data_parallel(
    job: &TrainJob,
    spec: &DeviceSpec,
    ranks: usize,
    dtype: DType,
    rank0: &ranks::Replica,
) -> anyhow::Result<(Arc<dyn Collective>, Vec<ranks::Follower>)> {
    let mut collectives: Vec<Arc<dyn Collective>> = match spec {
        DeviceSpec::Cpu => InProcess::group(ranks)?
            .into_iter()
            .map(|c| Arc::new(c) as Arc<dyn Collective>)
            .collect(),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(first) => {
            let ordinals = glmtune_engine::train::nccl::check_devices(*first, ranks)?;
            glmtune_engine::train::nccl::Nccl::group(&ordinals)?
                .into_iter()
                .map(|c| Arc::new(c) as Arc<dyn Collective>)
                .collect()
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => {
            bail!("--nproc-per-node on CUDA needs a build with `--features cuda`")
        }
    };
    let first = collectives.remove(0);
    let mut followers = Vec::new();
    for (rank, collective) in (1..).zip(collectives) {
        let replica = match spec {
            DeviceSpec::Cpu => ranks::Replica {
                model: rank0.model.clone(),
                init: rank0.init.clone(),
                teacher: rank0.teacher.clone(),
            },
            DeviceSpec::Cuda(first) => {
                let device = DeviceSpec::Cuda(first + rank).open()?;
                ranks::Replica {
                    model: load_base(job, dtype, &device)?,
                    init: rank0.init.to_device(&device)?,
                    teacher: match &rank0.teacher {
                        Some(_) => Some(Arc::new(teacher::load(job, &device)?)),
                        None => None,
                    },
                }
            }
        };
        followers.push((replica, collective));
    }
    Ok((first, followers))
}

fn train(
    job: &TrainJob,
    (spec, device): (DeviceSpec, &Device),
    layout: &RunLayout,
    log: &mut std::fs::File,
    last_step: &std::cell::Cell<u64>,
) -> anyhow::Result<()> {
    let s = &job.settings;
    glmtune::memory::reuse_freed_memory();
    let memory = glmtune::memory::PeakMemory::watch(device);
    let dtype = match s.precision.unwrap_or(Precision::F32) {
        Precision::F32 => DType::F32,
        Precision::Bf16 => DType::BF16,
        Precision::Fp16 => DType::F16,
    };
    let model = load_base(job, dtype, device)?;
    // What the log's rows say the base is held as: `bf16`, or `bf16+q4_0` with quantized layers.
    let precision = match model.linear_format() {
        Some(format) => format!("{dtype:?}+{format:?}").to_lowercase(),
        None => format!("{dtype:?}").to_lowercase(),
    };
    let pre_seq_len = s.pre_seq_len.map(|p| p as usize);
    let prefix_projection = s.prefix_projection.unwrap_or(false);
    let seed = s.seed.unwrap_or(defaults::SEED);
    let per_device_train_batch_size =
        s.per_device_train_batch_size
            .unwrap_or(defaults::PER_DEVICE_TRAIN_BATCH_SIZE) as usize;
    let gradient_accumulation_steps =
        s.gradient_accumulation_steps
            .unwrap_or(defaults::GRADIENT_ACCUMULATION_STEPS) as usize;
    let logging_steps = s.logging_steps.unwrap_or(defaults::LOGGING_STEPS).max(1);
    let eval_steps = s.eval_steps.unwrap_or(defaults::EVAL_STEPS).max(1);
    let save_steps = s.save_steps.unwrap_or(defaults::SAVE_STEPS).max(1);
    let epochs = s.num_train_epochs.unwrap_or(defaults::NUM_TRAIN_EPOCHS);
    let tokenizer = load_tokenizer(&job.model)?;
    let train = load_examples(job, &job.train_file, &tokenizer)?;
    let validation = match &job.validation_file {
        Some(path) => Some(load_examples(job, path, &tokenizer)?),
        None => None,
    };
    let guard = s.forgetting_guard == Some(true) || job.probe_file.is_some();
    let load_best = s.load_best_model_at_end.unwrap_or(false);
    // Kept when the run stops early or ends on its best evaluation: each new best is saved.
    let mut best = (s.early_stopping_patience.is_some() || load_best).then(|| {
        Best::new(
            s.metric_for_best_model.unwrap_or(BestMetric::EvalLoss),
            s.early_stopping_patience,
        )
    });
    if (best.is_some() || guard) && validation.is_none() {
        bail!(
            "--early-stopping-patience, --load-best-model-at-end and --forgetting-guard need \
             --validation-file: they act at its evaluations"
        );
    }
    let replay = s.replay_ratio.is_some_and(|r| r > 0.0);
    let probes = if guard || replay {
        Some(probe_answers(job, &model, &tokenizer)?)
    } else {
        None
    };
    let mut train = train;
    if let (Some(probes), Some(ratio)) = (&probes, s.replay_ratio) {
        let general = replay_examples(job, &tokenizer, probes, train.len(), ratio)?;
        // The mix, in the run's log folder's stderr log and on the terminal.
        eprintln!(
            "glmtune: replay: {} general examples (the base model's answers to {} prompts) mixed into {} training examples",
            general.len(),
            probes.answers.len(),
            train.len()
        );
        train.extend(general);
    }
    let init = match &job.init_adapter {
        Some(dir) => {
            let init = PrefixEncoder::load_adapter(dir, model.config(), device)
                .with_context(|| format!("loading adapter {}", dir.display()))?;
            let theirs = init.config;
            if pre_seq_len.is_some_and(|p| p != theirs.pre_seq_len)
                || (prefix_projection && !theirs.prefix_projection)
            {
                bail!(
                    "--init-adapter {}: pre_seq_len mismatch or prefix_projection mismatch: the adapter has pre_seq_len={} prefix_projection={}, the flags ask for pre_seq_len={} prefix_projection={}",
                    dir.display(),
                    theirs.pre_seq_len,
                    theirs.prefix_projection,
                    pre_seq_len.unwrap_or(theirs.pre_seq_len),
                    prefix_projection
                );
            }
            init
        }
        None => {
            let prefix = PrefixConfig {
                pre_seq_len: pre_seq_len.unwrap_or(defaults::PRE_SEQ_LEN as usize),
                prefix_projection,
            };
            PrefixEncoder::random(prefix, model.config(), seed, device)?
        }
    };
    let micro_per_epoch = train.len().div_ceil(per_device_train_batch_size.max(1));
    let updates_per_epoch = (micro_per_epoch / gradient_accumulation_steps.max(1)).max(1);
    let max_steps = match s.max_steps {
        Some(steps) => steps,
        None => {
            let steps = (epochs * updates_per_epoch as f64).ceil();
            if steps > RunSettings::MAX_STEPS as f64 {
                bail!(
                    "num_train_epochs {epochs}: {steps} optimizer steps is more than {}",
                    RunSettings::MAX_STEPS
                );
            }
            steps as u64
        }
    };
    let options = TrainOptions {
        per_device_train_batch_size,
        gradient_accumulation_steps,
        learning_rate: s.learning_rate.unwrap_or(defaults::LEARNING_RATE),
        max_steps,
        warmup_steps: s.warmup_steps.unwrap_or(defaults::WARMUP_STEPS),
        max_grad_norm: s.max_grad_norm.unwrap_or(defaults::MAX_GRAD_NORM),
        adam: AdamWConfig {
            optim: match s.optim {
                Some(name) => Optim::from_name(name.as_str())
                    .with_context(|| format!("optim {}", name.as_str()))?,
                None => Optim::official(tokenizer.family()),
            },
            weight_decay: s.weight_decay.unwrap_or(defaults::WEIGHT_DECAY),
            ..AdamWConfig::default()
        },
        prefix_dropout: s.prefix_dropout.unwrap_or(defaults::PREFIX_DROPOUT) as f32,
        shuffle: s.shuffle.unwrap_or(true),
        seed,
        forward_batch_size: s.forward_batch_size.map(|n| n as usize),
        gradient_checkpointing: s.gradient_checkpointing.unwrap_or(false),
        // f16 gradients underflow without it (torch's GradScaler under the Trainer's --fp16).
        loss_scaling: (dtype == DType::F16).then(LossScaling::default),
    };
    let mut trainer = Trainer::new(&model, &init, options.clone())?;
    let teacher = if job.teacher_model.is_some() || job.teacher_adapter.is_some() {
        Some(Arc::new(teacher::load(job, device)?))
    } else {
        None
    };
    if let Some(teacher) = &teacher {
        trainer = trainer.with_teacher(teacher.clone())?;
    }
    let data_ranks = s.nproc_per_node.unwrap_or(1) as usize;
    let mut replicas = Vec::new();
    if data_ranks > 1 {
        let rank0 = ranks::Replica {
            model: model.clone(),
            init: init.clone(),
            teacher: teacher.clone(),
        };
        let (collective, others) = data_parallel(job, &spec, data_ranks, dtype, &rank0)?;
        trainer = trainer.with_collective(collective);
        replicas = others;
    }
    let log_path = layout.trainer_log();
    let mut resumed_from = None;
    if job.resume {
        match glmtune::run_folder::newest_checkpoint(&job.output_dir)? {
            Some((step, dir)) => {
                trainer.restore_checkpoint(&dir)?;
                resumed_from = Some(dir.clone());
                glmtune::run_folder::truncate_log(&log_path, step)
                    .with_context(|| format!("rewriting {}", log_path.display()))?;
                if let Some(best) = &mut best {
                    best.replay(&glmtune::run_folder::read_log(&log_path));
                }
                eprintln!("glmtune: resuming from {} (step {step})", dir.display());
            }
            None => {
                glmtune::run_folder::truncate_log(&log_path, 0)
                    .with_context(|| format!("rewriting {}", log_path.display()))?;
                eprintln!(
                    "glmtune: no checkpoint in {}; starting afresh",
                    job.output_dir.display()
                );
            }
        }
    }
    // A pause already reached (a run restarted after its checkpoint at the pause was written but
    // before it exited): it trains nothing and stays paused there.
    if job.stop_after_step.is_some_and(|at| trainer.step() >= at) && trainer.step() < max_steps {
        eprintln!(
            "glmtune: paused after step {0} (checkpoint-{0}); resume goes on",
            trainer.step()
        );
        return Ok(());
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        // A second Ctrl-C while saving falls through to the default (immediate) exit.
        let _ = ctrlc::set_handler(move || interrupted.store(true, Ordering::SeqCst));
    }
    last_step.set(trainer.step());
    let started = Instant::now();
    let mut window = (Instant::now(), 0usize);
    let terminal = std::io::stderr().is_terminal();
    let mut last_saved = trainer.step();
    let mut stopped_early = false;
    // Whether the run stopped at `stop_after_step` (a pause, not its end).
    let mut paused = false;
    let save =
        |trainer: &Trainer, log: &mut std::fs::File, step: u64| -> glmtune_engine::Result<()> {
            trainer.save_checkpoint(&layout.checkpoint(step))?;
            let row = LogRow::Checkpoint(CheckpointRow {
                step,
                checkpoint: RunLayout::checkpoint_name(step),
            });
            write_row(log, &log_path, &row)
        };
    let followers = ranks::Followers::start(replicas, &options, &train, resumed_from)?;
    trainer.run(&train, |step: &StepLog, trainer: &Trainer| {
        window.1 += step.tokens;
        let is_last = step.step >= max_steps;
        if step.step.is_multiple_of(logging_steps) || is_last {
            let tokens_per_second = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
            let row = LogRow::Step(StepRow {
                step: step.step,
                loss: step.loss,
                learning_rate: step.learning_rate,
                grad_norm: step.grad_norm,
                tokens_per_second,
                tokens: window.1 as u64,
                max_steps,
                elapsed_s: started.elapsed().as_secs_f64(),
                loss_scale: step.loss_scale,
                skipped: step.loss_scale.map(|_| step.skipped),
                device: Some(spec.to_string()),
                dtype: Some(precision.clone()),
                peak_memory_bytes: memory.bytes(),
            });
            write_row(log, &log_path, &row)?;
            let eta =
                started.elapsed().as_secs_f64() / step.step as f64 * (max_steps - step.step) as f64;
            let line = format!(
                "step {}/{max_steps}  loss {:.4}  lr {:.3e}  {:.0} tok/s  ETA {:.0}s",
                step.step, step.loss, step.learning_rate, tokens_per_second, eta
            );
            if terminal {
                eprint!("\r{line}   ");
            } else {
                eprintln!("{line}");
            }
            window = (Instant::now(), 0);
        }
        let mut saved = false;
        if let Some(validation) = &validation {
            if step.step.is_multiple_of(eval_steps) || is_last {
                let eval_loss = trainer.evaluate(validation)?;
                let forgetting = match &probes {
                    Some(probes) if guard => Some(forgetting(
                        &model,
                        Some(&trainer.encoder()?),
                        &probes.answers,
                    )?),
                    _ => None,
                };
                let forgetting_warning = forgetting
                    .zip(s.forgetting_threshold)
                    .is_some_and(|(f, threshold)| f.kl > threshold);
                if forgetting_warning {
                    eprintln!(
                        "glmtune: step {}: the prefix moves the model from the base on general prompts by {:.4} nats a token (over --forgetting-threshold {})",
                        step.step,
                        forgetting.map_or(0.0, |f| f.kl),
                        s.forgetting_threshold.unwrap_or_default()
                    );
                }
                let mut scores = EvalRow {
                    step: step.step,
                    eval_loss,
                    best_step: None,
                    forgetting_kl: forgetting.map(|f| f.kl),
                    forgetting_logprob_delta: forgetting.map(|f| f.logprob_delta),
                    forgetting_warning,
                };
                if let Some(best) = &mut best {
                    if best.observe_row(&scores) {
                        // The best checkpoint is on disk before its row says so.
                        save(trainer, log, step.step)?;
                        saved = true;
                    }
                    stopped_early |= best.exhausted() && !is_last;
                    scores.best_step = best.step();
                }
                let row = LogRow::Eval(scores);
                write_row(log, &log_path, &row)?;
            }
        }
        paused = job.stop_after_step.is_some_and(|at| step.step >= at) && !is_last;
        let stop = interrupted.load(Ordering::SeqCst) || paused;
        if !saved && (step.step.is_multiple_of(save_steps) || stop) {
            save(trainer, log, step.step)?;
            saved = true;
        }
        if saved {
            last_saved = step.step;
        }
        last_step.set(step.step);
        followers.decide(!(stop || stopped_early));
        Ok(if stop || stopped_early {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    followers.join()?;
    if terminal {
        eprintln!();
    }
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("glmtune: interrupted; saved checkpoint-{last_saved}; continue with --resume");
        return Ok(());
    }
    if paused && !stopped_early {
        eprintln!(
            "glmtune: paused after step {last_saved} (checkpoint-{last_saved}); resume goes on"
        );
        return Ok(());
    }
    let last = trainer.step();
    let best_step = best.as_ref().and_then(Best::step);
    // The best evaluation's prefix becomes the run's adapter (its checkpoint was saved then).
    let adapter_step = best_step.filter(|&b| load_best && b != last);
    if let Some(step) = adapter_step {
        trainer.restore_checkpoint(&layout.checkpoint(step))?;
    }
    trainer.save_checkpoint(&job.output_dir)?;
    let row = LogRow::Finished(FinishedRow {
        step: last,
        adapter: RunLayout::ADAPTER.to_owned(),
        best_step,
        adapter_step,
        stopped_early,
    });
    write_row(log, &log_path, &row)?;
    if stopped_early {
        eprintln!(
            "glmtune: stopped early at step {last}: no better evaluation in {} in a row",
            s.early_stopping_patience.unwrap_or(0)
        );
    }
    if let Some(step) = best_step {
        eprintln!(
            "glmtune: best evaluation at step {step} ({})",
            RunLayout::checkpoint_name(step)
        );
    }
    eprintln!(
        "glmtune: adapter written to {} (the prefix of step {})",
        job.output_dir.display(),
        adapter_step.unwrap_or(last)
    );
    Ok(())
}
