//! The outbox relay: publishes committed outbox rows to Kafka and takes them off the pending queue
//! only after the broker acknowledged them.
//!
//! One relay works at a time across all replicas (a transaction-scoped advisory lock), so rows are
//! published strictly in outbox order and every key's events stay in commit order; the others poll
//! and take over when it stops. Each round reads a batch of `outbox_pending` (filled by a trigger
//! on every outbox insert; no row locks, the advisory lock already excludes other relays), enqueues
//! each row on the idempotent producer as it streams in, in id order (one partition per key, so
//! the broker keeps that order), waits for every
//! acknowledgement and deletes the acknowledged ids from `outbox_pending` in the same transaction;
//! the outbox rows themselves are never updated. A row whose publication failed, and every later row
//! of its key, stays pending and is retried with exponential backoff. Idle relays sleep until a
//! `NOTIFY` or the poll interval; notifications that arrived before a round starts are folded into
//! it.
//!
//! Poison rows never block anyone. A row the producer or the broker refuses for a reason no retry
//! can fix (too large, invalid topic or record: [`is_permanent`]) moves to `outbox_dead_letter`
//! with its error in the same transaction (`outbox_dead_lettered_total`, alert
//! `PlamatioOutboxDeadLetters`), and the later rows of its key go on. When the broker acknowledged
//! part of a round but refused some keys' rows for a reason that may pass (e.g. a topic it does
//! not know yet), those keys are set aside with their own backoff: until it expires the claim
//! skips every row of theirs (so their order is kept) and takes other keys' rows instead, so a
//! claim never fills with rows that cannot go out. With nothing set aside the claim is the same
//! single query as before (the hot path is unchanged).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use super::kafka::KafkaConfig;
use super::outbox::NOTIFY_CHANNEL;
use crate::metrics::Metrics;

/// Failed rounds in a row after which the producer is replaced whatever the errors were.
const RENEW_AFTER_FAILURES: u32 = 3;

/// The advisory lock that elects the working relay.
pub const RELAY_LOCK: i64 = 0x706c_616d_6174_696f; // "plamatio"

/// The span of one relay round, and of its three phases (children of the round): the claim (query,
/// decoding and enqueueing each row), Kafka (last enqueue → last acknowledgement) and the mark
/// (delete and commit).
pub const ROUND_SPAN: &str = "outbox.relay_round";
pub const CLAIM_SPAN: &str = "outbox.claim";
pub const PUBLISH_SPAN: &str = "kafka.publish";
pub const MARK_SPAN: &str = "outbox.mark";

/// Most keys set aside at once; past it, failing keys are retried with the whole round.
const MAX_SET_ASIDE_KEYS: usize = 1000;

/// Whether the producer or the broker refused a message for a reason no retry can fix.
pub fn is_permanent(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::UnsupportedForMessageFormat
        )
    )
}

/// A key whose rows the claim skips until `retry_at`.
#[derive(Debug, Clone, Copy)]
struct SetAside {
    retry_at: Instant,
    failures: u32,
}

/// Tuning of the relay.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub batch_size: i64,
    pub poll_interval: Duration,
    pub max_backoff: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            // B4: 500 → 0.21× direct produce, 2,000 → 0.51×, 5,000 → 0.54× when draining a backlog;
            // a live relay's rounds are as small as what arrived since the last one.
            batch_size: 5000,
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct PendingRow {
    id: i64,
    event_id: Uuid,
    topic: String,
    event_key: String,
    event_type: String,
    /// The stored JSON text, published as it is.
    payload: String,
    traceparent: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{failed} of {total} messages were not acknowledged: {first_error}")]
    Undelivered {
        failed: usize,
        total: usize,
        first_error: String,
        /// The broker no longer accepts this producer's session (fenced, unknown producer id, …).
        producer_rejected: bool,
        /// Rows of the round that were published or dead-lettered: more than 0 means the broker
        /// works and only the failed keys are in trouble (they are set aside).
        handled: usize,
    },
}

/// A row handed to the producer: on its way to the broker, or refused before it left.
enum Delivery {
    Enqueued(DeliveryFuture),
    Refused(KafkaError),
}

