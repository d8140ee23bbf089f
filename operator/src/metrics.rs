//! The operator's Prometheus metrics (reconciles, failures by reason, duration, writes, leadership)
//! and the small HTTP server that exposes them on `/metrics` next to `/healthz`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tracing::info;

use crate::error::{Error, Result};

/// How long a watch error keeps `/healthz` failing when no reconcile has succeeded since: watches
/// retry on their own, so only errors that keep coming make the kubelet restart the operator.
pub const WATCH_ERROR_WINDOW: Duration = Duration::from_secs(60);

/// What `/healthz` answers from: the last watch error and the last reconcile that completed.
#[derive(Default)]
pub struct WatchHealth {
    last_error: Option<(Instant, String)>,
    last_reconcile: Option<Instant>,
}

impl WatchHealth {
    /// `Err` with the error while a watch failed within [`WATCH_ERROR_WINDOW`] before `now` and no
    /// reconcile completed after it.
    pub fn check(&self, now: Instant) -> std::result::Result<(), String> {
        match &self.last_error {
            Some((at, error))
                if now.saturating_duration_since(*at) < WATCH_ERROR_WINDOW
                    && self.last_reconcile.is_none_or(|done| done < *at) =>
            {
                Err(error.clone())
            }
            _ => Ok(()),
        }
    }

    pub fn watch_failed(&mut self, at: Instant, error: String) {
        self.last_error = Some((at, error));
    }

    pub fn reconciled(&mut self, at: Instant) {
        self.last_reconcile = Some(at);
    }
}

/// Every metric of the operator, registered in its own registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounter,
    pub failures: IntCounterVec,
    pub duration: Histogram,
    pub writes: IntCounterVec,
    pub unchanged_applies: IntCounter,
    pub watch_errors: IntCounter,
    pub leader: IntGauge,
    pub health: Arc<Mutex<WatchHealth>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("plamatio_operator".to_owned()), None).unwrap_or_default();
        // Names and help texts are constants, so construction cannot fail at run time.
        let reconciles = IntCounter::new("reconciles_total", "Reconciles started")
            .unwrap_or_else(|_| unreachable!("constant metric options are valid"));
        let failures = IntCounterVec::new(
            Opts::new(
                "reconcile_failures_total",
                "Reconciles that failed, by reason",
            ),
            &["reason"],
        )
        .unwrap_or_else(|_| unreachable!("constant metric options are valid"));
        let duration = Histogram::with_opts(
            HistogramOpts::new("reconcile_duration_seconds", "Duration of one reconcile").buckets(
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
        )
        .unwrap_or_else(|_| unreachable!("constant metric options are valid"));
        let writes = IntCounterVec::new(
            Opts::new("writes_total", "Writes to the Kubernetes API, by operation"),
            &["operation"],
        )
        .unwrap_or_else(|_| unreachable!("constant metric options are valid"));
        let unchanged_applies = IntCounter::new(
            "unchanged_applies_total",
            "Server-side applies the API server answered without a change (same resourceVersion): \
             requests, not writes",
        )
        .unwrap_or_else(|_| unreachable!("constant metric options are valid"));
        let watch_errors = IntCounter::new(
            "watch_errors_total",
            "Errors of the watches that trigger reconciles",
        )
        .unwrap_or_else(|_| unreachable!("constant metric options are valid"));
        let leader = IntGauge::new("leader", "1 while this replica holds the leader Lease")
            .unwrap_or_else(|_| unreachable!("constant metric options are valid"));
        for collector in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(writes.clone()),
            Box::new(unchanged_applies.clone()),
            Box::new(watch_errors.clone()),
            Box::new(leader.clone()),
        ] {
            // Registering distinct names in a fresh registry cannot collide.
            let _ = registry.register(collector);
        }
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            writes,
            unchanged_applies,
            watch_errors,
            leader,
            health: Arc::new(Mutex::new(WatchHealth::default())),
        }
    }

    /// Counts a reconcile and returns a guard that observes its duration when dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            started: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    pub fn reconcile_failed(&self, error: &Error) {
        self.failures
            .with_label_values(&[error.metric_label()])
            .inc();
    }

    /// A watch failed (it retries by itself); `/healthz` fails while such errors keep coming.
    pub fn watch_failed(&self, error: String) {
        self.watch_errors.inc();
        if let Ok(mut health) = self.health.lock() {
            health.watch_failed(Instant::now(), error);
        }
    }

    /// A reconcile completed (with or without an error of its own): the watches deliver.
    pub fn reconciled(&self) {
        if let Ok(mut health) = self.health.lock() {
            health.reconciled(Instant::now());
        }
    }

    pub fn wrote(&self, operation: &str) {
        self.writes.with_label_values(&[operation]).inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        let _ = encoder.encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer {
    started: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

/// `/healthz`: 503 while the watches keep failing, so the kubelet restarts an operator that no
/// longer sees changes.
pub async fn healthz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    let verdict = match metrics.health.lock() {
        Ok(health) => health.check(Instant::now()),
        Err(_) => Ok(()),
    };
    match verdict {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("watch failing: {error}"),
        ),
    }
}

/// `/metrics` and `/healthz`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .with_state(metrics)
}

/// Serves [`router`] until the process ends.
pub async fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::Io {
            path: address.to_string(),
            source,
        })?;
    info!(%address, "serving /metrics and /healthz");
    axum::serve(listener, router(metrics))
        .await
        .map_err(|source| Error::Io {
            path: address.to_string(),
            source,
        })
}
