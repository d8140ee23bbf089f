//! Plamatio store API: the library behind the `plamatio-api` binary. [`app`] builds the complete
//! router for an [`AppState`]; [`cli::run`] is the whole program.

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub mod cache;
pub mod cart;
pub mod categories;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod mutation;
pub mod orders;
pub mod products;
pub mod service_endpoints;
pub mod telemetry;
pub mod users;

use cache::Cache;
use events::ingest::IngestQuota;
use events::stream::{StreamHub, StreamLimits};
use http::auth::ApiKeys;
use http::identity::UserTokens;
use http::layers::{self, EdgeConfig};
use http::ratelimit::RateLimits;
use http::{idempotency, openapi, ratelimit};
use metrics::Metrics;
use service_endpoints::Readiness;

/// Everything a request handler needs, shared by all requests. Cloned several times per request
/// (router, extractors, route layers), so it is one reference count: a clone is one atomic
/// increment, not one per member.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The members of [`AppState`], reached through it (`state.pool`).
#[derive(Clone)]
pub struct Shared {
    pub pool: PgPool,
    pub cache: Cache,
    pub keys: Arc<ApiKeys>,
    pub metrics: Metrics,
    pub hub: StreamHub,
    /// `None` when rate limiting is disabled.
    pub rate_limits: Option<Arc<RateLimits>>,
    /// `None` when end-user tokens are not verified (`PLAMATIO_USER_AUTH=off`).
    pub user_tokens: Option<Arc<UserTokens>>,
    /// The per-user/IP budget of `POST /events/user`; `None` without a quota.
    pub ingest_quota: Option<Arc<IngestQuota>>,
    /// PostgreSQL readiness, checked at most once a second on a connection of its own.
    pub readiness: Arc<Readiness>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The state over an open pool; starts the live-stream listener on it.
    pub fn new(pool: PgPool, cache: Cache, keys: ApiKeys, metrics: Metrics) -> AppState {
        let hub = StreamHub::new();
        hub.spawn_listener(pool.clone());
        AppState(Arc::new(Shared {
            pool,
            cache,
            keys: Arc::new(keys),
            metrics,
            hub,
            rate_limits: None,
            user_tokens: None,
            ingest_quota: None,
            readiness: Arc::new(Readiness::default()),
        }))
    }

    /// Sets the bounds of live streams and the analytics quota.
    pub fn with_event_limits(
        mut self,
        streams: StreamLimits,
        ingest_quota: Option<IngestQuota>,
    ) -> AppState {
        let shared = Arc::make_mut(&mut self.0);
        shared.hub = shared.hub.with_limits(streams);
        shared.ingest_quota = ingest_quota.map(Arc::new);
        self
    }

    /// Enables end-user token verification.
    pub fn with_user_tokens(mut self, tokens: Option<Arc<UserTokens>>) -> AppState {
        Arc::make_mut(&mut self.0).user_tokens = tokens;
        self
    }

    /// Enables rate limiting.
    pub fn with_rate_limits(mut self, limits: Option<RateLimits>) -> AppState {
        Arc::make_mut(&mut self.0).rate_limits = limits.map(Arc::new);
        self
    }
}

impl FromRef<AppState> for Option<Arc<UserTokens>> {
    fn from_ref(state: &AppState) -> Option<Arc<UserTokens>> {
        state.user_tokens.clone()
    }
}

impl FromRef<AppState> for Arc<ApiKeys> {
    fn from_ref(state: &AppState) -> Arc<ApiKeys> {
        state.keys.clone()
    }
}

/// Every route of the API with its OpenAPI description.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(service_endpoints::router())
        .merge(products::router())
        .merge(categories::router())
        .merge(cart::router())
        .merge(orders::router())
        .merge(users::router())
        .merge(events::router())
}

/// The OpenAPI document of [`api_router`].
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    openapi::finish(api_router().into_openapi())
}

/// The complete application: routes, `/openapi.json`, fallbacks and edge layers.
pub fn app(state: AppState, edge: &EdgeConfig) -> Router {
    let (router, _) = api_router().split_for_parts();
    let state_metrics = state.metrics.clone();
    // Route layers run only for matched routes (404/405 come first), outermost first:
    // rate limit (only when enabled) → idempotency (only for writes carrying an
    // `Idempotency-Key`) → handler (auth, parsing, validation). One route layer, not two: every
    // route layer is another boxed service cloned per request.
    let rate_limit = state
        .rate_limits
        .is_some()
        .then(|| axum::middleware::from_fn_with_state(state.clone(), ratelimit::limit));
    let router = router
        .route_layer(tower::ServiceBuilder::new().option_layer(rate_limit).layer(
            http::middleware::OnlyWhen::new(
                idempotency::applies,
                axum::middleware::from_fn_with_state(state.clone(), idempotency::idempotency),
            ),
        ))
        .fallback(layers::endpoint_not_found)
        .with_state(state);
    let metrics = edge.http_metrics.then(|| state_metrics.clone());
    layers::wrap(router, edge, metrics)
}
