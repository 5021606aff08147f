//! A sharded checkpoint's index (`model.safetensors.index.json`) naming shards: file names that
//! leave the folder, missing shards and tensors listed in the wrong shard are refused.
#![no_main]

use glmtune_engine::checkpoint::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("glmtune-fuzz-index-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One real shard the index may point at.
    let adapter = include_bytes!("../../tests/fixtures/chatglm6b-tiny/trained_prefix.safetensors");
    std::fs::write(dir.join("shard-1.safetensors"), adapter).unwrap();
    std::fs::write(dir.join("model.safetensors.index.json"), data).unwrap();
    let _ = Checkpoint::open(&dir);
});
