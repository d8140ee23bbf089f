//! SQL of the orders domain: orders and their items.

use sqlx::{PgConnection, PgExecutor};

use super::model::{Order, OrderItem, ValidLine, ValidOrder};
use crate::http::pagination::Page;

macro_rules! order_columns {
    () => {
        "id, user_id, address_id, total_price, created_at, status, items_total"
    };
}

macro_rules! item_columns {
    () => {
        "id, order_id, product_id, quantity"
    };
}

/// The by-id read of an order (`$1`).
pub const ORDER_SQL: &str = concat!("SELECT ", order_columns!(), " FROM orders WHERE id = $1");

#[tracing::instrument(name = "db.orders.order", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn order(executor: impl PgExecutor<'_>, id: i64) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query_as(ORDER_SQL)
        .bind(id)
        .fetch_optional(executor)
        .await
}

/// The order, locked against updates and deletion until the transaction ends.
#[tracing::instrument(name = "db.orders.order_for_update", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn order_for_update(
    connection: &mut PgConnection,
    id: i64,
) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(connection)
    .await
}

/// One keyset page of a user's orders (`$1`) after id `$2`, `$3` rows; the row comparison keeps
/// every plan on the `(user_id, id)` index range (see `products::db::BY_CATEGORY_SQL`).
pub const ORDERS_OF_SQL: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM orders WHERE (user_id, id) > ($1, coalesce($2::bigint, -9223372036854775807 - 1)) AND user_id <= $1 ORDER BY user_id, id LIMIT $3"
);

#[tracing::instrument(name = "db.orders.orders_of", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn orders_of(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    page: &Page<i64>,
) -> Result<Vec<Order>, sqlx::Error> {
    sqlx::query_as(ORDERS_OF_SQL)
        .bind(user_id)
        .bind(page.after)
        .bind(page.limit)
        .fetch_all(executor)
        .await
}

#[tracing::instrument(name = "db.orders.insert_order", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn insert_order(
    connection: &mut PgConnection,
    order: &ValidOrder,
) -> Result<Order, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO orders (user_id, address_id, total_price, status) VALUES ($1, $2, $3, $4) \
         RETURNING ",
        order_columns!()
    ))
    .bind(&order.user_id)
    .bind(order.address_id)
    .bind(order.total_price)
    .bind(&order.status)
    .fetch_one(connection)
    .await
}

/// Updates address, total and status; `created_at` and the owner never change.
#[tracing::instrument(name = "db.orders.update_order", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn update_order(
    connection: &mut PgConnection,
    id: i64,
    order: &ValidOrder,
) -> Result<Order, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE orders SET address_id = $2, total_price = $3, status = $4 WHERE id = $1 RETURNING ",
        order_columns!()
    ))
    .bind(id)
    .bind(order.address_id)
    .bind(order.total_price)
    .bind(&order.status)
    .fetch_one(connection)
    .await
}

#[tracing::instrument(name = "db.orders.delete_order", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn delete_order(connection: &mut PgConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM orders WHERE id = $1")
        .bind(id)
        .execute(connection)
        .await
        .map(|_| ())
}

#[tracing::instrument(name = "db.orders.item", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn item(
    executor: impl PgExecutor<'_>,
    id: i64,
) -> Result<Option<OrderItem>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        item_columns!(),
        " FROM order_items WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(executor)
    .await
}

#[tracing::instrument(name = "db.orders.item_for_update", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn item_for_update(
    connection: &mut PgConnection,
    id: i64,
) -> Result<Option<OrderItem>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        item_columns!(),
        " FROM order_items WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(connection)
    .await
}

/// One keyset page of an order's items (`$1`) after id `$2`, `$3` rows (the `(order_id, id)`
/// index range).
pub const ITEMS_OF_SQL: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM order_items WHERE (order_id, id) > ($1, coalesce($2::bigint, -9223372036854775807 - 1)) AND order_id <= $1 ORDER BY order_id, id LIMIT $3"
);

#[tracing::instrument(name = "db.orders.items_of", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn items_of(
    executor: impl PgExecutor<'_>,
    order_id: i64,
    page: &Page<i64>,
) -> Result<Vec<OrderItem>, sqlx::Error> {
    sqlx::query_as(ITEMS_OF_SQL)
        .bind(order_id)
        .bind(page.after)
        .bind(page.limit)
        .fetch_all(executor)
        .await
}

/// The items of many orders in one query, by id.
#[tracing::instrument(name = "db.orders.items_of_orders", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn items_of_orders(
    executor: impl PgExecutor<'_>,
    order_ids: &[i64],
) -> Result<Vec<OrderItem>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        item_columns!(),
        " FROM order_items WHERE order_id = ANY($1) ORDER BY id"
    ))
    .bind(order_ids)
    .fetch_all(executor)
    .await
}

