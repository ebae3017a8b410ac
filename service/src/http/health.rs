//! `/health/live`, `/health/ready` and `/metrics`: what load balancers and Prometheus ask.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(live)).routes(routes!(ready)).routes(routes!(metrics))
}

/// A dependency check that does not answer within this is failed: readiness must answer quickly.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    status: &'static str,
    checks: Vec<Check>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Check {
    name: &'static str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "health", security(), responses((status = 200, body = Health)))]
async fn live() -> Json<Health> {
    Json(Health { status: "ok", checks: Vec::new() })
}

/// Runs one dependency check. The answer, public, says only what failed; the error's own words (addresses,
/// users, the driver's text) go to the log.
async fn check<E: std::fmt::Display>(name: &'static str, f: impl Future<Output = Result<(), E>>) -> Check {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => Check { name, ok: true, error: None },
        Ok(Err(e)) => {
            tracing::warn!(check = name, error = %e, "readiness check failed");
            Check { name, ok: false, error: Some("unreachable".into()) }
        }
        Err(_) => {
            tracing::warn!(check = name, "readiness check timed out");
            Check { name, ok: false, error: Some("timed out".into()) }
        }
    }
}

/// The database and blob store answer (503 otherwise). The cache is checked and reported too, but a cache
/// outage only makes the instance `degraded`: requests still succeed without it, so it stays in rotation.
#[utoipa::path(get, path = "/health/ready", tag = "health", security(),
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (db, cache, blob) = tokio::join!(
        check("database", state.db.ping()),
        check("cache", state.cache.ping()),
        check("blob_store", state.blobs.check()),
    );
    let (status, code) = match (db.ok && blob.ok, cache.ok) {
        (true, true) => ("ok", StatusCode::OK),
        (true, false) => ("degraded", StatusCode::OK),
        (false, _) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
    };
    (code, Json(Health { status, checks: vec![db, cache, blob] }))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "health", security(), responses((status = 200, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.cache.publish_hit_ratios();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], state.metrics.render())
}
