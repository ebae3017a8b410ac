//! `/api/v1/files`: upload (streamed), metadata, rename/tag/visibility, soft delete, restore, purge, listing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::{Extension, Json};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt, TryStreamExt as _};
use metrics::Label;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::UtoipaMethodRouterExt as _;
use utoipa_axum::routes;
use uuid::Uuid;

use super::policy::{ApiRoutes, Policy};
use super::{ApiError, AppState, decode_cursor, page_limit, tag_filter};
use crate::audit::{Action, AuditFacts};
use crate::blob::{BlobWriter, StoredBlob};
use crate::cache::Family;
use crate::domain::names::{normalize_tags, sanitize_file_name};
use crate::domain::{
    Caller, Cursor, FileMeta, FilePatch, FileQuery, NewFile, SortKey, SortOrder, ThumbState, Visibility,
};
use crate::error::ErrorCode;
use crate::media;
use crate::media::thumbnail::is_thumbnailable;
use crate::ratelimit::RouteClass;

pub(super) fn routes(api: ApiRoutes) -> ApiRoutes {
    // Uploads bound their size themselves, byte by byte; the JSON body limit would cut every file off.
    let upload = routes!(upload_file).layer(DefaultBodyLimit::disable());
    api.route(Policy::recorded(Action::FileUpload).limited_as(RouteClass::Upload), upload)
        .route(Policy::read(), routes!(list_files))
        .route(Policy::read(), routes!(get_file))
        .route(Policy::recorded(Action::FileUpdate), routes!(update_file))
        .route(Policy::recorded(Action::FileDelete), routes!(delete_file))
        .route(Policy::recorded(Action::FileRestore), routes!(restore_file))
        .route(Policy::recorded(Action::FilePurge), routes!(purge_file))
}

/// Room for the multipart framing and the small text fields around the file.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;
/// What the parser may hold of the file's bytes before handing them on, beyond [`MULTIPART_OVERHEAD`]: the
/// chunk being parsed (hyper reads at most 64 KiB at a time) and a little more.
const FRAMING_SLACK: u64 = 256 * 1024;
/// Largest text field (`tags`, `visibility`) in a multipart upload.
const MAX_TEXT_FIELD: usize = 4096;

/// What a multipart body has sent, and how much of it was the file. Everything else — preamble, boundaries,
/// part headers, text fields — is framing, bounded by [`MULTIPART_OVERHEAD`] as it arrives: the parser
/// buffers a part header until its blank line, so a header that never ends would otherwise grow without limit.
#[derive(Default)]
struct Framing {
    body: AtomicU64,
    file: AtomicU64,
    exceeded: AtomicBool,
}

impl Framing {
    /// The request with its body counted; the body fails once framing passes its bound.
    fn count(self: &Arc<Self>, request: Request) -> Request {
        let (parts, body) = request.into_parts();
        let this = self.clone();
        let counted = body.into_data_stream().map(move |chunk| {
            let chunk = chunk?;
            let body = this.body.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
            if body.saturating_sub(this.file.load(Ordering::Relaxed)) > MULTIPART_OVERHEAD + FRAMING_SLACK {
                this.exceeded.store(true, Ordering::Relaxed);
                return Err(axum::Error::new("the form's framing exceeds its limit"));
            }
            Ok(chunk)
        });
        Request::from_parts(parts, Body::from_stream(counted))
    }

    fn too_large() -> ApiError {
        ApiError::BodyTooLarge(format!("the form's fields and headers exceed {MULTIPART_OVERHEAD} bytes"))
    }

    /// The error a failed multipart read stands for.
    fn error(&self, e: &MultipartError) -> ApiError {
        if self.exceeded.load(Ordering::Relaxed) {
            Self::too_large()
        } else if timed_out(e) {
            ApiError::BodyTimeout
        } else {
            ApiError::BadRequest(ErrorCode::InvalidMultipart, e.body_text())
        }
    }
}

