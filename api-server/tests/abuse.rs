//! The attack suite of the data and events half of issue #16: one test per attack, named after
//! it, against the router built as `serve` builds it, real PostgreSQL and a real Kafka-protocol
//! broker (tansu). Each test performs the attack and asserts the bound that stops it.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::broker::{self, Broker};
use common::identity::{AUDIENCE, ISSUER, Jwks, SigningKey, generate, now, token_with};
use common::{TestApp, count, metric_value, ok};
use http_body_util::BodyExt;
use jsonwebtoken::Algorithm;
use plamatio_api::cache::keys;
use plamatio_api::events::ingest::IngestQuota;
use plamatio_api::events::outbox::{self, AppendError, OutboxEvent, Topic};
use plamatio_api::events::relay::{Relay, RelaySettings};
use plamatio_api::events::stream::StreamLimits;
use plamatio_api::http::identity::{UserAuthConfig, UserAuthMode, UserTokens};
use plamatio_api::{AppState, limits};
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Rebuilds the app's router over `state` (with limits or user tokens the default app lacks).
fn rebuild(app: &mut TestApp, state: AppState) {
    let edge = plamatio_api::cli::edge_config(&plamatio_api::config::ServeConfig::from_defaults());
    app.router = plamatio_api::app(state.clone(), &edge);
    app.state = state;
}

