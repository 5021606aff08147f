//! The protocol between the server and its training workers (`glmtune worker`), both sides of
//! every call: a worker registers, leases a queued run, heartbeats to keep its lease, sends the
//! trainer's log in batches, uploads the run's files in chunks and completes the run once.
//!
//! A lease is the right to train one run until `expires_at`; heartbeats move it on. A worker that
//! stops heartbeating loses it and the run goes back to the queue, to resume from the last
//! checkpoint the worker uploaded. Every call about a lease names it, and the server answers
//! `410 Gone` to one that is no longer held: a late worker cannot report, upload or complete.

use serde::{Deserialize, Serialize};

use crate::api::{ReadOptions, Run};
use crate::run_log::LogRow;

/// A device a worker trains on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerDevice {
    /// `cpu` or `cuda:N`, as `glmtune train --device` takes it.
    pub device: String,
    /// Its memory in bytes, where known.
    pub memory_bytes: Option<u64>,
}

/// A base model on a worker's disk, by the name runs use and the hash of its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerModel {
    pub name: String,
    /// SHA-256 over the folder's files (names and contents, in name order).
    pub sha256: String,
}

/// `POST /api/v1/workers`: who the worker is and what it can train.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkerRegistration {
    /// Unique per key: registering the same name again updates that worker.
    pub name: String,
    pub devices: Vec<WorkerDevice>,
    pub models: Vec<WorkerModel>,
}

/// A registered worker as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Worker {
    pub id: String,
    pub name: String,
    pub devices: Vec<WorkerDevice>,
    pub models: Vec<WorkerModel>,
    pub registered_at: i64,
    /// Its last call about itself or one of its leases.
    pub last_seen_at: i64,
    /// The runs it holds leases on now.
    pub runs: Vec<String>,
}

/// `POST /api/v1/workers/{id}/lease`: a device of the worker is free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The device the run will train on (one of the worker's).
    pub device: String,
}

/// A dataset a leased run reads, fetched by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeasedDataset {
    pub sha256: String,
    pub bytes: i64,
    pub read_options: ReadOptions,
}

/// A file of the run's folder on the server: a worker resuming the run fetches these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileDigest {
    /// Relative to the run's folder, `/`-separated (`checkpoint-10/adapter.safetensors`).
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// The answer to a lease request that found a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    pub id: String,
    pub run: Run,
    /// Unix milliseconds.
    pub expires_at_ms: i64,
    /// How often to heartbeat, in milliseconds (a third of the lease's length).
    pub heartbeat_ms: u64,
    pub train: LeasedDataset,
    pub validation: Option<LeasedDataset>,
    /// What an earlier attempt left: the newest checkpoint's files and the trainer's log, to
    /// resume from. Empty for a run that starts afresh.
    pub resume: Vec<FileDigest>,
}

/// `POST /api/v1/leases/{id}/heartbeat`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    /// Unix milliseconds.
    pub expires_at_ms: i64,
}

/// `POST /api/v1/leases/{id}/log`: the trainer's rows and its standard error's lines since the
/// last batch. A batch sent again (the answer was lost) changes nothing: rows are told once each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogBatch {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub rows: Vec<LogRow>,
    /// Lines of the trainer's standard error (its notes and warnings) in this lease, from the
    /// `first_note`-th on (counted from 0): lines the server has already told are skipped.
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(default)]
    pub first_note: u64,
}

/// `GET /api/v1/leases/{id}/uploads?path=`: how much of a file the server holds, to go on from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadState {
    pub path: String,
    pub bytes: u64,
}

/// `POST /api/v1/leases/{id}/commit`: uploaded files, checked against their hashes and then put
/// into the run's folder together (a checkpoint's files appear all at once or not at all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Commit {
    pub files: Vec<FileDigest>,
}

/// How a leased run ended on its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Trained to its end; its adapter (and evaluation, if any) committed.
    Succeeded,
    /// Stopped at its sweep's rung, with the checkpoint there committed.
    Paused,
    Failed,
}

/// `POST /api/v1/leases/{id}/complete`: accepted once, from the lease's holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Completion {
    pub outcome: Outcome,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// The files the outcome rests on, each checked against the run's folder (the adapter of a
    /// succeeded run, the checkpoint of a paused one).
    #[serde(default)]
    pub files: Vec<FileDigest>,
}

/// Whether `path` may name a file of a run's folder sent by a worker: relative, `/`-separated
/// plain names (no `.`, `..`, empty or hidden parts).
pub fn is_run_file(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 512
        && path.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && !part.contains('\\')
                && part.chars().all(|c| !c.is_control())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_files_stay_in_their_folder() {
        for good in [
            "pytorch_model.bin",
            "checkpoint-10/adapter.safetensors",
            "eval/scores.json",
        ] {
            assert!(is_run_file(good), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "./a",
            "a//b",
            ".uploads/x",
            "a\\b",
            "a/\u{0}",
        ] {
            assert!(!is_run_file(bad), "{bad:?}");
        }
    }
}
