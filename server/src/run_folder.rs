//! The complete checkpoints in a run's folder: `checkpoint-N` folders holding the trainer's state
//! (one being written has none yet). `glmtune train --resume` picks the newest; the checkpoints
//! API lists them all. Its `trainer_log.jsonl` is read back row by row.

use std::path::{Path, PathBuf};

use glmtune_engine::train::trainer::STATE_FILE;
use glmtune_shared::run_layout::RunLayout;
use glmtune_shared::run_log::LogRow;
use glmtune_shared::worker::FileDigest;

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

/// The newest complete checkpoint of `dir`, as (step, folder).
pub fn newest_checkpoint(dir: &Path) -> std::io::Result<Option<(u64, PathBuf)>> {
    let mut newest: Option<(u64, PathBuf)> = None;
    for found in complete_checkpoints(dir) {
        let (step, path) = found?;
        if newest.as_ref().is_none_or(|(s, _)| step > *s) {
            newest = Some((step, path));
        }
    }
    Ok(newest)
}

/// Keeps the log rows up to `step` (a killed run may have logged past its last checkpoint), less
/// the errors of earlier attempts.
pub fn truncate_log(path: &Path, step: u64) -> std::io::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            LogRow::parse(line)
                .is_some_and(|row| row.step() <= step && !matches!(row, LogRow::Error(_)))
        })
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    std::fs::write(path, body)
}

/// Cuts a resumed run's log back to the checkpoint `glmtune train --resume` will resume from, as
/// the trainer does at its start, before anyone follows the log: whoever tails it then never
/// reads rows the trainer is about to cut and write again (their bytes differ). The trainer's own
/// cut then leaves the log as it is.
pub fn cut_log_for_resume(dir: &Path) -> std::io::Result<()> {
    let step = newest_checkpoint(dir)?.map_or(0, |(step, _)| step);
    truncate_log(&RunLayout::new(dir).trainer_log(), step)
}

/// The digest of the file at `path`, named `name` in a run's folder (`checkpoint-10/…`).
pub fn file_digest(path: &Path, name: &str) -> std::io::Result<FileDigest> {
    let (sha256, bytes) = file_sha256(path)?;
    Ok(FileDigest {
        path: name.to_owned(),
        sha256,
        bytes,
    })
}

/// The SHA-256 (hex) and length of the file at `path`, read in 1 MiB pieces.
pub fn file_sha256(path: &Path) -> std::io::Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), bytes))
}
