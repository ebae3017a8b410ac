//! `/api/v1/files`: metadata, rename/tag/visibility, soft delete, restore, purge, listing. Uploads are
//! `upload.rs`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use super::policy::{ApiRoutes, Policy};
use super::upload::file_name;
use super::{ApiError, AppState, decode_cursor, page_limit, tag_filter};
use crate::audit::Action;
use crate::cache::Family;
use crate::domain::names::normalize_tags;
use crate::domain::{Caller, Cursor, FileMeta, FilePatch, FileQuery, SortKey, SortOrder, Visibility};
use crate::error::ErrorCode;

pub(super) fn routes(api: ApiRoutes) -> ApiRoutes {
    api.route(Policy::read(), routes!(list_files))
        .route(Policy::read(), routes!(get_file))
        .route(Policy::recorded(Action::FileUpdate), routes!(update_file))
        .route(Policy::recorded(Action::FileDelete), routes!(delete_file))
        .route(Policy::recorded(Action::FileRestore), routes!(restore_file))
        .route(Policy::recorded(Action::FilePurge), routes!(purge_file))
}

/// Loads a file's metadata through `file:meta:{id}` and checks that the caller may read it.
/// Someone else's private file and a deleted file are both "not found": their existence is not disclosed.
pub(crate) async fn readable_file(state: &AppState, caller: &Caller, id: Uuid) -> Result<FileMeta, ApiError> {
    let meta = state
        .cache
        .get_or_load_json(Family::FileMeta, &id.to_string(), async || state.db.get_file(id).await)
        .await?
        .ok_or_else(ApiError::file_not_found)?;
    if meta.deleted_at.is_some() || !caller.can_read(&meta) {
        return Err(ApiError::file_not_found());
    }
    Ok(meta)
}

/// Like [`readable_file`] but for changes: readable-but-not-yours is 403, and deleted files are included.
async fn writable_file(state: &AppState, caller: &Caller, id: Uuid) -> Result<FileMeta, ApiError> {
    let meta = state.db.get_file(id).await?.ok_or_else(ApiError::file_not_found)?;
    if caller.can_write(&meta) {
        Ok(meta)
    } else if caller.can_read(&meta) && meta.deleted_at.is_none() {
        Err(ApiError::Forbidden("only the owner or an admin may change this file".into()))
    } else {
        Err(ApiError::file_not_found())
    }
}

/// [`writable_file`] for changes that need the file live: a deleted one is "not found".
pub(crate) async fn live_writable_file(state: &AppState, caller: &Caller, id: Uuid) -> Result<FileMeta, ApiError> {
    let meta = writable_file(state, caller, id).await?;
    if meta.deleted_at.is_some() {
        return Err(ApiError::file_not_found());
    }
    Ok(meta)
}

/// A file's metadata.
#[utoipa::path(get, path = "/api/v1/files/{id}", tag = "files",
    params(("id" = Uuid, Path, description = "file id")),
    responses((status = 200, body = FileMeta), (status = 404)))]
async fn get_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<FileMeta>, ApiError> {
    Ok(Json(readable_file(&state, &caller, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileUpdate {
    #[schema(schema_with = super::openapi::file_name_or_null)]
    name: Option<String>,
    #[schema(schema_with = super::openapi::tags_or_null)]
    tags: Option<Vec<String>>,
    visibility: Option<Visibility>,
}

/// Rename a file, replace its tags or change its visibility.
#[utoipa::path(patch, path = "/api/v1/files/{id}", tag = "files",
    params(("id" = Uuid, Path, description = "file id")), request_body = FileUpdate,
    responses((status = 200, body = FileMeta), (status = 403), (status = 404)))]
async fn update_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    super::JsonObject(update): super::JsonObject<FileUpdate>,
) -> Result<Json<FileMeta>, ApiError> {
    live_writable_file(&state, &caller, id).await?;
    let patch = FilePatch {
        name: update.name.as_deref().map(file_name).transpose()?,
        tags: update
            .tags
            .map(|t| {
                normalize_tags(t.iter().map(String::as_str))
                    .map_err(|m| ApiError::BadRequest(ErrorCode::InvalidTags, m))
            })
            .transpose()?,
        visibility: update.visibility,
    };
    let meta = state.db.update_file(id, &patch, Utc::now()).await?.ok_or_else(ApiError::file_not_found)?;
    state.cache.file_changed(id).await;
    Ok(Json(meta))
}

/// Move a file to the trash; `restore` brings it back.
#[utoipa::path(delete, path = "/api/v1/files/{id}", tag = "files",
    params(("id" = Uuid, Path, description = "file id")), responses((status = 204), (status = 403), (status = 404)))]
