//! Rate limiting (governor, GCRA): per (API key, client IP) for the storefront scope — its key is
//! public and shared by every shopper — per key for admin, and per client IP for unauthenticated
//! calls. The client IP is the socket peer, or the right-most untrusted `X-Forwarded-For` hop when
//! the peer is a configured trusted proxy. `/healthz`, `/readyz` and `/metrics` are exempt.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;

use crate::AppState;
use crate::auth::Scope;
use crate::error::error_response;

type KeyedLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

const EXEMPT_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The limiter and its settings.
pub struct RateLimits {
    limiter: KeyedLimiter,
    per_minute: u32,
    trusted_proxies: Vec<IpNet>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed { remaining: u32 },
    Denied { retry_after: Duration },
}

#[derive(Debug, thiserror::Error)]
#[error("invalid trusted proxy {0:?}: expected an IP address or CIDR")]
pub struct ProxyConfigError(String);

/// Parses `PLAMATIO_TRUSTED_PROXIES`: comma-separated IP addresses and CIDR ranges.
pub fn parse_trusted_proxies(text: &str) -> Result<Vec<IpNet>, ProxyConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| ProxyConfigError(entry.to_owned()))
        })
        .collect()
}

impl RateLimits {
    /// `None` when `per_minute` is 0 (rate limiting disabled).
    pub fn new(per_minute: u32, trusted_proxies: Vec<IpNet>) -> Option<RateLimits> {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute)?);
        Some(RateLimits {
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            per_minute,
            trusted_proxies,
        })
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Takes one request from the key's budget.
    pub fn check(&self, key: &str) -> Decision {
        match self.limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => Decision::Allowed {
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => Decision::Denied {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        }
    }

    /// Forgets keys whose budget is full again (bounds memory).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer, or — behind trusted proxies — the right-most
    /// `X-Forwarded-For` entry that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> String {
        let Some(peer) = peer else {
            return "unknown".into();
        };
        if !self.is_trusted(peer) {
            return peer.to_string();
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|ip| !self.is_trusted(**ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer)
            .to_string()
    }
}

fn set_header(response: &mut Response, name: &'static str, value: impl ToString) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        response.headers_mut().insert(name, value);
    }
}

/// The middleware: answers 429 past the budget, and adds the budget headers to every response.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limits) = state.rate_limits.as_deref() else {
        return next.run(request).await;
    };
    let exempt = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|path| EXEMPT_ROUTES.contains(&path.as_str()));
    if exempt {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let ip = limits.client_ip(peer, request.headers());
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let bucket = match state.keys.authenticate(authorization) {
        Ok(caller) if caller.scope == Scope::Admin => format!("key:{}", caller.key_id),
        Ok(caller) => format!("key:{}|ip:{ip}", caller.key_id),
        Err(_) => format!("ip:{ip}"),
    };
    match limits.check(&bucket) {
        Decision::Allowed { remaining } => {
            let mut response = next.run(request).await;
            set_header(&mut response, "x-ratelimit-limit", limits.per_minute());
            set_header(&mut response, "x-ratelimit-remaining", remaining);
            response
        }
        Decision::Denied { retry_after } => {
            tracing::info!(bucket = %bucket, "rate limit exceeded");
            let mut response = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "resource_exhausted",
                "rate limit exceeded",
            );
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            set_header(&mut response, header::RETRY_AFTER.as_str(), seconds.max(1));
            set_header(&mut response, "x-ratelimit-limit", limits.per_minute());
            set_header(&mut response, "x-ratelimit-remaining", 0);
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_runs_out_and_comes_back_per_key() {
        let limits = RateLimits::new(3, vec![]).unwrap();
        assert_eq!(limits.check("a"), Decision::Allowed { remaining: 2 });
        assert_eq!(limits.check("a"), Decision::Allowed { remaining: 1 });
        assert_eq!(limits.check("a"), Decision::Allowed { remaining: 0 });
        match limits.check("a") {
            Decision::Denied { retry_after } => assert!(retry_after <= Duration::from_secs(20)),
            other => panic!("expected a denial, got {other:?}"),
        }
        assert_eq!(limits.check("b"), Decision::Allowed { remaining: 2 });
        assert!(RateLimits::new(0, vec![]).is_none());
    }

    #[test]
    fn forwarded_for_is_used_only_behind_trusted_proxies() {
        let proxies = parse_trusted_proxies("10.0.0.0/8, 192.168.1.1").unwrap();
        let limits = RateLimits::new(10, proxies).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7, 10.1.2.3".parse().unwrap(),
        );
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: IpAddr = "198.51.100.200".parse().unwrap();
        assert_eq!(limits.client_ip(Some(proxy), &headers), "198.51.100.7");
        assert_eq!(limits.client_ip(Some(stranger), &headers), "198.51.100.200");
        assert_eq!(limits.client_ip(None, &headers), "unknown");
        assert!(parse_trusted_proxies("not-an-ip").is_err());
    }
}
