//! `Idempotency-Key` on POST and PUT: the first response (2xx or 4xx) to a keyed request is stored in
//! PostgreSQL for 24 hours and replayed to retries with the same request (`Idempotent-Replayed:
//! true`). The same key with another request is 422. A duplicate that arrives while the first is
//! running waits for it (up to 9.5 s, then 409 `aborted`); exactly one executes. 5xx responses are
//! not stored, so a retry runs again.
//!
//! A record belongs to its caller: the API key and, with user tokens verified, the end user (the
//! token's `sub`, verified before anything is looked up; empty without a token). The storefront key
//! is public, so without the end user one shopper's response could be replayed to another who
//! guessed or saw the key, and anyone could claim a shopper's key first. A request whose token does
//! not verify is not recorded at all, and neither are 401, 403 and 429 answers: they say something
//! about the caller, not about the request, and must not stick to the key.
//!
//! The record is claimed with an `INSERT … ON CONFLICT DO NOTHING` before the handler runs. A claim
//! left behind by a process that died mid-request is taken over after a minute (longer than any
//! request may run).

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::AppState;
use crate::error::ApiError;
use crate::http::auth::Scope;
use crate::http::layers::BODY_LIMIT_BYTES;

const HEADER: &str = "idempotency-key";
/// How long a duplicate waits for the first request: the contract's 10 s, less a margin so that the
/// 409 reaches the client before the default 10 s request timeout turns it into a 504.
const WAIT_FOR_FIRST: Duration = Duration::from_millis(9_500);
/// Largest response body recorded.
const MAX_RECORDED_BODY: usize = 8 * 1024 * 1024;

/// A key is 1–255 printable ASCII characters.
pub fn is_valid_key(key: &[u8]) -> bool {
    (1..=255).contains(&key.len()) && key.iter().all(|b| (0x20..=0x7e).contains(b))
}

fn fingerprint(method: &Method, path: &str, key_id: &str, body: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for part in [
        method.as_str().as_bytes(),
        path.as_bytes(),
        key_id.as_bytes(),
    ] {
        hasher.update(part);
        hasher.update([0u8]);
    }
    hasher.update(body);
    hasher.finalize().to_vec()
}

/// Which record a request maps to.
#[derive(Debug, Clone, Copy)]
struct RecordId<'a> {
    api_key_id: &'a str,
    /// The verified token's subject, or empty.
    end_user: &'a str,
    key: &'a str,
}

/// Whether a response to a keyed request is stored for replay.
fn is_recorded(status: StatusCode) -> bool {
    !(status.is_server_error()
        || matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
        ))
}

enum Claim {
    /// This request owns the key: run it and record the outcome.
    Owned,
    Replay {
        status: u16,
        body: Vec<u8>,
    },
    Mismatch,
    InProgress,
}

#[derive(sqlx::FromRow)]
struct Record {
    fingerprint: Vec<u8>,
    status_code: Option<i32>,
    response_body: Option<Vec<u8>>,
    expired: bool,
    abandoned: bool,
}

