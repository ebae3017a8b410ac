//! Share links: `POST /api/v1/files/{id}/share` makes one, `GET /s/{token}` serves the file to whoever holds it.
//!
//! A token is the link's id and an HMAC-SHA256 of it under `share.secret`, both base64url. The signature makes
//! tokens unguessable and tamper-evident before the database is asked; expiry, download limits and revocation
//! live in `share_links`. Any failure — bad signature, unknown, expired, used up, revoked, file deleted or made
//! private again — is the same 404, so a token reveals nothing.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use super::content::serve_content;
use super::files::live_writable_file;
use super::policy::{ApiRoutes, Policy};
use super::{ApiError, AppState};
use crate::audit::Action;
use crate::audit::AuditFacts;
use crate::domain::{Caller, FilePatch, ShareLink, Visibility};
use crate::error::ErrorCode;
use crate::ratelimit::RouteClass;

pub(super) fn routes(api: ApiRoutes) -> ApiRoutes {
    api.route(Policy::recorded(Action::ShareCreate), routes!(create_share))
        .route(Policy::read(), routes!(list_shares))
        .route(Policy::recorded(Action::ShareRevoke), routes!(revoke_share))
        .route(
            Policy::recorded(Action::ShareDownload).limited_as(RouteClass::Download).keyless(),
            routes!(download_shared),
        )
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateShare {
    /// Lifetime in seconds (default `share.default_ttl_secs`, at most `share.max_ttl_secs`).
    #[serde(default, deserialize_with = "super::whole")]
    #[schema(minimum = 1)]
    expires_in_secs: Option<u64>,
    /// Downloads allowed before the link stops working; unlimited when absent.
    #[serde(default, deserialize_with = "super::whole")]
    #[schema(minimum = 1)]
    max_downloads: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedShare {
    #[serde(flatten)]
    link: ShareLink,
    /// `/s/{token}`, served without an API key.
    url: String,
    token: String,
}

/// Make a share link. A private file becomes `shared`; setting it back to `private` stops all its links.
#[utoipa::path(post, path = "/api/v1/files/{id}/share", tag = "shares", request_body = Option<CreateShare>,
    params(("id" = Uuid, Path, description = "file id")),
    responses((status = 201, body = CreatedShare), (status = 403), (status = 404)))]
async fn create_share(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: Option<super::JsonObject<CreateShare>>,
) -> Result<(StatusCode, Extension<AuditFacts>, Json<CreatedShare>), ApiError> {
    let body = body.map(|b| b.0).unwrap_or_default();
    let meta = live_writable_file(&state, &caller, id).await?;
    let config = &state.config.share;
    let ttl = body.expires_in_secs.unwrap_or(config.default_ttl_secs);
    if ttl == 0 || ttl > config.max_ttl_secs {
        return Err(ApiError::BadRequest(
            ErrorCode::InvalidExpiry,
            format!("expires_in_secs must be between 1 and {}", config.max_ttl_secs),
        ));
    }
    if body.max_downloads.is_some_and(|m| m < 1) {
        return Err(ApiError::BadRequest(ErrorCode::InvalidMaxDownloads, "max_downloads must be at least 1".into()));
    }
    if meta.visibility == Visibility::Private {
        let patch = FilePatch { visibility: Some(Visibility::Shared), ..FilePatch::default() };
        state.db.update_file(id, &patch, Utc::now()).await?;
        state.cache.file_changed(id).await;
    }
    let now = Utc::now();
    let link = ShareLink {
        id: Uuid::now_v7(),
        file_id: id,
        created_by: caller.user.id,
        created_at: now,
        expires_at: now + TimeDelta::seconds(i64::try_from(ttl).unwrap_or(i64::MAX)),
        max_downloads: body.max_downloads,
        downloads: 0,
        revoked_at: None,
    };
    state.db.create_share(&link).await?;
    let token = state.share_key.token(link.id);
    let facts = AuditFacts { file_id: Some(id), bytes: None };
    Ok((StatusCode::CREATED, Extension(facts), Json(CreatedShare { url: format!("/s/{token}"), token, link })))
}

/// A file's share links (owner or admin).
#[utoipa::path(get, path = "/api/v1/files/{id}/share", tag = "shares",
    params(("id" = Uuid, Path, description = "file id")),
    responses((status = 200, body = Vec<ShareLink>), (status = 403)))]
async fn list_shares(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Vec<ShareLink>>, ApiError> {
    live_writable_file(&state, &caller, id).await?;
    Ok(Json(state.db.list_shares(id).await?))
}

/// Revoke a share link (the file's owner or an admin).
#[utoipa::path(delete, path = "/api/v1/shares/{id}", tag = "shares",
    params(("id" = Uuid, Path, description = "share link id")), responses((status = 204), (status = 404)))]
async fn revoke_share(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Extension<AuditFacts>), ApiError> {
    let not_found = || ApiError::NotFound(ErrorCode::ShareNotFound, "share link not found".into());
    let link = state.db.get_share(id).await?.ok_or_else(not_found)?;
    live_writable_file(&state, &caller, link.file_id).await.map_err(|_| not_found())?;
    if !state.db.revoke_share(id, Utc::now()).await? {
        return Err(not_found());
    }
    Ok((StatusCode::NO_CONTENT, Extension(AuditFacts { file_id: Some(link.file_id), bytes: None })))
}

/// Download a shared file without an API key; ranges and validators work as for `/content`.
#[utoipa::path(get, path = "/s/{token}", tag = "shares", security(),
    params(("token" = String, Path, description = "share token")),
    responses((status = 200), (status = 206), (status = 304), (status = 404)))]
async fn download_shared(
    State(state): State<AppState>,
    method: Method,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(ErrorCode::ShareNotFound, "share link not found".into());
    let id = state.share_key.verify(&token).ok_or_else(not_found)?;
    let link = state.db.get_share(id).await?.ok_or_else(not_found)?;
    let now = Utc::now();
    let live =
        link.revoked_at.is_none() && link.expires_at > now && link.max_downloads.is_none_or(|max| link.downloads < max);
    if !live {
        return Err(not_found());
    }
    let meta = state.db.get_file(link.file_id).await?.ok_or_else(not_found)?;
    if meta.deleted_at.is_some() || meta.visibility == Visibility::Private {
        return Err(not_found());
    }
    let mut response = serve_content(&state, &meta, &method, &headers).await?;
    // Only bytes actually sent count against the link's downloads; the count is taken atomically,
    // so the last allowed download cannot be had twice.
    let sends_bytes =
        method == Method::GET && matches!(response.status(), StatusCode::OK | StatusCode::PARTIAL_CONTENT);
    if sends_bytes && !state.db.use_share(id, now).await? {
        return Err(not_found());
    }
    response.extensions_mut().insert(AuditFacts { file_id: Some(meta.id), bytes: None });
    Ok(response.into_response())
}