async fn seed_user(pool: &PgPool, id: &str) -> i64 {
    sqlx::query(
        "INSERT INTO users (id, first_name, last_name, email) VALUES ($1, 'F', 'L', $1 || '@example.com')",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query_scalar(
        "INSERT INTO addresses (street, city, state, country, zip_code, user_id) \
         VALUES ('1 Main St', 'Toronto', 'ON', 'Canada', 'M5V', $1) RETURNING id",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn metric(app: &TestApp, name: &str) -> f64 {
    metric_value(&app.state.metrics.render().unwrap(), name).unwrap_or(0.0)
}

/// One ES256 key, published on a local JWKS endpoint (the shared test identity provider).
struct Identity {
    key: SigningKey,
    jwks_url: String,
}

impl Identity {
    async fn start() -> Identity {
        let key = generate("abuse", Algorithm::ES256);
        let jwks = Jwks::default();
        jwks.publish(&key);
        let jwks_url = jwks.serve().await;
        Identity { key, jwks_url }
    }

    fn token(&self, sub: &str, lifetime_seconds: u64) -> String {
        let now = now();
        token_with(
            &self.key,
            json!({
                "sub": sub, "iss": ISSUER, "aud": AUDIENCE,
                "exp": now + lifetime_seconds, "nbf": now - 5, "iat": now - 5
            }),
        )
    }

    /// The app with user auth `required` against this identity provider.
    fn bind(&self, app: &mut TestApp) {
        let config = UserAuthConfig {
            user_auth: UserAuthMode::Required,
            user_jwks_url: Some(self.jwks_url.clone()),
            user_jwt_issuer: Some(ISSUER.to_owned()),
            user_jwt_audience: Some(AUDIENCE.to_owned()),
            ..UserAuthConfig::default()
        };
        let tokens = UserTokens::new(&config).unwrap();
        let state = app.state.clone().with_user_tokens(tokens);
        rebuild(app, state);
    }
}

/// Opens `GET /events/stream/{user}` and returns the response with its live body.
/// Runs relay rounds (batch 500) until the outbox has nothing pending; panics past `limit`.
async fn relay_until_drained(app: &TestApp, broker: &Broker, limit: Duration) {
    let relay = Relay::new(
        app.pool.clone(),
        broker.kafka(),
        RelaySettings {
            batch_size: 500,
            poll_interval: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        },
        app.state.metrics.clone(),
    )
    .expect("relay producer");
    let deadline = Instant::now() + limit;
    loop {
        let _ = relay.round().await;
        let left = count(&app.pool, "SELECT count(*) FROM outbox_pending").await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} rows still pending after {limit:?}"
        );
    }
}

async fn open_stream(app: &TestApp, user: &str, token: Option<&str>) -> axum::response::Response {
    let mut request = Request::get(format!("/events/stream/{user}"))
        .header("authorization", format!("Bearer {}", app.storefront_key));
    if let Some(token) = token {
        request = request.header("x-user-token", token);
    }
    app.router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

/// Reads a stream's body until it ends; panics past `limit`.
async fn wait_for_end(response: axum::response::Response, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut body = response.into_body();
    let read = async {
        while let Some(frame) = body.frame().await {
            frame.expect("stream frame");
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("the event stream was still open after {limit:?}"));
    started.elapsed()
}

// ---------------------------------------------------------------------------------------------
// Item 2: no poison events
// ---------------------------------------------------------------------------------------------

/// A text field past its documented maximum is 400 naming the field, and nothing is written.
#[tokio::test]
async fn oversized_text_fields_are_refused_with_the_field_named() {
    let app = TestApp::new().await;
    let long = |n: usize| "x".repeat(n + 1);
    let product = json!({
        "name": "Mug", "description": long(limits::MAX_PRODUCT_DESCRIPTION_CHARS), "category": 3,
        "subCategory": 9, "imageUrl": "https://example.com/m.png", "price": 10
    });
    let cases: Vec<(Method, &str, Value, &str)> = vec![
        (
            Method::POST,
            "/users/add",
            json!({"id": long(limits::MAX_USER_ID_CHARS), "firstName": "A", "lastName": "B", "email": "a@example.com"}),
            "id",
        ),
        (
            Method::POST,
            "/users/add",
            json!({"id": "u1", "firstName": long(limits::MAX_PERSON_NAME_CHARS), "lastName": "B", "email": "a@example.com"}),
            "firstName",
        ),
        (
            Method::POST,
            "/users/add",
            json!({"id": "u1", "firstName": "A", "lastName": "B", "email": format!("{}@example.com", long(limits::MAX_EMAIL_CHARS))}),
            "email",
        ),
        (
            Method::POST,
            "/users/addresses/add",
            json!({"street": long(limits::MAX_STREET_CHARS), "city": "c", "state": "s", "country": "c", "zipCode": "z", "userId": "u1"}),
            "street",
        ),
        (
            Method::POST,
            "/users/addresses/add",
            json!({"street": "s", "city": "c", "state": "s", "country": "c", "zipCode": long(limits::MAX_ZIP_CODE_CHARS), "userId": "u1"}),
            "zipCode",
        ),
        (
            Method::POST,
            "/products/add",
            product.clone(),
            "description",
        ),
        (
            Method::POST,
            "/products/add",
            json!({"name": "Mug", "description": "d", "category": 3, "subCategory": 9,
                   "imageUrl": format!("https://example.com/{}", long(limits::MAX_IMAGE_URL_CHARS)), "price": 10}),
            "imageUrl",
        ),
        (
            Method::POST,
            "/cart/add",
            json!({"product_id": 1, "quantity": 1, "user_id": long(limits::MAX_USER_ID_CHARS)}),
            "user_id",
        ),
        (
            Method::POST,
            "/orders/add",
            json!({"user_id": "u1", "address_id": 1, "total_price": 10.0, "status": long(limits::MAX_ORDER_STATUS_CHARS)}),
            "status",
        ),
    ];
    for (method, path, body, field) in cases {
        let response = app.admin(method, path, Some(&body)).await;
        let message = response.assert_error(400, "invalid_argument");
        assert!(
            message.starts_with(&format!("{field} is too long")),
            "{path}: {message}"
        );
        assert_eq!(response.body["details"]["field"], field, "{path}");
    }
    assert_eq!(count(&app.pool, "SELECT count(*) FROM outbox").await, 0);
}

/// An event above the outbox payload limit is refused at write time: nothing reaches the queue.
#[tokio::test]
async fn an_event_above_the_payload_limit_is_refused_at_write_time() {
    let app = TestApp::new().await;
    let mut tx = app.pool.begin().await.unwrap();
    let huge = OutboxEvent::new(Topic::ProductsUpdates, "1", "product_updated")
        .with("blob", "x".repeat(outbox::MAX_EVENT_PAYLOAD_BYTES));
    let small = OutboxEvent::new(Topic::ProductsUpdates, "1", "product_updated");
    let refused = outbox::append(&mut tx, &[small, huge]).await;
    assert!(
        matches!(refused, Err(AppendError::PayloadTooLarge { .. })),
        "{refused:?}"
    );
    tx.commit().await.unwrap();
    assert_eq!(count(&app.pool, "SELECT count(*) FROM outbox").await, 0);
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM outbox_pending").await,
        0
    );
}

/// Before: a row the broker refused stayed at the head of the queue, blocked every later event
/// of its key, and once a batch of that key's rows piled up behind it the relay's claim held
/// nothing else — no key got anything out. Now it moves to `outbox_dead_letter` with its error
/// and a metric, and every deliverable event arrives, in key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_event_never_blocks_other_keys() {
    let broker = Broker::with_topics().await;
    let app = TestApp::new().await;
    // A row larger than the producer's `message.max.bytes`, as an older release or a manual
    // insert could have written it (the API itself refuses such payloads now).
    let poison_id: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (event_id, topic, event_key, event_type, payload) \
         VALUES ($1, 'cart_updates', 'key_0', 'cart_item_added', json_build_object('blob', repeat('x', 1200000))) \
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // 10,000 events after it: a third on the poison row's key, the rest over nine other keys.
    let mut tx = app.pool.begin().await.unwrap();
    let events: Vec<OutboxEvent> = (0..10_000)
        .map(|n| {
            let key = if n % 3 == 0 {
                "key_0".to_owned()
            } else {
                format!("key_{}", 1 + n % 9)
            };
            OutboxEvent::new(Topic::CartUpdates, key, "cart_item_added").with("n", n)
        })
        .collect();
    let ids = outbox::append(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();

    relay_until_drained(&app, &broker, Duration::from_secs(120)).await;

    let messages = broker::consume(
        &broker.bootstrap(),
        "cart_updates",
        10_000,
        Duration::from_secs(60),
    )
    .await;
    let delivered = broker::distinct_event_ids(&messages);
    assert_eq!(delivered.len(), 10_000, "every deliverable event arrives");
    let expected: HashMap<String, usize> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| (id.to_string(), n))
        .collect();
    assert!(delivered.iter().all(|id| expected.contains_key(id)));
    for key in (0..10).map(|k| format!("key_{k}")) {
        let of_key: Vec<_> = messages.iter().filter(|m| m.key == key).cloned().collect();
        let order: Vec<usize> = broker::distinct_event_ids(&of_key)
            .iter()
            .map(|id| expected[id])
            .collect();
        assert!(
            order.windows(2).all(|pair| pair[0] < pair[1]),
            "events of {key} out of commit order"
        );
    }
    let (dead_id, error): (i64, String) =
        sqlx::query_as("SELECT id, error FROM outbox_dead_letter")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(dead_id, poison_id);
    assert!(error.to_lowercase().contains("size"), "{error}");
    assert_eq!(metric(&app, "outbox_dead_lettered_total"), 1.0);
}

/// A cart stops growing at its row limit (one request or many).
#[tokio::test]
async fn a_cart_cannot_grow_past_its_row_limit() {
    let app = TestApp::new().await;
    seed_user(&app.pool, "hoarder").await;
    let batch: Vec<Value> = (0..100)
        .map(|n| json!({"product_id": n % 25 + 1, "quantity": 1, "user_id": "hoarder"}))
        .collect();
    for _ in 0..2 {
        ok(&app
            .storefront(Method::POST, "/cart/add/all", Some(&json!({"data": batch})))
            .await);
    }
    let one = json!({"product_id": 1, "quantity": 1, "user_id": "hoarder"});
    let refused = app.storefront(Method::POST, "/cart/add", Some(&one)).await;
    assert_eq!(
        refused.assert_error(400, "invalid_argument"),
        format!("cart is full, at most {} items", limits::MAX_CART_ROWS)
    );
    assert_eq!(
        count(
            &app.pool,
            "SELECT count(*) FROM cart_items WHERE user_id = 'hoarder'"
        )
        .await,
        limits::MAX_CART_ROWS
    );
}

/// An order carries at most the item limit, at checkout and item by item.
#[tokio::test]
async fn an_order_cannot_carry_more_items_than_the_limit() {
    let app = TestApp::new().await;
    let address = seed_user(&app.pool, "bulk").await;
    let items = |n: i64| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"product_id": i % 25 + 1, "quantity": 1}))
            .collect()
    };
    let order = json!({"user_id": "bulk", "address_id": address, "total_price": 100.0, "status": "pending"});
    let refused = app
        .storefront(
            Method::POST,
            "/orders/detailed/add",
            Some(&json!({"order": order, "items": items(limits::MAX_ORDER_ITEMS + 1)})),
        )
        .await;
    assert_eq!(
        refused.assert_error(400, "invalid_argument"),
        "too many order items, at most 100"
    );
    let created = ok(&app
        .storefront(
            Method::POST,
            "/orders/detailed/add",
            Some(&json!({"order": order, "items": items(limits::MAX_ORDER_ITEMS)})),
        )
        .await);
    let order_id = created["order"]["id"].as_i64().unwrap();
    let more = json!({"order_id": order_id, "product_id": 1, "quantity": 1});
    let refused = app
        .storefront(Method::POST, "/orders/items/add", Some(&more))
        .await;
    assert_eq!(
        refused.assert_error(400, "invalid_argument"),
        "too many order items, at most 100"
    );
}

