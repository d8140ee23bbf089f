//! The read cache: one API (`get`, `put`, `invalidate`, `get_or_load`) over two backends, Redis
//! (shared by every replica) and an in-process bounded cache (moka) when no Redis is configured.
//!
//! Values are the serialized JSON response bodies, so a hit is answered without touching the
//! database or the serializer. The cache is an optimisation only: every failure is logged, counted in
//! `cache_errors_total` and treated as a miss; a slow Redis is cut off by a timeout, and after a
//! failure Redis is bypassed for a short while so an outage costs requests nothing.
//!
//! Invalidation runs after the transaction commits. Keys whose deletion failed are retried in the
//! background until Redis answers. A reader that loaded the old row before a commit must not store it
//! after the invalidation: within one process, a load that overlapped any invalidation does not store
//! its result; across replicas, every invalidation is repeated once shortly afterwards.
//!
//! Every key starts with the store's [`namespace`]: the configured prefix and the store's id, kept in
//! its database. Key names alone (`cart-cache/2`) say nothing about which database a row came from,
//! so without the id two stores sharing one Redis, or a database recreated while Redis kept its
//! entries, would serve each other's rows.

pub mod keys;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

/// Time to live of product entries.
pub const PRODUCT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Time to live of every other entry.
pub const DEFAULT_TTL: Duration = Duration::from_secs(2 * 3600);

/// How long Redis is bypassed after it failed.
const REDIS_BACKOFF: Duration = Duration::from_secs(1);
/// Delay of the second, race-closing invalidation.
const REINVALIDATE_AFTER: Duration = Duration::from_millis(500);
/// Upper bound of keys remembered for a retried invalidation.
const MAX_PENDING_INVALIDATIONS: usize = 100_000;

/// The namespace every key of a store starts with: `PLAMATIO_CACHE_PREFIX`, then the store's id
/// (see [`crate::db::store_id`]), e.g. `shop-a:0193…:` + `product-cache/7`.
pub fn namespace(prefix: &str, store_id: uuid::Uuid) -> String {
    format!("{prefix}{store_id}:")
}

/// A cache key: its keyspace (the part before the first `/`, used for metrics), full name and TTL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    keyspace: &'static str,
    name: String,
    ttl: Duration,
}

impl CacheKey {
    /// `keyspace/suffix`, e.g. `CacheKey::new("product-cache", 7, PRODUCT_TTL)` → `product-cache/7`.
    pub fn new(keyspace: &'static str, suffix: impl std::fmt::Display, ttl: Duration) -> CacheKey {
        CacheKey {
            keyspace,
            name: format!("{keyspace}/{suffix}"),
            ttl,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn keyspace(&self) -> &'static str {
        self.keyspace
    }
}

#[derive(Clone)]
struct MemoryEntry {
    value: Bytes,
    ttl: Duration,
}

struct EntryTtl;

impl Expiry<String, MemoryEntry> for EntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &MemoryEntry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &MemoryEntry,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

enum Backend {
    Redis(RedisBackend),
    Memory(moka::future::Cache<String, MemoryEntry>),
}

struct RedisBackend {
    connection: ConnectionManager,
    timeout: Duration,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not tried again.
    bypass_until_ms: AtomicU64,
    pending_invalidations: Mutex<HashSet<String>>,
}

#[derive(Debug, thiserror::Error)]
enum CacheFailure {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis is bypassed after a recent failure")]
    Bypassed,
}

impl RedisBackend {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn bypassed(&self) -> bool {
        self.now_ms() < self.bypass_until_ms.load(Ordering::Relaxed)
    }

    async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, CacheFailure> {
        if self.bypassed() {
            return Err(CacheFailure::Bypassed);
        }
        let mut connection = self.connection.clone();
        let outcome = tokio::time::timeout(self.timeout, command.query_async::<T>(&mut connection))
            .await
            .map_err(|_| CacheFailure::Timeout(self.timeout))
            .and_then(|result| result.map_err(CacheFailure::from));
        if outcome.is_err() {
            let until = self.now_ms() + u64::try_from(REDIS_BACKOFF.as_millis()).unwrap_or(1000);
            self.bypass_until_ms.store(until, Ordering::Relaxed);
        }
        outcome
    }

