//! End-user identity: verification of the shopper's session token (`X-User-Token: <jwt>` from the
//! shop's identity provider: Clerk, Auth0, Keycloak, …) and the rule that binds user-scoped routes to
//! it. The storefront API key identifies the application, not the shopper; with user auth on, a
//! storefront call may only act for the user named by the token's `sub`, everything else is 404 as if
//! the row did not exist. The admin scope bypasses the check.
//!
//! Keys come from the provider's JWKS, cached and refreshed when a token names an unknown `kid` (at
//! most once per [`MIN_REFRESH_INTERVAL`], with a short timeout, so a JWKS outage never stalls
//! requests: the cached keys keep working). Only RS256, ES256 and EdDSA are accepted. Whoever can
//! answer the JWKS request can mint tokens for every shopper, so the JWKS is fetched over https only
//! (plain http only from a loopback address, for tests), redirects are not followed and the body is
//! capped at [`MAX_JWKS_BYTES`].
//!
//! A token must carry `sub`, `iss` (the configured issuer) and `exp`; `nbf`, when present, must have
//! passed; with an audience configured, `aud` is required and must name it; with authorized parties
//! configured, `azp` is required and must be one of them (Clerk sets it to the frontend's origin). With
//! an email claim configured, a shopper can only give their user record the token's email.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use clap::{Args, ValueEnum};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};

use crate::cache::{Cache, CacheKey};
use crate::error::{ApiError, ApiResult};
use crate::http::auth::{Caller, Scope, Storefront};
use crate::http::extract::JsonBytes;

/// Header carrying the shopper's session token.
pub const USER_TOKEN_HEADER: &str = "x-user-token";
/// Smallest interval between two JWKS fetches.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Timeout of one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Accepted clock skew for `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 60;
/// Largest JWKS body read; a provider's key set is a few kilobytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum UserAuthMode {
    /// Tokens are ignored (compatible with the current frontend).
    #[default]
    #[value(name = plamatio_contract::user_auth::OFF)]
    Off,
    /// A token, when sent, must be valid and name the user the route acts on.
    #[value(name = plamatio_contract::user_auth::OPTIONAL)]
    Optional,
    /// Every user-scoped storefront call needs a valid token naming its user.
    #[value(name = plamatio_contract::user_auth::REQUIRED)]
    Required,
}

/// The `PLAMATIO_USER_*` settings.
#[derive(Debug, Clone, Default, Args)]
pub struct UserAuthConfig {
    #[arg(long, env = plamatio_contract::env::USER_AUTH, value_enum, ignore_case = true, default_value_t = UserAuthMode::Off)]
    pub user_auth: UserAuthMode,
    /// JWKS of the identity provider, e.g. `https://<app>.clerk.accounts.dev/.well-known/jwks.json`.
    #[arg(long, env = plamatio_contract::env::USER_JWKS_URL)]
    pub user_jwks_url: Option<String>,
    /// Required `iss` of tokens.
    #[arg(long, env = plamatio_contract::env::USER_JWT_ISSUER)]
    pub user_jwt_issuer: Option<String>,
    /// Required `aud` of tokens, if the provider sets one (a token without `aud` is then refused).
    #[arg(long, env = plamatio_contract::env::USER_JWT_AUDIENCE)]
    pub user_jwt_audience: Option<String>,
    /// Accepted `azp` (authorized party) values, comma-separated, e.g. the shop's origin
    /// `https://shop.example.com`; when set, a token without one of them is refused.
    #[arg(long, env = "PLAMATIO_USER_JWT_AUTHORIZED_PARTIES", default_value = "")]
    pub user_jwt_authorized_parties: String,
    /// Claim holding the user's email (e.g. `email`); when set, a shopper can create or update their
    /// user record only with the email of their token.
    #[arg(long, env = "PLAMATIO_USER_JWT_EMAIL_CLAIM")]
    pub user_jwt_email_claim: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserAuthConfigError {
    #[error("PLAMATIO_USER_AUTH={0:?} needs PLAMATIO_USER_JWKS_URL and PLAMATIO_USER_JWT_ISSUER")]
    Incomplete(UserAuthMode),
    #[error(
        "PLAMATIO_USER_JWKS_URL {0:?} must be an https URL (plain http only for a loopback address)"
    )]
    InsecureJwksUrl(String),
    #[error("could not build the JWKS client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The user a verified token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUser {
    /// The token's `sub`: the identity provider's user id.
    pub subject: String,
    /// The token's `exp` (seconds since the epoch).
    pub expires_at: u64,
    /// With an email claim configured: the token's email, `None` when the token carries none.
    email_binding: Option<Option<String>>,
}

