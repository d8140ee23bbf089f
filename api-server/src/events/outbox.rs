//! The outbox writer: a mutation appends its event row inside its own transaction, so an event
//! exists exactly when the change committed. Payload shapes follow `shared/spec/events.md`.
//!
//! A payload larger than [`MAX_EVENT_PAYLOAD_BYTES`] is refused here, before anything is written:
//! such an event could never be published, and its transaction is rolled back instead of leaving a
//! poison row in the queue.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

pub use crate::limits::MAX_EVENT_PAYLOAD_BYTES;

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The serialized payload is larger than [`MAX_EVENT_PAYLOAD_BYTES`].
    #[error("{event_type} event of {bytes} bytes is larger than the {limit}-byte limit")]
    PayloadTooLarge {
        event_type: &'static str,
        bytes: usize,
        limit: usize,
    },
}

/// The Kafka topic (without the configurable prefix) an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    CartUpdates,
    OrdersUpdates,
    UsersUpdates,
    ProductsUpdates,
    UserEvents,
}

/// The channel every outbox append notifies (payload: the user id for user topics, else empty).
pub const NOTIFY_CHANNEL: &str = "plamatio_outbox";

impl Topic {
    pub const ALL: [Topic; 5] = [
        Topic::CartUpdates,
        Topic::OrdersUpdates,
        Topic::UsersUpdates,
        Topic::ProductsUpdates,
        Topic::UserEvents,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Topic::CartUpdates => plamatio_contract::topics::CART_UPDATES,
            Topic::OrdersUpdates => plamatio_contract::topics::ORDERS_UPDATES,
            Topic::UsersUpdates => plamatio_contract::topics::USERS_UPDATES,
            Topic::ProductsUpdates => plamatio_contract::topics::PRODUCTS_UPDATES,
            Topic::UserEvents => plamatio_contract::topics::USER_EVENTS,
        }
    }

    /// Topics whose events reach the user's live stream.
    pub fn is_user_stream(self) -> bool {
        matches!(
            self,
            Topic::CartUpdates | Topic::OrdersUpdates | Topic::UsersUpdates
        )
    }
}

/// One event to append: topic, partition key (user id or product id), type, and the type-specific
/// fields of the payload (`event_id`, `event_type` and `occurred_at` are added here), or a payload
/// taken as it is (the frontend's `user_events`).
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub topic: Topic,
    pub key: String,
    pub event_type: &'static str,
    pub fields: Map<String, Value>,
    pub raw_payload: Option<Value>,
}

impl OutboxEvent {
    pub fn new(topic: Topic, key: impl Into<String>, event_type: &'static str) -> Self {
        OutboxEvent {
            topic,
            key: key.into(),
            event_type,
            fields: Map::new(),
            raw_payload: None,
        }
    }

    /// An event whose payload is stored exactly as given.
    pub fn raw(
        topic: Topic,
        key: impl Into<String>,
        event_type: &'static str,
        payload: Value,
    ) -> Self {
        OutboxEvent {
            raw_payload: Some(payload),
            ..OutboxEvent::new(topic, key, event_type)
        }
    }

    /// Adds a payload field.
    pub fn with(mut self, name: &str, value: impl serde::Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.fields.insert(name.to_owned(), value);
        self
    }

    fn payload(&self, event_id: Uuid, occurred_at: DateTime<Utc>) -> Value {
        if let Some(raw) = &self.raw_payload {
            return raw.clone();
        }
        let mut payload = Map::new();
        payload.insert("event_id".into(), Value::String(event_id.to_string()));
        payload.insert("event_type".into(), Value::String(self.event_type.into()));
        payload.insert(
            "occurred_at".into(),
            Value::String(occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
        );
        for (name, value) in &self.fields {
            payload.insert(name.clone(), value.clone());
        }
        Value::Object(payload)
    }
}

/// Appends events to the outbox in one statement, on the given connection (which must be inside
/// the mutation's transaction). Returns the event ids, in order. Nothing is written when one
/// payload is larger than [`MAX_EVENT_PAYLOAD_BYTES`].
#[tracing::instrument(name = "db.events.append", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn append(
    connection: &mut PgConnection,
    events: &[OutboxEvent],
) -> Result<Vec<Uuid>, AppendError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let now = Utc::now();
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
    let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    // The trace of the request that caused the events travels with them into Kafka headers.
    let traceparent = crate::telemetry::current_traceparent();
    let traceparents: Vec<Option<&str>> = events.iter().map(|_| traceparent.as_deref()).collect();
    // Sent as text and stored as `json`: the bytes the relay and the streams pass on.
    let payloads: Vec<String> = events
        .iter()
        .zip(&ids)
        .map(|(event, id)| event.payload(*id, now).to_string())
        .collect();
    if let Some((event, payload)) = events
        .iter()
        .zip(&payloads)
        .find(|(_, payload)| payload.len() > MAX_EVENT_PAYLOAD_BYTES)
    {
        tracing::warn!(
            event_type = event.event_type,
            bytes = payload.len(),
            "refusing an event larger than the outbox payload limit"
        );
        return Err(AppendError::PayloadTooLarge {
            event_type: event.event_type,
            bytes: payload.len(),
            limit: MAX_EVENT_PAYLOAD_BYTES,
        });
    }
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, event_key, event_type, payload, traceparent) \
         SELECT event_id, topic, event_key, event_type, payload::json, traceparent \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
         WITH ORDINALITY AS e(event_id, topic, event_key, event_type, payload, traceparent, n) \
         ORDER BY n",
    )
    .bind(&ids)
    .bind(&topics)
    .bind(&keys)
    .bind(&types)
    .bind(&payloads)
    .bind(&traceparents)
    .execute(&mut *connection)
    .await?;
    // Wake the relay and the live streams of every replica once this transaction commits
    // (PostgreSQL delivers notifications at commit and folds identical ones). A payload has a size
    // limit, so very long keys are cut; their streams still find the rows by re-checking.
    let mut notify_keys: Vec<&str> = events
        .iter()
        .map(|e| {
            if e.topic.is_user_stream() {
                e.key.as_str()
            } else {
                ""
            }
        })
        .collect();
    notify_keys.sort_unstable();
    notify_keys.dedup();
    sqlx::query("SELECT pg_notify($1, left(key, 4000)) FROM UNNEST($2::text[]) AS k(key)")
        .bind(NOTIFY_CHANNEL)
        .bind(&notify_keys)
        .execute(&mut *connection)
        .await?;
    Ok(ids)
}
