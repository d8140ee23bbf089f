//! Events (shared/spec/events.md) against a real PostgreSQL and a real Kafka-protocol broker
//! (tansu, one per test): one message per committed mutation with its key, headers and payload,
//! nothing for rolled-back changes, per-key commit order, delivery across broker outages and API
//! restarts, several relays, `POST /events/user`, the SSE live stream across two API instances,
//! the outbox metrics and `plamatio-api events tail`.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::broker::{self, Broker, Consumed};
use common::fixtures::insert_user;
use common::{TestApp, metric_value, ok};
use http_body_util::BodyExt;
use plamatio_api::AppState;
use plamatio_api::cache::Cache;
use plamatio_api::config::ServeConfig;
use plamatio_api::events::kafka::KafkaConfig;
use plamatio_api::events::outbox::{self, OutboxEvent, Topic};
use plamatio_api::events::relay::{self, Relay, RelaySettings};
use plamatio_api::http::auth::{ApiKeys, Scope, generate_key};
use plamatio_api::metrics::Metrics;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::watch;
use tower::ServiceExt;
use uuid::Uuid;

const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Logs of the relay and librdkafka for diagnosis, e.g. `PLAMATIO_TEST_LOG=info,librdkafka=info`.
fn init_logs() {
    if let Ok(filter) = std::env::var("PLAMATIO_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// One outbox row.
#[derive(Debug, Clone, sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    event_id: Uuid,
    topic: String,
    event_key: String,
    event_type: String,
    payload: Value,
}

async fn outbox_rows_of_topic(pool: &PgPool, topic: &str) -> Vec<OutboxRow> {
    sqlx::query_as(
        "SELECT id, event_id, topic, event_key, event_type, payload FROM outbox \
         WHERE topic = $1 ORDER BY id",
    )
    .bind(topic)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn pending(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn published(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM outbox o WHERE NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.id = o.id)",
    )
        .fetch_one(pool)
        .await
        .unwrap()
}

fn settings(batch_size: i64) -> RelaySettings {
    RelaySettings {
        batch_size,
        poll_interval: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
    }
}

fn new_relay(app: &TestApp, kafka: KafkaConfig, batch_size: i64) -> Relay {
    Relay::new(
        app.pool.clone(),
        kafka,
        settings(batch_size),
        app.state.metrics.clone(),
    )
    .expect("relay producer")
}

/// Runs relay rounds until no outbox row is pending (bounded).
async fn drain(app: &TestApp, relay: &Relay) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_error = None;
    loop {
        match relay.round().await {
            Ok(_) => {}
            Err(error) => last_error = Some(error.to_string()),
        }
        let left = pending(&app.pool).await;
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} outbox rows still pending after 60 s of relay rounds; last error: {last_error:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until no outbox row is pending.
async fn wait_until_drained(pool: &PgPool, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let left = pending(pool).await;
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} outbox rows still pending after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn consume(broker: &Broker, topic: &str, expected: usize) -> Vec<Consumed> {
    broker::consume(&broker.bootstrap(), topic, expected, CONSUME_TIMEOUT).await
}

async fn create_address(pool: &PgPool, user_id: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO addresses (street, city, state, country, zip_code, user_id) \
         VALUES ('1 Main St', 'Toronto', 'ON', 'Canada', 'M5V 2T6', $1) RETURNING id",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn cart_add(app: &TestApp, user_id: &str, product_id: i64, quantity: i64) -> Value {
    let body = json!({"product_id": product_id, "quantity": quantity, "user_id": user_id});
    ok(&app.storefront(Method::POST, "/cart/add", Some(&body)).await)
}

/// `POST /cart/add/all` with `count` items for one user; returns the created ids.
async fn cart_add_all(app: &TestApp, user_id: &str, count: usize) -> Vec<i64> {
    let items: Vec<Value> = (0..count)
        .map(|n| json!({"product_id": (n % 25) as i64 + 1, "quantity": 1, "user_id": user_id}))
        .collect();
    let body = ok(&app
        .storefront(Method::POST, "/cart/add/all", Some(&json!({"data": items})))
        .await);
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect()
}

/// Asserts that the consumed messages of one topic are exactly the outbox rows of that topic,
/// one message each: same key, headers and payload, in outbox order within each key.
fn assert_messages_match_rows(topic: &str, messages: &[Consumed], rows: &[OutboxRow]) {
    assert_eq!(
        messages.len(),
        rows.len(),
        "{topic}: {} messages for {} outbox rows: {messages:#?}",
        messages.len(),
        rows.len()
    );
    let by_event_id: HashMap<String, &Consumed> =
        messages.iter().map(|m| (m.event_id(), m)).collect();
    assert_eq!(
        by_event_id.len(),
        messages.len(),
        "{topic}: duplicate event_id"
    );
    for row in rows {
        assert_eq!(row.topic, topic, "outbox row of another topic");
        let event_id = row.event_id.to_string();
        let message = by_event_id
            .get(&event_id)
            .unwrap_or_else(|| panic!("{topic}: no message for outbox row {row:?}"));
        assert_eq!(message.key, row.event_key, "{topic}: key of {event_id}");
        assert_eq!(
            message.header("event_type"),
            Some(row.event_type.as_str()),
            "{topic}: event_type header of {event_id}"
        );
        assert_eq!(
            message.header("content-type"),
            Some("application/json"),
            "{topic}: content-type header of {event_id}"
        );
        assert_eq!(
            message.payload, row.payload,
            "{topic}: payload of {event_id}"
        );
    }
    // Per key, offsets follow outbox order.
    let mut by_key: HashMap<&str, Vec<&Consumed>> = HashMap::new();
    for message in messages {
        by_key
            .entry(message.key.as_str())
            .or_default()
            .push(message);
    }
    for (key, list) in by_key {
        let partitions: HashSet<i32> = list.iter().map(|m| m.partition).collect();
        assert_eq!(
            partitions.len(),
            1,
            "{topic}: key {key} spread over partitions"
        );
        let order: Vec<String> = list.iter().map(|m| m.event_id()).collect();
        let expected: Vec<String> = rows
            .iter()
            .filter(|row| row.event_key == key)
            .map(|row| row.event_id.to_string())
            .collect();
        assert_eq!(order, expected, "{topic}: order of key {key}");
    }
}

/// The common fields of a domain event payload.
fn assert_envelope(message: &Consumed, event_type: &str) {
    let payload = &message.payload;
    assert_eq!(payload["event_type"], event_type, "{payload}");
    let event_id = payload["event_id"].as_str().expect("event_id string");
    assert_eq!(message.header("event_id"), Some(event_id));
    let uuid = Uuid::parse_str(event_id).expect("event_id is a UUID");
    assert_eq!(
        uuid.get_version_num(),
        7,
        "event_id {event_id} is not a UUIDv7"
    );
    let occurred_at = payload["occurred_at"].as_str().expect("occurred_at string");
    let parsed = chrono::DateTime::parse_from_rfc3339(occurred_at)
        .unwrap_or_else(|error| panic!("occurred_at {occurred_at}: {error}"));
    assert!(
        occurred_at.ends_with('Z'),
        "occurred_at {occurred_at} is not UTC"
    );
    assert!(
        (chrono::Utc::now() - parsed.to_utc()).num_seconds().abs() < 300,
        "occurred_at {occurred_at} is not recent"
    );
}

/// The first-seen event order of one key's messages (duplicates removed).
fn key_order(messages: &[Consumed], key: &str) -> Vec<String> {
    let of_key: Vec<Consumed> = messages.iter().filter(|m| m.key == key).cloned().collect();
    broker::distinct_event_ids(&of_key)
}

/// Asserts every row is delivered (after dedupe by event id: exactly the rows), per-key order
/// kept; returns the number of duplicate messages.
fn assert_delivered_once_after_dedupe(
    label: &str,
    messages: &[Consumed],
    rows: &[OutboxRow],
) -> usize {
    let expected: HashSet<String> = rows.iter().map(|r| r.event_id.to_string()).collect();
    let distinct = broker::distinct_event_ids(messages);
    let delivered: HashSet<String> = distinct.iter().cloned().collect();
    let missing: Vec<&String> = expected.difference(&delivered).collect();
    let unknown: Vec<&String> = delivered.difference(&expected).collect();
    assert!(
        missing.is_empty(),
        "{label}: {} of {} events never arrived, e.g. {:?}",
        missing.len(),
        expected.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    assert!(unknown.is_empty(), "{label}: unknown events {unknown:?}");
    assert_eq!(distinct.len(), rows.len(), "{label}: distinct event ids");
    let keys: HashSet<&str> = rows.iter().map(|r| r.event_key.as_str()).collect();
    for key in keys {
        let expected_order: Vec<String> = rows
            .iter()
            .filter(|r| r.event_key == key)
            .map(|r| r.event_id.to_string())
            .collect();
        assert_eq!(
            key_order(messages, key),
            expected_order,
            "{label}: events of key {key} out of commit order"
        );
    }
    messages.len() - distinct.len()
}

/// Waits (bounded) until `check` holds for the rendered metrics.
async fn wait_for_metrics(metrics: &Metrics, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = metrics.render().unwrap();
        if check(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what} within 15 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spawn_monitor(app: &TestApp, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(relay::monitor(
        app.pool.clone(),
        app.state.metrics.clone(),
        Duration::from_secs(7 * 24 * 3600),
        true,
        shutdown,
    ))
}

// ---------------------------------------------------------------------------------------------
// 1. One message per mutation, on the right topic, with key, headers and payload
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_mutation_publishes_one_message_with_key_headers_and_payload() {
    let broker = Broker::with_topics().await;
    let app = TestApp::new().await;

    let user = ok(&app
        .storefront(
            Method::POST,
            "/users/add",
            Some(&json!({"id": "user_a", "firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"})),
        )
        .await);
    let address = ok(&app
        .storefront(
            Method::POST,
            "/users/addresses/add",
            Some(
                &json!({"street": "1 Main St", "city": "Toronto", "state": "ON",
                "country": "Canada", "zipCode": "M5V 2T6", "userId": "user_a"}),
            ),
        )
        .await);
    let address_id = address["id"].as_i64().unwrap();
    let item = cart_add(&app, "user_a", 3, 2).await;
    let item_id = item["id"].as_i64().unwrap();
    let updated_item = json!({"id": item_id, "product_id": 3, "quantity": 5, "user_id": "user_a"});
    assert_eq!(
        ok(&app
            .storefront(Method::PUT, "/cart/update", Some(&updated_item))
            .await),
        json!({"id": item_id})
    );
    ok(&app
        .storefront(
            Method::DELETE,
            &format!("/cart/delete/{item_id}/user/user_a"),
            None,
        )
        .await);
    let detailed = ok(&app
        .storefront(
            Method::POST,
            "/orders/detailed/add",
            Some(&json!({
                "order": {"user_id": "user_a", "address_id": address_id, "total_price": 99.25, "status": "pending"},
                "items": [{"product_id": 1, "quantity": 1}, {"product_id": 2, "quantity": 2}]
            })),
        )
        .await);
    let order_id = detailed["order"]["id"].as_i64().unwrap();
    let order_item = ok(&app
        .storefront(
            Method::POST,
            "/orders/items/add",
            Some(&json!({"order_id": order_id, "product_id": 5, "quantity": 3})),
        )
        .await);
    let product = ok(&app
        .admin(
            Method::PUT,
            "/products/update/3",
            Some(&json!({
                "name": "Llama Mauve Candle XL", "description": "A bigger candle.", "category": 2,
                "subCategory": 5, "imageUrl": "https://example.com/candle.png", "price": 21,
                "previousPrice": 25, "offered": true
            })),
        )
        .await);

    let relay = new_relay(&app, broker.kafka(), 500);
    drain(&app, &relay).await;

    let expected_types: [(&str, &[&str]); 4] = [
        ("users_updates", &["user_created", "address_added"]),
        (
            "cart_updates",
            &["cart_item_added", "cart_item_updated", "cart_item_deleted"],
        ),
        ("orders_updates", &["order_created", "order_item_added"]),
        ("products_updates", &["product_updated"]),
    ];
    let mut all = HashMap::new();
    for (topic, types) in expected_types {
        let rows = outbox_rows_of_topic(&app.pool, topic).await;
        let row_types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
        assert_eq!(row_types, types, "{topic}: outbox rows");
        let messages = consume(&broker, topic, rows.len()).await;
        assert_messages_match_rows(topic, &messages, &rows);
        let message_types: Vec<&str> = messages
            .iter()
            .map(|m| m.header("event_type").unwrap())
            .collect();
        assert_eq!(message_types, types, "{topic}: message order");
        for (message, event_type) in messages.iter().zip(types) {
            assert_envelope(message, event_type);
        }
        all.insert(topic, messages);
    }

    // users_updates: key user id, the user (snake_case) or null with the addresses.
    let users = &all["users_updates"];
    assert!(users.iter().all(|m| m.key == "user_a"));
    assert_eq!(users[0].payload["user_id"], "user_a");
    assert_eq!(
        users[0].payload["user"],
        json!({"id": user["id"], "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"})
    );
    assert_eq!(users[0].payload["addresses"], json!([]));
    assert_eq!(users[1].payload["user_id"], "user_a");
    assert_eq!(users[1].payload["user"], Value::Null);
    assert_eq!(
        users[1].payload["addresses"],
        json!([{"id": address_id, "street": "1 Main St", "city": "Toronto", "state": "ON",
            "country": "Canada", "zip_code": "M5V 2T6", "user_id": "user_a"}])
    );

    // cart_updates: the item after each change; a deleted item carries its last state.
    let cart = &all["cart_updates"];
    assert!(cart.iter().all(|m| m.key == "user_a"));
    assert!(cart.iter().all(|m| m.payload["user_id"] == "user_a"));
    assert_eq!(cart[0].payload["cart_item"], item);
    assert_eq!(cart[1].payload["cart_item"], updated_item);
    assert_eq!(cart[2].payload["cart_item"], updated_item);

    // orders_updates: the order with its items (all of them on create, the new one on item add).
    let orders = &all["orders_updates"];
    assert!(orders.iter().all(|m| m.key == "user_a"));
    assert_eq!(orders[0].payload["user_id"], "user_a");
    assert_eq!(orders[0].payload["order"], detailed["order"]);
    assert_eq!(orders[0].payload["order_items"], detailed["items"]);
    // The item add changed only the server's item total.
    let price_5: i64 = sqlx::query_scalar("SELECT price FROM products WHERE id = 5")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut order_after_add = orders[1].payload["order"].clone();
    assert_eq!(
        order_after_add["items_total"].as_i64(),
        Some(detailed["order"]["items_total"].as_i64().unwrap() + 3 * price_5)
    );
    order_after_add["items_total"] = detailed["order"]["items_total"].clone();
    assert_eq!(order_after_add, detailed["order"]);
    assert_eq!(orders[1].payload["order_items"], json!([order_item]));

    // products_updates: key product id, the full product.
    let products = &all["products_updates"];
    assert_eq!(products[0].key, "3");
    assert_eq!(products[0].payload["product"], product);
    assert!(products[0].payload.get("user_id").is_none());

    // Nothing else anywhere (user_events untouched).
    assert!(consume(&broker, "user_events", 0).await.is_empty());
}

/// events.md: headers carry the W3C `traceparent` of the request that caused the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_carry_the_traceparent_of_the_request() {
    let broker = Broker::with_topics().await;
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let auth = format!("Bearer {}", app.storefront_key);
    let response = app
        .send(
            Method::POST,
            "/cart/add",
            Some(&auth),
            Some(&json!({"product_id": 1, "quantity": 1, "user_id": "user_a"})),
            &[("traceparent", traceparent)],
        )
        .await;
    ok(&response);
    let relay = new_relay(&app, broker.kafka(), 500);
    drain(&app, &relay).await;
    let messages = consume(&broker, "cart_updates", 1).await;
    assert_eq!(messages.len(), 1);
    let header = messages[0].header("traceparent");
    assert!(
        header.is_some_and(|value| value.contains("4bf92f3577b34da6a3ce929d0e0e4736")),
        "traceparent header of the message: {header:?} (expected the trace id of the request's \
         traceparent {traceparent}); headers: {:?}",
        messages[0].headers
    );
}

/// events.md: topic names take the configured prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topic_prefix_is_applied_to_every_published_topic() {
    let broker = Broker::start().await;
    let mut kafka = broker.kafka();
    kafka.kafka_topic_prefix = "store-a.".into();
    broker::ensure_topics(&kafka).await;
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    cart_add(&app, "user_a", 1, 1).await;
    let relay = new_relay(&app, kafka, 500);
    drain(&app, &relay).await;
    let messages = consume(&broker, "store-a.cart_updates", 1).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(messages[0].key, "user_a");
}

// ---------------------------------------------------------------------------------------------
// 2. Rolled-back changes publish nothing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolled_back_mutation_publishes_nothing() {
    let broker = Broker::with_topics().await;
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let address_id = create_address(&app.pool, "user_a").await;

    // A checkout whose third item names an unknown product fails as a whole.
    let message = app
        .storefront(
            Method::POST,
            "/orders/detailed/add",
            Some(&json!({
                "order": {"user_id": "user_a", "address_id": address_id, "total_price": 10.5, "status": "pending"},
                "items": [{"product_id": 1, "quantity": 1}, {"product_id": 2, "quantity": 1},
                          {"product_id": 999, "quantity": 1}]
            })),
        )
        .await
        .assert_error(400, "invalid_argument");
    assert_eq!(message, "items[2]: product_id 999 does not exist");

    // A change and its outbox row in one transaction that rolls back.
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO cart_items (product_id, quantity, user_id) VALUES (4, 1, 'user_a')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let rolled_back = outbox::append(
        &mut tx,
        &[
            OutboxEvent::new(Topic::CartUpdates, "user_a", "cart_item_added")
                .with("user_id", "user_a"),
            OutboxEvent::new(Topic::OrdersUpdates, "user_a", "order_created")
                .with("user_id", "user_a"),
        ],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    // The later good mutation.
    let item = cart_add(&app, "user_a", 5, 2).await;

    let rows: Vec<OutboxRow> = sqlx::query_as(
        "SELECT id, event_id, topic, event_key, event_type, payload FROM outbox ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "only the committed change has an outbox row: {rows:#?}"
    );
    let relay = new_relay(&app, broker.kafka(), 500);
    drain(&app, &relay).await;

    let cart = consume(&broker, "cart_updates", 1).await;
    assert_messages_match_rows("cart_updates", &cart, &rows);
    assert_eq!(cart[0].payload["cart_item"], item);
    let orders = consume(&broker, "orders_updates", 0).await;
    assert!(orders.is_empty(), "orders_updates: {orders:#?}");
    for id in rolled_back {
        assert!(
            cart.iter().all(|m| m.event_id() != id.to_string()),
            "rolled-back event {id} was published"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Per-key commit order
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_users_events_arrive_in_commit_order() {
    let broker = Broker::with_topics().await;
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let mut ids = Vec::with_capacity(1000);
    for n in 0..1000_i64 {
        let item = cart_add(&app, "user_a", n % 25 + 1, n % 7 + 1).await;
        ids.push(item["id"].as_i64().unwrap());
        if n % 150 == 149 {
            // A cart holds at most 200 rows: empty it behind the API's back (no events).
            sqlx::query("DELETE FROM cart_items WHERE user_id = 'user_a'")
                .execute(&app.pool)
                .await
                .unwrap();
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "cart ids ascend");
    let relay = new_relay(&app, broker.kafka(), 500);
    drain(&app, &relay).await;

    let messages = consume(&broker, "cart_updates", 1000).await;
    assert_eq!(messages.len(), 1000, "one message per mutation");
    let partitions: HashSet<i32> = messages.iter().map(|m| m.partition).collect();
    assert_eq!(partitions.len(), 1, "one key, one partition");
    let order: Vec<i64> = messages
        .iter()
        .map(|m| m.payload["cart_item"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(order, ids, "cart_item ids in offset order = commit order");
    assert!(messages.windows(2).all(|w| w[0].offset < w[1].offset));
}

// ---------------------------------------------------------------------------------------------
// 4. Broker down: the API keeps serving, the outbox keeps everything, delivery resumes
// ---------------------------------------------------------------------------------------------

/// How Kafka goes away in the outage tests.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outage {
    /// The broker process stops and a new one starts on the same port (memory storage: empty, so
    /// the topics are created again).
    BrokerRestart,
    /// The network to a running broker is cut and restored (the broker keeps its state).
    NetworkCut,
}

/// 500 mutations while Kafka is unreachable: all succeed, wait in the outbox (and in the backlog
/// metrics), and are all delivered, in per-key order, once Kafka is back.
async fn events_survive(outage: Outage) {
    init_logs();
    let mut broker = match outage {
        Outage::BrokerRestart => Broker::with_topics().await,
        Outage::NetworkCut => {
            let broker = Broker::start_behind_gate().await;
            broker.ensure_topics().await;
            broker
        }
    };
    let app = TestApp::new().await;
    let users = ["user_0", "user_1", "user_2", "user_3", "user_4"];
    for user in users {
        insert_user(&app.pool, user).await;
    }
    let (stop, shutdown) = watch::channel(false);
    let relay_task = tokio::spawn(new_relay(&app, broker.kafka(), 100).run(shutdown.clone()));
    let monitor = spawn_monitor(&app, shutdown.clone());

    // The relay has a live producer session before the outage.
    cart_add(&app, "user_0", 1, 1).await;
    wait_until_drained(&app.pool, Duration::from_secs(30)).await;
    let before: HashSet<i64> = sqlx::query_scalar("SELECT id FROM outbox")
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();

    match outage {
        Outage::BrokerRestart => broker.stop(),
        Outage::NetworkCut => broker.close_gate().await,
    }
    let started = Instant::now();
    for n in 0..500_usize {
        let user = users[n % users.len()];
        let body = json!({"product_id": (n % 25) as i64 + 1, "quantity": 1, "user_id": user});
        let response = app.storefront(Method::POST, "/cart/add", Some(&body)).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "mutation {n} while Kafka is down: {}",
            response.body
        );
    }
    eprintln!(
        "{outage:?}: 500 mutations with Kafka unreachable took {:?}",
        started.elapsed()
    );
    assert_eq!(
        pending(&app.pool).await,
        500,
        "every event waits in the outbox"
    );
    wait_for_metrics(
        &app.state.metrics,
        "outbox_pending 500 and an oldest age",
        |text| {
            metric_value(text, "outbox_pending") == Some(500.0)
                && metric_value(text, "outbox_oldest_pending_age_seconds")
                    .is_some_and(|age| age > 0.0)
        },
    )
    .await;

    // An outage longer than the producer's message timeout, so publication attempts fail and the
    // relay has to retry them (a shorter one is absorbed by librdkafka's own retries).
    let timeout = Duration::from_millis(broker.kafka().kafka_message_timeout_ms);
    if let Some(rest) = (timeout + Duration::from_secs(3)).checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    match outage {
        Outage::BrokerRestart => {
            broker.restart().await;
            broker.ensure_topics().await;
        }
        Outage::NetworkCut => broker.open_gate().await,
    }
    let restored = Instant::now();
    wait_until_drained(&app.pool, Duration::from_secs(90)).await;
    eprintln!(
        "{outage:?}: outbox drained {:?} after Kafka came back",
        restored.elapsed()
    );
    wait_for_metrics(&app.state.metrics, "outbox_pending 0", |text| {
        metric_value(text, "outbox_pending") == Some(0.0)
    })
    .await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), relay_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), monitor).await;

    let rows: Vec<OutboxRow> = outbox_rows_of_topic(&app.pool, "cart_updates")
        .await
        .into_iter()
        .filter(|row| !before.contains(&row.id))
        .collect();
    assert_eq!(rows.len(), 500);
    let messages = consume(&broker, "cart_updates", 500).await;
    let messages: Vec<Consumed> = messages
        .into_iter()
        .filter(|m| rows.iter().any(|r| r.event_id.to_string() == m.event_id()))
        .collect();
    let duplicates = assert_delivered_once_after_dedupe(&format!("{outage:?}"), &messages, &rows);
    eprintln!(
        "{outage:?}: {} messages for 500 events, {duplicates} duplicate(s)",
        messages.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_wait_in_the_outbox_while_kafka_is_down_and_all_arrive_when_it_returns() {
    events_survive(Outage::BrokerRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_wait_in_the_outbox_during_a_network_outage_and_all_arrive_after_it() {
    events_survive(Outage::NetworkCut).await;
}

// ---------------------------------------------------------------------------------------------
// 5. API restart in the middle of a backlog
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_when_the_relay_stops_mid_backlog() {
    let broker = Broker::with_topics().await;
    let app = TestApp::new().await;
    for user in ["user_0", "user_1", "user_2"] {
        insert_user(&app.pool, user).await;
        cart_add_all(&app, user, 100).await;
    }
    assert_eq!(pending(&app.pool).await, 300);

    // Hold back the second half of the backlog (row locks on its queue entries: the relay skips
    // locked rows), so the first relay certainly stops with rows pending however fast it runs.
    let cut: i64 = sqlx::query_scalar("SELECT min(id) + 149 FROM outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut hold = app.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM outbox_pending WHERE id > $1 FOR UPDATE")
        .bind(cut)
        .execute(&mut *hold)
        .await
        .unwrap();

    let (_stop, shutdown) = watch::channel(false);
    let first = tokio::spawn(new_relay(&app, broker.kafka(), 50).run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    // Stop it as soon as its first batch is marked published, usually with the next in flight.
    while published(&app.pool).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the first relay published nothing in 30 s"
        );
        tokio::task::yield_now().await;
    }
    first.abort();
    let _ = first.await;
    let at_abort = published(&app.pool).await;
    eprintln!("relay aborted after {at_abort} of 300 rows were marked published");
    assert!(at_abort < 300);
    hold.rollback().await.unwrap();

    let second = tokio::spawn(new_relay(&app, broker.kafka(), 50).run(shutdown.clone()));
    wait_until_drained(&app.pool, Duration::from_secs(60)).await;
    second.abort();
    let _ = second.await;

    let rows = outbox_rows_of_topic(&app.pool, "cart_updates").await;
    assert_eq!(rows.len(), 300);
    let messages = consume(&broker, "cart_updates", 300).await;
    let duplicates = assert_delivered_once_after_dedupe("relay restart", &messages, &rows);
    eprintln!(
        "relay restart: {} messages for 300 events, {duplicates} duplicate(s)",
        messages.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Several replicas
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_on_one_database_publish_each_row_exactly_once() {
    let broker = Broker::with_topics().await;
    let app = TestApp::new().await;
    for user in ["user_0", "user_1", "user_2", "user_3"] {
        insert_user(&app.pool, user).await;
        cart_add_all(&app, user, 100).await;
    }
    assert_eq!(pending(&app.pool).await, 400);

    let (stop, shutdown) = watch::channel(false);
    let relays = [
        tokio::spawn(new_relay(&app, broker.kafka(), 50).run(shutdown.clone())),
        tokio::spawn(new_relay(&app, broker.kafka(), 50).run(shutdown.clone())),
    ];
    wait_until_drained(&app.pool, Duration::from_secs(60)).await;
    let _ = stop.send(true);
    for relay in relays {
        tokio::time::timeout(Duration::from_secs(30), relay)
            .await
            .expect("relay stops on shutdown")
            .expect("relay task");
    }

    let rows = outbox_rows_of_topic(&app.pool, "cart_updates").await;
    let messages = consume(&broker, "cart_updates", 400).await;
    assert_eq!(messages.len(), 400, "one message per row");
    let duplicates = assert_delivered_once_after_dedupe("two relays", &messages, &rows);
    assert_eq!(duplicates, 0);
    assert_eq!(
        metric_value(
            &app.state.metrics.render().unwrap(),
            "outbox_published_total"
        ),
        Some(400.0)
    );
}

// ---------------------------------------------------------------------------------------------
// 7. POST /events/user
// ---------------------------------------------------------------------------------------------

fn analytics_event(user_id: &str, n: usize) -> Value {
    json!({
        "user_id": user_id,
        "event_type": "click",
        "core_component": "cart",
        "description": format!("added item {n}"),
        "metadata": {"product_id": n, "price": 12.5, "tags": ["a", "b"]},
        "client_id": "web-3f2a",
        "timestamp": "2026-11-25T10:00:00.123Z"
    })
}

async fn user_events_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE topic = 'user_events'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_events_are_validated_and_published_to_user_events() {
    let broker = Broker::with_topics().await;
    let app = TestApp::new().await;

    let batch = vec![
        analytics_event("user_a", 1),
        analytics_event("user_b", 2),
        json!({"user_id": "user_a", "event_type": "view", "core_component": "hero",
               "client_id": "web-3f2a", "timestamp": "2026-11-25T10:00:01+02:00"}),
    ];
    let response = app
        .storefront(Method::POST, "/events/user", Some(&json!({"data": batch})))
        .await;
    assert_eq!(ok(&response), json!({"accepted": 3}));
    let single = analytics_event("user_c", 4);
    assert_eq!(
        ok(&app
            .storefront(Method::POST, "/events/user", Some(&single))
            .await),
        json!({"accepted": 1})
    );
    assert_eq!(user_events_count(&app.pool).await, 4);

    // Each invalid field is a 400 naming the index of the bad event; nothing is stored.
    let cases: Vec<(&str, Value, &str)> = vec![
        ("user_id", json!(""), "user_id is required"),
        ("user_id", Value::Null, "user_id is required"),
        ("event_type", json!(null), "event_type is required"),
        ("event_type", json!("  "), "event_type is required"),
        ("core_component", json!(3), "core_component is required"),
        ("client_id", json!(""), "client_id is required"),
        (
            "timestamp",
            json!("yesterday"),
            "timestamp must be an RFC 3339 date-time",
        ),
        (
            "timestamp",
            json!("2026-11-25 10:00:00"),
            "timestamp must be an RFC 3339 date-time",
        ),
        ("metadata", json!([1]), "metadata must be an object"),
        ("metadata", json!("x"), "metadata must be an object"),
        ("description", json!(5), "description must be a string"),
    ];
    for (field, value, message) in cases {
        let mut bad = analytics_event("user_a", 9);
        if value.is_null() && field == "user_id" {
            bad.as_object_mut().unwrap().remove(field);
        } else {
            bad[field] = value.clone();
        }
        let body = json!({"data": [analytics_event("user_a", 8), bad.clone(), analytics_event("user_a", 10)]});
        let error = app
            .storefront(Method::POST, "/events/user", Some(&body))
            .await
            .assert_error(400, "invalid_argument");
        assert_eq!(error, format!("data[1]: {message}"), "{field} = {value}");
        // The same event alone: the message without an index.
        let error = app
            .storefront(Method::POST, "/events/user", Some(&bad))
            .await
            .assert_error(400, "invalid_argument");
        assert_eq!(error, message, "single event, {field} = {value}");
    }
    let mut missing_timestamp = analytics_event("user_a", 9);
    missing_timestamp
        .as_object_mut()
        .unwrap()
        .remove("timestamp");
    let error = app
        .storefront(
            Method::POST,
            "/events/user",
            Some(&json!({"data": [missing_timestamp]})),
        )
        .await
        .assert_error(400, "invalid_argument");
    assert_eq!(error, "data[0]: timestamp is required");
    let mut big = analytics_event("user_a", 9);
    big["metadata"] = json!({"blob": "x".repeat(16 * 1024)});
    let error = app
        .storefront(
            Method::POST,
            "/events/user",
            Some(
                &json!({"data": [analytics_event("user_a", 1), analytics_event("user_a", 2), big]}),
            ),
        )
        .await
        .assert_error(400, "invalid_argument");
    assert_eq!(error, "data[2]: event larger than 16 KiB");
    let error = app
        .storefront(
            Method::POST,
            "/events/user",
            Some(&json!({"data": [analytics_event("user_a", 1), "not an event"]})),
        )
        .await
        .assert_error(400, "invalid_argument");
    assert_eq!(error, "data[1]: event must be a JSON object");
    let too_many: Vec<Value> = (0..501).map(|n| analytics_event("user_a", n)).collect();
    let error = app
        .storefront(
            Method::POST,
            "/events/user",
            Some(&json!({"data": too_many})),
        )
        .await
        .assert_error(400, "invalid_argument");
    assert_eq!(error, "too many events, at most 500");
    app.storefront(Method::POST, "/events/user", Some(&json!({"data": []})))
        .await
        .assert_error(400, "invalid_argument");
    assert_eq!(
        user_events_count(&app.pool).await,
        4,
        "nothing stored on 400"
    );
    // Exactly 500 is fine.
    let five_hundred: Vec<Value> = (0..500).map(|n| analytics_event("user_d", n)).collect();
    assert_eq!(
        ok(&app
            .storefront(
                Method::POST,
                "/events/user",
                Some(&json!({"data": five_hundred}))
            )
            .await),
        json!({"accepted": 500})
    );

    let relay = new_relay(&app, broker.kafka(), 500);
    drain(&app, &relay).await;
    let messages = consume(&broker, "user_events", 504).await;
    assert_eq!(messages.len(), 504, "one message per accepted event");
    let sent: Vec<&Value> = batch.iter().chain([&single]).collect();
    for event in sent {
        let matching: Vec<&Consumed> = messages.iter().filter(|m| &m.payload == event).collect();
        assert_eq!(matching.len(), 1, "exactly one message for {event}");
        assert_eq!(matching[0].key, event["user_id"].as_str().unwrap());
        assert_eq!(matching[0].header("content-type"), Some("application/json"));
        assert!(matching[0].header("event_id").is_some());
    }
    let rows = outbox_rows_of_topic(&app.pool, "user_events").await;
    assert_messages_match_rows("user_events", &messages, &rows);
    assert_eq!(
        metric_value(
            &app.state.metrics.render().unwrap(),
            "user_events_accepted_total"
        ),
        Some(504.0)
    );
}

// ---------------------------------------------------------------------------------------------
// 8. SSE live stream across two API instances
// ---------------------------------------------------------------------------------------------

/// A second API process on the test's database: its own pool, cache, metrics, hub and key.
struct Instance {
    router: Router,
    pool: PgPool,
    key: String,
}

impl Instance {
    async fn on_database_of(app: &TestApp) -> Instance {
        let database: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&format!("{}/{database}", common::server_url()))
            .await
            .expect("second pool");
        let metrics = Metrics::new().unwrap();
        let cache = Cache::memory(1024 * 1024, "second:", metrics.clone());
        let key = generate_key();
        let mut keys = ApiKeys::default();
        keys.add_key(&key, Scope::Storefront);
        let state = AppState::new(pool.clone(), cache, keys, metrics);
        let router = plamatio_api::app(
            state,
            &plamatio_api::cli::edge_config(&ServeConfig::from_defaults()),
        );
        Instance { router, pool, key }
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.key));
        let body = match body {
            Some(json) => {
                builder = builder.header("content-type", "application/json");
                Body::from(serde_json::to_vec(json).unwrap())
            }
            None => Body::empty(),
        };
        let response = self
            .router
            .clone()
            .oneshot(builder.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "{path}: {value}");
        value
    }
}

#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    event: String,
    id: String,
    data: Value,
}

/// Reads SSE events from a streaming response body.
struct SseReader {
    body: Body,
    buffer: String,
}

impl SseReader {
    /// The next event (comments skipped), or None when `limit` passed or the stream ended.
    async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                let mut event = String::new();
                let mut id = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    let field = |name: &str| {
                        line.strip_prefix(name)
                            .map(|rest| rest.strip_prefix(' ').unwrap_or(rest).to_owned())
                    };
                    if let Some(value) = field("event:") {
                        event = value;
                    } else if let Some(value) = field("id:") {
                        id = value;
                    } else if let Some(value) = field("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(&value);
                    }
                }
                if data.is_empty() && event.is_empty() {
                    continue; // a comment (keep-alive)
                }
                let data = serde_json::from_str(&data)
                    .unwrap_or_else(|error| panic!("SSE data is not JSON ({error}): {data}"));
                return Some(SseEvent { event, id, data });
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await;
            match frame {
                Err(_) => return None,
                Ok(None) => return None,
                Ok(Some(Err(error))) => panic!("SSE body error: {error}"),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.push_str(&String::from_utf8_lossy(&data));
                        self.buffer = self.buffer.replace("\r\n", "\n");
                    }
                }
            }
        }
    }
}

