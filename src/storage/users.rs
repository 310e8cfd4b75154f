//! Users, login sessions and Web API tokens. A user record is changed only by
//! compare-and-swap ([`Store::apply_cas`]), so concurrent updates (a suspension racing a
//! password reset) never undo each other, and "at least one active administrator" is
//! checked in the same atomic step as the change that could break it.

use super::{
    be, decode, encode, id_at, token_hash, IdKind, Reader, Result, Scope, SessionRecord,
    StorageError, Store, Table, UserRecord, WriteUnit,
};
use crate::model::{UserId, UserStatus};

impl Reader {
    pub fn user_count(&self) -> usize {
        self.shared
            .trees()
            .map(|t| t[Table::UseridUser].len())
            .unwrap_or(0)
    }

    pub fn user(&self, user_id: UserId) -> Result<Option<UserRecord>> {
        self.get_json(Table::UseridUser, "user", be(user_id))
    }

    pub fn user_by_name(&self, user_name: &str) -> Result<Option<UserRecord>> {
        match self.get(Table::UsernameUserid, user_name.to_lowercase())? {
            Some(id) => self.user(id_at(&id, 0)?),
            None => Ok(None),
        }
    }

    /// Up to `limit` users with ids above `after`, in id order.
    pub fn users_page(&self, after: UserId, limit: usize) -> Result<Vec<UserRecord>> {
        let lo = be(after.saturating_add(1));
        self.scan(
            Table::UseridUser,
            std::ops::Bound::Included(&lo[..]),
            std::ops::Bound::Unbounded,
            false,
            limit,
        )?
        .iter()
        .map(|(_, v)| decode("user", v))
        .collect()
    }

    pub fn users(&self) -> Result<Vec<UserRecord>> {
        self.all(Table::UseridUser)?
            .iter()
            .map(|(_, v)| decode("user", v))
            .collect()
    }

    /// Ids of the administrators (from their index: no scan of all users).
    pub fn admin_ids(&self) -> Result<Vec<UserId>> {
        self.all(Table::UseridAdmin)?
            .iter()
            .map(|(k, _)| id_at(k, 0))
            .collect()
    }

    pub fn session_user(&self, session_id: &str) -> Result<Option<UserId>> {
        Ok(self
            .get_json::<SessionRecord>(
                Table::SessionhashSession,
                "session",
                token_hash(session_id),
            )?
            .map(|s| s.user_id))
    }

    pub fn token_user(&self, token: &str) -> Result<Option<UserId>> {
        match self.get(Table::TokenhashUserid, token_hash(token))? {
            Some(v) => Ok(Some(id_at(&v, 0)?)),
            None => Ok(None),
        }
    }
}

/// Fails unless an active administrator other than `except` remains.
fn another_active_admin(r: &Reader, except: UserId) -> Result<()> {
    for id in r.admin_ids()? {
        if id == except {
            continue;
        }
        if r.user(id)?.is_some_and(|u| u.status == UserStatus::Active) {
            return Ok(());
        }
    }
    Err(StorageError::Conflict(
        "The last active administrator cannot be suspended or unmade; make another administrator first".into(),
    ))
}

impl Store {
    pub fn create_user(
        &self,
        user_name: &str,
        display_name: &str,
        password_hash: String,
        is_admin: bool,
    ) -> Result<UserRecord> {
        let user_id = self.next_id(IdKind::User);
        let now = crate::now_ms();
        let record = UserRecord {
            user_id,
            user_name: user_name.to_string(),
            display_name: display_name.to_string(),
            is_admin,
            status: UserStatus::Active,
            created_utc: now,
            last_modified_utc: now,
            password_hash,
            totp: None,
            status_text: String::new(),
        };
        let name_key = user_name.to_lowercase();
        let mut unit = WriteUnit::new(Scope::User(user_id));
        unit.uses_id(IdKind::User, user_id);
        unit.require_absent(
            Table::UsernameUserid,
            &name_key,
            format!("A user named '{user_name}' already exists"),
        );
        unit.put_new(Table::UsernameUserid, &name_key, be(user_id));
        unit.put_new(Table::UseridUser, be(user_id), encode(&record));
        if is_admin {
            unit.put_new(Table::UseridAdmin, be(user_id), super::EMPTY);
        }
        self.apply(unit)?;
        Ok(record)
    }

    /// Applies `change` to the latest record and stores it by compare-and-swap (retried if
    /// another writer got there first); `None` if there is no such user. `change` may refuse
    /// with an error. Taking away the last active administrator is a conflict.
    pub fn update_user(
        &self,
        user_id: UserId,
        mut change: impl FnMut(&mut UserRecord) -> Result<()>,
    ) -> Result<Option<UserRecord>> {
        let key = be(user_id);
        let done = self.apply_cas(Table::UseridUser, &key, |current| {
            let Some(bytes) = current else {
                return Ok(None);
            };
            let old: UserRecord = decode("user", &bytes)?;
            let mut record = old.clone();
            change(&mut record)?;
            record.last_modified_utc = crate::now_ms();
            let mut unit = WriteUnit::new(Scope::User(user_id));
            unit.put(Table::UseridUser, key, encode(&record));
            if record.is_admin != old.is_admin {
                if record.is_admin {
                    unit.put(Table::UseridAdmin, key, []);
                } else {
                    unit.remove(Table::UseridAdmin, key);
                }
            }
            let was_active_admin = old.is_admin && old.status == UserStatus::Active;
            let is_active_admin = record.is_admin && record.status == UserStatus::Active;
            if was_active_admin && !is_active_admin {
                unit.require(move |r| another_active_admin(r, user_id));
            }
            Ok(Some((unit, record)))
        })?;
        Ok(done.map(|(_, record)| record))
    }

