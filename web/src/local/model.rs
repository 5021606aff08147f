//! The model the worker runs: a quantized base from `model.gguf` (plus, optionally, a run's
//! adapter), streamed tensor by tensor to WebGPU, or whole into candle on the CPU when the browser
//! has no WebGPU; and the answers it gives.

use glmtune_engine::generation::{answer, chat_prompt_ids, GenerationOptions, Turn};
use glmtune_engine::gpu::{Gpu, GpuModel, GpuModelBuilder};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::quant::{GgufIndex, QUANTIZED_FILE};
use glmtune_engine::tokenizer::{self, ChatGlmTokenizer};
use glmtune_engine::ChatGlmConfig;
use glmtune_shared::api::{List, ModelFile};
use std::ops::ControlFlow;

use super::pieces::{open_cache, versioned_key, whole_file, PiecedFile};
use super::protocol::FromWorker;
use crate::api::{self, Failure};

/// Where the forward runs.
enum Engine {
    Gpu(Box<GpuModel>),
    Cpu(Box<ChatGlmModel>),
}

pub struct LocalModel {
    tokenizer: ChatGlmTokenizer,
    engine: Engine,
    prefix: Option<PrefixEncoder>,
}

fn engine_failure(e: glmtune_engine::EngineError) -> Failure {
    Failure::local(e.to_string())
}

/// Reads the index at the head of `model.gguf`, asking for more bytes until the header is whole.
async fn read_index(file: &mut PiecedFile) -> Result<GgufIndex, Failure> {
    let mut head = 64 << 10;
    loop {
        let len = head.min(file.total);
        let bytes = file.read(0, len).await?;
        if let Some(index) =
            GgufIndex::parse(QUANTIZED_FILE, &bytes, file.total).map_err(engine_failure)?
        {
            return Ok(index);
        }
        head *= 4;
    }
}