/// Why a JWKS fetch failed (the cached keys stay).
#[derive(Debug, thiserror::Error)]
enum JwksFetchError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("the JWKS endpoint answered {0} (redirects are not followed)")]
    Status(reqwest::StatusCode),
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("the JWKS is not a JSON key set: {0}")]
    Json(#[from] serde_json::Error),
}

/// Whether a JWKS URL is acceptable: https, or http to a loopback address (tests, sidecars).
pub fn is_acceptable_jwks_url(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    match url.scheme() {
        "https" => !host.is_empty(),
        "http" => {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
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
    authorized_parties: Vec<String>,
    email_claim: Option<String>,
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
        if !is_acceptable_jwks_url(jwks_url) {
            return Err(UserAuthConfigError::InsecureJwksUrl(jwks_url.clone()));
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Some(Arc::new(UserTokens {
            mode: config.user_auth,
            jwks_url: jwks_url.clone(),
            issuer: issuer.clone(),
            audience: config.user_jwt_audience.clone().filter(|a| !a.is_empty()),
            authorized_parties: config
                .user_jwt_authorized_parties
                .split(',')
                .map(str::trim)
                .filter(|party| !party.is_empty())
                .map(str::to_owned)
                .collect(),
            email_claim: config
                .user_jwt_email_claim
                .clone()
                .filter(|claim| !claim.trim().is_empty()),
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
        let fetched = self.fetch_jwks().await;
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

    /// One GET of the JWKS: a 2xx answer (a redirect is a failure) of at most [`MAX_JWKS_BYTES`].
    async fn fetch_jwks(&self) -> Result<JwkSet, JwksFetchError> {
        let mut response = self.client.get(&self.jwks_url).send().await?;
        let status = response.status();
        if !status.is_success() {
            return Err(JwksFetchError::Status(status));
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
        {
            return Err(JwksFetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwksFetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(serde_json::from_slice(&body)?)
    }

    async fn key_for(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        if let Some(found) = self.cache.read().await.keys.get(kid) {
            return Some(found.clone());
        }
        self.refresh().await;
        self.cache.read().await.keys.get(kid).cloned()
    }

    /// Verifies a token and returns the user it names.
    pub async fn verify(&self, token: &str) -> ApiResult<VerifiedUser> {
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
        validation.validate_nbf = true;
        validation.set_issuer(&[self.issuer.as_str()]);
        match &self.audience {
            Some(audience) => {
                validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
                validation.set_audience(&[audience.as_str()]);
            }
            None => {
                validation.set_required_spec_claims(&["exp", "sub", "iss"]);
                validation.validate_aud = false;
            }
        }
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|error| {
                tracing::info!(%error, "user token rejected");
                invalid()
            })?
            .claims;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|subject| !subject.is_empty())
            .ok_or_else(invalid)?;
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(invalid)?;
        if !self.authorized_parties.is_empty() {
            let party = claims.get("azp").and_then(Value::as_str);
            if !party.is_some_and(|party| self.authorized_parties.iter().any(|p| p == party)) {
                tracing::info!(azp = ?party, "user token rejected: unexpected authorized party");
                return Err(invalid());
            }
        }
        let email_binding = self.email_claim.as_ref().map(|claim| {
            claims
                .get(claim)
                .and_then(Value::as_str)
                .map(|email| email.trim().to_owned())
                .filter(|email| !email.is_empty())
        });
        Ok(VerifiedUser {
            subject: subject.to_owned(),
            expires_at,
            email_binding,
        })
    }

    /// The user named by a request's `X-User-Token`: `Ok(None)` without a token, an error for an
    /// invalid one or a missing one in `required` mode.
    pub async fn user_of(&self, headers: &HeaderMap) -> ApiResult<Option<VerifiedUser>> {
        let token = headers
            .get(USER_TOKEN_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|token| !token.is_empty());
        match (token, self.mode) {
            (Some(token), _) => Ok(Some(self.verify(token).await?)),
            (None, UserAuthMode::Required) => Err(ApiError::Unauthenticated("user token required")),
            (None, _) => Ok(None),
        }
    }
}

/// A storefront (or admin) caller together with the verified end user, if any.
#[derive(Debug, Clone)]
pub struct Shopper {
    pub caller: Caller,
    /// The token's user, when the caller is bound to one.
    bound_to: Option<VerifiedUser>,
}

impl Shopper {
    /// Whether the caller may act for `user_id`.
    pub fn may_act_for(&self, user_id: &str) -> bool {
        self.bound_to
            .as_ref()
            .is_none_or(|user| user.subject == user_id)
    }

    /// With an email claim configured, a bound caller may only use its token's email
    /// (case-insensitive) for its user record; 400 naming the field otherwise.
    pub fn check_email(&self, email: &str) -> ApiResult<()> {
        let Some(binding) = self
            .bound_to
            .as_ref()
            .and_then(|user| user.email_binding.as_ref())
        else {
            return Ok(());
        };
        match binding {
            Some(token_email) if token_email.eq_ignore_ascii_case(email.trim()) => Ok(()),
            Some(_) => Err(ApiError::invalid_with(
                "email must be the email of the user token",
                serde_json::json!({ "field": "email" }),
            )),
            None => Err(ApiError::invalid_with(
                "the user token carries no email",
                serde_json::json!({ "field": "email" }),
            )),
        }
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
        self.bound_to.as_ref().map(|user| user.subject.as_str())
    }
}

impl<S> FromRequestParts<S> for Shopper
where
    Arc<crate::http::auth::ApiKeys>: FromRef<S>,
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
        let bound_to = tokens.user_of(&parts.headers).await?;
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
            bound_to: bound_to.map(|subject| VerifiedUser {
                subject: subject.to_owned(),
                expires_at: u64::MAX,
                email_binding: None,
            }),
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
            ..UserAuthConfig::default()
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

    #[test]
    fn jwks_urls_are_https_or_loopback_http() {
        for good in [
            "https://shop.clerk.accounts.dev/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks.json",
            "http://[::1]:8080/jwks.json",
            "http://localhost/jwks.json",
        ] {
            assert!(is_acceptable_jwks_url(good), "{good}");
        }
        for bad in [
            "http://shop.clerk.accounts.dev/.well-known/jwks.json",
            "http://10.0.0.1/jwks.json",
            "http://localhost.evil.example/jwks.json",
            "ftp://example.com/jwks.json",
            "not a url",
        ] {
            assert!(!is_acceptable_jwks_url(bad), "{bad}");
        }
    }

    #[test]
    fn email_binding_compares_case_insensitively_and_needs_the_claim() {
        let mut shopper = shopper(Some("user_a"));
        assert!(shopper.check_email("anything@example.com").is_ok());
        if let Some(user) = shopper.bound_to.as_mut() {
            user.email_binding = Some(Some("Ada@Example.com".into()));
        }
        assert!(shopper.check_email("ada@example.com").is_ok());
        assert!(shopper.check_email("eve@example.com").is_err());
        if let Some(user) = shopper.bound_to.as_mut() {
            user.email_binding = Some(None);
        }
        assert!(shopper.check_email("ada@example.com").is_err());
    }
}
