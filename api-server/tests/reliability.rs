//! Reliability under failure, against the real `plamatio-api` binary on a random port and a database
//! of its own, over TCP: Redis killed and restarted under load, PostgreSQL backends terminated under
//! load, the API SIGKILLed during concurrent checkouts, and hostile clients (oversized, nested and
//! malformed input, metacharacters, header floods, slowloris). Every wait is bounded, so a regression
//! fails the test instead of hanging it.

use crate::common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{free_port, server_url, wait_until};

const BINARY: &str = env!("CARGO_BIN_EXE_plamatio-api");

/// Upper bound of one HTTP exchange of a well-behaved client in these tests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How often the waits of these tests poll.
const POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// A database of the test's own (created by the binary at start-up, dropped at the end).

struct TestDb {
    name: String,
}

impl TestDb {
    fn new() -> TestDb {
        TestDb {
            name: format!("plamatio_test_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    fn url(&self) -> String {
        format!("{}/{}", server_url(), self.name)
    }

    async fn pool(&self) -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.url())
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        common::drop_database(self.name.clone());
    }
}

// ---------------------------------------------------------------------------------------------
// The API binary.

struct Api {
    child: Child,
    port: u16,
    storefront: String,
    logs: Arc<Mutex<VecDeque<String>>>,
}

fn drain_into(
    stream: impl Read + Send + 'static,
    logs: Arc<Mutex<VecDeque<String>>>,
    keys: Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Some(keys) = &keys {
                if let Some(key) = line.strip_prefix("storefront key:") {
                    let _ = keys.send(("storefront".into(), key.trim().to_owned()));
                }
                if let Some(key) = line.strip_prefix("admin key:") {
                    let _ = keys.send(("admin".into(), key.trim().to_owned()));
                }
            }
            if let Ok(mut logs) = logs.lock() {
                if logs.len() >= 300 {
                    logs.pop_front();
                }
                logs.push_back(line);
            }
        }
    });
}

impl Api {
    /// Starts `plamatio-api serve` on `port` with dev keys, no rate limit, no Redis and no Kafka
    /// unless `env` says otherwise, and waits (bounded) until `/readyz` answers 200.
    async fn start(db: &TestDb, port: u16, env: &[(&str, &str)]) -> Api {
        let mut command = Command::new(BINARY);
        command
            .arg("serve")
            .env("DATABASE_URL", db.url())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("PLAMATIO_DEV_KEYS", "1")
            .env("PLAMATIO_RATE_LIMIT_PER_MINUTE", "0")
            .env("RUST_LOG", "warn")
            .env_remove("REDIS_URL")
            .env_remove("PLAMATIO_API_KEYS")
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("PLAMATIO_TRUSTED_PROXIES")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn plamatio-api");
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let (keys_tx, mut keys_rx) = tokio::sync::mpsc::unbounded_channel();
        drain_into(
            child.stdout.take().expect("stdout piped"),
            logs.clone(),
            Some(keys_tx),
        );
        drain_into(
            child.stderr.take().expect("stderr piped"),
            logs.clone(),
            None,
        );
        let mut storefront = None;
        let mut admin = None;
        let keys_deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while storefront.is_none() || admin.is_none() {
            match tokio::time::timeout_at(keys_deadline, keys_rx.recv()).await {
                Ok(Some((scope, key))) if scope == "storefront" => storefront = Some(key),
                Ok(Some((_, key))) => admin = Some(key),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "plamatio-api printed no dev keys within 60 s: {}",
                        dump(&logs)
                    );
                }
            }
        }
        let mut api = Api {
            child,
            port,
            storefront: storefront.unwrap_or_default(),
            logs,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = api.child.try_wait() {
                panic!("plamatio-api exited with {status}: {}", api.logs());
            }
            if let Ok(Ok(response)) = tokio::time::timeout(
                Duration::from_secs(2),
                reqwest::get(format!("{}/readyz", api.base())),
            )
            .await
                && response.status() == 200
            {
                return api;
            }
            assert!(
                Instant::now() < deadline,
                "plamatio-api not ready on port {port} within 60 s: {}",
                api.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last log lines, and the exit status when the process is gone.
    fn logs(&mut self) -> String {
        let exited = match self.child.try_wait() {
            Ok(Some(status)) => format!("\n--- plamatio-api exited: {status} ---"),
            _ => String::new(),
        };
        format!("{}{exited}", dump(&self.logs))
    }

    /// SIGKILL, and reap the process.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.kill();
    }
}

fn dump(logs: &Mutex<VecDeque<String>>) -> String {
    let lines = logs.lock().map(|l| l.clone()).unwrap_or_default();
    let tail: Vec<String> = lines.into_iter().rev().take(40).collect();
    let tail: Vec<String> = tail.into_iter().rev().collect();
    format!("\n--- last log lines ---\n{}", tail.join("\n"))
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers.

#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    body: Value,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<&Value>,
) -> Result<Reply, String> {
    let mut request = client
        .request(method, url)
        .header("authorization", format!("Bearer {key}"));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(|e| format!("{e:?}"))?;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Reply { status, body })
}

