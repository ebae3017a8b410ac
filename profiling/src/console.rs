//! The tokio-console layer: task and resource instrumentation served over gRPC for `tokio-console`.
//!
//! It needs tokio built with `--cfg tokio_unstable` (set in the workspace's `.cargo/config.toml`; a
//! `RUSTFLAGS` variable replaces that list and must repeat the cfg). Add it unfiltered beside the other
//! layers and give those their own filters: when it is absent, tokio's trace-level callsites stay disabled
//! and cost nothing on the hot path.

use std::net::SocketAddr;

use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// A console layer whose server listens on `addr` (served from its own thread).
pub fn console_layer<S>(addr: SocketAddr) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    console_subscriber::ConsoleLayer::builder().server_addr(addr).spawn()
}
