//! Products against a real, seeded PostgreSQL: reads, search, admin mutations with their outbox
//! events and cache invalidation.

use crate::common;

use axum::http::Method;
use common::TestApp;
use common::outbox::outbox_rows;
use serde_json::{Value, json};

fn new_product() -> Value {
    json!({
        "name": "Llama Alpine Mug",
        "description": "Mug with a llama on a mountain pass.",
        "category": 3,
        "subCategory": 9,
        "imageUrl": "https://example.com/alpine.png",
        "price": 32
    })
}

#[tokio::test]
async fn product_get_returns_exact_camel_case_fields() {
    let app = TestApp::new().await;
    let response = app.get("/products/get/23").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        json!({
            "id": 23, "name": "Llama Arizona Mug",
            "description": "Mug with an adorable Llama surrounded by cacti and desert flowers.",
            "category": 3, "subCategory": 9,
            "imageUrl": "https://res.cloudinary.com/dbbfm4bbc/image/upload/v1724716144/texas_llama_mug_qhmaf8.png",
            "price": 35, "previousPrice": 40, "offered": true
        })
    );
}

#[tokio::test]
async fn unknown_product_is_404_and_bad_id_is_400() {
    let app = TestApp::new().await;
    assert_eq!(
        app.get("/products/get/26")
            .await
            .assert_error(404, "not_found"),
        "product 26 not found"
    );
    app.get("/products/get/-3")
        .await
        .assert_error(404, "not_found");
    app.get("/products/get/twelve")
        .await
        .assert_error(400, "invalid_argument");
}

#[tokio::test]
async fn products_all_lists_the_25_seeded_by_id() {
    let app = TestApp::new().await;
    let response = app.get("/products/all").await;
    assert_eq!(response.status, 200);
    assert_eq!(TestApp::ids(&response), (1..=25).collect::<Vec<_>>());
    assert_eq!(response.body["data"][7]["name"], "Llama Campfire Hoodie");
}

#[tokio::test]
async fn products_by_category_and_sub_category() {
    let app = TestApp::new().await;
    assert_eq!(
        TestApp::ids(&app.get("/products/category/3").await),
        (19..=25).collect::<Vec<_>>()
    );
    assert_eq!(
        TestApp::ids(&app.get("/products/subcategory/2").await),
        vec![8, 9, 10]
    );
    assert_eq!(
        app.get("/products/category/9").await.body,
        json!({"data": []})
    );
    assert_eq!(
        app.get("/products/subcategory/-1").await.body,
        json!({"data": []})
    );
}

#[tokio::test]
async fn hero_products_are_the_seeded_four() {
    let app = TestApp::new().await;
    assert_eq!(
        TestApp::ids(&app.get("/products/hero").await),
        vec![3, 4, 14, 23]
    );
}

#[tokio::test]
async fn category_hero_products_are_one_per_sub_category() {
    let app = TestApp::new().await;
    assert_eq!(
        TestApp::ids(&app.get("/products/hero/category/1").await),
        vec![8, 11, 13, 16]
    );
    assert_eq!(
        TestApp::ids(&app.get("/products/hero/category/2").await),
        vec![1, 4, 6]
    );
    assert_eq!(
        TestApp::ids(&app.get("/products/hero/category/3").await),
        vec![19, 21, 23]
    );
    assert_eq!(
        app.get("/products/hero/category/4").await.body,
        json!({"data": []})
    );
}

#[tokio::test]
async fn search_matches_name_and_description_case_insensitively_with_full_rows() {
    let app = TestApp::new().await;
    let response = app.get("/products/search/MUG").await;
    assert_eq!(response.status, 200);
    assert_eq!(TestApp::ids(&response), vec![23, 24, 25]);
    assert_eq!(response.body["data"][0]["previousPrice"], 40);
    assert_eq!(response.body["data"][0]["subCategory"], 9);
    // "cacti" appears only in a description
    assert_eq!(
        TestApp::ids(&app.get("/products/search/cacti").await),
        vec![23]
    );
    // percent-encoded space inside the query
    assert_eq!(
        TestApp::ids(&app.get("/products/search/moon%20shorts").await),
        vec![12]
    );
}

