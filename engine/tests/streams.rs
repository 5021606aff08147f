//! Continuous batching: streams decoded together, joining at different steps, with and without an
//! adapter prefix, their prompts whole or in chunks, get the very tokens each gets alone (and, on
//! the fixture, THUDM's greedy ids).

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use glmtune_engine::generation::{generate, GenerationOptions, StreamRequest, Streams};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};

use common::*;

fn alone(
    model: &ChatGlmModel,
    prefix: Option<&PrefixEncoder>,
    prompt: &[u32],
    n: usize,
) -> Vec<u32> {
    generate(model, prefix, &[prompt.to_vec()], &greedy(n), |_, _| {
        ControlFlow::Continue(())
    })
    .unwrap()
    .remove(0)
}

/// Runs `requests` as streams, admitting request `i` before step `joins[i]`, prompts processed
/// `chunk` tokens a step; returns each stream's tokens by request, and checks that `on_token` saw
/// them in order and that every decoding stream got a token at every step.
fn together(
    model: &ChatGlmModel,
    requests: Vec<(Vec<u32>, Option<&PrefixEncoder>, usize)>,
    joins: &[usize],
    chunk: usize,
) -> Vec<Vec<u32>> {
    let mut streams = Streams::with_chunk(model, chunk);
    let mut ids = BTreeMap::new();
    let mut seen: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    let mut done = BTreeMap::new();
    let mut pending: Vec<_> = requests.into_iter().enumerate().collect();
    let mut step = 0;
    while !pending.is_empty() || !streams.is_empty() {
        let (now, later): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|(i, _)| joins[*i] <= step);
        pending = later;
        for (i, (prompt, prefix, n)) in now {
            let id = streams
                .admit(StreamRequest {
                    prompt,
                    options: greedy(n),
                    prefix,
                })
                .unwrap();
            ids.insert(id, i);
        }
        let decoding: Vec<usize> = seen
            .keys()
            .copied()
            .filter(|s| !done_ids(&done, &ids, *s))
            .collect();
        let before: Vec<usize> = decoding.iter().map(|s| seen[s].len()).collect();
        let finished = streams
            .step(|stream, token| {
                seen.entry(stream).or_default().push(token);
                ControlFlow::Continue(())
            })
            .unwrap();
        for (s, n) in decoding.iter().zip(before) {
            assert_eq!(
                seen[s].len(),
                n + 1,
                "stream {s} got no token at step {step}"
            );
        }
        for finished in finished {
            assert_eq!(seen[&finished.stream], finished.tokens);
            done.insert(ids[&finished.stream], finished.tokens);
        }
        step += 1;
    }
    done.into_values().collect()
}

#[test]
fn streams_get_thudms_greedy_ids_joining_at_any_step() {
    let model = ChatGlmModel::load(&fixture_dir().join("model"), DType::F32, &Device::Cpu).unwrap();
    let prefix = PrefixEncoder::load_adapter(
        &fixture_dir().join("adapter_init"),
        model.config(),
        &Device::Cpu,
    )
    .unwrap();
    let cases = expected()["cases"].as_array().unwrap().clone();
    let mut requests = Vec::new();
    let mut wanted = Vec::new();
    for case in &cases {
        let ids = ids_of(&case["ids"]);
        requests.push((ids.clone(), None, 10));
        wanted.push(ids_of(&case["greedy_base"]));
        requests.push((ids, Some(&prefix), 10));
        wanted.push(ids_of(&case["greedy_ptuned"]));
    }
    let joins: Vec<usize> = (0..requests.len()).map(|i| (i * 3) % 5).collect();
    for chunk in [64, 2] {
        let got = together(&model, requests.clone(), &joins, chunk);
        for (i, (got, wanted)) in got.iter().zip(&wanted).enumerate() {
            assert_eq!(got, wanted, "request {i}, chunks of {chunk}");
        }
    }
}

/// Whether stream `s` has finished.
fn done_ids(done: &BTreeMap<usize, Vec<u32>>, ids: &BTreeMap<usize, usize>, s: usize) -> bool {
    ids.get(&s).is_some_and(|i| done.contains_key(i))
}

fn check_as_alone(model: &ChatGlmModel, prompts: &[Vec<u32>], what: &str) {
    for chunk in [64, 3] {
        check_chunked(model, prompts, chunk, &format!("{what}, chunks of {chunk}"));
    }
}

fn check_chunked(model: &ChatGlmModel, prompts: &[Vec<u32>], chunk: usize, what: &str) {
    let requests: Vec<_> = prompts.iter().map(|p| (p.clone(), None, 12)).collect();
    let joins: Vec<usize> = (0..prompts.len()).map(|i| i % 3).collect();
    let got = together(model, requests, &joins, chunk);
    for (i, prompt) in prompts.iter().enumerate() {
        assert_eq!(got[i], alone(model, None, prompt, 12), "{what}: prompt {i}");
    }
}

#[test]
fn quantized_and_chatglm3_streams_decode_as_alone() {
    let model = ChatGlmModel::load(&fixture_dir().join("model"), DType::F32, &Device::Cpu).unwrap();
    let prompts = cases();
    for format in [GgmlDType::Q4_0, GgmlDType::Q8_0] {
        let quantized = model.quantized(format, GgmlDType::Q8_0).unwrap();
        check_as_alone(&quantized, &prompts, &format!("{format:?}"));
    }
    let glm3_dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chatglm3-tiny/model");
    let glm3 = ChatGlmModel::load(&glm3_dir, DType::F32, &Device::Cpu).unwrap();
    let prompts: Vec<Vec<u32>> = (0..4)
        .map(|i| {
            (0..5 + 11 * i)
                .map(|t| 30 + (t * 7 + i) as u32 % 200)
                .collect()
        })
        .collect();
    check_as_alone(&glm3, &prompts, "ChatGLM3");
    check_as_alone(
        &glm3.quantized(GgmlDType::Q4_0, GgmlDType::Q8_0).unwrap(),
        &prompts,
        "ChatGLM3 q4_0",
    );
}

