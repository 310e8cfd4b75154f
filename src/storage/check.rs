//! `confab-server check`: an offline check of a stopped server's storage folder. It reads
//! every tree and reports each broken invariant with its key: ids at or above their
//! high-water marks, comments without their parent or with a wrong count, attachments
//! without their message or content, indexes that disagree with their records, gaps in the
//! change log, records that do not decode. It writes no record: units a crash left in the
//! journal are read as the next start will complete them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use sled::IVec;

use super::tables::{Table, Trees};
use super::unit::IdKind;
use super::{
    decode, id_at, AttachmentRecord, Change, MemberRecord, MessageRecord, Result, RoomRecord,
    SessionRecord, Tombstone, UserRecord,
};
use crate::model::RoomType;

/// What the check found.
pub struct CheckReport {
    /// One line per problem, naming the tree and key.
    pub problems: Vec<String>,
    /// One line: what was checked.
    pub summary: String,
}

struct Checker<'a> {
    t: &'a Trees,
    /// The keys of an encrypted folder: sealed records are opened, name keys blinded.
    sealer: Option<&'a super::seal::Sealer>,
    /// Writes of journaled units, as a replay at the next start would make them.
    journal: super::journal::JournalView,
    problems: Vec<String>,
}

fn key_text(k: &[u8]) -> String {
    match k.len() {
        8 => id_at(k, 0).map(|a| a.to_string()).unwrap_or_default(),
        16 => format!("{}/{}", id_at(k, 0).unwrap_or(0), id_at(k, 8).unwrap_or(0)),
        _ if k.iter().all(|b| b.is_ascii_graphic()) => String::from_utf8_lossy(k).to_string(),
        _ => hex::encode(k),
    }
}

impl Checker<'_> {
    fn problem(&mut self, t: Table, key: &[u8], text: impl std::fmt::Display) {
        self.problems
            .push(format!("problem: {} {}: {text}", t.name(), key_text(key)));
    }

    fn entries(&mut self, t: Table) -> Vec<(IVec, IVec)> {
        let mut out = BTreeMap::new();
        for kv in self.t[t].iter() {
            match kv {
                Ok((k, v)) => {
                    out.insert(k.to_vec(), v);
                }
                Err(e) => {
                    self.problem(t, b"", format!("cannot be read: {e}"));
                    break;
                }
            }
        }
        for (k, v) in self.journal.get(&t).into_iter().flatten() {
            match v {
                Some(v) => out.insert(k.clone(), IVec::from(v.as_slice())),
                None => out.remove(k),
            };
        }
        let Some(sealer) = self.sealer.filter(|_| super::seal::sealed_table(t)) else {
            return out.into_iter().map(|(k, v)| (IVec::from(k), v)).collect();
        };
        let mut opened = Vec::with_capacity(out.len());
        for (k, v) in out {
            match sealer.open(t, &k, &v) {
                Ok(plain) => opened.push((IVec::from(k), IVec::from(plain))),
                Err(e) => self.problem(t, &k, e),
            }
        }
        opened
    }

    /// The key a name-keyed index holds for `name`.
    fn name_key(&self, t: Table, name: &str) -> Vec<u8> {
        super::seal::blind(self.sealer, t, name.as_bytes()).into_owned()
    }

    /// Every record of a table, decoded, by id; undecodable ones are reported.
    fn records<T: serde::de::DeserializeOwned>(
        &mut self,
        t: Table,
        what: &'static str,
    ) -> BTreeMap<u64, T> {
        let mut out = BTreeMap::new();
        for (k, v) in self.entries(t) {
            let id = match id_at(&k, 0) {
                Ok(id) if k.len() == 8 => id,
                _ => {
                    self.problem(t, &k, "key is not an 8-byte id");
                    continue;
                }
            };
            match decode::<T>(what, &v) {
                Ok(r) => {
                    out.insert(id, r);
                }
                Err(e) => self.problem(t, &k, e),
            }
        }
        out
    }

    fn pairs(&mut self, t: Table) -> BTreeSet<(u64, u64)> {
        let mut out = BTreeSet::new();
        for (k, _) in self.entries(t) {
            match (id_at(&k, 0), id_at(&k, 8)) {
                (Ok(a), Ok(b)) if k.len() >= 16 => {
                    out.insert((a, b));
                }
                _ => self.problem(t, &k, "key is not a pair of ids"),
            }
        }
        out
    }

    fn hw(&mut self, key: &str) -> Option<u64> {
        if let Some(pending) = self
            .journal
            .get(&Table::Meta)
            .and_then(|m| m.get(key.as_bytes()))
        {
            return pending.as_ref().and_then(|v| id_at(v, 0).ok());
        }
        match self.t[Table::Meta].get(key) {
            Ok(Some(v)) => id_at(&v, 0).ok(),
            _ => None,
        }
    }

    fn below_hw(&mut self, t: Table, ids: impl Iterator<Item = u64>, hw: Option<u64>) {
        let Some(hw) = hw else {
            self.problem(
                Table::Meta,
                b"",
                format!("no high-water mark for {}", t.name()),
            );
            return;
        };
        for id in ids {
            if id >= hw {
                self.problem(
                    t,
                    &id.to_be_bytes(),
                    format!("id is not below the high-water mark {hw}"),
                );
            }
        }
    }
}

