//! The tower/tower-http layers around the router: request ids, tracing spans, CORS, compression,
//! timeouts, body limits, panic catching, and the layer that gives every error the JSON shape of the
//! contract (including the ones produced outside handlers: 404 routes, 405, 413, 504).
//!
//! CORS decides which web pages may read the API's answers with a shopper's browser. Only the listed
//! origins are allowed; a `*` pattern on a shared hosting domain must be pinned to the owner's suffix
//! (`https://shop-*-myteam.vercel.app`), because anyone can deploy `shop-evil.vercel.app`. Pages on
//! this machine (`http://localhost:…`) and credentialed requests are allowed only when configured.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, error_response};
use crate::metrics::Metrics;
use crate::telemetry;

/// Largest accepted request body.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
}

/// Generates UUIDv7 request ids.
#[derive(Debug, Clone, Copy, Default)]
struct MakeUuidV7;

impl MakeRequestId for MakeUuidV7 {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// A client's request id is kept only when it is 1–128 characters of `[A-Za-z0-9._-]`.
pub fn is_acceptable_request_id(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

async fn drop_unacceptable_request_id(mut request: Request, next: Next) -> Response {
    let acceptable = request
        .headers()
        .get(&X_REQUEST_ID)
        .is_none_or(|value| is_acceptable_request_id(value.as_bytes()));
    if !acceptable {
        request.headers_mut().remove(&X_REQUEST_ID);
    }
    next.run(request).await
}

/// Keeps a well-formed client `traceparent` for the request's outbox events.
async fn keep_client_traceparent(request: Request, next: Next) -> Response {
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .filter(|value| telemetry::is_traceparent(value))
        .map(str::to_owned);
    telemetry::with_client_traceparent(traceparent, next.run(request)).await
}

/// Replaces a non-JSON error body with the contract's `{code, message, details}`, keeping the
/// status and headers (`Allow`, `Retry-After`, CORS).
async fn json_error_bodies(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
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
            HeaderName::from_static("traceparent"),
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

/// The server span of a request: named by the route template (never the raw path), with the
/// request id, the caller's scope (never the key) and, once answered, the status; a client's
/// `traceparent` becomes its parent.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let route = route_of(request);
    let method = request.method().as_str();
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
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

fn record_status<B>(response: &axum::http::Response<B>, _latency: Duration, span: &tracing::Span) {
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
async fn http_metrics(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let template = request.extensions().get::<MatchedPath>().cloned();
    metrics.http_in_flight.inc();
    let response = next.run(request).await;
    metrics.http_in_flight.dec();
    let route = route_label(template.as_ref().map_or("unmatched", MatchedPath::as_str));
    let status = response.status();
    metrics
        .http_requests
        .with_label_values(&[&*route, method.as_str(), status.as_str()])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[&*route, method.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The answer for paths no route matches.
pub async fn endpoint_not_found() -> ApiError {
    ApiError::NotFound("endpoint not found".into())
}

/// Wraps the router in every edge layer, outermost first. With `metrics`, requests are counted and
/// timed.
pub fn wrap(router: Router, config: &EdgeConfig, metrics: Option<Metrics>) -> Router {
    let router = match metrics {
        Some(metrics) => router.layer(middleware::from_fn_with_state(metrics, http_metrics)),
        None => router,
    };
    router.layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn(drop_unacceptable_request_id))
            .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeUuidV7))
            .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(record_status)
                    // errors are logged once, where they happen, with their cause chain
                    .on_failure(()),
            )
            .layer(cors_layer(config))
            .layer(CompressionLayer::new())
            .layer(middleware::from_fn(json_error_bodies))
            .layer(middleware::from_fn(keep_client_traceparent))
            .layer(CatchPanicLayer::new())
            .layer(TimeoutLayer::with_status_code(
                StatusCode::GATEWAY_TIMEOUT,
                config.request_timeout,
            ))
            .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn route_labels_use_colon_parameters() {
        assert_eq!(route_label("/products/get/{id}"), "/products/get/:id");
        assert_eq!(
            route_label("/cart/delete/{id}/user/{user_id}"),
            "/cart/delete/:id/user/:user_id"
        );
        assert_eq!(route_label("unmatched"), "unmatched");
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
