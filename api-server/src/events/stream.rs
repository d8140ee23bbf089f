//! Live Server-Sent Event streams of one user's committed changes (`GET /events/stream/:user_id`).
//!
//! Every committed outbox row of a user topic sends a PostgreSQL `NOTIFY` with the user id, so a
//! change made through any replica wakes the streams of every replica. The hub holds one `LISTEN`
//! connection per process and a wake-up signal per user with an open stream (a `watch` channel,
//! created with the user's first stream and dropped with the last); a notification wakes only that
//! user's streams, which then read the user's new rows from the outbox (so nothing is lost between
//! notifications, and `Last-Event-ID` resumes from the outbox). An idle stream does no work at all:
//! no timer, no polling, nothing per event of other users, so idle CPU does not grow with the
//! number of subscribers. When the `LISTEN` connection is re-established, every stream is woken
//! once, since notifications sent while it was down are lost.
//!
//! Streams are bounded: at most [`StreamLimits::per_user`] open streams per user and
//! [`StreamLimits::per_key`] per API key in each process (429 past them), and every stream ends
//! after [`StreamLimits::max_lifetime`] or when the user token it was opened with expires,
//! whichever comes first; the browser's `EventSource` reconnects by itself, with `Last-Event-ID`
//! and a fresh token, and misses nothing.
//!
//! An idle stream is small: one timer (the next keep-alive comment or the stream's end, whichever
//! is sooner, re-armed by every event) and its wait for the user's signal; the outbox read is
//! boxed, so it takes memory only while it runs. It writes a keep-alive comment
//! ([`StreamLimits::keep_alive`], 15 s by default) only after that long without an event.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use chrono::{DateTime, Utc};
use futures::Stream;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::outbox::{NOTIFY_CHANNEL, Topic};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

/// Pause before a stream retries a failed outbox read.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Rows read per query.
const PAGE: usize = 100;
/// Default keep-alive comment interval (events.md): well under the idle timeouts of common
/// proxies and load balancers (nginx `proxy_read_timeout` and AWS ALB 60 s, Heroku 55 s).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The keep-alive comment's text (`: keep-alive`).
const KEEP_ALIVE_TEXT: &str = "keep-alive";

/// Bounds of the live streams of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Open streams of one user.
    pub per_user: usize,
    /// Open streams of one API key (the storefront key is shared by every shopper: this bounds
    /// the whole shop's streams on this replica).
    pub per_key: usize,
    /// Longest life of one stream.
    pub max_lifetime: Duration,
    /// A comment is written after this long without an event, so proxies do not close an idle
    /// stream.
    pub keep_alive: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            per_user: 5,
            per_key: 5000,
            max_lifetime: Duration::from_secs(3600),
            keep_alive: KEEP_ALIVE,
        }
    }
}

/// Open streams by user and by API key.
#[derive(Default)]
struct OpenStreams {
    by_user: HashMap<String, usize>,
    by_key: HashMap<String, usize>,
}

fn release(counts: &mut HashMap<String, usize>, name: &str) {
    if let Some(count) = counts.get_mut(name) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(name);
        }
    }
}

/// The wake-up signal of each user with an open stream in this process: the listener bumps the
/// value, the user's streams wait for a change.
type Wakers = Arc<Mutex<HashMap<String, watch::Sender<u64>>>>;

fn wake(sender: &watch::Sender<u64>) {
    sender.send_modify(|count| *count = count.wrapping_add(1));
}

/// One admitted stream: counted while it lives, with its user's wake-up signal.
struct StreamPermit {
    open: Arc<Mutex<OpenStreams>>,
    wakers: Wakers,
    user_id: String,
    key_id: String,
    wake: watch::Receiver<u64>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock() {
            release(&mut open.by_user, &self.user_id);
            release(&mut open.by_key, &self.key_id);
        }
        if let Ok(mut wakers) = self.wakers.lock() {
            // This permit's receiver is still alive here: the last stream of the user removes the
            // signal (under the lock that `admit` subscribes under, so no new stream is missed).
            if wakers
                .get(&self.user_id)
                .is_some_and(|sender| sender.receiver_count() <= 1)
            {
                wakers.remove(&self.user_id);
            }
        }
    }
}

/// Wakes the streams of the users named by `NOTIFY` payloads in this process, and counts them.
#[derive(Clone)]
pub struct StreamHub {
    wakers: Wakers,
    limits: StreamLimits,
    open: Arc<Mutex<OpenStreams>>,
}

