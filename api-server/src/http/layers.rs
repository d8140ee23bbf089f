//! The tower/tower-http layers around the router: request ids, tracing spans, CORS, compression,
//! HTTP caching (`Cache-Control` per route, `If-None-Match` → 304), timeouts, body limits, panic
//! catching, and the layer that gives every error the JSON shape of the contract (including the
//! ones produced outside handlers: 404 routes, 405, 413, 504).
//!
//! HTTP caching: a cached read answers with the strong `ETag` stored with its cache entry. A
//! request whose `If-None-Match` names it gets 304 without a body, decided on the handler's 200,
//! so only after authentication and ownership checks passed: a caller who may not read an entity
//! gets its 403/404, never a 304 that would confirm it exists. A compressed answer carries the tag
//! with the encoding appended (`"…-gzip"`), as its bytes differ. Catalog reads may be kept by any
//! cache for [`CATALOG_MAX_AGE_SECONDS`]; a shopper's data is `private, no-cache` (never kept by
//! a shared cache, revalidated by the browser on every use); everything else is `no-store`.
//!
//! CORS decides which web pages may read the API's answers with a shopper's browser. Only the listed
//! origins are allowed; a `*` pattern on a shared hosting domain must be pinned to the owner's suffix
//! (`https://shop-*-myteam.vercel.app`), because anyone can deploy `shop-evil.vercel.app`. Pages on
//! this machine (`http://localhost:…`) and credentialed requests are allowed only when configured.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use prometheus::{Histogram, IntCounter};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::{CompressionLayer, DefaultPredicate, Predicate};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::instrument::WithSubscriber;

use crate::error::{ApiError, error_response};
use crate::http::middleware::{Around, AroundLayer, OnlyWhen, axum_body};
use crate::metrics::Metrics;
use crate::telemetry;

/// Largest accepted request body.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Settings of the HTTP edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub cors_origins: Vec<String>,
    /// Answer `Access-Control-Allow-Credentials: true` (`PLAMATIO_CORS_CREDENTIALS`).
    pub cors_credentials: bool,
    /// Also allow `http://localhost`, `http://127.0.0.1` and `http://[::1]` on any port
    /// (`PLAMATIO_CORS_ALLOW_LOCALHOST`).
    pub cors_localhost: bool,
    pub request_timeout: Duration,
    /// Count and time requests for `/metrics`.
    pub http_metrics: bool,
    /// Which requests are traced when traces are exported (`None`: no exporter, or every request
    /// under the global subscriber).
    pub trace_sampling: Option<telemetry::RequestSampling>,
}

/// Generates UUIDv7 request ids.
#[derive(Debug, Clone, Copy, Default)]
struct MakeUuidV7;

impl MakeRequestId for MakeUuidV7 {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        // Formatted on the stack: the header value is the one allocation.
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut text);
        HeaderValue::from_str(text).ok().map(RequestId::new)
    }
}

