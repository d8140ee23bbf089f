//! Plamatio store API: the library behind the `plamatio-api` binary. [`app`] builds the complete
//! router for an [`AppState`]; [`cli::run`] is the whole program.

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub mod auth;
pub mod cache;
pub mod cart;
pub mod categories;
pub mod cli;
pub mod config;
pub mod core;
pub mod db;
pub mod error;
pub mod events;
pub mod metrics;
pub mod middleware;
pub mod products;
pub mod telemetry;
pub mod web;

use auth::ApiKeys;
use cache::Cache;
use metrics::Metrics;
use middleware::EdgeConfig;

/// Everything a request handler needs, shared by all requests.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub cache: Cache,
    pub keys: Arc<ApiKeys>,
    pub metrics: Metrics,
}

impl FromRef<AppState> for Arc<ApiKeys> {
    fn from_ref(state: &AppState) -> Arc<ApiKeys> {
        state.keys.clone()
    }
}

/// The document-level OpenAPI metadata; paths and schemas come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Plamatio store API",
        description = "Products, categories, cart, orders and users of the Plamatio store.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecurityAddon),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "API key with the storefront or admin scope: `Authorization: Bearer <key>`",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every route of the API with its OpenAPI description.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(core::router())
        .merge(products::router())
        .merge(categories::router())
}

/// The OpenAPI document of [`api_router`].
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

/// The complete application: routes, `/openapi.json`, fallbacks and edge layers.
pub fn app(state: AppState, edge: &EdgeConfig) -> Router {
    let (router, _) = api_router().split_for_parts();
    let router = router
        .fallback(middleware::endpoint_not_found)
        .with_state(state);
    middleware::wrap(router, edge)
}
