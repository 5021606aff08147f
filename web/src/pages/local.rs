//! "In this browser": a quantized model (a folder holding `model.gguf`, from `glmtune quantize`)
//! downloaded once with progress into the browser's Cache API, then answering right here — on
//! WebGPU when the browser has it, on the CPU (candle in wasm) when not — with no server involved
//! after the download. A reload loads from the cache instead of the network.

use std::rc::Rc;

use glmtune_engine::generation::{
    build_prompt, generate, process_response, Flow, GenerationOptions, TextStream, Turn,
};
use glmtune_engine::gpu::{Gpu, GpuModel};
use glmtune_engine::model::ChatGlmModel;
use glmtune_engine::quant::QUANTIZED_FILE;
use glmtune_engine::tokenizer::ChatGlmTokenizer;
use glmtune_engine::ChatGlmConfig;
use glmtune_shared::api::{List, ModelFile, ModelInfo};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::api::{self, Failure};
use crate::pages::{model_options, ErrorNote};

const CACHE: &str = "glmtune-models";

/// Where the forward runs.
enum Engine {
    Gpu(Box<GpuModel>),
    Cpu(Box<ChatGlmModel>),
}

struct Local {
    tokenizer: ChatGlmTokenizer,
    engine: Engine,
    /// "WebGPU (…)" or "CPU (wasm)".
    backend: String,
    /// Whether the weights came from this browser's cache rather than the network.
    from_cache: bool,
}

/// The browser's cache of model files, when it has one (secure contexts only).
async fn cache() -> Option<web_sys::Cache> {
    let caches = web_sys::window()?.caches().ok()?;
    JsFuture::from(caches.open(CACHE))
        .await
        .ok()?
        .dyn_into()
        .ok()
}

/// `path`'s bytes from the cache, or downloaded (with progress) and then cached. Returns whether
/// they came from the cache.
async fn fetch_cached(
    path: &str,
    on_progress: impl Fn(f64, f64) + 'static,
) -> Result<(Vec<u8>, bool), Failure> {
    let cache = cache().await;
    if let Some(cache) = &cache {
        if let Ok(found) = JsFuture::from(cache.match_with_str(path)).await {
            if let Ok(response) = found.dyn_into::<web_sys::Response>() {
                let buffer = JsFuture::from(response.array_buffer()?).await?;
                return Ok((js_sys::Uint8Array::new(&buffer).to_vec(), true));
            }
        }
    }
    let bytes = api::download(path, on_progress).await?;
    if let Some(cache) = &cache {
        let mut copy = bytes.clone();
        let response = web_sys::Response::new_with_opt_u8_array(Some(&mut copy))?;
        // A full cache only costs the next visit a download.
        let _ = JsFuture::from(cache.put_with_str(path, &response)).await;
    }
    Ok((bytes, false))
}

async fn prepare(
    model: &str,
    progress: RwSignal<Option<(f64, f64)>>,
    status: RwSignal<String>,
) -> Result<Local, Failure> {
    let base = format!("/api/v1/models/{}/files", api::encode(model));
    let files: List<ModelFile> = api::get(&base).await?;
    let Some(weights) = files.data.iter().find(|f| f.name == QUANTIZED_FILE) else {
        return Err(Failure::local(format!(
            "{model} has no {QUANTIZED_FILE}: quantize it first (glmtune quantize --model DIR --bits 4 --out DIR) and register that folder"
        )));
    };
    let total = weights.bytes as f64;
    let (config_bytes, _) = fetch_cached(&format!("{base}/config.json"), |_, _| {}).await?;
    let (vocabulary, _) = fetch_cached(&format!("{base}/ice_text.model"), |_, _| {}).await?;
    let tokenizer_config = fetch_cached(&format!("{base}/tokenizer_config.json"), |_, _| {})
        .await
        .ok()
        .map(|(bytes, _)| String::from_utf8_lossy(&bytes).into_owned());
    status.set(format!(
        "Downloading {QUANTIZED_FILE} ({:.1} MB)…",
        total / 1e6
    ));
    let (gguf, cached) = fetch_cached(&format!("{base}/{QUANTIZED_FILE}"), move |done, all| {
        progress.set(Some((done, all)))
    })
    .await?;
    progress.set(Some((total, total)));
    status.set(if cached {
        format!("{QUANTIZED_FILE} loaded from this browser's cache; building the model…")
    } else {
        format!("Downloaded {QUANTIZED_FILE}; building the model…")
    });
    let local = |e: glmtune_engine::EngineError| Failure::local(e.to_string());
    let config = ChatGlmConfig::from_json_str(
        &String::from_utf8_lossy(&config_bytes),
        std::path::Path::new("config.json"),
    )
    .map_err(local)?;
    let tokenizer = ChatGlmTokenizer::from_bytes(&vocabulary, tokenizer_config.as_deref())
        .map_err(|e| Failure::local(e.to_string()))?;
    let device = candle_core::Device::Cpu;
    let model = ChatGlmModel::from_quantized_bytes(
        config,
        QUANTIZED_FILE,
        gguf,
        candle_core::DType::F32,
        &device,
    )
    .map_err(local)?;
    let (engine, backend) = match Gpu::new().await {
        Ok(gpu) => {
            let backend = format!("WebGPU ({})", gpu.description);
            (
                Engine::Gpu(Box::new(GpuModel::upload(gpu, &model).map_err(local)?)),
                backend,
            )
        }
        Err(e) => (
            Engine::Cpu(Box::new(model)),
            format!("CPU (wasm; no WebGPU here: {e})"),
        ),
    };
    Ok(Local {
        tokenizer,
        engine,
        backend,
        from_cache: cached,
    })
}

