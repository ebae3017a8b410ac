//! The HTTP layer: shared state, the router (one module per resource) and the middleware around it.

mod admin;
mod audit;
mod auth;
mod client_ip;
pub(crate) mod conditional;
mod content;
mod debug;
mod error;
mod files;
mod health;
mod json;
mod openapi;
mod policy;
mod ratelimit;
mod search;
mod share;
mod thumbnails;
mod upload;
mod users;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use chrono::Datelike;
use http::{HeaderValue, header};
use metrics::Label;
use serde::Deserialize as _;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer as SetHeader;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub(crate) use crate::error::ApiError;
pub(crate) use crate::state::AppState;
pub(crate) use json::{JsonObject, whole};
use policy::{ApiRoutes, Governed};

pub(crate) use crate::cache::SEARCH_GENERATION;
use crate::config::Config;
use crate::error::ErrorCode;

/// Admins only; anyone else gets a 403.
pub(crate) fn require_admin(caller: &crate::domain::Caller) -> Result<(), ApiError> {
    if caller.is_admin() { Ok(()) } else { Err(ApiError::Forbidden("this needs an admin key".into())) }
}

/// A page size from a query: `default` when absent, 1 to 1000 otherwise.
pub(crate) fn page_limit(limit: Option<u32>, default: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=1000).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(ErrorCode::InvalidQuery, "limit must be between 1 and 1000".into()))
    }
}

/// A keyset cursor from a query, which must belong to the same order it is used with. An empty one asks for the
/// first page, like an absent one (what a form with a blank field sends).
pub(crate) fn decode_cursor(
    cursor: Option<&str>,
    sort: crate::domain::SortKey,
    order: crate::domain::SortOrder,
) -> Result<Option<crate::domain::Cursor>, ApiError> {
    cursor
        .filter(|c| !c.is_empty())
        .map(|c| {
            crate::domain::Cursor::decode(c).filter(|c| c.sort == sort && c.order == order).ok_or_else(|| {
                ApiError::BadRequest(ErrorCode::InvalidCursor, "the cursor is not valid for this listing".into())
            })
        })
        .transpose()
}

/// A tag filter from a query, normalised like stored tags.
pub(crate) fn tag_filter(tag: Option<&str>) -> Result<Option<String>, ApiError> {
    let normalized = tag
        .map(|t| crate::domain::names::normalize_tags([t]))
        .transpose()
        .map_err(|m| ApiError::BadRequest(ErrorCode::InvalidTags, m))?;
    Ok(normalized.and_then(|t| t.into_iter().next()))
}

/// `deserialize_with` for an optional time or date in a query (RFC 3339, `YYYY-MM-DD`): outside
/// [`STORABLE_YEARS`](crate::domain::STORABLE_YEARS) is a 400, not a 500 from the database.
pub(crate) fn query_time<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Datelike,
{
    match Option::<T>::deserialize(d)? {
        Some(t) if !crate::domain::STORABLE_YEARS.contains(&t.year()) => {
            Err(serde::de::Error::custom("times and dates must fall in the years 1 to 9999"))
        }
        t => Ok(t),
    }
}

/// The whole application: routes, OpenAPI document and middleware.
pub(crate) fn router(state: AppState) -> Router {
    let cors = cors_layer(&state.config);
    let server = &state.config.server;
    let Routes { guarded, governed, open } = routes(&state);
    let shed = state.metrics.counter("http_requests_shed_total", Vec::new());
    let app = guarded
        // The audit and the rate limit, under each route's policy (declared where it is registered).
        .route_layer(middleware::from_fn_with_state(governed, policy::govern))
        // Admission before anything else a request costs (authentication, the audit, the rate limit): past
        // `max_in_flight` requests at once, one more is answered 503 at once instead of waiting in line.
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |_: tower::BoxError| {
                    shed.increment(1);
                    std::future::ready(ApiError::Overloaded)
                }))
                .layer(LoadShedLayer::new())
                .layer(GlobalConcurrencyLimitLayer::new(server.max_in_flight)),
        )
        .merge(open)
        .fallback(|| async { http::StatusCode::NOT_FOUND })
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        // JSON bodies are small; the upload route lifts this for itself and counts its bytes as they stream.
        .layer(DefaultBodyLimit::max(server.max_json_bytes))
        // A body that stops sending is dropped after this long without a byte, whatever route reads it.
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(server.body_idle_timeout_secs)))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request| {
                            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                            tracing::info_span!("request", method = %req.method(), uri = %req.uri().path(), request_id = id)
                        })
                        // `shape_errors` logs each failure once, with its code; a second line here would only
                        // double the cost of every refusal when the service is shedding load.
                        .on_failure(()),
                )
                .layer(middleware::from_fn(error::shape_errors))
                .layer(middleware::from_fn(refuse_malformed_query))
                .layer(CatchPanicLayer::new()),
        );
    with_security_headers(app).layer(cors)
}

