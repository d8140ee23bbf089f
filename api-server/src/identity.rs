//! End-user identity: verification of the shopper's session token (`X-User-Token: <jwt>` from the
//! shop's identity provider: Clerk, Auth0, Keycloak, …) and the rule that binds user-scoped routes to
//! it. The storefront API key identifies the application, not the shopper; with user auth on, a
//! storefront call may only act for the user named by the token's `sub`, everything else is 404 as if
//! the row did not exist. The admin scope bypasses the check.
//!
//! Keys come from the provider's JWKS, cached and refreshed when a token names an unknown `kid` (at
//! most once per [`MIN_REFRESH_INTERVAL`], with a short timeout, so a JWKS outage never stalls
//! requests: the cached keys keep working). Only RS256, ES256 and EdDSA are accepted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use clap::{Args, ValueEnum};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use crate::auth::{Caller, Scope, Storefront};
use crate::cache::{Cache, CacheKey};
use crate::error::{ApiError, ApiResult};
use crate::web::JsonBytes;

/// Header carrying the shopper's session token.
pub const USER_TOKEN_HEADER: &str = "x-user-token";
/// Smallest interval between two JWKS fetches.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Timeout of one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Accepted clock skew for `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum UserAuthMode {
    /// Tokens are ignored (compatible with the current frontend).
    #[default]
    Off,
    /// A token, when sent, must be valid and name the user the route acts on.
    Optional,
    /// Every user-scoped storefront call needs a valid token naming its user.
    Required,
}

/// The `PLAMATIO_USER_*` settings.
#[derive(Debug, Clone, Args)]
pub struct UserAuthConfig {
    #[arg(long, env = "PLAMATIO_USER_AUTH", value_enum, ignore_case = true, default_value_t = UserAuthMode::Off)]
    pub user_auth: UserAuthMode,
    /// JWKS of the identity provider, e.g. `https://<app>.clerk.accounts.dev/.well-known/jwks.json`.
    #[arg(long, env = "PLAMATIO_USER_JWKS_URL")]
    pub user_jwks_url: Option<String>,
    /// Required `iss` of tokens.
    #[arg(long, env = "PLAMATIO_USER_JWT_ISSUER")]
    pub user_jwt_issuer: Option<String>,
    /// Required `aud` of tokens, if the provider sets one.
    #[arg(long, env = "PLAMATIO_USER_JWT_AUDIENCE")]
    pub user_jwt_audience: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserAuthConfigError {
    #[error("PLAMATIO_USER_AUTH={0:?} needs PLAMATIO_USER_JWKS_URL and PLAMATIO_USER_JWT_ISSUER")]
    Incomplete(UserAuthMode),
    #[error("could not build the JWKS client: {0}")]
    Client(#[from] reqwest::Error),
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

struct KeyCache {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched_at: Option<Instant>,
}

/// The verifier of user tokens (absent when user auth is off).
pub struct UserTokens {
    mode: UserAuthMode,
    jwks_url: String,
    issuer: String,
    audience: Option<String>,
    client: reqwest::Client,
    cache: RwLock<KeyCache>,
    refreshing: Mutex<()>,
    min_refresh_interval: Duration,
}

/// The algorithm a key is used with: its `alg`, else what its type implies.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let from_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        _ => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        Some(declared) => Algorithm::try_from(declared).ok()?,
        None => from_type,
    };
    (algorithm == from_type).then_some(algorithm)
}

impl UserTokens {
    /// `None` when user auth is off.
    pub fn new(config: &UserAuthConfig) -> Result<Option<Arc<UserTokens>>, UserAuthConfigError> {
        if config.user_auth == UserAuthMode::Off {
            return Ok(None);
        }
        let (Some(jwks_url), Some(issuer)) = (&config.user_jwks_url, &config.user_jwt_issuer)
        else {
            return Err(UserAuthConfigError::Incomplete(config.user_auth));
        };
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()?;
        Ok(Some(Arc::new(UserTokens {
            mode: config.user_auth,
            jwks_url: jwks_url.clone(),
            issuer: issuer.clone(),
            audience: config.user_jwt_audience.clone().filter(|a| !a.is_empty()),
            client,
            cache: RwLock::new(KeyCache {
                keys: HashMap::new(),
                fetched_at: None,
            }),
            refreshing: Mutex::new(()),
            min_refresh_interval: MIN_REFRESH_INTERVAL,
        })))
    }

