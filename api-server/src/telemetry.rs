//! Process-wide telemetry: the tracing subscriber (human-readable lines on a terminal, JSON lines for
//! log shippers, each line with the request id and trace id of its request), OpenTelemetry traces
//! exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (batching, bounded queue, never
//! blocking a request), and W3C `traceparent` propagation in and out.
//!
//! Which requests are traced follows the standard `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`
//! ([`Sampler`]), decided once per request at the edge ([`RequestSampling`]): a request left out
//! runs under a subscriber without the OpenTelemetry layer, so it costs what a request costs with no
//! exporter (building and exporting spans costs far more than serving a cached read).

use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::field::VisitOutput as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, filter};

/// How log lines are written: human-readable, or one JSON object per line for log shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// What `init` set up; `shutdown` flushes the spans still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {error}");
        }
    }
}

/// A tracer provider: exporting in batches to `endpoint` when given, otherwise keeping trace
/// context only (ids for logs and Kafka headers, nothing sent). The resource follows
/// `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`, defaulting the service name to `plamatio-api`.
pub fn tracer_provider(
    endpoint: Option<&str>,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("plamatio-api");
    }
    // Requests are sampled at the edge (`RequestSampling`); what reaches the SDK is recorded.
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn);
    if let Some(endpoint) = endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// The log and trace layers, writing log lines to `writer`. Public so tests can capture them.
pub fn layers<S, W>(
    format: LogFormat,
    writer: W,
    provider: Option<&SdkTracerProvider>,
) -> Vec<Box<dyn Layer<S> + Send + Sync>>
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let mut layers: Vec<Box<dyn Layer<S> + Send + Sync>> = Vec::new();
    let logs = tracing_subscriber::fmt::layer().with_writer(writer);
    // The log layer does not see the client spans of database and cache calls: they exist for
    // traces, a log line names its request through the request span anyway, and formatting their
    // fields for every call was a measurable share of a cached read. Without an OpenTelemetry
    // layer nobody wants them: `stdout_subscriber` then turns them off globally, so they are not
    // even created.
    let logged = without_trace_only_spans();
    layers.push(match format {
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_filter(logged)
            .boxed(),
        // Colours only for a terminal: styling every span's fields costs ~2 % of a cached read.
        LogFormat::Pretty => logs
            .fmt_fields(LogFields)
            .with_ansi(std::io::stdout().is_terminal())
            .with_filter(logged)
            .boxed(),
    });
    if let Some(provider) = provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("plamatio-api"))
                .with_error_records_to_exceptions(true)
                .boxed(),
        );
    }
    layers
}

/// The fields of human-readable log lines: tracing-subscriber's default formatting, without the
/// `otel.*` hints that only steer the OpenTelemetry layer (span name and kind, status). The log
/// layer formats a request span's fields when the span is made, whether or not a line is written,
/// so this runs on every request: plain text and numbers are written directly (the same bytes the
/// default formatter writes, without its character-by-character escaping and styling), anything
/// else goes through the default formatter.
struct LogFields;

impl<'a> tracing_subscriber::field::MakeVisitor<Writer<'a>> for LogFields {
    type Visitor = LogVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> LogVisitor<'a> {
        LogVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Formats fields as `name=value` separated by spaces, as
/// [`tracing_subscriber::fmt::format::DefaultVisitor`] does.
struct LogVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: std::fmt::Result,
}

impl LogVisitor<'_> {
    /// Whether the field is written at all (the `otel.*` hints are not), and written here rather
    /// than by the default formatter (which styles names for a terminal, strips `r#` and drops
    /// `log.*` fields).
    fn direct(&self, field: &tracing::field::Field) -> Option<bool> {
        let name = field.name();
        if name.starts_with("otel.") {
            return None;
        }
        Some(
            !self.writer.has_ansi_escapes()
                && name != "message"
                && !name.starts_with("r#")
                && !name.starts_with("log."),
        )
    }

    /// Writes a separator when needed, `name=` and then the value with `value`.
    fn write(
        &mut self,
        field: &tracing::field::Field,
        value: impl FnOnce(&mut Writer<'_>) -> std::fmt::Result,
    ) {
        let separator = if std::mem::take(&mut self.is_empty) {
            ""
        } else {
            " "
        };
        self.result = self
            .writer
            .write_str(separator)
            .and_then(|()| self.writer.write_str(field.name()))
            .and_then(|()| self.writer.write_str("="))
            .and_then(|()| value(&mut self.writer));
    }

    /// Lets the default formatter write one field, continuing this line.
    fn by_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }
}

/// Whether `{:?}` writes the text between two quotes unchanged: printable ASCII without `"`
/// and `\`.
fn is_plain(text: &str) -> bool {
    text.bytes()
        .all(|byte| (0x20..0x7f).contains(&byte) && byte != b'"' && byte != b'\\')
}

