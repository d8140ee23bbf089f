//! API-key authentication: keys are configured as SHA-256 digests with a scope, presented as
//! `Authorization: Bearer <key>` (or `Token <key>`), and compared in constant time. The extractors
//! [`Storefront`] and [`Admin`] guard handlers; an admin key passes both.
//!
//! A key that verified once is remembered beside its digest, so later requests compare the
//! presented key with the remembered ones (constant time, every entry) instead of hashing it: the
//! SHA-256 was ~2 % of an uncached read. Only keys that matched a configured digest are ever
//! remembered — at most one per configured entry — so keys an attacker makes up cost a digest each,
//! as before, and never grow memory.

use std::sync::{Arc, OnceLock};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use clap::ValueEnum;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// What a key may do. `Admin` includes everything `Storefront` may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scope {
    Storefront,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Storefront => "storefront",
            Scope::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Scope> {
        match text.trim().to_ascii_lowercase().as_str() {
            "storefront" => Some(Scope::Storefront),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyConfigError {
    #[error("API key entry {0:?} is not `scope:sha256hex`")]
    Malformed(String),
    #[error("API key entry {0:?} has an unknown scope (use storefront or admin)")]
    UnknownScope(String),
    #[error("API key entry {0:?} does not carry a 64-character hex SHA-256 digest")]
    BadDigest(String),
}

/// One configured key: its digest and scope, and the key itself once a request presented it.
#[derive(Clone)]
struct KeyEntry {
    digest: [u8; 32],
    scope: Scope,
    /// The short id of [`Caller::key_id`], derived from the digest once.
    key_id: Box<str>,
    /// The presented key whose digest matched, set by the first request that carried it.
    verified: OnceLock<Box<[u8]>>,
}

impl KeyEntry {
    fn new(digest: [u8; 32], scope: Scope) -> KeyEntry {
        KeyEntry {
            digest,
            scope,
            key_id: hex::encode(&digest[..6]).into_boxed_str(),
            verified: OnceLock::new(),
        }
    }

    fn caller(&self) -> Caller {
        Caller {
            scope: self.scope,
            key_id: self.key_id.to_string(),
        }
    }
}

/// The configured key digests.
#[derive(Clone, Default)]
pub struct ApiKeys {
    entries: Vec<KeyEntry>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.entries.len())
            .finish()
    }
}

/// SHA-256 of a key, as lowercase hex: the form a key is configured in.
pub fn digest_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random key: `plm_` and 32 random bytes in hex.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("plm_{}", hex::encode(bytes))
}

impl ApiKeys {
    /// Parses `scope:sha256hex` pairs separated by commas; blank entries are ignored.
    pub fn parse(config: &str) -> Result<ApiKeys, KeyConfigError> {
        let mut keys = ApiKeys::default();
        for entry in config.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (scope, digest) = entry
                .split_once(':')
                .ok_or_else(|| KeyConfigError::Malformed(entry.to_owned()))?;
            let scope = Scope::parse(scope)
                .ok_or_else(|| KeyConfigError::UnknownScope(entry.to_owned()))?;
            let bytes = hex::decode(digest.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| KeyConfigError::BadDigest(entry.to_owned()))?;
            keys.entries.push(KeyEntry::new(bytes, scope));
        }
        Ok(keys)
    }

    /// Adds a plain key (used for generated development keys and tests).
    pub fn add_key(&mut self, key: &str, scope: Scope) {
        self.entries
            .push(KeyEntry::new(Sha256::digest(key.as_bytes()).into(), scope));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a key of `scope` is configured.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.entries.iter().any(|entry| entry.scope == scope)
    }

    /// Checks an `Authorization` header value and returns the caller it identifies.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, ApiError> {
        let key = header
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("Token "))
            })
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .ok_or(ApiError::Unauthenticated("invalid auth param"))?;
        let presented = key.as_bytes();
        // Every comparison below visits every entry without stopping early, so timing does not
        // reveal which one matched or how many there are before it.
        let mut remembered: Option<&KeyEntry> = None;
        for entry in &self.entries {
            let matches = entry
                .verified
                .get()
                .is_some_and(|known| bool::from(known.as_ref().ct_eq(presented)));
            if matches && remembered.is_none() {
                remembered = Some(entry);
            }
        }
        if let Some(entry) = remembered {
            return Ok(entry.caller());
        }
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found: Option<&KeyEntry> = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&digest)) && found.is_none() {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(ApiError::Unauthenticated("invalid API key"))?;
        // Bounded: one key per entry, and only a key whose digest is configured.
        let _ = entry.verified.set(presented.into());
        Ok(entry.caller())
    }

    /// How many configured keys have been presented and verified (remembered) so far.
    pub fn remembered(&self) -> usize {
        self.entries
            .iter()
            .filter(|entry| entry.verified.get().is_some())
            .count()
    }
}

