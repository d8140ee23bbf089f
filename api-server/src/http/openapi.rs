//! The OpenAPI 3.1 document: document-level metadata, the API-key security scheme, and a final pass
//! that gives every response a description, documents the errors any operation can return and the
//! HTTP caching headers of every route (`Cache-Control`, and `ETag`/`If-None-Match`/304 on cached
//! reads), taken from the same function the edge answers with.

use utoipa::OpenApi;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::{Object, RefOr, Required, Response, ResponseBuilder, Type};

use crate::error::ErrorBody;
use crate::http::layers::read_cache_control;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Plamatio store API",
        description = "Products, categories, cart, orders and users of the Plamatio store.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecurityAddon),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "API key with the storefront or admin scope: `Authorization: Bearer <key>`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "user_token",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "X-User-Token",
                    "The shopper's session token (JWT) when PLAMATIO_USER_AUTH is optional or required",
                ),
            )),
        );
    }
}

fn describe(status: &str) -> &'static str {
    match status {
        "200" => "Success",
        "400" => {
            "Invalid argument: malformed JSON, a wrong type, a bad path parameter or a failed validation"
        }
        "401" => "Missing or invalid API key",
        "403" => "The API key lacks the required scope",
        "404" => "Not found",
        "409" => "Conflict with the current state",
        "413" => "Request body larger than 1 MiB",
        "415" => "Body is not application/json",
        "422" => "Idempotency key reused with a different request",
        "429" => "Rate limit exceeded",
        "500" => "Internal error",
        "503" => "Database unavailable; retry later",
        "504" => "Request timed out",
        _ => "Response",
    }
}

fn error_response(status: &str) -> RefOr<Response> {
    let content = utoipa::openapi::ContentBuilder::new()
        .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
        .build();
    RefOr::T(
        ResponseBuilder::new()
            .description(describe(status))
            .content("application/json", content)
            .build(),
    )
}

/// Whether a GET route answers from a cache entry, with its `ETag` (search results are not cached).
fn is_conditional(path: &str, cache_control: &str) -> bool {
    cache_control != "no-store" && !path.starts_with("/products/search/")
}

/// Documents `Cache-Control` on every success, and `ETag`, `If-None-Match` and 304 on cached reads.
fn document_http_caching(path: &str, method: &str, operation: &mut Operation) {
    let read = method == "get";
    let cache_control = if read {
        read_cache_control(Some(path))
    } else {
        axum::http::HeaderValue::from_static("no-store")
    };
    let cache_control = cache_control.to_str().unwrap_or("no-store").to_owned();
    let conditional = read && is_conditional(path, &cache_control);
    let who_keeps = match cache_control.as_str() {
        "no-store" => "never stored by any cache".to_owned(),
        "private, no-cache" => {
            "shopper data: never kept by shared caches; a browser revalidates with `If-None-Match` on every use".to_owned()
        }
        "no-cache" => "revalidated with `If-None-Match` on every use".to_owned(),
        other => format!("catalog data: any cache may keep it as `{other}` says"),
    };
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if !status.starts_with('2') {
            continue;
        }
        let value = if status == "200" {
            cache_control.as_str()
        } else {
            "no-store"
        };
        response.headers.insert(
            "Cache-Control".to_owned(),
            RefOr::T(
                HeaderBuilder::new()
                    .schema(Some(Object::with_type(Type::String)))
                    .description(Some(format!("`{value}`: {who_keeps}")))
                    .build(),
            ),
        );
        if conditional && status == "200" {
            response.headers.insert(
                "ETag".to_owned(),
                RefOr::T(
                    HeaderBuilder::new()
                        .schema(Some(Object::with_type(Type::String)))
                        .description(Some(
                            "Strong entity tag of the cached answer (absent on pages, `limit`/`after`); \
                             a compressed answer has the encoding appended (`\"…-gzip\"`)",
                        ))
                        .build(),
                ),
            );
        }
    }
    if !conditional {
        return;
    }
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(RefOr::T(
            ParameterBuilder::new()
                .name("If-None-Match")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Entity tags the client holds: when one names the current answer, 304 without a \
                     body (checked after authorization, so it never reveals what the caller may not read)",
                ))
                .schema(Some(Object::with_type(Type::String)))
                .build(),
        ));
    operation.responses.responses.insert(
        "304".to_owned(),
        RefOr::T(
            ResponseBuilder::new()
                .description("Not modified: the `If-None-Match` tag names the current answer")
                .header(
                    "ETag",
                    HeaderBuilder::new()
                        .schema(Some(Object::with_type(Type::String)))
                        .description(Some("The tag that matched"))
                        .build(),
                )
                .build(),
        ),
    );
}

/// Routes the rate limiter never answers.
const UNLIMITED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

fn finish_operation(path: &str, method: &str, operation: &mut Operation) {
    document_http_caching(path, method, operation);
    let authenticated = operation.security.is_some();
    let has_body = operation.request_body.is_some();
    let responses = &mut operation.responses.responses;
    let mut common = vec!["500", "504"];
    if !UNLIMITED.contains(&path) {
        common.push("429");
    }
    if authenticated {
        // any authenticated call can meet a bad query string, a missing key or the database down
        common.extend(["400", "401", "503"]);
    }
    if has_body {
        common.extend(["413", "415"]);
    }
    if matches!(method, "post" | "put") {
        // Idempotency-Key: a duplicate still running (409) or a reused key (422)
        common.extend(["409", "422"]);
    }
    for status in common {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(status));
    }
    for (status, response) in responses.iter_mut() {
        if let RefOr::T(response) = response
            && response.description.is_empty()
        {
            response.description = describe(status).to_owned();
        }
    }
}

/// Completes a document assembled from the routers.
pub fn finish(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for (path, item) in document.paths.paths.iter_mut() {
        for (method, operation) in [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ] {
            if let Some(operation) = operation {
                finish_operation(path, method, operation);
            }
        }
    }
    document
}
