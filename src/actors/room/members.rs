//! The room actor's room writes: creation, membership, moderators, settings, pins, avatar
//! and permission layers.

use actix::prelude::*;

use super::{answer, when_ready, Delivery, Reply, RoomActor};
use crate::actors::event_payload;
use crate::api::error::ApiError;
use crate::model::{Permission, Room, RoomType, UserId};
use crate::storage::{PermissionLayer, RoomRecord};

impl RoomActor {
    fn room_record(&self) -> Result<RoomRecord, ApiError> {
        self.room
            .clone()
            .ok_or_else(|| ApiError::room_not_found(self.room_id))
    }

    /// Each listed user's own view of the room as a `kind` event (built from the latest
    /// state, delivered once durable).
    fn views_for(
        &self,
        kind: &str,
        users: impl Iterator<Item = UserId>,
    ) -> Result<Vec<Delivery>, ApiError> {
        let room = self.room_record()?;
        let mut out = Vec::new();
        for user in users {
            let view = self.latest().room_view(&room, user)?;
            out.push(Delivery::User(
                user,
                event_payload(kind, serde_json::json!({ "room": view })),
            ));
        }
        Ok(out)
    }

    fn create(&mut self, msg: CreateRoom) -> Result<Vec<Delivery>, ApiError> {
        if self.room.is_some() {
            return Err(ApiError::Conflict(format!("Room {} exists", self.room_id)));
        }
        self.store.create_room(&msg.record, &msg.members)?;
        self.load()?;
        self.views_for("RoomCreated", msg.members.iter().copied())
    }

    fn update_room(
        &mut self,
        by: UserId,
        by_admin: bool,
        change: RoomChange,
    ) -> Result<Vec<Delivery>, ApiError> {
        self.require_moderator(by, by_admin, "change this room")?;
        let old = self.room_record()?;
        let mut room = old.clone();
        if let Some(name) = change.display_name {
            let name = name.trim().to_string();
            if room.room_type == RoomType::Private {
                return Err(ApiError::BadRequest(
                    "A private room is named after the other user".into(),
                ));
            }
            if name.is_empty() || name.len() > 128 {
                return Err(ApiError::BadRequest(
                    "displayName must be 1-128 bytes".into(),
                ));
            }
            room.name = name;
        }
        if let Some(a) = change.is_archived {
            room.is_archived = a;
        }
        if let Some(l) = change.members_may_leave {
            room.members_may_leave = l;
        }
        if let Some(a) = change.auto_add_new_users {
            if !by_admin {
                return Err(ApiError::Forbidden(
                    "Only an administrator may add every new user to a room".into(),
                ));
            }
            room.auto_add_new_users = a;
        }
        if change.join_by_link.is_some() || change.renew_join_link {
            if room.room_type == RoomType::Private {
                return Err(ApiError::BadRequest(
                    "A private room cannot be joined by link".into(),
                ));
            }
            let on = change.join_by_link.unwrap_or(room.join_code.is_some());
            room.join_code = match (on, &room.join_code) {
                (false, _) => None,
                (true, Some(code)) if !change.renew_join_link => Some(code.clone()),
                (true, _) => Some(crate::api::auth::random_hex(16)),
            };
        }
        room.last_modified_utc = crate::now_ms();
        self.store.update_room(&old, &room)?;
        self.room = Some(room);
        self.views_for("RoomUpdated", self.audience.iter().copied())
    }

    fn add_member(
        &mut self,
        by: UserId,
        by_admin: bool,
        user_id: UserId,
    ) -> Result<Vec<Delivery>, ApiError> {
        let room = self.room_record()?;
        self.require_moderator(by, by_admin, "add members")?;
        if room.room_type == RoomType::Private {
            return Err(ApiError::BadRequest(
                "A private room always has exactly its two users".into(),
            ));
        }
        if self.latest().user(user_id)?.is_none() {
            return Err(ApiError::NotFound(format!("User {user_id} not found")));
        }
        if self.members.contains_key(&user_id) {
            return Ok(Vec::new());
        }
        self.store.add_member(self.room_id, user_id, false)?;
        if let Some(m) = self.latest().member(self.room_id, user_id)? {
            self.members.insert(user_id, m);
            self.refresh_audience();
        }
        self.views_for("RoomCreated", std::iter::once(user_id))
    }

