//! Observability: Prometheus metrics that count exactly what happened, OpenTelemetry spans received
//! by a real OTLP/gRPC endpoint (with the client's `traceparent` as parent and SQL child spans), log
//! lines that carry the request id and the cause, and a dashboard and alert rules that only use
//! metrics the API exports.

// Its own test binary (see Cargo.toml): it installs tracing subscribers, and tracing caches per
// callsite whether anyone listens, process-wide, so tests that run without one in the same process
// would silence its spans.
#[allow(dead_code, unused_imports)]
mod common;

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use common::TestApp;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use plamatio_api::telemetry;
use plamatio_api::telemetry::LogFormat;
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;

fn sample_value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .filter(|sample| labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v)))
        .map(|sample| match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

async fn scrape(app: &TestApp) -> prometheus_parse::Scrape {
    let response = app.send(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(response.status, 200);
    let text = String::from_utf8(response.raw).unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text")
}

#[tokio::test]
async fn request_counters_equal_the_requests_made() {
    let app = TestApp::new().await;
    for _ in 0..3 {
        assert_eq!(app.get("/products/get/1").await.status, 200);
    }
    app.get("/products/get/999").await;
    app.get("/products/get/abc").await;
    app.send(Method::GET, "/products/all", None, None, &[])
        .await; // 401
    app.get("/no/such/route").await;
    let scrape = scrape(&app).await;
    let requests = |route: &str, status: &str| {
        sample_value(
            &scrape,
            "http_server_requests_total",
            &[("route", route), ("method", "GET"), ("status", status)],
        )
    };
    assert_eq!(requests("/products/get/:id", "200"), 3.0);
    assert_eq!(requests("/products/get/:id", "404"), 1.0);
    assert_eq!(requests("/products/get/:id", "400"), 1.0);
    assert_eq!(requests("/products/all", "401"), 1.0);
    // unknown paths share one label value, so cardinality stays bounded
    assert_eq!(requests("unmatched", "404"), 1.0);
    assert!(
        !scrape
            .samples
            .iter()
            .any(|s| s.labels.get("route").is_some_and(|r| r.contains("999"))),
        "raw paths never become labels"
    );
    let histogram_count = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "http_server_request_duration_seconds"
                && s.labels.get("route") == Some("/products/get/:id")
        })
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.last().map(|b| b.count).unwrap_or(0.0)
            }
            _ => 0.0,
        })
        .expect("duration histogram");
    assert_eq!(histogram_count, 5.0);
    assert_eq!(sample_value(&scrape, "plamatio_build_info", &[]), 1.0);
    assert!(sample_value(&scrape, "db_pool_connections", &[("state", "max")]) >= 1.0);
    // /metrics itself is in flight while it renders
    assert_eq!(
        sample_value(&scrape, "http_server_requests_in_flight", &[]),
        1.0
    );
}

#[tokio::test]
async fn cache_hit_and_miss_counts_match_the_reads() {
    let app = TestApp::new().await;
    for _ in 0..4 {
        app.get("/categories/all").await;
    }
    app.get("/products/get/2").await;
    let scrape = scrape(&app).await;
    let lookups = |keyspace: &str, result: &str| {
        sample_value(
            &scrape,
            "cache_lookups_total",
            &[("keyspace", keyspace), ("result", result)],
        )
    };
    assert_eq!(lookups("categories-cache", "miss"), 1.0);
    assert_eq!(lookups("categories-cache", "hit"), 3.0);
    assert_eq!(lookups("product-cache", "miss"), 1.0);
    assert_eq!(lookups("product-cache", "hit"), 0.0);
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[async_trait::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            AnyValue::BoolValue(b) => Some(b.to_string()),
            other => Some(format!("{other:?}")),
        })
}

/// An OTLP/gRPC endpoint collecting what it receives, and a tracer provider exporting to it.
async fn otlp_receiver() -> (
    Receiver,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    opentelemetry_sdk::trace::SdkTracerProvider,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let receiver = Receiver::default();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve(address),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let provider = telemetry::tracer_provider(Some(&format!("http://{address}"))).unwrap();
    (receiver, server, provider)
}

/// The subscriber `serve` installs (JSON logs to nowhere), tracing with `provider` if given.
fn subscriber(
    provider: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(telemetry::layers(LogFormat::Json, std::io::sink, provider))
}

