//! The in-browser model: a Web Worker (`www/local-worker.js` loads this same wasm module and
//! calls [`local_worker`]) that downloads a quantized model piece by piece into the Cache API and
//! answers on WebGPU, or candle on the CPU, so the page stays responsive while it computes. The
//! page talks to it with [`protocol`] messages, and keeps its conversations in [`history`].

pub mod history;
mod model;
mod pieces;
pub mod protocol;

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use model::LocalModel;
use protocol::{FromWorker, ToWorker};

fn post(scope: &web_sys::DedicatedWorkerGlobalScope, message: &FromWorker) {
    let _ = scope.post_message(&JsValue::from_str(&message.to_text()));
}

/// The worker's entry: listens for [`ToWorker`] messages, one at a time.
#[wasm_bindgen]
pub fn local_worker() {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let loaded: Rc<RefCell<Option<Rc<LocalModel>>>> = Rc::default();
    let handler_scope = scope.clone();
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
            let scope = handler_scope.clone();
            let loaded = loaded.clone();
            let text = event.data().as_string().unwrap_or_default();
            wasm_bindgen_futures::spawn_local(async move {
                let tell = {
                    let scope = scope.clone();
                    move |message: FromWorker| post(&scope, &message)
                };
                match serde_json::from_str::<ToWorker>(&text) {
                    Ok(ToWorker::Load { model, adapter_run }) => {
                        loaded.borrow_mut().take();
                        match model::load(&model, adapter_run.as_deref(), tell.clone()).await {
                            Ok(ready) => *loaded.borrow_mut() = Some(Rc::new(ready)),
                            Err(failure) => tell(FromWorker::Failed {
                                message: failure.message,
                            }),
                        }
                    }
                    Ok(ToWorker::Ask {
                        query,
                        history,
                        max_tokens,
                    }) => {
                        let Some(model) = loaded.borrow().clone() else {
                            tell(FromWorker::Failed {
                                message: "no model is loaded yet".into(),
                            });
                            return;
                        };
                        let partial = tell.clone();
                        let on_text = move |text: &str| {
                            partial(FromWorker::Delta {
                                text: text.to_owned(),
                            })
                        };
                        match model.answer(&query, &history, max_tokens, on_text).await {
                            Ok(text) => tell(FromWorker::Answer { text }),
                            Err(failure) => tell(FromWorker::Failed {
                                message: failure.message,
                            }),
                        }
                    }
                    Err(e) => tell(FromWorker::Failed {
                        message: format!("the page sent a message the worker cannot read: {e}"),
                    }),
                }
            });
        });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    on_message.forget();
    post(&scope, &FromWorker::Ready);
}
