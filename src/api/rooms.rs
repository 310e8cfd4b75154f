//! Rooms: the documented list and permissions, and the extensions to create rooms and
//! manage members.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::Authed;
use super::error::ApiError;
use super::{ok_json, AppState, State};
use crate::actors::room::{
    AddMember, CreateRoom, RemoveMember, RoomChange, SetModerator, SetPinned, UpdateRoom,
};
use crate::actors::voice::Recheck;
use crate::model::{RoomType, UserId};
use crate::storage::{IdKind, RoomRecord};

/// The room, if it exists and the user is a member (403 for a non-member, 404 if unknown).
pub fn visible_room(state: &AppState, auth: &Authed, room_id: u64) -> Result<RoomRecord, ApiError> {
    let room = state
        .store
        .room(room_id)?
        .ok_or_else(|| ApiError::room_not_found(room_id))?;
    if state.store.member(room_id, auth.id())?.is_none() {
        return Err(ApiError::Forbidden(format!(
            "You are not a member of room {room_id}"
        )));
    }
    Ok(room)
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    all: bool,
}

/// `GET /api/v1/rooms`: the rooms the user belongs to. With `?all=true` (extension,
/// administrators): every room on the server, with its member count, whether or not the
/// administrator belongs to it.
pub async fn list(
    state: State,
    auth: Authed,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.all {
        if !auth.user.is_admin {
            return Err(ApiError::Forbidden(
                "Only an administrator may list every room".into(),
            ));
        }
        let mut rooms = Vec::new();
        for r in state.store.rooms()? {
            let members = state.store.members(r.room_id)?.len();
            rooms.push(json!({
                "roomId": r.room_id,
                "displayName": r.name,
                "roomType": r.room_type,
                "isArchived": r.is_archived,
                "createdUtc": r.created_utc,
                "memberCount": members,
            }));
        }
        return Ok(ok_json(json!({ "rooms": rooms })));
    }
    let mut rooms = Vec::new();
    for room_id in state.store.rooms_of_user(auth.id())? {
        if let Some(room) = state.store.room(room_id)? {
            rooms.push(state.store.room_view(&room, auth.id())?);
        }
    }
    Ok(ok_json(json!({ "rooms": rooms })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRoom {
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    room_type: Option<RoomType>,
    #[serde(default)]
    members: Vec<UserId>,
}

/// `POST /api/v1/rooms` (extension). A group room (`"Public"`, the default) with the
/// creator as moderator plus `members`; or the private room between the caller and the one
/// user in `members` (found again, not duplicated, if it exists).
pub async fn create(
    state: State,
    auth: Authed,
    body: web::Json<NewRoom>,
) -> Result<HttpResponse, ApiError> {
    let NewRoom {
        display_name,
        room_type,
        members,
    } = body.into_inner();
    for &m in &members {
        if state.store.user(m)?.is_none() {
            return Err(ApiError::NotFound(format!("User {m} not found")));
        }
    }
    let room_type = room_type.unwrap_or(RoomType::Public);
    let (name, all) = match room_type {
        RoomType::Private => {
            let others: Vec<_> = members.iter().filter(|&&m| m != auth.id()).collect();
            if others.len() != 1 {
                return Err(ApiError::BadRequest(
                    "A private room needs exactly one other user in members".into(),
                ));
            }
            let other = *others[0];
            if let Some(existing) = existing_private_room(&state, auth.id(), other).await? {
                return Ok(existing);
            }
            (String::new(), vec![auth.id(), other])
        }
        RoomType::Public => {
            let name = display_name.trim();
            if name.is_empty() || name.len() > 128 {
                return Err(ApiError::BadRequest(
                    "displayName must be 1-128 bytes".into(),
                ));
            }
            let mut all = vec![auth.id()];
            for m in members {
                if !all.contains(&m) {
                    all.push(m);
                }
            }
            (name.to_string(), all)
        }
    };
    let now = crate::now_ms();
    let record = RoomRecord {
        room_id: state.store.next_id(IdKind::Room),
        name,
        room_type,
        creator_id: auth.id(),
        created_utc: now,
        last_modified_utc: now,
        is_archived: false,
        members_may_leave: true,
        auto_add_new_users: false,
        join_code: None,
    };
    let room_id = record.room_id;
    let actor = state
        .registry
        .send(crate::actors::registry::NewRoom(room_id))
        .await?;
    let created = actor
        .send(CreateRoom {
            record,
            members: all.clone(),
        })
        .await?;
    match created {
        Ok(()) => {}
        // Two requests for the same private room at once: the other one made it.
        Err(ApiError::Conflict(_)) if room_type == RoomType::Private => {
            state.store.durable().await?;
            if let Some(existing) = existing_private_room(&state, all[0], all[1]).await? {
                return Ok(existing);
            }
            return Err(ApiError::Conflict(
                "The private room is being created by another request; try again".into(),
            ));
        }
        Err(e) => return Err(e),
    }
    tracing::info!(target: "confab::audit", by = auth.id(), room_id, ?room_type, members = all.len(), "room created");
    room_answer(&state, &auth, room_id)
}

/// `{roomId, room}` as the caller sees the room now.
fn room_answer(state: &AppState, auth: &Authed, room_id: u64) -> Result<HttpResponse, ApiError> {
    let room = state
        .store
        .room(room_id)?
        .ok_or_else(|| ApiError::room_not_found(room_id))?;
    let view = state.store.room_view(&room, auth.id())?;
    Ok(ok_json(json!({ "roomId": room_id, "room": view })))
}

/// The answer for a private room the two users have already.
async fn existing_private_room(
    state: &AppState,
    a: UserId,
    b: UserId,
) -> Result<Option<HttpResponse>, ApiError> {
    let Some(room_id) = state.store.private_room_of(a, b)? else {
        return Ok(None);
    };
    let room = state
        .store
        .room(room_id)?
        .ok_or_else(|| ApiError::room_not_found(room_id))?;
    let view = state.store.room_view(&room, a)?;
    Ok(Some(ok_json(json!({ "roomId": room_id, "room": view }))))
}

/// `GET /api/v1/rooms/{roomId}/members` (extension)
pub async fn members(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let room_id = path.into_inner();
    visible_room(&state, &auth, room_id)?;
    let members: Vec<_> = state
        .store
        .members(room_id)?
        .into_iter()
        .map(|(user_id, m)| json!({ "userId": user_id, "isModerator": m.is_moderator, "joinedUtc": m.joined_utc }))
        .collect();
    Ok(ok_json(json!({ "roomId": room_id, "members": members })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberBody {
    user_id: UserId,
}

/// `POST /api/v1/rooms/{roomId}/members` (extension; moderators and administrators)
pub async fn add_member(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    body: web::Json<MemberBody>,
) -> Result<HttpResponse, ApiError> {
    let room_id = path.into_inner();
    state
        .in_room(
            room_id,
            AddMember {
                by: auth.id(),
                by_admin: auth.user.is_admin,
                user_id: body.user_id,
                via_link: None,
            },
        )
        .await?;
    tracing::info!(target: "confab::audit", by = auth.id(), room_id, user_id = body.user_id, "member added");
    Ok(ok_json(
        json!({ "roomId": room_id, "userId": body.user_id }),
    ))
}

/// `DELETE /api/v1/rooms/{roomId}/members/{userId}` (extension; moderators and
/// administrators). The removed user's sessions get `RoomDeleted` at once.
pub async fn remove_member(
    state: State,
    auth: Authed,
    path: web::Path<(u64, u64)>,
) -> Result<HttpResponse, ApiError> {
    let (room_id, user_id) = path.into_inner();
    remove_from_room(&state, &auth, room_id, user_id).await?;
    Ok(ok_json(json!({ "roomId": room_id, "userId": user_id })))
}

/// Takes `user_id` out of the room through its actor, then out of its voice channel
/// (keys erased).
async fn remove_from_room(
    state: &State,
    auth: &Authed,
    room_id: u64,
    user_id: u64,
) -> Result<(), ApiError> {
    state
        .in_room(
            room_id,
            RemoveMember {
                by: auth.id(),
                by_admin: auth.user.is_admin,
                user_id,
            },
        )
        .await?;
    state.voice.hub.do_send(Recheck(Some(room_id)));
    tracing::info!(target: "confab::audit", by = auth.id(), room_id, user_id, "member removed");
    Ok(())
}

/// `POST /api/v1/rooms/{roomId}/leave` (extension; when the room lets members leave).
pub async fn leave(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let room_id = path.into_inner();
    remove_from_room(&state, &auth, room_id, auth.id()).await?;
    Ok(ok_json(json!({ "roomId": room_id })))
}

/// `PATCH /api/v1/rooms/{roomId}` (extension; moderators and administrators): rename,
/// archive or unarchive, room options. Members get `RoomUpdated`.
pub async fn update(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    body: web::Json<RoomChange>,
) -> Result<HttpResponse, ApiError> {
    let room_id = path.into_inner();
    let record = state
        .in_room(
            room_id,
            UpdateRoom {
                by: auth.id(),
                by_admin: auth.user.is_admin,
                change: body.into_inner(),
            },
        )
        .await?;
    let mut view = state.store.room_view(&record, auth.id())?;
    // The caller may change the room, so they see its join code even as a non-member admin.
    view.join_code = record.join_code.clone();
    Ok(ok_json(json!({ "roomId": room_id, "room": view })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinBody {
    join_code: String,
}

/// `POST /api/v1/rooms/join` (extension): join a group room with the code of its join
/// link. The caller becomes a member with the room's whole history (and gets `RoomCreated`).
pub async fn join(
    state: State,
    auth: Authed,
    body: web::Json<JoinBody>,
) -> Result<HttpResponse, ApiError> {
    let code = body.into_inner().join_code;
    let not_found = || {
        ApiError::NotFound(
            "No room has this join link (it may have been turned off or renewed)".into(),
        )
    };
    if code.is_empty() || code.len() > 64 {
        return Err(not_found());
    }
    let room = state
        .store
        .room_by_join_code(&code)?
        .ok_or_else(not_found)?;
    state
        .in_room(
            room.room_id,
            AddMember {
                by: auth.id(),
                by_admin: false,
                user_id: auth.id(),
                via_link: Some(code),
            },
        )
        .await?;
    let view = state.store.room_view(&room, auth.id())?;
    Ok(ok_json(json!({ "roomId": room.room_id, "room": view })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberRoleBody {
    is_moderator: bool,
}

/// `PUT /api/v1/rooms/{roomId}/members/{userId}` (extension; moderators and
/// administrators): `{"isModerator": bool}`. A room keeps at least one moderator.
pub async fn set_member_role(
    state: State,
    auth: Authed,
    path: web::Path<(u64, u64)>,
    body: web::Json<MemberRoleBody>,
) -> Result<HttpResponse, ApiError> {
    let (room_id, user_id) = path.into_inner();
    state
        .in_room(
            room_id,
            SetModerator {
                by: auth.id(),
                by_admin: auth.user.is_admin,
                user_id,
                is_moderator: body.is_moderator,
            },
        )
        .await?;
    Ok(ok_json(json!({
        "roomId": room_id,
        "userId": user_id,
        "isModerator": body.is_moderator,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinBody {
    is_pinned: bool,
}

/// `PUT /api/v1/rooms/{roomId}/pin` (extension): `{"isPinned": bool}`, for the caller only;
/// their sessions get `RoomUpdated`.
pub async fn pin(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    body: web::Json<PinBody>,
) -> Result<HttpResponse, ApiError> {
    let room_id = path.into_inner();
    visible_room(&state, &auth, room_id)?;
    let view = state
        .in_room(
            room_id,
            SetPinned {
                user_id: auth.id(),
                pinned: body.is_pinned,
            },
        )
        .await?;
    Ok(ok_json(json!({ "roomId": room_id, "room": view })))
}
