//! B4 — outbox → Kafka (docs: `e2e/bench/events/README.md`).
//!
//! Starts its own tansu broker (memory storage) on a free port and a fresh PostgreSQL database, then
//! measures, in one run on the same machine:
//!
//! 1. **relay, live**: writers append cart events through `events::outbox::append` in transactions
//!    of 1–10 events (1,000 users) while a `Relay` runs; a consumer reads the topic as it fills.
//!    Throughput = first commit → last row marked published; latency per event = commit instant →
//!    the instant the consumer received it (an upper bound of the broker acknowledgement).
//! 2. **relay, backlog**: the same number of rows inserted first, then a relay started on them;
//!    throughput = relay start → outbox drained.
//! 3. **peer**: one `FutureProducer` with the relay's `KafkaConfig::producer_config()` sending the
//!    backlog's payloads (same topic, keys and headers), all enqueued then awaited; latency =
//!    enqueue → acknowledgement. Run before and after the backlog drain; the ratio uses their mean.
//!
//! The relay and the peer run in this process on the API's allocator (mimalloc).
//!
//! Knobs (environment): `B4_EVENTS` (100000), `B4_WRITERS` (8), `B4_BATCH_SIZE` (the relay's
//! default), `B4_COMPRESSION` (the `KafkaConfig` default), `B4_DATABASE_SERVER` (else
//! `TEST_DATABASE_SERVER`, else `postgres://postgres@127.0.0.1:5432`), `TANSU_BIN`.
//! Exit status: 0 whatever the targets say; 1 on an error (setup, lost event, broken order per key).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use plamatio_api::cart::item_event;
use plamatio_api::cart::model::CartItem;
use plamatio_api::db;
use plamatio_api::events::kafka::KafkaConfig;
use plamatio_api::events::outbox::{self, OutboxEvent, Topic};
use plamatio_api::events::relay::{
    CLAIM_SPAN, MARK_SPAN, PUBLISH_SPAN, RELAY_LOCK, ROUND_SPAN, Relay, RelaySettings,
};
use plamatio_api::metrics::Metrics;
use plamatio_api::telemetry::with_client_traceparent;
use plamatio_testkit::{
    TansuBroker, create_scratch_database, database_server_url, drop_scratch_database,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, filter};
use uuid::Uuid;

/// The API process's allocator (`src/main.rs`): the relay allocates for every row it claims, so
/// it is measured with the allocator it runs on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USERS: usize = 1_000;
const LATENCY_TARGET_MS: f64 = 100.0;
const THROUGHPUT_TARGET: f64 = 0.5;

#[tokio::main]
async fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; nothing to parse.
    let spans = SpanStats::default();
    tracing_subscriber::registry()
        .with(spans.clone().with_filter(
            filter::Targets::new().with_target("plamatio_api::events::relay", Level::INFO),
        ))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter::LevelFilter::WARN),
        )
        .init();
    match run(spans).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("b4_events: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

struct Settings {
    events: usize,
    paced_events: usize,
    rate: f64,
    writers: usize,
    relay: RelaySettings,
    compression: Option<String>,
}

fn env_parse<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow!("{name}={value} is not valid")),
        _ => Ok(None),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let mut relay = RelaySettings::default();
        if let Some(batch_size) = env_parse::<i64>("B4_BATCH_SIZE")? {
            relay.batch_size = batch_size.max(1);
        }
        Ok(Settings {
            events: env_parse("B4_EVENTS")?.unwrap_or(100_000usize).max(1),
            paced_events: env_parse("B4_PACED_EVENTS")?.unwrap_or(20_000usize),
            rate: env_parse("B4_RATE")?.unwrap_or(2_000f64).max(1.0),
            writers: env_parse("B4_WRITERS")?.unwrap_or(8usize).clamp(1, 64),
            relay,
            compression: env_parse("B4_COMPRESSION")?,
        })
    }
}

