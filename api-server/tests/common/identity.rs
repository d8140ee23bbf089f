//! End-user tokens for tests: signing keys generated with `openssl`, tokens signed with them, and a
//! JWKS endpoint on a random local port that can publish keys, go down, redirect elsewhere or pad
//! its answer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://clerk.plamatio.test";
pub const AUDIENCE: &str = "plamatio-storefront";

pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub key: EncodingKey,
    pub jwk: Jwk,
}

pub fn generate(kid: &str, algorithm: Algorithm) -> SigningKey {
    let args: &[&str] = match algorithm {
        Algorithm::RS256 => &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        Algorithm::ES256 => &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        Algorithm::EdDSA => &["genpkey", "-algorithm", "ed25519"],
        other => panic!("no key generation for {other:?}"),
    };
    let output = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command generates the test keys");
    assert!(
        output.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pem = output.stdout;
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .expect("PEM parses");
    let mut jwk = Jwk::from_encoding_key(&key, algorithm).expect("public JWK");
    jwk.common.key_id = Some(kid.to_owned());
    SigningKey {
        kid: kid.to_owned(),
        algorithm,
        key,
        jwk,
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token_with(key: &SigningKey, claims: Value) -> String {
    let mut header = Header::new(key.algorithm);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &key.key).unwrap()
}

/// A valid token for `sub`: the test issuer and audience, ten minutes left.
pub fn token_for(key: &SigningKey, sub: &str) -> String {
    token_with(
        key,
        json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "iat": now()}),
    )
}

/// A JWKS endpoint on a random local port; keys can be published and the endpoint taken down,
/// redirected to another URL, or padded with junk bytes.
#[derive(Clone, Default)]
pub struct Jwks {
    pub keys: Arc<Mutex<Vec<Jwk>>>,
    pub down: Arc<AtomicBool>,
    pub fetches: Arc<AtomicUsize>,
    pub redirect_to: Arc<Mutex<Option<String>>>,
    pub padding_bytes: Arc<AtomicUsize>,
}

impl Jwks {
    pub async fn serve(&self) -> String {
        let state = self.clone();
        let router = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    if state.down.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    if let Some(target) = state.redirect_to.lock().unwrap().clone() {
                        return (StatusCode::FOUND, [(header::LOCATION, target)]).into_response();
                    }
                    let keys = state.keys.lock().unwrap().clone();
                    let padding = state.padding_bytes.load(Ordering::SeqCst);
                    if padding > 0 {
                        let mut set = serde_json::to_value(JwkSet { keys }).unwrap();
                        set["padding"] = Value::String("x".repeat(padding));
                        return Json(set).into_response();
                    }
                    Json(JwkSet { keys }).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{address}/.well-known/jwks.json")
    }

    pub fn publish(&self, key: &SigningKey) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }
}
