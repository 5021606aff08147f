//! Model names to loaded weights. Base models are loaded once, on first use, and shared by every
//! adapter served over them; a fine-tuned model `ft:BASE:RUN` is the base plus that run's prefix.
//! Prefixes are kept for the most recently used adapters only (`--adapter-cache`): a server that
//! trains all day makes new ones without end, and ChatGLM-6B's at `pre_seq_len` 128 is 117 MB.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use candle_core::{DType, Device};
use glmtune_engine::generation::Batcher;
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::tokenizer::ChatGlmTokenizer;
use glmtune_shared::api::RunState;

use crate::db::runs::run_of_fine_tuned;
use crate::serve::error::ApiError;
use crate::serve::gpus::Gpus;
use crate::serve::state::AppState;

/// A base model in memory. On the CPU its generations are decoded together by `batcher`
/// (continuous batching: concurrent chats share each step's read of the weights); on a GPU `turn`
/// makes them take turns.
pub struct Base {
    pub model: Arc<ChatGlmModel>,
    pub tokenizer: ChatGlmTokenizer,
    pub batcher: Option<Batcher>,
    pub turn: Mutex<()>,
}

/// What answers a chat: a base model and, for an expert, its prefix.
#[derive(Clone)]
pub struct Served {
    pub base: Arc<Base>,
    pub prefix: Option<Arc<PrefixEncoder>>,
    /// The text the adapter was trained with before every prompt (its run's `source_prefix`).
    pub source_prefix: Option<String>,
}

pub struct Registry {
    bases: Mutex<HashMap<PathBuf, Arc<Base>>>,
    prefixes: Mutex<RecentlyUsed<Arc<PrefixEncoder>>>,
    /// Where served weights are loaded when no GPU of `--gpus` is free (`glmtune serve --device`).
    device: Device,
    gpus: Arc<Gpus>,
}

/// At most `capacity` values by key, the least recently used dropped first.
struct RecentlyUsed<T> {
    capacity: usize,
    /// Oldest first.
    entries: Vec<(PathBuf, T)>,
}

impl<T: Clone> RecentlyUsed<T> {
    fn get(&mut self, key: &PathBuf) -> Option<T> {
        let at = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(at);
        let value = entry.1.clone();
        self.entries.push(entry);
        Some(value)
    }

    fn insert(&mut self, key: PathBuf, value: T) {
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push((key, value));
        let excess = self.entries.len().saturating_sub(self.capacity);
        self.entries.drain(..excess);
    }
}

/// Where a model name's files are.
pub struct Resolved {
    pub base_dir: PathBuf,
    pub adapter_dir: Option<PathBuf>,
    pub source_prefix: Option<String>,
}

impl Registry {
    /// A registry that keeps the prefixes of the `adapters` most recently used adapters and
    /// loads weights onto a GPU of `gpus` that no run holds, else onto `device`.
    pub fn new(adapters: usize, device: Device, gpus: Arc<Gpus>) -> Self {
        Registry {
            bases: Mutex::default(),
            prefixes: Mutex::new(RecentlyUsed {
                capacity: adapters.max(1),
                entries: Vec::new(),
            }),
            device,
            gpus,
        }
    }

    /// How many adapters' prefixes are in memory.
    pub fn cached_adapters(&self) -> usize {
        self.prefixes.lock().entries.len()
    }

    fn base(&self, dir: &PathBuf, dtype: DType) -> Result<Arc<Base>, ApiError> {
        if let Some(base) = self.bases.lock().get(dir) {
            return Ok(base.clone());
        }
        let device = self.gpus.for_chat().unwrap_or_else(|| self.device.clone());
        let model = ChatGlmModel::load(dir, dtype, &device)
            .map_err(|e| ApiError::internal(format!("loading {}: {e}", dir.display())))?;
        let tokenizer = ChatGlmTokenizer::from_dir(dir)
            .map_err(|e| ApiError::internal(format!("loading {}: {e}", dir.display())))?;
        let model = Arc::new(model);
        let batcher = match model.device() {
            candle_core::Device::Cpu => Some(
                Batcher::new(model.clone())
                    .map_err(|e| ApiError::internal(format!("starting {}: {e}", dir.display())))?,
            ),
            _ => None,
        };
        let base = Arc::new(Base {
            model,
            tokenizer,
            batcher,
            turn: Mutex::new(()),
        });
        Ok(self.bases.lock().entry(dir.clone()).or_insert(base).clone())
    }