async fn get(client: &reqwest::Client, api: &Api, path: &str) -> Result<Reply, String> {
    call(
        client,
        reqwest::Method::GET,
        format!("{}{path}", api.base()),
        &api.storefront,
        None,
    )
    .await
}

async fn post(
    client: &reqwest::Client,
    api: &Api,
    path: &str,
    body: &Value,
) -> Result<Reply, String> {
    call(
        client,
        reqwest::Method::POST,
        format!("{}{path}", api.base()),
        &api.storefront,
        Some(body),
    )
    .await
}

/// Creates `count` users, each with one address; returns `(user_id, address_id)` pairs.
async fn seed_shoppers(api: &Api, prefix: &str, count: usize) -> Vec<(String, i64)> {
    let client = http_client();
    let mut shoppers = Vec::new();
    for i in 0..count {
        let user = format!("{prefix}_{i}");
        let reply = post(
            &client,
            api,
            "/users/add",
            &json!({"id": user, "firstName": "Ada", "lastName": "Llama", "email": format!("{user}@example.com")}),
        )
        .await
        .expect("user add answers");
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let reply = post(
            &client,
            api,
            "/users/addresses/add",
            &json!({"street": "1 Pass", "city": "Cusco", "state": "Cusco", "country": "PE", "zipCode": "08000", "userId": user}),
        )
        .await
        .expect("address add answers");
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let address = reply.body["id"].as_i64().expect("address id");
        shoppers.push((user, address));
    }
    shoppers
}

fn checkout_body(user: &str, address: i64, status: &str) -> Value {
    json!({
        "order": {"user_id": user, "address_id": address, "total_price": 61.5, "status": status},
        "items": [
            {"product_id": 1, "quantity": 1},
            {"product_id": 2, "quantity": 2},
            {"product_id": 3, "quantity": 3}
        ]
    })
}

