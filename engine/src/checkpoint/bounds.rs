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
        let (raw, name) = match entry.name() {
            Ok(raw) => (raw.to_string(), format!("{raw:?}")),
            Err(_) => (String::new(), format!("number {index}")),
        };
        if climbs_out(&raw) {
            return Err(bad(format!(
                "zip entry {name} names a path outside the archive: refused"
            )));
        }
        let limit = match entry.compression() {
            CompressionMethod::Stored => len,
            _ => len.saturating_mul(MAX_EXPANSION),
        };
        if entry.size() > limit || entry.compressed_size() > len {
            return Err(bad(format!(
                "zip entry {name} declares {} bytes ({} stored) in a file of {len} bytes: refused before reading",
                entry.size(),
                entry.compressed_size()
            )));
        }
    }
    Ok(())
}

/// A name that is absolute or has a `..` part (torch writes neither): as a path it would leave the
/// archive's folder.
fn climbs_out(name: &str) -> bool {
    name.starts_with(['/', '\\'])
        || name.contains('\0')
        || name.split(['/', '\\']).any(|part| part == "..")
        || name.as_bytes().get(1) == Some(&b':')
}

#[cfg(test)]
mod tests {
    use super::climbs_out;

    #[test]
    fn names_that_leave_the_archive() {
        for name in [
            "/etc/passwd",
            "\\x",
            "../x",
            "a/../../x",
            "a\\..\\x",
            "C:x",
            "a\0b",
        ] {
            assert!(climbs_out(name), "{name}");
        }
        for name in ["archive/data.pkl", "archive/data/0", "a..b/c", "version"] {
            assert!(!climbs_out(name), "{name}");
        }
    }
}
