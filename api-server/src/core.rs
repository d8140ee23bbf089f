//! Public service endpoints: `/core/info`, liveness, readiness and Prometheus metrics.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::web::JsonBytes;

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
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    if let Some(document) = DOCUMENT.get() {
        return Ok(JsonBytes(document.clone()));
    }
    let json = crate::openapi_document()
        .to_json()
        .map_err(ApiError::internal)?;
    Ok(JsonBytes(
        DOCUMENT.get_or_init(|| Bytes::from(json)).clone(),
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

/// Readiness: PostgreSQL answers within two seconds. Cache outages degrade, they do not fail.
#[utoipa::path(get, path = "/readyz", tag = "core",
    responses(
        (status = 200, description = "Ready to serve", body = HealthResponse),
        (status = 503, description = "PostgreSQL unreachable", body = HealthResponse)
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    let check = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await;
    let cache = Some(state.cache.backend_name());
    match check {
        Ok(Ok(_)) => Json(HealthResponse {
            status: "ok",
            cache,
        })
        .into_response(),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthResponse {
                    status: "unavailable",
                    cache,
                }),
            )
                .into_response()
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
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
}

/// Prometheus metrics in text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "core",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.metrics.observe_pool(&state.pool);
    let ready = tokio::time::timeout(
        Duration::from_secs(1),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await
    .is_ok_and(|answer| answer.is_ok());
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
