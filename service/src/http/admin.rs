//! `/api/v1/audit` and `/api/v1/stats`: what administrators read.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use super::policy::{ApiRoutes, Policy};
use super::{ApiError, AppState, page_limit, require_admin};
use crate::cache::Family;
use crate::domain::Caller;
use crate::domain::audit::{AuditEntry, AuditQuery, DayStats};
use crate::error::ErrorCode;

pub(super) fn routes(api: ApiRoutes) -> ApiRoutes {
    api.route(Policy::read(), routes!(list_audit)).route(Policy::read(), routes!(get_stats))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    user_id: Option<Uuid>,
    /// e.g. `file.upload`, `file.download`, `key.revoke`, `auth.denied`.
    action: Option<String>,
    ip: Option<String>,
    /// At or after (RFC 3339).
    #[serde(default, deserialize_with = "super::query_time")]
    from: Option<DateTime<Utc>>,
    /// Before (RFC 3339).
    #[serde(default, deserialize_with = "super::query_time")]
    to: Option<DateTime<Utc>>,
    /// `next_cursor` of the previous page; absent or empty for the first.
    cursor: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditPage {
    items: Vec<AuditEntry>,
    next_cursor: Option<String>,
}

/// The audit log, newest first, filtered (admin).
#[utoipa::path(get, path = "/api/v1/audit", tag = "admin", params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 403)))]
async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    require_admin(&caller)?;
    let limit = page_limit(p.limit, 100)?;
    // The cursor is the last id seen; ids only grow, so a page never shifts under concurrent writes.
    let before_id = p
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(ErrorCode::InvalidCursor, "the cursor is not valid".into()))
        })
        .transpose()?;
    let query =
        AuditQuery { user_id: p.user_id, action: p.action, ip_address: p.ip, from: p.from, to: p.to, before_id, limit };
    let mut items = state.db.list_audit(&query).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|e| e.id.to_string())
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatsParams {
    /// A UTC day, `YYYY-MM-DD`; today when absent.
    #[serde(default, deserialize_with = "super::query_time")]
    date: Option<NaiveDate>,
}

/// The figures of one UTC day (admin). Past days are cached at `stats:{date}`; today is always computed,
/// so it stays correct as traffic arrives.
#[utoipa::path(get, path = "/api/v1/stats", tag = "admin", params(StatsParams),
    responses((status = 200, body = DayStats), (status = 403)))]
async fn get_stats(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<StatsParams>,
) -> Result<Json<DayStats>, ApiError> {
    require_admin(&caller)?;
    let today = Utc::now().date_naive();
    let date = p.date.unwrap_or(today);
    let from = date.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let Some(from) = from else { return Err(ApiError::BadRequest(ErrorCode::InvalidQuery, "no such date".into())) };
    let to = from + TimeDelta::days(1);
    let compute = async || state.db.day_stats(date, from, to).await.map(Some);
    let stats = if date < today {
        state.cache.get_or_load_json(Family::Stats, &date.to_string(), compute).await?
    } else {
        compute().await?
    };
    stats.map(Json).ok_or_else(|| ApiError::Internal("statistics vanished".into()))
}
