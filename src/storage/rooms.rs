//! Rooms, membership, pins and join codes. Every write here is a room-scoped unit made by
//! the room's actor (its single writer), which reads through the latest view.

use super::{
    be, decode, encode, id_at, pair, Applied, Change, IdKind, MemberRecord, Reader, Result,
    RoomRecord, Scope, Store, Table, WriteUnit, EMPTY,
};
use crate::model::{RoomId, RoomType, UserId};

/// The `userid_roomid` value of a pinned room.
const PINNED: &[u8] = b"p";

impl Reader {
    pub fn room(&self, room_id: RoomId) -> Result<Option<RoomRecord>> {
        self.get_json(Table::RoomidRoom, "room", be(room_id))
    }

    /// Every room, in id order.
    pub fn rooms(&self) -> Result<Vec<RoomRecord>> {
        self.all(Table::RoomidRoom)?
            .iter()
            .map(|(_, v)| decode("room", v))
            .collect()
    }

    /// The group room whose join link carries this code.
    pub fn room_by_join_code(&self, code: &str) -> Result<Option<RoomRecord>> {
        match self.get(Table::JoincodeRoomid, code.as_bytes())? {
            Some(v) => self.room(id_at(&v, 0)?),
            None => Ok(None),
        }
    }

    /// The private room of two users, if they have one.
    pub fn private_room_of(&self, a: UserId, b: UserId) -> Result<Option<RoomId>> {
        match self.get(Table::UserpairRoomid, pair(a.min(b), a.max(b)))? {
            Some(v) => Ok(Some(id_at(&v, 0)?)),
            None => Ok(None),
        }
    }

    pub fn member(&self, room_id: RoomId, user_id: UserId) -> Result<Option<MemberRecord>> {
        self.get_json(
            Table::RoomidUseridMember,
            "membership",
            pair(room_id, user_id),
        )
    }

    pub fn members(&self, room_id: RoomId) -> Result<Vec<(UserId, MemberRecord)>> {
        self.prefix(Table::RoomidUseridMember, &be(room_id))?
            .iter()
            .map(|(k, v)| Ok((id_at(k, 8)?, decode("membership", v)?)))
            .collect()
    }

    pub fn rooms_of_user(&self, user_id: UserId) -> Result<Vec<RoomId>> {
        self.prefix(Table::UseridRoomid, &be(user_id))?
            .iter()
            .map(|(k, _)| id_at(k, 8))
            .collect()
    }

    pub fn is_pinned(&self, user_id: UserId, room_id: RoomId) -> Result<bool> {
        Ok(self
            .get(Table::UseridRoomid, pair(user_id, room_id))?
            .is_some_and(|v| v.as_ref() == PINNED))
    }
}

fn add_member_to(unit: &mut WriteUnit, room_id: RoomId, user_id: UserId, moderator: bool) {
    let record = MemberRecord {
        is_moderator: moderator,
        joined_utc: crate::now_ms(),
    };
    unit.put(
        Table::RoomidUseridMember,
        pair(room_id, user_id),
        encode(&record),
    );
    unit.put(Table::UseridRoomid, pair(user_id, room_id), EMPTY);
    unit.log(Change::MemberAdded { room_id, user_id });
}

impl Store {
    /// A new room with its members (the creator moderates a group room). A private room
    /// is unique per pair of users: a second one for the same pair is a conflict.
    pub fn create_room(&self, record: &RoomRecord, members: &[UserId]) -> Result<Applied> {
        let room_id = record.room_id;
        let mut unit = WriteUnit::new(Scope::Room(room_id));
        unit.uses_id(IdKind::Room, room_id);
        unit.require_absent(
            Table::RoomidRoom,
            be(room_id),
            format!("Room {room_id} exists"),
        );
        unit.put_new(Table::RoomidRoom, be(room_id), encode(record));
        if joins_new_users(record) {
            unit.put(Table::AutoaddRoomid, be(room_id), EMPTY);
        }
        if record.room_type == RoomType::Private {
            if let [a, b] = members {
                let key = pair((*a).min(*b), (*a).max(*b));
                unit.require_absent(
                    Table::UserpairRoomid,
                    key,
                    "These users already have a private room",
                );
                unit.put(Table::UserpairRoomid, key, be(room_id));
            }
        }
        for &user in members {
            let moderator = user == record.creator_id && record.room_type == RoomType::Public;
            add_member_to(&mut unit, room_id, user, moderator);
        }
        unit.log(Change::Room { room_id });
        self.apply(unit)
    }

