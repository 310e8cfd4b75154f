//! Per-user views of stored records: a room looks different to each member (its name for a
//! private room, unread count, moderator flag).

use super::{Reader, Result, RoomRecord};
use crate::model::{LastMessage, Room, RoomType, UserId};

impl Reader {
    pub fn room_view(&self, room: &RoomRecord, user_id: UserId) -> Result<Room> {
        let member = self.member(room.room_id, user_id)?;
        let last_message = self.last_message_summary(room.room_id)?;
        self.room_view_with(
            room,
            user_id,
            last_message,
            member.map(|m| m.is_moderator).unwrap_or(false),
        )
    }

    /// The room's newest top-level message, as rooms show it.
    pub fn last_message_summary(
        &self,
        room_id: crate::model::RoomId,
    ) -> Result<Option<LastMessage>> {
        Ok(self.last_message(room_id)?.map(|m| LastMessage {
            message_id: m.message_id,
            user_id: m.user_id,
            created_utc: m.created_utc,
        }))
    }

    /// A user's view when the shared parts (last message, moderator flag) are known: only
    /// the unread count (and a private room's name) is looked up.
    pub fn room_view_with(
        &self,
        room: &RoomRecord,
        user_id: UserId,
        last_message: Option<LastMessage>,
        is_moderator: bool,
    ) -> Result<Room> {
        let display_name = match room.room_type {
            RoomType::Public => room.name.clone(),
            RoomType::Private => {
                let mut name = String::new();
                for (other, _) in self.members(room.room_id)? {
                    if other != user_id {
                        if let Some(u) = self.user(other)? {
                            name = u.display_name;
                        }
                    }
                }
                name
            }
        };
        Ok(Room {
            room_id: room.room_id,
            display_name,
            room_type: room.room_type,
            created_utc: room.created_utc,
            last_modified_utc: room.last_modified_utc,
            unread_message_count: self.unread_count(user_id, room.room_id)?,
            is_archived: room.is_archived,
            is_moderator,
            is_pinned: self.is_pinned(user_id, room.room_id)?,
            last_message,
            discussion_message_id: None,
            members_may_leave: room.members_may_leave,
            auto_add_new_users: room.auto_add_new_users,
            join_code: room.join_code.clone().filter(|_| is_moderator),
        })
    }
}
