//! The API's one error type and its mapping to HTTP: status, `{code, message, details}` body, and the
//! translation of database failures (constraint names, pool timeouts) into client-facing errors.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// Everything a handler can fail with. The variant decides the status and the `code`; the message is
/// shown to the client only for client errors. Server errors keep their cause for the logs.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidArgument {
        message: String,
        details: Option<Value>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("this API key lacks the {0} scope")]
    PermissionDenied(&'static str),
    #[error("unsupported media type, send application/json")]
    UnsupportedMediaType,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("{0}")]
    Aborted(String),
    /// The request is well-formed but conflicts with an earlier one (422).
    #[error("{0}")]
    Unprocessable(String),
    /// A per-caller bound of a resource is reached (429, with `Retry-After`).
    #[error("{message}")]
    ResourceExhausted {
        message: String,
        retry_after_seconds: u64,
    },
    #[error("service temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// gRPC-style code, e.g. `invalid_argument`, `not_found`.
    pub code: &'static str,
    /// Human-readable text; never contains SQL or internals.
    pub message: String,
    /// Structured extra information, or null.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            message: message.into(),
            details: None,
        }
    }

    pub fn invalid_with(message: impl Into<String>, details: Value) -> Self {
        ApiError::InvalidArgument {
            message: message.into(),
            details: Some(details),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::NotFound(what.into())
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(error.into())
    }

    /// Prefixes a validation message, e.g. with the index of a list item (`data[2]: ...`).
    pub fn prefixed(self, prefix: &str) -> Self {
        match self {
            ApiError::InvalidArgument { message, details } => ApiError::InvalidArgument {
                message: format!("{prefix}: {message}"),
                details,
            },
            other => other,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists(_) | ApiError::FailedPrecondition(_) | ApiError::Aborted(_) => {
                StatusCode::CONFLICT
            }
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::ResourceExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument { .. }
            | ApiError::UnsupportedMediaType
            | ApiError::PayloadTooLarge
            | ApiError::Unprocessable(_) => "invalid_argument",
            ApiError::NotFound(_) => "not_found",
            ApiError::AlreadyExists(_) => "already_exists",
            ApiError::FailedPrecondition(_) => "failed_precondition",
            ApiError::Aborted(_) => "aborted",
            ApiError::ResourceExhausted { .. } => "resource_exhausted",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::PermissionDenied(_) => "permission_denied",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn body(&self) -> ErrorBody {
        let details = match self {
            ApiError::InvalidArgument { details, .. } => details.clone(),
            _ => None,
        };
        ErrorBody {
            code: self.code(),
            message: self.to_string(),
            details,
        }
    }
}

/// Builds the canonical error response for a status that was produced outside a handler (routing,
/// body limits, timeouts), so that every error the API sends has the same JSON shape.
pub fn error_response(status: StatusCode, code: &'static str, message: &str) -> Response {
    let body = ErrorBody {
        code,
        message: message.to_owned(),
        details: None,
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(cause) => {
                tracing::error!(
                    error = format!("{cause:#}"),
                    "request failed with an internal error"
                );
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(
                    error = format!("{cause:#}"),
                    "request failed: service unavailable"
                );
            }
            _ => {}
        }
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::ResourceExhausted {
            retry_after_seconds,
            ..
        } = &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
        }
        response
    }
}

/// What a named constraint means to a client when a statement violates it. Kept in one table so the
/// domains never parse database errors themselves.
fn constraint_error(constraint: &str, restrict_violation: bool) -> Option<ApiError> {
    let error = match constraint {
        "users_pkey" => ApiError::AlreadyExists("user already exists".into()),
        "users_email_lower_key" => ApiError::AlreadyExists("user email already exists".into()),
        "order_items_product_id_fkey" if restrict_violation => {
            ApiError::FailedPrecondition("product is part of an order".into())
        }
        "orders_address_id_fkey" if restrict_violation => {
            ApiError::FailedPrecondition("address is used by an order".into())
        }
        "orders_user_id_fkey" if restrict_violation => {
            ApiError::FailedPrecondition("user has orders".into())
        }
        _ if restrict_violation => {
            ApiError::FailedPrecondition("the row is still referenced by other rows".into())
        }
        "products_price_check" => ApiError::invalid("product price must be greater than 0"),
        "products_previous_price_check" => ApiError::invalid("previous price cannot be negative"),
        "cart_items_quantity_check" => ApiError::invalid("invalid quantity"),
        "order_items_quantity_check" => ApiError::invalid("quantity is required"),
        "orders_total_price_check" => ApiError::invalid("total_price is required"),
        _ => return None,
    };
    Some(error)
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => ApiError::Unavailable(error.into()),
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default().to_string();
                // Class 08 (connection exception), 57P01..57P03 (admin shutdown, crash, cannot connect
                // now), 40001/40P01 (serialization failure, deadlock): the client may retry.
                let transient = code.starts_with("08")
                    || matches!(
                        code.as_str(),
                        "57P01" | "57P02" | "57P03" | "40001" | "40P01"
                    );
                if transient {
                    return ApiError::Unavailable(error.into());
                }
                let restrict_violation =
                    code == "23503" && db.message().starts_with("update or delete on table");
                if let Some(mapped) = db
                    .constraint()
                    .and_then(|name| constraint_error(name, restrict_violation))
                {
                    return mapped;
                }
                match code.as_str() {
                    // A NUL character (or one the database encoding lacks) in a text value.
                    "22021" | "22P05" => {
                        ApiError::invalid("text values must not contain NUL characters")
                    }
                    "23505" => ApiError::AlreadyExists("already exists".into()),
                    "23503" => ApiError::invalid("a referenced row does not exist"),
                    "23514" | "23502" | "22001" | "22003" | "22P02" => {
                        ApiError::invalid("invalid value")
                    }
                    _ => ApiError::Internal(error.into()),
                }
            }
            _ => ApiError::Internal(error.into()),
        }
    }
}

impl From<crate::events::outbox::AppendError> for ApiError {
    fn from(error: crate::events::outbox::AppendError) -> Self {
        use crate::events::outbox::AppendError;
        match error {
            AppendError::Database(error) => ApiError::from(error),
            // The field limits keep every API event far below the payload limit; a request that
            // still produces a larger one carries too much data, and nothing was written.
            AppendError::PayloadTooLarge { limit, .. } => ApiError::invalid_with(
                "the change is too large to publish as one event",
                serde_json::json!({ "max_event_bytes": limit }),
            ),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
