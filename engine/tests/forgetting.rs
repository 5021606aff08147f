//! The forgetting guard on the fixture: the base model against itself scores 0, and the prefix
//! trained on the fixture's narrow medical set moves the model on general prompts further than
//! the prefix it was trained from.

mod common;

use candle_core::{DType, Device};
use glmtune_engine::generation::chat_prompt_ids;
use glmtune_engine::generation::forgetting::{base_answers, forgetting, general_probes};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::tokenizer::ChatGlmTokenizer;

use common::*;

#[test]
fn the_base_scores_zero_and_training_on_a_narrow_set_moves_the_model() {
    let dir = fixture_dir().join("model");
    let model = ChatGlmModel::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let tokenizer = ChatGlmTokenizer::from_dir(&dir).unwrap();
    let prompts: Vec<Vec<u32>> = general_probes()
        .iter()
        .map(|p| chat_prompt_ids(&tokenizer, None, &[], p))
        .collect();
    let answers = base_answers(&model, &prompts, 8).unwrap();
    assert!(
        answers.len() >= prompts.len() / 2,
        "{} answered",
        answers.len()
    );
    let itself = forgetting(&model, None, &answers).unwrap();
    assert_eq!((itself.kl, itself.logprob_delta), (0.0, 0.0));
    assert!(itself.tokens > answers.len());
    let adapter = |name: &str| {
        PrefixEncoder::load_adapter(&fixture_dir().join(name), model.config(), &Device::Cpu)
            .unwrap()
    };
    let init = forgetting(&model, Some(&adapter("adapter_init")), &answers).unwrap();
    let trained = forgetting(&model, Some(&adapter("adapter_trained")), &answers).unwrap();
    println!("KL init {init:?}, trained {trained:?}");
    assert!(init.kl > 0.0, "{init:?}");
    assert!(trained.kl > init.kl, "init {init:?}, trained {trained:?}");
    assert!(
        trained.logprob_delta < init.logprob_delta,
        "init {init:?}, trained {trained:?}"
    );
    assert_eq!(trained.tokens, itself.tokens);
}
