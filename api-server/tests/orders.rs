//! Orders, order items and detailed orders against a real, seeded PostgreSQL (and Redis where
//! stated): exact snake_case JSON, validation messages in order, ownership, transactions, the
//! `orders_updates` outbox events, cache freshness after every mutation and concurrent checkouts.

use crate::common;

use std::collections::HashSet;

use axum::body::Body;
use axum::http::{Method, Request};
use common::cache::redis_has;
use common::{TestApp, count};
use futures::future::join_all;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Fixtures and helpers
// ---------------------------------------------------------------------------------------------

/// Address ids of the seeded users: `user_a` has two, `user_b` one, `user_c` none (and no orders).
#[derive(Debug, Clone, Copy)]
struct Fixture {
    a: i64,
    a2: i64,
    b: i64,
}

async fn seed_users(app: &TestApp) -> Fixture {
    sqlx::raw_sql(
        "INSERT INTO users (id, first_name, last_name, email) VALUES \
         ('user_a', 'Ada', 'Lovelace', 'ada@example.com'), \
         ('user_b', 'Bob', 'Builder', 'bob@example.com'), \
         ('user_c', 'Cy', 'Empty', 'cy@example.com')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    Fixture {
        a: insert_address(app, "user_a", "1 Main St").await,
        a2: insert_address(app, "user_a", "2 Side St").await,
        b: insert_address(app, "user_b", "3 High St").await,
    }
}

