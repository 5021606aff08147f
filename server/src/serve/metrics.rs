//! `/metrics` in the Prometheus text format: request latency histograms per route and status, and
//! generation throughput.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use glmtune_shared::api::RunState;

use crate::serve::error::ApiError;
use crate::serve::state::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Counters {
    /// (route, status) → latency histogram.
    requests: BTreeMap<(String, u16), Histogram>,
    generated_tokens: u64,
    generation_seconds: f64,
    active_runs: usize,
    training_tokens_per_second: f64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        let mut counters = self.counters.lock();
        f(&mut counters)
    }

    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        self.with(|c| {
            let histogram = c.requests.entry((route.to_owned(), status)).or_default();
            for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter_mut()) {
                if seconds <= *bound {
                    *count += 1;
                }
            }
            histogram.count += 1;
            histogram.sum += seconds;
        });
    }

    pub fn observe_generation(&self, tokens: usize, elapsed: Duration) {
        self.with(|c| {
            c.generated_tokens += tokens as u64;
            c.generation_seconds += elapsed.as_secs_f64();
        });
    }

    pub fn set_active_runs(&self, runs: usize) {
        self.with(|c| c.active_runs = runs);
    }

    pub fn set_training_rate(&self, tokens_per_second: f64) {
        self.with(|c| c.training_tokens_per_second = tokens_per_second);
    }

    /// The exposition text; `runs` counts runs by state (queued runs are the queue depth).
    pub fn render(&self, runs: &[(RunState, i64)]) -> String {
        self.with(|c| {
            let mut out = String::new();
            out.push_str("# HELP glmtune_http_request_duration_seconds Request latency by route and status.\n");
            out.push_str("# TYPE glmtune_http_request_duration_seconds histogram\n");
            for ((route, status), h) in &c.requests {
                let labels = format!("route=\"{route}\",status=\"{status}\"");
                for (bound, count) in BUCKETS.iter().zip(h.counts) {
                    let _ = writeln!(out, "glmtune_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
                }
                let _ = writeln!(out, "glmtune_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "glmtune_http_request_duration_seconds_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(out, "glmtune_http_request_duration_seconds_count{{{labels}}} {}", h.count);
            }
            let rate = if c.generation_seconds > 0.0 { c.generated_tokens as f64 / c.generation_seconds } else { 0.0 };
            metric(&mut out, "glmtune_generated_tokens_total", "counter", "Tokens generated for chat completions.", c.generated_tokens);
            metric(&mut out, "glmtune_generation_seconds_total", "counter", "Time spent generating (queueing excluded).", c.generation_seconds);
            metric(&mut out, "glmtune_generation_tokens_per_second", "gauge", "Generated tokens per second of generation time.", rate);
            out.push_str("# HELP glmtune_runs Training runs by state.\n");
            out.push_str("# TYPE glmtune_runs gauge\n");
            for (state, count) in runs {
                let _ = writeln!(out, "glmtune_runs{{state=\"{}\"}} {count}", state.as_str());
            }
            let queued = runs.iter().find(|(s, _)| *s == RunState::Queued).map_or(0, |r| r.1);
            metric(&mut out, "glmtune_queue_depth", "gauge", "Runs waiting for a slot.", queued);
            metric(&mut out, "glmtune_active_runs", "gauge", "Runs training now.", c.active_runs);
            metric(&mut out, "glmtune_training_tokens_per_second", "gauge", "Training throughput of the latest logged step.", c.training_tokens_per_second);
            out
        })
    }
}

/// One unlabelled metric: its HELP and TYPE lines and its value.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Middleware timing every request under its route pattern (never the raw path, which would let
/// clients create unbounded label sets).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .observe_request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// Prometheus metrics
#[utoipa::path(
    get,
    path = "/metrics",
    responses((status = 200, body = String, description = "The Prometheus text format"))
)]
pub async fn endpoint(State(state): State<AppState>) -> Result<String, ApiError> {
    let runs = state.db.count_runs_by_state().await?;
    let mut text = state.metrics.render(&runs);
    metric(
        &mut text,
        "glmtune_cached_adapters",
        "gauge",
        "Adapters whose prefixes are in memory (at most --adapter-cache).",
        state.registry.cached_adapters(),
    );
    Ok(text)
}
