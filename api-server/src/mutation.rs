//! The one way a change is written: [`Mutation::begin`] opens the transaction, the domain writes its
//! rows on [`Mutation::tx`] and names its outbox events ([`Mutation::event`]) and the cache keys the
//! change makes stale ([`Mutation::invalidate`]); [`Mutation::commit`] appends the events in that
//! order inside the transaction, commits, and only then invalidates the keys.
//!
//! So an event exists exactly when its change committed (a failed append rolls the whole change
//! back), and a key is never dropped before the new state is visible: a reader that refills it
//! reads the committed rows. A mutation dropped without `commit` (an early `return Err(..)`) rolls
//! back and leaves events, keys and cache untouched.
//!
//! ```text
//! let mut change = Mutation::begin(&state).await?;
//! let row = db::insert(change.tx(), &valid).await?;
//! change.event(row_event("row_created", &row));
//! change.invalidate([keys::row(row.id)]);
//! change.commit().await?;
//! ```

use sqlx::{PgConnection, Postgres, Transaction};

use crate::AppState;
use crate::cache::CacheKey;
use crate::error::ApiResult;
use crate::events::outbox::{self, OutboxEvent};

/// A change in progress: its transaction, the events it will publish and the keys it makes stale.
pub struct Mutation<'s> {
    state: &'s AppState,
    tx: Transaction<'static, Postgres>,
    events: Vec<OutboxEvent>,
    stale: Vec<CacheKey>,
}

impl<'s> Mutation<'s> {
    /// Opens the change's transaction.
    pub async fn begin(state: &'s AppState) -> ApiResult<Mutation<'s>> {
        Ok(Mutation {
            state,
            tx: state.pool.begin().await?,
            events: Vec::new(),
            stale: Vec::new(),
        })
    }

    /// The transaction's connection, for the domain's reads and writes.
    pub fn tx(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Publishes `event` with the change (appended, in call order, at commit).
    pub fn event(&mut self, event: OutboxEvent) {
        self.events.push(event);
    }

    /// Publishes every event of `events` with the change, in order.
    pub fn events(&mut self, events: impl IntoIterator<Item = OutboxEvent>) {
        self.events.extend(events);
    }

    /// Drops `keys` from the cache once the change has committed.
    pub fn invalidate(&mut self, keys: impl IntoIterator<Item = CacheKey>) {
        self.stale.extend(keys);
    }

    /// Appends the events, commits, then invalidates the keys.
    pub async fn commit(mut self) -> ApiResult<()> {
        outbox::append(&mut self.tx, &self.events).await?;
        self.tx.commit().await?;
        self.state.cache.invalidate(&self.stale).await;
        Ok(())
    }
}
