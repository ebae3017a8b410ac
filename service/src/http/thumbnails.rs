//! `GET /api/v1/files/{id}/thumbnail?size=small|medium|large`: a JPEG of the image, once it is made.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use headers::{ETag, HeaderMapExt as _};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::routes;
use uuid::Uuid;

use super::conditional::{Precondition, evaluate_preconditions};
use super::content::content_modified;
use super::files::readable_file;
use super::policy::{ApiRoutes, Policy};
use super::{ApiError, AppState};
use crate::cache::Family;
use crate::domain::{Caller, ThumbState};
use crate::error::ErrorCode;
use crate::media::thumbnail::ThumbSize;

pub(super) fn routes(api: ApiRoutes) -> ApiRoutes {
    api.route(Policy::read(), routes!(get_thumbnail))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ThumbParams {
    /// `small` (128 px), `medium` (512 px, the default) or `large` (1024 px), longest side.
    size: Option<ThumbSize>,
}

/// A thumbnail: 200 with a JPEG, 202 with `Retry-After` while it is being made, 404 for files that are not
/// images, 422 for an image that could not be decoded.
#[utoipa::path(get, path = "/api/v1/files/{id}/thumbnail", tag = "files",
    params(("id" = Uuid, Path, description = "file id"), ThumbParams),
    responses((status = 200, content_type = "image/jpeg"), (status = 202), (status = 404), (status = 422)))]
async fn get_thumbnail(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(p): Query<ThumbParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let meta = readable_file(&state, &caller, id).await?;
    let size = p.size.unwrap_or(ThumbSize::Medium);
    match meta.thumbnail {
        None => return Err(ApiError::NotFound(ErrorCode::NoThumbnail, "this file is not an image".into())),
        Some(ThumbState::Failed) => {
            return Err(ApiError::Unprocessable(ErrorCode::UndecodableImage, "the image could not be decoded".into()));
        }
        Some(ThumbState::Pending) => {
            let body = axum::Json(serde_json::json!({"status": "pending"}));
            return Ok(
                (StatusCode::ACCEPTED, [(header::RETRY_AFTER, HeaderValue::from_static("2"))], body).into_response()
            );
        }
        Some(ThumbState::Ready) => {}
    }
    let etag: ETag = format!("\"{}-{}\"", meta.content_hash, size.as_str())
        .parse()
        .map_err(|_| ApiError::Internal("content hash is not a valid entity tag".into()))?;
    let mut response_headers = HeaderMap::new();
    response_headers.typed_insert(etag.clone());
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    // The same conditional-request rules as the content itself: a thumbnail changes only with it.
    match evaluate_preconditions(&headers, &etag, content_modified(&meta))? {
        Precondition::Proceed => {}
        Precondition::NotModified => return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response()),
        Precondition::Failed => return Err(ApiError::PreconditionFailed),
    }
    let jpeg = state
        .cache
        .get_or_load_bytes(Family::Thumbnail, &format!("{id}:{}", size.as_str()), async || {
            match state.thumbnails.read(id, size).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ApiError::Internal(format!("reading thumbnail of {id}: {e}"))),
            }
        })
        .await?
        .ok_or_else(|| ApiError::Internal(format!("thumbnail of {id} recorded as ready but missing")))?;
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    Ok((StatusCode::OK, response_headers, jpeg).into_response())
}
