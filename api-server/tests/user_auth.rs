//! End-user identity (`X-User-Token`): a real JWKS endpoint served by the test, RSA, EC and Ed25519
//! keys generated for it, tokens signed with them, and every user-scoped route bound to the token's
//! subject.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::Method;
use common::TestApp;
use common::identity::{AUDIENCE, ISSUER, Jwks, generate, now, token_for, token_with};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use plamatio_api::http::identity::{UserAuthConfig, UserAuthMode, UserTokens};
use serde_json::{Value, json};

async fn app_with(mode: UserAuthMode, jwks_url: &str) -> TestApp {
    let mut app = TestApp::new().await;
    let config = UserAuthConfig {
        user_auth: mode,
        user_jwks_url: Some(jwks_url.to_owned()),
        user_jwt_issuer: Some(ISSUER.to_owned()),
        user_jwt_audience: Some(AUDIENCE.to_owned()),
        ..UserAuthConfig::default()
    };
    let mut tokens = UserTokens::new(&config).unwrap();
    if let Some(tokens) = tokens.as_mut() {
        Arc::get_mut(tokens)
            .unwrap()
            .set_min_refresh_interval(Duration::from_millis(200));
    }
    let state = app.state.clone().with_user_tokens(tokens);
    let edge = plamatio_api::cli::edge_config(&plamatio_api::config::ServeConfig::from_defaults());
    app.router = plamatio_api::app(state, &edge);
    sqlx::raw_sql(
        "INSERT INTO users (id, first_name, last_name, email) VALUES
             ('user_a', 'Ada', 'A', 'a@example.com'), ('user_b', 'Bo', 'B', 'b@example.com');
         INSERT INTO addresses (street, city, state, country, zip_code, user_id) VALUES
             ('1 A St', 'T', 'ON', 'CA', 'A', 'user_a'), ('2 B St', 'T', 'ON', 'CA', 'B', 'user_b');
         INSERT INTO cart_items (product_id, quantity, user_id) VALUES (1, 1, 'user_a'), (2, 2, 'user_b');
         INSERT INTO orders (user_id, address_id, total_price, status) VALUES
             ('user_a', 1, 10.5, 'pending'), ('user_b', 2, 20.5, 'pending');
         INSERT INTO order_items (order_id, product_id, quantity) VALUES (1, 3, 1), (2, 4, 1);",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    app
}

/// Every user-scoped operation, for the user it acts on (`{u}` = user id, ids of that user's rows).
fn operations(user: &str, own: i64) -> Vec<(Method, String, Option<Value>)> {
    let address = own;
    vec![
        (Method::GET, format!("/users/get/{user}"), None),
        (
            Method::PUT,
            "/users/update".into(),
            Some(
                json!({"id": user, "firstName": "N", "lastName": "L", "email": format!("{user}@example.com")}),
            ),
        ),
        (Method::GET, format!("/users/addresses/get/{address}"), None),
        (Method::GET, format!("/users/addresses/user/{user}"), None),
        (
            Method::POST,
            "/users/addresses/add".into(),
            Some(
                json!({"street": "s", "city": "c", "state": "s", "country": "c", "zipCode": "z", "userId": user}),
            ),
        ),
        (
            Method::PUT,
            "/users/addresses/update".into(),
            Some(
                json!({"id": address, "street": "s2", "city": "c", "state": "s", "country": "c", "zipCode": "z", "userId": user}),
            ),
        ),
        (Method::GET, format!("/cart/get/{own}"), None),
        (Method::GET, format!("/cart/all/{user}"), None),
        (
            Method::POST,
            "/cart/add".into(),
            Some(json!({"product_id": 5, "quantity": 1, "user_id": user})),
        ),
        (
            Method::POST,
            "/cart/add/all".into(),
            Some(json!({"data": [{"product_id": 6, "quantity": 1, "user_id": user}]})),
        ),
        (
            Method::PUT,
            "/cart/update".into(),
            Some(json!({"id": own, "product_id": 7, "quantity": 3, "user_id": user})),
        ),
        (Method::GET, format!("/orders/get/{own}"), None),
        (Method::GET, format!("/orders/all/{user}"), None),
        (
            Method::POST,
            "/orders/add".into(),
            Some(
                json!({"user_id": user, "address_id": address, "total_price": 5.5, "status": "pending"}),
            ),
        ),
        (
            Method::PUT,
            "/orders/update".into(),
            Some(
                // A storefront caller may only cancel (the seeded totals: 10.5 for user_a, 20.5 for user_b).
                json!({"id": own, "user_id": user, "address_id": address, "total_price": if own == 1 { 10.5 } else { 20.5 }, "status": "cancelled"}),
            ),
        ),
        (Method::GET, format!("/orders/items/get/{own}"), None),
        (Method::GET, format!("/orders/items/all/{own}"), None),
        (
            Method::POST,
            "/orders/items/add".into(),
            Some(json!({"order_id": own, "product_id": 8, "quantity": 1})),
        ),
        (
            Method::PUT,
            "/orders/items/update".into(),
            Some(json!({"id": own, "order_id": own, "product_id": 9, "quantity": 2})),
        ),
        (Method::GET, format!("/orders/detailed/get/{own}"), None),
        (Method::GET, format!("/orders/detailed/all/{user}"), None),
        (
            Method::POST,
            "/orders/detailed/add".into(),
            Some(
                json!({"order": {"user_id": user, "address_id": address, "total_price": 9.5, "status": "pending"}, "items": [{"product_id": 1, "quantity": 1}]}),
            ),
        ),
        (
            Method::POST,
            "/events/user".into(),
            Some(
                json!({"user_id": user, "event_type": "view", "core_component": "cart", "client_id": "web", "timestamp": "2026-11-25T10:00:00Z"}),
            ),
        ),
        (Method::DELETE, format!("/orders/items/delete/{own}"), None),
        (
            Method::DELETE,
            format!("/cart/delete/{own}/user/{user}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/orders/delete/{own}/user/{user}"),
            None,
        ),
    ]
}

async fn snapshot(app: &TestApp) -> String {
    sqlx::query_scalar(
        "SELECT concat_ws('|',
            (SELECT string_agg(concat_ws(',', id, first_name, email), ';' ORDER BY id) FROM users),
            (SELECT string_agg(concat_ws(',', id, street, user_id), ';' ORDER BY id) FROM addresses),
            (SELECT string_agg(concat_ws(',', id, product_id, quantity, user_id), ';' ORDER BY id) FROM cart_items),
            (SELECT string_agg(concat_ws(',', id, total_price, status, user_id), ';' ORDER BY id) FROM orders),
            (SELECT string_agg(concat_ws(',', id, order_id, product_id, quantity), ';' ORDER BY id) FROM order_items))",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_token_acts_for_its_subject_and_nobody_else() {
    let jwks = Jwks::default();
    let key = generate("rsa-1", Algorithm::RS256);
    jwks.publish(&key);
    let app = app_with(UserAuthMode::Optional, &jwks.serve().await).await;
    let token_a = token_for(&key, "user_a");

    // user B's rows (user_b owns every row with id 2), addressed with user A's token: 404, untouched
    let before = snapshot(&app).await;
    for (method, path, body) in operations("user_b", 2) {
        let response = app
            .as_shopper(Some(&token_a), method.clone(), &path, body.as_ref())
            .await;
        assert_eq!(response.status, 404, "{method} {path}: {}", response.body);
        assert_eq!(response.body["code"], "not_found", "{method} {path}");
    }
    assert_eq!(snapshot(&app).await, before, "no row of user B changed");

    // user A's own rows with user A's token: every operation works
    for (method, path, body) in operations("user_a", 1) {
        let response = app
            .as_shopper(Some(&token_a), method.clone(), &path, body.as_ref())
            .await;
        assert!(
            response.status.is_success(),
            "{method} {path}: {} {}",
            response.status,
            response.body
        );
    }
}

#[tokio::test]
async fn the_owners_etag_gets_a_non_owner_404_not_304() {
    let jwks = Jwks::default();
    let key = generate("rsa-1", Algorithm::RS256);
    jwks.publish(&key);
    let app = app_with(UserAuthMode::Optional, &jwks.serve().await).await;
    let token_a = token_for(&key, "user_a");
    let token_b = token_for(&key, "user_b");
    let auth = format!("Bearer {}", app.storefront_key);
    for path in [
        "/orders/get/2",
        "/orders/detailed/get/2",
        "/cart/get/2",
        "/cart/all/user_b",
        "/users/get/user_b",
        "/users/addresses/get/2",
    ] {
        let own = app
            .as_shopper(Some(&token_b), Method::GET, path, None)
            .await;
        assert_eq!(own.status, 200, "{path}: {}", own.body);
        let etag = own.header("etag").expect("an ETag").to_owned();
        let revalidated = app
            .send(
                Method::GET,
                path,
                Some(&auth),
                None,
                &[("x-user-token", &token_b), ("if-none-match", &etag)],
            )
            .await;
        assert_eq!(revalidated.status, 304, "{path}: the owner revalidates");
        // the owner's tag, sent with another user's token, confirms nothing
        let other = app
            .send(
                Method::GET,
                path,
                Some(&auth),
                None,
                &[("x-user-token", &token_a), ("if-none-match", &etag)],
            )
            .await;
        assert_eq!(other.status, 404, "{path}: {}", other.body);
        assert_eq!(other.body["code"], "not_found", "{path}");
        assert_eq!(other.header("etag"), None, "{path}");
    }
}

#[tokio::test]
async fn the_user_lifecycle_routes_are_bound_too() {
    let jwks = Jwks::default();
    let key = generate("ec-1", Algorithm::ES256);
    jwks.publish(&key);
    let app = app_with(UserAuthMode::Optional, &jwks.serve().await).await;
    let token = token_for(&key, "user_new");
    let new_user =
        json!({"id": "user_new", "firstName": "N", "lastName": "U", "email": "new@example.com"});
    let other = json!({"id": "user_other", "firstName": "O", "lastName": "U", "email": "other@example.com"});
    assert_eq!(
        app.as_shopper(Some(&token), Method::GET, "/users/get/user_new", None)
            .await
            .status,
        404
    );
    assert_eq!(
        app.as_shopper(Some(&token), Method::POST, "/users/add", Some(&new_user))
            .await
            .status,
        200
    );
    assert_eq!(
        app.as_shopper(Some(&token), Method::POST, "/users/add", Some(&other))
            .await
            .status,
        404
    );
    assert_eq!(
        app.as_shopper(Some(&token), Method::DELETE, "/users/delete/user_a", None)
            .await
            .status,
        404
    );
    assert_eq!(
        app.as_shopper(
            Some(&token),
            Method::DELETE,
            "/users/addresses/delete/1/user/user_a",
            None
        )
        .await
        .status,
        404
    );
    assert_eq!(
        app.as_shopper(Some(&token), Method::DELETE, "/users/delete/user_new", None)
            .await
            .status,
        200
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        users, 2,
        "user_a and user_b are still there, user_new came and went"
    );
}

#[tokio::test]
async fn invalid_tokens_are_401() {
    let jwks = Jwks::default();
    let rsa = generate("rsa-1", Algorithm::RS256);
    let ed = generate("ed-1", Algorithm::EdDSA);
    let unpublished = generate("rsa-2", Algorithm::RS256);
    jwks.publish(&rsa);
    jwks.publish(&ed);
    let app = app_with(UserAuthMode::Optional, &jwks.serve().await).await;
    // a token signed by another key but claiming a published kid
    let forged = {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(
            &header,
            &json!({"sub": "user_a", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600}),
            &unpublished.key,
        )
        .unwrap()
    };
    // alg none: header and claims, no signature
    let b64 = |v: Value| {
        use std::fmt::Write;
        let text = v.to_string();
        let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            let chars = chunk.len() + 1;
            for i in 0..chars {
                let _ = write!(
                    out,
                    "{}",
                    table[((n >> (18 - 6 * i)) & 63) as usize] as char
                );
            }
        }
        out
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})),
        b64(json!({"sub": "user_a", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600}))
    );
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(
            &header,
            &json!({"sub": "user_a", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600}),
            &EncodingKey::from_secret(b"public"),
        )
        .unwrap()
    };
    let cases = [
        (
            "expired",
            token_with(
                &rsa,
                json!({"sub": "user_a", "iss": ISSUER, "aud": AUDIENCE, "exp": now() - 120}),
            ),
        ),
        (
            "wrong issuer",
            token_with(
                &rsa,
                json!({"sub": "user_a", "iss": "https://evil.test", "aud": AUDIENCE, "exp": now() + 600}),
            ),
        ),
        (
            "wrong audience",
            token_with(
                &ed,
                json!({"sub": "user_a", "iss": ISSUER, "aud": "someone-else", "exp": now() + 600}),
            ),
        ),
        ("bad signature", forged),
        ("alg none", none),
        ("HS256", hs256),
        ("unknown kid", token_for(&unpublished, "user_a")),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (case, token) in cases {
        let response = app
            .as_shopper(Some(&token), Method::GET, "/cart/all/user_a", None)
            .await;
        assert_eq!(response.status, 401, "{case}: {}", response.body);
        assert_eq!(response.body["message"], "invalid user token", "{case}");
    }
    // within the clock skew, an expired token still passes
    let recent = token_with(
        &rsa,
        json!({"sub": "user_a", "iss": ISSUER, "aud": AUDIENCE, "exp": now() - 30}),
    );
    assert_eq!(
        app.as_shopper(Some(&recent), Method::GET, "/cart/all/user_a", None)
            .await
            .status,
        200
    );
    // EdDSA tokens are accepted
    assert_eq!(
        app.as_shopper(
            Some(&token_for(&ed, "user_a")),
            Method::GET,
            "/cart/all/user_a",
            None
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn modes_decide_what_a_missing_token_means() {
    let jwks = Jwks::default();
    let key = generate("rsa-1", Algorithm::RS256);
    jwks.publish(&key);
    let url = jwks.serve().await;

    let optional = app_with(UserAuthMode::Optional, &url).await;
    assert_eq!(
        optional
            .as_shopper(None, Method::GET, "/cart/all/user_b", None)
            .await
            .status,
        200
    );

    let required = app_with(UserAuthMode::Required, &url).await;
    let response = required
        .as_shopper(None, Method::GET, "/cart/all/user_b", None)
        .await;
    assert_eq!(response.status, 401);
    assert_eq!(response.body["message"], "user token required");
    // the catalog never needs a token
    assert_eq!(
        required
            .as_shopper(None, Method::GET, "/products/all", None)
            .await
            .status,
        200
    );
    // the admin scope bypasses the user check
    let admin = required.admin(Method::GET, "/cart/all/user_b", None).await;
    assert_eq!(admin.status, 200);

    // off: the header is ignored, even when it is garbage
    let off = TestApp::new().await;
    let response = off
        .as_shopper(Some("garbage"), Method::GET, "/cart/all/anyone", None)
        .await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_without_restart() {
    let jwks = Jwks::default();
    let old = generate("key-2025", Algorithm::RS256);
    jwks.publish(&old);
    let app = app_with(UserAuthMode::Required, &jwks.serve().await).await;
    assert_eq!(
        app.as_shopper(
            Some(&token_for(&old, "user_a")),
            Method::GET,
            "/cart/all/user_a",
            None
        )
        .await
        .status,
        200
    );

    let new = generate("key-2026", Algorithm::ES256);
    jwks.publish(&new);
    tokio::time::sleep(Duration::from_millis(250)).await; // past the refresh bound
    let response = app
        .as_shopper(
            Some(&token_for(&new, "user_a")),
            Method::GET,
            "/cart/all/user_a",
            None,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
}

#[tokio::test]
async fn a_jwks_outage_does_not_stall_requests_and_cached_keys_keep_working() {
    let jwks = Jwks::default();
    let key = generate("rsa-1", Algorithm::RS256);
    jwks.publish(&key);
    let app = app_with(UserAuthMode::Required, &jwks.serve().await).await;
    let token = token_for(&key, "user_a");
    assert_eq!(
        app.as_shopper(Some(&token), Method::GET, "/cart/all/user_a", None)
            .await
            .status,
        200
    );

    jwks.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        app.as_shopper(Some(&token), Method::GET, "/cart/all/user_a", None)
            .await
            .status,
        200
    );
    let unknown = generate("rsa-9", Algorithm::RS256);
    let started = Instant::now();
    let response = app
        .as_shopper(
            Some(&token_for(&unknown, "user_a")),
            Method::GET,
            "/cart/all/user_a",
            None,
        )
        .await;
    assert_eq!(response.status, 401);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded: {:?}",
        started.elapsed()
    );
    // unknown kids cannot make the API hammer the JWKS endpoint
    let fetches = jwks.fetches.load(Ordering::SeqCst);
    for _ in 0..20 {
        app.as_shopper(
            Some(&token_for(&unknown, "user_a")),
            Method::GET,
            "/cart/all/user_a",
            None,
        )
        .await;
    }
    assert!(
        jwks.fetches.load(Ordering::SeqCst) - fetches <= 2,
        "refreshes are rate-limited"
    );
    assert_eq!(
        app.as_shopper(Some(&token), Method::GET, "/cart/all/user_a", None)
            .await
            .status,
        200
    );
}