/// The sum of a Prometheus counter's samples whose labels contain `label`.
async fn metric_sum(api: &Api, name: &str, label: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", api.base()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The invariants of the write path, checked in SQL: every order has exactly `items` items and
/// exactly one `order_created` outbox row (with those items), no outbox row names a missing order,
/// no item lacks its order, and every cart item has exactly one `cart_item_added` row.
async fn assert_no_partial_writes(pool: &PgPool, items: i64) {
    let checks = [
        (
            "orders without exactly the checkout's items",
            format!(
                "SELECT count(*) FROM orders o \
                 WHERE (SELECT count(*) FROM order_items i WHERE i.order_id = o.id) <> {items}"
            ),
        ),
        (
            "orders without exactly one order_created outbox row",
            "SELECT count(*) FROM orders o WHERE (SELECT count(*) FROM outbox x \
             WHERE x.event_type = 'order_created' AND (x.payload->'order'->>'id')::bigint = o.id) <> 1"
                .to_owned(),
        ),
        (
            "order_created outbox rows whose order does not exist",
            "SELECT count(*) FROM outbox x WHERE x.event_type = 'order_created' AND NOT EXISTS \
             (SELECT 1 FROM orders o WHERE o.id = (x.payload->'order'->>'id')::bigint)"
                .to_owned(),
        ),
        (
            "order_created outbox rows without the checkout's items",
            format!(
                "SELECT count(*) FROM outbox WHERE event_type = 'order_created' \
                 AND json_array_length(payload->'order_items') <> {items}"
            ),
        ),
        (
            "orphan order items",
            "SELECT count(*) FROM order_items i \
             WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = i.order_id)"
                .to_owned(),
        ),
        (
            "cart items without exactly one cart_item_added outbox row",
            "SELECT count(*) FROM cart_items c WHERE (SELECT count(*) FROM outbox x \
             WHERE x.event_type = 'cart_item_added' AND (x.payload->'cart_item'->>'id')::bigint = c.id) <> 1"
                .to_owned(),
        ),
    ];
    for (what, sql) in checks {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .expect("consistency query");
        assert_eq!(count, 0, "{what}: {count}");
    }
}

async fn ids_in(pool: &PgPool, table: &str) -> HashSet<i64> {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT id FROM {table}")))
        .fetch_all(pool)
        .await
        .expect("select ids")
        .into_iter()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Redis killed mid-load.

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    async fn start(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "this test needs `redis-server` on PATH (apt-get install redis-server; .ci/run \
                     installs it): {error}"
                )
            });
        let server = RedisServer { child, port };
        wait_until(
            Duration::from_secs(10),
            POLL,
            "redis-server answers PING",
            || server.command("PING"),
        )
        .await;
        server
    }

    /// Sends one inline command; true when Redis answered.
    async fn command(&self, command: &str) -> bool {
        self.reply(command).await.is_some()
    }

    async fn reply(&self, command: &str) -> Option<String> {
        let exchange = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            stream
                .write_all(format!("{command}\r\n").as_bytes())
                .await
                .ok()?;
            let mut buffer = vec![0u8; 512];
            let n = stream.read(&mut buffer).await.ok()?;
            (n > 0).then(|| String::from_utf8_lossy(&buffer[..n]).trim().to_owned())
        };
        tokio::time::timeout(Duration::from_secs(2), exchange)
            .await
            .ok()
            .flatten()
    }

    async fn dbsize(&self) -> i64 {
        self.reply("DBSIZE")
            .await
            .and_then(|reply| reply.strip_prefix(':').and_then(|n| n.parse().ok()))
            .unwrap_or(-1)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_load_costs_no_read_and_caching_resumes_after_restart() {
    let redis_port = free_port();
    let mut redis = RedisServer::start(redis_port).await;
    let db = TestDb::new();
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let api = Api::start(&db, free_port(), &[("REDIS_URL", &redis_url)]).await;
    let client = http_client();

    // The expected bodies, read once (and cached in Redis).
    let mut paths: Vec<String> = (1..=25).map(|id| format!("/products/get/{id}")).collect();
    paths.extend(
        [
            "/products/all",
            "/products/search/mug",
            "/products/hero",
            "/products/category/1",
            "/categories/all",
            "/categories/subcategories/all",
        ]
        .map(str::to_owned),
    );
    let mut expected = HashMap::new();
    for path in &paths {
        let reply = get(&client, &api, path).await.expect("warm-up read");
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        expected.insert(path.clone(), reply.body);
    }
    assert!(redis.dbsize().await > 0, "reads were not cached in Redis");
    let hits_before = metric_sum(&api, "cache_lookups_total", "result=\"hit\"").await;

    // 8 clients read for 3 s; Redis is SIGKILLed after 1 s.
    let expected = Arc::new(expected);
    let paths = Arc::new(paths);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..8usize {
        let (client, expected, paths, stop, reads) = (
            client.clone(),
            expected.clone(),
            paths.clone(),
            stop.clone(),
            reads.clone(),
        );
        let base = api.base();
        let key = api.storefront.clone();
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let path = &paths[i % paths.len()];
                i += 7;
                match call(
                    &client,
                    reqwest::Method::GET,
                    format!("{base}{path}"),
                    &key,
                    None,
                )
                .await
                {
                    Ok(reply) if reply.status == 200 && reply.body == expected[path] => {}
                    other => failures.push(format!("{path}: {other:?}")),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.kill();
    let reads_at_kill = reads.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(
            tokio::time::timeout(REQUEST_TIMEOUT, worker)
                .await
                .expect("a reader hung")
                .expect("reader task"),
        );
    }
    let total = reads.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {total} reads failed while Redis died, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(
        total > reads_at_kill + 16,
        "too few reads after the kill ({reads_at_kill} → {total}) to prove anything"
    );
    let errors = metric_sum(&api, "cache_errors_total", "").await;
    assert!(
        errors > 0.0,
        "no cache error counted: did the reads really go through a dead Redis?"
    );
    let ready = get(&client, &api, "/readyz").await.expect("readyz answers");
    assert_eq!(
        ready.status, 200,
        "a Redis outage must degrade, not fail readiness: {:?}",
        ready.body
    );

    // Redis comes back (empty) on the same port: keys reappear and lookups hit again.
    let redis = RedisServer::start(redis_port).await;
    assert_eq!(
        redis.dbsize().await,
        0,
        "the restarted Redis should start empty"
    );
    let hits_during_outage = metric_sum(&api, "cache_lookups_total", "result=\"hit\"").await;
    assert!(hits_during_outage >= hits_before);
    wait_until(
        Duration::from_secs(15),
        POLL,
        "cache keys reappear in the restarted Redis and lookups hit",
        || async {
            for path in ["/products/all", "/products/get/7", "/categories/all"] {
                let reply = get(&client, &api, path).await.expect("read answers");
                assert_eq!(reply.status, 200);
                assert_eq!(reply.body, expected[path]);
            }
            redis.dbsize().await > 0
                && metric_sum(&api, "cache_lookups_total", "result=\"hit\"").await
                    > hits_during_outage
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. PostgreSQL connection loss.

#[derive(Default)]
struct WriteOutcomes {
    ok: usize,
    unavailable: usize,
    bad: Vec<String>,
    orders: Vec<i64>,
    cart_items: Vec<i64>,
}

fn classify(
    outcomes: &mut WriteOutcomes,
    what: &str,
    result: Result<Reply, String>,
) -> Option<Value> {
    match result {
        Ok(reply) if reply.status == 200 => {
            outcomes.ok += 1;
            Some(reply.body)
        }
        // `/readyz` answers its own shape: `{"status":"unavailable",...}` while PostgreSQL fails.
        Ok(reply)
            if reply.status == 503
                && (reply.body["code"] == "unavailable"
                    || reply.body["status"] == "unavailable") =>
        {
            outcomes.unavailable += 1;
            None
        }
        other => {
            outcomes.bad.push(format!("{what}: {other:?}"));
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_database_backends_cost_at_most_clean_503s_and_no_partial_writes() {
    let db = TestDb::new();
    let mut api = Api::start(&db, free_port(), &[("DATABASE_POOL_SIZE", "8")]).await;
    let shoppers = seed_shoppers(&api, "pgloss", 8).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (worker, (user, address)) in shoppers.iter().cloned().enumerate() {
        let stop = stop.clone();
        let base = api.base();
        let key = api.storefront.clone();
        workers.push(tokio::spawn(async move {
            let client = http_client();
            let mut outcomes = WriteOutcomes::default();
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let product = 1 + (worker + round) % 25;
                let add = json!({"product_id": product, "quantity": 1, "user_id": user});
                let result = call(
                    &client,
                    reqwest::Method::POST,
                    format!("{base}/cart/add"),
                    &key,
                    Some(&add),
                )
                .await;
                if let Some(body) = classify(&mut outcomes, "cart add", result) {
                    outcomes.cart_items.push(body["id"].as_i64().unwrap_or(-1));
                }
                let checkout = checkout_body(&user, address, &format!("pgloss-{worker}-{round}"));
                let result = call(
                    &client,
                    reqwest::Method::POST,
                    format!("{base}/orders/detailed/add"),
                    &key,
                    Some(&checkout),
                )
                .await;
                if let Some(body) = classify(&mut outcomes, "checkout", result) {
                    outcomes
                        .orders
                        .push(body["order"]["id"].as_i64().unwrap_or(-1));
                }
                for path in [
                    format!("/cart/all/{user}"),
                    format!("/orders/detailed/all/{user}"),
                    "/readyz".to_owned(),
                ] {
                    let result = call(
                        &client,
                        reqwest::Method::GET,
                        format!("{base}{path}"),
                        &key,
                        None,
                    )
                    .await;
                    classify(&mut outcomes, &path, result);
                }
            }
            outcomes
        }));
    }

    // Terminate every backend of the API's database five times, 600 ms apart, under load.
    let mut admin = PgConnection::connect(&format!("{}/postgres", server_url()))
        .await
        .expect("admin connection");
    let mut terminated = 0i64;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()) AS t",
        )
        .bind(&db.name)
        .fetch_one(&mut admin)
        .await
        .expect("terminate backends");
        terminated += killed;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::Relaxed);

    let mut all = WriteOutcomes::default();
    for worker in workers {
        let outcomes = tokio::time::timeout(REQUEST_TIMEOUT * 2, worker)
            .await
            .expect("a client hung: some request never completed")
            .expect("client task");
        all.ok += outcomes.ok;
        all.unavailable += outcomes.unavailable;
        all.bad.extend(outcomes.bad);
        all.orders.extend(outcomes.orders);
        all.cart_items.extend(outcomes.cart_items);
    }
    assert!(
        terminated > 0,
        "no backend was terminated: the test proved nothing"
    );
    assert!(
        all.bad.is_empty(),
        "{} responses were neither 200 nor a clean 503 ({} ok, {} 503), e.g. {:?}{}",
        all.bad.len(),
        all.ok,
        all.unavailable,
        &all.bad[..all.bad.len().min(3)],
        api.logs()
    );
    assert!(!all.orders.is_empty() && !all.cart_items.is_empty());
    eprintln!(
        "pg loss: {terminated} backends terminated; {} ok, {} clean 503",
        all.ok, all.unavailable
    );

    // The pool recovers within a few seconds: reads and writes answer 200 again.
    let client = http_client();
    let (user, address) = shoppers[0].clone();
    wait_until(Duration::from_secs(5), POLL, "the API serves reads and writes again", || async {
        let ready = get(&client, &api, "/readyz").await;
        let read = get(&client, &api, "/orders/all/pgloss_0").await;
        let write = post(&client, &api, "/cart/add", &json!({"product_id": 4, "quantity": 1, "user_id": user})).await;
        matches!((ready, read, write), (Ok(a), Ok(b), Ok(c)) if a.status == 200 && b.status == 200 && c.status == 200)
    })
    .await;
    let reply = post(
        &client,
        &api,
        "/orders/detailed/add",
        &checkout_body(&user, address, "after"),
    )
    .await
    .expect("checkout answers");
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    // No acknowledged write is lost and nothing was half-written.
    let pool = db.pool().await;
    let orders = ids_in(&pool, "orders").await;
    let cart_items = ids_in(&pool, "cart_items").await;
    for id in &all.orders {
        assert!(orders.contains(id), "acknowledged order {id} is missing");
    }
    for id in &all.cart_items {
        assert!(
            cart_items.contains(id),
            "acknowledged cart item {id} is missing"
        );
    }
    assert_no_partial_writes(&pool, 3).await;
    pool.close().await;
}

// ---------------------------------------------------------------------------------------------
// 3. SIGKILL during 200 concurrent checkouts.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_200_concurrent_checkouts_leaves_whole_orders_or_none() {
    let db = TestDb::new();
    let port = free_port();
    let mut api = Api::start(&db, port, &[]).await;
    let shoppers = seed_shoppers(&api, "crash", 20).await;

    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let answered = Arc::new(AtomicUsize::new(0));
    let mut requests = Vec::new();
    for i in 0..200usize {
        let (user, address) = shoppers[i % shoppers.len()].clone();
        let (client, answered) = (client.clone(), answered.clone());
        let url = format!("{}/orders/detailed/add", api.base());
        let key = api.storefront.clone();
        requests.push(tokio::spawn(async move {
            let body = checkout_body(&user, address, &format!("crash-{i}"));
            let result = call(&client, reqwest::Method::POST, url, &key, Some(&body)).await;
            if matches!(&result, Ok(reply) if reply.status == 200) {
                answered.fetch_add(1, Ordering::SeqCst);
            }
            (i, result)
        }));
    }
    // SIGKILL once the first checkouts were answered, while the rest are in flight.
    wait_until(
        Duration::from_secs(30),
        POLL,
        "the first checkouts are answered",
        || {
            let answered = answered.clone();
            async move { answered.load(Ordering::SeqCst) >= 40 }
        },
    )
    .await;
    api.kill();
    let killed_after = answered.load(Ordering::SeqCst);

    let mut acknowledged = HashMap::new();
    let mut unanswered = 0;
    let mut bad = Vec::new();
    for request in requests {
        let (i, result) = tokio::time::timeout(REQUEST_TIMEOUT * 2, request)
            .await
            .expect("a checkout hung after the kill")
            .expect("request task");
        match result {
            Ok(reply) if reply.status == 200 => {
                acknowledged.insert(
                    format!("crash-{i}"),
                    reply.body["order"]["id"].as_i64().unwrap_or(-1),
                );
            }
            Ok(reply) if reply.status == 503 && reply.body["code"] == "unavailable" => {}
            Ok(reply) => bad.push(format!("crash-{i}: {} {}", reply.status, reply.body)),
            Err(_) => unanswered += 1,
        }
    }
    assert!(
        bad.is_empty(),
        "unexpected answers before the kill: {bad:?}"
    );
    assert!(
        unanswered > 0,
        "every checkout was answered before the SIGKILL ({killed_after} at the kill): nothing was in flight"
    );

    // Restart on the same database and port; the API must come up and serve.
    let api = Api::start(&db, port, &[]).await;
    let pool = db.pool().await;
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, status FROM orders WHERE status LIKE 'crash-%'")
            .fetch_all(&pool)
            .await
            .expect("orders");
    let stored: HashMap<String, i64> = rows
        .iter()
        .map(|(id, status)| (status.clone(), *id))
        .collect();
    assert_eq!(stored.len(), rows.len(), "a checkout was stored twice");
    for (status, id) in &acknowledged {
        assert_eq!(
            stored.get(status),
            Some(id),
            "acknowledged order {status} (id {id}) is missing"
        );
    }
    assert_no_partial_writes(&pool, 3).await;
    eprintln!(
        "sigkill: {} acknowledged, {unanswered} cut off, {} orders stored",
        acknowledged.len(),
        stored.len()
    );

    // The restarted API reads the survivors whole and takes new checkouts.
    let client = http_client();
    for id in stored.values().take(20) {
        let reply = get(&client, &api, &format!("/orders/detailed/get/{id}"))
            .await
            .expect("read answers");
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(
            reply.body["items"].as_array().map(Vec::len),
            Some(3),
            "{:?}",
            reply.body
        );
    }
    let (user, address) = shoppers[0].clone();
    let reply = post(
        &client,
        &api,
        "/orders/detailed/add",
        &checkout_body(&user, address, "after-restart"),
    )
    .await
    .expect("checkout answers");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    pool.close().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Hostile input.

/// A raw HTTP/1.1 exchange: writes `request` (ignoring write errors: the server may answer and close
/// early) and reads until the server closes or `limit` passes. Returns the status (0 when none) and
/// the decoded body.
async fn raw(port: u16, request: &[u8], limit: Duration) -> (u16, Vec<u8>) {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let _ = stream.write_all(request).await;
        let mut response = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buffer[..n]),
            }
        }
        response
    };
    let response = tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| panic!("no complete answer within {limit:?}"));
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> (u16, Vec<u8>) {
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, response.to_vec());
    };
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16)
                .unwrap_or(0);
            if size == 0 || rest.len() < line_end + 2 + size {
                break;
            }
            decoded.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[(line_end + 4 + size).min(rest.len())..];
        }
        body = decoded;
    }
    (status, body)
}