impl tracing::field::Visit for LogVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if self.result.is_ok() && self.direct(field).is_some() {
            self.by_default(|visitor| visitor.record_debug(field, value));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match self.direct(field) {
            _ if self.result.is_err() => {}
            None => {}
            Some(true) if is_plain(value) => self.write(field, |writer| {
                writer.write_str("\"")?;
                writer.write_str(value)?;
                writer.write_str("\"")
            }),
            Some(_) => self.by_default(|visitor| visitor.record_str(field, value)),
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match self.direct(field) {
            _ if self.result.is_err() => {}
            None => {}
            Some(true) => self.write(field, |writer| write!(writer, "{value}")),
            Some(false) => self.by_default(|visitor| visitor.record_u64(field, value)),
        }
    }

    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        if self.result.is_ok() && self.direct(field).is_some() {
            self.by_default(|visitor| visitor.record_error(field, value));
        }
    }
}

impl tracing_subscriber::field::VisitOutput<std::fmt::Result> for LogVisitor<'_> {
    fn finish(self) -> std::fmt::Result {
        self.result
    }
}

impl tracing_subscriber::field::VisitFmt for LogVisitor<'_> {
    fn writer(&mut self) -> &mut dyn std::fmt::Write {
        &mut self.writer
    }
}

/// Spans recorded for traces only: one per database query and cache operation.
pub fn is_trace_only(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_span()
        && (metadata.name().starts_with("db.") || metadata.name().starts_with("cache."))
}

/// The default filter, overridden by `RUST_LOG`.
pub fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info,h2=warn,tonic=warn"))
}

/// Installs the global subscriber. With `tracing` off, no OpenTelemetry layer is installed at all.
pub fn init(format: LogFormat, tracing: bool) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|value| !value.trim().is_empty());
    // Without an endpoint no OpenTelemetry layer is installed: spans would go nowhere, and the layer
    // costs a good share of throughput. Clients' `traceparent` still reaches the Kafka headers.
    let provider = match (&endpoint, tracing) {
        (Some(endpoint), true) => match tracer_provider(Some(endpoint)) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("OpenTelemetry exporter not configured ({error}); no traces");
                None
            }
        },
        _ => None,
    };
    if let Err(error) =
        tracing::subscriber::set_global_default(stdout_subscriber(format, provider.as_ref()))
    {
        eprintln!("tracing subscriber already installed: {error}");
    }
    if let (Some(provider), Some(endpoint)) = (&provider, &endpoint) {
        opentelemetry::global::set_tracer_provider(provider.clone());
        let sampler = Sampler::from_env();
        let untraced = tracing::Dispatch::new(stdout_subscriber(format, None));
        let _ = REQUEST_SAMPLING.set(RequestSampling::new(sampler, untraced));
        tracing::info!(endpoint, ?sampler, "exporting traces over OTLP");
    }
    Telemetry { provider }
}

/// The subscriber of `serve`: the `RUST_LOG` filter, log lines on stdout, spans to `provider`.
fn stdout_subscriber(
    format: LogFormat,
    provider: Option<&SdkTracerProvider>,
) -> impl Subscriber + Send + Sync {
    tracing_subscriber::registry()
        .with(env_filter())
        .with(provider.is_none().then(without_trace_only_spans))
        .with(layers(format, std::io::stdout, provider))
}

/// A filter that lets everything but the trace-only spans through. The log layer uses it as its
/// own (per-layer) filter; a subscriber without an OpenTelemetry layer also installs it as a
/// global filter, because a per-layer filter still lets the registry create, enter and close
/// those spans (about 3k instructions per cached read) while a global one makes their callsites
/// never enabled.
fn without_trace_only_spans() -> filter::FilterFn {
    filter::filter_fn(|metadata| !is_trace_only(metadata))
}

/// The request sampling `init` set up (only when traces are exported).
static REQUEST_SAMPLING: OnceLock<RequestSampling> = OnceLock::new();

/// How `serve` samples requests: `None` when no traces are exported (nothing to decide).
pub fn request_sampling() -> Option<RequestSampling> {
    REQUEST_SAMPLING.get().cloned()
}

/// Which requests are traced, from the OpenTelemetry environment: `OTEL_TRACES_SAMPLER` is one of
/// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on` (the default),
/// `parentbased_always_off`, `parentbased_traceidratio`; `OTEL_TRACES_SAMPLER_ARG` is the ratio of
/// the `traceidratio` kinds (0–1, default 1). Parent-based samplers follow the sampled flag of a
/// client's `traceparent` and apply the rest to requests without one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    parent_based: bool,
    ratio: f64,
}

impl Default for Sampler {
    fn default() -> Sampler {
        Sampler {
            parent_based: true,
            ratio: 1.0,
        }
    }
}