/// Whether a body error is the body idle timeout (`server.body_idle_timeout_secs`), however deep it is wrapped.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UploadParams {
    /// File name, for a raw (non-multipart) body.
    name: Option<String>,
    /// Comma-separated tags, for a raw body.
    tags: Option<String>,
    visibility: Option<Visibility>,
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

/// Streams one file's bytes into the blob store: enforces the size limit as bytes arrive,
/// sniffs the type from the first bytes and refuses denied types before storing anything more.
struct Intake<'a> {
    writer: Box<dyn BlobWriter>,
    state: &'a AppState,
    limit: Limit,
    /// The first bytes, held back until the type is known.
    head: Vec<u8>,
    mime: Option<String>,
}

impl<'a> Intake<'a> {
    async fn new(state: &'a AppState, limit: Limit) -> Result<Self, ApiError> {
        Ok(Self { writer: state.blobs.writer().await?, state, limit, head: Vec::new(), mime: None })
    }

    fn received(&self) -> u64 {
        self.writer.written() + self.head.len() as u64
    }

    async fn push(&mut self, chunk: Bytes) -> Result<(), ApiError> {
        if self.received() + chunk.len() as u64 > self.limit.bytes() {
            return Err(self.limit.error());
        }
        if self.mime.is_some() {
            return Ok(self.writer.write(&chunk).await?);
        }
        self.head.extend_from_slice(&chunk);
        if self.head.len() >= media::SNIFF_LEN { self.decide_type().await } else { Ok(()) }
    }

    async fn decide_type(&mut self) -> Result<(), ApiError> {
        let mime = media::sniff(&self.head[..self.head.len().min(media::SNIFF_LEN)]);
        if self.state.config.upload.deny_mime_types.iter().any(|d| d.eq_ignore_ascii_case(&mime)) {
            return Err(ApiError::UnsupportedMediaType(format!("files of type {mime} are not accepted")));
        }
        self.writer.write(&self.head).await?;
        self.head = Vec::new();
        self.mime = Some(mime);
        Ok(())
    }

    async fn drain<S, E>(&mut self, mut body: S) -> Result<(), ApiError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + 'static,
    {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| match timed_out(&e) {
                true => ApiError::BodyTimeout,
                false => ApiError::BadRequest(ErrorCode::UploadInterrupted, format!("reading the upload failed: {e}")),
            })?;
            self.push(chunk).await?;
        }
        Ok(())
    }

    /// The hash of everything received; decides the type first if the file was shorter than the sniffed head.
    async fn content_hash(&mut self) -> Result<String, ApiError> {
        if self.mime.is_none() {
            self.decide_type().await?;
        }
        Ok(self.writer.content_hash())
    }

    /// Makes the bytes durable and returns them with their type; call after [`Intake::content_hash`].
    async fn finish(mut self) -> Result<(StoredBlob, String), ApiError> {
        let mime =
            self.mime.take().ok_or_else(|| ApiError::Internal("upload finished before its type was known".into()))?;
        Ok((self.writer.finish().await?, mime))
    }
}

/// `file_upload_duration_seconds{file_type,size_class}`: the performance guide's upload latency, by top-level type and size.
fn record_upload(state: &AppState, meta: &FileMeta, took: std::time::Duration) {
    const MIB: i64 = 1024 * 1024;
    let file_type = meta.mime_type.split('/').next().unwrap_or("other").to_owned();
    let size_class = match meta.size {
        s if s < MIB => "small",
        s if s < 10 * MIB => "medium",
        _ => "large",
    };
    let labels = vec![Label::new("file_type", file_type), Label::new("size_class", size_class)];
    state.metrics.histogram("file_upload_duration_seconds", labels).record(took.as_secs_f64());
}

/// The most bytes an upload may have: the size limit, or what is left of the caller's quota if that is less.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Size(u64),
    Quota { remaining: u64 },
}

