//! Calls to the server's `/api/v1` from the browser: same-origin `fetch` through `gloo-net` (the
//! session cookie rides along; it works in a page and in a worker), the CSRF header on every
//! change, and the server's JSON errors turned into a message. Uploads go through
//! XMLHttpRequest, the one browser API that reports the bytes sent. Streamed answers are parsed as
//! Server-Sent Events by `eventsource-stream`.

use std::cell::RefCell;

use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use glmtune_shared::error::ErrorBody;
use gloo_net::http::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

thread_local! {
    static CSRF: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub fn set_csrf(token: Option<String>) {
    CSRF.with(|c| *c.borrow_mut() = token);
}

fn csrf() -> Option<String> {
    CSRF.with(|c| c.borrow().clone())
}

/// What went wrong, as the server said it (`{"error": {code, message, details}}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status: u16,
    pub message: String,
    pub details: serde_json::Value,
}

impl Failure {
    pub fn local(message: impl Into<String>) -> Self {
        Failure {
            status: 0,
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    /// A failure from an answer's status and body text (JSON when the server wrote it).
    fn of_answer(status: u16, text: &str) -> Self {
        match serde_json::from_str::<ErrorBody>(text) {
            Ok(body) => Failure {
                status,
                message: body.error.message,
                details: body.error.details,
            },
            // Not the server's own error (a proxy's page, say): shown as it came.
            Err(_) => Failure {
                status,
                message: format!("HTTP {status}: {text}"),
                details: serde_json::Value::Null,
            },
        }
    }
}

impl From<JsValue> for Failure {
    fn from(value: JsValue) -> Self {
        Failure::local(
            value.as_string().unwrap_or_else(|| {
                "the server cannot be reached; is glmtune serve running?".into()
            }),
        )
    }
}

impl From<gloo_net::Error> for Failure {
    fn from(error: gloo_net::Error) -> Self {
        match error {
            // fetch itself failed: no answer came back.
            gloo_net::Error::JsError(_) => {
                Failure::local("the server cannot be reached; is glmtune serve running?")
            }
            other => Failure::local(other.to_string()),
        }
    }
}

/// Sends a request; `body` is JSON text or a file.
pub async fn send(
    method: Method,
    path: &str,
    body: Option<JsValue>,
    json: bool,
) -> Result<Response, Failure> {
    let mut builder = RequestBuilder::new(path).method(method.clone());
    if json {
        builder = builder.header("Content-Type", "application/json");
    }
    if method != Method::GET {
        if let Some(token) = csrf() {
            builder = builder.header("X-CSRF-Token", &token);
        }
    }
    let request = match body {
        Some(body) => builder.body(body)?,
        None => builder.build()?,
    };
    let response = request.send().await?;
    if response.ok() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    Err(Failure::of_answer(response.status(), &text))
}

/// The browser's Cache API storage, in a page or a worker (secure contexts only).
pub fn caches() -> Option<web_sys::CacheStorage> {
    let global = js_sys::global();
    match global.dyn_ref::<web_sys::Window>() {
        Some(window) => window.caches().ok(),
        None => global
            .unchecked_into::<web_sys::WorkerGlobalScope>()
            .caches()
            .ok(),
    }
}

/// Bytes `start..end` of a file, by a `Range` request the server must honour.
pub async fn get_range(path: &str, start: u64, end: u64) -> Result<Vec<u8>, Failure> {
    let response = RequestBuilder::new(path)
        .header("Range", &format!("bytes={start}-{}", end - 1))
        .send()
        .await?;
    let whole = start == 0 && response.status() == 200;
    if response.status() != 206 && !whole {
        let text = response.text().await.unwrap_or_default();
        return Err(Failure::of_answer(response.status(), &text));
    }
    let mut bytes = response.binary().await?;
    if whole {
        bytes.truncate((end - start) as usize);
    }
    if bytes.len() as u64 != end - start {
        return Err(Failure::local(format!(
            "{path}: asked for bytes {start}..{end}, got {}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

async fn json_of<T: DeserializeOwned>(response: Response) -> Result<T, Failure> {
    parse(&response.text().await?)
}

fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Failure> {
    serde_json::from_str(text).map_err(|e| Failure::local(format!("unexpected answer: {e}")))
}

/// The body of a GET as bytes (model files).
pub async fn get_bytes(path: &str) -> Result<Vec<u8>, Failure> {
    Ok(send(Method::GET, path, None, false).await?.binary().await?)
}

pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, Failure> {
    json_of(send(Method::GET, path, None, false).await?).await
}

pub async fn post<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, Failure> {
    let text = serde_json::to_string(body).map_err(|e| Failure::local(e.to_string()))?;
    json_of(send(Method::POST, path, Some(JsValue::from_str(&text)), true).await?).await
}

/// A POST whose answer has no body to read (204) or whose body does not matter.
pub async fn post_empty<B: Serialize>(path: &str, body: &B) -> Result<(), Failure> {
    let text = serde_json::to_string(body).map_err(|e| Failure::local(e.to_string()))?;
    send(Method::POST, path, Some(JsValue::from_str(&text)), true)
        .await
        .map(|_| ())
}

/// Sends `request` (already opened) with `body`, reporting progress through `target` (the upload
/// or the request itself) as `on_progress(done, total)`; resolves when it ends, with its status.
async fn exchange(
    request: &web_sys::XmlHttpRequest,
    target: &web_sys::XmlHttpRequestEventTarget,
    body: Option<&web_sys::File>,
    on_progress: impl Fn(f64, f64) + 'static,
) -> Result<u16, Failure> {
    let progress =
        Closure::<dyn Fn(web_sys::ProgressEvent)>::new(move |event: web_sys::ProgressEvent| {
            if event.length_computable() {
                on_progress(event.loaded(), event.total());
            }
        });
    target.set_onprogress(Some(progress.as_ref().unchecked_ref()));
    let finished = js_sys::Promise::new(&mut |resolve, _| request.set_onloadend(Some(&resolve)));
    request.send_with_opt_blob(body.map(|f| f.as_ref()))?;
    JsFuture::from(finished).await?;
    drop(progress);
    match request.status()? {
        0 => Err(Failure::local(
            "the transfer was interrupted: is glmtune serve still running? Try again.",
        )),
        status => Ok(status),
    }
}

/// Uploads a file as the request body, calling `on_progress(sent, total)` as bytes leave (the
/// fetch API cannot report that, XMLHttpRequest can).
pub async fn upload<T: DeserializeOwned>(
    path: &str,
    file: &web_sys::File,
    on_progress: impl Fn(f64, f64) + 'static,
) -> Result<T, Failure> {
    let request = web_sys::XmlHttpRequest::new()?;
    request.open("POST", path)?;
    if let Some(token) = csrf() {
        request.set_request_header("X-CSRF-Token", &token)?;
    }
    let upload: web_sys::XmlHttpRequestEventTarget = request.upload()?.into();
    let status = exchange(&request, &upload, Some(file), on_progress).await?;
    let text = request.response_text()?.unwrap_or_default();
    match status {
        200..=299 => parse(&text),
        _ => Err(Failure::of_answer(status, &text)),
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    js_sys::encode_uri_component(value).into()
}

/// POSTs JSON and reads the answer as Server-Sent Events as they arrive, calling
/// `on_event(event, data)` for each (`event` is `message` when unnamed). The browser's
/// EventSource only GETs, so the body's bytes go through an SSE parser here instead.
pub async fn post_stream<B: Serialize>(
    path: &str,
    body: &B,
    mut on_event: impl FnMut(&str, &str),
) -> Result<(), Failure> {
    let text = serde_json::to_string(body).map_err(|e| Failure::local(e.to_string()))?;
    let response = send(Method::POST, path, Some(JsValue::from_str(&text)), true).await?;
    let body = response
        .body()
        .ok_or_else(|| Failure::local("the answer has no body"))?;
    // A fetch body's chunks are Uint8Arrays.
    let bytes = wasm_streams::ReadableStream::from_raw(body)
        .into_stream()
        .map(|chunk| chunk.map(|c| js_sys::Uint8Array::new(&c).to_vec()));
    let mut events = std::pin::pin!(bytes.eventsource());
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| match e {
            EventStreamError::Transport(js) => Failure::from(js),
            EventStreamError::Utf8(e) => Failure::local(format!("the answer is not UTF-8: {e}")),
            EventStreamError::Parser(e) => Failure::local(format!("the answer is not SSE: {e}")),
        })?;
        on_event(&event.event, &event.data);
    }
    Ok(())
}

/// Waits `ms` milliseconds (a job being followed).
pub async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = JsFuture::from(promise).await;
}
