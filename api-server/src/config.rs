//! Command line and environment configuration (clap): the subcommands of the `plamatio-api` binary and
//! every setting of the server, each readable from a flag or its environment variable.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::events::kafka::KafkaConfig;
use crate::events::stream::StreamLimits;
use crate::http::auth::Scope;
use crate::http::identity::UserAuthConfig;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(name = "plamatio-api", version, about = "Plamatio store API")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default when no subcommand is given).
    Serve(Box<ServeConfig>),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseConfig),
    /// Print the OpenAPI document as JSON and exit.
    Openapi,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Inspect the store's Kafka events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print the messages of a topic (e.g. `cart_updates`) as they arrive.
    Tail {
        /// Topic name without the prefix.
        #[arg(long)]
        topic: String,
        /// Start at the oldest retained message instead of now.
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many messages.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        kafka: KafkaConfig,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a new random API key and print it with the digest to configure.
    Generate {
        /// Scope of the new key.
        #[arg(long, value_enum, default_value_t = Scope::Storefront)]
        scope: Scope,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; the database is created when it does not exist. (Its value in the
    /// environment, which may hold a password, is never printed by `--help`.)
    #[arg(
        long,
        env = plamatio_contract::env::DATABASE_URL,
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/plamatio"
    )]
    pub database_url: String,

    /// Maximum number of pooled PostgreSQL connections.
    #[arg(long, env = plamatio_contract::env::DATABASE_POOL_SIZE, default_value_t = 16)]
    pub database_pool_size: u32,

    /// How long a request waits for a pooled connection before it fails with 503.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 3000)]
    pub database_acquire_timeout_ms: u64,
}

