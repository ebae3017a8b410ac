//! The audit middleware: what an API call is called in the audit log, and recording it.

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use http::{Method, StatusCode, header};
use uuid::Uuid;

use super::client_ip::{ClientIp, client_ip};
use crate::audit::AuditFacts;
use crate::domain::audit::AuditEvent;
use crate::state::AppState;

/// What an API call is called in the audit log, and whether it is recorded whatever its outcome
/// (reads that succeed are not: they are what metrics are for).
fn action(method: &Method, route: &str) -> (&'static str, bool) {
    match (method.as_str(), route) {
        ("POST", "/api/v1/files") => ("file.upload", true),
        ("GET" | "HEAD", "/api/v1/files/{id}/content") => ("file.download", true),
        ("PATCH", "/api/v1/files/{id}") => ("file.update", true),
        ("DELETE", "/api/v1/files/{id}") => ("file.delete", true),
        ("POST", "/api/v1/files/{id}/restore") => ("file.restore", true),
        ("POST", "/api/v1/files/{id}/purge") => ("file.purge", true),
        ("POST", "/api/v1/files/{id}/share") => ("share.create", true),
        ("DELETE", "/api/v1/shares/{id}") => ("share.revoke", true),
        ("GET" | "HEAD", "/s/{token}") => ("share.download", true),
        ("POST", "/api/v1/users") => ("user.create", true),
        ("PATCH", "/api/v1/users/{id}") => ("user.update", true),
        ("POST", "/api/v1/users/{id}/keys") => ("key.issue", true),
        ("DELETE", "/api/v1/users/{id}/keys/{key_id}") => ("key.revoke", true),
        _ => ("api.read", false),
    }
}

/// Authenticates the caller when a key is sent (so the audit knows who acted), runs the request,
/// and records it: always for changes and downloads, and for anything refused (401/403).
pub(crate) async fn audit_requests(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let (action, always) = action(request.method(), &route);
    let peer = request.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let client = client_ip(peer, request.headers(), &state.config.server.trusted_proxies);
    // Inner layers (the rate limit) key on the same address without resolving it again.
    request.extensions_mut().insert(ClientIp(client));
    let ip = client.map(|ip| ip.to_string());
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect::<String>());
    // The id in /api/v1/files/{id}/…; other ids (users, keys, shares) are not file ids.
    let path_file = if route.starts_with("/api/v1/files/{id}") {
        request.uri().path().split('/').nth(4).and_then(|s| Uuid::parse_str(s).ok())
    } else {
        None
    };

    let (parts, body) = request.into_parts();
    let mut parts = parts;
    // Only the key-protected API looks at keys; a share link works whatever Authorization header comes along.
    let identify = route.starts_with("/api/") || route.starts_with("/debug/");
    let presented = if identify { super::auth::caller_if_presented(&state, &mut parts).await } else { Ok(None) };
    let caller = match presented {
        Ok(Some((caller, fresh))) => {
            if fresh {
                // The first use of a key in a while: the closest thing an API has to a login.
                let e = event(Some(caller.user.id), "auth.key_used", None, &ip, &user_agent, StatusCode::OK, None);
                state.audit.record(e).await;
            }
            Some(caller)
        }
        Ok(None) => None,
        Err(rejection) => {
            let response = axum::response::IntoResponse::into_response(rejection);
            // An address refused too often is answered 429 without a row each: a flood of bad keys cannot
            // grow the log by more than `rate_limit.refusals_per_minute` rows per address and minute.
            if response.status() != StatusCode::TOO_MANY_REQUESTS {
                let event = event(None, "auth.denied", path_file, &ip, &user_agent, response.status(), None);
                state.audit.record(event).await;
            }
            return response;
        }
    };
    request = Request::from_parts(parts, body);
    let response = next.run(request).await;

    let status = response.status();
    let denied = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    if always || denied {
        let facts = response.extensions().get::<AuditFacts>().copied().unwrap_or_default();
        let bytes = facts.bytes.or_else(|| {
            (action.ends_with("download") && status.is_success())
                .then(|| response.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok())
                .flatten()
        });
        let action = if denied && !always { "auth.denied" } else { action };
        let user = caller.map(|c| c.user.id);
        state.audit.record(event(user, action, facts.file_id.or(path_file), &ip, &user_agent, status, bytes)).await;
    }
    response
}

fn event(
    user_id: Option<Uuid>,
    action: &str,
    file_id: Option<Uuid>,
    ip: &Option<String>,
    user_agent: &Option<String>,
    status: StatusCode,
    bytes: Option<i64>,
) -> AuditEvent {
    AuditEvent {
        timestamp: Utc::now(),
        user_id,
        action: action.to_owned(),
        file_id,
        ip_address: ip.clone(),
        user_agent: user_agent.clone(),
        status: status.as_u16(),
        bytes,
        detail: None,
    }
}
