//! Teachers: models behind OpenAI-compatible endpoints that make datasets (answers, rewordings,
//! back-translations), registered once; their keys are sealed on the server and never shown.

use glmtune_shared::api::List;
use glmtune_shared::teach::{CreateTeacher, Teacher};
use leptos::prelude::*;

use crate::api;
use crate::pages::{loaded, ErrorNote, Table};

#[component]
pub fn Teachers() -> impl IntoView {
    let teachers = LocalResource::new(|| api::get::<List<Teacher>>("/api/v1/teachers"));
    let fields = [
        "name",
        "base_url",
        "model",
        "key",
        "concurrency",
        "requests_per_minute",
    ]
    .map(|name| (name, RwSignal::new(String::new())));
    let error = RwSignal::new(None::<api::Failure>);
    let value = move |name: &str| {
        fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.get_untracked().trim().to_owned())
            .unwrap_or_default()
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let request = CreateTeacher {
            name: value("name"),
            base_url: value("base_url"),
            model: value("model"),
            key: Some(value("key")).filter(|k| !k.is_empty()),
            key_env: None,
            concurrency: value("concurrency").parse().unwrap_or(4),
            requests_per_minute: value("requests_per_minute").parse().ok(),
        };
        leptos::task::spawn_local(async move {
            match api::post::<_, Teacher>("/api/v1/teachers", &request).await {
                Ok(_) => {
                    error.set(None);
                    for (name, signal) in fields {
                        if name != "concurrency" {
                            signal.set(String::new());
                        }
                    }
                    teachers.refetch();
                }
                Err(failure) => error.set(Some(failure)),
            }
        });
    };
    view! {
        <section>
            <h1>"Teachers"</h1>
            <form class="card" on:submit=submit>
                <h2>"Register a teacher"</h2>
                <p class="muted">"Any OpenAI-compatible endpoint: this server's own /v1, a tuned model on it, or an outside service. The key is sealed on the server and never shown again."</p>
                <div class="grid">
                    {fields.iter().map(|(name, signal)| {
                        let (name, signal) = (*name, *signal);
                        let kind = if name == "key" { "password" } else { "text" };
                        view! { <label>{name}<input name=format!("teacher_{name}") type=kind bind:value=signal /></label> }
                    }).collect_view()}
                </div>
                <button type="submit">"Register"</button>
                {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
            </form>
            <h2>"Registered"</h2>
            {loaded(teachers, move |list| view! {
                <Table class="teachers" headers=&["Name", "Endpoint", "Model", "Key", "At once"]>
                    {list.data.into_iter().map(|t| view! {
                        <tr>
                            <td>{t.name.clone()}</td>
                            <td class="mono">{t.base_url.clone()}</td>
                            <td>{t.model.clone()}</td>
                            <td>{if t.has_key { "sealed" } else { "none" }}</td>
                            <td>{t.concurrency}</td>
                        </tr>
                    }).collect_view()}
                </Table>
            }.into_any())}
        </section>
    }
}
