//! The OpenAPI 3.1 document of every route, at `/api/openapi.json`. Each operation is the one its
//! handler's `#[utoipa::path]` describes (request and response schemas from the Rust types), taken
//! from the route table the router is built from (`routes.rs`), plus what the table knows: the
//! access it gets (`x-glmtune-access`, which the auth-matrix test checks against a running server)
//! and so its security.

use axum::Json;
use glmtune_shared::error::ErrorBody;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr,
    Required, ResponseBuilder,
};
use utoipa::{PartialSchema, ToSchema};

use crate::serve::auth::Need;
use crate::serve::routes::{self, Route, Schemas};

pub fn build() -> OpenApi {
    let mut paths = Paths::new();
    let mut schemas: Schemas = vec![(ErrorBody::name().into_owned(), ErrorBody::schema())];
    ErrorBody::schemas(&mut schemas);
    for route in routes::all(0) {
        (route.schemas)(&mut schemas);
        let method = match route.method {
            "get" => HttpMethod::Get,
            "post" => HttpMethod::Post,
            _ => HttpMethod::Delete,
        };
        let operation = complete(&route);
        paths.add_path_operation(route.path, vec![method], operation);
    }
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        )
        .security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::serve::auth::SESSION_COOKIE,
            ))),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("glmtune")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "P-Tuning v2 for ChatGLM: datasets, training runs, chats, and an \
                     OpenAI-compatible API.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

/// The handler's operation with what the route table adds: a unique id, the path parameters the
/// handler did not describe, who may call it, and the error every route may answer.
fn complete(route: &Route) -> Operation {
    let mut operation = route.operation.clone();
    // Handlers in different modules share names (`list`, `get_one`): ids come from the path.
    operation.operation_id = Some(format!(
        "{}{}",
        route.method,
        route.path.replace(['/', '{', '}', '.', '-'], "_")
    ));
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    for name in route
        .path
        .split('/')
        .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
    {
        let described = parameters
            .iter()
            .any(|p| p.name == name && p.parameter_in == ParameterIn::Path);
        if !described {
            parameters.push(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(String::schema()))
                    .build(),
            );
        }
    }
    operation.security = Some(if route.need == Need::Public {
        vec![]
    } else {
        vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("session", Vec::<String>::new()),
        ]
    });
    operation.extensions = Some(
        ExtensionsBuilder::new()
            .add("x-glmtune-access", route.need.as_str())
            .build(),
    );
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            if response.description.is_empty() {
                response.description = "Success".into();
            }
        }
    }
    operation.responses.responses.insert(
        "default".into(),
        ResponseBuilder::new()
            .description("Error")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                    .build(),
            )
            .build()
            .into(),
    );
    operation
}

/// Bytes as they are (a stored file, a zip, a checkpoint's tensors): a string of any content, where
/// utoipa would describe `[u8]` as an array of numbers.
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream")
            .into()
    }
}

impl ToSchema for Binary {}

