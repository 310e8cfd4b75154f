//! The room actor: one per active room. It owns the order of the room's writes, their
//! persistence and their announcement. A write is applied to sled at once, then waits with
//! the other writes of the moment for one group commit; only after the flush are events
//! sent and the caller answered, in the order the writes arrived. Supervised: after a crash
//! it restarts and reloads its state from sled (writes in flight are answered with 503).

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::registry::{Broadcast, DeliverEach, Registry};
use super::{event_payload, Payload};
use crate::api::error::ApiError;
use crate::model::{
    MessageId, MessageType, NewMessage, Permission, RoomId, RoomType, TextMessage, UserId,
};
use crate::storage::{Change, MemberRecord, MessageRecord, RoomRecord, Store};

/// Who an event goes to once the write is durable.
enum Delivery {
    /// Every member at delivery time.
    Members(Payload),
    /// One user, with a payload of their own.
    User(UserId, Payload),
}

struct Pending {
    deliveries: Vec<Delivery>,
    reply: Box<dyn FnOnce(Result<(), ApiError>)>,
}

pub struct RoomActor {
    room_id: RoomId,
    store: Arc<Store>,
    registry: Addr<Registry>,
    room: Option<RoomRecord>,
    members: HashMap<UserId, MemberRecord>,
    awaiting: Vec<Pending>,
    flushing: bool,
    /// A coalesced `RoomUpdated` (new last message, unread counts) is scheduled.
    update_scheduled: bool,
}

/// How long new messages are gathered before members get one `RoomUpdated` for them.
const ROOM_UPDATE_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

type Reply<T> = ResponseFuture<Result<T, ApiError>>;

fn answer<T: 'static>(result: Result<T, ApiError>) -> Reply<T> {
    Box::pin(async move { result })
}

impl RoomActor {
    pub fn new(room_id: RoomId, store: Arc<Store>, registry: Addr<Registry>) -> Self {
        RoomActor {
            room_id,
            store,
            registry,
            room: None,
            members: HashMap::new(),
            awaiting: Vec::new(),
            flushing: false,
            update_scheduled: false,
        }
    }