impl Sampler {
    /// From `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`; an invalid setting is reported and
    /// the default used.
    pub fn from_env() -> Sampler {
        let name = std::env::var(plamatio_contract::env::OTEL_TRACES_SAMPLER).ok();
        let arg = std::env::var(plamatio_contract::env::OTEL_TRACES_SAMPLER_ARG).ok();
        Sampler::parse(name.as_deref(), arg.as_deref()).unwrap_or_else(|problem| {
            tracing::warn!(%problem, "tracing every request (parentbased_always_on)");
            Sampler::default()
        })
    }

    /// A sampler from the values of the two variables (`None`: unset).
    pub fn parse(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, String> {
        let ratio = || match arg.map(str::trim).filter(|arg| !arg.is_empty()) {
            None => Ok(1.0),
            Some(text) => match text.parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
                _ => Err(format!(
                    "OTEL_TRACES_SAMPLER_ARG {text:?} is not a ratio between 0 and 1"
                )),
            },
        };
        let name = name.map(str::trim).filter(|name| !name.is_empty());
        let (parent_based, ratio) = match name.unwrap_or("parentbased_always_on") {
            "always_on" => (false, 1.0),
            "always_off" => (false, 0.0),
            "traceidratio" => (false, ratio()?),
            "parentbased_always_on" => (true, 1.0),
            "parentbased_always_off" => (true, 0.0),
            "parentbased_traceidratio" => (true, ratio()?),
            other => return Err(format!("OTEL_TRACES_SAMPLER {other:?} is not supported")),
        };
        Ok(Sampler {
            parent_based,
            ratio,
        })
    }

    /// Whether a request carrying this `traceparent` (if any, already checked well-formed) is
    /// traced.
    pub fn samples(&self, traceparent: Option<&str>) -> bool {
        if self.parent_based
            && let Some(flags) = traceparent.and_then(|value| value.get(53..55))
        {
            return u8::from_str_radix(flags, 16).is_ok_and(|flags| flags & 1 == 1);
        }
        self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio)
    }
}

/// The per-request sampling decision and the subscriber that requests left out run under: the
/// same log layer and filter as the global one, without the OpenTelemetry layer.
#[derive(Clone)]
pub struct RequestSampling {
    sampler: Sampler,
    untraced: tracing::Dispatch,
}

impl std::fmt::Debug for RequestSampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSampling")
            .field("sampler", &self.sampler)
            .finish_non_exhaustive()
    }
}

impl RequestSampling {
    pub fn new(sampler: Sampler, untraced: tracing::Dispatch) -> RequestSampling {
        RequestSampling { sampler, untraced }
    }

    /// The subscriber to run a request under when the sampler leaves it out, else `None` (the
    /// global subscriber traces it).
    pub fn untraced_for(&self, headers: &http::HeaderMap) -> Option<&tracing::Dispatch> {
        let traceparent = headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .filter(|value| is_traceparent(value));
        (!self.sampler.samples(traceparent)).then_some(&self.untraced)
    }
}

/// Makes the client's W3C `traceparent` (if any) the parent of `span`.
pub fn adopt_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    struct Headers<'a>(&'a http::HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|value| value.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|name| name.as_str()).collect()
        }
    }
    if headers.contains_key("traceparent") {
        let context = TraceContextPropagator::new().extract(&Headers(headers));
        if context.span().span_context().is_remote() {
            let _ = span.set_parent(context);
        }
    }
}

/// Whether a span goes to an OpenTelemetry layer (traces are exported and the request was
/// sampled): fields only traces show need not be recorded otherwise.
pub fn is_exported(span: &tracing::Span) -> bool {
    span.context().span().span_context().is_valid()
}

/// The trace id of a span, when it belongs to a trace.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

tokio::task_local! {
    /// The client's `traceparent`, for requests served without an OpenTelemetry layer.
    static CLIENT_TRACEPARENT: String;
}

/// Whether a header value is a well-formed W3C `traceparent` (version 00).
pub fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1] != "0".repeat(32)
        && parts[2] != "0".repeat(16)
}

/// Runs `future` with the client's `traceparent` available to [`current_traceparent`].
pub async fn with_client_traceparent<F: std::future::Future>(
    traceparent: Option<String>,
    future: F,
) -> F::Output {
    match traceparent {
        Some(value) => CLIENT_TRACEPARENT.scope(value, future).await,
        None => future.await,
    }
}