/// A user's addresses (all of which travel in the `user_deleted` event) are bounded.
#[tokio::test]
async fn a_user_cannot_pile_up_addresses() {
    let app = TestApp::new().await;
    seed_user(&app.pool, "nomad").await; // one address already
    let address = json!({"street": "s", "city": "c", "state": "s", "country": "c", "zipCode": "z", "userId": "nomad"});
    for _ in 1..limits::MAX_ADDRESSES_PER_USER {
        ok(&app
            .storefront(Method::POST, "/users/addresses/add", Some(&address))
            .await);
    }
    let refused = app
        .storefront(Method::POST, "/users/addresses/add", Some(&address))
        .await;
    assert_eq!(
        refused.assert_error(400, "invalid_argument"),
        "too many addresses, at most 50 per user"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 6: server-side truth for orders
// ---------------------------------------------------------------------------------------------

/// Before: the storefront key could set any `total_price` and status on an existing order. Now
/// the server stores its own item total next to the provider's amount (counting disagreements),
/// and a storefront caller may only cancel; everything else is 403 without the admin scope.
#[tokio::test]
async fn a_storefront_caller_cannot_rewrite_an_order_total_or_status() {
    let app = TestApp::new().await;
    let address = seed_user(&app.pool, "buyer").await;
    let prices: HashMap<i64, i64> = sqlx::query_as("SELECT id, price FROM products")
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let expected_total = prices[&3] * 2 + prices[&4];
    // The provider charged one cent: the order is taken (the payment already happened), and the
    // server's own total says what was bought.
    let created = ok(&app
        .storefront(
            Method::POST,
            "/orders/detailed/add",
            Some(&json!({
                "order": {"user_id": "buyer", "address_id": address, "total_price": 1.0, "status": "succeeded"},
                "items": [{"product_id": 3, "quantity": 2}, {"product_id": 4, "quantity": 1}]
            })),
        )
        .await);
    assert_eq!(created["order"]["items_total"], expected_total);
    assert_eq!(metric(&app, "orders_total_mismatch_total"), 1.0);
    let id = created["order"]["id"].as_i64().unwrap();
    let fair = ok(&app
        .storefront(
            Method::POST,
            "/orders/detailed/add",
            Some(&json!({
                "order": {"user_id": "buyer", "address_id": address, "total_price": (expected_total * 100) as f64, "status": "succeeded"},
                "items": [{"product_id": 3, "quantity": 2}, {"product_id": 4, "quantity": 1}]
            })),
        )
        .await);
    assert_eq!(fair["order"]["items_total"], expected_total);
    assert_eq!(
        metric(&app, "orders_total_mismatch_total"),
        1.0,
        "no mismatch"
    );

    let update = |total: f64, status: &str| json!({"id": id, "user_id": "buyer", "address_id": address, "total_price": total, "status": status});
    for attack in [update(0.01, "succeeded"), update(1.0, "refunded")] {
        let refused = app
            .storefront(Method::PUT, "/orders/update", Some(&attack))
            .await;
        refused.assert_error(403, "permission_denied");
    }
    let stored = ok(&app.get(&format!("/orders/get/{id}")).await);
    assert_eq!(
        (stored["total_price"].as_f64(), stored["status"].as_str()),
        (Some(1.0), Some("succeeded"))
    );
    ok(&app
        .storefront(
            Method::PUT,
            "/orders/update",
            Some(&update(1.0, "cancelled")),
        )
        .await);
    ok(&app
        .admin(
            Method::PUT,
            "/orders/update",
            Some(&update(640.0, "refunded")),
        )
        .await);
    let stored = ok(&app.get(&format!("/orders/get/{id}")).await);
    assert_eq!(
        (stored["total_price"].as_f64(), stored["status"].as_str()),
        (Some(640.0), Some("refunded"))
    );
    assert_eq!(stored["items_total"], expected_total);
}

/// Before: reads and deletes of an order item checked its owner in one query and acted in
/// another; an item created between the two (ids are sequential) was read without any check.
/// Now the check is part of the statement that reads or deletes the row: user A, racing user
/// B's new items, never sees or removes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_reads_and_deletes_never_touch_another_users_order_items() {
    let identity = Identity::start().await;
    let mut app = TestApp::new().await;
    identity.bind(&mut app);
    let address_b = seed_user(&app.pool, "user_b").await;
    seed_user(&app.pool, "user_a").await;
    let token_a = identity.token("user_a", 600);
    let token_b = identity.token("user_b", 600);
    let order = ok(&app.as_shopper(Some(&token_b),
        Method::POST,
        "/orders/detailed/add",
        Some(&json!({"order": {"user_id": "user_b", "address_id": address_b, "total_price": 100.0, "status": "pending"}, "items": [{"product_id": 1, "quantity": 1}]})),
    )
    .await);
    let order_id = order["order"]["id"].as_i64().unwrap();
    let first_item = order["items"][0]["id"].as_i64().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let leaks = Arc::new(Mutex::new(Vec::new()));
    let app = Arc::new(app);
    let attacker = {
        let (app, stop, leaks, token_a) = (app.clone(), stop.clone(), leaks.clone(), token_a);
        tokio::spawn(async move {
            let mut next = first_item + 1;
            while !stop.load(Ordering::SeqCst) {
                for id in next..next + 3 {
                    let path = format!("/orders/items/get/{id}");
                    let read = app
                        .as_shopper(Some(&token_a), Method::GET, &path, None)
                        .await;
                    let path = format!("/orders/items/delete/{id}");
                    let delete = app
                        .as_shopper(Some(&token_a), Method::DELETE, &path, None)
                        .await;
                    for response in [read, delete] {
                        if response.status != StatusCode::NOT_FOUND {
                            leaks
                                .lock()
                                .unwrap()
                                .push((id, response.status, response.body));
                        }
                    }
                }
                let created: i64 =
                    sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM order_items")
                        .fetch_one(&app.pool)
                        .await
                        .unwrap();
                next = next.max(created + 1);
            }
        })
    };
    for _ in 0..60 {
        ok(&app
            .as_shopper(
                Some(&token_b),
                Method::POST,
                "/orders/items/add",
                Some(&json!({"order_id": order_id, "product_id": 2, "quantity": 1})),
            )
            .await);
    }
    stop.store(true, Ordering::SeqCst);
    attacker.await.unwrap();
    assert!(
        leaks.lock().unwrap().is_empty(),
        "{:?}",
        leaks.lock().unwrap()
    );
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM order_items").await,
        61,
        "none of user_b's items was deleted"
    );
    // user_b still reads and deletes their own items.
    let path = format!("/orders/items/get/{first_item}");
    ok(&app
        .as_shopper(Some(&token_b), Method::GET, &path, None)
        .await);
    let path = format!("/orders/items/delete/{first_item}");
    ok(&app
        .as_shopper(Some(&token_b), Method::DELETE, &path, None)
        .await);
}

