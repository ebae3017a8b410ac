//! The middleware that gives every failure the same JSON shape.
//!
//! Handlers return [`ApiError`](crate::error::ApiError); its `IntoResponse` only sets the status and attaches
//! an [`ErrorReport`]. [`shape_errors`] then writes `{"error":{"code","message","request_id"}}` — for our errors and for
//! anything else that failed (axum's own rejections, unknown routes, panics) — and logs server errors once,
//! with the request's span still around.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use crate::error::{ErrorBody, ErrorCode, ErrorDetail, ErrorReport};

/// Longest body of a foreign error response (an axum rejection) read to reuse as the message.
const MAX_FOREIGN_BODY: usize = 4096;

/// Gives every error response the one JSON shape and logs server errors.
pub(crate) async fn shape_errors(request: Request, next: Next) -> Response {
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let sends_body = sends_body(request.headers());
    let mut res = next.run(request).await;
    let status = res.status();
    // A refused request's body may not have been read (a shed upload, a body over its limit): the connection
    // cannot carry another request, and saying so keeps the client from sending one on it as it closes.
    if sends_body && (status.is_client_error() || status.is_server_error()) {
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let report = match res.extensions_mut().remove::<ErrorReport>() {
        Some(report) => report,
        // A JSON body on an error status was written on purpose (readiness reports its checks): keep it.
        None if (status.is_client_error() || status.is_server_error()) && !is_json(&res) => {
            let (parts, body) = res.into_parts();
            let text = axum::body::to_bytes(body, MAX_FOREIGN_BODY).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&text).trim().to_owned();
            res = Response::from_parts(parts, Body::empty());
            foreign_report(status, text)
        }
        None => return res,
    };
    // Shed load is the service doing its job, thousands of times a second past capacity: counted in
    // `http_requests_shed_total`, not logged one by one.
    if status.is_server_error() && report.code != ErrorCode::Overloaded {
        tracing::error!(
            code = %report.code,
            detail = report.internal.as_deref().unwrap_or(""),
            "request failed"
        );
    }
    let body = ErrorBody { error: ErrorDetail { code: report.code, message: report.message, request_id } };
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.remove(header::CONTENT_LENGTH);
    *res.body_mut() = Body::from(serde_json::to_string(&body).expect("an error body serializes"));
    res
}

/// Whether a request has a body to read: a length above 0, or a chunked one.
fn sends_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).is_some_and(|v| v.to_str().map_or(true, |v| v.trim() != "0"))
}

fn is_json(res: &Response) -> bool {
    res.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// A report for an error response that did not come from an [`ApiError`].
fn foreign_report(status: StatusCode, text: String) -> ErrorReport {
    let code = match status {
        StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
        StatusCode::NOT_FOUND => ErrorCode::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::BodyTimeout,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidBody,
        s if s.is_server_error() => ErrorCode::InternalError,
        _ => ErrorCode::RequestFailed,
    };
    let message = if status.is_server_error() || text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let internal = status.is_server_error().then_some(message.clone());
    ErrorReport { code, message, internal }
}
