//! Write units: one logical write (a post with its indexes and change-log entry, a delete
//! with its comments and files, a membership change, a user update…) is one [`WriteUnit`],
//! applied atomically across the trees it touches (through the unit journal, see
//! [`super::journal`]). After a crash it is entirely there or entirely absent.
//!
//! A unit is plain data — (table, key, value) writes, preconditions, change-log entries and
//! the ids it used — scoped to one room, one user or the server, so a replicated backend
//! can later carry exactly these units.
//!
//! [`Store::apply`] applies units one at a time under one lock. That lock gives:
//! - **order**: change-log sequence numbers are assigned in apply order, so a reader never
//!   sees change N+1 without N;
//! - **preconditions and read-modify-write** (reference counts, quotas, compare-and-swap of
//!   user records, "the last administrator stays") against the latest state, atomically;
//! - **high-water marks**: every id a unit uses is below the persisted mark written in the
//!   same unit, so ids are never handed out twice, across restarts and `kill -9` (the mark
//!   moves in blocks of [`ID_BLOCK`], so few units write it);
//! - **the durable view**: the keys a unit changes are registered in the overlay (with their
//!   previous values) before sled sees them.

use sled::IVec;

use super::changes::Change;
use super::journal::Write;
use super::tables::Table;
use super::{be, encode, Reader, Result, StorageError, Store};
use crate::model::{RoomId, UserId};

/// Who a unit belongs to (the owner that orders it): a room's actor, one user's record, or
/// the server (settings, first start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Room(RoomId),
    User(UserId),
    Server,
}

/// Kinds of ids, each with its own high-water mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    User = 0,
    Room = 1,
    Message = 2,
    Attachment = 3,
}

impl IdKind {
    pub const ALL: [IdKind; 4] = [
        IdKind::User,
        IdKind::Room,
        IdKind::Message,
        IdKind::Attachment,
    ];

    /// The `meta` key of the kind's high-water mark (the next id never handed out).
    pub fn meta_key(self) -> &'static str {
        match self {
            IdKind::User => "hw_user",
            IdKind::Room => "hw_room",
            IdKind::Message => "hw_message",
            IdKind::Attachment => "hw_attachment",
        }
    }
}

/// High-water marks move this far past the id that crossed them: ids skipped by a crash
/// are never reused, and only one unit in this many writes a mark.
pub const ID_BLOCK: u64 = 1024;

type UpdateFn = Box<dyn FnOnce(Option<&[u8]>) -> Option<Vec<u8>> + Send>;
type RuleFn = Box<dyn FnOnce(&Reader) -> Result<()> + Send>;

enum Op {
    Put(Table, Vec<u8>, Vec<u8>),
    /// A key that cannot exist yet (it holds a fresh id): no need to read its old value.
    PutNew(Table, Vec<u8>, Vec<u8>),
    Remove(Table, Vec<u8>),
    /// Read-modify-write under the apply lock (counters shared between rooms).
    Update(Table, Vec<u8>, UpdateFn),
}

enum Check {
    /// The key must not exist; otherwise 409 with this text.
    Absent(Table, Vec<u8>, String),
    /// The key must still hold this value (compare-and-swap); otherwise `Stale`.
    Unchanged(Table, Vec<u8>, Option<IVec>),
    /// Any invariant, checked against the latest state.
    Rule(RuleFn),
}

#[must_use = "a unit does nothing until applied"]
pub struct WriteUnit {
    pub scope: Scope,
    ops: Vec<Op>,
    checks: Vec<Check>,
    changes: Vec<Change>,
    /// Per id kind: one past the highest id this unit uses (0: none).
    ids: [u64; 4],
}

/// What applying a unit assigned.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The unit's number in apply order (durable once the group commit passes it).
    pub unit: u64,
    /// Sequence numbers of the unit's change-log entries, in the order they were logged.
    pub change_seqs: Vec<u64>,
}

impl WriteUnit {
    pub fn new(scope: Scope) -> WriteUnit {
        WriteUnit {
            scope,
            ops: Vec::new(),
            checks: Vec::new(),
            changes: Vec::new(),
            ids: [0; 4],
        }
    }

    /// Adds another unit's writes and checks to this one (applied together).
    pub fn extend(&mut self, other: WriteUnit) {
        self.ops.extend(other.ops);
        self.checks.extend(other.checks);
        self.changes.extend(other.changes);
        for (mine, theirs) in self.ids.iter_mut().zip(other.ids) {
            *mine = (*mine).max(theirs);
        }
    }