fn request_bytes(method: &str, path: &[u8], key: &str, extra: &[u8], body: &[u8]) -> Vec<u8> {
    let mut request = Vec::new();
    request.extend_from_slice(method.as_bytes());
    request.push(b' ');
    request.extend_from_slice(path);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    request.extend_from_slice(format!("Authorization: Bearer {key}\r\n").as_bytes());
    if !body.is_empty() {
        request.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    request.extend_from_slice(extra);
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    request
}

fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            format!(
                "<not JSON: {}>",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        })
}

/// A well-behaved client still gets the right answer, promptly, and the process is alive.
async fn assert_still_serving(api: &mut Api, after: &str) {
    assert!(
        api.is_running(),
        "the API died after {after}: {}",
        api.logs()
    );
    let started = Instant::now();
    let (status, body) = raw(
        api.port,
        &request_bytes("GET", b"/products/get/1", &api.storefront, b"", b""),
        Duration::from_secs(5),
    )
    .await;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(status, 200, "after {after}: {body}");
    assert_eq!(body["id"], 1, "after {after}: {body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "after {after}: a normal request took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_gets_clean_4xx_and_the_server_keeps_answering() {
    let db = TestDb::new();
    let mut api = Api::start(&db, free_port(), &[]).await;
    let port = api.port;
    let key = api.storefront.clone();
    let quick = Duration::from_secs(5);
    let cart_user =
        json!({"id": "hostile", "firstName": "A", "lastName": "B", "email": "h@example.com"});
    let reply = post(&http_client(), &api, "/users/add", &cart_user)
        .await
        .expect("user add");
    assert_eq!(reply.status, 200);

    // Oversized bodies: declared (answered before the body is read) and streamed (chunked).
    let mut head = request_bytes(
        "POST",
        b"/cart/add",
        &key,
        b"Content-Type: application/json\r\n",
        b"",
    );
    head.truncate(head.len() - 2);
    head.extend_from_slice(b"Content-Length: 2097152\r\n\r\n");
    let (status, body) = raw(port, &head, quick).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (413, "invalid_argument"),
        "declared 2 MiB body"
    );
    assert_still_serving(&mut api, "a declared 2 MiB body").await;

    let mut chunked = request_bytes(
        "POST",
        b"/cart/add",
        &key,
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
        b"",
    );
    for _ in 0..32 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 64 * 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw(port, &chunked, quick).await;
    // The server answers 413 once 1 MiB was read and closes; a client still writing may see the
    // connection reset instead of the answer (status 0). Never anything else.
    assert!(
        status == 0 || (status == 413 && error_code(&body) == "invalid_argument"),
        "streamed 2 MiB body: {status} {}",
        String::from_utf8_lossy(&body)
    );
    assert_still_serving(&mut api, "a streamed 2 MiB body").await;

    // Deeply nested and huge JSON, invalid UTF-8 in the body.
    for (what, body) in [
        ("100k nested arrays", vec![b'['; 100_000]),
        ("100k nested objects", b"{\"a\":".repeat(100_000)),
        ("a 1000 KiB JSON array", {
            let mut huge = b"[".to_vec();
            huge.extend(std::iter::repeat_n(b"1,".as_slice(), 500_000).flatten());
            huge.extend_from_slice(b"1]");
            huge
        }),
        ("a 1000 KiB string", {
            let mut huge = b"{\"product_id\":\"".to_vec();
            huge.extend(std::iter::repeat_n(b'x', 1_000_000));
            huge.extend_from_slice(b"\"}");
            huge
        }),
        (
            "invalid UTF-8",
            b"{\"product_id\":1,\"quantity\":1,\"user_id\":\"\xff\xfe\"}".to_vec(),
        ),
        ("invalid UTF-8 in a key", b"{\"\xc3\x28\":1}".to_vec()),
    ] {
        let started = Instant::now();
        let (status, response) = raw(
            port,
            &request_bytes("POST", b"/cart/add", &key, b"", &body),
            quick,
        )
        .await;
        assert_eq!(
            (status, error_code(&response).as_str()),
            (400, "invalid_argument"),
            "{what}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what} took {:?}",
            started.elapsed()
        );
        assert_still_serving(&mut api, what).await;
    }

    // Invalid UTF-8 in the path: percent-encoded and raw bytes.
    for path in [
        b"/products/search/%FF%FE".as_slice(),
        b"/products/get/%C3%28",
        b"/users/get/%80",
        b"/products/search/\xff\xfe",
    ] {
        let (status, _) = raw(port, &request_bytes("GET", path, &key, b"", b""), quick).await;
        assert!(
            matches!(status, 400 | 404),
            "{}: {status}",
            String::from_utf8_lossy(path)
        );
        assert_still_serving(&mut api, &format!("path {}", String::from_utf8_lossy(path))).await;
    }

    // SQL and LIKE metacharacters in searches and ids: literal, harmless.
    let client = http_client();
    for query in [
        "'; DROP TABLE products; --",
        "%",
        "_",
        "\\",
        "%%",
        "_%\\'",
        "\" OR 1=1 --",
        "mug'--",
    ] {
        let encoded: String = query.bytes().map(|b| format!("%{b:02X}")).collect();
        let reply = get(&client, &api, &format!("/products/search/{encoded}"))
            .await
            .expect("search answers");
        assert!(
            matches!(reply.status, 200 | 400 | 404),
            "search {query:?}: {reply:?}"
        );
        if reply.status == 200 {
            // A metacharacter matches itself only: no seed product contains these.
            assert_eq!(
                reply.body["data"],
                json!([]),
                "search {query:?} matched: {}",
                reply.body
            );
        }
        let reply = get(&client, &api, &format!("/products/get/{encoded}"))
            .await
            .expect("get answers");
        assert_eq!(reply.status, 400, "id {query:?}: {reply:?}");
        let reply = get(&client, &api, &format!("/users/get/{encoded}"))
            .await
            .expect("get answers");
        assert_eq!(reply.status, 404, "user {query:?}: {reply:?}");
        let reply = get(&client, &api, &format!("/cart/all/{encoded}"))
            .await
            .expect("cart answers");
        assert_eq!(
            (reply.status, &reply.body),
            (200, &json!({"data": []})),
            "cart of {query:?}"
        );
    }
    let pool = db.pool().await;
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&pool)
        .await
        .expect("products intact");
    assert_eq!(products, 25);
    let reply = get(&client, &api, "/products/all")
        .await
        .expect("products answer");
    assert_eq!(reply.body["data"].as_array().map(Vec::len), Some(25));
    pool.close().await;
    assert_still_serving(&mut api, "metacharacters").await;

    // 10k-character path segments: a quick 4xx.
    let long = "a".repeat(10_000);
    let digits = "9".repeat(10_000);
    for path in [
        format!("/products/search/{long}"),
        format!("/products/get/{digits}"),
        format!("/users/get/{long}"),
        format!("/{long}"),
        format!("/products/get/1/{long}"),
    ] {
        let started = Instant::now();
        let (status, body) = raw(
            port,
            &request_bytes("GET", path.as_bytes(), &key, b"", b""),
            quick,
        )
        .await;
        assert!(
            matches!(status, 400 | 404 | 414),
            "{}…: {status}",
            &path[..30]
        );
        assert!(error_code(&body) != "internal", "{}…", &path[..30]);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{}… took {:?}",
            &path[..30],
            started.elapsed()
        );
        assert_still_serving(&mut api, "a 10k path segment").await;
    }

    // Header floods: many headers, one huge header.
    let many: Vec<u8> = (0..500)
        .flat_map(|i| format!("X-Flood-{i}: {i}\r\n").into_bytes())
        .collect();
    let (status, _) = raw(
        port,
        &request_bytes("GET", b"/products/get/1", &key, &many, b""),
        quick,
    )
    .await;
    assert!(matches!(status, 400 | 431), "500 headers: {status}");
    assert_still_serving(&mut api, "500 headers").await;
    let huge = format!("X-Huge: {}\r\n", "h".repeat(64 * 1024));
    let (status, _) = raw(
        port,
        &request_bytes("GET", b"/products/get/1", &key, huge.as_bytes(), b""),
        quick,
    )
    .await;
    assert!(matches!(status, 400 | 431), "a 64 KiB header: {status}");
    assert_still_serving(&mut api, "a 64 KiB header").await;
    // Large but sane headers (a big cookie or token) still pass.
    let large = format!("X-Large: {}\r\n", "l".repeat(16 * 1024));
    let (status, _) = raw(
        port,
        &request_bytes("GET", b"/products/get/1", &key, large.as_bytes(), b""),
        quick,
    )
    .await;
    assert_eq!(status, 200, "a 16 KiB header");
    // The limit is the whole head's 64 KiB, whatever the read buffer's size when it arrives.
    let near = format!("X-Large: {}\r\n", "l".repeat(60 * 1024));
    let (status, _) = raw(
        port,
        &request_bytes("GET", b"/products/get/1", &key, near.as_bytes(), b""),
        quick,
    )
    .await;
    assert_eq!(status, 200, "a 60 KiB header");
}