/// Loads `model` (and `adapter_run`'s adapter), telling the page how it goes through `tell`.
pub async fn load(
    model: &str,
    adapter_run: Option<&str>,
    tell: impl Fn(FromWorker) + Clone + 'static,
) -> Result<LocalModel, Failure> {
    let status = |text: String| tell(FromWorker::Status { text });
    let base = format!("/api/v1/models/{}/files", api::encode(model));
    let files: List<ModelFile> = api::get(&base).await?;
    let find = |name: &str| files.data.iter().find(|f| f.name == name);
    let Some(weights) = find(QUANTIZED_FILE) else {
        return Err(Failure::local(format!(
            "{model} has no {QUANTIZED_FILE}: quantize it first (glmtune quantize --model DIR --bits 4 --out DIR) and register that folder"
        )));
    };
    let cache = open_cache().await;
    // Small files by their URL and version, so a replaced file is fetched again.
    let small = |name: &str| {
        let (cache, base) = (cache.clone(), base.clone());
        let version = find(name).map(|f| (f.bytes, f.modified));
        let name = name.to_owned();
        async move {
            let url = format!("{base}/{name}");
            let (bytes, modified) = version.unwrap_or_default();
            let key = versioned_key(&url, bytes, modified);
            whole_file(cache.as_ref(), &url, &key).await
        }
    };
    let config_bytes = small("config.json").await?;
    let config = ChatGlmConfig::from_json_str(
        &String::from_utf8_lossy(&config_bytes),
        std::path::Path::new("config.json"),
    )
    .map_err(engine_failure)?;
    // ChatGLM-6B's vocabulary, else ChatGLM2/3's (with the Python tokenizer that tells them apart).
    let vocabulary = match find(tokenizer::MODEL_FILE) {
        Some(_) => small(tokenizer::MODEL_FILE).await?,
        None => small(tokenizer::GLM2_MODEL_FILE).await?,
    };
    let optional_text = |name: &'static str| {
        let present = find(name).is_some();
        let fetch = small(name);
        async move {
            if !present {
                return Ok(None);
            }
            fetch
                .await
                .map(|bytes| Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
    };
    let tokenizer_config = optional_text(tokenizer::CONFIG_FILE).await?;
    let python = optional_text(tokenizer::PYTHON_TOKENIZER_FILE).await?;
    let tokenizer =
        ChatGlmTokenizer::from_files(&vocabulary, tokenizer_config.as_deref(), python.as_deref())
            .map_err(|e| Failure::local(e.to_string()))?;
    // ChatGLM2 and ChatGLM3 share a config but stretch the rotary embedding differently.
    let config = config.for_family(tokenizer.family());

    let progress = tell.clone();
    let mut file = PiecedFile::new(
        cache.clone(),
        &format!("{base}/{QUANTIZED_FILE}"),
        weights.bytes,
        weights.modified,
        move |done, total| progress(FromWorker::Progress { done, total }),
    );
    status(format!(
        "Fetching {QUANTIZED_FILE} ({:.1} MB, {} pieces)…",
        weights.bytes as f64 / 1e6,
        file.pieces()
    ));
    let (engine, backend) = match Gpu::new().await {
        Ok(gpu) => {
            let backend = format!("WebGPU ({})", gpu.description);
            let index = read_index(&mut file).await?;
            let mut builder = GpuModelBuilder::new(gpu, config.clone());
            let count = index.tensors.len();
            for (i, entry) in index.tensors.iter().enumerate() {
                let bytes = file.read(entry.start, entry.len).await?;
                let tensor = entry.tensor(&bytes).map_err(engine_failure)?;
                builder.add(&entry.name, tensor).map_err(engine_failure)?;
                if i % 8 == 0 {
                    status(format!(
                        "Uploading weights to the GPU: tensor {} of {count}",
                        i + 1
                    ));
                }
            }
            // Pieces past the last tensor (padding) complete the cached copy.
            file.fetch_all().await?;
            let model = builder.finish().map_err(engine_failure)?;
            (Engine::Gpu(Box::new(model)), backend)
        }
        Err(_) => {
            // candle on the CPU needs the file whole in memory.
            let bytes = file.read(0, file.total).await?;
            let model = ChatGlmModel::from_quantized_bytes(
                config.clone(),
                QUANTIZED_FILE,
                bytes,
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )
            .map_err(engine_failure)?;
            (
                Engine::Cpu(Box::new(model)),
                "CPU (wasm, simd128: this browser offers no WebGPU adapter)".to_owned(),
            )
        }
    };
    file.forget_other_versions().await;

    let prefix = match adapter_run {
        Some(run) => {
            status(format!("Fetching run {run}'s adapter…"));
            let url = format!("/api/v1/runs/{}/adapter", api::encode(run));
            // A succeeded run's adapter never changes: its URL is its key.
            let config_url = format!("{url}/config.json");
            let weights_url = format!("{url}/adapter.safetensors");
            let adapter_config = whole_file(cache.as_ref(), &config_url, &config_url).await?;
            let adapter_weights = whole_file(cache.as_ref(), &weights_url, &weights_url).await?;
            let prefix = PrefixEncoder::from_bytes(
                &format!("run {run}"),
                &String::from_utf8_lossy(&adapter_config),
                adapter_weights,
                &config,
                &candle_core::Device::Cpu,
            )
            .map_err(engine_failure)?;
            Some(prefix)
        }
        None => None,
    };
    tell(FromWorker::Loaded {
        backend,
        from_cache: file.downloaded == 0,
        downloaded: file.downloaded,
        cached: file.from_cache,
    });
    Ok(LocalModel {
        tokenizer,
        engine,
        prefix,
    })
}

impl LocalModel {
    /// Answers `query` after `history`, calling `on_text` with each new piece of the answer.
    pub async fn answer(
        &self,
        query: &str,
        history: &[(String, String)],
        max_tokens: usize,
        on_text: impl Fn(&str),
    ) -> Result<String, Failure> {
        let turns: Vec<Turn> = history
            .iter()
            .map(|(query, response)| Turn {
                query: query.clone(),
                response: response.clone(),
            })
            .collect();
        let prompt = chat_prompt_ids(&self.tokenizer, None, &turns, query);
        let options = GenerationOptions {
            max_new_tokens: Some(max_tokens),
            ..GenerationOptions::default()
        };
        let on_text = |text: &str| {
            on_text(text);
            ControlFlow::Continue(())
        };
        let (tokenizer, prefix) = (&self.tokenizer, self.prefix.as_ref());
        let answer = match &self.engine {
            Engine::Gpu(gpu) => {
                answer(
                    gpu.as_ref(),
                    tokenizer,
                    prefix,
                    &prompt,
                    &options,
                    &[],
                    on_text,
                )
                .await
            }
            Engine::Cpu(model) => {
                answer(
                    model.as_ref(),
                    tokenizer,
                    prefix,
                    &prompt,
                    &options,
                    &[],
                    on_text,
                )
                .await
            }
        }
        .map_err(engine_failure)?;
        Ok(answer.text)
    }
}
