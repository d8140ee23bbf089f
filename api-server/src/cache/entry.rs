//! A cached response body and its strong entity tag, computed once when the entry is made (or read
//! from Redis into the in-process tier) and kept beside it, so an in-process hit costs no hashing.
//! Redis holds the body alone (see [`CachedBody::stored`]).

use std::ops::Deref;

use axum::http::HeaderValue;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// A serialized JSON body with its `ETag` (cheap to clone: both share their bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedBody {
    body: Bytes,
    etag: HeaderValue,
}

impl CachedBody {
    /// Tags a body: the first 128 bits of its SHA-256, as a quoted strong entity tag.
    pub fn new(body: Bytes) -> CachedBody {
        let digest = Sha256::digest(&body);
        let tag = format!("\"{}\"", hex::encode(&digest[..16]));
        CachedBody {
            etag: HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\"")),
            body,
        }
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The strong entity tag, quoted (`"3f9a…"`).
    pub fn etag(&self) -> &HeaderValue {
        &self.etag
    }

    pub fn into_parts(self) -> (Bytes, HeaderValue) {
        (self.body, self.etag)
    }

    /// The value kept in Redis: the body alone, as every earlier version stored it. Replicas of
    /// two versions share Redis during a rolling upgrade, so the stored format never changes: an
    /// older replica serves what a newer one stored byte for byte, and the reverse.
    pub(crate) fn stored(&self) -> &[u8] {
        &self.body
    }

    /// Reads a Redis value, tagging it. With the in-process tier (the default) this runs once per
    /// entry and replica, when the entry is first read from Redis; hits in process cost no hashing.
    pub(crate) fn from_stored(stored: Vec<u8>) -> CachedBody {
        CachedBody::new(Bytes::from(stored))
    }
}

impl From<Bytes> for CachedBody {
    fn from(body: Bytes) -> CachedBody {
        CachedBody::new(body)
    }
}

impl Deref for CachedBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_holds_the_body_alone_and_reading_it_back_gives_the_same_tag() {
        let entry = CachedBody::new(Bytes::from_static(br#"{"data":[]}"#));
        assert_eq!(entry.stored(), br#"{"data":[]}"#);
        assert_eq!(entry.etag().len(), 34, "quoted 32 hex digits");
        assert_eq!(CachedBody::from_stored(entry.stored().to_vec()), entry);
    }

    #[test]
    fn different_bodies_have_different_tags() {
        let a = CachedBody::new(Bytes::from_static(b"{\"id\":1}"));
        let b = CachedBody::new(Bytes::from_static(b"{\"id\":2}"));
        assert_ne!(a.etag(), b.etag());
    }
}
