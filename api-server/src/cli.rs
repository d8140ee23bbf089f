//! The program behind `plamatio-api`: parses the command line and runs `serve`, `migrate`, `openapi`
//! or `keys generate`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::ConnectInfo;
use clap::Parser;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::cache::{self, Cache};
use crate::config::{Cli, Command, EventsCommand, KeysCommand, ServeConfig};
use crate::events::ingest::IngestQuota;
use crate::events::relay::{self, Relay, RelaySettings};
use crate::http::auth::{self, ApiKeys, Scope};
use crate::http::idempotency;
use crate::http::identity::{UserAuthMode, UserTokens};
use crate::http::layers::{self, EdgeConfig};
use crate::http::ratelimit::{self, RateLimits};
use crate::metrics::Metrics;
use crate::telemetry::LogFormat;
use crate::{AppState, db, events, telemetry};

/// Runs the command given on the command line.
pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(ServeConfig::from_defaults()).await,
        Some(Command::Serve(config)) => serve(*config).await,
        Some(Command::Migrate(config)) => {
            let telemetry = telemetry::init(LogFormat::Pretty, false);
            let pool = db::connect(&config)
                .await
                .context("connecting to PostgreSQL")?;
            db::migrate(&pool).await.context("applying migrations")?;
            tracing::info!("migrations applied");
            telemetry.shutdown();
            Ok(())
        }
        Some(Command::Openapi) => {
            println!("{}", crate::openapi_document().to_pretty_json()?);
            Ok(())
        }
        Some(Command::Events {
            command:
                EventsCommand::Tail {
                    topic,
                    from_beginning,
                    limit,
                    kafka,
                },
        }) => {
            anyhow::ensure!(kafka.enabled(), "set KAFKA_BOOTSTRAP_SERVERS");
            events::tail::run(&kafka, &topic, from_beginning, limit).await
        }
        Some(Command::Keys {
            command: KeysCommand::Generate { scope },
        }) => {
            let key = auth::generate_key();
            let digest = auth::digest_hex(&key);
            println!("key:    {key}");
            println!("digest: {digest}");
            println!("config: PLAMATIO_API_KEYS={}:{digest}", scope.as_str());
            Ok(())
        }
    }
}

/// The edge settings of a serve configuration.
pub fn edge_config(config: &ServeConfig) -> EdgeConfig {
    EdgeConfig {
        cors_origins: config
            .cors_origins
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(str::to_owned)
            .collect(),
        cors_credentials: config.cors_credentials,
        cors_localhost: config.cors_allow_localhost,
        request_timeout: config.request_timeout(),
        http_metrics: config.observability,
        trace_sampling: telemetry::request_sampling(),
    }
}

/// Start-up warnings about settings that leave shoppers exposed.
fn warn_about_exposure(config: &ServeConfig, keys: &ApiKeys) {
    if config.user_auth.user_auth == UserAuthMode::Off && keys.has_scope(Scope::Storefront) {
        tracing::warn!(
            "PLAMATIO_USER_AUTH is off while a storefront key is configured: the storefront key ships \
             in the browser bundle, so anyone can read and change any shopper's cart, orders, \
             addresses and profile by naming their user id; set PLAMATIO_USER_AUTH=required (see \
             \"Threat model\" in the README)"
        );
    }
    for pattern in edge_config(config).cors_origins {
        if layers::is_unpinned_shared_host_pattern(&pattern) {
            tracing::warn!(
                pattern = %pattern,
                "CORS origin pattern matches anyone's project on a shared hosting domain; pin the \
                 wildcard to your own suffix (e.g. https://shop-*-<team-slug>.vercel.app)"
            );
        }
    }
}

fn api_keys(config: &ServeConfig) -> anyhow::Result<ApiKeys> {
    let mut keys = ApiKeys::parse(&config.api_keys).context("parsing PLAMATIO_API_KEYS")?;
    if config.dev_keys {
        let storefront = auth::generate_key();
        let admin = auth::generate_key();
        keys.add_key(&storefront, Scope::Storefront);
        keys.add_key(&admin, Scope::Admin);
        tracing::warn!(
            "PLAMATIO_DEV_KEYS is set: generated keys for local use only, never in production"
        );
        println!("storefront key: {storefront}");
        println!("admin key:      {admin}");
    }
    if keys.is_empty() {
        tracing::warn!(
            "no API keys configured (PLAMATIO_API_KEYS); every authenticated route will answer 401"
        );
    }
    Ok(keys)
}

