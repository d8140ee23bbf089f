//! The Prometheus registry of the API process and the metric families its modules record into;
//! rendered in text format on `GET /metrics`.

use prometheus::{IntCounterVec, Opts, Registry, TextEncoder};

/// Every metric family the API exports, registered once per process (or per test app).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Cache look-ups by keyspace and result (`hit`, `miss`, `error`).
    pub cache_lookups: IntCounterVec,
    /// Failed cache operations by keyspace and operation (`get`, `put`, `invalidate`).
    pub cache_errors: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "cache_lookups_total",
                "Cache look-ups by keyspace and result",
            ),
            &["keyspace", "result"],
        )?;
        let cache_errors = IntCounterVec::new(
            Opts::new(
                "cache_errors_total",
                "Failed cache operations by keyspace and operation",
            ),
            &["keyspace", "operation"],
        )?;
        registry.register(Box::new(cache_lookups.clone()))?;
        registry.register(Box::new(cache_errors.clone()))?;
        Ok(Metrics {
            registry,
            cache_lookups,
            cache_errors,
        })
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}