/// A client's request id is kept only when it is 1–128 characters of `[A-Za-z0-9._-]`.
pub fn is_acceptable_request_id(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn drop_unacceptable_request_id(mut request: Request) -> Request {
    let acceptable = request
        .headers()
        .get(&X_REQUEST_ID)
        .is_none_or(|value| is_acceptable_request_id(value.as_bytes()));
    if !acceptable {
        request.headers_mut().remove(&X_REQUEST_ID);
    }
    request
}

/// Whether a request carries a `traceparent` (only those need [`keep_client_traceparent`]).
fn has_traceparent(request: &Request) -> bool {
    request.headers().contains_key(TRACEPARENT)
}

/// Runs a request the trace sampler leaves out under the subscriber without the OpenTelemetry
/// layer (see [`telemetry::RequestSampling`]): the inner service is called, and its future polled,
/// with that subscriber as the default, so the request span and everything below it skip tracing.
#[derive(Clone)]
struct SampleTraceLayer(telemetry::RequestSampling);

impl<S> tower::Layer<S> for SampleTraceLayer {
    type Service = SampleTrace<S>;

    fn layer(&self, inner: S) -> SampleTrace<S> {
        SampleTrace {
            sampling: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
struct SampleTrace<S> {
    sampling: telemetry::RequestSampling,
    inner: S,
}

impl<S, B> tower::Service<axum::http::Request<B>> for SampleTrace<S>
where
    S: tower::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<tracing::instrument::WithDispatch<S::Future>, S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        match self.sampling.untraced_for(request.headers()) {
            Some(untraced) => {
                let untraced = untraced.clone();
                let future =
                    tracing::dispatcher::with_default(&untraced, || self.inner.call(request));
                futures::future::Either::Left(future.with_subscriber(untraced))
            }
            None => futures::future::Either::Right(self.inner.call(request)),
        }
    }
}

/// Keeps a well-formed client `traceparent` for the request's outbox events.
async fn keep_client_traceparent(request: Request, next: Next) -> Response {
    let traceparent = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .filter(|value| telemetry::is_traceparent(value))
        .map(str::to_owned);
    telemetry::with_client_traceparent(traceparent, next.run(request)).await
}

/// Replaces a non-JSON error body with the contract's `{code, message, details}`, keeping the
/// status and headers (`Allow`, `Retry-After`, CORS).
fn json_error_bodies(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "endpoint not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("unimplemented", "method not allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("invalid_argument", "request body too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "invalid_argument",
            "unsupported media type, send application/json",
        ),
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => {
            ("deadline_exceeded", "request timed out")
        }
        StatusCode::TOO_MANY_REQUESTS => ("resource_exhausted", "rate limit exceeded"),
        status if status.is_server_error() => ("internal", "internal error"),
        _ => ("invalid_argument", "bad request"),
    };
    let (mut parts, _) = response.into_parts();
    let replacement = error_response(status, code, message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    let (replacement_parts, body) = replacement.into_parts();
    parts.headers.extend(replacement_parts.headers);
    Response::from_parts(parts, body)
}

/// Matches an `Origin` against a configured pattern; `*` stands for one or more characters of a
/// single DNS label (`[A-Za-z0-9-]`).
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.eq_ignore_ascii_case(origin),
        Some((prefix, suffix)) => {
            origin.len() > prefix.len() + suffix.len()
                && origin[..prefix.len()].eq_ignore_ascii_case(prefix)
                && origin[origin.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && origin[prefix.len()..origin.len() - suffix.len()]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }
    }
}

/// Whether an origin is a page served from this machine: `http://localhost`, `http://127.0.0.1` or
/// `http://[::1]`, with or without a port.
pub fn is_localhost_origin(origin: &str) -> bool {
    let Some(authority) = origin.strip_prefix("http://") else {
        return false;
    };
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1" || host == "[::1]"
}

/// Domains where anyone can get a subdomain (a project, a site, a page).
const SHARED_HOSTING_SUFFIXES: [&str; 7] = [
    ".vercel.app",
    ".netlify.app",
    ".pages.dev",
    ".github.io",
    ".herokuapp.com",
    ".onrender.com",
    ".fly.dev",
];

/// A wildcard pattern on a shared hosting domain whose `*` ends its label (`https://shop-*.vercel.app`):
/// it matches whatever anyone names their own project. Pin it to the owner's suffix instead
/// (`https://shop-*-myteam.vercel.app`, Vercel's preview URLs end with the team's slug).
pub fn is_unpinned_shared_host_pattern(pattern: &str) -> bool {
    let Some((_, after)) = pattern.split_once('*') else {
        return false;
    };
    let lower = after.to_ascii_lowercase();
    after.starts_with('.')
        && SHARED_HOSTING_SUFFIXES
            .iter()
            .any(|suffix| lower == *suffix || lower.ends_with(suffix))
}

fn cors_layer(config: &EdgeConfig) -> CorsLayer {
    let origins = config.cors_origins.clone();
    let localhost = config.cors_localhost;
    let allow_origin = AllowOrigin::predicate(move |origin: &HeaderValue, _parts| {
        origin.to_str().is_ok_and(|origin| {
            (localhost && is_localhost_origin(origin))
                || origins
                    .iter()
                    .any(|pattern| origin_matches(pattern, origin))
        })
    });
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_credentials(config.cors_credentials)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            X_REQUEST_ID,
            HeaderName::from_static("idempotency-key"),
            TRACEPARENT,
            HeaderName::from_static(crate::http::identity::USER_TOKEN_HEADER),
        ])
        .expose_headers([
            X_REQUEST_ID,
            HeaderName::from_static("idempotent-replayed"),
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

fn route_of<B>(request: &axum::http::Request<B>) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched")
}

/// Names derived from one route template, made once per route: the metric label
/// (`/products/get/:id`) and the span name per method (`GET /products/get/{id}`), so a request
/// formats none of them; and the metric series of the route's successful `GET`s, resolved on the
/// first one (the common answer then skips the label lookups).
struct RouteName {
    label: Box<str>,
    span_names: Vec<(Method, Box<str>)>,
    ok_gets: OnceLock<(IntCounter, Histogram)>,
}

impl RouteName {
    fn new(template: &str) -> RouteName {
        let span_names = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ]
        .into_iter()
        .map(|method| {
            let name = format!("{method} {template}").into_boxed_str();
            (method, name)
        })
        .collect();
        RouteName {
            label: route_label(template).into_owned().into_boxed_str(),
            span_names,
            ok_gets: OnceLock::new(),
        }
    }

    fn span_name(&self, method: &Method) -> Option<&str> {
        self.span_names
            .iter()
            .find(|(known, _)| known == method)
            .map(|(_, name)| &**name)
    }
}

