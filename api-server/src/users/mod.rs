//! Users and their addresses. A user's id is the identity provider's; the frontend creates the user
//! after `GET /users/get/:id` answers 404. Every mutation runs in one transaction with its
//! `users_updates` event and invalidates the keys listed next to it after commit.

pub mod db;
pub mod model;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::cart;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::events::outbox::{self, OutboxEvent, Topic};
use crate::http::auth::Admin;
use crate::http::extract::{DataList, IdResponse, JsonBody, JsonBytes, PathParams};
use crate::http::identity::Shopper;
use crate::http::pagination::{self, PageQuery};
use crate::limits;
use model::{Address, AddressRequest, User, UserRequest, address_event_view, user_event_view};

/// Cache keys of this domain.
pub mod cache_keys {
    use crate::cache::{CacheKey, DEFAULT_TTL};

    pub fn user(id: &str) -> CacheKey {
        CacheKey::new("user-cache", id, DEFAULT_TTL)
    }
    pub fn all_users() -> CacheKey {
        CacheKey::fixed("users-cache/all", DEFAULT_TTL)
    }
    pub fn address(id: i64) -> CacheKey {
        CacheKey::new("address-cache", id, DEFAULT_TTL)
    }
    pub fn user_addresses(user_id: &str) -> CacheKey {
        CacheKey::new("user-addresses-cache", user_id, DEFAULT_TTL)
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_user))
        .routes(routes!(all_users))
        .routes(routes!(add_user))
        .routes(routes!(update_user))
        .routes(routes!(delete_user))
        .routes(routes!(get_address))
        .routes(routes!(addresses_of_user))
        .routes(routes!(add_address))
        .routes(routes!(update_address))
        .routes(routes!(delete_address))
}

fn user_event(
    event_type: &'static str,
    user: Option<&User>,
    user_id: &str,
    addresses: &[Address],
) -> OutboxEvent {
    OutboxEvent::new(Topic::UsersUpdates, user_id, event_type)
        .with("user_id", user_id)
        .with("user", user.map(user_event_view))
        .with(
            "addresses",
            addresses.iter().map(address_event_view).collect::<Vec<_>>(),
        )
}

fn user_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("user {id} not found"))
}

fn address_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("address {id} not found"))
}

/// One user; 404 when absent (the frontend then creates it).
#[utoipa::path(get, path = "/users/get/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = User), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)
    ))]
async fn get_user(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<JsonBytes> {
    limits::check_path_user_id(&id)?;
    shopper
        .cached_entity(
            &state.cache,
            &cache_keys::user(&id),
            "/id",
            || async {
                db::user(&state.pool, &id)
                    .await?
                    .ok_or_else(|| user_not_found(&id))
            },
            || user_not_found(&id),
        )
        .await
}

/// Every user, by id (admin).
#[utoipa::path(get, path = "/users/all", tag = "users",
    params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = DataList<User>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn all_users(
    _caller: Admin,
    State(state): State<AppState>,
    page: PageQuery,
) -> ApiResult<Response> {
    let state = &state;
    pagination::list(
        &state.cache,
        &cache_keys::all_users(),
        &page,
        |page| async move { Ok(db::all_users(&state.pool, &page).await?) },
    )
    .await
}

/// Create a user with the identity provider's id; 409 when the id or the email (case-insensitive)
/// is taken.
#[utoipa::path(post, path = "/users/add", tag = "users",
    request_body = UserRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, body = User), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 415, body = ErrorBody)
    ))]
async fn add_user(
    shopper: Shopper,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<UserRequest>,
) -> ApiResult<Json<User>> {
    let user = request.validate()?;
    shopper.check(&user.id, || user_not_found(&user.id))?;
    shopper.check_email(&user.email)?;
    let mut tx = state.pool.begin().await?;
    let user = db::insert_user(&mut tx, &user).await?;
    outbox::append(
        &mut tx,
        &[user_event("user_created", Some(&user), &user.id, &[])],
    )
    .await?;
    tx.commit().await?;
    // Touches: user-cache/{id} (a cached 404 is never stored, but be exact), users-cache/all.
    state
        .cache
        .invalidate(&[cache_keys::user(&user.id), cache_keys::all_users()])
        .await;
    Ok(Json(user))
}

/// Update a user's names and email; 404 when absent, 409 when the email is taken.
#[utoipa::path(put, path = "/users/update", tag = "users",
    request_body = UserRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, body = IdResponse<String>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 415, body = ErrorBody)
    ))]