    /// Each listed member's view of the room (their unread count, the last message), as
    /// events. The shared parts are read once.
    fn room_updates(&self, users: impl Iterator<Item = UserId>) -> Vec<(UserId, Payload)> {
        let Some(room) = &self.room else {
            return Vec::new();
        };
        let last = match self.store.last_message_summary(self.room_id) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(room = self.room_id, "room view failed: {e}");
                return Vec::new();
            }
        };
        users
            .filter_map(|user| {
                let is_moderator = self
                    .members
                    .get(&user)
                    .map(|m| m.is_moderator)
                    .unwrap_or(false);
                match self
                    .store
                    .room_view_with(room, user, last.clone(), is_moderator)
                {
                    Ok(view) => Some((
                        user,
                        event_payload("RoomUpdated", serde_json::json!({ "room": view })),
                    )),
                    Err(e) => {
                        tracing::error!(room = self.room_id, "room view failed: {e}");
                        None
                    }
                }
            })
            .collect()
    }

    /// Schedules one `RoomUpdated` to every member for the messages of the next moment.
    fn schedule_room_update(&mut self, ctx: &mut Context<Self>) {
        if self.update_scheduled {
            return;
        }
        self.update_scheduled = true;
        ctx.run_later(ROOM_UPDATE_DELAY, |act, _| {
            act.update_scheduled = false;
            let updates = act.room_updates(act.members.keys().copied());
            if !updates.is_empty() {
                act.registry.do_send(DeliverEach(updates));
            }
        });
    }

    fn load(&mut self) -> Result<(), ApiError> {
        self.room = self.store.room(self.room_id)?;
        self.members = self.store.members(self.room_id)?.into_iter().collect();
        Ok(())
    }

    fn require_member(&self, user_id: UserId) -> Result<&MemberRecord, ApiError> {
        self.members.get(&user_id).ok_or_else(|| {
            ApiError::Forbidden(format!("You are not a member of room {}", self.room_id))
        })
    }

    /// Members must hold the flag (moderators and administrators hold every flag).
    fn require_permission(
        &self,
        user_id: UserId,
        is_admin: bool,
        flag: Permission,
        what: &str,
    ) -> Result<(), ApiError> {
        require_permission(&self.store, self.room_id, user_id, is_admin, flag, what)
    }

    /// Queues a write for the next group commit; `value` is what the caller gets once the
    /// write is durable and its events are out.
    fn commit<T: 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        deliveries: Vec<Delivery>,
        value: T,
    ) -> Reply<T> {
        let (tx, rx) = oneshot::channel();
        self.awaiting.push(Pending {
            deliveries,
            reply: Box::new(move |r| {
                let _ = tx.send(r.map(|_| value));
            }),
        });
        if !self.flushing {
            self.start_flush(ctx);
        }
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(ApiError::Unavailable(
                    "The room restarted before the write was confirmed; check and retry.".into(),
                ))
            })
        })
    }

    fn start_flush(&mut self, ctx: &mut Context<Self>) {
        let batch = std::mem::take(&mut self.awaiting);
        self.flushing = true;
        let store = self.store.clone();
        ctx.spawn(async move { store.durable().await }.into_actor(self).map(
            move |result, act, ctx| {
                act.flushing = false;
                let result = result.map_err(ApiError::from);
                for pending in batch {
                    if result.is_ok() {
                        act.deliver(pending.deliveries);
                    }
                    (pending.reply)(result.clone());
                }
                if !act.awaiting.is_empty() {
                    act.start_flush(ctx);
                }
            },
        ));
    }

    fn deliver(&self, deliveries: Vec<Delivery>) {
        let mut each = Vec::new();
        for d in deliveries {
            match d {
                Delivery::Members(payload) => self.registry.do_send(Broadcast {
                    users: self.members.keys().copied().collect::<Vec<_>>().into(),
                    payload,
                }),
                Delivery::User(user, payload) => each.push((user, payload)),
            }
        }
        if !each.is_empty() {
            self.registry.do_send(DeliverEach(each));
        }
    }

    fn messages_event(kind: &str, messages: &[TextMessage]) -> Payload {
        event_payload(kind, serde_json::json!({ "messages": messages }))
    }

    fn post(
        &mut self,
        user_id: UserId,
        is_admin: bool,
        draft: NewMessage,
    ) -> Result<(TextMessage, Vec<Delivery>), ApiError> {
        self.require_member(user_id)?;
        let mut deliveries = Vec::new();
        let parent_id = draft.parent_message_id.unwrap_or(0);
        let flag = Permission::in_thread(
            Permission::CanSendMessagesInMainThread,
            Permission::CanSendMessagesInDiscussion,
            parent_id != 0,
        );
        self.require_permission(user_id, is_admin, flag, "send messages here")?;
        match draft.message_type.unwrap_or_default() {
            MessageType::Issue => self.require_permission(
                user_id,
                is_admin,
                Permission::CanCreateIssues,
                "create issues",
            )?,
            MessageType::Meeting => self.require_permission(
                user_id,
                is_admin,
                Permission::CanCreateMeetings,
                "create meetings",
            )?,
            _ => {}
        }
        if parent_id != 0 {
            let mut parent = self
                .store
                .message(parent_id)?
                .filter(|p| p.room_id == self.room_id)
                .ok_or_else(|| ApiError::message_not_found(parent_id))?;
            if parent.parent_message_id != 0 {
                return Err(ApiError::BadRequest(
                    "Comments can only be added to top-level messages".into(),
                ));
            }
            parent.comment_count += 1;
            parent.last_modified_utc = crate::now_ms();
            self.store.update_message(&parent)?;
            let parent_view = self.store.api_message(&parent)?;
            deliveries.push(Delivery::Members(Self::messages_event(
                "TextMessagesUpdated",
                &[parent_view],
            )));
        }
        let now = crate::now_ms();
        let message_type = draft.message_type.unwrap_or_default();
        let record = MessageRecord {
            message_id: self.store.next_message_id(),
            parent_message_id: parent_id,
            room_id: self.room_id,
            user_id,
            text: draft.content,
            created_utc: now,
            last_modified_utc: now,
            last_edited_utc: now,
            markup_type: draft.markup_type.unwrap_or_default(),
            message_type,
            priority: draft.priority.unwrap_or_default(),
            comment_count: 0,
            issue_properties: draft
                .issue_properties
                .filter(|_| message_type == MessageType::Issue),
            meeting_properties: draft
                .meeting_properties
                .filter(|_| message_type == MessageType::Meeting),
            seq: if parent_id == 0 {
                self.store.next_room_seq(self.room_id)?
            } else {
                0
            },
        };
        self.store.insert_message(&record)?;
        self.store.log_change(&Change::Message {
            room_id: self.room_id,
            message_id: record.message_id,
        })?;
        if parent_id != 0 {
            self.store.log_change(&Change::Message {
                room_id: self.room_id,
                message_id: parent_id,
            })?;
        }
        if parent_id == 0 {
            self.store.advance_read_position(user_id, &record)?;
        }
        let view = self.store.api_message(&record)?;
        // The new message goes out before the parent's new comment count.
        deliveries.insert(
            0,
            Delivery::Members(Self::messages_event(
                "TextMessagesCreated",
                std::slice::from_ref(&view),
            )),
        );
        Ok((view, deliveries))
    }

    fn delete(
        &mut self,
        user_id: UserId,
        is_admin: bool,
        message_id: MessageId,
    ) -> Result<Vec<Delivery>, ApiError> {
        let member = self.require_member(user_id).ok().copied();
        let record = self
            .store
            .message(message_id)?
            .filter(|m| m.room_id == self.room_id)
            .ok_or_else(|| ApiError::message_not_found(message_id))?;
        let is_moderator = member.map(|m| m.is_moderator).unwrap_or(false);
        if member.is_none() && !is_admin {
            return Err(ApiError::message_not_found(message_id));
        }
        if record.user_id != user_id && !is_moderator && !is_admin {
            return Err(ApiError::Forbidden(
                "Only the author, a room moderator or an administrator may delete this message"
                    .into(),
            ));
        }
        if member.is_some() {
            self.require_permission(
                user_id,
                is_admin,
                edit_own_flag(&record),
                "delete your messages here",
            )?;
        }
        let mut deliveries = Vec::new();
        let deleted_event = |m: &MessageRecord| {
            Delivery::Members(event_payload(
                "TextMessageDeleted",
                serde_json::json!({
                    "parentMessageId": m.parent_message_id,
                    "roomId": m.room_id,
                    "messageId": m.message_id,
                }),
            ))
        };
        for comment_id in self.store.comment_ids(message_id)? {
            if let Some(comment) = self.store.message(comment_id)? {
                self.store.delete_message(&comment)?;
                self.log_deleted(&comment)?;
                deliveries.push(deleted_event(&comment));
            }
        }
        self.store.delete_message(&record)?;
        self.log_deleted(&record)?;
        deliveries.push(deleted_event(&record));
        if record.parent_message_id != 0 {
            if let Some(mut parent) = self.store.message(record.parent_message_id)? {
                parent.comment_count = parent.comment_count.saturating_sub(1);
                parent.last_modified_utc = crate::now_ms();
                self.store.update_message(&parent)?;
                self.store.log_change(&Change::Message {
                    room_id: self.room_id,
                    message_id: parent.message_id,
                })?;
                let view = self.store.api_message(&parent)?;
                deliveries.push(Delivery::Members(Self::messages_event(
                    "TextMessagesUpdated",
                    &[view],
                )));
            }
        }
        Ok(deliveries)
    }

    fn mark_read(
        &mut self,
        user_id: UserId,
        message_id: MessageId,
    ) -> Result<Vec<Delivery>, ApiError> {
        self.require_member(user_id)?;
        let record = self
            .store
            .message(message_id)?
            .filter(|m| m.room_id == self.room_id)
            .ok_or_else(|| ApiError::message_not_found(message_id))?;
        let fresh = self.store.mark_read(&record, user_id, crate::now_ms())?;
        if !fresh {
            return Ok(Vec::new());
        }
        self.store.log_change(&Change::Message {
            room_id: self.room_id,
            message_id,
        })?;
        let view = self.store.api_message(&record)?;
        let mut deliveries = vec![Delivery::Members(Self::messages_event(
            "TextMessagesUpdated",
            &[view],
        ))];
        // The reader's unread count changed: their sessions update the room's badge.
        for (user, payload) in self.room_updates(std::iter::once(user_id)) {
            deliveries.push(Delivery::User(user, payload));
        }
        Ok(deliveries)
    }

    fn log_deleted(&self, m: &MessageRecord) -> Result<(), ApiError> {
        self.store.log_change(&Change::MessageDeleted {
            room_id: m.room_id,
            message_id: m.message_id,
            parent_message_id: m.parent_message_id,
        })?;
        Ok(())
    }

    /// Moderator or administrator of this room, else 403 (404 for strangers).
    fn require_moderator(&self, by: UserId, by_admin: bool, what: &str) -> Result<(), ApiError> {
        if by_admin
            || self
                .members
                .get(&by)
                .map(|m| m.is_moderator)
                .unwrap_or(false)
        {
            return Ok(());
        }
        if self.members.contains_key(&by) {
            return Err(ApiError::Forbidden(format!(
                "Only a room moderator or an administrator may {what}"
            )));
        }
        Err(ApiError::room_not_found(self.room_id))
    }

    /// Takes a user out of the room: every session of theirs gets `RoomDeleted` once the
    /// change is durable; from the moment it is applied they can read and post nothing here.
    fn remove_member(&mut self, user_id: UserId) -> Result<Vec<Delivery>, ApiError> {
        let room = self
            .room
            .clone()
            .ok_or_else(|| ApiError::room_not_found(self.room_id))?;
        if room.room_type == RoomType::Private {
            return Err(ApiError::BadRequest(
                "A private room always has exactly its two users".into(),
            ));
        }
        if !self.members.contains_key(&user_id) {
            return Err(ApiError::NotFound(format!(
                "User {user_id} is not a member of room {}",
                self.room_id
            )));
        }
        self.store.remove_member(self.room_id, user_id)?;
        self.store.log_change(&Change::MemberRemoved {
            room_id: self.room_id,
            user_id,
        })?;
        self.members.remove(&user_id);
        Ok(vec![Delivery::User(
            user_id,
            event_payload("RoomDeleted", serde_json::json!({ "roomId": self.room_id })),
        )])
    }

    fn edit(
        &mut self,
        user_id: UserId,
        is_admin: bool,
        message_id: MessageId,
        draft: NewMessage,
    ) -> Result<(TextMessage, Vec<Delivery>), ApiError> {
        let is_moderator = self.require_member(user_id)?.is_moderator;
        let mut record = self
            .store
            .message(message_id)?
            .filter(|m| m.room_id == self.room_id)
            .ok_or_else(|| ApiError::message_not_found(message_id))?;
        let privileged = is_moderator || is_admin;
        if record.user_id == user_id {
            self.require_permission(
                user_id,
                is_admin,
                edit_own_flag(&record),
                "edit your messages here",
            )?;
        } else if !privileged {
            // Someone else's issue: only its properties, with the permission for it.
            let only_issue_properties = record.message_type == MessageType::Issue
                && draft.content == record.text
                && draft.issue_properties.is_some()
                && draft.message_type.is_none_or(|t| t == MessageType::Issue)
                && draft.meeting_properties.is_none()
                && draft.markup_type.is_none_or(|m| m == record.markup_type)
                && draft.priority.is_none_or(|p| p == record.priority);
            if !only_issue_properties {
                return Err(ApiError::Forbidden(
                    "Only the author, a room moderator or an administrator may edit this message"
                        .into(),
                ));
            }
            self.require_permission(
                user_id,
                is_admin,
                Permission::CanChangePropertiesOfUnrelatedIssues,
                "change the properties of other people's issues",
            )?;
        }
        match draft.message_type {
            Some(MessageType::Issue) if record.message_type != MessageType::Issue => self
                .require_permission(
                    user_id,
                    is_admin,
                    Permission::CanCreateIssues,
                    "create issues",
                )?,
            Some(MessageType::Meeting) if record.message_type != MessageType::Meeting => self
                .require_permission(
                    user_id,
                    is_admin,
                    Permission::CanCreateMeetings,
                    "create meetings",
                )?,
            _ => {}
        }
        let now = crate::now_ms();
        record.text = draft.content;
        if let Some(m) = draft.markup_type {
            record.markup_type = m;
        }
        if let Some(p) = draft.priority {
            record.priority = p;
        }
        if let Some(t) = draft.message_type {
            record.message_type = t;
        }
        if draft.issue_properties.is_some() {
            record.issue_properties = draft.issue_properties;
        }
        if draft.meeting_properties.is_some() {
            record.meeting_properties = draft.meeting_properties;
        }
        if record.message_type != MessageType::Issue {
            record.issue_properties = None;
        }
        if record.message_type != MessageType::Meeting {
            record.meeting_properties = None;
        }
        record.last_edited_utc = now;
        record.last_modified_utc = now;
        self.store.update_message(&record)?;
        self.store.log_change(&Change::Message {
            room_id: self.room_id,
            message_id,
        })?;
        let view = self.store.api_message(&record)?;
        let event = Self::messages_event("TextMessagesUpdated", std::slice::from_ref(&view));
        Ok((view, vec![Delivery::Members(event)]))
    }

    fn update_room(
        &mut self,
        by: UserId,
        by_admin: bool,
        change: RoomChange,
    ) -> Result<Vec<Delivery>, ApiError> {
        self.require_moderator(by, by_admin, "change this room")?;
        let mut room = self
            .room
            .clone()
            .ok_or_else(|| ApiError::room_not_found(self.room_id))?;
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
        self.store.update_room(&room)?;
        self.store.log_change(&Change::Room {
            room_id: self.room_id,
        })?;
        self.room = Some(room);
        Ok(self
            .room_updates(self.members.keys().copied())
            .into_iter()
            .map(|(u, p)| Delivery::User(u, p))
            .collect())
    }

    fn add_member(
        &mut self,
        by: UserId,
        by_admin: bool,
        user_id: UserId,
    ) -> Result<Vec<Delivery>, ApiError> {
        let room = self
            .room
            .clone()
            .ok_or_else(|| ApiError::room_not_found(self.room_id))?;
        self.require_moderator(by, by_admin, "add members")?;
        if room.room_type == RoomType::Private {
            return Err(ApiError::BadRequest(
                "A private room always has exactly its two users".into(),
            ));
        }
        if self.store.user(user_id)?.is_none() {
            return Err(ApiError::NotFound(format!("User {user_id} not found")));
        }
        if self.members.contains_key(&user_id) {
            return Ok(Vec::new());
        }
        self.store.add_member(self.room_id, user_id, false)?;
        self.store.log_change(&Change::MemberAdded {
            room_id: self.room_id,
            user_id,
        })?;
        if let Some(m) = self.store.member(self.room_id, user_id)? {
            self.members.insert(user_id, m);
        }
        let view = self.store.room_view(&room, user_id)?;
        Ok(vec![Delivery::User(
            user_id,
            event_payload("RoomCreated", serde_json::json!({ "room": view })),
        )])
    }
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Room actors sit on the hot path of every post; a roomy mailbox smooths bursts.
        ctx.set_mailbox_capacity(1024);
        if let Err(e) = self.load() {
            tracing::error!(room = self.room_id, "cannot load room: {e}");
            ctx.stop();
        }
    }
}