impl DatabaseConfig {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.database_acquire_timeout_ms)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Do not apply pending migrations at start-up.
    #[arg(long, env = "PLAMATIO_NO_MIGRATE")]
    pub no_migrate: bool,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// Port to listen on.
    #[arg(long, env = plamatio_contract::env::PORT, default_value_t = 8080)]
    pub port: u16,

    /// Redis URL for the shared cache; without it an in-process cache is used. (Its value in the
    /// environment, which may hold a password, is never printed by `--help`.)
    #[arg(long, env = plamatio_contract::env::REDIS_URL, hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of every cache key, before the store's id (which alone keeps stores sharing one Redis
    /// apart; the prefix groups a store's keys for operators).
    #[arg(long, env = "PLAMATIO_CACHE_PREFIX", default_value = "")]
    pub cache_prefix: String,

    /// TTL of every cache entry in seconds, instead of 24 h for products and 2 h for the rest.
    #[arg(long, env = plamatio_contract::env::CACHE_TTL_SECONDS)]
    pub cache_ttl_seconds: Option<u64>,

    /// Timeout of one Redis operation; a slower Redis is treated as a cache miss.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 200)]
    pub redis_timeout_ms: u64,

    /// Size bound of the in-process cache, in MiB: the cache itself without Redis, the tier in front
    /// of Redis with it (0 = no in-process tier; every read goes to Redis).
    #[arg(long, env = "PLAMATIO_MEMORY_CACHE_MIB", default_value_t = 64)]
    pub memory_cache_mib: u64,

    /// API keys as comma-separated `scope:sha256hex` pairs (scope `storefront` or `admin`).
    #[arg(long, env = plamatio_contract::env::API_KEYS, default_value = "")]
    pub api_keys: String,

    /// Generate a storefront and an admin key at start-up and print them (local use only).
    #[arg(long, env = "PLAMATIO_DEV_KEYS", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub dev_keys: bool,

    /// Allowed CORS origins, comma-separated; `*` inside a host matches one or more characters of a
    /// DNS label. On a shared hosting domain pin a wildcard to your own suffix, e.g. Vercel previews
    /// as `https://shop-*-<team-slug>.vercel.app` (`https://shop-*.vercel.app` would match anyone's
    /// project named `shop-…`).
    #[arg(
        long,
        env = plamatio_contract::env::CORS_ORIGINS,
        default_value = "https://plamatio-frontend.vercel.app,https://plamatio.pkural.ca"
    )]
    pub cors_origins: String,

    /// Allow credentialed cross-origin requests (`Access-Control-Allow-Credentials: true`). The API
    /// uses no cookies; turn this on only for a frontend that needs it.
    #[arg(long, env = "PLAMATIO_CORS_CREDENTIALS", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub cors_credentials: bool,

    /// Also allow pages served from this machine (`http://localhost`, `http://127.0.0.1`,
    /// `http://[::1]`, any port): for frontend development only.
    #[arg(long, env = "PLAMATIO_CORS_ALLOW_LOCALHOST", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub cors_allow_localhost: bool,

    /// Request timeout in milliseconds (504 past it).
    #[arg(long, env = "PLAMATIO_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// How long a client may take to send a request's headers, in milliseconds; slower connections
    /// (and idle keep-alive connections) are closed.
    #[arg(
        long,
        env = "PLAMATIO_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,

    /// Requests per minute per API key (and client IP for the storefront scope); 0 disables.
    #[arg(long, env = plamatio_contract::env::RATE_LIMIT_PER_MINUTE, default_value_t = 600)]
    pub rate_limit_per_minute: u32,

    /// Proxies whose `X-Forwarded-For` is believed: comma-separated IPs or CIDRs (e.g. the ingress
    /// controller's pod range). The client is the first hop from the right that is not one of them.
    #[arg(long, env = plamatio_contract::env::TRUSTED_PROXIES, default_value = "")]
    pub trusted_proxies: String,

    #[command(flatten)]
    pub kafka: KafkaConfig,

    #[command(flatten)]
    pub user_auth: UserAuthConfig,

    /// Outbox rows the relay publishes per round.
    #[arg(long, env = "PLAMATIO_OUTBOX_BATCH_SIZE", default_value_t = 5000)]
    pub outbox_batch_size: i64,

    /// How often an idle relay looks for rows it was not notified about, in milliseconds.
    #[arg(long, env = "PLAMATIO_OUTBOX_POLL_MS", default_value_t = 1000)]
    pub outbox_poll_ms: u64,

    /// How long published outbox rows are kept (hours; default 7 days).
    #[arg(long, env = "PLAMATIO_OUTBOX_RETENTION_HOURS", default_value_t = 168)]
    pub outbox_retention_hours: u64,

    /// Open live event streams (`GET /events/stream/...`) of one user, per process.
    #[arg(long, env = "PLAMATIO_SSE_MAX_STREAMS_PER_USER", default_value_t = 5)]
    pub sse_max_streams_per_user: usize,

    /// Open live event streams of one API key, per process (the storefront key is shared by
    /// every shopper, so this bounds the shop's streams on one replica).
    #[arg(long, env = "PLAMATIO_SSE_MAX_STREAMS_PER_KEY", default_value_t = 5000)]
    pub sse_max_streams_per_key: usize,

    /// Longest life of one live event stream, in seconds (browsers reconnect and resume); a
    /// stream also ends when the user token it was opened with expires.
    #[arg(
        long,
        env = "PLAMATIO_SSE_MAX_LIFETIME_SECONDS",
        default_value_t = 3600
    )]
    pub sse_max_lifetime_seconds: u64,

    /// Seconds without an event after which a live event stream gets a keep-alive comment; keep it
    /// well under the idle timeout of every proxy in front (nginx and AWS ALB: 60 s).
    #[arg(long, env = "PLAMATIO_SSE_KEEP_ALIVE_SECONDS", default_value_t = 15)]
    pub sse_keep_alive_seconds: u64,

    /// Analytics events (`POST /events/user`) per minute per user and per client IP; 0 disables
    /// the quota.
    #[arg(long, env = "PLAMATIO_USER_EVENTS_PER_MINUTE", default_value_t = 600)]
    pub user_events_per_minute: u32,

    /// KiB of analytics events per minute per user and per client IP; 0 disables the quota.
    #[arg(
        long,
        env = "PLAMATIO_USER_EVENTS_KIB_PER_MINUTE",
        default_value_t = 1024
    )]
    pub user_events_kib_per_minute: u32,

    /// Request metrics and OpenTelemetry spans (turn off only to measure their cost).
    #[arg(long, env = "PLAMATIO_OBSERVABILITY", default_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub observability: bool,

    /// Log format: `pretty` for terminals, `json` for log shippers.
    #[arg(long, env = plamatio_contract::env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

impl ServeConfig {
    /// The configuration a `serve` without flags would get, for tests and tools.
    pub fn from_defaults() -> Self {
        let cli = Cli::parse_from(["plamatio-api", "serve"]);
        match cli.command {
            Some(Command::Serve(config)) => *config,
            _ => unreachable!("the serve subcommand always parses to Command::Serve"),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.max(1))
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// The bounds of live event streams.
    pub fn stream_limits(&self) -> StreamLimits {
        StreamLimits {
            per_user: self.sse_max_streams_per_user.max(1),
            per_key: self.sse_max_streams_per_key.max(1),
            max_lifetime: Duration::from_secs(self.sse_max_lifetime_seconds.max(1)),
            keep_alive: Duration::from_secs(self.sse_keep_alive_seconds.max(1)),
        }
    }
}
