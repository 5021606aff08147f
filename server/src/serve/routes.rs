//! Every route of the server, once: who may call it and its handler. The handler's
//! `#[utoipa::path]` says the rest (method, path, summary, parameters, request and response
//! schemas), so a row cannot route one path and document another. The router is built from these
//! rows, each route behind the check of its own need (`auth::enforce`), and the OpenAPI document
//! is written from the same rows, so the access a route documents is the access it gets; the
//! auth-matrix test walks that document against a running server.

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::middleware::Next;
use axum::routing::MethodRouter;
use axum::Router;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;

use crate::serve::auth::{self, Need};
use crate::serve::state::AppState;

/// The component schemas an operation refers to, gathered by name.
pub type Schemas = Vec<(String, RefOr<Schema>)>;

/// One operation: a method on a path.
pub struct Route {
    /// `get`, `post` or `delete`, as OpenAPI names methods.
    pub method: &'static str,
    pub path: String,
    pub need: Need,
    /// The handler's operation as its `#[utoipa::path]` describes it: the method and path above
    /// come from the same attribute, so what is routed is what is documented.
    pub operation: Operation,
    /// Adds the schemas `operation` refers to.
    pub schemas: fn(&mut Schemas),
    handler: MethodRouter<AppState>,
}

/// The row of a handler annotated with `#[utoipa::path(...)]`: `route!(Read, runs::list)`.
macro_rules! route {
    ($need:expr, $module:ident :: $handler:ident) => {
        pastey::paste! {
            $crate::serve::routes::Route::documented::<$module::[<__path_ $handler>], _, _>(
                $need,
                $module::$handler,
            )
        }
    };
    ($need:expr, $handler:ident) => {
        pastey::paste! {
            $crate::serve::routes::Route::documented::<[<__path_ $handler>], _, _>($need, $handler)
        }
    };
}
pub(crate) use route;

impl Route {
    /// The route of `handler`, at the method and path of its operation `D` (the type that
    /// `#[utoipa::path]` puts beside it), for callers with `need`.
    pub fn documented<D, H, T>(need: Need, handler: H) -> Route
    where
        // `SchemaReferences` is how utoipa's own `OpenApi` derive collects an operation's
        // schemas; it is hidden but is the only way to get them from the path type.
        D: utoipa::Path + utoipa::__dev::SchemaReferences,
        H: Handler<T, AppState>,
        T: 'static,
    {
        let path = D::path();
        let (method, router) = match D::methods().as_slice() {
            [HttpMethod::Get] => ("get", axum::routing::get(handler)),
            [HttpMethod::Post] => ("post", axum::routing::post(handler)),
            [HttpMethod::Delete] => ("delete", axum::routing::delete(handler)),
            // A programming error caught by every test that builds the routes.
            _ => panic!("{path}: one of get, post or delete expected"),
        };
        Route {
            method,
            path,
            need,
            operation: D::operation(),
            schemas: D::schemas,
            handler: router,
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

/// Liveness check
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = String, example = "ok")))]
async fn healthz() -> &'static str {
    "ok"
}

/// The routes of the server itself (the API groups add theirs).
fn system() -> Vec<Route> {
    use crate::serve::{metrics, openapi};
    use Need::*;
    vec![
        route!(Public, healthz),
        route!(Read, metrics::endpoint),
        route!(Read, openapi::document),
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
        router = router.route(&route.path, route.handler.route_layer(check));
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
                seen.insert((route.method, route.path.as_str())),
                "{} {} twice",
                route.method,
                route.path
            );
        }
    }
}