async fn run(spans: SpanStats) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let broker = tokio::task::spawn_blocking(TansuBroker::start).await?;
    let database = Database::create().await?;
    let pool = database.pool.clone();
    let mut kafka = KafkaConfig::for_bootstrap(&broker.bootstrap());
    if let Some(compression) = &settings.compression {
        kafka.kafka_compression = compression.clone();
    }
    let topic = kafka.topic_name(Topic::CartUpdates.as_str());
    create_topics(&kafka, &topic).await?;
    let metrics = Metrics::new().context("metrics")?;
    let total = settings.events;
    eprintln!(
        "b4: tansu at {}, database {}, {total} events, {} writers, relay batch {}, compression {}",
        broker.bootstrap(),
        database.name,
        settings.writers,
        settings.relay.batch_size,
        kafka.kafka_compression
    );

    // One relay for the whole run, as in the API process; warmed up (producer session, metadata,
    // LISTEN) before anything is timed.
    let (stop, stopped) = watch::channel(false);
    let relay = Relay::new(
        pool.clone(),
        kafka.clone(),
        settings.relay.clone(),
        metrics.clone(),
    )?;
    let relay_task = tokio::spawn(relay.run(stopped));
    Generator::new(0, settings.writers, u64::MAX)
        .append_transactions(&pool, 100, None, None)
        .await?;
    wait_published(&metrics, 100, Duration::from_secs(60)).await?;

    // 1. Writers paced at a steady rate the relay can follow: the latency target.
    let paced = if settings.paced_events > 0 {
        spans.reset();
        let live = live_phase(
            &settings,
            &pool,
            &kafka,
            &metrics,
            &topic,
            settings.paced_events,
            Some(settings.rate),
        )
        .await?;
        Some((live, spans.snapshot()))
    } else {
        None
    };

    // 2. Writers as fast as they can while the relay runs.
    spans.reset();
    let flood = live_phase(&settings, &pool, &kafka, &metrics, &topic, total, None).await?;
    let flood_rounds = spans.snapshot();

    // 3. Backlog: rows written while the relay is held off, then released; the peer runs on the
    //    same payloads before and after.
    let mut lock = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(RELAY_LOCK)
        .execute(&mut *lock)
        .await?;
    let prefill_started = Instant::now();
    run_writers(&pool, settings.writers, total, 1, None, None).await?;
    let prefill = prefill_started.elapsed();
    let messages = load_pending(&pool, &kafka).await?;
    if messages.len() != total {
        bail!("backlog holds {} rows, expected {total}", messages.len());
    }
    let payload_bytes =
        messages.iter().map(|m| m.payload.len()).sum::<usize>() as f64 / total as f64;
    let peer_before = direct_produce(&kafka, &messages).await?;

    spans.reset();
    let baseline = metrics.outbox_published.get();
    eprintln!("b4: backlog drain started");
    let started = Instant::now();
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(RELAY_LOCK)
        .execute(&mut *lock)
        .await?;
    drop(lock);
    // Wake the relay now rather than at its next poll.
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(outbox::NOTIFY_CHANNEL)
        .execute(&pool)
        .await?;
    wait_published(&metrics, baseline + total as u64, Duration::from_secs(600)).await?;
    eprintln!("b4: backlog drain ended");
    let backlog = Run {
        events: total,
        elapsed: started.elapsed(),
        latencies_us: Vec::new(),
    };
    let backlog_rounds = spans.snapshot();
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
        .fetch_one(&pool)
        .await?;
    if pending != 0 {
        bail!("{pending} rows still pending after the backlog drain");
    }
    let peer_after = direct_produce(&kafka, &messages).await?;
    let _ = stop.send(true);
    relay_task.await?;

    // Table.
    let peer_rate = (peer_before.rate() + peer_after.rate()) / 2.0;
    let mut rows = vec![
        Row::new(
            "peer: direct produce, before",
            &peer_before,
            peer_rate,
            "—",
            None,
        ),
        Row::new(
            "peer: direct produce, after",
            &peer_after,
            peer_rate,
            "—",
            None,
        ),
        Row::new(
            "relay: backlog drain",
            &backlog,
            peer_rate,
            "≥ 0.5× peer",
            Some(backlog.rate() / peer_rate >= THROUGHPUT_TARGET),
        ),
        Row::new(
            "relay: live, writers unthrottled",
            &flood.run,
            peer_rate,
            "p99 < 100 ms",
            Some(percentile(&flood.run.latencies_us, 99.0) / 1000.0 < LATENCY_TARGET_MS),
        ),
    ];
    let paced_label = format!("relay: live, writers at {:.0} events/s", settings.rate);
    if let Some((paced, _)) = &paced {
        rows.push(Row::new(
            &paced_label,
            &paced.run,
            peer_rate,
            "p99 < 100 ms",
            Some(percentile(&paced.run.latencies_us, 99.0) / 1000.0 < LATENCY_TARGET_MS),
        ));
    }
    let append = Run {
        events: total,
        elapsed: prefill,
        latencies_us: Vec::new(),
    };
    rows.push(Row::new(
        "context: outbox append only (relay held off)",
        &append,
        peer_rate,
        "—",
        None,
    ));
    print_table(&rows);

    println!();
    println!(
        "payload {payload_bytes:.0} bytes on average; headers event_type, content-type, event_id, \
         traceparent; topic {topic} ({} partitions); producer KafkaConfig::producer_config() \
         (compression {}); relay batch {}; {} writers",
        kafka.kafka_topic_partitions,
        kafka.kafka_compression,
        settings.relay.batch_size,
        settings.writers
    );
    let mut violations = 0;
    for (name, live, rounds) in paced
        .iter()
        .map(|(live, rounds)| ("paced", live, rounds))
        .chain([("unthrottled", &flood, &flood_rounds)])
    {
        violations += live.order_violations;
        live.describe(name, rounds);
    }
    println!("backlog: relay {backlog_rounds}");

    drop(database);
    drop(broker);
    if violations > 0 {
        bail!("{violations} events reached the topic out of commit order for their key");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Phases

struct Run {
    events: usize,
    elapsed: Duration,
    /// Per-event latency in microseconds (empty when not measured).
    latencies_us: Vec<i64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

struct Live {
    run: Run,
    transactions: usize,
    produce_us: Vec<i64>,
    duplicates: usize,
    order_violations: usize,
}

impl Live {
    fn describe(&self, name: &str, rounds: &str) {
        let ms = |values: &[i64], p| percentile(values, p) / 1000.0;
        println!(
            "{name}: {} transactions; commit→consumer p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} ms; \
             commit→produce (message timestamp, ms resolution) p50 {:.1} p99 {:.1} ms; \
             {} duplicates; order per key: {}",
            self.transactions,
            ms(&self.run.latencies_us, 50.0),
            ms(&self.run.latencies_us, 90.0),
            ms(&self.run.latencies_us, 99.0),
            ms(&self.run.latencies_us, 100.0),
            ms(&self.produce_us, 50.0),
            ms(&self.produce_us, 99.0),
            self.duplicates,
            if self.order_violations == 0 {
                "kept".to_owned()
            } else {
                format!("{} VIOLATIONS", self.order_violations)
            }
        );
        println!("{name}: relay {rounds}");
    }
}

/// Commit instant of one event: (event id, commit time in µs since the epoch, writer, sequence of
/// the event within its writer).
type Commit = (Uuid, i64, usize, u64);

async fn live_phase(
    settings: &Settings,
    pool: &PgPool,
    kafka: &KafkaConfig,
    metrics: &Metrics,
    topic: &str,
    total: usize,
    rate: Option<f64>,
) -> anyhow::Result<Live> {
    let consumer = LiveConsumer::start(kafka, topic, total, Duration::from_secs(60)).await?;
    let baseline = metrics.outbox_published.get();
    let commits = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let watcher = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            wait_published(&metrics, baseline + total as u64, Duration::from_secs(600)).await
        })
    };
    let seed = if rate.is_some() { 3 } else { 2 };
    let transactions = run_writers(
        pool,
        settings.writers,
        total,
        seed,
        rate,
        Some(commits.clone()),
    )
    .await?;
    let last_published = watcher.await??;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
        .fetch_one(pool)
        .await?;
    if pending != 0 {
        bail!("{pending} rows still pending after the relay published {total}");
    }
    let consumed = consumer.finish().await?;

    let commits = std::mem::take(&mut *commits.lock().expect("commits"));
    let first_commit_us = commits.iter().map(|c| c.1).min().unwrap_or_default();
    let elapsed_us = (last_published - first_commit_us).max(1);
    let by_id: HashMap<Uuid, &Commit> = commits.iter().map(|c| (c.0, c)).collect();

    let mut latencies_us = Vec::with_capacity(total);
    let mut produce_us = Vec::with_capacity(total);
    let mut seen: HashMap<Uuid, ()> = HashMap::with_capacity(total);
    let mut last_seq: HashMap<&str, u64> = HashMap::new();
    let mut duplicates = 0;
    let mut order_violations = 0;
    for message in &consumed {
        let Some(commit) = by_id.get(&message.event_id) else {
            continue; // warm-up or another phase
        };
        if seen.insert(message.event_id, ()).is_some() {
            duplicates += 1;
            continue;
        }
        latencies_us.push(message.received_us - commit.1);
        if let Some(timestamp_ms) = message.timestamp_ms {
            produce_us.push(timestamp_ms * 1000 - commit.1);
        }
        if let Some(previous) = last_seq.insert(message.key.as_str(), commit.3)
            && previous > commit.3
        {
            order_violations += 1;
        }
    }
    if seen.len() != total {
        bail!(
            "the consumer received {} of the {total} events committed ({} messages, {duplicates} duplicates)",
            seen.len(),
            consumed.len()
        );
    }

    Ok(Live {
        run: Run {
            events: total,
            elapsed: Duration::from_micros(elapsed_us as u64),
            latencies_us,
        },
        transactions,
        produce_us,
        duplicates,
        order_violations,
    })
}

