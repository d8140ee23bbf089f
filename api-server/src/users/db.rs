//! SQL of the users domain: users and their addresses.

use sqlx::{PgConnection, PgExecutor};

use super::model::{Address, User, ValidAddress};
use crate::http::pagination::Page;

macro_rules! select_users {
    () => {
        "SELECT id, first_name, last_name, email FROM users"
    };
}

macro_rules! address_columns {
    () => {
        "id, street, city, state, country, zip_code, user_id"
    };
}

/// The by-id read of a user (`$1`).
pub const USER_SQL: &str = concat!(select_users!(), " WHERE id = $1");

#[tracing::instrument(name = "db.users.user", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn user(executor: impl PgExecutor<'_>, id: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(USER_SQL)
        .bind(id)
        .fetch_optional(executor)
        .await
}

/// One keyset page of the users after id `$1` (text; none: from the start), `$2` rows.
pub const ALL_USERS_SQL: &str = concat!(
    select_users!(),
    " WHERE id > coalesce($1::text, '') ORDER BY id LIMIT $2"
);

#[tracing::instrument(name = "db.users.all_users", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn all_users(
    executor: impl PgExecutor<'_>,
    page: &Page<String>,
) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as(ALL_USERS_SQL)
        .bind(page.after.as_deref())
        .bind(page.limit)
        .fetch_all(executor)
        .await
}

#[tracing::instrument(name = "db.users.user_exists", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn user_exists(executor: impl PgExecutor<'_>, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(id)
        .fetch_one(executor)
        .await
}

/// Which of the given user ids exist.
#[tracing::instrument(name = "db.users.existing_user_ids", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn existing_user_ids(
    executor: impl PgExecutor<'_>,
    ids: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM users WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(executor)
        .await
}

/// Locks the users' rows against each other's row-count checks (cart rows, addresses) until the
/// transaction ends, in id order (no deadlock between two such transactions). Foreign-key checks
/// of other writers are not blocked (`FOR NO KEY UPDATE`).
#[tracing::instrument(name = "db.users.lock_users", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn lock_users(connection: &mut PgConnection, ids: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(ids)
        .execute(connection)
        .await
        .map(|_| ())
}

/// How many addresses a user has.
#[tracing::instrument(name = "db.users.address_count", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn address_count(
    connection: &mut PgConnection,
    user_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM addresses WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(connection)
        .await
}

#[tracing::instrument(name = "db.users.insert_user", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn insert_user(connection: &mut PgConnection, user: &User) -> Result<User, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO users (id, first_name, last_name, email) VALUES ($1, $2, $3, $4) \
         RETURNING id, first_name, last_name, email",
    )
    .bind(&user.id)
    .bind(&user.first_name)
    .bind(&user.last_name)
    .bind(&user.email)
    .fetch_one(connection)
    .await
}

/// Updates the user's fields; `None` when no such user.
#[tracing::instrument(name = "db.users.update_user", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn update_user(
    connection: &mut PgConnection,
    user: &User,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE users SET first_name = $2, last_name = $3, email = $4 WHERE id = $1 \
         RETURNING id, first_name, last_name, email",
    )
    .bind(&user.id)
    .bind(&user.first_name)
    .bind(&user.last_name)
    .bind(&user.email)
    .fetch_optional(connection)
    .await
}

#[tracing::instrument(name = "db.users.user_for_update", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn user_for_update(
    connection: &mut PgConnection,
    id: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(concat!(select_users!(), " WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(connection)
        .await
}

#[tracing::instrument(name = "db.users.has_orders", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn has_orders(connection: &mut PgConnection, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orders WHERE user_id = $1)")
        .bind(id)
        .fetch_one(connection)
        .await
}

#[tracing::instrument(name = "db.users.delete_user", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn delete_user(connection: &mut PgConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(connection)
        .await
        .map(|_| ())
}

#[tracing::instrument(name = "db.users.address", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn address(
    executor: impl PgExecutor<'_>,
    id: i64,
) -> Result<Option<Address>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        address_columns!(),
        " FROM addresses WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(executor)
    .await
}

#[tracing::instrument(name = "db.users.address_for_update", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn address_for_update(
    connection: &mut PgConnection,
    id: i64,
) -> Result<Option<Address>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        address_columns!(),
        " FROM addresses WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(connection)
    .await
}

/// One keyset page of a user's addresses (`$1`) after id `$2`, `$3` rows (the `(user_id, id)`
/// index range).
pub const ADDRESSES_OF_SQL: &str = concat!(
    "SELECT ",
    address_columns!(),
    " FROM addresses WHERE (user_id, id) > ($1, coalesce($2::bigint, -9223372036854775807 - 1)) AND user_id <= $1 ORDER BY user_id, id LIMIT $3"
);

#[tracing::instrument(name = "db.users.addresses_of", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn addresses_of(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    page: &Page<i64>,
) -> Result<Vec<Address>, sqlx::Error> {
    sqlx::query_as(ADDRESSES_OF_SQL)
        .bind(user_id)
        .bind(page.after)
        .bind(page.limit)
        .fetch_all(executor)
        .await
}

#[tracing::instrument(name = "db.users.insert_address", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn insert_address(
    connection: &mut PgConnection,
    address: &ValidAddress,
) -> Result<Address, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO addresses (street, city, state, country, zip_code, user_id) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        address_columns!()
    ))
    .bind(&address.street)
    .bind(&address.city)
    .bind(&address.state)
    .bind(&address.country)
    .bind(&address.zip_code)
    .bind(&address.user_id)
    .fetch_one(connection)
    .await
}

#[tracing::instrument(name = "db.users.update_address", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn update_address(
    connection: &mut PgConnection,
    id: i64,
    address: &ValidAddress,
) -> Result<Address, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE addresses SET street = $2, city = $3, state = $4, country = $5, zip_code = $6 \
         WHERE id = $1 RETURNING ",
        address_columns!()
    ))
    .bind(id)
    .bind(&address.street)
    .bind(&address.city)
    .bind(&address.state)
    .bind(&address.country)
    .bind(&address.zip_code)
    .fetch_one(connection)
    .await
}

#[tracing::instrument(name = "db.users.address_in_use", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn address_in_use(connection: &mut PgConnection, id: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orders WHERE address_id = $1)")
        .bind(id)
        .fetch_one(connection)
        .await
}

#[tracing::instrument(name = "db.users.delete_address", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn delete_address(connection: &mut PgConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM addresses WHERE id = $1")
        .bind(id)
        .execute(connection)
        .await
        .map(|_| ())
}

/// Removes every address of the user, returning them.
#[tracing::instrument(name = "db.users.delete_addresses_of", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn delete_addresses_of(
    connection: &mut PgConnection,
    user_id: &str,
) -> Result<Vec<Address>, sqlx::Error> {
    sqlx::query_as(concat!(
        "DELETE FROM addresses WHERE user_id = $1 RETURNING ",
        address_columns!()
    ))
    .bind(user_id)
    .fetch_all(connection)
    .await
}