/// The [`RouteName`]s met so far, keyed by route template (a bounded set: only templates of the
/// router and `unmatched` are ever looked up).
#[derive(Clone, Default)]
pub struct RouteNames(Arc<RwLock<HashMap<Box<str>, Arc<RouteName>>>>);

impl RouteNames {
    fn of(&self, template: &str) -> Arc<RouteName> {
        if let Ok(names) = self.0.read()
            && let Some(name) = names.get(template)
        {
            return Arc::clone(name);
        }
        let name = Arc::new(RouteName::new(template));
        match self.0.write() {
            Ok(mut names) => Arc::clone(names.entry(template.into()).or_insert(name)),
            Err(_) => name,
        }
    }
}

/// The server span of a request: named by the route template (never the raw path), with the
/// request id, the caller's scope (never the key) and, once answered, the status; a client's
/// `traceparent` becomes its parent.
fn request_span(names: &RouteNames, request: &axum::http::Request<Body>) -> tracing::Span {
    let route = route_of(request);
    let method = request.method();
    let route_name = names.of(route);
    let formatted;
    let span_name = match route_name.span_name(method) {
        Some(name) => name,
        None => {
            formatted = format!("{method} {route}");
            formatted.as_str()
        }
    };
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        otel.name = span_name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method.as_str(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        request_id,
        trace_id = tracing::field::Empty,
        scope = tracing::field::Empty,
    );
    telemetry::adopt_remote_parent(&span, request.headers());
    if let Some(trace_id) = telemetry::trace_id(&span) {
        span.record("trace_id", trace_id);
    }
    span
}