async fn update_user(
    shopper: Shopper,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<UserRequest>,
) -> ApiResult<Json<IdResponse<String>>> {
    let user = request.validate()?;
    shopper.check(&user.id, || user_not_found(&user.id))?;
    shopper.check_email(&user.email)?;
    let mut tx = state.pool.begin().await?;
    let user = db::update_user(&mut tx, &user)
        .await?
        .ok_or_else(|| user_not_found(&user.id))?;
    outbox::append(
        &mut tx,
        &[user_event("user_updated", Some(&user), &user.id, &[])],
    )
    .await?;
    tx.commit().await?;
    // Touches: user-cache/{id}, users-cache/all.
    state
        .cache
        .invalidate(&[cache_keys::user(&user.id), cache_keys::all_users()])
        .await;
    Ok(Json(IdResponse { id: user.id }))
}

/// Delete a user with their cart items and addresses; 409 when the user has orders.
#[utoipa::path(delete, path = "/users/delete/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = IdResponse<String>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)
    ))]
async fn delete_user(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<IdResponse<String>>> {
    shopper.check(&id, || user_not_found(&id))?;
    let mut tx = state.pool.begin().await?;
    let user = db::user_for_update(&mut tx, &id)
        .await?
        .ok_or_else(|| user_not_found(&id))?;
    if db::has_orders(&mut tx, &id).await? {
        return Err(ApiError::FailedPrecondition(format!(
            "user {id} has orders"
        )));
    }
    let removed_cart = cart::db::delete_items_of_user(&mut tx, &id).await?;
    let mut removed_addresses = db::delete_addresses_of(&mut tx, &id).await?;
    removed_addresses.sort_by_key(|address| address.id);
    db::delete_user(&mut tx, &id).await?;
    let mut events: Vec<OutboxEvent> = removed_cart
        .iter()
        .map(|item| cart::item_event("cart_item_deleted", item))
        .collect();
    events.push(user_event(
        "user_deleted",
        Some(&user),
        &id,
        &removed_addresses,
    ));
    outbox::append(&mut tx, &events).await?;
    tx.commit().await?;
    // Touches: user-cache/{id}, users-cache/all, user-addresses-cache/{id}, address-cache/{each},
    // user-cart-items-cache/{id}, cart-item-cache/{each}.
    let mut keys = vec![
        cache_keys::user(&id),
        cache_keys::all_users(),
        cache_keys::user_addresses(&id),
        cart::cache_keys::user_cart(&id),
    ];
    keys.extend(removed_addresses.iter().map(|a| cache_keys::address(a.id)));
    keys.extend(
        removed_cart
            .iter()
            .map(|item| cart::cache_keys::cart_item(item.id)),
    );
    state.cache.invalidate(&keys).await;
    Ok(Json(IdResponse { id }))
}

/// One address.
#[utoipa::path(get, path = "/users/addresses/get/{id}", tag = "users",
    params(("id" = i64, Path, description = "Address id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = Address), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)
    ))]
async fn get_address(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(id): PathParams<i64>,
) -> ApiResult<JsonBytes> {
    shopper
        .cached_entity(
            &state.cache,
            &cache_keys::address(id),
            "/userId",
            || async {
                db::address(&state.pool, id)
                    .await?
                    .ok_or_else(|| address_not_found(id))
            },
            || address_not_found(id),
        )
        .await
}

/// A user's addresses, by id (empty for an unknown user).
#[utoipa::path(get, path = "/users/addresses/user/{user_id}", tag = "users",
    params(("user_id" = String, Path, description = "User id"), PageQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = DataList<Address>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)
    ))]
async fn addresses_of_user(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams(user_id): PathParams<String>,
    page: PageQuery,
) -> ApiResult<Response> {
    limits::check_path_user_id(&user_id)?;
    shopper.check(&user_id, || user_not_found(&user_id))?;
    let state = &state;
    let user_id = user_id.as_str();
    pagination::list_of_owner(
        &state.cache,
        &cache_keys::user_addresses(user_id),
        &page,
        || async move { Ok(db::user_exists(&state.pool, user_id).await?) },
        |page| async move { Ok(db::addresses_of(&state.pool, user_id, &page).await?) },
    )
    .await
}

async fn ensure_user_exists(state: &AppState, user_id: &str) -> ApiResult<()> {
    if db::user_exists(&state.pool, user_id).await? {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "userId {user_id} does not exist"
        )))
    }
}

