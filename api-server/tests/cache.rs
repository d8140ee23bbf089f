//! The cache against a real Redis: reads are served from Redis, mutations invalidate after commit,
//! and an unreachable Redis never fails a read.

use crate::common;

use axum::http::Method;
use common::cache::{redis_connection, redis_ttl};
use common::{CacheKind, TestApp};
use serde_json::json;

#[tokio::test]
async fn second_read_is_served_from_redis() {
    let app = TestApp::with_redis().await;
    let first = app.get("/products/get/7").await;
    assert_eq!(first.body["name"], "Llama Bonefire Notebook");

    // the entry is in Redis under the original key name, with the 24 h TTL
    let mut redis = redis_connection().await;
    let key = format!("{}product-cache/7", app.cache_prefix);
    let stored: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    // the value is the body alone, byte for byte what the answer carried (the format every version
    // reads, so replicas of two versions can share Redis during a rolling upgrade)
    let stored = stored.expect("cached in Redis");
    assert_eq!(stored, first.raw, "Redis holds exactly the served body");
    assert!(first.header("etag").is_some(), "an ETag");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((86_000..=86_400).contains(&ttl), "ttl {ttl}");

    // change the row behind the cache: the next read still answers from Redis
    sqlx::query("UPDATE products SET name = 'changed behind the cache' WHERE id = 7")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        app.get("/products/get/7").await.body["name"],
        "Llama Bonefire Notebook"
    );

    let metrics = app.state.metrics.render().unwrap();
    assert!(
        metrics.contains("cache_lookups_total{keyspace=\"product-cache\",result=\"hit\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cache_lookups_total{keyspace=\"product-cache\",result=\"miss\"} 1"),
        "{metrics}"
    );
}

/// During a rolling upgrade replicas of two versions share Redis: what an older replica stored (the
/// bare body) is served byte for byte, and both versions' answers carry one entity tag.
#[tokio::test]
async fn an_entry_stored_by_another_version_is_served_byte_for_byte() {
    let app = TestApp::with_redis().await;
    let first = app.get("/products/get/9").await;
    let etag = first.header("etag").expect("an ETag").to_owned();

    let mut redis = redis_connection().await;
    let key = format!("{}product-cache/9", app.cache_prefix);
    // what a replica of the other version stores: the bare body
    let mut store_as_other_version = async |body: &[u8]| {
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(body)
            .arg("EX")
            .arg(60)
            .query_async(&mut redis)
            .await
            .unwrap();
    };
    store_as_other_version(&first.raw).await;
    let again = app.get("/products/get/9").await;
    assert_eq!(again.raw, first.raw);
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    // a different body written by the other version is served as written, with its own tag
    let other = br#"{"id":9,"name":"written by the other version"}"#;
    store_as_other_version(&other[..]).await;
    let served = app.get("/products/get/9").await;
    assert_eq!(served.raw, other.to_vec());
    assert_ne!(served.header("etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn category_entries_use_the_two_hour_ttl() {
    let app = TestApp::with_redis().await;
    assert_eq!(app.get("/categories/all").await.status, 200);
    let ttl = redis_ttl(&app, "categories-cache/all").await;
    assert!((7_000..=7_200).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn product_update_invalidates_redis_entries_after_commit() {
    let app = TestApp::with_redis().await;
    for path in [
        "/products/get/9",
        "/products/all",
        "/products/category/1",
        "/products/subcategory/2",
    ] {
        assert_eq!(app.get(path).await.status, 200);
    }
    let body = json!({
        "name": "Llama Festival Hoodie", "description": "Hoodie.", "category": 1, "subCategory": 2,
        "imageUrl": "https://example.com/h.png", "price": 61
    });
    assert_eq!(
        app.admin(Method::PUT, "/products/update/9", Some(&body))
            .await
            .status,
        200
    );
    assert_eq!(
        app.get("/products/get/9").await.body["name"],
        "Llama Festival Hoodie"
    );
    assert_eq!(app.get("/products/all").await.body["data"][8]["price"], 61);
    assert_eq!(
        app.get("/products/category/1").await.body["data"][1]["name"],
        "Llama Festival Hoodie"
    );
    assert_eq!(
        app.get("/products/subcategory/2").await.body["data"][1]["name"],
        "Llama Festival Hoodie"
    );
}

#[tokio::test]
async fn unreachable_redis_never_fails_a_read() {
    // nothing listens on port 1
    let app = TestApp::with_cache(CacheKind::Redis("redis://127.0.0.1:1".into())).await;
    for _ in 0..3 {
        let response = app.get("/products/get/1").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.body["name"], "Llama Chinese Qipao Candle");
        assert_eq!(
            TestApp::ids(&app.get("/categories/all").await),
            vec![1, 2, 3]
        );
    }
    // mutations succeed too, and their result is read back from PostgreSQL
    let body = json!({
        "name": "Llama Lantern Candle", "description": "Candle.", "category": 2, "subCategory": 5,
        "imageUrl": "https://example.com/c.png", "price": 22
    });
    assert_eq!(
        app.admin(Method::PUT, "/products/update/1", Some(&body))
            .await
            .status,
        200
    );
    assert_eq!(
        app.get("/products/get/1").await.body["name"],
        "Llama Lantern Candle"
    );
    let ready = app.send(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(
        ready.status, 200,
        "a cache outage degrades, it does not fail readiness"
    );
    let metrics = app.state.metrics.render().unwrap();
    assert!(
        metrics.contains("cache_errors_total{keyspace=\"product-cache\",operation=\"get\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_configured_ttl_overrides_the_keyspace_ttls() {
    let app = TestApp::with_redis().await;
    app.state
        .cache
        .set_ttl_override(Some(std::time::Duration::from_secs(600)));
    assert_eq!(app.get("/products/get/3").await.status, 200);
    let ttl = redis_ttl(&app, "product-cache/3").await;
    assert!((590..=600).contains(&ttl), "ttl {ttl}");
}
