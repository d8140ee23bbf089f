//! SQL of the products domain. Reads take the pool; mutations take the caller's transaction.

use sqlx::{PgConnection, PgExecutor};

use super::model::{Product, ValidProduct};
use crate::http::pagination::Page;

/// The columns of a `Product`, from `products p`.
macro_rules! product_columns {
    () => {
        "p.id, p.name, p.description, p.category_id, p.sub_category_id, p.image_url, p.price, \
         p.previous_price, p.offered"
    };
}

/// The by-id read (`$1` the id); public, like every hot query, so that `tests/scale.rs` can
/// `EXPLAIN` exactly the text the API runs.
pub const PRODUCT_SQL: &str = concat!(
    "SELECT ",
    product_columns!(),
    " FROM products p WHERE p.id = $1"
);

#[tracing::instrument(name = "db.products.product", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn product(
    executor: impl PgExecutor<'_>,
    id: i64,
) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as(PRODUCT_SQL)
        .bind(id)
        .fetch_optional(executor)
        .await
}

/// The product row, locked until the transaction ends.
#[tracing::instrument(name = "db.products.product_for_update", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn product_for_update(
    connection: &mut PgConnection,
    id: i64,
) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        product_columns!(),
        " FROM products p WHERE p.id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(connection)
    .await
}

/// One keyset page of the catalog: after id `$1` (none: from the start), `$2` rows.
pub const ALL_SQL: &str = concat!(
    "SELECT ",
    product_columns!(),
    " FROM products p WHERE p.id > coalesce($1::bigint, -9223372036854775807 - 1) ORDER BY p.id LIMIT $2"
);

#[tracing::instrument(name = "db.products.all", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn all(
    executor: impl PgExecutor<'_>,
    page: &Page<i64>,
) -> Result<Vec<Product>, sqlx::Error> {
    sqlx::query_as(ALL_SQL)
        .bind(page.after)
        .bind(page.limit)
        .fetch_all(executor)
        .await
}

/// One keyset page of a category (`$1`) after id `$2`, `$3` rows. Written as a row comparison so
/// that every plan, generic or custom, reads the `(category_id, id)` index range in order and
/// nothing else: with `category_id = $1 ORDER BY id` PostgreSQL walks the primary key and filters,
/// which reads most of the catalog when the category's products have the highest ids.
pub const BY_CATEGORY_SQL: &str = concat!(
    "SELECT ",
    product_columns!(),
    " FROM products p WHERE (p.category_id, p.id) > ($1, coalesce($2::bigint, -9223372036854775807 - 1)) \
         AND p.category_id <= $1 ORDER BY p.category_id, p.id LIMIT $3"
);

#[tracing::instrument(name = "db.products.by_category", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn by_category(
    executor: impl PgExecutor<'_>,
    category_id: i64,
    page: &Page<i64>,
) -> Result<Vec<Product>, sqlx::Error> {
    sqlx::query_as(BY_CATEGORY_SQL)
        .bind(category_id)
        .bind(page.after)
        .bind(page.limit)
        .fetch_all(executor)
        .await
}

/// One keyset page of a sub-category (`$1`) after id `$2`, `$3` rows; the same form as
/// [`BY_CATEGORY_SQL`].
pub const BY_SUB_CATEGORY_SQL: &str = concat!(
    "SELECT ",
    product_columns!(),
    " FROM products p WHERE (p.sub_category_id, p.id) > ($1, coalesce($2::bigint, -9223372036854775807 - 1)) \
         AND p.sub_category_id <= $1 ORDER BY p.sub_category_id, p.id LIMIT $3"
);

#[tracing::instrument(name = "db.products.by_sub_category", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn by_sub_category(
    executor: impl PgExecutor<'_>,
    sub_category_id: i64,
    page: &Page<i64>,
) -> Result<Vec<Product>, sqlx::Error> {
    sqlx::query_as(BY_SUB_CATEGORY_SQL)
        .bind(sub_category_id)
        .bind(page.after)
        .bind(page.limit)
        .fetch_all(executor)
        .await
}

#[tracing::instrument(name = "db.products.hero", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn hero(executor: impl PgExecutor<'_>) -> Result<Vec<Product>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        product_columns!(),
        " FROM products p \
         JOIN hero_products h ON h.product_id = p.id ORDER BY p.id"
    ))
    .fetch_all(executor)
    .await
}

