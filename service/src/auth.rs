//! API keys: how they are made, stored (only a hash), and checked on every `/api/v1` request.

use axum::extract::FromRequestParts;
use base64::Engine as _;
use chrono::{TimeDelta, Utc};
use http::request::Parts;
use rand::RngCore as _;

use crate::domain::Caller;
use crate::http::{ApiError, AppState};

const KEY_PREFIX: &str = "fwb_";
/// Characters of the key kept in clear (after `fwb_`) to tell keys apart in listings.
const SHOWN_CHARS: usize = 8;
/// `last_used_at` is written at most this often per key, so reads do not become writes.
const TOUCH_INTERVAL: TimeDelta = TimeDelta::minutes(5);

/// A new key: the secret shown once, its stored hash and its visible prefix.
#[derive(Debug)]
pub(crate) struct NewKey {
    pub(crate) secret: String,
    pub(crate) hash: String,
    pub(crate) prefix: String,
}

impl NewKey {
    pub(crate) fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        let prefix = secret[..KEY_PREFIX.len() + SHOWN_CHARS].to_owned();
        Self { hash: hash_key(&secret), secret, prefix }
    }
}

/// Keys carry 256 random bits, so a fast hash is enough: nobody can guess their way back from it.
pub(crate) fn hash_key(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(http::header::AUTHORIZATION).ok_or(ApiError::Unauthorized("missing-api-key"))?;
    let value = value.to_str().map_err(|_| ApiError::Unauthorized("invalid-authorization"))?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized("invalid-authorization"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized("invalid-authorization"));
    }
    Ok(token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let token = bearer(parts)?;
        let (user, key) =
            state.db.authenticate(&hash_key(token)).await?.ok_or(ApiError::Unauthorized("invalid-api-key"))?;
        let now = Utc::now();
        if key.last_used_at.is_none_or(|t| now - t > TOUCH_INTERVAL) {
            let db = state.db.clone();
            tokio::spawn(async move {
                if let Err(e) = db.touch_api_key(key.id, now).await {
                    tracing::warn!(error = %e, "could not record key use");
                }
            });
        }
        let caller = Caller { user };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_random_and_only_its_hash_matches() {
        let a = NewKey::generate();
        let b = NewKey::generate();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with("fwb_") && a.secret.len() == 4 + 43);
        assert!(a.secret.starts_with(&a.prefix));
        assert_eq!(hash_key(&a.secret), a.hash);
        assert_ne!(a.hash, a.secret);
    }
}