    /// Loads what `resolved` names (blocking: call off the async threads).
    pub fn load(&self, resolved: &Resolved, dtype: DType) -> Result<Served, ApiError> {
        let base = self.base(&resolved.base_dir, dtype)?;
        let prefix = match &resolved.adapter_dir {
            None => None,
            Some(dir) => {
                let cached = self.prefixes.lock().get(dir);
                match cached {
                    Some(prefix) => Some(prefix),
                    None => {
                        let prefix = PrefixEncoder::load_adapter(
                            dir,
                            base.model.config(),
                            base.model.device(),
                        )
                        .map_err(|e| {
                            ApiError::internal(format!("loading adapter {}: {e}", dir.display()))
                        })?;
                        let prefix = Arc::new(prefix);
                        self.prefixes.lock().insert(dir.clone(), prefix.clone());
                        Some(prefix)
                    }
                }
            }
        };
        Ok(Served {
            base,
            prefix,
            source_prefix: resolved.source_prefix.clone(),
        })
    }
}

/// Finds the files of a model name: a registered model, a succeeded run's `ft:` name, or a
/// sweep's (`ft:MODEL:SWEEP`: the trial it promoted).
pub async fn resolve(state: &AppState, name: &str) -> Result<Resolved, ApiError> {
    if let Some(run_id) = run_of_fine_tuned(name) {
        // A sweep's chat model answers with the trial it promoted.
        let (run_id, via_sweep) = match state.db.sweep(run_id).await? {
            Some(sweep) if sweep.chat_model == name => {
                let promoted = sweep.promoted_run.ok_or_else(|| {
                    ApiError::conflict(format!(
                        "model {name:?} is not ready: sweep {} has promoted no trial yet",
                        sweep.id
                    ))
                })?;
                (promoted, true)
            }
            _ => (run_id.to_owned(), false),
        };
        let run = state
            .db
            .run(&run_id)
            .await?
            .filter(|run| {
                via_sweep || crate::db::runs::fine_tuned_name(&run.model, &run.id) == name
            })
            .ok_or_else(|| ApiError::not_found(format!("model {name:?} does not exist")))?;
        if run.state != RunState::Succeeded {
            return Err(ApiError::conflict(format!(
                "model {name:?} is not ready: its fine-tuning job is {}",
                run.state.as_str()
            )));
        }
        let base =
            state.db.model(&run.model).await?.ok_or_else(|| {
                ApiError::not_found(format!("base model {:?} is gone", run.model))
            })?;
        return Ok(Resolved {
            base_dir: PathBuf::from(base.path),
            adapter_dir: Some(state.run_dir(&run.id)),
            source_prefix: run.settings.source_prefix.clone(),
        });
    }
    let model = state
        .db
        .model(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("model {name:?} is not registered")))?;
    Ok(Resolved {
        base_dir: PathBuf::from(model.path),
        adapter_dir: model.adapter.map(PathBuf::from),
        source_prefix: None,
    })
}

/// Resolves and loads `name` for generation.
pub async fn serve(state: &AppState, name: &str) -> Result<Served, ApiError> {
    let resolved = resolve(state, name).await?;
    let registry = state.registry.clone();
    let dtype = state.settings.dtype;
    tokio::task::spawn_blocking(move || registry.load(&resolved, dtype))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut cache = RecentlyUsed {
            capacity: 2,
            entries: Vec::new(),
        };
        let key = |k: &str| PathBuf::from(k);
        cache.insert(key("a"), 1);
        cache.insert(key("b"), 2);
        assert_eq!(cache.get(&key("a")), Some(1));
        cache.insert(key("c"), 3);
        assert_eq!(cache.get(&key("b")), None, "b was the least recently used");
        assert_eq!(cache.get(&key("a")), Some(1));
        assert_eq!(cache.get(&key("c")), Some(3));
        cache.insert(key("c"), 4);
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(cache.get(&key("c")), Some(4));
    }
}
