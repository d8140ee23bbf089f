//! Products: the catalog's items. Reads are cached for 24 hours; admin mutations run in one
//! transaction with their outbox event and invalidate every product key they can change.

pub mod db;
pub mod model;

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::cache::{CacheKey, PRODUCT_TTL};
use crate::cart;
use crate::categories;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::events::outbox::{self, OutboxEvent, Topic};
use crate::http::auth::{Admin, Storefront};
use crate::http::extract::{DataList, IdResponse, JsonBody, JsonBytes, PathParams};
use crate::http::pagination::{self, PageQuery};
use model::{Product, ProductRequest, ValidProduct};

/// Cache keys of this domain (names kept from the original service).
pub mod cache_keys {
    use super::*;

    pub fn product(id: i64) -> CacheKey {
        CacheKey::new("product-cache", id, PRODUCT_TTL)
    }
    pub fn all() -> CacheKey {
        CacheKey::fixed("products-cache/all", PRODUCT_TTL)
    }
    pub fn by_category(category_id: i64) -> CacheKey {
        CacheKey::new(
            "products-cache",
            format!("category/{category_id}"),
            PRODUCT_TTL,
        )
    }
    pub fn by_sub_category(sub_category_id: i64) -> CacheKey {
        CacheKey::new(
            "products-cache",
            format!("subcategory/{sub_category_id}"),
            PRODUCT_TTL,
        )
    }
    pub fn hero() -> CacheKey {
        CacheKey::fixed("hero-products-cache/all", PRODUCT_TTL)
    }
    pub fn hero_of_category(category_id: i64) -> CacheKey {
        CacheKey::new(
            "hero-products-cache",
            format!("category/{category_id}"),
            PRODUCT_TTL,
        )
    }
}

/// Every key a change to one product can make stale: its own entry, the full list, the hero list,
/// the lists of its old and new category and sub-category, and the hero lists of the categories
/// that feature it. Search results are not cached, so they are never stale.
fn keys_touched_by(
    product_id: i64,
    versions: &[&Product],
    hero_categories: &[i64],
) -> Vec<CacheKey> {
    let categories: BTreeSet<i64> = versions.iter().map(|p| p.category).collect();
    let sub_categories: BTreeSet<i64> = versions.iter().map(|p| p.sub_category).collect();
    let mut keys = vec![
        cache_keys::product(product_id),
        cache_keys::all(),
        cache_keys::hero(),
    ];
    keys.extend(categories.iter().map(|&c| cache_keys::by_category(c)));
    keys.extend(
        sub_categories
            .iter()
            .map(|&s| cache_keys::by_sub_category(s)),
    );
    keys.extend(
        categories
            .iter()
            .chain(hero_categories)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|&c| cache_keys::hero_of_category(c)),
    );
    keys
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_product))
        .routes(routes!(all_products))
        .routes(routes!(products_of_category))
        .routes(routes!(products_of_sub_category))
        .routes(routes!(hero_products))
        .routes(routes!(hero_products_of_category))
        .routes(routes!(search_products))
        .routes(routes!(add_product))
        .routes(routes!(update_product))
        .routes(routes!(delete_product))
}

/// One product.
#[utoipa::path(get, path = "/products/get/{id}", tag = "products",
    params(("id" = i64, Path, description = "Product id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = Product),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ))]
async fn get_product(
    _caller: Storefront,
    State(state): State<AppState>,
    PathParams(id): PathParams<i64>,
) -> ApiResult<JsonBytes> {
    state
        .cache
        .get_or_load(&cache_keys::product(id), || async {
            db::product(&state.pool, id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("product {id} not found")))
        })
        .await
        .map(JsonBytes)
}

/// All products, by id.
#[utoipa::path(get, path = "/products/all", tag = "products",
    params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = DataList<Product>), (status = 401, body = ErrorBody)))]
async fn all_products(
    _caller: Storefront,
    State(state): State<AppState>,
    page: PageQuery,
) -> ApiResult<Response> {
    let state = &state;
    pagination::list(&state.cache, &cache_keys::all(), &page, |page| async move {
        Ok(db::all(&state.pool, &page).await?)
    })
    .await
}