/// The shared state of a serve configuration: pool (migrated unless disabled), cache and keys.
pub async fn build_state(config: &ServeConfig) -> anyhow::Result<AppState> {
    let keys = api_keys(config)?;
    let pool = db::connect(&config.database)
        .await
        .context("connecting to PostgreSQL")?;
    if !config.no_migrate {
        db::migrate(&pool).await.context("applying migrations")?;
    }
    let metrics = Metrics::new().context("registering metrics")?;
    let store_id = db::store_id(&pool)
        .await
        .context("reading the store id (apply the migrations: `plamatio-api migrate`)")?;
    let namespace = cache::namespace(&config.cache_prefix, store_id);
    let cache = match &config.redis_url {
        Some(url) if !url.trim().is_empty() => Cache::redis_with_memory_tier(
            url,
            &namespace,
            config.redis_timeout(),
            config.memory_cache_mib * 1024 * 1024,
            metrics.clone(),
        )
        .context("configuring the Redis cache")?,
        _ => Cache::memory(
            config.memory_cache_mib * 1024 * 1024,
            &namespace,
            metrics.clone(),
        ),
    };
    cache.set_ttl_override(config.cache_ttl_seconds.map(Duration::from_secs));
    tracing::info!(cache = cache.backend_name(), namespace = %namespace, "cache ready");
    warn_about_exposure(config, &keys);
    let proxies = ratelimit::parse_trusted_proxies(&config.trusted_proxies)
        .context("parsing PLAMATIO_TRUSTED_PROXIES")?;
    let limits = RateLimits::new(config.rate_limit_per_minute, proxies);
    let user_tokens = UserTokens::new(&config.user_auth).context("configuring user tokens")?;
    if let Some(tokens) = &user_tokens {
        tracing::info!(mode = ?tokens.mode(), "verifying end-user tokens");
        let tokens = tokens.clone();
        tokio::spawn(async move { tokens.refresh().await });
    }
    let ingest_quota = IngestQuota::new(
        config.user_events_per_minute,
        config.user_events_kib_per_minute,
    );
    Ok(AppState::new(pool, cache, keys, metrics)
        .with_rate_limits(limits)
        .with_user_tokens(user_tokens)
        .with_event_limits(config.stream_limits(), ingest_quota))
}

/// Every minute: forget idle rate-limit buckets; every hour: prune expired idempotency records.
async fn housekeeping(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut minutes = 0u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {},
            _ = shutdown.changed() => return,
        }
        if let Some(limits) = &state.rate_limits {
            limits.forget_idle();
        }
        if let Some(quota) = &state.ingest_quota {
            quota.forget_idle();
        }
        if minutes.is_multiple_of(60) {
            match idempotency::prune(&state.pool).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "pruned expired idempotency records"),
                Err(error) => tracing::warn!(%error, "idempotency pruning failed"),
            }
        }
        minutes += 1;
    }
}