impl Limit {
    async fn for_caller(state: &AppState, caller: &Caller) -> Result<Self, ApiError> {
        let max = state.config.upload.max_bytes;
        let Some(quota) = caller.user.quota_bytes else { return Ok(Limit::Size(max)) };
        // Concurrent uploads by one user each see the same remainder, so together they may overshoot a little.
        let used = state.db.used_bytes(caller.user.id).await?;
        let remaining = u64::try_from(quota.saturating_sub(used)).unwrap_or(0);
        Ok(if remaining < max { Limit::Quota { remaining } } else { Limit::Size(max) })
    }

    fn bytes(self) -> u64 {
        match self {
            Limit::Size(max) => max,
            Limit::Quota { remaining } => remaining,
        }
    }

    fn error(self) -> ApiError {
        match self {
            Limit::Size(max) => too_large(max),
            Limit::Quota { remaining } => {
                ApiError::QuotaExceeded(format!("the file does not fit in your storage quota ({remaining} bytes left)"))
            }
        }
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::PayloadTooLarge(format!("the file exceeds the limit of {max} bytes"))
}

fn parse_tags(raw: &str) -> Result<Vec<String>, ApiError> {
    normalize_tags(raw.split(',')).map_err(|m| ApiError::BadRequest(ErrorCode::InvalidTags, m))
}

fn parse_visibility(raw: &str) -> Result<Visibility, ApiError> {
    Visibility::parse(raw.trim()).ok_or_else(|| {
        ApiError::BadRequest(ErrorCode::InvalidVisibility, "visibility must be private or public".into())
    })
}

fn file_name(raw: &str) -> Result<String, ApiError> {
    sanitize_file_name(raw)
        .ok_or_else(|| ApiError::BadRequest(ErrorCode::InvalidName, "the file name is empty once sanitised".into()))
}

/// A text field, read a chunk at a time and refused as soon as it passes [`MAX_TEXT_FIELD`].
async fn text_field(mut field: Field<'_>, framing: &Framing) -> Result<String, ApiError> {
    let name = field.name().unwrap_or_default().to_owned();
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| framing.error(&e))? {
        if bytes.len() + chunk.len() > MAX_TEXT_FIELD {
            return Err(ApiError::BodyTooLarge(format!("field {name} is longer than {MAX_TEXT_FIELD} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map_err(|_| ApiError::BadRequest(ErrorCode::InvalidMultipart, format!("field {name} is not UTF-8")))
}

/// Upload a file.
///
/// Multipart (`file`, optional `tags` as comma-separated text, optional `visibility`) or a raw body with `?name=`.
/// The body is streamed to storage while it is hashed; the type is sniffed from the bytes.
#[utoipa::path(post, path = "/api/v1/files", tag = "files", params(UploadParams),
    request_body(content_type = "multipart/form-data", description = "or a raw body of any type with ?name="),
    responses((status = 201, body = FileMeta), (status = 413), (status = 415)))]
async fn upload_file(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<UploadParams>,
    request: Request,
) -> Result<(StatusCode, HeaderMap, Extension<AuditFacts>, Json<FileMeta>), ApiError> {
    let started = std::time::Instant::now();
    let max = state.config.upload.max_bytes;
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()))
        .map(|v| {
            v.ok_or_else(|| ApiError::BadRequest(ErrorCode::InvalidHeader, "Content-Length is not a number".into()))
        })
        .transpose()?;
    // Refuse a declared oversize body before reading a byte of it.
    let limit = Limit::for_caller(&state, &caller).await?;
    if declared.is_some_and(|len| len > limit.bytes() + if is_multipart { MULTIPART_OVERHEAD } else { 0 }) {
        return Err(limit.error());
    }

    let mut tags = params.tags.as_deref().map(parse_tags).transpose()?.unwrap_or_default();
    let mut visibility = params.visibility.unwrap_or_default();
    let mut name = params.name.as_deref().map(file_name).transpose()?;
    if !is_multipart && name.is_none() {
        return Err(ApiError::BadRequest(ErrorCode::InvalidName, "a file name is required (?name=)".into()));
    }
    let mut intake = Intake::new(&state, limit).await?;

    if is_multipart {
        let framing = Arc::new(Framing::default());
        let mut multipart = Multipart::from_request(framing.count(request), &state)
            .await
            .map_err(|e| ApiError::BadRequest(ErrorCode::InvalidMultipart, e.body_text()))?;
        let mut saw_file = false;
        while let Some(field) = multipart.next_field().await.map_err(|e| framing.error(&e))? {
            match field.name().unwrap_or_default() {
                "file" if !saw_file => {
                    saw_file = true;
                    if let Some(n) = field.file_name() {
                        name = Some(file_name(n)?);
                    }
                    let counted = field.inspect_ok(|chunk| {
                        framing.file.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    });
                    intake.drain(counted).await.map_err(|e| match framing.exceeded.load(Ordering::Relaxed) {
                        true => Framing::too_large(),
                        false => e,
                    })?;
                }
                "file" => return Err(ApiError::BadRequest(ErrorCode::InvalidMultipart, "one file per upload".into())),
                other @ ("tags" | "visibility" | "name") => {
                    let other = other.to_owned();
                    let text = text_field(field, &framing).await?;
                    match other.as_str() {
                        "tags" => tags = parse_tags(&text)?,
                        "visibility" => visibility = parse_visibility(&text)?,
                        _ => name = Some(file_name(&text)?),
                    }
                }
                other => {
                    return Err(ApiError::BadRequest(
                        ErrorCode::InvalidMultipart,
                        format!("unexpected field {other:?}"),
                    ));
                }
            }
        }
        if !saw_file {
            return Err(ApiError::BadRequest(ErrorCode::InvalidMultipart, "the form has no file field".into()));
        }
    } else {
        intake.drain(request.into_body().into_data_stream()).await?;
    }
    let name =
        name.ok_or_else(|| ApiError::BadRequest(ErrorCode::InvalidName, "a file name is required (?name=)".into()))?;

    let hash = intake.content_hash().await?;
    let _guard = state.blob_locks.lock(&hash).await;
    let (stored, mime_type) = intake.finish().await?;
    let new = NewFile {
        id: Uuid::now_v7(),
        owner_id: caller.user.id,
        name,
        mime_type: mime_type.clone(),
        size: i64::try_from(stored.size).map_err(|_| too_large(max))?,
        content_hash: stored.hash.clone(),
        visibility,
        tags,
        now: Utc::now(),
        thumbnail: is_thumbnailable(&mime_type).then_some(ThumbState::Pending),
    };
    let meta = match state.db.insert_file(&new).await {
        Ok(meta) => meta,
        Err(e) => {
            // Nothing refers to freshly stored bytes whose row failed: remove them unless another file shares them.
            if let Ok(None) = state.db.blob_ref_count(&stored.hash).await {
                let _ = state.blobs.delete(&stored.hash).await;
            }
            return Err(e.into());
        }
    };
    drop(_guard);
    state.cache.file_changed(meta.id).await;
    if meta.thumbnail.is_some() {
        // The upload does not wait: a full queue leaves the file pending for the next sweep.
        state.thumbnails.enqueue(meta.id, meta.content_hash.clone());
    }
    record_upload(&state, &meta, started.elapsed());
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::try_from(format!("/api/v1/files/{}", meta.id)) {
        headers.insert(header::LOCATION, location);
    }
    let facts = AuditFacts { file_id: Some(meta.id), bytes: Some(meta.size) };
    Ok((StatusCode::CREATED, headers, Extension(facts), Json(meta)))
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
    name: Option<String>,
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
    Json(update): Json<FileUpdate>,
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
    params(("id" = Uuid, Path, description = "file id")), responses((status = 204), (status = 404)))]
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
    params(("id" = Uuid, Path, description = "file id")), responses((status = 200, body = FileMeta), (status = 404)))]
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
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<u32>,
    /// List the trash instead.
    #[serde(default)]
    deleted: bool,
    /// Admins only: whose files (a user id), or `all`.
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
    responses((status = 200, body = FilePage), (status = 400)))]
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