    fn remember_failed_invalidation(&self, names: &[String]) {
        let Ok(mut pending) = self.pending_invalidations.lock() else {
            return;
        };
        for name in names {
            if pending.len() >= MAX_PENDING_INVALIDATIONS {
                tracing::error!(
                    limit = MAX_PENDING_INVALIDATIONS,
                    "too many cache invalidations waiting for Redis; some entries may stay stale until their TTL"
                );
                break;
            }
            pending.insert(name.clone());
        }
    }

    fn take_pending(&self) -> Vec<String> {
        match self.pending_invalidations.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// The cache handle shared by all requests (cheap to clone).
#[derive(Clone)]
pub struct Cache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    backend: Backend,
    /// Start of every key: the configured prefix and the store's id.
    namespace: String,
    metrics: Metrics,
    /// Bumped by every invalidation: a load that overlapped one does not store its result.
    invalidations: AtomicU64,
    /// When non-zero, the TTL of every entry in seconds (`PLAMATIO_CACHE_TTL_SECONDS`).
    ttl_override_seconds: AtomicU64,
}

impl Cache {
    /// A Redis-backed cache whose keys all start with `namespace` (see [`namespace`]). The
    /// connection is made lazily, so a Redis that is down at start-up only makes every look-up a miss
    /// until it comes up.
    pub fn redis(
        url: &str,
        namespace: &str,
        timeout: Duration,
        metrics: Metrics,
    ) -> Result<Cache, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        let cache = Cache {
            inner: Arc::new(CacheInner {
                backend: Backend::Redis(RedisBackend {
                    connection,
                    timeout,
                    started: Instant::now(),
                    bypass_until_ms: AtomicU64::new(0),
                    pending_invalidations: Mutex::new(HashSet::new()),
                }),
                namespace: namespace.to_owned(),
                metrics,
                invalidations: AtomicU64::new(0),
                ttl_override_seconds: AtomicU64::new(0),
            }),
        };
        cache.spawn_invalidation_retry();
        Ok(cache)
    }

    /// An in-process cache bounded to `max_bytes` of values, its keys starting with `namespace`.
    pub fn memory(max_bytes: u64, namespace: &str, metrics: Metrics) -> Cache {
        let store = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &MemoryEntry| {
                u32::try_from(key.len() + entry.value.len()).unwrap_or(u32::MAX)
            })
            .expire_after(EntryTtl)
            .build();
        Cache {
            inner: Arc::new(CacheInner {
                backend: Backend::Memory(store),
                namespace: namespace.to_owned(),
                metrics,
                invalidations: AtomicU64::new(0),
                ttl_override_seconds: AtomicU64::new(0),
            }),
        }
    }

    /// Makes every entry live `ttl` instead of its keyspace's TTL (`None`: the keyspace TTLs).
    pub fn set_ttl_override(&self, ttl: Option<Duration>) {
        let seconds = ttl.map(|t| t.as_secs().max(1)).unwrap_or(0);
        self.inner
            .ttl_override_seconds
            .store(seconds, Ordering::Relaxed);
    }

    fn ttl_of(&self, key: &CacheKey) -> Duration {
        match self.inner.ttl_override_seconds.load(Ordering::Relaxed) {
            0 => key.ttl,
            seconds => Duration::from_secs(seconds),
        }
    }

