//! Per-key request limits by route class (upload, download, api), answered with 429, `Retry-After` and the
//! `RateLimit-*` headers.
//!
//! With Redis the limit is shared by every instance (GCRA on the server, see `cache::redis`); without it, or
//! while Redis fails, each instance limits on its own with `governor` — the same algorithm, so a Redis outage
//! loosens the limit to one per instance instead of dropping it.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::cache::{Cache, RateDecision};
use crate::config::RateLimitConfig;

/// What a request is limited as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteClass {
    Upload,
    Download,
    Api,
}

impl RouteClass {
    pub(crate) fn name(self) -> &'static str {
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

/// A request's allowance as a limit decided it.
pub(crate) struct Verdict {
    /// Requests allowed a minute.
    pub(crate) per_minute: u32,
    pub(crate) decision: RateDecision,
}

impl Limits {
    /// Counts one request of `class` by `who` (a key, or a client address) against its limit: with Redis on the
    /// server, shared by every instance, else (or while Redis fails) on this instance. `None` when the class is
    /// not limited.
    pub(crate) async fn check(&self, cache: &Cache, class: RouteClass, who: &str) -> Option<Verdict> {
        let limit = self.class(class)?;
        let key = format!("{}:{who}", class.name());
        let decision = match cache.is_shared() {
            true => {
                let interval = Duration::from_secs(60) / limit.per_minute;
                match cache.rate_limit(&key, interval, limit.per_minute).await {
                    Some(decision) => decision,
                    None => local_decision(limit, &key),
                }
            }
            false => local_decision(limit, &key),
        };
        Some(Verdict { per_minute: limit.per_minute, decision })
    }
}