    /// Takes a user out of the room: every session of theirs gets `RoomDeleted` once the
    /// change is durable; from the moment it is applied they can read and post nothing here,
    /// and no event of a later write reaches them.
    fn remove_member(&mut self, user_id: UserId) -> Result<Vec<Delivery>, ApiError> {
        let room = self.room_record()?;
        if room.room_type == RoomType::Private {
            return Err(ApiError::BadRequest(
                "A private room always has exactly its two users".into(),
            ));
        }
        let Some(member) = self.members.get(&user_id) else {
            return Err(ApiError::NotFound(format!(
                "User {user_id} is not a member of room {}",
                self.room_id
            )));
        };
        let others_moderate = self
            .members
            .iter()
            .any(|(&u, m)| u != user_id && m.is_moderator);
        if member.is_moderator && !others_moderate && self.members.len() > 1 {
            return Err(ApiError::Conflict(
                "The room's last moderator cannot leave or be removed while others remain; appoint another moderator first".into(),
            ));
        }
        self.store.remove_member(self.room_id, user_id)?;
        self.members.remove(&user_id);
        self.refresh_audience();
        Ok(vec![Delivery::User(
            user_id,
            event_payload("RoomDeleted", serde_json::json!({ "roomId": self.room_id })),
        )])
    }

    fn set_moderator(&mut self, msg: &SetModerator) -> Result<Vec<Delivery>, ApiError> {
        self.require_moderator(msg.by, msg.by_admin, "appoint moderators")?;
        if self.room.as_ref().map(|r| r.room_type) == Some(RoomType::Private) {
            return Err(ApiError::BadRequest(
                "A private room has no moderators".into(),
            ));
        }
        let Some(mut member) = self.members.get(&msg.user_id).copied() else {
            return Err(ApiError::NotFound(format!(
                "User {} is not a member of room {}",
                msg.user_id, self.room_id
            )));
        };
        if !msg.is_moderator
            && self
                .members
                .iter()
                .all(|(&u, m)| u == msg.user_id || !m.is_moderator)
        {
            return Err(ApiError::Conflict(
                "The room would have no moderator left; appoint another first".into(),
            ));
        }
        member.is_moderator = msg.is_moderator;
        self.store
            .set_moderator(self.room_id, msg.user_id, member)?;
        self.members.insert(msg.user_id, member);
        self.views_for("RoomUpdated", std::iter::once(msg.user_id))
    }

    fn set_pinned(
        &mut self,
        user_id: UserId,
        pinned: bool,
    ) -> Result<(Room, Vec<Delivery>), ApiError> {
        self.require_member(user_id)?;
        self.store.set_pinned(self.room_id, user_id, pinned)?;
        let view = self.latest().room_view(&self.room_record()?, user_id)?;
        let event = event_payload("RoomUpdated", serde_json::json!({ "room": view }));
        Ok((view, vec![Delivery::User(user_id, event)]))
    }

    fn set_permissions(
        &mut self,
        msg: SetPermissions,
    ) -> Result<(PermissionLayer, Vec<Delivery>), ApiError> {
        self.require_moderator(msg.by, msg.by_admin, "manage this room's permissions")?;
        let r = self.latest();
        let mut layer = r.permission_layer(self.room_id, msg.user_id)?;
        let ceiling = r.admin_allowed(self.room_id, msg.user_id)?;
        for (flag, value) in msg.flags {
            let name = flag.name().to_string();
            match (msg.by_admin, value) {
                (true, Some(v)) => {
                    layer.set_by_admin.insert(name.clone(), v);
                    layer.denied_by_moderator.remove(&name);
                }
                (true, None) => {
                    layer.set_by_admin.remove(&name);
                    layer.denied_by_moderator.remove(&name);
                }
                (false, Some(false)) => {
                    layer.denied_by_moderator.insert(name);
                }
                (false, _) => {
                    if value == Some(true) && !ceiling.allows(flag) {
                        return Err(ApiError::Forbidden(format!(
                            "A moderator cannot grant {name}: an administrator does not allow it"
                        )));
                    }
                    layer.denied_by_moderator.remove(&name);
                }
            }
        }
        self.store
            .set_permission_layer(self.room_id, msg.user_id, &layer)?;
        self.forget_permissions();
        let payload = event_payload(
            "RoomPermissionsChanged",
            serde_json::json!({ "roomId": self.room_id, "userId": msg.user_id }),
        );
        let delivery = match msg.user_id {
            Some(u) => Delivery::User(u, payload),
            None => self.to_members(payload),
        };
        Ok((layer, vec![delivery]))
    }
}