#[tokio::test]
async fn search_treats_percent_and_underscore_literally() {
    let app = TestApp::new().await;
    assert_eq!(
        app.get("/products/search/%25").await.body,
        json!({"data": []})
    );
    assert_eq!(
        app.get("/products/search/_").await.body,
        json!({"data": []})
    );
    assert_eq!(
        app.get("/products/search/%5C").await.body,
        json!({"data": []})
    );
    sqlx::query("UPDATE products SET name = 'Llama 100% Cotton_Tee' WHERE id = 17")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        TestApp::ids(&app.get("/products/search/0%25%20cotton_").await),
        vec![17]
    );
    assert_eq!(
        TestApp::ids(&app.get("/products/search/%25").await),
        vec![17]
    );
}

#[tokio::test]
async fn search_rejects_blank_and_overlong_queries() {
    let app = TestApp::new().await;
    let message = app
        .get("/products/search/%20%20")
        .await
        .assert_error(400, "invalid_argument");
    assert_eq!(message, "invalid search query");
    let long = "a".repeat(101);
    let message = app
        .get(&format!("/products/search/{long}"))
        .await
        .assert_error(400, "invalid_argument");
    assert_eq!(message, "invalid search query");
    assert_eq!(
        app.get(&format!("/products/search/{}", "a".repeat(100)))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn add_product_assigns_an_id_after_the_seed_and_writes_its_event() {
    let app = TestApp::new().await;
    let response = app
        .admin(Method::POST, "/products/add", Some(&new_product()))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.body,
        json!({
            "id": 26, "name": "Llama Alpine Mug", "description": "Mug with a llama on a mountain pass.",
            "category": 3, "subCategory": 9, "imageUrl": "https://example.com/alpine.png",
            "price": 32, "previousPrice": 32, "offered": true
        })
    );
    assert_eq!(app.get("/products/get/26").await.body, response.body);
    let events = outbox_rows(&app).await;
    assert_eq!(events.len(), 1);
    let (topic, key, event_type, payload) = &events[0];
    assert_eq!(
        (topic.as_str(), key.as_str(), event_type.as_str()),
        ("products_updates", "26", "product_created")
    );
    assert_eq!(payload["product"], response.body);
    assert_eq!(payload["event_type"], "product_created");
    assert!(uuid::Uuid::parse_str(payload["event_id"].as_str().unwrap()).is_ok());
    assert!(chrono::DateTime::parse_from_rfc3339(payload["occurred_at"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn add_product_honours_previous_price_and_offered() {
    let app = TestApp::new().await;
    let mut body = new_product();
    body["previousPrice"] = json!(45);
    body["offered"] = json!(false);
    let response = app.admin(Method::POST, "/products/add", Some(&body)).await;
    assert_eq!(response.body["previousPrice"], 45);
    assert_eq!(response.body["offered"], false);
}

async fn add_error(app: &TestApp, body: &Value) -> String {
    let response = app.admin(Method::POST, "/products/add", Some(body)).await;
    response.assert_error(400, "invalid_argument")
}

#[tokio::test]
async fn add_product_validation_messages_in_order() {
    let app = TestApp::new().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("name", json!(""), "product name is required"),
        ("name", json!("   "), "product name is required"),
        ("description", json!(""), "product description is required"),
        ("category", json!(9), "category 9 does not exist"),
        ("subCategory", json!(99), "sub-category 99 does not exist"),
        (
            "subCategory",
            json!(1),
            "sub-category 1 does not belong to category 3",
        ),
        ("imageUrl", json!(""), "product image URL is required"),
        ("price", json!(0), "product price must be greater than 0"),
        ("price", json!(-5), "product price must be greater than 0"),
        (
            "previousPrice",
            json!(-1),
            "previous price cannot be negative",
        ),
    ];
    for (field, value, expected) in cases {
        let mut body = new_product();
        body[field] = value;
        assert_eq!(add_error(&app, &body).await, expected, "field {field}");
    }
    // absent keys get the same message as empty values
    for (field, expected) in [
        ("name", "product name is required"),
        ("description", "product description is required"),
        ("category", "category 0 does not exist"),
        ("imageUrl", "product image URL is required"),
        ("price", "product price must be greater than 0"),
    ] {
        let mut body = new_product();
        body.as_object_mut().unwrap().remove(field);
        assert_eq!(add_error(&app, &body).await, expected, "missing {field}");
    }
    // the first failing rule wins
    let body = json!({"description": "", "price": 0});
    assert_eq!(add_error(&app, &body).await, "product name is required");
    assert_eq!(outbox_rows(&app).await.len(), 0);
    assert_eq!(TestApp::ids(&app.get("/products/all").await).len(), 25);
}

#[tokio::test]
async fn add_product_wrong_json_type_names_the_field() {
    let app = TestApp::new().await;
    let mut body = new_product();
    body["price"] = json!("32");
    let response = app.admin(Method::POST, "/products/add", Some(&body)).await;
    assert_eq!(
        response.assert_error(400, "invalid_argument"),
        "invalid value for price"
    );
    assert_eq!(response.body["details"]["field"], "price");
}

#[tokio::test]
async fn product_mutations_need_the_admin_scope() {
    let app = TestApp::new().await;
    let response = app
        .storefront(Method::POST, "/products/add", Some(&new_product()))
        .await;
    assert_eq!(
        response.assert_error(403, "permission_denied"),
        "this API key lacks the admin scope"
    );
    app.storefront(Method::PUT, "/products/update/1", Some(&new_product()))
        .await
        .assert_error(403, "permission_denied");
    app.storefront(Method::DELETE, "/products/delete/1", None)
        .await
        .assert_error(403, "permission_denied");
    assert_eq!(
        app.get("/products/get/1").await.body["name"],
        "Llama Chinese Qipao Candle"
    );
}

#[tokio::test]
async fn update_product_replaces_fields_and_404s_for_unknown_ids() {
    let app = TestApp::new().await;
    let response = app
        .admin(Method::PUT, "/products/update/5", Some(&new_product()))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["id"], 5);
    assert_eq!(response.body["name"], "Llama Alpine Mug");
    assert_eq!(response.body["category"], 3);
    assert_eq!(app.get("/products/get/5").await.body, response.body);
    let message = app
        .admin(Method::PUT, "/products/update/99", Some(&new_product()))
        .await
        .assert_error(404, "not_found");
    assert_eq!(message, "product 99 not found");
    // validation comes before existence
    let mut bad = new_product();
    bad["price"] = json!(0);
    app.admin(Method::PUT, "/products/update/99", Some(&bad))
        .await
        .assert_error(400, "invalid_argument");
    let events = outbox_rows(&app).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].2, "product_updated");
    assert_eq!(events[0].3["product"], response.body);
}

#[tokio::test]
async fn delete_product_removes_it_from_carts_and_hero_lists() {
    let app = TestApp::new().await;
    sqlx::query("INSERT INTO users (id, first_name, last_name, email) VALUES ('user_a', 'A', 'A', 'a@example.com')")
        .execute(&app.pool)
        .await
        .unwrap();
    let cart_id: i64 =
        sqlx::query_scalar("INSERT INTO cart_items (product_id, quantity, user_id) VALUES (23, 2, 'user_a') RETURNING id")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    // warm the caches that must be invalidated
    assert_eq!(
        TestApp::ids(&app.get("/products/hero").await),
        vec![3, 4, 14, 23]
    );
    assert_eq!(
        TestApp::ids(&app.get("/products/hero/category/3").await),
        vec![19, 21, 23]
    );
    assert_eq!(app.get("/products/get/23").await.status, 200);

    let response = app.admin(Method::DELETE, "/products/delete/23", None).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, json!({"id": 23}));

    app.get("/products/get/23")
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        TestApp::ids(&app.get("/products/hero").await),
        vec![3, 4, 14]
    );
    assert_eq!(
        TestApp::ids(&app.get("/products/hero/category/3").await),
        vec![19, 21]
    );
    assert!(!TestApp::ids(&app.get("/products/all").await).contains(&23));
    let carts: i64 = sqlx::query_scalar("SELECT count(*) FROM cart_items")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(carts, 0);

    let events = outbox_rows(&app).await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].0.as_str(), events[0].2.as_str()),
        ("products_updates", "product_deleted")
    );
    assert_eq!(events[0].3["product"]["name"], "Llama Arizona Mug");
    assert_eq!(
        (
            events[1].0.as_str(),
            events[1].1.as_str(),
            events[1].2.as_str()
        ),
        ("cart_updates", "user_a", "cart_item_deleted")
    );
    assert_eq!(
        events[1].3["cart_item"],
        json!({"id": cart_id, "product_id": 23, "quantity": 2, "user_id": "user_a"})
    );

    app.admin(Method::DELETE, "/products/delete/23", None)
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn delete_of_an_ordered_product_is_409_and_changes_nothing() {
    let app = TestApp::new().await;
    sqlx::raw_sql(
        "INSERT INTO users (id, first_name, last_name, email) VALUES ('u1', 'A', 'B', 'u1@example.com');
         INSERT INTO addresses (street, city, state, country, zip_code, user_id) VALUES ('1 Main', 'Town', 'ST', 'CA', 'A1A', 'u1');
         INSERT INTO orders (user_id, address_id, total_price, status) VALUES ('u1', 1, 25.5, 'pending');
         INSERT INTO order_items (order_id, product_id, quantity) VALUES (1, 2, 1);",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let message = app
        .admin(Method::DELETE, "/products/delete/2", None)
        .await
        .assert_error(409, "failed_precondition");
    assert_eq!(message, "product 2 is part of an order");
    assert_eq!(app.get("/products/get/2").await.status, 200);
    assert_eq!(outbox_rows(&app).await.len(), 0);
}

#[tokio::test]
async fn product_mutations_are_visible_in_every_cached_list_immediately() {
    let app = TestApp::new().await;
    // warm every list the update below affects
    let lists = [
        "/products/all",
        "/products/category/2",
        "/products/category/3",
        "/products/subcategory/6",
        "/products/subcategory/9",
        "/products/hero",
        "/products/hero/category/2",
        "/products/get/4",
    ];
    for path in lists {
        assert_eq!(app.get(path).await.status, 200);
    }
    // product 4 is a store hero and the hero of category 2; move it to Drinkware/Mugs
    let response = app
        .admin(Method::PUT, "/products/update/4", Some(&new_product()))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        app.get("/products/get/4").await.body["name"],
        "Llama Alpine Mug"
    );
    let all = app.get("/products/all").await;
    assert_eq!(all.body["data"][3]["name"], "Llama Alpine Mug");
    assert!(!TestApp::ids(&app.get("/products/category/2").await).contains(&4));
    assert!(TestApp::ids(&app.get("/products/category/3").await).contains(&4));
    assert!(!TestApp::ids(&app.get("/products/subcategory/6").await).contains(&4));
    assert!(TestApp::ids(&app.get("/products/subcategory/9").await).contains(&4));
    assert_eq!(
        app.get("/products/hero").await.body["data"][1]["name"],
        "Llama Alpine Mug"
    );
    assert_eq!(
        app.get("/products/hero/category/2").await.body["data"][1]["name"],
        "Llama Alpine Mug"
    );

    let added = app
        .admin(Method::POST, "/products/add", Some(&new_product()))
        .await;
    let id = added.body["id"].as_i64().unwrap();
    assert!(TestApp::ids(&app.get("/products/all").await).contains(&id));
    assert!(TestApp::ids(&app.get("/products/category/3").await).contains(&id));
    assert!(TestApp::ids(&app.get("/products/subcategory/9").await).contains(&id));
}