/// Who is calling: the scope of the key and a short, non-secret id of it (the start of its digest)
/// for logs, rate limits and idempotency records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub scope: Scope,
    pub key_id: String,
}

fn caller_from_parts(parts: &Parts, keys: &ApiKeys) -> Result<Caller, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let caller = keys.authenticate(header)?;
    tracing::Span::current().record("scope", caller.scope.as_str());
    Ok(caller)
}

/// Any valid key (storefront or admin).
#[derive(Debug, Clone)]
pub struct Storefront(pub Caller);

/// A key with the admin scope.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl<S> FromRequestParts<S> for Storefront
where
    Arc<ApiKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = Arc::<ApiKeys>::from_ref(state);
        caller_from_parts(parts, &keys).map(Storefront)
    }
}

impl<S> FromRequestParts<S> for Admin
where
    Arc<ApiKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = Arc::<ApiKeys>::from_ref(state);
        let caller = caller_from_parts(parts, &keys)?;
        if caller.scope != Scope::Admin {
            return Err(ApiError::PermissionDenied("admin"));
        }
        Ok(Admin(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scope_digest_pairs() {
        let digest = digest_hex("secret");
        let keys = ApiKeys::parse(&format!(" storefront:{digest} , admin:{digest},")).unwrap();
        assert_eq!(keys.entries.len(), 2);
        assert_eq!(keys.entries[1].scope, Scope::Admin);
    }

    #[test]
    fn rejects_malformed_entries() {
        assert!(matches!(
            ApiKeys::parse("storefront"),
            Err(KeyConfigError::Malformed(_))
        ));
        assert!(matches!(
            ApiKeys::parse(&format!("root:{}", digest_hex("x"))),
            Err(KeyConfigError::UnknownScope(_))
        ));
        assert!(matches!(
            ApiKeys::parse("admin:abcd"),
            Err(KeyConfigError::BadDigest(_))
        ));
    }

    #[test]
    fn accepts_bearer_and_token_prefixes_only() {
        let mut keys = ApiKeys::default();
        keys.add_key("k1", Scope::Storefront);
        assert_eq!(
            keys.authenticate(Some("Bearer k1")).unwrap().scope,
            Scope::Storefront
        );
        assert_eq!(
            keys.authenticate(Some("Token k1")).unwrap().scope,
            Scope::Storefront
        );
        for bad in [None, Some("Basic k1"), Some("Bearer "), Some("k1")] {
            let error = keys.authenticate(bad).unwrap_err();
            assert_eq!(error.to_string(), "invalid auth param");
        }
        assert_eq!(
            keys.authenticate(Some("Bearer k2"))
                .unwrap_err()
                .to_string(),
            "invalid API key"
        );
    }

    #[test]
    fn only_verified_keys_are_remembered() {
        let mut keys = ApiKeys::default();
        keys.add_key("k1", Scope::Storefront);
        keys.add_key("k2", Scope::Admin);
        for unknown in 0..1000 {
            assert!(
                keys.authenticate(Some(&format!("Bearer x{unknown}")))
                    .is_err()
            );
        }
        assert_eq!(keys.remembered(), 0);
        let first = keys.authenticate(Some("Bearer k2")).unwrap();
        assert_eq!(keys.remembered(), 1);
        // The remembered path answers exactly what the digest path answered.
        assert_eq!(keys.authenticate(Some("Token k2")).unwrap(), first);
        assert_eq!(first.scope, Scope::Admin);
        assert_eq!(first.key_id, digest_hex("k2")[..12]);
        // A prefix, an extension or another key of the same length is no remembered key.
        for near in ["k", "k22", "k3", "K2"] {
            assert!(keys.authenticate(Some(&format!("Bearer {near}"))).is_err());
        }
        assert_eq!(
            keys.authenticate(Some("Bearer k1")).unwrap().scope,
            Scope::Storefront
        );
        assert_eq!(keys.remembered(), 2);
    }

    #[test]
    fn generated_keys_are_unique_and_match_their_digest() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        let keys = ApiKeys::parse(&format!("admin:{}", digest_hex(&a))).unwrap();
        assert_eq!(
            keys.authenticate(Some(&format!("Bearer {a}")))
                .unwrap()
                .scope,
            Scope::Admin
        );
    }
}
