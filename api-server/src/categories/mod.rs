//! Categories and sub-categories: read-only catalog structure, cached for 2 hours.

pub mod db;
pub mod model;

use axum::extract::State;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::cache::{CacheKey, DEFAULT_TTL};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::auth::Storefront;
use crate::http::extract::{DataList, JsonBytes, PathParams};
use crate::http::pagination::{self, PageQuery};
use model::{Category, SubCategory};

/// Cache keys of this domain.
pub mod cache_keys {
    use super::*;

    pub fn category(id: i64) -> CacheKey {
        CacheKey::new("category-cache", id, DEFAULT_TTL)
    }
    pub fn all_categories() -> CacheKey {
        CacheKey::fixed("categories-cache/all", DEFAULT_TTL)
    }
    pub fn sub_category(id: i64) -> CacheKey {
        CacheKey::new("subcategory-cache", id, DEFAULT_TTL)
    }
    pub fn all_sub_categories() -> CacheKey {
        CacheKey::fixed("subcategories-cache/all", DEFAULT_TTL)
    }
    pub fn sub_categories_of(category_id: i64) -> CacheKey {
        CacheKey::new(
            "subcategories-cache",
            format!("category/{category_id}"),
            DEFAULT_TTL,
        )
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_category))
        .routes(routes!(all_categories))
        .routes(routes!(get_sub_category))
        .routes(routes!(all_sub_categories))
        .routes(routes!(sub_categories_of_category))
}

/// One category.
#[utoipa::path(get, path = "/categories/get/{id}", tag = "categories",
    params(("id" = i64, Path, description = "Category id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = Category),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ))]
async fn get_category(
    _caller: Storefront,
    State(state): State<AppState>,
    PathParams(id): PathParams<i64>,
) -> ApiResult<JsonBytes> {
    state
        .cache
        .get_or_load(&cache_keys::category(id), || async {
            db::category(&state.pool, id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("category {id} not found")))
        })
        .await
        .map(JsonBytes)
}

/// All categories, by id.
#[utoipa::path(get, path = "/categories/all", tag = "categories",
    params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = DataList<Category>), (status = 401, body = ErrorBody)))]
async fn all_categories(
    _caller: Storefront,
    State(state): State<AppState>,
    page: PageQuery,
) -> ApiResult<Response> {
    let state = &state;
    pagination::list(
        &state.cache,
        &cache_keys::all_categories(),
        &page,
        |page| async move { Ok(db::all_categories(&state.pool, &page).await?) },
    )
    .await
}

/// One sub-category.
#[utoipa::path(get, path = "/categories/subcategories/get/{id}", tag = "categories",
    params(("id" = i64, Path, description = "Sub-category id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = SubCategory),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ))]
async fn get_sub_category(
    _caller: Storefront,
    State(state): State<AppState>,
    PathParams(id): PathParams<i64>,
) -> ApiResult<JsonBytes> {
    state
        .cache
        .get_or_load(&cache_keys::sub_category(id), || async {
            db::sub_category(&state.pool, id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("sub-category {id} not found")))
        })
        .await
        .map(JsonBytes)
}

/// All sub-categories, by id.
#[utoipa::path(get, path = "/categories/subcategories/all", tag = "categories",
    params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = DataList<SubCategory>), (status = 401, body = ErrorBody)))]
async fn all_sub_categories(
    _caller: Storefront,
    State(state): State<AppState>,
    page: PageQuery,
) -> ApiResult<Response> {
    let state = &state;
    pagination::list(
        &state.cache,
        &cache_keys::all_sub_categories(),
        &page,
        |page| async move { Ok(db::all_sub_categories(&state.pool, &page).await?) },
    )
    .await
}

/// The sub-categories of one category, by id (empty for an unknown category).
#[utoipa::path(get, path = "/categories/subcategories/category/{category_id}", tag = "categories",
    params(("category_id" = i64, Path, description = "Category id"), PageQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = DataList<SubCategory>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)
    ))]
async fn sub_categories_of_category(
    _caller: Storefront,
    State(state): State<AppState>,
    PathParams(category_id): PathParams<i64>,
    page: PageQuery,
) -> ApiResult<Response> {
    let state = &state;
    pagination::list_of_owner(
        &state.cache,
        &cache_keys::sub_categories_of(category_id),
        &page,
        || async move { Ok(db::category_exists(&state.pool, category_id).await?) },
        |page| async move { Ok(db::sub_categories_of(&state.pool, category_id, &page).await?) },
    )
    .await
}
