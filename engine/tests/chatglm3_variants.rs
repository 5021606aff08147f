//! ChatGLM3 configurations the tiny fixture does not cover, against THUDM's own outputs
//! (`tests/fixtures/chatglm3-variants`): four multi-query groups with a projected prefix, full
//! multi-head attention with linear biases and `rope_ratio`; and the training features of
//! ChatGLM3's `finetune_hf.py` and ChatGLM2's `ptuning/main.py`, token by token.

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use glmtune_engine::config::Family;
use glmtune_engine::data::{preprocess_record, PreprocessOptions, Record};
use glmtune_engine::generation::{chat_ids, generate, ChatMessage, GenerationOptions};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::tokenizer::{ChatGlmTokenizer, Role};

use common::{ids_of, logits_of, relative_error};

fn variants() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chatglm3-variants")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn messages(case: &serde_json::Value) -> Vec<ChatMessage> {
    let mut messages: Vec<ChatMessage> = serde_json::from_value(case["history"].clone()).unwrap();
    messages.push(ChatMessage {
        role: Role::User,
        content: case["query"].as_str().unwrap().to_owned(),
    });
    messages
}

fn check_variant(name: &str) {
    let dir = variants().join(name);
    let expected = json(&dir.join("expected.json"));
    let tokenizer = ChatGlmTokenizer::from_dir(&dir.join("model")).unwrap();
    let model = ChatGlmModel::load(&dir.join("model"), DType::F32, &Device::Cpu).unwrap();
    let prefix =
        PrefixEncoder::load_adapter(&dir.join("adapter"), model.config(), &Device::Cpu).unwrap();
    let reference: std::collections::HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("logits.safetensors"), &Device::Cpu).unwrap();
    let encoded = prefix.encode().unwrap();
    let error = relative_error(&encoded, &reference["prefix_raw"]);
    assert!(
        error < 1e-5,
        "{name} prefix encoder: relative error {error}"
    );
    let options = GenerationOptions {
        max_new_tokens: Some(expected["max_new_tokens"].as_u64().unwrap() as usize),
        stop_ids: tokenizer.stop_ids(),
        ..GenerationOptions::default()
    };
    for (i, case) in expected["chat_cases"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let ids = chat_ids(&tokenizer, &messages(case)).unwrap();
        assert_eq!(ids, ids_of(&case["chat_ids"]), "{name} case {i}: chat ids");
        for (p, key, greedy) in [
            (None, "base", "greedy_base"),
            (Some(&prefix), "ptuned", "greedy_ptuned"),
        ] {
            let error = relative_error(
                &logits_of(&model, p, &ids),
                &reference[&format!("{key}.{i}")],
            );
            eprintln!("{name} {key}.{i}: relative error {error:.2e}");
            assert!(error < 1e-5, "{name} {key}.{i}: relative error {error}");
            let new_ids = generate(&model, p, std::slice::from_ref(&ids), &options, |_, _| {
                ControlFlow::Continue(())
            })
            .unwrap()
            .remove(0);
            assert_eq!(new_ids, ids_of(&case[greedy]), "{name} {greedy} case {i}");
        }
    }
}

#[test]
fn four_groups_and_a_projected_prefix_match_the_reference() {
    check_variant("groups4_projection");
}

#[test]
fn multi_head_attention_with_biases_and_rope_ratio_matches_the_reference() {
    check_variant("mha_roperatio");
}

fn labels_of(value: &serde_json::Value) -> Vec<i64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

fn fixture_tokenizer(family: Family) -> ChatGlmTokenizer {
    let model = std::fs::read(variants().join("../chatglm3-tiny/model/tokenizer.model")).unwrap();
    ChatGlmTokenizer::from_bytes_for(&model, None, family).unwrap()
}

#[test]
fn conversations_are_preprocessed_as_finetune_hf() {
    let reference = &json(&variants().join("preprocess.json"))["finetune_hf"];
    let tokenizer = fixture_tokenizer(Family::ChatGlm3);
    let conversations: Vec<Vec<ChatMessage>> =
        serde_json::from_value(reference["conversations"].clone()).unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let source = case["max_input_length"].as_u64().unwrap() as usize;
        let target = case["max_output_length"].as_u64().unwrap() as usize;
        let options = PreprocessOptions::new(source, target, true);
        for (conversation, expected) in conversations
            .iter()
            .zip(case["features"].as_array().unwrap())
        {
            let record = Record {
                messages: conversation.clone(),
                ..Record::default()
            };
            let features = preprocess_record(&record, &tokenizer, &options);
            assert_eq!(
                features.input_ids,
                ids_of(&expected["input_ids"]),
                "{source}/{target}"
            );
            assert_eq!(
                features.labels,
                labels_of(&expected["labels"]),
                "{source}/{target}"
            );
        }
    }
}

#[test]
fn records_are_preprocessed_as_chatglm2_ptuning() {
    let reference = &json(&variants().join("preprocess.json"))["chatglm2_ptuning"];
    let tokenizer = fixture_tokenizer(Family::ChatGlm2);
    assert_eq!(tokenizer.token_to_id("eop"), Some(504));
    assert_eq!(tokenizer.token_to_id("<|user|>"), None);
    let records: Vec<Record> = reference["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Record {
            prompt: r["prompt"].as_str().unwrap().to_owned(),
            response: r["response"].as_str().unwrap().to_owned(),
            history: serde_json::from_value(r["history"].clone()).unwrap(),
            ..Record::default()
        })
        .collect();
    for case in reference["cases"].as_array().unwrap() {
        let options = PreprocessOptions {
            source_prefix: case["source_prefix"].as_str().unwrap().to_owned(),
            ..PreprocessOptions::new(
                case["max_source_length"].as_u64().unwrap() as usize,
                case["max_target_length"].as_u64().unwrap() as usize,
                true,
            )
        };
        for (record, expected) in records.iter().zip(case["features"].as_array().unwrap()) {
            let features = preprocess_record(record, &tokenizer, &options);
            assert_eq!(features.input_ids, ids_of(&expected["input_ids"]), "{case}");
            assert_eq!(features.labels, labels_of(&expected["labels"]), "{case}");
        }
    }
}