/// Create this (new) room with its members; each member gets `RoomCreated` with their
/// own view once it is durable. A second private room for the same pair is a conflict.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), ApiError>")]
pub struct CreateRoom {
    pub record: RoomRecord,
    pub members: Vec<UserId>,
}

impl Handler<CreateRoom> for RoomActor {
    type Result = Reply<()>;
    fn handle(&mut self, msg: CreateRoom, ctx: &mut Context<Self>) -> Self::Result {
        when_ready(self, |act| match act.create(msg) {
            Ok(deliveries) => act.commit_deliveries(ctx, deliveries, ()),
            Err(e) => {
                if act.room.is_none() {
                    // An id that will never hold a room: nothing to keep running for.
                    ctx.stop();
                }
                answer(Err(e))
            }
        })
    }
}

/// Add a member to a group room (by a moderator or an administrator).
#[derive(Message, Clone)]
#[rtype(result = "Result<(), ApiError>")]
pub struct AddMember {
    pub by: UserId,
    pub by_admin: bool,
    pub user_id: UserId,
    /// The user joins with the room's join code (checked here against the current one).
    pub via_link: Option<String>,
}

impl Handler<AddMember> for RoomActor {
    type Result = Reply<()>;
    fn handle(&mut self, msg: AddMember, ctx: &mut Context<Self>) -> Self::Result {
        when_ready(self, |act| {
            if let Some(code) = &msg.via_link {
                let valid = act
                    .room
                    .as_ref()
                    .and_then(|r| r.join_code.as_deref())
                    .is_some_and(|c| c == code);
                if !valid {
                    return answer(Err(ApiError::NotFound(
                        "No room has this join link (it may have been turned off or renewed)"
                            .into(),
                    )));
                }
            }
            match act.add_member(msg.by, msg.by_admin || msg.via_link.is_some(), msg.user_id) {
                Ok(deliveries) => act.commit_deliveries(ctx, deliveries, ()),
                Err(e) => answer(Err(e)),
            }
        })
    }
}

/// Make a member a moderator of the room or take it back (moderators and administrators).
/// The member's sessions get `RoomUpdated` with the new `isModerator`.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), ApiError>")]
pub struct SetModerator {
    pub by: UserId,
    pub by_admin: bool,
    pub user_id: UserId,
    pub is_moderator: bool,
}

impl Handler<SetModerator> for RoomActor {
    type Result = Reply<()>;
    fn handle(&mut self, msg: SetModerator, ctx: &mut Context<Self>) -> Self::Result {
        when_ready(self, |act| match act.set_moderator(&msg) {
            Ok(deliveries) => act.commit_deliveries(ctx, deliveries, ()),
            Err(e) => answer(Err(e)),
        })
    }
}

/// Remove a member (moderators and administrators), or leave (`by == user_id`). The last
/// moderator of a room with other members can do neither.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), ApiError>")]
pub struct RemoveMember {
    pub by: UserId,
    pub by_admin: bool,
    pub user_id: UserId,
}

impl Handler<RemoveMember> for RoomActor {
    type Result = Reply<()>;
    fn handle(&mut self, msg: RemoveMember, ctx: &mut Context<Self>) -> Self::Result {
        when_ready(self, |act| {
            let private = act.room.as_ref().map(|r| r.room_type == RoomType::Private);
            let allowed = if private == Some(true) && act.members.contains_key(&msg.by) {
                Err(ApiError::BadRequest(
                    "A private room always has exactly its two users".into(),
                ))
            } else if msg.by == msg.user_id {
                match (&act.room, act.members.contains_key(&msg.by)) {
                    (_, false) => Err(ApiError::room_not_found(act.room_id)),
                    (Some(room), true) if !room.members_may_leave && !msg.by_admin => {
                        Err(ApiError::Forbidden(
                            "Members may not leave this room; ask a moderator".into(),
                        ))
                    }
                    _ => Ok(()),
                }
            } else {
                act.require_moderator(msg.by, msg.by_admin, "remove members")
            };
            match allowed.and_then(|_| act.remove_member(msg.user_id)) {
                Ok(deliveries) => act.commit_deliveries(ctx, deliveries, ()),
                Err(e) => answer(Err(e)),
            }
        })
    }
}

