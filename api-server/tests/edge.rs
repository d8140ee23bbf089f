//! The HTTP edge: authentication, routing errors, error shapes, request ids, CORS, body limits,
//! public service endpoints and the OpenAPI document.

use crate::common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request};
use common::TestApp;
use serde_json::{Value, json};

#[tokio::test]
async fn core_info_is_public() {
    let app = TestApp::new().await;
    let response = app.send(Method::GET, "/core/info", None, None, &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        json!({"data": "This is Plamatio Backend REST API. For more information, check: https://github.com/pranav-kural/plamatio-backend"})
    );
}

#[tokio::test]
async fn health_and_readiness_are_public() {
    let app = TestApp::new().await;
    let health = app.send(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(
        (health.status.as_u16(), health.body["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = app.send(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body, json!({"status": "ok", "cache": "memory"}));
}

#[tokio::test]
async fn readiness_fails_when_postgres_is_gone() {
    let app = TestApp::new().await;
    app.pool.close().await;
    let ready = app.send(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["status"], "unavailable");
    // and data requests answer 503 unavailable with a generic message
    let response = app.get("/products/get/1").await;
    assert_eq!(
        response.assert_error(503, "unavailable"),
        "service temporarily unavailable"
    );
}

#[tokio::test]
async fn missing_or_malformed_auth_is_401_invalid_auth_param() {
    let app = TestApp::new().await;
    let expected =
        json!({"code": "unauthenticated", "message": "invalid auth param", "details": null});
    for header in [
        None,
        Some("Basic x"),
        Some("Bearer "),
        Some("Bearer"),
        Some(app.storefront_key.as_str()),
    ] {
        let response = app
            .send(Method::GET, "/products/all", header, None, &[])
            .await;
        assert_eq!(response.status, 401, "header {header:?}");
        assert_eq!(response.body, expected, "header {header:?}");
    }
}

#[tokio::test]
async fn unknown_key_is_401_invalid_api_key() {
    let app = TestApp::new().await;
    let response = app
        .send(
            Method::GET,
            "/products/all",
            Some("Bearer plm_nope"),
            None,
            &[],
        )
        .await;
    assert_eq!(response.status, 401);
    assert_eq!(
        response.body,
        json!({"code": "unauthenticated", "message": "invalid API key", "details": null})
    );
}

#[tokio::test]
async fn token_prefix_is_accepted_and_admin_key_works_everywhere() {
    let app = TestApp::new().await;
    let token = format!("Token {}", app.storefront_key);
    assert_eq!(
        app.send(Method::GET, "/products/get/1", Some(&token), None, &[])
            .await
            .status,
        200
    );
    for path in [
        "/products/all",
        "/categories/all",
        "/products/hero",
        "/categories/subcategories/all",
    ] {
        assert_eq!(
            app.admin(Method::GET, path, None).await.status,
            200,
            "{path}"
        );
    }
}

#[tokio::test]
async fn auth_is_checked_before_path_and_body_parsing() {
    let app = TestApp::new().await;
    let response = app
        .send(Method::GET, "/products/get/abc", None, None, &[])
        .await;
    assert_eq!(response.status, 401);
    let response = app
        .send(
            Method::POST,
            "/products/add",
            Some(&format!("Bearer {}", app.storefront_key)),
            Some(&json!("not an object")),
            &[],
        )
        .await;
    assert_eq!(response.status, 403);
}

#[tokio::test]
async fn unknown_route_is_404_endpoint_not_found_before_auth() {
    let app = TestApp::new().await;
    let response = app.send(Method::GET, "/nope", None, None, &[]).await;
    assert_eq!(response.status, 404);
    assert_eq!(
        response.body,
        json!({"code": "not_found", "message": "endpoint not found", "details": null})
    );
    let response = app
        .send(Method::GET, "/products/get/1/extra", None, None, &[])
        .await;
    assert_eq!(response.body["message"], "endpoint not found");
}

#[tokio::test]
async fn wrong_method_is_405_unimplemented_with_allow() {
    let app = TestApp::new().await;
    let response = app
        .send(Method::DELETE, "/products/all", None, None, &[])
        .await;
    assert_eq!(
        response.assert_error(405, "unimplemented"),
        "method not allowed"
    );
    let allow = response.header("allow").unwrap_or_default().to_owned();
    assert!(allow.contains("GET"), "Allow: {allow}");
    let response = app
        .send(Method::GET, "/products/add", None, None, &[])
        .await;
    response.assert_error(405, "unimplemented");
    assert!(
        response
            .header("allow")
            .unwrap_or_default()
            .contains("POST")
    );
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::new().await;
    let request = Request::post("/products/add")
        .header("authorization", format!("Bearer {}", app.admin_key))
        .header("content-type", "application/json")
        .body(Body::from("{\"name\": "))
        .unwrap();
    let response = app.send_request(request).await;
    assert_eq!(
        response.assert_error(400, "invalid_argument"),
        "malformed JSON body"
    );
}

#[tokio::test]
async fn body_without_content_type_is_parsed_as_json_and_other_types_are_415() {
    let app = TestApp::new().await;
    let body = json!({"name": "X", "description": "Y", "category": 3, "subCategory": 9, "imageUrl": "u", "price": 3});
    let request = Request::post("/products/add")
        .header("authorization", format!("Bearer {}", app.admin_key))
        .body(Body::from(body.to_string()))
        .unwrap();
    assert_eq!(app.send_request(request).await.status, 200);
    let request = Request::post("/products/add")
        .header("authorization", format!("Bearer {}", app.admin_key))
        .header("content-type", "text/plain")
        .body(Body::from(body.to_string()))
        .unwrap();
    app.send_request(request)
        .await
        .assert_error(415, "invalid_argument");
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = TestApp::new().await;
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let request = Request::post("/products/add")
        .header("authorization", format!("Bearer {}", app.admin_key))
        .header("content-type", "application/json")
        .body(Body::from(huge))
        .unwrap();
    let response = app.send_request(request).await;
    assert_eq!(
        response.assert_error(413, "invalid_argument"),
        "request body too large"
    );
}

#[tokio::test]
async fn request_id_is_echoed_when_acceptable_and_generated_otherwise() {
    let app = TestApp::new().await;
    let response = app
        .send(
            Method::GET,
            "/healthz",
            None,
            None,
            &[("x-request-id", "abc-123.x_y")],
        )
        .await;
    assert_eq!(response.header("x-request-id"), Some("abc-123.x_y"));
    let response = app
        .send(
            Method::GET,
            "/healthz",
            None,
            None,
            &[("x-request-id", "bad id!")],
        )
        .await;
    let generated = response.header("x-request-id").unwrap();
    assert_ne!(generated, "bad id!");
    assert!(uuid::Uuid::parse_str(generated).is_ok());
    let response = app.send(Method::GET, "/nope", None, None, &[]).await;
    assert!(
        response.header("x-request-id").is_some(),
        "errors carry a request id too"
    );
}

#[tokio::test]
async fn cors_allows_configured_origins_on_errors_too() {
    let app = TestApp::new().await;
    let origin = "https://plamatio-frontend.vercel.app";
    let response = app
        .send(
            Method::GET,
            "/products/get/999",
            Some(&format!("Bearer {}", app.storefront_key)),
            None,
            &[("origin", origin)],
        )
        .await;
    assert_eq!(response.status, 404);
    assert_eq!(response.header("access-control-allow-origin"), Some(origin));
    assert!(
        response
            .header("access-control-allow-credentials")
            .is_none(),
        "no credentials unless configured"
    );
    let exposed = response
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");

    let response = app
        .send(
            Method::GET,
            "/products/all",
            None,
            None,
            &[("origin", "https://evil.example")],
        )
        .await;
    assert!(response.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn cors_preflight_is_answered_without_auth() {
    let app = TestApp::new().await;
    let response = app
        .send(
            Method::OPTIONS,
            "/cart/add",
            None,
            None,
            &[
                ("origin", "https://plamatio.pkural.ca"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization,content-type,idempotency-key",
                ),
            ],
        )
        .await;
    assert!(response.status.is_success(), "{}", response.status);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://plamatio.pkural.ca")
    );
    let methods = response
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(methods.contains("DELETE"), "{methods}");
    let headers = response
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.contains("idempotency-key") && headers.contains("authorization"),
        "{headers}"
    );
}

/// `GET /products/all` with `auth` and, when given, `Accept-Encoding: accept`.
async fn all_products_accepting(
    app: &TestApp,
    auth: &str,
    accept: Option<&str>,
) -> common::TestResponse {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept-encoding", a)).into_iter().collect();
    app.send(Method::GET, "/products/all", Some(auth), None, &headers)
        .await
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let app = TestApp::new().await;
    let auth = format!("Bearer {}", app.storefront_key);
    // Requests without `Accept-Encoding` skip the compression layer; the others choose their
    // coding there, whatever the case of its name. Every answer says it varies by coding.
    for (accept, expected) in [
        (Some("gzip"), Some("gzip")),
        (Some("br"), Some("br")),
        (Some("GZIP;q=1.0, identity"), Some("gzip")),
        (Some("deflate, br;q=0.5"), Some("br")),
        (Some("identity"), None),
        (Some("deflate"), None),
        (None, None),
    ] {
        let response = all_products_accepting(&app, &auth, accept).await;
        assert_eq!(response.status, 200, "{accept:?}");
        assert_eq!(response.header("content-encoding"), expected, "{accept:?}");
        let vary: Vec<_> = response.headers.get_all("vary").iter().collect();
        assert!(
            vary.iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"accept-encoding")),
            "{accept:?}: vary {vary:?}"
        );
    }
}

/// A write is never answered 406 after it committed: with every coding ruled out
/// (`identity;q=0`), the compression layer would overwrite the handler's status; writes skip it.
#[tokio::test]
async fn a_write_refusing_every_coding_is_answered_with_its_real_status() {
    let app = TestApp::new().await;
    let auth = format!("Bearer {}", app.admin_key);
    let product = json!({
        "name": "Llama Coding Probe", "description": "d", "imageUrl": "https://x.example/y.png",
        "price": 10, "previousPrice": 12, "category": 1, "subCategory": 1, "offered": true
    });
    let response = app
        .send(
            Method::POST,
            "/products/add",
            Some(&auth),
            Some(&product),
            &[("accept-encoding", "identity;q=0, *;q=0")],
        )
        .await;
    assert!(
        response.status.is_success(),
        "{}: {}",
        response.status,
        response.body
    );
    assert_eq!(response.header("content-encoding"), None);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM products WHERE name = 'Llama Coding Probe'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, 1);
    // A read that rules out every coding still gets the compression layer's 406.
    let response = all_products_accepting(&app, &auth, Some("identity;q=0, *;q=0")).await;
    assert_eq!(response.status, 406);
}

#[tokio::test]
async fn metrics_are_public_prometheus_text() {
    let app = TestApp::new().await;
    app.get("/products/all").await;
    let response = app.send(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(response.status, 200);
    let text = String::from_utf8(response.raw).unwrap();
    assert!(
        text.contains("cache_lookups_total{keyspace=\"products-cache\",result=\"miss\"} 1"),
        "{text}"
    );
}

fn documented_operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths object") {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

/// Every route of the contract (api.md §3 and §6), with path parameters named as in the contract.
const CONTRACT_ROUTES: &[(&str, &str)] = &[
    ("GET", "/core/info"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/products/get/{id}"),
    ("GET", "/products/all"),
    ("GET", "/products/category/{id}"),
    ("GET", "/products/subcategory/{id}"),
    ("GET", "/products/hero"),
    ("GET", "/products/hero/category/{category}"),
    ("GET", "/products/search/{query}"),
    ("POST", "/products/add"),
    ("PUT", "/products/update/{id}"),
    ("DELETE", "/products/delete/{id}"),
    ("GET", "/categories/get/{id}"),
    ("GET", "/categories/all"),
    ("GET", "/categories/subcategories/get/{id}"),
    ("GET", "/categories/subcategories/all"),
    ("GET", "/categories/subcategories/category/{category_id}"),
    ("GET", "/cart/get/{id}"),
    ("GET", "/cart/all/{user_id}"),
    ("POST", "/cart/add"),
    ("POST", "/cart/add/all"),
    ("PUT", "/cart/update"),
    ("DELETE", "/cart/delete/{id}/user/{user_id}"),
    ("GET", "/orders/get/{id}"),
    ("GET", "/orders/all/{user_id}"),
    ("POST", "/orders/add"),
    ("PUT", "/orders/update"),
    ("DELETE", "/orders/delete/{id}/user/{user_id}"),
    ("GET", "/orders/items/get/{id}"),
    ("GET", "/orders/items/all/{order_id}"),
    ("POST", "/orders/items/add"),
    ("PUT", "/orders/items/update"),
    ("DELETE", "/orders/items/delete/{id}"),
    ("GET", "/orders/detailed/get/{order_id}"),
    ("GET", "/orders/detailed/all/{user_id}"),
    ("POST", "/orders/detailed/add"),
    ("GET", "/users/get/{id}"),
    ("GET", "/users/all"),
    ("POST", "/users/add"),
    ("PUT", "/users/update"),
    ("DELETE", "/users/delete/{id}"),
    ("GET", "/users/addresses/get/{id}"),
    ("GET", "/users/addresses/user/{user_id}"),
    ("POST", "/users/addresses/add"),
    ("PUT", "/users/addresses/update"),
    (
        "DELETE",
        "/users/addresses/delete/{address_id}/user/{user_id}",
    ),
    ("POST", "/events/user"),
    ("GET", "/events/stream/{user_id}"),
];

#[tokio::test]
async fn openapi_document_is_3_1_and_lists_exactly_the_served_routes() {
    let app = TestApp::new().await;
    let response = app
        .send(Method::GET, "/openapi.json", None, None, &[])
        .await;
    assert_eq!(response.status, 200);
    let document = response.body;
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    let documented = documented_operations(&document);
    let expected: BTreeSet<(String, String)> = CONTRACT_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);

    // every documented operation is routed (not the 404 fallback, not 405) and documents its errors
    for (method, path) in &documented {
        if path == "/events/stream/{user_id}" {
            continue; // an endless stream; covered by the events tests
        }
        let concrete = path
            .replace("{id}", "1")
            .replace("{category}", "1")
            .replace("{category_id}", "1")
            .replace("{order_id}", "1")
            .replace("{address_id}", "1")
            .replace("{user_id}", "user_x")
            .replace("{query}", "mug");
        let response = app.admin(method.parse().unwrap(), &concrete, None).await;
        assert_ne!(
            response.body["message"], "endpoint not found",
            "{method} {path}"
        );
        assert_ne!(response.status, 405, "{method} {path}");
        let operation = &document["paths"][path][method.to_lowercase()];
        assert!(
            operation["responses"]["200"].is_object(),
            "{method} {path} documents 200"
        );
        if ![
            "/core/info",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
        ]
        .contains(&path.as_str())
        {
            assert!(
                operation["responses"]["401"].is_object(),
                "{method} {path} documents 401"
            );
            assert!(
                operation["security"].is_array(),
                "{method} {path} declares security"
            );
        }
    }
}

#[tokio::test]
async fn openapi_references_all_resolve() {
    let app = TestApp::new().await;
    let document = app
        .send(Method::GET, "/openapi.json", None, None, &[])
        .await
        .body;
    fn walk(value: &Value, document: &Value, seen: &mut usize) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    let pointer = reference.trim_start_matches('#');
                    assert!(
                        document.pointer(pointer).is_some(),
                        "unresolved {reference}"
                    );
                    *seen += 1;
                }
                map.values().for_each(|v| walk(v, document, seen));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, document, seen)),
            _ => {}
        }
    }
    let mut seen = 0;
    walk(&document, &document, &mut seen);
    assert!(seen > 10, "expected schema references, found {seen}");
    assert!(document["components"]["schemas"]["Product"]["properties"]["subCategory"].is_object());
    assert!(document["components"]["securitySchemes"]["api_key"].is_object());
}