impl Supervised for RoomActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        tracing::warn!(
            room = self.room_id,
            "room actor restarting; reloading from storage"
        );
        // Dropping the pending replies answers their callers with 503.
        self.awaiting.clear();
        self.flushing = false;
    }
}

/// Post a message (or a comment, with `parent_message_id`) as `user_id`. Answers the
/// stored message once it is durable.
#[derive(Message)]
#[rtype(result = "Result<TextMessage, ApiError>")]
pub struct PostMessage {
    pub user_id: UserId,
    pub is_admin: bool,
    pub draft: NewMessage,
}

impl Handler<PostMessage> for RoomActor {
    type Result = Reply<TextMessage>;
    fn handle(&mut self, msg: PostMessage, ctx: &mut Context<Self>) -> Self::Result {
        match self.post(msg.user_id, msg.is_admin, msg.draft) {
            Ok((view, deliveries)) => {
                if view.parent_message_id == 0 {
                    self.schedule_room_update(ctx);
                }
                self.commit(ctx, deliveries, view)
            }
            Err(e) => answer(Err(e)),
        }
    }
}

/// Delete a message of this room (and its comments).
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct DeleteMessage {
    pub user_id: UserId,
    pub is_admin: bool,
    pub message_id: MessageId,
}

impl Handler<DeleteMessage> for RoomActor {
    type Result = Reply<()>;
    fn handle(&mut self, msg: DeleteMessage, ctx: &mut Context<Self>) -> Self::Result {
        match self.delete(msg.user_id, msg.is_admin, msg.message_id) {
            Ok(deliveries) => {
                self.schedule_room_update(ctx);
                self.commit(ctx, deliveries, ())
            }
            Err(e) => answer(Err(e)),
        }
    }
}

