//! A sentencepiece model (`ice_text.model`, `tokenizer.model`) from a stranger: loading it must fail
//! with an error or give a tokenizer that encodes and decodes without panicking.
#![no_main]

use glmtune_engine::tokenizer::ChatGlmTokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tokenizer) = ChatGlmTokenizer::from_bytes(data, None) {
        for text in ["你好，世界", "line one\nline two\t  x", "emoji 😀 [gMASK] <sop>", ""] {
            let ids = tokenizer.encode(text);
            let _ = tokenizer.decode(&ids);
        }
        let _ = tokenizer.decode(&[0, 1, 2, 3, 100, 1000, u32::MAX]);
    }
});
