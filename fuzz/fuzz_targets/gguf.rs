//! A `model.gguf` from a stranger: its index is read from a prefix of any length, and the model built
//! from it (the tiny ChatGLM3 fixture's config) either loads or is refused; declared tensor sizes are checked
//! against the file's length before anything is allocated.
#![no_main]

use std::path::Path;

use candle_core::{DType, Device};
use glmtune_engine::model::ChatGlmModel;
use glmtune_engine::quant::{GgufIndex, QUANTIZED_FILE};
use glmtune_engine::ChatGlmConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let total = data.len() as u64;
    for head in [16usize, 256, data.len()] {
        let head = head.min(data.len());
        if let Ok(Some(index)) = GgufIndex::parse(QUANTIZED_FILE, &data[..head], total) {
            for entry in &index.tensors {
                let (start, len) = (entry.start as usize, entry.len as usize);
                if let Some(bytes) = data.get(start..start.saturating_add(len)) {
                    let _ = entry.tensor(bytes);
                }
            }
        }
    }
    let config = ChatGlmConfig::from_json_str(
        include_str!("../../tests/fixtures/chatglm3-tiny/model/config.json"),
        Path::new("config.json"),
    )
    .unwrap();
    let _ = ChatGlmModel::from_quantized_bytes(config, "model.gguf", data.to_vec(), DType::F32, &Device::Cpu);
});
