//! Per-key request limits by route class (upload, download, api), answered with 429, `Retry-After` and the
//! `RateLimit-*` headers.
//!
//! With Redis the limit is shared by every instance (GCRA on the server, see `cache::redis`); without it, or
//! while Redis fails, each instance limits on its own with `governor` — the same algorithm, so a Redis outage
//! loosens the limit to one per instance instead of dropping it.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderValue, Method};

use crate::audit::ClientIp;
use crate::cache::RateDecision;
use crate::config::RateLimitConfig;
use crate::domain::Caller;
use crate::http::{ApiError, AppState};

/// What a request is limited as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteClass {
    Upload,
    Download,
    Api,
}

impl RouteClass {
    fn of(method: &Method, route: &str) -> Option<Self> {
        match (method.as_str(), route) {
            ("POST", "/api/v1/files") => Some(RouteClass::Upload),
            ("GET" | "HEAD", "/api/v1/files/{id}/content" | "/s/{token}") => Some(RouteClass::Download),
            (_, r) if r.starts_with("/api/") || r.starts_with("/debug/") => Some(RouteClass::Api),
            // Health, metrics and the API description are for machines that must not be limited.
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RouteClass::Upload => "upload",
            RouteClass::Download => "download",
            RouteClass::Api => "api",
        }
    }
}

type Local = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

struct Class {
    per_minute: u32,
    local: Local,
}

/// The limits of one instance.
pub(crate) struct Limits {
    upload: Option<Class>,
    download: Option<Class>,
    api: Option<Class>,
}

impl Limits {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        let class = |per_minute: u32| {
            NonZeroU32::new(per_minute).map(|n| Class {
                per_minute,
                local: RateLimiter::keyed(Quota::per_minute(n)).with_middleware::<StateInformationMiddleware>(),
            })
        };
        Self {
            upload: class(config.upload_per_minute),
            download: class(config.download_per_minute),
            api: class(config.api_per_minute),
        }
    }

    fn class(&self, class: RouteClass) -> Option<&Class> {
        match class {
            RouteClass::Upload => self.upload.as_ref(),
            RouteClass::Download => self.download.as_ref(),
            RouteClass::Api => self.api.as_ref(),
        }
    }

    /// Drops the state of keys that are back to a full allowance, so memory follows active keys only.
    pub(crate) fn forget_idle(&self) {
        for class in [&self.upload, &self.download, &self.api].into_iter().flatten() {
            class.local.retain_recent();
        }
    }
}

fn local_decision(class: &Class, key: &str) -> RateDecision {
    let clock = DefaultClock::default();
    match class.local.check_key(&key.to_owned()) {
        Ok(state) => {
            let interval = Duration::from_secs(60) / class.per_minute;
            let remaining = state.remaining_burst_capacity();
            let used = class.per_minute.saturating_sub(remaining);
            RateDecision { allowed: true, remaining, retry_after: Duration::ZERO, reset: interval * used }
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(clock.now());
            RateDecision { allowed: false, remaining: 0, retry_after: wait, reset: wait }
        }
    }
}

fn secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Applies the limit of the request's class to its key (or, without a key, its client address).
pub(crate) async fn limit_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str()).unwrap_or_default();
    let Some(class) = RouteClass::of(request.method(), route) else { return next.run(request).await };
    let Some(limit) = state.limits.class(class) else { return next.run(request).await };
    let who = match request.extensions().get::<Caller>() {
        Some(caller) => format!("key:{}", caller.key_id),
        None => {
            let ip = request.extensions().get::<ClientIp>().and_then(|c| c.0);
            format!("ip:{}", ip.map(|ip| ip.to_string()).unwrap_or_default())
        }
    };
    let key = format!("{}:{who}", class.name());
    let decision = match state.cache.is_shared() {
        true => {
            let interval = Duration::from_secs(60) / limit.per_minute;
            match state.cache.rate_limit(&key, interval, limit.per_minute).await {
                Some(decision) => decision,
                None => local_decision(limit, &key),
            }
        }
        false => local_decision(limit, &key),
    };
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        let mut refused =
            ApiError::RateLimited(format!("too many {} requests: at most {} a minute", class.name(), limit.per_minute))
                .into_response();
        refused
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs_up(decision.retry_after).max(1)));
        refused
    };
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(limit.per_minute));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(secs_up(decision.reset)));
    response
}
