//! Rows inserted straight into a test's database, for tests that need them to exist without going
//! through the API.

use sqlx::PgPool;

/// A user `id` named First Last with the email `{id}@example.com`.
pub async fn insert_user(pool: &PgPool, id: &str) {
    sqlx::query(
        "INSERT INTO users (id, first_name, last_name, email) \
         VALUES ($1, 'First', 'Last', $1 || '@example.com')",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}
