//! The messages between the page and the in-browser model's worker, as JSON text.

use serde::{Deserialize, Serialize};

/// What the page asks of the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToWorker {
    /// Fetch (or take from the cache) a quantized model and, optionally, a run's adapter.
    Load {
        model: String,
        adapter_run: Option<String>,
    },
    /// Answer `query` after `history` (query, response) turns.
    Ask {
        query: String,
        history: Vec<(String, String)>,
        max_tokens: usize,
    },
}

/// What the worker tells the page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FromWorker {
    /// The worker's module is up and listening.
    Ready,
    /// Bytes of the model at hand so far, of all.
    Progress {
        done: f64,
        total: f64,
    },
    Status {
        text: String,
    },
    Loaded {
        /// "WebGPU (…)" or "CPU (wasm …)".
        backend: String,
        /// Whether no byte of the weights came over the network.
        from_cache: bool,
        /// Pieces of the weights downloaded now, and found in the cache.
        downloaded: usize,
        cached: usize,
    },
    /// The next piece of the answer, while it grows (the page appends it: sending the whole
    /// answer again on every token would cost more the longer it gets).
    Delta {
        text: String,
    },
    Answer {
        text: String,
    },
    Failed {
        message: String,
    },
}

impl ToWorker {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl FromWorker {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
