//! `POST /api/v1/files`: an upload, streamed. The body (a multipart form or the raw bytes) goes through an
//! [`Intake`] into the blob store as it arrives: the size limit and the caller's quota are enforced byte by
//! byte, the type is sniffed from the first bytes and a denied one refused before more is stored, and a
//! refused or broken upload leaves no bytes and no row.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::{Extension, Json};
use bytes::Bytes;
use chrono::Utc;
use futures_util::{Stream, StreamExt, TryStreamExt as _};
use metrics::Label;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::UtoipaMethodRouterExt as _;
use utoipa_axum::routes;
use uuid::Uuid;

use super::policy::{ApiRoutes, Policy};
use super::{ApiError, AppState};
use crate::audit::{Action, AuditFacts};
use crate::blob::{BlobWriter, StoredBlob};
use crate::domain::names::{normalize_tags, sanitize_file_name};
use crate::domain::{Caller, FileMeta, NewFile, ThumbState, Visibility};
use crate::error::ErrorCode;
use crate::media;
use crate::media::thumbnail::is_thumbnailable;
use crate::ratelimit::RouteClass;

pub(super) fn routes(api: ApiRoutes) -> ApiRoutes {
    // Uploads bound their size themselves, byte by byte; the JSON body limit would cut every file off.
    let upload = routes!(upload_file).layer(DefaultBodyLimit::disable());
    api.route(Policy::recorded(Action::FileUpload).limited_as(RouteClass::Upload), upload)
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
    #[param(schema_with = super::openapi::file_name)]
    name: Option<String>,
    /// Comma-separated tags, for a raw body.
    #[param(schema_with = super::openapi::tag_list)]
    tags: Option<String>,
    visibility: Option<Visibility>,
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

pub(super) fn file_name(raw: &str) -> Result<String, ApiError> {
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

/// What the file will be called, tagged and shown as: from the query, then from the form's text fields.
struct Form {
    name: Option<String>,
    tags: Vec<String>,
    visibility: Visibility,
}

impl Form {
    fn from_query(params: &UploadParams) -> Result<Self, ApiError> {
        Ok(Form {
            name: params.name.as_deref().map(file_name).transpose()?,
            tags: params.tags.as_deref().map(parse_tags).transpose()?.unwrap_or_default(),
            visibility: params.visibility.unwrap_or_default(),
        })
    }
}

fn name_required() -> ApiError {
    ApiError::BadRequest(ErrorCode::InvalidName, "a file name is required (?name=)".into())
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// The body's declared length, if it declares one.
fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()))
        .map(|v| {
            v.ok_or_else(|| ApiError::BadRequest(ErrorCode::InvalidHeader, "Content-Length is not a number".into()))
        })
        .transpose()
}

/// Reads a multipart form: its one `file` field into `intake`, its text fields into `form`.
async fn read_form(
    state: &AppState,
    request: Request,
    intake: &mut Intake<'_>,
    form: &mut Form,
) -> Result<(), ApiError> {
    let framing = Arc::new(Framing::default());
    let mut multipart = Multipart::from_request(framing.count(request), state)
        .await
        .map_err(|e| ApiError::BadRequest(ErrorCode::InvalidMultipart, e.body_text()))?;
    let mut saw_file = false;
    while let Some(field) = multipart.next_field().await.map_err(|e| framing.error(&e))? {
        match field.name().unwrap_or_default() {
            "file" if !saw_file => {
                saw_file = true;
                if let Some(n) = field.file_name() {
                    form.name = Some(file_name(n)?);
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
                    "tags" => form.tags = parse_tags(&text)?,
                    "visibility" => form.visibility = parse_visibility(&text)?,
                    _ => form.name = Some(file_name(&text)?),
                }
            }
            other => {
                return Err(ApiError::BadRequest(ErrorCode::InvalidMultipart, format!("unexpected field {other:?}")));
            }
        }
    }
    if !saw_file {
        return Err(ApiError::BadRequest(ErrorCode::InvalidMultipart, "the form has no file field".into()));
    }
    Ok(())
}

