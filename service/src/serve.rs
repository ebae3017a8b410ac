//! Accepting connections: a cap on how many are open, a deadline for each request head (which is also the
//! keep-alive idle timeout), bounded head buffers, and graceful shutdown.
//!
//! `axum::serve` exposes none of hyper's connection settings, so the loop is ours; everything a request
//! meets after its head is read (body idle timeout, admission, limits) lives in the router.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::ServerConfig;
use crate::telemetry::Metrics;

/// The body of the answer to a connection past `server.max_connections`, in the service's error shape.
const REFUSAL_BODY: &str =
    r#"{"error":{"code":"too-many-connections","message":"too many open connections","request_id":""}}"#;

/// What a connection past `server.max_connections` is told before it is closed: no request of it is read.
fn refusal() -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{REFUSAL_BODY}",
        REFUSAL_BODY.len()
    )
    .into_bytes()
}

/// hyper's read buffer for one connection: big enough to read uploads in large chunks, small enough that
/// thousands of connections cannot pin much memory.
const MAX_BUF: usize = 64 * 1024;

/// Largest request head (request line, query string and headers): more is a 431 and the connection closes.
/// Browsers and proxies stop well below this (nginx's default for one header line is 8 KiB).
const MAX_HEAD: usize = 32 * 1024;

/// Headers allowed in one request (hyper's default, named here): more is a 431.
const MAX_HEADERS: usize = 100;

/// How long the loop pauses when accepting fails for lack of descriptors, so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and gives open connections
/// `grace` to finish their requests.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    config: &ServerConfig,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let open = metrics.gauge("http_connections_open", Vec::new());
    let refused = metrics.counter("http_connections_refused_total", Vec::new());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(config.header_read_timeout_secs))
        .max_buf_size(MAX_BUF)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    let graceful = GracefulShutdown::new();
    let refusal = refusal();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.increment(1);
            // A new socket's send buffer is empty, so this goes out whole or not at all; either way it is closed.
            let _ = stream.try_write(&refusal);
            continue;
        };
        // Small responses go out at once rather than waiting to fill a segment.
        let _ = stream.set_nodelay(true);
        let service = tower::ServiceExt::map_request(app.clone(), move |mut request: http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
        let open = open.clone();
        open.increment(1.0);
        tokio::spawn(async move {
            // Timeouts and clients that go away end connections here; they are not the service's errors.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            open.decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(grace_secs = grace.as_secs(), "shutting down: no new connections, finishing requests");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still running after the shutdown grace period; exiting anyway");
    }
}

async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind;
    // A connection that was reset before we took it is the client's business.
    if matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused) {
        return;
    }
    // Out of descriptors (EMFILE/ENFILE) or memory: wait for connections to close instead of spinning.
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_response() {
        let text = String::from_utf8(refusal()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
        assert_eq!(body.len(), length);
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "too-many-connections");
    }
}