/// Checks the database in `<dir>/db` (the caller holds the folder's lock).
pub fn check_folder(
    dir: &Path,
    cache_bytes: u64,
    key: Option<&super::KeyMaterial>,
) -> Result<CheckReport> {
    let trees = Trees::open(&dir.join("db"), cache_bytes)?;
    let sealer = super::seal::unlock_existing(&trees, dir, key)?;
    let mut c = Checker {
        t: &trees,
        sealer: sealer.as_ref(),
        journal: trees.journal_view()?,
        problems: Vec::new(),
    };
    let users: BTreeMap<u64, UserRecord> = c.records(Table::UseridUser, "user");
    let rooms: BTreeMap<u64, RoomRecord> = c.records(Table::RoomidRoom, "room");
    let messages: BTreeMap<u64, MessageRecord> = c.records(Table::MessageidMessage, "message");
    let tombstones: BTreeMap<u64, Tombstone> = c.records(Table::MessageidTombstone, "tombstone");
    let attachments: BTreeMap<u64, AttachmentRecord> =
        c.records(Table::AttachmentidAttachment, "attachment");

    // Ids and their high-water marks.
    let hw_user = c.hw(IdKind::User.meta_key());
    let hw_room = c.hw(IdKind::Room.meta_key());
    let hw_message = c.hw(IdKind::Message.meta_key());
    let hw_attachment = c.hw(IdKind::Attachment.meta_key());
    c.below_hw(Table::UseridUser, users.keys().copied(), hw_user);
    c.below_hw(Table::RoomidRoom, rooms.keys().copied(), hw_room);
    c.below_hw(
        Table::MessageidMessage,
        messages.keys().copied(),
        hw_message,
    );
    c.below_hw(
        Table::MessageidTombstone,
        tombstones.keys().copied(),
        hw_message,
    );
    c.below_hw(
        Table::AttachmentidAttachment,
        attachments.keys().copied(),
        hw_attachment,
    );
    for (id, u) in &users {
        if u.user_id != *id {
            c.problem(
                Table::UseridUser,
                &id.to_be_bytes(),
                format!("record says user {}", u.user_id),
            );
        }
    }

    // Users and their indexes.
    let names: Vec<(IVec, IVec)> = c.entries(Table::UsernameUserid);
    let mut named = BTreeSet::new();
    for (k, v) in &names {
        let id = id_at(v, 0).unwrap_or(0);
        match users.get(&id) {
            Some(u)
                if c.name_key(Table::UsernameUserid, &u.user_name.to_lowercase()) == k.as_ref() =>
            {
                named.insert(id);
            }
            Some(u) => c.problem(
                Table::UsernameUserid,
                k,
                format!("points to user {id}, named '{}'", u.user_name),
            ),
            None => c.problem(
                Table::UsernameUserid,
                k,
                format!("points to user {id}, which does not exist"),
            ),
        }
    }
    let admins: BTreeSet<u64> = c
        .entries(Table::UseridAdmin)
        .iter()
        .filter_map(|(k, _)| id_at(k, 0).ok())
        .collect();
    for (id, u) in &users {
        if !named.contains(id) {
            c.problem(
                Table::UseridUser,
                &id.to_be_bytes(),
                "has no entry in username_userid",
            );
        }
        if u.is_admin != admins.contains(id) {
            c.problem(
                Table::UseridAdmin,
                &id.to_be_bytes(),
                format!(
                    "index says admin={}, record says {}",
                    !u.is_admin, u.is_admin
                ),
            );
        }
    }
    for id in admins.iter().filter(|id| !users.contains_key(id)) {
        c.problem(
            Table::UseridAdmin,
            &id.to_be_bytes(),
            "names a user that does not exist",
        );
    }
    let session_index: std::collections::HashSet<Vec<u8>> = c
        .entries(Table::UseridSessionhash)
        .into_iter()
        .map(|(k, _)| k.to_vec())
        .collect();
    let mut indexed_sessions = 0usize;
    for (k, v) in c.entries(Table::SessionhashSession) {
        match decode::<SessionRecord>("session", &v) {
            Ok(s) if users.contains_key(&s.user_id) => {
                if session_index.contains(&super::users::session_index_key(s.user_id, &k)) {
                    indexed_sessions += 1;
                } else {
                    c.problem(
                        Table::SessionhashSession,
                        &k,
                        "has no entry in userid_sessionhash",
                    );
                }
            }
            Ok(s) => c.problem(
                Table::SessionhashSession,
                &k,
                format!("belongs to user {}, who does not exist", s.user_id),
            ),
            Err(e) => c.problem(Table::SessionhashSession, &k, e),
        }
    }
    let auto_add: std::collections::BTreeSet<u64> = c
        .entries(Table::AutoaddRoomid)
        .iter()
        .filter_map(|(k, _)| id_at(k, 0).ok())
        .collect();
    for (id, room) in &rooms {
        if super::rooms::joins_new_users(room) != auto_add.contains(id) {
            c.problem(
                Table::AutoaddRoomid,
                &id.to_be_bytes(),
                format!(
                    "index says auto-add={}, the room record says otherwise",
                    auto_add.contains(id)
                ),
            );
        }
    }
    for id in auto_add.iter().filter(|id| !rooms.contains_key(id)) {
        c.problem(
            Table::AutoaddRoomid,
            &id.to_be_bytes(),
            "names a room that does not exist",
        );
    }
    if indexed_sessions != session_index.len() {
        c.problem(
            Table::UseridSessionhash,
            b"",
            format!(
                "{} entries name no session",
                session_index.len().saturating_sub(indexed_sessions)
            ),
        );
    }
    let by_user: HashMap<u64, IVec> = c
        .entries(Table::UseridTokenhash)
        .into_iter()
        .filter_map(|(k, v)| Some((id_at(&k, 0).ok()?, v)))
        .collect();
    for (k, v) in c.entries(Table::TokenhashUserid) {
        let user = id_at(&v, 0).unwrap_or(0);
        if by_user.get(&user).map(|h| h.as_ref()) != Some(k.as_ref()) {
            c.problem(
                Table::TokenhashUserid,
                &k,
                format!("is not user {user}'s current token"),
            );
        }
    }

    // Rooms, membership and their indexes.
    let members = c.pairs(Table::RoomidUseridMember);
    let user_rooms = c.pairs(Table::UseridRoomid);
    for (k, v) in c.entries(Table::RoomidUseridMember) {
        if let Err(e) = decode::<MemberRecord>("membership", &v) {
            c.problem(Table::RoomidUseridMember, &k, e);
        }
    }
    for &(room, user) in &members {
        let key = super::pair(room, user);
        if !rooms.contains_key(&room) {
            c.problem(Table::RoomidUseridMember, &key, "room does not exist");
        }
        if !users.contains_key(&user) {
            c.problem(Table::RoomidUseridMember, &key, "user does not exist");
        }
        if !user_rooms.contains(&(user, room)) {
            c.problem(
                Table::RoomidUseridMember,
                &key,
                "missing from userid_roomid",
            );
        }
    }
    for &(user, room) in &user_rooms {
        if !members.contains(&(room, user)) {
            c.problem(
                Table::UseridRoomid,
                &super::pair(user, room),
                "has no membership record",
            );
        }
    }
    let codes: Vec<(IVec, IVec)> = c.entries(Table::JoincodeRoomid);
    for (k, v) in &codes {
        let room = id_at(v, 0).unwrap_or(0);
        let code_key = rooms
            .get(&room)
            .and_then(|r| r.join_code.as_deref())
            .map(|code| c.name_key(Table::JoincodeRoomid, code));
        if code_key.as_deref() != Some(k.as_ref()) {
            c.problem(
                Table::JoincodeRoomid,
                k,
                format!("is not the join code of room {room}"),
            );
        }
    }
    for (id, r) in &rooms {
        if r.room_id != *id {
            c.problem(
                Table::RoomidRoom,
                &id.to_be_bytes(),
                format!("record says room {}", r.room_id),
            );
        }
        if let Some(code) = &r.join_code {
            if !codes.iter().any(|(k, _)| k.as_ref() == code.as_bytes()) {
                c.problem(
                    Table::RoomidRoom,
                    &id.to_be_bytes(),
                    "join code missing from joincode_roomid",
                );
            }
        }
    }
    for (k, v) in c.entries(Table::UserpairRoomid) {
        let (a, b) = (id_at(&k, 0).unwrap_or(0), id_at(&k, 8).unwrap_or(0));
        let room = id_at(&v, 0).unwrap_or(0);
        let ok = rooms
            .get(&room)
            .is_some_and(|r| r.room_type == RoomType::Private)
            && members.contains(&(room, a))
            && members.contains(&(room, b));
        if !ok {
            c.problem(
                Table::UserpairRoomid,
                &k,
                format!("room {room} is not the private room of users {a} and {b}"),
            );
        }
    }

    // The issue and meeting lists hold exactly the messages of their type.
    for (table, kind) in [
        (Table::RoomidIssueid, crate::model::MessageType::Issue),
        (Table::RoomidMeetingid, crate::model::MessageType::Meeting),
    ] {
        let listed = c.pairs(table);
        for &(room, id) in &listed {
            if !messages
                .get(&id)
                .is_some_and(|m| m.room_id == room && m.message_type == kind)
            {
                c.problem(
                    table,
                    &super::pair(room, id),
                    format!("message {id} of room {room} is not a {kind:?} there"),
                );
            }
        }
        for (id, m) in &messages {
            if m.message_type == kind && !listed.contains(&(m.room_id, *id)) {
                c.problem(table, &super::pair(m.room_id, *id), "missing from the list");
            }
        }
    }

    // Messages, comments, indexes and tombstones.
    let top = c.pairs(Table::RoomidMessageid);
    let comments = c.pairs(Table::ParentidCommentid);
    let room_seq: HashMap<u64, u64> = c
        .entries(Table::RoomidSeq)
        .iter()
        .filter_map(|(k, v)| Some((id_at(k, 0).ok()?, id_at(v, 0).ok()?)))
        .collect();
    let mut comment_counts: HashMap<u64, u64> = HashMap::new();
    for &(parent, _) in &comments {
        *comment_counts.entry(parent).or_default() += 1;
    }
    for (id, m) in &messages {
        let key = id.to_be_bytes();
        if m.message_id != *id {
            c.problem(
                Table::MessageidMessage,
                &key,
                format!("record says message {}", m.message_id),
            );
        }
        if !rooms.contains_key(&m.room_id) {
            c.problem(
                Table::MessageidMessage,
                &key,
                format!("room {} does not exist", m.room_id),
            );
        }
        if tombstones.contains_key(id) {
            c.problem(Table::MessageidMessage, &key, "is also a tombstone");
        }
        if m.parent_message_id == 0 {
            if !top.contains(&(m.room_id, *id)) {
                c.problem(
                    Table::MessageidMessage,
                    &key,
                    "missing from roomid_messageid",
                );
            }
            if m.seq == 0 || m.seq > room_seq.get(&m.room_id).copied().unwrap_or(0) {
                c.problem(
                    Table::MessageidMessage,
                    &key,
                    format!("sequence number {} is not within its room's", m.seq),
                );
            }
            let counted = comment_counts.get(id).copied().unwrap_or(0);
            if m.comment_count != counted {
                c.problem(
                    Table::MessageidMessage,
                    &key,
                    format!(
                        "commentCount is {}, but it has {counted} comments",
                        m.comment_count
                    ),
                );
            }
        } else {
            match messages.get(&m.parent_message_id) {
                None => c.problem(
                    Table::MessageidMessage,
                    &key,
                    format!(
                        "comment of message {}, which does not exist",
                        m.parent_message_id
                    ),
                ),
                Some(p) if p.parent_message_id != 0 || p.room_id != m.room_id => c.problem(
                    Table::MessageidMessage,
                    &key,
                    format!(
                        "comment of message {}, which is not a top-level message of its room",
                        m.parent_message_id
                    ),
                ),
                Some(_) => {}
            }
            if !comments.contains(&(m.parent_message_id, *id)) {
                c.problem(
                    Table::MessageidMessage,
                    &key,
                    "missing from parentid_commentid",
                );
            }
        }
    }
    for &(room, id) in &top {
        if messages
            .get(&id)
            .is_none_or(|m| m.room_id != room || m.parent_message_id != 0)
        {
            c.problem(
                Table::RoomidMessageid,
                &super::pair(room, id),
                "does not match a top-level message of the room",
            );
        }
    }
    for &(parent, id) in &comments {
        if messages
            .get(&id)
            .is_none_or(|m| m.parent_message_id != parent)
        {
            c.problem(
                Table::ParentidCommentid,
                &super::pair(parent, id),
                "does not match a comment of that message",
            );
        }
    }
    for table in [Table::MessageidUseridRead, Table::MessageidUseridReaction] {
        for (k, _) in c.entries(table) {
            let id = id_at(&k, 0).unwrap_or(0);
            if !messages.contains_key(&id) {
                c.problem(table, &k, format!("message {id} does not exist"));
            }
        }
    }

    // Attachments, their content and the counts kept about them.
    let attached = c.pairs(Table::MessageidAttachmentid);
    let mut refs: HashMap<String, (u64, u64)> = HashMap::new();
    let mut quota: HashMap<u64, u64> = HashMap::new();
    let content_dir = dir.join("attachments");
    for (id, a) in &attachments {
        let key = id.to_be_bytes();
        match messages.get(&a.message_id) {
            Some(m) if m.room_id == a.room_id => {}
            Some(_) => c.problem(
                Table::AttachmentidAttachment,
                &key,
                "room differs from its message's",
            ),
            None => c.problem(
                Table::AttachmentidAttachment,
                &key,
                format!("message {} does not exist", a.message_id),
            ),
        }
        if !attached.contains(&(a.message_id, *id)) {
            c.problem(
                Table::AttachmentidAttachment,
                &key,
                "missing from messageid_attachmentid",
            );
        }
        let hash = &a.content_hash;
        let file = content_dir.join(&hash[..2.min(hash.len())]).join(hash);
        if !file.is_file() {
            c.problem(
                Table::AttachmentidAttachment,
                &key,
                format!("content file {} is missing", file.display()),
            );
        }
        let thumb = content_dir
            .join("thumbs")
            .join(&hash[..2.min(hash.len())])
            .join(format!("{hash}.jpg"));
        if a.has_thumbnail && !thumb.is_file() {
            c.problem(
                Table::AttachmentidAttachment,
                &key,
                "hasThumbnail, but the thumbnail is missing",
            );
        }
        let r = refs.entry(hash.clone()).or_default();
        r.0 += 1;
        r.1 = a.file_size;
        *quota.entry(a.user_id).or_default() += a.file_size;
    }
    for &(message, id) in &attached {
        if attachments.get(&id).is_none_or(|a| a.message_id != message) {
            c.problem(
                Table::MessageidAttachmentid,
                &super::pair(message, id),
                "does not match an attachment of that message",
            );
        }
    }
    for (k, v) in c.entries(Table::ContenthashRefs) {
        let hash = String::from_utf8_lossy(&k).to_string();
        let stored = (id_at(&v, 0).unwrap_or(0), id_at(&v, 8).unwrap_or(0));
        match refs.remove(&hash) {
            Some(expected) if expected == stored => {}
            Some((n, size)) => c.problem(
                Table::ContenthashRefs,
                &k,
                format!(
                    "says {} references of {} bytes, attachments say {n} of {size}",
                    stored.0, stored.1
                ),
            ),
            None => c.problem(
                Table::ContenthashRefs,
                &k,
                format!("says {} references, but no attachment uses it", stored.0),
            ),
        }
    }
    for (hash, (n, _)) in refs {
        c.problem(
            Table::ContenthashRefs,
            hash.as_bytes(),
            format!("missing, but {n} attachments use it"),
        );
    }
    for (k, v) in c.entries(Table::UseridQuotaused) {
        let user = id_at(&k, 0).unwrap_or(0);
        let stored = id_at(&v, 0).unwrap_or(0);
        let expected = quota.remove(&user).unwrap_or(0);
        if stored != expected {
            c.problem(
                Table::UseridQuotaused,
                &k,
                format!("says {stored} bytes, attachments add up to {expected}"),
            );
        }
    }
    for (user, bytes) in quota.into_iter().filter(|(_, b)| *b > 0) {
        c.problem(
            Table::UseridQuotaused,
            &user.to_be_bytes(),
            format!("missing, attachments add up to {bytes}"),
        );
    }

    // The change log: no gap.
    let changes = c.entries(Table::ChangeseqChange);
    let mut previous: Option<u64> = None;
    for (k, v) in &changes {
        let seq = id_at(k, 0).unwrap_or(0);
        if let Err(e) = decode::<Change>("change", v) {
            c.problem(Table::ChangeseqChange, k, e);
        }
        if let Some(p) = previous {
            if seq != p + 1 {
                c.problem(
                    Table::ChangeseqChange,
                    k,
                    format!("gap: the entry before is {p}"),
                );
            }
        }
        previous = Some(seq);
    }

    let summary = format!(
        "{} users, {} rooms, {} messages ({} deleted), {} attachments, {} change-log entries",
        users.len(),
        rooms.len(),
        messages.len(),
        tombstones.len(),
        attachments.len(),
        changes.len()
    );
    Ok(CheckReport {
        problems: c.problems,
        summary,
    })
}