async fn delete_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    live_writable_file(&state, &caller, id).await?;
    let now = Utc::now();
    state.db.set_deleted(id, Some(now), now).await?;
    state.cache.file_changed(id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Bring a deleted file back.
#[utoipa::path(post, path = "/api/v1/files/{id}/restore", tag = "files",
    params(("id" = Uuid, Path, description = "file id")),
    responses((status = 200, body = FileMeta), (status = 403), (status = 404), (status = 409)))]
async fn restore_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<FileMeta>, ApiError> {
    let current = writable_file(&state, &caller, id).await?;
    if current.deleted_at.is_none() {
        return Err(ApiError::Conflict(ErrorCode::FileNotDeleted, "the file is not deleted".into()));
    }
    let meta = state.db.set_deleted(id, None, Utc::now()).await?.ok_or_else(ApiError::file_not_found)?;
    state.cache.file_changed(id).await;
    Ok(Json(meta))
}

/// Remove a file for good (admin only); its bytes go when no other file shares them.
#[utoipa::path(post, path = "/api/v1/files/{id}/purge", tag = "files",
    params(("id" = Uuid, Path, description = "file id")), responses((status = 204), (status = 403), (status = 404)))]
async fn purge_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    if !caller.is_admin() {
        return Err(ApiError::Forbidden("purging files is for admins".into()));
    }
    let meta = state.db.get_file(id).await?.ok_or_else(ApiError::file_not_found)?;
    let _guard = state.blob_locks.lock(&meta.content_hash).await;
    let purged = state.db.purge_file(id).await?.ok_or_else(ApiError::file_not_found)?;
    state.cache.file_changed(id).await;
    state.thumbnails.remove(id).await;
    if purged.blob_released {
        state.blobs.delete(&purged.content_hash).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
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
    #[serde(default)]
    sort: SortKey,
    #[serde(default)]
    order: SortOrder,
    /// `next_cursor` of the previous page; absent or empty for the first.
    cursor: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// List the trash instead.
    #[serde(default)]
    deleted: bool,
    /// Admins only: whose files (a user id), or `all`.
    #[param(schema_with = super::openapi::user_id_or_all)]
    owner: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct FilePage {
    pub(crate) items: Vec<FileMeta>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub(crate) next_cursor: Option<String>,
}

/// Turns `limit + 1` rows into a page and the cursor of the next one.
pub(crate) fn page(mut items: Vec<FileMeta>, limit: u32, sort: SortKey, order: SortOrder) -> FilePage {
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|last| Cursor::after(last, sort, order).encode())
    } else {
        None
    };
    FilePage { items, next_cursor }
}

/// The caller's files, filtered and sorted, a page at a time (keyset pagination).
#[utoipa::path(get, path = "/api/v1/files", tag = "files", params(ListParams),
    responses((status = 200, body = FilePage), (status = 400), (status = 403)))]
async fn list_files(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> Result<Json<FilePage>, ApiError> {
    let bad = |m: &str| ApiError::BadRequest(ErrorCode::InvalidQuery, m.to_owned());
    let limit = page_limit(p.limit, 50)?;
    let owner_id = match p.owner.as_deref() {
        None => Some(caller.user.id),
        Some(_) if !caller.is_admin() => return Err(ApiError::Forbidden("only admins list other users' files".into())),
        Some("all") => None,
        Some(id) => Some(id.parse::<Uuid>().map_err(|_| bad("owner must be a user id or all"))?),
    };
    let after = decode_cursor(p.cursor.as_deref(), p.sort, p.order)?;
    let tag = tag_filter(p.tag.as_deref())?;
    let query = FileQuery {
        owner_id,
        readable_by: None,
        name_contains: None,
        mime_prefix: p.mime.map(|m| m.to_ascii_lowercase()),
        tag,
        min_size: p.min_size,
        max_size: p.max_size,
        from: p.from,
        to: p.to,
        deleted: p.deleted,
        sort: p.sort,
        order: p.order,
        after,
        limit,
    };
    let items = state.db.list_files(&query).await?;
    Ok(Json(page(items, limit, p.sort, p.order)))
}
