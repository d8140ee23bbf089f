//! `POST /events/user`: the storefront's analytics events (`user_events`), one or a batch of up to
//! 500, validated and written to the outbox in one transaction, so an accepted event is never lost;
//! when the database cannot take them the client gets 503 and may retry.
//!
//! Each caller has a quota of events and of bytes per minute ([`IngestQuota`]): per verified user
//! (token `sub`) and per client IP, both of which must have room; past it the request is 429 with
//! `Retry-After` and nothing is stored.

use std::num::NonZeroU32;
use std::time::Duration;

use chrono::DateTime;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde_json::{Map, Value};

use super::outbox::{OutboxEvent, Topic};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::http::identity::Shopper;
use crate::mutation::Mutation;

/// Most events in one request.
pub const MAX_EVENTS: usize = 500;
/// Largest serialized event.
pub const MAX_EVENT_BYTES: usize = 16 * 1024;

fn required_string<'a>(event: &'a Map<String, Value>, field: &str) -> Result<&'a str, ApiError> {
    match event.get(field) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text),
        _ => Err(ApiError::invalid(format!("{field} is required"))),
    }
}

type KeyedLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// The per-user and per-IP budget of `POST /events/user`: events and KiB per minute.
pub struct IngestQuota {
    events: KeyedLimiter,
    kibibytes: KeyedLimiter,
    events_per_minute: NonZeroU32,
    kibibytes_per_minute: NonZeroU32,
}

impl IngestQuota {
    /// `None` when either budget is 0 (no quota).
    pub fn new(events_per_minute: u32, kibibytes_per_minute: u32) -> Option<IngestQuota> {
        let events_per_minute = NonZeroU32::new(events_per_minute)?;
        let kibibytes_per_minute = NonZeroU32::new(kibibytes_per_minute)?;
        Some(IngestQuota {
            events: RateLimiter::keyed(Quota::per_minute(events_per_minute)),
            kibibytes: RateLimiter::keyed(Quota::per_minute(kibibytes_per_minute)),
            events_per_minute,
            kibibytes_per_minute,
        })
    }

    /// Takes `events` events and `bytes` bytes from every subject's budget, or answers how long
    /// to wait (a request larger than a whole minute's budget waits a minute).
    pub fn take(&self, subjects: &[String], events: usize, bytes: usize) -> Result<(), Duration> {
        let full_minute = Duration::from_secs(60);
        let amount = |n: usize| {
            NonZeroU32::new(u32::try_from(n.max(1)).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
        };
        let events = amount(events);
        let kibibytes = amount(bytes.div_ceil(1024));
        if events > self.events_per_minute || kibibytes > self.kibibytes_per_minute {
            return Err(full_minute);
        }
        let now = DefaultClock::default().now();
        for subject in subjects {
            for (limiter, amount) in [(&self.events, events), (&self.kibibytes, kibibytes)] {
                match limiter.check_key_n(subject, amount) {
                    Ok(Ok(())) => {}
                    Ok(Err(not_until)) => return Err(not_until.wait_time_from(now)),
                    Err(_) => return Err(full_minute),
                }
            }
        }
        Ok(())
    }

    /// Forgets subjects whose budget is full again (bounds memory).
    pub fn forget_idle(&self) {
        self.events.retain_recent();
        self.kibibytes.retain_recent();
    }
}

/// Checks one event of the frontend's shape; returns its user id and serialized size.
fn validate_event(event: &Value) -> Result<(String, usize), ApiError> {
    let Value::Object(fields) = event else {
        return Err(ApiError::invalid("event must be a JSON object"));
    };
    let user_id = required_string(fields, "user_id")?.to_owned();
    crate::limits::check_length(&user_id, "user_id", crate::limits::MAX_USER_ID_CHARS)?;
    required_string(fields, "event_type")?;
    required_string(fields, "core_component")?;
    required_string(fields, "client_id")?;
    let timestamp = required_string(fields, "timestamp")
        .map_err(|_| ApiError::invalid("timestamp is required"))?;
    if DateTime::parse_from_rfc3339(timestamp).is_err() {
        return Err(ApiError::invalid("timestamp must be an RFC 3339 date-time"));
    }
    match fields.get("description") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => return Err(ApiError::invalid("description must be a string")),
    }
    match fields.get("metadata") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => return Err(ApiError::invalid("metadata must be an object")),
    }
    let bytes = event.to_string().len();
    if bytes > MAX_EVENT_BYTES {
        return Err(ApiError::invalid("event larger than 16 KiB"));
    }
    // The outbox keeps the payload as `json` text, which would accept U+0000; every other text in
    // the store is refused it by PostgreSQL, so events are held to the same rule.
    if has_nul(event) {
        return Err(ApiError::invalid(
            "text values must not contain NUL characters",
        ));
    }
    Ok((user_id, bytes))
}

/// Whether any key or string inside the value contains U+0000.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(fields) => fields
            .iter()
            .any(|(key, value)| key.contains('\0') || has_nul(value)),
        _ => false,
    }
}