/// The response status on a traced request's span. Untraced requests skip it: the log layer
/// would format it for nothing, as no line is written in a request's span after its response.
fn record_status<B>(response: &axum::http::Response<B>, _latency: Duration, span: &tracing::Span) {
    if !telemetry::is_exported(span) {
        return;
    }
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// A route template as a metric label, in the `/products/get/:id` notation: some Prometheus text
/// parsers stumble over braces inside label values. Templates without parameters are used as
/// they are (no allocation on the hot path).
pub fn route_label(template: &str) -> Cow<'_, str> {
    if !template.contains('{') {
        return Cow::Borrowed(template);
    }
    Cow::Owned(
        template
            .split('/')
            .map(
                |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => format!(":{name}"),
                    None => segment.to_owned(),
                },
            )
            .collect::<Vec<_>>()
            .join("/"),
    )
}

/// Counts requests by route template, method and status, times them, and tracks those in flight.
#[derive(Clone)]
struct HttpMetrics {
    metrics: Metrics,
    names: RouteNames,
}

impl Around for HttpMetrics {
    type Memo = (Instant, Method, Arc<RouteName>);

    fn before<T>(&self, request: &axum::http::Request<T>) -> Self::Memo {
        let route_name = self.names.of(route_of(request));
        self.metrics.http_in_flight.inc();
        (Instant::now(), request.method().clone(), route_name)
    }

    fn after(&self, (started, method, route_name): Self::Memo, response: Response) -> Response {
        let metrics = &self.metrics;
        metrics.http_in_flight.dec();
        let route = &*route_name.label;
        let status = response.status();
        let seconds = started.elapsed().as_secs_f64();
        if method == Method::GET && status == StatusCode::OK {
            let (requests, duration) = route_name.ok_gets.get_or_init(|| {
                (
                    metrics
                        .http_requests
                        .with_label_values(&[route, "GET", "200"]),
                    metrics.http_duration.with_label_values(&[route, "GET"]),
                )
            });
            requests.inc();
            duration.observe(seconds);
            return response;
        }
        metrics
            .http_requests
            .with_label_values(&[route, method.as_str(), status.as_str()])
            .inc();
        metrics
            .http_duration
            .with_label_values(&[route, method.as_str()])
            .observe(seconds);
        response
    }
}

/// How long browsers and shared caches may keep a catalog read (products, categories).
pub const CATALOG_MAX_AGE_SECONDS: u32 = 30;

/// The `Cache-Control` of a successful read of `route` (a route template; `None`: no route).
pub fn read_cache_control(route: Option<&str>) -> HeaderValue {
    let Some(route) = route else {
        return HeaderValue::from_static("no-store");
    };
    let first_segment = route.trim_start_matches('/').split('/').next();
    match first_segment {
        Some("products" | "categories") => HeaderValue::from_static("public, max-age=30"),
        Some("cart" | "orders" | "users") => HeaderValue::from_static("private, no-cache"),
        Some("openapi.json") => HeaderValue::from_static("no-cache"),
        _ => HeaderValue::from_static("no-store"),
    }
}

/// Encodings the compression layer may apply (their tags are `"<tag>-<encoding>"`).
const TAGGED_ENCODINGS: [&str; 2] = ["gzip", "br"];

/// The entity tag of `If-None-Match` that names `etag` (weak comparison, as RFC 9110 asks for this
/// header): `etag` itself, a compressed variant of it, or `*`. Returns the tag to answer with.
fn matching_tag(if_none_match: &[u8], etag: &HeaderValue) -> Option<HeaderValue> {
    let condition = std::str::from_utf8(if_none_match).ok()?;
    let etag = etag.to_str().ok()?;
    let opaque = etag.strip_suffix('"')?;
    for candidate in condition.split(',') {
        let candidate = candidate.trim();
        if candidate == "*" {
            return HeaderValue::from_str(etag).ok();
        }
        let candidate = candidate.strip_prefix("W/").unwrap_or(candidate);
        if candidate == etag {
            return HeaderValue::from_str(etag).ok();
        }
        let encoding = candidate
            .strip_prefix(opaque)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.strip_suffix('"'));
        if encoding.is_some_and(|encoding| TAGGED_ENCODINGS.contains(&encoding)) {
            return HeaderValue::from_str(candidate).ok();
        }
    }
    None
}

