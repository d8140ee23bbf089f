//! Orders and their items, plus the detailed views (an order with its items) the orders page and
//! checkout use. Every mutation runs in one transaction with its `orders_updates` event and
//! invalidates the keys listed next to it after commit.
//!
//! The server is the reference for what an order contains: each change to the items recomputes
//! the order's `items_total` from catalog prices in the same transaction, and creation counts
//! orders whose provider amount disagrees with it. After creation a storefront caller may only
//! cancel its order (status `cancelled`); changing the address, `total_price` or moving to any
//! other status needs the admin scope. An order holds at most [`limits::MAX_ORDER_ITEMS`] items.

pub mod db;
pub mod model;

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::cache::{CacheKey, keys};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::events::outbox::{OutboxEvent, Topic};
use crate::http::auth::Scope;
use crate::http::extract::{DataList, IdResponse, JsonBody, JsonBytes, PathParams};
use crate::http::identity::Shopper;
use crate::http::pagination::{self, Page, PageQuery};
use crate::limits;
use crate::mutation::Mutation;
use crate::products;
use crate::users;
use model::{
    DetailedOrder, DetailedOrderRequest, Order, OrderItem, OrderItemRequest, OrderRequest,
    ValidLine, ValidOrder,
};

/// The keys whose content includes the order row itself: its entry, its detailed view, and the
/// owner's two lists.
fn order_keys(order: &Order) -> Vec<CacheKey> {
    vec![
        keys::order(order.id),
        keys::detailed_order(order.id),
        keys::user_orders(&order.user_id),
        keys::user_detailed_orders(&order.user_id),
    ]
}

/// The keys whose content includes one of the order's items, and the order keys (its
/// `items_total` follows the items).
fn item_keys(order: &Order, item_id: i64) -> Vec<CacheKey> {
    let mut keys = order_keys(order);
    keys.push(keys::order_item(item_id));
    keys.push(keys::order_items(order.id));
    keys
}

/// The `orders_updates` event: the order and the items the change concerns.
fn order_event(event_type: &'static str, order: &Order, items: &[OrderItem]) -> OutboxEvent {
    OutboxEvent::new(Topic::OrdersUpdates, order.user_id.as_str(), event_type)
        .with("user_id", &order.user_id)
        .with("order", order)
        .with("order_items", items)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_order))
        .routes(routes!(orders_of_user))
        .routes(routes!(add_order))
        .routes(routes!(update_order))
        .routes(routes!(delete_order))
        .routes(routes!(get_order_item))
        .routes(routes!(items_of_order))
        .routes(routes!(add_order_item))
        .routes(routes!(update_order_item))
        .routes(routes!(delete_order_item))
        .routes(routes!(get_detailed_order))
        .routes(routes!(detailed_orders_of_user))
        .routes(routes!(add_detailed_order))
}

fn order_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("order {id} not found"))
}

fn orders_not_found(user_id: &str) -> ApiError {
    ApiError::not_found(format!("orders of user {user_id} not found"))
}

fn item_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("order item {id} not found"))
}

fn too_many_items() -> ApiError {
    ApiError::invalid(format!(
        "too many order items, at most {}",
        limits::MAX_ORDER_ITEMS
    ))
}

/// Records in `change` a change to one item: its `orders_updates` event and the keys it touches:
/// order-item-cache/{id}, order-items-cache/{order}, and the order keys (order-cache,
/// detailed-order-cache, user-orders-cache, user-detailed-orders-cache): `items_total` changed.
fn record_item_change(
    change: &mut Mutation<'_>,
    event_type: &'static str,
    order: &Order,
    item: &OrderItem,
) {
    change.event(order_event(event_type, order, std::slice::from_ref(item)));
    change.invalidate(item_keys(order, item.id));
}

/// `address_id 7 does not exist` / `address_id 7 does not belong to user`.
async fn check_address(state: &AppState, order: &ValidOrder) -> ApiResult<()> {
    match users::db::address(&state.pool, order.address_id).await? {
        None => Err(ApiError::invalid(format!(
            "address_id {} does not exist",
            order.address_id
        ))),
        Some(address) if address.user_id != order.user_id => Err(ApiError::invalid(format!(
            "address_id {} does not belong to user",
            order.address_id
        ))),
        Some(_) => Ok(()),
    }
}

