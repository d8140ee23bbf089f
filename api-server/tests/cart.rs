//! Cart endpoints against a real, seeded PostgreSQL (and Redis where stated): exact JSON shapes,
//! validation messages in contract order, ownership, atomicity of `add/all`, one outbox event per
//! change, cache invalidation and concurrent mutations of one user's cart.

use crate::common;

use std::collections::HashSet;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::TestApp;
use common::cache::redis_has;
use common::fixtures::insert_user;
use common::outbox::{OutboxRow, drain_outbox, outbox_count};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

type CartRow = (i64, i64, i32, String);

fn new_item(product_id: i64, quantity: i64, user_id: &str) -> Value {
    json!({"product_id": product_id, "quantity": quantity, "user_id": user_id})
}

/// `POST /cart/add`, asserting success; returns the created item.
async fn add_item(app: &TestApp, product_id: i64, quantity: i64, user_id: &str) -> Value {
    let response = app
        .storefront(
            Method::POST,
            "/cart/add",
            Some(&new_item(product_id, quantity, user_id)),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

async fn add_error(app: &TestApp, body: &Value) -> String {
    app.storefront(Method::POST, "/cart/add", Some(body))
        .await
        .assert_error(400, "invalid_argument")
}

async fn add_all_error(app: &TestApp, body: &Value) -> String {
    app.storefront(Method::POST, "/cart/add/all", Some(body))
        .await
        .assert_error(400, "invalid_argument")
}

async fn update_error(app: &TestApp, body: &Value) -> String {
    app.storefront(Method::PUT, "/cart/update", Some(body))
        .await
        .assert_error(400, "invalid_argument")
}

/// Every cart row in the database, by id.
async fn cart_rows(app: &TestApp) -> Vec<CartRow> {
    sqlx::query_as("SELECT id, product_id, quantity, user_id FROM cart_items ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

async fn cart_row(app: &TestApp, id: i64) -> Option<CartRow> {
    sqlx::query_as("SELECT id, product_id, quantity, user_id FROM cart_items WHERE id = $1")
        .bind(id)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
}

fn row_json(row: &CartRow) -> Value {
    json!({"id": row.0, "product_id": row.1, "quantity": row.2, "user_id": row.3})
}

/// The user's cart as the API should answer it, read from the database.
async fn db_cart_json(app: &TestApp, user_id: &str) -> Value {
    let rows: Vec<Value> = cart_rows(app)
        .await
        .iter()
        .filter(|row| row.3 == user_id)
        .map(row_json)
        .collect();
    json!({ "data": rows })
}

/// Asserts a `cart_updates` row: topic, key (the owner), type, and the whole payload.
fn assert_cart_event(row: &OutboxRow, event_type: &str, item: &Value) {
    let (topic, key, kind, payload) = row;
    assert_eq!(topic, "cart_updates", "{payload}");
    assert_eq!(key, item["user_id"].as_str().unwrap(), "{payload}");
    assert_eq!(kind, event_type, "{payload}");
    let event_id = payload["event_id"].as_str().expect("event_id is a string");
    let event_id = uuid::Uuid::parse_str(event_id).expect("event_id is a UUID");
    assert_eq!(event_id.get_version_num(), 7, "event_id is a UUID v7");
    let occurred_at = payload["occurred_at"]
        .as_str()
        .expect("occurred_at is a string");
    let occurred_at =
        chrono::DateTime::parse_from_rfc3339(occurred_at).expect("occurred_at is RFC 3339");
    assert_eq!(occurred_at.offset().local_minus_utc(), 0, "UTC");
    let mut rest = payload.clone();
    let fields = rest.as_object_mut().unwrap();
    fields.remove("event_id");
    fields.remove("occurred_at");
    assert_eq!(
        rest,
        json!({"event_type": event_type, "user_id": item["user_id"], "cart_item": item})
    );
}

/// A request sent on a clone of the router from any task (for the concurrency test).
async fn send_owned(
    router: Router,
    key: String,
    method: Method,
    path: String,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"));
    let body = match body {
        Some(json) => {
            builder = builder.header("content-type", "application/json");
            Body::from(serde_json::to_vec(&json).unwrap())
        }
        None => Body::empty(),
    };
    let response = router
        .oneshot(builder.body(body).unwrap())
        .await
        .expect("router is infallible");
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

// ---------------------------------------------------------------------------------------------
// GET /cart/get/:id and GET /cart/all/:user_id
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_cart_item_returns_exact_snake_case_fields() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let added = add_item(&app, 23, 2, "user_a").await;
    let id = added["id"].as_i64().expect("integer id");
    assert!(id > 0);
    let response = app.get(&format!("/cart/get/{id}")).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        json!({"id": id, "product_id": 23, "quantity": 2, "user_id": "user_a"})
    );
}

#[tokio::test]
async fn get_unknown_cart_item_is_404() {
    let app = TestApp::new().await;
    let message = app
        .get("/cart/get/999")
        .await
        .assert_error(404, "not_found");
    assert!(message.contains("999"), "{message}");
    app.get("/cart/get/-1").await.assert_error(404, "not_found");
    app.get("/cart/get/0").await.assert_error(404, "not_found");
}

#[tokio::test]
async fn non_integer_cart_item_ids_are_400() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    app.get("/cart/get/abc")
        .await
        .assert_error(400, "invalid_argument");
    app.get("/cart/get/1.5")
        .await
        .assert_error(400, "invalid_argument");
    // beyond 64 bits
    app.get("/cart/get/9223372036854775808")
        .await
        .assert_error(400, "invalid_argument");
    app.storefront(Method::DELETE, "/cart/delete/abc/user/user_a", None)
        .await
        .assert_error(400, "invalid_argument");
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn cart_of_user_lists_only_that_users_items_by_id() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    insert_user(&app.pool, "user_b").await;
    let first = add_item(&app, 12, 1, "user_a").await;
    add_item(&app, 5, 4, "user_b").await;
    let second = add_item(&app, 3, 2, "user_a").await;
    let third = add_item(&app, 7, 9, "user_a").await;
    let response = app.get("/cart/all/user_a").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, json!({"data": [first, second, third]}));
    let ids = TestApp::ids(&response);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    assert_eq!(response.body, db_cart_json(&app, "user_a").await);
}

#[tokio::test]
async fn cart_of_unknown_user_is_an_empty_list_not_404() {
    let app = TestApp::new().await;
    let response = app.get("/cart/all/nobody").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, json!({"data": []}));
    assert_eq!(response.raw, br#"{"data":[]}"#);
    // a known user with an empty cart too
    insert_user(&app.pool, "user_a").await;
    assert_eq!(app.get("/cart/all/user_a").await.body, json!({"data": []}));
}

// ---------------------------------------------------------------------------------------------
// POST /cart/add
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn add_returns_the_new_item_and_writes_one_cart_item_added_event() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    // unknown keys are ignored
    let mut body = new_item(14, 3, "user_a");
    body["colour"] = json!("blue");
    let response = app.storefront(Method::POST, "/cart/add", Some(&body)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let id = response.body["id"].as_i64().expect("integer id");
    assert_eq!(
        response.body,
        json!({"id": id, "product_id": 14, "quantity": 3, "user_id": "user_a"})
    );
    assert_eq!(cart_rows(&app).await, vec![(id, 14, 3, "user_a".into())]);
    let events = drain_outbox(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_cart_event(&events[0], "cart_item_added", &response.body);
}

#[tokio::test]
async fn adding_a_product_already_in_the_cart_adds_a_separate_row() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let first = add_item(&app, 8, 1, "user_a").await;
    let second = add_item(&app, 8, 2, "user_a").await;
    assert_ne!(first["id"], second["id"]);
    assert_eq!(
        app.get("/cart/all/user_a").await.body,
        json!({"data": [first, second]})
    );
    assert_eq!(cart_rows(&app).await.len(), 2);
    assert_eq!(drain_outbox(&app).await.len(), 2);
}

#[tokio::test]
async fn add_accepts_quantity_bounds_1_and_1000() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    assert_eq!(add_item(&app, 1, 1, "user_a").await["quantity"], 1);
    assert_eq!(add_item(&app, 25, 1000, "user_a").await["quantity"], 1000);
}

