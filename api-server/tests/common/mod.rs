//! Test harness: every test gets its own freshly migrated PostgreSQL database (so tests run in
//! parallel), a router built exactly as `serve` builds it, and generated storefront/admin keys.

pub mod broker;
pub mod cache;
pub mod fixtures;
pub mod identity;
pub mod outbox;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use clap::Parser;
use http_body_util::BodyExt;
use plamatio_api::cache::Cache;
use plamatio_api::config::{Cli, Command, ServeConfig};
use plamatio_api::http::auth::{ApiKeys, Scope, generate_key};
use plamatio_api::metrics::Metrics;
use plamatio_api::{AppState, cli, db};
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

pub use plamatio_testkit::{database_server_url as server_url, free_port, redis_url, wait_until};

pub enum CacheKind {
    Memory,
    Redis(String),
}

pub struct TestApp {
    pub router: Router,
    pub pool: PgPool,
    pub state: AppState,
    pub storefront_key: String,
    pub admin_key: String,
    pub cache_prefix: String,
    database: String,
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

/// The single number a counting query (`SELECT count(*) …`) returns.
pub async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// The body of a 200 answer; fails the test with the body otherwise.
pub fn ok(response: &TestResponse) -> Value {
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    response.body.clone()
}

/// The value of an unlabelled metric in a Prometheus text exposition, if present.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an error response of the contract's shape and returns its message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert!(
            self.body.get("details").is_some(),
            "details key missing: {}",
            self.body
        );
        self.body["message"].as_str().unwrap_or_default().to_owned()
    }
}

async fn create_empty_database() -> (String, PgPool) {
    let (name, url) =
        plamatio_testkit::create_scratch_database(&server_url(), "plamatio_test").await;
    let pool = db::pool_options(&url)
        .max_connections(12)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .expect("connect to test database");
    (name, pool)
}

async fn create_database() -> (String, PgPool) {
    let (name, pool) = create_empty_database().await;
    db::migrate(&pool)
        .await
        .expect("migrations apply to an empty database");
    (name, pool)
}

/// A database of its own with no migration applied, dropped with the value.
pub struct EmptyDatabase {
    pub pool: PgPool,
    name: String,
}

impl EmptyDatabase {
    pub async fn new() -> EmptyDatabase {
        let (name, pool) = create_empty_database().await;
        EmptyDatabase { pool, name }
    }
}

impl Drop for EmptyDatabase {
    fn drop(&mut self) {
        drop_database(self.name.clone());
    }
}

/// Drops a test database (works from `Drop`).
pub fn drop_database(name: String) {
    plamatio_testkit::drop_scratch_database(server_url(), name);
}

/// A name for a test database of its own (created by whoever connects first).
pub fn new_database_name() -> String {
    format!("plamatio_test_{}", uuid::Uuid::new_v4().simple())
}

/// The configuration `plamatio-api serve <flags>` gets, with `DATABASE_URL` naming `database` on the
/// test server (flags and the environment work as for the binary).
pub fn serve_config(database: &str, flags: &[&str]) -> ServeConfig {
    let url = format!("{}/{database}", server_url());
    let mut arguments = vec!["plamatio-api", "serve", "--database-url", url.as_str()];
    arguments.extend_from_slice(flags);
    match Cli::try_parse_from(arguments) {
        Ok(Cli {
            command: Some(Command::Serve(config)),
        }) => *config,
        Ok(_) => unreachable!("the serve subcommand parses to Command::Serve"),
        Err(error) => panic!("serve flags {flags:?} do not parse: {error}"),
    }
}

impl TestApp {
    /// A store built exactly as `plamatio-api serve <flags>` builds it (`cli::build_state`, then
    /// `app` with `cli::edge_config`), on the database `database` (created and migrated when
    /// missing, dropped with the value), with a generated storefront and admin key.
    pub async fn serving(database: &str, flags: &[&str]) -> TestApp {
        let storefront_key = generate_key();
        let admin_key = generate_key();
        let keys = format!(
            "storefront:{},admin:{}",
            plamatio_api::http::auth::digest_hex(&storefront_key),
            plamatio_api::http::auth::digest_hex(&admin_key)
        );
        let mut all_flags = vec!["--api-keys", keys.as_str()];
        all_flags.extend_from_slice(flags);
        let config = serve_config(database, &all_flags);
        let state = cli::build_state(&config)
            .await
            .unwrap_or_else(|error| panic!("serve does not start with {flags:?}: {error:#}"));
        let router = plamatio_api::app(state.clone(), &cli::edge_config(&config));
        TestApp {
            router,
            pool: state.pool.clone(),
            cache_prefix: state.cache.namespace().to_owned(),
            state,
            storefront_key,
            admin_key,
            database: database.to_owned(),
        }
    }