/// This document
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    responses((status = 200, body = Object, description = "An OpenAPI 3.1 document"))
)]
pub async fn document() -> Json<OpenApi> {
    Json(build())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use crate::serve::routes;

    fn document() -> Value {
        serde_json::to_value(super::build()).unwrap()
    }

    /// Each route of the table has its operation in the document, and the document has no other.
    #[test]
    fn the_document_has_each_route_once() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        let routed: BTreeSet<(String, String)> = routes::all(0)
            .iter()
            .map(|r| (r.method.to_owned(), r.path.clone()))
            .collect();
        let mut documented = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                assert!(operation["x-glmtune-access"].is_string(), "{method} {path}");
                documented.insert((method.clone(), path.clone()));
            }
        }
        assert_eq!(routed, documented);
        assert!(routed.len() > 50, "only {} routes", routed.len());
    }

    /// Every `$ref` names a schema of the document.
    fn check_refs(value: &Value, schemas: &serde_json::Map<String, Value>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    let name = target.strip_prefix("#/components/schemas/").unwrap();
                    assert!(
                        schemas.contains_key(name),
                        "{target} is not in the document"
                    );
                }
                map.values().for_each(|v| check_refs(v, schemas));
            }
            Value::Array(items) => items.iter().for_each(|v| check_refs(v, schemas)),
            _ => {}
        }
    }

    /// A schema that says something: a reference, a type, or a choice of schemas.
    fn has_schema(content: &Value) -> bool {
        let schema = &content["schema"];
        ["$ref", "type", "oneOf", "anyOf", "allOf"]
            .iter()
            .any(|key| !schema[key].is_null())
    }

    /// Every operation answers success with a schema for each of its media types (but for 204 No
    /// Content), JSON ones included; every request body has a schema; every error is the one
    /// error shape.
    #[test]
    fn every_operation_has_schemas() {
        let document = document();
        let schemas = document["components"]["schemas"].as_object().unwrap();
        check_refs(&document, schemas);
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let route = format!("{method} {path}");
                let responses = operation["responses"].as_object().unwrap();
                let successes: Vec<_> = responses
                    .iter()
                    .filter(|(status, _)| status.starts_with('2'))
                    .collect();
                assert!(!successes.is_empty(), "{route}: no success response");
                for (status, response) in successes {
                    if status == "204" {
                        assert!(response["content"].is_null(), "{route}: 204 with content");
                        continue;
                    }
                    let content = response["content"].as_object();
                    let content = content.unwrap_or_else(|| panic!("{route}: {status} is empty"));
                    for (media, body) in content {
                        assert!(has_schema(body), "{route}: {status} {media} has no schema");
                    }
                }
                if let Some(body) = operation.get("requestBody") {
                    for (media, body) in body["content"].as_object().unwrap() {
                        assert!(has_schema(body), "{route}: request {media} has no schema");
                    }
                }
                assert_eq!(
                    responses["default"]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{route}"
                );
                let parameters = operation["parameters"].as_array().unwrap();
                for name in path
                    .split('/')
                    .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
                {
                    assert!(
                        parameters
                            .iter()
                            .any(|p| p["name"] == name && p["in"] == "path"),
                        "{route}: parameter {name}"
                    );
                }
            }
        }
    }

    /// An annotated handler and what it reads and answers, as written in the source.
    struct Annotated {
        attribute: String,
        name: String,
        arguments: String,
        answer: String,
    }

    /// The `#[utoipa::path(...)]` handlers under `src/serve`.
    fn annotated() -> Vec<Annotated> {
        let mut files = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/serve"
        ))];
        let mut found = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            // At the start of a line: an attribute, not a mention in a comment or a string.
            for piece in source.split("\n#[utoipa::path(").skip(1) {
                let (attribute, rest) = piece.split_once(")]\n").unwrap();
                let signature = &rest[rest.find("async fn ").unwrap() + 9..];
                let signature = &signature[..signature.find(" {").unwrap()];
                let (name, rest) = signature.split_once('(').unwrap();
                let (arguments, answer) = rest.rsplit_once(") -> ").unwrap();
                found.push(Annotated {
                    attribute: attribute.split_whitespace().collect::<Vec<_>>().join(" "),
                    name: name.to_owned(),
                    arguments: arguments.to_owned(),
                    answer: answer.to_owned(),
                });
            }
        }
        found
    }

    /// The type inside the first `Json<…>` of `text`.
    fn json_type(text: &str) -> Option<&str> {
        let start = text.find("Json<")? + 5;
        let mut depth = 1;
        for (i, c) in text[start..].char_indices() {
            match c {
                '<' => depth += 1,
                '>' if depth == 1 => return Some(&text[start..start + i]),
                '>' => depth -= 1,
                _ => {}
            }
        }
        None
    }

    /// No annotated handler is left out of the route table (its operation would be documented
    /// nowhere and served nowhere), and what the attributes say of bodies is what the handlers'
    /// types are: a handler reading `Json<T>` documents `request_body = T`, one answering
    /// `Json<T>` documents `body = T`.
    #[test]
    fn annotations_match_the_handlers() {
        let annotated = annotated();
        assert_eq!(annotated.len(), routes::all(0).len(), "annotated vs routed");
        for handler in &annotated {
            let name = &handler.name;
            match json_type(&handler.arguments) {
                Some(body) => assert!(
                    handler
                        .attribute
                        .contains(&format!("request_body = {body},")),
                    "{name} reads {body}: {}",
                    handler.attribute
                ),
                None => assert!(
                    !handler.attribute.contains("request_body = ")
                        || handler.attribute.contains("request_body(")
                        || handler.arguments.contains("Body")
                        || handler.arguments.contains("Multipart"),
                    "{name} documents a body it does not read"
                ),
            }
            // The document itself is utoipa's own type, described as an object.
            if let Some(answer) = json_type(&handler.answer).filter(|t| *t != "OpenApi") {
                assert!(
                    handler.attribute.contains(&format!("body = {answer})")),
                    "{name} answers {answer}: {}",
                    handler.attribute
                );
            }
        }
    }
}
