//! The OpenAPI 3.1 document of every route, at `/api/openapi.json`, written from the route table
//! the router is built from (`routes.rs`): each operation with the access it gets
//! (`x-glmtune-access`), which the auth-matrix test checks against a running server.

use axum::Json;

pub fn build() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for route in crate::serve::routes::all(0) {
        let (method, path, summary, access) =
            (route.method, route.path, route.summary, route.need.as_str());
        let parameters: Vec<serde_json::Value> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                serde_json::json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        let security = if access == "public" {
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
        entry[method] = operation;
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