#[tokio::test]
async fn add_validation_messages_in_contract_order() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    // everything wrong: the product id is reported first
    let mut body = json!({"product_id": 0, "quantity": 0, "user_id": ""});
    assert_eq!(add_error(&app, &body).await, "invalid product ID");
    body["product_id"] = json!(-4);
    assert_eq!(add_error(&app, &body).await, "invalid product ID");
    body["product_id"] = json!(1);
    assert_eq!(
        add_error(&app, &body).await,
        "invalid quantity, cannot be less than 1"
    );
    body["quantity"] = json!(-2);
    assert_eq!(
        add_error(&app, &body).await,
        "invalid quantity, cannot be less than 1"
    );
    // an empty user id comes before the upper quantity bound
    body["quantity"] = json!(1001);
    assert_eq!(add_error(&app, &body).await, "invalid user ID");
    body["user_id"] = json!("   ");
    assert_eq!(add_error(&app, &body).await, "invalid user ID");
    body["user_id"] = json!("user_a");
    assert_eq!(
        add_error(&app, &body).await,
        "invalid quantity, cannot be more than 1000"
    );
    body["quantity"] = json!(3_000_000_000_i64);
    assert_eq!(
        add_error(&app, &body).await,
        "invalid quantity, cannot be more than 1000"
    );
    // validation comes before existence: unknown product and user with a bad quantity
    let body = json!({"product_id": 99, "quantity": 0, "user_id": "user_x"});
    assert_eq!(
        add_error(&app, &body).await,
        "invalid quantity, cannot be less than 1"
    );
    assert!(cart_rows(&app).await.is_empty());
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn add_missing_keys_get_the_same_messages_as_empty_values() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    for (field, expected) in [
        ("product_id", "invalid product ID"),
        ("quantity", "invalid quantity, cannot be less than 1"),
        ("user_id", "invalid user ID"),
    ] {
        let mut body = new_item(1, 1, "user_a");
        body.as_object_mut().unwrap().remove(field);
        assert_eq!(add_error(&app, &body).await, expected, "missing {field}");
        body[field] = Value::Null;
        assert_eq!(add_error(&app, &body).await, expected, "null {field}");
    }
    assert_eq!(add_error(&app, &json!({})).await, "invalid product ID");
    assert!(cart_rows(&app).await.is_empty());
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn add_with_a_wrong_json_type_names_the_field() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let mut body = new_item(1, 1, "user_a");
    body["quantity"] = json!("two");
    let response = app.storefront(Method::POST, "/cart/add", Some(&body)).await;
    let message = response.assert_error(400, "invalid_argument");
    assert_eq!(message, "invalid value for quantity");
    assert_eq!(response.body["details"]["field"], "quantity");
    assert!(cart_rows(&app).await.is_empty());
}