/// The index of the first line whose product does not exist, with its id.
async fn first_missing_product(
    state: &AppState,
    lines: &[ValidLine],
) -> ApiResult<Option<(usize, i64)>> {
    let ids: Vec<i64> = lines.iter().map(|l| l.product_id).collect();
    let existing: HashSet<i64> = products::db::existing_ids(&state.pool, &ids)
        .await?
        .into_iter()
        .collect();
    Ok(lines
        .iter()
        .position(|l| !existing.contains(&l.product_id))
        .map(|index| (index, lines[index].product_id)))
}

/// One order.
#[utoipa::path(get, path = "/orders/get/{id}", tag = "orders",
    params(("id" = i64, Path, description = "Order id")),
    security(("api_key" = [])),
    responses((status = 200, body = Order), (status = 404, body = ErrorBody)))]
async fn get_order(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(id): PathParams<i64>,
) -> ApiResult<JsonBytes> {
    shopper
        .cached_entity(
            &state.cache,
            &keys::order(id),
            "/user_id",
            || async {
                db::order(&state.pool, id)
                    .await?
                    .ok_or_else(|| order_not_found(id))
            },
            || order_not_found(id),
        )
        .await
}

/// A user's orders, by id (empty for an unknown user).
#[utoipa::path(get, path = "/orders/all/{user_id}", tag = "orders",
    params(("user_id" = String, Path, description = "User id"), PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = DataList<Order>)))]
async fn orders_of_user(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(user_id): PathParams<String>,
    page: PageQuery,
) -> ApiResult<Response> {
    limits::check_path_user_id(&user_id)?;
    shopper.check(&user_id, || orders_not_found(&user_id))?;
    let state = &state;
    let user_id = user_id.as_str();
    pagination::list_of_owner(
        &state.cache,
        &keys::user_orders(user_id),
        &page,
        || async move { Ok(users::db::user_exists(&state.pool, user_id).await?) },
        |page| async move { Ok(db::orders_of(&state.pool, user_id, &page).await?) },
    )
    .await
}

/// Writes an order and its lines with the `order_created` event in one transaction.
async fn create_order(
    state: &AppState,
    order: &ValidOrder,
    lines: &[ValidLine],
) -> ApiResult<DetailedOrder> {
    let mut change = Mutation::begin(state).await?;
    let mut order = db::insert_order(change.tx(), order).await?;
    let items = db::insert_items(change.tx(), order.id, lines).await?;
    if !items.is_empty() {
        order = db::refresh_items_total(change.tx(), order.id).await?;
    }
    change.event(order_event("order_created", &order, &items));
    // Touches: the order keys and order-items-cache/{id}: a read of the not-yet-existing id may
    // have cached an empty item list (404s are never cached, empty lists are).
    change.invalidate(order_keys(&order));
    change.invalidate([keys::order_items(order.id)]);
    change.commit().await?;
    if !items.is_empty() && model::total_mismatch(order.total_price, order.items_total) {
        state.metrics.order_total_mismatches.inc();
        tracing::warn!(
            order_id = order.id,
            total_price = order.total_price,
            items_total = order.items_total,
            "order total differs from the server's item total"
        );
    }
    tracing::info!(order_id = order.id, items = items.len(), "order created");
    Ok(DetailedOrder { order, items })
}

/// Create an order (without items) for an address of the user.
#[utoipa::path(post, path = "/orders/add", tag = "orders",
    request_body = OrderRequest,
    security(("api_key" = [])),
    responses((status = 200, body = Order)))]
async fn add_order(
    shopper: Shopper,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<OrderRequest>,
) -> ApiResult<Json<Order>> {
    let order = request.validate()?;
    shopper.check(&order.user_id, || orders_not_found(&order.user_id))?;
    check_address(&state, &order).await?;
    Ok(Json(create_order(&state, &order, &[]).await?.order))
}

