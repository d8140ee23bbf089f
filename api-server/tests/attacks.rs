//! The attack suite of issue #16 (HTTP edge): each test performs one attack against a store built
//! exactly as `plamatio-api serve` builds it (or the binary itself), on real PostgreSQL and Redis, and
//! asserts that it fails. The storefront key is public (it ships in the browser bundle) and user ids
//! are not secret, so every attacker here holds both.

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use common::identity::{AUDIENCE, ISSUER, Jwks, SigningKey, generate, now, token_for, token_with};
use common::{TestApp, TestResponse, new_database_name, serve_config};
use jsonwebtoken::Algorithm;
use plamatio_api::http::identity::UserTokens;
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_plamatio-api");

// ---------------------------------------------------------------------------------------------
// Helpers

/// A store verifying user tokens against `jwks_url` (`mode`: `optional` or `required`), with
/// `user_a` and `user_b`, each with one address (ids 1 and 2).
async fn store_with_user_auth(jwks_url: &str, mode: &str, extra_flags: &[&str]) -> TestApp {
    let mut flags = vec![
        "--user-auth",
        mode,
        "--user-jwks-url",
        jwks_url,
        "--user-jwt-issuer",
        ISSUER,
        "--user-jwt-audience",
        AUDIENCE,
    ];
    flags.extend_from_slice(extra_flags);
    let app = TestApp::serving(&new_database_name(), &flags).await;
    sqlx::raw_sql(
        "INSERT INTO users (id, first_name, last_name, email) VALUES
             ('user_a', 'Ada', 'A', 'a@example.com'), ('user_b', 'Bo', 'B', 'b@example.com');
         INSERT INTO addresses (street, city, state, country, zip_code, user_id) VALUES
             ('1 A St', 'T', 'ON', 'CA', 'A', 'user_a'), ('2 B St', 'T', 'ON', 'CA', 'B', 'user_b');",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    app
}

/// A JWKS endpoint publishing one fresh RSA key.
async fn identity_provider() -> (Jwks, String, SigningKey) {
    let jwks = Jwks::default();
    let key = generate("rsa-1", Algorithm::RS256);
    jwks.publish(&key);
    let url = jwks.serve().await;
    (jwks, url, key)
}

async fn count_rows(app: &TestApp, sql: &'static str, user: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// `GET /core/info` arriving from `peer`, with `X-Forwarded-For` if given.
async fn from_peer(app: &TestApp, peer: &str, forwarded_for: Option<&str>) -> TestResponse {
    let mut builder = Request::get("/core/info");
    if let Some(forwarded) = forwarded_for {
        builder = builder.header("x-forwarded-for", forwarded);
    }
    let mut request = builder.body(Body::empty()).unwrap();
    let address = SocketAddr::new(peer.parse().unwrap(), 40_000);
    request.extensions_mut().insert(ConnectInfo(address));
    app.send_request(request).await
}

/// What `plamatio-api serve` logs until it listens (at most 60 s), with `env` set.
fn serve_log(env: &[(&str, &str)]) -> String {
    let database = new_database_name();
    let mut child = Command::new(BINARY)
        .arg("serve")
        .env(
            "DATABASE_URL",
            format!("{}/{database}", common::server_url()),
        )
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("LOG_FORMAT", "pretty")
        .env("RUST_LOG", "info")
        .env_remove("REDIS_URL")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("PLAMATIO_API_KEYS")
        .env_remove("PLAMATIO_USER_AUTH")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the plamatio-api binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = String::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match received.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains("plamatio-api listening") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    common::drop_database(database);
    assert!(
        log.contains("plamatio-api listening"),
        "serve did not start: {log}"
    );
    log
}

// ---------------------------------------------------------------------------------------------
// Item 9: cache isolation

/// Store A caches its rows; store B, a fresh database sharing A's Redis (and A's prefix, if any),
/// asks for the same ids — as a new user of B would — and must get its own rows, never A's.
#[tokio::test]
async fn cache_entries_of_another_database_are_never_served() {
    let redis = common::redis_url();
    let shared_prefix = format!("shop-{}:", uuid::Uuid::new_v4().simple());
    for prefix in ["", shared_prefix.as_str()] {
        let flags = ["--redis-url", redis.as_str(), "--cache-prefix", prefix];
        let store_a = TestApp::serving(&new_database_name(), &flags).await;
        let store_b = TestApp::serving(&new_database_name(), &flags).await;
        sqlx::raw_sql(
            "INSERT INTO users (id, first_name, last_name, email) VALUES ('user_a', 'Ada', 'A', 'a@example.com');
             INSERT INTO cart_items (product_id, quantity, user_id) VALUES (1, 1, 'user_a'), (2, 5, 'user_a');",
        )
        .execute(&store_a.pool)
        .await
        .unwrap();
        let cart_row = store_a.get("/cart/get/2").await;
        assert_eq!(cart_row.body["user_id"], "user_a", "prefix {prefix:?}");
        assert_eq!(
            TestApp::ids(&store_a.get("/cart/all/user_a").await),
            vec![1, 2]
        );
        assert_eq!(store_a.get("/users/get/user_a").await.status, 200);
        let renamed = json!({
            "name": "Renamed in store A", "description": "A.", "category": 1, "subCategory": 2,
            "imageUrl": "https://example.com/a.png", "price": 11
        });
        assert_eq!(
            store_a
                .admin(Method::PUT, "/products/update/9", Some(&renamed))
                .await
                .status,
            200
        );
        assert_eq!(
            store_a.get("/products/get/9").await.body["name"],
            "Renamed in store A"
        );

        // store B has none of these rows
        let response = store_b.get("/cart/get/2").await;
        assert_eq!(
            response.status, 404,
            "prefix {prefix:?}: B served A's cart row {}",
            response.body
        );
        assert_eq!(
            store_b.get("/cart/all/user_a").await.body["data"],
            json!([]),
            "prefix {prefix:?}"
        );
        assert_eq!(
            store_b.get("/users/get/user_a").await.status,
            404,
            "prefix {prefix:?}"
        );
        let own_name: String = sqlx::query_scalar("SELECT name FROM products WHERE id = 9")
            .fetch_one(&store_b.pool)
            .await
            .unwrap();
        assert_eq!(
            store_b.get("/products/get/9").await.body["name"],
            own_name,
            "prefix {prefix:?}"
        );
        assert_ne!(store_a.cache_prefix, store_b.cache_prefix);
        assert!(store_a.cache_prefix.starts_with(prefix));
    }
}

/// A database dropped and created again under the same name, while Redis keeps the old entries, is
/// a new store: none of the old rows come back from the cache.
#[tokio::test]
async fn a_recreated_database_does_not_see_the_old_databases_entries() {
    let redis = common::redis_url();
    let database = new_database_name();
    let flags = ["--redis-url", redis.as_str()];
    {
        let old = TestApp::serving(&database, &flags).await;
        sqlx::raw_sql(
            "INSERT INTO users (id, first_name, last_name, email) VALUES ('user_old', 'Old', 'O', 'old@example.com');
             INSERT INTO cart_items (product_id, quantity, user_id) VALUES (1, 1, 'user_old'), (2, 2, 'user_old');",
        )
        .execute(&old.pool)
        .await
        .unwrap();
        assert_eq!(old.get("/cart/get/2").await.status, 200);
        assert_eq!(old.get("/users/get/user_old").await.status, 200);
        assert_eq!(TestApp::ids(&old.get("/cart/all/user_old").await).len(), 2);
    } // the database is dropped here; Redis keeps its entries
    let recreated = TestApp::serving(&database, &flags).await;
    assert_eq!(recreated.get("/cart/get/2").await.status, 404);
    assert_eq!(recreated.get("/users/get/user_old").await.status, 404);
    assert_eq!(
        recreated.get("/cart/all/user_old").await.body["data"],
        json!([])
    );
}

// ---------------------------------------------------------------------------------------------
// Item 3: idempotency scoped to the caller

/// User B adds to their cart with an idempotency key. User A, and a caller without a token, send
/// the same key and the same request: neither gets B's stored response.
#[tokio::test]
async fn a_stored_response_is_never_replayed_to_another_user_or_to_a_caller_without_a_token() {
    let (_jwks, url, key) = identity_provider().await;
    let token_a = token_for(&key, "user_a");
    let token_b = token_for(&key, "user_b");
    let request = json!({"product_id": 3, "quantity": 2, "user_id": "user_b"});
    for mode in ["required", "optional"] {
        let app = store_with_user_auth(&url, mode, &[]).await;
        let by_b = app
            .as_shopper_keyed(
                Some(&token_b),
                Method::POST,
                "/cart/add",
                Some(&request),
                Some("cart-b-1"),
            )
            .await;
        assert_eq!(by_b.status, 200, "{mode}: {}", by_b.body);

        let by_a = app
            .as_shopper_keyed(
                Some(&token_a),
                Method::POST,
                "/cart/add",
                Some(&request),
                Some("cart-b-1"),
            )
            .await;
        assert!(
            by_a.header("idempotent-replayed").is_none(),
            "{mode}: B's response replayed to A: {}",
            by_a.body
        );
        assert_ne!(by_a.raw, by_b.raw, "{mode}");
        assert_eq!(by_a.status, 404, "{mode}: A may not act for B");

        let anonymous = app
            .as_shopper_keyed(
                None,
                Method::POST,
                "/cart/add",
                Some(&request),
                Some("cart-b-1"),
            )
            .await;
        assert!(
            anonymous.header("idempotent-replayed").is_none(),
            "{mode}: B's response replayed without a token: {}",
            anonymous.body
        );
        assert_ne!(anonymous.raw, by_b.raw, "{mode}");
        if mode == "required" {
            anonymous.assert_error(401, "unauthenticated");
        }

        // B's own retry is still a replay
        let retry = app
            .as_shopper_keyed(
                Some(&token_b),
                Method::POST,
                "/cart/add",
                Some(&request),
                Some("cart-b-1"),
            )
            .await;
        assert_eq!(retry.header("idempotent-replayed"), Some("true"), "{mode}");
        assert_eq!(retry.raw, by_b.raw, "{mode}");
    }
}

/// An attacker who learned B's idempotency key sends it first — without a token, with a forged
/// token, with their own token and B's request, with their own token and another request. B's
/// checkout with that key still runs, once.
#[tokio::test]
async fn a_stored_401_cannot_poison_another_users_idempotency_key() {
    let (_jwks, url, key) = identity_provider().await;
    let app = store_with_user_auth(&url, "required", &[]).await;
    let token_a = token_for(&key, "user_a");
    let token_b = token_for(&key, "user_b");
    let forged = token_for(&generate("rsa-1", Algorithm::RS256), "user_b");
    let order_b =
        json!({"user_id": "user_b", "address_id": 2, "total_price": 20.5, "status": "pending"});
    let order_a =
        json!({"user_id": "user_a", "address_id": 1, "total_price": 1.5, "status": "pending"});
    let stolen_key = Some("checkout-b-42");

    let attempts = [
        (None, &order_b, 401),
        (Some(forged.as_str()), &order_b, 401),
        (Some("not.a.jwt"), &order_b, 401),
        (Some(token_a.as_str()), &order_b, 404),
        (Some(token_a.as_str()), &order_a, 422),
    ];
    for (token, body, expected) in attempts {
        let response = app
            .as_shopper_keyed(token, Method::POST, "/orders/add", Some(body), stolen_key)
            .await;
        // the last attempt reuses A's own record (stored 404) with another body: 422 for A only
        assert_eq!(response.status, expected, "{}", response.body);
    }

    let by_b = app
        .as_shopper_keyed(
            Some(&token_b),
            Method::POST,
            "/orders/add",
            Some(&order_b),
            stolen_key,
        )
        .await;
    assert_eq!(by_b.status, 200, "B's checkout was poisoned: {}", by_b.body);
    assert!(by_b.header("idempotent-replayed").is_none());
    assert_eq!(by_b.body["user_id"], "user_b");
    let orders_of_b = count_rows(
        &app,
        "SELECT count(*) FROM orders WHERE user_id = $1",
        "user_b",
    )
    .await;
    assert_eq!(orders_of_b, 1);
}

// ---------------------------------------------------------------------------------------------
// Item 7: token hygiene

#[tokio::test]
async fn a_token_that_is_not_yet_valid_is_refused() {
    let (_jwks, url, key) = identity_provider().await;
    let app = store_with_user_auth(&url, "required", &[]).await;
    let claims = |nbf: u64| json!({"sub": "user_a", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 3600, "nbf": nbf});
    let future = token_with(&key, claims(now() + 1800));
    let response = app
        .as_shopper_keyed(Some(&future), Method::GET, "/cart/all/user_a", None, None)
        .await;
    assert_eq!(
        response.assert_error(401, "unauthenticated"),
        "invalid user token"
    );
    let current = token_with(&key, claims(now() - 10));
    let response = app
        .as_shopper_keyed(Some(&current), Method::GET, "/cart/all/user_a", None, None)
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
}

/// A token of the same identity provider minted for another application (no `aud`) is not a token
/// for this store when an audience is configured.
#[tokio::test]
async fn a_token_without_the_configured_audience_is_refused() {
    let (_jwks, url, key) = identity_provider().await;
    let app = store_with_user_auth(&url, "required", &[]).await;
    let without_audience = token_with(
        &key,
        json!({"sub": "user_a", "iss": ISSUER, "exp": now() + 600}),
    );
    let response = app
        .as_shopper_keyed(
            Some(&without_audience),
            Method::GET,
            "/cart/all/user_a",
            None,
            None,
        )
        .await;
    assert_eq!(
        response.assert_error(401, "unauthenticated"),
        "invalid user token"
    );
}

/// With authorized parties configured, a token issued to another frontend (`azp`) is refused.
#[tokio::test]
async fn a_token_issued_to_another_authorized_party_is_refused() {
    let (_jwks, url, key) = identity_provider().await;
    let app = store_with_user_auth(
        &url,
        "required",
        &[
            "--user-jwt-authorized-parties",
            "https://shop.example.com, https://www.shop.example.com",
        ],
    )
    .await;
    let with_party = |azp: Option<&str>| {
        let mut claims =
            json!({"sub": "user_a", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600});
        if let Some(azp) = azp {
            claims["azp"] = json!(azp);
        }
        token_with(&key, claims)
    };
    for (azp, expected) in [
        (Some("https://evil.example"), 401),
        (None, 401),
        (Some("https://shop.example.com"), 200),
        (Some("https://www.shop.example.com"), 200),
    ] {
        let response = app
            .as_shopper_keyed(
                Some(&with_party(azp)),
                Method::GET,
                "/cart/all/user_a",
                None,
                None,
            )
            .await;
        assert_eq!(response.status, expected, "azp {azp:?}: {}", response.body);
    }
}

/// The JWKS endpoint answers with a redirect to a key set the attacker controls: the redirect is
/// not followed, so the attacker's tokens are refused.
#[tokio::test]
async fn a_jwks_redirect_to_the_attackers_keys_is_not_followed() {
    let attacker = Jwks::default();
    let attacker_key = generate("rsa-1", Algorithm::RS256);
    attacker.publish(&attacker_key);
    let attacker_url = attacker.serve().await;
    let provider = Jwks::default();
    *provider.redirect_to.lock().unwrap() = Some(attacker_url);
    let app = store_with_user_auth(&provider.serve().await, "required", &[]).await;

    let response = app
        .as_shopper_keyed(
            Some(&token_for(&attacker_key, "user_b")),
            Method::GET,
            "/cart/all/user_b",
            None,
            None,
        )
        .await;
    response.assert_error(401, "unauthenticated");
    assert!(provider.fetches.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        attacker.fetches.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

/// A JWKS answer far larger than any key set is not read into memory or used.
#[tokio::test]
async fn an_oversized_jwks_is_not_loaded() {
    let (jwks, url, key) = identity_provider().await;
    jwks.padding_bytes.store(2 * 1024 * 1024, Ordering::SeqCst);
    let app = store_with_user_auth(&url, "required", &[]).await;
    let response = app
        .as_shopper_keyed(
            Some(&token_for(&key, "user_a")),
            Method::GET,
            "/cart/all/user_a",
            None,
            None,
        )
        .await;
    response.assert_error(401, "unauthenticated");
}

/// Keys fetched over plain http can be replaced by anyone on the path: only https (or http to a
/// loopback address) is accepted, and a store configured otherwise does not start.
#[tokio::test]
async fn a_jwks_url_over_plain_http_is_refused() {
    for url in [
        "http://clerk.plamatio.test/.well-known/jwks.json",
        "http://10.0.0.8/.well-known/jwks.json",
    ] {
        let config = serve_config(
            "plamatio_never_created",
            &[
                "--user-auth",
                "required",
                "--user-jwks-url",
                url,
                "--user-jwt-issuer",
                ISSUER,
            ],
        );
        let error = UserTokens::new(&config.user_auth)
            .err()
            .unwrap_or_else(|| panic!("{url} was accepted"));
        assert!(error.to_string().contains("https"), "{error}");
    }
    let loopback = serve_config(
        "plamatio_never_created",
        &[
            "--user-auth",
            "required",
            "--user-jwks-url",
            "http://127.0.0.1:9/.well-known/jwks.json",
            "--user-jwt-issuer",
            ISSUER,
        ],
    );
    assert!(UserTokens::new(&loopback.user_auth).is_ok());
}

/// With the email claim configured, a shopper cannot register or change their profile to someone
/// else's email (which would squat it: the owner's own sign-up then answers 409).
#[tokio::test]
async fn a_shopper_cannot_give_their_user_record_another_persons_email() {
    let (_jwks, url, key) = identity_provider().await;
    let app = store_with_user_auth(&url, "required", &["--user-jwt-email-claim", "email"]).await;
    let token_c = token_with(
        &key,
        json!({"sub": "user_c", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "email": "c@example.com"}),
    );
    let token_a = token_with(
        &key,
        json!({"sub": "user_a", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "email": "a@example.com"}),
    );
    let user = |id: &str, email: &str| json!({"id": id, "firstName": "F", "lastName": "L", "email": email});

    let squat = app
        .as_shopper_keyed(
            Some(&token_c),
            Method::POST,
            "/users/add",
            Some(&user("user_c", "victim@example.com")),
            None,
        )
        .await;
    assert_eq!(
        squat.assert_error(400, "invalid_argument"),
        "email must be the email of the user token"
    );
    let takeover = app
        .as_shopper_keyed(
            Some(&token_a),
            Method::PUT,
            "/users/update",
            Some(&user("user_a", "victim@example.com")),
            None,
        )
        .await;
    takeover.assert_error(400, "invalid_argument");
    let no_claim = app
        .as_shopper_keyed(
            Some(&token_for(&key, "user_a")),
            Method::PUT,
            "/users/update",
            Some(&user("user_a", "a@example.com")),
            None,
        )
        .await;
    no_claim.assert_error(400, "invalid_argument");
    let victims: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = $1")
        .bind("victim@example.com")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(victims, 0);

    // the token's own email, in any case, works
    let own = app
        .as_shopper_keyed(
            Some(&token_c),
            Method::POST,
            "/users/add",
            Some(&user("user_c", "C@Example.com")),
            None,
        )
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
}

/// Whoever can run `serve --help` in the container (or read a CI log) sees the environment's
/// values of the settings it prints; the connection URLs carry passwords.
#[test]
fn serve_help_never_prints_credentials_from_the_environment() {
    for subcommand in ["serve", "migrate"] {
        let output = Command::new(BINARY)
            .args([subcommand, "--help"])
            .env(
                "DATABASE_URL",
                "postgres://plamatio:pg-s3cret@db.internal/plamatio",
            )
            .env("REDIS_URL", "redis://:redis-s3cret@cache.internal:6379")
            .env("KAFKA_SASL_PASSWORD", "kafka-s3cret")
            .output()
            .expect("the plamatio-api binary runs");
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("DATABASE_URL"), "{help}");
        assert!(!help.contains("s3cret"), "{subcommand} --help: {help}");
    }
}

// ---------------------------------------------------------------------------------------------
// Item 8: CORS

/// Anyone can create a Vercel project called `plamatio-frontend-evil`; its page must not be able to
/// read the API's answers with a shopper's browser.
#[tokio::test]
async fn a_lookalike_vercel_project_is_not_an_allowed_origin() {
    let app = TestApp::serving(&new_database_name(), &[]).await;
    for origin in [
        "https://plamatio-frontend-evil.vercel.app",
        "https://plamatio-frontend-git-main-attacker.vercel.app",
    ] {
        let response = app
            .send(
                Method::GET,
                "/products/all",
                Some(&format!("Bearer {}", app.storefront_key)),
                None,
                &[("origin", origin)],
            )
            .await;
        assert!(
            response.header("access-control-allow-origin").is_none(),
            "{origin} allowed"
        );
    }
    let pinned = TestApp::serving(
        &new_database_name(),
        &[
            "--cors-origins",
            "https://plamatio-frontend.vercel.app,https://plamatio-frontend-*-plamatio-team.vercel.app",
        ],
    )
    .await;
    for (origin, allowed) in [
        (
            "https://plamatio-frontend-git-main-plamatio-team.vercel.app",
            true,
        ),
        ("https://plamatio-frontend-evil.vercel.app", false),
        (
            "https://plamatio-frontend-x-attacker-team.vercel.app",
            false,
        ),
    ] {
        let response = pinned
            .send(Method::GET, "/core/info", None, None, &[("origin", origin)])
            .await;
        assert_eq!(
            response.header("access-control-allow-origin").is_some(),
            allowed,
            "{origin}"
        );
    }
}

/// Any program on a shopper's machine can serve a page on `http://localhost:3000`; such pages are
/// allowed only when the store is configured for local frontend development.
#[tokio::test]
async fn a_page_on_localhost_is_not_an_allowed_origin_unless_asked_for() {
    let production = TestApp::serving(&new_database_name(), &[]).await;
    let development = TestApp::serving(&new_database_name(), &["--cors-allow-localhost"]).await;
    for origin in ["http://localhost:3000", "http://127.0.0.1:8080"] {
        let headers = [("origin", origin)];
        let response = production
            .send(Method::GET, "/core/info", None, None, &headers)
            .await;
        assert!(
            response.header("access-control-allow-origin").is_none(),
            "{origin}"
        );
        let response = development
            .send(Method::GET, "/core/info", None, None, &headers)
            .await;
        assert_eq!(response.header("access-control-allow-origin"), Some(origin));
    }
}

#[tokio::test]
async fn credentials_are_not_allowed_cross_origin_unless_configured() {
    let origin = "https://plamatio-frontend.vercel.app";
    let preflight = [
        ("origin", origin),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization,content-type",
        ),
    ];
    let default = TestApp::serving(&new_database_name(), &[]).await;
    let simple = default
        .send(Method::GET, "/core/info", None, None, &[("origin", origin)])
        .await;
    let preflighted = default
        .send(Method::OPTIONS, "/cart/add", None, None, &preflight)
        .await;
    for response in [simple, preflighted] {
        assert_eq!(response.header("access-control-allow-origin"), Some(origin));
        assert!(
            response
                .header("access-control-allow-credentials")
                .is_none()
        );
    }
    let configured = TestApp::serving(&new_database_name(), &["--cors-credentials"]).await;
    let response = configured
        .send(Method::OPTIONS, "/cart/add", None, None, &preflight)
        .await;
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
}

// ---------------------------------------------------------------------------------------------
// Item 4: client addresses behind proxies

/// The `X-Forwarded-For` of a client's `i`-th request.
type ForwardedFor = fn(usize) -> String;

/// Behind a trusted proxy, a client writes whatever it likes to the left of the hop the proxy
/// appends. Rotating those entries must not give it fresh budgets, whatever form the proxy's own hop
/// takes, and naming another client must not spend that client's budget.
#[tokio::test]
async fn spoofed_forwarded_for_entries_cannot_escape_or_move_another_clients_bucket() {
    let app = TestApp::serving(
        &new_database_name(),
        &[
            "--trusted-proxies",
            "10.0.0.0/8",
            "--rate-limit-per-minute",
            "3",
        ],
    )
    .await;
    let proxy = "10.0.0.1";
    let cases: [(&str, ForwardedFor); 4] = [
        ("the proxy appends the address", |i| {
            format!("198.51.100.{i}, 203.0.113.66")
        }),
        ("the proxy appends address:port", |i| {
            format!("198.51.100.{i}, 203.0.113.77:{}", 50_000 + i)
        }),
        ("the proxy appends a name, not an address", |i| {
            format!("198.51.100.{i}, unknown")
        }),
        ("the proxy appends a second proxy first", |i| {
            format!("198.51.100.{i}, 203.0.113.99, 10.9.9.9")
        }),
    ];
    for (case, forwarded) in cases {
        for i in 0..3 {
            let response = from_peer(&app, proxy, Some(&forwarded(i))).await;
            assert_eq!(response.status, 200, "{case}, request {i}");
        }
        let response = from_peer(&app, proxy, Some(&forwarded(3))).await;
        assert_eq!(
            response.status, 429,
            "{case}: a spoofed entry escaped the limit"
        );
    }

    // the attacker names a victim left of a hop that is no address, over and over
    let victim = "192.0.2.50";
    for _ in 0..5 {
        from_peer(&app, proxy, Some(&format!("{victim}, _hidden"))).await;
    }
    let response = from_peer(&app, proxy, Some(victim)).await;
    assert_eq!(response.status, 200, "the victim's budget was spent");
    assert_eq!(response.header("x-ratelimit-remaining"), Some("2"));
}

/// An IPv6 client owns a whole /64: rotating the low 64 bits must not give it fresh budgets.
#[tokio::test]
async fn an_ipv6_client_cannot_escape_its_limit_by_rotating_addresses_within_its_64() {
    let app = TestApp::serving(&new_database_name(), &["--rate-limit-per-minute", "3"]).await;
    for (i, address) in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:abcd::1"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            from_peer(&app, address, None).await.status,
            200,
            "request {i}"
        );
    }
    let rotated = from_peer(&app, "2001:db8:1:2:ffff:ffff:ffff:ffff", None).await;
    assert_eq!(rotated.status, 429, "a new address in the same /64 escaped");
    let neighbour = from_peer(&app, "2001:db8:1:3::1", None).await;
    assert_eq!(neighbour.status, 200, "another /64 has its own budget");
}

// ---------------------------------------------------------------------------------------------
// Item 1 (API side): the insecure mode says so

#[test]
fn serve_warns_when_user_auth_is_off_while_a_storefront_key_is_configured() {
    let warning = "PLAMATIO_USER_AUTH is off while a storefront key is configured";
    let log = serve_log(&[("PLAMATIO_DEV_KEYS", "true")]);
    assert!(log.contains(warning), "{log}");

    let log = serve_log(&[
        ("PLAMATIO_DEV_KEYS", "true"),
        ("PLAMATIO_USER_AUTH", "required"),
        (
            "PLAMATIO_USER_JWKS_URL",
            "http://127.0.0.1:9/.well-known/jwks.json",
        ),
        ("PLAMATIO_USER_JWT_ISSUER", ISSUER),
    ]);
    assert!(!log.contains(warning), "{log}");

    let admin_only = format!(
        "admin:{}",
        plamatio_api::http::auth::digest_hex(&plamatio_api::http::auth::generate_key())
    );
    let log = serve_log(&[("PLAMATIO_API_KEYS", admin_only.as_str())]);
    assert!(!log.contains(warning), "{log}");
}
