//! The Prometheus registry of the API process and the metric families its modules record into;
//! rendered in text format on `GET /metrics`.

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric family the API exports, registered once per process (or per test app).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Cache look-ups by keyspace and result (`hit`, `miss`, `error`).
    pub cache_lookups: IntCounterVec,
    /// Failed cache operations by keyspace and operation (`get`, `put`, `invalidate`).
    pub cache_errors: IntCounterVec,
    /// Outbox rows not yet published.
    pub outbox_pending: IntGauge,
    /// Age of the oldest unpublished outbox row, in seconds (0 without a relay).
    pub outbox_oldest_pending_age: Gauge,
    /// Outbox rows the broker acknowledged.
    pub outbox_published: IntCounter,
    /// Relay rounds that failed (broker or database errors).
    pub outbox_publish_errors: IntCounter,
    /// Seconds from a row's transaction to the broker's acknowledgement.
    pub outbox_publish_latency: Histogram,
    /// Open live event streams.
    pub sse_subscribers: IntGauge,
    /// Analytics events accepted by `POST /events/user`.
    pub user_events_accepted: IntCounter,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: T,
) -> Result<T, prometheus::Error> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;
        Ok(Metrics {
            cache_lookups: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cache_lookups_total",
                        "Cache look-ups by keyspace and result",
                    ),
                    &["keyspace", "result"],
                )?,
            )?,
            cache_errors: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cache_errors_total",
                        "Failed cache operations by keyspace and operation",
                    ),
                    &["keyspace", "operation"],
                )?,
            )?,
            outbox_pending: register(
                r,
                IntGauge::new("outbox_pending", "Outbox rows not yet published")?,
            )?,
            outbox_oldest_pending_age: register(
                r,
                Gauge::new(
                    "outbox_oldest_pending_age_seconds",
                    "Age of the oldest unpublished outbox row",
                )?,
            )?,
            outbox_published: register(
                r,
                IntCounter::new(
                    "outbox_published_total",
                    "Outbox rows acknowledged by the broker",
                )?,
            )?,
            outbox_publish_errors: register(
                r,
                IntCounter::new("outbox_publish_errors_total", "Failed relay rounds")?,
            )?,
            outbox_publish_latency: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "outbox_publish_latency_seconds",
                        "Seconds from an outbox row's transaction to the broker's acknowledgement",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ]),
                )?,
            )?,
            sse_subscribers: register(
                r,
                IntGauge::new("sse_subscribers", "Open live event streams")?,
            )?,
            user_events_accepted: register(
                r,
                IntCounter::new(
                    "user_events_accepted_total",
                    "Analytics events accepted for user_events",
                )?,
            )?,
            registry,
        })
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}