/// Update an order's address, total and status; 404 unless the body's user owns it. `created_at`
/// never changes. A storefront key may only cancel (`status: "cancelled"`, other fields as
/// stored); any other change is 403 without the admin scope.
#[utoipa::path(put, path = "/orders/update", tag = "orders",
    request_body = OrderRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, body = IdResponse<i64>), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ))]
async fn update_order(
    shopper: Shopper,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<OrderRequest>,
) -> ApiResult<Json<IdResponse<i64>>> {
    let id = request.update_id()?;
    let valid = request.validate()?;
    shopper.check(&valid.user_id, || order_not_found(id))?;
    check_address(&state, &valid).await?;
    let mut change = Mutation::begin(&state).await?;
    let stored = match db::order_for_update(change.tx(), id).await? {
        Some(stored) if stored.user_id == valid.user_id => stored,
        _ => return Err(order_not_found(id)),
    };
    if shopper.caller.scope != Scope::Admin && !model::storefront_may_apply(&stored, &valid) {
        return Err(ApiError::PermissionDenied("admin"));
    }
    let order = db::update_order(change.tx(), id, &valid).await?;
    let items = db::items_of(change.tx(), id, &Page::all()).await?;
    change.event(order_event("order_updated", &order, &items));
    // Touches: order-cache/{id}, detailed-order-cache/{id}, user-orders-cache/{user},
    // user-detailed-orders-cache/{user}.
    change.invalidate(order_keys(&order));
    change.commit().await?;
    Ok(Json(IdResponse { id }))
}

/// Delete an order of the user together with its items; 404 unless that user owns it.
#[utoipa::path(delete, path = "/orders/delete/{id}/user/{user_id}", tag = "orders",
    params(
        ("id" = i64, Path, description = "Order id"),
        ("user_id" = String, Path, description = "Owner's user id")
    ),
    security(("api_key" = [])),
    responses((status = 200, body = IdResponse<i64>), (status = 404, body = ErrorBody)))]
async fn delete_order(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams((id, user_id)): PathParams<(i64, String)>,
) -> ApiResult<Json<IdResponse<i64>>> {
    shopper.check(&user_id, || order_not_found(id))?;
    let mut change = Mutation::begin(&state).await?;
    let order = match db::order_for_update(change.tx(), id).await? {
        Some(stored) if stored.user_id == user_id => stored,
        _ => return Err(order_not_found(id)),
    };
    let items = db::delete_items_of(change.tx(), id).await?;
    db::delete_order(change.tx(), id).await?;
    change.event(order_event("order_deleted", &order, &items));
    // Touches: the order keys, order-items-cache/{id} and order-item-cache/{each item}.
    change.invalidate(order_keys(&order));
    change.invalidate([keys::order_items(id)]);
    change.invalidate(items.iter().map(|item| keys::order_item(item.id)));
    change.commit().await?;
    Ok(Json(IdResponse { id }))
}

/// One order item, with its order id.
#[utoipa::path(get, path = "/orders/items/get/{id}", tag = "orders",
    params(("id" = i64, Path, description = "Order item id")),
    security(("api_key" = [])),
    responses((status = 200, body = OrderItem), (status = 404, body = ErrorBody)))]
async fn get_order_item(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(id): PathParams<i64>,
) -> ApiResult<Response> {
    if let Some(user_id) = shopper.bound_user() {
        // Bound callers read the item and its order's owner in one statement (no window between
        // an ownership check and the read).
        return db::owned_item(&state.pool, id, user_id)
            .await?
            .map(|item| Json(item).into_response())
            .ok_or_else(|| item_not_found(id));
    }
    state
        .cache
        .get_or_load(&keys::order_item(id), || async {
            db::item(&state.pool, id)
                .await?
                .ok_or_else(|| item_not_found(id))
        })
        .await
        .map(|body| JsonBytes(body).into_response())
}

/// An order's items, by id (empty for an unknown order).
#[utoipa::path(get, path = "/orders/items/all/{order_id}", tag = "orders",
    params(("order_id" = i64, Path, description = "Order id"), PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = DataList<OrderItem>)))]
