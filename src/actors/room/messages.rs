//! The room actor's message writes: post, edit, delete, read receipts, reactions, files.

use actix::prelude::*;

use super::{answer, when_ready, AfterDurable, Delivery, Reply, RoomActor};
use crate::actors::event_payload;
use crate::api::error::ApiError;
use crate::model::{
    MessageId, MessageType, NewMessage, Permission, ReadTimestamp, TextMessage, UserId,
};
use crate::storage::push::{JobKind, PushJob};
use crate::storage::{
    AttachmentRecord, IdempotencyKey, IdempotentResult, MessageRecord, NewPost, PreparedUpload,
};

/// The flag for editing or deleting one's own message where `record` sits.
fn edit_own_flag(record: &MessageRecord) -> Permission {
    Permission::in_thread(
        Permission::CanEditOrDeleteOwnMessagesInMainThread,
        Permission::CanEditOrDeleteOwnMessagesInDiscussion,
        record.parent_message_id != 0,
    )
}

impl RoomActor {
    /// The first answer for a key that was used already (`None`: a new request).
    fn replay(&self, key: Option<&IdempotencyKey>) -> Result<Option<IdempotentResult>, ApiError> {
        match key {
            Some(k) => Ok(self.latest().idempotent_result(k)?),
            None => Ok(None),
        }
    }

