//! Messages and comments, reactions and read receipts. Writes are room-scoped units made by
//! the room's actor: a post is its record, indexes, the room's sequence number, the poster's
//! read position, the parent's comment count and change-log entries, all in one unit.

use std::ops::Bound;

use super::attachments::AttachmentRecord;
use super::{
    be, id_at, pair, Applied, Change, Direction, IdKind, IdempotencyKey, IdempotentResult,
    MessageRecord, Reader, Result, Scope, Store, Table, Tombstone, WriteUnit, EMPTY,
};
use crate::model::{MessageId, MessageType, Reaction, ReadTimestamp, RoomId, TextMessage, UserId};

impl Reader {
    pub fn message(&self, message_id: MessageId) -> Result<Option<MessageRecord>> {
        self.get_json(Table::MessageidMessage, "message", be(message_id))
    }

    /// What is left of a deleted message: where it was, never what it said.
    pub fn tombstone(&self, message_id: MessageId) -> Result<Option<Tombstone>> {
        self.get_json(Table::MessageidTombstone, "tombstone", be(message_id))
    }

    /// Ids of the comments of a message, oldest first.
    pub fn comment_ids(&self, parent: MessageId) -> Result<Vec<MessageId>> {
        self.prefix(Table::ParentidCommentid, &be(parent))?
            .iter()
            .map(|(k, _)| id_at(k, 8))
            .collect()
    }

    /// A page of an ordered index (`roomid_messageid` or `parentid_commentid`) under
    /// `owner`, with the API's cursor semantics: with no cursor, backward starts at the
    /// newest and forward at the oldest; with a cursor, the page holds the ids strictly
    /// older (backward) or strictly newer (forward) than it. Always returned oldest first.
    fn page(
        &self,
        index: Table,
        owner: u64,
        cursor: Option<MessageId>,
        limit: Option<usize>,
        direction: Direction,
    ) -> Result<Vec<MessageId>> {
        let limit = limit.unwrap_or(usize::MAX);
        let lo = pair(owner, 0);
        let end = pair(owner, u64::MAX);
        let (lo, hi, reverse) = match (direction, cursor) {
            // [lo, cursor): strictly older; with no cursor `end` excludes only id u64::MAX,
            // which is never handed out.
            (Direction::Backward, c) => (lo, pair(owner, c.unwrap_or(u64::MAX)), true),
            (Direction::Forward, Some(c)) => (pair(owner, c.saturating_add(1)), end, false),
            (Direction::Forward, None) => (lo, end, false),
        };
        let hi_bound = if reverse {
            Bound::Excluded(&hi[..])
        } else {
            Bound::Included(&hi[..])
        };
        let mut ids = self
            .scan(index, Bound::Included(&lo[..]), hi_bound, reverse, limit)?
            .iter()
            .map(|(k, _)| id_at(k, 8))
            .collect::<Result<Vec<_>>>()?;
        if reverse {
            ids.reverse();
        }
        Ok(ids)
    }

    pub fn room_message_ids(
        &self,
        room_id: RoomId,
        cursor: Option<MessageId>,
        limit: Option<usize>,
        direction: Direction,
    ) -> Result<Vec<MessageId>> {
        self.page(Table::RoomidMessageid, room_id, cursor, limit, direction)
    }

    pub fn comment_page_ids(
        &self,
        parent: MessageId,
        cursor: Option<MessageId>,
        limit: Option<usize>,
        direction: Direction,
    ) -> Result<Vec<MessageId>> {
        self.page(Table::ParentidCommentid, parent, cursor, limit, direction)
    }

    /// Up to `limit` stored messages and comments with ids above `after`, in id order: a
    /// walk over all of history in pages (the search index's rebuild).
    pub fn messages_after(&self, after: MessageId, limit: usize) -> Result<Vec<MessageRecord>> {
        let from = be(after.saturating_add(1));
        self.scan(
            Table::MessageidMessage,
            Bound::Included(&from[..]),
            Bound::Unbounded,
            false,
            limit,
        )?
        .iter()
        .map(|(_, v)| super::decode("message", v))
        .collect()
    }

    /// Ids of the room's messages (and comments) of type Issue, oldest first.
    pub fn room_issue_ids(&self, room_id: RoomId) -> Result<Vec<MessageId>> {
        self.prefix(Table::RoomidIssueid, &be(room_id))?
            .iter()
            .map(|(k, _)| id_at(k, 8))
            .collect()
    }

    /// Ids of the room's messages (and comments) of type Meeting, oldest first.
    pub fn room_meeting_ids(&self, room_id: RoomId) -> Result<Vec<MessageId>> {
        self.prefix(Table::RoomidMeetingid, &be(room_id))?
            .iter()
            .map(|(k, _)| id_at(k, 8))
            .collect()
    }

