//! `GET|HEAD /api/v1/files/{id}/content`: the bytes, with byte ranges, validators and conditional requests.
//!
//! Order of evaluation follows RFC 9110 §13.2.2: If-Match, If-Unmodified-Since, If-None-Match,
//! If-Modified-Since, then Range (honoured only when If-Range, if sent, still matches).
//! Range syntax and satisfiability are decided by `http-range-header`.

use std::num::NonZeroUsize;
use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use headers::{ETag, HeaderMapExt, IfMatch, IfModifiedSince, IfNoneMatch, IfRange, IfUnmodifiedSince, LastModified};
use http_range_header::{RangeInvalid, RangeRejected, RangeUnsatisfiableError};
use rand::RngCore as _;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;
use utoipa_axum::routes;
use uuid::Uuid;

use super::files::readable_file;
use super::policy::{ApiRoutes, Policy};
use super::{ApiError, AppState};
use crate::audit::Action;
use crate::cache::Family;
use crate::domain::names::content_disposition;
use crate::domain::{Caller, FileMeta};
use crate::error::ErrorCode;
use crate::ratelimit::RouteClass;

pub(super) fn routes(api: ApiRoutes) -> ApiRoutes {
    api.route(Policy::recorded(Action::FileDownload).limited_as(RouteClass::Download), routes!(download_file))
}

/// More ranges than this in one request get the whole file instead: a client needing them can ask again.
const MAX_RANGES: usize = 16;
const STREAM_CHUNK: usize = 64 * 1024;

/// Download a file (GET) or only its headers (HEAD).
#[utoipa::path(get, path = "/api/v1/files/{id}/content", tag = "files",
    params(("id" = Uuid, Path, description = "file id")),
    responses((status = 200, description = "the whole file"), (status = 206, description = "one or more ranges"),
        (status = 304), (status = 404), (status = 412), (status = 416)))]
async fn download_file(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let meta = readable_file(&state, &caller, id).await?;
    serve_content(&state, &meta, &method, &headers).await
}

/// The bytes of a file the caller may read, as `GET`/`HEAD` with `headers` asks for them.
pub(crate) async fn serve_content(
    state: &AppState,
    meta: &FileMeta,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let size = u64::try_from(meta.size).map_err(|_| ApiError::Internal("negative file size".into()))?;
    let etag: ETag = format!("\"{}\"", meta.content_hash)
        .parse()
        .map_err(|_| ApiError::Internal("content hash is not a valid entity tag".into()))?;
    let modified = content_modified(meta);
    let last_modified = LastModified::from(modified);

    let mut validators = HeaderMap::new();
    validators.typed_insert(etag.clone());
    validators.typed_insert(last_modified);
    // Revalidate every time: cheap with the ETag, and access can be revoked.
    validators.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));

    match evaluate_preconditions(headers, &etag, modified)? {
        Precondition::Proceed => {}
        Precondition::NotModified => return Ok((StatusCode::NOT_MODIFIED, validators).into_response()),
        Precondition::Failed => return Err(ApiError::PreconditionFailed),
    }

    let ranges = match headers.get(header::RANGE) {
        Some(range) if range_applies(headers, &etag, &last_modified)? => requested_ranges(range, size)?,
        _ => None,
    };

    let mut res_headers = validators;
    res_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    res_headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::try_from(content_disposition(&meta.name))
            .map_err(|_| ApiError::Internal("file name is not a valid header value".into()))?,
    );
    let content_type = HeaderValue::try_from(meta.mime_type.as_str())
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));

    let head_only = method == Method::HEAD;
    let source = Source::new(state, meta, size, head_only).await?;
    let (status, body, length) = match ranges.as_deref() {
        None => {
            res_headers.insert(header::CONTENT_TYPE, content_type);
            (StatusCode::OK, source.body(0..=size.saturating_sub(1), size).await?, size)
        }
        Some([one]) => {
            res_headers.insert(header::CONTENT_TYPE, content_type);
            res_headers
                .insert(header::CONTENT_RANGE, header_value(&format!("bytes {}-{}/{size}", one.start(), one.end())));
            (
                StatusCode::PARTIAL_CONTENT,
                source.body(one.clone(), one.end() - one.start() + 1).await?,
                one.end() - one.start() + 1,
            )
        }
        Some(many) => {
            let boundary = boundary();
            res_headers
                .insert(header::CONTENT_TYPE, header_value(&format!("multipart/byteranges; boundary={boundary}")));
            let (body, length) = source.multipart(many, &boundary, &meta.mime_type, size);
            (StatusCode::PARTIAL_CONTENT, body, length)
        }
    };
    res_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let body = if head_only { Body::empty() } else { body };
    Ok((status, res_headers, body).into_response())
}

/// When a file's bytes last changed, at the whole seconds HTTP dates carry (what clients can send back).
pub(crate) fn content_modified(meta: &FileMeta) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(meta.upload_time.timestamp()).unwrap_or(0))
}

pub(crate) enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

