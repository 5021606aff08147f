//! The glmtune dashboard: sign-in, models, datasets, training runs with live charts, and chats.
//! A leptos app rendered in the browser (wasm32), talking to `glmtune serve`'s `/api/v1`. Pages
//! are chosen by the URL's hash (`#/runs/ID`), so a reload shows the same page.

mod api;
mod chart;
pub mod local;
mod measure;
mod pages;

use glmtune_shared::api::{AuthStatus, Me};
use leptos::prelude::*;
use wasm_bindgen::prelude::wasm_bindgen;

#[wasm_bindgen(start)]
pub fn start() {
    // The in-browser model's worker loads this module too; it has no page to mount.
    if web_sys::window().is_some() {
        leptos::mount::mount_to_body(App);
    }
}

/// Who is signed in (`None` before the first answer from the server).
#[derive(Debug, Clone, PartialEq)]
pub enum Session {
    Checking,
    SignedOut { setup_needed: bool },
    SignedIn { name: String, role: String },
}

fn current_hash() -> String {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default()
}

/// Goes to a page (`#/datasets`).
pub fn navigate(to: &str) {
    if let Some(window) = web_sys::window() {
        let _ = window.location().set_hash(to);
    }
}

/// Asks the server who we are.
pub async fn check_session(session: RwSignal<Session>) {
    match api::get::<Me>("/api/v1/auth/me").await {
        Ok(me) => {
            api::set_csrf(me.csrf_token.clone());
            session.set(Session::SignedIn {
                name: me.name().to_owned(),
                role: me.role.as_str().to_owned(),
            });
        }
        Err(_) => {
            let setup_needed = api::get::<AuthStatus>("/api/v1/auth/status")
                .await
                .is_ok_and(|status| status.setup_needed);
            session.set(Session::SignedOut { setup_needed });
        }
    }
}

#[component]
fn App() -> impl IntoView {
    let route = RwSignal::new(current_hash());
    let _listener =
        window_event_listener(leptos::ev::hashchange, move |_| route.set(current_hash()));
    let session = RwSignal::new(Session::Checking);
    leptos::task::spawn_local(check_session(session));
    provide_context(session);

    let page = move || {
        let hash = route.get();
        let path: Vec<String> = hash
            .trim_start_matches('#')
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        match session.get() {
            Session::Checking => view! { <p class="muted">"Connecting…"</p> }.into_any(),
            Session::SignedOut { setup_needed } => {
                view! { <pages::login::SignIn setup_needed=setup_needed /> }.into_any()
            }
            Session::SignedIn { .. } => {
                match path.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                    ["models"] => view! { <pages::models::Models /> }.into_any(),
                    ["runs"] => view! { <pages::runs::Runs /> }.into_any(),
                    ["runs", id] => {
                        let id = id.to_owned();
                        view! { <pages::run::RunPage id=id /> }.into_any()
                    }
                    ["compare", ids] => {
                        let ids = ids.split(',').map(str::to_owned).collect::<Vec<_>>();
                        view! { <pages::compare::Compare ids=ids /> }.into_any()
                    }
                    ["chats"] => view! { <pages::chats::Chats /> }.into_any(),
                    ["local"] => view! { <pages::local::InBrowser /> }.into_any(),
                    ["keys"] => view! { <pages::keys::Keys /> }.into_any(),
                    _ => view! { <pages::datasets::Datasets /> }.into_any(),
                }
            }
        }
    };
    let active = move |name: &'static str| {
        move || {
            let hash = route.get();
            let current = hash
                .trim_start_matches("#/")
                .split('/')
                .next()
                .unwrap_or("")
                .to_owned();
            if current == name
                || (name == "datasets" && current.is_empty())
                || (name == "runs" && current == "compare")
            {
                "active"
            } else {
                ""
            }
        }
    };
    let sign_out = move |_| {
        leptos::task::spawn_local(async move {
            let _ = api::post_empty("/api/v1/auth/logout", &serde_json::json!({})).await;
            api::set_csrf(None);
            // The offline copies of API answers (www/sw.js) were this user's.
            if let Some(caches) = api::caches() {
                let _ = wasm_bindgen_futures::JsFuture::from(caches.delete("glmtune-shell")).await;
            }
            check_session(session).await;
        });
    };
    view! {
        <header class="top">
            <a class="brand" href="#/datasets">"glmtune"</a>
            <nav aria-label="Pages">
                <a href="#/datasets" class=active("datasets")>"Datasets"</a>
                <a href="#/models" class=active("models")>"Models"</a>
                <a href="#/runs" class=active("runs")>"Runs"</a>
                <a href="#/chats" class=active("chats")>"Chats"</a>
                <a href="#/local" class=active("local")>"In this browser"</a>
            </nav>
            {move || match session.get() {
                Session::SignedIn { name, role } => view! {
                    <span class="user">{format!("{name} ({role})")}
                        <a href="#/keys">"API keys"</a>
                        <button class="link" on:click=sign_out>"Sign out"</button>
                    </span>
                }.into_any(),
                _ => ().into_any(),
            }}
        </header>
        <main>{page}</main>
    }
}