async fn claim(pool: &PgPool, id: RecordId<'_>, print: &[u8]) -> Result<Claim, sqlx::Error> {
    let started = Instant::now();
    loop {
        let inserted: Option<bool> = sqlx::query_scalar(
            "INSERT INTO idempotency_keys (api_key_id, end_user, idempotency_key, fingerprint) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
        )
        .bind(id.api_key_id)
        .bind(id.end_user)
        .bind(id.key)
        .bind(print)
        .fetch_optional(pool)
        .await?;
        if inserted.is_some() {
            return Ok(Claim::Owned);
        }
        let record: Option<Record> = sqlx::query_as(
            "SELECT fingerprint, status_code, response_body, \
                    created_at < now() - interval '24 hours' AS expired, \
                    completed_at IS NULL AND created_at < now() - interval '60 seconds' AS abandoned \
             FROM idempotency_keys \
             WHERE api_key_id = $1 AND end_user = $2 AND idempotency_key = $3",
        )
        .bind(id.api_key_id)
        .bind(id.end_user)
        .bind(id.key)
        .fetch_optional(pool)
        .await?;
        match record {
            // The first request failed with a 5xx and released the key: claim it again.
            None => continue,
            Some(record) if record.expired || record.abandoned => {
                release(pool, id).await?;
                continue;
            }
            Some(record) if record.fingerprint != print => return Ok(Claim::Mismatch),
            Some(Record {
                status_code: Some(status),
                response_body,
                ..
            }) => {
                return Ok(Claim::Replay {
                    status: u16::try_from(status).unwrap_or(500),
                    body: response_body.unwrap_or_default(),
                });
            }
            Some(_) if started.elapsed() >= WAIT_FOR_FIRST => return Ok(Claim::InProgress),
            Some(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

async fn release(pool: &PgPool, id: RecordId<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys \
         WHERE api_key_id = $1 AND end_user = $2 AND idempotency_key = $3",
    )
    .bind(id.api_key_id)
    .bind(id.end_user)
    .bind(id.key)
    .execute(pool)
    .await
    .map(|_| ())
}

async fn record(
    pool: &PgPool,
    id: RecordId<'_>,
    status: u16,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET status_code = $4, response_body = $5, completed_at = now() \
         WHERE api_key_id = $1 AND end_user = $2 AND idempotency_key = $3",
    )
    .bind(id.api_key_id)
    .bind(id.end_user)
    .bind(id.key)
    .bind(i32::from(status))
    .bind(body)
    .execute(pool)
    .await
    .map(|_| ())
}

fn replay(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Whether the middleware has anything to do with a request: a POST or PUT with an
/// `Idempotency-Key`. Every other request skips it.
pub fn applies(request: &Request) -> bool {
    matches!(*request.method(), Method::POST | Method::PUT)
        && request.headers().contains_key(HEADER)
}

/// The middleware (on POST and PUT routes).
pub async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !matches!(*request.method(), Method::POST | Method::PUT) {
        return next.run(request).await;
    }
    let Some(raw_key) = request.headers().get(HEADER).cloned() else {
        return next.run(request).await;
    };
    if !is_valid_key(raw_key.as_bytes()) {
        return ApiError::invalid(
            "invalid Idempotency-Key, expected 1 to 255 printable ASCII characters",
        )
        .into_response();
    }
    let key = String::from_utf8_lossy(raw_key.as_bytes()).into_owned();
    // Unauthenticated requests are not recorded; the handler answers them 401.
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let Ok(caller) = state.keys.authenticate(authorization) else {
        return next.run(request).await;
    };
    // The end user is verified before any record is looked up. A request whose token fails (or
    // lacks one where it is required) runs unrecorded: the handler answers it 401.
    let end_user = match (&state.user_tokens, caller.scope) {
        (Some(tokens), Scope::Storefront) => match tokens.user_of(request.headers()).await {
            Ok(user) => user.map(|user| user.subject).unwrap_or_default(),
            Err(_) => return next.run(request).await,
        },
        _ => String::new(),
    };
    let id = RecordId {
        api_key_id: &caller.key_id,
        end_user: &end_user,
        key: &key,
    };
    let (parts, body) = request.into_parts();
    let body: Bytes = match to_bytes(body, BODY_LIMIT_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let print = fingerprint(&parts.method, path, &caller.key_id, &body);
    let pool = &state.pool;
    match claim(pool, id, &print).await {
        Err(error) => ApiError::from(error).into_response(),
        Ok(Claim::Replay { status, body }) => replay(status, body),
        Ok(Claim::Mismatch) => {
            ApiError::Unprocessable("idempotency key reused with a different request".into())
                .into_response()
        }
        Ok(Claim::InProgress) => {
            ApiError::Aborted("request with this idempotency key is in progress".into())
                .into_response()
        }
        Ok(Claim::Owned) => {
            let response = next.run(Request::from_parts(parts, Body::from(body))).await;
            let status = response.status();
            let (response_parts, response_body) = response.into_parts();
            let bytes = match to_bytes(response_body, MAX_RECORDED_BODY).await {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::error!(%error, "could not buffer a keyed response");
                    let _ = release(pool, id).await;
                    return ApiError::internal(anyhow::anyhow!("response too large to record"))
                        .into_response();
                }
            };
            let outcome = if is_recorded(status) {
                record(pool, id, status.as_u16(), &bytes).await
            } else {
                release(pool, id).await
            };
            if let Err(error) = outcome {
                tracing::error!(%error, "could not record the idempotent response");
                let _ = release(pool, id).await;
            }
            Response::from_parts(response_parts, Body::from(bytes))
        }
    }
}

/// Deletes records older than 24 hours.
pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")
        .execute(pool)
        .await
        .map(|result| result.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        assert!(is_valid_key(b"a"));
        assert!(is_valid_key(&[b'x'; 255]));
        assert!(!is_valid_key(&[b'x'; 256]));
        assert!(!is_valid_key(b""));
        assert!(!is_valid_key(b"tab\there"));
        assert!(!is_valid_key("é".as_bytes()));
    }

    #[test]
    fn answers_about_the_caller_and_server_errors_are_not_recorded() {
        for status in [200, 400, 404, 409, 422] {
            assert!(
                is_recorded(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [401, 403, 429, 500, 503, 504] {
            assert!(
                !is_recorded(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }

    #[test]
    fn fingerprint_covers_method_path_key_and_body() {
        let base = fingerprint(&Method::POST, "/cart/add", "k1", b"{}");
        assert_ne!(base, fingerprint(&Method::PUT, "/cart/add", "k1", b"{}"));
        assert_ne!(
            base,
            fingerprint(&Method::POST, "/cart/add/all", "k1", b"{}")
        );
        assert_ne!(base, fingerprint(&Method::POST, "/cart/add", "k2", b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/cart/add", "k1", b"{ }"));
        assert_eq!(base, fingerprint(&Method::POST, "/cart/add", "k1", b"{}"));
    }
}
