//! Keyset pagination of list endpoints: `?limit=` (1–500) and `?after=<cursor>`. The answer is the
//! usual `{"data": [...]}` plus `"next"` when more rows follow; without parameters the full list is
//! returned (and cached) as before, up to [`MAX_UNPAGED_ROWS`]: a longer list answers 400 telling the
//! client to page. A cursor is an opaque string that encodes the last row's id.

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::cache::{Cache, CacheKey};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{DataList, JsonBytes};

/// Largest page.
pub const MAX_LIMIT: i64 = 500;

/// Most rows a list returns without pagination parameters. Past it the request is refused (400
/// `invalid_argument`, nothing cached) instead of building, caching and sending an unbounded body
/// (a 100,000-product catalog is ~25 MB of JSON): the client pages with `?limit=` and `?after=`.
pub const MAX_UNPAGED_ROWS: i64 = 1000;

/// The pagination parameters of a request, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1–500. Without it (and without `after`) the whole list is returned, at most
    /// 1,000 rows (a longer list is 400: page it).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// The `next` cursor of the previous page.
    #[param(pattern = "^([0-9a-f]{2})+$")]
    after: Option<String>,
}

/// What one list query should return: rows after `after`, at most `limit` (`None`: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<A> {
    pub after: Option<A>,
    pub limit: Option<i64>,
}

impl<A> Page<A> {
    /// The whole list: at most [`MAX_UNPAGED_ROWS`] rows plus one, which tells a list that is too
    /// long to be sent whole (see [`whole`]).
    pub fn all() -> Page<A> {
        Page {
            after: None,
            limit: Some(MAX_UNPAGED_ROWS + 1),
        }
    }
}

/// The rows of an unpaged list, or 400 when there are more than [`MAX_UNPAGED_ROWS`].
pub fn whole<T>(rows: Vec<T>) -> ApiResult<Vec<T>> {
    if rows.len() > MAX_UNPAGED_ROWS as usize {
        return Err(ApiError::invalid_with(
            format!(
                "this list has more than {MAX_UNPAGED_ROWS} rows; page through it with \
                 ?limit=1..{MAX_LIMIT} and the ?after= cursor of each answer"
            ),
            serde_json::json!({ "max_unpaged_rows": MAX_UNPAGED_ROWS, "max_limit": MAX_LIMIT }),
        ));
    }
    Ok(rows)
}

/// A row that can be paged through: its id, as the cursor encodes it.
pub trait Keyed {
    fn cursor_key(&self) -> String;
}

pub fn encode_cursor(key: &str) -> String {
    hex::encode(key.as_bytes())
}

fn decode_cursor(cursor: &str) -> Option<String> {
    let lowercase_hex = cursor
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if cursor.is_empty() || !lowercase_hex {
        return None;
    }
    String::from_utf8(hex::decode(cursor).ok()?).ok()
}

impl<S: Send + Sync> FromRequestParts<S> for PageQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // The common case, the whole (cached) list: nothing to parse, no map to build.
        if parts.uri.query().is_none() {
            return Ok(PageQuery::default());
        }
        let Query(params) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("invalid query string"))?;
        let limit = match params.get("limit") {
            None => None,
            Some(text) => match text.trim().parse::<i64>() {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Some(limit),
                _ => {
                    return Err(ApiError::invalid(
                        "invalid limit, must be between 1 and 500",
                    ));
                }
            },
        };
        let after = match params.get("after") {
            None => None,
            Some(cursor) => {
                Some(decode_cursor(cursor).ok_or_else(|| ApiError::invalid("invalid cursor"))?)
            }
        };
        Ok(PageQuery { limit, after })
    }
}

impl PageQuery {
    pub fn requested(&self) -> bool {
        self.limit.is_some() || self.after.is_some()
    }