/// Add an address to a user.
#[utoipa::path(post, path = "/users/addresses/add", tag = "users",
    request_body = AddressRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, body = Address), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 415, body = ErrorBody)
    ))]
async fn add_address(
    shopper: Shopper,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<AddressRequest>,
) -> ApiResult<Json<Address>> {
    let valid = request.validate()?;
    shopper.check(&valid.user_id, || user_not_found(&valid.user_id))?;
    ensure_user_exists(&state, &valid.user_id).await?;
    let mut tx = state.pool.begin().await?;
    // Every address travels in the user's `user_deleted` event: their number is bounded.
    db::lock_users(&mut tx, &[valid.user_id.as_str()]).await?;
    if db::address_count(&mut tx, &valid.user_id).await? >= limits::MAX_ADDRESSES_PER_USER {
        return Err(ApiError::invalid(format!(
            "too many addresses, at most {} per user",
            limits::MAX_ADDRESSES_PER_USER
        )));
    }
    let address = db::insert_address(&mut tx, &valid).await?;
    let event = user_event(
        "address_added",
        None,
        &address.user_id,
        std::slice::from_ref(&address),
    );
    outbox::append(&mut tx, &[event]).await?;
    tx.commit().await?;
    // Touches: user-addresses-cache/{user}.
    state
        .cache
        .invalidate(&[cache_keys::user_addresses(&address.user_id)])
        .await;
    Ok(Json(address))
}

/// Update an address of the body's user; 404 unless that user owns it (addresses never move).
#[utoipa::path(put, path = "/users/addresses/update", tag = "users",
    request_body = AddressRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, body = IdResponse<i64>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 415, body = ErrorBody)
    ))]
async fn update_address(
    shopper: Shopper,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<AddressRequest>,
) -> ApiResult<Json<IdResponse<i64>>> {
    let id = request.update_id()?;
    let valid = request.validate()?;
    shopper.check(&valid.user_id, || address_not_found(id))?;
    ensure_user_exists(&state, &valid.user_id).await?;
    let mut tx = state.pool.begin().await?;
    match db::address_for_update(&mut tx, id).await? {
        Some(stored) if stored.user_id == valid.user_id => {}
        _ => return Err(address_not_found(id)),
    }
    let address = db::update_address(&mut tx, id, &valid).await?;
    let event = user_event(
        "address_updated",
        None,
        &address.user_id,
        std::slice::from_ref(&address),
    );
    outbox::append(&mut tx, &[event]).await?;
    tx.commit().await?;
    // Touches: address-cache/{id}, user-addresses-cache/{user}.
    state
        .cache
        .invalidate(&[
            cache_keys::address(id),
            cache_keys::user_addresses(&address.user_id),
        ])
        .await;
    Ok(Json(IdResponse { id }))
}

/// Delete an address of the user; 404 unless owned, 409 when an order uses it.
#[utoipa::path(delete, path = "/users/addresses/delete/{address_id}/user/{user_id}", tag = "users",
    params(
        ("address_id" = i64, Path, description = "Address id"),
        ("user_id" = String, Path, description = "Owner's user id")
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, body = IdResponse<i64>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)
    ))]
async fn delete_address(
    shopper: Shopper,
    State(state): State<AppState>,
    PathParams((address_id, user_id)): PathParams<(i64, String)>,
) -> ApiResult<Json<IdResponse<i64>>> {
    shopper.check(&user_id, || address_not_found(address_id))?;
    let mut tx = state.pool.begin().await?;
    let address = match db::address_for_update(&mut tx, address_id).await? {
        Some(stored) if stored.user_id == user_id => stored,
        _ => return Err(address_not_found(address_id)),
    };
    if db::address_in_use(&mut tx, address_id).await? {
        return Err(ApiError::FailedPrecondition(format!(
            "address {address_id} is used by an order"
        )));
    }
    db::delete_address(&mut tx, address_id).await?;
    let event = user_event(
        "address_deleted",
        None,
        &user_id,
        std::slice::from_ref(&address),
    );
    outbox::append(&mut tx, &[event]).await?;
    tx.commit().await?;
    // Touches: address-cache/{id}, user-addresses-cache/{user}.
    state
        .cache
        .invalidate(&[
            cache_keys::address(address_id),
            cache_keys::user_addresses(&user_id),
        ])
        .await;
    Ok(Json(IdResponse { id: address_id }))
}
