//! A safetensors file (weights, adapters): every tensor it declares either loads or is refused;
//! declared shapes are checked against the bytes there are, never allocated blindly.
#![no_main]

use std::path::Path;

use candle_core::{DType, Device};
use glmtune_engine::checkpoint::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(checkpoint) =
        Checkpoint::from_safetensors_bytes(Path::new("adapter.safetensors"), data.to_vec())
    else {
        return;
    };
    let names: Vec<String> = checkpoint.names().map(str::to_owned).collect();
    for name in names {
        let _ = checkpoint.load(&name, None, DType::F32, &Device::Cpu);
    }
});
