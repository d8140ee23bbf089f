//! The outbox writer: a mutation appends its event row inside its own transaction, so an event
//! exists exactly when the change committed. Payload shapes follow `shared/spec/events.md`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

/// The Kafka topic (without the configurable prefix) an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    CartUpdates,
    OrdersUpdates,
    UsersUpdates,
    ProductsUpdates,
    UserEvents,
}

impl Topic {
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::CartUpdates => "cart_updates",
            Topic::OrdersUpdates => "orders_updates",
            Topic::UsersUpdates => "users_updates",
            Topic::ProductsUpdates => "products_updates",
            Topic::UserEvents => "user_events",
        }
    }
}

/// One event to append: topic, partition key (user id or product id), type, and the type-specific
/// fields of the payload (`event_id`, `event_type` and `occurred_at` are added here).
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub topic: Topic,
    pub key: String,
    pub event_type: &'static str,
    pub fields: Map<String, Value>,
}

impl OutboxEvent {
    pub fn new(topic: Topic, key: impl Into<String>, event_type: &'static str) -> Self {
        OutboxEvent {
            topic,
            key: key.into(),
            event_type,
            fields: Map::new(),
        }
    }

    /// Adds a payload field.
    pub fn with(mut self, name: &str, value: impl serde::Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.fields.insert(name.to_owned(), value);
        self
    }

    fn payload(&self, event_id: Uuid, occurred_at: DateTime<Utc>) -> Value {
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
/// the mutation's transaction). Returns the event ids, in order.
pub async fn append(
    connection: &mut PgConnection,
    events: &[OutboxEvent],
) -> Result<Vec<Uuid>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let now = Utc::now();
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
    let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let payloads: Vec<Value> = events
        .iter()
        .zip(&ids)
        .map(|(event, id)| event.payload(*id, now))
        .collect();
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, event_key, event_type, payload) \
         SELECT event_id, topic, event_key, event_type, payload FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[]) \
         WITH ORDINALITY AS e(event_id, topic, event_key, event_type, payload, n) ORDER BY n",
    )
    .bind(&ids)
    .bind(&topics)
    .bind(&keys)
    .bind(&types)
    .bind(&payloads)
    .execute(&mut *connection)
    .await?;
    Ok(ids)
}