#[tracing::instrument(name = "db.products.hero_of_category", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn hero_of_category(
    executor: impl PgExecutor<'_>,
    category_id: i64,
) -> Result<Vec<Product>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        product_columns!(),
        " FROM products p \
         JOIN category_hero_products c ON c.product_id = p.id \
         WHERE c.category_id = $1 ORDER BY p.id"
    ))
    .bind(category_id)
    .fetch_all(executor)
    .await
}

/// Products whose name or description contains the pattern (already LIKE-escaped).
/// The search query: name or description matches `$1` (an escaped ILIKE pattern), after id `$2`,
/// `$3` rows by id. Public so that a test can `EXPLAIN` exactly this text.
pub const SEARCH_SQL: &str = concat!(
    "SELECT ",
    product_columns!(),
    " FROM products p \
     WHERE (p.name ILIKE $1 ESCAPE '\\' OR p.description ILIKE $1 ESCAPE '\\') \
     AND p.id > coalesce($2::bigint, -9223372036854775807 - 1) ORDER BY p.id LIMIT $3"
);

#[tracing::instrument(name = "db.products.search", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn search(
    executor: impl PgExecutor<'_>,
    like_pattern: &str,
    page: &Page<i64>,
) -> Result<Vec<Product>, sqlx::Error> {
    // Not a persistent prepared statement: PostgreSQL switches a prepared statement to a generic plan
    // after five runs, and without the pattern's value that plan walks the primary key and filters
    // every row (~130 ms at 100,000 products for a rare word). An unnamed statement is planned with
    // the pattern each time: the trigram indexes for rare words, the id order for common ones.
    sqlx::query_as(SEARCH_SQL)
        .persistent(false)
        .bind(like_pattern)
        .bind(page.after)
        .bind(page.limit)
        .fetch_all(executor)
        .await
}

#[tracing::instrument(name = "db.products.insert", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn insert(
    connection: &mut PgConnection,
    product: &ValidProduct,
) -> Result<Product, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO products AS p (name, description, category_id, sub_category_id, image_url, \
         price, previous_price, offered) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         RETURNING ",
        product_columns!(),
        ""
    ))
    .bind(&product.name)
    .bind(&product.description)
    .bind(product.category)
    .bind(product.sub_category)
    .bind(&product.image_url)
    .bind(product.price)
    .bind(product.previous_price)
    .bind(product.offered)
    .fetch_one(connection)
    .await
}

#[tracing::instrument(name = "db.products.update", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn update(
    connection: &mut PgConnection,
    id: i64,
    product: &ValidProduct,
) -> Result<Product, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE products AS p SET name = $2, description = $3, category_id = $4, \
         sub_category_id = $5, image_url = $6, price = $7, previous_price = $8, offered = $9 \
         WHERE p.id = $1 RETURNING ",
        product_columns!(),
        ""
    ))
    .bind(id)
    .bind(&product.name)
    .bind(&product.description)
    .bind(product.category)
    .bind(product.sub_category)
    .bind(&product.image_url)
    .bind(product.price)
    .bind(product.previous_price)
    .bind(product.offered)
    .fetch_one(connection)
    .await
}

#[tracing::instrument(name = "db.products.delete", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn delete(connection: &mut PgConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM products WHERE id = $1")
        .bind(id)
        .execute(connection)
        .await
        .map(|_| ())
}

#[tracing::instrument(name = "db.products.is_ordered", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn is_ordered(connection: &mut PgConnection, id: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM order_items WHERE product_id = $1)")
        .bind(id)
        .fetch_one(connection)
        .await
}

/// Categories whose hero list shows the product.
#[tracing::instrument(name = "db.products.hero_categories_of", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn hero_categories_of(
    connection: &mut PgConnection,
    id: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT category_id FROM category_hero_products WHERE product_id = $1")
        .bind(id)
        .fetch_all(connection)
        .await
}

/// Which of the given product ids exist.
#[tracing::instrument(name = "db.products.existing_ids", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn existing_ids(
    executor: impl PgExecutor<'_>,
    ids: &[i64],
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM products WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(executor)
        .await
}