/// Inserts the lines of one order in one statement, returned in request order (= id order).
#[tracing::instrument(name = "db.orders.insert_items", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn insert_items(
    connection: &mut PgConnection,
    order_id: i64,
    lines: &[ValidLine],
) -> Result<Vec<OrderItem>, sqlx::Error> {
    if lines.is_empty() {
        return Ok(Vec::new());
    }
    let product_ids: Vec<i64> = lines.iter().map(|l| l.product_id).collect();
    let quantities: Vec<i32> = lines.iter().map(|l| l.quantity).collect();
    let mut items: Vec<OrderItem> = sqlx::query_as(concat!(
        "INSERT INTO order_items (order_id, product_id, quantity) \
         SELECT $1, product_id, quantity \
         FROM UNNEST($2::bigint[], $3::int[]) WITH ORDINALITY AS l(product_id, quantity, n) \
         ORDER BY n RETURNING ",
        item_columns!()
    ))
    .bind(order_id)
    .bind(&product_ids)
    .bind(&quantities)
    .fetch_all(connection)
    .await?;
    items.sort_by_key(|item| item.id);
    Ok(items)
}

#[tracing::instrument(name = "db.orders.update_item", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn update_item(
    connection: &mut PgConnection,
    id: i64,
    line: &ValidLine,
) -> Result<OrderItem, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE order_items SET product_id = $2, quantity = $3 WHERE id = $1 RETURNING ",
        item_columns!()
    ))
    .bind(id)
    .bind(line.product_id)
    .bind(line.quantity)
    .fetch_one(connection)
    .await
}

#[tracing::instrument(name = "db.orders.delete_items_of", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn delete_items_of(
    connection: &mut PgConnection,
    order_id: i64,
) -> Result<Vec<OrderItem>, sqlx::Error> {
    let mut removed: Vec<OrderItem> = sqlx::query_as(concat!(
        "DELETE FROM order_items WHERE order_id = $1 RETURNING ",
        item_columns!()
    ))
    .bind(order_id)
    .fetch_all(connection)
    .await?;
    removed.sort_by_key(|item| item.id);
    Ok(removed)
}

/// Recomputes the order's `items_total` from its items at the current catalog prices and returns
/// the order; runs in the transaction that changed the items.
#[tracing::instrument(name = "db.orders.refresh_items_total", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn refresh_items_total(
    connection: &mut PgConnection,
    order_id: i64,
) -> Result<Order, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE orders SET items_total = (SELECT coalesce(sum(i.quantity::bigint * p.price), 0) \
         FROM order_items i JOIN products p ON p.id = i.product_id WHERE i.order_id = $1) \
         WHERE id = $1 RETURNING ",
        order_columns!()
    ))
    .bind(order_id)
    .fetch_one(connection)
    .await
}

/// How many items an order has.
#[tracing::instrument(name = "db.orders.item_count", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn item_count(connection: &mut PgConnection, order_id: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM order_items WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(connection)
        .await
}

/// An item, read only when its order belongs to `user_id` (`None` also when it does not exist):
/// the ownership check and the read are one statement.
#[tracing::instrument(name = "db.orders.owned_item", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn owned_item(
    executor: impl PgExecutor<'_>,
    id: i64,
    user_id: &str,
) -> Result<Option<OrderItem>, sqlx::Error> {
    sqlx::query_as(
        "SELECT i.id, i.order_id, i.product_id, i.quantity FROM order_items i \
         JOIN orders o ON o.id = i.order_id WHERE i.id = $1 AND o.user_id = $2",
    )
    .bind(id)
    .bind(user_id)
    .fetch_optional(executor)
    .await
}

/// Locks the order an item belongs to (if any) until the transaction ends.
#[tracing::instrument(name = "db.orders.lock_order_of_item", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn lock_order_of_item(
    connection: &mut PgConnection,
    item_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT o.id FROM orders o JOIN order_items i ON i.order_id = o.id \
         WHERE i.id = $1 FOR UPDATE OF o",
    )
    .bind(item_id)
    .execute(connection)
    .await
    .map(|_| ())
}

/// Deletes an item, only when its order belongs to `owner` (any order when `owner` is `None`):
/// the ownership check and the delete are one statement. Returns the deleted item.
#[tracing::instrument(name = "db.orders.delete_owned_item", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn delete_owned_item(
    connection: &mut PgConnection,
    id: i64,
    owner: Option<&str>,
) -> Result<Option<OrderItem>, sqlx::Error> {
    sqlx::query_as(
        "DELETE FROM order_items i USING orders o \
         WHERE i.id = $1 AND o.id = i.order_id AND ($2::text IS NULL OR o.user_id = $2) \
         RETURNING i.id, i.order_id, i.product_id, i.quantity",
    )
    .bind(id)
    .bind(owner)
    .fetch_optional(connection)
    .await
}

/// The user who owns an order.
#[tracing::instrument(name = "db.orders.owner_of_order", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn owner_of_order(
    executor: impl PgExecutor<'_>,
    order_id: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(executor)
        .await
}