#[tokio::test]
async fn add_with_an_unknown_product_is_rejected() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    assert_eq!(
        add_error(&app, &new_item(99, 1, "user_a")).await,
        "product_id 99 does not exist"
    );
    assert!(cart_rows(&app).await.is_empty());
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn add_with_an_unknown_user_is_rejected() {
    let app = TestApp::new().await;
    assert_eq!(
        add_error(&app, &new_item(1, 1, "user_x")).await,
        "user_id user_x does not exist"
    );
    assert!(cart_rows(&app).await.is_empty());
    assert_eq!(outbox_count(&app).await, 0);
}

// ---------------------------------------------------------------------------------------------
// POST /cart/add/all
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn add_all_returns_items_in_request_order_and_writes_one_event_per_item() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    insert_user(&app.pool, "user_b").await;
    let request = json!({"data": [
        new_item(20, 2, "user_a"),
        new_item(3, 1, "user_b"),
        new_item(11, 5, "user_a"),
        new_item(20, 1, "user_a"),
    ]});
    let response = app
        .storefront(Method::POST, "/cart/add/all", Some(&request))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let items = response.body["data"].as_array().expect("data list").clone();
    assert_eq!(items.len(), 4);
    for (item, sent) in items.iter().zip(request["data"].as_array().unwrap()) {
        let mut expected = sent.clone();
        expected["id"] = item["id"].clone();
        assert_eq!(item, &expected);
    }
    // request order is id order
    let ids = TestApp::ids(&response);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    let rows: Vec<Value> = cart_rows(&app).await.iter().map(row_json).collect();
    assert_eq!(rows, items);
    assert_eq!(
        app.get("/cart/all/user_a").await.body,
        json!({"data": [items[0], items[2], items[3]]})
    );
    let events = drain_outbox(&app).await;
    assert_eq!(events.len(), 4, "{events:?}");
    for (event, item) in events.iter().zip(&items) {
        assert_cart_event(event, "cart_item_added", item);
    }
}