/// Waits until the relay's published counter reaches `target`; returns that instant (µs since the
/// epoch). The counter moves right after each round's commit.
async fn wait_published(metrics: &Metrics, target: u64, limit: Duration) -> anyhow::Result<i64> {
    let deadline = Instant::now() + limit;
    loop {
        if metrics.outbox_published.get() >= target {
            return Ok(Utc::now().timestamp_micros());
        }
        if Instant::now() > deadline {
            bail!(
                "the relay published {} of {target} rows within {limit:?} ({} failed rounds)",
                metrics.outbox_published.get(),
                metrics.outbox_publish_errors.get()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Writers

/// Cart events of a shard of the users: writer `w` owns the users `u` with `u % writers == w`, so
/// each key's commit order is the order its writer committed in.
struct Generator {
    writer: usize,
    rng: StdRng,
    users: Vec<String>,
    next_item: i64,
    sequence: u64,
}

impl Generator {
    fn new(writer: usize, writers: usize, seed: u64) -> Generator {
        let users = (0..USERS)
            .filter(|user| user % writers == writer)
            .map(user_id)
            .collect();
        Generator {
            writer,
            rng: StdRng::seed_from_u64(seed ^ (writer as u64).wrapping_mul(0x9e37_79b9)),
            users,
            next_item: 1 + writer as i64 * 10_000_000,
            sequence: 0,
        }
    }

    /// One transaction's `count` events of one user: a multi-item add, or a single add, update
    /// or delete.
    fn transaction(&mut self, count: usize) -> Vec<OutboxEvent> {
        let user = self.users[self.rng.random_range(0..self.users.len())].clone();
        let single = match self.rng.random_range(0..3) {
            0 => "cart_item_added",
            1 => "cart_item_updated",
            _ => "cart_item_deleted",
        };
        (0..count)
            .map(|_| {
                let item = CartItem {
                    id: self.next_item,
                    product_id: self.rng.random_range(1..=5_000),
                    quantity: self.rng.random_range(1..=5),
                    user_id: user.clone(),
                };
                self.next_item += 1;
                item_event(
                    if count == 1 {
                        single
                    } else {
                        "cart_item_added"
                    },
                    &item,
                )
            })
            .collect()
    }

    fn traceparent(&mut self) -> String {
        format!(
            "00-{:032x}-{:016x}-01",
            self.rng.random::<u128>() | 1,
            self.rng.random::<u64>() | 1
        )
    }

    /// Appends transactions until `budget` events are claimed; records each event's commit.
    async fn append_transactions(
        mut self,
        pool: &PgPool,
        budget: usize,
        rate: Option<f64>,
        commits: Option<(&AtomicUsize, &Mutex<Vec<Commit>>)>,
    ) -> anyhow::Result<usize> {
        let mut local: Vec<Commit> = Vec::new();
        let mut transactions = 0;
        let mut appended = 0;
        let started = tokio::time::Instant::now();
        loop {
            // Paced writers start each transaction on schedule (catching up when late).
            if let Some(rate) = rate {
                let due = started + Duration::from_secs_f64(appended as f64 / rate);
                tokio::time::sleep_until(due).await;
            }
            // 1–10 events per transaction (uniform), cut at the budget.
            let wanted = self.rng.random_range(1..=10usize);
            let count = match commits {
                Some((claimed, _)) => {
                    let start = claimed.fetch_add(wanted, Ordering::Relaxed);
                    if start >= budget {
                        break;
                    }
                    wanted.min(budget - start)
                }
                None if appended < budget => wanted.min(budget - appended),
                None => break,
            };
            let events = self.transaction(count);
            appended += events.len();
            let traceparent = Some(self.traceparent());
            let ids = with_client_traceparent(traceparent, async {
                let mut tx = pool.begin().await?;
                let ids = outbox::append(&mut tx, &events)
                    .await
                    .map_err(|error| sqlx::Error::Protocol(error.to_string()))?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(ids)
            })
            .await?;
            let committed = Utc::now().timestamp_micros();
            transactions += 1;
            for id in ids {
                local.push((id, committed, self.writer, self.sequence));
                self.sequence += 1;
            }
        }
        if let Some((_, shared)) = commits {
            shared.lock().expect("commits").extend(local);
        }
        Ok(transactions)
    }
}

fn user_id(user: usize) -> String {
    // Shaped like the identity provider's ids (`user_` + 27 characters).
    format!(
        "user_2{:026x}",
        (user as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c)
    )
}

/// Runs `writers` concurrent writers until `total` events are committed (at `rate` events/s in
/// all, or as fast as they can); returns the number of transactions.
async fn run_writers(
    pool: &PgPool,
    writers: usize,
    total: usize,
    seed: u64,
    rate: Option<f64>,
    commits: Option<Arc<Mutex<Vec<Commit>>>>,
) -> anyhow::Result<usize> {
    let claimed = Arc::new(AtomicUsize::new(0));
    let commits = commits.unwrap_or_default();
    let mut tasks = Vec::with_capacity(writers);
    for writer in 0..writers {
        let pool = pool.clone();
        let claimed = claimed.clone();
        let commits = commits.clone();
        // Each writer takes its share of the rate, the writers staggered over one event's time.
        let share = rate.map(|rate| rate / writers as f64);
        let offset = rate.map_or(Duration::ZERO, |rate| {
            Duration::from_secs_f64(writer as f64 / rate)
        });
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            Generator::new(writer, writers, seed)
                .append_transactions(&pool, total, share, Some((&claimed, &commits)))
                .await
        }));
    }
    let mut transactions = 0;
    for task in tasks {
        transactions += task.await??;
    }
    Ok(transactions)
}

// ---------------------------------------------------------------------------------------------
// Peer: direct produce

struct Prepared {
    topic: String,
    key: String,
    event_id: String,
    event_type: String,
    traceparent: Option<String>,
    payload: Vec<u8>,
}

/// The pending rows, as the relay would send them (same topic, key, headers and payload bytes).
async fn load_pending(pool: &PgPool, kafka: &KafkaConfig) -> anyhow::Result<Vec<Prepared>> {
    type PendingRow = (Uuid, String, String, String, Value, Option<String>);
    let rows: Vec<PendingRow> = sqlx::query_as(
        "SELECT event_id, topic, event_key, event_type, payload, traceparent \
         FROM outbox_pending JOIN outbox USING (id) ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(event_id, topic, key, event_type, payload, traceparent)| Prepared {
                topic: kafka.topic_name(&topic),
                key,
                event_id: event_id.to_string(),
                event_type,
                traceparent,
                payload: serde_json::to_vec(&payload).unwrap_or_default(),
            },
        )
        .collect())
}

