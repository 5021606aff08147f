//! The JSON bodies the server accepts (dashboard API and OpenAI API), and `--history` messages:
//! any bytes parse or give an error.
#![no_main]

use glmtune_shared::{api, openai};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<openai::ChatCompletionRequest>(data);
    let _ = serde_json::from_slice::<api::CreateRun>(data);
    let _ = serde_json::from_slice::<api::CreateChat>(data);
    let _ = serde_json::from_slice::<api::PostMessage>(data);
    let _ = serde_json::from_slice::<api::LoginRequest>(data);
    let _ = serde_json::from_slice::<api::SplitRequest>(data);
    let _ = serde_json::from_slice::<api::ReadOptions>(data);
    let _ = serde_json::from_slice::<Vec<glmtune_engine::generation::ChatMessage>>(data);
});
