//! The OpenAPI 3.1 document: document-level metadata, the API-key security scheme, and a final pass
//! that gives every response a description and documents the errors any operation can return.

use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{RefOr, Response, ResponseBuilder};

use crate::error::ErrorBody;

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

/// Routes the rate limiter never answers.
const UNLIMITED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

fn finish_operation(path: &str, method: &str, operation: &mut Operation) {
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
