//! Shopping carts: one row per added product (adding a product twice adds a second row, as the
//! original did; the frontend merges), owned by a user, cached for 2 hours. Every mutation runs in one
//! transaction with its `cart_updates` event and invalidates the keys listed next to it after commit.

pub mod db;
pub mod model;

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::cache::keys;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::events::outbox::{OutboxEvent, Topic};
use crate::http::extract::{DataList, IdResponse, JsonBody, JsonBytes, PathParams};
use crate::http::identity::Shopper;
use crate::http::pagination::{self, PageQuery};
use crate::limits;
use crate::mutation::Mutation;
use crate::products;
use crate::users;
use model::{CartItem, CartItemRequest, CartItemsRequest, ValidCartItem};

/// The `cart_updates` event of a change to one cart row.
pub fn item_event(event_type: &'static str, item: &CartItem) -> OutboxEvent {
    OutboxEvent::new(Topic::CartUpdates, item.user_id.as_str(), event_type)
        .with("user_id", &item.user_id)
        .with("cart_item", item)
}

/// Records in `change` the removal of cart rows: a `cart_item_deleted` event for each row's owner,
/// and each row's entry and its owner's cart as stale.
fn record_removed(change: &mut Mutation<'_>, removed: &[CartItem]) {
    change.events(
        removed
            .iter()
            .map(|item| item_event("cart_item_deleted", item)),
    );
    change.invalidate(
        removed
            .iter()
            .flat_map(|item| [keys::cart_item(item.id), keys::user_cart(&item.user_id)]),
    );
}

/// The cart's part of a product deletion: removes the product from every cart within `change`
/// (an event per removed row, for its owner). Returns how many rows were removed.
pub async fn remove_items_of_product(
    change: &mut Mutation<'_>,
    product_id: i64,
) -> ApiResult<usize> {
    let removed = db::delete_items_of_product(change.tx(), product_id).await?;
    record_removed(change, &removed);
    Ok(removed.len())
}

/// The cart's part of a user deletion: empties the user's cart within `change` (an event per
/// removed row); the user's cart entry is stale even when it was empty.
pub async fn remove_items_of_user(change: &mut Mutation<'_>, user_id: &str) -> ApiResult<()> {
    let removed = db::delete_items_of_user(change.tx(), user_id).await?;
    change.invalidate([keys::user_cart(user_id)]);
    record_removed(change, &removed);
    Ok(())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_cart_item))
        .routes(routes!(cart_of_user))
        .routes(routes!(add_cart_item))
        .routes(routes!(add_cart_items))
        .routes(routes!(update_cart_item))
        .routes(routes!(delete_cart_item))
}

fn item_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("cart item {id} not found"))
}

fn cart_not_found(user_id: &str) -> ApiError {
    ApiError::not_found(format!("cart of user {user_id} not found"))
}

/// Checks that every referenced product and user exists (two queries for any number of items); the
/// error names the first offending item, prefixed with its index for batches.
async fn check_references(state: &AppState, items: &[ValidCartItem], batch: bool) -> ApiResult<()> {
    let product_ids: Vec<i64> = items.iter().map(|i| i.product_id).collect();
    let user_ids: Vec<&str> = items.iter().map(|i| i.user_id.as_str()).collect();
    let products: HashSet<i64> = products::db::existing_ids(&state.pool, &product_ids)
        .await?
        .into_iter()
        .collect();
    let users: HashSet<String> = users::db::existing_user_ids(&state.pool, &user_ids)
        .await?
        .into_iter()
        .collect();
    for (index, item) in items.iter().enumerate() {
        let error = if !products.contains(&item.product_id) {
            ApiError::invalid(format!("product_id {} does not exist", item.product_id))
        } else if !users.contains(&item.user_id) {
            ApiError::invalid(format!("user_id {} does not exist", item.user_id))
        } else {
            continue;
        };
        return Err(if batch {
            error.prefixed(&format!("data[{index}]"))
        } else {
            error
        });
    }
    Ok(())
}

/// One cart row.
#[utoipa::path(get, path = "/cart/get/{id}", tag = "cart",
    params(("id" = i64, Path, description = "Cart item id")),
    security(("api_key" = [])),
    responses((status = 200, body = CartItem), (status = 404, body = ErrorBody)))]
async fn get_cart_item(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(id): PathParams<i64>,
) -> ApiResult<JsonBytes> {
    shopper
        .cached_entity(
            &state.cache,
            &keys::cart_item(id),
            "/user_id",
            || async {
                db::item(&state.pool, id)
                    .await?
                    .ok_or_else(|| item_not_found(id))
            },
            || item_not_found(id),
        )
        .await
}

/// A user's cart, by id (empty for an unknown user).
#[utoipa::path(get, path = "/cart/all/{user_id}", tag = "cart",
    params(("user_id" = String, Path, description = "User id"), PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = DataList<CartItem>)))]
async fn cart_of_user(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(user_id): PathParams<String>,
    page: PageQuery,
) -> ApiResult<Response> {
    limits::check_path_user_id(&user_id)?;
    shopper.check(&user_id, || cart_not_found(&user_id))?;
    let state = &state;
    let user_id = user_id.as_str();
    pagination::list_of_owner(
        &state.cache,
        &keys::user_cart(user_id),
        &page,
        || async move { Ok(users::db::user_exists(&state.pool, user_id).await?) },
        |page| async move { Ok(db::items_of(&state.pool, user_id, &page).await?) },
    )
    .await
}

