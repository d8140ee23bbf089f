//! The production edge of api.md §6: Idempotency-Key replays, keyset pagination of every list, and
//! per-key/per-IP rate limits.

use crate::common;

use std::collections::HashSet;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use common::{TestApp, TestResponse};
use plamatio_api::http::ratelimit::RateLimits;
use serde_json::{Value, json};

async fn seed_shopper(app: &TestApp) {
    sqlx::raw_sql(
        "INSERT INTO users (id, first_name, last_name, email) VALUES ('user_a', 'Ada', 'L', 'ada@example.com');
         INSERT INTO addresses (street, city, state, country, zip_code, user_id)
             VALUES ('1 Main St', 'Toronto', 'ON', 'CA', 'M1M 1M1', 'user_a');",
    )
    .execute(&app.pool)
    .await
    .unwrap();
}

fn checkout() -> Value {
    json!({
        "order": {"user_id": "user_a", "address_id": 1, "total_price": 95.5, "status": "pending"},
        "items": [{"product_id": 3, "quantity": 1}, {"product_id": 14, "quantity": 2}]
    })
}

async fn keyed(app: &TestApp, method: Method, path: &str, key: &str, body: &Value) -> TestResponse {
    let auth = format!("Bearer {}", app.storefront_key);
    app.send(
        method,
        path,
        Some(&auth),
        Some(body),
        &[("idempotency-key", key)],
    )
    .await
}