/// Record a read receipt.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct MarkRead {
    pub user_id: UserId,
    pub message_id: MessageId,
}

impl Handler<MarkRead> for RoomActor {
    type Result = Reply<()>;
    fn handle(&mut self, msg: MarkRead, ctx: &mut Context<Self>) -> Self::Result {
        match self.mark_read(msg.user_id, msg.message_id) {
            Ok(deliveries) => self.commit(ctx, deliveries, ()),
            Err(e) => answer(Err(e)),
        }
    }
}

/// Add a member to a group room (by a moderator or an administrator).
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct AddMember {
    pub by: UserId,
    pub by_admin: bool,
    pub user_id: UserId,
    /// The user joins with the room's join code (checked by the caller against this room).
    pub via_link: Option<String>,
}

impl Handler<AddMember> for RoomActor {
    type Result = Reply<()>;
    fn handle(&mut self, msg: AddMember, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(code) = &msg.via_link {
            let valid = self
                .room
                .as_ref()
                .and_then(|r| r.join_code.as_deref())
                .is_some_and(|c| c == code);
            if !valid {
                return answer(Err(ApiError::NotFound(
                    "No room has this join link (it may have been turned off or renewed)".into(),
                )));
            }
        }
        match self.add_member(msg.by, msg.by_admin || msg.via_link.is_some(), msg.user_id) {
            Ok(deliveries) => self.commit(ctx, deliveries, ()),
            Err(e) => answer(Err(e)),
        }
    }
}

