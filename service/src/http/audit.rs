//! The audit at the HTTP boundary, in the order a request meets it: the client's address, the caller (a
//! presented key), and the record of what the request did under its route's policy.

use std::net::IpAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::response::Response;
use chrono::Utc;
use http::{Extensions, HeaderMap, HeaderValue, StatusCode, Uri, header};
use uuid::Uuid;

use super::client_ip::{ClientIp, client_ip};
use super::policy::Policy;
use crate::audit::{Action, AuditFacts};
use crate::domain::Caller;
use crate::domain::audit::AuditEvent;
use crate::state::AppState;

/// Resolves the client's address once, for what follows: authentication's refusal counting, the rate limit
/// and the audit.
pub(crate) fn resolve_client(state: &AppState, request: &mut Request) {
    let peer = request.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let client = client_ip(peer, request.headers(), &state.config.server.trusted_proxies);
    request.extensions_mut().insert(ClientIp(client));
}

/// Who sent a request, as the audit log records it. Taken before the request runs, for every request; it is
/// written out as text only for the requests that are recorded.
pub(crate) struct Origin {
    ip: Option<IpAddr>,
    user_agent: Option<HeaderValue>,
    /// The id in /api/v1/files/{id}/…; other ids (users, keys, shares) are not file ids.
    path_file: Option<Uuid>,
    /// The caller, once authenticated.
    user: Option<Uuid>,
}

impl Origin {
    pub(crate) fn of(uri: &Uri, headers: &HeaderMap, extensions: &Extensions) -> Self {
        let route = extensions.get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or_default();
        let path_file = if route.starts_with("/api/v1/files/{id}") {
            uri.path().split('/').nth(4).and_then(|s| Uuid::parse_str(s).ok())
        } else {
            None
        };
        Origin {
            ip: extensions.get::<ClientIp>().and_then(|c| c.0),
            user_agent: headers.get(header::USER_AGENT).cloned(),
            path_file,
            user: extensions.get::<Caller>().map(|c| c.user.id),
        }
    }

    fn event(&self, user_id: Option<Uuid>, action: Action, file_id: Option<Uuid>, status: StatusCode) -> AuditEvent {
        AuditEvent {
            timestamp: Utc::now(),
            user_id,
            action: action.as_str().to_owned(),
            file_id,
            ip_address: self.ip.map(|ip| ip.to_string()),
            user_agent: self
                .user_agent
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(512).collect::<String>()),
            status: status.as_u16(),
            bytes: None,
            detail: None,
        }
    }
}

/// Authenticates the caller when the route looks at keys and one is sent, so the audit and the rate limit know
/// who acts; a key's first use in a while and a refused key are recorded here. A refusal is the response.
pub(crate) async fn identify(state: &AppState, policy: Policy, request: Request) -> Result<Request, Response> {
    if !policy.identify {
        return Ok(request);
    }
    let (mut parts, body) = request.into_parts();
    match super::auth::caller_if_presented(state, &mut parts).await {
        Ok(Some((caller, fresh))) => {
            if fresh {
                let event = Origin::of(&parts.uri, &parts.headers, &parts.extensions).event(
                    Some(caller.user.id),
                    Action::KeyUsed,
                    None,
                    StatusCode::OK,
                );
                state.audit.record(event).await;
            }
        }
        Ok(None) => {}
        Err(rejection) => {
            let response = axum::response::IntoResponse::into_response(rejection);
            // An address refused too often is answered 429 without a row each: a flood of bad keys cannot
            // grow the log by more than `rate_limit.refusals_per_minute` rows per address and minute.
            if response.status() != StatusCode::TOO_MANY_REQUESTS {
                let origin = Origin::of(&parts.uri, &parts.headers, &parts.extensions);
                state.audit.record(origin.event(None, Action::Denied, origin.path_file, response.status())).await;
            }
            return Err(response);
        }
    }
    Ok(Request::from_parts(parts, body))
}

/// What the audit log records of a request from `origin` that got `response`: always the route's action
/// (changes and downloads), and anything refused (401/403).
pub(crate) fn event_of(policy: Policy, origin: Origin, response: &Response) -> Option<AuditEvent> {
    let status = response.status();
    let denied = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    let action = match policy.action {
        Some(action) => action,
        None if denied => Action::Denied,
        None => return None,
    };
    let facts = response.extensions().get::<AuditFacts>().copied().unwrap_or_default();
    let bytes = facts.bytes.or_else(|| {
        (action.is_download() && status.is_success())
            .then(|| response.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok())
            .flatten()
    });
    let mut event = origin.event(origin.user, action, facts.file_id.or(origin.path_file), status);
    event.bytes = bytes;
    Some(event)
}