/// What a moderator may change about a room.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoomChange {
    pub display_name: Option<String>,
    pub is_archived: Option<bool>,
    pub members_may_leave: Option<bool>,
    /// Administrators only: users created later join automatically.
    pub auto_add_new_users: Option<bool>,
    /// `true` turns the join link on (a fresh code if it was off); `false` turns it off.
    pub join_by_link: Option<bool>,
    /// `true` replaces the join code (the old link stops working).
    #[serde(default)]
    pub renew_join_link: bool,
}

/// Rename, archive or set options (moderators and administrators); members get `RoomUpdated`.
/// Answers the room as stored.
#[derive(Message, Clone)]
#[rtype(result = "Result<RoomRecord, ApiError>")]
pub struct UpdateRoom {
    pub by: UserId,
    pub by_admin: bool,
    pub change: RoomChange,
}

impl Handler<UpdateRoom> for RoomActor {
    type Result = Reply<RoomRecord>;
    fn handle(&mut self, msg: UpdateRoom, ctx: &mut Context<Self>) -> Self::Result {
        when_ready(self, |act| {
            match act.update_room(msg.by, msg.by_admin, msg.change) {
                Ok(deliveries) => match act.room_record() {
                    Ok(room) => act.commit_deliveries(ctx, deliveries, room),
                    Err(e) => answer(Err(e)),
                },
                Err(e) => answer(Err(e)),
            }
        })
    }
}

/// Pin or unpin the room for one member; their sessions get `RoomUpdated`. Answers their
/// view of the room.
#[derive(Message, Clone)]
#[rtype(result = "Result<Room, ApiError>")]
pub struct SetPinned {
    pub user_id: UserId,
    pub pinned: bool,
}

impl Handler<SetPinned> for RoomActor {
    type Result = Reply<Room>;
    fn handle(&mut self, msg: SetPinned, ctx: &mut Context<Self>) -> Self::Result {
        when_ready(self, |act| match act.set_pinned(msg.user_id, msg.pinned) {
            Ok((view, deliveries)) => act.commit_deliveries(ctx, deliveries, view),
            Err(e) => answer(Err(e)),
        })
    }
}

/// Store the room's avatar (the caller checked it is a moderator or an administrator and
/// that the image is one).
#[derive(Message, Clone)]
#[rtype(result = "Result<(), ApiError>")]
pub struct SetRoomAvatar {
    pub by: UserId,
    pub by_admin: bool,
    pub content_type: &'static str,
    pub image: Vec<u8>,
}

impl Handler<SetRoomAvatar> for RoomActor {
    type Result = Reply<()>;
    fn handle(&mut self, msg: SetRoomAvatar, ctx: &mut Context<Self>) -> Self::Result {
        when_ready(self, |act| {
            let result = act
                .require_moderator(msg.by, msg.by_admin, "change the room's avatar")
                .and_then(|_| {
                    act.store
                        .set_avatar(b'r', act.room_id, msg.content_type, &msg.image)
                        .map_err(ApiError::from)
                });
            match result {
                Ok(_) => act.commit_deliveries(ctx, Vec::new(), ()),
                Err(e) => answer(Err(e)),
            }
        })
    }
}

/// Change the room's permission level (`user_id: None`) or one member's (moderators and
/// administrators; a moderator can only restrict). Affected members get
/// `RoomPermissionsChanged`. Answers the level's new settings.
#[derive(Message, Clone)]
#[rtype(result = "Result<PermissionLayer, ApiError>")]
pub struct SetPermissions {
    pub by: UserId,
    pub by_admin: bool,
    pub user_id: Option<UserId>,
    /// `Some(false)` restricts, `Some(true)` allows (administrators) or lifts a
    /// moderator's restriction, `None` returns the flag to the level above.
    pub flags: Vec<(Permission, Option<bool>)>,
}

impl Handler<SetPermissions> for RoomActor {
    type Result = Reply<PermissionLayer>;
    fn handle(&mut self, msg: SetPermissions, ctx: &mut Context<Self>) -> Self::Result {
        when_ready(self, |act| match act.set_permissions(msg) {
            Ok((layer, deliveries)) => act.commit_deliveries(ctx, deliveries, layer),
            Err(e) => answer(Err(e)),
        })
    }
}