#[tokio::test]
async fn add_all_with_empty_list_is_rejected() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    for body in [json!({"data": []}), json!({"data": null}), json!({})] {
        assert_eq!(
            add_all_error(&app, &body).await,
            "empty new cart items list",
            "{body}"
        );
    }
    assert!(cart_rows(&app).await.is_empty());
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn add_all_with_more_than_100_items_is_rejected() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let items: Vec<Value> = (0..101)
        .map(|i| new_item(i % 25 + 1, 1, "user_a"))
        .collect();
    assert_eq!(
        add_all_error(&app, &json!({ "data": items })).await,
        "too many cart items"
    );
    assert!(cart_rows(&app).await.is_empty());
    assert_eq!(outbox_count(&app).await, 0);
    // exactly 100 is allowed
    let items: Vec<Value> = (0..100)
        .map(|i| new_item(i % 25 + 1, 1, "user_a"))
        .collect();
    let response = app
        .storefront(
            Method::POST,
            "/cart/add/all",
            Some(&json!({ "data": items })),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let ids = TestApp::ids(&response);
    assert_eq!(ids.len(), 100);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    let products: Vec<i64> = response.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["product_id"].as_i64().unwrap())
        .collect();
    assert_eq!(products, (0..100).map(|i| i % 25 + 1).collect::<Vec<_>>());
    assert_eq!(cart_rows(&app).await.len(), 100);
    assert_eq!(outbox_count(&app).await, 100);
}

#[tokio::test]
async fn add_all_item_errors_are_prefixed_with_their_index() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let good = new_item(1, 1, "user_a");
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"product_id": 2, "quantity": 0, "user_id": "user_a"}),
            "data[2]: invalid quantity, cannot be less than 1",
        ),
        (
            json!({"product_id": 0, "quantity": 1, "user_id": "user_a"}),
            "data[2]: invalid product ID",
        ),
        (
            json!({"product_id": 2, "quantity": 1}),
            "data[2]: invalid user ID",
        ),
        (
            json!({"product_id": 2, "quantity": 1001, "user_id": "user_a"}),
            "data[2]: invalid quantity, cannot be more than 1000",
        ),
        (
            new_item(99, 1, "user_a"),
            "data[2]: product_id 99 does not exist",
        ),
        (
            new_item(2, 1, "user_x"),
            "data[2]: user_id user_x does not exist",
        ),
    ];
    for (bad, expected) in cases {
        let body = json!({"data": [good, good, bad, good]});
        assert_eq!(add_all_error(&app, &body).await, expected);
    }
    // validation of every item comes before existence checks
    let body = json!({"data": [
        new_item(99, 1, "user_a"),
        good,
        new_item(1, 0, "user_a"),
    ]});
    assert_eq!(
        add_all_error(&app, &body).await,
        "data[2]: invalid quantity, cannot be less than 1"
    );
    // the first offending item is named
    let body = json!({"data": [good, new_item(1, 0, "user_a"), new_item(0, 1, "user_a")]});
    assert_eq!(
        add_all_error(&app, &body).await,
        "data[1]: invalid quantity, cannot be less than 1"
    );
    assert!(cart_rows(&app).await.is_empty());
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn add_all_with_one_unknown_product_inserts_nothing() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let existing = add_item(&app, 4, 1, "user_a").await;
    drain_outbox(&app).await;
    let body = json!({"data": [
        new_item(1, 1, "user_a"),
        new_item(2, 2, "user_a"),
        new_item(99, 3, "user_a"),
        new_item(4, 4, "user_a"),
    ]});
    assert_eq!(
        add_all_error(&app, &body).await,
        "data[2]: product_id 99 does not exist"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM cart_items")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(outbox_count(&app).await, 0);
    assert_eq!(
        app.get("/cart/all/user_a").await.body,
        json!({"data": [existing]})
    );
}