impl Default for StreamHub {
    fn default() -> Self {
        StreamHub::new()
    }
}

impl StreamHub {
    pub fn new() -> StreamHub {
        StreamHub {
            wakers: Arc::default(),
            limits: StreamLimits::default(),
            open: Arc::new(Mutex::new(OpenStreams::default())),
        }
    }

    /// The same hub (listener, open streams) with other bounds.
    pub fn with_limits(&self, limits: StreamLimits) -> StreamHub {
        StreamHub {
            limits,
            ..self.clone()
        }
    }

    pub fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// Counts a new stream of `user_id` opened with the key `key_id`, or names the bound it
    /// would cross.
    fn admit(&self, user_id: &str, key_id: &str) -> Result<StreamPermit, &'static str> {
        let mut open = self.open.lock().map_err(|_| "key_cap")?;
        if open.by_user.get(user_id).copied().unwrap_or(0) >= self.limits.per_user {
            return Err("user_cap");
        }
        if open.by_key.get(key_id).copied().unwrap_or(0) >= self.limits.per_key {
            return Err("key_cap");
        }
        let wake = {
            let mut wakers = self.wakers.lock().map_err(|_| "key_cap")?;
            wakers
                .entry(user_id.to_owned())
                .or_insert_with(|| watch::channel(0).0)
                .subscribe()
        };
        *open.by_user.entry(user_id.to_owned()).or_default() += 1;
        *open.by_key.entry(key_id.to_owned()).or_default() += 1;
        Ok(StreamPermit {
            open: self.open.clone(),
            wakers: self.wakers.clone(),
            user_id: user_id.to_owned(),
            key_id: key_id.to_owned(),
            wake,
        })
    }

    /// Users with an open stream in this process (one wake-up signal each).
    pub fn subscribed_users(&self) -> usize {
        self.wakers.lock().map_or(0, |wakers| wakers.len())
    }

    /// Starts the `LISTEN` task; it reconnects by itself and stops when the hub is dropped.
    pub fn spawn_listener(&self, pool: PgPool) {
        let wakers = self.wakers.clone();
        tokio::spawn(async move {
            loop {
                match listen(&pool, &wakers).await {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(%error, "event stream LISTEN connection failed; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                if pool.is_closed() {
                    return;
                }
            }
        });
    }
}

async fn listen(pool: &PgPool, wakers: &Wakers) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    // Notifications sent before this connection listened are lost: every stream re-reads once.
    if let Ok(wakers) = wakers.lock() {
        wakers.values().for_each(wake);
    }
    loop {
        let notification = listener.recv().await?;
        let key = notification.payload();
        if let Ok(wakers) = wakers.lock()
            && let Some(sender) = wakers.get(key)
        {
            wake(sender);
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct StreamRow {
    id: i64,
    event_id: Uuid,
    event_type: String,
    /// The stored JSON text.
    payload: String,
}

/// Decrements the subscriber gauge when a stream ends.
struct SubscriberGuard(Metrics);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.sse_subscribers.dec();
    }
}

struct StreamState {
    pool: PgPool,
    last_id: i64,
    buffer: VecDeque<StreamRow>,
    permit: StreamPermit,
    guard: SubscriberGuard,
    keep_alive: Duration,
    /// When the last event or comment was written.
    last_write: Instant,
    /// The end of the stream's life, and why it ends then.
    ends_at: Instant,
    end_reason: &'static str,
    /// Whether the outbox may hold rows the stream has not read: at the start and after every
    /// wake-up, not after a keep-alive comment.
    unread: bool,
}

impl StreamState {
    /// When the stream's one timer fires: the next keep-alive comment or the end, whichever is first.
    fn deadline(&self) -> Instant {
        (self.last_write + self.keep_alive).min(self.ends_at)
    }

    /// Whether the stream's life is over (counted once, when it ends).
    fn has_ended(&self, now: Instant) -> bool {
        let ended = now >= self.ends_at;
        if ended {
            self.guard
                .0
                .sse_streams_limited
                .with_label_values(&[self.end_reason])
                .inc();
        }
        ended
    }
}

/// What ended a stream's wait.
enum Wait {
    Woken,
    Timer,
    HubGone,
}

const USER_TOPICS: [&str; 3] = [
    Topic::CartUpdates.as_str(),
    Topic::OrdersUpdates.as_str(),
    Topic::UsersUpdates.as_str(),
];