    pub fn last_message(&self, room_id: RoomId) -> Result<Option<MessageRecord>> {
        // Newest first; a missing record (never expected) is skipped.
        for (k, _) in self.prefix_limited(Table::RoomidMessageid, &be(room_id), true, 16)? {
            if let Some(m) = self.message(id_at(&k, 8)?)? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// The message as the API shows it: the stored record plus its receipts, reactions and
    /// files.
    pub fn api_message(&self, record: &MessageRecord) -> Result<TextMessage> {
        let mut view = new_message_view(record);
        view.attachments = self
            .attachments_of(record.message_id)?
            .iter()
            .map(|a| a.to_api())
            .collect();
        view.read_timestamps = self.read_timestamps(record.message_id)?;
        view.reactions = self.reactions(record.message_id)?;
        Ok(view)
    }

    pub fn api_messages(&self, ids: &[MessageId]) -> Result<Vec<TextMessage>> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(record) = self.message(id)? {
                out.push(self.api_message(&record)?);
            }
        }
        Ok(out)
    }

    /// The message's reactions, grouped by emoji (in order of first use by user id).
    pub fn reactions(&self, message_id: MessageId) -> Result<Vec<Reaction>> {
        let mut out: Vec<Reaction> = Vec::new();
        for (k, _) in self.prefix(Table::MessageidUseridReaction, &be(message_id))? {
            let user = id_at(&k, 8)?;
            let emoji = String::from_utf8_lossy(&k[16..]).to_string();
            match out.iter_mut().find(|r| r.emoji == emoji) {
                Some(r) => r.user_ids.push(user),
                None => out.push(Reaction {
                    emoji,
                    user_ids: vec![user],
                }),
            }
        }
        Ok(out)
    }

    pub fn read_timestamps(&self, message_id: MessageId) -> Result<Vec<ReadTimestamp>> {
        self.prefix(Table::MessageidUseridRead, &be(message_id))?
            .iter()
            .map(|(k, v)| {
                Ok(ReadTimestamp {
                    user_id: id_at(k, 8)?,
                    read_utc: id_at(v, 0)?,
                })
            })
            .collect()
    }

    /// The room's newest top-level sequence number (0: none yet).
    pub fn room_seq(&self, room_id: RoomId) -> Result<u64> {
        match self.get(Table::RoomidSeq, be(room_id))? {
            Some(v) => id_at(&v, 0),
            None => Ok(0),
        }
    }

    /// The user's read position in a room: the newest message read and its sequence number.
    fn read_position(&self, user_id: UserId, room_id: RoomId) -> Result<(MessageId, u64)> {
        match self.get(Table::UseridRoomidLastread, pair(user_id, room_id))? {
            Some(v) => Ok((id_at(&v, 0)?, id_at(&v, 8).unwrap_or(0))),
            None => Ok((0, 0)),
        }
    }

    /// Top-level messages newer than the user's read position: the room's newest sequence
    /// number minus the one read, minus messages deleted since (a short scan of deletions).
    pub fn unread_count(&self, user_id: UserId, room_id: RoomId) -> Result<u64> {
        let (_, read_seq) = self.read_position(user_id, room_id)?;
        let newest = self.room_seq(room_id)?;
        let lo = pair(room_id, read_seq.saturating_add(1));
        let hi = pair(room_id, u64::MAX);
        let deleted = self
            .scan(
                Table::RoomidSeqDeleted,
                Bound::Included(&lo[..]),
                Bound::Included(&hi[..]),
                false,
                usize::MAX,
            )?
            .len() as u64;
        Ok(newest.saturating_sub(read_seq).saturating_sub(deleted))
    }

    /// Whether `user` has a read receipt on `message`.
    pub fn has_read(&self, message_id: MessageId, user_id: UserId) -> Result<bool> {
        self.contains(Table::MessageidUseridRead, pair(message_id, user_id))
    }

    pub fn has_reaction(
        &self,
        message_id: MessageId,
        user_id: UserId,
        emoji: &str,
    ) -> Result<bool> {
        self.contains(
            Table::MessageidUseridReaction,
            reaction_key(message_id, user_id, emoji),
        )
    }
}

/// The API view of a message just posted (no files, receipts or reactions yet), built
/// without reading anything.
pub fn new_message_view(record: &MessageRecord) -> TextMessage {
    TextMessage {
        message_id: record.message_id,
        parent_message_id: record.parent_message_id,
        user_id: record.user_id,
        room_id: record.room_id,
        text: record.text.clone(),
        created_utc: record.created_utc,
        last_modified_utc: record.last_modified_utc,
        last_edited_utc: record.last_edited_utc,
        markup_type: record.markup_type,
        message_type: record.message_type,
        priority: record.priority,
        comment_count: record.comment_count,
        attachments: Vec::new(),
        read_timestamps: Vec::new(),
        reactions: Vec::new(),
        issue_properties: record.issue_properties.clone(),
        meeting_properties: record.meeting_properties.clone(),
    }
}

