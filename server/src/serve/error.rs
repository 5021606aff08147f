//! The server's one error type: every failure becomes `{"error": {"code", "message", "details"}}`
//! with the matching HTTP status.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_shared::error::{ErrorBody, ErrorDetail};

use crate::db::DbError;

#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: serde_json::Value,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: serde_json::Value::Null,
            retry_after: None,
        }
    }

    /// The same error, its message prefixed with where it arose (`trial 3: …`).
    pub fn context(mut self, place: &str) -> Self {
        self.message = format!("{place}: {}", self.message);
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn method_not_allowed(method: &axum::http::Method) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route does not take {method}"),
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A lease that is no longer held: the worker should drop the run.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "gone", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
    }

    pub fn rate_limited(retry_after_s: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests; retry in {retry_after_s} s"),
        );
        error.retry_after = Some(retry_after_s);
        error
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// An error answered with `status` by code that is not ours (axum's extractor rejections,
    /// its 405 for a method a route lacks), with the code that status means.
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status.as_u16() {
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            408 | 504 => "timeout",
            409 => "conflict",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            416 => "range_not_satisfiable",
            429 => "rate_limited",
            500..=599 => "internal",
            _ => "invalid_request",
        };
        let status = if status.is_client_error() || status.is_server_error() {
            status
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Self::new(status, code, message)
    }

    /// Attaches machine-readable details (e.g. every invalid line of an upload).
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            if let Ok(value) = seconds.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<glmtune_engine::EngineError> for ApiError {
    fn from(error: glmtune_engine::EngineError) -> Self {
        match error {
            glmtune_engine::EngineError::Input(message) => Self::invalid(message),
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        Self::internal(error.to_string())
    }
}

impl From<std::io::Error> for ApiError {
    fn from(error: std::io::Error) -> Self {
        Self::internal(error.to_string())
    }
}

/// The longest body of a foreign error response read to become our error's message: rejections
/// say one sentence.
const FOREIGN_ERROR_BYTES: usize = 16 * 1024;

/// Every error leaves the server as `{"error": {…}}`. Handlers answer [`ApiError`] themselves, but
/// axum's extractors (`Query`, `Path`, `Multipart`, `Json`, body limits) reject with plain text
/// before a handler runs, and the router answers a method a route lacks with an empty 405; this
/// middleware rewrites any error response that is not JSON into the one shape, keeping its status
/// and headers (`Allow`, `Retry-After`).
pub async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, FOREIGN_ERROR_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut answer = ApiError::from_status(status, message).into_response();
    for (name, value) in &parts.headers {
        if *name != header::CONTENT_TYPE && *name != header::CONTENT_LENGTH {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    answer
}

/// Rejections of malformed or oversized JSON bodies as our JSON error.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(rejection.body_text())
        } else {
            ApiError::invalid(rejection.body_text())
        }
    }
}

/// Why the server could not start, or stopped serving: what `glmtune serve` prints before it
/// exits.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Flags that cannot work together.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    #[error("--gpus: {0}")]
    Gpus(crate::device::DeviceError),
    #[error(transparent)]
    Db(#[from] DbError),
    /// A `--model` that cannot be registered, or the first admin that cannot be made.
    #[error("{0}")]
    Setup(ApiError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl ServeError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
        let what = what.into();
        move |source| ServeError::Io { what, source }
    }
}