async fn rows_after(
    pool: &PgPool,
    user_id: &str,
    after: i64,
) -> Result<Vec<StreamRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_id, event_type, payload::text AS payload FROM outbox \
         WHERE event_key = $1 AND id > $2 AND topic = ANY($3) ORDER BY id LIMIT $4",
    )
    .bind(user_id)
    .bind(after)
    .bind(&USER_TOPICS[..])
    .bind(PAGE as i64)
    .fetch_all(pool)
    .await
}

/// Where a stream starts: after the event the client saw last, or at the current end of the
/// outbox. An unknown (e.g. pruned) event id replays everything retained for the user.
async fn start_position(pool: &PgPool, last_event_id: Option<&str>) -> ApiResult<i64> {
    match last_event_id {
        Some(text) => {
            let event_id = Uuid::parse_str(text.trim()).map_err(|_| {
                ApiError::invalid("invalid Last-Event-ID, expected an event id (UUID)")
            })?;
            let found: Option<i64> =
                sqlx::query_scalar("SELECT id FROM outbox WHERE event_id = $1")
                    .bind(event_id)
                    .fetch_optional(pool)
                    .await?;
            Ok(found.unwrap_or(0))
        }
        None => Ok(
            sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM outbox")
                .fetch_one(pool)
                .await?,
        ),
    }
}

fn to_event(row: &StreamRow) -> Event {
    Event::default()
        .event(row.event_type.as_str())
        .id(row.event_id.to_string())
        .data(row.payload.as_str())
}

async fn next_event(mut state: StreamState) -> Option<(Result<Event, Infallible>, StreamState)> {
    loop {
        let now = Instant::now();
        if state.has_ended(now) {
            return None;
        }
        if let Some(row) = state.buffer.pop_front() {
            state.last_id = row.id;
            state.last_write = now;
            let event = to_event(&row);
            return Some((Ok(event), state));
        }
        if state.unread {
            // Seen before reading: a notification from now on makes `changed` return at once.
            state.permit.wake.borrow_and_update();
            // Boxed: an idle stream keeps no room for a query in flight.
            match Box::pin(rows_after(
                &state.pool,
                &state.permit.user_id,
                state.last_id,
            ))
            .await
            {
                Ok(rows) if !rows.is_empty() => {
                    // A short page is all there is: no second read to learn that.
                    state.unread = rows.len() == PAGE;
                    state.buffer.extend(rows);
                    continue;
                }
                Ok(_) => state.unread = false,
                Err(error) => {
                    tracing::warn!(%error, "event stream read failed; retrying");
                    let retry_at = (Instant::now() + RETRY_AFTER).min(state.ends_at);
                    tokio::time::sleep_until(retry_at).await;
                    continue;
                }
            }
        }
        // Sleep until this user's next notification or the stream's timer; the hub gone ends the
        // stream.
        let deadline = state.deadline();
        let wait = tokio::select! {
            changed = state.permit.wake.changed() => match changed {
                Ok(()) => Wait::Woken,
                Err(_) => Wait::HubGone,
            },
            () = tokio::time::sleep_until(deadline) => Wait::Timer,
        };
        match wait {
            Wait::Woken => state.unread = true,
            Wait::HubGone => return None,
            Wait::Timer => {
                let now = Instant::now();
                if state.has_ended(now) {
                    return None;
                }
                state.last_write = now;
                return Some((Ok(Event::default().comment(KEEP_ALIVE_TEXT)), state));
            }
        }
    }
}

/// Who opens a stream: the API key's id and, when the caller is bound to a user token, when that
/// token expires.
#[derive(Debug, Clone)]
pub struct StreamOpener {
    pub key_id: String,
    pub token_expires_at: Option<DateTime<Utc>>,
}

/// The `exp` of a user token the request's identity check has already verified (signature,
/// issuer, expiry); only its expiry is read here.
pub fn verified_token_expiry(token: &str) -> Option<DateTime<Utc>> {
    #[derive(serde::Deserialize)]
    struct Expiry {
        exp: i64,
    }
    let claims: Expiry = jsonwebtoken::dangerous::insecure_decode_claims(token.trim()).ok()?;
    DateTime::from_timestamp(claims.exp, 0)
}

