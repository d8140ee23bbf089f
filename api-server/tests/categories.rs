//! Categories and sub-categories against a real, seeded PostgreSQL.

use crate::common;

use common::TestApp;
use serde_json::json;

#[tokio::test]
async fn category_get_returns_the_seeded_row_with_exact_fields() {
    let app = TestApp::new().await;
    let response = app.get("/categories/get/3").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        json!({
            "id": 3, "name": "Drinkware", "offered": true,
            "description": "Llama inspired drinkware. Not just usable but also beautiful. Drink, Live, Laugh, Love."
        })
    );
}

#[tokio::test]
async fn categories_all_lists_three_by_id() {
    let app = TestApp::new().await;
    let response = app.get("/categories/all").await;
    assert_eq!(response.status, 200);
    assert_eq!(TestApp::ids(&response), vec![1, 2, 3]);
    assert_eq!(response.body["data"][1]["name"], "Accessories");
}

#[tokio::test]
async fn unknown_category_is_404_not_a_hard_coded_range() {
    let app = TestApp::new().await;
    sqlx::query("INSERT INTO categories (id, name, description) VALUES (40, 'Hats', 'Llama hats')")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.get("/categories/get/40").await.status, 200);
    let message = app
        .get("/categories/get/41")
        .await
        .assert_error(404, "not_found");
    assert_eq!(message, "category 41 not found");
    app.get("/categories/get/-1")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn non_integer_category_id_is_400() {
    let app = TestApp::new().await;
    app.get("/categories/get/abc")
        .await
        .assert_error(400, "invalid_argument");
    app.get("/categories/get/1.5")
        .await
        .assert_error(400, "invalid_argument");
    app.get("/categories/get/99999999999999999999")
        .await
        .assert_error(400, "invalid_argument");
}

#[tokio::test]
async fn sub_category_get_has_its_category() {
    let app = TestApp::new().await;
    let response = app.get("/categories/subcategories/get/9").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        json!({
            "id": 9, "name": "Mugs", "category": 3, "offered": true,
            "description": "Mugs to empower your mornings. And your evenings. And your nights."
        })
    );
    app.get("/categories/subcategories/get/11")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn sub_categories_all_lists_ten_by_id() {
    let app = TestApp::new().await;
    let response = app.get("/categories/subcategories/all").await;
    assert_eq!(TestApp::ids(&response), (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn sub_categories_of_a_category_by_id_and_empty_for_unknown() {
    let app = TestApp::new().await;
    let response = app.get("/categories/subcategories/category/2").await;
    assert_eq!(TestApp::ids(&response), vec![5, 6, 7]);
    let response = app.get("/categories/subcategories/category/77").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, json!({"data": []}));
    app.get("/categories/subcategories/category/x")
        .await
        .assert_error(400, "invalid_argument");
}