async fn insert_address(app: &TestApp, user_id: &str, street: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO addresses (street, city, state, country, zip_code, user_id) \
         VALUES ($1, 'Toronto', 'ON', 'Canada', 'M5V 2T6', $2) RETURNING id",
    )
    .bind(street)
    .bind(user_id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

fn order_body(user_id: &str, address_id: i64, total_price: f64, status: &str) -> Value {
    json!({
        "user_id": user_id,
        "address_id": address_id,
        "total_price": total_price,
        "status": status
    })
}

fn lines_json(lines: &[(i64, i64)]) -> Value {
    Value::Array(
        lines
            .iter()
            .map(|(product_id, quantity)| json!({"product_id": product_id, "quantity": quantity}))
            .collect(),
    )
}

fn detailed_body(user_id: &str, address_id: i64, lines: &[(i64, i64)]) -> Value {
    json!({
        "order": order_body(user_id, address_id, 99.25, "pending"),
        "items": lines_json(lines)
    })
}

/// `POST /orders/add` that must succeed; returns the `Order`.
async fn add_order(app: &TestApp, user_id: &str, address_id: i64) -> Value {
    let body = order_body(user_id, address_id, 45.5, "pending");
    let response = app
        .storefront(Method::POST, "/orders/add", Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// `POST /orders/detailed/add` that must succeed; returns the `DetailedOrder`.
async fn detailed_add(
    app: &TestApp,
    user_id: &str,
    address_id: i64,
    lines: &[(i64, i64)],
) -> Value {
    let body = detailed_body(user_id, address_id, lines);
    let response = app
        .storefront(Method::POST, "/orders/detailed/add", Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// `POST /orders/items/add` that must succeed; returns the `OrderItem`.
async fn add_item(app: &TestApp, order_id: i64, product_id: i64, quantity: i64) -> Value {
    let body = json!({"order_id": order_id, "product_id": product_id, "quantity": quantity});
    let response = app
        .storefront(Method::POST, "/orders/items/add", Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// Σ quantity × catalog price of an order's items, as PostgreSQL computes it now.
async fn items_total_of(app: &TestApp, order_id: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(i.quantity::bigint * p.price), 0)::bigint FROM order_items i \
         JOIN products p ON p.id = i.product_id WHERE i.order_id = $1",
    )
    .bind(order_id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// The order as created, with the server's item total after later item changes.
async fn with_current_items_total(app: &TestApp, order: &Value) -> Value {
    let mut order = order.clone();
    order["items_total"] = json!(items_total_of(app, id_of(&order)).await);
    order
}

fn id_of(value: &Value) -> i64 {
    value["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer id in {value}"))
}

/// Asserts RFC 3339 UTC with a `Z` suffix and exactly six fractional digits, within a minute of now.
fn assert_created_at_format(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("created_at is not a string: {value}"));
    assert_eq!(text.len(), 27, "created_at {text}");
    assert!(text.ends_with('Z'), "created_at {text} must end in Z");
    let fraction = text[..text.len() - 1]
        .split_once('.')
        .unwrap_or_else(|| panic!("created_at {text} has no fractional seconds"))
        .1;
    assert_eq!(fraction.len(), 6, "created_at {text}");
    assert!(fraction.chars().all(|c| c.is_ascii_digit()), "{text}");
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("created_at {text} is not RFC 3339: {error}"));
    assert_eq!(parsed.offset().local_minus_utc(), 0, "{text}");
    let age = chrono::Utc::now().signed_duration_since(parsed);
    assert!(
        age.num_seconds().abs() < 60,
        "created_at {text} is not the server's current time"
    );
}

async fn items_in_order(app: &TestApp, order_id: i64) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM order_items WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// (event_id, topic, event_key, event_type, payload), in insertion order.
type OutboxRow = (String, String, String, String, Value);

async fn outbox_rows_with_event_ids(app: &TestApp) -> Vec<OutboxRow> {
    sqlx::query_as(
        "SELECT event_id::text, topic, event_key, event_type, payload FROM outbox ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

// The database's truth, serialized independently of the API (PostgreSQL formats `created_at`).

type OrderRow = (i64, String, i64, f64, String, String, i64);
type ItemRow = (i64, i64, i64, i32);

fn order_json(
    (id, user_id, address_id, total_price, created_at, status, items_total): OrderRow,
) -> Value {
    json!({
        "id": id, "user_id": user_id, "address_id": address_id, "total_price": total_price,
        "created_at": created_at, "status": status, "items_total": items_total
    })
}

fn item_json((id, order_id, product_id, quantity): ItemRow) -> Value {
    json!({"id": id, "order_id": order_id, "product_id": product_id, "quantity": quantity})
}

async fn db_order(app: &TestApp, id: i64) -> Option<Value> {
    let row: Option<OrderRow> = sqlx::query_as(
        "SELECT id, user_id, address_id, total_price, \
         to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), status, \
         items_total FROM orders WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&app.pool)
    .await
    .unwrap();
    row.map(order_json)
}

async fn db_orders_of(app: &TestApp, user_id: &str) -> Vec<Value> {
    let rows: Vec<OrderRow> = sqlx::query_as(
        "SELECT id, user_id, address_id, total_price, \
         to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), status, \
         items_total FROM orders WHERE user_id = $1 ORDER BY id",
    )
    .bind(user_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    rows.into_iter().map(order_json).collect()
}

async fn db_item(app: &TestApp, id: i64) -> Option<Value> {
    let row: Option<ItemRow> =
        sqlx::query_as("SELECT id, order_id, product_id, quantity FROM order_items WHERE id = $1")
            .bind(id)
            .fetch_optional(&app.pool)
            .await
            .unwrap();
    row.map(item_json)
}

async fn db_items_of(app: &TestApp, order_id: i64) -> Vec<Value> {
    let rows: Vec<ItemRow> = sqlx::query_as(
        "SELECT id, order_id, product_id, quantity FROM order_items WHERE order_id = $1 ORDER BY id",
    )
    .bind(order_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    rows.into_iter().map(item_json).collect()
}

async fn db_detailed(app: &TestApp, order_id: i64) -> Option<Value> {
    let order = db_order(app, order_id).await?;
    Some(json!({"order": order, "items": db_items_of(app, order_id).await}))
}

async fn db_detailed_of(app: &TestApp, user_id: &str) -> Vec<Value> {
    let mut detailed = Vec::new();
    for order in db_orders_of(app, user_id).await {
        let items = db_items_of(app, id_of(&order)).await;
        detailed.push(json!({"order": order, "items": items}));
    }
    detailed
}

/// Every GET of the orders domain for this user / order / item answers exactly what PostgreSQL
/// holds (404 where the row is gone). Called before a mutation it also warms every cache entry.
async fn assert_reads_match_database(app: &TestApp, user_id: &str, order_id: i64, item_id: i64) {
    let order = app.get(&format!("/orders/get/{order_id}")).await;
    match db_order(app, order_id).await {
        Some(expected) => assert_eq!(order.body, expected, "GET /orders/get/{order_id}"),
        None => {
            order.assert_error(404, "not_found");
        }
    }
    assert_eq!(
        app.get(&format!("/orders/all/{user_id}")).await.body,
        json!({"data": db_orders_of(app, user_id).await}),
        "GET /orders/all/{user_id}"
    );
    assert_eq!(
        app.get(&format!("/orders/items/all/{order_id}")).await.body,
        json!({"data": db_items_of(app, order_id).await}),
        "GET /orders/items/all/{order_id}"
    );
    let item = app.get(&format!("/orders/items/get/{item_id}")).await;
    match db_item(app, item_id).await {
        Some(expected) => assert_eq!(item.body, expected, "GET /orders/items/get/{item_id}"),
        None => {
            item.assert_error(404, "not_found");
        }
    }
    let detailed = app.get(&format!("/orders/detailed/get/{order_id}")).await;
    match db_detailed(app, order_id).await {
        Some(expected) => assert_eq!(detailed.body, expected, "GET /orders/detailed/get"),
        None => {
            detailed.assert_error(404, "not_found");
        }
    }
    assert_eq!(
        app.get(&format!("/orders/detailed/all/{user_id}"))
            .await
            .body,
        json!({"data": db_detailed_of(app, user_id).await}),
        "GET /orders/detailed/all/{user_id}"
    );
}

/// A Redis-backed app with `user_a`'s order holding items of products 3 and 4 (plus an order of
/// `user_b`), every read warmed, and the entries proven to be in Redis.
async fn warmed_redis_app() -> (TestApp, Fixture, i64, i64, i64) {
    let app = TestApp::with_redis().await;
    let fixture = seed_users(&app).await;
    let created = detailed_add(&app, "user_a", fixture.a, &[(3, 1), (4, 2)]).await;
    detailed_add(&app, "user_b", fixture.b, &[(5, 1)]).await;
    let order_id = id_of(&created["order"]);
    let first_item = id_of(&created["items"][0]);
    let second_item = id_of(&created["items"][1]);
    assert_reads_match_database(&app, "user_a", order_id, first_item).await;
    for key in [
        format!("order-cache/{order_id}"),
        "user-orders-cache/user_a".to_owned(),
        format!("order-items-cache/{order_id}"),
        format!("order-item-cache/{first_item}"),
        format!("detailed-order-cache/{order_id}"),
        "user-detailed-orders-cache/user_a".to_owned(),
    ] {
        assert!(redis_has(&app, &key).await, "{key} is not cached in Redis");
    }
    (app, fixture, order_id, first_item, second_item)
}

// ---------------------------------------------------------------------------------------------
// 1. Happy paths with exact JSON
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn add_order_returns_the_order_with_exact_snake_case_fields() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    // `id` and `created_at` in a create body are ignored
    let mut body = order_body("user_a", fixture.a, 45.5, "pending");
    body["id"] = json!(777);
    body["created_at"] = json!("2001-01-01T00:00:00.000000Z");
    let response = app
        .storefront(Method::POST, "/orders/add", Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_created_at_format(&response.body["created_at"]);
    assert_eq!(
        response.body,
        json!({
            "id": 1, "user_id": "user_a", "address_id": fixture.a, "total_price": 45.5,
            "created_at": response.body["created_at"], "status": "pending", "items_total": 0
        })
    );
    assert!(response.body["total_price"].is_f64());
    assert_eq!(app.get("/orders/get/1").await.body, response.body);
    assert_eq!(db_order(&app, 1).await, Some(response.body));
}

#[tokio::test]
async fn get_order_returns_the_order_and_404s_for_unknown_ids() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let created = add_order(&app, "user_b", fixture.b).await;
    let response = app.get(&format!("/orders/get/{}", id_of(&created))).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, created);
    app.get("/orders/get/999")
        .await
        .assert_error(404, "not_found");
    app.get("/orders/get/-1")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn orders_all_lists_a_users_orders_by_id_and_unknown_users_get_an_empty_list() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let first = add_order(&app, "user_a", fixture.a).await;
    let other = add_order(&app, "user_b", fixture.b).await;
    let second = add_order(&app, "user_a", fixture.a2).await;
    let response = app.get("/orders/all/user_a").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, json!({"data": [first, second]}));
    assert_eq!(
        app.get("/orders/all/user_b").await.body,
        json!({"data": [other]})
    );
    // a known user without orders and an unknown user: empty list, not 404 nor null
    for user in ["user_c", "nobody"] {
        let response = app.get(&format!("/orders/all/{user}")).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.body, json!({"data": []}), "{user}");
        assert_eq!(response.raw, br#"{"data":[]}"#.to_vec());
    }
}

#[tokio::test]
async fn update_order_changes_address_total_and_status_and_answers_with_the_id() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let created = add_order(&app, "user_a", fixture.a).await;
    let id = id_of(&created);
    let mut body = order_body("user_a", fixture.a2, 12.75, "succeeded");
    body["id"] = json!(id);
    let response = app.admin(Method::PUT, "/orders/update", Some(&body)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, json!({"id": id}));
    let expected = json!({
        "id": id, "user_id": "user_a", "address_id": fixture.a2, "total_price": 12.75,
        "created_at": created["created_at"], "status": "succeeded", "items_total": 0
    });
    assert_eq!(app.get(&format!("/orders/get/{id}")).await.body, expected);
    assert_eq!(db_order(&app, id).await, Some(expected));
}

#[tokio::test]
async fn update_order_of_an_unknown_id_is_404() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let mut body = order_body("user_a", fixture.a, 10.0, "pending");
    body["id"] = json!(999);
    app.storefront(Method::PUT, "/orders/update", Some(&body))
        .await
        .assert_error(404, "not_found");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM orders").await, 0);
}

#[tokio::test]
async fn delete_order_answers_with_the_id_and_removes_it_with_its_items() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let doomed = detailed_add(&app, "user_a", fixture.a, &[(3, 1), (4, 2)]).await;
    let kept = detailed_add(&app, "user_a", fixture.a, &[(5, 1)]).await;
    let id = id_of(&doomed["order"]);
    let response = app
        .storefront(
            Method::DELETE,
            &format!("/orders/delete/{id}/user/user_a"),
            None,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, json!({"id": id}));

    assert_eq!(db_order(&app, id).await, None);
    assert_eq!(items_in_order(&app, id).await, 0);
    assert_eq!(items_in_order(&app, id_of(&kept["order"])).await, 1);
    app.get(&format!("/orders/get/{id}"))
        .await
        .assert_error(404, "not_found");
    app.get(&format!("/orders/items/get/{}", id_of(&doomed["items"][0])))
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        app.get(&format!("/orders/items/all/{id}")).await.body,
        json!({"data": []})
    );
    assert_eq!(
        app.get("/orders/all/user_a").await.body,
        json!({"data": [kept["order"]]})
    );
    // a second delete finds nothing
    app.storefront(
        Method::DELETE,
        &format!("/orders/delete/{id}/user/user_a"),
        None,
    )
    .await
    .assert_error(404, "not_found");
}

#[tokio::test]
async fn order_item_get_carries_its_real_order_id() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    detailed_add(&app, "user_a", fixture.a, &[(1, 1)]).await;
    let second = detailed_add(&app, "user_a", fixture.a, &[(7, 3), (8, 1)]).await;
    let order_id = id_of(&second["order"]);
    assert_ne!(order_id, 0);
    let item_id = id_of(&second["items"][1]);
    let response = app.get(&format!("/orders/items/get/{item_id}")).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        json!({"id": item_id, "order_id": order_id, "product_id": 8, "quantity": 1})
    );
    app.get("/orders/items/get/999")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn order_items_all_lists_an_orders_items_by_id_and_unknown_orders_get_an_empty_list() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let first = detailed_add(&app, "user_a", fixture.a, &[(9, 1), (2, 2)]).await;
    let other = detailed_add(&app, "user_a", fixture.a, &[(1, 1)]).await;
    let order_id = id_of(&first["order"]);
    // an item added later to the first order comes after the other order's item by id
    let later = add_item(&app, order_id, 6, 4).await;
    let response = app.get(&format!("/orders/items/all/{order_id}")).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        json!({"data": [first["items"][0], first["items"][1], later]})
    );
    assert_eq!(
        app.get(&format!("/orders/items/all/{}", id_of(&other["order"])))
            .await
            .body,
        json!({"data": [other["items"][0]]})
    );
    let without_items = add_order(&app, "user_a", fixture.a).await;
    for path in [
        format!("/orders/items/all/{}", id_of(&without_items)),
        "/orders/items/all/999".to_owned(),
        "/orders/items/all/-4".to_owned(),
    ] {
        let response = app.get(&path).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.body, json!({"data": []}), "{path}");
    }
}