fn reaction_key(message_id: MessageId, user_id: UserId, emoji: &str) -> Vec<u8> {
    let mut key = pair(message_id, user_id).to_vec();
    key.extend_from_slice(emoji.as_bytes());
    key
}

/// Moves the user's read position forward to `record` (never back) inside `unit`.
fn advance_read_position(
    r: &Reader,
    unit: &mut WriteUnit,
    user_id: UserId,
    record: &MessageRecord,
) -> Result<()> {
    let (old_id, _) = r.read_position(user_id, record.room_id)?;
    if old_id < record.message_id {
        unit.put(
            Table::UseridRoomidLastread,
            pair(user_id, record.room_id),
            pair(record.message_id, record.seq),
        );
    }
    Ok(())
}

/// A post or comment to store, with what changes around it.
pub struct NewPost<'a> {
    pub record: &'a MessageRecord,
    /// The parent with its new comment count (comments only).
    pub parent: Option<&'a MessageRecord>,
    pub idempotency: Option<&'a IdempotencyKey>,
    /// Notifications it causes (offline recipients with devices), stored with it.
    pub push: &'a [super::push::PushJob],
}

impl Store {
    /// A message id for a post (recorded in the post's unit).
    pub fn next_message_id(&self) -> MessageId {
        self.next_id(IdKind::Message)
    }

    /// Stores a new message or comment with everything that changes with it.
    pub fn post_message(&self, post: NewPost<'_>) -> Result<Applied> {
        let record = post.record;
        let (room, id) = (record.room_id, record.message_id);
        let mut unit = WriteUnit::new(Scope::Room(room));
        unit.uses_id(IdKind::Message, id);
        unit.put_json(Table::MessageidMessage, be(id), record);
        index_by_type(&mut unit, record, true);
        super::push::enqueue_jobs(&mut unit, post.push);
        if record.parent_message_id == 0 {
            unit.put(Table::RoomidMessageid, pair(room, id), EMPTY);
            unit.put(Table::RoomidSeq, be(room), be(record.seq));
            // Posting counts as having read the room up to the new message.
            advance_read_position(self.latest(), &mut unit, record.user_id, record)?;
        } else {
            unit.put(
                Table::ParentidCommentid,
                pair(record.parent_message_id, id),
                EMPTY,
            );
        }
        unit.log(Change::Message {
            room_id: room,
            message_id: id,
        });
        if let Some(parent) = post.parent {
            unit.put_json(Table::MessageidMessage, be(parent.message_id), parent);
            unit.log(Change::Message {
                room_id: room,
                message_id: parent.message_id,
            });
        }
        if let Some(key) = post.idempotency {
            key.record(
                &mut unit,
                &IdempotentResult::Message {
                    room_id: room,
                    message_id: id,
                },
            );
        }
        self.apply(unit)
    }

    /// Stores an edited message.
    pub fn edit_message(&self, record: &MessageRecord) -> Result<Applied> {
        let mut unit = WriteUnit::new(Scope::Room(record.room_id));
        unit.put_json(Table::MessageidMessage, be(record.message_id), record);
        index_by_type(&mut unit, record, false);
        unit.log(Change::Message {
            room_id: record.room_id,
            message_id: record.message_id,
        });
        self.apply(unit)
    }