fn headers(message: &Prepared) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "event_type",
            value: Some(message.event_type.as_str()),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
        .insert(Header {
            key: "event_id",
            value: Some(message.event_id.as_str()),
        });
    if let Some(traceparent) = &message.traceparent {
        headers = headers.insert(Header {
            key: "traceparent",
            value: Some(traceparent.as_str()),
        });
    }
    headers
}

/// Enqueues every message on a fresh producer (relay settings), then awaits every
/// acknowledgement; acknowledgements are timed by a collector task running alongside.
async fn direct_produce(kafka: &KafkaConfig, messages: &[Prepared]) -> anyhow::Result<Run> {
    let producer: FutureProducer = kafka.producer_config().create()?;
    // Warm-up (metadata, producer id), as the relay's long-lived producer is.
    if let Some(first) = messages.first() {
        producer
            .send(
                FutureRecord::to(&first.topic)
                    .key("b4-warm-up")
                    .payload(first.payload.as_slice())
                    .headers(headers(first)),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(error, _)| error)?;
    }
    let (sender, mut receiver) = mpsc::unbounded_channel::<(Instant, DeliveryFuture)>();
    let collector = tokio::spawn(async move {
        let mut pending = FuturesUnordered::new();
        let mut latencies_us = Vec::new();
        let mut failures = 0usize;
        let mut last_ack = None;
        let mut open = true;
        while open || !pending.is_empty() {
            tokio::select! {
                item = receiver.recv(), if open => match item {
                    Some((enqueued, delivery)) => pending.push(async move {
                        let result = delivery.await;
                        (enqueued, result, Instant::now())
                    }),
                    None => open = false,
                },
                Some((enqueued, result, acked)) = pending.next(), if !pending.is_empty() => {
                    match result {
                        Ok(Ok(_)) => latencies_us.push(
                            (acked - enqueued).as_micros() as i64,
                        ),
                        _ => failures += 1,
                    }
                    last_ack = Some(acked);
                }
            }
        }
        (latencies_us, failures, last_ack)
    });

    let started = Instant::now();
    for message in messages {
        let mut record = FutureRecord::to(&message.topic)
            .key(message.key.as_str())
            .payload(message.payload.as_slice())
            .headers(headers(message));
        let enqueued = Instant::now();
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    let _ = sender.send((enqueued, delivery));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
    }
    drop(sender);
    let (latencies_us, failures, last_ack) = collector.await?;
    if failures > 0 {
        bail!(
            "direct produce: {failures} of {} messages failed",
            messages.len()
        );
    }
    let elapsed = last_ack.map_or(started.elapsed(), |at| at - started);
    Ok(Run {
        events: messages.len(),
        elapsed,
        latencies_us,
    })
}