async fn rows_in(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retried_checkout_is_replayed_not_repeated() {
    let app = TestApp::new().await;
    seed_shopper(&app).await;
    let first = keyed(
        &app,
        Method::POST,
        "/orders/detailed/add",
        "checkout-1",
        &checkout(),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(
        first.header("idempotent-replayed").is_none(),
        "first responses carry no replay header"
    );
    let retry = keyed(
        &app,
        Method::POST,
        "/orders/detailed/add",
        "checkout-1",
        &checkout(),
    )
    .await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.raw, first.raw, "the replay is byte-identical");
    assert_eq!(rows_in(&app, "orders").await, 1);
    assert_eq!(rows_in(&app, "order_items").await, 2);
    assert_eq!(rows_in(&app, "outbox").await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let app = TestApp::new().await;
    seed_shopper(&app).await;
    assert_eq!(
        keyed(&app, Method::POST, "/orders/detailed/add", "k", &checkout())
            .await
            .status,
        200
    );
    let mut other = checkout();
    other["order"]["total_price"] = json!(1.0);
    let response = keyed(&app, Method::POST, "/orders/detailed/add", "k", &other).await;
    assert_eq!(
        response.assert_error(422, "invalid_argument"),
        "idempotency key reused with a different request"
    );
    // the same key on another path is another request too
    let response = keyed(&app, Method::POST, "/orders/add", "k", &checkout()["order"]).await;
    response.assert_error(422, "invalid_argument");
    assert_eq!(rows_in(&app, "orders").await, 1);
}

#[tokio::test]
async fn keys_are_scoped_to_the_api_key() {
    let app = TestApp::new().await;
    seed_shopper(&app).await;
    assert_eq!(
        keyed(
            &app,
            Method::POST,
            "/orders/detailed/add",
            "shared",
            &checkout()
        )
        .await
        .status,
        200
    );
    let auth = format!("Bearer {}", app.admin_key);
    let response = app
        .send(
            Method::POST,
            "/orders/detailed/add",
            Some(&auth),
            Some(&checkout()),
            &[("idempotency-key", "shared")],
        )
        .await;
    assert_eq!(response.status, 200);
    assert!(response.header("idempotent-replayed").is_none());
    assert_eq!(rows_in(&app, "orders").await, 2);
}

#[tokio::test]
async fn twenty_concurrent_identical_checkouts_make_one_order() {
    let app = TestApp::new().await;
    seed_shopper(&app).await;
    let body = checkout();
    let responses = futures::future::join_all(
        (0..20).map(|_| keyed(&app, Method::POST, "/orders/detailed/add", "burst", &body)),
    )
    .await;
    let bodies: HashSet<Vec<u8>> = responses.iter().map(|r| r.raw.clone()).collect();
    for response in &responses {
        assert_eq!(response.status, 200, "{}", response.body);
    }
    assert_eq!(bodies.len(), 1, "every response is the one order");
    let replays = responses
        .iter()
        .filter(|r| r.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(replays, 19);
    assert_eq!(rows_in(&app, "orders").await, 1);
    assert_eq!(rows_in(&app, "order_items").await, 2);
}

#[tokio::test]
async fn client_errors_are_replayed_and_server_errors_are_not_stored() {
    let app = TestApp::new().await;
    seed_shopper(&app).await;
    let bad = json!({"product_id": 99, "quantity": 1, "user_id": "user_a"});
    let first = keyed(&app, Method::POST, "/cart/add", "bad-add", &bad).await;
    assert_eq!(
        first.assert_error(400, "invalid_argument"),
        "product_id 99 does not exist"
    );
    let retry = keyed(&app, Method::POST, "/cart/add", "bad-add", &bad).await;
    assert_eq!(retry.status, 400);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));

    // a 5xx (here: the database is gone) releases the key so a retry runs again
    let good = json!({"product_id": 3, "quantity": 1, "user_id": "user_a"});
    sqlx::query("ALTER TABLE cart_items RENAME TO cart_items_away")
        .execute(&app.pool)
        .await
        .unwrap();
    let failed = keyed(&app, Method::POST, "/cart/add", "flaky", &good).await;
    assert!(failed.status.is_server_error(), "{}", failed.status);
    sqlx::query("ALTER TABLE cart_items_away RENAME TO cart_items")
        .execute(&app.pool)
        .await
        .unwrap();
    let retried = keyed(&app, Method::POST, "/cart/add", "flaky", &good).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert!(retried.header("idempotent-replayed").is_none());
    assert_eq!(rows_in(&app, "cart_items").await, 1);
}

#[tokio::test]
async fn a_duplicate_waits_for_the_first_and_gets_409_if_it_never_finishes() {
    let app = TestApp::new().await;
    seed_shopper(&app).await;
    // simulate a first request that is still running: a claimed, uncompleted record
    let key_id = &plamatio_api::http::auth::digest_hex(&app.storefront_key)[..12];
    let body = checkout();
    let started = std::time::Instant::now();
    let first = keyed(&app, Method::POST, "/orders/detailed/add", "slow", &body).await;
    assert_eq!(first.status, 200);
    sqlx::query(
        "UPDATE idempotency_keys SET status_code = NULL, response_body = NULL, completed_at = NULL \
         WHERE api_key_id = $1 AND idempotency_key = 'slow'",
    )
    .bind(key_id)
    .execute(&app.pool)
    .await
    .unwrap();
    let duplicate = keyed(&app, Method::POST, "/orders/detailed/add", "slow", &body).await;
    assert_eq!(
        duplicate.assert_error(409, "aborted"),
        "request with this idempotency key is in progress"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(9),
        "it waited for the first"
    );
    assert_eq!(rows_in(&app, "orders").await, 1);
}

#[tokio::test]
async fn invalid_idempotency_keys_are_400() {
    let app = TestApp::new().await;
    let long = "k".repeat(256);
    for key in [long.as_str(), "tab\there"] {
        let auth = format!("Bearer {}", app.storefront_key);
        let response = app
            .send(
                Method::POST,
                "/cart/add",
                Some(&auth),
                Some(&json!({})),
                &[("idempotency-key", key)],
            )
            .await;
        response.assert_error(400, "invalid_argument");
    }
}

async fn walk(app: &TestApp, path: &str, limit: usize, admin: bool) -> (Vec<Value>, usize) {
    let mut rows = Vec::new();
    let mut pages = 0;
    let mut after: Option<String> = None;
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(cursor) = &after {
            url.push_str(&format!("&after={cursor}"));
        }
        let response = if admin {
            app.admin(Method::GET, &url, None).await
        } else {
            app.get(&url).await
        };
        assert_eq!(response.status, 200, "{url}: {}", response.body);
        let data = response.body["data"].as_array().unwrap().clone();
        assert!(data.len() <= limit);
        rows.extend(data);
        pages += 1;
        match response.body.get("next").and_then(Value::as_str) {
            Some(next) => after = Some(next.to_owned()),
            None => return (rows, pages),
        }
        assert!(pages < 1000, "pagination does not end");
    }
}