#[tokio::test]
async fn add_order_item_returns_the_item_with_exact_fields() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let order = add_order(&app, "user_a", fixture.a).await;
    let order_id = id_of(&order);
    let body = json!({"order_id": order_id, "product_id": 7, "quantity": 2, "id": 555});
    let response = app
        .storefront(Method::POST, "/orders/items/add", Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.body,
        json!({"id": 1, "order_id": order_id, "product_id": 7, "quantity": 2})
    );
    assert_eq!(app.get("/orders/items/get/1").await.body, response.body);
    assert_eq!(
        app.get(&format!("/orders/items/all/{order_id}")).await.body,
        json!({"data": [response.body]})
    );
    assert_eq!(db_item(&app, 1).await, Some(response.body));
}

#[tokio::test]
async fn update_order_item_changes_product_and_quantity_and_answers_with_the_id() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let created = detailed_add(&app, "user_a", fixture.a, &[(3, 1), (4, 2)]).await;
    let order_id = id_of(&created["order"]);
    let item_id = id_of(&created["items"][0]);
    let body = json!({"id": item_id, "order_id": order_id, "product_id": 8, "quantity": 5});
    let response = app
        .storefront(Method::PUT, "/orders/items/update", Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, json!({"id": item_id}));
    assert_eq!(
        app.get(&format!("/orders/items/get/{item_id}")).await.body,
        body
    );
    assert_eq!(
        app.get(&format!("/orders/items/all/{order_id}")).await.body,
        json!({"data": [body, created["items"][1]]})
    );
}

#[tokio::test]
async fn update_order_item_of_an_unknown_id_is_404() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let created = detailed_add(&app, "user_a", fixture.a, &[(3, 1)]).await;
    let body =
        json!({"id": 999, "order_id": id_of(&created["order"]), "product_id": 8, "quantity": 5});
    app.storefront(Method::PUT, "/orders/items/update", Some(&body))
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        db_items_of(&app, id_of(&created["order"])).await,
        vec![created["items"][0].clone()]
    );
}

#[tokio::test]
async fn delete_order_item_answers_with_the_id_and_removes_only_that_item() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let created = detailed_add(&app, "user_a", fixture.a, &[(3, 1), (4, 2)]).await;
    let order_id = id_of(&created["order"]);
    let item_id = id_of(&created["items"][0]);
    let response = app
        .storefront(
            Method::DELETE,
            &format!("/orders/items/delete/{item_id}"),
            None,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, json!({"id": item_id}));
    app.get(&format!("/orders/items/get/{item_id}"))
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        app.get(&format!("/orders/items/all/{order_id}")).await.body,
        json!({"data": [created["items"][1]]})
    );
    // the order itself stays (with the server's item total of what is left)
    assert_eq!(
        app.get(&format!("/orders/get/{order_id}")).await.body,
        with_current_items_total(&app, &created["order"]).await
    );
    app.storefront(
        Method::DELETE,
        &format!("/orders/items/delete/{item_id}"),
        None,
    )
    .await
    .assert_error(404, "not_found");
}

#[tokio::test]
async fn detailed_get_returns_the_order_with_its_items_by_id() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let created = detailed_add(&app, "user_a", fixture.a, &[(12, 1), (2, 3)]).await;
    detailed_add(&app, "user_a", fixture.a, &[(1, 1)]).await;
    let order_id = id_of(&created["order"]);
    let later = add_item(&app, order_id, 20, 2).await;
    let response = app.get(&format!("/orders/detailed/get/{order_id}")).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        json!({
            "order": with_current_items_total(&app, &created["order"]).await,
            "items": [created["items"][0], created["items"][1], later]
        })
    );
    app.get("/orders/detailed/get/999")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn detailed_add_returns_the_order_and_its_items_in_request_order() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let body = json!({
        "order": {"user_id": "user_a", "address_id": fixture.a, "total_price": 140.5, "status": "pending"},
        "items": [
            {"product_id": 25, "quantity": 1},
            {"product_id": 3, "quantity": 4},
            {"product_id": 17, "quantity": 2}
        ]
    });
    let response = app
        .storefront(Method::POST, "/orders/detailed/add", Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let order = &response.body["order"];
    assert_created_at_format(&order["created_at"]);
    let order_id = id_of(order);
    assert_eq!(
        response.body,
        json!({
            "order": {
                "id": order_id, "user_id": "user_a", "address_id": fixture.a,
                "total_price": 140.5, "created_at": order["created_at"], "status": "pending",
                "items_total": items_total_of(&app, order_id).await
            },
            "items": [
                {"id": 1, "order_id": order_id, "product_id": 25, "quantity": 1},
                {"id": 2, "order_id": order_id, "product_id": 3, "quantity": 4},
                {"id": 3, "order_id": order_id, "product_id": 17, "quantity": 2}
            ]
        })
    );
    assert_eq!(
        app.get(&format!("/orders/detailed/get/{order_id}"))
            .await
            .body,
        response.body
    );
    assert_eq!(db_detailed(&app, order_id).await, Some(response.body));
}

#[tokio::test]
async fn detailed_add_with_empty_items_creates_an_order_without_items() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let response = app
        .storefront(
            Method::POST,
            "/orders/detailed/add",
            Some(&detailed_body("user_a", fixture.a, &[])),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["items"], json!([]));
    let order_id = id_of(&response.body["order"]);
    assert_eq!(
        db_order(&app, order_id).await,
        Some(response.body["order"].clone())
    );
    assert_eq!(
        app.get(&format!("/orders/detailed/get/{order_id}"))
            .await
            .body,
        json!({"order": response.body["order"], "items": []})
    );
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM order_items").await,
        0
    );
}

#[tokio::test]
async fn detailed_all_returns_each_order_with_exactly_its_own_items_by_id() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let first = detailed_add(&app, "user_a", fixture.a, &[(3, 1), (4, 2)]).await;
    let foreign = detailed_add(&app, "user_b", fixture.b, &[(9, 9)]).await;
    let second = add_order(&app, "user_a", fixture.a2).await;
    let third = detailed_add(&app, "user_a", fixture.a, &[(5, 1)]).await;
    // an item added to the first order after the others were written: ids interleave
    let late = add_item(&app, id_of(&first["order"]), 6, 2).await;
    let response = app.get("/orders/detailed/all/user_a").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        json!({"data": [
            {"order": with_current_items_total(&app, &first["order"]).await,
             "items": [first["items"][0], first["items"][1], late]},
            {"order": second, "items": []},
            {"order": third["order"], "items": [third["items"][0]]}
        ]})
    );
    assert_eq!(
        app.get("/orders/detailed/all/user_b").await.body,
        json!({"data": [foreign]})
    );
    for user in ["user_c", "nobody"] {
        let response = app.get(&format!("/orders/detailed/all/{user}")).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.body, json!({"data": []}), "{user}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. created_at
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn created_at_is_rfc3339_utc_with_microseconds_and_every_read_equals_the_create_response() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let plain = add_order(&app, "user_a", fixture.a).await;
    let detailed = detailed_add(&app, "user_a", fixture.a, &[(1, 1)]).await;
    for order in [&plain, &detailed["order"]] {
        assert_created_at_format(&order["created_at"]);
        let id = id_of(order);
        // PostgreSQL's own rendering of the stored timestamptz
        assert_eq!(db_order(&app, id).await.as_ref(), Some(order));
        assert_eq!(&app.get(&format!("/orders/get/{id}")).await.body, order);
        assert_eq!(
            &app.get(&format!("/orders/detailed/get/{id}")).await.body["order"],
            order
        );
    }
    assert_eq!(
        app.get("/orders/all/user_a").await.body,
        json!({"data": [plain, detailed["order"]]})
    );
    let all = app.get("/orders/detailed/all/user_a").await;
    assert_eq!(all.body["data"][0]["order"], plain);
    assert_eq!(all.body["data"][1]["order"], detailed["order"]);
}

