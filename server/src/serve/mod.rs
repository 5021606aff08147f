//! `glmtune serve`: the HTTP server. The dashboard API under `/api/v1` (users and keys, models,
//! datasets, runs with live progress, chats), the OpenAI-compatible API under `/v1`, `/healthz`
//! and `/metrics`; state in SQLite (default) or PostgreSQL; training runs as supervised child
//! processes.

mod answer;
mod api;
mod args;
mod auth;
mod blobs;
mod error;
mod events;
mod gpus;
mod listen;
mod log_events;
mod metrics;
mod openai;
mod openapi;
mod origin;
mod registry;
mod routes;
mod secrets;
mod state;
pub(crate) mod supervisor;
mod sweeps;
mod teach_jobs;
mod web;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use glmtune_shared::api::Role;

use crate::db::Db;
pub use args::{flags, ServeArgs};
pub use error::{ApiError, ServeError};
pub use state::{run_dir, run_layout, AppState, Settings};

async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.settings.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout(format!(
            "no answer within {} s (--request-timeout-s)",
            state.settings.request_timeout.as_secs_f64()
        ))
        .into_response(),
    }
}

pub fn router(state: AppState, max_json_bytes: usize) -> Router {
    Router::new()
        .merge(routes::router(
            routes::all(state.settings.max_upload_bytes),
            &state,
        ))
        .method_not_allowed_fallback(web::method_not_allowed)
        .fallback(web::fallback)
        .layer(axum::extract::DefaultBodyLimit::max(max_json_bytes))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            time_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        // Outside authentication and metrics: a request for another host is nobody's business.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::check,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        // Outermost: every request and its answer, refused ones included, at debug level.
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// What every response tells the browser: scripts, workers, wasm and connections only from this
/// server (`wasm-unsafe-eval` compiles the app's own wasm; styles may be inline, as the charts'
/// SVG and the components set them), never inside another site's frame, no MIME sniffing, no
/// referrer, and a browsing context of its own.
const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; \
         connect-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
];

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, axum::http::HeaderValue::from_static(value));
    }
    response
}

/// Registers a checkpoint folder under `name`, after checking its config reads.
pub async fn register_model(
    db: &Db,
    name: &str,
    dir: &Path,
    adapter: Option<&Path>,
) -> Result<(), ApiError> {
    let config = glmtune_engine::ChatGlmConfig::from_file(&dir.join("config.json"))
        .map_err(|e| ApiError::invalid(format!("model {name}: {e}")))?;
    let vocabulary = glmtune_engine::tokenizer::ChatGlmTokenizer::model_file(dir);
    if !dir.join(vocabulary).is_file() {
        return Err(ApiError::invalid(format!(
            "model {name}: {} has no {vocabulary} (ChatGLM-6B's ice_text.model or ChatGLM2/3's tokenizer.model)",
            dir.display()
        )));
    }
    let family = glmtune_engine::tokenizer::ChatGlmTokenizer::from_dir(dir)
        .map_err(|e| ApiError::invalid(format!("model {name}: {e}")))?
        .family();
    if let Some(adapter) = adapter {
        if !adapter.is_dir() {
            return Err(ApiError::invalid(format!(
                "model {name}: adapter folder {} does not exist",
                adapter.display()
            )));
        }
    }
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let summary = crate::db::models::Summary {
        family: family.name().into(),
        hidden_size: config.hidden_size,
        num_layers: config.num_layers,
        num_attention_heads: config.num_attention_heads,
        vocab_size: config.vocab_size,
    };
    db.upsert_model(
        name,
        &absolute(dir).to_string_lossy(),
        adapter
            .map(|a| absolute(a).to_string_lossy().into_owned())
            .as_deref(),
        summary,
    )
    .await?;
    Ok(())
}

/// A new API key's secret.
pub fn new_api_secret() -> String {
    auth::new_secret("glm-")
}

/// Opens the database a server with these flags uses (also for `glmtune token`).
pub async fn open_database(data_dir: &Path, url: Option<&str>) -> Result<Db, ServeError> {
    std::fs::create_dir_all(data_dir).map_err(ServeError::io(format!(
        "creating the data folder {}",
        data_dir.display()
    )))?;
    let url = url.map_or_else(|| crate::db::default_url(data_dir), str::to_owned);
    Ok(Db::open(&url).await?)
}

pub fn run(args: ServeArgs) -> Result<(), ServeError> {
    if args.no_auth && !args.bind.ip().is_loopback() {
        return Err(ServeError::Refused(format!(
            "--no-auth is allowed only on a loopback address, not {}",
            args.bind
        )));
    }
    let runtime =
        tokio::runtime::Runtime::new().map_err(ServeError::io("starting the async runtime"))?;
    runtime.block_on(serve(args))
}

/// The state a server starts with: the database opened and its models registered, the first
/// admin made or a setup token drawn, the supervisor started.
struct Prepared {
    state: AppState,
    setup_token: Option<String>,
    /// Heard when the teaching jobs' thread has stopped.
    teaching_stopped: tokio::sync::oneshot::Receiver<()>,
}