#[tokio::test]
async fn walking_all_products_seven_at_a_time_yields_the_full_list_once_in_order() {
    let app = TestApp::new().await;
    let full = app.get("/products/all").await.body["data"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        app.get("/products/all").await.body.get("next").is_none(),
        "unpaged lists have no next"
    );
    let (rows, pages) = walk(&app, "/products/all", 7, false).await;
    assert_eq!(rows, full);
    assert_eq!(pages, 4);
    let first = app.get("/products/all?limit=25").await;
    assert_eq!(first.body["data"].as_array().unwrap().len(), 25);
    assert!(
        first.body.get("next").is_none(),
        "no next when nothing follows"
    );
}

#[tokio::test]
async fn every_list_endpoint_pages_by_cursor() {
    let app = TestApp::new().await;
    seed_shopper(&app).await;
    sqlx::raw_sql(
        "INSERT INTO users (id, first_name, last_name, email) VALUES ('user_b', 'B', 'B', 'b@example.com'), ('user_c', 'C', 'C', 'c@example.com');
         INSERT INTO addresses (street, city, state, country, zip_code, user_id)
             VALUES ('2 Main', 'T', 'ON', 'CA', 'X', 'user_a'), ('3 Main', 'T', 'ON', 'CA', 'X', 'user_a');
         INSERT INTO cart_items (product_id, quantity, user_id) SELECT g, 1, 'user_a' FROM generate_series(1, 5) g;",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    for _ in 0..3 {
        assert_eq!(
            app.storefront(Method::POST, "/orders/detailed/add", Some(&checkout()))
                .await
                .status,
            200
        );
    }
    let lists: &[(&str, bool)] = &[
        ("/products/all", false),
        ("/products/category/1", false),
        ("/products/subcategory/9", false),
        ("/products/search/llama", false),
        ("/categories/all", false),
        ("/categories/subcategories/all", false),
        ("/categories/subcategories/category/1", false),
        ("/cart/all/user_a", false),
        ("/orders/all/user_a", false),
        ("/orders/items/all/1", false),
        ("/orders/detailed/all/user_a", false),
        ("/users/all", true),
        ("/users/addresses/user/user_a", false),
    ];
    for (path, admin) in lists {
        let full = if *admin {
            app.admin(Method::GET, path, None).await
        } else {
            app.get(path).await
        };
        let full = full.body["data"].as_array().unwrap().clone();
        assert!(
            full.len() >= 2,
            "{path} needs at least two rows for this test"
        );
        let (paged, pages) = walk(&app, path, 2, *admin).await;
        assert_eq!(paged, full, "{path}");
        assert_eq!(pages, full.len().div_ceil(2), "{path}");
    }
}

#[tokio::test]
async fn bad_limits_and_cursors_are_400() {
    let app = TestApp::new().await;
    for limit in ["0", "501", "-1", "ten", ""] {
        let response = app.get(&format!("/products/all?limit={limit}")).await;
        assert_eq!(
            response.assert_error(400, "invalid_argument"),
            "invalid limit, must be between 1 and 500",
            "limit={limit}"
        );
    }
    for cursor in ["zz", "%20", "6869"] {
        // "6869" is the cursor of the text "hi", not an integer id
        let response = app
            .get(&format!("/products/all?limit=5&after={cursor}"))
            .await;
        assert_eq!(
            response.assert_error(400, "invalid_argument"),
            "invalid cursor",
            "after={cursor}"
        );
    }
    // the users list takes string cursors
    let cursor = plamatio_api::http::pagination::encode_cursor("user_0");
    let response = app
        .admin(
            Method::GET,
            &format!("/users/all?limit=5&after={cursor}"),
            None,
        )
        .await;
    assert_eq!(response.status, 200);
}

