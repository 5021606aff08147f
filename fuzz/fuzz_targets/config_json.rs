//! `config.json` of a model or an adapter, and `tokenizer_config.json`: any bytes give a config or
//! an error naming the field, never a panic.
#![no_main]

use std::path::Path;

use glmtune_engine::{AdapterConfig, ChatGlmConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("config.json");
    if let Ok(config) = ChatGlmConfig::from_json_str(text, path) {
        let _ = config.to_json();
        let _ = (config.kv_width(), config.head_dim());
    }
    let _ = AdapterConfig::from_json_str(text, path);
    // The same text as a tokenizer config next to a real vocabulary.
    let model = include_bytes!("../../tests/fixtures/chatglm3-tiny/model/tokenizer.model");
    let _ = glmtune_engine::tokenizer::ChatGlmTokenizer::from_bytes(model, Some(text));
});