#[tokio::test]
async fn update_never_changes_created_at() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let created = add_order(&app, "user_a", fixture.a).await;
    let id = id_of(&created);
    let original = created["created_at"].clone();
    let bodies = [
        // another timestamp in the body
        json!({"id": id, "user_id": "user_a", "address_id": fixture.a, "total_price": 1.5,
               "status": "succeeded", "created_at": "2001-02-03T04:05:06.123456Z"}),
        // no created_at at all (the original wrote year 1)
        json!({"id": id, "user_id": "user_a", "address_id": fixture.a, "total_price": 2.5,
               "status": "shipped"}),
        // an explicit null
        json!({"id": id, "user_id": "user_a", "address_id": fixture.a, "total_price": 3.5,
               "status": "delivered", "created_at": null}),
    ];
    for body in bodies {
        let response = app.admin(Method::PUT, "/orders/update", Some(&body)).await;
        assert_eq!(response.status, 200, "{}", response.body);
        let read = app.get(&format!("/orders/get/{id}")).await;
        assert_eq!(read.body["status"], body["status"]);
        assert_eq!(read.body["created_at"], original, "after {body}");
        assert_eq!(
            db_order(&app, id).await.unwrap()["created_at"],
            original,
            "stored value after {body}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Validation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn add_order_validation_messages_in_order() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let valid = order_body("user_a", fixture.a, 45.5, "pending");
    let cases: Vec<(&str, Option<Value>, &str)> = vec![
        ("user_id", Some(json!("")), "user_id is required"),
        ("user_id", Some(json!("   ")), "user_id is required"),
        ("user_id", None, "user_id is required"),
        ("user_id", Some(Value::Null), "user_id is required"),
        ("address_id", Some(json!(0)), "address_id is required"),
        ("address_id", Some(json!(-3)), "address_id is required"),
        ("address_id", None, "address_id is required"),
        ("total_price", Some(json!(0)), "total_price is required"),
        ("total_price", Some(json!(-1.5)), "total_price is required"),
        ("total_price", None, "total_price is required"),
        ("status", Some(json!("")), "status is required"),
        ("status", Some(json!("  ")), "status is required"),
        ("status", None, "status is required"),
    ];
    for (field, value, expected) in cases {
        let mut body = valid.clone();
        match value {
            Some(value) => body[field] = value,
            None => {
                body.as_object_mut().unwrap().remove(field);
            }
        }
        assert_eq!(
            app.invalid_argument(Method::POST, "/orders/add", &body)
                .await,
            expected,
            "{field} = {body}"
        );
    }
    // the first failing rule wins, static rules before the address checks
    let ordered: Vec<(Value, &str)> = vec![
        (json!({}), "user_id is required"),
        (json!({"user_id": "user_a"}), "address_id is required"),
        (
            json!({"user_id": "user_a", "address_id": 999}),
            "total_price is required",
        ),
        (
            json!({"user_id": "user_a", "address_id": 999, "total_price": 3}),
            "status is required",
        ),
    ];
    for (body, expected) in ordered {
        assert_eq!(
            app.invalid_argument(Method::POST, "/orders/add", &body)
                .await,
            expected,
            "{body}"
        );
    }
    // then the address: unknown, or another user's
    let unknown = order_body("user_a", 999, 45.5, "pending");
    assert_eq!(
        app.invalid_argument(Method::POST, "/orders/add", &unknown)
            .await,
        "address_id 999 does not exist"
    );
    let foreign = order_body("user_a", fixture.b, 45.5, "pending");
    assert_eq!(
        app.invalid_argument(Method::POST, "/orders/add", &foreign)
            .await,
        format!("address_id {} does not belong to user", fixture.b)
    );
    let unknown_user = order_body("nobody", fixture.a, 45.5, "pending");
    assert_eq!(
        app.invalid_argument(Method::POST, "/orders/add", &unknown_user)
            .await,
        format!("address_id {} does not belong to user", fixture.a)
    );
    assert_eq!(count(&app.pool, "SELECT count(*) FROM orders").await, 0);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM outbox").await, 0);
}

#[tokio::test]
async fn update_order_checks_id_first_then_the_order_rules() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let created = add_order(&app, "user_a", fixture.a).await;
    let id = id_of(&created);
    let mut valid = order_body("user_a", fixture.a2, 10.0, "succeeded");
    valid["id"] = json!(id);
    let cases: Vec<(Value, String)> = vec![
        (json!({}), "id is required".into()),
        (
            json!({"user_id": "user_a", "address_id": fixture.a, "total_price": 1, "status": "x"}),
            "id is required".into(),
        ),
        (json!({"id": 0, "user_id": ""}), "id is required".into()),
        (json!({"id": -5}), "id is required".into()),
        (json!({"id": id}), "user_id is required".into()),
        (
            json!({"id": id, "user_id": "user_a", "address_id": 0}),
            "address_id is required".into(),
        ),
        (
            json!({"id": id, "user_id": "user_a", "address_id": fixture.a, "total_price": -2}),
            "total_price is required".into(),
        ),
        (
            json!({"id": id, "user_id": "user_a", "address_id": fixture.a, "total_price": 2, "status": ""}),
            "status is required".into(),
        ),
        (
            json!({"id": id, "user_id": "user_a", "address_id": 999, "total_price": 2, "status": "x"}),
            "address_id 999 does not exist".into(),
        ),
        (
            json!({"id": id, "user_id": "user_a", "address_id": fixture.b, "total_price": 2, "status": "x"}),
            format!("address_id {} does not belong to user", fixture.b),
        ),
        // validation comes before existence: an unknown id with a bad body is 400, not 404
        (
            json!({"id": 999, "user_id": "user_a", "address_id": fixture.a, "total_price": 2, "status": ""}),
            "status is required".into(),
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(
            app.invalid_argument(Method::PUT, "/orders/update", &body)
                .await,
            expected,
            "{body}"
        );
    }
    assert_eq!(db_order(&app, id).await, Some(created));
}

#[tokio::test]
async fn order_item_validation_messages_in_order() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let created = detailed_add(&app, "user_a", fixture.a, &[(3, 1)]).await;
    let order_id = id_of(&created["order"]);
    let item_id = id_of(&created["items"][0]);
    let add_cases: Vec<(Value, &str)> = vec![
        (json!({}), "order_id is required"),
        (
            json!({"order_id": 0, "product_id": 0, "quantity": 0}),
            "order_id is required",
        ),
        (
            json!({"order_id": -1, "product_id": 2, "quantity": 1}),
            "order_id is required",
        ),
        (
            json!({"product_id": 2, "quantity": 1}),
            "order_id is required",
        ),
        (json!({"order_id": order_id}), "product_id is required"),
        (
            json!({"order_id": order_id, "product_id": 0, "quantity": 0}),
            "product_id is required",
        ),
        (
            json!({"order_id": order_id, "product_id": -7, "quantity": 1}),
            "product_id is required",
        ),
        (
            json!({"order_id": order_id, "product_id": 2}),
            "quantity is required",
        ),
        (
            json!({"order_id": order_id, "product_id": 2, "quantity": 0}),
            "quantity is required",
        ),
        (
            json!({"order_id": order_id, "product_id": 2, "quantity": -3}),
            "quantity is required",
        ),
        // static rules before existence
        (
            json!({"order_id": 999, "product_id": 99, "quantity": 0}),
            "quantity is required",
        ),
    ];
    for (body, expected) in add_cases {
        assert_eq!(
            app.invalid_argument(Method::POST, "/orders/items/add", &body)
                .await,
            expected,
            "add {body}"
        );
    }
    let update_cases: Vec<(Value, &str)> = vec![
        (json!({}), "id is required"),
        (
            json!({"order_id": order_id, "product_id": 2, "quantity": 1}),
            "id is required",
        ),
        (
            json!({"id": 0, "order_id": order_id, "product_id": 2, "quantity": 1}),
            "id is required",
        ),
        (json!({"id": -1}), "id is required"),
        (json!({"id": item_id}), "order_id is required"),
        (
            json!({"id": item_id, "order_id": 0, "product_id": 2, "quantity": 1}),
            "order_id is required",
        ),
        (
            json!({"id": item_id, "order_id": order_id, "quantity": 1}),
            "product_id is required",
        ),
        (
            json!({"id": item_id, "order_id": order_id, "product_id": 2, "quantity": 0}),
            "quantity is required",
        ),
        (
            json!({"id": item_id, "order_id": order_id, "product_id": 2}),
            "quantity is required",
        ),
        (
            json!({"id": item_id, "order_id": order_id, "product_id": 99, "quantity": 1}),
            "product_id 99 does not exist",
        ),
        // validation before existence: an unknown id with a bad body is 400, not 404
        (
            json!({"id": 999, "order_id": order_id, "product_id": 2, "quantity": 0}),
            "quantity is required",
        ),
    ];
    for (body, expected) in update_cases {
        assert_eq!(
            app.invalid_argument(Method::PUT, "/orders/items/update", &body)
                .await,
            expected,
            "update {body}"
        );
    }
    assert_eq!(
        db_items_of(&app, order_id).await,
        vec![created["items"][0].clone()]
    );
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM order_items").await,
        1
    );
}