// ---------------------------------------------------------------------------------------------
// Item 5: bounded resources
// ---------------------------------------------------------------------------------------------

fn with_limits(app: &mut TestApp, streams: StreamLimits, quota: Option<IngestQuota>) {
    let state = app.state.clone().with_event_limits(streams, quota);
    rebuild(app, state);
}

/// Before: any caller could hold any number of endless streams (each a task and a buffer). Now
/// one user gets a few, one API key a bounded number, and the next is 429 with `Retry-After`.
#[tokio::test]
async fn event_streams_are_capped_per_user_and_per_key() {
    let mut app = TestApp::new().await;
    with_limits(
        &mut app,
        StreamLimits {
            per_user: 2,
            per_key: 3,
            ..StreamLimits::default()
        },
        None,
    );
    let first = open_stream(&app, "user_a", None).await;
    let second = open_stream(&app, "user_a", None).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = open_stream(&app, "user_a", None).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));
    drop(first);
    let again = open_stream(&app, "user_a", None).await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "a closed stream frees its slot"
    );

    let other = open_stream(&app, "user_b", None).await;
    assert_eq!(other.status(), StatusCode::OK);
    let past_key_cap = open_stream(&app, "user_c", None).await;
    assert_eq!(past_key_cap.status(), StatusCode::TOO_MANY_REQUESTS);
    drop((second, again, other));
}