#[tokio::test]
async fn a_request_over_the_timeout_is_504_deadline_exceeded() {
    use plamatio_api::http::layers::EdgeConfig;
    let app = TestApp::new().await;
    let edge = EdgeConfig {
        cors_origins: vec![],
        cors_credentials: false,
        cors_localhost: false,
        request_timeout: std::time::Duration::from_millis(300),
        http_metrics: true,
        trace_sampling: None,
    };
    let router = plamatio_api::app(app.state.clone(), &edge);
    // hold the product's row lock so the update below waits past the timeout
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM products WHERE id = 3 FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let body = json!({"name": "X", "description": "Y", "category": 2, "subCategory": 5, "imageUrl": "u", "price": 3});
    let request = Request::put("/products/update/3")
        .header("authorization", format!("Bearer {}", app.admin_key))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
    assert_eq!(response.status(), 504);
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        error,
        json!({"code": "deadline_exceeded", "message": "request timed out", "details": null})
    );
    blocker.rollback().await.unwrap();
    // the timed-out transaction was rolled back: no change, no event
    assert_eq!(
        app.get("/products/get/3").await.body["name"],
        "Llama Mauve Candle"
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events, 0);
}

#[tokio::test]
async fn nul_characters_in_text_are_400_not_a_server_error() {
    // found by schemathesis: PostgreSQL text cannot hold U+0000
    let app = TestApp::new().await;
    let body = json!({"id": "user_nul", "firstName": "A\u{0}B", "lastName": "L", "email": "n@example.com"});
    let response = app
        .storefront(Method::POST, "/users/add", Some(&body))
        .await;
    assert_eq!(
        response.assert_error(400, "invalid_argument"),
        "text values must not contain NUL characters"
    );
    let event = json!({
        "user_id": "u", "event_type": "click", "core_component": "c\u{0}", "client_id": "web",
        "timestamp": "2026-11-25T10:00:00Z"
    });
    let response = app
        .storefront(Method::POST, "/events/user", Some(&event))
        .await;
    response.assert_error(400, "invalid_argument");
    // also deep inside the free-form metadata, in a value or a key
    for metadata in [json!({"page": {"path": ["/a\u{0}"]}}), json!({"k\u{0}": 1})] {
        let event = json!({
            "user_id": "u", "event_type": "click", "core_component": "c", "client_id": "web",
            "timestamp": "2026-11-25T10:00:00Z", "metadata": metadata
        });
        let response = app
            .storefront(Method::POST, "/events/user", Some(&event))
            .await;
        assert_eq!(
            response.assert_error(400, "invalid_argument"),
            "text values must not contain NUL characters"
        );
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE topic = 'user_events'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "no event with a NUL character was stored");
    let response = app.get("/users/get/a%00b").await;
    response.assert_error(400, "invalid_argument");
    let response = app.get("/products/search/a%00b").await;
    response.assert_error(400, "invalid_argument");
}

#[tokio::test]
async fn every_authenticated_operation_documents_its_common_errors() {
    // found by schemathesis: list endpoints answered 400 (bad limit/cursor) without documenting it
    let app = TestApp::new().await;
    let document = app
        .send(Method::GET, "/openapi.json", None, None, &[])
        .await
        .body;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation.get("security").is_none() {
                continue;
            }
            for status in ["400", "401", "429", "500", "503", "504"] {
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {path} documents {status}"
                );
            }
            if method == "post" || method == "put" {
                for status in ["409", "422"] {
                    assert!(
                        operation["responses"][status].is_object(),
                        "{method} {path} documents {status}"
                    );
                }
            }
        }
    }
}