impl Delivery {
    /// The broker's acknowledgement, or why the row did not get one.
    async fn outcome(self) -> Result<(), KafkaError> {
        match self {
            Delivery::Enqueued(future) => match future.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(error),
                Err(_) => Err(KafkaError::Canceled),
            },
            Delivery::Refused(error) => Err(error),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Another replica holds the relay lock.
    NotLeader,
    /// Took this many rows off the queue (0 when nothing was pending): published, or moved to
    /// the dead-letter table.
    Published(usize),
}

pub struct Relay {
    pool: PgPool,
    kafka: KafkaConfig,
    settings: RelaySettings,
    metrics: Metrics,
    producer: FutureProducer,
    /// Keys the claim skips for now (see the module docs).
    set_aside: std::sync::Mutex<HashMap<String, SetAside>>,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        kafka: KafkaConfig,
        settings: RelaySettings,
        metrics: Metrics,
    ) -> Result<Relay, rdkafka::error::KafkaError> {
        let producer = kafka.producer_config().create()?;
        Ok(Relay {
            pool,
            kafka,
            settings,
            metrics,
            producer,
            set_aside: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The keys whose backoff has not expired yet, and whether any key is set aside at all
    /// (expired or not: then the round notes which keys went out, to forgive them).
    fn keys_to_skip(&self) -> (Vec<String>, bool) {
        let now = Instant::now();
        match self.set_aside.lock() {
            Ok(set_aside) => (
                set_aside
                    .iter()
                    .filter(|(_, entry)| entry.retry_at > now)
                    .map(|(key, _)| key.clone())
                    .collect(),
                !set_aside.is_empty(),
            ),
            Err(_) => (Vec::new(), false),
        }
    }

    /// Records a round's outcome per key: keys that went out are forgiven; failed keys are set
    /// aside with an exponential backoff when the broker took other rows of the round.
    fn update_set_aside(&self, succeeded: &HashSet<&str>, failed: &HashSet<&str>, partial: bool) {
        let Ok(mut set_aside) = self.set_aside.lock() else {
            return;
        };
        for key in succeeded.difference(failed) {
            set_aside.remove(*key);
        }
        if !partial {
            return;
        }
        let now = Instant::now();
        // Keys whose backoff ran out long ago and that did not fail since (their rows went out
        // in a round that did not reach this function's `succeeded`, e.g. dead-lettered).
        let stale_after = self.settings.max_backoff * 2;
        set_aside.retain(|_, entry| now.duration_since(entry.retry_at) < stale_after);
        for key in failed {
            if set_aside.len() >= MAX_SET_ASIDE_KEYS && !set_aside.contains_key(*key) {
                tracing::warn!(
                    limit = MAX_SET_ASIDE_KEYS,
                    "too many failing keys to set aside; the rest are retried with every round"
                );
                break;
            }
            let entry = set_aside.entry((*key).to_owned()).or_insert(SetAside {
                retry_at: now,
                failures: 0,
            });
            entry.failures = entry.failures.saturating_add(1);
            let backoff = Duration::from_millis(200)
                .saturating_mul(1u32 << entry.failures.min(16))
                .min(self.settings.max_backoff);
            entry.retry_at = now + backoff;
        }
    }

    /// Replaces the producer when its session is beyond repair: librdkafka declared it fatally
    /// failed, the broker rejects its producer id or epoch (e.g. a broker that lost its state, or
    /// fenced the producer after a long outage), or rounds keep failing. A new producer starts a new
    /// idempotent session; rows not acknowledged are simply published again.
    fn renew_producer_if_needed(&mut self, error: &RelayError, consecutive_failures: u32) {
        let fatal = self.producer.client().fatal_error();
        let rejected = matches!(
            error,
            RelayError::Undelivered {
                producer_rejected: true,
                ..
            }
        );
        if fatal.is_none() && !rejected && consecutive_failures < RENEW_AFTER_FAILURES {
            return;
        }
        tracing::warn!(
            ?fatal,
            rejected,
            consecutive_failures,
            "creating a new Kafka producer"
        );
        match self.kafka.producer_config().create() {
            Ok(producer) => self.producer = producer,
            Err(error) => tracing::error!(%error, "could not create a new Kafka producer"),
        }
    }

    /// Hands one row to the producer. A full producer queue is waited out for up to the message
    /// timeout, as the broker then has plenty to do; any other refusal is the row's outcome.
    async fn enqueue(&self, row: &PendingRow, topic: &str) -> Delivery {
        let mut event_id = Uuid::encode_buffer();
        let event_id: &str = row.event_id.hyphenated().encode_lower(&mut event_id);
        let mut headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: "event_type",
                value: Some(row.event_type.as_str()),
            })
            .insert(Header {
                key: "content-type",
                value: Some("application/json"),
            })
            .insert(Header {
                key: "event_id",
                value: Some(event_id),
            });
        if let Some(traceparent) = &row.traceparent {
            headers = headers.insert(Header {
                key: "traceparent",
                value: Some(traceparent.as_str()),
            });
        }
        let mut record = FutureRecord::to(topic)
            .key(row.event_key.as_str())
            .payload(row.payload.as_bytes())
            .headers(headers);
        let deadline = Instant::now() + Duration::from_millis(self.kafka.kafka_message_timeout_ms);
        loop {
            match self.producer.send_result(record) {
                Ok(future) => return Delivery::Enqueued(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                    if Instant::now() < deadline =>
                {
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Delivery::Refused(error),
            }
        }
    }

    /// Runs rounds until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(mut listener) => match listener.listen(NOTIFY_CHANNEL).await {
                Ok(()) => Some(listener),
                Err(error) => {
                    tracing::warn!(%error, "relay cannot LISTEN; polling only");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(%error, "relay cannot LISTEN; polling only");
                None
            }
        };
        let mut backoff = Duration::ZERO;
        let mut consecutive_failures = 0u32;
        tracing::info!(
            bootstrap = self
                .kafka
                .kafka_bootstrap_servers
                .as_deref()
                .unwrap_or_default(),
            "outbox relay started"
        );
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Notifications already received announce rows this round will see anyway; each would
            // otherwise wake a round of its own. Those arriving during the round stay queued and
            // start the next one.
            if let Some(listener) = listener.as_mut() {
                while listener.next_buffered().is_some() {}
            }
            let wait = match self.round().await {
                Ok(Round::Published(count)) if count as i64 >= self.settings.batch_size => {
                    backoff = Duration::ZERO;
                    consecutive_failures = 0;
                    continue;
                }
                Ok(Round::Published(_)) | Ok(Round::NotLeader) => {
                    backoff = Duration::ZERO;
                    consecutive_failures = 0;
                    self.settings.poll_interval
                }
                // The broker works; the failed keys are set aside and the others go on.
                Err(RelayError::Undelivered {
                    failed,
                    total,
                    handled,
                    ref first_error,
                    producer_rejected: false,
                }) if handled > 0 => {
                    self.metrics.outbox_publish_errors.inc();
                    tracing::warn!(failed, total, %first_error, "some outbox keys failed; set aside");
                    backoff = Duration::ZERO;
                    consecutive_failures = 0;
                    if total as i64 >= self.settings.batch_size {
                        continue;
                    }
                    self.settings.poll_interval
                }
                Err(error) => {
                    self.metrics.outbox_publish_errors.inc();
                    consecutive_failures += 1;
                    self.renew_producer_if_needed(&error, consecutive_failures);
                    if consecutive_failures >= RENEW_AFTER_FAILURES {
                        consecutive_failures = 0;
                    }
                    backoff = (backoff * 2)
                        .max(Duration::from_millis(200))
                        .min(self.settings.max_backoff);
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "outbox relay round failed");
                    backoff
                }
            };
            let notified = async {
                match listener.as_mut() {
                    Some(listener) => {
                        if listener.recv().await.is_err() {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {},
                () = notified, if backoff.is_zero() => {},
                _ = shutdown.changed() => {},
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// One claim → publish → mark round.
    #[tracing::instrument(name = ROUND_SPAN, skip_all, fields(messages = tracing::field::Empty))]
    pub async fn round(&self) -> Result<Round, RelayError> {
        let mut tx = self.pool.begin().await?;
        let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !leader {
            return Ok(Round::NotLeader);
        }
        let (skipped, any_set_aside) = self.keys_to_skip();
        // No row locks: the advisory lock above already makes this the only relay, and locking
        // each claimed row cost a WAL record per row plus a sort that held back the first row
        // until the last was read. Without them the planner knows the nested loop over the
        // queue's primary key yields id order, so rows stream in that order (no sort), and each
        // is enqueued on the producer as soon as it is decoded: the broker is already busy while
        // the rest of the claim arrives.
        let query = if skipped.is_empty() {
            sqlx::query_as::<_, PendingRow>(
                // Claim the ids first, then fetch each row by primary key. A join would be planned
                // from the tables' statistics, which lag far behind a fast-growing outbox (a hash
                // join over a sequential scan of the whole outbox on every round); `OFFSET 0` keeps
                // the lookup a per-id index probe whatever the statistics say.
                "SELECT o.id, o.event_id, o.topic, o.event_key, o.event_type, o.payload::text AS payload, \
                 o.traceparent, o.created_at \
                 FROM (SELECT id FROM outbox_pending ORDER BY id LIMIT $1) c \
                 CROSS JOIN LATERAL (SELECT * FROM outbox WHERE outbox.id = c.id OFFSET 0) o \
                 ORDER BY c.id",
            )
            .bind(self.settings.batch_size)
        } else {
            // Some keys are set aside: walk the queue in id order past their rows (one primary
            // key probe per pending row until the batch is full), so every other key's oldest
            // rows are claimed and the set-aside keys keep their order for later.
            sqlx::query_as::<_, PendingRow>(
                "SELECT o.id, o.event_id, o.topic, o.event_key, o.event_type, o.payload::text AS payload, \
                 o.traceparent, o.created_at \
                 FROM (SELECT p.id FROM outbox_pending p \
                       WHERE (SELECT b.event_key FROM outbox b WHERE b.id = p.id) <> ALL($2) \
                       ORDER BY p.id LIMIT $1) c \
                 CROSS JOIN LATERAL (SELECT * FROM outbox WHERE outbox.id = c.id OFFSET 0) o \
                 ORDER BY c.id",
            )
            .bind(self.settings.batch_size)
            .bind(&skipped)
        };
        let mut rows: Vec<PendingRow> = Vec::new();
        let mut deliveries = Vec::new();
        let claim = tracing::info_span!(
            CLAIM_SPAN,
            otel.kind = "client",
            skipped_keys = skipped.len()
        );
        async {
            // A round carries thousands of rows over a handful of topics: name each topic once.
            let mut topics: HashMap<String, String> = HashMap::new();
            let mut stream = query.fetch(&mut *tx);
            while let Some(row) = stream.try_next().await? {
                if !topics.contains_key(&row.topic) {
                    topics.insert(row.topic.clone(), self.kafka.topic_name(&row.topic));
                }
                deliveries.push(self.enqueue(&row, &topics[&row.topic]).await);
                rows.push(row);
            }
            Ok::<(), sqlx::Error>(())
        }
        .instrument(claim)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Round::Published(0));
        }
        tracing::Span::current().record("messages", rows.len());
        let publish = tracing::info_span!(
            PUBLISH_SPAN,
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.batch.message_count = rows.len()
        );
        let results = futures::future::join_all(deliveries.into_iter().map(Delivery::outcome))
            .instrument(publish)
            .await;

        // A failed row blocks the later rows of its key, so a key's events are never marked out of
        // order; they are all retried later. A row refused for good is dead-lettered instead and
        // blocks nothing.
        let mut blocked_keys: HashSet<&str> = HashSet::new();
        let mut succeeded_keys: HashSet<&str> = HashSet::new();
        let mut published = Vec::with_capacity(rows.len());
        let mut dead_ids: Vec<i64> = Vec::new();
        let mut dead_errors: Vec<String> = Vec::new();
        let mut first_error = None;
        let mut producer_rejected = false;
        let now = Utc::now();
        for (row, result) in rows.iter().zip(&results) {
            match result {
                Ok(_) if !blocked_keys.contains(row.event_key.as_str()) => {
                    published.push(row.id);
                    if any_set_aside {
                        succeeded_keys.insert(row.event_key.as_str());
                    }
                    let lag = (now - row.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    self.metrics.outbox_publish_latency.observe(lag.max(0.0));
                }
                Ok(_) => {}
                Err(error) if is_permanent(error.rdkafka_error_code()) => {
                    tracing::error!(
                        outbox_id = row.id,
                        event_id = %row.event_id,
                        topic = %row.topic,
                        event_type = %row.event_type,
                        bytes = row.payload.len(),
                        %error,
                        "the broker refused an outbox row for good; moved to outbox_dead_letter"
                    );
                    dead_ids.push(row.id);
                    dead_errors.push(error.to_string());
                }
                Err(error) => {
                    producer_rejected |= matches!(
                        error.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::ProducerFenced
                                | RDKafkaErrorCode::UnknownProducerId
                                | RDKafkaErrorCode::InvalidProducerEpoch
                                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                        )
                    );
                    blocked_keys.insert(row.event_key.as_str());
                    first_error.get_or_insert_with(|| error.to_string());
                }
            }
        }
        async {
            if let (Some(first), Some(last)) = (published.first(), published.last()) {
                // A join with the id list (`= ANY($3)` compares every row with every id), and an
                // id range so the planner uses the primary key even while the table's statistics
                // still describe it as tiny.
                sqlx::query(
                    "DELETE FROM outbox_pending p USING unnest($3::bigint[]) AS done(id) \
                     WHERE p.id = done.id AND p.id BETWEEN $1 AND $2",
                )
                .bind(first)
                .bind(last)
                .bind(&published)
                .execute(&mut *tx)
                .await?;
            }
            if !dead_ids.is_empty() {
                sqlx::query(
                    "INSERT INTO outbox_dead_letter \
                     (id, event_id, topic, event_key, event_type, payload, traceparent, created_at, error) \
                     SELECT o.id, o.event_id, o.topic, o.event_key, o.event_type, o.payload, \
                     o.traceparent, o.created_at, d.error \
                     FROM unnest($1::bigint[], $2::text[]) AS d(id, error) \
                     JOIN outbox o ON o.id = d.id \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&dead_ids)
                .bind(&dead_errors)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM outbox_pending WHERE id = ANY($1)")
                    .bind(&dead_ids)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        .instrument(tracing::info_span!(MARK_SPAN, otel.kind = "client"))
        .await?;
        self.metrics.outbox_published.inc_by(published.len() as u64);
        self.metrics
            .outbox_dead_lettered
            .inc_by(dead_ids.len() as u64);
        let handled = published.len() + dead_ids.len();
        if any_set_aside || !blocked_keys.is_empty() {
            self.update_set_aside(&succeeded_keys, &blocked_keys, handled > 0);
        }
        match first_error {
            Some(first_error) => Err(RelayError::Undelivered {
                failed: rows.len() - handled,
                total: rows.len(),
                first_error,
                producer_rejected,
                handled,
            }),
            None => Ok(Round::Published(handled)),
        }
    }
}

/// Deletes published rows older than the retention, and — when no relay runs — any row older than
/// it (nothing would ever publish them; their queue entries go with them). Returns the number of
/// rows deleted.
pub async fn prune(
    pool: &PgPool,
    retention: Duration,
    relay_enabled: bool,
) -> Result<u64, sqlx::Error> {
    let seconds = retention.as_secs_f64();
    let result = if relay_enabled {
        sqlx::query(
            "DELETE FROM outbox o WHERE o.created_at < now() - make_interval(secs => $1) \
             AND NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.id = o.id)",
        )
        .bind(seconds)
        .execute(pool)
        .await?
    } else {
        sqlx::query("DELETE FROM outbox WHERE created_at < now() - make_interval(secs => $1)")
            .bind(seconds)
            .execute(pool)
            .await?
    };
    Ok(result.rows_affected())
}

/// Keeps the backlog gauges current and prunes old rows, until `shutdown`.
pub async fn monitor(
    pool: PgPool,
    metrics: Metrics,
    retention: Duration,
    relay_enabled: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_prune: Option<Instant> = None;
    loop {
        let backlog: Result<(i64, Option<f64>), sqlx::Error> = sqlx::query_as(
            "SELECT (SELECT count(*) FROM outbox_pending), \
             (SELECT extract(epoch FROM now() - created_at)::float8 FROM outbox \
              WHERE id = (SELECT min(id) FROM outbox_pending))",
        )
        .fetch_one(&pool)
        .await;
        match backlog {
            Ok((pending, oldest)) => {
                metrics.outbox_pending.set(pending);
                metrics.outbox_oldest_pending_age.set(if relay_enabled {
                    oldest.unwrap_or(0.0)
                } else {
                    0.0
                });
            }
            Err(error) => tracing::debug!(%error, "outbox backlog query failed"),
        }
        if last_prune.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
            match prune(&pool, retention, relay_enabled).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "pruned old outbox rows"),
                Err(error) => tracing::warn!(%error, "outbox pruning failed"),
            }
            last_prune = Some(Instant::now());
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {},
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_no_retry_can_fix_are_permanent() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidMessageSize,
            RDKafkaErrorCode::InvalidTopic,
            RDKafkaErrorCode::InvalidRecord,
        ] {
            assert!(is_permanent(Some(code)), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            assert!(!is_permanent(Some(code)), "{code:?}");
        }
        assert!(!is_permanent(None));
    }
}
