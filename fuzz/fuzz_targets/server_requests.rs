//! Hostile requests through the whole server: `glmtune serve`'s router in this process, on a fresh
//! SQLite data folder, without a socket. The first byte picks a route that takes a body (the
//! multipart upload of `/v1/files`, the raw dataset upload with its query string, the JSON bodies
//! of the dashboard and OpenAI APIs); the rest is the request. Any answer but a server error is
//! fine: a panic, a 5xx, or an error whose body is not the JSON error `{"error": {…}}` every
//! client reads is a finding.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// The boundary the seeds' multipart bodies use.
const BOUNDARY: &str = "fuzz-boundary";

enum Payload {
    Multipart,
    /// The first line is the query string, the rest the uploaded file.
    QueryAndFile,
    Json,
}

const ROUTES: &[(&str, Payload)] = &[
    ("/v1/files", Payload::Multipart),
    ("/api/v1/datasets", Payload::QueryAndFile),
    ("/v1/chat/completions", Payload::Json),
    ("/api/v1/chats", Payload::Json),
    ("/api/v1/chats/nonexistent/messages", Payload::Json),
    ("/api/v1/runs", Payload::Json),
    ("/v1/fine_tuning/jobs", Payload::Json),
    ("/api/v1/auth/login", Payload::Json),
    ("/api/v1/keys", Payload::Json),
    ("/api/v1/datasets/nonexistent/split", Payload::Json),
];

struct Server {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("glmtune-fuzz-server-{}", std::process::id()));
        let dir = dir.to_string_lossy().into_owned();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        // No model is registered, so no request can start a training child.
        let args = glmtune::serve::flags(&[
            "--no-auth",
            "--data-dir",
            &dir,
            "--rate-limit",
            "0",
            "--max-upload-bytes",
            "65536",
        ])
        .expect("flags");
        let router = runtime
            .block_on(glmtune::serve::app(&args))
            .expect("the server starts");
        Server { runtime, router }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (path, kind) = &ROUTES[usize::from(pick) % ROUTES.len()];
    let request = Request::post(*path);
    let request = match kind {
        Payload::Multipart => request
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(Body::from(rest.to_vec())),
        Payload::QueryAndFile => {
            let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let query: String = String::from_utf8_lossy(&rest[..split])
                .chars()
                .filter(|c| c.is_ascii_graphic() && *c != '#')
                .collect();
            let file = rest.get(split + 1..).unwrap_or_default().to_vec();
            Request::post(format!("{path}?{query}")).body(Body::from(file))
        }
        Payload::Json => request
            .header("content-type", "application/json")
            .body(Body::from(rest.to_vec())),
    };
    // A query that is no valid URI is refused before any server sees it.
    let Ok(request) = request else {
        return;
    };
    let server = server();
    let response = server
        .runtime
        .block_on(async {
            let response = server.router.clone().oneshot(request).await?;
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await;
            Ok::<_, std::convert::Infallible>((status, body))
        })
        .expect("infallible");
    let (status, body) = response;
    let body = body.map(|b| b.to_vec()).unwrap_or_default();
    assert!(
        !status.is_server_error(),
        "{path}: {status}: {:?}",
        String::from_utf8_lossy(&body)
    );
    if status.is_client_error() {
        assert!(
            serde_json::from_slice::<glmtune_shared::error::ErrorBody>(&body).is_ok(),
            "{path}: {status} without the JSON error: {:?}",
            String::from_utf8_lossy(&body)
        );
    }
});
