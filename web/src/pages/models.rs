//! Registered base models with their config summary.

use glmtune_shared::api::{List, ModelInfo};
use leptos::prelude::*;

use crate::api;
use crate::pages::ErrorNote;

#[component]
pub fn Models() -> impl IntoView {
    let models = LocalResource::new(|| api::get::<List<ModelInfo>>("/api/v1/models"));
    view! {
        <section>
            <h1>"Models"</h1>
            {move || match models.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(Err(e)) => view! { <ErrorNote error=e /> }.into_any(),
                Some(Ok(list)) if list.data.is_empty() => view! {
                    <div class="card">
                        <p>"No model is registered yet. Start the server with a ChatGLM-6B folder (config.json, weights, ice_text.model):"</p>
                        <pre>"glmtune serve --model chatglm-6b=/path/to/chatglm-6b"</pre>
                        <p class="muted">"The repository ships a tiny demo checkpoint with random weights: --model tiny=tests/fixtures/chatglm6b-tiny/model"</p>
                    </div>
                }.into_any(),
                Some(Ok(list)) => view! {
                    <table>
                        <thead><tr><th>"Name"</th><th>"Layers"</th><th>"Hidden"</th><th>"Heads"</th><th>"Vocabulary"</th><th>"Folder"</th></tr></thead>
                        <tbody>
                            {list.data.into_iter().map(|m| {
                                let demo = m.path.contains("chatglm6b-tiny");
                                view! {
                                    <tr>
                                        <td>{m.name.clone()}{demo.then(|| view! { <span class="badge">"demo: random weights"</span> })}</td>
                                        <td>{m.num_layers}</td>
                                        <td>{m.hidden_size}</td>
                                        <td>{m.num_attention_heads}</td>
                                        <td>{m.vocab_size}</td>
                                        <td class="path">{m.path.clone()}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            }}
        </section>
    }
}