    /// Stores the room's new properties (keeping the join-code index in step).
    pub fn update_room(&self, old: &RoomRecord, record: &RoomRecord) -> Result<Applied> {
        let room_id = record.room_id;
        let mut unit = WriteUnit::new(Scope::Room(room_id));
        unit.put_json(Table::RoomidRoom, be(room_id), record);
        match (joins_new_users(old), joins_new_users(record)) {
            (false, true) => unit.put(Table::AutoaddRoomid, be(room_id), EMPTY),
            (true, false) => unit.remove(Table::AutoaddRoomid, be(room_id)),
            _ => {}
        }
        if old.join_code != record.join_code {
            if let Some(code) = &old.join_code {
                unit.remove(Table::JoincodeRoomid, code.as_bytes());
            }
            if let Some(code) = &record.join_code {
                unit.put(Table::JoincodeRoomid, code.as_bytes(), be(room_id));
            }
        }
        unit.log(Change::Room { room_id });
        self.apply(unit)
    }

    pub fn add_member(&self, room_id: RoomId, user_id: UserId, moderator: bool) -> Result<Applied> {
        let mut unit = WriteUnit::new(Scope::Room(room_id));
        add_member_to(&mut unit, room_id, user_id, moderator);
        self.apply(unit)
    }

    /// Takes the user out of the room. Their messages stay; their read position and
    /// permission settings stay too, so a re-added member picks up where they left.
    pub fn remove_member(&self, room_id: RoomId, user_id: UserId) -> Result<Applied> {
        let mut unit = WriteUnit::new(Scope::Room(room_id));
        unit.remove(Table::UseridRoomid, pair(user_id, room_id));
        unit.remove(Table::RoomidUseridMember, pair(room_id, user_id));
        unit.log(Change::MemberRemoved { room_id, user_id });
        self.apply(unit)
    }

    pub fn set_moderator(
        &self,
        room_id: RoomId,
        user_id: UserId,
        member: MemberRecord,
    ) -> Result<Applied> {
        let mut unit = WriteUnit::new(Scope::Room(room_id));
        unit.put_json(Table::RoomidUseridMember, pair(room_id, user_id), &member);
        unit.log(Change::Room { room_id });
        self.apply(unit)
    }

    /// Pins or unpins the room for one member (the caller checked membership).
    pub fn set_pinned(&self, room_id: RoomId, user_id: UserId, pinned: bool) -> Result<Applied> {
        let mut unit = WriteUnit::new(Scope::Room(room_id));
        unit.put(
            Table::UseridRoomid,
            pair(user_id, room_id),
            if pinned { PINNED } else { EMPTY },
        );
        unit.log(Change::Room { room_id });
        self.apply(unit)
    }

    /// Stores an uploaded avatar (`kind` is `b'u'` for users, `b'r'` for rooms).
    pub fn set_avatar(
        &self,
        kind: u8,
        id: u64,
        content_type: &str,
        image: &[u8],
    ) -> Result<Applied> {
        let mut v = Vec::with_capacity(content_type.len() + 1 + image.len());
        v.extend_from_slice(content_type.as_bytes());
        v.push(0);
        v.extend_from_slice(image);
        let scope = if kind == b'r' {
            Scope::Room(id)
        } else {
            Scope::User(id)
        };
        let mut unit = WriteUnit::new(scope);
        unit.put(Table::AvatarImage, avatar_key(kind, id), v);
        self.apply(unit)
    }
}

fn avatar_key(kind: u8, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = kind;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

impl Reader {
    /// The uploaded avatar: content type and bytes.
    pub fn avatar(&self, kind: u8, id: u64) -> Result<Option<(String, Vec<u8>)>> {
        Ok(self
            .get(Table::AvatarImage, avatar_key(kind, id))?
            .and_then(|v| {
                let cut = v.iter().position(|&b| b == 0)?;
                Some((
                    String::from_utf8_lossy(&v[..cut]).to_string(),
                    v[cut + 1..].to_vec(),
                ))
            }))
    }
}

/// Whether every new user joins the room (`autoAddNewUsers` on a public room).
pub(crate) fn joins_new_users(room: &RoomRecord) -> bool {
    room.auto_add_new_users && room.room_type == RoomType::Public
}

impl super::Reader {
    /// Public rooms every new user joins (from their index: no scan of all rooms).
    pub fn auto_add_room_ids(&self) -> Result<Vec<RoomId>> {
        self.all(Table::AutoaddRoomid)?
            .iter()
            .map(|(k, _)| id_at(k, 0))
            .collect()
    }
}