    fn post(
        &mut self,
        user_id: UserId,
        is_admin: bool,
        draft: NewMessage,
        key: Option<&IdempotencyKey>,
    ) -> Result<(TextMessage, Vec<Delivery>), ApiError> {
        self.require_member(user_id)?;
        let parent_id = draft.parent_message_id.unwrap_or(0);
        let flag = Permission::in_thread(
            Permission::CanSendMessagesInMainThread,
            Permission::CanSendMessagesInDiscussion,
            parent_id != 0,
        );
        self.require_permission(user_id, is_admin, flag, "send messages here")?;
        let message_type = draft.message_type.unwrap_or_default();
        match message_type {
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
        let now = crate::now_ms();
        let parent = if parent_id != 0 {
            let mut parent = self.own_message(parent_id)?;
            if parent.parent_message_id != 0 {
                return Err(ApiError::BadRequest(
                    "Comments can only be added to top-level messages".into(),
                ));
            }
            parent.comment_count += 1;
            parent.last_modified_utc = now;
            Some(parent)
        } else {
            None
        };
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
            seq: if parent_id == 0 { self.room_seq + 1 } else { 0 },
        };
        let push = self.push_jobs(&record)?;
        self.store.post_message(NewPost {
            record: &record,
            parent: parent.as_ref(),
            idempotency: key,
            push: &push,
        })?;
        crate::push::dispatcher::STATS
            .queued
            .fetch_add(push.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.room_seq = self.room_seq.max(record.seq);
        let r = self.latest();
        // A new message has no files, receipts or reactions yet: nothing more to read.
        let view = crate::storage::new_message_view(&record);
        // The new message goes out before the parent's new comment count.
        let mut deliveries = vec![self.to_members(Self::messages_event(
            "TextMessagesCreated",
            std::slice::from_ref(&view),
        ))];
        if let Some(parent) = &parent {
            let parent_view = r.api_message(parent)?;
            deliveries
                .push(self.to_members(Self::messages_event("TextMessagesUpdated", &[parent_view])));
        }
        Ok((view, deliveries))
    }

    /// The notifications a new message causes: one job per member with a push device and
    /// no open event session, the author aside (their settings apply at dispatch).
    fn push_jobs(&self, record: &MessageRecord) -> Result<Vec<PushJob>, ApiError> {
        let recipients: Vec<UserId> = self
            .directory
            .offline_pushable(&self.audience)
            .into_iter()
            .filter(|&u| u != record.user_id)
            .collect();
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let mentioned = mentioned_names(&record.text);
        let private_room = self
            .room
            .as_ref()
            .is_some_and(|r| r.room_type == crate::model::RoomType::Private);
        let mut jobs = Vec::with_capacity(recipients.len());
        for user_id in recipients {
            let mention = !mentioned.is_empty()
                && self.latest().user(user_id)?.is_some_and(|u| {
                    mentioned
                        .iter()
                        .any(|m| m.eq_ignore_ascii_case(&u.user_name))
                });
            jobs.push(PushJob {
                kind: JobKind::Message,
                user_id,
                room_id: record.room_id,
                message_id: record.message_id,
                sender_id: record.user_id,
                mention,
                private_room,
                created_utc: record.created_utc,
            });
        }
        Ok(jobs)
    }

    fn delete(
        &mut self,
        user_id: UserId,
        is_admin: bool,
        message_id: MessageId,
    ) -> Result<AfterDurable, ApiError> {
        let member = self.require_member(user_id).ok().copied();
        let record = self.own_message(message_id)?;
        let is_moderator = member.is_some_and(|m| m.is_moderator);
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
        let r = self.latest();
        let mut comments = Vec::new();
        for id in r.comment_ids(message_id)? {
            if let Some(c) = r.message(id)? {
                comments.push(c);
            }
        }
        let parent = match record.parent_message_id {
            0 => None,
            p => r.message(p)?.map(|mut parent| {
                parent.comment_count = parent.comment_count.saturating_sub(1);
                parent.last_modified_utc = crate::now_ms();
                parent
            }),
        };
        let (_, erase) = self
            .store
            .delete_messages(&record, &comments, parent.as_ref())?;
        let deleted_event = |m: &MessageRecord| {
            event_payload(
                "TextMessageDeleted",
                serde_json::json!({
                    "parentMessageId": m.parent_message_id,
                    "roomId": m.room_id,
                    "messageId": m.message_id,
                }),
            )
        };
        let mut deliveries: Vec<Delivery> = comments
            .iter()
            .chain(std::iter::once(&record))
            .map(|m| self.to_members(deleted_event(m)))
            .collect();
        if let Some(parent) = &parent {
            let view = self.latest().api_message(parent)?;
            deliveries.push(self.to_members(Self::messages_event("TextMessagesUpdated", &[view])));
        }
        Ok(AfterDurable { deliveries, erase })
    }

    fn mark_read(
        &mut self,
        user_id: UserId,
        message_id: MessageId,
    ) -> Result<Vec<Delivery>, ApiError> {
        self.require_member(user_id)?;
        let record = self.own_message(message_id)?;
        let now = crate::now_ms();
        // The reader's other devices update their badge, silently.
        let badge: Vec<PushJob> = self
            .directory
            .has_push_device(user_id)
            .then_some(PushJob {
                kind: JobKind::Badge,
                user_id,
                room_id: self.room_id,
                message_id,
                sender_id: user_id,
                mention: false,
                private_room: false,
                created_utc: now,
            })
            .into_iter()
            .collect();
        if self
            .store
            .mark_read(&record, user_id, now, &badge)?
            .is_none()
        {
            return Ok(Vec::new());
        }
        crate::push::dispatcher::STATS
            .queued
            .fetch_add(badge.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut deliveries = vec![Delivery::Read(
            message_id,
            ReadTimestamp {
                user_id,
                read_utc: now,
            },
        )];
        // The reader's unread count changed: their sessions update the room's badge.
        let store = self.store.clone();
        for (user, payload) in self.room_updates(store.latest(), std::iter::once(user_id)) {
            deliveries.push(Delivery::User(user, payload));
        }
        Ok(deliveries)
    }

    fn edit(
        &mut self,
        user_id: UserId,
        is_admin: bool,
        message_id: MessageId,
        draft: NewMessage,
    ) -> Result<(TextMessage, Vec<Delivery>), ApiError> {
        let is_moderator = self.require_member(user_id)?.is_moderator;
        let mut record = self.own_message(message_id)?;
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
        self.store.edit_message(&record)?;
        let view = self.latest().api_message(&record)?;
        let event = Self::messages_event("TextMessagesUpdated", std::slice::from_ref(&view));
        Ok((view, vec![self.to_members(event)]))
    }

    fn react(&mut self, msg: &React) -> Result<(TextMessage, Vec<Delivery>), ApiError> {
        self.require_member(msg.user_id)?;
        let record = self.own_message(msg.message_id)?;
        let flag = Permission::in_thread(
            Permission::CanReactToMessagesWithEmojiInMainThread,
            Permission::CanReactToMessagesWithEmojiInDiscussion,
            record.parent_message_id != 0,
        );
        self.require_permission(msg.user_id, msg.is_admin, flag, "react with emoji here")?;
        let changed = self
            .store
            .set_reaction(&record, msg.user_id, &msg.emoji, msg.on)?
            .is_some();
        let view = self.latest().api_message(&record)?;
        let deliveries = if changed {
            vec![self.to_members(Self::messages_event(
                "TextMessagesUpdated",
                std::slice::from_ref(&view),
            ))]
        } else {
            Vec::new()
        };
        Ok((view, deliveries))
    }

    /// Author (with `canAttachOrDeleteFilesInOwnMessagesIn…`), room moderator or
    /// administrator; uploading also needs `canSendFilesIntoRoomIn…`.
    fn may_change_files(
        &self,
        user_id: UserId,
        is_admin: bool,
        message: &MessageRecord,
        uploading: bool,
    ) -> Result<(), ApiError> {
        may_change_files(self.latest(), user_id, is_admin, message, uploading)
    }

    fn attach(
        &mut self,
        msg: AttachFiles,
    ) -> Result<(Vec<AttachmentRecord>, Vec<Delivery>), ApiError> {
        // Taken now: whatever happens next, these files are this actor's to attach or drop.
        let files = msg.files.take();
        if let Some(done) = self.replay(msg.idempotency.as_ref())? {
            return Ok((self.replayed_attachments(done)?, Vec::new()));
        }
        // The message may have been deleted while the files streamed in: then nothing of
        // them is kept (their pins go when `msg` is dropped, the content with them).
        let message = match self.own_message(msg.message_id) {
            Ok(m) => m,
            Err(_) if self.latest().tombstone(msg.message_id)?.is_some() => {
                return Err(ApiError::Gone(format!(
                    "Message {} was deleted while the files were uploaded",
                    msg.message_id
                )))
            }
            Err(e) => return Err(e),
        };
        self.may_change_files(msg.user_id, msg.is_admin, &message, true)?;
        if files.is_empty() {
            return Err(ApiError::BadRequest("No files to attach".into()));
        }
        let (_, records) = self.store.attach_files(
            &message,
            msg.user_id,
            &files,
            msg.quota,
            msg.idempotency.as_ref(),
        )?;
        let view = self.latest().api_message(&message)?;
        Ok((
            records,
            vec![self.to_members(Self::messages_event("TextMessagesUpdated", &[view]))],
        ))
    }

    fn replayed_attachments(
        &self,
        done: IdempotentResult,
    ) -> Result<Vec<AttachmentRecord>, ApiError> {
        match done {
            IdempotentResult::Attachments { attachment_ids, .. } => {
                let mut out = Vec::new();
                for id in attachment_ids {
                    if let Some(a) = self.latest().attachment(id)? {
                        out.push(a);
                    }
                }
                Ok(out)
            }
            IdempotentResult::Message { .. } => Err(ApiError::Conflict(
                "This Idempotency-Key was used for a message, not for files".into(),
            )),
        }
    }

    fn delete_attachment(&mut self, msg: &DeleteAttachment) -> Result<AfterDurable, ApiError> {
        let not_found =
            || ApiError::NotFound(format!("Attachment {} not found", msg.attachment_id));
        let record = self
            .latest()
            .attachment(msg.attachment_id)?
            .filter(|a| a.room_id == self.room_id)
            .ok_or_else(not_found)?;
        if !self.members.contains_key(&msg.user_id) {
            return Err(not_found());
        }
        let message = self.own_message(record.message_id)?;
        self.may_change_files(msg.user_id, msg.is_admin, &message, false)?;
        self.store.delete_attachment(&record)?;
        let view = self.latest().api_message(&message)?;
        Ok(AfterDurable {
            deliveries: vec![self.to_members(Self::messages_event("TextMessagesUpdated", &[view]))],
            erase: vec![record.content_hash],
        })
    }
}

/// Who may attach files to `message` or delete its files (see [`RoomActor::may_change_files`]).
pub fn may_change_files(
    view: &crate::storage::Reader,
    user_id: UserId,
    is_admin: bool,
    message: &MessageRecord,
    uploading: bool,
) -> Result<(), ApiError> {
    let member = view.member(message.room_id, user_id)?;
    if is_admin || member.is_some_and(|m| m.is_moderator) {
        return Ok(());
    }
    if message.user_id != user_id {
        return Err(ApiError::Forbidden(
            "Only the message's author, a room moderator or an administrator may attach or delete its files".into(),
        ));
    }
    let comment = message.parent_message_id != 0;
    let check =
        |flag, what| super::require_permission(view, message.room_id, user_id, false, flag, what);
    check(
        Permission::in_thread(
            Permission::CanAttachOrDeleteFilesInOwnMessagesInMainThread,
            Permission::CanAttachOrDeleteFilesInOwnMessagesInDiscussion,
            comment,
        ),
        "attach or delete files in your messages here",
    )?;
    if uploading {
        check(
            Permission::in_thread(
                Permission::CanSendFilesIntoRoomInMainThread,
                Permission::CanSendFilesIntoRoomInDiscussion,
                comment,
            ),
            "send files",
        )?;
    }
    Ok(())
}

/// Post a message (or a comment, with `parent_message_id`) as `user_id`. Answers the
/// stored message once it is durable. With an idempotency key already used, answers the
/// first request's message instead (and stores nothing).
#[derive(Message, Clone)]
#[rtype(result = "Result<TextMessage, ApiError>")]
pub struct PostMessage {
    pub user_id: UserId,
    pub is_admin: bool,
    pub draft: NewMessage,
    pub idempotency: Option<IdempotencyKey>,
}

/// The `@name`s a text mentions (user names: letters, digits, `.`, `_`, `-`).
fn mentioned_names(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices('@') {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric()) {
            continue; // an e-mail address
        }
        let rest = &text[i + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .unwrap_or(rest.len());
        let name = rest[..end].trim_end_matches('.');
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

impl Handler<PostMessage> for RoomActor {
    type Result = Reply<TextMessage>;
    fn handle(&mut self, msg: PostMessage, ctx: &mut Context<Self>) -> Self::Result {
        when_ready(self, |act| {
            match act.replay(msg.idempotency.as_ref()) {
                Ok(Some(IdempotentResult::Message { message_id, .. })) => {
                    let result = match act.latest().message(message_id) {
                        Ok(Some(m)) => act.latest().api_message(&m).map_err(ApiError::from),
                        Ok(None) => Err(ApiError::Gone(format!(
                            "Message {message_id}, made by an earlier request with this Idempotency-Key, was deleted"
                        ))),
                        Err(e) => Err(e.into()),
                    };
                    // Answered after the flush in flight: the first request's write may be in it.
                    return match result {
                        Ok(view) => act.commit_deliveries(ctx, Vec::new(), view),
                        Err(e) => answer(Err(e)),
                    };
                }
                Ok(Some(IdempotentResult::Attachments { .. })) => {
                    return answer(Err(ApiError::Conflict(
                        "This Idempotency-Key was used for files, not for a message".into(),
                    )))
                }
                Ok(None) => {}
                Err(e) => return answer(Err(e)),
            }
            match act.post(
                msg.user_id,
                msg.is_admin,
                msg.draft,
                msg.idempotency.as_ref(),
            ) {
                Ok((view, deliveries)) => {
                    if view.parent_message_id == 0 {
                        act.schedule_room_update(ctx);
                    }
                    act.commit_deliveries(ctx, deliveries, view)
                }
                Err(e) => answer(Err(e)),
            }
        })
    }
}

/// Delete a message of this room (and its comments).
#[derive(Message, Clone)]
#[rtype(result = "Result<(), ApiError>")]
pub struct DeleteMessage {
    pub user_id: UserId,
    pub is_admin: bool,
    pub message_id: MessageId,
}

impl Handler<DeleteMessage> for RoomActor {
    type Result = Reply<()>;
    fn handle(&mut self, msg: DeleteMessage, ctx: &mut Context<Self>) -> Self::Result {
        when_ready(self, |act| {
            match act.delete(msg.user_id, msg.is_admin, msg.message_id) {
                Ok(after) => {
                    act.schedule_room_update(ctx);
                    act.commit(ctx, after, ())
                }
                Err(e) => answer(Err(e)),
            }
        })
    }
}

/// Record a read receipt.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), ApiError>")]
pub struct MarkRead {
    pub user_id: UserId,
    pub message_id: MessageId,
}

impl Handler<MarkRead> for RoomActor {
    type Result = Reply<()>;
    fn handle(&mut self, msg: MarkRead, ctx: &mut Context<Self>) -> Self::Result {
        when_ready(self, |act| {
            match act.mark_read(msg.user_id, msg.message_id) {
                Ok(deliveries) => act.commit_deliveries(ctx, deliveries, ()),
                Err(e) => answer(Err(e)),
            }
        })
    }
}

/// Edit a message's text (and optionally its model fields).
#[derive(Message, Clone)]
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
        when_ready(self, |act| {
            match act.edit(msg.user_id, msg.is_admin, msg.message_id, msg.draft) {
                Ok((view, deliveries)) => act.commit_deliveries(ctx, deliveries, view),
                Err(e) => answer(Err(e)),
            }
        })
    }
}

/// Add or remove the user's emoji reaction on a message; members get `TextMessagesUpdated`.
#[derive(Message, Clone)]
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
        when_ready(self, |act| match act.react(&msg) {
            Ok((view, deliveries)) => act.commit_deliveries(ctx, deliveries, view),
            Err(e) => answer(Err(e)),
        })
    }
}

