//! The in-process tier in front of Redis, with two replicas (two stores built as `serve` builds
//! them, on one database and one Redis): a write through one is seen by the other once Redis'
//! invalidation broadcast arrives; losing the tracking connection clears the in-process tier; an
//! unreachable Redis leaves the in-process tier serving short-lived entries.

use crate::common;

use std::time::Duration;

use axum::http::Method;
use common::{TestApp, free_port, new_database_name, redis_url, wait_until};
use plamatio_api::cache::{CacheKey, PRODUCT_TTL};
use serde_json::json;

fn product_key(id: i64) -> CacheKey {
    CacheKey::new("product-cache", id, PRODUCT_TTL)
}

async fn tracking_replica(database: &str) -> TestApp {
    let url = redis_url();
    let app = TestApp::serving(database, &["--redis-url", url.as_str()]).await;
    let cache = app.state.cache.clone();
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "invalidation tracking is established",
        || {
            let cache = cache.clone();
            async move { cache.tracking_established() }
        },
    )
    .await;
    app
}

/// Reads until the in-process tier holds the entry (a replica's own fill is broadcast back to it
/// and drops its first copy; the next read keeps the one it gets from Redis).
async fn read_into_process(app: &TestApp, path: &str, key: &CacheKey) {
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(10),
        "the entry is held in-process",
        || async {
            assert_eq!(app.get(path).await.status, 200);
            app.state.cache.holds_in_process(key)
        },
    )
    .await;
}

fn renamed(name: &str) -> serde_json::Value {
    json!({
        "name": name,
        "description": "A notebook renamed on another replica.",
        "category": 1,
        "subCategory": 1,
        "imageUrl": "https://example.com/n.png",
        "price": 12
    })
}

#[tokio::test]
async fn a_write_through_one_replica_is_seen_by_the_other() {
    let database = new_database_name();
    let a = tracking_replica(&database).await;
    let b = tracking_replica(&database).await;
    assert_eq!(a.state.cache.namespace(), b.state.cache.namespace());
    assert_eq!(a.state.cache.backend_name(), "redis+memory");

    read_into_process(&b, "/products/get/7", &product_key(7)).await;
    read_into_process(
        &b,
        "/products/all",
        &CacheKey::new("products-cache", "all", PRODUCT_TTL),
    )
    .await;
    // B answers from its own memory: a change behind both caches is not seen
    sqlx::query("UPDATE products SET name = 'changed behind the cache' WHERE id = 7")
        .execute(&b.pool)
        .await
        .unwrap();
    assert_eq!(
        b.get("/products/get/7").await.body["name"],
        "Llama Bonefire Notebook"
    );

    let updated = a
        .admin(
            Method::PUT,
            "/products/update/7",
            Some(&renamed("Renamed on A")),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    // the replica that wrote shows it at once
    assert_eq!(a.get("/products/get/7").await.body["name"], "Renamed on A");
    // the other one once the broadcast arrived
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(5),
        "replica B shows the write made through replica A",
        || async {
            let one = b.get("/products/get/7").await.body["name"] == "Renamed on A";
            let all = b.get("/products/all").await.body["data"]
                .as_array()
                .is_some_and(|products| {
                    products
                        .iter()
                        .any(|product| product["id"] == 7 && product["name"] == "Renamed on A")
                });
            one && all
        },
    )
    .await;
}

async fn kill_client(name: &str) {
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut connection)
        .await
        .unwrap();
    let needle = format!(" name={name} ");
    let id = list
        .lines()
        .find(|line| line.contains(&needle))
        .and_then(|line| line.strip_prefix("id="))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no client named {name} in {list}"))
        .to_owned();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(killed, 1);
}

#[tokio::test]
async fn losing_the_tracking_connection_clears_the_in_process_tier() {
    let database = new_database_name();
    let app = tracking_replica(&database).await;
    read_into_process(&app, "/products/get/7", &product_key(7)).await;
    let name = app
        .state
        .cache
        .tracking_client_name()
        .expect("a tracking connection")
        .to_owned();

    kill_client(&name).await;
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(5),
        "the in-process entry is dropped",
        || async { !app.state.cache.holds_in_process(&product_key(7)) },
    )
    .await;
    // tracking comes back by itself, and reads fill the in-process tier again
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "tracking is established again",
        || async { app.state.cache.tracking_established() },
    )
    .await;
    read_into_process(&app, "/products/get/7", &product_key(7)).await;
}

#[tokio::test]
async fn without_redis_the_in_process_tier_serves_short_lived_entries() {
    let database = new_database_name();
    let unreachable = format!("redis://127.0.0.1:{}", free_port());
    let app = TestApp::serving(&database, &["--redis-url", unreachable.as_str()]).await;
    assert!(!app.state.cache.tracking_established());
    assert_eq!(
        app.get("/products/get/7").await.body["name"],
        "Llama Bonefire Notebook"
    );
    assert!(app.state.cache.holds_in_process(&product_key(7)));
    sqlx::query("UPDATE products SET name = 'changed behind the cache' WHERE id = 7")
        .execute(&app.pool)
        .await
        .unwrap();
    // served from memory while the entry lives...
    let second = app.get("/products/get/7").await;
    assert_eq!(second.status, 200);
    // ...which is at most a second without tracking
    wait_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        "the short-lived entry expires",
        || async { app.get("/products/get/7").await.body["name"] == "changed behind the cache" },
    )
    .await;
}

fn redis_server(port: u16) -> std::process::Child {
    std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("this test needs `redis-server` on PATH")
}

#[tokio::test]
async fn tracking_comes_back_after_redis_restarts() {
    let port = free_port();
    let mut redis = redis_server(port);
    let url = format!("redis://127.0.0.1:{port}");
    let cache = plamatio_api::cache::Cache::redis_with_memory_tier(
        &url,
        "restart:",
        Duration::from_millis(200),
        1024 * 1024,
        plamatio_api::metrics::Metrics::new().unwrap(),
    )
    .unwrap();
    let established = |cache: &plamatio_api::cache::Cache, wanted: bool, what: &'static str| {
        let cache = cache.clone();
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(20),
            what,
            move || {
                let cache = cache.clone();
                async move { cache.tracking_established() == wanted }
            },
        )
    };
    established(&cache, true, "tracking starts").await;
    redis.kill().unwrap();
    redis.wait().unwrap();
    established(&cache, false, "tracking is lost").await;
    let mut redis = redis_server(port);
    established(&cache, true, "tracking is back").await;
    redis.kill().unwrap();
    redis.wait().unwrap();
}
