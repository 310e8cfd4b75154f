//! Idempotency keys (extension, in the style of Matrix transaction ids and the
//! `Idempotency-Key` header): a client may send a key with a post, comment or upload; the
//! result is stored with the write, in the same unit, so a retry with the same key from the
//! same user within 24 hours gets the first answer instead of a second message. After a
//! timeout or a crash, a client learns whether its write was stored by retrying.

use serde::{Deserialize, Serialize};

use super::{be, decode, id_at, Reader, Result, Scope, Store, Table, WriteUnit, EMPTY};
use crate::model::{MessageId, RoomId, UserId};

/// How long a key is remembered.
pub const KEY_LIFETIME_MS: u64 = 24 * 3600 * 1000;

/// A validated key of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub user_id: UserId,
    pub key: String,
}

/// What the first request with a key produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum IdempotentResult {
    #[serde(rename_all = "camelCase")]
    Message {
        room_id: RoomId,
        message_id: MessageId,
    },
    #[serde(rename_all = "camelCase")]
    Attachments {
        message_id: MessageId,
        attachment_ids: Vec<u64>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    created_utc: u64,
    result: IdempotentResult,
}

impl IdempotencyKey {
    /// `Err(reason)` unless the key is 1–128 printable ASCII characters.
    pub fn parse(user_id: UserId, key: &str) -> std::result::Result<Self, String> {
        if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err("Idempotency-Key must be 1-128 printable ASCII characters".into());
        }
        Ok(IdempotencyKey {
            user_id,
            key: key.to_string(),
        })
    }

    fn db_key(&self) -> Vec<u8> {
        let mut k = be(self.user_id).to_vec();
        k.extend_from_slice(self.key.as_bytes());
        k
    }

    /// Adds the key and its result to the unit that makes the write; the unit fails with a
    /// conflict if another request took the key meanwhile.
    pub fn record(&self, unit: &mut WriteUnit, result: &IdempotentResult) {
        let now = crate::now_ms();
        let key = self.db_key();
        let this = self.clone();
        unit.require(move |r| match r.idempotent_result(&this)? {
            Some(_) => Err(super::StorageError::Conflict(
                "This Idempotency-Key was just used by another request; retry to get its answer"
                    .into(),
            )),
            None => Ok(()),
        });
        unit.put_json(
            Table::UseridIdemkeyResult,
            &key,
            &Stored {
                created_utc: now,
                result: result.clone(),
            },
        );
        let mut time_key = be(now).to_vec();
        time_key.extend_from_slice(&key);
        unit.put(Table::IdemtimeUseridKey, time_key, EMPTY);
    }
}

impl Reader {
    /// The result stored under the key, if it is younger than 24 hours.
    pub fn idempotent_result(&self, key: &IdempotencyKey) -> Result<Option<IdempotentResult>> {
        let Some(v) = self.get(Table::UseridIdemkeyResult, key.db_key())? else {
            return Ok(None);
        };
        let stored: Stored = decode("idempotency key", &v)?;
        if crate::now_ms().saturating_sub(stored.created_utc) > KEY_LIFETIME_MS {
            return Ok(None);
        }
        Ok(Some(stored.result))
    }
}

impl Store {
    /// Forgets keys older than 24 hours (at most `max` of them); returns how many.
    pub fn prune_idempotency_keys(&self, max: usize) -> Result<usize> {
        let cutoff = crate::now_ms().saturating_sub(KEY_LIFETIME_MS);
        let old = self.latest().scan(
            Table::IdemtimeUseridKey,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Excluded(&be(cutoff)[..]),
            false,
            max,
        )?;
        if old.is_empty() {
            return Ok(0);
        }
        let mut unit = WriteUnit::new(Scope::Server);
        for (k, _) in &old {
            unit.remove(Table::IdemtimeUseridKey, k);
            let user_key = &k[8..];
            // Only if the key was not taken again since (a newer entry has a newer time).
            if let Some(v) = self.latest().get(Table::UseridIdemkeyResult, user_key)? {
                if decode::<Stored>("idempotency key", &v)?.created_utc == id_at(k, 0)? {
                    unit.remove(Table::UseridIdemkeyResult, user_key);
                }
            }
        }
        self.apply(unit)?;
        Ok(old.len())
    }
}