    /// The page to fetch: one row more than asked, to learn whether another page follows.
    fn page_to_fetch<A: FromStr>(&self) -> ApiResult<Page<A>> {
        let after = match &self.after {
            None => None,
            Some(key) => Some(
                key.parse::<A>()
                    .map_err(|_| ApiError::invalid("invalid cursor"))?,
            ),
        };
        Ok(Page {
            after,
            limit: Some(self.limit.unwrap_or(MAX_UNPAGED_ROWS) + 1),
        })
    }
}

/// Answers a list endpoint: the cached full list without pagination parameters, otherwise one
/// page straight from the database.
pub async fn list<T, A, F, Fut>(
    cache: &Cache,
    key: &CacheKey,
    query: &PageQuery,
    load: F,
) -> ApiResult<Response>
where
    T: Serialize + Keyed,
    A: FromStr,
    F: FnOnce(Page<A>) -> Fut,
    Fut: Future<Output = ApiResult<Vec<T>>>,
{
    if !query.requested() {
        let body = cache
            .get_or_load(key, || async {
                Ok(DataList::new(whole(load(Page::all()).await?)?))
            })
            .await?;
        return Ok(JsonBytes(body).into_response());
    }
    uncached(query, load).await
}

/// Like [`list`], for the list of one owner named in the path (a user's cart, an order's items, a
/// category's products): an empty list is cached only when the owner exists, so path ids that
/// name nothing — a scan of random ids — never create cache entries; they are answered with an
/// empty list from the database.
pub async fn list_of_owner<T, A, F, Fut, E, EFut>(
    cache: &Cache,
    key: &CacheKey,
    query: &PageQuery,
    owner_exists: E,
    load: F,
) -> ApiResult<Response>
where
    T: Serialize + Keyed,
    A: FromStr,
    F: FnOnce(Page<A>) -> Fut,
    Fut: Future<Output = ApiResult<Vec<T>>>,
    E: FnOnce() -> EFut,
    EFut: Future<Output = ApiResult<bool>>,
{
    if query.requested() {
        return uncached(query, load).await;
    }
    let unknown_owner = AtomicBool::new(false);
    let loaded = cache
        .get_or_load(key, || async {
            let rows = whole(load(Page::all()).await?)?;
            if rows.is_empty() && !owner_exists().await? {
                // An error is the one outcome `get_or_load` never stores.
                unknown_owner.store(true, Ordering::Relaxed);
                return Err(ApiError::not_found("unknown owner"));
            }
            Ok(DataList::new(rows))
        })
        .await;
    match loaded {
        Ok(body) => Ok(JsonBytes(body).into_response()),
        Err(_) if unknown_owner.load(Ordering::Relaxed) => {
            Ok(Json(DataList::<T>::new(Vec::new())).into_response())
        }
        Err(error) => Err(error),
    }
}

/// Answers a list endpoint straight from the database: the page asked for, or the whole list.
pub async fn uncached<T, A, F, Fut>(query: &PageQuery, load: F) -> ApiResult<Response>
where
    T: Serialize + Keyed,
    A: FromStr,
    F: FnOnce(Page<A>) -> Fut,
    Fut: Future<Output = ApiResult<Vec<T>>>,
{
    let mut rows = load(query.page_to_fetch()?).await?;
    if query.limit.is_none() {
        rows = whole(rows)?;
    }
    let mut next = None;
    if let Some(limit) = query.limit.and_then(|limit| usize::try_from(limit).ok())
        && rows.len() > limit
    {
        rows.truncate(limit);
        next = rows.last().map(|row| encode_cursor(&row.cursor_key()));
    }
    Ok(Json(DataList { data: rows, next }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(
            decode_cursor(&encode_cursor("user_2abc")).as_deref(),
            Some("user_2abc")
        );
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("6A"), None);
        assert_eq!(decode_cursor(""), None);
        let query = PageQuery {
            limit: Some(7),
            after: Some("x".into()),
        };
        assert!(query.page_to_fetch::<i64>().is_err());
        let query = PageQuery {
            limit: Some(7),
            after: Some("14".into()),
        };
        assert_eq!(
            query.page_to_fetch::<i64>().unwrap(),
            Page {
                after: Some(14),
                limit: Some(8)
            }
        );
    }
}
