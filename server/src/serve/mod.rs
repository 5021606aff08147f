//! `glmtune serve`: the HTTP server. This first part serves the OpenAI-compatible chat API over
//! the models registered with `--model NAME=DIR` (each with its optional adapter), `/healthz`,
//! `/metrics` (Prometheus) and JSON errors everywhere.

mod error;
mod metrics;
mod openai;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use axum::extract::rejection::JsonRejection;
use axum::routing::{get, post};
use axum::Router;
use clap::Args;

use crate::cli::model_args::{DTypeArg, Loaded, ModelArgs};
pub use error::ApiError;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the address is printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Register a model: NAME=DIR, or NAME=DIR:ADAPTER_DIR for a P-Tuning v2 expert. Repeatable.
    #[arg(long = "model", value_name = "NAME=DIR[:ADAPTER]", value_parser = parse_model_spec)]
    models: Vec<ModelSpec>,
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
    /// Largest JSON request body accepted, in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    max_json_bytes: usize,
    /// Serve without authentication (allowed on a loopback address only). Users and API keys are
    /// not implemented yet, so this is required for now.
    #[arg(long)]
    no_auth: bool,
}

#[derive(Debug, Clone)]
struct ModelSpec {
    name: String,
    dir: PathBuf,
    adapter: Option<PathBuf>,
}

fn parse_model_spec(text: &str) -> Result<ModelSpec, String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=DIR[:ADAPTER]"))?;
    if name.is_empty() || path.is_empty() {
        return Err(format!("{text:?}: expected NAME=DIR[:ADAPTER]"));
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

/// One servable model. The weights are read-only; `turn` makes requests take turns so that two
/// generations do not split the CPU between them.
pub struct Served {
    pub loaded: Loaded,
    pub turn: Mutex<()>,
}

#[derive(Clone)]
pub struct AppState {
    pub models: Arc<BTreeMap<String, Arc<Served>>>,
    pub metrics: Arc<metrics::Metrics>,
}

/// Rejections of malformed or oversized JSON bodies as our JSON error.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(rejection.body_text())
        } else {
            ApiError::invalid(rejection.body_text())
        }
    }
}

pub fn router(state: AppState, max_json_bytes: usize) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/metrics", get(metrics::endpoint))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::extract::DefaultBodyLimit::max(max_json_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if !args.no_auth {
        bail!("authentication (users and API keys) is not implemented yet: pass --no-auth on a loopback address");
    }
    if !args.bind.ip().is_loopback() {
        bail!(
            "--no-auth is allowed only on a loopback address, not {}",
            args.bind
        );
    }
    let mut models = BTreeMap::new();
    for spec in &args.models {
        let model_args = ModelArgs {
            model: spec.dir.clone(),
            adapter: spec.adapter.clone(),
            dtype: args.dtype,
        };
        let loaded = model_args
            .load()
            .with_context(|| format!("registering model {}", spec.name))?;
        models.insert(
            spec.name.clone(),
            Arc::new(Served {
                loaded,
                turn: Mutex::new(()),
            }),
        );
    }
    let state = AppState {
        models: Arc::new(models),
        metrics: Arc::default(),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("binding {}", args.bind))?;
        let address = listener.local_addr()?;
        println!("glmtune serve: listening on http://{address}");
        use std::io::Write;
        std::io::stdout().flush()?;
        axum::serve(listener, router(state, args.max_json_bytes))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving")
    })
}

/// Ctrl-C or SIGTERM: stop accepting connections and let requests in flight finish.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    eprintln!("glmtune serve: shutting down");
}
