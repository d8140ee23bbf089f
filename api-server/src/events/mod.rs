//! Domain events: the transactional outbox every mutation writes to, the relay that publishes it to
//! Kafka, the analytics ingestion endpoint, and the live per-user SSE streams fed from the outbox.

pub mod ingest;
pub mod kafka;
pub mod outbox;
pub mod relay;
pub mod stream;
pub mod tail;

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{Extensions, HeaderMap};
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{JsonBody, PathParams};
use crate::http::identity::Shopper;
pub use outbox::{OutboxEvent, Topic};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_user_events))
        .routes(routes!(stream_user_events))
}

/// One analytics event of the storefront (the frontend's `user_events` shape).
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct UserEvent {
    pub user_id: String,
    pub event_type: String,
    pub core_component: String,
    pub description: Option<String>,
    /// Free-form object.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub client_id: String,
    /// RFC 3339 date-time.
    #[schema(format = DateTime)]
    pub timestamp: String,
}

/// A batch of analytics events.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct UserEventBatch {
    #[schema(max_items = 500, min_items = 1)]
    pub data: Vec<UserEvent>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub accepted: usize,
}

/// Accept one analytics event or a batch of up to 500 (`{"data": [...]}`) for the `user_events`
/// topic. 503 when they cannot be stored; accepted events are never dropped.
#[utoipa::path(post, path = "/events/user", tag = "events",
    request_body(content = UserEventBatch, description = "A batch, or a single `UserEvent` object"),
    security(("api_key" = [])),
    responses((status = 200, body = Accepted)))]
async fn post_user_events(
    shopper: Shopper,
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Accepted>> {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let client_ip = match &state.rate_limits {
        Some(limits) => limits.client_ip(peer, &headers),
        None => peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
    };
    let accepted = ingest::accept(&state, &shopper, &client_ip, &body).await?;
    Ok(Json(Accepted { accepted }))
}

/// The route template of [`stream_user_events`] (as the router and `MatchedPath` spell it).
pub const STREAM_ROUTE: &str = "/events/stream/{user_id}";

/// Server-Sent Events of one user's committed cart, order and user changes (`event:` the event
/// type, `id:` the event id, `data:` the payload of events.md). Resume with `Last-Event-ID`.
#[utoipa::path(get, path = "/events/stream/{user_id}", tag = "events",
    params(
        ("user_id" = String, Path, description = "User id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A `text/event-stream` that ends after the maximum stream lifetime or when the user token expires (reconnect with `Last-Event-ID`)", content_type = "text/event-stream", body = String),
        (status = 404, body = ErrorBody)
    ))]
async fn stream_user_events(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(user_id): PathParams<String>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    crate::limits::check_path_user_id(&user_id)?;
    shopper.check(&user_id, || {
        ApiError::not_found(format!("user {user_id} not found"))
    })?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok());
    // A bound caller's token was verified by the `Shopper` extractor; the stream must not outlive it.
    let token_expires_at = if shopper.is_bound() {
        headers
            .get(crate::http::identity::USER_TOKEN_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(stream::verified_token_expiry)
    } else {
        None
    };
    let opener = stream::StreamOpener {
        key_id: shopper.caller.key_id.clone(),
        token_expires_at,
    };
    stream::open(
        state.pool.clone(),
        &state.hub,
        state.metrics.clone(),
        user_id,
        opener,
        last_event_id,
    )
    .await
}
