//! Every route of the server, once: its method, path, summary, who may call it, and its handler.
//! The router is built from these rows, each route behind the check of its own need
//! (`auth::enforce`), and the OpenAPI document is written from the same rows, so the access a
//! route documents is the access it gets; the auth-matrix test walks that document against a
//! running server.

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::middleware::Next;
use axum::routing::MethodRouter;
use axum::Router;

use crate::serve::auth::{self, Need};
use crate::serve::state::AppState;

/// One operation: a method on a path.
pub struct Route {
    /// `get`, `post` or `delete`, as OpenAPI names methods.
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub need: Need,
    handler: MethodRouter<AppState>,
}

impl Route {
    pub fn get<H, T>(path: &'static str, summary: &'static str, need: Need, handler: H) -> Route
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        Route::new("get", path, summary, need, axum::routing::get(handler))
    }

    pub fn post<H, T>(path: &'static str, summary: &'static str, need: Need, handler: H) -> Route
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        Route::new("post", path, summary, need, axum::routing::post(handler))
    }

    pub fn delete<H, T>(path: &'static str, summary: &'static str, need: Need, handler: H) -> Route
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        Route::new(
            "delete",
            path,
            summary,
            need,
            axum::routing::delete(handler),
        )
    }

    fn new(
        method: &'static str,
        path: &'static str,
        summary: &'static str,
        need: Need,
        handler: MethodRouter<AppState>,
    ) -> Route {
        Route {
            method,
            path,
            summary,
            need,
            handler,
        }
    }

    /// The route with a layer of its own around its handler (an upload's body limit).
    pub fn map(
        mut self,
        f: impl FnOnce(MethodRouter<AppState>) -> MethodRouter<AppState>,
    ) -> Route {
        self.handler = f(self.handler);
        self
    }
}

/// The routes of the server itself (the API groups add theirs).
fn system() -> Vec<Route> {
    use Need::*;
    vec![
        Route::get("/healthz", "Liveness check", Public, || async { "ok" }),
        Route::get(
            "/metrics",
            "Prometheus metrics",
            Read,
            crate::serve::metrics::endpoint,
        ),
        Route::get(
            "/api/openapi.json",
            "This document",
            Read,
            crate::serve::openapi::document,
        ),
    ]
}

/// Every route: the server's, the dashboard API's and the OpenAI API's.
pub fn all(max_upload_bytes: u64) -> Vec<Route> {
    let mut routes = system();
    routes.extend(crate::serve::api::routes(max_upload_bytes));
    routes.extend(crate::serve::openai::routes(max_upload_bytes));
    routes
}

/// The router of `routes`, each behind the check of its need.
pub fn router(routes: Vec<Route>, state: &AppState) -> Router<AppState> {
    let mut router = Router::new();
    for route in routes {
        let need = route.need;
        let check = axum::middleware::from_fn_with_state(
            state.clone(),
            move |state: State<AppState>, request: Request, next: Next| {
                auth::enforce(need, state, request, next)
            },
        );
        // A path's methods are merged: each keeps its own need.
        router = router.route(route.path, route.handler.route_layer(check));
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's needs: what only an admin may do, what a viewer may, what is public.
    #[test]
    fn each_route_has_the_need_it_should() {
        let routes = all(1 << 20);
        let need = |method: &str, path: &str| {
            routes
                .iter()
                .find(|r| r.method == method && r.path == path)
                .map(|r| r.need)
        };
        assert_eq!(need("get", "/healthz"), Some(Need::Public));
        assert_eq!(need("post", "/api/v1/auth/login"), Some(Need::Public));
        assert_eq!(need("get", "/metrics"), Some(Need::Read));
        assert_eq!(need("get", "/api/v1/runs"), Some(Need::Read));
        assert_eq!(need("post", "/api/v1/runs"), Some(Need::Write));
        assert_eq!(need("get", "/api/v1/users"), Some(Need::Admin));
        assert_eq!(need("post", "/api/v1/models"), Some(Need::Admin));
        assert_eq!(need("get", "/api/v1/models"), Some(Need::Read));
        assert_eq!(need("post", "/v1/chat/completions"), Some(Need::Read));
        // Every operation once.
        let mut seen = std::collections::BTreeSet::new();
        for route in &routes {
            assert!(
                seen.insert((route.method, route.path)),
                "{} {} twice",
                route.method,
                route.path
            );
        }
    }
}
