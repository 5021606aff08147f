//! ChatGLM3-6B (the ChatGLM2 architecture) against THUDM's own outputs for the tiny fixture:
//! tokenizer ids and text, `build_chat_input`, logits without and with the adapter, greedy ids.

mod common;

use std::ops::ControlFlow;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use glmtune_engine::config::Family;
use glmtune_engine::generation::{chat_ids, generate, ChatMessage, GenerationOptions};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::tokenizer::ChatGlmTokenizer;

use common::{ids_of, logits_of, relative_error, train_losses};

const TOLERANCE: f32 = 2e-5;

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
    PrefixEncoder::load_adapter(
        &fixture().join("adapter_init"),
        model.config(),
        &Device::Cpu,
    )
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
        assert_eq!(
            tok.token_to_id(name),
            Some(id.as_u64().unwrap() as u32),
            "{name}"
        );
    }
    assert_eq!(tok.stop_ids(), ids_of(&expected["eos_token_ids"]));
    for case in expected["tokenizer_cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text), ids_of(&case["ids"]), "ids of {text:?}");
        assert_eq!(
            tok.encode_plain(text),
            ids_of(&case["plain_ids"]),
            "plain ids of {text:?}"
        );
        assert_eq!(
            tok.decode(&ids_of(&case["plain_ids"])),
            case["decoded"].as_str().unwrap()
        );
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
    for (i, case) in expected()["chat_cases"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let ids = ids_of(&case["chat_ids"]);
        let error = relative_error(
            &logits_of(model, prefix, &ids),
            &reference[&format!("{key}.{i}")],
        );
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
    generate(model, prefix, &[ids.to_vec()], &options, |_, _| {
        ControlFlow::Continue(())
    })
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
        assert_eq!(
            greedy(&model, None, &ids),
            ids_of(&case["greedy_base"]),
            "base {}",
            case["query"]
        );
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
    let batched = generate(&model, Some(&prefix), &prompts, &options, |_, _| {
        ControlFlow::Continue(())
    })
    .unwrap();
    for (case, out) in cases.iter().zip(batched) {
        assert_eq!(
            out,
            ids_of(&case["greedy_ptuned"]),
            "batched {}",
            case["query"]
        );
    }
}

/// A small medical conversation set in ChatGLM3's `conversations` format.
const CONVERSATIONS: &str = r#"{"conversations":[{"role":"system","content":"你是医生"},{"role":"user","content":"头痛怎么办？"},{"role":"assistant","content":"多休息，多喝水。"}]}
{"conversations":[{"role":"user","content":"感冒怎么办？"},{"role":"assistant","content":"多喝水。"},{"role":"user","content":"发烧呢？"},{"role":"assistant","content":"多休息，注意体温。"}]}
{"conversations":[{"role":"user","content":"失眠怎么办？"},{"role":"assistant","content":"注意休息。"}]}
{"conversations":[{"role":"user","content":"咳嗽怎么办？"},{"role":"assistant","content":"多喝水，多休息。"}]}
"#;

fn conversation_records() -> Vec<glmtune_engine::data::Record> {
    let (records, report) = glmtune_engine::data::parse_records(
        CONVERSATIONS.as_bytes(),
        std::path::Path::new("conversations.jsonl"),
        &glmtune_engine::data::DatasetFormat::Auto,
        false,
    )
    .unwrap();
    assert_eq!(report.kept, 4);
    records
}

#[test]
fn conversation_features_follow_finetune_hf() {
    use glmtune_engine::data::{preprocess_record, PreprocessOptions, IGNORE_INDEX};
    let tok = tokenizer();
    let records = conversation_records();
    let options = PreprocessOptions::new(64, 32, true);
    let features = preprocess_record(&records[1], &tok, &options);
    // [gMASK] sop, then each message as build_single_message, then </s>.
    let message = |role, text: &str| tok.single_message(role, "", text).unwrap();
    use glmtune_engine::tokenizer::Role::{Assistant, User};
    let parts = [
        (message(User, "感冒怎么办？"), false),
        (message(Assistant, "多喝水。"), true),
        (message(User, "发烧呢？"), false),
        (message(Assistant, "多休息，注意体温。"), true),
    ];
    let mut ids = tok.prefix_ids();
    let mut learned = vec![false; 2];
    for (part, is_answer) in &parts {
        ids.extend(part);
        learned.extend(std::iter::repeat_n(*is_answer, part.len()));
    }
    ids.push(2);
    assert_eq!(features.input_ids, ids);
    // Labels: the ids shifted one right under the assistant messages' mask, so <|user|> after an
    // answer and the final </s> are learned, the <|assistant|> tokens are not.
    let expected: Vec<i64> = (0..ids.len())
        .map(|i| {
            if i > 0 && learned[i - 1] {
                ids[i] as i64
            } else {
                IGNORE_INDEX
            }
        })
        .collect();
    assert_eq!(features.labels, expected);
    let user = tok.role_id(User).unwrap() as i64;
    let assistant = tok.role_id(Assistant).unwrap() as i64;
    assert!(features.labels.contains(&user) && !features.labels.contains(&assistant));
    assert_eq!(*features.labels.last().unwrap(), 2);
    // Truncation keeps max_source_length + max_target_length + 1 tokens.
    let short = preprocess_record(&records[1], &tok, &PreprocessOptions::new(8, 4, true));
    assert_eq!(short.input_ids, ids[..13]);
    assert_eq!(short.answer_cut + short.prompt_cut, ids.len() - 13);
}

#[test]
fn training_on_conversations_halves_the_loss() {
    use glmtune_engine::data::{preprocess_train, PreprocessOptions};
    use glmtune_engine::train::{Example, TrainOptions, Trainer};
    let tok = tokenizer();
    let features = preprocess_train(
        &conversation_records(),
        &tok,
        &PreprocessOptions::new(64, 32, true),
    )
    .unwrap();
    let examples: Vec<Example> = features
        .into_iter()
        .map(|f| Example {
            input_ids: f.input_ids,
            labels: f.labels,
        })
        .collect();
    let model = model();
    let init = adapter(&model);
    let options = TrainOptions {
        per_device_train_batch_size: 4,
        gradient_accumulation_steps: 1,
        learning_rate: 0.3,
        max_steps: 30,
        prefix_dropout: 0.0,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(&model, &init, options).unwrap();
    let losses = train_losses(&mut trainer, &examples);
    let (first, last) = (losses[0], *losses.last().unwrap());
    eprintln!("loss {first:.3} → {last:.3} over {} steps", losses.len());
    assert!(last < first / 2.0, "loss {first} → {last}");
    // The trained adapter is written in the official layout and loads back.
    let dir = std::env::temp_dir().join(format!("glmtune-glm3-adapter-{}", std::process::id()));
    trainer
        .encoder()
        .unwrap()
        .save_adapter(&dir, model.config())
        .unwrap();
    let reloaded = PrefixEncoder::load_adapter(&dir, model.config(), &Device::Cpu).unwrap();
    assert_eq!(reloaded.embedding.dims(), init.embedding.dims());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["multi_query_group_num"], 2);
    assert_eq!(config["pre_seq_len"], 4);
    std::fs::remove_dir_all(&dir).ok();
}
