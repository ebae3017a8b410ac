//! `/api/v1/users`: users and their API keys. Admins manage everyone; a user sees and revokes their own keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use super::policy::{ApiRoutes, Policy};
use super::{ApiError, AppState, require_admin};
use crate::audit::Action;
use crate::auth::{self, NewKey};
use crate::db::{DbError, NewUser, UserPatch};
use crate::domain::names::validate_user_name;
use crate::domain::{ApiKey, Caller, Role, User};
use crate::error::ErrorCode;

pub(super) fn routes(api: ApiRoutes) -> ApiRoutes {
    api.route(Policy::recorded(Action::UserCreate), routes!(create_user))
        .route(Policy::read(), routes!(list_users))
        .route(Policy::read(), routes!(get_me))
        .route(Policy::recorded(Action::UserUpdate), routes!(update_user))
        .route(Policy::recorded(Action::KeyIssue), routes!(issue_key))
        .route(Policy::read(), routes!(list_keys))
        .route(Policy::recorded(Action::KeyRevoke), routes!(revoke_key))
}

/// Admins act on anyone; a user only on themselves. Other users' ids are not disclosed.
fn require_self_or_admin(caller: &Caller, user_id: Uuid) -> Result<(), ApiError> {
    if caller.is_admin() || caller.user.id == user_id {
        Ok(())
    } else {
        Err(ApiError::NotFound(ErrorCode::UserNotFound, "user not found".into()))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUser {
    /// 1 to 64 characters: letters, digits, `.`, `_`, `-`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    name: String,
    #[serde(default = "default_role")]
    role: Role,
    #[serde(default, deserialize_with = "super::whole")]
    #[schema(minimum = 0)]
    quota_bytes: Option<i64>,
}

fn default_role() -> Role {
    Role::User
}

/// Create a user (admin).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = User), (status = 403), (status = 409)))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    super::JsonObject(body): super::JsonObject<CreateUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    require_admin(&caller)?;
    validate_user_name(&body.name).map_err(|m| ApiError::BadRequest(ErrorCode::InvalidName, m.into()))?;
    if body.quota_bytes.is_some_and(|q| q < 0) {
        return Err(ApiError::BadRequest(ErrorCode::InvalidQuota, "quota_bytes must not be negative".into()));
    }
    let user = state
        .db
        .create_user(&NewUser { name: body.name, role: body.role, quota_bytes: body.quota_bytes })
        .await
        .map_err(|e| match e {
            DbError::Conflict(_) => ApiError::Conflict(ErrorCode::UserExists, "a user with this name exists".into()),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// All users (admin).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", responses((status = 200, body = Vec<User>), (status = 403)))]
async fn list_users(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<User>>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(state.db.list_users().await?))
}

/// The caller.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users", responses((status = 200, body = User)))]
async fn get_me(caller: Caller) -> Json<User> {
    Json(caller.user)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateUser {
    role: Option<Role>,
    /// A number of bytes, or `null` to remove the quota.
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = 0)]
    quota_bytes: Option<Option<i64>>,
    /// `true` disables the user: every key of theirs stops working at once.
    disabled: Option<bool>,
}

/// Tells a field sent as `null` (`Some(None)`) from one not sent at all (`None`, the default).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    super::whole(d).map(Some)
}

/// Change a user's role, quota or disabled state (admin).
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", request_body = UpdateUser,
    params(("id" = Uuid, Path, description = "user id")),
    responses((status = 200, body = User), (status = 403), (status = 404)))]
async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<Uuid>,
    super::JsonObject(body): super::JsonObject<UpdateUser>,
) -> Result<Json<User>, ApiError> {
    require_admin(&caller)?;
    if body.quota_bytes.flatten().is_some_and(|q| q < 0) {
        return Err(ApiError::BadRequest(ErrorCode::InvalidQuota, "quota_bytes must not be negative".into()));
    }
    let patch = UserPatch { role: body.role, quota_bytes: body.quota_bytes, disabled: body.disabled };
    let user = state
        .db
        .update_user(user_id, &patch)
        .await?
        .ok_or_else(|| ApiError::NotFound(ErrorCode::UserNotFound, "user not found".into()))?;
    state.cache.invalidate_user(user_id).await;
    auth::keys_changed(&state).await;
    Ok(Json(user))
}

/// A key as issued: the secret appears here once and is never stored.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IssuedKey {
    #[serde(flatten)]
    key: ApiKey,
    /// Send as `Authorization: Bearer <key>`.
    secret: String,
}

/// Issue an API key for a user (admin).
#[utoipa::path(post, path = "/api/v1/users/{id}/keys", tag = "users",
    params(("id" = Uuid, Path, description = "user id")),
    responses((status = 201, body = IssuedKey), (status = 403), (status = 404)))]
async fn issue_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<Uuid>,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    require_admin(&caller)?;
    state
        .db
        .get_user(user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(ErrorCode::UserNotFound, "user not found".into()))?;
    let new = NewKey::generate();
    let key = state.db.create_api_key(user_id, &new.hash, &new.prefix).await?;
    Ok((StatusCode::CREATED, Json(IssuedKey { key, secret: new.secret })))
}

/// A user's keys, without their secrets.
#[utoipa::path(get, path = "/api/v1/users/{id}/keys", tag = "users",
    params(("id" = Uuid, Path, description = "user id")), responses((status = 200, body = Vec<ApiKey>)))]
async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<Uuid>,
) -> Result<Json<Vec<ApiKey>>, ApiError> {
    require_self_or_admin(&caller, user_id)?;
    Ok(Json(state.db.list_api_keys(user_id).await?))
}

/// Revoke a key; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/users/{id}/keys/{key_id}", tag = "users",
    params(("id" = Uuid, Path, description = "user id"), ("key_id" = Uuid, Path, description = "key id")),
    responses((status = 204), (status = 404)))]
async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((user_id, key_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    require_self_or_admin(&caller, user_id)?;
    if state.db.revoke_api_key(user_id, key_id).await? {
        auth::keys_changed(&state).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(ErrorCode::KeyNotFound, "no such live key".into()))
    }
}
