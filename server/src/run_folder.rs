//! The complete checkpoints in a run's folder: `checkpoint-N` folders holding the trainer's state
//! (one being written has none yet). `glmtune train --resume` picks the newest; the checkpoints
//! API lists them all.

use std::path::{Path, PathBuf};

use glmtune_engine::train::trainer::STATE_FILE;
use glmtune_shared::run_layout::RunLayout;

/// Each complete checkpoint of `dir` as (step, folder), in no order; an entry the folder listing
/// could not read is an error. A folder that cannot be listed has none.
pub fn complete_checkpoints(dir: &Path) -> impl Iterator<Item = std::io::Result<(u64, PathBuf)>> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => return Some(Err(error)),
            };
            let step = RunLayout::checkpoint_step(&entry.file_name().to_string_lossy())?;
            let path = entry.path();
            path.join(STATE_FILE).is_file().then_some(Ok((step, path)))
        })
}