/// `bound` is the address the listener got (its real port where `--bind` asked for port 0).
async fn prepare(args: &ServeArgs, bound: SocketAddr) -> Result<Prepared, ServeError> {
    // First, so that a GPU that cannot be opened stops the start before anything is written.
    let device = args.device.device()?;
    let gpus = match &args.gpus {
        Some(selection) => selection.open().map_err(ServeError::Gpus)?,
        None => Vec::new(),
    };
    let gpus = Arc::new(gpus::Gpus::new(gpus));
    let db = open_database(&args.data_dir, args.database_url.as_deref()).await?;
    for spec in &args.models {
        register_model(&db, &spec.name, &spec.dir, spec.adapter.as_deref())
            .await
            .map_err(|e| ServeError::Refused(format!("--model {}: {e}", spec.name)))?;
    }
    // Made now, so that the first sign-in of a name that does not exist costs no more than the
    // ones after it.
    auth::dummy_hash();
    let mut setup_token = None;
    if db.count_users().await? == 0 {
        if let Some(password) = &args.admin_password {
            let hash = auth::hash_password(password).map_err(ServeError::Setup)?;
            db.create_user("admin", &hash, Role::Admin).await?;
            tracing::info!("created the admin user `admin`");
        } else if !args.no_auth {
            setup_token = Some(auth::new_secret("setup-"));
        }
    }
    let data_dir = std::path::absolute(&args.data_dir).unwrap_or(args.data_dir.clone());
    let settings = Arc::new(Settings {
        no_auth: args.no_auth,
        dtype: args.dtype.into(),
        data_dir: data_dir.clone(),
        max_upload_bytes: args.max_upload_bytes,
        limits: answer::Limits {
            max_new_tokens: args.max_new_tokens.max(1),
            max_prompt_tokens: args.max_prompt_tokens.max(1),
        },
        request_timeout: Duration::from_secs_f64(args.request_timeout_s),
        max_concurrent_runs: args.max_concurrent_runs,
        lease: Duration::from_secs_f64(if args.lease_seconds.is_finite() {
            args.lease_seconds.clamp(1.0, 86_400.0)
        } else {
            60.0
        }),
        stall: Duration::from_secs(args.stall_seconds.max(1)),
        web_dir: std::path::absolute(&args.web_dir).unwrap_or(args.web_dir.clone()),
        session_seconds: args.session_seconds.max(1),
        hosts: origin::HostPolicy::new(bound, &args.allowed_hosts),
        behind_proxy: args.behind_proxy,
        run_limits: api::runs::RunLimits {
            pre_seq_len: args.run_max_pre_seq_len.max(1),
            batch: args.run_max_batch.max(1),
            length: args.run_max_length.clamp(3, 8192),
            // What `glmtune train --max-steps` accepts at most.
            steps: args.run_max_steps.clamp(1, 1_000_000_000),
            epochs: if args.run_max_epochs.is_finite() && args.run_max_epochs > 0.0 {
                args.run_max_epochs
            } else {
                1.0
            },
        },
    });
    let metrics: Arc<metrics::Metrics> = Arc::default();
    let blobs = blobs::Blobs::new(&data_dir)
        .map_err(ServeError::io(format!("preparing {}", data_dir.display())))?;
    let supervisor = supervisor::start(
        db.clone(),
        settings.clone(),
        metrics.clone(),
        blobs.clone(),
        gpus.clone(),
    )
    .await?;
    if let Some(url) = args.database_url.as_ref().filter(|_| db.postgres) {
        listen::start(url.clone(), supervisor.clone());
    }
    let state = AppState {
        db,
        blobs,
        settings,
        registry: Arc::new(registry::Registry::new(args.adapter_cache, device, gpus)),
        metrics,
        rate_limiter: Arc::new(auth::RateLimiter::new(args.rate_limit)),
        sign_in_limiter: Arc::new(auth::RateLimiter::new(args.sign_in_rate_limit)),
        setup_token: Arc::new(Mutex::new(setup_token.clone())),
        supervisor,
    };
    sweeps::start(state.clone());
    let teaching_stopped = teach_jobs::start(state.clone());
    Ok(Prepared {
        state,
        setup_token,
        teaching_stopped,
    })
}

/// The router of a server started with `args`, for callers in this process (no socket, no
/// signals): the fuzz target drives it with hostile requests.
pub async fn app(args: &ServeArgs) -> Result<Router, ServeError> {
    Ok(router(
        prepare(args, args.bind).await?.state,
        args.max_json_bytes,
    ))
}

async fn serve(args: ServeArgs) -> Result<(), ServeError> {
    // Bound first: the names the server answers to include the port it really got.
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(ServeError::io(format!("binding {}", args.bind)))?;
    let address = listener
        .local_addr()
        .map_err(ServeError::io("the bound address"))?;
    let Prepared {
        state,
        setup_token,
        teaching_stopped,
    } = prepare(&args, address).await?;
    let supervisor = state.supervisor.clone();
    let shutdown = shutdown_signal();
    // Not println!: a reader that went away must not take the server down.
    use std::io::Write;
    // One write: a reader of the first line has the setup token's line with it, however loaded
    // the machine.
    let mut banner = format!("glmtune serve: listening on http://{address}\n");
    if let Some(token) = setup_token {
        banner.push_str(&format!(
            "glmtune serve: no users yet; create the first admin with POST /api/v1/auth/setup and the one-time token {token} (or make an API key: glmtune token create --role admin --name NAME)\n"
        ));
    }
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(banner.as_bytes());
    let _ = stdout.flush();
    let stopping = supervisor.clone();
    let app =
        router(state, args.max_json_bytes).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Event streams end now, so that open dashboards do not hold the shutdown.
            stopping.begin_stopping();
        })
        .await
        .map_err(ServeError::io("serving"))?;
    // Running jobs checkpoint, then stop; the next start resumes them.
    supervisor.shutdown().await;
    // The teaching thread sees `stopping` within its poll and stops its child; the runtime must
    // outlive its last `block_on`.
    let _ = teaching_stopped.await;
    Ok(())
}

/// Ctrl-C or SIGTERM: stop accepting connections and let requests in flight finish. The handlers
/// are installed when this is called, not when the future is first polled: a signal that comes
/// between the banner (which tells a supervisor the server is up) and the serve loop's first poll
/// would otherwise kill the process with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => {}
                _ = wait(terminate) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}
