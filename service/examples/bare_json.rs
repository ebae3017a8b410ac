//! The floor for `GET /api/v1/files/{id}`: a bare axum handler returning the same JSON from memory.
//!
//! No auth, no cache, no database: what remains is HTTP parsing, routing and writing the body.
//! `ci/scripts/meta-get-throughput.sh` runs it beside the real service so their ratio is measured in one run.
//!
//!     cargo run --release -p filewallball --example bare_json -- 127.0.0.1:18090 '{"id":"…"}'

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18090".to_owned());
    let body: &'static str = Box::leak(args.next().unwrap_or_else(|| "{}".to_owned()).into_boxed_str());
    let app = Router::new().route(
        "/api/v1/files/{id}",
        get(move |Path(_id): Path<String>| async move { ([(header::CONTENT_TYPE, "application/json")], body) }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