/// Make a member a moderator of the room or take it back (moderators and administrators).
/// The member's sessions get `RoomUpdated` with the new `isModerator`.
#[derive(Message)]
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
        let result = (|| {
            self.require_moderator(msg.by, msg.by_admin, "appoint moderators")?;
            if self.room.as_ref().map(|r| r.room_type) == Some(RoomType::Private) {
                return Err(ApiError::BadRequest(
                    "A private room has no moderators".into(),
                ));
            }
            if !self.members.contains_key(&msg.user_id) {
                return Err(ApiError::NotFound(format!(
                    "User {} is not a member of room {}",
                    msg.user_id, self.room_id
                )));
            }
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
            self.store
                .set_moderator(self.room_id, msg.user_id, msg.is_moderator)?;
            if let Some(m) = self.members.get_mut(&msg.user_id) {
                m.is_moderator = msg.is_moderator;
            }
            self.store.log_change(&Change::Room {
                room_id: self.room_id,
            })?;
            Ok(self
                .room_updates(std::iter::once(msg.user_id))
                .into_iter()
                .map(|(u, p)| Delivery::User(u, p))
                .collect())
        })();
        match result {
            Ok(deliveries) => self.commit(ctx, deliveries, ()),
            Err(e) => answer(Err(e)),
        }
    }
}

