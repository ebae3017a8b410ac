//! `GET /debug/pprof/profile`: a CPU profile of this process (admin only), as a flamegraph or pprof protobuf.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use fwb_profiling::{Format, ProfileError};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::routes;

use super::policy::{ApiRoutes, Policy};
use super::{ApiError, AppState, require_admin};
use crate::domain::Caller;
use crate::error::ErrorCode;

pub(super) fn routes(api: ApiRoutes) -> ApiRoutes {
    api.route(Policy::read(), routes!(cpu_profile))
}

const MAX_SECONDS: u64 = 120;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ProfileParams {
    /// How long to sample, 1 to 120 (default 10).
    #[param(minimum = 1, maximum = 120)]
    seconds: Option<u64>,
    /// Samples per second, 1 to 1000 (default 99; the kernel tick caps it near 250).
    #[param(minimum = 1, maximum = 1000)]
    frequency: Option<i32>,
    /// `svg` (default), `pb` (gzip'd pprof protobuf), `folded` (folded stacks, text: to render or compare
    /// elsewhere) or `addresses` (folded stacks of raw addresses with this process's code mappings, named elsewhere
    /// by `fwb_profiling::symbolize`: the only one that spares this process reading its debug information, which
    /// costs hundreds of MiB and seconds of a core).
    format: Option<String>,
}

/// Profile the service's CPU for a while (admin). One capture at a time: another is a 409.
#[utoipa::path(get, path = "/debug/pprof/profile", tag = "health", params(ProfileParams),
    responses((status = 200, content_type = "image/svg+xml"), (status = 400), (status = 403), (status = 409)))]
async fn cpu_profile(
    State(_state): State<AppState>,
    caller: Caller,
    Query(p): Query<ProfileParams>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let bad = |m: String| ApiError::BadRequest(ErrorCode::InvalidQuery, m);
    let seconds = p.seconds.unwrap_or(10);
    if !(1..=MAX_SECONDS).contains(&seconds) {
        return Err(bad(format!("seconds must be between 1 and {MAX_SECONDS}")));
    }
    let frequency = p.frequency.unwrap_or(99);
    if !(1..=1000).contains(&frequency) {
        return Err(bad("frequency must be between 1 and 1000".into()));
    }
    let (format, content_type, file) = match p.format.as_deref().unwrap_or("svg") {
        "svg" => (Format::Svg, "image/svg+xml", "profile.svg"),
        "pb" => (Format::Pprof, "application/octet-stream", "profile.pb.gz"),
        "folded" => (Format::Folded, "text/plain; charset=utf-8", "profile.folded"),
        "addresses" => (Format::Addresses, "text/plain; charset=utf-8", "profile.addresses"),
        other => return Err(bad(format!("format must be svg, pb, folded or addresses, not {other:?}"))),
    };
    let bytes = fwb_profiling::capture(Duration::from_secs(seconds), frequency, format).await.map_err(|e| match e {
        ProfileError::Busy => {
            ApiError::Conflict(ErrorCode::ProfileInProgress, "a profile is already being captured".into())
        }
        other => ApiError::Internal(other.to_string()),
    })?;
    let disposition = format!("attachment; filename=\"{file}\"");
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::try_from(disposition).map_err(|e| ApiError::Internal(e.to_string()))?,
            ),
        ],
        bytes,
    )
        .into_response())
}