/// Opens the stream for one user: 429 past the per-user or per-key bound; the stream ends at its
/// maximum lifetime or when the opener's token expires.
pub async fn open(
    pool: PgPool,
    hub: &StreamHub,
    metrics: Metrics,
    user_id: String,
    opener: StreamOpener,
    last_event_id: Option<&str>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>> {
    let permit = hub.admit(&user_id, &opener.key_id).map_err(|reason| {
        metrics
            .sse_streams_limited
            .with_label_values(&[reason])
            .inc();
        let message = match reason {
            "user_cap" => format!(
                "too many open event streams for this user, at most {}",
                hub.limits.per_user
            ),
            _ => "too many open event streams, try again later".to_owned(),
        };
        ApiError::ResourceExhausted {
            message,
            retry_after_seconds: 5,
        }
    })?;
    let lifetime = hub.limits.max_lifetime;
    let (ends_in, end_reason) = match opener.token_expires_at {
        Some(expires_at) => {
            let left = (expires_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            if left < lifetime {
                (left, "token_expired")
            } else {
                (lifetime, "lifetime")
            }
        }
        None => (lifetime, "lifetime"),
    };
    // Subscribed (by `admit`) before reading the start position, so no notification falls in between.
    let last_id = start_position(&pool, last_event_id).await?;
    metrics.sse_subscribers.inc();
    let opened = Instant::now();
    let state = StreamState {
        pool,
        last_id,
        buffer: VecDeque::new(),
        permit,
        guard: SubscriberGuard(metrics),
        keep_alive: hub.limits.keep_alive,
        last_write: opened,
        ends_at: opened + ends_in,
        end_reason,
        unread: true,
    };
    Ok(Sse::new(live_events(state)))
}

/// The events (and keep-alive comments) of one open stream.
fn live_events(state: StreamState) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(state, next_event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_has_one_wake_signal_while_any_of_their_streams_is_open() {
        let hub = StreamHub::new();
        let first = hub.admit("ana", "key").expect("admitted");
        let second = hub.admit("ana", "key").expect("admitted");
        let other = hub.admit("ben", "key").expect("admitted");
        assert_eq!(hub.subscribed_users(), 2);
        drop(first);
        assert_eq!(hub.subscribed_users(), 2, "ana still streams");
        drop(other);
        assert_eq!(hub.subscribed_users(), 1);
        drop(second);
        assert_eq!(hub.subscribed_users(), 0, "nothing left behind");
    }

    #[tokio::test]
    async fn a_notification_wakes_only_the_streams_of_its_user() {
        let hub = StreamHub::new();
        let mut ana = hub.admit("ana", "key").expect("admitted");
        let mut ana_again = hub.admit("ana", "key").expect("admitted");
        let mut ben = hub.admit("ben", "key").expect("admitted");
        for permit in [&mut ana, &mut ana_again, &mut ben] {
            permit.wake.borrow_and_update();
        }
        wake(hub.wakers.lock().unwrap().get("ana").expect("ana's signal"));
        assert!(ana.wake.has_changed().unwrap());
        assert!(ana_again.wake.has_changed().unwrap());
        assert!(!ben.wake.has_changed().unwrap(), "ben is not woken");
        // A wake that happens between "seen" and the wait is not lost.
        ana.wake.borrow_and_update();
        wake(hub.wakers.lock().unwrap().get("ana").expect("ana's signal"));
        tokio::time::timeout(Duration::from_secs(1), ana.wake.changed())
            .await
            .expect("woken at once")
            .expect("the hub is alive");
    }

    /// What every idle stream keeps in memory besides its connection: the stream's state and its
    /// suspended wait (the outbox read in flight is boxed, so it is not part of it).
    #[tokio::test]
    async fn an_idle_stream_is_small() {
        let hub = StreamHub::new();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("a lazy pool");
        let now = Instant::now();
        let state = StreamState {
            pool,
            last_id: 0,
            buffer: VecDeque::new(),
            permit: hub.admit("ana", "key").expect("admitted"),
            guard: SubscriberGuard(Metrics::new().expect("metrics")),
            keep_alive: KEEP_ALIVE,
            last_write: now,
            ends_at: now + Duration::from_secs(3600),
            end_reason: "lifetime",
            unread: true,
        };
        let events = live_events(state);
        let size = std::mem::size_of_val(&events);
        eprintln!("idle stream: {size} bytes");
        assert!(size <= 1024, "an idle stream takes {size} bytes");
    }
}