/// Announce a newly created room to its members (each gets their own view of it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AnnounceCreated;

impl Handler<AnnounceCreated> for RoomActor {
    type Result = ();
    fn handle(&mut self, _: AnnounceCreated, _: &mut Context<Self>) {
        let Some(room) = self.room.clone() else {
            return;
        };
        let mut each = Vec::new();
        for &user in self.members.keys() {
            match self.store.room_view(&room, user) {
                Ok(view) => each.push((
                    user,
                    event_payload("RoomCreated", serde_json::json!({ "room": view })),
                )),
                Err(e) => tracing::error!(room = self.room_id, "room view failed: {e}"),
            }
        }
        self.registry.do_send(DeliverEach(each));
    }
}

/// Remove a member (moderators and administrators), or leave (`by == user_id`).
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct RemoveMember {
    pub by: UserId,
    pub by_admin: bool,
    pub user_id: UserId,
}

impl Handler<RemoveMember> for RoomActor {
    type Result = Reply<()>;
    fn handle(&mut self, msg: RemoveMember, ctx: &mut Context<Self>) -> Self::Result {
        let private = self.room.as_ref().map(|r| r.room_type == RoomType::Private);
        let allowed = if private == Some(true) && self.members.contains_key(&msg.by) {
            Err(ApiError::BadRequest(
                "A private room always has exactly its two users".into(),
            ))
        } else if msg.by == msg.user_id {
            match (&self.room, self.members.contains_key(&msg.by)) {
                (_, false) => Err(ApiError::room_not_found(self.room_id)),
                (Some(room), true) if !room.members_may_leave && !msg.by_admin => Err(
                    ApiError::Forbidden("Members may not leave this room; ask a moderator".into()),
                ),
                _ => Ok(()),
            }
        } else {
            self.require_moderator(msg.by, msg.by_admin, "remove members")
        };
        match allowed.and_then(|_| self.remove_member(msg.user_id)) {
            Ok(deliveries) => self.commit(ctx, deliveries, ()),
            Err(e) => answer(Err(e)),
        }
    }
}

