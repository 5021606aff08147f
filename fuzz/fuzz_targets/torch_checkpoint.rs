//! A `pytorch_model.bin` (a torch zip holding a pickle): opened as a checkpoint folder, every tensor
//! it declares either loads or is refused.
#![no_main]

use candle_core::{DType, Device};
use glmtune_engine::checkpoint::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("glmtune-fuzz-torch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pytorch_model.bin"), data).unwrap();
    if let Ok(checkpoint) = Checkpoint::open(&dir) {
        let names: Vec<String> = checkpoint.names().map(str::to_owned).collect();
        for name in names {
            let _ = checkpoint.load(&name, None, DType::F32, &Device::Cpu);
        }
    }
});
