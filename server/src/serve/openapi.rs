//! The OpenAPI 3.1 document of every route, at `/api/openapi.json`. The operation table here is
//! also what the auth-matrix test walks, so a route missing from it is a failing test.

use axum::Json;

/// (method, path, summary, who may call: public / read / write / admin).
pub const OPERATIONS: &[(&str, &str, &str, &str)] = &[
    ("get", "/healthz", "Liveness check", "public"),
    ("get", "/metrics", "Prometheus metrics", "read"),
    ("get", "/api/openapi.json", "This document", "read"),
    (
        "get",
        "/api/v1/auth/status",
        "Whether first-run setup is needed",
        "public",
    ),
    (
        "post",
        "/api/v1/auth/setup",
        "Create the first admin with the setup token",
        "public",
    ),
    (
        "post",
        "/api/v1/auth/login",
        "Sign in; sets the session cookie",
        "public",
    ),
    ("post", "/api/v1/auth/logout", "Sign out", "read"),
    ("get", "/api/v1/auth/me", "The caller", "read"),
    ("get", "/api/v1/users", "List users", "admin"),
    ("post", "/api/v1/users", "Create a user", "admin"),
    ("delete", "/api/v1/users/{id}", "Delete a user", "admin"),
    ("get", "/api/v1/keys", "List API keys", "read"),
    (
        "post",
        "/api/v1/keys",
        "Create an API key (the secret is shown once)",
        "write",
    ),
    ("delete", "/api/v1/keys/{id}", "Revoke an API key", "write"),
    ("get", "/api/v1/models", "List base models", "read"),
    (
        "post",
        "/api/v1/models",
        "Register a checkpoint folder on the server",
        "admin",
    ),
    (
        "get",
        "/api/v1/models/{name}/files",
        "The files of a model's folder",
        "read",
    ),
    (
        "get",
        "/api/v1/models/{name}/files/{file}",
        "One file of a model's folder (range requests)",
        "read",
    ),
    ("get", "/api/v1/datasets", "List datasets", "read"),
    (
        "post",
        "/api/v1/datasets",
        "Upload a dataset (the body is the file)",
        "write",
    ),
    (
        "get",
        "/api/v1/datasets/{id}",
        "A dataset with statistics and preview",
        "read",
    ),
    (
        "delete",
        "/api/v1/datasets/{id}",
        "Delete a dataset no run uses",
        "write",
    ),
    (
        "get",
        "/api/v1/datasets/{id}/content",
        "The stored file",
        "read",
    ),
    (
        "post",
        "/api/v1/datasets/{id}/split",
        "Split into train and validation datasets",
        "write",
    ),
    (
        "get",
        "/api/v1/presets",
        "Run presets and domain templates",
        "read",
    ),
    ("get", "/api/v1/runs", "List runs", "read"),
    ("post", "/api/v1/runs", "Queue a training run", "write"),
    ("get", "/api/v1/runs/{id}", "A run", "read"),
    (
        "post",
        "/api/v1/runs/{id}/cancel",
        "Cancel a queued or running run",
        "write",
    ),
    (
        "post",
        "/api/v1/runs/{id}/resume",
        "Resume a failed or cancelled run from its last checkpoint",
        "write",
    ),
    (
        "get",
        "/api/v1/runs/{id}/logs",
        "The trainer's output",
        "read",
    ),
    (
        "get",
        "/api/v1/runs/{id}/events",
        "Progress as Server-Sent Events (Last-Event-ID replays)",
        "read",
    ),
    (
        "get",
        "/api/v1/runs/{id}/events.json",
        "Progress events as JSON",
        "read",
    ),
    (
        "get",
        "/api/v1/runs/{id}/checkpoints",
        "Saved checkpoints",
        "read",
    ),
    (
        "get",
        "/api/v1/runs/{id}/evaluation",
        "BLEU/ROUGE and sample predictions",
        "read",
    ),
    (
        "get",
        "/api/v1/runs/{id}/adapter",
        "The adapter as a zip in the official layout",
        "read",
    ),
    ("get", "/api/v1/chats", "The caller's chats", "read"),
    (
        "post",
        "/api/v1/chats",
        "Start a chat with a model or a run's adapter",
        "write",
    ),
    (
        "get",
        "/api/v1/chats/{id}",
        "A chat with its messages",
        "read",
    ),
    ("delete", "/api/v1/chats/{id}", "Delete a chat", "write"),
    (
        "post",
        "/api/v1/chats/{id}/messages",
        "Ask; the answer is stored (streamed with stream: true)",
        "write",
    ),
    (
        "get",
        "/v1/models",
        "OpenAI: models and fine-tuned models",
        "read",
    ),
    (
        "post",
        "/v1/chat/completions",
        "OpenAI: chat completion (streaming or not)",
        "read",
    ),
    ("get", "/v1/files", "OpenAI: list files", "read"),
    (
        "post",
        "/v1/files",
        "OpenAI: upload a fine-tuning file (multipart)",
        "write",
    ),
    ("get", "/v1/files/{id}", "OpenAI: a file", "read"),
    ("delete", "/v1/files/{id}", "OpenAI: delete a file", "write"),
    (
        "get",
        "/v1/files/{id}/content",
        "OpenAI: a file's bytes",
        "read",
    ),
    (
        "get",
        "/v1/fine_tuning/jobs",
        "OpenAI: list fine-tuning jobs",
        "read",
    ),
    (
        "post",
        "/v1/fine_tuning/jobs",
        "OpenAI: create a fine-tuning job",
        "write",
    ),
    (
        "get",
        "/v1/fine_tuning/jobs/{id}",
        "OpenAI: a fine-tuning job",
        "read",
    ),
    (
        "get",
        "/v1/fine_tuning/jobs/{id}/events",
        "OpenAI: a job's events",
        "read",
    ),
    (
        "get",
        "/v1/fine_tuning/jobs/{id}/checkpoints",
        "OpenAI: a job's checkpoints",
        "read",
    ),
    (
        "post",
        "/v1/fine_tuning/jobs/{id}/cancel",
        "OpenAI: cancel a job",
        "write",
    ),
];