#[tokio::test]
async fn add_order_item_with_an_unknown_order_or_product_is_400() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let order_id = id_of(&add_order(&app, "user_a", fixture.a).await);
    let unknown_order = json!({"order_id": 999, "product_id": 2, "quantity": 1});
    assert_eq!(
        app.invalid_argument(Method::POST, "/orders/items/add", &unknown_order)
            .await,
        "order_id 999 does not exist"
    );
    let unknown_product = json!({"order_id": order_id, "product_id": 99, "quantity": 1});
    assert_eq!(
        app.invalid_argument(Method::POST, "/orders/items/add", &unknown_product)
            .await,
        "product_id 99 does not exist"
    );
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM order_items").await,
        0
    );
}

#[tokio::test]
async fn order_item_never_moves_to_another_order() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let first = detailed_add(&app, "user_a", fixture.a, &[(3, 1)]).await;
    let second = detailed_add(&app, "user_a", fixture.a, &[(4, 1)]).await;
    let item = first["items"][0].clone();
    for other_order in [id_of(&second["order"]), 999] {
        let body =
            json!({"id": id_of(&item), "order_id": other_order, "product_id": 5, "quantity": 7});
        assert_eq!(
            app.invalid_argument(Method::PUT, "/orders/items/update", &body)
                .await,
            "order_id cannot be changed",
            "{body}"
        );
    }
    assert_eq!(db_item(&app, id_of(&item)).await, Some(item.clone()));
    assert_eq!(
        app.get(&format!("/orders/items/all/{}", id_of(&second["order"])))
            .await
            .body,
        json!({"data": [second["items"][0]]})
    );
}

#[tokio::test]
async fn detailed_add_validation_messages_in_order() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let good_order = order_body("user_a", fixture.a, 10.0, "pending");
    let good_items = lines_json(&[(1, 1), (2, 2)]);
    let cases: Vec<(Value, String)> = vec![
        // the order
        (json!({}), "order is required".into()),
        (json!({"items": good_items}), "order is required".into()),
        (
            json!({"order": null, "items": good_items}),
            "order is required".into(),
        ),
        // order messages carry no prefix
        (
            json!({"order": {}, "items": good_items}),
            "user_id is required".into(),
        ),
        (
            json!({"order": order_body("", fixture.a, 10.0, "pending"), "items": []}),
            "user_id is required".into(),
        ),
        (
            json!({"order": order_body("user_a", 0, 10.0, "pending"), "items": []}),
            "address_id is required".into(),
        ),
        (
            json!({"order": order_body("user_a", fixture.a, 0.0, "pending"), "items": []}),
            "total_price is required".into(),
        ),
        (
            json!({"order": order_body("user_a", fixture.a, 10.0, ""), "items": []}),
            "status is required".into(),
        ),
        (
            json!({"order": order_body("user_a", 999, 10.0, "pending"), "items": good_items}),
            "address_id 999 does not exist".into(),
        ),
        (
            json!({"order": order_body("user_a", fixture.b, 10.0, "pending"), "items": good_items}),
            format!("address_id {} does not belong to user", fixture.b),
        ),
        // order rules come before item rules
        (
            json!({"order": order_body("user_a", fixture.a, 10.0, ""),
                   "items": lines_json(&[(0, 0)])}),
            "status is required".into(),
        ),
        // items carry their index
        (
            json!({"order": good_order, "items": lines_json(&[(1, 1), (2, 1), (3, 0)])}),
            "items[2]: quantity is required".into(),
        ),
        (
            json!({"order": good_order, "items": lines_json(&[(1, 1), (0, 1)])}),
            "items[1]: product_id is required".into(),
        ),
        (
            json!({"order": good_order, "items": [{"quantity": 1}]}),
            "items[0]: product_id is required".into(),
        ),
        (
            json!({"order": good_order, "items": [{"product_id": 1}]}),
            "items[0]: quantity is required".into(),
        ),
        (
            json!({"order": good_order, "items": lines_json(&[(1, 1), (2, -1), (3, 0)])}),
            "items[1]: quantity is required".into(),
        ),
        (
            json!({"order": good_order, "items": lines_json(&[(99, 1)])}),
            "items[0]: product_id 99 does not exist".into(),
        ),
        (
            json!({"order": good_order, "items": lines_json(&[(1, 1), (98, 1), (99, 1)])}),
            "items[1]: product_id 98 does not exist".into(),
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(
            app.invalid_argument(Method::POST, "/orders/detailed/add", &body)
                .await,
            expected,
            "{body}"
        );
    }
    assert_eq!(count(&app.pool, "SELECT count(*) FROM orders").await, 0);
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM order_items").await,
        0
    );
    assert_eq!(count(&app.pool, "SELECT count(*) FROM outbox").await, 0);
}

#[tokio::test]
async fn wrong_json_types_are_400_naming_the_field() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let order_id = id_of(&add_order(&app, "user_a", fixture.a).await);
    let mut bad_price = order_body("user_a", fixture.a, 1.0, "pending");
    bad_price["total_price"] = json!("x");
    let mut bad_address = order_body("user_a", fixture.a, 1.0, "pending");
    bad_address["address_id"] = json!("7");
    let mut bad_user = order_body("user_a", fixture.a, 1.0, "pending");
    bad_user["user_id"] = json!(5);
    let mut bad_id = order_body("user_a", fixture.a, 1.0, "pending");
    bad_id["id"] = json!("one");
    let cases: Vec<(Method, &str, Value, &str)> = vec![
        (
            Method::POST,
            "/orders/add",
            bad_price.clone(),
            "total_price",
        ),
        (Method::POST, "/orders/add", bad_address, "address_id"),
        (Method::POST, "/orders/add", bad_user, "user_id"),
        (Method::PUT, "/orders/update", bad_id, "id"),
        (
            Method::POST,
            "/orders/items/add",
            json!({"order_id": order_id, "product_id": 2, "quantity": "2"}),
            "quantity",
        ),
        (
            Method::POST,
            "/orders/items/add",
            json!({"order_id": [order_id], "product_id": 2, "quantity": 2}),
            "order_id",
        ),
        (
            Method::PUT,
            "/orders/items/update",
            json!({"id": 1, "order_id": order_id, "product_id": 2.5, "quantity": 2}),
            "product_id",
        ),
        (
            Method::POST,
            "/orders/detailed/add",
            json!({"order": bad_price, "items": []}),
            "total_price",
        ),
        (
            Method::POST,
            "/orders/detailed/add",
            json!({"order": order_body("user_a", fixture.a, 1.0, "pending"),
                   "items": [{"product_id": 1, "quantity": 1}, {"product_id": 2, "quantity": "x"}]}),
            "quantity",
        ),
        (
            Method::POST,
            "/orders/detailed/add",
            json!({"order": order_body("user_a", fixture.a, 1.0, "pending"), "items": {}}),
            "items",
        ),
    ];
    for (method, path, body, field) in cases {
        let response = app.storefront(method.clone(), path, Some(&body)).await;
        let message = response.assert_error(400, "invalid_argument");
        assert!(
            message.contains(field),
            "{method} {path} {body}: message {message:?} does not name {field}"
        );
        let named = response.body["details"]["field"]
            .as_str()
            .unwrap_or_default();
        assert!(named.contains(field), "details {}", response.body);
    }
    // malformed JSON
    let request = Request::builder()
        .method(Method::POST)
        .uri("/orders/add")
        .header("authorization", format!("Bearer {}", app.storefront_key))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"user_id": "user_a", "#))
        .unwrap();
    app.send_request(request)
        .await
        .assert_error(400, "invalid_argument");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM order_items").await,
        0
    );
}