    pub fn put(&mut self, t: Table, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) {
        self.ops
            .push(Op::Put(t, key.as_ref().to_vec(), value.into()));
    }

    /// Stores `value` as JSON.
    pub fn put_json<T: serde::Serialize>(&mut self, t: Table, key: impl AsRef<[u8]>, value: &T) {
        self.put(t, key, encode(value));
    }

    /// Like [`WriteUnit::put`] for a key made of a fresh id, which cannot exist yet.
    pub fn put_new(&mut self, t: Table, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) {
        self.ops
            .push(Op::PutNew(t, key.as_ref().to_vec(), value.into()));
    }

    pub fn remove(&mut self, t: Table, key: impl AsRef<[u8]>) {
        self.ops.push(Op::Remove(t, key.as_ref().to_vec()));
    }

    /// Computes the key's new value (`None` removes it) from its latest value, under the
    /// apply lock.
    pub fn update(
        &mut self,
        t: Table,
        key: impl AsRef<[u8]>,
        f: impl FnOnce(Option<&[u8]>) -> Option<Vec<u8>> + Send + 'static,
    ) {
        self.ops
            .push(Op::Update(t, key.as_ref().to_vec(), Box::new(f)));
    }

    /// Adds `delta` to a big-endian counter stored in the first 8 bytes of the value
    /// (the rest is kept); a counter that reaches 0 removes the key.
    pub fn add_to_counter(&mut self, t: Table, key: impl AsRef<[u8]>, delta: i64) {
        self.update(t, key, move |old| {
            let n = old
                .and_then(|o| o.get(..8))
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            let n = (i128::from(n) + i128::from(delta)).max(0) as u64;
            if n == 0 {
                return None;
            }
            let mut v = be(n).to_vec();
            if let Some(rest) = old.and_then(|o| o.get(8..)) {
                v.extend_from_slice(rest);
            }
            Some(v)
        });
    }

    pub fn require_absent(&mut self, t: Table, key: impl AsRef<[u8]>, conflict: impl Into<String>) {
        self.checks
            .push(Check::Absent(t, key.as_ref().to_vec(), conflict.into()));
    }

    /// Compare-and-swap: the unit applies only if the key still holds `expected`.
    pub fn require_unchanged(&mut self, t: Table, key: impl AsRef<[u8]>, expected: Option<IVec>) {
        self.checks
            .push(Check::Unchanged(t, key.as_ref().to_vec(), expected));
    }

    /// An invariant checked against the latest state just before the unit applies.
    pub fn require(&mut self, rule: impl FnOnce(&Reader) -> Result<()> + Send + 'static) {
        self.checks.push(Check::Rule(Box::new(rule)));
    }

