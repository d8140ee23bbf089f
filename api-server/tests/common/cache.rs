//! The test Redis as tests read it: whether an entry of an app's cache is there.

use super::{TestApp, redis_url};

/// A connection to the test Redis; fails the test with the address when Redis is not running.
pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).expect("redis url");
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|error| {
            panic!("Redis is required for these tests and is not reachable at {url}: {error}")
        })
}

/// Whether Redis holds `key` (e.g. `product-cache/7`) in the app's namespace.
pub async fn redis_has(app: &TestApp, key: &str) -> bool {
    let mut redis = redis_connection().await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{}{key}", app.cache_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    exists == 1
}

/// The seconds `key` (in the app's namespace) has left to live in Redis (`-2` when absent).
pub async fn redis_ttl(app: &TestApp, key: &str) -> i64 {
    let mut redis = redis_connection().await;
    redis::cmd("TTL")
        .arg(format!("{}{key}", app.cache_prefix))
        .query_async(&mut redis)
        .await
        .unwrap()
}