#[tokio::test]
async fn non_integer_path_ids_are_400_and_negative_ids_match_nothing() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    detailed_add(&app, "user_a", fixture.a, &[(1, 1)]).await;
    let bad: Vec<(Method, &str)> = vec![
        (Method::GET, "/orders/get/abc"),
        (Method::GET, "/orders/get/1.5"),
        (Method::GET, "/orders/get/99999999999999999999"),
        (Method::GET, "/orders/items/get/x"),
        (Method::GET, "/orders/items/all/x"),
        (Method::GET, "/orders/detailed/get/one"),
        (Method::DELETE, "/orders/delete/x/user/user_a"),
        (Method::DELETE, "/orders/items/delete/1e3"),
    ];
    for (method, path) in bad {
        app.storefront(method.clone(), path, None)
            .await
            .assert_error(400, "invalid_argument");
    }
    let missing: Vec<(Method, &str)> = vec![
        (Method::GET, "/orders/get/-1"),
        (Method::GET, "/orders/items/get/-1"),
        (Method::GET, "/orders/detailed/get/-1"),
        (Method::DELETE, "/orders/delete/-1/user/user_a"),
        (Method::DELETE, "/orders/items/delete/-1"),
    ];
    for (method, path) in missing {
        app.storefront(method.clone(), path, None)
            .await
            .assert_error(404, "not_found");
    }
    assert_eq!(
        app.get("/orders/items/all/-1").await.body,
        json!({"data": []})
    );
    assert_eq!(count(&app.pool, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM order_items").await,
        1
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Ownership
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn update_order_with_another_users_id_is_404_and_leaves_it_unchanged() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let created = detailed_add(&app, "user_a", fixture.a, &[(3, 1)]).await;
    let id = id_of(&created["order"]);
    let events = outbox_rows_with_event_ids(&app).await.len();
    // user_b, with user_b's own (valid) address, tries to take over user_a's order
    let mut body = order_body("user_b", fixture.b, 1.0, "succeeded");
    body["id"] = json!(id);
    app.storefront(Method::PUT, "/orders/update", Some(&body))
        .await
        .assert_error(404, "not_found");
    assert_eq!(db_detailed(&app, id).await, Some(created.clone()));
    assert_eq!(
        app.get(&format!("/orders/get/{id}")).await.body,
        created["order"]
    );
    assert_eq!(
        app.get("/orders/all/user_b").await.body,
        json!({"data": []})
    );
    assert_eq!(outbox_rows_with_event_ids(&app).await.len(), events);
}

#[tokio::test]
async fn delete_order_of_another_user_is_404_and_keeps_it() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let created = detailed_add(&app, "user_a", fixture.a, &[(3, 1), (4, 1)]).await;
    let id = id_of(&created["order"]);
    let events = outbox_rows_with_event_ids(&app).await.len();
    for user in ["user_b", "nobody"] {
        app.storefront(
            Method::DELETE,
            &format!("/orders/delete/{id}/user/{user}"),
            None,
        )
        .await
        .assert_error(404, "not_found");
    }
    assert_eq!(db_detailed(&app, id).await, Some(created.clone()));
    assert_eq!(
        app.get(&format!("/orders/detailed/get/{id}")).await.body,
        created
    );
    assert_eq!(outbox_rows_with_event_ids(&app).await.len(), events);
}

// ---------------------------------------------------------------------------------------------
// 5 and 6. Transactions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn delete_order_removes_its_items_in_the_same_transaction() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let created = detailed_add(&app, "user_a", fixture.a, &[(3, 1), (4, 2), (5, 3)]).await;
    let id = id_of(&created["order"]);
    // make the order row itself impossible to delete: the items' removal must roll back with it
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_order_delete() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'order delete refused for the test'; END $$; \
         CREATE TRIGGER refuse_order_delete BEFORE DELETE ON orders \
         FOR EACH ROW EXECUTE FUNCTION refuse_order_delete();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let failed = app
        .storefront(
            Method::DELETE,
            &format!("/orders/delete/{id}/user/user_a"),
            None,
        )
        .await;
    assert!(failed.status.is_server_error(), "{}", failed.body);
    assert_eq!(
        items_in_order(&app, id).await,
        3,
        "items deleted without their order"
    );
    assert_eq!(db_detailed(&app, id).await, Some(created.clone()));
    assert_eq!(
        count(
            &app.pool,
            "SELECT count(*) FROM outbox WHERE event_type = 'order_deleted'"
        )
        .await,
        0
    );

    sqlx::raw_sql("DROP TRIGGER refuse_order_delete ON orders")
        .execute(&app.pool)
        .await
        .unwrap();
    let response = app
        .storefront(
            Method::DELETE,
            &format!("/orders/delete/{id}/user/user_a"),
            None,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(items_in_order(&app, id).await, 0);
    assert_eq!(db_order(&app, id).await, None);
}

#[tokio::test]
async fn detailed_add_with_a_missing_product_writes_nothing() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    detailed_add(&app, "user_a", fixture.a, &[(1, 1)]).await;
    let before = (
        count(&app.pool, "SELECT count(*) FROM orders").await,
        count(&app.pool, "SELECT count(*) FROM order_items").await,
        count(&app.pool, "SELECT count(*) FROM outbox").await,
    );
    assert_eq!(before, (1, 1, 1));
    let body = detailed_body("user_a", fixture.a, &[(3, 1), (4, 2), (99, 1)]);
    assert_eq!(
        app.invalid_argument(Method::POST, "/orders/detailed/add", &body)
            .await,
        "items[2]: product_id 99 does not exist"
    );
    let after = (
        count(&app.pool, "SELECT count(*) FROM orders").await,
        count(&app.pool, "SELECT count(*) FROM order_items").await,
        count(&app.pool, "SELECT count(*) FROM outbox").await,
    );
    assert_eq!(after, before);
}

#[tokio::test]
async fn detailed_add_that_fails_while_writing_items_leaves_no_order_and_no_event() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    // the third item fails inside the transaction, after the order row was inserted
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_product_13() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.product_id = 13 THEN RAISE EXCEPTION 'refused for the test'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_product_13 BEFORE INSERT ON order_items \
         FOR EACH ROW EXECUTE FUNCTION refuse_product_13();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let body = detailed_body("user_a", fixture.a, &[(3, 1), (4, 2), (13, 1)]);
    let response = app
        .storefront(Method::POST, "/orders/detailed/add", Some(&body))
        .await;
    assert!(response.status.is_server_error(), "{}", response.body);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM orders").await, 0);
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM order_items").await,
        0
    );
    assert_eq!(count(&app.pool, "SELECT count(*) FROM outbox").await, 0);
    assert_eq!(
        app.get("/orders/detailed/all/user_a").await.body,
        json!({"data": []})
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Outbox
// ---------------------------------------------------------------------------------------------

/// Asserts exactly one new `orders_updates` row since `before` rows, keyed by `user_id`, and
/// returns its payload after checking the envelope.
async fn one_new_event(app: &TestApp, before: usize, event_type: &str, user_id: &str) -> Value {
    let rows = outbox_rows_with_event_ids(app).await;
    assert_eq!(
        rows.len(),
        before + 1,
        "expected exactly one new outbox row: {rows:?}"
    );
    let (event_id, topic, key, stored_type, payload) = rows.last().unwrap().clone();
    assert_eq!(topic, "orders_updates");
    assert_eq!(key, user_id);
    assert_eq!(stored_type, event_type);
    let keys: HashSet<&str> = payload
        .as_object()
        .unwrap_or_else(|| panic!("payload is not an object: {payload}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        HashSet::from([
            "event_id",
            "event_type",
            "occurred_at",
            "user_id",
            "order",
            "order_items"
        ]),
        "{payload}"
    );
    assert_eq!(payload["event_id"], event_id);
    let uuid = uuid::Uuid::parse_str(&event_id).expect("event_id is a UUID");
    assert_eq!(
        uuid.get_version_num(),
        7,
        "event_id {event_id} is not a v7 UUID"
    );
    assert_eq!(payload["event_type"], event_type);
    assert_eq!(payload["user_id"], user_id);
    let occurred_at = payload["occurred_at"].as_str().expect("occurred_at string");
    let parsed = chrono::DateTime::parse_from_rfc3339(occurred_at).expect("occurred_at RFC 3339");
    assert_eq!(parsed.offset().local_minus_utc(), 0);
    assert!(occurred_at.ends_with('Z'), "{occurred_at}");
    payload
}