fn typed<H: headers::Header>(headers: &HeaderMap) -> Result<Option<H>, ApiError> {
    headers
        .typed_try_get::<H>()
        .map_err(|_| ApiError::BadRequest(ErrorCode::InvalidHeader, format!("the {} header is malformed", H::name())))
}

/// A date header that does not parse is ignored, as RFC 9110 asks; entity-tag lists that do not parse are 400.
fn typed_date<H: headers::Header>(headers: &HeaderMap) -> Option<H> {
    headers.typed_try_get::<H>().ok().flatten()
}

/// `*` alone, or a comma-separated list of `"tag"` / `W/"tag"` (RFC 9110 §13.1.1-2).
/// The `headers` crate skips bad list members silently; a malformed condition is the client's error, so say so.
fn check_entity_tag_list(headers: &HeaderMap, name: header::HeaderName) -> Result<(), ApiError> {
    let malformed = || ApiError::BadRequest(ErrorCode::InvalidHeader, format!("the {name} header is malformed"));
    for value in headers.get_all(&name) {
        let value = value.to_str().map_err(|_| malformed())?.trim();
        if value == "*" {
            continue;
        }
        if !value.split(',').map(str::trim).filter(|t| !t.is_empty()).all(is_entity_tag) {
            return Err(malformed());
        }
    }
    Ok(())
}

/// `"opaque"` or `W/"opaque"`, the opaque part of `etagc` characters only (RFC 9110 §8.8.3): no quote, no
/// space or tab. (The `headers` crate assumes as much and, in a debug build, panics on a tab; found by fuzzing.)
fn is_entity_tag(tag: &str) -> bool {
    let opaque = tag.strip_prefix("W/").unwrap_or(tag);
    opaque.len() >= 2
        && opaque.starts_with('"')
        && opaque.ends_with('"')
        && opaque[1..opaque.len() - 1].bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
}

pub(crate) fn evaluate_preconditions(
    headers: &HeaderMap,
    etag: &ETag,
    modified: SystemTime,
) -> Result<Precondition, ApiError> {
    check_entity_tag_list(headers, header::IF_MATCH)?;
    check_entity_tag_list(headers, header::IF_NONE_MATCH)?;
    if let Some(if_match) = typed::<IfMatch>(headers)? {
        if !if_match.precondition_passes(etag) {
            return Ok(Precondition::Failed);
        }
    } else if let Some(since) = typed_date::<IfUnmodifiedSince>(headers)
        && !since.precondition_passes(modified)
    {
        return Ok(Precondition::Failed);
    }
    if let Some(if_none_match) = typed::<IfNoneMatch>(headers)? {
        // Only GET and HEAD reach this handler, so a match is a 304, never a 412.
        if !if_none_match.precondition_passes(etag) {
            return Ok(Precondition::NotModified);
        }
    } else if let Some(since) = typed_date::<IfModifiedSince>(headers)
        // A date later than now is invalid and the field is ignored (RFC 9110 §13.1.3), as nginx does.
        && SystemTime::from(since) <= SystemTime::now()
        && !since.is_modified(modified)
    {
        return Ok(Precondition::NotModified);
    }
    Ok(Precondition::Proceed)
}

/// Whether a Range header is to be honoured: always, unless If-Range names another version.
pub(crate) fn range_applies(headers: &HeaderMap, etag: &ETag, last_modified: &LastModified) -> Result<bool, ApiError> {
    // An If-Range that looks like an entity tag must be one; a date that does not parse is no validator.
    if let Some(value) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()).map(str::trim)
        && (value.starts_with('"') || value.starts_with("W/"))
        && !is_entity_tag(value)
    {
        return Err(ApiError::BadRequest(ErrorCode::InvalidHeader, "the if-range header is malformed".into()));
    }
    match typed::<IfRange>(headers)? {
        None => Ok(true),
        Some(if_range) => Ok(!if_range.is_modified(Some(etag), Some(last_modified))),
    }
}