    pub fn mode(&self) -> UserAuthMode {
        self.mode
    }

    /// Changes the bound on JWKS fetches (tests use a short one).
    pub fn set_min_refresh_interval(&mut self, interval: Duration) {
        self.min_refresh_interval = interval;
    }

    /// Fetches the JWKS unless it was fetched less than [`MIN_REFRESH_INTERVAL`] ago. Keys already
    /// cached stay when the fetch fails.
    pub async fn refresh(&self) {
        let _one_at_a_time = self.refreshing.lock().await;
        let recent = self
            .cache
            .read()
            .await
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.min_refresh_interval);
        if recent {
            return;
        }
        let fetched = async {
            let response = self
                .client
                .get(&self.jwks_url)
                .send()
                .await?
                .error_for_status()?;
            response.json::<JwkSet>().await
        }
        .await;
        let mut cache = self.cache.write().await;
        cache.fetched_at = Some(Instant::now());
        match fetched {
            Ok(set) => {
                let mut keys = HashMap::new();
                for jwk in &set.keys {
                    let (Some(kid), Some(algorithm)) = (&jwk.common.key_id, algorithm_of(jwk))
                    else {
                        continue;
                    };
                    match DecodingKey::from_jwk(jwk) {
                        Ok(key) => {
                            keys.insert(kid.clone(), (key, algorithm));
                        }
                        Err(error) => tracing::warn!(kid, %error, "skipping unusable JWKS key"),
                    }
                }
                tracing::info!(keys = keys.len(), "user token keys refreshed");
                cache.keys = keys;
            }
            Err(error) => {
                tracing::warn!(%error, "fetching the user token JWKS failed; keeping cached keys");
            }
        }
    }

    async fn key_for(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        if let Some(found) = self.cache.read().await.keys.get(kid) {
            return Some(found.clone());
        }
        self.refresh().await;
        self.cache.read().await.keys.get(kid).cloned()
    }

    /// Verifies a token and returns its subject.
    pub async fn verify(&self, token: &str) -> ApiResult<String> {
        let invalid = || ApiError::Unauthenticated("invalid user token");
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(invalid());
        }
        let kid = header.kid.ok_or_else(invalid)?;
        let (key, algorithm) = self.key_for(&kid).await.ok_or_else(invalid)?;
        if algorithm != header.alg {
            return Err(invalid());
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience.as_str()]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|error| {
            tracing::info!(%error, "user token rejected");
            invalid()
        })?;
        if data.claims.sub.is_empty() {
            return Err(invalid());
        }
        Ok(data.claims.sub)
    }
}

/// A storefront (or admin) caller together with the verified end user, if any.
#[derive(Debug, Clone)]
pub struct Shopper {
    pub caller: Caller,
    /// The token's `sub`, when the caller is bound to one user.
    bound_to: Option<String>,
}

impl Shopper {
    /// Whether the caller may act for `user_id`.
    pub fn may_act_for(&self, user_id: &str) -> bool {
        self.bound_to
            .as_deref()
            .is_none_or(|subject| subject == user_id)
    }

    /// `Ok` when the caller may act for `user_id`, else `not_found()` (as if the row did not exist).
    pub fn check(&self, user_id: &str, not_found: impl FnOnce() -> ApiError) -> ApiResult<()> {
        if self.may_act_for(user_id) {
            Ok(())
        } else {
            Err(not_found())
        }
    }

