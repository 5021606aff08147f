//! Files whose declared sizes cannot be real are refused before anything is allocated for them: a
//! 1 KB file must not make the process reserve gigabytes.
//!
//! A torch checkpoint is a zip archive; its central directory declares every entry's size, and
//! readers size their buffers by it. Entries torch writes are stored, so none can be larger than the
//! file; a compressed entry may expand at most [`MAX_EXPANSION`] times (a zip bomb expands more).
//! Nothing is ever extracted to disk, but an entry whose name climbs out of the archive (`../x`, `/x`)
//! is no torch checkpoint either, and is refused by name.

use std::fs::File;
use std::path::Path;

use zip::CompressionMethod;

use crate::error::{EngineError, Result};

/// How much larger than the whole file a compressed entry may say it is.
pub(crate) const MAX_EXPANSION: u64 = 100;

/// Checks every entry of the zip at `path` against the file's real length.
pub(crate) fn check_zip_entries(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let len = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
    let bad = |message: String| EngineError::checkpoint(path, message);
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| bad(format!("not a valid torch checkpoint (zip): {e}")))?;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| bad(format!("zip entry {index} is unreadable: {e}")))?;
        if entry.enclosed_name().is_none() {
            return Err(bad(format!(
                "zip entry {:?} names a path outside the archive: refused",
                entry.name()
            )));
        }
        let limit = match entry.compression() {
            CompressionMethod::Stored => len,
            _ => len.saturating_mul(MAX_EXPANSION),
        };
        if entry.size() > limit || entry.compressed_size() > len {
            return Err(bad(format!(
                "zip entry {:?} declares {} bytes ({} stored) in a file of {len} bytes: refused before reading",
                entry.name(),
                entry.size(),
                entry.compressed_size()
            )));
        }
    }
    Ok(())
}