/// The ranges to send, `None` for the whole file. Another unit than `bytes` is ignored (RFC 9110 §14.2);
/// malformed or unsatisfiable byte ranges are a 416.
///
/// A set of ranges that would cost more than the file — more than [`MAX_RANGES`], or adding up to more bytes
/// than the file has (`bytes=0-,0-`) — is answered with the whole file (200), as nginx does: a client cannot
/// make one request amplify into a response larger than what it asked for.
pub(crate) fn requested_ranges(value: &HeaderValue, size: u64) -> Result<Option<Vec<RangeInclusive<u64>>>, ApiError> {
    let Ok(value) = value.to_str() else { return Err(ApiError::RangeNotSatisfiable(size)) };
    let max = NonZeroUsize::new(MAX_RANGES).expect("non-zero");
    let parsed = match http_range_header::parse_range_header_with_max_ranges(value, max) {
        Ok(parsed) => parsed,
        Err(RangeUnsatisfiableError::Invalid(RangeInvalid::DoesNotStartWithToken)) => return Ok(None),
        Err(RangeUnsatisfiableError::Rejected(RangeRejected::TooMany | RangeRejected::TooManyOverlapping)) => {
            return Ok(None);
        }
        Err(_) => return Err(ApiError::RangeNotSatisfiable(size)),
    };
    match parsed.validate(size) {
        // An empty file has nothing to slice: send it whole.
        Ok(ranges) if ranges.is_empty() => Ok(None),
        Ok(ranges) if ranges.iter().map(|r| r.end() - r.start() + 1).sum::<u64>() > size => Ok(None),
        Ok(ranges) => Ok(Some(ranges)),
        Err(RangeUnsatisfiableError::Rejected(RangeRejected::TooManyOverlapping)) => Ok(None),
        Err(_) => Err(ApiError::RangeNotSatisfiable(size)),
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::try_from(s).expect("built from digits and ASCII tokens")
}

fn boundary() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the bytes come from: the `file:content` cache for small files, the blob store for the rest.
enum Source {
    Memory(Bytes),
    Store {
        state: AppState,
        hash: String,
    },
    /// HEAD: no bytes are needed.
    Nothing,
}

impl Source {
    async fn new(state: &AppState, meta: &FileMeta, size: u64, head_only: bool) -> Result<Self, ApiError> {
        if head_only {
            return Ok(Source::Nothing);
        }
        if size > state.config.download.cache_max_bytes {
            return Ok(Source::Store { state: state.clone(), hash: meta.content_hash.clone() });
        }
        let hash = &meta.content_hash;
        let bytes = state
            .cache
            .get_or_load_bytes(Family::FileContent, &meta.id.to_string(), async || {
                let mut reader = state.blobs.read(hash, None).await?;
                let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                reader
                    .read_to_end(&mut buf)
                    .await
                    .map_err(|e| ApiError::Internal(format!("reading blob {hash}: {e}")))?;
                Ok::<_, ApiError>(Some(Bytes::from(buf)))
            })
            .await?
            .filter(|b| b.len() as u64 == size)
            .ok_or_else(|| ApiError::Internal(format!("blob {hash} does not have the recorded size")))?;
        Ok(Source::Memory(bytes))
    }

    async fn body(&self, range: RangeInclusive<u64>, len: u64) -> Result<Body, ApiError> {
        if len == 0 {
            return Ok(Body::empty());
        }
        match self {
            Source::Nothing => Ok(Body::empty()),
            Source::Memory(bytes) => Ok(Body::from(slice(bytes, &range))),
            Source::Store { state, hash } => {
                let reader = state.blobs.read(hash, Some(*range.start()..range.end() + 1)).await?;
                Ok(Body::from_stream(ReaderStream::with_capacity(reader, STREAM_CHUNK)))
            }
        }
    }

    /// A `multipart/byteranges` body and its exact length; parts are streamed one after the other.
    fn multipart(&self, ranges: &[RangeInclusive<u64>], boundary: &str, mime: &str, size: u64) -> (Body, u64) {
        let heads: Vec<Bytes> = ranges
            .iter()
            .map(|r| {
                Bytes::from(format!(
                    "\r\n--{boundary}\r\nContent-Type: {mime}\r\nContent-Range: bytes {}-{}/{size}\r\n\r\n",
                    r.start(),
                    r.end()
                ))
            })
            .collect();
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        let length = heads.iter().map(|h| h.len() as u64).sum::<u64>()
            + ranges.iter().map(|r| r.end() - r.start() + 1).sum::<u64>()
            + tail.len() as u64;
        let body = match self {
            Source::Nothing => Body::empty(),
            Source::Memory(bytes) => {
                let mut out = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
                for (head, r) in heads.iter().zip(ranges) {
                    out.extend_from_slice(head);
                    out.extend_from_slice(&slice(bytes, r));
                }
                out.extend_from_slice(&tail);
                Body::from(out)
            }
            Source::Store { state, hash } => {
                let (state, hash) = (state.clone(), hash.clone());
                let parts = heads.into_iter().zip(ranges.iter().cloned()).collect::<Vec<_>>();
                let stream = stream::iter(parts)
                    .then(move |(head, range)| {
                        let (state, hash) = (state.clone(), hash.clone());
                        async move {
                            let head = stream::once(async move { Ok::<_, std::io::Error>(head) });
                            match state.blobs.read(&hash, Some(*range.start()..range.end() + 1)).await {
                                Ok(reader) => {
                                    head.chain(ReaderStream::with_capacity(reader, STREAM_CHUNK)).left_stream()
                                }
                                Err(e) => stream::once(async move { Err(std::io::Error::other(e)) }).right_stream(),
                            }
                        }
                    })
                    .flatten()
                    .chain(stream::once(async move { Ok(tail) }));
                Body::from_stream(stream)
            }
        };
        (body, length)
    }
}

fn slice(bytes: &Bytes, range: &RangeInclusive<u64>) -> Bytes {
    // Ranges were validated against the file's size, which is the cached length.
    bytes.slice(usize::try_from(*range.start()).unwrap_or(0)..=usize::try_from(*range.end()).unwrap_or(0))
}
