//! The service's one error type. A handler, an extractor or a middleware returns [`ApiError`]; its
//! `IntoResponse` sets the status and the headers the status needs and attaches an [`ErrorReport`], which the
//! HTTP layer's `shape_errors` turns into the JSON body every error has.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::blob::BlobError;
use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// 400 with a specific code (`invalid-header`, `invalid-query`, …).
    #[error("{1}")]
    BadRequest(&'static str, String),
    /// 401; the code says what was wrong with the credentials.
    #[error("a valid API key is required")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    /// 404; the code names what was not found.
    #[error("{1}")]
    NotFound(&'static str, String),
    #[error("{1}")]
    Conflict(&'static str, String),
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 413: the upload would take the user over their storage quota.
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 with a specific code.
    #[error("{1}")]
    Unprocessable(&'static str, String),
    /// 429; the rate-limit middleware adds `Retry-After`.
    #[error("{0}")]
    RateLimited(String),
    /// 429 before authentication: the client's address was refused too often; carries `Retry-After` seconds.
    #[error("too many refused keys from this address; try again later")]
    TooManyRefusals(u64),
    /// 416 carrying the representation's length for `Content-Range: bytes */len`.
    #[error("range not satisfiable")]
    RangeNotSatisfiable(u64),
    #[error("{0}")]
    Unavailable(String),
    /// 503 with `Retry-After`: more requests are in flight than `server.max_in_flight`.
    #[error("the service is at capacity; retry shortly")]
    Overloaded,
    /// 413: a request body (a JSON body, a form's fields and headers) is larger than its limit.
    #[error("{0}")]
    BodyTooLarge(String),
    /// 408: the request body stopped arriving for `server.body_idle_timeout_secs`.
    #[error("the request body stopped arriving")]
    BodyTimeout,
    /// 500; the detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(..) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(..) => StatusCode::NOT_FOUND,
            ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) | ApiError::QuotaExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::RateLimited(_) | ApiError::TooManyRefusals(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unprocessable(..) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) | ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(code, _)
            | ApiError::Unauthorized(code)
            | ApiError::NotFound(code, _)
            | ApiError::Conflict(code, _)
            | ApiError::Unprocessable(code, _) => code,
            ApiError::Forbidden(_) => "forbidden",
            ApiError::PreconditionFailed => "precondition-failed",
            ApiError::PayloadTooLarge(_) => "file-too-large",
            ApiError::QuotaExceeded(_) => "quota-exceeded",
            ApiError::UnsupportedMediaType(_) => "file-type-denied",
            ApiError::RangeNotSatisfiable(_) => "range-not-satisfiable",
            ApiError::RateLimited(_) => "rate-limited",
            ApiError::TooManyRefusals(_) => "too-many-refusals",
            ApiError::Unavailable(_) => "database-unavailable",
            ApiError::Overloaded => OVERLOADED,
            ApiError::BodyTooLarge(_) => "body-too-large",
            ApiError::BodyTimeout => "body-timeout",
            ApiError::Internal(_) => "internal-error",
        }
    }

    pub(crate) fn file_not_found() -> Self {
        ApiError::NotFound("file-not-found", "file not found".into())
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(_) | DbError::NotReady => {
                ApiError::Unavailable("the database is unavailable; try again".into())
            }
            DbError::Conflict(constraint) => {
                // The constraint's name is the schema's business: it goes to the log, not to the client.
                tracing::info!(constraint, "a write was refused by a constraint");
                ApiError::Conflict("conflict", "the change conflicts with existing data".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// The code of a request shed past `server.max_in_flight`.
pub(crate) const OVERLOADED: &str = "overloaded";

/// What `shape_errors` needs from an error response.
#[derive(Clone)]
pub(crate) struct ErrorReport {
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) internal: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = self.status().into_response();
        let headers = res.headers_mut();
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::TooManyRefusals(secs) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            ApiError::RangeNotSatisfiable(len) => {
                let value = HeaderValue::try_from(format!("bytes */{len}")).expect("digits are a valid header value");
                headers.insert(header::CONTENT_RANGE, value);
            }
            _ => {}
        }
        let internal = match &self {
            ApiError::Internal(detail) => Some(detail.clone()),
            _ => None,
        };
        res.extensions_mut().insert(ErrorReport { code: self.code(), message: self.to_string(), internal });
        res
    }
}
