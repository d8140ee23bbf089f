//! PostgreSQL connection pool, database creation, the embedded sqlx migrations (schema + seed) and
//! the store's identity (the id that namespaces its cache entries).

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::config::DatabaseConfig;

/// The migrations in `migrations/`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Creates the database named in the URL when it does not exist yet.
pub async fn ensure_database(url: &str) -> Result<(), sqlx::Error> {
    if !Postgres::database_exists(url).await? {
        tracing::info!("creating database");
        if let Err(error) = Postgres::create_database(url).await {
            // Another replica may have created it in the meantime.
            if !Postgres::database_exists(url).await? {
                return Err(error);
            }
        }
    }
    Ok(())
}

/// Pool options every pool of the service starts from: new TCP connections get `TCP_NODELAY`.
///
/// sqlx 0.9.0 connects without it (a regression of that release, fixed upstream after it:
/// launchbadge/sqlx#4335), so a message the kernel sends in more than one piece waits for the
/// server's delayed acknowledgement — about 40 ms on Linux. The relay's 2,000-id `DELETE` took
/// 44 ms over TCP and 2 ms over a Unix socket (B4). Until a release sets it again, each new
/// connection's socket is found and configured here.
pub fn pool_options(url: &str) -> PgPoolOptions {
    let port = url
        .parse::<PgConnectOptions>()
        .ok()
        .filter(|options| options.get_socket().is_none())
        .map(|options| options.get_port());
    PgPoolOptions::new().after_connect(move |_connection, _metadata| {
        Box::pin(async move {
            if let Some(port) = port {
                nodelay::set_on_connections_to(port);
            }
            Ok(())
        })
    })
}

/// Opens the pool (creating the database if needed).
///
/// No ping before each acquire (sqlx's `test_before_acquire`, on by default): it cost one extra
/// round trip to PostgreSQL per request, as much as an uncached by-id read itself (B2). A connection
/// that broke while idle (a terminated backend, a restarted server) then fails the one query that
/// uses it — a clean 503, as the reliability test asserts — and sqlx closes it.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    ensure_database(&config.database_url).await?;
    pool_options(&config.database_url)
        .test_before_acquire(false)
        .max_connections(config.database_pool_size.max(1))
        .min_connections(1)
        .acquire_timeout(config.acquire_timeout())
        .connect(&config.database_url)
        .await
}

/// Applies pending migrations; safe to run from several replicas at once (sqlx takes an advisory
/// lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// The store's id, generated when the database was first migrated (`store_identity`). A recreated
/// database gets a new one.
pub async fn store_id(pool: &PgPool) -> Result<uuid::Uuid, sqlx::Error> {
    sqlx::query_scalar("SELECT store_id FROM store_identity")
        .fetch_one(pool)
        .await
}

/// `TCP_NODELAY` for the TCP connections sqlx opened (see [`pool_options`]).
pub mod nodelay {
    /// Sets `TCP_NODELAY` on every TCP socket of this process connected to `port` that lacks it.
    /// Returns how many it changed. Linux only (elsewhere a no-op).
    #[cfg(target_os = "linux")]
    pub fn set_on_connections_to(port: u16) -> usize {
        use std::os::fd::{BorrowedFd, RawFd};

        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
            return 0;
        };
        let mut changed = 0;
        for entry in entries.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<RawFd>().ok())
            else {
                continue;
            };
            let is_socket = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
            if !is_socket {
                continue;
            }
            // SAFETY: `fd` is one of this process's open descriptors and is used only for the
            // socket option calls below. Should another thread close it in between, the calls
            // fail (EBADF) or reach a socket that took its number, which `TCP_NODELAY` on a
            // stream to the same port does not harm.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let socket = socket2::SockRef::from(&fd);
            let to_port = socket
                .peer_addr()
                .ok()
                .and_then(|peer| peer.as_socket())
                .is_some_and(|peer| peer.port() == port);
            let is_stream = socket
                .r#type()
                .is_ok_and(|kind| kind == socket2::Type::STREAM);
            if to_port
                && is_stream
                && socket.tcp_nodelay().is_ok_and(|set| !set)
                && socket.set_tcp_nodelay(true).is_ok()
            {
                changed += 1;
            }
        }
        changed
    }

    #[cfg(not(target_os = "linux"))]
    pub fn set_on_connections_to(_port: u16) -> usize {
        0
    }
}