/// `Cache-Control` for every answer, its own tag for a compressed answer (`"<tag>-<encoding>"`), and
/// 304 for a successful read whose tag the client holds. Runs outside the compression layer (one
/// layer instead of two on every request; a 304 drops the body before anything was compressed).
#[derive(Clone)]
struct HttpCaching;

/// What [`HttpCaching`] keeps of a request: whether it reads, its `If-None-Match`, its route.
struct CachingMemo {
    is_read: bool,
    if_none_match: Option<HeaderValue>,
    route: Option<MatchedPath>,
}

impl Around for HttpCaching {
    type Memo = CachingMemo;

    fn before<T>(&self, request: &axum::http::Request<T>) -> CachingMemo {
        let is_read = matches!(*request.method(), Method::GET | Method::HEAD);
        CachingMemo {
            is_read,
            if_none_match: if is_read {
                request.headers().get(header::IF_NONE_MATCH).cloned()
            } else {
                None
            },
            route: request.extensions().get::<MatchedPath>().cloned(),
        }
    }

    fn after(&self, memo: CachingMemo, mut response: Response) -> Response {
        let CachingMemo {
            is_read,
            if_none_match,
            route,
        } = memo;
        let status = response.status();
        let cache_control = if is_read && status.is_success() {
            read_cache_control(route.as_ref().map(MatchedPath::as_str))
        } else {
            HeaderValue::from_static("no-store")
        };
        let headers = response.headers_mut();
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(cache_control);
        if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
            && let Some(variant) = headers
                .get(header::ETAG)
                .and_then(|etag| etag.to_str().ok())
                .and_then(|etag| etag.strip_suffix('"'))
                .zip(encoding.to_str().ok())
                .and_then(|(opaque, encoding)| {
                    HeaderValue::from_str(&format!("{opaque}-{encoding}\"")).ok()
                })
        {
            headers.insert(header::ETAG, variant);
        }
        let Some(condition) = if_none_match else {
            return response;
        };
        if status != StatusCode::OK {
            return response;
        }
        let Some(matched) = response
            .headers()
            .get(header::ETAG)
            .and_then(|etag| matching_tag(condition.as_bytes(), etag))
        else {
            return response;
        };
        let (mut parts, _) = response.into_parts();
        parts.status = StatusCode::NOT_MODIFIED;
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
        ] {
            parts.headers.remove(name);
        }
        parts.headers.insert(header::ETAG, matched);
        Response::from_parts(parts, Body::empty())
    }
}

/// Whether the response to `request` goes through the compression layer: a read (`GET`, `HEAD`)
/// whose client sends `Accept-Encoding` (browsers always do), except on the event stream, whose
/// `text/event-stream` answers the layer never compresses. The others skip the layer's body
/// wrapper, which holds a brotli encoder's state inline: about 5.8 KiB allocated per response, and
/// kept for an event stream's whole life. Without `Accept-Encoding` the layer would choose no
/// coding anyway; [`vary_on_accept_encoding`] keeps the `Vary` header it would have added.
///
/// Writes never pass: when `Accept-Encoding` rules out every coding (`identity;q=0`), the layer
/// answers 406 *after* the handler ran, so a committed write would be reported as refused and
/// likely retried. A write's answer is small and is sent without a coding instead.
fn may_compress(request: &Request) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        && request.headers().contains_key(header::ACCEPT_ENCODING)
        && route_of(request) != crate::events::STREAM_ROUTE
}

