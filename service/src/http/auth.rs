//! Authentication at the HTTP boundary: the bearer token and client address a request carries, handed to
//! [`crate::auth::authenticate`], and the [`Caller`] extractor handlers take.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use http::request::Parts;

use super::client_ip::ClientIp;
use crate::auth::authenticate;
use crate::domain::Caller;
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::state::AppState;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value =
        parts.headers.get(http::header::AUTHORIZATION).ok_or(ApiError::Unauthorized(ErrorCode::MissingApiKey))?;
    let value = value.to_str().map_err(|_| ApiError::Unauthorized(ErrorCode::InvalidAuthorization))?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized(ErrorCode::InvalidAuthorization))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized(ErrorCode::InvalidAuthorization));
    }
    Ok(token.trim())
}

/// The client's address, as the audit middleware resolved it.
fn client(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ClientIp>().and_then(|c| c.0)
}

/// The caller when the request presents a key: `Ok(None)` without one, an error for a bad one. The caller is
/// left in the request's extensions for the handler's extractor. The flag says the key came from the database
/// (its first use in a while) rather than from the key cache.
pub(crate) async fn caller_if_presented(
    state: &AppState,
    parts: &mut Parts,
) -> Result<Option<(Caller, bool)>, ApiError> {
    if !parts.headers.contains_key(http::header::AUTHORIZATION) {
        return Ok(None);
    }
    let (caller, fresh) = authenticate(state, client(parts), bearer(parts)).await?;
    parts.extensions.insert(caller.clone());
    Ok(Some((caller, fresh)))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let (caller, _) = authenticate(state, client(parts), bearer(parts)).await?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}
