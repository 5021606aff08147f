//! `glmtune serve`'s flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::device::{DeviceArg, GpuSelection};
use crate::precision::DTypeArg;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Read flags from a TOML or JSON file (keys are flag names); flags typed after it win.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free one; the address is printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) bind: SocketAddr,
    /// Where the database (SQLite), uploads and runs live.
    #[arg(long, value_name = "DIR", default_value = "glmtune-data")]
    pub(crate) data_dir: PathBuf,
    /// `postgres://USER:PASSWORD@HOST/DB` for a shared server; SQLite under --data-dir if absent.
    #[arg(long, value_name = "URL", env = "GLMTUNE_DATABASE_URL")]
    pub(crate) database_url: Option<String>,
    /// Register a model: NAME=DIR, or NAME=DIR:ADAPTER_DIR for a P-Tuning v2 expert. Repeatable;
    /// registering the same name again re-points it.
    #[arg(long = "model", value_name = "NAME=DIR[:ADAPTER]", value_parser = parse_model_spec)]
    pub(crate) models: Vec<ModelSpec>,
    /// Precision of served base weights.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub(crate) dtype: DTypeArg,
    /// Where chats run when no GPU of --gpus is free (training runs take the CPU without --gpus).
    #[command(flatten)]
    pub(crate) device: DeviceArg,
    /// GPUs for training runs, one run each (queued runs wait for a free one): `all` or ordinals
    /// (`0,1`). Chats load onto a GPU that no run holds, else onto --device. Without it, runs
    /// train on the CPU, --max-concurrent-runs at once. Needs a CUDA build (scripts/build-cuda.sh).
    #[arg(long, value_name = "all|N,M,…")]
    pub(crate) gpus: Option<GpuSelection>,
    /// Largest JSON request body accepted, in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub(crate) max_json_bytes: usize,
    /// Largest dataset upload accepted, in bytes.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub(crate) max_upload_bytes: u64,
    /// Largest `max_tokens` a chat request may ask for.
    #[arg(long, default_value_t = 2048)]
    pub(crate) max_new_tokens: usize,
    /// Longest prompt a chat request may send, in tokens (history and system prompt included).
    #[arg(long, default_value_t = 8192)]
    pub(crate) max_prompt_tokens: usize,
    /// Seconds a request may take before it is answered 504 (streams: until the first byte);
    /// fractions allowed, at least a millisecond.
    #[arg(long, default_value_t = 600.0, value_parser = timeout_seconds)]
    pub(crate) request_timeout_s: f64,
    /// Requests per minute per API key or user (0: no limit).
    #[arg(long, default_value_t = 600)]
    pub(crate) rate_limit: u32,
    /// Sign-in attempts (login and first-run setup) per minute per client address (0: no limit).
    #[arg(long, default_value_t = 10)]
    pub(crate) sign_in_rate_limit: u32,
    /// Training runs at once on this machine; 0: none, runs wait for workers (`glmtune worker`).
    #[arg(long, default_value_t = 1)]
    pub(crate) max_concurrent_runs: usize,
    /// Seconds a worker's lease on a run lasts without a heartbeat (workers beat at a third of
    /// it); a worker quiet for longer loses the run, which resumes elsewhere from its last
    /// checkpoint.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) lease_seconds: f64,
    /// Largest `pre_seq_len` a run may ask for (dashboard runs and OpenAI fine-tuning jobs, admins
    /// included).
    #[arg(long, default_value_t = 512)]
    pub(crate) run_max_pre_seq_len: u64,
    /// Largest per-device batch size × gradient accumulation steps a run may ask for.
    #[arg(long, default_value_t = 256)]
    pub(crate) run_max_batch: u64,
    /// Largest `max_source_length` and `max_target_length` a run may ask for, in tokens (at most
    /// 8192).
    #[arg(long, default_value_t = 2048)]
    pub(crate) run_max_length: u64,
    /// Largest `max_steps` a run may ask for (at most 1000000000).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) run_max_steps: u64,
    /// Largest `num_train_epochs` (OpenAI `n_epochs`) a run may ask for.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) run_max_epochs: f64,
    /// Seconds without a training step before a run's stream gets a `stall` event.
    #[arg(long, default_value_t = 300)]
    pub(crate) stall_seconds: u64,
    /// Adapters whose prefixes stay in memory for chats (the least recently used go first).
    #[arg(long, default_value_t = 8)]
    pub(crate) adapter_cache: usize,
    /// Seconds a browser session lasts after sign-in (default: a week).
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub(crate) session_seconds: i64,
    /// Password of the first admin (user `admin`), made when the database has no users.
    #[arg(long, env = "GLMTUNE_ADMIN_PASSWORD", hide_env_values = true)]
    pub(crate) admin_password: Option<String>,
    /// The dashboard's files (index.html and pkg/, built by web/build.sh).
    #[arg(long, value_name = "DIR", default_value = "www")]
    pub(crate) web_dir: PathBuf,
    /// Serve without authentication, every caller an admin (loopback addresses only).
    #[arg(long)]
    pub(crate) no_auth: bool,
    /// Another name this server answers to, as browsers send it in `Host` (NAME, any port, or
    /// NAME:PORT); repeatable. Always accepted: the bind address, and on loopback `localhost` and
    /// every loopback address, on the bound port; bound to 0.0.0.0 or [::], any of this machine's
    /// addresses typed as such. Every DNS name the server is reached by (directly, or through a
    /// reverse proxy that passes the name on) must be listed: a request naming another host is
    /// refused, which is what keeps a web page from reaching the server by DNS rebinding.
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub(crate) allowed_hosts: Vec<String>,
    /// The server is reached through a reverse proxy that terminates TLS: trust its
    /// `X-Forwarded-Proto: https` and mark the session cookie `Secure`. Leave it off when clients
    /// reach the server directly, as they could send the header themselves.
    #[arg(long)]
    pub(crate) behind_proxy: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ModelSpec {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) adapter: Option<PathBuf>,
}

pub(crate) fn parse_model_spec(text: &str) -> Result<ModelSpec, String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=DIR[:ADAPTER]"))?;
    if name.is_empty() || path.is_empty() || name.starts_with("ft:") {
        return Err(format!(
            "{text:?}: expected NAME=DIR[:ADAPTER] (names starting with ft: are for fine-tuned models)"
        ));
    }
    let (dir, adapter) = match path.split_once(':') {
        Some((dir, adapter)) => (dir, Some(PathBuf::from(adapter))),
        None => (path, None),
    };
    Ok(ModelSpec {
        name: name.to_owned(),
        dir: PathBuf::from(dir),
        adapter,
    })
}

/// `glmtune serve`'s flags from a list of them (as typed after `glmtune serve`).
pub fn flags(flags: &[&str]) -> Result<ServeArgs, clap::Error> {
    #[derive(clap::Parser)]
    struct Standalone {
        #[command(flatten)]
        args: ServeArgs,
    }
    let argv = std::iter::once("serve").chain(flags.iter().copied());
    <Standalone as clap::Parser>::try_parse_from(argv).map(|s| s.args)
}

/// `--request-timeout-s`: a number of seconds from a millisecond to about 30 years.
fn timeout_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if (0.001..=1e9).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!("{text}: give 0.001 to 1e9 seconds"))
    }
}
