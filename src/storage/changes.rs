//! The change log behind `GET /api/v1/sync`: every write that a client's local copy must
//! follow appends one entry under a growing sequence number. A client keeps the last
//! sequence number it applied as its cursor. Entries name what changed, not its content; sync
//! reads the current state, so a page never carries data the caller may no longer see.

use std::ops::Bound;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{be, decode, id_at, Reader, Result, Scope, Store, Table, WriteUnit};
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

impl Reader {
    /// Sequence number of the newest durable change (0 when none): a cursor handed out
    /// never names a change that a crash could take back.
    pub fn last_change_seq(&self) -> u64 {
        self.shared.durable_change.load(Ordering::SeqCst)
    }

    /// Up to `limit` changes after `cursor`, oldest first.
    pub fn changes_after(&self, cursor: u64, limit: usize) -> Result<Vec<(u64, Change)>> {
        let from = be(cursor.saturating_add(1));
        self.scan(
            Table::ChangeseqChange,
            Bound::Included(&from[..]),
            Bound::Unbounded,
            false,
            limit,
        )?
        .iter()
        .map(|(k, v)| Ok((id_at(k, 0)?, decode("change", v)?)))
        .collect()
    }
}

/// `meta` key: every change with a sequence number up to this one has been pruned.
const PRUNED_THROUGH: &str = "changes_pruned_through";

impl Reader {
    /// Changes up to this sequence number are gone from the log (0: none): a cursor below it
    /// cannot be continued, its client must start over (a "resync").
    pub fn changes_pruned_through(&self) -> Result<u64> {
        match self.get(Table::Meta, PRUNED_THROUGH)? {
            Some(v) => id_at(&v, 0),
            None => Ok(0),
        }
    }
}

impl Store {
    /// Drops the oldest changes so that the newest `keep` remain (at most `max` per call, one
    /// unit); answers how many went. The log thus has a horizon instead of growing for ever.
    pub fn prune_changes(&self, keep: u64, max: usize) -> Result<usize> {
        let through = self.last_change_seq().saturating_sub(keep.max(1));
        if through == 0 {
            return Ok(0);
        }
        let hi = be(through.saturating_add(1));
        let old = self.latest().scan(
            Table::ChangeseqChange,
            Bound::Unbounded,
            Bound::Excluded(&hi[..]),
            false,
            max,
        )?;
        let Some((last, _)) = old.last() else {
            return Ok(0);
        };
        let upto = id_at(last, 0)?;
        let mut unit = WriteUnit::new(Scope::Server);
        for (k, _) in &old {
            unit.remove(Table::ChangeseqChange, k);
        }
        unit.put(Table::Meta, PRUNED_THROUGH.as_bytes(), be(upto));
        self.apply(unit)?;
        Ok(old.len())
    }
}