/// A stream ends after its maximum lifetime (the browser reconnects with `Last-Event-ID`).
#[tokio::test]
async fn an_event_stream_ends_at_its_maximum_lifetime() {
    let mut app = TestApp::new().await;
    with_limits(
        &mut app,
        StreamLimits {
            max_lifetime: Duration::from_secs(1),
            ..StreamLimits::default()
        },
        None,
    );
    let stream = open_stream(&app, "user_a", None).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let lived = wait_for_end(stream, Duration::from_secs(10)).await;
    assert!(lived < Duration::from_secs(5), "{lived:?}");
}

/// An idle stream gets a `: keep-alive` comment after each keep-alive interval without an event,
/// so proxies in front do not close it as idle.
#[tokio::test]
async fn an_idle_event_stream_gets_keep_alive_comments() {
    let mut app = TestApp::new().await;
    with_limits(
        &mut app,
        StreamLimits {
            keep_alive: Duration::from_secs(1),
            ..StreamLimits::default()
        },
        None,
    );
    let stream = open_stream(&app, "user_a", None).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let mut body = stream.into_body();
    for _ in 0..2 {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a comment within 10 s")
            .expect("the stream is open")
            .expect("a frame");
        assert_eq!(frame.into_data().expect("a data frame"), ": keep-alive\n\n");
    }
}

