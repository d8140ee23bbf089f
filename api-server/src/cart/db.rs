//! SQL of the cart domain.

use sqlx::{PgConnection, PgExecutor};

use super::model::{CartItem, ValidCartItem};
use crate::http::pagination::Page;

#[tracing::instrument(name = "db.cart.item", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn item(executor: impl PgExecutor<'_>, id: i64) -> Result<Option<CartItem>, sqlx::Error> {
    sqlx::query_as("SELECT id, product_id, quantity, user_id FROM cart_items WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await
}

/// The number of cart rows of each of the users (users without rows are absent).
#[tracing::instrument(name = "db.cart.row_counts", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn row_counts(
    connection: &mut PgConnection,
    user_ids: &[&str],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, count(*) FROM cart_items WHERE user_id = ANY($1) GROUP BY user_id",
    )
    .bind(user_ids)
    .fetch_all(connection)
    .await
}

/// One keyset page of a user's cart (`$1`) after id `$2`, `$3` rows (the `(user_id, id)` index
/// range).
pub const ITEMS_OF_SQL: &str = "SELECT id, product_id, quantity, user_id FROM cart_items \
         WHERE (user_id, id) > ($1, coalesce($2::bigint, -9223372036854775807 - 1)) AND user_id <= $1 ORDER BY user_id, id LIMIT $3";

#[tracing::instrument(name = "db.cart.items_of", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn items_of(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    page: &Page<i64>,
) -> Result<Vec<CartItem>, sqlx::Error> {
    sqlx::query_as(ITEMS_OF_SQL)
        .bind(user_id)
        .bind(page.after)
        .bind(page.limit)
        .fetch_all(executor)
        .await
}

/// Inserts the items in one statement; returns them in request order (which is id order).
#[tracing::instrument(name = "db.cart.insert_many", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn insert_many(
    connection: &mut PgConnection,
    items: &[ValidCartItem],
) -> Result<Vec<CartItem>, sqlx::Error> {
    let product_ids: Vec<i64> = items.iter().map(|i| i.product_id).collect();
    let quantities: Vec<i32> = items.iter().map(|i| i.quantity).collect();
    let user_ids: Vec<&str> = items.iter().map(|i| i.user_id.as_str()).collect();
    let mut inserted: Vec<CartItem> = sqlx::query_as(
        "INSERT INTO cart_items (product_id, quantity, user_id) \
         SELECT product_id, quantity, user_id \
         FROM UNNEST($1::bigint[], $2::int[], $3::text[]) WITH ORDINALITY \
              AS i(product_id, quantity, user_id, n) ORDER BY n \
         RETURNING id, product_id, quantity, user_id",
    )
    .bind(&product_ids)
    .bind(&quantities)
    .bind(&user_ids)
    .fetch_all(connection)
    .await?;
    inserted.sort_by_key(|item| item.id);
    Ok(inserted)
}

/// The stored row, locked until the transaction ends.
#[tracing::instrument(name = "db.cart.item_for_update", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn item_for_update(
    connection: &mut PgConnection,
    id: i64,
) -> Result<Option<CartItem>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, product_id, quantity, user_id FROM cart_items WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(connection)
    .await
}

#[tracing::instrument(name = "db.cart.update", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn update(
    connection: &mut PgConnection,
    id: i64,
    item: &ValidCartItem,
) -> Result<CartItem, sqlx::Error> {
    sqlx::query_as(
        "UPDATE cart_items SET product_id = $2, quantity = $3 WHERE id = $1 \
         RETURNING id, product_id, quantity, user_id",
    )
    .bind(id)
    .bind(item.product_id)
    .bind(item.quantity)
    .fetch_one(connection)
    .await
}

/// Deletes the row if the user owns it; returns its last state.
#[tracing::instrument(name = "db.cart.delete_owned", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn delete_owned(
    connection: &mut PgConnection,
    id: i64,
    user_id: &str,
) -> Result<Option<CartItem>, sqlx::Error> {
    sqlx::query_as(
        "DELETE FROM cart_items WHERE id = $1 AND user_id = $2 \
         RETURNING id, product_id, quantity, user_id",
    )
    .bind(id)
    .bind(user_id)
    .fetch_optional(connection)
    .await
}

/// Empties the user's cart, returning the removed rows by id.
#[tracing::instrument(name = "db.cart.delete_items_of_user", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn delete_items_of_user(
    connection: &mut PgConnection,
    user_id: &str,
) -> Result<Vec<CartItem>, sqlx::Error> {
    let mut removed: Vec<CartItem> = sqlx::query_as(
        "DELETE FROM cart_items WHERE user_id = $1 RETURNING id, product_id, quantity, user_id",
    )
    .bind(user_id)
    .fetch_all(connection)
    .await?;
    removed.sort_by_key(|item| item.id);
    Ok(removed)
}

/// Removes a product from every cart, returning the removed rows by id.
#[tracing::instrument(name = "db.cart.delete_items_of_product", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn delete_items_of_product(
    connection: &mut PgConnection,
    product_id: i64,
) -> Result<Vec<CartItem>, sqlx::Error> {
    let mut removed: Vec<CartItem> = sqlx::query_as(
        "DELETE FROM cart_items WHERE product_id = $1 RETURNING id, product_id, quantity, user_id",
    )
    .bind(product_id)
    .fetch_all(connection)
    .await?;
    removed.sort_by_key(|item| item.id);
    Ok(removed)
}