/// Opens a connection that sends `request` one byte per second (or nothing at all when empty) and
/// returns how long the server kept it open, or `None` when it still was open after `limit`.
async fn slow_client(port: u16, request: Vec<u8>, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let mut sent = 0;
    let mut buffer = [0u8; 1024];
    while started.elapsed() < limit {
        // Wait a second for the server to close (or answer, e.g. 408), then send one more byte.
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => {}
        }
        if sent < request.len() {
            if stream.write_all(&request[sent..=sent]).await.is_err() {
                return Some(started.elapsed());
            }
            sent += 1;
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off_while_normal_clients_are_served() {
    let db = TestDb::new();
    let mut api = Api::start(
        &db,
        free_port(),
        &[("PLAMATIO_HEADER_READ_TIMEOUT_MS", "2000")],
    )
    .await;
    let port = api.port;
    let request = request_bytes(
        "GET",
        b"/products/all",
        &api.storefront,
        b"X-Slow: 1\r\n",
        b"",
    );
    let post = request_bytes("POST", b"/cart/add", &api.storefront, b"", b"{}");
    // 50 slowloris connections (headers one byte per second), 10 that send nothing, and 20 whose
    // first bytes could still be HTTP/2's preface while they trickle in: 10 HTTP/1 `POST`s and
    // 10 prefaces.
    let limit = Duration::from_secs(12);
    let mut slow = Vec::new();
    for i in 0..80 {
        let request = match i {
            0..50 => request.clone(),
            50..60 => Vec::new(),
            60..70 => post.clone(),
            _ => HTTP2_PREFACE.to_vec(),
        };
        slow.push(tokio::spawn(slow_client(port, request, limit)));
    }
    // Meanwhile a normal client is answered promptly.
    let mut normal = 0;
    let attack = Instant::now();
    while attack.elapsed() < Duration::from_secs(4) {
        assert_still_serving(&mut api, "slow clients connected").await;
        normal += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut held = Vec::new();
    let mut longest = Duration::ZERO;
    for (i, task) in slow.into_iter().enumerate() {
        match tokio::time::timeout(limit + Duration::from_secs(5), task)
            .await
            .expect("a slow client task hung")
            .expect("slow client task")
        {
            Some(open) => longest = longest.max(open),
            None => held.push(i),
        }
    }
    assert!(
        held.is_empty(),
        "{} of 80 slow connections were still open after {limit:?} (header read timeout 2 s): {held:?}",
        held.len()
    );
    assert!(
        longest < Duration::from_secs(6),
        "a slow connection stayed open {longest:?}"
    );
    assert!(normal >= 10);
    eprintln!(
        "slowloris: 80 slow connections closed, the longest after {longest:?}; {normal} normal requests served"
    );
    assert_still_serving(&mut api, "slow clients").await;
}

/// What an HTTP/2 client with prior knowledge (h2c) sends first (RFC 9113, 3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads one HTTP/2 frame header (9 bytes) or the first 9 bytes of an HTTP/1 answer.
async fn first_nine_bytes(stream: &mut TcpStream) -> [u8; 9] {
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .expect("the server answered within 5 s")
        .expect("9 bytes");
    head
}

/// The server tells HTTP/2 with prior knowledge from HTTP/1.1 by the connection's first bytes,
/// also when they arrive in pieces that could still be either.
#[tokio::test]
async fn http2_with_prior_knowledge_and_http1_are_told_apart_by_the_first_bytes() {
    let db = TestDb::new();
    let api = Api::start(&db, free_port(), &[]).await;
    let url = format!("http://127.0.0.1:{}", api.port);

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("an h2c client");
    let response = h2
        .get(format!("{url}/products/all"))
        .bearer_auth(&api.storefront)
        .send()
        .await
        .expect("an HTTP/2 answer");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let products: Value = response.json().await.expect("JSON");
    assert_eq!(products["data"].as_array().map(Vec::len), Some(25));

    // The preface in two writes: the server still speaks HTTP/2 (its first frame is SETTINGS).
    let mut stream = TcpStream::connect(("127.0.0.1", api.port)).await.unwrap();
    stream.write_all(&HTTP2_PREFACE[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(&HTTP2_PREFACE[5..]).await.unwrap();
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap(); // an empty SETTINGS frame
    let head = first_nine_bytes(&mut stream).await;
    assert_eq!(head[3], 4, "the first frame is SETTINGS: {head:?}");

    // An HTTP/1 request whose first byte is also the preface's: answered as HTTP/1.1.
    let mut stream = TcpStream::connect(("127.0.0.1", api.port)).await.unwrap();
    let request = request_bytes("POST", b"/cart/add", &api.storefront, b"", b"{}");
    stream.write_all(&request[..1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(&request[1..]).await.unwrap();
    let head = first_nine_bytes(&mut stream).await;
    assert_eq!(&head, b"HTTP/1.1 ", "{}", String::from_utf8_lossy(&head));
}

/// The real client IP still reaches the rate limiter (ConnectInfo): with 127.0.0.1 trusted, each
/// forwarded IP gets its own budget; one IP past its budget gets 429.
#[tokio::test]
async fn the_peer_address_still_reaches_the_rate_limiter() {
    let db = TestDb::new();
    let api = Api::start(
        &db,
        free_port(),
        &[
            ("PLAMATIO_RATE_LIMIT_PER_MINUTE", "3"),
            ("PLAMATIO_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    let client = http_client();
    let send = |ip: String| {
        client
            .get(format!("{}/products/get/1", api.base()))
            .header("authorization", format!("Bearer {}", api.storefront))
            .header("x-forwarded-for", ip)
            .send()
    };
    for i in 0..6 {
        let response = send(format!("10.0.0.{i}")).await.expect("answer");
        assert_eq!(
            response.status(),
            200,
            "a fresh forwarded IP was limited: the peer address is lost"
        );
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            send("10.9.9.9".into())
                .await
                .expect("answer")
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
}

#[test]
fn the_header_read_timeout_defaults_to_ten_seconds() {
    let config = plamatio_api::config::ServeConfig::from_defaults();
    assert_eq!(config.header_read_timeout(), Duration::from_secs(10));
}

/// SIGTERM still drains: a request whose body is still arriving completes with 200, then the
/// process exits 0 (bounded).
#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish_then_exits() {
    let db = TestDb::new();
    let mut api = Api::start(&db, free_port(), &[]).await;
    let user =
        json!({"id": "graceful", "firstName": "A", "lastName": "B", "email": "g@example.com"});
    let body = serde_json::to_vec(&user).expect("json");
    let request = request_bytes("POST", b"/users/add", &api.storefront, b"", &body);
    let (head, rest) = request.split_at(request.len() - 10);
    let mut stream = TcpStream::connect(("127.0.0.1", api.port))
        .await
        .expect("connect");
    stream.write_all(head).await.expect("send the head");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signal = Command::new("kill")
        .args(["-TERM", &api.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(signal.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stream
        .write_all(rest)
        .await
        .expect("send the rest of the body");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the in-flight request was answered within 10 s")
        .expect("read the answer");
    let (status, answer) = parse_response(&response);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = api.child.try_wait() {
            assert!(status.success(), "exit status {status}: {}", api.logs());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no exit within 20 s of SIGTERM: {}",
            api.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