    pub async fn new() -> TestApp {
        TestApp::with_cache(CacheKind::Memory).await
    }

    pub async fn with_redis() -> TestApp {
        TestApp::with_cache(CacheKind::Redis(redis_url())).await
    }

    pub async fn with_cache(kind: CacheKind) -> TestApp {
        let (database, pool) = create_database().await;
        let metrics = Metrics::new().expect("metrics");
        let cache_prefix = format!("test:{database}:");
        let cache = match kind {
            CacheKind::Memory => Cache::memory(16 * 1024 * 1024, &cache_prefix, metrics.clone()),
            // Generous: the tests assert what reaches Redis, and a loaded CI machine (load 10+
            // on 2 cores was seen) can take longer than a production timeout to answer a SET.
            CacheKind::Redis(url) => {
                Cache::redis(&url, &cache_prefix, Duration::from_secs(2), metrics.clone())
                    .expect("redis url parses")
            }
        };
        let storefront_key = generate_key();
        let admin_key = generate_key();
        let mut keys = ApiKeys::default();
        keys.add_key(&storefront_key, Scope::Storefront);
        keys.add_key(&admin_key, Scope::Admin);
        let state = AppState::new(pool.clone(), cache, keys, metrics);
        let config = ServeConfig::from_defaults();
        let router = plamatio_api::app(state.clone(), &cli::edge_config(&config));
        TestApp {
            router,
            pool,
            state,
            storefront_key,
            admin_key,
            cache_prefix,
            database,
        }
    }

    /// Sends a request; `auth` is the full `Authorization` header value, if any.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<&Value>,
        extra_headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth);
        }
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        for (name, value) in extra_headers {
            builder = builder.header(*name, *value);
        }
        let body = match body {
            Some(json) => Body::from(serde_json::to_vec(json).expect("serialize body")),
            None => Body::empty(),
        };
        self.send_request(builder.body(body).expect("request builds"))
            .await
    }

    pub async fn send_request(&self, request: Request<Body>) -> TestResponse {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let raw = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        TestResponse {
            status,
            headers,
            body,
            raw,
        }
    }

    fn bearer(key: &str) -> String {
        format!("Bearer {key}")
    }

    /// GET with the storefront key.
    /// A request as a shopper's browser sends it: the storefront key and, when given, the end
    /// user's token (`X-User-Token`).
    pub async fn as_shopper(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> TestResponse {
        self.as_shopper_keyed(token, method, path, body, None).await
    }

    /// [`TestApp::as_shopper`] with an `Idempotency-Key` when given.
    pub async fn as_shopper_keyed(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> TestResponse {
        let auth = TestApp::bearer(&self.storefront_key);
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(token) = token {
            headers.push(("x-user-token", token));
        }
        if let Some(key) = idempotency_key {
            headers.push(("idempotency-key", key));
        }
        self.send(method, path, Some(&auth), body, &headers).await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        let auth = Self::bearer(&self.storefront_key);
        self.send(Method::GET, path, Some(&auth), None, &[]).await
    }

    /// A request with the admin key.
    pub async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> TestResponse {
        let auth = Self::bearer(&self.admin_key);
        self.send(method, path, Some(&auth), body, &[]).await
    }

    /// A request with the storefront key.
    pub async fn storefront(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> TestResponse {
        let auth = Self::bearer(&self.storefront_key);
        self.send(method, path, Some(&auth), body, &[]).await
    }

    /// The message of the 400 `invalid_argument` answer to a storefront request.
    pub async fn invalid_argument(&self, method: Method, path: &str, body: &Value) -> String {
        self.storefront(method, path, Some(body))
            .await
            .assert_error(400, "invalid_argument")
    }

    /// The ids of a `{"data": [...]}` response, in order.
    pub fn ids(response: &TestResponse) -> Vec<i64> {
        response.body["data"]
            .as_array()
            .unwrap_or_else(|| panic!("not a data list: {}", response.body))
            .iter()
            .map(|item| item["id"].as_i64().expect("integer id"))
            .collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop_database(self.database.clone());
    }
}