/// The W3C `traceparent` to hand on (Kafka headers): the current span's when tracing is on, else
/// the client's as received.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() {
        return Some(format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        ));
    }
    CLIENT_TRACEPARENT.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_carry_the_request_fields_but_not_the_opentelemetry_hints() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(layers(
            LogFormat::Pretty,
            move || writer.clone(),
            None,
        ));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                otel.name = "GET /products/all",
                otel.kind = "server",
                http.route = "/products/all",
                request_id = "r-1",
                scope = tracing::field::Empty,
            );
            span.record("scope", "storefront");
            let _entered = span.enter();
            tracing::warn!(attempt = 2, "something to say");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("something to say"), "{text}");
        assert!(text.contains("attempt=2"), "{text}");
        assert!(text.contains("http.route=\"/products/all\""), "{text}");
        assert!(text.contains("request_id=\"r-1\""), "{text}");
        assert!(text.contains("scope=\"storefront\""), "{text}");
        assert!(!text.contains("otel."), "{text}");
    }

    /// Log lines of a span and an event with every kind of field, through `fields`.
    fn formatted_with<N>(fields: N) -> String
    where
        N: for<'writer> tracing_subscriber::fmt::FormatFields<'writer> + Send + Sync + 'static,
    {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .without_time()
                .fmt_fields(fields),
        );
        tracing::subscriber::with_default(subscriber, || {
            let error = std::io::Error::other("disk \"full\"");
            let span = tracing::info_span!(
                "request",
                http.request.method = "GET",
                http.route = "/products/get/{id}",
                request_id = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
                quoted = "say \"hi\"\\now",
                line = "two\nlines",
                accent = "café",
                empty = "",
                r#type = "raw name",
                count = 42_u64,
                delta = -7_i64,
                ok = true,
                ratio = 0.5_f64,
                debug = ?vec![1, 2],
                http.response.status_code = tracing::field::Empty,
            );
            span.record("http.response.status_code", 404_u16);
            let _entered = span.enter();
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                attempt = 2,
                text = "a b",
                "it \"failed\""
            );
        });
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn without_an_exporter_trace_only_spans_are_not_created() {
        let subscriber = tracing_subscriber::registry()
            .with(without_trace_only_spans())
            .with(layers(LogFormat::Pretty, std::io::sink, None));
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::info_span!("cache.get", cache.key = "k").is_disabled());
            assert!(tracing::info_span!("db.query").is_disabled());
            assert!(!tracing::info_span!("request", request_id = "r-1").is_disabled());
        });
    }

    #[test]
    fn log_fields_are_formatted_byte_for_byte_as_the_default_formatter_does() {
        let ours = formatted_with(LogFields);
        let default = formatted_with(tracing_subscriber::fmt::format::DefaultFields::new());
        assert_eq!(ours, default);
        assert!(ours.contains("status_code=404"), "{ours}");
        assert!(ours.contains(r#"quoted="say \"hi\"\\now""#), "{ours}");
    }

    #[test]
    fn samplers_follow_the_opentelemetry_environment() {
        let parent = |sampled: bool| {
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{}",
                if sampled { "01" } else { "00" }
            )
        };
        // (OTEL_TRACES_SAMPLER, ARG, traced without a parent, with a sampled one, with an unsampled one)
        let table = [
            (None, None, true, true, false),
            (Some("always_on"), None, true, true, true),
            (Some("always_off"), None, false, false, false),
            (Some("traceidratio"), Some("0"), false, false, false),
            (Some("traceidratio"), Some("1"), true, true, true),
            (Some("parentbased_always_off"), None, false, true, false),
            (
                Some("parentbased_traceidratio"),
                Some("0"),
                false,
                true,
                false,
            ),
            (
                Some("parentbased_traceidratio"),
                Some("1.0"),
                true,
                true,
                false,
            ),
        ];
        for (name, arg, alone, sampled, unsampled) in table {
            let sampler = Sampler::parse(name, arg).unwrap();
            assert_eq!(sampler.samples(None), alone, "{name:?} {arg:?}");
            assert_eq!(sampler.samples(Some(&parent(true))), sampled, "{name:?}");
            assert_eq!(sampler.samples(Some(&parent(false))), unsampled, "{name:?}");
        }
    }

    #[test]
    fn a_ratio_traces_about_that_share_of_requests() {
        let sampler = Sampler::parse(Some("traceidratio"), Some("0.25")).unwrap();
        let traced = (0..20_000).filter(|_| sampler.samples(None)).count();
        assert!((4_000..6_000).contains(&traced), "{traced} of 20000");
    }

    #[test]
    fn invalid_sampler_settings_are_refused_with_the_variable_named() {
        let unknown = Sampler::parse(Some("jaeger_remote"), None).unwrap_err();
        assert!(unknown.contains("OTEL_TRACES_SAMPLER"), "{unknown}");
        let ratio = Sampler::parse(Some("traceidratio"), Some("1.5")).unwrap_err();
        assert!(ratio.contains("OTEL_TRACES_SAMPLER_ARG"), "{ratio}");
        assert_eq!(Sampler::parse(None, None).unwrap(), Sampler::default());
    }
}
