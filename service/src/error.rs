//! The service's one error type. A handler, an extractor or a middleware returns [`ApiError`]; its
//! `IntoResponse` sets the status and the headers the status needs and attaches an [`ErrorReport`], which the
//! HTTP layer's `shape_errors` turns into the JSON body every error has.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::blob::BlobError;
use crate::db::DbError;

/// What went wrong, in the `code` of every error body: one name per kind of failure, stable for clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ErrorCode {
    BadRequest,
    BodyTimeout,
    BodyTooLarge,
    Conflict,
    DatabaseUnavailable,
    FileNotDeleted,
    FileNotFound,
    FileTooLarge,
    FileTypeDenied,
    Forbidden,
    InternalError,
    InvalidApiKey,
    InvalidAuthorization,
    InvalidBody,
    InvalidCursor,
    InvalidExpiry,
    InvalidHeader,
    InvalidMaxDownloads,
    InvalidMultipart,
    InvalidName,
    InvalidQuery,
    InvalidQuota,
    InvalidTags,
    InvalidVisibility,
    KeyNotFound,
    MethodNotAllowed,
    MissingApiKey,
    NoThumbnail,
    Overloaded,
    PreconditionFailed,
    ProfileInProgress,
    QuotaExceeded,
    RangeNotSatisfiable,
    RateLimited,
    RequestFailed,
    RouteNotFound,
    ShareNotFound,
    TooManyRefusals,
    UndecodableImage,
    UnsupportedMediaType,
    UploadInterrupted,
    UserExists,
    UserNotFound,
}

/// The code as clients see it: its name in the error body, written by serde (`invalid-query`, …).
impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        serde::Serialize::serialize(self, f)
    }
}

/// The body of every error response.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    pub(crate) code: ErrorCode,
    /// For people; may change between versions.
    pub(crate) message: String,
    /// The request's `x-request-id`, to find it in the service's log.
    pub(crate) request_id: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// 400 with a specific code (`invalid-header`, `invalid-query`, …).
    #[error("{1}")]
    BadRequest(ErrorCode, String),
    /// 401; the code says what was wrong with the credentials.
    #[error("a valid API key is required")]
    Unauthorized(ErrorCode),
    #[error("{0}")]
    Forbidden(String),
    /// 404; the code names what was not found.
    #[error("{1}")]
    NotFound(ErrorCode, String),
    #[error("{1}")]
    Conflict(ErrorCode, String),
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
    Unprocessable(ErrorCode, String),
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

    fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(code, _)
            | ApiError::Unauthorized(code)
            | ApiError::NotFound(code, _)
            | ApiError::Conflict(code, _)
            | ApiError::Unprocessable(code, _) => *code,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::PreconditionFailed => ErrorCode::PreconditionFailed,
            ApiError::PayloadTooLarge(_) => ErrorCode::FileTooLarge,
            ApiError::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            ApiError::UnsupportedMediaType(_) => ErrorCode::FileTypeDenied,
            ApiError::RangeNotSatisfiable(_) => ErrorCode::RangeNotSatisfiable,
            ApiError::RateLimited(_) => ErrorCode::RateLimited,
            ApiError::TooManyRefusals(_) => ErrorCode::TooManyRefusals,
            ApiError::Unavailable(_) => ErrorCode::DatabaseUnavailable,
            ApiError::Overloaded => ErrorCode::Overloaded,
            ApiError::BodyTooLarge(_) => ErrorCode::BodyTooLarge,
            ApiError::BodyTimeout => ErrorCode::BodyTimeout,
            ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    pub(crate) fn file_not_found() -> Self {
        ApiError::NotFound(ErrorCode::FileNotFound, "file not found".into())
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
                ApiError::Conflict(ErrorCode::Conflict, "the change conflicts with existing data".into())
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

/// What `shape_errors` needs from an error response.
#[derive(Clone)]
pub(crate) struct ErrorReport {
    pub(crate) code: ErrorCode,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_written_as_its_name() {
        for (code, name) in [
            (ErrorCode::InvalidMaxDownloads, "invalid-max-downloads"),
            (ErrorCode::TooManyRefusals, "too-many-refusals"),
            (ErrorCode::Overloaded, "overloaded"),
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), name);
            assert_eq!(code.to_string(), name);
        }
    }
}
