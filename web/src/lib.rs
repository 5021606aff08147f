//! The glmtune dashboard: sign-in, models, datasets, training runs with live charts, and chats.
//! A leptos app rendered in the browser (wasm32), talking to `glmtune serve`'s `/api/v1`. Pages
//! are chosen by the URL's path (`/runs/ID`, `leptos_router`), so a reload shows the same page:
//! the server answers `index.html` for paths that are not files.

mod api;
mod chart;
pub mod local;
mod measure;
mod pages;

use glmtune_shared::api::{AuthStatus, Me};
use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::hooks::{use_location, use_navigate, use_params_map};
use leptos_router::{path, NavigateOptions};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

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

/// The path an old hash URL (`#/runs/ID`, before the app routed by path) names, so that
/// bookmarks keep working.
fn legacy_path() -> Option<String> {
    let hash = web_sys::window()?.location().hash().ok()?;
    hash.strip_prefix('#')
        .filter(|path| path.starts_with('/'))
        .map(str::to_owned)
}

/// Shows an old hash URL's page at its path, in place of the URL (no request: the page that
/// loaded is the app either way, from the network or, offline, the service worker's cache).
fn redirect_legacy() {
    if let (Some(path), Some(window)) = (legacy_path(), web_sys::window()) {
        if let Ok(history) = window.history() {
            let _ = history.replace_state_with_url(&JsValue::NULL, "", Some(&path));
        }
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
    redirect_legacy();
    view! {
        <Router>
            <Shell />
        </Router>
    }
}

/// The pages a signed-in user reaches; any other path shows the datasets. Each first segment is
/// in `glmtune_shared::pages::PAGES`, which the server answers with this app.
#[component]
fn Pages() -> impl IntoView {
    view! {
        <Routes fallback=pages::datasets::Datasets>
            <Route path=path!("/") view=pages::datasets::Datasets />
            <Route path=path!("/datasets") view=pages::datasets::Datasets />
            <Route path=path!("/models") view=pages::models::Models />
            <Route path=path!("/runs") view=pages::runs::Runs />
            <Route path=path!("/runs/:id") view=RunRoute />
            <Route path=path!("/compare/:ids") view=CompareRoute />
            <Route path=path!("/sweeps") view=pages::sweeps::Sweeps />
            <Route path=path!("/teachers") view=pages::teachers::Teachers />
            <Route path=path!("/workers") view=pages::workers::Workers />
            <Route path=path!("/sweeps/:id") view=SweepRoute />
            <Route path=path!("/chats") view=pages::chats::Chats />
            <Route path=path!("/local") view=pages::local::InBrowser />
            <Route path=path!("/keys") view=pages::keys::Keys />
        </Routes>
    }
}

/// `/runs/ID`: the page is built anew for another run (its event stream is the run's).
#[component]
fn RunRoute() -> impl IntoView {
    let params = use_params_map();
    move || {
        let id = params.with(|p| p.get("id")).unwrap_or_default();
        view! { <pages::run::RunPage id=id /> }
    }
}

/// `/sweeps/ID`.
#[component]
fn SweepRoute() -> impl IntoView {
    let params = use_params_map();
    move || {
        let id = params.with(|p| p.get("id")).unwrap_or_default();
        view! { <pages::sweeps::SweepPage id=id /> }
    }
}

/// `/compare/ID,ID,…`.
#[component]
fn CompareRoute() -> impl IntoView {
    let params = use_params_map();
    move || {
        let ids = params.with(|p| p.get("ids")).unwrap_or_default();
        let ids = ids.split(',').map(str::to_owned).collect::<Vec<_>>();
        view! { <pages::compare::Compare ids=ids /> }
    }
}

/// The header and the page under it.
#[component]
fn Shell() -> impl IntoView {
    // Typed over an open page (the page itself does not reload): shown at its path too.
    let navigate = use_navigate();
    let _listener = window_event_listener(leptos::ev::hashchange, move |_| {
        if let Some(path) = legacy_path() {
            navigate(
                &path,
                NavigateOptions {
                    replace: true,
                    ..Default::default()
                },
            );
        }
    });
    let session = RwSignal::new(Session::Checking);
    leptos::task::spawn_local(check_session(session));
    provide_context(session);

    let page = move || match session.get() {
        Session::Checking => view! { <p class="muted">"Connecting…"</p> }.into_any(),
        Session::SignedOut { setup_needed } => {
            view! { <pages::login::SignIn setup_needed=setup_needed /> }.into_any()
        }
        Session::SignedIn { .. } => view! { <Pages /> }.into_any(),
    };
    let pathname = use_location().pathname;
    let active = move |name: &'static str| {
        move || {
            let current = pathname.with(|p| {
                p.trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            });
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
            <A href="/datasets" attr:class="brand">"glmtune"</A>
            <nav aria-label="Pages">
                <A href="/datasets" attr:class=active("datasets")>"Datasets"</A>
                <A href="/models" attr:class=active("models")>"Models"</A>
                <A href="/runs" attr:class=active("runs")>"Runs"</A>
                <A href="/sweeps" attr:class=active("sweeps")>"Sweeps"</A>
                <A href="/teachers" attr:class=active("teachers")>"Teachers"</A>
                <A href="/workers" attr:class=active("workers")>"Workers"</A>
                <A href="/chats" attr:class=active("chats")>"Chats"</A>
                <A href="/local" attr:class=active("local")>"In this browser"</A>
            </nav>
            {move || match session.get() {
                Session::SignedIn { name, role } => view! {
                    <span class="user">{format!("{name} ({role})")}
                        <A href="/keys">"API keys"</A>
                        <button class="link" on:click=sign_out>"Sign out"</button>
                    </span>
                }.into_any(),
                _ => ().into_any(),
            }}
        </header>
        <main>{page}</main>
    }
}
