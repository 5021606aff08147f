//! The in-browser chat's conversations, kept in this browser's IndexedDB (database
//! `glmtune-local`, store `chats`): one per model and adapter, so a reload, or a visit with no
//! server at all, shows them again.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

const DATABASE: &str = "glmtune-local";
const STORE: &str = "chats";

/// (query, response) turns.
pub type Turns = Vec<(String, String)>;

/// The conversation's key: the model and the adapter's run ("" for none).
pub fn key(model: &str, adapter_run: &str) -> String {
    format!("{model}|{adapter_run}")
}

/// Waits for an IndexedDB request to succeed, giving its result.
async fn finished(request: &web_sys::IdbRequest) -> Result<JsValue, String> {
    let (sender, receiver) = futures_channel::oneshot::channel::<Result<(), ()>>();
    let sender = std::rc::Rc::new(std::cell::RefCell::new(Some(sender)));
    let (ok, failed) = (sender.clone(), sender);
    let on_success = Closure::once(move || {
        if let Some(s) = ok.borrow_mut().take() {
            let _ = s.send(Ok(()));
        }
    });
    let on_error = Closure::once(move || {
        if let Some(s) = failed.borrow_mut().take() {
            let _ = s.send(Err(()));
        }
    });
    request.set_onsuccess(Some(on_success.as_ref().unchecked_ref()));
    request.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    let outcome = receiver.await;
    request.set_onsuccess(None);
    request.set_onerror(None);
    match outcome {
        Ok(Ok(())) => request.result().map_err(|e| format!("{e:?}")),
        _ => Err(request
            .error()
            .ok()
            .flatten()
            .map_or_else(|| "IndexedDB failed".to_owned(), |e| e.message())),
    }
}

async fn open() -> Result<web_sys::IdbDatabase, String> {
    let factory = web_sys::window()
        .and_then(|w| w.indexed_db().ok().flatten())
        .ok_or("this browser has no IndexedDB")?;
    let request = factory
        .open_with_u32(DATABASE, 1)
        .map_err(|e| format!("{e:?}"))?;
    let on_upgrade = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
        let database = event
            .target()
            .and_then(|t| t.dyn_into::<web_sys::IdbOpenDbRequest>().ok())
            .and_then(|r| r.result().ok())
            .and_then(|d| d.dyn_into::<web_sys::IdbDatabase>().ok());
        if let Some(database) = database {
            let _ = database.create_object_store(STORE);
        }
    });
    request.set_onupgradeneeded(Some(on_upgrade.as_ref().unchecked_ref()));
    let database = finished(&request).await?;
    request.set_onupgradeneeded(None);
    database
        .dyn_into()
        .map_err(|_| "IndexedDB opened something else".to_owned())
}

fn store(
    database: &web_sys::IdbDatabase,
    mode: web_sys::IdbTransactionMode,
) -> Result<web_sys::IdbObjectStore, String> {
    database
        .transaction_with_str_and_mode(STORE, mode)
        .and_then(|t| t.object_store(STORE))
        .map_err(|e| format!("{e:?}"))
}

/// The saved conversation under `key` (empty when there is none).
pub async fn load(key: &str) -> Result<Turns, String> {
    let database = open().await?;
    let request = store(&database, web_sys::IdbTransactionMode::Readonly)?
        .get(&JsValue::from_str(key))
        .map_err(|e| format!("{e:?}"))?;
    let value = finished(&request).await?;
    match value.as_string() {
        Some(text) => serde_json::from_str(&text).map_err(|e| e.to_string()),
        None => Ok(Vec::new()),
    }
}

/// Saves `turns` under `key`, replacing what was there; no turns removes it.
pub async fn save(key: &str, turns: &Turns) -> Result<(), String> {
    let database = open().await?;
    let store = store(&database, web_sys::IdbTransactionMode::Readwrite)?;
    let key = JsValue::from_str(key);
    let request = if turns.is_empty() {
        store.delete(&key)
    } else {
        let text = serde_json::to_string(turns).map_err(|e| e.to_string())?;
        store.put_with_key(&JsValue::from_str(&text), &key)
    }
    .map_err(|e| format!("{e:?}"))?;
    finished(&request).await.map(|_| ())
}
