//! The audit log: events are queued by requests and written in batches by one background task, off the
//! request path. A full queue makes requests wait rather than lose events, and shutdown drains the queue.

use std::net::IpAddr;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use http::{HeaderMap, Method, StatusCode, header};
use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::db::MetaStore;
use crate::domain::audit::AuditEvent;
use crate::http::AppState;

/// Events written per statement.
const BATCH: usize = 500;
/// How long the writer waits to fill a batch once it has one event.
const LINGER: Duration = Duration::from_millis(100);
/// Events queued before requests start to wait for the writer.
const QUEUE: usize = 10_000;

enum Message {
    Event(AuditEvent),
    /// Answered once every event sent before it is written.
    Flush(oneshot::Sender<()>),
}

/// The handle requests use; cheap to clone.
#[derive(Clone)]
pub(crate) struct AuditLog {
    tx: mpsc::Sender<Message>,
}

impl AuditLog {
    /// Starts the writer task.
    pub(crate) fn start(db: Arc<dyn MetaStore>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(db, rx));
        Self { tx }
    }

    pub(crate) async fn record(&self, event: AuditEvent) {
        if self.tx.send(Message::Event(event)).await.is_err() {
            tracing::error!("audit writer is gone; an event was not recorded");
        }
    }

    /// Waits until everything recorded so far is in the database (or `deadline` passes).
    pub(crate) async fn flush(&self, deadline: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(deadline, wait).await, Ok(Ok(())))
    }
}

async fn write_batches(db: Arc<dyn MetaStore>, mut rx: mpsc::Receiver<Message>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let Some(first) = rx.recv().await else { break };
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        let mut message = Some(first);
        while let Some(m) = message.take() {
            match m {
                Message::Event(e) => batch.push(e),
                Message::Flush(done) => waiting.push(done),
            }
            if batch.len() >= BATCH || !waiting.is_empty() {
                break;
            }
            message = tokio::select! {
                m = rx.recv() => m,
                () = &mut linger => None,
            };
        }
        write(db.as_ref(), &mut batch).await;
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
    write(db.as_ref(), &mut batch).await;
}

/// Writes the batch, retrying while the database is unavailable; the batch is kept until it is written.
async fn write(db: &dyn MetaStore, batch: &mut Vec<AuditEvent>) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=10 {
        if batch.is_empty() {
            return;
        }
        match db.insert_audit(batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, events = batch.len(), "audit write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::error!(events = batch.len(), "audit events kept in memory: the database keeps refusing them");
}

/// Parsed `server.trusted_proxies`.
pub(crate) fn parse_proxies(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            IpNet::from_str(s)
                .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
                .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
        })
        .collect()
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the nearest address
/// in `X-Forwarded-For` that is not one (clients can prepend anything, so only trusted hops are skipped).
pub(crate) fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        match IpAddr::from_str(hop) {
            Ok(ip) if is_trusted(&ip) => nearest = ip,
            Ok(ip) => return Some(ip),
            // A hop that does not parse ends what can be believed.
            Err(_) => break,
        }
    }
    Some(nearest)
}

/// The client's address as [`client_ip`] resolved it for this request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub(crate) Option<IpAddr>);

/// Facts a handler knows and the audit middleware does not: the file it created, the bytes it took.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AuditFacts {
    pub(crate) file_id: Option<Uuid>,
    pub(crate) bytes: Option<i64>,
}

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
    let client = client_ip(peer, request.headers(), &state.trusted_proxies);
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
    let presented = if identify { crate::auth::caller_if_presented(&state, &mut parts).await } else { Ok(None) };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = parse_proxies(&["10.0.0.0/8".into(), "192.168.1.1".into()]).unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        // From a stranger the header is ignored.
        assert_eq!(client_ip(Some(stranger), &xff("1.2.3.4"), &trusted), Some(stranger));
        // Through our proxy the nearest untrusted hop is the client; what the client prepended is ignored.
        assert_eq!(client_ip(Some(proxy), &xff("6.6.6.6, 1.2.3.4, 10.9.9.9"), &trusted), "1.2.3.4".parse().ok());
        // Garbage ends the believable part.
        assert_eq!(client_ip(Some(proxy), &xff("1.2.3.4, junk"), &trusted), Some(proxy));
        assert!(parse_proxies(&["not-an-ip".into()]).is_err());
    }
}