    /// Ends every login session of the user. Web API tokens stay.
    pub fn delete_sessions_of(&self, user_id: UserId) -> Result<usize> {
        let mut unit = WriteUnit::new(Scope::User(user_id));
        let mut n = 0;
        for (k, _) in self
            .latest()
            .prefix(Table::UseridSessionhash, &be(user_id))?
        {
            unit.remove(Table::SessionhashSession, &k[8..]);
            unit.remove(Table::UseridSessionhash, k);
            n += 1;
        }
        if n > 0 {
            self.apply(unit)?;
        }
        Ok(n)
    }

    pub fn create_session(&self, user_id: UserId, session_id: &str) -> Result<()> {
        self.create_session_from(user_id, session_id, String::new(), String::new())
    }

    /// A new login session, noting where it came from (shown to its owner).
    pub fn create_session_from(
        &self,
        user_id: UserId,
        session_id: &str,
        address: String,
        client: String,
    ) -> Result<()> {
        let now = crate::now_ms();
        let record = SessionRecord {
            user_id,
            created_utc: now,
            last_seen_utc: now,
            address,
            client,
        };
        let mut unit = WriteUnit::new(Scope::User(user_id));
        let hash = token_hash(session_id);
        unit.put_json(Table::SessionhashSession, hash, &record);
        unit.put(
            Table::UseridSessionhash,
            session_index_key(user_id, &hash),
            super::EMPTY,
        );
        self.apply(unit)?;
        Ok(())
    }

    /// Ends one session; false if it did not exist.
    pub fn delete_session(&self, session_id: &str) -> Result<bool> {
        let key = token_hash(session_id);
        let Some(v) = self.latest().get(Table::SessionhashSession, key)? else {
            return Ok(false);
        };
        let user = decode::<SessionRecord>("session", &v)?.user_id;
        let mut unit = WriteUnit::new(Scope::User(user));
        unit.remove(Table::SessionhashSession, key);
        unit.remove(Table::UseridSessionhash, session_index_key(user, &key));
        self.apply(unit)?;
        Ok(true)
    }

    /// Gives the user a new user name (unique, case-insensitively); `None` if there is no
    /// such user. The old name is free again.
    pub fn rename_user(&self, user_id: UserId, new_name: &str) -> Result<Option<UserRecord>> {
        let key = be(user_id);
        let new_key = new_name.to_lowercase();
        let done = self.apply_cas(Table::UseridUser, &key, |current| {
            let Some(bytes) = current else {
                return Ok(None);
            };
            let mut record: UserRecord = decode("user", &bytes)?;
            let old_key = record.user_name.to_lowercase();
            record.user_name = new_name.to_string();
            record.last_modified_utc = crate::now_ms();
            let mut unit = WriteUnit::new(Scope::User(user_id));
            if old_key != new_key {
                unit.require_absent(
                    Table::UsernameUserid,
                    &new_key,
                    format!("A user named '{new_name}' already exists"),
                );
                unit.remove(Table::UsernameUserid, &old_key);
                unit.put_new(Table::UsernameUserid, &new_key, key);
            }
            unit.put(Table::UseridUser, key, encode(&record));
            Ok(Some((unit, record)))
        })?;
        Ok(done.map(|(_, record)| record))
    }

    /// Revokes the user's Web API token, if they have one.
    pub fn revoke_api_token(&self, user_id: UserId) -> Result<()> {
        let key = be(user_id);
        self.apply_cas(Table::UseridTokenhash, &key, |old| {
            let Some(old) = old else {
                return Ok(None);
            };
            let mut unit = WriteUnit::new(Scope::User(user_id));
            unit.remove(Table::TokenhashUserid, old);
            unit.remove(Table::UseridTokenhash, key);
            Ok(Some((unit, ())))
        })?;
        Ok(())
    }

    /// Stores a new Web API token for the user, revoking the previous one.
    pub fn replace_api_token(&self, user_id: UserId, token: &str) -> Result<()> {
        let hash = token_hash(token);
        let key = be(user_id);
        self.apply_cas(Table::UseridTokenhash, &key, |old| {
            let mut unit = WriteUnit::new(Scope::User(user_id));
            if let Some(old) = old {
                unit.remove(Table::TokenhashUserid, old);
            }
            unit.put(Table::TokenhashUserid, hash, key);
            unit.put(Table::UseridTokenhash, key, hash);
            Ok(Some((unit, ())))
        })?;
        Ok(())
    }
}

/// `userid_sessionhash` key: the user, then the session's hash.
pub(crate) fn session_index_key(user_id: UserId, hash: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + hash.len());
    key.extend_from_slice(&be(user_id));
    key.extend_from_slice(hash);
    key
}
