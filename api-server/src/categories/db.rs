//! SQL of the categories domain (read-only).

use sqlx::{PgExecutor, PgPool};

use super::model::{Category, SubCategory};
use crate::http::pagination::Page;

macro_rules! select_categories {
    () => {
        "SELECT id, name, description, offered FROM categories"
    };
}
macro_rules! select_sub_categories {
    () => {
        "SELECT id, name, description, category_id, offered FROM sub_categories"
    };
}

#[tracing::instrument(name = "db.categories.category", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn category(pool: &PgPool, id: i64) -> Result<Option<Category>, sqlx::Error> {
    sqlx::query_as(concat!(select_categories!(), " WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

#[tracing::instrument(name = "db.categories.all_categories", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn all_categories(pool: &PgPool, page: &Page<i64>) -> Result<Vec<Category>, sqlx::Error> {
    sqlx::query_as(concat!(
        select_categories!(),
        " WHERE id > coalesce($1::bigint, -9223372036854775807 - 1) ORDER BY id LIMIT $2"
    ))
    .bind(page.after)
    .bind(page.limit)
    .fetch_all(pool)
    .await
}

#[tracing::instrument(name = "db.categories.sub_category", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn sub_category(
    executor: impl PgExecutor<'_>,
    id: i64,
) -> Result<Option<SubCategory>, sqlx::Error> {
    sqlx::query_as(concat!(select_sub_categories!(), " WHERE id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await
}

#[tracing::instrument(name = "db.categories.all_sub_categories", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn all_sub_categories(
    pool: &PgPool,
    page: &Page<i64>,
) -> Result<Vec<SubCategory>, sqlx::Error> {
    sqlx::query_as(concat!(
        select_sub_categories!(),
        " WHERE id > coalesce($1::bigint, -9223372036854775807 - 1) ORDER BY id LIMIT $2"
    ))
    .bind(page.after)
    .bind(page.limit)
    .fetch_all(pool)
    .await
}

#[tracing::instrument(name = "db.categories.sub_categories_of", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn sub_categories_of(
    pool: &PgPool,
    category_id: i64,
    page: &Page<i64>,
) -> Result<Vec<SubCategory>, sqlx::Error> {
    sqlx::query_as(concat!(
        select_sub_categories!(),
        " WHERE (category_id, id) > ($1, coalesce($2::bigint, -9223372036854775807 - 1)) AND category_id <= $1 ORDER BY category_id, id LIMIT $3"
    ))
    .bind(category_id)
    .bind(page.after)
    .bind(page.limit)
    .fetch_all(pool)
    .await
}

#[tracing::instrument(name = "db.categories.category_exists", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn category_exists(executor: impl PgExecutor<'_>, id: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM categories WHERE id = $1)")
        .bind(id)
        .fetch_one(executor)
        .await
}