/// Edit a message's text (and optionally its model fields).
#[derive(Message)]
#[rtype(result = "Result<TextMessage, ApiError>")]
pub struct EditMessage {
    pub user_id: UserId,
    pub is_admin: bool,
    pub message_id: MessageId,
    pub draft: NewMessage,
}

impl Handler<EditMessage> for RoomActor {
    type Result = Reply<TextMessage>;
    fn handle(&mut self, msg: EditMessage, ctx: &mut Context<Self>) -> Self::Result {
        match self.edit(msg.user_id, msg.is_admin, msg.message_id, msg.draft) {
            Ok((view, deliveries)) => self.commit(ctx, deliveries, view),
            Err(e) => answer(Err(e)),
        }
    }
}

/// What a moderator may change about a room.
#[derive(Debug, Default, serde::Deserialize)]
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
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct UpdateRoom {
    pub by: UserId,
    pub by_admin: bool,
    pub change: RoomChange,
}

impl Handler<UpdateRoom> for RoomActor {
    type Result = Reply<()>;
    fn handle(&mut self, msg: UpdateRoom, ctx: &mut Context<Self>) -> Self::Result {
        match self.update_room(msg.by, msg.by_admin, msg.change) {
            Ok(deliveries) => self.commit(ctx, deliveries, ()),
            Err(e) => answer(Err(e)),
        }
    }
}