/// `cart is full, at most 200 items` when the rows would take a user's cart past
/// [`limits::MAX_CART_ROWS`]. Locks the owners' user rows, so concurrent adds cannot overshoot.
async fn check_cart_room(tx: &mut sqlx::PgConnection, items: &[ValidCartItem]) -> ApiResult<()> {
    let mut adding: HashMap<&str, i64> = HashMap::new();
    for item in items {
        *adding.entry(item.user_id.as_str()).or_default() += 1;
    }
    let owners: Vec<&str> = adding.keys().copied().collect();
    users::db::lock_users(tx, &owners).await?;
    let stored: HashMap<String, i64> = db::row_counts(tx, &owners).await?.into_iter().collect();
    for (user_id, count) in adding {
        if stored.get(user_id).copied().unwrap_or(0) + count > limits::MAX_CART_ROWS {
            return Err(ApiError::invalid(format!(
                "cart is full, at most {} items",
                limits::MAX_CART_ROWS
            )));
        }
    }
    Ok(())
}

/// Insert validated rows with their events in one transaction, then invalidate.
async fn insert_items(state: &AppState, items: &[ValidCartItem]) -> ApiResult<Vec<CartItem>> {
    let mut change = Mutation::begin(state).await?;
    check_cart_room(change.tx(), items).await?;
    let inserted = db::insert_many(change.tx(), items).await?;
    change.events(
        inserted
            .iter()
            .map(|item| item_event("cart_item_added", item)),
    );
    // Touches: user-cart-items-cache/{user} of every owner (new rows have no entry of their own).
    let owners: HashSet<&str> = inserted.iter().map(|item| item.user_id.as_str()).collect();
    change.invalidate(owners.into_iter().map(keys::user_cart));
    change.commit().await?;
    Ok(inserted)
}

/// Add a product to a user's cart.
#[utoipa::path(post, path = "/cart/add", tag = "cart",
    request_body = CartItemRequest,
    security(("api_key" = [])),
    responses((status = 200, body = CartItem)))]
async fn add_cart_item(
    shopper: Shopper,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CartItemRequest>,
) -> ApiResult<Json<CartItem>> {
    let item = request.validate()?;
    shopper.check(&item.user_id, || cart_not_found(&item.user_id))?;
    check_references(&state, std::slice::from_ref(&item), false).await?;
    let mut inserted = insert_items(&state, &[item]).await?;
    inserted
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("insert returned no row")))
}

/// Add up to 100 items at once (e.g. merging a guest cart at sign-in): all or nothing, answered in
/// request order.
#[utoipa::path(post, path = "/cart/add/all", tag = "cart",
    request_body = CartItemsRequest,
    security(("api_key" = [])),
    responses((status = 200, body = DataList<CartItem>)))]
async fn add_cart_items(
    shopper: Shopper,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CartItemsRequest>,
) -> ApiResult<Json<DataList<CartItem>>> {
    let items = request.validate()?;
    for item in &items {
        shopper.check(&item.user_id, || cart_not_found(&item.user_id))?;
    }
    check_references(&state, &items, true).await?;
    Ok(Json(DataList::new(insert_items(&state, &items).await?)))
}

/// Change a row's product and quantity; 404 unless the body's user owns it (rows never move).
#[utoipa::path(put, path = "/cart/update", tag = "cart",
    request_body = CartItemRequest,
    security(("api_key" = [])),
    responses((status = 200, body = IdResponse<i64>), (status = 404, body = ErrorBody)))]
async fn update_cart_item(
    shopper: Shopper,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CartItemRequest>,
) -> ApiResult<Json<IdResponse<i64>>> {
    let id = request.update_id()?;
    let item = request.validate()?;
    shopper.check(&item.user_id, || item_not_found(id))?;
    check_references(&state, std::slice::from_ref(&item), false).await?;
    let mut change = Mutation::begin(&state).await?;
    match db::item_for_update(change.tx(), id).await? {
        Some(stored) if stored.user_id == item.user_id => {}
        _ => return Err(item_not_found(id)),
    }
    let updated = db::update(change.tx(), id, &item).await?;
    change.event(item_event("cart_item_updated", &updated));
    // Touches: cart-item-cache/{id}, user-cart-items-cache/{user}.
    change.invalidate([keys::cart_item(id), keys::user_cart(&updated.user_id)]);
    change.commit().await?;
    Ok(Json(IdResponse { id }))
}

/// Remove a row from the user's cart; 404 unless that user owns it.
#[utoipa::path(delete, path = "/cart/delete/{id}/user/{user_id}", tag = "cart",
    params(
        ("id" = i64, Path, description = "Cart item id"),
        ("user_id" = String, Path, description = "Owner's user id")
    ),
    security(("api_key" = [])),
    responses((status = 200, body = IdResponse<i64>), (status = 404, body = ErrorBody)))]
async fn delete_cart_item(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams((id, user_id)): PathParams<(i64, String)>,
) -> ApiResult<Json<IdResponse<i64>>> {
    shopper.check(&user_id, || item_not_found(id))?;
    let mut change = Mutation::begin(&state).await?;
    let removed = db::delete_owned(change.tx(), id, &user_id)
        .await?
        .ok_or_else(|| item_not_found(id))?;
    // Touches: cart-item-cache/{id}, user-cart-items-cache/{user}.
    record_removed(&mut change, std::slice::from_ref(&removed));
    change.commit().await?;
    Ok(Json(IdResponse { id }))
}
