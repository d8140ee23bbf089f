//! Follows Redis' invalidation broadcasts for the in-process tier: one dedicated RESP3 connection per
//! cache runs `CLIENT TRACKING ON BCAST PREFIX <namespace>`, and every `invalidate` push (any
//! replica set or deleted a key of the store, or the database was flushed) drops the in-process
//! entry. The connection is checked with a PING every [`PING_EVERY`]; an error, a disconnection or
//! a PING without answer ends tracking (the in-process tier is cleared and its entries turn
//! short-lived) until a new connection has tracking on again.

use std::sync::Weak;
use std::time::Duration;

use redis::{AsyncConnectionConfig, ProtocolVersion, PushKind, Value};
use tokio::sync::mpsc;

use super::CacheInner;

/// How often the tracking connection is checked.
pub const PING_EVERY: Duration = Duration::from_millis(500);
/// Pause before connecting again after tracking failed.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Starts following invalidations for `inner` until it is dropped.
pub(super) fn spawn(
    inner: Weak<CacheInner>,
    client: &redis::Client,
    client_name: String,
    namespace: String,
    timeout: Duration,
) -> Result<(), redis::RedisError> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(settings))?;
    tokio::spawn(async move {
        loop {
            let outcome = follow(&inner, &client, &client_name, &namespace, timeout).await;
            let Some(cache) = inner.upgrade() else { return };
            if cache
                .local
                .as_ref()
                .is_some_and(|local| local.coherent.load(std::sync::atomic::Ordering::SeqCst))
            {
                tracing::warn!(reason = %outcome, "cache invalidation tracking lost; the in-process tier is cleared and short-lived until it is back");
            }
            cache.set_tracking(false);
            drop(cache);
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    });
    Ok(())
}

/// Why tracking ended.
#[derive(Debug, thiserror::Error)]
enum TrackingEnd {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the tracking connection closed")]
    Disconnected,
    #[error("the cache was dropped")]
    CacheDropped,
}

async fn within<T>(
    timeout: Duration,
    future: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, TrackingEnd> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| TrackingEnd::Timeout(timeout))?
        .map_err(TrackingEnd::from)
}

/// One tracking connection, from connecting until it fails.
async fn follow(
    inner: &Weak<CacheInner>,
    client: &redis::Client,
    client_name: &str,
    namespace: &str,
    timeout: Duration,
) -> TrackingEnd {
    let (sender, mut pushes) = mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_push_sender(sender);
    let mut connection = match within(
        timeout,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    {
        Ok(connection) => connection,
        Err(end) => return end,
    };
    let setup = async {
        within(
            timeout,
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(client_name)
                .query_async::<()>(&mut connection),
        )
        .await?;
        within(
            timeout,
            redis::cmd("CLIENT")
                .arg(&["TRACKING", "ON", "BCAST", "PREFIX"][..])
                .arg(namespace)
                .query_async::<()>(&mut connection),
        )
        .await
    };
    if let Err(end) = setup.await {
        return end;
    }
    match inner.upgrade() {
        Some(cache) => cache.set_tracking(true),
        None => return TrackingEnd::CacheDropped,
    }
    tracing::info!(%namespace, "following cache invalidations");
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { return TrackingEnd::Disconnected };
                let Some(cache) = inner.upgrade() else { return TrackingEnd::CacheDropped };
                match push.kind {
                    PushKind::Invalidate => cache.drop_local(invalidated_keys(push.data)).await,
                    PushKind::Disconnection => return TrackingEnd::Disconnected,
                    _ => {}
                }
            }
            _ = ping.tick() => {
                if inner.strong_count() == 0 {
                    return TrackingEnd::CacheDropped;
                }
                if let Err(end) = within(timeout, redis::cmd("PING").query_async::<()>(&mut connection)).await {
                    return end;
                }
            }
        }
    }
}

/// The keys of an `invalidate` push; `None` stands for every key (a flush).
fn invalidated_keys(data: Vec<Value>) -> Option<Vec<Vec<u8>>> {
    match data.into_iter().next() {
        Some(Value::Array(keys)) | Some(Value::Set(keys)) => Some(
            keys.into_iter()
                .filter_map(|key| match key {
                    Value::BulkString(bytes) => Some(bytes),
                    Value::SimpleString(text) => Some(text.into_bytes()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_pushes_name_keys_or_everything() {
        let keys = invalidated_keys(vec![Value::Array(vec![
            Value::BulkString(b"ns:product-cache/7".to_vec()),
            Value::BulkString(b"ns:products-cache/all".to_vec()),
        ])]);
        assert_eq!(
            keys,
            Some(vec![
                b"ns:product-cache/7".to_vec(),
                b"ns:products-cache/all".to_vec()
            ])
        );
        assert_eq!(invalidated_keys(vec![Value::Nil]), None);
    }
}
