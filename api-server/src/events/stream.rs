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
//! Outbox ids are taken at insert, not at commit: when two transactions of one user overlap and
//! the one with the higher id commits first, the lower id becomes visible only after the stream
//! has read past it. So a stream does not keep a bare cursor: it keeps a floor (every row of the
//! user at or below it was sent or is older than the look-back) and, while the user is active, the
//! ids it sent in the last [`LOOK_BACK`] (at most [`LOOK_BACK_IDS`]); each read asks for the user's
//! rows above the floor that are not among those ids, so a late commit is sent when its
//! notification wakes the stream, and nothing is sent twice. Sent ids older than the look-back
//! raise the floor and are forgotten, so an idle stream keeps no set at all. A stream resumed with
//! `Last-Event-ID` starts its floor below the look-back's rows of the user before that event, so a
//! row that committed late while the client was away is sent (an event the client already saw may
//! then come again; consumers dedupe by `event_id`).
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
/// How long a sent id is remembered, so a row of the user with a lower id that commits later is
/// still sent: longer than any transaction that writes events (mutations run under the 10 s
/// request timeout, `PLAMATIO_REQUEST_TIMEOUT_MS`, and roll back when it fires).
pub const LOOK_BACK: Duration = Duration::from_secs(30);
/// At most this many sent ids are remembered per stream (16 bytes each); past it the oldest raise
/// the floor early. A user whose transactions write more events than this in one look-back is
/// far beyond the rate limits.
pub const LOOK_BACK_IDS: usize = 256;
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

/// The ids a stream sent in the last [`LOOK_BACK`], oldest first (so in the order they were sent).
#[derive(Debug, Default)]
struct RecentlySent(VecDeque<(i64, Instant)>);

/// Where a stream reads from: above `floor`, skipping the ids it recently sent.
#[derive(Debug)]
struct Position {
    /// Every row of the user at or below this id was sent, or is older than the look-back.
    floor: i64,
    /// Present only while there was recent activity.
    recent: Option<Box<RecentlySent>>,
}

impl Position {
    fn at(floor: i64) -> Position {
        Position {
            floor,
            recent: None,
        }
    }

    /// Records an id as sent at `now`.
    fn sent(&mut self, id: i64, now: Instant) {
        self.recent
            .get_or_insert_with(Box::default)
            .0
            .push_back((id, now));
    }

    /// Forgets the ids sent before `now - LOOK_BACK` and those past [`LOOK_BACK_IDS`], raising the
    /// floor to the highest forgotten id (a row below it would belong to a transaction open for
    /// longer than the look-back); drops the set once it is empty.
    fn prune(&mut self, now: Instant) {
        let Some(recent) = self.recent.as_mut() else {
            return;
        };
        let mut floor = self.floor;
        while let Some(&(id, sent_at)) = recent.0.front() {
            if now.saturating_duration_since(sent_at) < LOOK_BACK && recent.0.len() <= LOOK_BACK_IDS
            {
                break;
            }
            floor = floor.max(id);
            recent.0.pop_front();
        }
        if floor != self.floor {
            self.floor = floor;
            recent.0.retain(|&(id, _)| id > floor);
        }
        if recent.0.is_empty() {
            self.recent = None;
        }
    }

    /// The ids above the floor that were sent (and are not to be read again).
    fn skipped(&self) -> Vec<i64> {
        self.recent
            .as_ref()
            .map(|recent| recent.0.iter().map(|&(id, _)| id).collect())
            .unwrap_or_default()
    }
}

struct StreamState {
    pool: PgPool,
    position: Position,
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

/// The user's rows above `floor` except the `skipped` ids, in id order (an index range on
/// `outbox_event_key_idx`).
async fn rows_after(
    pool: &PgPool,
    user_id: &str,
    floor: i64,
    skipped: Vec<i64>,
) -> Result<Vec<StreamRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_id, event_type, payload::text AS payload FROM outbox \
         WHERE event_key = $1 AND id > $2 AND topic = ANY($3) AND id <> ALL($5) \
         ORDER BY id LIMIT $4",
    )
    .bind(user_id)
    .bind(floor)
    .bind(&USER_TOPICS[..])
    .bind(PAGE as i64)
    .bind(skipped)
    .fetch_all(pool)
    .await
}