/// Uploaded files on their way to a room's actor. Shared so the message can be sent again
/// (to a room's new actor) while only one actor ever takes the files.
#[derive(Clone)]
pub struct Uploads(std::sync::Arc<std::sync::Mutex<Option<Vec<PreparedUpload>>>>);

impl Uploads {
    pub fn new(files: Vec<PreparedUpload>) -> Uploads {
        Uploads(std::sync::Arc::new(std::sync::Mutex::new(Some(files))))
    }

    fn take(&self) -> Vec<PreparedUpload> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default()
    }
}

/// Attach uploaded files (already on disk and pinned) to a message, if it still exists.
/// Members get `TextMessagesUpdated`. All files or none.
#[derive(Message, Clone)]
#[rtype(result = "Result<Vec<AttachmentRecord>, ApiError>")]
pub struct AttachFiles {
    pub user_id: UserId,
    pub is_admin: bool,
    pub message_id: MessageId,
    pub files: Uploads,
    /// The uploader's attachment quota in bytes (0: none).
    pub quota: u64,
    pub idempotency: Option<IdempotencyKey>,
}

impl Handler<AttachFiles> for RoomActor {
    type Result = Reply<Vec<AttachmentRecord>>;
    fn handle(&mut self, msg: AttachFiles, ctx: &mut Context<Self>) -> Self::Result {
        when_ready(self, |act| match act.attach(msg) {
            Ok((records, deliveries)) => act.commit_deliveries(ctx, deliveries, records),
            Err(e) => answer(Err(e)),
        })
    }
}

/// Delete one attachment; its content goes with the last reference, once that is durable.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), ApiError>")]
pub struct DeleteAttachment {
    pub user_id: UserId,
    pub is_admin: bool,
    pub attachment_id: u64,
}

impl Handler<DeleteAttachment> for RoomActor {
    type Result = Reply<()>;
    fn handle(&mut self, msg: DeleteAttachment, ctx: &mut Context<Self>) -> Self::Result {
        when_ready(self, |act| match act.delete_attachment(&msg) {
            Ok(after) => act.commit(ctx, after, ()),
            Err(e) => answer(Err(e)),
        })
    }
}