#[tokio::test]
async fn every_order_mutation_writes_one_orders_updates_event() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;

    // order_created by /orders/add: no items
    let order = add_order(&app, "user_a", fixture.a).await;
    let order_id = id_of(&order);
    let payload = one_new_event(&app, 0, "order_created", "user_a").await;
    assert_eq!(payload["order"], order);
    assert_eq!(payload["order_items"], json!([]));

    // order_created by /orders/detailed/add (user_b): carries all its items
    let checkout = detailed_add(&app, "user_b", fixture.b, &[(3, 1), (4, 2), (5, 3)]).await;
    let payload = one_new_event(&app, 1, "order_created", "user_b").await;
    assert_eq!(payload["order"], checkout["order"]);
    assert_eq!(payload["order_items"], checkout["items"]);
    assert_eq!(payload["order_items"].as_array().unwrap().len(), 3);

    // order_updated: the new state
    let mut body = order_body("user_a", fixture.a2, 80.0, "succeeded");
    body["id"] = json!(order_id);
    assert_eq!(
        app.admin(Method::PUT, "/orders/update", Some(&body))
            .await
            .status,
        200
    );
    let payload = one_new_event(&app, 2, "order_updated", "user_a").await;
    assert_eq!(payload["order"], db_order(&app, order_id).await.unwrap());
    assert_eq!(payload["order"]["status"], "succeeded");
    assert_eq!(
        payload["order_items"],
        json!(db_items_of(&app, order_id).await)
    );

    // order_item_added
    let item = add_item(&app, order_id, 7, 2).await;
    let payload = one_new_event(&app, 3, "order_item_added", "user_a").await;
    assert_eq!(payload["order"], db_order(&app, order_id).await.unwrap());
    assert_eq!(payload["order_items"], json!([item]));

    // order_item_updated: the item's new state
    let update = json!({"id": id_of(&item), "order_id": order_id, "product_id": 8, "quantity": 6});
    assert_eq!(
        app.storefront(Method::PUT, "/orders/items/update", Some(&update))
            .await
            .status,
        200
    );
    let payload = one_new_event(&app, 4, "order_item_updated", "user_a").await;
    assert_eq!(payload["order"], db_order(&app, order_id).await.unwrap());
    assert_eq!(payload["order_items"], json!([update]));

    // order_item_deleted: the item's last state
    assert_eq!(
        app.storefront(
            Method::DELETE,
            &format!("/orders/items/delete/{}", id_of(&item)),
            None
        )
        .await
        .status,
        200
    );
    let payload = one_new_event(&app, 5, "order_item_deleted", "user_a").await;
    assert_eq!(payload["order"], db_order(&app, order_id).await.unwrap());
    assert_eq!(payload["order_items"], json!([update]));

    // order_deleted: the order's and its items' last state
    let checkout_id = id_of(&checkout["order"]);
    assert_eq!(
        app.storefront(
            Method::DELETE,
            &format!("/orders/delete/{checkout_id}/user/user_b"),
            None
        )
        .await
        .status,
        200
    );
    let payload = one_new_event(&app, 6, "order_deleted", "user_b").await;
    assert_eq!(payload["order"], checkout["order"]);
    assert_eq!(payload["order_items"], checkout["items"]);

    // event ids are distinct and time-ordered
    let ids: Vec<String> = outbox_rows_with_event_ids(&app)
        .await
        .into_iter()
        .map(|row| row.0)
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids);
}