/// Where a stream starts. Without `Last-Event-ID`: after the user's last row, with the user's rows
/// of the look-back counted as sent (so a lower id that commits later is still sent). With it:
/// after that event, and below the user's earlier rows of the look-back (one of them may have
/// committed after the client read past it). An unknown (e.g. pruned) event id replays everything
/// retained for the user.
async fn start_position(
    pool: &PgPool,
    user_id: &str,
    last_event_id: Option<&str>,
) -> ApiResult<Position> {
    let resume_after = match last_event_id {
        Some(text) => {
            let event_id = Uuid::parse_str(text.trim()).map_err(|_| {
                ApiError::invalid("invalid Last-Event-ID, expected an event id (UUID)")
            })?;
            let found: Option<i64> =
                sqlx::query_scalar("SELECT id FROM outbox WHERE event_id = $1")
                    .bind(event_id)
                    .fetch_optional(pool)
                    .await?;
            match found {
                Some(id) => Some(id),
                None => return Ok(Position::at(0)),
            }
        }
        None => None,
    };
    // The user's latest rows (up to the resumed event), newest first, and whether each is recent.
    let latest: Vec<(i64, bool)> = sqlx::query_as(
        "SELECT id, created_at > now() - make_interval(secs => $3) FROM outbox \
         WHERE event_key = $1 AND id <= $4 AND topic = ANY($2) ORDER BY id DESC LIMIT $5",
    )
    .bind(user_id)
    .bind(&USER_TOPICS[..])
    .bind(LOOK_BACK.as_secs_f64())
    .bind(resume_after.unwrap_or(i64::MAX))
    .bind(LOOK_BACK_IDS as i64)
    .fetch_all(pool)
    .await?;
    Ok(look_back_start(&latest, resume_after, Instant::now()))
}

/// The start position from the user's latest rows (newest first, each with whether it is within
/// the look-back): the floor is the newest row older than the look-back (or the oldest row read
/// when as many as [`LOOK_BACK_IDS`] are recent); the recent rows above it count as sent, except
/// that a resumed stream counts only the event it resumes after.
fn look_back_start(latest: &[(i64, bool)], resume_after: Option<i64>, now: Instant) -> Position {
    let floor = match latest.iter().find(|(_, recent)| !recent) {
        Some(&(id, _)) => id,
        None if latest.len() >= LOOK_BACK_IDS => latest.last().map_or(0, |&(id, _)| id),
        None => 0,
    };
    let mut position = Position::at(floor);
    let mut sent: Vec<i64> = match resume_after {
        Some(id) => vec![id],
        None => latest.iter().map(|&(id, _)| id).collect(),
    };
    sent.retain(|&id| id > floor);
    sent.sort_unstable();
    for id in sent {
        position.sent(id, now);
    }
    position
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
            state.position.sent(row.id, now);
            state.last_write = now;
            let event = to_event(&row);
            return Some((Ok(event), state));
        }
        if state.unread {
            // Seen before reading: a notification from now on makes `changed` return at once.
            state.permit.wake.borrow_and_update();
            state.position.prune(now);
            // Boxed: an idle stream keeps no room for a query in flight.
            match Box::pin(rows_after(
                &state.pool,
                &state.permit.user_id,
                state.position.floor,
                state.position.skipped(),
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
                // An idle stream forgets what it sent once the look-back has passed.
                state.position.prune(now);
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
    let position = start_position(&pool, &user_id, last_event_id).await?;
    metrics.sse_subscribers.inc();
    let opened = Instant::now();
    let state = StreamState {
        pool,
        position,
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

    #[test]
    fn sent_ids_are_skipped_until_the_look_back_passes_then_raise_the_floor() {
        let start = Instant::now();
        let mut position = Position::at(10);
        position.sent(12, start);
        position.sent(11, start + Duration::from_secs(5));
        position.prune(start + Duration::from_secs(5));
        assert_eq!((position.floor, position.skipped()), (10, vec![12, 11]));
        // 12 is forgotten: the floor rises to it, and 11 (below it) goes too.
        position.prune(start + LOOK_BACK);
        assert_eq!(position.floor, 12);
        assert!(position.recent.is_none(), "an idle stream keeps no set");
    }

    #[test]
    fn past_the_cap_the_oldest_sent_ids_raise_the_floor() {
        let now = Instant::now();
        let mut position = Position::at(0);
        for id in 1..=(LOOK_BACK_IDS as i64 + 2) {
            position.sent(id, now);
        }
        position.prune(now);
        assert_eq!(position.floor, 2);
        assert_eq!(position.skipped().len(), LOOK_BACK_IDS);
    }

    #[test]
    fn a_new_stream_counts_the_users_recent_rows_as_sent_and_a_resumed_one_replays_them() {
        let now = Instant::now();
        let latest = [(9, true), (7, true), (5, false), (3, false)];
        let fresh = look_back_start(&latest, None, now);
        assert_eq!((fresh.floor, fresh.skipped()), (5, vec![7, 9]));
        let resumed = look_back_start(&latest, Some(9), now);
        assert_eq!((resumed.floor, resumed.skipped()), (5, vec![9]));
        let old = look_back_start(&[(5, false)], Some(5), now);
        assert_eq!((old.floor, old.skipped()), (5, vec![]));
        let all_recent = look_back_start(&[(4, true), (2, true)], None, now);
        assert_eq!((all_recent.floor, all_recent.skipped()), (0, vec![2, 4]));
        assert_eq!(look_back_start(&[], None, now).floor, 0);
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
            position: Position::at(0),
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
