//! Greedy decoding with the KV cache against THUDM's `model.generate(do_sample=False)` ids.

mod common;

use candle_core::{DType, Device};
use glmtune_engine::generation::{generate, GenerationOptions, Sampling};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use std::ops::ControlFlow;

use common::*;

/// A prompt with its reference greedy ids without and with the adapter.
type Case = (Vec<u32>, Vec<u32>, Vec<u32>);

fn setup() -> (ChatGlmModel, PrefixEncoder, Vec<Case>) {
    let model = ChatGlmModel::load(&fixture_dir().join("model"), DType::F32, &Device::Cpu).unwrap();
    let prefix = PrefixEncoder::load_adapter(
        &fixture_dir().join("adapter_init"),
        model.config(),
        &Device::Cpu,
    )
    .unwrap();
    let cases = expected()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                ids_of(&c["ids"]),
                ids_of(&c["greedy_base"]),
                ids_of(&c["greedy_ptuned"]),
            )
        })
        .collect();
    (model, prefix, cases)
}

#[test]
fn greedy_ids_match_reference_one_by_one() {
    let (model, prefix, cases) = setup();
    for (i, (ids, base, ptuned)) in cases.iter().enumerate() {
        let got = generate(
            &model,
            None,
            std::slice::from_ref(ids),
            &greedy(10),
            |_, _| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(&got[0], base, "case {i} base");
        let got = generate(
            &model,
            Some(&prefix),
            std::slice::from_ref(ids),
            &greedy(10),
            |_, _| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(&got[0], ptuned, "case {i} ptuned");
    }
}

#[test]
fn left_padded_batch_generates_what_each_prompt_generates_alone() {
    let (model, prefix, cases) = setup();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| c.0.clone()).collect();
    let lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    assert!(
        lengths.iter().min() != lengths.iter().max(),
        "the batch must need padding"
    );
    let base = generate(&model, None, &prompts, &greedy(10), |_, _| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let ptuned = generate(&model, Some(&prefix), &prompts, &greedy(10), |_, _| {
        ControlFlow::Continue(())
    })
    .unwrap();
    for (i, case) in cases.iter().enumerate() {
        assert_eq!(base[i], case.1, "case {i} base in a batch");
        assert_eq!(ptuned[i], case.2, "case {i} ptuned in a batch");
    }
}

#[test]
fn streaming_callback_sees_every_token_and_can_stop() {
    let (model, _, cases) = setup();
    let mut seen = Vec::new();
    let out = generate(&model, None, &[cases[0].0.clone()], &greedy(10), |_, id| {
        seen.push(id);
        if seen.len() == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(seen, cases[0].1[..3].to_vec());
    assert_eq!(out[0], seen);
}

/// What seed 1 draws on the fixture (temperature 0.95, top-p 0.7, case 1), recorded from this engine:
/// a change of RNG, of the order candidates are drawn in, or of the filtering shows up here.
const SEED_1_SAMPLE: [u32; 8] = [470, 117, 352, 14, 40, 450, 14, 498];

#[test]
fn sampling_is_seeded() {
    let (model, _, cases) = setup();
    let sample = |seed| {
        let options = GenerationOptions {
            sampling: Sampling::Sample {
                temperature: 0.95,
                top_p: 0.7,
                top_k: 0,
                seed,
            },
            ..greedy(8)
        };
        generate(&model, None, &[cases[1].0.clone()], &options, |_, _| {
            ControlFlow::Continue(())
        })
        .unwrap()
        .remove(0)
    };
    let first = sample(1);
    eprintln!("seed 1: {first:?}");
    assert_eq!(first, sample(1), "a seed repeats");
    assert_eq!(first, SEED_1_SAMPLE, "seed 1 draws its recorded sequence");
    let others: Vec<Vec<u32>> = (2..5).map(sample).collect();
    assert!(
        others.iter().all(|other| *other != first),
        "other seeds draw other sequences: {others:?}"
    );
    // Sampling really samples: it leaves the greedy path.
    assert_ne!(first, cases[1].1[..first.len()].to_vec());
}
