//! Cache coherence across replicas: how long after a mutation's invalidation returns on replica A
//! does replica B stop serving the old value from its in-process tier?
//!
//! Two `Cache`s with an in-process tier in front of one Redis (two replicas of one store: same
//! namespace), each following Redis' invalidation broadcasts. Per round, with a key of its own:
//! A stores a value, B reads it until it holds it in-process, then A invalidates the key (what every
//! mutation does after its commit) and B reads in a loop until it no longer gets the old value.
//! Propagation = A's `invalidate` returned → B's first read without the old value.
//!
//! Run: `cargo bench -p plamatio-api --bench cache_propagation`. Knobs (environment):
//! `PROPAGATION_ROUNDS` (2000), `REDIS_URL` (else `redis://127.0.0.1:6379`). Exit status 1 on an
//! error (Redis unreachable, tracking never established, a round that never propagates).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use plamatio_api::cache::{Cache, CacheKey, CachedBody};
use plamatio_api::metrics::Metrics;

fn replica(url: &str, namespace: &str) -> anyhow::Result<Cache> {
    Cache::redis_with_memory_tier(
        url,
        namespace,
        Duration::from_millis(200),
        16 * 1024 * 1024,
        Metrics::new()?,
    )
    .context("configuring a replica's cache")
}

async fn until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !check().await {
        if Instant::now() > deadline {
            bail!("condition not met within {limit:?}");
        }
        tokio::task::yield_now().await;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

async fn run() -> anyhow::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rounds: usize = std::env::var("PROPAGATION_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2000);
    let namespace = format!("bench-propagation:{}:", uuid::Uuid::new_v4().simple());
    let a = replica(&url, &namespace)?;
    let b = replica(&url, &namespace)?;
    until(Duration::from_secs(10), async || {
        a.tracking_established() && b.tracking_established()
    })
    .await
    .context("invalidation tracking is not established (is Redis running?)")?;

    let old = CachedBody::new(Bytes::from_static(br#"{"name":"old"}"#));
    let mut samples = Vec::with_capacity(rounds);
    let mut reads = 0_u64;
    for round in 0..rounds {
        let key = CacheKey::new("propagation", round, Duration::from_secs(60));
        a.put(&key, &old).await;
        until(Duration::from_secs(5), async || {
            b.get(&key).await.is_some() && b.holds_in_process(&key)
        })
        .await
        .with_context(|| format!("round {round}: B never held the entry in-process"))?;
        a.invalidate(std::slice::from_ref(&key)).await;
        let invalidated = Instant::now();
        until(Duration::from_secs(5), async || {
            reads += 1;
            b.get(&key).await.as_ref() != Some(&old)
        })
        .await
        .with_context(|| format!("round {round}: B kept serving the old value"))?;
        samples.push(invalidated.elapsed());
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "BENCH cache_propagation rounds={rounds} p50_us={} p90_us={} p99_us={} max_us={} mean_us={} reads_on_b={reads}",
        percentile(&samples, 0.50).as_micros(),
        percentile(&samples, 0.90).as_micros(),
        percentile(&samples, 0.99).as_micros(),
        samples.last().copied().unwrap_or_default().as_micros(),
        mean.as_micros(),
    );
    Ok(())
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cache_propagation: no runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cache_propagation: {error:#}");
            ExitCode::FAILURE
        }
    }
}