#[tokio::test]
async fn add_all_with_one_unknown_user_inserts_nothing() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let body = json!({"data": [
        new_item(1, 1, "user_a"),
        new_item(2, 1, "user_x"),
    ]});
    assert_eq!(
        add_all_error(&app, &body).await,
        "data[1]: user_id user_x does not exist"
    );
    assert!(cart_rows(&app).await.is_empty());
    assert_eq!(outbox_count(&app).await, 0);
}

// ---------------------------------------------------------------------------------------------
// PUT /cart/update
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn update_changes_product_and_quantity_and_writes_one_cart_item_updated_event() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let item = add_item(&app, 6, 1, "user_a").await;
    let id = item["id"].as_i64().unwrap();
    drain_outbox(&app).await;
    let body = json!({"id": id, "product_id": 7, "quantity": 5, "user_id": "user_a"});
    let response = app
        .storefront(Method::PUT, "/cart/update", Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, json!({ "id": id }));
    assert_eq!(cart_row(&app, id).await, Some((id, 7, 5, "user_a".into())));
    assert_eq!(app.get(&format!("/cart/get/{id}")).await.body, body);
    let events = drain_outbox(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_cart_event(&events[0], "cart_item_updated", &body);
}

#[tokio::test]
async fn update_validation_messages_in_contract_order() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let item = add_item(&app, 6, 1, "user_a").await;
    let id = item["id"].as_i64().unwrap();
    drain_outbox(&app).await;
    // the cart item id is checked first
    let mut body = json!({"id": 0, "product_id": 0, "quantity": 0, "user_id": ""});
    assert_eq!(update_error(&app, &body).await, "invalid cart item ID");
    body["id"] = json!(-3);
    assert_eq!(update_error(&app, &body).await, "invalid cart item ID");
    body.as_object_mut().unwrap().remove("id");
    assert_eq!(update_error(&app, &body).await, "invalid cart item ID");
    body["id"] = json!(id);
    assert_eq!(update_error(&app, &body).await, "invalid product ID");
    body["product_id"] = json!(6);
    assert_eq!(
        update_error(&app, &body).await,
        "invalid quantity, cannot be less than 1"
    );
    body["quantity"] = json!(1001);
    assert_eq!(update_error(&app, &body).await, "invalid user ID");
    body["user_id"] = json!("user_a");
    assert_eq!(
        update_error(&app, &body).await,
        "invalid quantity, cannot be more than 1000"
    );
    for (field, expected) in [
        ("product_id", "invalid product ID"),
        ("quantity", "invalid quantity, cannot be less than 1"),
        ("user_id", "invalid user ID"),
    ] {
        let mut body = json!({"id": id, "product_id": 6, "quantity": 2, "user_id": "user_a"});
        body.as_object_mut().unwrap().remove(field);
        assert_eq!(update_error(&app, &body).await, expected, "missing {field}");
    }
    // validation comes before existence: an unknown id with a bad body is 400
    let body = json!({"id": 999, "product_id": 6, "quantity": 0, "user_id": "user_a"});
    assert_eq!(
        update_error(&app, &body).await,
        "invalid quantity, cannot be less than 1"
    );
    assert_eq!(cart_row(&app, id).await, Some((id, 6, 1, "user_a".into())));
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn update_with_an_unknown_product_is_rejected() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let item = add_item(&app, 6, 1, "user_a").await;
    let id = item["id"].as_i64().unwrap();
    drain_outbox(&app).await;
    let body = json!({"id": id, "product_id": 99, "quantity": 2, "user_id": "user_a"});
    assert_eq!(
        update_error(&app, &body).await,
        "product_id 99 does not exist"
    );
    assert_eq!(cart_row(&app, id).await, Some((id, 6, 1, "user_a".into())));
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn update_with_an_unknown_user_is_rejected() {
    // api.md §1: an unknown user_id in a body is 400 `user_id user_x does not exist`, and
    // referenced-row errors (400) come before existence/ownership (404), as for unknown products
    // here and for `userId` in PUT /users/addresses/update.
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let item = add_item(&app, 6, 1, "user_a").await;
    let id = item["id"].as_i64().unwrap();
    drain_outbox(&app).await;
    let body = json!({"id": id, "product_id": 9, "quantity": 7, "user_id": "user_x"});
    assert_eq!(
        update_error(&app, &body).await,
        "user_id user_x does not exist"
    );
    assert_eq!(cart_row(&app, id).await, Some((id, 6, 1, "user_a".into())));
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn update_of_an_unknown_item_is_404() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let body = json!({"id": 999, "product_id": 6, "quantity": 2, "user_id": "user_a"});
    app.storefront(Method::PUT, "/cart/update", Some(&body))
        .await
        .assert_error(404, "not_found");
    assert!(cart_rows(&app).await.is_empty());
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn update_by_another_user_is_404_and_leaves_the_row_unchanged() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    insert_user(&app.pool, "user_b").await;
    let item = add_item(&app, 6, 1, "user_a").await;
    let id = item["id"].as_i64().unwrap();
    drain_outbox(&app).await;
    // user B tries to take over / modify A's item
    let body = json!({"id": id, "product_id": 9, "quantity": 7, "user_id": "user_b"});
    app.storefront(Method::PUT, "/cart/update", Some(&body))
        .await
        .assert_error(404, "not_found");
    assert_eq!(cart_row(&app, id).await, Some((id, 6, 1, "user_a".into())));
    assert_eq!(app.get(&format!("/cart/get/{id}")).await.body, item);
    assert_eq!(app.get("/cart/all/user_b").await.body, json!({"data": []}));
    assert_eq!(outbox_count(&app).await, 0);
}