/// Add or remove the user's emoji reaction on a message; members get `TextMessagesUpdated`.
#[derive(Message)]
#[rtype(result = "Result<TextMessage, ApiError>")]
pub struct React {
    pub user_id: UserId,
    pub is_admin: bool,
    pub message_id: MessageId,
    pub emoji: String,
    pub on: bool,
}

impl Handler<React> for RoomActor {
    type Result = Reply<TextMessage>;
    fn handle(&mut self, msg: React, ctx: &mut Context<Self>) -> Self::Result {
        let result = (|| {
            self.require_member(msg.user_id)?;
            let record = self
                .store
                .message(msg.message_id)?
                .filter(|m| m.room_id == self.room_id)
                .ok_or_else(|| ApiError::message_not_found(msg.message_id))?;
            let flag = Permission::in_thread(
                Permission::CanReactToMessagesWithEmojiInMainThread,
                Permission::CanReactToMessagesWithEmojiInDiscussion,
                record.parent_message_id != 0,
            );
            self.require_permission(msg.user_id, msg.is_admin, flag, "react with emoji here")?;
            let changed =
                self.store
                    .set_reaction(msg.message_id, msg.user_id, &msg.emoji, msg.on)?;
            if changed {
                self.store.log_change(&Change::Message {
                    room_id: self.room_id,
                    message_id: msg.message_id,
                })?;
            }
            let view = self.store.api_message(&record)?;
            let deliveries = if changed {
                vec![Delivery::Members(Self::messages_event(
                    "TextMessagesUpdated",
                    std::slice::from_ref(&view),
                ))]
            } else {
                Vec::new()
            };
            Ok((view, deliveries))
        })();
        match result {
            Ok((view, deliveries)) => self.commit(ctx, deliveries, view),
            Err(e) => answer(Err(e)),
        }
    }
}

/// A message changed outside the actor (its attachments): members get
/// `TextMessagesUpdated`, in order with the room's other events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AnnounceMessage(pub MessageId);

impl Handler<AnnounceMessage> for RoomActor {
    type Result = ();
    fn handle(&mut self, msg: AnnounceMessage, ctx: &mut Context<Self>) {
        if let Err(e) = self.store.log_change(&Change::Message {
            room_id: self.room_id,
            message_id: msg.0,
        }) {
            tracing::error!(room = self.room_id, "logging a change: {e}");
        }
        let view = match self.store.message(msg.0) {
            Ok(Some(record)) => self.store.api_message(&record),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        match view {
            Ok(view) => {
                let event = Self::messages_event("TextMessagesUpdated", &[view]);
                // Nobody waits for the answer; the commit still orders and delivers the event.
                let reply = self.commit(ctx, vec![Delivery::Members(event)], ());
                ctx.spawn(actix::fut::wrap_future::<_, Self>(reply).map(|_, _, _| ()));
            }
            Err(e) => tracing::error!(room = self.room_id, "announcing message {}: {e}", msg.0),
        }
    }
}

/// The flag for editing or deleting one's own message where `record` sits.
fn edit_own_flag(record: &MessageRecord) -> Permission {
    Permission::in_thread(
        Permission::CanEditOrDeleteOwnMessagesInMainThread,
        Permission::CanEditOrDeleteOwnMessagesInDiscussion,
        record.parent_message_id != 0,
    )
}

/// 403 unless the member holds `flag` in the room (moderators and administrators hold
/// every flag); 403 for non-members too. Shared by the room actor and the API handlers
/// that do not go through it (attachments).
pub fn require_permission(
    store: &Store,
    room_id: RoomId,
    user_id: UserId,
    is_admin: bool,
    flag: Permission,
    what: &str,
) -> Result<(), ApiError> {
    match store.effective_permissions(room_id, user_id, is_admin)? {
        None => Err(ApiError::Forbidden(format!(
            "You are not a member of room {room_id}"
        ))),
        Some(p) if p.allows(flag) => Ok(()),
        Some(_) => Err(ApiError::Forbidden(format!(
            "You may not {what} in room {room_id} (permission {} is off)",
            flag.name()
        ))),
    }
}