fn with_peer(mut request: Request<Body>, ip: &str) -> Request<Body> {
    let address: SocketAddr = format!("{ip}:40000").parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(address));
    request
}

fn get_request(path: &str, key: &str, ip: &str) -> Request<Body> {
    with_peer(
        Request::get(path)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap(),
        ip,
    )
}

fn limited(mut app: TestApp, per_minute: u32) -> TestApp {
    let state = app
        .state
        .clone()
        .with_rate_limits(RateLimits::new(per_minute, vec![]));
    let config = plamatio_api::config::ServeConfig::from_defaults();
    app.router = plamatio_api::app(state, &plamatio_api::cli::edge_config(&config));
    app
}

#[tokio::test]
async fn a_burst_beyond_the_limit_gets_429_with_headers_and_other_keys_are_unaffected() {
    let app = limited(TestApp::new().await, 5);
    for expected_remaining in (0..5).rev() {
        let response = app
            .send_request(get_request(
                "/products/all",
                &app.storefront_key,
                "203.0.113.1",
            ))
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(
            response.header("x-ratelimit-remaining"),
            Some(expected_remaining.to_string().as_str())
        );
    }
    let response = app
        .send_request(get_request(
            "/products/all",
            &app.storefront_key,
            "203.0.113.1",
        ))
        .await;
    assert_eq!(
        response.assert_error(429, "resource_exhausted"),
        "rate limit exceeded"
    );
    let retry_after: u64 = response.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(response.header("x-ratelimit-remaining"), Some("0"));

    // the storefront key is shared by every shopper: another client IP has its own budget
    let other_ip = app
        .send_request(get_request(
            "/products/all",
            &app.storefront_key,
            "203.0.113.2",
        ))
        .await;
    assert_eq!(other_ip.status, 200);
    // another key is unaffected
    let admin = app
        .send_request(get_request("/products/all", &app.admin_key, "203.0.113.1"))
        .await;
    assert_eq!(admin.status, 200);
    // health, readiness and metrics are exempt
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = app
            .send_request(get_request(path, &app.storefront_key, "203.0.113.1"))
            .await;
        assert_eq!(response.status, 200, "{path}");
        assert!(response.header("x-ratelimit-limit").is_none(), "{path}");
    }
}

#[tokio::test]
async fn the_admin_budget_is_per_key_whatever_the_ip() {
    let app = limited(TestApp::new().await, 3);
    for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        assert_eq!(
            app.send_request(get_request("/products/all", &app.admin_key, ip))
                .await
                .status,
            200
        );
    }
    let response = app
        .send_request(get_request("/products/all", &app.admin_key, "198.51.100.4"))
        .await;
    assert_eq!(response.status, 429);
}

#[tokio::test]
async fn unauthenticated_calls_are_limited_per_ip() {
    let app = limited(TestApp::new().await, 2);
    for _ in 0..2 {
        let request = with_peer(
            Request::get("/core/info").body(Body::empty()).unwrap(),
            "192.0.2.7",
        );
        assert_eq!(app.send_request(request).await.status, 200);
    }
    let request = with_peer(
        Request::get("/core/info").body(Body::empty()).unwrap(),
        "192.0.2.7",
    );
    assert_eq!(app.send_request(request).await.status, 429);
    let request = with_peer(
        Request::get("/core/info").body(Body::empty()).unwrap(),
        "192.0.2.8",
    );
    assert_eq!(app.send_request(request).await.status, 200);
}
