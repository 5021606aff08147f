//! API keys for scripts and the `openai` client: the caller's keys, a new one (its secret shown
//! once), revoke.

use glmtune_shared::api::{ApiKey, CreateApiKey, CreatedApiKey, List, Role};
use leptos::prelude::*;

use crate::api;
use crate::pages::{loaded, ErrorNote, Table};

#[component]
pub fn Keys() -> impl IntoView {
    let keys = LocalResource::new(|| api::get::<List<ApiKey>>("/api/v1/keys"));
    let name = RwSignal::new(String::new());
    let role = RwSignal::new(String::new());
    let created = RwSignal::new(None::<CreatedApiKey>);
    let error = RwSignal::new(None::<api::Failure>);
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let request = CreateApiKey {
            name: name.get_untracked(),
            role: Role::parse(&role.get_untracked()),
        };
        leptos::task::spawn_local(async move {
            match api::post::<_, CreatedApiKey>("/api/v1/keys", &request).await {
                Ok(key) => {
                    created.set(Some(key));
                    name.set(String::new());
                    keys.refetch();
                }
                Err(failure) => error.set(Some(failure)),
            }
        });
    };
    let revoke = move |id: String| {
        leptos::task::spawn_local(async move {
            match api::send(
                gloo_net::http::Method::DELETE,
                &format!("/api/v1/keys/{id}"),
                None,
                false,
            )
            .await
            {
                Ok(_) => keys.refetch(),
                Err(failure) => error.set(Some(failure)),
            }
        });
    };
    view! {
        <section>
            <h1>"API keys"</h1>
            <p class="muted">"Send a key as Authorization: Bearer KEY, or give it to the openai client with base_url set to this server's /v1."</p>
            <form class="card row" on:submit=create>
                <label>"Name"<input name="key_name" required bind:value=name /></label>
                <label>"Role"
                    <select name="key_role" on:change=move |ev| role.set(event_target_value(&ev))>
                        <option value="">"same as mine"</option>
                        <option value="viewer">"viewer (read, chat)"</option>
                        <option value="member">"member"</option>
                        <option value="admin">"admin"</option>
                        <option value="worker">"worker (glmtune worker; admins only)"</option>
                    </select>
                </label>
                <button type="submit">"Create key"</button>
            </form>
            {move || created.get().map(|k| view! {
                <div class="card secret" role="status">
                    <p>{format!("New key {} — copy it now, it is not shown again:", k.key.name)}</p>
                    <pre class="mono">{k.secret}</pre>
                </div>
            })}
            {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
            {loaded(keys, move |list| view! {
                    <Table headers=&["Name", "Role", "Starts with", ""]>
                            {list.data.into_iter().map(|k| {
                                let id = k.id.clone();
                                view! {
                                    <tr>
                                        <td>{k.name.clone()}</td>
                                        <td>{k.role.as_str()}</td>
                                        <td class="mono">{format!("{}…", k.prefix)}</td>
                                        <td><button on:click=move |_| revoke(id.clone())>"Revoke"</button></td>
                                    </tr>
                                }
                            }).collect_view()}
                        </Table>
                }.into_any())}
        </section>
    }
}
