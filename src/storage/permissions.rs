//! Permissions at three levels, as Virola has them: server-wide defaults (administrators),
//! per room, and per user in a room. At the room and user levels an administrator may set a
//! flag either way; a moderator may only take away what the administrator allowed, never
//! grant more. The effective flags of a member are
//!
//! ```text
//! admin_value = user.set_by_admin[f] ?? room.set_by_admin[f] ?? global[f]
//! effective   = admin_value && f ∉ room.denied_by_moderator && f ∉ user.denied_by_moderator
//! ```
//!
//! Administrators and the room's moderators have every flag in the rooms they belong to.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{be, decode, encode, pair, Applied, Reader, Result, Scope, Store, Table, WriteUnit};
use crate::model::{Permission, RoomId, RoomPermissions, UserId};

const GLOBAL_KEY: &[u8] = b"global_permissions";

/// The settings of one level (a room, or one user in a room). Flags are stored by their
/// API names so a flag added later reads as "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PermissionLayer {
    /// Flags an administrator set explicitly at this level (either way).
    #[serde(default)]
    pub set_by_admin: BTreeMap<String, bool>,
    /// Flags a moderator (or administrator) took away at this level.
    #[serde(default)]
    pub denied_by_moderator: BTreeSet<String>,
}

impl PermissionLayer {
    fn admin_value(&self, p: Permission) -> Option<bool> {
        self.set_by_admin.get(p.name()).copied()
    }

    fn denies(&self, p: Permission) -> bool {
        self.denied_by_moderator.contains(p.name())
    }

    pub fn is_empty(&self) -> bool {
        self.set_by_admin.is_empty() && self.denied_by_moderator.is_empty()
    }
}

impl Reader {
    /// The server-wide defaults (every flag allowed until an administrator changes them).
    pub fn global_permissions(&self) -> Result<RoomPermissions> {
        match self.get(Table::SettingValue, GLOBAL_KEY)? {
            Some(v) => {
                // Start from all-allowed so flags unknown to an older record stay allowed.
                let stored: BTreeMap<String, bool> = decode("global permissions", &v)?;
                let mut p = RoomPermissions::all_allowed();
                for (name, allowed) in stored {
                    if let Some(flag) = Permission::from_name(&name) {
                        p.set(flag, allowed);
                    }
                }
                Ok(p)
            }
            None => Ok(RoomPermissions::all_allowed()),
        }
    }

    /// The room's level (`user: None`) or one user's level in the room.
    pub fn permission_layer(
        &self,
        room_id: RoomId,
        user: Option<UserId>,
    ) -> Result<PermissionLayer> {
        let value = match user {
            None => self.get(Table::RoomidPermissions, be(room_id))?,
            Some(u) => self.get(Table::RoomidUseridPermissions, pair(room_id, u))?,
        };
        value
            .map(|v| decode("permission layer", &v))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// What an administrator allows a plain member at the room level (user `None`) or for
    /// one user: the ceiling a moderator restricts under.
    pub fn admin_allowed(&self, room_id: RoomId, user: Option<UserId>) -> Result<RoomPermissions> {
        let room = self.permission_layer(room_id, None)?;
        let user_layer = match user {
            Some(u) => self.permission_layer(room_id, Some(u))?,
            None => PermissionLayer::default(),
        };
        self.combine(&room, &user_layer, false)
    }

    /// Global defaults overridden by the administrator's settings at the room and user
    /// levels; with `restrict`, minus what moderators took away at either level.
    fn combine(
        &self,
        room: &PermissionLayer,
        user: &PermissionLayer,
        restrict: bool,
    ) -> Result<RoomPermissions> {
        let mut p = self.global_permissions()?;
        for &f in Permission::ALL {
            if let Some(v) = user.admin_value(f).or(room.admin_value(f)) {
                p.set(f, v);
            }
            if restrict && (room.denies(f) || user.denies(f)) {
                p.set(f, false);
            }
        }
        Ok(p)
    }

    /// The effective flags of a user in a room; `None` when they are not a member.
    pub fn effective_permissions(
        &self,
        room_id: RoomId,
        user_id: UserId,
        is_admin: bool,
    ) -> Result<Option<RoomPermissions>> {
        let Some(member) = self.member(room_id, user_id)? else {
            return Ok(None);
        };
        if is_admin || member.is_moderator {
            return Ok(Some(RoomPermissions::all_allowed()));
        }
        let room = self.permission_layer(room_id, None)?;
        let user = self.permission_layer(room_id, Some(user_id))?;
        Ok(Some(self.combine(&room, &user, true)?))
    }
}

impl Store {
    /// Changes the server-wide defaults by compare-and-swap; answers the new defaults.
    pub fn update_global_permissions(
        &self,
        change: impl Fn(&mut RoomPermissions),
    ) -> Result<RoomPermissions> {
        let done = self.apply_cas(Table::SettingValue, GLOBAL_KEY, |_| {
            let mut p = self.latest().global_permissions()?;
            change(&mut p);
            let map: BTreeMap<&str, bool> = Permission::ALL
                .iter()
                .map(|&f| (f.name(), p.allows(f)))
                .collect();
            let mut unit = WriteUnit::new(Scope::Server);
            unit.put(Table::SettingValue, GLOBAL_KEY, encode(&map));
            Ok(Some((unit, p)))
        })?;
        self.shared
            .permissions_version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(done
            .map(|(_, p)| p)
            .unwrap_or_else(RoomPermissions::all_allowed))
    }

    /// Stores the room's level (`user: None`) or one user's level in the room (room
    /// scoped: the room's actor writes it).
    pub fn set_permission_layer(
        &self,
        room_id: RoomId,
        user: Option<UserId>,
        layer: &PermissionLayer,
    ) -> Result<Applied> {
        let (table, key) = match user {
            None => (Table::RoomidPermissions, be(room_id).to_vec()),
            Some(u) => (Table::RoomidUseridPermissions, pair(room_id, u).to_vec()),
        };
        let mut unit = WriteUnit::new(Scope::Room(room_id));
        if layer.is_empty() {
            unit.remove(table, key);
        } else {
            unit.put(table, key, encode(layer));
        }
        self.apply(unit)
    }
}