    /// Whether ownership has to be checked at all (lets handlers skip owner look-ups).
    pub fn is_bound(&self) -> bool {
        self.bound_to.is_some()
    }

    /// The user the caller is bound to, if any.
    pub fn bound_user(&self) -> Option<&str> {
        self.bound_to.as_deref()
    }
}

impl<S> FromRequestParts<S> for Shopper
where
    Arc<crate::auth::ApiKeys>: FromRef<S>,
    Option<Arc<UserTokens>>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Storefront(caller) = Storefront::from_request_parts(parts, state).await?;
        let Some(tokens) = Option::<Arc<UserTokens>>::from_ref(state) else {
            return Ok(Shopper {
                caller,
                bound_to: None,
            });
        };
        if caller.scope == Scope::Admin {
            return Ok(Shopper {
                caller,
                bound_to: None,
            });
        }
        let token = parts
            .headers
            .get(USER_TOKEN_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|token| !token.is_empty());
        let bound_to = match (token, tokens.mode()) {
            (Some(token), _) => Some(tokens.verify(token).await?),
            (None, UserAuthMode::Required) => {
                return Err(ApiError::Unauthenticated("user token required"));
            }
            (None, _) => None,
        };
        Ok(Shopper { caller, bound_to })
    }
}

/// The owner named inside a serialized JSON body (e.g. `/user_id`, `/order/user_id`, `/userId`).
pub fn owner_in(body: &[u8], pointer: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.pointer(pointer)?.as_str().map(str::to_owned)
}

impl Shopper {
    /// Cache-aside read of one entity (see [`Cache::get_or_load`]) that answers `not_found()` unless
    /// the caller may act for the owner named at `owner_pointer` inside the body.
    pub async fn cached_entity<T, F, Fut>(
        &self,
        cache: &Cache,
        key: &CacheKey,
        owner_pointer: &str,
        load: F,
        not_found: impl Fn() -> ApiError,
    ) -> ApiResult<JsonBytes>
    where
        T: serde::Serialize,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ApiResult<T>>,
    {
        let body = cache.get_or_load(key, load).await?;
        self.check_body(&body, owner_pointer, not_found)?;
        Ok(JsonBytes(body))
    }

    /// Checks the owner recorded in a cached entity body.
    pub fn check_body(
        &self,
        body: &[u8],
        pointer: &str,
        not_found: impl FnOnce() -> ApiError,
    ) -> ApiResult<()> {
        if !self.is_bound() {
            return Ok(());
        }
        match owner_in(body, pointer) {
            Some(owner) => self.check(&owner, not_found),
            None => Err(not_found()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shopper(bound_to: Option<&str>) -> Shopper {
        Shopper {
            caller: Caller {
                scope: Scope::Storefront,
                key_id: "k".into(),
            },
            bound_to: bound_to.map(str::to_owned),
        }
    }

    #[test]
    fn a_bound_shopper_acts_only_for_its_subject() {
        assert!(shopper(None).may_act_for("anyone"));
        let bound = shopper(Some("user_a"));
        assert!(bound.may_act_for("user_a"));
        assert!(!bound.may_act_for("user_b"));
        let error = bound.check("user_b", || ApiError::not_found("cart item 1 not found"));
        assert_eq!(
            error.unwrap_err().status(),
            axum::http::StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn incomplete_configuration_is_refused() {
        let config = UserAuthConfig {
            user_auth: UserAuthMode::Required,
            user_jwks_url: None,
            user_jwt_issuer: Some("https://issuer".into()),
            user_jwt_audience: None,
        };
        assert!(matches!(
            UserTokens::new(&config),
            Err(UserAuthConfigError::Incomplete(UserAuthMode::Required))
        ));
        let off = UserAuthConfig {
            user_auth: UserAuthMode::Off,
            ..config
        };
        assert!(UserTokens::new(&off).unwrap().is_none());
    }
}