/// `Vary: accept-encoding` on every response the compression layer could compress (its default
/// predicate: not already encoded, not a range, large enough, not an image, event stream or gRPC),
/// as the layer adds it, whether or not this request went through the layer: caches must know
/// that another request may get another coding.
fn vary_on_accept_encoding(mut response: Response) -> Response {
    let compressible = !response.headers().contains_key(header::CONTENT_ENCODING)
        && !response.headers().contains_key(header::CONTENT_RANGE)
        && DefaultPredicate::new().should_compress(&response);
    let varies = response
        .headers()
        .get_all(header::VARY)
        .iter()
        .any(|value| {
            value
                .as_bytes()
                .windows(b"accept-encoding".len())
                .any(|name| name.eq_ignore_ascii_case(b"accept-encoding"))
        });
    if compressible && !varies {
        response
            .headers_mut()
            .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// The answer for paths no route matches.
pub async fn endpoint_not_found() -> ApiError {
    ApiError::NotFound("endpoint not found".into())
}

/// Wraps the router in every edge layer, outermost first. With `metrics`, requests are counted and
/// timed.
///
/// Every layer here runs for every request, so none of them is a `from_fn` middleware (see
/// [`crate::http::middleware`]): the synchronous ones map the request or the response, the others
/// are [`Around`] middleware, and the `traceparent` scope is set up only for requests that carry one.
pub fn wrap(router: Router, config: &EdgeConfig, metrics: Option<Metrics>) -> Router {
    let names = RouteNames::default();
    let metrics = metrics.map(|metrics| {
        AroundLayer(HttpMetrics {
            metrics,
            names: names.clone(),
        })
    });
    router.layer(
        ServiceBuilder::new()
            .option_layer(config.trace_sampling.clone().map(SampleTraceLayer))
            .map_request(drop_unacceptable_request_id)
            .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeUuidV7))
            .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(move |request: &axum::http::Request<Body>| {
                        request_span(&names, request)
                    })
                    .on_response(record_status)
                    // errors are logged once, where they happen, with their cause chain
                    .on_failure(()),
            )
            .layer(cors_layer(config))
            .layer(AroundLayer(HttpCaching))
            .layer(OnlyWhen::new(
                may_compress,
                ServiceBuilder::new()
                    .map_response(axum_body)
                    .layer(CompressionLayer::new())
                    .into_inner(),
            ))
            .map_response(vary_on_accept_encoding)
            .map_response(json_error_bodies)
            .layer(OnlyWhen::new(
                has_traceparent,
                middleware::from_fn(keep_client_traceparent),
            ))
            .map_response(axum_body)
            .layer(CatchPanicLayer::new())
            .layer(TimeoutLayer::with_status_code(
                StatusCode::GATEWAY_TIMEOUT,
                config.request_timeout,
            ))
            .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
            .option_layer(metrics),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_stream_route_is_a_route_of_the_api() {
        let document = crate::openapi_document();
        assert!(
            document
                .paths
                .paths
                .contains_key(crate::events::STREAM_ROUTE),
            "{}",
            crate::events::STREAM_ROUTE
        );
    }

    #[test]
    fn wildcard_origin_matches_one_label() {
        let pattern = "https://plamatio-frontend-*.vercel.app";
        assert!(origin_matches(
            pattern,
            "https://plamatio-frontend-git-main-x.vercel.app"
        ));
        assert!(!origin_matches(
            pattern,
            "https://plamatio-frontend-.vercel.app"
        ));
        assert!(!origin_matches(
            pattern,
            "https://plamatio-frontend-a.b.vercel.app"
        ));
        assert!(!origin_matches(
            pattern,
            "https://evil.com/https://plamatio-frontend-a.vercel.app"
        ));
        assert!(origin_matches(
            "http://localhost:3000",
            "http://localhost:3000"
        ));
        assert!(!origin_matches(
            "http://localhost:3000",
            "http://localhost:3001"
        ));
    }

    #[test]
    fn localhost_origins_are_recognised_exactly() {
        for local in [
            "http://localhost:3000",
            "http://localhost",
            "http://127.0.0.1:8080",
            "http://[::1]:3000",
        ] {
            assert!(is_localhost_origin(local), "{local}");
        }
        for other in [
            "https://localhost:3000",
            "http://localhost.evil.example",
            "http://localhost:3000.evil.example",
            "http://127.0.0.2:3000",
            "http://evil.example/http://localhost:3000",
        ] {
            assert!(!is_localhost_origin(other), "{other}");
        }
    }

    #[test]
    fn wildcards_on_shared_hosting_must_be_pinned_to_a_suffix() {
        assert!(is_unpinned_shared_host_pattern(
            "https://plamatio-frontend-*.vercel.app"
        ));
        assert!(is_unpinned_shared_host_pattern("https://*.netlify.app"));
        assert!(!is_unpinned_shared_host_pattern(
            "https://plamatio-frontend-*-myteam.vercel.app"
        ));
        assert!(!is_unpinned_shared_host_pattern(
            "https://shop-*.example.com"
        ));
        assert!(!is_unpinned_shared_host_pattern(
            "https://plamatio-frontend.vercel.app"
        ));
    }

    #[test]
    fn route_names_are_made_once_per_route() {
        let names = RouteNames::default();
        let first = names.of("/products/get/{id}");
        assert!(Arc::ptr_eq(&first, &names.of("/products/get/{id}")));
        assert_eq!(&*first.label, "/products/get/:id");
        assert_eq!(
            first.span_name(&Method::GET),
            Some("GET /products/get/{id}")
        );
        assert_eq!(first.span_name(&Method::TRACE), None);
    }

    #[test]
    fn route_labels_use_colon_parameters() {
        assert_eq!(route_label("/products/get/{id}"), "/products/get/:id");
        assert_eq!(
            route_label("/cart/delete/{id}/user/{user_id}"),
            "/cart/delete/:id/user/:user_id"
        );
        assert_eq!(route_label("unmatched"), "unmatched");
    }

    #[test]
    fn if_none_match_names_the_tag_or_a_compressed_variant() {
        let etag = HeaderValue::from_static("\"abc\"");
        let matched = |condition: &str| {
            matching_tag(condition.as_bytes(), &etag).map(|tag| tag.to_str().unwrap().to_owned())
        };
        assert_eq!(matched("\"abc\"").as_deref(), Some("\"abc\""));
        assert_eq!(matched("W/\"abc\"").as_deref(), Some("\"abc\""));
        assert_eq!(
            matched("\"x\", \"abc-gzip\"").as_deref(),
            Some("\"abc-gzip\"")
        );
        assert_eq!(matched("*").as_deref(), Some("\"abc\""));
        assert_eq!(matched("\"abc-zip\""), None);
        assert_eq!(matched("\"abcd\""), None);
        assert_eq!(matched("\"ab\""), None);
    }

    #[test]
    fn catalog_reads_are_public_and_shopper_data_private() {
        assert_eq!(
            read_cache_control(Some("/products/get/{id}")),
            format!("public, max-age={CATALOG_MAX_AGE_SECONDS}").as_str()
        );
        assert_eq!(
            read_cache_control(Some("/categories/all")),
            "public, max-age=30"
        );
        for route in ["/cart/all/{user_id}", "/orders/get/{id}", "/users/get/{id}"] {
            assert_eq!(
                read_cache_control(Some(route)),
                "private, no-cache",
                "{route}"
            );
        }
        for route in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/events/stream/{user_id}",
        ] {
            assert_eq!(read_cache_control(Some(route)), "no-store", "{route}");
        }
        assert_eq!(read_cache_control(None), "no-store");
    }

    #[test]
    fn request_id_rules() {
        assert!(is_acceptable_request_id(b"abc-123_x.y"));
        assert!(!is_acceptable_request_id(b""));
        assert!(!is_acceptable_request_id(b"a b"));
        assert!(!is_acceptable_request_id(&[b'a'; 129]));
        assert!(is_acceptable_request_id(&[b'a'; 128]));
    }
}
