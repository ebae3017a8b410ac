//! `GET|HEAD /api/v1/files/{id}/content`: the bytes, with byte ranges, validators and conditional requests
//! (decided in [`conditional`](super::conditional)), streamed from the cache or the blob store.

use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use headers::{ETag, HeaderMapExt, LastModified};
use rand::RngCore as _;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;
use utoipa_axum::routes;
use uuid::Uuid;

use super::conditional::{Precondition, evaluate_preconditions, range_applies, requested_ranges};
use super::files::readable_file;
use super::policy::{ApiRoutes, Policy};
use super::{ApiError, AppState};
use crate::audit::Action;
use crate::cache::Family;
use crate::domain::names::content_disposition;
use crate::domain::{Caller, FileMeta};
use crate::ratelimit::RouteClass;

pub(super) fn routes(api: ApiRoutes) -> ApiRoutes {
    api.route(Policy::recorded(Action::FileDownload).limited_as(RouteClass::Download), routes!(download_file))
}

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
