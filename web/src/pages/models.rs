//! Registered base models with their config summary.

use glmtune_shared::api::{List, ModelInfo};
use leptos::prelude::*;

use crate::api;
use crate::pages::{loaded, Table};

#[component]
pub fn Models() -> impl IntoView {
    let models = LocalResource::new(|| api::get::<List<ModelInfo>>("/api/v1/models"));
    view! {
        <section>
            <h1>"Models"</h1>
            {loaded(models, |list| if list.data.is_empty() {
                view! {
                    <div class="card">
                        <p>"No model is registered yet. Start the server with a ChatGLM-6B, ChatGLM2-6B or ChatGLM3-6B folder (config.json, weights, ice_text.model or tokenizer.model):"</p>
                        <pre>"glmtune serve --model chatglm-6b=/path/to/chatglm-6b"</pre>
                        <p class="muted">"The repository ships a tiny demo checkpoint with random weights: --model tiny=tests/fixtures/chatglm6b-tiny/model"</p>
                    </div>
                }.into_any()
            } else {
                view! {
                    <Table headers=&["Name", "Generation", "Layers", "Hidden", "Heads", "Vocabulary", "Folder"]>
                            {list.data.into_iter().map(|m| {
                                let demo = m.path.contains("-tiny");
                                view! {
                                    <tr>
                                        <td>{m.name.clone()}{demo.then(|| view! { <span class="badge">"demo: random weights"</span> })}</td>
                                        <td>{m.family.clone()}</td>
                                        <td>{m.num_layers}</td>
                                        <td>{m.hidden_size}</td>
                                        <td>{m.num_attention_heads}</td>
                                        <td>{m.vocab_size}</td>
                                        <td class="path">{m.path.clone()}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </Table>
                }.into_any()
            })}
        </section>
    }
}
