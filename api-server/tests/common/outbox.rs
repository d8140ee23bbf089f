//! The outbox as tests read it: the rows a mutation appended, straight from PostgreSQL.

use serde_json::Value;

use super::TestApp;

/// One outbox row: (topic, event_key, event_type, payload).
pub type OutboxRow = (String, String, String, Value);

/// Every outbox row, in insertion order.
pub async fn outbox_rows(app: &TestApp) -> Vec<OutboxRow> {
    sqlx::query_as("SELECT topic, event_key, event_type, payload FROM outbox ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// Removes and returns every outbox row, in insertion order.
pub async fn drain_outbox(app: &TestApp) -> Vec<OutboxRow> {
    sqlx::query_as(
        "WITH removed AS (DELETE FROM outbox RETURNING id, topic, event_key, event_type, payload) \
         SELECT topic, event_key, event_type, payload FROM removed ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// How many rows the outbox holds.
pub async fn outbox_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}