// ---------------------------------------------------------------------------------------------
// Consumer of the live phase

struct Consumed {
    event_id: Uuid,
    key: String,
    received_us: i64,
    timestamp_ms: Option<i64>,
}

struct LiveConsumer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<Consumed>>>,
}

impl LiveConsumer {
    /// Assigns every partition of `topic` at its current end, then reads in a thread until
    /// `finish` (at most `limit` after it).
    async fn start(
        kafka: &KafkaConfig,
        topic: &str,
        expected: usize,
        limit: Duration,
    ) -> anyhow::Result<Self> {
        let mut config = kafka.consumer_config(&format!("plamatio-b4-{}", Uuid::new_v4().simple()));
        config
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "10");
        let consumer: BaseConsumer = config.create()?;
        let topic = topic.to_owned();
        let consumer = tokio::task::spawn_blocking(move || -> anyhow::Result<BaseConsumer> {
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            let partitions = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len()) as i32;
            if partitions == 0 {
                bail!("topic {topic} has no partitions");
            }
            let mut assignment = TopicPartitionList::new();
            for partition in 0..partitions {
                let (_, high) =
                    consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
                assignment.add_partition_offset(&topic, partition, Offset::Offset(high))?;
            }
            consumer.assign(&assignment)?;
            Ok(consumer)
        })
        .await??;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut messages = Vec::with_capacity(expected + expected / 10);
            let mut deadline = None;
            loop {
                let Some(result) = consumer.poll(Duration::from_millis(50)) else {
                    // Every event was acknowledged before `finish`: once the topic is idle after
                    // it, the consumer has seen them all.
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    continue;
                };
                if flag.load(Ordering::Relaxed) {
                    let at = *deadline.get_or_insert_with(|| Instant::now() + limit);
                    if Instant::now() > at {
                        break;
                    }
                }
                let received_us = Utc::now().timestamp_micros();
                let message = result?;
                let event_id = message
                    .headers()
                    .and_then(|headers| {
                        headers
                            .iter()
                            .find(|h| h.key == "event_id")
                            .and_then(|h| h.value)
                    })
                    .and_then(|value| std::str::from_utf8(value).ok())
                    .and_then(|value| Uuid::parse_str(value).ok())
                    .ok_or_else(|| anyhow!("message without a valid event_id header"))?;
                messages.push(Consumed {
                    event_id,
                    key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    received_us,
                    timestamp_ms: message.timestamp().to_millis(),
                });
            }
            Ok(messages)
        });
        Ok(LiveConsumer { stop, task })
    }

    /// Reads what is left (every event was acknowledged before) and returns every message.
    async fn finish(self) -> anyhow::Result<Vec<Consumed>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

