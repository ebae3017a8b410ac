//! `GET /api/v1/search`: files the caller may read, by case-insensitive substring of the name and filters.
//!
//! Results are cached at `search:{query_hash}` for 600 s. The hash covers the caller's scope, the parameters
//! and the current search generation, which every change to any file moves: a change makes every cached
//! result unreachable at once, with no scan over keys.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use utoipa_axum::routes;

use super::files::{FilePage, page};
use super::policy::{ApiRoutes, Policy};
use super::{ApiError, AppState, SEARCH_GENERATION, decode_cursor, page_limit, tag_filter};
use crate::cache::Family;
use crate::domain::{Caller, FileQuery, SortKey, SortOrder};
use crate::error::ErrorCode;

pub(super) fn routes(api: ApiRoutes) -> ApiRoutes {
    api.route(Policy::read(), routes!(search_files))
}

#[derive(Debug, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// Part of the name, any case.
    q: Option<String>,
    /// Content-type prefix, e.g. `image/`.
    mime: Option<String>,
    #[param(schema_with = super::openapi::tag)]
    tag: Option<String>,
    min_size: Option<i64>,
    max_size: Option<i64>,
    /// Uploaded at or after (RFC 3339).
    #[serde(default, deserialize_with = "super::query_time")]
    from: Option<DateTime<Utc>>,
    /// Uploaded before (RFC 3339).
    #[serde(default, deserialize_with = "super::query_time")]
    to: Option<DateTime<Utc>>,
    cursor: Option<String>,
    /// 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Search the files the caller may read (their own and public ones; everything for admins), newest first.
#[utoipa::path(get, path = "/api/v1/search", tag = "files", params(SearchParams),
    responses((status = 200, body = FilePage), (status = 400)))]
async fn search_files(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<SearchParams>,
) -> Result<Json<FilePage>, ApiError> {
    let bad = |m: &str| ApiError::BadRequest(ErrorCode::InvalidQuery, m.to_owned());
    let limit = page_limit(p.limit, 50)?;
    let q = p.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.chars().count() > 200) {
        return Err(bad("q is at most 200 characters"));
    }
    let (sort, order) = (SortKey::UploadTime, SortOrder::Desc);
    let after = decode_cursor(p.cursor.as_deref(), sort, order)?;
    let tag = tag_filter(p.tag.as_deref())?;
    let query = FileQuery {
        owner_id: None,
        readable_by: (!caller.is_admin()).then_some(caller.user.id),
        name_contains: q.map(str::to_owned),
        mime_prefix: p.mime.as_deref().map(str::to_ascii_lowercase),
        tag,
        min_size: p.min_size,
        max_size: p.max_size,
        from: p.from,
        to: p.to,
        deleted: false,
        sort,
        order,
        after,
        limit,
    };
    // Without the generation nothing may be cached: a stale result could outlive a change.
    let Some(generation) = state.cache.generation(SEARCH_GENERATION).await else {
        let items = state.db.list_files(&query).await?;
        return Ok(Json(page(items, limit, sort, order)));
    };
    let scope = if caller.is_admin() { "admin".to_owned() } else { caller.user.id.to_string() };
    let key = serde_json::to_vec(&(generation, &scope, &p)).map_err(|e| ApiError::Internal(e.to_string()))?;
    let hash = blake3::hash(&key).to_hex().to_string();
    let found = state
        .cache
        .get_or_load_json(Family::Search, &hash, async || {
            let items = state.db.list_files(&query).await?;
            Ok::<_, ApiError>(Some(page(items, limit, sort, order)))
        })
        .await?;
    found.map(Json).ok_or_else(|| ApiError::Internal("search result vanished".into()))
}