async fn items_of_order(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(order_id): PathParams<i64>,
    page: PageQuery,
) -> ApiResult<Response> {
    if shopper.is_bound() {
        // Orders never change owner and ids are never reused, so an order that exists now and
        // belongs to the caller stays theirs for the read below; one that does not exist has no
        // items to show.
        match db::owner_of_order(&state.pool, order_id).await? {
            Some(owner) => shopper.check(&owner, || order_not_found(order_id))?,
            None => return Ok(Json(DataList::<OrderItem>::new(Vec::new())).into_response()),
        }
    }
    let state = &state;
    pagination::list_of_owner(
        &state.cache,
        &keys::order_items(order_id),
        &page,
        || async move { Ok(db::owner_of_order(&state.pool, order_id).await?.is_some()) },
        |page| async move { Ok(db::items_of(&state.pool, order_id, &page).await?) },
    )
    .await
}

async fn ensure_product_exists(state: &AppState, product_id: i64) -> ApiResult<()> {
    if products::db::existing_ids(&state.pool, &[product_id])
        .await?
        .is_empty()
    {
        return Err(ApiError::invalid(format!(
            "product_id {product_id} does not exist"
        )));
    }
    Ok(())
}

/// Add an item to an existing order.
#[utoipa::path(post, path = "/orders/items/add", tag = "orders",
    request_body = OrderItemRequest,
    security(("api_key" = [])),
    responses((status = 200, body = OrderItem)))]
async fn add_order_item(
    shopper: Shopper,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<OrderItemRequest>,
) -> ApiResult<Json<OrderItem>> {
    let (order_id, line) = request.validate()?;
    let mut change = Mutation::begin(&state).await?;
    // Locks the order so it cannot be deleted under the new item.
    let order = db::order_for_update(change.tx(), order_id)
        .await?
        .ok_or_else(|| ApiError::invalid(format!("order_id {order_id} does not exist")))?;
    shopper.check(&order.user_id, || order_not_found(order_id))?;
    ensure_product_exists(&state, line.product_id).await?;
    // The order row is locked, so the count cannot change before the insert.
    if db::item_count(change.tx(), order_id).await? >= limits::MAX_ORDER_ITEMS {
        return Err(too_many_items());
    }
    let mut items = db::insert_items(change.tx(), order_id, &[line]).await?;
    let item = items
        .pop()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("insert returned no row")))?;
    let order = db::refresh_items_total(change.tx(), order.id).await?;
    record_item_change(&mut change, "order_item_added", &order, &item);
    change.commit().await?;
    Ok(Json(item))
}

/// Change an item's product and quantity; an item never moves to another order.
#[utoipa::path(put, path = "/orders/items/update", tag = "orders",
    request_body = OrderItemRequest,
    security(("api_key" = [])),
    responses((status = 200, body = IdResponse<i64>), (status = 404, body = ErrorBody)))]
async fn update_order_item(
    shopper: Shopper,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<OrderItemRequest>,
) -> ApiResult<Json<IdResponse<i64>>> {
    let id = request.update_id()?;
    let (order_id, line) = request.validate()?;
    ensure_product_exists(&state, line.product_id).await?;
    let mut change = Mutation::begin(&state).await?;
    // The order before the item, as every writer locks them (no deadlock with an order delete).
    let order = db::order_for_update(change.tx(), order_id).await?;
    let stored = db::item_for_update(change.tx(), id)
        .await?
        .ok_or_else(|| item_not_found(id))?;
    if stored.order_id != order_id {
        return Err(ApiError::invalid("order_id cannot be changed"));
    }
    let order = order.ok_or_else(|| item_not_found(id))?;
    shopper.check(&order.user_id, || item_not_found(id))?;
    let item = db::update_item(change.tx(), id, &line).await?;
    let order = db::refresh_items_total(change.tx(), order.id).await?;
    record_item_change(&mut change, "order_item_updated", &order, &item);
    change.commit().await?;
    Ok(Json(IdResponse { id }))
}