/// Before: a stream opened with a user token stayed open for as long as the client liked, long
/// after the token expired. Now it ends when the token does.
#[tokio::test]
async fn an_event_stream_ends_when_the_user_token_expires() {
    let identity = Identity::start().await;
    let mut app = TestApp::new().await;
    identity.bind(&mut app);
    let token = identity.token("user_a", 2);
    let stream = open_stream(&app, "user_a", Some(&token)).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let lived = wait_for_end(stream, Duration::from_secs(15)).await;
    assert!(lived < Duration::from_secs(6), "{lived:?}");
}

/// Before: `POST /events/user` took up to 500 events per request, as fast as a client could
/// send them. Now each user and client IP has a budget of events and bytes per minute; past it
/// the request is 429 with `Retry-After` and stores nothing.
#[tokio::test]
async fn analytics_posts_are_bounded_per_user_and_ip() {
    let mut app = TestApp::new().await;
    with_limits(&mut app, StreamLimits::default(), IngestQuota::new(10, 8));
    let event = |n: usize, blob: usize| {
        json!({"user_id": "user_a", "event_type": "click", "core_component": "cart",
               "client_id": "web", "timestamp": "2026-12-02T10:00:00Z",
               "metadata": {"n": n, "blob": "x".repeat(blob)}})
    };
    let batch: Vec<Value> = (0..10).map(|n| event(n, 10)).collect();
    ok(&app
        .storefront(Method::POST, "/events/user", Some(&json!({"data": batch})))
        .await);
    let refused = app
        .storefront(Method::POST, "/events/user", Some(&event(10, 10)))
        .await;
    refused.assert_error(429, "resource_exhausted");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        count(
            &app.pool,
            "SELECT count(*) FROM outbox WHERE topic = 'user_events'"
        )
        .await,
        10
    );

    // Bytes: a fresh budget of 1,000 events but 8 KiB a minute.
    let mut app = TestApp::new().await;
    with_limits(&mut app, StreamLimits::default(), IngestQuota::new(1000, 8));
    ok(&app
        .storefront(Method::POST, "/events/user", Some(&event(0, 6000)))
        .await);
    let refused = app
        .storefront(Method::POST, "/events/user", Some(&event(1, 6000)))
        .await;
    refused.assert_error(429, "resource_exhausted");
    assert_eq!(metric(&app, "user_events_throttled_total"), 1.0);
}

/// Before: `/readyz` and `/metrics` (public, not rate limited) each took a connection from the
/// request pool; with the pool exhausted they waited and reported the instance down. Now they
/// answer at once from a cached check made on a connection of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_metrics_answer_while_the_request_pool_is_exhausted() {
    let app = TestApp::new().await;
    // Take every connection the request pool will give.
    let mut held = Vec::new();
    while let Ok(Ok(connection)) =
        tokio::time::timeout(Duration::from_millis(500), app.pool.acquire()).await
    {
        held.push(connection);
    }
    assert!(held.len() >= 10, "only {} connections taken", held.len());
    for _ in 0..20 {
        let started = Instant::now();
        let ready = app.send(Method::GET, "/readyz", None, None, &[]).await;
        assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    let metrics = app.send(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1));
    let text = String::from_utf8_lossy(&metrics.raw);
    assert!(text.contains("plamatio_ready 1"), "{text}");
    drop(held);
}