// ---------------------------------------------------------------------------------------------
// DELETE /cart/delete/:id/user/:user_id
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn delete_returns_the_id_and_writes_one_cart_item_deleted_event() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    let kept = add_item(&app, 1, 1, "user_a").await;
    let item = add_item(&app, 2, 3, "user_a").await;
    let id = item["id"].as_i64().unwrap();
    drain_outbox(&app).await;
    let response = app
        .storefront(
            Method::DELETE,
            &format!("/cart/delete/{id}/user/user_a"),
            None,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, json!({ "id": id }));
    assert_eq!(cart_row(&app, id).await, None);
    app.get(&format!("/cart/get/{id}"))
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        app.get("/cart/all/user_a").await.body,
        json!({"data": [kept]})
    );
    let events = drain_outbox(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
    // a deleted entity's payload carries its last state
    assert_cart_event(&events[0], "cart_item_deleted", &item);
    // deleting again is 404 and writes nothing
    app.storefront(
        Method::DELETE,
        &format!("/cart/delete/{id}/user/user_a"),
        None,
    )
    .await
    .assert_error(404, "not_found");
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn delete_of_an_unknown_item_is_404() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    for path in [
        "/cart/delete/999/user/user_a",
        "/cart/delete/-1/user/user_a",
        "/cart/delete/999/user/user_x",
    ] {
        app.storefront(Method::DELETE, path, None)
            .await
            .assert_error(404, "not_found");
    }
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn delete_by_another_user_is_404_and_leaves_the_row_unchanged() {
    let app = TestApp::new().await;
    insert_user(&app.pool, "user_a").await;
    insert_user(&app.pool, "user_b").await;
    let item = add_item(&app, 6, 4, "user_a").await;
    let id = item["id"].as_i64().unwrap();
    drain_outbox(&app).await;
    app.storefront(
        Method::DELETE,
        &format!("/cart/delete/{id}/user/user_b"),
        None,
    )
    .await
    .assert_error(404, "not_found");
    assert_eq!(cart_row(&app, id).await, Some((id, 6, 4, "user_a".into())));
    assert_eq!(
        app.get("/cart/all/user_a").await.body,
        json!({"data": [item]})
    );
    assert_eq!(outbox_count(&app).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Cache (Redis) and concurrency
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cart_mutations_are_visible_immediately_with_redis() {
    let app = TestApp::with_redis().await;
    insert_user(&app.pool, "user_a").await;
    let first = add_item(&app, 1, 1, "user_a").await;
    let id = first["id"].as_i64().unwrap();
    let item_path = format!("/cart/get/{id}");

    // warm both entries and check they are in Redis
    assert_eq!(app.get(&item_path).await.body, first);
    assert_eq!(
        app.get("/cart/all/user_a").await.body,
        json!({"data": [first]})
    );
    assert!(redis_has(&app, &format!("cart-item-cache/{id}")).await);
    assert!(redis_has(&app, "user-cart-items-cache/user_a").await);

    // add
    let second = add_item(&app, 2, 2, "user_a").await;
    assert_eq!(
        app.get("/cart/all/user_a").await.body,
        json!({"data": [first, second]})
    );
    assert_eq!(app.get(&item_path).await.body, first);

    // add/all
    let response = app
        .storefront(
            Method::POST,
            "/cart/add/all",
            Some(&json!({"data": [new_item(3, 3, "user_a")]})),
        )
        .await;
    assert_eq!(response.status, 200);
    let third = response.body["data"][0].clone();
    assert_eq!(
        app.get("/cart/all/user_a").await.body,
        json!({"data": [first, second, third]})
    );

    // update (both entries warm again)
    assert_eq!(app.get(&item_path).await.status, 200);
    assert!(redis_has(&app, &format!("cart-item-cache/{id}")).await);
    let updated = json!({"id": id, "product_id": 5, "quantity": 9, "user_id": "user_a"});
    assert_eq!(
        app.storefront(Method::PUT, "/cart/update", Some(&updated))
            .await
            .status,
        200
    );
    assert_eq!(app.get(&item_path).await.body, updated);
    assert_eq!(
        app.get("/cart/all/user_a").await.body,
        json!({"data": [updated, second, third]})
    );

    // delete (both entries warm again)
    assert_eq!(app.get(&item_path).await.status, 200);
    assert!(redis_has(&app, &format!("cart-item-cache/{id}")).await);
    assert!(redis_has(&app, "user-cart-items-cache/user_a").await);
    assert_eq!(
        app.storefront(
            Method::DELETE,
            &format!("/cart/delete/{id}/user/user_a"),
            None
        )
        .await
        .status,
        200
    );
    app.get(&item_path).await.assert_error(404, "not_found");
    assert_eq!(
        app.get("/cart/all/user_a").await.body,
        json!({"data": [second, third]})
    );
    assert_eq!(
        app.get("/cart/all/user_a").await.body,
        db_cart_json(&app, "user_a").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_adds_and_updates_of_one_cart_all_succeed_and_the_cache_matches_the_database() {
    let app = TestApp::with_redis().await;
    insert_user(&app.pool, "user_a").await;
    // 25 existing rows, one per product, quantity 1
    let seed: Vec<Value> = (1..=25).map(|p| new_item(p, 1, "user_a")).collect();
    let response = app
        .storefront(
            Method::POST,
            "/cart/add/all",
            Some(&json!({ "data": seed })),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let existing = TestApp::ids(&response);
    assert_eq!(existing.len(), 25);
    drain_outbox(&app).await;
    // warm the list and every item entry
    assert_eq!(TestApp::ids(&app.get("/cart/all/user_a").await), existing);
    for id in &existing {
        assert_eq!(app.get(&format!("/cart/get/{id}")).await.status, 200);
    }
    assert!(redis_has(&app, "user-cart-items-cache/user_a").await);

    // 50 concurrent mutations: 25 adds interleaved with 25 updates of distinct rows, plus reads
    let mut tasks = Vec::new();
    for i in 0..25_i64 {
        let add = new_item(25 - i, 100 + i, "user_a");
        tasks.push(tokio::spawn(send_owned(
            app.router.clone(),
            app.storefront_key.clone(),
            Method::POST,
            "/cart/add".into(),
            Some(add),
        )));
        let id = existing[usize::try_from(i).unwrap()];
        let update =
            json!({"id": id, "product_id": i + 1, "quantity": 500 + i, "user_id": "user_a"});
        tasks.push(tokio::spawn(send_owned(
            app.router.clone(),
            app.storefront_key.clone(),
            Method::PUT,
            "/cart/update".into(),
            Some(update),
        )));
        if i % 5 == 0 {
            tasks.push(tokio::spawn(send_owned(
                app.router.clone(),
                app.storefront_key.clone(),
                Method::GET,
                "/cart/all/user_a".into(),
                None,
            )));
        }
    }
    let results: Vec<(StatusCode, Value)> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.expect("task completes"))
        .collect();
    let mut added_ids = Vec::new();
    let mut mutations = 0;
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
        if body.get("product_id").is_some() {
            added_ids.push(body["id"].as_i64().unwrap());
        }
        if body.get("data").is_none() {
            mutations += 1;
        }
    }
    assert_eq!(mutations, 50);
    assert_eq!(added_ids.len(), 25);

    // the rows are exactly as expected
    let rows = cart_rows(&app).await;
    assert_eq!(rows.len(), 50);
    let unique: HashSet<i64> = rows.iter().map(|row| row.0).collect();
    assert_eq!(unique.len(), 50, "no duplicate ids");
    for (i, id) in existing.iter().enumerate() {
        let i = i64::try_from(i).unwrap();
        let quantity = i32::try_from(500 + i).unwrap();
        assert_eq!(
            cart_row(&app, *id).await,
            Some((*id, i + 1, quantity, "user_a".into())),
            "updated row {id}"
        );
    }
    let mut added: Vec<(i64, i32)> = rows
        .iter()
        .filter(|row| !existing.contains(&row.0))
        .map(|row| (row.1, row.2))
        .collect();
    added.sort_unstable();
    let mut expected: Vec<(i64, i32)> = (0..25_i64)
        .map(|i| (25 - i, i32::try_from(100 + i).unwrap()))
        .collect();
    expected.sort_unstable();
    assert_eq!(added, expected);
    let mut added_ids_sorted = added_ids.clone();
    added_ids_sorted.sort_unstable();
    let mut db_added_ids: Vec<i64> = rows
        .iter()
        .map(|row| row.0)
        .filter(|id| !existing.contains(id))
        .collect();
    db_added_ids.sort_unstable();
    assert_eq!(added_ids_sorted, db_added_ids);

    // one event per mutation
    let events = drain_outbox(&app).await;
    assert_eq!(events.len(), 50);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.2 == "cart_item_added" && e.1 == "user_a")
            .count(),
        25
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.2 == "cart_item_updated" && e.1 == "user_a")
            .count(),
        25
    );

    // the cached list (read twice: fill, then hit) equals the database
    let expected_list = db_cart_json(&app, "user_a").await;
    assert_eq!(app.get("/cart/all/user_a").await.body, expected_list);
    assert_eq!(app.get("/cart/all/user_a").await.body, expected_list);
    for id in &existing {
        let row = cart_row(&app, *id).await.unwrap();
        assert_eq!(
            app.get(&format!("/cart/get/{id}")).await.body,
            row_json(&row)
        );
    }
}
