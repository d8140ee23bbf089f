//! Rate limiting (governor, GCRA): per (API key, client) for the storefront scope — its key is
//! public and shared by every shopper — per key for admin, and per client for unauthenticated
//! calls. `/healthz`, `/readyz` and `/metrics` are exempt.
//!
//! The client is the socket peer, or — when the peer is a trusted proxy (`PLAMATIO_TRUSTED_PROXIES`)
//! — the first `X-Forwarded-For` hop, read from the right, that is not a trusted proxy: everything
//! left of it was written by the client and can say anything. A hop that is not an address
//! (`unknown`, garbage) is the client too, never skipped, or a client could pick its bucket — a fresh
//! one per request, or another client's — by writing entries to its left. An IPv6 client is limited
//! per /64 (the block one subscriber gets; it holds 2^64 addresses to rotate through), an IPv4
//! client per address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
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
use crate::error::error_response;
use crate::http::auth::Scope;

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

    /// The client a request is limited as (see the module docs): an IPv4 address, an IPv6 /64, or
    /// `unparsable:<hop>` for a forwarded hop that is not an address.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> String {
        let Some(peer) = peer.map(|ip| ip.to_canonical()) else {
            return "unknown".into();
        };
        if !self.is_trusted(peer) {
            return client_bucket(peer);
        }
        let hops: Vec<ForwardedHop> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| match value.to_str() {
                Ok(text) => text.split(',').map(ForwardedHop::parse).collect::<Vec<_>>(),
                Err(_) => vec![ForwardedHop::Unparsable("non-ascii".into())],
            })
            .collect();
        for hop in hops.iter().rev() {
            match hop {
                ForwardedHop::Address(ip) if self.is_trusted(*ip) => continue,
                ForwardedHop::Address(ip) => return client_bucket(*ip),
                ForwardedHop::Unparsable(text) => return format!("unparsable:{text}"),
            }
        }
        // Only trusted proxies on the way (or no header): the farthest one is the client.
        match hops.first() {
            Some(ForwardedHop::Address(ip)) => client_bucket(*ip),
            _ => client_bucket(peer),
        }
    }
}

/// One entry of `X-Forwarded-For`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ForwardedHop {
    Address(IpAddr),
    /// Not an address; kept (shortened) as the client's name.
    Unparsable(String),
}

impl ForwardedHop {
    /// Reads `203.0.113.7`, `2001:db8::1`, and the forms with a port some proxies write
    /// (`203.0.113.7:5123`, `[2001:db8::1]:5123`, `[2001:db8::1]`).
    fn parse(text: &str) -> ForwardedHop {
        let text = text.trim();
        let bracketed = text
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'));
        let address = text
            .parse::<IpAddr>()
            .ok()
            .or_else(|| text.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
            .or_else(|| bracketed.and_then(|inner| inner.parse::<IpAddr>().ok()));
        match address {
            Some(ip) => ForwardedHop::Address(ip.to_canonical()),
            None => ForwardedHop::Unparsable(text.chars().take(64).collect()),
        }
    }
}

/// The bucket of a client address: the address for IPv4, its /64 for IPv6.
fn client_bucket(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
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

    #[test]
    fn an_unparsable_hop_is_the_client_and_ports_are_dropped() {
        let limits = RateLimits::new(10, parse_trusted_proxies("10.0.0.0/8").unwrap()).unwrap();
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let client_of = |forwarded: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", forwarded.parse().unwrap());
            limits.client_ip(Some(proxy), &headers)
        };
        assert_eq!(
            client_of("198.51.100.7, unknown, 10.1.1.1"),
            "unparsable:unknown"
        );
        assert_eq!(client_of("198.51.100.7, 203.0.113.9:5123"), "203.0.113.9");
        assert_eq!(client_of("[2001:db8:1:2::9]:443"), "2001:db8:1:2::/64");
        assert_eq!(client_of("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(client_of("10.0.0.7, 10.0.0.8"), "10.0.0.7");
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let limits = RateLimits::new(10, vec![]).unwrap();
        let headers = HeaderMap::new();
        let a: IpAddr = "2001:db8:aa:bb:1::1".parse().unwrap();
        let b: IpAddr = "2001:db8:aa:bb:ffff::2".parse().unwrap();
        let c: IpAddr = "2001:db8:aa:bc::1".parse().unwrap();
        assert_eq!(limits.client_ip(Some(a), &headers), "2001:db8:aa:bb::/64");
        assert_eq!(
            limits.client_ip(Some(a), &headers),
            limits.client_ip(Some(b), &headers)
        );
        assert_ne!(
            limits.client_ip(Some(a), &headers),
            limits.client_ip(Some(c), &headers)
        );
    }
}
