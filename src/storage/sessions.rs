//! Login sessions as their owner sees them: listed with where and when they were used,
//! ended one by one or all at once, and expired after a time idle or a time in all.
//! A session is known by the SHA-256 of its id (the id itself is never stored); its public
//! handle, the `sessionKey`, is the first 12 bytes of that hash in hex: enough to name it,
//! useless to log in with.

use super::users::session_index_key;
use super::{token_hash, Reader, Result, Scope, SessionRecord, Store, Table, WriteUnit};
use crate::model::UserId;

/// When sessions end on their own.
#[derive(Debug, Clone, Copy)]
pub struct SessionLifetime {
    /// Unused this long (milliseconds), a session ends.
    pub idle_ms: u64,
    /// This long after login (milliseconds), a session ends however much it is used.
    pub max_ms: u64,
}

impl SessionLifetime {
    /// The time (ms since the epoch) `s` ends.
    pub fn expires_utc(&self, s: &SessionRecord) -> u64 {
        let seen = s.last_seen_utc.max(s.created_utc);
        seen.saturating_add(self.idle_ms)
            .min(s.created_utc.saturating_add(self.max_ms))
    }

    pub fn expired(&self, s: &SessionRecord, now: u64) -> bool {
        now >= self.expires_utc(s)
    }
}

/// How stale `last_seen_utc` may get before a request writes it again: one write per
/// session per this interval, not one per request.
pub const TOUCH_EVERY_MS: u64 = 5 * 60 * 1000;

/// The public handle of a session (see the module comment).
pub fn session_key(hash: &[u8]) -> String {
    hex::encode(&hash[..hash.len().min(12)])
}

impl Reader {
    pub fn session(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        self.get_json(Table::SessionhashSession, "session", token_hash(session_id))
    }

    /// The user's sessions: (sessionKey, record), oldest first.
    pub fn sessions_of(&self, user_id: UserId) -> Result<Vec<(String, SessionRecord)>> {
        let mut out = Vec::new();
        for (k, _) in self.prefix(Table::UseridSessionhash, &super::be(user_id))? {
            let hash = &k[8..];
            if let Some(s) =
                self.get_json::<SessionRecord>(Table::SessionhashSession, "session", hash)?
            {
                out.push((session_key(hash), s));
            }
        }
        out.sort_by_key(|(_, s)| s.created_utc);
        Ok(out)
    }
}

impl Store {
    /// Records that the session was used now (not waited for: losing it to a crash only
    /// makes the session look a little older).
    pub fn touch_session(&self, session_id: &str, now: u64) -> Result<()> {
        let hash = token_hash(session_id);
        self.apply_cas(Table::SessionhashSession, &hash, |current| {
            let Some(bytes) = current else {
                return Ok(None);
            };
            let mut s: SessionRecord = super::decode("session", &bytes)?;
            s.last_seen_utc = now;
            let mut unit = WriteUnit::new(Scope::User(s.user_id));
            unit.put_json(Table::SessionhashSession, hash, &s);
            Ok(Some((unit, ())))
        })?;
        Ok(())
    }

    /// Ends the user's session named by `key`; false if the user has no such session.
    pub fn end_session_by_key(&self, user_id: UserId, key: &str) -> Result<bool> {
        for (k, _) in self
            .latest()
            .prefix(Table::UseridSessionhash, &super::be(user_id))?
        {
            let hash = &k[8..];
            if session_key(hash) == key {
                let mut unit = WriteUnit::new(Scope::User(user_id));
                unit.remove(Table::SessionhashSession, hash);
                unit.remove(Table::UseridSessionhash, session_index_key(user_id, hash));
                self.apply(unit)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Ends every login session of the user except `keep` (a session id); how many ended.
    pub fn end_sessions_except(&self, user_id: UserId, keep: Option<&str>) -> Result<usize> {
        let keep = keep.map(token_hash);
        let mut unit = WriteUnit::new(Scope::User(user_id));
        let mut n = 0;
        for (k, _) in self
            .latest()
            .prefix(Table::UseridSessionhash, &super::be(user_id))?
        {
            if keep.as_ref().is_some_and(|h| &k[8..] == h.as_slice()) {
                continue;
            }
            unit.remove(Table::SessionhashSession, &k[8..]);
            unit.remove(Table::UseridSessionhash, k);
            n += 1;
        }
        if n > 0 {
            self.apply(unit)?;
        }
        Ok(n)
    }

    /// Ends up to `limit` expired sessions; how many ended.
    pub fn prune_sessions(
        &self,
        lifetime: SessionLifetime,
        now: u64,
        limit: usize,
    ) -> Result<usize> {
        let mut n = 0;
        for (k, v) in self.latest().all(Table::SessionhashSession)? {
            if n >= limit {
                break;
            }
            let s: SessionRecord = super::decode("session", &v)?;
            if lifetime.expired(&s, now) {
                let mut unit = WriteUnit::new(Scope::User(s.user_id));
                unit.remove(Table::SessionhashSession, &k);
                unit.remove(Table::UseridSessionhash, session_index_key(s.user_id, &k));
                self.apply(unit)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
