//! The HTTP edge: everything between the socket and a domain handler. API keys ([`auth`]) and
//! end-user tokens ([`identity`]), rate limits ([`ratelimit`]), replayed writes ([`idempotency`]),
//! the tower layers around the router ([`layers`]: CORS, timeouts, compression, tracing, metrics;
//! [`middleware`]: their cheap building blocks),
//! request extractors and response bodies ([`extract`]), list paging ([`pagination`]) and the
//! OpenAPI document's shared parts ([`openapi`]). Domain modules use these; none of them owns
//! store data.

pub mod auth;
pub mod extract;
pub mod idempotency;
pub mod identity;
pub mod layers;
pub mod middleware;
pub mod openapi;
pub mod pagination;
pub mod ratelimit;