/// Starts the outbox monitor (backlog metrics, pruning) and, with Kafka configured, the relay.
/// Returns their tasks; they stop when `shutdown` turns true.
async fn start_background(
    config: &ServeConfig,
    state: &AppState,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let relay_enabled = config.kafka.enabled();
    let retention = Duration::from_secs(config.outbox_retention_hours * 3600);
    let mut tasks = vec![
        tokio::spawn(relay::monitor(
            state.pool.clone(),
            state.metrics.clone(),
            retention,
            relay_enabled,
            shutdown.clone(),
        )),
        tokio::spawn(housekeeping(state.clone(), shutdown.clone())),
    ];
    if relay_enabled {
        if config.kafka.kafka_create_topics
            && let Err(error) = config.kafka.ensure_topics().await
        {
            tracing::warn!(%error, "could not create Kafka topics; the relay retries publishing");
        }
        let settings = RelaySettings {
            batch_size: config.outbox_batch_size.max(1),
            poll_interval: Duration::from_millis(config.outbox_poll_ms.max(10)),
            ..RelaySettings::default()
        };
        let relay = Relay::new(
            state.pool.clone(),
            config.kafka.clone(),
            settings,
            state.metrics.clone(),
        )
        .context("configuring the Kafka producer")?;
        tasks.push(tokio::spawn(relay.run(shutdown.clone())));
    } else {
        tracing::info!(
            "KAFKA_BOOTSTRAP_SERVERS not set: events stay in the outbox and live streams"
        );
    }
    Ok(tasks)
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Largest accepted HTTP/1 request head (request line and headers); a bigger one is answered 431.
const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// The first bytes an HTTP/2 client with prior knowledge sends (RFC 9113, 3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a new connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Tells HTTP/1 from HTTP/2 by peeking at the first bytes, without consuming them: as soon as
/// they differ from the HTTP/2 preface the connection is HTTP/1 (for a request line that is the
/// first byte, or the second for `POST`, `PUT`, `PATCH`). `None`: closed before any byte.
///
/// hyper-util's `auto` connection reads those bytes instead and hands them back to hyper in front
/// of the socket; hyper's first read then returns only them, and its read buffer, reserved again
/// for the rest of the request, doubles from 8 to 16 KiB, for the life of every connection.
async fn detect_protocol(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut start = [0u8; HTTP2_PREFACE.len()];
    let mut wait = Duration::from_millis(1);
    loop {
        let read = stream.peek(&mut start).await?;
        if read == 0 {
            return Ok(None);
        }
        if start[..read] != HTTP2_PREFACE[..read] {
            return Ok(Some(Protocol::Http1));
        }
        if read == HTTP2_PREFACE.len() {
            return Ok(Some(Protocol::Http2));
        }
        // Part of the preface (a rare split write): peeking again would return at once with the
        // same bytes, so wait a little longer each time (the header read timeout bounds it).
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(100));
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish, like
/// `axum::serve` with `ConnectInfo<SocketAddr>` in every request's extensions, but with bounds on
/// slow clients: each request's headers must arrive within `header_read_timeout` (hyper's HTTP/1
/// header read timeout, which also closes keep-alive connections idle that long), and a new
/// connection must deliver its first request within it whatever protocol it speaks, so slow or
/// silent clients cannot hold connections forever.
///
/// HTTP/1.1 and HTTP/2 with prior knowledge (h2c) are told apart by [`detect_protocol`]. An
/// HTTP/1 connection is served in place; an HTTP/2 one is boxed, so every connection's task is
/// only as large as an HTTP/1 connection (an idle event stream is mostly its connection).
async fn serve_http(
    mut listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        // The exact limit: `max_buf_size` alone lets through a head that fits the read buffer's
        // spare capacity (a 65.7 KB head was answered 200 once that capacity had doubled).
        .max_header_size(MAX_REQUEST_HEAD_BYTES);
    // Shared by every connection: its task holds a pointer, not a copy of both configurations.
    let builders = Arc::new((http1, http2::Builder::new(TokioExecutor::new())));
    let graceful = GracefulShutdown::new();
    // Closed when shutdown begins: ends connections that have not said which protocol they speak
    // (the others are told by `graceful`).
    let (closing, closed) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // axum's accept: retries transient errors and backs off on others (e.g. too many open files).
        let (stream, peer) = tokio::select! {
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        let requested = Arc::new(AtomicBool::new(false));
        let seen = requested.clone();
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: http::Request<_>| {
                seen.store(true, Ordering::Relaxed);
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let watcher = graceful.watcher();
        let builders = Arc::clone(&builders);
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let serve = async {
                let protocol = tokio::select! {
                    protocol = detect_protocol(&stream) => protocol?,
                    _ = closed.changed() => None,
                };
                drop(closed);
                match protocol {
                    Some(Protocol::Http1) => {
                        let connection = builders.0.serve_connection(TokioIo::new(stream), service);
                        watcher
                            .watch(connection)
                            .await
                            .map_err(std::io::Error::other)
                    }
                    Some(Protocol::Http2) => {
                        let connection = builders.1.serve_connection(TokioIo::new(stream), service);
                        Box::pin(watcher.watch(connection))
                            .await
                            .map_err(std::io::Error::other)
                    }
                    None => Ok(()),
                }
            };
            let silent = async {
                tokio::time::sleep(header_read_timeout).await;
                if requested.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                result = serve => if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection closed with an error");
                },
                () = silent => tracing::debug!(%peer, "no request within the header read timeout"),
            }
        });
    }
    drop(listener);
    drop(closing);
    graceful.shutdown().await;
}

/// Serves the API until SIGINT/SIGTERM.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let telemetry = telemetry::init(config.log_format, config.observability);
    let state = build_state(&config).await?;
    let (stop, shutdown) = watch::channel(false);
    let background = start_background(&config, &state, &shutdown).await?;
    let app = crate::app(state, &edge_config(&config));
    let address: SocketAddr = format!("{}:{}", config.host, config.port)
        .parse()
        .with_context(|| format!("invalid listen address {}:{}", config.host, config.port))?;
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    tracing::info!(%address, "plamatio-api listening");
    serve_http(
        listener,
        app,
        config.header_read_timeout(),
        shutdown_signal(),
    )
    .await;
    // Let the relay finish its round so acknowledged rows are marked published.
    let _ = stop.send(true);
    let _ = tokio::time::timeout(
        Duration::from_secs(15),
        futures::future::join_all(background),
    )
    .await;
    telemetry.shutdown();
    Ok(())
}
