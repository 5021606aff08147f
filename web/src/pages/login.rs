//! Sign-in, and the first-run setup that makes the first admin with the token the server printed.

use glmtune_shared::api::{LoginRequest, SessionInfo, SetupRequest};
use leptos::prelude::*;

use crate::api;
use crate::pages::ErrorNote;
use crate::{check_session, Session};

#[component]
pub fn SignIn(setup_needed: bool) -> impl IntoView {
    let session = expect_context::<RwSignal<Session>>();
    let username = RwSignal::new(if setup_needed {
        "admin".to_owned()
    } else {
        String::new()
    });
    let password = RwSignal::new(String::new());
    let token = RwSignal::new(String::new());
    let error = RwSignal::new(None::<api::Failure>);
    let busy = RwSignal::new(false);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        leptos::task::spawn_local(async move {
            let answer: Result<SessionInfo, api::Failure> = if setup_needed {
                let request = SetupRequest {
                    setup_token: token.get_untracked().trim().to_owned(),
                    username: username.get_untracked(),
                    password: password.get_untracked(),
                };
                api::post("/api/v1/auth/setup", &request).await
            } else {
                let request = LoginRequest {
                    username: username.get_untracked(),
                    password: password.get_untracked(),
                };
                api::post("/api/v1/auth/login", &request).await
            };
            busy.set(false);
            match answer {
                Ok(info) => {
                    api::set_csrf(Some(info.csrf_token));
                    check_session(session).await;
                }
                Err(failure) => error.set(Some(failure)),
            }
        });
    };
    view! {
        <section class="card narrow">
            <h1>{if setup_needed { "Create the first admin" } else { "Sign in" }}</h1>
            {setup_needed.then(|| view! {
                <p class="muted">"The server printed a one-time setup token when it started (glmtune serve: no users yet …). Paste it here."</p>
                <label>"Setup token"<input name="setup_token" required bind:value=token autocomplete="off" /></label>
            })}
            <form on:submit=submit>
                <label>"Username"<input name="username" required bind:value=username autocomplete="username" /></label>
                <label>"Password"<input name="password" type="password" required minlength="8" bind:value=password
                    autocomplete=if setup_needed { "new-password" } else { "current-password" } /></label>
                <button type="submit" disabled=move || busy.get()>
                    {move || if busy.get() { "Signing in…" } else if setup_needed { "Create admin" } else { "Sign in" }}
                </button>
            </form>
            {move || error.get().map(|e| view! { <ErrorNote error=e /> })}
        </section>
    }
}
