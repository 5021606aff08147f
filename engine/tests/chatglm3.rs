//! ChatGLM3-6B (the ChatGLM2 architecture) against THUDM's own outputs for the tiny fixture:
//! tokenizer ids and text, `build_chat_input`, logits without and with the adapter, greedy ids.

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use glmtune_engine::config::Family;
use glmtune_engine::generation::{chat_ids, generate, ChatMessage, Flow, GenerationOptions};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::tokenizer::ChatGlmTokenizer;

use common::{ids_of, logits_of, relative_error};

const TOLERANCE: f32 = 1e-4;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chatglm3-tiny")
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tokenizer() -> ChatGlmTokenizer {
    ChatGlmTokenizer::from_dir(&fixture().join("model")).expect("tokenizer loads")
}

fn model() -> ChatGlmModel {
    ChatGlmModel::load(&fixture().join("model"), DType::F32, &Device::Cpu).expect("model loads")
}

fn adapter(model: &ChatGlmModel) -> PrefixEncoder {
    PrefixEncoder::load_adapter(&fixture().join("adapter_init"), model.config(), &Device::Cpu)
        .expect("adapter loads")
}

fn messages(case: &serde_json::Value) -> Vec<ChatMessage> {
    let mut messages: Vec<ChatMessage> =
        serde_json::from_value(case["history"].clone()).expect("history messages");
    messages.push(ChatMessage {
        role: glmtune_engine::tokenizer::Role::User,
        content: case["query"].as_str().unwrap().to_owned(),
    });
    messages
}

#[test]
fn tokenizer_matches_reference() {
    let tok = tokenizer();
    assert_eq!(tok.family(), Family::ChatGlm3);
    let expected = expected();
    for (name, id) in expected["special_ids"].as_object().unwrap() {
        assert_eq!(tok.token_to_id(name), Some(id.as_u64().unwrap() as u32), "{name}");
    }
    assert_eq!(tok.stop_ids(), ids_of(&expected["eos_token_ids"]));
    for case in expected["tokenizer_cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text), ids_of(&case["ids"]), "ids of {text:?}");
        assert_eq!(tok.encode_plain(text), ids_of(&case["plain_ids"]), "plain ids of {text:?}");
        assert_eq!(tok.decode(&ids_of(&case["plain_ids"])), case["decoded"].as_str().unwrap());
    }
}

#[test]
fn chat_inputs_match_build_chat_input() {
    let tok = tokenizer();
    for case in expected()["chat_cases"].as_array().unwrap() {
        let ids = chat_ids(&tok, &messages(case)).unwrap();
        assert_eq!(ids, ids_of(&case["chat_ids"]), "{}", case["query"]);
    }
}

fn check_logits(prefix: Option<&PrefixEncoder>, model: &ChatGlmModel, key: &str) {
    let reference: std::collections::HashMap<String, Tensor> =
        candle_core::safetensors::load(fixture().join("logits.safetensors"), &Device::Cpu).unwrap();
    for (i, case) in expected()["chat_cases"].as_array().unwrap().iter().enumerate() {
        let ids = ids_of(&case["chat_ids"]);
        let error = relative_error(&logits_of(model, prefix, &ids), &reference[&format!("{key}.{i}")]);
        eprintln!("{key}.{i}: relative error {error:.2e}");
        assert!(error < TOLERANCE, "{key} case {i}: relative error {error}");
    }
}

#[test]
fn base_logits_match_reference() {
    check_logits(None, &model(), "base");
}

#[test]
fn ptuned_logits_match_reference() {
    let model = model();
    check_logits(Some(&adapter(&model)), &model, "ptuned");
}

fn greedy(model: &ChatGlmModel, prefix: Option<&PrefixEncoder>, ids: &[u32]) -> Vec<u32> {
    let options = GenerationOptions {
        max_new_tokens: Some(10),
        stop_ids: tokenizer().stop_ids(),
        ..GenerationOptions::default()
    };
    generate(model, prefix, &[ids.to_vec()], &options, |_, _| Flow::Continue)
        .unwrap()
        .remove(0)
}

#[test]
fn greedy_ids_match_reference() {
    let model = model();
    let prefix = adapter(&model);
    let cases = expected()["chat_cases"].as_array().unwrap().clone();
    for case in &cases {
        let ids = ids_of(&case["chat_ids"]);
        assert_eq!(greedy(&model, None, &ids), ids_of(&case["greedy_base"]), "base {}", case["query"]);
        assert_eq!(
            greedy(&model, Some(&prefix), &ids),
            ids_of(&case["greedy_ptuned"]),
            "ptuned {}",
            case["query"]
        );
    }
    // Left-padded together, each sequence still computes what it computes alone.
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids_of(&c["chat_ids"])).collect();
    let options = GenerationOptions {
        max_new_tokens: Some(10),
        stop_ids: tokenizer().stop_ids(),
        ..GenerationOptions::default()
    };
    let batched = generate(&model, Some(&prefix), &prompts, &options, |_, _| Flow::Continue).unwrap();
    for (case, out) in cases.iter().zip(batched) {
        assert_eq!(out, ids_of(&case["greedy_ptuned"]), "batched {}", case["query"]);
    }
}
