//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! It is generated from the code so it cannot drift from it unnoticed: each handler
//! carries its `#[utoipa::path]` (method, path, parameters, body, answers), the bodies
//! are the schemas of [`super::schema`], and [`super::ROUTES`] — the list the router is
//! built from — says which operations need the bearer token; [`Guards`] adds the answers
//! the router's own guards give (401 without the token, 403 for a non-loopback `Host`)
//! from that list. `tests/api.rs` checks the document against the routes the router
//! really serves; the unit tests below check the schemas against what the handlers
//! really serialize.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::schema::{Readiness, Receipt};
use super::{Access, ROUTES};

/// The name of the bearer scheme in `components.securitySchemes`.
const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cachesync sidecar HTTP API",
        description = "Upsert, delete and read rows of the configured tables (MySQL first, \
                       Redis kept in sync by the configured strategy), start online \
                       snapshots, and probe the process. Every refusal is JSON \
                       `{\"error\": \"<message>\"}` naming the column or table at fault."
    ),
    paths(
        super::read::read,
        super::write::upsert,
        super::write::delete,
        super::snapshots::start,
        super::snapshots::list,
        super::ready::readyz,
        super::ready::healthz,
        serve,
    ),
    // Bodies named in an IntoResponses type are not collected from the paths.
    components(schemas(Receipt, Readiness)),
    modifiers(&Guards),
)]
struct ApiDoc;

/// The document, as [`ApiDoc`] and [`Guards`] make it.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// `GET /openapi.json`: the document, rendered once (it depends on the code only).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This document (OpenAPI 3.1, JSON)", body = Object)),
)]
pub(super) async fn serve() -> Response {
    static RENDERED: OnceLock<String> = OnceLock::new();
    let body = RENDERED.get_or_init(|| {
        document()
            .to_pretty_json()
            .expect("an OpenAPI document always renders as JSON")
    });
    ([(header::CONTENT_TYPE, "application/json")], body.as_str()).into_response()
}

/// The answers of the router's guards, on the operations of [`ROUTES`]: the bearer
/// requirement and its 401 on every route that is not public, the `Host` check's 403 on
/// every route but `/healthz` (see [`super::Guards`]).
struct Guards;

impl Modify for Guards {
    fn modify(&self, doc: &mut Document) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                BEARER,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "`Authorization: Bearer <api.token>`, when the config sets \
                             api.token",
                        ))
                        .build(),
                ),
            );
        for route in ROUTES {
            let Some(item) = doc.paths.paths.get_mut(route.path) else {
                // Undocumented: tests/api.rs names it.
                continue;
            };
            let operation = match route.method {
                "GET" => item.get.as_mut(),
                "PUT" => item.put.as_mut(),
                "POST" => item.post.as_mut(),
                "DELETE" => item.delete.as_mut(),
                _ => None,
            };
            let Some(operation) = operation else {
                continue;
            };
            let answers = &mut operation.responses.responses;
            if route.access == Access::Token {
                operation.security =
                    Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
                answers.insert(
                    "401".to_owned(),
                    error_answer("Missing or wrong bearer token (`WWW-Authenticate: Bearer`)"),
                );
            }
            if route.path != "/healthz" {
                answers.insert(
                    "403".to_owned(),
                    error_answer(
                        "An API without api.token on a loopback address answers only \
                         requests whose Host is localhost or a loopback address",
                    ),
                );
            }
        }
    }
}

fn error_answer(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value as Json, json};

    use super::*;
    use crate::api::error::ErrorBody;
    use crate::model::change::{Applied, Op};
    use crate::strategy::{RedisOutcome, WriteReceipt};

    /// The property names of schema `name` in the document.
    fn properties(name: &str) -> Vec<String> {
        let doc = serde_json::to_value(document()).unwrap();
        let schema = &doc["components"]["schemas"][name];
        let mut names: Vec<String> = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no schema {name} with properties in {schema}"))
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    fn keys(value: &Json) -> Vec<String> {
        let mut names: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    #[test]
    fn the_schemas_name_what_the_handlers_send() {
        let receipt = WriteReceipt {
            committed_at_us: 1,
            version: Some(2),
            redis: RedisOutcome::Applied(Applied {
                written: 1,
                replayed: 0,
                stale: 0,
            }),
            row: None,
        };
        let sent = super::super::write::receipt_json("db.t", Op::Upsert, &receipt);
        assert_eq!(keys(&sent), properties("Receipt"));

        let requested = crate::snapshot::Requested {
            table: "db.t".into(),
            state: "started",
        };
        assert_eq!(
            keys(&serde_json::to_value(requested).unwrap()),
            properties("Requested")
        );
        let progress = crate::snapshot::Progress {
            table: "db.t".into(),
            reason: "requested".into(),
            rows_done: 0,
            rows_total: None,
            rows_per_s: None,
            requested_at_ms: 0,
            error: None,
        };
        assert_eq!(
            keys(&serde_json::to_value(progress).unwrap()),
            properties("Progress")
        );
        assert_eq!(
            keys(&serde_json::to_value(ErrorBody { error: "x".into() }).unwrap()),
            properties("ErrorBody")
        );
        assert_eq!(keys(&json!({"status": "ok"})), properties("Health"));
    }

    /// Every `$ref` under `value`.
    fn refs<'a>(value: &'a Json, found: &mut Vec<&'a str>) {
        match value {
            Json::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("$ref", Json::String(target)) => found.push(target),
                        _ => refs(inner, found),
                    }
                }
            }
            Json::Array(items) => items.iter().for_each(|i| refs(i, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let pointer = target.strip_prefix('#').unwrap_or(target);
            assert!(
                doc.pointer(pointer).is_some(),
                "{target} resolves to nothing"
            );
        }
    }

    #[test]
    fn guarded_operations_need_the_bearer_token_and_probes_do_not() {
        let doc = serde_json::to_value(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for route in ROUTES {
            let operation = &doc["paths"][route.path][route.method.to_lowercase()];
            assert!(
                operation.is_object(),
                "{} {} undocumented",
                route.method,
                route.path
            );
            let security = &operation["security"];
            if route.access == Access::Public {
                assert!(security.is_null(), "{} {}", route.method, route.path);
            } else {
                assert_eq!(security, &json!([{ BEARER: [] }]), "{}", route.path);
                assert!(operation["responses"]["401"].is_object(), "{}", route.path);
            }
        }
    }
}
