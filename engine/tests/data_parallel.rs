//! Data parallelism on the CPU: 2 and 4 in-process ranks, each running its share of every step's
//! sequences and summing the gradients with the others, reproduce the single-process run: the
//! same logged loss, gradient norm and tokens at every step and the same trained prefix, to float
//! reassociation (the sums are regrouped by rank), with dropout, shuffling, accumulation across
//! an epoch's end and a partial last micro-batch in play.

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use glmtune_engine::train::{Example, InProcess, StepLog, TrainOptions, Trainer};

use common::*;

fn examples(train: &serde_json::Value) -> Vec<Example> {
    let count = train["features"].as_array().unwrap().len();
    examples_of(&train["features"], count)
}

/// Step logs and the trained prefix, flattened.
type Run = (Vec<StepLog>, Vec<f32>);

fn train(trainer: &mut Trainer, examples: &[Example]) -> Run {
    let mut logs = Vec::new();
    trainer
        .run(examples, |log, _| {
            logs.push(log.clone());
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
    let prefix = trainer.encoder().unwrap().embedding;
    (
        logs,
        prefix.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    )
}

#[test]
fn ranks_reproduce_the_single_process_trajectory() {
    let expected = expected();
    let examples = examples(&expected["train"]);
    let (model, init) = model_and_initial_adapter();
    let options = TrainOptions {
        per_device_train_batch_size: 3,
        gradient_accumulation_steps: 2,
        learning_rate: 0.01,
        max_steps: 6,
        warmup_steps: 1,
        prefix_dropout: 0.1,
        shuffle: true,
        seed: 5,
        ..TrainOptions::default()
    };
    let (single_logs, single_prefix) = train(
        &mut Trainer::new(&model, &init, options.clone()).unwrap(),
        &examples,
    );
    assert_eq!(single_logs.len(), 6);

    for world_size in [2, 4] {
        let ranks = InProcess::group(world_size).unwrap();
        let runs: Vec<Run> = std::thread::scope(|scope| {
            let handles: Vec<_> = ranks
                .into_iter()
                .map(|rank| {
                    let (model, init, options, examples) = (&model, &init, &options, &examples);
                    scope.spawn(move || {
                        let mut trainer = Trainer::new(model, init, options.clone())
                            .unwrap()
                            .with_collective(Arc::new(rank));
                        train(&mut trainer, examples)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Every rank ends on the very same prefix (they apply the same summed gradients).
        for (rank, (logs, prefix)) in runs.iter().enumerate() {
            assert_eq!(
                logs, &runs[0].0,
                "rank {rank} of {world_size} logged otherwise"
            );
            let same = prefix
                .iter()
                .zip(&runs[0].1)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "rank {rank} of {world_size} drifted from rank 0");
        }
        let (logs, prefix) = &runs[0];
        assert_eq!(logs.len(), single_logs.len());
        for (ours, single) in logs.iter().zip(&single_logs) {
            let (loss, norm) = (
                relative(ours.loss, single.loss),
                relative(ours.grad_norm, single.grad_norm),
            );
            eprintln!(
                "{world_size} ranks, step {}: loss {loss:.1e}, grad norm {norm:.1e}",
                ours.step
            );
            assert!(
                loss < 1e-6,
                "{world_size} ranks, step {}: loss {ours:?} vs {single:?}",
                ours.step
            );
            assert!(
                norm < 1e-5,
                "{world_size} ranks, step {}: grad norm {ours:?} vs {single:?}",
                ours.step
            );
            assert_eq!(ours.learning_rate, single.learning_rate);
            assert_eq!(ours.micro_batches, single.micro_batches);
        }
        let largest = single_prefix.iter().fold(0f32, |m, v| m.max(v.abs()));
        let error = prefix
            .iter()
            .zip(&single_prefix)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / largest;
        eprintln!("{world_size} ranks: trained prefix relative error {error:.1e}");
        assert!(
            error < 1e-5,
            "{world_size} ranks: trained prefix relative error {error}"
        );
        // The prefix moved: a run that trained nothing would pass the checks above.
        let initial = init
            .embedding
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let moved = prefix
            .iter()
            .zip(&initial)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            moved > 100.0 * error * largest,
            "the prefix barely moved: {moved}"
        );
    }
}
