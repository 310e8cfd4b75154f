//! What clients read is what was acknowledged.
//!
//! A write unit is applied to sled at once (so the next writer and the group commit see it),
//! but it is not durable until the next `fdatasync`. Until then its keys are listed here with
//! the value each had *before* the first un-durable write, and the store's durable view reads
//! through this list: a message posted a millisecond ago is invisible to history and sync
//! until it is on the device, an edit shows the old text, a delete still shows the message.
//! The group commit releases entries once the units that wrote them are durable.
//!
//! Entries are registered before the unit reaches sled, so a reader that sees the new value
//! in sled always finds the entry (or finds it already released, when the value is durable).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sled::IVec;

use super::tables::Table;

/// The un-durable writes of one key, oldest first: the unit that wrote, and the value the
/// key had just before that write (`None`: it did not exist). The first element's value is
/// what the durable view shows.
type Pending = Vec<(u64, Option<IVec>)>;

pub(crate) struct Overlay {
    tables: Vec<Mutex<BTreeMap<Vec<u8>, Pending>>>,
    /// Entries in all tables: reads skip the locks when nothing is pending.
    count: AtomicUsize,
}

impl Overlay {
    pub fn new() -> Overlay {
        Overlay {
            tables: Table::ALL
                .iter()
                .map(|_| Mutex::new(BTreeMap::new()))
                .collect(),
            count: AtomicUsize::new(0),
        }
    }

    fn table(&self, t: Table) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Pending>> {
        self.tables[t as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Unit `unit` is about to change `key`, whose current value is `old`.
    pub fn record(&self, t: Table, key: &[u8], old: Option<IVec>, unit: u64) {
        let mut map = self.table(t);
        match map.get_mut(key) {
            Some(writes) => {
                if writes.last().map(|w| w.0) != Some(unit) {
                    writes.push((unit, old));
                }
            }
            None => {
                map.insert(key.to_vec(), vec![(unit, old)]);
                self.count.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Units up to `unit` are durable: their values are what readers should see now.
    pub fn release(&self, unit: u64) {
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        for t in Table::ALL {
            let mut map = self.table(*t);
            let before = map.len();
            map.retain(|_, writes| {
                writes.retain(|w| w.0 > unit);
                !writes.is_empty()
            });
            self.count.fetch_sub(before - map.len(), Ordering::SeqCst);
        }
    }

    /// Forget everything (the database was reopened: it holds only what reached the disk).
    pub fn clear(&self) {
        for t in Table::ALL {
            let mut map = self.table(*t);
            self.count.fetch_sub(map.len(), Ordering::SeqCst);
            map.clear();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::SeqCst) == 0
    }

    /// `Some(durable value)` when `key` has an un-durable write.
    pub fn get(&self, t: Table, key: &[u8]) -> Option<Option<IVec>> {
        if self.is_empty() {
            return None;
        }
        self.table(t)
            .get(key)
            .and_then(|writes| writes.first())
            .map(|w| w.1.clone())
    }

    /// Pending keys in `[lo, hi)`-style bounds with their durable values, ascending.
    pub fn range(
        &self,
        t: Table,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
    ) -> Vec<(Vec<u8>, Option<IVec>)> {
        if self.is_empty() {
            return Vec::new();
        }
        let map = self.table(t);
        map.range::<[u8], _>((lo, hi))
            .filter_map(|(k, writes)| Some((k.clone(), writes.first()?.1.clone())))
            .collect()
    }
}

/// The last key a scan examined when it stopped at its limit (`None`: it ran to the end of
/// its range). Keys beyond it were not looked at.
pub(crate) type Covered = Option<IVec>;

/// Merges a sled scan (in iteration order: ascending, or descending when `reverse`) with the
/// overlay's pending keys of the same range (ascending), yielding the durable view, at most
/// `limit` entries, and how far the scan looked.
pub(crate) fn merge(
    scan: impl Iterator<Item = sled::Result<(IVec, IVec)>>,
    mut pending: Vec<(Vec<u8>, Option<IVec>)>,
    reverse: bool,
    limit: usize,
) -> sled::Result<(Vec<(IVec, IVec)>, Covered)> {
    if reverse {
        pending.reverse();
    }
    let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
    let mut pending = pending.into_iter().peekable();
    let mut out = Vec::new();
    let mut covered = None;
    for kv in scan {
        if out.len() >= limit {
            return Ok((out, covered));
        }
        let (k, v) = kv?;
        covered = Some(k.clone());
        // Keys deleted by an un-durable write: still there in the durable view.
        while let Some((pk, _)) = pending.peek() {
            if !before(pk, &k) {
                break;
            }
            if let Some((pk, Some(old))) = pending.next() {
                if out.len() < limit {
                    out.push((IVec::from(pk), old));
                }
            }
        }
        if out.len() >= limit {
            return Ok((out, covered));
        }
        match pending.peek() {
            Some((pk, _)) if pk.as_slice() == k.as_ref() => {
                if let Some((_, Some(old))) = pending.next() {
                    out.push((k, old));
                }
            }
            _ => out.push((k, v)),
        }
    }
    for (pk, old) in pending {
        if out.len() >= limit {
            return Ok((out, covered));
        }
        if let Some(old) = old {
            out.push((IVec::from(pk), old));
        }
    }
    Ok((out, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: u8, v: u8) -> sled::Result<(IVec, IVec)> {
        Ok((IVec::from(vec![k]), IVec::from(vec![v])))
    }

    fn keys(v: &[(IVec, IVec)]) -> Vec<(u8, u8)> {
        v.iter().map(|(k, v)| (k[0], v[0])).collect()
    }

    #[test]
    fn merge_hides_new_keys_restores_deleted_and_old_values() {
        // sled now: 1=a 3=b(new) 4=x(edited, was y); 2 was deleted (was c).
        let scan = || vec![kv(1, 10), kv(3, 30), kv(4, 40)];
        let pending = vec![
            (vec![2], Some(IVec::from(vec![20]))),
            (vec![3], None),
            (vec![4], Some(IVec::from(vec![41]))),
        ];
        let (fwd, covered) = merge(scan().into_iter(), pending.clone(), false, 10).expect("merge");
        assert_eq!(keys(&fwd), vec![(1, 10), (2, 20), (4, 41)]);
        assert_eq!(covered, None);
        let (rev, _) = merge(scan().into_iter().rev(), pending.clone(), true, 10).expect("merge");
        assert_eq!(keys(&rev), vec![(4, 41), (2, 20), (1, 10)]);
        let (limited, covered) = merge(scan().into_iter(), pending, false, 2).expect("merge");
        assert_eq!(keys(&limited), vec![(1, 10), (2, 20)]);
        assert_eq!(covered, Some(IVec::from(vec![3])));
    }

    #[test]
    fn the_durable_view_follows_each_unit_that_becomes_durable() {
        let o = Overlay::new();
        // Unit 1 writes v1 over v0, unit 2 writes v2 over v1.
        o.record(Table::Meta, b"k", Some(IVec::from(&b"v0"[..])), 1);
        o.record(Table::Meta, b"k", Some(IVec::from(&b"v1"[..])), 2);
        assert_eq!(o.get(Table::Meta, b"k"), Some(Some(IVec::from(&b"v0"[..]))));
        o.release(1);
        assert_eq!(o.get(Table::Meta, b"k"), Some(Some(IVec::from(&b"v1"[..]))));
        o.release(2);
        assert_eq!(o.get(Table::Meta, b"k"), None);
        assert!(o.is_empty());
    }
}