/// Splits a body into its events: `{"data": [...]}` or a single event object.
fn events_of(body: &Value) -> Result<(Vec<&Value>, bool), ApiError> {
    match body {
        Value::Object(fields) if fields.contains_key("data") => match &fields["data"] {
            Value::Array(items) if items.is_empty() => Err(ApiError::invalid("no events")),
            Value::Array(items) if items.len() > MAX_EVENTS => {
                Err(ApiError::invalid("too many events, at most 500"))
            }
            Value::Array(items) => Ok((items.iter().collect(), true)),
            _ => Err(ApiError::invalid("data must be a list of events")),
        },
        Value::Object(_) => Ok((vec![body], false)),
        _ => Err(ApiError::invalid(
            "body must be an event or {\"data\": [events]}",
        )),
    }
}

/// Validates and stores the events; returns how many were accepted. `client_ip` is the caller's
/// address for the quota.
pub async fn accept(
    state: &AppState,
    shopper: &Shopper,
    client_ip: &str,
    body: &Value,
) -> ApiResult<usize> {
    let (events, batch) = events_of(body)?;
    let mut outbox_events = Vec::with_capacity(events.len());
    let mut event_bytes = 0;
    for (index, event) in events.iter().enumerate() {
        let prefix = |error: ApiError| {
            if batch {
                error.prefixed(&format!("data[{index}]"))
            } else {
                error
            }
        };
        let (user_id, bytes) = validate_event(event).map_err(prefix)?;
        event_bytes += bytes;
        // Events may only be posted for the user the session token names (404 as for a row that
        // does not exist).
        shopper.check(&user_id, || {
            ApiError::not_found(format!("user {user_id} not found"))
        })?;
        outbox_events.push(OutboxEvent::raw(
            Topic::UserEvents,
            user_id,
            "user_event",
            (*event).clone(),
        ));
    }
    if let Some(quota) = &state.ingest_quota {
        let mut subjects = vec![format!("ip:{client_ip}")];
        if let Some(user_id) = shopper.bound_user() {
            subjects.push(format!("user:{user_id}"));
        }
        if let Err(wait) = quota.take(&subjects, outbox_events.len(), event_bytes) {
            state.metrics.user_events_throttled.inc();
            return Err(ApiError::ResourceExhausted {
                message: "too many analytics events, slow down".into(),
                retry_after_seconds: wait.as_secs().max(1),
            });
        }
    }
    let unavailable = |error: ApiError| match error {
        // Whatever kept the database from storing them, the events were not accepted: the client
        // must retry, so answer 503 rather than 500 (a too-large event stays a 400).
        ApiError::Internal(cause) => ApiError::Unavailable(cause),
        other => other,
    };
    let accepted = outbox_events.len();
    let mut change = Mutation::begin(state).await.map_err(unavailable)?;
    change.events(outbox_events);
    change.commit().await.map_err(unavailable)?;
    state.metrics.user_events_accepted.inc_by(accepted as u64);
    Ok(accepted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({
            "user_id": "user_1", "event_type": "click", "core_component": "cart",
            "description": "added", "client_id": "web", "timestamp": "2026-11-25T10:00:00Z",
            "metadata": {"product_id": 3}
        })
    }

    #[test]
    fn valid_event_passes() {
        assert_eq!(validate_event(&event()).unwrap().0, "user_1");
    }

    #[test]
    fn each_field_is_checked() {
        let cases = [
            ("user_id", json!(""), "user_id is required"),
            ("event_type", json!(null), "event_type is required"),
            ("core_component", json!(3), "core_component is required"),
            ("client_id", json!(" "), "client_id is required"),
            (
                "timestamp",
                json!("yesterday"),
                "timestamp must be an RFC 3339 date-time",
            ),
            ("metadata", json!([1]), "metadata must be an object"),
            ("description", json!(5), "description must be a string"),
        ];
        for (field, value, message) in cases {
            let mut bad = event();
            bad[field] = value;
            assert_eq!(
                validate_event(&bad).unwrap_err().to_string(),
                message,
                "{field}"
            );
        }
        let mut big = event();
        big["metadata"] = json!({"blob": "x".repeat(MAX_EVENT_BYTES)});
        assert_eq!(
            validate_event(&big).unwrap_err().to_string(),
            "event larger than 16 KiB"
        );
    }

    #[test]
    fn the_quota_counts_events_and_bytes_per_subject() {
        let quota = IngestQuota::new(10, 4).unwrap();
        let one = vec!["ip:1.2.3.4".to_owned()];
        assert!(quota.take(&one, 6, 100).is_ok());
        assert!(quota.take(&one, 6, 100).is_err(), "events");
        let other = vec!["ip:5.6.7.8".to_owned()];
        assert!(quota.take(&other, 1, 3 * 1024).is_ok());
        assert!(quota.take(&other, 1, 2 * 1024).is_err(), "bytes");
        assert!(
            quota.take(&["ip:9".to_owned()], 11, 1).is_err(),
            "past a minute's budget"
        );
        assert!(IngestQuota::new(0, 4).is_none());
    }

    #[test]
    fn batches_are_bounded() {
        assert!(events_of(&json!({"data": []})).is_err());
        let many: Vec<Value> = (0..501).map(|_| event()).collect();
        assert_eq!(
            events_of(&json!({"data": many})).unwrap_err().to_string(),
            "too many events, at most 500"
        );
        assert_eq!(
            events_of(&json!({"data": [event(), event()]}))
                .unwrap()
                .0
                .len(),
            2
        );
        assert!(!events_of(&event()).unwrap().1);
    }
}
