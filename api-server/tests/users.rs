//! Users and addresses against a real, seeded PostgreSQL (and Redis where stated): exact camelCase
//! shapes, validation messages in contract order, 404/409/403 rules, ownership of addresses, user
//! deletion in one transaction, one outbox event per change, cache invalidation, and the frontend's
//! first sign-in flow.

use crate::common;

use axum::http::Method;
use common::TestApp;
use common::cache::redis_has;
use common::outbox::{OutboxRow, drain_outbox, outbox_count};
use serde_json::{Value, json};

type AddressRow = (i64, String, String, String, String, String, String);

fn user_body(id: &str, email: &str) -> Value {
    json!({"id": id, "firstName": "Ada", "lastName": "Lovelace", "email": email})
}

fn address_body(user_id: &str) -> Value {
    json!({
        "street": "1 Main Street", "city": "Toronto", "state": "ON",
        "country": "Canada", "zipCode": "M5V 2T6", "userId": user_id
    })
}

/// `POST /users/add`, asserting success; returns the created user.
async fn add_user(app: &TestApp, id: &str, email: &str) -> Value {
    let response = app
        .storefront(Method::POST, "/users/add", Some(&user_body(id, email)))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// `POST /users/addresses/add`, asserting success; returns the created address.
async fn add_address(app: &TestApp, body: &Value) -> Value {
    let response = app
        .storefront(Method::POST, "/users/addresses/add", Some(body))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

async fn add_cart_item(app: &TestApp, product_id: i64, quantity: i64, user_id: &str) -> Value {
    let body = json!({"product_id": product_id, "quantity": quantity, "user_id": user_id});
    let response = app.storefront(Method::POST, "/cart/add", Some(&body)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// Inserts an order for the user at the address directly in the database.
async fn insert_order(app: &TestApp, user_id: &str, address_id: i64) {
    sqlx::query(
        "INSERT INTO orders (user_id, address_id, total_price, status) VALUES ($1, $2, 42.5, 'pending')",
    )
    .bind(user_id)
    .bind(address_id)
    .execute(&app.pool)
    .await
    .unwrap();
}

async fn user_row(app: &TestApp, id: &str) -> Option<(String, String, String, String)> {
    sqlx::query_as("SELECT id, first_name, last_name, email FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
}

async fn user_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn address_row(app: &TestApp, id: i64) -> Option<AddressRow> {
    sqlx::query_as(
        "SELECT id, street, city, state, country, zip_code, user_id FROM addresses WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&app.pool)
    .await
    .unwrap()
}

fn address_row_json(row: &AddressRow) -> Value {
    json!({
        "id": row.0, "street": row.1, "city": row.2, "state": row.3,
        "country": row.4, "zipCode": row.5, "userId": row.6
    })
}

async fn count_where_user(app: &TestApp, table: &str, user_id: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE user_id = $1"
    )))
    .bind(user_id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Checks `event_id` (UUID v7) and `occurred_at` (RFC 3339 UTC) and returns the payload without them.
fn payload_body(payload: &Value) -> Value {
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
    rest
}

/// The snake_case event form of an API `User`.
fn user_view(user: &Value) -> Value {
    json!({
        "id": user["id"], "first_name": user["firstName"],
        "last_name": user["lastName"], "email": user["email"]
    })
}

/// The snake_case event form of an API `Address`.
fn address_view(address: &Value) -> Value {
    json!({
        "id": address["id"], "street": address["street"], "city": address["city"],
        "state": address["state"], "country": address["country"],
        "zip_code": address["zipCode"], "user_id": address["userId"]
    })
}

/// Asserts a `users_updates` row: topic, key, type and the whole payload.
fn assert_users_event(
    row: &OutboxRow,
    event_type: &str,
    user_id: &str,
    user: Option<&Value>,
    addresses: &[Value],
) {
    let (topic, key, kind, payload) = row;
    assert_eq!(topic, "users_updates", "{payload}");
    assert_eq!(key, user_id, "{payload}");
    assert_eq!(kind, event_type, "{payload}");
    let addresses: Vec<Value> = addresses.iter().map(address_view).collect();
    assert_eq!(
        payload_body(payload),
        json!({
            "event_type": event_type,
            "user_id": user_id,
            "user": user.map(user_view),
            "addresses": addresses,
        })
    );
}

// ---------------------------------------------------------------------------------------------
// GET /users/get/:id, GET /users/all
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_user_returns_exact_camel_case_fields() {
    let app = TestApp::new().await;
    add_user(&app, "user_2abc", "ada@example.com").await;
    let response = app.get("/users/get/user_2abc").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        json!({"id": "user_2abc", "firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"})
    );
}

#[tokio::test]
async fn get_unknown_user_is_404() {
    let app = TestApp::new().await;
    let message = app
        .get("/users/get/user_missing")
        .await
        .assert_error(404, "not_found");
    assert!(message.contains("user_missing"), "{message}");
    // a 404 is not cached: the user becomes visible once created
    add_user(&app, "user_missing", "m@example.com").await;
    assert_eq!(app.get("/users/get/user_missing").await.status, 200);
}

#[tokio::test]
async fn all_users_needs_the_admin_scope() {
    let app = TestApp::new().await;
    let user = add_user(&app, "user_a", "a@example.com").await;
    let message = app
        .get("/users/all")
        .await
        .assert_error(403, "permission_denied");
    assert_eq!(message, "this API key lacks the admin scope");
    let response = app.admin(Method::GET, "/users/all", None).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, json!({ "data": [user] }));
}

#[tokio::test]
async fn all_users_is_ordered_by_id_and_empty_without_users() {
    let app = TestApp::new().await;
    assert_eq!(
        app.admin(Method::GET, "/users/all", None).await.body,
        json!({"data": []})
    );
    let c = add_user(&app, "user_c", "c@example.com").await;
    let a = add_user(&app, "user_a", "a@example.com").await;
    let b = add_user(&app, "user_b", "b@example.com").await;
    assert_eq!(
        app.admin(Method::GET, "/users/all", None).await.body,
        json!({ "data": [a, b, c] })
    );
}

// ---------------------------------------------------------------------------------------------
// POST /users/add
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn add_user_returns_the_user_and_writes_one_user_created_event() {
    let app = TestApp::new().await;
    let mut body = user_body("user_a", "ada@example.com");
    body["role"] = json!("ignored");
    let response = app
        .storefront(Method::POST, "/users/add", Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let expected = user_body("user_a", "ada@example.com");
    assert_eq!(response.body, expected);
    assert_eq!(
        user_row(&app, "user_a").await,
        Some((
            "user_a".into(),
            "Ada".into(),
            "Lovelace".into(),
            "ada@example.com".into()
        ))
    );
    let events = drain_outbox(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_users_event(&events[0], "user_created", "user_a", Some(&expected), &[]);
}

#[tokio::test]
async fn add_user_validation_messages_in_contract_order() {
    let app = TestApp::new().await;
    let mut body = json!({"id": "", "firstName": "", "lastName": "", "email": ""});
    assert_eq!(
        app.invalid_argument(Method::POST, "/users/add", &body)
            .await,
        "invalid user ID"
    );
    body["id"] = json!("   ");
    assert_eq!(
        app.invalid_argument(Method::POST, "/users/add", &body)
            .await,
        "invalid user ID"
    );
    body["id"] = json!("user_a");
    assert_eq!(
        app.invalid_argument(Method::POST, "/users/add", &body)
            .await,
        "missing first name"
    );
    body["firstName"] = json!("Ada");
    assert_eq!(
        app.invalid_argument(Method::POST, "/users/add", &body)
            .await,
        "missing last name"
    );
    body["lastName"] = json!("Lovelace");
    assert_eq!(
        app.invalid_argument(Method::POST, "/users/add", &body)
            .await,
        "missing user email"
    );
    body["email"] = json!("not-an-email");
    assert_eq!(
        app.invalid_argument(Method::POST, "/users/add", &body)
            .await,
        "invalid user email"
    );
    assert_eq!(user_count(&app).await, 0);
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn add_user_missing_keys_get_the_same_messages_as_empty_values() {
    let app = TestApp::new().await;
    for (field, expected) in [
        ("id", "invalid user ID"),
        ("firstName", "missing first name"),
        ("lastName", "missing last name"),
        ("email", "missing user email"),
    ] {
        let mut body = user_body("user_a", "a@example.com");
        body.as_object_mut().unwrap().remove(field);
        assert_eq!(
            app.invalid_argument(Method::POST, "/users/add", &body)
                .await,
            expected,
            "missing {field}"
        );
        body[field] = Value::Null;
        assert_eq!(
            app.invalid_argument(Method::POST, "/users/add", &body)
                .await,
            expected,
            "null {field}"
        );
    }
    // snake_case keys are not the contract's names: they count as missing
    let body =
        json!({"id": "user_a", "first_name": "Ada", "last_name": "L", "email": "a@example.com"});
    assert_eq!(
        app.invalid_argument(Method::POST, "/users/add", &body)
            .await,
        "missing first name"
    );
    assert_eq!(user_count(&app).await, 0);
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn invalid_emails_are_rejected() {
    let app = TestApp::new().await;
    for email in [
        "plainaddress",
        "@example.com",
        "ada@localhost",
        "ada@@example.com",
        "ada@b@example.com",
        "ada@",
    ] {
        let body = user_body("user_a", email);
        assert_eq!(
            app.invalid_argument(Method::POST, "/users/add", &body)
                .await,
            "invalid user email",
            "{email}"
        );
    }
    assert_eq!(user_count(&app).await, 0);
    // a well-formed address is accepted
    add_user(&app, "user_a", "first.last+tag@mail.example.org").await;
}

#[tokio::test]
async fn add_user_with_a_taken_id_is_409() {
    let app = TestApp::new().await;
    let original = add_user(&app, "user_a", "a@example.com").await;
    drain_outbox(&app).await;
    app.storefront(
        Method::POST,
        "/users/add",
        Some(&user_body("user_a", "other@example.com")),
    )
    .await
    .assert_error(409, "already_exists");
    assert_eq!(app.get("/users/get/user_a").await.body, original);
    assert_eq!(user_count(&app).await, 1);
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn add_user_with_a_taken_email_is_409_case_insensitively() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "A@x.com").await;
    drain_outbox(&app).await;
    for email in ["A@x.com", "a@x.com", "a@X.COM"] {
        app.storefront(
            Method::POST,
            "/users/add",
            Some(&user_body("user_b", email)),
        )
        .await
        .assert_error(409, "already_exists");
    }
    app.get("/users/get/user_b")
        .await
        .assert_error(404, "not_found");
    assert_eq!(user_count(&app).await, 1);
    assert_eq!(outbox_count(&app).await, 0);
}

// ---------------------------------------------------------------------------------------------
// PUT /users/update
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn update_user_changes_fields_and_writes_one_user_updated_event() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    drain_outbox(&app).await;
    let body = json!({"id": "user_a", "firstName": "Grace", "lastName": "Hopper", "email": "grace@example.com"});
    let response = app
        .storefront(Method::PUT, "/users/update", Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, json!({"id": "user_a"}));
    assert_eq!(app.get("/users/get/user_a").await.body, body);
    assert_eq!(
        user_row(&app, "user_a").await,
        Some((
            "user_a".into(),
            "Grace".into(),
            "Hopper".into(),
            "grace@example.com".into()
        ))
    );
    let events = drain_outbox(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_users_event(&events[0], "user_updated", "user_a", Some(&body), &[]);
}

#[tokio::test]
async fn update_user_validation_messages_in_contract_order() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    drain_outbox(&app).await;
    let mut body = json!({"firstName": "", "lastName": "", "email": "bad"});
    assert_eq!(
        app.invalid_argument(Method::PUT, "/users/update", &body)
            .await,
        "invalid user ID"
    );
    body["id"] = json!("user_a");
    assert_eq!(
        app.invalid_argument(Method::PUT, "/users/update", &body)
            .await,
        "missing first name"
    );
    body["firstName"] = json!("Grace");
    assert_eq!(
        app.invalid_argument(Method::PUT, "/users/update", &body)
            .await,
        "missing last name"
    );
    body["lastName"] = json!("Hopper");
    assert_eq!(
        app.invalid_argument(Method::PUT, "/users/update", &body)
            .await,
        "invalid user email"
    );
    body.as_object_mut().unwrap().remove("email");
    assert_eq!(
        app.invalid_argument(Method::PUT, "/users/update", &body)
            .await,
        "missing user email"
    );
    // validation comes before existence
    let body =
        json!({"id": "user_missing", "firstName": "", "lastName": "X", "email": "x@example.com"});
    assert_eq!(
        app.invalid_argument(Method::PUT, "/users/update", &body)
            .await,
        "missing first name"
    );
    assert_eq!(
        app.get("/users/get/user_a").await.body,
        user_body("user_a", "a@example.com")
    );
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn update_of_an_unknown_user_is_404() {
    let app = TestApp::new().await;
    app.storefront(
        Method::PUT,
        "/users/update",
        Some(&user_body("user_missing", "m@example.com")),
    )
    .await
    .assert_error(404, "not_found");
    assert_eq!(user_count(&app).await, 0);
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn update_user_to_a_taken_email_is_409_case_insensitively() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "A@x.com").await;
    let b = add_user(&app, "user_b", "b@x.com").await;
    drain_outbox(&app).await;
    for email in ["A@x.com", "a@x.com"] {
        app.storefront(
            Method::PUT,
            "/users/update",
            Some(&user_body("user_b", email)),
        )
        .await
        .assert_error(409, "already_exists");
    }
    assert_eq!(app.get("/users/get/user_b").await.body, b);
    assert_eq!(
        user_row(&app, "user_b").await.map(|row| row.3),
        Some("b@x.com".into())
    );
    assert_eq!(outbox_count(&app).await, 0);
    // changing the case of one's own email is not a conflict
    let response = app
        .storefront(
            Method::PUT,
            "/users/update",
            Some(&user_body("user_a", "a@x.com")),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(app.get("/users/get/user_a").await.body["email"], "a@x.com");
}

// ---------------------------------------------------------------------------------------------
// DELETE /users/delete/:id
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn delete_user_removes_cart_items_and_addresses_and_writes_the_events() {
    let app = TestApp::new().await;
    let user = add_user(&app, "user_a", "a@example.com").await;
    add_user(&app, "user_b", "b@example.com").await;
    let home = add_address(&app, &address_body("user_a")).await;
    let mut work_body = address_body("user_a");
    work_body["street"] = json!("200 King Street");
    let work = add_address(&app, &work_body).await;
    let other_address = add_address(&app, &address_body("user_b")).await;
    let cart_1 = add_cart_item(&app, 3, 1, "user_a").await;
    let cart_2 = add_cart_item(&app, 9, 2, "user_a").await;
    let other_cart = add_cart_item(&app, 9, 2, "user_b").await;
    drain_outbox(&app).await;

    let response = app
        .storefront(Method::DELETE, "/users/delete/user_a", None)
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, json!({"id": "user_a"}));

    assert_eq!(user_row(&app, "user_a").await, None);
    assert_eq!(count_where_user(&app, "cart_items", "user_a").await, 0);
    assert_eq!(count_where_user(&app, "addresses", "user_a").await, 0);
    // the other user is untouched
    assert!(user_row(&app, "user_b").await.is_some());
    assert_eq!(
        app.get("/cart/all/user_b").await.body,
        json!({ "data": [other_cart] })
    );
    assert_eq!(
        app.get("/users/addresses/user/user_b").await.body,
        json!({ "data": [other_address] })
    );
    app.get("/users/get/user_a")
        .await
        .assert_error(404, "not_found");
    assert_eq!(app.get("/cart/all/user_a").await.body, json!({"data": []}));
    assert_eq!(
        app.get("/users/addresses/user/user_a").await.body,
        json!({"data": []})
    );

    // one user_deleted event carrying the last state and the removed addresses, and one
    // cart_item_deleted event per removed cart row
    let events = drain_outbox(&app).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let user_events: Vec<&OutboxRow> = events.iter().filter(|e| e.0 == "users_updates").collect();
    assert_eq!(user_events.len(), 1, "{events:?}");
    assert_users_event(
        user_events[0],
        "user_deleted",
        "user_a",
        Some(&user),
        &[home, work],
    );
    let cart_events: Vec<&OutboxRow> = events.iter().filter(|e| e.0 == "cart_updates").collect();
    assert_eq!(cart_events.len(), 2, "{events:?}");
    for (event, item) in cart_events.iter().zip([&cart_1, &cart_2]) {
        assert_eq!(event.1, "user_a");
        assert_eq!(event.2, "cart_item_deleted");
        assert_eq!(
            payload_body(&event.3),
            json!({"event_type": "cart_item_deleted", "user_id": "user_a", "cart_item": item})
        );
    }
    // the id is free again
    add_user(&app, "user_a", "a@example.com").await;
}

#[tokio::test]
async fn delete_of_an_unknown_user_is_404() {
    let app = TestApp::new().await;
    app.storefront(Method::DELETE, "/users/delete/user_missing", None)
        .await
        .assert_error(404, "not_found");
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn delete_of_a_user_with_orders_is_409_and_changes_nothing() {
    let app = TestApp::new().await;
    let user = add_user(&app, "user_a", "a@example.com").await;
    let address = add_address(&app, &address_body("user_a")).await;
    let item = add_cart_item(&app, 4, 1, "user_a").await;
    insert_order(&app, "user_a", address["id"].as_i64().unwrap()).await;
    drain_outbox(&app).await;
    app.storefront(Method::DELETE, "/users/delete/user_a", None)
        .await
        .assert_error(409, "failed_precondition");
    assert_eq!(app.get("/users/get/user_a").await.body, user);
    assert_eq!(count_where_user(&app, "cart_items", "user_a").await, 1);
    assert_eq!(count_where_user(&app, "addresses", "user_a").await, 1);
    assert_eq!(
        app.get("/cart/all/user_a").await.body,
        json!({ "data": [item] })
    );
    assert_eq!(outbox_count(&app).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Addresses: GET
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_address_returns_exact_camel_case_fields() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    let added = add_address(&app, &address_body("user_a")).await;
    let id = added["id"].as_i64().expect("integer id");
    let response = app.get(&format!("/users/addresses/get/{id}")).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        json!({
            "id": id, "street": "1 Main Street", "city": "Toronto", "state": "ON",
            "country": "Canada", "zipCode": "M5V 2T6", "userId": "user_a"
        })
    );
}

#[tokio::test]
async fn get_unknown_address_is_404_and_non_integer_id_is_400() {
    let app = TestApp::new().await;
    app.get("/users/addresses/get/999")
        .await
        .assert_error(404, "not_found");
    app.get("/users/addresses/get/-2")
        .await
        .assert_error(404, "not_found");
    app.get("/users/addresses/get/home")
        .await
        .assert_error(400, "invalid_argument");
    app.storefront(
        Method::DELETE,
        "/users/addresses/delete/home/user/user_a",
        None,
    )
    .await
    .assert_error(400, "invalid_argument");
}

#[tokio::test]
async fn addresses_of_user_are_listed_by_id() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    add_user(&app, "user_b", "b@example.com").await;
    let first = add_address(&app, &address_body("user_a")).await;
    add_address(&app, &address_body("user_b")).await;
    let mut body = address_body("user_a");
    body["city"] = json!("Ottawa");
    let second = add_address(&app, &body).await;
    let response = app.get("/users/addresses/user/user_a").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, json!({ "data": [first, second] }));
    let ids = TestApp::ids(&response);
    assert!(ids[0] < ids[1], "{ids:?}");
}

#[tokio::test]
async fn addresses_of_unknown_user_is_an_empty_list_not_404() {
    let app = TestApp::new().await;
    let response = app.get("/users/addresses/user/nobody").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, json!({"data": []}));
    assert_eq!(response.raw, br#"{"data":[]}"#);
    add_user(&app, "user_a", "a@example.com").await;
    assert_eq!(
        app.get("/users/addresses/user/user_a").await.body,
        json!({"data": []})
    );
}

// ---------------------------------------------------------------------------------------------
// Addresses: POST /users/addresses/add
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn add_address_returns_the_address_and_writes_one_address_added_event() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    drain_outbox(&app).await;
    let mut body = address_body("user_a");
    body["id"] = json!(777); // ignored on creation
    body["note"] = json!("unknown keys are ignored");
    let response = app
        .storefront(Method::POST, "/users/addresses/add", Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let id = response.body["id"].as_i64().expect("integer id");
    assert_ne!(id, 777);
    let mut expected = address_body("user_a");
    expected["id"] = json!(id);
    assert_eq!(response.body, expected);
    assert_eq!(
        address_row(&app, id).await.as_ref().map(address_row_json),
        Some(expected.clone())
    );
    let events = drain_outbox(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_users_event(&events[0], "address_added", "user_a", None, &[expected]);
}

#[tokio::test]
async fn add_address_validation_messages_in_contract_order() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    drain_outbox(&app).await;
    let path = "/users/addresses/add";
    let mut body = json!({
        "street": "", "city": "", "state": "", "country": "", "zipCode": "", "userId": ""
    });
    for (field, value, next_message) in [
        ("street", "1 Main Street", "missing city"),
        ("city", "Toronto", "missing state"),
        ("state", "ON", "missing country"),
        ("country", "Canada", "missing zip code"),
        ("zipCode", "M5V 2T6", "invalid user ID"),
    ] {
        let message = app.invalid_argument(Method::POST, path, &body).await;
        assert!(
            message.starts_with("missing") || message == "invalid user ID",
            "{message}"
        );
        body[field] = json!(value);
        assert_eq!(
            app.invalid_argument(Method::POST, path, &body).await,
            next_message
        );
    }
    // the first message of an all-empty body
    let empty = json!({
        "street": " ", "city": "", "state": "", "country": "", "zipCode": "", "userId": ""
    });
    assert_eq!(
        app.invalid_argument(Method::POST, path, &empty).await,
        "missing street"
    );
    // validation comes before existence
    let mut body = address_body("user_x");
    body["zipCode"] = json!("");
    assert_eq!(
        app.invalid_argument(Method::POST, path, &body).await,
        "missing zip code"
    );
    assert_eq!(count_where_user(&app, "addresses", "user_a").await, 0);
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn add_address_missing_keys_get_the_same_messages_as_empty_values() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    drain_outbox(&app).await;
    for (field, expected) in [
        ("street", "missing street"),
        ("city", "missing city"),
        ("state", "missing state"),
        ("country", "missing country"),
        ("zipCode", "missing zip code"),
        ("userId", "invalid user ID"),
    ] {
        let mut body = address_body("user_a");
        body.as_object_mut().unwrap().remove(field);
        assert_eq!(
            app.invalid_argument(Method::POST, "/users/addresses/add", &body)
                .await,
            expected,
            "missing {field}"
        );
        body[field] = json!("");
        assert_eq!(
            app.invalid_argument(Method::POST, "/users/addresses/add", &body)
                .await,
            expected,
            "empty {field}"
        );
        body[field] = Value::Null;
        assert_eq!(
            app.invalid_argument(Method::POST, "/users/addresses/add", &body)
                .await,
            expected,
            "null {field}"
        );
    }
    assert_eq!(count_where_user(&app, "addresses", "user_a").await, 0);
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn add_address_for_an_unknown_user_is_rejected() {
    let app = TestApp::new().await;
    assert_eq!(
        app.invalid_argument(
            Method::POST,
            "/users/addresses/add",
            &address_body("user_x")
        )
        .await,
        "userId user_x does not exist"
    );
    assert_eq!(count_where_user(&app, "addresses", "user_x").await, 0);
    assert_eq!(outbox_count(&app).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Addresses: PUT /users/addresses/update
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn update_address_changes_fields_and_writes_one_address_updated_event() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    let address = add_address(&app, &address_body("user_a")).await;
    let id = address["id"].as_i64().unwrap();
    drain_outbox(&app).await;
    let body = json!({
        "id": id, "street": "99 Queen Street", "city": "Montreal", "state": "QC",
        "country": "Canada", "zipCode": "H2X 1Y4", "userId": "user_a"
    });
    let response = app
        .storefront(Method::PUT, "/users/addresses/update", Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, json!({ "id": id }));
    assert_eq!(
        address_row(&app, id).await.as_ref().map(address_row_json),
        Some(body.clone())
    );
    assert_eq!(
        app.get(&format!("/users/addresses/get/{id}")).await.body,
        body
    );
    let events = drain_outbox(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_users_event(&events[0], "address_updated", "user_a", None, &[body]);
}

#[tokio::test]
async fn update_address_validation_messages_start_with_the_address_id() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    let address = add_address(&app, &address_body("user_a")).await;
    let id = address["id"].as_i64().unwrap();
    drain_outbox(&app).await;
    let path = "/users/addresses/update";
    let mut body = json!({
        "street": "", "city": "", "state": "", "country": "", "zipCode": "", "userId": ""
    });
    assert_eq!(
        app.invalid_argument(Method::PUT, path, &body).await,
        "invalid address ID"
    );
    body["id"] = json!(0);
    assert_eq!(
        app.invalid_argument(Method::PUT, path, &body).await,
        "invalid address ID"
    );
    body["id"] = json!(-1);
    assert_eq!(
        app.invalid_argument(Method::PUT, path, &body).await,
        "invalid address ID"
    );
    body["id"] = json!(id);
    for (field, value, expected) in [
        ("street", "2 Main", "missing street"),
        ("city", "Toronto", "missing city"),
        ("state", "ON", "missing state"),
        ("country", "Canada", "missing country"),
        ("zipCode", "M5V", "missing zip code"),
        ("userId", "user_a", "invalid user ID"),
    ] {
        assert_eq!(
            app.invalid_argument(Method::PUT, path, &body).await,
            expected
        );
        body[field] = json!(value);
    }
    // the body is now valid except for an unknown user
    body["userId"] = json!("user_x");
    assert_eq!(
        app.invalid_argument(Method::PUT, path, &body).await,
        "userId user_x does not exist"
    );
    assert_eq!(
        address_row(&app, id).await.as_ref().map(address_row_json),
        Some(address)
    );
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn update_of_an_unknown_address_is_404() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    drain_outbox(&app).await;
    let mut body = address_body("user_a");
    body["id"] = json!(999);
    app.storefront(Method::PUT, "/users/addresses/update", Some(&body))
        .await
        .assert_error(404, "not_found");
    assert_eq!(count_where_user(&app, "addresses", "user_a").await, 0);
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn update_address_by_another_user_is_404_and_leaves_the_row_unchanged() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    add_user(&app, "user_b", "b@example.com").await;
    let address = add_address(&app, &address_body("user_a")).await;
    let id = address["id"].as_i64().unwrap();
    drain_outbox(&app).await;
    let mut body = address_body("user_b");
    body["id"] = json!(id);
    body["street"] = json!("Somewhere Else 5");
    app.storefront(Method::PUT, "/users/addresses/update", Some(&body))
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        address_row(&app, id).await.as_ref().map(address_row_json),
        Some(address.clone())
    );
    assert_eq!(
        app.get(&format!("/users/addresses/get/{id}")).await.body,
        address
    );
    assert_eq!(
        app.get("/users/addresses/user/user_b").await.body,
        json!({"data": []})
    );
    assert_eq!(outbox_count(&app).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Addresses: DELETE /users/addresses/delete/:address_id/user/:user_id
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn delete_address_returns_the_id_and_writes_one_address_deleted_event() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    let kept = add_address(&app, &address_body("user_a")).await;
    let address = add_address(&app, &address_body("user_a")).await;
    let id = address["id"].as_i64().unwrap();
    drain_outbox(&app).await;
    let path = format!("/users/addresses/delete/{id}/user/user_a");
    let response = app.storefront(Method::DELETE, &path, None).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, json!({ "id": id }));
    assert_eq!(address_row(&app, id).await, None);
    app.get(&format!("/users/addresses/get/{id}"))
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        app.get("/users/addresses/user/user_a").await.body,
        json!({ "data": [kept] })
    );
    let events = drain_outbox(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_users_event(&events[0], "address_deleted", "user_a", None, &[address]);
    // deleting again is 404 and writes nothing
    app.storefront(Method::DELETE, &path, None)
        .await
        .assert_error(404, "not_found");
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn delete_address_of_another_user_is_404_and_leaves_the_row_unchanged() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    add_user(&app, "user_b", "b@example.com").await;
    let address = add_address(&app, &address_body("user_a")).await;
    let id = address["id"].as_i64().unwrap();
    drain_outbox(&app).await;
    for path in [
        format!("/users/addresses/delete/{id}/user/user_b"),
        format!("/users/addresses/delete/{id}/user/user_x"),
        "/users/addresses/delete/999/user/user_a".to_owned(),
    ] {
        app.storefront(Method::DELETE, &path, None)
            .await
            .assert_error(404, "not_found");
    }
    assert_eq!(
        address_row(&app, id).await.as_ref().map(address_row_json),
        Some(address)
    );
    assert_eq!(outbox_count(&app).await, 0);
}

#[tokio::test]
async fn delete_address_used_by_an_order_is_409() {
    let app = TestApp::new().await;
    add_user(&app, "user_a", "a@example.com").await;
    let address = add_address(&app, &address_body("user_a")).await;
    let id = address["id"].as_i64().unwrap();
    insert_order(&app, "user_a", id).await;
    drain_outbox(&app).await;
    app.storefront(
        Method::DELETE,
        &format!("/users/addresses/delete/{id}/user/user_a"),
        None,
    )
    .await
    .assert_error(409, "failed_precondition");
    assert_eq!(
        address_row(&app, id).await.as_ref().map(address_row_json),
        Some(address.clone())
    );
    assert_eq!(
        app.get(&format!("/users/addresses/get/{id}")).await.body,
        address
    );
    assert_eq!(outbox_count(&app).await, 0);
    // ownership is checked before the conflict: another user gets 404, not 409
    add_user(&app, "user_b", "b@example.com").await;
    app.storefront(
        Method::DELETE,
        &format!("/users/addresses/delete/{id}/user/user_b"),
        None,
    )
    .await
    .assert_error(404, "not_found");
}

// ---------------------------------------------------------------------------------------------
// Cache (Redis)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn user_mutations_are_visible_immediately_with_redis() {
    let app = TestApp::with_redis().await;
    let a = add_user(&app, "user_a", "a@example.com").await;
    // warm
    assert_eq!(app.get("/users/get/user_a").await.body, a);
    assert_eq!(
        app.admin(Method::GET, "/users/all", None).await.body,
        json!({ "data": [a] })
    );
    assert!(redis_has(&app, "user-cache/user_a").await);
    assert!(redis_has(&app, "users-cache/all").await);
    // a 404 is not served stale after the user is created
    app.get("/users/get/user_b")
        .await
        .assert_error(404, "not_found");

    // add
    let b = add_user(&app, "user_b", "b@example.com").await;
    assert_eq!(app.get("/users/get/user_b").await.body, b);
    assert_eq!(
        app.admin(Method::GET, "/users/all", None).await.body,
        json!({ "data": [a, b] })
    );

    // update (both warm again)
    assert_eq!(app.get("/users/get/user_a").await.status, 200);
    assert!(redis_has(&app, "user-cache/user_a").await);
    assert!(redis_has(&app, "users-cache/all").await);
    let updated = json!({"id": "user_a", "firstName": "Grace", "lastName": "Hopper", "email": "g@example.com"});
    assert_eq!(
        app.storefront(Method::PUT, "/users/update", Some(&updated))
            .await
            .status,
        200
    );
    assert_eq!(app.get("/users/get/user_a").await.body, updated);
    assert_eq!(
        app.admin(Method::GET, "/users/all", None).await.body,
        json!({ "data": [updated, b] })
    );

    // delete (both warm again)
    assert_eq!(app.get("/users/get/user_a").await.status, 200);
    assert!(redis_has(&app, "user-cache/user_a").await);
    assert!(redis_has(&app, "users-cache/all").await);
    assert_eq!(
        app.storefront(Method::DELETE, "/users/delete/user_a", None)
            .await
            .status,
        200
    );
    app.get("/users/get/user_a")
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        app.admin(Method::GET, "/users/all", None).await.body,
        json!({ "data": [b] })
    );
}

#[tokio::test]
async fn address_mutations_are_visible_immediately_with_redis() {
    let app = TestApp::with_redis().await;
    add_user(&app, "user_a", "a@example.com").await;
    let first = add_address(&app, &address_body("user_a")).await;
    let id = first["id"].as_i64().unwrap();
    let address_path = format!("/users/addresses/get/{id}");
    // warm
    assert_eq!(app.get(&address_path).await.body, first);
    assert_eq!(
        app.get("/users/addresses/user/user_a").await.body,
        json!({ "data": [first] })
    );
    assert!(redis_has(&app, &format!("address-cache/{id}")).await);
    assert!(redis_has(&app, "user-addresses-cache/user_a").await);

    // add
    let mut body = address_body("user_a");
    body["city"] = json!("Ottawa");
    let second = add_address(&app, &body).await;
    assert_eq!(
        app.get("/users/addresses/user/user_a").await.body,
        json!({ "data": [first, second] })
    );
    assert_eq!(
        app.get(&format!("/users/addresses/get/{}", second["id"]))
            .await
            .body,
        second
    );

    // update (both warm again)
    assert_eq!(app.get(&address_path).await.status, 200);
    assert!(redis_has(&app, &format!("address-cache/{id}")).await);
    assert!(redis_has(&app, "user-addresses-cache/user_a").await);
    let mut updated = first.clone();
    updated["street"] = json!("500 Bay Street");
    assert_eq!(
        app.storefront(Method::PUT, "/users/addresses/update", Some(&updated))
            .await
            .status,
        200
    );
    assert_eq!(app.get(&address_path).await.body, updated);
    assert_eq!(
        app.get("/users/addresses/user/user_a").await.body,
        json!({ "data": [updated, second] })
    );

    // delete (both warm again)
    assert_eq!(app.get(&address_path).await.status, 200);
    assert!(redis_has(&app, &format!("address-cache/{id}")).await);
    assert!(redis_has(&app, "user-addresses-cache/user_a").await);
    assert_eq!(
        app.storefront(
            Method::DELETE,
            &format!("/users/addresses/delete/{id}/user/user_a"),
            None
        )
        .await
        .status,
        200
    );
    app.get(&address_path).await.assert_error(404, "not_found");
    assert_eq!(
        app.get("/users/addresses/user/user_a").await.body,
        json!({ "data": [second] })
    );
}

#[tokio::test]
async fn user_delete_empties_the_cached_cart_and_addresses_with_redis() {
    let app = TestApp::with_redis().await;
    add_user(&app, "user_a", "a@example.com").await;
    let address = add_address(&app, &address_body("user_a")).await;
    let item = add_cart_item(&app, 12, 2, "user_a").await;
    let address_path = format!("/users/addresses/get/{}", address["id"]);
    let item_path = format!("/cart/get/{}", item["id"]);
    // warm every entry the delete must invalidate
    assert_eq!(app.get(&address_path).await.body, address);
    assert_eq!(app.get(&item_path).await.body, item);
    assert_eq!(
        app.get("/users/addresses/user/user_a").await.body,
        json!({ "data": [address] })
    );
    assert_eq!(
        app.get("/cart/all/user_a").await.body,
        json!({ "data": [item] })
    );
    assert_eq!(app.get("/users/get/user_a").await.status, 200);
    for key in [
        "user-addresses-cache/user_a",
        "user-cart-items-cache/user_a",
        "user-cache/user_a",
    ] {
        assert!(redis_has(&app, key).await, "{key} cached");
    }

    assert_eq!(
        app.storefront(Method::DELETE, "/users/delete/user_a", None)
            .await
            .status,
        200
    );
    assert_eq!(app.get("/cart/all/user_a").await.body, json!({"data": []}));
    assert_eq!(
        app.get("/users/addresses/user/user_a").await.body,
        json!({"data": []})
    );
    app.get(&address_path).await.assert_error(404, "not_found");
    app.get(&item_path).await.assert_error(404, "not_found");
    app.get("/users/get/user_a")
        .await
        .assert_error(404, "not_found");
}

// ---------------------------------------------------------------------------------------------
// The frontend's flow
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn first_sign_in_flow_of_the_frontend() {
    let app = TestApp::with_redis().await;
    let user_id = "user_2nWqPk9";

    // first sign-in: the user is unknown, so the frontend creates it; the browser must be able to
    // read that 404 (CORS headers on errors too)
    let auth = format!("Bearer {}", app.storefront_key);
    let origin = "https://plamatio-frontend.vercel.app";
    let response = app
        .send(
            Method::GET,
            &format!("/users/get/{user_id}"),
            Some(&auth),
            None,
            &[("origin", origin)],
        )
        .await;
    response.assert_error(404, "not_found");
    assert_eq!(response.header("access-control-allow-origin"), Some(origin));
    let user = add_user(&app, user_id, "shopper@example.com").await;
    let response = app.get(&format!("/users/get/{user_id}")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, user);

    // shipping address
    let address = add_address(&app, &address_body(user_id)).await;
    assert_eq!(
        app.get(&format!("/users/addresses/user/{user_id}"))
            .await
            .body,
        json!({ "data": [address] })
    );

    // add to cart three times
    let cart_path = format!("/cart/all/{user_id}");
    assert_eq!(app.get(&cart_path).await.body, json!({"data": []}));
    let mug = add_cart_item(&app, 23, 1, user_id).await;
    let hoodie = add_cart_item(&app, 8, 1, user_id).await;
    let candle = add_cart_item(&app, 1, 2, user_id).await;
    assert_eq!(
        app.get(&cart_path).await.body,
        json!({ "data": [mug, hoodie, candle] })
    );

    // change a quantity
    let mut mug_updated = mug.clone();
    mug_updated["quantity"] = json!(3);
    let response = app
        .storefront(Method::PUT, "/cart/update", Some(&mug_updated))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, json!({"id": mug["id"]}));

    // merge the guest cart collected before signing in
    let guest = json!({"data": [
        {"product_id": 16, "quantity": 1, "user_id": user_id},
        {"product_id": 23, "quantity": 2, "user_id": user_id},
    ]});
    let response = app
        .storefront(Method::POST, "/cart/add/all", Some(&guest))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let merged = response.body["data"].as_array().unwrap().clone();
    assert_eq!(merged.len(), 2);
    assert_eq!(merged[0]["product_id"], 16);
    assert_eq!(merged[1]["product_id"], 23);

    // remove the hoodie
    let response = app
        .storefront(
            Method::DELETE,
            &format!("/cart/delete/{}/user/{user_id}", hoodie["id"]),
            None,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, json!({"id": hoodie["id"]}));

    // the final cart, exactly
    let expected = json!({ "data": [mug_updated, candle, merged[0], merged[1]] });
    assert_eq!(app.get(&cart_path).await.body, expected);
    let rows: Vec<(i64, i64, i32)> = sqlx::query_as(
        "SELECT id, product_id, quantity FROM cart_items WHERE user_id = $1 ORDER BY id",
    )
    .bind(user_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let products: Vec<(i64, i32)> = rows.iter().map(|row| (row.1, row.2)).collect();
    assert_eq!(products, vec![(23, 3), (1, 2), (16, 1), (23, 2)]);

    // one event per mutation: user, address, 3 adds, 1 update, 2 merged adds, 1 delete
    let kinds: Vec<String> = drain_outbox(&app)
        .await
        .into_iter()
        .map(|row| row.2)
        .collect();
    assert_eq!(
        kinds,
        vec![
            "user_created",
            "address_added",
            "cart_item_added",
            "cart_item_added",
            "cart_item_added",
            "cart_item_updated",
            "cart_item_added",
            "cart_item_added",
            "cart_item_deleted",
        ]
    );
}
