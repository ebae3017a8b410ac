//! The rate limit at the HTTP boundary: the request counted in its route's class against its key (or its address), and
//! the 429, `Retry-After` and `RateLimit-*` headers of [`crate::ratelimit`]'s decision.

use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;

use super::client_ip::ClientIp;
use crate::domain::Caller;
use crate::error::ApiError;
use crate::ratelimit::{RouteClass, Verdict};
use crate::state::AppState;

fn secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Applies the limit of `class` to the request's key (or, without a key, its client address), then runs it.
pub(crate) async fn limit(state: &AppState, class: RouteClass, request: Request, next: Next) -> Response {
    let who = match request.extensions().get::<Caller>() {
        Some(caller) => format!("key:{}", caller.key_id),
        None => {
            let ip = request.extensions().get::<ClientIp>().and_then(|c| c.0);
            format!("ip:{}", ip.map(|ip| ip.to_string()).unwrap_or_default())
        }
    };
    let Some(Verdict { per_minute, decision }) = state.limits.check(&state.cache, class, &who).await else {
        return next.run(request).await;
    };
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        let mut refused =
            ApiError::RateLimited(format!("too many {} requests: at most {per_minute} a minute", class.name()))
                .into_response();
        refused
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs_up(decision.retry_after).max(1)));
        refused
    };
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(per_minute));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(secs_up(decision.reset)));
    response
}