/// Everything the provider's exporter received, after flushing it.
async fn exported(
    receiver: &Receiver,
    provider: &opentelemetry_sdk::trace::SdkTracerProvider,
) -> Vec<Span> {
    let flusher = provider.clone();
    tokio::task::spawn_blocking(move || flusher.force_flush())
        .await
        .unwrap()
        .unwrap();
    receiver.spans.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_sampler_leaves_out_export_nothing_and_sampled_ones_whole_traces() {
    use axum::body::Body;
    use axum::http::Request;
    use plamatio_api::http::layers::EdgeConfig;

    let (receiver, server, provider) = otlp_receiver().await;
    let guard = tracing::subscriber::set_default(subscriber(Some(&provider)));
    // parent-based, nothing of its own: only requests whose client trace is sampled are traced
    let sampler = telemetry::Sampler::parse(Some("parentbased_always_off"), None).unwrap();
    let untraced = tracing::Dispatch::new(subscriber(None));
    let app = TestApp::new().await;
    let edge = EdgeConfig {
        cors_origins: vec![],
        cors_credentials: false,
        cors_localhost: false,
        request_timeout: Duration::from_secs(10),
        http_metrics: true,
        trace_sampling: Some(telemetry::RequestSampling::new(sampler, untraced)),
    };
    let router = plamatio_api::app(app.state.clone(), &edge);
    let sampled_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let send = |request_id: &str, traceparent: Option<String>| {
        let mut request = Request::get("/products/get/5")
            .header("authorization", format!("Bearer {}", app.storefront_key))
            .header("x-request-id", request_id);
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let router = router.clone();
        let request = request.body(Body::empty()).unwrap();
        // the answer is read to its end: the server span closes with its body
        async move {
            let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
            let status = response.status();
            http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap();
            status
        }
    };
    for n in 0..3 {
        assert_eq!(send(&format!("unsampled-{n}"), None).await, 200);
    }
    let unsampled_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    assert_eq!(
        send("unsampled-parent", Some(unsampled_parent.into())).await,
        200
    );
    let sampled_parent = format!("00-{sampled_trace}-00f067aa0ba902b7-01");
    assert_eq!(send("sampled-parent", Some(sampled_parent)).await, 200);
    drop(guard);

    let spans = exported(&receiver, &provider).await;
    let request_ids: Vec<Option<String>> = spans
        .iter()
        .filter(|span| span.kind == 2)
        .map(|span| attribute(span, "request_id"))
        .collect();
    assert_eq!(
        request_ids,
        vec![Some("sampled-parent".to_owned())],
        "only the sampled request has a server span"
    );
    assert!(
        spans.len() >= 2,
        "the sampled request's children are exported too: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for span in &spans {
        assert_eq!(
            hex(&span.trace_id),
            sampled_trace,
            "{} belongs to another trace",
            span.name
        );
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_becomes_a_server_span_under_the_clients_trace_with_sql_children() {
    let (receiver, server, provider) = otlp_receiver().await;
    let guard = tracing::subscriber::set_default(subscriber(Some(&provider)));

    let app = TestApp::new().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent_span}-01");
    let auth = format!("Bearer {}", app.storefront_key);
    let response = app
        .send(
            Method::GET,
            "/products/get/5",
            Some(&auth),
            None,
            &[
                ("traceparent", &traceparent),
                ("x-request-id", "trace-test-1"),
            ],
        )
        .await;
    assert_eq!(response.status, 200);
    drop(guard);
    let spans = exported(&receiver, &provider).await;
    let server_span = spans
        .iter()
        .find(|s| s.name == "GET /products/get/{id}")
        .unwrap_or_else(|| {
            panic!(
                "no server span among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        hex(&server_span.trace_id),
        trace_id,
        "the client's trace continues"
    );
    assert_eq!(
        hex(&server_span.parent_span_id),
        parent_span,
        "the client's span is the parent"
    );
    assert_eq!(server_span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(
        attribute(server_span, "http.route").as_deref(),
        Some("/products/get/{id}")
    );
    assert_eq!(
        attribute(server_span, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attribute(server_span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(server_span, "request_id").as_deref(),
        Some("trace-test-1")
    );
    assert_eq!(
        attribute(server_span, "scope").as_deref(),
        Some("storefront")
    );
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == server_span.span_id)
        .collect();
    // the received tree, for humans reading the test output
    eprintln!("trace {trace_id}");
    eprintln!(
        "  {} ({} µs)",
        server_span.name,
        (server_span.end_time_unix_nano - server_span.start_time_unix_nano) / 1000
    );
    for child in &children {
        eprintln!(
            "    {} ({} µs)",
            child.name,
            (child.end_time_unix_nano - child.start_time_unix_nano) / 1000
        );
    }
    let names: HashSet<&str> = children.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains("db.products.product"),
        "SQL child span: {names:?}"
    );
    assert!(names.contains("cache.get"), "cache child span: {names:?}");
    let sql = children
        .iter()
        .find(|s| s.name == "db.products.product")
        .unwrap();
    assert_eq!(attribute(sql, "db.system").as_deref(), Some("postgresql"));
    server.abort();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_request_logs_one_json_line_with_its_request_id_and_cause() {
    let captured = Captured::default();
    let writer = captured.clone();
    let provider = telemetry::tracer_provider(None).unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(telemetry::layers(
            LogFormat::Json,
            move || writer.clone(),
            Some(&provider),
        ));
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::new().await;
    sqlx::query("ALTER TABLE categories RENAME TO categories_gone")
        .execute(&app.pool)
        .await
        .unwrap();
    let auth = format!("Bearer {}", app.storefront_key);
    let response = app
        .send(
            Method::GET,
            "/categories/all",
            Some(&auth),
            None,
            &[("x-request-id", "req-failing-42")],
        )
        .await;
    assert_eq!(response.status, 500);
    assert_eq!(
        response.body,
        json!({"code": "internal", "message": "internal error", "details": null})
    );

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert_eq!(errors.len(), 1, "logged once: {text}");
    let line = errors[0];
    let rendered = line.to_string();
    assert!(
        rendered.contains("req-failing-42"),
        "request id on the line: {rendered}"
    );
    assert!(
        rendered.contains("categories") && rendered.contains("does not exist"),
        "cause chain on the line: {rendered}"
    );
    let spans = line["spans"].as_array().expect("span list");
    let request_span = spans
        .iter()
        .find(|s| s["name"] == "request")
        .expect("request span");
    assert_eq!(
        request_span["trace_id"].as_str().map(str::len),
        Some(32),
        "trace id on the line: {rendered}"
    );
}

fn metric_names_in(text: &str) -> HashSet<String> {
    // identifiers followed by `{`, `[` or `(`-free context in PromQL that look like our metrics
    let mut names = HashSet::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == '_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':')
            {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            if word.contains('_')
                && (word.ends_with("_total")
                    || word.ends_with("_seconds_bucket")
                    || word.ends_with("_seconds_count")
                    || word.ends_with("_seconds_sum")
                    || word.starts_with("outbox_")
                    || word.starts_with("db_pool")
                    || word.starts_with("sse_")
                    || word.starts_with("http_server_")
                    || word.starts_with("plamatio_"))
            {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

fn exported_families(scrape_text: &str) -> HashSet<String> {
    scrape_text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn family_of(name: &str) -> &str {
    ["_bucket", "_count", "_sum"]
        .iter()
        .fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n))
}

#[tokio::test]
async fn the_dashboard_and_alerts_use_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard_text =
        std::fs::read_to_string(root.join("charts/plamatio/dashboards/plamatio-api.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard_text).expect("dashboard is JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    assert!(dashboard["schemaVersion"].as_i64().unwrap() >= 36);
    let panels = dashboard["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Requests",
        "Errors",
        "Latency",
        "Cache hit ratio",
        "DB pool",
        "Outbox lag",
        "Per route",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "panel {wanted} in {titles:?}"
        );
    }
    let mut ids = HashSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "panel ids are unique"
        );
        assert!(panel["gridPos"]["w"].as_i64().unwrap() > 0);
        if panel["type"] != "row" {
            assert!(
                !panel["targets"].as_array().unwrap().is_empty(),
                "{} has queries",
                panel["title"]
            );
        }
    }
    let alerts =
        std::fs::read_to_string(root.join("charts/plamatio/alerts/plamatio-api.rules.yaml"))
            .unwrap();

    // an unreachable Redis makes the cache error counters appear too
    let app = TestApp::with_cache(common::CacheKind::Redis("redis://127.0.0.1:1".into())).await;
    app.get("/products/all").await;
    let scrape =
        String::from_utf8(app.send(Method::GET, "/metrics", None, None, &[]).await.raw).unwrap();
    let exported = exported_families(&scrape);
    for name in metric_names_in(&dashboard_text)
        .iter()
        .chain(metric_names_in(&alerts).iter())
    {
        assert!(
            exported.contains(family_of(name)),
            "{name} is not exported; exported: {exported:?}"
        );
    }
    for alert in [
        "PlamatioHighErrorRatio",
        "PlamatioHighLatency",
        "PlamatioOutboxLag",
        "PlamatioNotReady",
    ] {
        assert!(alerts.contains(alert), "alert {alert}");
    }
}
