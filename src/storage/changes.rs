//! The change log behind `GET /api/v1/sync`: every write that a client's local copy must
//! follow appends one entry under a growing sequence number. A client keeps the last
//! sequence number it applied as its cursor. Entries name what changed, not its content; sync
//! reads the current state, so a page never carries data the caller may no longer see.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{be, decode, encode, id_at, Result, Store};
use crate::model::{MessageId, RoomId, UserId};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Change {
    /// A message or comment was created or changed (text, comments, reads, reactions, files).
    Message {
        room_id: RoomId,
        message_id: MessageId,
    },
    MessageDeleted {
        room_id: RoomId,
        message_id: MessageId,
        parent_message_id: MessageId,
    },
    /// A room's properties changed (or it was created).
    Room {
        room_id: RoomId,
    },
    MemberAdded {
        room_id: RoomId,
        user_id: UserId,
    },
    MemberRemoved {
        room_id: RoomId,
        user_id: UserId,
    },
}

impl Store {
    /// Appends a change; it becomes durable with the write it describes.
    pub fn log_change(&self, change: &Change) -> Result<u64> {
        let seq = self.next_change_seq.fetch_add(1, Ordering::SeqCst);
        self.changeseq_change.insert(be(seq), encode(change))?;
        Ok(seq)
    }

    /// Sequence number of the newest change (0 when none).
    pub fn last_change_seq(&self) -> u64 {
        self.next_change_seq
            .load(Ordering::SeqCst)
            .saturating_sub(1)
    }

    /// Up to `limit` changes after `cursor`, oldest first.
    pub fn changes_after(&self, cursor: u64, limit: usize) -> Result<Vec<(u64, Change)>> {
        self.changeseq_change
            .range(be(cursor.saturating_add(1))..)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((id_at(&k, 0)?, decode("change", &v)?))
            })
            .collect()
    }
}
