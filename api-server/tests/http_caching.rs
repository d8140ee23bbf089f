//! Conditional GETs and `Cache-Control`: every cached read carries the strong `ETag` stored with its
//! cache entry, `If-None-Match` with it answers 304 without a body, a mutation changes the tag, a
//! compressed answer has a tag of its own, and each route family says who may keep its answers.

use crate::common;

use axum::http::Method;
use common::{TestApp, TestResponse};
use serde_json::json;

async fn get_if_none_match(app: &TestApp, path: &str, etag: &str) -> TestResponse {
    let auth = format!("Bearer {}", app.storefront_key);
    app.send(
        Method::GET,
        path,
        Some(&auth),
        None,
        &[("if-none-match", etag)],
    )
    .await
}

fn etag_of(response: &TestResponse) -> String {
    let etag = response.header("etag").expect("an ETag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "strong tag: {etag}"
    );
    etag
}

#[tokio::test]
async fn a_cached_read_answers_304_to_its_own_etag() {
    let app = TestApp::new().await;
    for path in [
        "/products/get/7",
        "/products/all",
        "/products/hero",
        "/categories/all",
        "/categories/get/1",
    ] {
        let first = app.get(path).await;
        assert_eq!(first.status, 200, "{path}");
        let etag = etag_of(&first);
        // served from the cache this time: the same entry, the same tag
        let second = app.get(path).await;
        assert_eq!(etag_of(&second), etag, "{path}");
        assert_eq!(second.raw, first.raw, "{path}");

        let revalidated = get_if_none_match(&app, path, &etag).await;
        assert_eq!(revalidated.status, 304, "{path}");
        assert!(revalidated.raw.is_empty(), "{path}: 304 has no body");
        assert_eq!(revalidated.header("etag"), Some(etag.as_str()), "{path}");
        assert_eq!(
            revalidated.header("cache-control"),
            Some("public, max-age=30"),
            "{path}"
        );

        let other = get_if_none_match(&app, path, "\"0123456789abcdef0123456789abcdef\"").await;
        assert_eq!(other.status, 200, "{path}");
        assert_eq!(other.raw, first.raw, "{path}");
    }
}

#[tokio::test]
async fn a_mutation_changes_the_etag() {
    let app = TestApp::new().await;
    let before = app.get("/products/get/7").await;
    let etag = etag_of(&before);
    let list_etag = etag_of(&app.get("/products/all").await);
    let updated = app
        .admin(
            Method::PUT,
            "/products/update/7",
            Some(&json!({
                "name": "Renamed Notebook",
                "description": "Same notebook, new name.",
                "category": 1,
                "subCategory": 1,
                "imageUrl": "https://example.com/n.png",
                "price": 12
            })),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);

    let after = get_if_none_match(&app, "/products/get/7", &etag).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.body["name"], "Renamed Notebook");
    assert_ne!(etag_of(&after), etag);
    let list = get_if_none_match(&app, "/products/all", &list_etag).await;
    assert_eq!(list.status, 200);
    assert_ne!(etag_of(&list), list_etag);
}

#[tokio::test]
async fn a_compressed_answer_has_a_tag_of_its_own() {
    let app = TestApp::new().await;
    let auth = format!("Bearer {}", app.storefront_key);
    let plain = app.get("/products/all").await;
    let plain_etag = etag_of(&plain);
    let gzip = app
        .send(
            Method::GET,
            "/products/all",
            Some(&auth),
            None,
            &[("accept-encoding", "gzip")],
        )
        .await;
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    let gzip_etag = etag_of(&gzip);
    assert_eq!(
        gzip_etag,
        format!("{}-gzip\"", plain_etag.trim_end_matches('"'))
    );
    let revalidated = app
        .send(
            Method::GET,
            "/products/all",
            Some(&auth),
            None,
            &[("accept-encoding", "gzip"), ("if-none-match", &gzip_etag)],
        )
        .await;
    assert_eq!(revalidated.status, 304);
    assert!(revalidated.raw.is_empty());
    assert_eq!(revalidated.header("etag"), Some(gzip_etag.as_str()));
}

#[tokio::test]
async fn a_wrong_key_gets_401_even_with_a_valid_etag() {
    let app = TestApp::new().await;
    let etag = etag_of(&app.get("/products/get/7").await);
    let response = app
        .send(
            Method::GET,
            "/products/get/7",
            Some("Bearer not-a-key"),
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    response.assert_error(401, "unauthenticated");
}

#[tokio::test]
async fn shopper_data_is_private_and_service_endpoints_are_not_stored() {
    let app = TestApp::new().await;
    sqlx::raw_sql(
        "INSERT INTO users (id, first_name, last_name, email) VALUES ('user_a', 'Ada', 'A', 'a@example.com');
         INSERT INTO cart_items (product_id, quantity, user_id) VALUES (1, 1, 'user_a');",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    for path in ["/cart/all/user_a", "/cart/get/1", "/users/get/user_a"] {
        let response = app.get(path).await;
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        assert_eq!(
            response.header("cache-control"),
            Some("private, no-cache"),
            "{path}"
        );
        let etag = etag_of(&response);
        assert_eq!(
            get_if_none_match(&app, path, &etag).await.status,
            304,
            "{path}"
        );
    }
    for path in ["/healthz", "/metrics"] {
        let response = app.send(Method::GET, path, None, None, &[]).await;
        assert_eq!(response.header("cache-control"), Some("no-store"), "{path}");
    }
    // errors and mutations are never stored either
    let missing = app.get("/products/get/999999").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("cache-control"), Some("no-store"));
    let deleted = app.admin(Method::DELETE, "/products/delete/25", None).await;
    assert_eq!(deleted.header("cache-control"), Some("no-store"));
}