    /// A change-log entry; its sequence number is assigned when the unit applies.
    pub fn log(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// Records that the unit uses `id`, so the persisted high-water mark covers it.
    pub fn uses_id(&mut self, kind: IdKind, id: u64) {
        let slot = &mut self.ids[kind as usize];
        *slot = (*slot).max(id.saturating_add(1));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.changes.is_empty()
    }
}

impl Store {
    /// A fresh id of `kind` (never handed out before, across restarts): record it in the
    /// unit that stores it with [`WriteUnit::uses_id`].
    pub fn next_id(&self, kind: IdKind) -> u64 {
        self.shared.ids[kind as usize].fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    /// Applies `unit` atomically (journaled, then written). The write is in memory, visible to
    /// the latest view and covered by the next group commit; callers acknowledge it only
    /// after [`Store::durable`].
    pub fn apply(&self, unit: WriteUnit) -> Result<Applied> {
        let shared = &self.shared;
        shared.health.check_writable()?;
        let mut state = shared.apply_state();
        let trees = shared.trees()?;
        let latest = &self.latest;
        let WriteUnit {
            ops,
            checks,
            changes,
            ids,
            ..
        } = unit;
        for check in checks {
            match check {
                Check::Absent(t, key, text) => {
                    if trees[t].contains_key(shared.blind(t, &key))? {
                        return Err(StorageError::Conflict(text));
                    }
                }
                Check::Unchanged(t, key, expected) => {
                    // Compared as the writer sees it (sealing is randomised).
                    if latest.get(t, &key)? != expected {
                        return Err(StorageError::Stale);
                    }
                }
                Check::Rule(rule) => rule(latest)?,
            }
        }
        let mut writes = Vec::with_capacity(ops.len() + changes.len() + 2);
        let stored_key = |t: Table, key: Vec<u8>| match shared.blind(t, &key) {
            std::borrow::Cow::Owned(blinded) => blinded,
            std::borrow::Cow::Borrowed(_) => key,
        };
        for op in ops {
            writes.push(match op {
                Op::Put(table, key, value) => Write {
                    table,
                    key: stored_key(table, key),
                    value: Some(value),
                    fresh: false,
                },
                Op::PutNew(table, key, value) => Write {
                    table,
                    key: stored_key(table, key),
                    value: Some(value),
                    fresh: true,
                },
                Op::Remove(table, key) => Write {
                    table,
                    key: stored_key(table, key),
                    value: None,
                    fresh: false,
                },
                Op::Update(table, key, f) => {
                    let key = stored_key(table, key);
                    // An earlier write of this unit to the key counts as its current value.
                    let pending = writes
                        .iter()
                        .rev()
                        .find(|w: &&Write| w.table == table && w.key == key)
                        .map(|w| w.value.clone());
                    let value = match pending {
                        Some(v) => f(v.as_deref()),
                        None => {
                            let current = trees[table].get(&key)?;
                            let current =
                                current.map(|v| shared.reveal(table, &key, v)).transpose()?;
                            f(current.as_deref())
                        }
                    };
                    Write {
                        table,
                        key,
                        value,
                        fresh: false,
                    }
                }
            });
        }
        let mut next_change = state.next_change;
        let mut change_seqs = Vec::with_capacity(changes.len());
        for change in &changes {
            writes.push(Write {
                table: Table::ChangeseqChange,
                key: be(next_change).to_vec(),
                value: Some(encode(change)),
                fresh: true,
            });
            change_seqs.push(next_change);
            next_change += 1;
        }
        let mut hw = state.hw;
        for kind in IdKind::ALL {
            let i = kind as usize;
            if ids[i] > hw[i] {
                hw[i] = ids[i] + ID_BLOCK;
                writes.push(Write {
                    table: Table::Meta,
                    key: kind.meta_key().as_bytes().to_vec(),
                    value: Some(be(hw[i]).to_vec()),
                    fresh: false,
                });
            }
        }
        if writes.is_empty() {
            return Ok(Applied {
                unit: state.applied,
                change_seqs,
            });
        }
        if shared.sealer.is_some() {
            for w in &mut writes {
                if let Some(v) = w.value.take() {
                    w.value = Some(shared.conceal(w.table, &w.key, v));
                }
            }
        }
        let number = state.applied + 1;
        // The durable view must hide these writes from the moment sled shows them.
        for w in &writes {
            let old = if w.fresh {
                None
            } else {
                trees[w.table].get(&w.key)?
            };
            shared.overlay.record(w.table, &w.key, old, number);
        }
        if let Err(e) = trees.apply_unit(number, &writes) {
            // sled may hold part of the unit in memory now; the overlay keeps it hidden, and
            // the database is reopened (from what reached the disk, the journal completing
            // the unit or leaving it out) before writes resume.
            shared.health.set(super::health::Fault::device(&e));
            return Err(StorageError::Db(e));
        }
        state.applied = number;
        state.next_change = next_change;
        state.hw = hw;
        Ok(Applied {
            unit: number,
            change_seqs,
        })
    }

    /// Applies a unit built from the latest value of a key, retrying when another writer
    /// changed it in between (`build` runs again on the new value): compare-and-swap.
    pub fn apply_cas<T>(
        &self,
        table: Table,
        key: &[u8],
        mut build: impl FnMut(Option<IVec>) -> Result<Option<(WriteUnit, T)>>,
    ) -> Result<Option<(Applied, T)>> {
        for _ in 0..64 {
            let current = self.latest.get(table, key)?;
            let Some((mut unit, out)) = build(current.clone())? else {
                return Ok(None);
            };
            unit.require_unchanged(table, key, current);
            match self.apply(unit) {
                Ok(applied) => return Ok(Some((applied, out))),
                Err(StorageError::Stale) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::Unavailable(
            "the record kept changing under this update; try again".into(),
        ))
    }
}
