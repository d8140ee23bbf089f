//! The attack suite of issue #16 (HTTP edge): each test performs one attack against a store built
//! exactly as `plamatio-api serve` builds it (or the binary itself), on real PostgreSQL and Redis, and
//! asserts that it fails. The storefront key is public (it ships in the browser bundle) and user ids
//! are not secret, so every attacker here holds both.

mod common;

use axum::http::Method;
use common::{TestApp, new_database_name};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Item 9: cache isolation

/// Store A caches its rows; store B, a fresh database sharing A's Redis (and A's prefix, if any),
/// asks for the same ids — as a new user of B would — and must get its own rows, never A's.
#[tokio::test]
async fn cache_entries_of_another_database_are_never_served() {
    let redis = common::redis_url();
    let shared_prefix = format!("shop-{}:", uuid::Uuid::new_v4().simple());
    for prefix in ["", shared_prefix.as_str()] {
        let flags = ["--redis-url", redis.as_str(), "--cache-prefix", prefix];
        let store_a = TestApp::serving(&new_database_name(), &flags).await;
        let store_b = TestApp::serving(&new_database_name(), &flags).await;
        sqlx::raw_sql(
            "INSERT INTO users (id, first_name, last_name, email) VALUES ('user_a', 'Ada', 'A', 'a@example.com');
             INSERT INTO cart_items (product_id, quantity, user_id) VALUES (1, 1, 'user_a'), (2, 5, 'user_a');",
        )
        .execute(&store_a.pool)
        .await
        .unwrap();
        let cart_row = store_a.get("/cart/get/2").await;
        assert_eq!(cart_row.body["user_id"], "user_a", "prefix {prefix:?}");
        assert_eq!(
            TestApp::ids(&store_a.get("/cart/all/user_a").await),
            vec![1, 2]
        );
        assert_eq!(store_a.get("/users/get/user_a").await.status, 200);
        let renamed = json!({
            "name": "Renamed in store A", "description": "A.", "category": 1, "subCategory": 2,
            "imageUrl": "https://example.com/a.png", "price": 11
        });
        assert_eq!(
            store_a
                .admin(Method::PUT, "/products/update/9", Some(&renamed))
                .await
                .status,
            200
        );
        assert_eq!(
            store_a.get("/products/get/9").await.body["name"],
            "Renamed in store A"
        );

        // store B has none of these rows
        let response = store_b.get("/cart/get/2").await;
        assert_eq!(
            response.status, 404,
            "prefix {prefix:?}: B served A's cart row {}",
            response.body
        );
        assert_eq!(
            store_b.get("/cart/all/user_a").await.body["data"],
            json!([]),
            "prefix {prefix:?}"
        );
        assert_eq!(
            store_b.get("/users/get/user_a").await.status,
            404,
            "prefix {prefix:?}"
        );
        let own_name: String = sqlx::query_scalar("SELECT name FROM products WHERE id = 9")
            .fetch_one(&store_b.pool)
            .await
            .unwrap();
        assert_eq!(
            store_b.get("/products/get/9").await.body["name"],
            own_name,
            "prefix {prefix:?}"
        );
        assert_ne!(store_a.cache_prefix, store_b.cache_prefix);
        assert!(store_a.cache_prefix.starts_with(prefix));
    }
}

/// A database dropped and created again under the same name, while Redis keeps the old entries, is
/// a new store: none of the old rows come back from the cache.
#[tokio::test]
async fn a_recreated_database_does_not_see_the_old_databases_entries() {
    let redis = common::redis_url();
    let database = new_database_name();
    let flags = ["--redis-url", redis.as_str()];
    {
        let old = TestApp::serving(&database, &flags).await;
        sqlx::raw_sql(
            "INSERT INTO users (id, first_name, last_name, email) VALUES ('user_old', 'Old', 'O', 'old@example.com');
             INSERT INTO cart_items (product_id, quantity, user_id) VALUES (1, 1, 'user_old'), (2, 2, 'user_old');",
        )
        .execute(&old.pool)
        .await
        .unwrap();
        assert_eq!(old.get("/cart/get/2").await.status, 200);
        assert_eq!(old.get("/users/get/user_old").await.status, 200);
        assert_eq!(TestApp::ids(&old.get("/cart/all/user_old").await).len(), 2);
    } // the database is dropped here; Redis keeps its entries
    let recreated = TestApp::serving(&database, &flags).await;
    assert_eq!(recreated.get("/cart/get/2").await.status, 404);
    assert_eq!(recreated.get("/users/get/user_old").await.status, 404);
    assert_eq!(
        recreated.get("/cart/all/user_old").await.body["data"],
        json!([])
    );
}