/// The products of a category, by id (empty for an unknown category).
#[utoipa::path(get, path = "/products/category/{id}", tag = "products",
    params(("id" = i64, Path, description = "Category id"), PageQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = DataList<Product>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)
    ))]
async fn products_of_category(
    _caller: Storefront,
    State(state): State<AppState>,
    PathParams(id): PathParams<i64>,
    page: PageQuery,
) -> ApiResult<Response> {
    let state = &state;
    pagination::list_of_owner(
        &state.cache,
        &cache_keys::by_category(id),
        &page,
        || async move { Ok(categories::db::category_exists(&state.pool, id).await?) },
        |page| async move { Ok(db::by_category(&state.pool, id, &page).await?) },
    )
    .await
}

/// The products of a sub-category, by id (empty for an unknown sub-category).
#[utoipa::path(get, path = "/products/subcategory/{id}", tag = "products",
    params(("id" = i64, Path, description = "Sub-category id"), PageQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = DataList<Product>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)
    ))]
async fn products_of_sub_category(
    _caller: Storefront,
    State(state): State<AppState>,
    PathParams(id): PathParams<i64>,
    page: PageQuery,
) -> ApiResult<Response> {
    let state = &state;
    pagination::list_of_owner(
        &state.cache,
        &cache_keys::by_sub_category(id),
        &page,
        || async move {
            Ok(categories::db::sub_category(&state.pool, id)
                .await?
                .is_some())
        },
        |page| async move { Ok(db::by_sub_category(&state.pool, id, &page).await?) },
    )
    .await
}

/// The store's hero products, by id.
#[utoipa::path(get, path = "/products/hero", tag = "products",
    security(("api_key" = [])),
    responses((status = 200, body = DataList<Product>), (status = 401, body = ErrorBody)))]
async fn hero_products(_caller: Storefront, State(state): State<AppState>) -> ApiResult<JsonBytes> {
    state
        .cache
        .get_or_load(&cache_keys::hero(), || async {
            Ok(DataList::new(db::hero(&state.pool).await?))
        })
        .await
        .map(JsonBytes)
}

/// A category's hero products (one per sub-category), by id.
#[utoipa::path(get, path = "/products/hero/category/{category}", tag = "products",
    params(("category" = i64, Path, description = "Category id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = DataList<Product>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)
    ))]
async fn hero_products_of_category(
    _caller: Storefront,
    State(state): State<AppState>,
    PathParams(category): PathParams<i64>,
) -> ApiResult<JsonBytes> {
    state
        .cache
        .get_or_load(&cache_keys::hero_of_category(category), || async {
            Ok(DataList::new(
                db::hero_of_category(&state.pool, category).await?,
            ))
        })
        .await
        .map(JsonBytes)
}

/// Products whose name or description contains the query (case-insensitive, `%` and `_` literal),
/// by id. Not cached: queries are unbounded and results must never be stale.
#[utoipa::path(get, path = "/products/search/{query}", tag = "products",
    params(("query" = String, Path, description = "Text to find, 1–100 characters"), PageQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = DataList<Product>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)
    ))]
async fn search_products(
    _caller: Storefront,
    State(state): State<AppState>,
    PathParams(query): PathParams<String>,
    page: PageQuery,
) -> ApiResult<Response> {
    let query = model::validate_search(&query)?;
    let pattern = model::like_pattern(query);
    pagination::uncached(&page, |page| async move {
        Ok(db::search(&state.pool, &pattern, &page).await?)
    })
    .await
}

/// Runs the contract's validation of a product body, including the category checks.
async fn validate(state: &AppState, request: &ProductRequest) -> ApiResult<ValidProduct> {
    request.validate_text()?;
    let (category, sub_category) = request.category_ids();
    if !categories::db::category_exists(&state.pool, category).await? {
        return Err(ApiError::invalid(format!(
            "category {category} does not exist"
        )));
    }
    match categories::db::sub_category(&state.pool, sub_category).await? {
        None => {
            return Err(ApiError::invalid(format!(
                "sub-category {sub_category} does not exist"
            )));
        }
        Some(found) if found.category != category => {
            return Err(ApiError::invalid(format!(
                "sub-category {sub_category} does not belong to category {category}"
            )));
        }
        Some(_) => {}
    }
    request.validate_rest()
}

