//! The dashboard's files (`--web-dir`, built by `web/build.sh`) at `/`, the gzipped copies the
//! build leaves beside them when the browser accepts gzip. Paths the app routes itself fall back
//! to `index.html`; unknown API paths stay JSON errors.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::serve::error::ApiError;
use crate::serve::state::AppState;

pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path();
    if path.starts_with("/api/") || path.starts_with("/v1/") {
        if let Some(refused) = crate::serve::auth::refused_unrouted(&request) {
            return refused.into_response();
        }
        return ApiError::not_found("no such route").into_response();
    }
    let dir = &state.settings.web_dir;
    let index = dir.join("index.html");
    if !index.is_file() || !dir.join("pkg").is_dir() {
        return ApiError::not_found(format!(
            "the dashboard is not built in {}: run web/build.sh (./run.sh does it), or pass --web-dir",
            dir.display()
        ))
        .into_response();
    }
    // The dashboard's own pages (`/runs/ID`, routed in the browser by leptos_router) are
    // index.html with 200: a 404 would be rewritten to a JSON error by `json_errors`.
    if glmtune_shared::pages::is_page(path) {
        return match ServeFile::new(index).oneshot(request).await {
            Ok(response) => response.map(axum::body::Body::new),
            Err(error) => ApiError::internal(error.to_string()).into_response(),
        };
    }
    match ServeDir::new(dir)
        .precompressed_gzip()
        .not_found_service(ServeFile::new(index))
        .oneshot(request)
        .await
    {
        Ok(response) => response.map(axum::body::Body::new),
        Err(error) => ApiError::internal(error.to_string()).into_response(),
    }
}

/// A known path asked with a method it does not have: refused as an unknown path would be to
/// callers who are not signed in, 405 to the others.
pub async fn method_not_allowed(request: Request) -> Response {
    let path = request.uri().path();
    let api = path.starts_with("/api/") || path.starts_with("/v1/") || path == "/metrics";
    if let Some(refused) = api
        .then(|| crate::serve::auth::refused_unrouted(&request))
        .flatten()
    {
        return refused.into_response();
    }
    ApiError::method_not_allowed(request.method()).into_response()
}
