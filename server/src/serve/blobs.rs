//! Content-addressed file store: uploads stream into a temporary file while being hashed, are
//! fsynced, then renamed to `blobs/AB/ABCDEF…` (their SHA-256). A stored blob is never
//! overwritten: the same bytes land on the same name.

use std::path::{Path, PathBuf};

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::serve::error::ApiError;

#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
    temp: PathBuf,
    /// Held while a blob gains or loses a reference: committing a blob and inserting the row
    /// that names it, or deleting a row and removing its blob when no other row names it. Without
    /// it a deletion could count no reference between an upload's commit of the same bytes (a
    /// no-op, the file being there) and its insert, and remove the file the new row then names.
    references: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// A received upload, still in its temporary file; dropped uncommitted, the file goes.
#[derive(Debug)]
pub struct Upload {
    pub temp: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    committed: bool,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl Blobs {
    pub fn new(data_dir: &Path) -> std::io::Result<Blobs> {
        let blobs = Blobs {
            root: data_dir.join("blobs"),
            temp: data_dir.join("tmp"),
            references: std::sync::Arc::default(),
        };
        std::fs::create_dir_all(&blobs.root)?;
        std::fs::create_dir_all(&blobs.temp)?;
        // Leftovers of uploads cut off by a crash.
        for entry in std::fs::read_dir(&blobs.temp)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(blobs)
    }

    /// Exclusive use of the references to blobs, for one commit-and-insert or delete-and-remove.
    pub async fn references(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.references.lock().await
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2.min(sha256.len())]).join(sha256)
    }

    /// Streams `chunks` into a temporary file, refusing more than `limit` bytes.
    pub async fn receive<S, E>(&self, mut chunks: S, limit: u64) -> Result<Upload, ApiError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let temp = self.temp.join(crate::db::new_id("upload-"));
        let mut upload = Upload {
            temp,
            sha256: String::new(),
            bytes: 0,
            committed: false,
        };
        let mut file = tokio::fs::File::create(&upload.temp).await?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| ApiError::invalid(format!("reading the upload: {e}")))?;
            upload.bytes += chunk.len() as u64;
            if upload.bytes > limit {
                return Err(ApiError::too_large(format!(
                    "the upload is larger than the limit of {limit} bytes (--max-upload-bytes)"
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        upload.sha256 = hex::encode(hasher.finalize());
        Ok(upload)
    }

    /// Stores `upload` under its hash (a no-op for bytes already stored) and returns the path.
    pub fn commit(&self, mut upload: Upload) -> std::io::Result<PathBuf> {
        let target = self.path(&upload.sha256);
        if target.is_file() {
            return Ok(target);
        }
        let folder = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(folder)?;
        std::fs::rename(&upload.temp, &target)?;
        upload.committed = true;
        std::fs::File::open(folder)?.sync_all()?;
        Ok(target)
    }

    /// Writes bytes made on the server (a split of an upload) to an upload of their own, to be
    /// committed as a received one is.
    pub fn prepare(&self, bytes: &[u8]) -> std::io::Result<Upload> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let temp = self.temp.join(crate::db::new_id("split-"));
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        Ok(Upload {
            temp,
            sha256,
            bytes: bytes.len() as u64,
            committed: false,
        })
    }
}
