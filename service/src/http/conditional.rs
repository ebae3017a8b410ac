//! Conditional and ranged requests (RFC 9110 §13 and §14), as pure functions of the request's headers and the
//! representation's validators: what `/content`, `/s/{token}` and thumbnails answer before reading a byte.
//!
//! Order of evaluation follows RFC 9110 §13.2.2: If-Match, If-Unmodified-Since, If-None-Match,
//! If-Modified-Since, then Range (honoured only when If-Range, if sent, still matches).
//! Range syntax and satisfiability are decided by `http-range-header`.

use std::num::NonZeroUsize;
use std::ops::RangeInclusive;
use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderValue, header};
use headers::{ETag, HeaderMapExt, IfMatch, IfModifiedSince, IfNoneMatch, IfRange, IfUnmodifiedSince, LastModified};
use http_range_header::{RangeInvalid, RangeRejected, RangeUnsatisfiableError};

use super::ApiError;
use crate::error::ErrorCode;

/// More ranges than this in one request get the whole file instead: a client needing them can ask again.
const MAX_RANGES: usize = 16;

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
