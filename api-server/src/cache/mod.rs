//! The read cache: one API (`get`, `put`, `invalidate`, `get_or_load`) over up to two tiers: an
//! in-process bounded cache (moka) and Redis (shared by every replica). Without Redis the
//! in-process tier is the cache; with Redis it sits in front of Redis (`PLAMATIO_MEMORY_CACHE_MIB`,
//! 0 = off), so a hot read never leaves the process.
//!
//! Coherence across replicas: a dedicated RESP3 connection asks Redis to broadcast every change of
//! a key under the store's namespace (`CLIENT TRACKING ON BCAST PREFIX <namespace>`); each replica
//! drops its in-process entry when any replica sets or deletes the key (see [`tracking`]). While
//! that connection is not established (Redis down, connection lost, detected by an error or a
//! failed PING) the in-process tier is cleared and its entries live at most
//! [`UNTRACKED_LOCAL_TTL`]; when tracking comes back it is cleared again, since invalidations may
//! have been missed in between. An entry Redis does not hold (its SET failed) is short-lived too:
//! deleting a key Redis lacks broadcasts nothing. An entry read from Redis is kept in-process only when no
//! invalidation of its key arrived while it was read (per-key epochs), so a late invalidation can
//! never be overtaken by the value it invalidates.
//!
//! Every entry carries its strong `ETag` ([`CachedBody`]), computed once when the entry is made or
//! read from Redis into the in-process tier. Redis values are the bare JSON bodies, the format every
//! version has used, so replicas of two versions can share Redis during a rolling upgrade.
//!
//! Values are the serialized JSON response bodies, so a hit is answered without touching the
//! database or the serializer. The cache is an optimisation only: every failure is logged, counted in
//! `cache_errors_total` and treated as a miss; a slow Redis is cut off by a timeout, and after a
//! failure Redis is bypassed for a short while so an outage costs requests nothing.
//!
//! Invalidation runs after the transaction commits, in both tiers of the replica that committed (so
//! it shows the change immediately); other replicas follow with the tracking broadcast.
//! Keys whose deletion failed are retried in the background until Redis answers. A reader that loaded the old row before a commit must not store it
//! after the invalidation: within one process, a load that overlapped an invalidation of its key does
//! not store its result; across replicas, every invalidation is repeated once shortly afterwards.
//!
//! Every key starts with the store's [`namespace`]: the configured prefix and the store's id, kept in
//! its database. Key names alone (`cart-cache/2`) say nothing about which database a row came from,
//! so without the id two stores sharing one Redis, or a database recreated while Redis kept its
//! entries, would serve each other's rows.

pub mod entry;
pub mod keys;
pub mod tracking;

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;

pub use entry::CachedBody;

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

/// Time to live of product entries.
pub const PRODUCT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Time to live of every other entry.
pub const DEFAULT_TTL: Duration = Duration::from_secs(2 * 3600);
/// Longest life of an in-process entry in front of Redis while invalidations are not tracked.
pub const UNTRACKED_LOCAL_TTL: Duration = Duration::from_secs(1);

/// How long Redis is bypassed after it failed.
const REDIS_BACKOFF: Duration = Duration::from_secs(1);
/// Delay of the second, race-closing invalidation.
const REINVALIDATE_AFTER: Duration = Duration::from_millis(500);
/// Upper bound of keys remembered for a retried invalidation.
const MAX_PENDING_INVALIDATIONS: usize = 100_000;
/// Number of per-key invalidation epochs (keys share one by hash).
const EPOCH_STRIPES: usize = 256;

/// The namespace every key of a store starts with: `PLAMATIO_CACHE_PREFIX`, then the store's id
/// (see [`crate::db::store_id`]), e.g. `shop-a:0193…:` + `product-cache/7`.
pub fn namespace(prefix: &str, store_id: uuid::Uuid) -> String {
    format!("{prefix}{store_id}:")
}

/// A cache key: its keyspace (the part before the first `/`, used for metrics), full name and TTL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    keyspace: &'static str,
    name: Cow<'static, str>,
    ttl: Duration,
}

impl CacheKey {
    /// `keyspace/suffix`, e.g. `CacheKey::new("product-cache", 7, PRODUCT_TTL)` → `product-cache/7`.
    pub fn new(keyspace: &'static str, suffix: impl std::fmt::Display, ttl: Duration) -> CacheKey {
        CacheKey {
            keyspace,
            name: Cow::Owned(format!("{keyspace}/{suffix}")),
            ttl,
        }
    }