fn product_event(event_type: &'static str, product: &Product) -> OutboxEvent {
    OutboxEvent::new(Topic::ProductsUpdates, product.id.to_string(), event_type)
        .with("product", product)
}

/// Create a product (admin). Returns it with its server-assigned id.
#[utoipa::path(post, path = "/products/add", tag = "products",
    request_body = ProductRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, body = Product),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 415, body = ErrorBody)
    ))]
async fn add_product(
    _caller: Admin,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<ProductRequest>,
) -> ApiResult<Json<Product>> {
    let valid = validate(&state, &request).await?;
    let mut tx = state.pool.begin().await?;
    let product = db::insert(&mut tx, &valid).await?;
    outbox::append(&mut tx, &[product_event("product_created", &product)]).await?;
    tx.commit().await?;
    // A new product is in no hero list yet.
    state
        .cache
        .invalidate(&keys_touched_by(product.id, &[&product], &[]))
        .await;
    tracing::info!(product_id = product.id, "product created");
    Ok(Json(product))
}

/// Replace a product's fields (admin).
#[utoipa::path(put, path = "/products/update/{id}", tag = "products",
    params(("id" = i64, Path, description = "Product id")),
    request_body = ProductRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, body = Product),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 415, body = ErrorBody)
    ))]
async fn update_product(
    _caller: Admin,
    State(state): State<AppState>,
    PathParams(id): PathParams<i64>,
    JsonBody(request): JsonBody<ProductRequest>,
) -> ApiResult<Json<Product>> {
    let valid = validate(&state, &request).await?;
    let mut tx = state.pool.begin().await?;
    let previous = db::product_for_update(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("product {id} not found")))?;
    let hero_categories = db::hero_categories_of(&mut tx, id).await?;
    let product = db::update(&mut tx, id, &valid).await?;
    outbox::append(&mut tx, &[product_event("product_updated", &product)]).await?;
    tx.commit().await?;
    state
        .cache
        .invalidate(&keys_touched_by(
            id,
            &[&previous, &product],
            &hero_categories,
        ))
        .await;
    tracing::info!(product_id = id, "product updated");
    Ok(Json(product))
}

/// Delete a product (admin): 409 when an order contains it; otherwise it also leaves every cart
/// (each removal is a `cart_item_deleted` event for its user) and every hero list.
#[utoipa::path(delete, path = "/products/delete/{id}", tag = "products",
    params(("id" = i64, Path, description = "Product id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = IdResponse<i64>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)
    ))]
async fn delete_product(
    _caller: Admin,
    State(state): State<AppState>,
    PathParams(id): PathParams<i64>,
) -> ApiResult<Json<IdResponse<i64>>> {
    let mut tx = state.pool.begin().await?;
    let product = db::product_for_update(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("product {id} not found")))?;
    if db::is_ordered(&mut tx, id).await? {
        return Err(ApiError::FailedPrecondition(format!(
            "product {id} is part of an order"
        )));
    }
    let hero_categories = db::hero_categories_of(&mut tx, id).await?;
    let removed_from_carts = cart::db::delete_items_of_product(&mut tx, id).await?;
    db::delete(&mut tx, id).await?;
    let mut events = vec![product_event("product_deleted", &product)];
    events.extend(removed_from_carts.iter().map(|item| {
        OutboxEvent::new(
            Topic::CartUpdates,
            item.user_id.clone(),
            "cart_item_deleted",
        )
        .with("user_id", &item.user_id)
        .with("cart_item", item)
    }));
    outbox::append(&mut tx, &events).await?;
    tx.commit().await?;

    let mut keys = keys_touched_by(id, &[&product], &hero_categories);
    for item in &removed_from_carts {
        keys.push(cart::cache_keys::cart_item(item.id));
        keys.push(cart::cache_keys::user_cart(&item.user_id));
    }
    state.cache.invalidate(&keys).await;
    tracing::info!(
        product_id = id,
        removed_cart_items = removed_from_carts.len(),
        "product deleted"
    );
    Ok(Json(IdResponse { id }))
}