pub fn build() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, access) in OPERATIONS {
        let parameters: Vec<serde_json::Value> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                serde_json::json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        let security = if *access == "public" {
            serde_json::json!([])
        } else {
            serde_json::json!([{"bearer": []}, {"session": []}])
        };
        let operation_id = format!("{method}{}", path.replace(['/', '{', '}', '.', '-'], "_"));
        let operation = serde_json::json!({
            "summary": summary,
            "operationId": operation_id,
            "parameters": parameters,
            "security": security,
            "x-glmtune-access": access,
            "responses": {
                "200": {"description": "Success"},
                "default": {
                    "description": "Error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }
            }
        });
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| serde_json::json!({}));
        entry[*method] = operation;
    }
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {
            "title": "glmtune",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "P-Tuning v2 for ChatGLM: datasets, training runs, chats, and an OpenAI-compatible API."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": crate::serve::auth::SESSION_COOKIE}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "details": {}
                            }
                        }
                    }
                }
            }
        }
    })
}

pub async fn document() -> Json<serde_json::Value> {
    Json(build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::auth::{required, Need};

    /// The documented access of every operation is what the auth middleware enforces.
    #[test]
    fn documented_access_matches_the_middleware() {
        for (method, path, _, access) in OPERATIONS {
            let method: axum::http::Method = method.to_uppercase().parse().unwrap();
            let concrete = path.replace("{id}", "x");
            let expected = match *access {
                "public" => Need::Public,
                "read" => Need::Read,
                "write" => Need::Write,
                _ => Need::Admin,
            };
            assert_eq!(required(&method, &concrete), expected, "{method} {path}");
        }
    }
}