    /// Deletes `record` and `comments` (its comments, when it is top-level): indexes,
    /// receipts, reactions and attachments go, a tombstone stays; `parent` (when a comment
    /// is deleted) is stored with its new count. Returns the content hashes whose last
    /// reference may have gone: erase them once the unit is durable
    /// ([`Store::erase_unreferenced`]).
    pub fn delete_messages(
        &self,
        record: &MessageRecord,
        comments: &[MessageRecord],
        parent: Option<&MessageRecord>,
    ) -> Result<(Applied, Vec<String>)> {
        let r = self.latest();
        let mut unit = WriteUnit::new(Scope::Room(record.room_id));
        let mut hashes = Vec::new();
        let now = crate::now_ms();
        for m in comments.iter().chain(std::iter::once(record)) {
            let id = m.message_id;
            if m.parent_message_id == 0 {
                unit.remove(Table::RoomidMessageid, pair(m.room_id, id));
                if m.seq > 0 {
                    unit.put(Table::RoomidSeqDeleted, pair(m.room_id, m.seq), EMPTY);
                }
            } else {
                unit.remove(Table::ParentidCommentid, pair(m.parent_message_id, id));
            }
            for (k, _) in r.prefix(Table::MessageidUseridRead, &be(id))? {
                unit.remove(Table::MessageidUseridRead, k);
            }
            for (k, _) in r.prefix(Table::MessageidUseridReaction, &be(id))? {
                unit.remove(Table::MessageidUseridReaction, k);
            }
            for a in r.attachments_of(id)? {
                hashes.push(a.content_hash.clone());
                remove_attachment(&mut unit, &a);
            }
            let tombstone = Tombstone {
                room_id: m.room_id,
                parent_message_id: m.parent_message_id,
                user_id: m.user_id,
                created_utc: m.created_utc,
                deleted_utc: now,
            };
            unit.put_new(Table::MessageidTombstone, be(id), super::encode(&tombstone));
            unit.remove(Table::MessageidMessage, be(id));
            unit.remove(Table::RoomidIssueid, pair(m.room_id, id));
            unit.remove(Table::RoomidMeetingid, pair(m.room_id, id));
            unit.log(Change::MessageDeleted {
                room_id: m.room_id,
                message_id: id,
                parent_message_id: m.parent_message_id,
            });
        }
        if let Some(parent) = parent {
            unit.put_json(Table::MessageidMessage, be(parent.message_id), parent);
            unit.log(Change::Message {
                room_id: parent.room_id,
                message_id: parent.message_id,
            });
        }
        Ok((self.apply(unit)?, hashes))
    }

    /// Records that `user` read `record` and moves their read position; `None` if they had
    /// read it already.
    pub fn mark_read(
        &self,
        record: &MessageRecord,
        user_id: UserId,
        now: u64,
        push: &[super::push::PushJob],
    ) -> Result<Option<Applied>> {
        let r = self.latest();
        if r.has_read(record.message_id, user_id)? {
            return Ok(None);
        }
        let mut unit = WriteUnit::new(Scope::Room(record.room_id));
        super::push::enqueue_jobs(&mut unit, push);
        unit.put(
            Table::MessageidUseridRead,
            pair(record.message_id, user_id),
            be(now),
        );
        if record.parent_message_id == 0 {
            advance_read_position(r, &mut unit, user_id, record)?;
        }
        unit.log(Change::Message {
            room_id: record.room_id,
            message_id: record.message_id,
        });
        Ok(Some(self.apply(unit)?))
    }

    /// Adds or removes one user's reaction; `None` if nothing changed.
    pub fn set_reaction(
        &self,
        record: &MessageRecord,
        user_id: UserId,
        emoji: &str,
        on: bool,
    ) -> Result<Option<Applied>> {
        if self
            .latest()
            .has_reaction(record.message_id, user_id, emoji)?
            == on
        {
            return Ok(None);
        }
        let key = reaction_key(record.message_id, user_id, emoji);
        let mut unit = WriteUnit::new(Scope::Room(record.room_id));
        if on {
            unit.put(Table::MessageidUseridReaction, key, EMPTY);
        } else {
            unit.remove(Table::MessageidUseridReaction, key);
        }
        unit.log(Change::Message {
            room_id: record.room_id,
            message_id: record.message_id,
        });
        Ok(Some(self.apply(unit)?))
    }
}

/// The issue and meeting lists: a message is in the one its type names, and in no other
/// (an edit may change the type). A `fresh` message is in neither yet: a plain post writes
/// nothing here.
pub(super) fn index_by_type(unit: &mut WriteUnit, record: &MessageRecord, fresh: bool) {
    let key = pair(record.room_id, record.message_id);
    let (issue, meeting) = match record.message_type {
        MessageType::Issue => (true, false),
        MessageType::Meeting => (false, true),
        MessageType::Regular => (false, false),
    };
    for (table, member) in [
        (Table::RoomidIssueid, issue),
        (Table::RoomidMeetingid, meeting),
    ] {
        if member {
            unit.put(table, key, EMPTY);
        } else if !fresh {
            unit.remove(table, key);
        }
    }
}

/// The writes that take an attachment away: its record and index, the uploader's quota,
/// and one reference to its content.
pub(super) fn remove_attachment(unit: &mut WriteUnit, a: &AttachmentRecord) {
    unit.remove(
        Table::MessageidAttachmentid,
        pair(a.message_id, a.attachment_id),
    );
    unit.remove(Table::AttachmentidAttachment, be(a.attachment_id));
    unit.add_to_counter(Table::UseridQuotaused, be(a.user_id), -(a.file_size as i64));
    unit.add_to_counter(Table::ContenthashRefs, a.content_hash.as_bytes(), -1);
}