// ---------------------------------------------------------------------------------------------
// Report

struct Row {
    path: String,
    events: usize,
    seconds: f64,
    rate: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    ratio: f64,
    target: &'static str,
    pass: Option<bool>,
}

impl Row {
    fn new(path: &str, run: &Run, peer_rate: f64, target: &'static str, pass: Option<bool>) -> Row {
        let latency =
            |p| (!run.latencies_us.is_empty()).then(|| percentile(&run.latencies_us, p) / 1000.0);
        Row {
            path: path.to_owned(),
            events: run.events,
            seconds: run.elapsed.as_secs_f64(),
            rate: run.rate(),
            p50: latency(50.0),
            p99: latency(99.0),
            ratio: run.rate() / peer_rate,
            target,
            pass,
        }
    }
}

fn print_table(rows: &[Row]) {
    let ms = |value: Option<f64>| value.map_or("—".to_owned(), |v| format!("{v:.1} ms"));
    println!();
    println!(
        "| path | events | seconds | events/s | p50 | p99 | ratio vs peer | target | result |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {:.2} | {:.0} | {} | {} | {:.2}× | {} | {} |",
            row.path,
            row.events,
            row.seconds,
            row.rate,
            ms(row.p50),
            ms(row.p99),
            row.ratio,
            row.target,
            match row.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "—",
            }
        );
    }
}