/// One generation asked of `batcher`, on this thread.
fn ask(
    batcher: &glmtune_engine::generation::Batcher,
    prefix: Option<&PrefixEncoder>,
    prompt: &[u32],
    options: &GenerationOptions,
    on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Vec<u32> {
    use glmtune_engine::generation::Backend;
    glmtune_engine::generation::generate::run_ready(
        batcher.generate_one(prefix, prompt, options, on_token),
    )
    .unwrap()
    .unwrap()
}

#[test]
fn a_batcher_answers_concurrent_callers_as_alone_and_stops_a_caller_that_breaks() {
    use glmtune_engine::generation::{Batcher, Sampling};
    let model = std::sync::Arc::new(
        ChatGlmModel::load(&fixture_dir().join("model"), DType::F32, &Device::Cpu)
            .unwrap()
            .quantized(GgmlDType::Q4_0, GgmlDType::Q8_0)
            .unwrap(),
    );
    let prefix = PrefixEncoder::load_adapter(
        &fixture_dir().join("adapter_init"),
        model.config(),
        &Device::Cpu,
    )
    .unwrap();
    let prompts = cases();
    let sampled = |seed| {
        let mut options = greedy(12);
        options.sampling = Sampling::Sample {
            temperature: 0.9,
            top_p: 0.8,
            top_k: 50,
            seed,
        };
        options.stop_at_eos = false;
        options
    };
    // (prompt, with the adapter, options) for each caller.
    let asks: Vec<(Vec<u32>, bool, GenerationOptions)> = prompts
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            [
                (p.clone(), i % 2 == 0, greedy(12)),
                (p.clone(), i % 2 == 1, sampled(7 + i as u64)),
            ]
        })
        .collect();
    let batcher = Batcher::new(model.clone()).unwrap();
    let together: Vec<Vec<u32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = asks
            .iter()
            .map(|(prompt, tuned, options)| {
                let (batcher, prefix) = (&batcher, &prefix);
                scope.spawn(move || {
                    ask(batcher, tuned.then_some(prefix), prompt, options, |_| {
                        ControlFlow::Continue(())
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((prompt, tuned, options), got) in asks.iter().zip(&together) {
        let alone = generate(
            &model,
            tuned.then_some(&prefix),
            std::slice::from_ref(prompt),
            options,
            |_, _| ControlFlow::Continue(()),
        )
        .unwrap()
        .remove(0);
        assert_eq!(got, &alone, "prompt {prompt:?}, adapter {tuned}");
    }
    // A caller that breaks at its third token gets three, and the batcher goes on serving.
    let mut seen = 0;
    let cut = ask(&batcher, None, &prompts[0], &sampled(1), |_| {
        seen += 1;
        if seen == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert_eq!(cut.len(), 3);
    let again = ask(&batcher, Some(&prefix), &prompts[0], &greedy(12), |_| {
        ControlFlow::Continue(())
    });
    assert_eq!(again, together[0]);
    // Taking turns (one stream at a time) answers the same.
    let turns = Batcher::with_streams(model.clone(), 1).unwrap();
    let alone = ask(&turns, Some(&prefix), &prompts[0], &greedy(12), |_| {
        ControlFlow::Continue(())
    });
    assert_eq!(alone, together[0]);
}

/// Steps a lone stream's prompt takes to join with prompts processed `chunk` tokens a step.
fn steps_to_join(model: &ChatGlmModel, prompt: Vec<u32>, chunk: usize) -> usize {
    let mut streams = Streams::with_chunk(model, chunk);
    streams
        .admit(StreamRequest {
            prompt,
            options: greedy(2),
            prefix: None,
        })
        .unwrap();
    let mut steps = 0;
    while streams.joining() > 0 {
        streams.step(|_, _| ControlFlow::Continue(())).unwrap();
        steps += 1;
    }
    steps
}

#[test]
fn a_causal_prompt_joins_a_chunk_a_step_and_glm_6b_cuts_only_after_its_context() {
    let glm3_dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chatglm3-tiny/model");
    let glm3 = ChatGlmModel::load(&glm3_dir, DType::F32, &Device::Cpu).unwrap();
    let prompt: Vec<u32> = (0..38).map(|t| 30 + (t * 7) % 200).collect();
    assert_eq!(steps_to_join(&glm3, prompt.clone(), 5), 8);
    assert_eq!(steps_to_join(&glm3, prompt, 64), 1);
    // ChatGLM-6B: the context (up to <sop>) attends both ways and goes in one piece, whatever
    // the chunk; the tokens after it one chunk at a time.
    let model = ChatGlmModel::load(&fixture_dir().join("model"), DType::F32, &Device::Cpu).unwrap();
    let config = model.config();
    let mut prompt: Vec<u32> = (0..20).map(|t| 30 + t).collect();
    prompt.extend([config.gmask_token_id, config.bos_token_id]);
    prompt.extend(40..44);
    // The context is 21 tokens (up to [gMASK]), then <sop> and 4 more: 1 + 5 steps of one.
    assert_eq!(steps_to_join(&model, prompt.clone(), 1), 6);
    assert_eq!(steps_to_join(&model, prompt.clone(), 3), 3);
    assert_eq!(
        together(&model, vec![(prompt.clone(), None, 6)], &[0], 2)[0],
        alone(&model, None, &prompt, 6)
    );
}
