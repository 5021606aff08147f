//! The complete checkpoints in a run's folder: `checkpoint-N` folders holding the trainer's state
//! (one being written has none yet). `glmtune train --resume` picks the newest; the checkpoints
//! API lists them all. Its `trainer_log.jsonl` is read back row by row.

use std::path::{Path, PathBuf};

use glmtune_engine::train::trainer::STATE_FILE;
use glmtune_shared::run_layout::RunLayout;
use glmtune_shared::run_log::LogRow;

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

/// The rows of a run's log (none when it is not there yet); a line that does not parse (one being
/// written) is left out.
pub fn read_log(path: &Path) -> Vec<LogRow> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().filter_map(LogRow::parse).collect())
        .unwrap_or_default()
}
