//! P-Tuning v2 training against THUDM's own training code on the whole optimizer path: weight decay
//! with the Trainer's no-decay group, warm-up, clipping active at every step, and gradient
//! accumulation across epoch ends with a partial last micro-batch, in both of the Trainer's step rules
//! (a long epoch, and an epoch shorter than the accumulation).
//!
//! - ChatGLM-6B (`tests/fixtures/training/`): THUDM's vendored `ptuning/` Seq2SeqTrainer
//!   (transformers 4.27.1, `adamw_hf`), a projected prefix (whose biases are the no-decay group).
//! - ChatGLM3 (`tests/fixtures/training_chatglm3/`): `finetune_hf.py`'s preprocessing, collator and
//!   Seq2SeqTrainer (transformers 4.40.0, `adamw_torch`), left-padded micro-batches.
//!
//! Tolerances are set from the reference's own conditioning: multiplying the initial prefix by
//! 1 + 1e-6 moves THUDM's losses by ≤ 2.1e-7, its gradient norms by ≤ 2.7e-5 and its trained prefix
//! by ≤ 1.4e-6 relative (see the fixture's README), so float reassociation between torch and candle
//! shows up at about that size, and a real difference (a wrong decay group, a step rule, a schedule)
//! is orders above it (`adamw_hf` in place of ChatGLM3's `adamw_torch` fails the loss check by step 3).
//! Measured here: loss ≤ 1.8e-7 / 4.0e-7 (ChatGLM-6B / ChatGLM3), grad norm ≤ 2.0e-5 / 2.8e-6, trained
//! prefix ≤ 3.0e-6 / 4.0e-7. ChatGLM3's reference is as stable (its README).

mod common;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::train::{AdamWConfig, Optim, StepLog, TrainOptions, Trainer};

use common::*;

/// Relative tolerance on each step's loss (measured: see the eprintln lines).
const LOSS_TOLERANCE: f64 = 1e-6;
/// Relative tolerance on each step's gradient norm before clipping.
const GRAD_NORM_TOLERANCE: f64 = 1e-4;
/// max |Δ| / max |x| per trained prefix tensor.
const PREFIX_TOLERANCE: f32 = 1e-5;

/// One reference folder and the fixture model it trained.
struct Reference {
    dir: PathBuf,
    model: PathBuf,
}

impl Reference {
    fn chatglm6b() -> Self {
        Self {
            dir: fixtures().join("training"),
            model: fixture_dir().join("model"),
        }
    }

    fn chatglm3() -> Self {
        Self {
            dir: fixtures().join("training_chatglm3"),
            model: fixtures().join("chatglm3-tiny/model"),
        }
    }