/// The `p`th percentile (nearest rank) of `values`, 0 when empty.
fn percentile(values: &[i64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

// ---------------------------------------------------------------------------------------------
// Relay round timing from its tracing spans (`outbox.relay_round` and its phases)

/// The phases of a round, in the order they are printed (see `relay::ROUND_SPAN`).
const PHASES: [&str; 3] = [CLAIM_SPAN, PUBLISH_SPAN, MARK_SPAN];

#[derive(Clone, Default)]
struct SpanStats {
    inner: Arc<Mutex<HashMap<&'static str, SpanStat>>>,
}

/// Rounds of one kind (with rows, or empty): how many, their total time and messages, and the
/// total time of each phase within those rounds.
#[derive(Clone, Copy, Default)]
struct SpanStat {
    count: u64,
    total: Duration,
    messages: u64,
    phases: [Duration; 3],
}

struct SpanStart {
    at: Instant,
    messages: u64,
    /// Time of the round's phases so far (children add theirs when they close).
    phases: [Duration; 3],
}

struct MessagesField(u64);

impl Visit for MessagesField {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "messages" {
            self.0 = value;
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "messages" {
            self.0 = value.max(0) as u64;
        }
    }
    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

impl SpanStats {
    fn reset(&self) {
        self.inner.lock().expect("span stats").clear();
    }

    /// Per round with rows: its time and each phase's, averaged over those rounds only (a phase of
    /// an empty round is counted with the empty rounds).
    fn snapshot(&self) -> String {
        let stats = self.inner.lock().expect("span stats");
        let stat = |name| stats.get(name).copied().unwrap_or_default();
        let (round, empty) = (stat(ROUND), stat(EMPTY_ROUND));
        let ms = |total: Duration, count: u64| total.as_secs_f64() * 1000.0 / count.max(1) as f64;
        let [claim, publish, mark] = round.phases.map(|phase| ms(phase, round.count));
        let whole = ms(round.total, round.count);
        format!(
            "{} rounds with rows ({:.0} rows each), {whole:.1} ms per round: claim (query, decoding \
             and enqueueing each row) {claim:.1} ms, Kafka (last enqueue → last ack) {publish:.1} ms, \
             mark (delete and commit) {mark:.1} ms, the rest (transaction, lock, results) {:.1} ms; \
             {} empty rounds of {:.1} ms",
            round.count,
            round.messages as f64 / round.count.max(1) as f64,
            whole - claim - publish - mark,
            empty.count,
            ms(empty.total, empty.count),
        )
    }
}

/// The statistics keys of relay rounds that published rows, and of those that found nothing.
const ROUND: &str = ROUND_SPAN;
const EMPTY_ROUND: &str = "outbox.relay_round (empty)";

impl<S> Layer<S> for SpanStats
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut messages = MessagesField(0);
            attrs.record(&mut messages);
            span.extensions_mut().insert(SpanStart {
                at: Instant::now(),
                messages: messages.0,
                phases: Default::default(),
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut messages = MessagesField(0);
            values.record(&mut messages);
            if messages.0 > 0
                && let Some(start) = span.extensions_mut().get_mut::<SpanStart>()
            {
                start.messages = messages.0;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some((elapsed, messages, phases)) = span
            .extensions()
            .get::<SpanStart>()
            .map(|start| (start.at.elapsed(), start.messages, start.phases))
        else {
            return;
        };
        if let Some(phase) = PHASES.iter().position(|name| *name == span.name()) {
            if let Some(round) = span.parent().filter(|parent| parent.name() == ROUND)
                && let Some(start) = round.extensions_mut().get_mut::<SpanStart>()
            {
                start.phases[phase] += elapsed;
            }
            return;
        }
        if span.name() != ROUND {
            return;
        }
        let mut stats = self.inner.lock().expect("span stats");
        let stat = stats
            .entry(if messages == 0 { EMPTY_ROUND } else { ROUND })
            .or_default();
        stat.count += 1;
        stat.total += elapsed;
        stat.messages += messages;
        for (total, phase) in stat.phases.iter_mut().zip(phases) {
            *total += phase;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Environment: tansu and PostgreSQL

/// Creates the Plamatio topics and waits until `topic` has its partitions.
async fn create_topics(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut problem = String::new();
    while Instant::now() < deadline {
        match kafka.ensure_topics().await {
            Ok(()) => {
                let config = kafka.consumer_config("plamatio-b4-metadata");
                let name = topic.to_owned();
                let partitions = tokio::task::spawn_blocking(move || {
                    let consumer: BaseConsumer = config.create().ok()?;
                    let metadata = consumer
                        .fetch_metadata(Some(&name), Duration::from_secs(5))
                        .ok()?;
                    metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == name && t.error().is_none())
                        .map(|t| t.partitions().len())
                })
                .await?;
                if partitions.unwrap_or(0) > 0 {
                    return Ok(());
                }
                problem = format!("{topic} has no partitions yet");
            }
            Err(error) => problem = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("topics not created within 30 s: {problem}")
}

/// A fresh, migrated database; dropped (with its connections) on drop.
struct Database {
    server: String,
    name: String,
    pool: PgPool,
}

impl Database {
    fn server() -> String {
        std::env::var("B4_DATABASE_SERVER").unwrap_or_else(|_| database_server_url())
    }

    async fn create() -> anyhow::Result<Database> {
        let server = Database::server();
        let (name, url) = create_scratch_database(&server, "plamatio_b4").await;
        let database = Database {
            server,
            name,
            // Writers + the relay's round and LISTEN connections + checks.
            pool: db::pool_options(&url)
                .max_connections(24)
                .acquire_timeout(Duration::from_secs(30))
                .connect_lazy(&url)?,
        };
        db::migrate(&database.pool).await?;
        Ok(database)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        drop_scratch_database(self.server.clone(), self.name.clone());
    }
}