/// Makes the received bytes durable under their hash (or finds them already stored) and writes the file's row,
/// under the content's lock so a purge of the same content cannot remove the bytes in between.
async fn store(state: &AppState, caller: &Caller, mut intake: Intake<'_>, form: Form) -> Result<FileMeta, ApiError> {
    let name = form.name.ok_or_else(name_required)?;
    let hash = intake.content_hash().await?;
    let _guard = state.blob_locks.lock(&hash).await;
    let (stored, mime_type) = intake.finish().await?;
    let new = NewFile {
        id: Uuid::now_v7(),
        owner_id: caller.user.id,
        name,
        mime_type: mime_type.clone(),
        size: i64::try_from(stored.size).map_err(|_| too_large(state.config.upload.max_bytes))?,
        content_hash: stored.hash.clone(),
        visibility: form.visibility,
        tags: form.tags,
        now: Utc::now(),
        thumbnail: is_thumbnailable(&mime_type).then_some(ThumbState::Pending),
    };
    match state.db.insert_file(&new).await {
        Ok(meta) => Ok(meta),
        Err(e) => {
            // Nothing refers to freshly stored bytes whose row failed: remove them unless another file shares them.
            if let Ok(None) = state.db.blob_ref_count(&stored.hash).await {
                let _ = state.blobs.delete(&stored.hash).await;
            }
            Err(e.into())
        }
    }
}

/// Tells the rest of the service about a new file: the cache, the thumbnailer, the upload metrics.
async fn announce(state: &AppState, meta: &FileMeta, took: Duration) {
    state.cache.file_changed(meta.id).await;
    if meta.thumbnail.is_some() {
        // The upload does not wait: a full queue leaves the file pending for the next sweep.
        state.thumbnails.enqueue(meta.id, meta.content_hash.clone());
    }
    record_upload(state, meta, took);
}

/// Upload a file.
///
/// Multipart (`file`, optional `tags` as comma-separated text, optional `visibility`) or a raw body with `?name=`.
/// The body is streamed to storage while it is hashed; the type is sniffed from the bytes.
#[utoipa::path(post, path = "/api/v1/files", tag = "files", params(UploadParams),
    request_body(content = super::openapi::UploadForm, content_type = "multipart/form-data",
        description = "or a raw body of any type with ?name="),
    responses((status = 201, body = FileMeta), (status = 413), (status = 415)))]
async fn upload_file(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<UploadParams>,
    request: Request,
) -> Result<(StatusCode, HeaderMap, Extension<AuditFacts>, Json<FileMeta>), ApiError> {
    let started = std::time::Instant::now();
    let multipart = is_multipart(request.headers());
    let declared = declared_length(request.headers())?;
    // Refuse a declared oversize body before reading a byte of it.
    let limit = Limit::for_caller(&state, &caller).await?;
    if declared.is_some_and(|len| len > limit.bytes() + if multipart { MULTIPART_OVERHEAD } else { 0 }) {
        return Err(limit.error());
    }
    let mut form = Form::from_query(&params)?;
    if !multipart && form.name.is_none() {
        return Err(name_required());
    }

    let mut intake = Intake::new(&state, limit).await?;
    if multipart {
        read_form(&state, request, &mut intake, &mut form).await?;
    } else {
        intake.drain(request.into_body().into_data_stream()).await?;
    }
    let meta = store(&state, &caller, intake, form).await?;
    announce(&state, &meta, started.elapsed()).await;

    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::try_from(format!("/api/v1/files/{}", meta.id)) {
        headers.insert(header::LOCATION, location);
    }
    let facts = AuditFacts { file_id: Some(meta.id), bytes: Some(meta.size) };
    Ok((StatusCode::CREATED, headers, Extension(facts), Json(meta)))
}
