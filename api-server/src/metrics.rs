//! The Prometheus registry of the API process and the metric families its modules record into;
//! rendered in text format on `GET /metrics`.

use std::sync::Arc;

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric family the API exports, registered once per process (or per test app). Cheap to
/// clone: one reference count, however many families there are (the state is cloned per request).
#[derive(Clone)]
pub struct Metrics(Arc<MetricFamilies>);

impl std::ops::Deref for Metrics {
    type Target = MetricFamilies;

    fn deref(&self) -> &MetricFamilies {
        &self.0
    }
}

/// The metric families behind [`Metrics`].
pub struct MetricFamilies {
    registry: Registry,
    /// Requests by route template, method and status.
    pub http_requests: IntCounterVec,
    /// Request duration by route template and method.
    pub http_duration: HistogramVec,
    /// Requests being served.
    pub http_in_flight: IntGauge,
    /// Pooled PostgreSQL connections by state (`idle`, `in_use`) and the pool's maximum (`max`).
    pub db_pool_connections: IntGaugeVec,
    /// Cache look-ups by keyspace and result (`hit`, `miss`, `error`).
    pub cache_lookups: IntCounterVec,
    /// Failed cache operations by keyspace and operation (`get`, `put`, `invalidate`).
    pub cache_errors: IntCounterVec,
    /// 1 while the in-process cache tier in front of Redis follows Redis' invalidation broadcasts.
    pub cache_tracking: IntGauge,
    /// Outbox rows not yet published.
    pub outbox_pending: IntGauge,
    /// Age of the oldest unpublished outbox row, in seconds (0 without a relay).
    pub outbox_oldest_pending_age: Gauge,
    /// Outbox rows the broker acknowledged.
    pub outbox_published: IntCounter,
    /// Relay rounds that failed (broker or database errors).
    pub outbox_publish_errors: IntCounter,
    /// Outbox rows the broker refused for good, moved to `outbox_dead_letter`.
    pub outbox_dead_lettered: IntCounter,
    /// Orders whose provider amount (cents) differs from the server's item total.
    pub order_total_mismatches: IntCounter,
    /// Live event streams refused or ended by a bound, by reason (`user_cap`, `key_cap`,
    /// `lifetime`, `token_expired`).
    pub sse_streams_limited: IntCounterVec,
    /// Analytics requests refused by the per-user/IP quota.
    pub user_events_throttled: IntCounter,
    /// Seconds from a row's transaction to the broker's acknowledgement.
    pub outbox_publish_latency: Histogram,
    /// Open live event streams.
    pub sse_subscribers: IntGauge,
    /// Analytics events accepted by `POST /events/user`.
    pub user_events_accepted: IntCounter,
    /// 1 when PostgreSQL answered the last scrape's check, else 0.
    pub ready: IntGauge,
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
        let build_info = register(
            r,
            IntGaugeVec::new(
                Opts::new("plamatio_build_info", "Build of the running API (always 1)"),
                &["version"],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(Metrics(Arc::new(MetricFamilies {
            http_requests: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "http_server_requests_total",
                        "HTTP requests by route template, method and status",
                    ),
                    &["route", "method", "status"],
                )?,
            )?,
            http_duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "http_server_request_duration_seconds",
                        "HTTP request duration by route template and method",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ]),
                    &["route", "method"],
                )?,
            )?,
            http_in_flight: register(
                r,
                IntGauge::new(
                    "http_server_requests_in_flight",
                    "HTTP requests being served",
                )?,
            )?,
            db_pool_connections: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "db_pool_connections",
                        "PostgreSQL pool connections by state (idle, in_use, max)",
                    ),
                    &["state"],
                )?,
            )?,
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
            cache_tracking: register(
                r,
                IntGauge::new(
                    "cache_tracking",
                    "1 while the in-process cache tier in front of Redis follows its invalidations",
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
            outbox_dead_lettered: register(
                r,
                IntCounter::new(
                    "outbox_dead_lettered_total",
                    "Outbox rows the broker refused for good (moved to outbox_dead_letter)",
                )?,
            )?,
            order_total_mismatches: register(
                r,
                IntCounter::new(
                    "orders_total_mismatch_total",
                    "Orders created with a provider amount that differs from the server's item total",
                )?,
            )?,
            sse_streams_limited: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "sse_streams_limited_total",
                        "Live event streams refused or ended by a bound, by reason",
                    ),
                    &["reason"],
                )?,
            )?,
            user_events_throttled: register(
                r,
                IntCounter::new(
                    "user_events_throttled_total",
                    "POST /events/user requests refused by the per-user/IP quota",
                )?,
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
            ready: register(
                r,
                IntGauge::new("plamatio_ready", "1 when PostgreSQL answers, else 0")?,
            )?,
            registry,
        })))
    }

    /// Samples the pool's gauges (they are read at scrape time).
    pub fn observe_pool(&self, pool: &sqlx::PgPool) {
        let size = i64::from(pool.size());
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        let gauges = &self.db_pool_connections;
        gauges.with_label_values(&["idle"]).set(idle);
        gauges
            .with_label_values(&["in_use"])
            .set((size - idle).max(0));
        gauges
            .with_label_values(&["max"])
            .set(i64::from(pool.options().get_max_connections()));
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}