#[tokio::test]
async fn failed_order_mutations_write_no_event() {
    let app = TestApp::new().await;
    let fixture = seed_users(&app).await;
    let created = detailed_add(&app, "user_a", fixture.a, &[(3, 1)]).await;
    let order_id = id_of(&created["order"]);
    let item_id = id_of(&created["items"][0]);
    let other = add_order(&app, "user_a", fixture.a).await;
    assert_eq!(outbox_rows_with_event_ids(&app).await.len(), 2);

    let mut stolen = order_body("user_b", fixture.b, 1.0, "x");
    stolen["id"] = json!(order_id);
    let mut missing = order_body("user_a", fixture.a, 1.0, "x");
    missing["id"] = json!(999);
    let failures: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "/orders/add".into(), Some(json!({}))),
        (
            Method::POST,
            "/orders/add".into(),
            Some(order_body("user_a", fixture.b, 1.0, "x")),
        ),
        (Method::PUT, "/orders/update".into(), Some(stolen)),
        (Method::PUT, "/orders/update".into(), Some(missing)),
        (
            Method::DELETE,
            format!("/orders/delete/{order_id}/user/user_b"),
            None,
        ),
        (
            Method::DELETE,
            "/orders/delete/999/user/user_a".into(),
            None,
        ),
        (
            Method::POST,
            "/orders/items/add".into(),
            Some(json!({"order_id": 999, "product_id": 1, "quantity": 1})),
        ),
        (
            Method::POST,
            "/orders/items/add".into(),
            Some(json!({"order_id": order_id, "product_id": 99, "quantity": 1})),
        ),
        (
            Method::PUT,
            "/orders/items/update".into(),
            Some(json!({"id": item_id, "order_id": id_of(&other), "product_id": 1, "quantity": 1})),
        ),
        (
            Method::PUT,
            "/orders/items/update".into(),
            Some(json!({"id": 999, "order_id": order_id, "product_id": 1, "quantity": 1})),
        ),
        (Method::DELETE, "/orders/items/delete/999".into(), None),
        (
            Method::POST,
            "/orders/detailed/add".into(),
            Some(detailed_body(
                "user_a",
                fixture.a,
                &[(1, 1), (2, 1), (99, 1)],
            )),
        ),
        (
            Method::POST,
            "/orders/detailed/add".into(),
            Some(detailed_body("user_a", 999, &[(1, 1)])),
        ),
    ];
    for (method, path, body) in failures {
        let response = app.storefront(method.clone(), &path, body.as_ref()).await;
        assert!(
            response.status.is_client_error(),
            "{method} {path}: {} {}",
            response.status,
            response.body
        );
        assert_eq!(
            outbox_rows_with_event_ids(&app).await.len(),
            2,
            "{method} {path} wrote an event"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Cache freshness with Redis
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cached_reads_see_a_new_order() {
    let (app, fixture, order_id, item_id, _) = warmed_redis_app().await;
    let created = add_order(&app, "user_a", fixture.a2).await;
    assert_reads_match_database(&app, "user_a", order_id, item_id).await;
    let all = app.get("/orders/all/user_a").await;
    assert_eq!(all.body["data"][1], created);
    let detailed = app.get("/orders/detailed/all/user_a").await;
    assert_eq!(
        detailed.body["data"][1],
        json!({"order": created, "items": []})
    );
}

#[tokio::test]
async fn cached_reads_see_a_detailed_checkout() {
    let (app, fixture, order_id, item_id, _) = warmed_redis_app().await;
    let created = detailed_add(&app, "user_a", fixture.a, &[(9, 1)]).await;
    assert_reads_match_database(&app, "user_a", order_id, item_id).await;
    assert_eq!(
        app.get("/orders/detailed/all/user_a").await.body["data"][1],
        created
    );
    assert_eq!(
        TestApp::ids(&app.get("/orders/all/user_a").await),
        vec![order_id, id_of(&created["order"])]
    );
}

#[tokio::test]
async fn detailed_add_refreshes_an_item_list_read_before_the_order_existed() {
    let (app, fixture, order_id, _, _) = warmed_redis_app().await;
    // the next order id (identities are sequential and nothing failed): the list is empty for now
    let next_id = order_id + 2;
    assert_eq!(
        app.get(&format!("/orders/items/all/{next_id}")).await.body,
        json!({"data": []})
    );
    let created = detailed_add(&app, "user_a", fixture.a, &[(9, 1), (10, 2)]).await;
    assert_eq!(id_of(&created["order"]), next_id);
    // the checkout changed what /orders/items/all/{next_id} returns: it must not stay stale
    assert_eq!(
        app.get(&format!("/orders/items/all/{next_id}")).await.body,
        json!({"data": created["items"]})
    );
}

#[tokio::test]
async fn cached_reads_see_an_order_update() {
    let (app, fixture, order_id, item_id, _) = warmed_redis_app().await;
    let mut body = order_body("user_a", fixture.a2, 300.25, "succeeded");
    body["id"] = json!(order_id);
    assert_eq!(
        app.admin(Method::PUT, "/orders/update", Some(&body))
            .await
            .status,
        200
    );
    assert_reads_match_database(&app, "user_a", order_id, item_id).await;
    let order = app.get(&format!("/orders/get/{order_id}")).await;
    assert_eq!(
        (
            order.body["status"].as_str(),
            order.body["address_id"].as_i64()
        ),
        (Some("succeeded"), Some(fixture.a2))
    );
    assert_eq!(
        app.get(&format!("/orders/detailed/get/{order_id}"))
            .await
            .body["order"]["total_price"],
        300.25
    );
    assert_eq!(
        app.get("/orders/detailed/all/user_a").await.body["data"][0]["order"]["status"],
        "succeeded"
    );
    assert_eq!(
        app.get("/orders/all/user_a").await.body["data"][0]["status"],
        "succeeded"
    );
}

#[tokio::test]
async fn cached_reads_see_an_order_delete() {
    let (app, _, order_id, item_id, second_item) = warmed_redis_app().await;
    assert_eq!(
        app.storefront(
            Method::DELETE,
            &format!("/orders/delete/{order_id}/user/user_a"),
            None
        )
        .await
        .status,
        200
    );
    assert_reads_match_database(&app, "user_a", order_id, item_id).await;
    app.get(&format!("/orders/get/{order_id}"))
        .await
        .assert_error(404, "not_found");
    app.get(&format!("/orders/detailed/get/{order_id}"))
        .await
        .assert_error(404, "not_found");
    app.get(&format!("/orders/items/get/{second_item}"))
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        app.get(&format!("/orders/items/all/{order_id}")).await.body,
        json!({"data": []})
    );
    assert_eq!(
        app.get("/orders/all/user_a").await.body,
        json!({"data": []})
    );
    assert_eq!(
        app.get("/orders/detailed/all/user_a").await.body,
        json!({"data": []})
    );
}

#[tokio::test]
async fn cached_reads_see_an_item_add() {
    let (app, _, order_id, item_id, _) = warmed_redis_app().await;
    let added = add_item(&app, order_id, 11, 3).await;
    assert_reads_match_database(&app, "user_a", order_id, item_id).await;
    assert_eq!(
        app.get(&format!("/orders/items/all/{order_id}")).await.body["data"][2],
        added
    );
    assert_eq!(
        app.get(&format!("/orders/detailed/get/{order_id}"))
            .await
            .body["items"][2],
        added
    );
    assert_eq!(
        app.get("/orders/detailed/all/user_a").await.body["data"][0]["items"][2],
        added
    );
    assert_eq!(
        app.get(&format!("/orders/items/get/{}", id_of(&added)))
            .await
            .body,
        added
    );
}

#[tokio::test]
async fn cached_reads_see_an_item_update() {
    let (app, _, order_id, item_id, _) = warmed_redis_app().await;
    let body = json!({"id": item_id, "order_id": order_id, "product_id": 15, "quantity": 9});
    assert_eq!(
        app.storefront(Method::PUT, "/orders/items/update", Some(&body))
            .await
            .status,
        200
    );
    assert_reads_match_database(&app, "user_a", order_id, item_id).await;
    assert_eq!(
        app.get(&format!("/orders/items/get/{item_id}")).await.body,
        body
    );
    assert_eq!(
        app.get(&format!("/orders/items/all/{order_id}")).await.body["data"][0],
        body
    );
    assert_eq!(
        app.get(&format!("/orders/detailed/get/{order_id}"))
            .await
            .body["items"][0],
        body
    );
    assert_eq!(
        app.get("/orders/detailed/all/user_a").await.body["data"][0]["items"][0],
        body
    );
}

#[tokio::test]
async fn cached_reads_see_an_item_delete() {
    let (app, _, order_id, item_id, second_item) = warmed_redis_app().await;
    assert_eq!(
        app.storefront(
            Method::DELETE,
            &format!("/orders/items/delete/{item_id}"),
            None
        )
        .await
        .status,
        200
    );
    assert_reads_match_database(&app, "user_a", order_id, item_id).await;
    app.get(&format!("/orders/items/get/{item_id}"))
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        TestApp::ids(&app.get(&format!("/orders/items/all/{order_id}")).await),
        vec![second_item]
    );
    let detailed = app.get(&format!("/orders/detailed/get/{order_id}")).await;
    assert_eq!(detailed.body["items"].as_array().unwrap().len(), 1);
    let all = app.get("/orders/detailed/all/user_a").await;
    assert_eq!(all.body["data"][0]["items"][0]["id"], second_item);
    assert_eq!(all.body["data"][0]["items"].as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 9. Concurrency
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn concurrent_checkouts_create_distinct_orders_each_with_exactly_its_items() {
    let app = TestApp::with_redis().await;
    let fixture = seed_users(&app).await;
    // warm the cached list that every checkout must invalidate
    assert_eq!(
        app.get("/orders/detailed/all/user_a").await.body,
        json!({"data": []})
    );
    let requests: Vec<Vec<(i64, i64)>> = (0..20_i64)
        .map(|i| {
            (0..(i % 3 + 1))
                .map(|j| ((i * 3 + j) % 25 + 1, i + 1))
                .collect()
        })
        .collect();
    let app_ref = &app;
    let writes = join_all(requests.iter().map(|lines| async move {
        let body = detailed_body("user_a", fixture.a, lines);
        app_ref
            .storefront(Method::POST, "/orders/detailed/add", Some(&body))
            .await
    }));
    // readers race the writers and must not leave a stale list behind
    let reads = join_all(
        (0..20).map(|_| async move { app_ref.get("/orders/detailed/all/user_a").await.status }),
    );
    let (responses, read_statuses) = futures::join!(writes, reads);
    assert!(read_statuses.iter().all(|status| *status == 200));

    let mut order_ids = HashSet::new();
    let mut item_ids = HashSet::new();
    let mut expected_items = 0;
    for (lines, response) in requests.iter().zip(&responses) {
        assert_eq!(response.status, 200, "{}", response.body);
        let order_id = id_of(&response.body["order"]);
        assert!(order_ids.insert(order_id), "duplicate order id {order_id}");
        let items = response.body["items"].as_array().unwrap();
        assert_eq!(items.len(), lines.len());
        for ((product_id, quantity), item) in lines.iter().zip(items) {
            assert_eq!(item["order_id"], order_id);
            assert_eq!(item["product_id"], *product_id);
            assert_eq!(item["quantity"], *quantity);
            assert!(item_ids.insert(id_of(item)), "duplicate item id {item}");
        }
        expected_items += lines.len();
        // exactly its items in the database, nothing from a concurrent checkout
        assert_eq!(
            db_detailed(&app, order_id).await.as_ref(),
            Some(&response.body)
        );
    }
    assert_eq!(order_ids.len(), 20);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM orders").await, 20);
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM order_items").await,
        i64::try_from(expected_items).unwrap()
    );
    assert_eq!(
        count(
            &app.pool,
            "SELECT count(*) FROM outbox WHERE event_type = 'order_created'"
        )
        .await,
        20
    );
    let truth = db_detailed_of(&app, "user_a").await;
    assert_eq!(truth.len(), 20);
    let cached = app.get("/orders/detailed/all/user_a").await;
    assert_eq!(cached.body, json!({"data": truth}));
    // and the database order (by id) is what the responses say once sorted
    let mut by_id: Vec<&Value> = responses.iter().map(|response| &response.body).collect();
    by_id.sort_by_key(|body| id_of(&body["order"]));
    assert_eq!(cached.body["data"], json!(by_id));
    assert_eq!(
        app.get("/orders/all/user_a").await.body,
        json!({"data": db_orders_of(&app, "user_a").await})
    );
}