    fn expected(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.join("expected.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn model_and_init(&self) -> (ChatGlmModel, PrefixEncoder) {
        let model = ChatGlmModel::load(&self.model, DType::F32, &Device::Cpu).unwrap();
        let init = PrefixEncoder::load_adapter(
            &self.dir.join("adapter_init"),
            model.config(),
            &Device::Cpu,
        )
        .unwrap();
        (model, init)
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The Trainer's arguments as the reference passed them.
fn options(args: &serde_json::Value) -> TrainOptions {
    assert_eq!(args["lr_scheduler_type"], "linear");
    let optim = Optim::from_name(args["optim"].as_str().unwrap()).expect("a known optimizer");
    TrainOptions {
        per_device_train_batch_size: args["per_device_train_batch_size"].as_u64().unwrap() as usize,
        gradient_accumulation_steps: args["gradient_accumulation_steps"].as_u64().unwrap() as usize,
        learning_rate: args["learning_rate"].as_f64().unwrap(),
        max_steps: args["max_steps"].as_u64().unwrap(),
        warmup_steps: args["warmup_steps"].as_u64().unwrap(),
        max_grad_norm: args["max_grad_norm"].as_f64().unwrap(),
        adam: AdamWConfig {
            optim,
            weight_decay: args["weight_decay"].as_f64().unwrap(),
            ..AdamWConfig::default()
        },
        prefix_dropout: 0.0,
        shuffle: false,
        seed: args["seed"].as_u64().unwrap(),
        forward_batch_size: None,
        gradient_checkpointing: false,
        loss_scaling: None,
    }
}

/// Trains from the reference's initial adapter and checks every step and the final prefix.
fn check_run(
    reference: &Reference,
    run: &serde_json::Value,
    features: &serde_json::Value,
    prefix_file: &str,
) {
    // How the rows go through the model changes speed and memory, never the trajectory: one
    // micro-batch a forward (the Trainer's way), a whole step in one forward, one sequence a
    // forward with per-layer recomputation, and forwards that cut across micro-batches.
    for (forward_batch_size, gradient_checkpointing) in [
        (None, false),
        (Some(6), false),
        (Some(1), true),
        (Some(4), true),
    ] {
        eprintln!(
            "forward_batch_size {forward_batch_size:?}, checkpointing {gradient_checkpointing}:"
        );
        let mut options = options(&run["training_args"]);
        options.forward_batch_size = forward_batch_size;
        options.gradient_checkpointing = gradient_checkpointing;
        check_run_with(reference, run, features, prefix_file, options);
    }
}

fn check_run_with(
    reference: &Reference,
    run: &serde_json::Value,
    features: &serde_json::Value,
    prefix_file: &str,
    options: TrainOptions,
) {
    let (model, init) = reference.model_and_init();
    let examples = examples_of(features, run["n_features"].as_u64().unwrap() as usize);
    let mut trainer = Trainer::new(&model, &init, options).unwrap();
    let mut logs: Vec<StepLog> = Vec::new();
    trainer
        .run(&examples, |log, _| {
            logs.push(log.clone());
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
    let trajectory = run["trajectory"].as_array().unwrap();
    assert_eq!(logs.len(), trajectory.len());
    let (mut worst_loss, mut worst_norm) = (0f64, 0f64);
    for (log, reference) in logs.iter().zip(trajectory) {
        let step = log.step;
        assert_eq!(step, reference["step"].as_u64().unwrap());
        assert_eq!(
            log.micro_batches,
            reference["micro_batch_rows"].as_array().unwrap().len(),
            "step {step}: micro-batches"
        );
        let lr = reference["lr"].as_f64().unwrap();
        assert!(
            (log.learning_rate - lr).abs() <= 1e-12 * lr.max(1.0),
            "step {step}: lr {} vs {lr}",
            log.learning_rate
        );
        let grad_norm = reference["grad_norm"].as_f64().unwrap();
        assert!(reference["clipped"].as_bool().unwrap() && log.grad_norm > 0.0);
        let loss = reference["loss_unrounded"].as_f64().unwrap();
        worst_loss = worst_loss.max(relative(log.loss, loss));
        worst_norm = worst_norm.max(relative(log.grad_norm, grad_norm));
        assert!(
            relative(log.loss, loss) < LOSS_TOLERANCE,
            "step {step}: loss {} vs {loss}",
            log.loss
        );
        assert!(
            relative(log.grad_norm, grad_norm) < GRAD_NORM_TOLERANCE,
            "step {step}: grad_norm {} vs {grad_norm}",
            log.grad_norm
        );
    }
    let trained: HashMap<&str, Tensor> = trainer
        .encoder()
        .unwrap()
        .named_tensors()
        .into_iter()
        .collect();
    let reference =
        candle_core::safetensors::load(reference.dir.join(prefix_file), &Device::Cpu).unwrap();
    assert_eq!(reference.len(), trained.len());
    let mut worst_prefix = 0f32;
    for (name, expected) in &reference {
        let actual = trained[name.as_str()].reshape(expected.shape()).unwrap();
        let error = relative_error(&actual, expected);
        worst_prefix = worst_prefix.max(error);
        assert!(error < PREFIX_TOLERANCE, "{name}: relative error {error}");
    }
    eprintln!(
        "{prefix_file}: worst relative error loss {worst_loss:.2e}, grad_norm {worst_norm:.2e}, trained prefix {worst_prefix:.2e}"
    );
}

#[test]
fn chatglm6b_reproduces_thudms_trainer_with_accumulation_across_epochs() {
    let reference = Reference::chatglm6b();
    let expected = reference.expected();
    assert!(reference.model_and_init().1.projection.is_some());
    let prefix = "trained_prefix.safetensors";
    check_run(&reference, &expected, &expected["features"], prefix);
}

#[test]
fn chatglm6b_reproduces_thudms_trainer_with_epochs_shorter_than_the_accumulation() {
    let reference = Reference::chatglm6b();
    let expected = reference.expected();
    let prefix = "short_epoch_trained_prefix.safetensors";
    check_run(
        &reference,
        &expected["short_epoch_run"],
        &expected["features"],
        prefix,
    );
}

#[test]
fn chatglm3_reproduces_finetune_hf_with_accumulation_across_epochs() {
    let reference = Reference::chatglm3();
    let expected = reference.expected();
    let prefix = "trained_prefix.safetensors";
    check_run(&reference, &expected, &expected["features"], prefix);
}

#[test]
fn chatglm3_reproduces_finetune_hf_with_epochs_shorter_than_the_accumulation() {
    let reference = Reference::chatglm3();
    let expected = reference.expected();
    let prefix = "short_epoch_trained_prefix.safetensors";
    check_run(
        &reference,
        &expected["short_epoch_run"],
        &expected["features"],
        prefix,
    );
}

#[test]
fn the_no_decay_group_is_the_trainers() {
    for reference in [Reference::chatglm6b(), Reference::chatglm3()] {
        let expected = reference.expected();
        let (_, init) = reference.model_and_init();
        let names = |decay: bool| -> Vec<String> {
            init.named_tensors()
                .into_iter()
                .map(|(name, _)| name)
                .filter(|name| glmtune_engine::train::decays(name) == decay)
                .map(str::to_owned)
                .collect()
        };
        let listed = |key: &str| -> Vec<String> {
            expected[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names(true), listed("decay_parameters"));
        assert_eq!(names(false), listed("no_decay_parameters"));
    }
}