/// Answers `query` after `history`, calling `on_text` with the answer so far as it grows.
async fn answer(
    local: &Local,
    query: &str,
    history: &[Turn],
    max_tokens: usize,
    on_text: impl Fn(String),
) -> Result<String, Failure> {
    let prompt = local.tokenizer.encode(&build_prompt(query, history));
    let options = GenerationOptions {
        max_new_tokens: Some(max_tokens),
        ..GenerationOptions::default()
    };
    let eos = local.tokenizer.special_ids().eos;
    let mut new_ids = Vec::new();
    let mut stream = TextStream::new();
    let mut shown = String::new();
    let mut on_token = |id: u32| {
        if id != eos {
            new_ids.push(id);
            if let Some(chunk) = stream.next_chunk(&local.tokenizer.decode(&new_ids)) {
                shown.push_str(&chunk);
                on_text(shown.clone());
            }
        }
        Flow::Continue
    };
    let failed = |e: glmtune_engine::EngineError| Failure::local(e.to_string());
    let ids = match &local.engine {
        Engine::Gpu(gpu) => gpu
            .generate(None, &prompt, &options, &mut on_token)
            .await
            .map_err(failed)?,
        Engine::Cpu(model) => generate(model, None, &[prompt], &options, |_, id| on_token(id))
            .map_err(failed)?
            .remove(0),
    };
    let ids: Vec<u32> = ids.into_iter().filter(|&id| id != eos).collect();
    Ok(process_response(&local.tokenizer.decode(&ids)))
}

#[component]
pub fn InBrowser() -> impl IntoView {
    let models = LocalResource::new(|| api::get::<List<ModelInfo>>("/api/v1/models"));
    let model = RwSignal::new(String::new());
    let progress = RwSignal::new(None::<(f64, f64)>);
    let status = RwSignal::new(String::new());
    let error = RwSignal::new(None::<Failure>);
    // (backend, "cache" or "network").
    let ready = RwSignal::new(None::<(String, &'static str)>);
    let local = StoredValue::new_local(None::<Rc<Local>>);
    let turns = RwSignal::new(Vec::<(String, String)>::new());
    let partial = RwSignal::new(None::<String>);
    let question = RwSignal::new(String::new());
    let max_tokens = RwSignal::new("64".to_owned());

    let load = move |_| {
        let name = model.get_untracked();
        error.set(None);
        ready.set(None);
        leptos::task::spawn_local(async move {
            match prepare(&name, progress, status).await {
                Ok(prepared) => {
                    let source = if prepared.from_cache {
                        "cache"
                    } else {
                        "network"
                    };
                    ready.set(Some((prepared.backend.clone(), source)));
                    status.set(format!(
                        "{name} answers in this browser on {}.",
                        prepared.backend
                    ));
                    local.set_value(Some(Rc::new(prepared)));
                }
                Err(failure) => {
                    status.set(String::new());
                    error.set(Some(failure));
                }
            }
        });
    };
    let ask = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(prepared) = local.get_value() else {
            return;
        };
        let query = question.get_untracked();
        if query.trim().is_empty() || partial.get_untracked().is_some() {
            return;
        }
        question.set(String::new());
        let history: Vec<Turn> = turns
            .get_untracked()
            .into_iter()
            .map(|(query, response)| Turn { query, response })
            .collect();
        let limit = max_tokens.get_untracked().trim().parse().unwrap_or(64);
        partial.set(Some(String::new()));
        leptos::task::spawn_local(async move {
            let on_text = move |text: String| partial.set(Some(text));
            match answer(&prepared, &query, &history, limit, on_text).await {
                Ok(response) => turns.update(|t| t.push((query, response))),
                Err(failure) => error.set(Some(failure)),
            }
            partial.set(None);
        });
    };
    view! {
        <section>
            <h1>"In this browser"</h1>
            <div class="card">
                <p class="muted">"A quantized model is downloaded once (then kept in this browser's cache) and answers here, on WebGPU or on the CPU, without the server."</p>
                <div class="row">
                    <label>"Quantized model"
                        <select name="local_model" on:change=move |ev| model.set(event_target_value(&ev))>
                            <option value="">"choose…"</option>
                            {model_options(models)}
                        </select>
                    </label>
                    <button name="load" disabled=move || model.get().is_empty() on:click=load>"Download and load"</button>
                    {move || progress.get().map(|(done, total)| {
                        let percent = if total > 0.0 { 100.0 * done / total } else { 0.0 };
                        view! {
                            <progress max="100" value=percent></progress>
                            <span class="muted">{format!("{percent:.0}%")}</span>
                        }
                    })}
                </div>
                <p class="status" aria-live="polite">{move || status.get()}</p>
                {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
            </div>
            {move || ready.get().map(|(backend, source)| view! {
                <div class="conversation card local-chat" data-backend=backend data-source=source>
                    <ol class="messages">
                        {move || turns.get().into_iter().map(|(q, a)| view! {
                            <li class="message user">{q}</li>
                            <li class="message assistant">{a}</li>
                        }).collect_view()}
                        {move || partial.get().map(|s| view! { <li class="message assistant streaming">{s}</li> })}
                    </ol>
                    <form on:submit=ask class="ask">
                        <textarea name="local_question" bind:value=question placeholder="Ask…" rows="2"></textarea>
                        <label>"max tokens"<input name="local_max_tokens" bind:value=max_tokens size="4" /></label>
                        <button type="submit" disabled=move || partial.get().is_some()>"Send"</button>
                    </form>
                </div>
            })}
        </section>
    }
}