async fn open_stream(app: &TestApp, user_id: &str, last_event_id: Option<&str>) -> SseReader {
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(format!("/events/stream/{user_id}"))
        .header("authorization", format!("Bearer {}", app.storefront_key))
        // as a browser's EventSource asks: an event stream is never compressed
        .header("accept", "text/event-stream")
        .header("accept-encoding", "gzip, deflate, br");
    if let Some(id) = last_event_id {
        builder = builder.header("last-event-id", id);
    }
    let response = app
        .router
        .clone()
        .oneshot(builder.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "content-type {content_type}"
    );
    assert_eq!(response.headers().get("content-encoding"), None);
    SseReader {
        body: response.into_body(),
        buffer: String::new(),
    }
}

/// Waits until both instances' hubs LISTEN (they connect in the background at start).
async fn wait_for_listeners(pool: &PgPool, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if listening >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {listening} of {count} LISTEN connections after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sse_subscribers(app: &TestApp) -> Option<f64> {
    metric_value(&app.state.metrics.render().unwrap(), "sse_subscribers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_live_stream_shows_a_users_changes_made_through_another_instance() {
    let app = TestApp::new().await;
    let other = Instance::on_database_of(&app).await;
    insert_user(&app.pool, "user_a").await;
    insert_user(&app.pool, "user_b").await;
    wait_for_listeners(&app.pool, 2).await;

    // A change before the stream opens is not replayed to a stream without Last-Event-ID.
    let before = other
        .send(
            Method::POST,
            "/cart/add",
            Some(&json!({"product_id": 1, "quantity": 1, "user_id": "user_a"})),
        )
        .await;
    let before_id = before["id"].as_i64().unwrap();

    assert_eq!(sse_subscribers(&app), Some(0.0));
    let mut stream = open_stream(&app, "user_a", None).await;
    assert_eq!(sse_subscribers(&app), Some(1.0), "gauge while streaming");

    other
        .send(
            Method::POST,
            "/cart/add",
            Some(&json!({"product_id": 2, "quantity": 1, "user_id": "user_b"})),
        )
        .await;
    let added = other
        .send(
            Method::POST,
            "/cart/add",
            Some(&json!({"product_id": 3, "quantity": 2, "user_id": "user_a"})),
        )
        .await;
    let committed = Instant::now();
    let first = stream
        .next(Duration::from_secs(1))
        .await
        .expect("user A's change arrives within 1 s");
    eprintln!("SSE latency across instances: {:?}", committed.elapsed());
    assert_eq!(first.event, "cart_item_added");
    assert_eq!(first.data["cart_item"], added, "{first:?}");
    assert_eq!(first.data["user_id"], "user_a");
    assert_eq!(first.data["event_id"], first.id.as_str());

    let item_id = added["id"].as_i64().unwrap();
    let updated = json!({"id": item_id, "product_id": 3, "quantity": 4, "user_id": "user_a"});
    other
        .send(Method::PUT, "/cart/update", Some(&updated))
        .await;
    other
        .send(
            Method::DELETE,
            &format!("/cart/delete/{before_id}/user/user_a"),
            None,
        )
        .await;
    other
        .send(
            Method::POST,
            "/cart/add",
            Some(&json!({"product_id": 4, "quantity": 1, "user_id": "user_b"})),
        )
        .await;
    let second = stream
        .next(Duration::from_secs(1))
        .await
        .expect("the update");
    let third = stream
        .next(Duration::from_secs(1))
        .await
        .expect("the delete");
    assert_eq!(second.event, "cart_item_updated");
    assert_eq!(second.data["cart_item"], updated);
    assert_eq!(third.event, "cart_item_deleted");
    assert_eq!(third.data["cart_item"]["id"], before_id);
    let extra = stream.next(Duration::from_secs(1)).await;
    assert!(extra.is_none(), "nothing of user B's changes: {extra:?}");

    // The ids and payloads are the outbox's.
    let rows: Vec<OutboxRow> = outbox_rows_of_topic(&app.pool, "cart_updates")
        .await
        .into_iter()
        .filter(|row| row.event_key == "user_a")
        .collect();
    assert_eq!(rows.len(), 4);
    for (event, row) in [&first, &second, &third].into_iter().zip(&rows[1..]) {
        assert_eq!(event.id, row.event_id.to_string());
        assert_eq!(event.data, row.payload);
    }

    drop(stream);
    assert_eq!(sse_subscribers(&app), Some(0.0), "gauge after disconnect");

    // Resuming after the first event gives the later ones, after the user's earlier events of the
    // look-back (one of them may have committed after the client read past it), never the first.
    let mut resumed = open_stream(&app, "user_a", Some(&first.id)).await;
    let replayed = drain_stream(&mut resumed, Duration::from_secs(1)).await;
    let before_event = &rows[0].event_id.to_string();
    let (earlier, later): (Vec<_>, Vec<_>) = replayed
        .into_iter()
        .partition(|event| &event.id == before_event);
    assert_eq!(later, vec![second, third], "events after Last-Event-ID");
    assert!(
        earlier.len() <= 1,
        "the earlier event at most once: {earlier:?}"
    );
    drop(resumed);
    other.pool.close().await;
}

/// A cart event of `user_a` marked with `n`, appended by `tx` as a mutation does (row and `NOTIFY`).
async fn append_marked(tx: &mut sqlx::PgConnection, n: &str) {
    let event = OutboxEvent::new(Topic::CartUpdates, "user_a", "cart_item_added").with("n", n);
    outbox::append(tx, &[event]).await.unwrap();
}

/// Two transactions each append a marked event; the later one (higher outbox id) commits, the
/// earlier one is returned still open.
async fn commit_the_higher_id_first(
    pool: &PgPool,
    low: &str,
    high: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lower = pool.begin().await.unwrap();
    append_marked(&mut lower, low).await;
    let mut higher = pool.begin().await.unwrap();
    append_marked(&mut higher, high).await;
    higher.commit().await.unwrap();
    lower
}

async fn outbox_id_of(pool: &PgPool, event: &SseEvent) -> i64 {
    sqlx::query_scalar("SELECT id FROM outbox WHERE event_id = $1::uuid")
        .bind(&event.id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Every event the stream sends within `quiet` of the previous one.
async fn drain_stream(stream: &mut SseReader, quiet: Duration) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while let Some(event) = stream.next(quiet).await {
        events.push(event);
        assert!(events.len() <= 10, "runaway stream: {events:?}");
    }
    events
}

/// Outbox ids are taken at insert, not at commit: when a user's transaction with the lower id
/// commits after one with a higher id, the stream has already sent the higher one, and must still
/// send the lower one — to an open stream, to a stream opened between the two commits, and to a
/// stream resumed with `Last-Event-ID` after the client missed the late commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_committed_after_one_with_a_higher_id_still_reaches_the_stream() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    wait_for_listeners(&app.pool, 1).await;
    let marks = |events: &[SseEvent]| -> Vec<String> {
        events
            .iter()
            .map(|event| event.data["n"].as_str().unwrap_or_default().to_owned())
            .collect()
    };

    // An open stream.
    let mut stream = open_stream(&app, "user_a", None).await;
    let a = commit_the_higher_id_first(&app.pool, "a", "b").await;
    let first = stream
        .next(Duration::from_secs(5))
        .await
        .expect("B's event");
    assert_eq!(first.data["n"], "b");
    a.commit().await.unwrap();
    let second = stream
        .next(Duration::from_secs(5))
        .await
        .expect("A's event, committed after B's");
    assert_eq!(second.data["n"], "a");
    assert!(
        outbox_id_of(&app.pool, &second).await < outbox_id_of(&app.pool, &first).await,
        "A's row has the lower id"
    );
    let extra = drain_stream(&mut stream, Duration::from_secs(1)).await;
    assert!(extra.is_empty(), "nothing sent twice: {extra:?}");
    drop(stream);

    // A stream opened between the two commits: B's event is before it, A's after it.
    let c = commit_the_higher_id_first(&app.pool, "c", "d").await;
    let mut stream = open_stream(&app, "user_a", None).await;
    c.commit().await.unwrap();
    let events = drain_stream(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(marks(&events), ["c"], "{events:?}");
    drop(stream);

    // The client leaves after F's event, before E (lower id) commits, and resumes after F.
    let mut stream = open_stream(&app, "user_a", None).await;
    let e = commit_the_higher_id_first(&app.pool, "e", "f").await;
    let seen = stream
        .next(Duration::from_secs(5))
        .await
        .expect("F's event");
    assert_eq!(seen.data["n"], "f");
    drop(stream);
    e.commit().await.unwrap();
    let mut resumed = open_stream(&app, "user_a", Some(&seen.id)).await;
    let replayed = marks(&drain_stream(&mut resumed, Duration::from_secs(2)).await);
    assert!(
        replayed.contains(&"e".to_owned()),
        "E after resuming: {replayed:?}"
    );
    assert!(
        !replayed.contains(&"f".to_owned()),
        "not the Last-Event-ID itself: {replayed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_show_the_backlog_and_what_was_published() {
    let broker = Broker::with_topics().await;
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    for n in 0..7 {
        cart_add(&app, "user_a", n + 1, 1).await;
    }

    let (stop, shutdown) = watch::channel(false);
    let monitor = spawn_monitor(&app, shutdown);
    wait_for_metrics(&app.state.metrics, "outbox_pending 7", |text| {
        metric_value(text, "outbox_pending") == Some(7.0)
            && metric_value(text, "outbox_oldest_pending_age_seconds").is_some_and(|age| age > 0.0)
    })
    .await;
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), monitor)
        .await
        .expect("monitor stops")
        .unwrap();

    let relay = new_relay(&app, broker.kafka(), 500);
    drain(&app, &relay).await;
    let (stop, shutdown) = watch::channel(false);
    let monitor = spawn_monitor(&app, shutdown);
    wait_for_metrics(&app.state.metrics, "outbox_pending 0", |text| {
        metric_value(text, "outbox_pending") == Some(0.0)
    })
    .await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), monitor).await;

    let response = app.send(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(response.status, StatusCode::OK);
    let text = String::from_utf8(response.raw).unwrap();
    assert_eq!(
        metric_value(&text, "outbox_published_total"),
        Some(7.0),
        "{text}"
    );
    assert_eq!(metric_value(&text, "outbox_pending"), Some(0.0), "{text}");
    assert_eq!(
        metric_value(&text, "outbox_oldest_pending_age_seconds"),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&text, "outbox_publish_errors_total"),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&text, "outbox_publish_latency_seconds_count"),
        Some(7.0)
    );
}