/// Remove an item from its order.
#[utoipa::path(delete, path = "/orders/items/delete/{id}", tag = "orders",
    params(("id" = i64, Path, description = "Order item id")),
    security(("api_key" = [])),
    responses((status = 200, body = IdResponse<i64>), (status = 404, body = ErrorBody)))]
async fn delete_order_item(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(id): PathParams<i64>,
) -> ApiResult<Json<IdResponse<i64>>> {
    let mut change = Mutation::begin(&state).await?;
    // The order before the item, as every writer locks them (no deadlock with an order delete);
    // the ownership check is part of the DELETE itself.
    db::lock_order_of_item(change.tx(), id).await?;
    let item = db::delete_owned_item(change.tx(), id, shopper.bound_user())
        .await?
        .ok_or_else(|| item_not_found(id))?;
    let order = db::refresh_items_total(change.tx(), item.order_id).await?;
    record_item_change(&mut change, "order_item_deleted", &order, &item);
    change.commit().await?;
    Ok(Json(IdResponse { id }))
}

/// An order with its items.
#[utoipa::path(get, path = "/orders/detailed/get/{order_id}", tag = "orders",
    params(("order_id" = i64, Path, description = "Order id")),
    security(("api_key" = [])),
    responses((status = 200, body = DetailedOrder), (status = 404, body = ErrorBody)))]
async fn get_detailed_order(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(order_id): PathParams<i64>,
) -> ApiResult<JsonBytes> {
    shopper
        .cached_entity(
            &state.cache,
            &keys::detailed_order(order_id),
            "/order/user_id",
            || async {
                let order = db::order(&state.pool, order_id)
                    .await?
                    .ok_or_else(|| order_not_found(order_id))?;
                let items = db::items_of(&state.pool, order_id, &Page::all()).await?;
                Ok(DetailedOrder { order, items })
            },
            || order_not_found(order_id),
        )
        .await
}

/// A user's orders with their items, by id: two queries whatever the number of orders.
#[utoipa::path(get, path = "/orders/detailed/all/{user_id}", tag = "orders",
    params(("user_id" = String, Path, description = "User id"), PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = DataList<DetailedOrder>)))]
async fn detailed_orders_of_user(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(user_id): PathParams<String>,
    page: PageQuery,
) -> ApiResult<Response> {
    limits::check_path_user_id(&user_id)?;
    shopper.check(&user_id, || orders_not_found(&user_id))?;
    let key = keys::user_detailed_orders(&user_id);
    let state = &state;
    let user_id = user_id.as_str();
    let user_exists = || async move { Ok(users::db::user_exists(&state.pool, user_id).await?) };
    pagination::list_of_owner(&state.cache, &key, &page, user_exists, |page| async move {
        let orders = db::orders_of(&state.pool, user_id, &page).await?;
        let ids: Vec<i64> = orders.iter().map(|o| o.id).collect();
        let mut items_by_order: HashMap<i64, Vec<OrderItem>> = HashMap::new();
        for item in db::items_of_orders(&state.pool, &ids).await? {
            items_by_order.entry(item.order_id).or_default().push(item);
        }
        Ok(orders
            .into_iter()
            .map(|order| {
                let items = items_by_order.remove(&order.id).unwrap_or_default();
                DetailedOrder { order, items }
            })
            .collect())
    })
    .await
}

/// Checkout: validates the order and every item first, then writes the order and its items in one
/// transaction. Items come back in request order.
#[utoipa::path(post, path = "/orders/detailed/add", tag = "orders",
    request_body = DetailedOrderRequest,
    security(("api_key" = [])),
    responses((status = 200, body = DetailedOrder)))]
async fn add_detailed_order(
    shopper: Shopper,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<DetailedOrderRequest>,
) -> ApiResult<Json<DetailedOrder>> {
    let (order, lines) = request.validate()?;
    shopper.check(&order.user_id, || orders_not_found(&order.user_id))?;
    check_address(&state, &order).await?;
    if let Some((index, product_id)) = first_missing_product(&state, &lines).await? {
        return Err(ApiError::invalid(format!(
            "items[{index}]: product_id {product_id} does not exist"
        )));
    }
    Ok(Json(create_order(&state, &order, &lines).await?))
}
