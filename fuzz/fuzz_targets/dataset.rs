//! A dataset file in any format (JSON lines or a JSON array; columns, Alpaca, messages): records or
//! errors by line and field, and the records preprocessed for each generation without panicking.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use glmtune_engine::data::{parse_records, preprocess_record, DatasetFormat, PreprocessOptions};
use glmtune_engine::tokenizer::ChatGlmTokenizer;
use libfuzzer_sys::fuzz_target;

fn tokenizers() -> &'static [ChatGlmTokenizer; 2] {
    static TOKENIZERS: OnceLock<[ChatGlmTokenizer; 2]> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        let glm = ChatGlmTokenizer::from_bytes(
            include_bytes!("../../tests/fixtures/chatglm6b-tiny/model/ice_text.model"),
            Some(include_str!("../../tests/fixtures/chatglm6b-tiny/model/tokenizer_config.json")),
        )
        .unwrap();
        let glm3 = ChatGlmTokenizer::from_bytes(
            include_bytes!("../../tests/fixtures/chatglm3-tiny/model/tokenizer.model"),
            None,
        )
        .unwrap();
        [glm, glm3]
    })
}

fuzz_target!(|data: &[u8]| {
    let formats = [
        DatasetFormat::Auto,
        DatasetFormat::columns("content", "summary", Some("history")),
        DatasetFormat::Alpaca,
        DatasetFormat::Messages,
    ];
    for (i, format) in formats.iter().enumerate() {
        let skip_invalid = i % 2 == 0;
        let Ok((records, _)) = parse_records(data, Path::new("data.jsonl"), format, skip_invalid)
        else {
            continue;
        };
        for tokenizer in tokenizers() {
            for record in records.iter().take(4) {
                let _ = preprocess_record(record, tokenizer, &PreprocessOptions::new(8, 4, true));
            }
        }
    }
});
