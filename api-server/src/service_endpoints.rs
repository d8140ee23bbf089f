//! Public service endpoints: `/core/info`, liveness, readiness and Prometheus metrics.
//!
//! `/readyz` and `/metrics` are public and exempt from rate limits, so they must not be able to
//! take connections from the request pool: readiness is checked at most once a second, on a
//! connection of its own ([`Readiness`]), and every other caller gets the last answer. A pool
//! exhausted by slow requests therefore neither delays probes nor makes the instance look down.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool};

use bytes::Bytes;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::cache::CachedBody;
use crate::error::ApiError;
use crate::http::extract::JsonBytes;

const INFO: &str = "This is Plamatio Backend REST API. For more information, check: https://github.com/pranav-kural/plamatio-backend";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(info))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "core",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn openapi_json() -> Result<JsonBytes, ApiError> {
    static DOCUMENT: OnceLock<CachedBody> = OnceLock::new();
    if let Some(document) = DOCUMENT.get() {
        return Ok(JsonBytes(document.clone()));
    }
    let json = crate::openapi_document()
        .to_json()
        .map_err(ApiError::internal)?;
    Ok(JsonBytes(
        DOCUMENT
            .get_or_init(|| CachedBody::new(Bytes::from(json)))
            .clone(),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InfoResponse {
    pub data: String,
}

/// What this API is.
#[utoipa::path(get, path = "/core/info", tag = "core",
    responses((status = 200, description = "Service description", body = InfoResponse)))]
async fn info() -> Json<InfoResponse> {
    Json(InfoResponse {
        data: INFO.to_owned(),
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthResponse {
    /// `ok`, or `unavailable` for a failed check.
    pub status: &'static str,
    /// Which cache backend serves reads (`redis` or `memory`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "core",
    responses((status = 200, description = "Process alive", body = HealthResponse)))]
async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok",
        cache: None,
    })
}

/// How long a readiness answer is reused.
const READINESS_FRESH_FOR: Duration = Duration::from_secs(1);
/// Timeout of one readiness check (connecting included).
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// The cached PostgreSQL readiness of the process.
#[derive(Default)]
pub struct Readiness {
    /// The last answer and when it was found.
    last: Mutex<Option<(Instant, bool)>>,
    /// The probe's own connection; held while a check runs, so checks never overlap.
    connection: tokio::sync::Mutex<Option<PgConnection>>,
}

impl Readiness {
    fn fresh(&self) -> Option<bool> {
        let last = *self.last.lock().ok()?;
        last.filter(|(at, _)| at.elapsed() < READINESS_FRESH_FOR)
            .map(|(_, ready)| ready)
    }

    fn last_answer(&self) -> Option<bool> {
        let last = *self.last.lock().ok()?;
        last.map(|(_, ready)| ready)
    }

    /// Whether PostgreSQL answers: a fresh cached answer, the previous answer while another
    /// caller checks, or a new check on the probe's own connection (never the request pool's).
    pub async fn check(&self, pool: &PgPool) -> bool {
        if pool.is_closed() {
            return false;
        }
        if let Some(ready) = self.fresh() {
            return ready;
        }
        let mut connection = match self.connection.try_lock() {
            Ok(connection) => connection,
            Err(_) => match self.last_answer() {
                Some(ready) => return ready,
                None => self.connection.lock().await,
            },
        };
        if let Some(ready) = self.fresh() {
            return ready;
        }
        let options = pool.connect_options();
        let outcome = tokio::time::timeout(READINESS_TIMEOUT, async {
            if connection.is_none() {
                *connection = Some(PgConnection::connect_with(&options).await?);
            }
            match connection.as_mut() {
                Some(open) => sqlx::query_scalar::<_, i32>("SELECT 1")
                    .fetch_one(open)
                    .await
                    .map(|_| ()),
                None => Err(sqlx::Error::PoolClosed),
            }
        })
        .await;
        let ready = match outcome {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::warn!(%error, "readiness check failed");
                false
            }
            Err(_) => {
                tracing::warn!("readiness check timed out");
                false
            }
        };
        if !ready {
            // Reconnect next time: the connection may be the broken part.
            *connection = None;
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), ready));
        }
        ready
    }
}

/// Readiness: PostgreSQL answers within two seconds (checked at most once a second, on a
/// connection of its own). Cache outages degrade, they do not fail.
#[utoipa::path(get, path = "/readyz", tag = "core",
    responses(
        (status = 200, description = "Ready to serve", body = HealthResponse),
        (status = 503, description = "PostgreSQL unreachable", body = HealthResponse)
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    let cache = Some(state.cache.backend_name());
    if state.readiness.check(&state.pool).await {
        Json(HealthResponse {
            status: "ok",
            cache,
        })
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthResponse {
                status: "unavailable",
                cache,
            }),
        )
            .into_response()
    }
}

/// Prometheus metrics in text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "core",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.metrics.observe_pool(&state.pool);
    let ready = state.readiness.check(&state.pool).await;
    state.metrics.ready.set(i64::from(ready));
    let text = state.metrics.render().map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}