    /// A key whose whole name is known at compile time (`products-cache/all`): made without
    /// allocating, as the hottest reads use such keys.
    pub fn fixed(name: &'static str, ttl: Duration) -> CacheKey {
        let keyspace = name.split_once('/').map_or(name, |(keyspace, _)| keyspace);
        CacheKey {
            keyspace,
            name: Cow::Borrowed(name),
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
    value: CachedBody,
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

/// The in-process tier, keyed by key name (the namespace is the same for every key of a cache).
struct LocalTier {
    store: moka::future::Cache<String, MemoryEntry>,
    /// Whether entries may live their full TTL: always without Redis; in front of Redis only while
    /// invalidations are tracked.
    coherent: AtomicBool,
}

impl LocalTier {
    fn new(max_bytes: u64, coherent: bool) -> LocalTier {
        let store = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &MemoryEntry| {
                u32::try_from(key.len() + entry.value.body().len()).unwrap_or(u32::MAX)
            })
            .expire_after(EntryTtl)
            .build();
        LocalTier {
            store,
            coherent: AtomicBool::new(coherent),
        }
    }

    /// The life of an entry: its TTL while invalidations reach this tier, else at most
    /// [`UNTRACKED_LOCAL_TTL`]. `in_redis` says whether Redis holds the same entry: one that
    /// only this process holds is short-lived too, as deleting a key Redis does not have changes
    /// nothing in Redis and so broadcasts no invalidation.
    fn entry_ttl(&self, ttl: Duration, in_redis: bool) -> Duration {
        if in_redis && self.coherent.load(Ordering::SeqCst) {
            ttl
        } else {
            ttl.min(UNTRACKED_LOCAL_TTL)
        }
    }
}

struct RedisBackend {
    connection: ConnectionManager,
    timeout: Duration,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not tried again.
    bypass_until_ms: AtomicU64,
    pending_invalidations: Mutex<HashSet<String>>,
    /// `CLIENT SETNAME` of the tracking connection (when there is an in-process tier).
    tracking_client_name: Option<String>,
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
    local: Option<LocalTier>,
    redis: Option<RedisBackend>,
    /// Start of every key: the configured prefix and the store's id.
    namespace: String,
    metrics: Metrics,
    /// Invalidation epochs: bumped for a key by every invalidation of it (local or broadcast by
    /// Redis), and all at once when tracking starts or stops. A read or load that overlapped a bump
    /// of its key's epoch does not keep its result.
    epochs: InvalidationEpochs,
    /// When non-zero, the TTL of every entry in seconds (`PLAMATIO_CACHE_TTL_SECONDS`).
    ttl_override_seconds: AtomicU64,
}

struct InvalidationEpochs {
    all: AtomicU64,
    stripes: Box<[AtomicU64]>,
}

impl InvalidationEpochs {
    fn new() -> InvalidationEpochs {
        InvalidationEpochs {
            all: AtomicU64::new(0),
            stripes: (0..EPOCH_STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn stripe(&self, name: &str) -> &AtomicU64 {
        // FNV-1a: cheap, and only spreads keys over the stripes.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.stripes[(hash % EPOCH_STRIPES as u64) as usize]
    }

    /// The epoch of a key; both parts only grow, so any bump changes the sum.
    fn of(&self, name: &str) -> u64 {
        self.all
            .load(Ordering::SeqCst)
            .wrapping_add(self.stripe(name).load(Ordering::SeqCst))
    }

    fn bump(&self, name: &str) {
        self.stripe(name).fetch_add(1, Ordering::SeqCst);
    }

    fn bump_all(&self) {
        self.all.fetch_add(1, Ordering::SeqCst);
    }
}

impl CacheInner {
    /// An invalidation broadcast by Redis: `None` when the whole database was flushed. Names are
    /// full Redis keys; those outside this cache's namespace are ignored.
    async fn drop_local(&self, full_names: Option<Vec<Vec<u8>>>) {
        let Some(local) = &self.local else { return };
        let Some(full_names) = full_names else {
            self.epochs.bump_all();
            local.store.invalidate_all();
            return;
        };
        for full_name in full_names {
            let Some(name) = full_name
                .strip_prefix(self.namespace.as_bytes())
                .and_then(|name| std::str::from_utf8(name).ok())
            else {
                continue;
            };
            self.epochs.bump(name);
            local.store.invalidate(name).await;
        }
    }

    /// Tracking started or stopped: what the in-process tier holds may have missed invalidations.
    fn set_tracking(&self, established: bool) {
        let Some(local) = &self.local else { return };
        local.coherent.store(established, Ordering::SeqCst);
        self.epochs.bump_all();
        local.store.invalidate_all();
        self.metrics
            .cache_tracking
            .set(if established { 1 } else { 0 });
    }
}

impl Cache {
    /// A Redis-backed cache whose keys all start with `namespace` (see [`namespace`]), without an
    /// in-process tier. The connection is made lazily, so a Redis that is down at start-up only
    /// makes every look-up a miss until it comes up.
    pub fn redis(
        url: &str,
        namespace: &str,
        timeout: Duration,
        metrics: Metrics,
    ) -> Result<Cache, redis::RedisError> {
        Cache::redis_with_memory_tier(url, namespace, timeout, 0, metrics)
    }

    /// A Redis-backed cache with an in-process tier of `memory_bytes` in front of it (0: none),
    /// kept coherent with the other replicas by Redis' invalidation broadcasts (module docs).
    pub fn redis_with_memory_tier(
        url: &str,
        namespace: &str,
        timeout: Duration,
        memory_bytes: u64,
        metrics: Metrics,
    ) -> Result<Cache, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let local = (memory_bytes > 0).then(|| LocalTier::new(memory_bytes, false));
        let tracking_client_name = local
            .as_ref()
            .map(|_| format!("plamatio-tracking-{}", uuid::Uuid::new_v4().simple()));
        let cache = Cache {
            inner: Arc::new(CacheInner {
                local,
                redis: Some(RedisBackend {
                    connection,
                    timeout,
                    started: Instant::now(),
                    bypass_until_ms: AtomicU64::new(0),
                    pending_invalidations: Mutex::new(HashSet::new()),
                    tracking_client_name: tracking_client_name.clone(),
                }),
                namespace: namespace.to_owned(),
                metrics,
                epochs: InvalidationEpochs::new(),
                ttl_override_seconds: AtomicU64::new(0),
            }),
        };
        cache.spawn_invalidation_retry();
        if let Some(client_name) = tracking_client_name {
            tracking::spawn(
                Arc::downgrade(&cache.inner),
                &client,
                client_name,
                namespace.to_owned(),
                timeout,
            )?;
        }
        Ok(cache)
    }

    /// An in-process cache bounded to `max_bytes` of values, its keys starting with `namespace`.
    pub fn memory(max_bytes: u64, namespace: &str, metrics: Metrics) -> Cache {
        Cache {
            inner: Arc::new(CacheInner {
                local: Some(LocalTier::new(max_bytes, true)),
                redis: None,
                namespace: namespace.to_owned(),
                metrics,
                epochs: InvalidationEpochs::new(),
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
        match (&self.inner.redis, &self.inner.local) {
            (Some(_), Some(_)) => "redis+memory",
            (Some(_), None) => "redis",
            (None, _) => "memory",
        }
    }

    /// Whether in-process entries in front of Redis currently follow Redis' invalidation
    /// broadcasts (always `true` for the in-process-only cache, `false` without an in-process tier).
    pub fn tracking_established(&self) -> bool {
        self.inner
            .local
            .as_ref()
            .is_some_and(|local| local.coherent.load(Ordering::SeqCst))
    }

    /// The Redis client name of the tracking connection (to find it in `CLIENT LIST`).
    pub fn tracking_client_name(&self) -> Option<&str> {
        self.inner
            .redis
            .as_ref()
            .and_then(|redis| redis.tracking_client_name.as_deref())
    }

    /// Whether the in-process tier holds the key.
    pub fn holds_in_process(&self, key: &CacheKey) -> bool {
        self.inner
            .local
            .as_ref()
            .is_some_and(|local| local.store.contains_key(key.name()))
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

    fn record_lookup(&self, key: &CacheKey, result: &'static str) {
        self.inner
            .metrics
            .cache_lookups
            .with_label_values(&[key.keyspace, result])
            .inc();
    }

    /// Keeps an entry in the in-process tier unless its key was invalidated since `epoch` (read
    /// before the value was); `in_redis`: whether Redis holds it too (see [`LocalTier::entry_ttl`]).
    async fn keep_in_process(
        &self,
        key: &CacheKey,
        value: &CachedBody,
        epoch: u64,
        in_redis: bool,
    ) {
        let Some(local) = &self.inner.local else {
            return;
        };
        if self.inner.epochs.of(&key.name) != epoch {
            return;
        }
        let entry = MemoryEntry {
            value: value.clone(),
            ttl: local.entry_ttl(self.ttl_of(key), in_redis),
        };
        local.store.insert(key.name().to_owned(), entry).await;
        // An invalidation that arrived while inserting may have found nothing to remove.
        if self.inner.epochs.of(&key.name) != epoch {
            local.store.invalidate(key.name()).await;
        }
    }

    /// The cached value, or `None` on a miss or any cache failure.
    #[tracing::instrument(name = "cache.get", skip_all, fields(otel.kind = "client", cache.key = %key.name, cache.hit = tracing::field::Empty))]
    pub async fn get(&self, key: &CacheKey) -> Option<CachedBody> {
        if let Some(local) = &self.inner.local
            && let Some(entry) = local.store.get(key.name()).await
        {
            tracing::Span::current().record("cache.hit", true);
            self.record_lookup(key, "hit");
            return Some(entry.value);
        }
        let Some(redis) = &self.inner.redis else {
            tracing::Span::current().record("cache.hit", false);
            self.record_lookup(key, "miss");
            return None;
        };
        let epoch = self.inner.epochs.of(&key.name);
        let outcome = redis
            .run::<Option<Vec<u8>>>(redis::cmd("GET").arg(self.full_name(key)).clone())
            .await
            .map(|value| value.map(CachedBody::from_stored));
        let result = match &outcome {
            Ok(Some(value)) => {
                self.keep_in_process(key, value, epoch, true).await;
                "hit"
            }
            Ok(None) => "miss",
            Err(failure) => {
                self.record_error(key, "get", failure);
                "error"
            }
        };
        tracing::Span::current().record("cache.hit", result == "hit");
        self.record_lookup(key, result);
        outcome.ok().flatten()
    }

    /// Stores a value under the key with the key's TTL; failures are logged and counted.
    pub async fn put(&self, key: &CacheKey, value: &CachedBody) {
        let epoch = self.inner.epochs.of(&key.name);
        self.store(key, value, epoch).await;
    }

    /// Stores a value read at `epoch` in both tiers.
    #[tracing::instrument(name = "cache.put", skip_all, fields(otel.kind = "client", cache.key = %key.name))]
    async fn store(&self, key: &CacheKey, value: &CachedBody, epoch: u64) {
        let mut in_redis = true;
        if let Some(redis) = &self.inner.redis {
            let command = redis::cmd("SET")
                .arg(self.full_name(key))
                .arg(value.stored())
                .arg("EX")
                .arg(self.ttl_of(key).as_secs().max(1))
                .clone();
            if let Err(failure) = redis.run::<()>(command).await {
                self.record_error(key, "put", &failure);
                in_redis = false;
            }
        }
        self.keep_in_process(key, value, epoch, in_redis).await;
    }

    /// Removes the keys from both tiers now and once more shortly afterwards (see the module docs).
    #[tracing::instrument(name = "cache.invalidate", skip_all, fields(otel.kind = "client", cache.keys = keys.len()))]
    pub async fn invalidate(&self, keys: &[CacheKey]) {
        if keys.is_empty() {
            return;
        }
        // Only the first deletion closes the window for loads that read before the commit; the
        // repeat only removes what other replicas may have stored meanwhile.
        for key in keys {
            self.inner.epochs.bump(&key.name);
        }
        self.delete(keys).await;
        let cache = self.clone();
        let keys = keys.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(REINVALIDATE_AFTER).await;
            cache.delete(&keys).await;
        });
    }

    async fn delete(&self, keys: &[CacheKey]) {
        if let Some(local) = &self.inner.local {
            for key in keys {
                local.store.invalidate(key.name()).await;
            }
        }
        if let Some(redis) = &self.inner.redis {
            let names: Vec<String> = keys.iter().map(|key| self.full_name(key)).collect();
            let command = redis::cmd("DEL").arg(&names).clone();
            if let Err(failure) = redis.run::<i64>(command).await {
                self.record_error(&keys[0], "invalidate", &failure);
                redis.remember_failed_invalidation(&names);
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
                let Some(redis) = &inner.redis else {
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

    /// Cache-aside read: the cached body, or `load()` serialized to JSON, tagged, stored and
    /// returned.
    pub async fn get_or_load<T, F, Fut>(&self, key: &CacheKey, load: F) -> ApiResult<CachedBody>
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = ApiResult<T>>,
    {
        if let Some(body) = self.get(key).await {
            return Ok(body);
        }
        let epoch = self.inner.epochs.of(&key.name);
        let value = load().await?;
        let body = CachedBody::new(Bytes::from(
            serde_json::to_vec(&value).map_err(ApiError::internal)?,
        ));
        // A mutation that committed while we read may have been invalidated already; storing what we
        // read could resurrect the old state, so skip the store (the next read fills the cache).
        if self.inner.epochs.of(&key.name) == epoch {
            self.store(key, &body, epoch).await;
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_keys_equal_their_formatted_twins() {
        let fixed = CacheKey::fixed("products-cache/all", PRODUCT_TTL);
        assert_eq!(fixed, CacheKey::new("products-cache", "all", PRODUCT_TTL));
        assert_eq!(fixed.keyspace(), "products-cache");
    }
}
