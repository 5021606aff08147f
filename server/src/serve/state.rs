//! What every handler shares: the settings fixed at start and the server's state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use candle_core::DType;
use parking_lot::Mutex;

use crate::db::Db;
use crate::serve::{answer, api, auth, blobs, metrics, origin, registry, supervisor};

/// Settings fixed at start.
#[derive(Debug)]
pub struct Settings {
    pub no_auth: bool,
    pub dtype: DType,
    pub data_dir: PathBuf,
    pub max_upload_bytes: u64,
    pub limits: answer::Limits,
    pub request_timeout: Duration,
    pub max_concurrent_runs: usize,
    /// How long a worker's lease lasts between heartbeats.
    pub lease: Duration,
    pub stall: Duration,
    pub web_dir: PathBuf,
    pub session_seconds: i64,
    /// The names a request's `Host` may give (`--allowed-host` and the bound address).
    pub hosts: origin::HostPolicy,
    /// `--behind-proxy`: `X-Forwarded-Proto` is the proxy's word, not a client's.
    pub behind_proxy: bool,
    /// The most a run may ask for (`--run-max-*`).
    pub run_limits: api::runs::RunLimits,
}

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub registry: Arc<registry::Registry>,
    pub metrics: Arc<metrics::Metrics>,
    pub rate_limiter: Arc<auth::RateLimiter>,
    pub sign_in_limiter: Arc<auth::RateLimiter>,
    pub blobs: blobs::Blobs,
    /// The one-time token that creates the first admin, while there is none.
    pub setup_token: Arc<Mutex<Option<String>>>,
    pub supervisor: Arc<supervisor::Handle>,
}

impl AppState {
    /// A run's folder: its log, checkpoints and final adapter.
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        run_dir(&self.settings.data_dir, run_id)
    }

    /// The files of a run's folder.
    pub fn run_layout(&self, run_id: &str) -> glmtune_shared::run_layout::RunLayout {
        run_layout(&self.settings.data_dir, run_id)
    }
}

pub fn run_dir(data_dir: &Path, run_id: &str) -> PathBuf {
    data_dir.join("runs").join(run_id)
}

/// The files of a run's folder.
pub fn run_layout(data_dir: &Path, run_id: &str) -> glmtune_shared::run_layout::RunLayout {
    glmtune_shared::run_layout::RunLayout::new(run_dir(data_dir, run_id))
}
