//! A cached response body and its strong entity tag, computed once when the entry is made and
//! stored with it (in Redis as a 34-byte prefix of the value), so a hit costs no hashing.

use std::ops::Deref;

use axum::http::HeaderValue;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Length of a stored tag: `"` + 32 hex digits (128 bits of SHA-256) + `"`.
const TAG_LEN: usize = 34;

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

    /// The value kept in Redis: the tag, then the body.
    pub(crate) fn to_stored(&self) -> Vec<u8> {
        let mut stored = Vec::with_capacity(TAG_LEN + self.body.len());
        stored.extend_from_slice(self.etag.as_bytes());
        stored.extend_from_slice(&self.body);
        stored
    }

    /// Reads a Redis value; a value without a tag prefix (written by an older version) is tagged
    /// now.
    pub(crate) fn from_stored(stored: Vec<u8>) -> CachedBody {
        let tagged = stored.len() >= TAG_LEN
            && stored[0] == b'"'
            && stored[TAG_LEN - 1] == b'"'
            && stored[1..TAG_LEN - 1]
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
        let mut all = Bytes::from(stored);
        if !tagged {
            return CachedBody::new(all);
        }
        let body = all.split_off(TAG_LEN);
        match HeaderValue::from_maybe_shared(all) {
            Ok(etag) => CachedBody { body, etag },
            Err(_) => CachedBody::new(body),
        }
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
    fn stored_values_round_trip_with_their_tag() {
        let entry = CachedBody::new(Bytes::from_static(br#"{"data":[]}"#));
        assert_eq!(entry.etag().len(), TAG_LEN);
        let read = CachedBody::from_stored(entry.to_stored());
        assert_eq!(read, entry);
    }

    #[test]
    fn untagged_values_are_tagged_on_read() {
        let read = CachedBody::from_stored(br#"{"id":7}"#.to_vec());
        assert_eq!(read.body().as_ref(), br#"{"id":7}"#);
        assert_eq!(read, CachedBody::new(Bytes::from_static(br#"{"id":7}"#)));
    }

    #[test]
    fn different_bodies_have_different_tags() {
        let a = CachedBody::new(Bytes::from_static(b"{\"id\":1}"));
        let b = CachedBody::new(Bytes::from_static(b"{\"id\":2}"));
        assert_ne!(a.etag(), b.etag());
    }
}