/// The application's routes: the guarded API with its policies, and the routes open whatever the load.
struct Routes {
    guarded: Router<AppState>,
    governed: Governed,
    open: Router<AppState>,
}

/// Registers every route, and builds the OpenAPI document from them once.
fn routes(state: &AppState) -> Routes {
    let mut api = ApiRoutes::new(OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()));
    for routes in
        [files::routes, upload::routes, content::routes, users::routes, admin::routes, share::routes, search::routes]
    {
        api = routes(api);
    }
    let (guarded, policies) = debug::routes(thumbnails::routes(api)).into_parts();
    let (guarded, mut openapi) = guarded.split_for_parts();
    // Health and metrics answer whatever the load: they are how operators see it.
    let (open, open_doc) = OpenApiRouter::new().merge(health::router()).split_for_parts();
    openapi.merge(open_doc);
    openapi::document_refusals(&mut openapi, &policies);
    openapi::document_config(&mut openapi, &state.config);
    // Written once: the document does not change while the service runs.
    let document = bytes::Bytes::from(serde_json::to_vec(&openapi).expect("the OpenAPI document serializes"));
    let open = open.route(
        "/openapi.json",
        axum::routing::get(move || {
            let document = document.clone();
            async move { ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], document) }
        }),
    );
    Routes { guarded, governed: Governed { state: state.clone(), policies: Arc::new(policies) }, open }
}

/// Headers for an API that serves no HTML: nothing is to be sniffed, framed, or sent a referrer, and responses
/// are not stored by shared caches unless a handler says otherwise (content does).
fn with_security_headers(router: Router) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(SetHeader::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
            .layer(SetHeader::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
            .layer(SetHeader::overriding(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; sandbox"),
            ))
            .layer(SetHeader::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
            .layer(SetHeader::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))),
    )
}

/// A query string whose parameters are not text is the client's error, answered here once for every route and
/// backend: percent-encoded bytes that are not UTF-8 (the query parser would quietly turn them into U+FFFD),
/// and NUL, which no parameter of ours may hold and PostgreSQL refuses in text.
async fn refuse_malformed_query(request: Request, next: Next) -> Response {
    let problem = request.uri().query().and_then(|q| {
        let decoded = percent_encoding::percent_decode_str(q).decode_utf8().ok();
        match decoded {
            None => Some("the query string is not UTF-8"),
            Some(text) if text.contains('\0') => Some("the query string contains a NUL character"),
            Some(_) => None,
        }
    });
    if let Some(problem) = problem {
        return axum::response::IntoResponse::into_response(ApiError::BadRequest(
            ErrorCode::InvalidQuery,
            problem.into(),
        ));
    }
    next.run(request).await
}

/// CORS as configured: no layer effect at all when no origin is listed.
fn cors_layer(config: &Config) -> CorsLayer {
    use http::Method;
    use http::header::HeaderName;
    let origins: Vec<HeaderValue> =
        config.cors.allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    if origins.is_empty() {
        return CorsLayer::new();
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::RANGE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
        ])
        .expose_headers([
            header::CONTENT_RANGE,
            header::CONTENT_DISPOSITION,
            header::ETAG,
            header::LOCATION,
            header::ACCEPT_RANGES,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// Records `http_request_duration_seconds{method,endpoint,status}`, the endpoint being the route template.
async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let endpoint =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = vec![
        Label::new("method", method),
        Label::new("endpoint", endpoint),
        Label::new("status", response.status().as_u16().to_string()),
    ];
    state.metrics.histogram("http_request_duration_seconds", labels).record(started.elapsed().as_secs_f64());
    response
}