// ---------------------------------------------------------------------------------------------
// 9b. The pending queue: retention and the upgrade from `published_at`
// ---------------------------------------------------------------------------------------------

async fn append_cart_events(pool: &PgPool, count: usize) -> Vec<i64> {
    let events: Vec<OutboxEvent> = (0..count)
        .map(|n| OutboxEvent::new(Topic::CartUpdates, "user_a", "cart_item_added").with("n", n))
        .collect();
    let mut tx = pool.begin().await.unwrap();
    outbox::append(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    sqlx::query_scalar("SELECT id FROM outbox ORDER BY id DESC LIMIT $1")
        .bind(count as i64)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn outbox_ids(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM outbox ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn pending_ids(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM outbox_pending ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_deletes_old_published_rows_and_keeps_what_is_pending() {
    let app = TestApp::new().await;
    let old = append_cart_events(&app.pool, 4).await;
    let recent = append_cart_events(&app.pool, 2).await;
    assert_eq!(pending(&app.pool).await, 6, "every appended row is queued");
    sqlx::query("UPDATE outbox SET created_at = now() - interval '8 days' WHERE id = ANY($1)")
        .bind(&old)
        .execute(&app.pool)
        .await
        .unwrap();
    // Two old rows and one recent row were published.
    let published_ids = [old[0], old[1], recent[0]];
    sqlx::query("DELETE FROM outbox_pending WHERE id = ANY($1)")
        .bind(&published_ids[..])
        .execute(&app.pool)
        .await
        .unwrap();
    let week = Duration::from_secs(7 * 24 * 3600);

    let deleted = relay::prune(&app.pool, week, true).await.unwrap();
    assert_eq!(deleted, 2, "only the old published rows go");
    let mut kept = vec![old[2], old[3], recent[0], recent[1]];
    kept.sort_unstable();
    assert_eq!(outbox_ids(&app.pool).await, kept);
    let mut queued = vec![old[2], old[3], recent[1]];
    queued.sort_unstable();
    assert_eq!(
        pending_ids(&app.pool).await,
        queued,
        "old pending rows still wait for the relay"
    );

    // Without a relay nothing would ever publish the old pending rows: they go, queue entries too.
    let deleted = relay::prune(&app.pool, week, false).await.unwrap();
    assert_eq!(deleted, 2);
    let mut kept = recent.clone();
    kept.sort_unstable();
    assert_eq!(outbox_ids(&app.pool).await, kept);
    assert_eq!(pending_ids(&app.pool).await, vec![recent[1]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrading_queues_the_unpublished_rows_and_rows_written_by_older_releases() {
    let database = common::EmptyDatabase::new().await;
    let pool = &database.pool;
    // The schema as the first release left it, with one published and two unpublished rows.
    plamatio_api::db::MIGRATOR
        .run_to(20261125000002, pool)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (n, published) in [(1, true), (2, false), (3, false)] {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO outbox (event_id, topic, event_key, event_type, payload, published_at) \
             VALUES ($1, 'cart_updates', 'user_a', 'cart_item_added', $2, \
                     CASE WHEN $3 THEN now() END) RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(json!({ "n": n }))
        .bind(published)
        .fetch_one(pool)
        .await
        .unwrap();
        ids.push(id);
    }

    plamatio_api::db::migrate(pool).await.unwrap();
    assert_eq!(pending_ids(pool).await, vec![ids[1], ids[2]]);

    // A replica of the earlier release keeps inserting during the rollout; its rows are queued.
    let older_release: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (event_id, topic, event_key, event_type, payload) \
         VALUES ($1, 'cart_updates', 'user_a', 'cart_item_added', '{}') RETURNING id",
    )
    .bind(Uuid::now_v7())
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(pending_ids(pool).await, vec![ids[1], ids[2], older_release]);
    // Its relay's claim fails instead of re-reading published rows as unpublished.
    let error = sqlx::query("SELECT id FROM outbox WHERE published_at IS NULL")
        .fetch_all(pool)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("published_at"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// 10. `plamatio-api events tail`
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_tail_prints_the_published_messages() {
    let broker = Broker::with_topics().await;
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    for n in 0..3 {
        cart_add(&app, "user_a", n + 1, 1).await;
    }
    let relay = new_relay(&app, broker.kafka(), 500);
    drain(&app, &relay).await;

    let bootstrap = broker.bootstrap();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_plamatio-api"))
            .args([
                "events",
                "tail",
                "--topic",
                "cart_updates",
                "--from-beginning",
                "--limit",
                "3",
            ])
            .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
            .env_remove("KAFKA_TOPIC_PREFIX")
            .env_remove("KAFKA_SECURITY_PROTOCOL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run plamatio-api events tail");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "events tail did not finish in 60 s; stdout: {} stderr: {}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "events tail failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let rows = outbox_rows_of_topic(&app.pool, "cart_updates").await;
    for (line, row) in lines.iter().zip(&rows) {
        // `topic/partition@offset key=K type=T {payload}`
        assert!(line.starts_with("cart_updates/"), "{line}");
        let (head, payload) = line.split_once(" {").expect("payload");
        assert!(head.contains(" key=user_a "), "{line}");
        assert!(head.ends_with(" type=cart_item_added"), "{line}");
        let payload: Value = serde_json::from_str(&format!("{{{payload}")).unwrap();
        assert_eq!(payload, row.payload, "{line}");
    }
}
