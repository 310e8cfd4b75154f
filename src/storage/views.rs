//! Per-user views of stored records: a room looks different to each member (its name for a
//! private room, unread count, moderator flag).

use super::{Result, RoomRecord, Store};
use crate::model::{LastMessage, Room, RoomType, UserId};

impl Store {
    pub fn room_view(&self, room: &RoomRecord, user_id: UserId) -> Result<Room> {
        let member = self.member(room.room_id, user_id)?;
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
        let last_message = self.last_message(room.room_id)?.map(|m| LastMessage {
            message_id: m.message_id,
            user_id: m.user_id,
            created_utc: m.created_utc,
        });
        Ok(Room {
            room_id: room.room_id,
            display_name,
            room_type: room.room_type,
            created_utc: room.created_utc,
            last_modified_utc: room.last_modified_utc,
            unread_message_count: self.unread_count(user_id, room.room_id)?,
            is_archived: room.is_archived,
            is_moderator: member.map(|m| m.is_moderator).unwrap_or(false),
            is_pinned: false,
            last_message,
            discussion_message_id: None,
        })
    }
}
