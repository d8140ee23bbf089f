//! HTTP plumbing shared by the domains: the JSON body and path extractors that turn every rejection
//! into an [`ApiError`], and the response type for pre-serialized (cached) JSON bodies with their
//! entity tag.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::cache::CachedBody;
use crate::error::ApiError;

/// A JSON request body. A body without `Content-Type` is read as JSON; another media type is 415.
/// Syntax errors and wrong types become 400 `invalid_argument`, naming the field where one is known.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

fn is_json_media_type(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses JSON bytes into `T`, with client-facing messages.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::invalid_with(
                "malformed JSON body",
                serde_json::json!({ "line": inner.line(), "column": inner.column() }),
            )
        } else if path.is_empty() || path == "." {
            ApiError::invalid_with(
                "invalid JSON body",
                serde_json::json!({ "error": inner.to_string() }),
            )
        } else {
            ApiError::invalid_with(
                format!("invalid value for {path}"),
                serde_json::json!({ "field": path, "error": inner.to_string() }),
            )
        }
    })?;
    deserializer.end().map_err(|error| {
        ApiError::invalid_with(
            "malformed JSON body",
            serde_json::json!({ "line": error.line(), "column": error.column() }),
        )
    })?;
    Ok(value)
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(content_type) = request.headers().get(header::CONTENT_TYPE)
            && !is_json_media_type(content_type)
        {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge
                    } else {
                        ApiError::invalid(format!("could not read the request body: {rejection}"))
                    }
                })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Path parameters, parsed with axum's `Path`; a parameter of the wrong type (a non-integer id) is
/// 400 `invalid_argument`.
#[derive(Debug, Clone)]
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathParams(value))
            .map_err(|rejection: PathRejection| match rejection {
                PathRejection::FailedToDeserializePathParams(error) => {
                    let text = error.body_text();
                    ApiError::invalid_with(
                        "invalid path parameter: ids must be integers",
                        serde_json::json!({ "error": text }),
                    )
                }
                other => ApiError::internal(anyhow::anyhow!("path extraction failed: {other}")),
            })
    }
}

/// A JSON body that is already serialized (e.g. taken from the cache), answered with its strong
/// `ETag`; `If-None-Match` is evaluated by the edge (see [`crate::http::layers`]) once the handler
/// has answered 200, i.e. after every authorization check.
#[derive(Debug, Clone)]
pub struct JsonBytes(pub CachedBody);

impl IntoResponse for JsonBytes {
    fn into_response(self) -> Response {
        let (body, etag) = self.0.into_parts();
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::ETAG, etag),
            ],
            body,
        )
            .into_response()
    }
}

/// `{"data": [...]}`, the collection wrapper of the contract; `next` is the cursor of the following
/// page when a paginated list has more rows.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DataList<T> {
    pub data: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl<T> DataList<T> {
    pub fn new(data: Vec<T>) -> Self {
        DataList { data, next: None }
    }
}

/// `{"id": …}`, the answer of updates and deletes.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct IdResponse<I> {
    pub id: I,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        price: Option<i64>,
    }

    #[test]
    fn wrong_type_names_the_field() {
        let error = parse_json::<Sample>(br#"{"price": "x"}"#).unwrap_err();
        assert_eq!(error.to_string(), "invalid value for price");
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        let error = parse_json::<Sample>(br#"{"price": "#).unwrap_err();
        assert_eq!(error.to_string(), "malformed JSON body");
        let error = parse_json::<Sample>(br#"{} x"#).unwrap_err();
        assert_eq!(error.to_string(), "malformed JSON body");
    }

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json_media_type(&HeaderValue::from_static(ok)), "{ok}");
        }
        assert!(!is_json_media_type(&HeaderValue::from_static("text/plain")));
    }
}
