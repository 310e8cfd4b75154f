//! Permissions: the documented `GET /api/v1/room-permissions/{roomId}` (the caller's
//! effective flags) and the extensions that set them at the three levels (see
//! `storage::permissions` for how they combine): server-wide defaults (administrators),
//! per room and per user in a room (moderators may only restrict; administrators may set
//! either way).

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Admin, Authed};
use super::error::ApiError;
use super::{ok_json, AppState, State};
use crate::actors::room::SetPermissions;
use crate::actors::voice::Recheck;
use crate::model::{Permission, UserId};

/// Flag names from a request body; an unknown name is a 400 naming it.
fn parse_flags<V: Copy>(flags: &BTreeMap<String, V>) -> Result<Vec<(Permission, V)>, ApiError> {
    flags
        .iter()
        .map(|(name, &v)| {
            Permission::from_name(name)
                .map(|p| (p, v))
                .ok_or_else(|| ApiError::BadRequest(format!("Unknown permission \"{name}\"")))
        })
        .collect()
}

/// `GET /api/v1/permissions` (extension): the server-wide defaults for room members.
pub async fn global(state: State, _auth: Authed) -> Result<HttpResponse, ApiError> {
    Ok(ok_json(
        json!({ "permissions": state.store.global_permissions()? }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalBody {
    permissions: BTreeMap<String, bool>,
}

/// `PUT /api/v1/permissions` (extension; administrators): changes the listed defaults.
pub async fn set_global(
    state: State,
    admin: Admin,
    body: web::Json<GlobalBody>,
) -> Result<HttpResponse, ApiError> {
    let flags = parse_flags(&body.permissions)?;
    let permissions = state.store.update_global_permissions(|p| {
        for &(flag, allowed) in &flags {
            p.set(flag, allowed);
        }
    })?;
    state.store.durable().await?;
    state.voice.hub.do_send(Recheck(None));
    tracing::info!(target: "confab::audit", by = admin.0.id(), "global permissions changed");
    Ok(ok_json(json!({ "permissions": permissions })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomPermissionsQuery {
    user_id: Option<UserId>,
}

/// Moderator of the room or administrator; 403 for other members, 404 for strangers.
fn require_moderator(state: &AppState, auth: &Authed, room_id: u64) -> Result<(), ApiError> {
    state
        .store
        .room(room_id)?
        .ok_or_else(|| ApiError::room_not_found(room_id))?;
    match state.store.member(room_id, auth.id())? {
        Some(m) if m.is_moderator => Ok(()),
        _ if auth.user.is_admin => Ok(()),
        Some(_) => Err(ApiError::Forbidden(
            "Only a room moderator or an administrator may manage this room's permissions".into(),
        )),
        None => Err(ApiError::room_not_found(room_id)),
    }
}

/// `GET /api/v1/room-permissions/{roomId}`: the caller's effective flags. With
/// `?userId=` (extension; moderators and administrators) another member's, plus the
/// settings of the room and user levels.
pub async fn room(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    query: web::Query<RoomPermissionsQuery>,
) -> Result<HttpResponse, ApiError> {
    let room_id = path.into_inner();
    match query.user_id {
        None => {
            super::rooms::visible_room(&state, &auth, room_id)?;
            let p = state
                .store
                .effective_permissions(room_id, auth.id(), auth.user.is_admin)?
                .ok_or_else(|| {
                    ApiError::Forbidden(format!("You are not a member of room {room_id}"))
                })?;
            Ok(ok_json(json!({
                "roomPermissions": { "roomId": room_id, "permissions": p }
            })))
        }
        Some(user_id) => {
            require_moderator(&state, &auth, room_id)?;
            let target = state
                .store
                .user(user_id)?
                .ok_or_else(|| ApiError::NotFound(format!("User {user_id} not found")))?;
            let p = state
                .store
                .effective_permissions(room_id, user_id, target.is_admin)?
                .ok_or_else(|| {
                    ApiError::NotFound(format!("User {user_id} is not a member of room {room_id}"))
                })?;
            Ok(ok_json(json!({
                "roomPermissions": {
                    "roomId": room_id,
                    "userId": user_id,
                    "permissions": p,
                    "roomSettings": state.store.permission_layer(room_id, None)?,
                    "userSettings": state.store.permission_layer(room_id, Some(user_id))?,
                }
            })))
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoomPermissionsBody {
    /// The user level for this member; absent: the room level.
    #[serde(default)]
    user_id: Option<UserId>,
    /// `false` restricts; `true` allows (administrators) or lifts a moderator's
    /// restriction; `null` returns the flag to the level above.
    permissions: BTreeMap<String, Option<bool>>,
}

/// `PUT /api/v1/room-permissions/{roomId}` (extension; moderators and administrators).
/// A moderator can only restrict: asking for a flag the administrator does not allow is a
/// 403 naming it. Affected members get `RoomPermissionsChanged`.
pub async fn set_room(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    body: web::Json<RoomPermissionsBody>,
) -> Result<HttpResponse, ApiError> {
    let room_id = path.into_inner();
    require_moderator(&state, &auth, room_id)?;
    let RoomPermissionsBody {
        user_id,
        permissions,
    } = body.into_inner();
    let flags = parse_flags(&permissions)?;
    if let Some(u) = user_id {
        if state.store.user(u)?.is_none() {
            return Err(ApiError::NotFound(format!("User {u} not found")));
        }
    }
    let layer = state
        .in_room(
            room_id,
            SetPermissions {
                by: auth.id(),
                by_admin: auth.user.is_admin,
                user_id,
                flags,
            },
        )
        .await?;
    state.voice.hub.do_send(Recheck(Some(room_id)));
    tracing::info!(target: "confab::audit", by = auth.id(), room_id, user_id = ?user_id, "room permissions changed");
    Ok(ok_json(json!({
        "roomId": room_id,
        "userId": user_id,
        "settings": layer,
    })))
}
