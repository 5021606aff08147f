//! P-Tuning v2 training against the official run recorded in the fixture: the same loss, gradient
//! norm and learning rate at every step, and the same trained prefix.

mod common;

use candle_core::Device;
use glmtune_engine::train::{AdamWConfig, Example, StepLog, TrainOptions, Trainer};
use std::ops::ControlFlow;

use common::*;

fn examples(train: &serde_json::Value) -> Vec<Example> {
    let count = train["features"].as_array().unwrap().len();
    examples_of(&train["features"], count)
}

#[test]
fn reproduces_the_official_trajectory_and_prefix() {
    let expected = expected();
    let train = &expected["train"];
    let (model, init) = model_and_initial_adapter();
    let options = TrainOptions {
        per_device_train_batch_size: train["batch_size"].as_u64().unwrap() as usize,
        gradient_accumulation_steps: train["grad_accum"].as_u64().unwrap() as usize,
        learning_rate: train["lr"].as_f64().unwrap(),
        max_steps: train["steps"].as_u64().unwrap(),
        warmup_steps: 0,
        max_grad_norm: train["max_grad_norm"].as_f64().unwrap(),
        adam: AdamWConfig::default(),
        prefix_dropout: 0.0,
        shuffle: false,
        seed: 42,
        forward_batch_size: None,
        gradient_checkpointing: false,
        loss_scaling: None,
    };
    let mut trainer = Trainer::new(&model, &init, options).unwrap();
    let mut logs: Vec<StepLog> = Vec::new();
    trainer
        .run(&examples(train), |log, _| {
            logs.push(log.clone());
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
    let trajectory = train["trajectory"].as_array().unwrap();
    assert_eq!(logs.len(), trajectory.len());
    for (log, reference) in logs.iter().zip(trajectory) {
        let step = log.step;
        let loss = reference["loss"].as_f64().unwrap();
        eprintln!(
            "step {step}: loss {:.6} (ref {loss:.6}), grad_norm {:.6} (ref {:.6}), lr {:.6}",
            log.loss,
            log.grad_norm,
            reference["grad_norm"].as_f64().unwrap(),
            log.learning_rate
        );
        assert_eq!(step, reference["step"].as_u64().unwrap());
        assert!(
            relative(log.loss, loss) < 1e-6,
            "step {step}: loss {} vs {loss}",
            log.loss
        );
        assert!(
            relative(log.learning_rate, reference["lr"].as_f64().unwrap()) < 1e-9,
            "step {step}: lr"
        );
        assert!(
            relative(log.grad_norm, reference["grad_norm"].as_f64().unwrap()) < 1e-4,
            "step {step}: grad_norm"
        );
        assert_eq!(
            log.micro_batches as u64,
            reference["micro_batches"].as_u64().unwrap()
        );
    }
    let trained = trainer.encoder().unwrap();
    let reference = candle_core::safetensors::load(
        fixture_dir().join("trained_prefix.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let reference = &reference["embedding.weight"];
    let error = relative_error(&trained.embedding, reference);
    eprintln!("trained prefix relative error {error:.2e}");
    assert!(error < 5e-5, "trained prefix relative error {error}");
}

fn run_to_end(trainer: &mut Trainer, examples: &[Example], stop_after: Option<u64>) -> Vec<f64> {
    let mut losses = Vec::new();
    trainer
        .run(examples, |log, _| {
            losses.push(log.loss);
            Ok(if Some(log.step) == stop_after {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .unwrap();
    losses
}

#[test]
fn resuming_from_a_checkpoint_gives_the_same_adapter_bitwise() {
    let expected = expected();
    let examples = examples(&expected["train"]);
    let (model, init) = model_and_initial_adapter();
    // Dropout, shuffling, accumulation across epochs and a partial last batch all in play.
    let options = TrainOptions {
        per_device_train_batch_size: 3,
        gradient_accumulation_steps: 2,
        learning_rate: 0.01,
        max_steps: 7,
        warmup_steps: 2,
        prefix_dropout: 0.1,
        shuffle: true,
        seed: 11,
        ..TrainOptions::default()
    };
    let mut straight = Trainer::new(&model, &init, options.clone()).unwrap();
    let straight_losses = run_to_end(&mut straight, &examples, None);

    let dir = std::env::temp_dir().join(format!("glmtune-resume-{}", std::process::id()));
    let mut first = Trainer::new(&model, &init, options.clone()).unwrap();
    let mut losses = run_to_end(&mut first, &examples, Some(3));
    first.save_checkpoint(&dir).unwrap();
    let mut resumed = Trainer::new(&model, &init, options).unwrap();
    resumed.restore_checkpoint(&dir).unwrap();
    assert_eq!(resumed.step(), 3);
    losses.extend(run_to_end(&mut resumed, &examples, None));

    assert_eq!(losses, straight_losses);
    let a = straight
        .encoder()
        .unwrap()
        .embedding
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = resumed
        .encoder()
        .unwrap()
        .embedding
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "adapters differ"
    );
}

#[test]
fn training_visibly_learns_a_small_domain_dataset() {
    let expected = expected();
    let examples = examples(&expected["train"]);
    let (model, init) = model_and_initial_adapter();
    let options = TrainOptions {
        per_device_train_batch_size: 8,
        gradient_accumulation_steps: 1,
        learning_rate: 0.3,
        max_steps: 40,
        prefix_dropout: 0.0,
        shuffle: true,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(&model, &init, options).unwrap();
    let losses = run_to_end(&mut trainer, &examples, None);
    let (first, last) = (losses[0], *losses.last().unwrap());
    eprintln!("loss {first:.3} → {last:.3}");
    assert!(last < first / 2.0, "loss {first} → {last}");
}