/// Before: every list read of an id that names nothing (`/cart/all/<random>`,
/// `/orders/items/all/<any number>`, …) stored an empty list in the cache, so a scan of random
/// ids filled it and evicted real entries. Now an empty list is cached only for an owner that
/// exists, and over-long path user ids are 400 before anything is read.
#[tokio::test]
async fn junk_path_ids_create_no_cache_entries() {
    let app = TestApp::new().await;
    let junk = format!("junk_{}", Uuid::new_v4().simple());
    let number = 987_654_321_i64;
    let probes = vec![
        (format!("/cart/all/{junk}"), keys::user_cart(&junk)),
        (format!("/orders/all/{junk}"), keys::user_orders(&junk)),
        (
            format!("/orders/detailed/all/{junk}"),
            keys::user_detailed_orders(&junk),
        ),
        (
            format!("/users/addresses/user/{junk}"),
            keys::user_addresses(&junk),
        ),
        (
            format!("/orders/items/all/{number}"),
            keys::order_items(number),
        ),
        (
            format!("/products/category/{number}"),
            keys::products_of_category(number),
        ),
        (
            format!("/products/subcategory/{number}"),
            keys::products_of_sub_category(number),
        ),
        (
            format!("/categories/subcategories/category/{number}"),
            keys::sub_categories_of(number),
        ),
    ];
    for (path, key) in &probes {
        let response = app.get(path).await;
        assert_eq!(response.body, json!({"data": []}), "{path}");
        assert!(
            app.state.cache.get(key).await.is_none(),
            "{path} created the cache entry {}",
            key.name()
        );
    }
    // A real user's empty cart is still cached.
    seed_user(&app.pool, "real").await;
    ok(&app.get("/cart/all/real").await);
    assert!(
        app.state
            .cache
            .get(&keys::user_cart("real"))
            .await
            .is_some()
    );
    // An over-long user id never gets as far as the cache.
    let long = "u".repeat(limits::MAX_USER_ID_CHARS + 1);
    let response = app.get(&format!("/cart/all/{long}")).await;
    assert!(
        response
            .assert_error(400, "invalid_argument")
            .starts_with("user_id is too long")
    );
}

/// Before: a row for a topic the broker rejects failed every round and held back its key. Now it
/// goes to the dead-letter table with the broker's error, and its key's later events go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_for_an_invalid_topic_is_dead_lettered() {
    let broker = Broker::with_topics().await;
    let app = TestApp::new().await;
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, event_key, event_type, payload) \
         VALUES ($1, 'not a topic!', 'key_0', 'cart_item_added', '{}'::json)",
    )
    .bind(Uuid::now_v7())
    .execute(&app.pool)
    .await
    .unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    let events: Vec<OutboxEvent> = (0..100)
        .map(|n| {
            OutboxEvent::new(
                Topic::CartUpdates,
                format!("key_{}", n % 2),
                "cart_item_added",
            )
            .with("n", n)
        })
        .collect();
    outbox::append(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    relay_until_drained(&app, &broker, Duration::from_secs(60)).await;
    let messages = broker::consume(
        &broker.bootstrap(),
        "cart_updates",
        100,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(broker::distinct_event_ids(&messages).len(), 100);
    let mut seen = std::collections::HashSet::new();
    let key_0: Vec<i64> = messages
        .iter()
        .filter(|m| m.key == "key_0")
        .map(|m| m.payload["n"].as_i64().unwrap())
        .filter(|n| seen.insert(*n))
        .collect();
    assert_eq!(
        key_0,
        (0..100).step_by(2).collect::<Vec<i64>>(),
        "key_0 in order"
    );
    let (topic, error): (String, String) =
        sqlx::query_as("SELECT topic, error FROM outbox_dead_letter")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(topic, "not a topic!");
    assert!(error.contains("InvalidTopic"), "{error}");
    assert_eq!(metric(&app, "outbox_dead_lettered_total"), 1.0);
}