    /// What every key of this cache starts with.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    pub fn backend_name(&self) -> &'static str {
        match self.inner.backend {
            Backend::Redis(_) => "redis",
            Backend::Memory(_) => "memory",
        }
    }

    fn full_name(&self, key: &CacheKey) -> String {
        format!("{}{}", self.inner.namespace, key.name)
    }

    fn record_error(&self, key: &CacheKey, operation: &'static str, failure: &CacheFailure) {
        self.inner
            .metrics
            .cache_errors
            .with_label_values(&[key.keyspace, operation])
            .inc();
        if !matches!(failure, CacheFailure::Bypassed) {
            tracing::warn!(key = %key.name, operation, error = %failure, "cache operation failed");
        }
    }

    /// The cached value, or `None` on a miss or any cache failure.
    #[tracing::instrument(name = "cache.get", skip_all, fields(otel.kind = "client", cache.key = %key.name, cache.hit = tracing::field::Empty))]
    pub async fn get(&self, key: &CacheKey) -> Option<Bytes> {
        let name = self.full_name(key);
        let outcome = match &self.inner.backend {
            Backend::Memory(store) => Ok(store.get(&name).await.map(|entry| entry.value)),
            Backend::Redis(redis) => redis
                .run::<Option<Vec<u8>>>(redis::cmd("GET").arg(&name).clone())
                .await
                .map(|value| value.map(Bytes::from)),
        };
        let result = match &outcome {
            Ok(Some(_)) => "hit",
            Ok(None) => "miss",
            Err(failure) => {
                self.record_error(key, "get", failure);
                "error"
            }
        };
        tracing::Span::current().record("cache.hit", result == "hit");
        self.inner
            .metrics
            .cache_lookups
            .with_label_values(&[key.keyspace, result])
            .inc();
        outcome.ok().flatten()
    }

    /// Stores a value under the key with the key's TTL; failures are logged and counted.
    #[tracing::instrument(name = "cache.put", skip_all, fields(otel.kind = "client", cache.key = %key.name))]
    pub async fn put(&self, key: &CacheKey, value: Bytes) {
        let name = self.full_name(key);
        match &self.inner.backend {
            Backend::Memory(store) => {
                store
                    .insert(
                        name,
                        MemoryEntry {
                            value,
                            ttl: self.ttl_of(key),
                        },
                    )
                    .await;
            }
            Backend::Redis(redis) => {
                let command = redis::cmd("SET")
                    .arg(&name)
                    .arg(value.as_ref())
                    .arg("EX")
                    .arg(self.ttl_of(key).as_secs().max(1))
                    .clone();
                if let Err(failure) = redis.run::<()>(command).await {
                    self.record_error(key, "put", &failure);
                }
            }
        }
    }

    /// Removes the keys now and once more shortly afterwards (see the module docs).
    #[tracing::instrument(name = "cache.invalidate", skip_all, fields(otel.kind = "client", cache.keys = keys.len()))]
    pub async fn invalidate(&self, keys: &[CacheKey]) {
        if keys.is_empty() {
            return;
        }
        self.inner.invalidations.fetch_add(1, Ordering::SeqCst);
        self.delete(keys).await;
        let cache = self.clone();
        let keys = keys.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(REINVALIDATE_AFTER).await;
            cache.delete(&keys).await;
        });
    }

    async fn delete(&self, keys: &[CacheKey]) {
        let names: Vec<String> = keys.iter().map(|key| self.full_name(key)).collect();
        match &self.inner.backend {
            Backend::Memory(store) => {
                for name in &names {
                    store.invalidate(name).await;
                }
            }
            Backend::Redis(redis) => {
                let command = redis::cmd("DEL").arg(&names).clone();
                if let Err(failure) = redis.run::<i64>(command).await {
                    self.record_error(&keys[0], "invalidate", &failure);
                    redis.remember_failed_invalidation(&names);
                }
            }
        }
    }

    fn spawn_invalidation_retry(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let Backend::Redis(redis) = &inner.backend else {
                    return;
                };
                if redis.bypassed() {
                    continue;
                }
                let names = redis.take_pending();
                if names.is_empty() {
                    continue;
                }
                let command = redis::cmd("DEL").arg(&names).clone();
                match redis.run::<i64>(command).await {
                    Ok(_) => tracing::info!(
                        keys = names.len(),
                        "retried cache invalidations reached Redis"
                    ),
                    Err(_) => redis.remember_failed_invalidation(&names),
                }
            }
        });
    }

    /// Cache-aside read: the cached body, or `load()` serialized to JSON, stored and returned.
    pub async fn get_or_load<T, F, Fut>(&self, key: &CacheKey, load: F) -> ApiResult<Bytes>
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = ApiResult<T>>,
    {
        if let Some(body) = self.get(key).await {
            return Ok(body);
        }
        let generation = self.inner.invalidations.load(Ordering::SeqCst);
        let value = load().await?;
        let body = Bytes::from(serde_json::to_vec(&value).map_err(ApiError::internal)?);
        // A mutation that committed while we read may have been invalidated already; storing what we
        // read could resurrect the old state, so skip the store (the next read fills the cache).
        if self.inner.invalidations.load(Ordering::SeqCst) == generation {
            self.put(key, body.clone()).await;
        }
        Ok(body)
    }
}
