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

use super::{be, decode, encode, pair, Result, Store};
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

impl Store {
    /// Held while a permission setting is read, changed and written back.
    pub fn permissions_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.permissions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server-wide defaults (every flag allowed until an administrator changes them).
    pub fn global_permissions(&self) -> Result<RoomPermissions> {
        match self.setting_value.get(GLOBAL_KEY)? {
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

    pub fn set_global_permissions(&self, p: &RoomPermissions) -> Result<()> {
        let map: BTreeMap<&str, bool> = Permission::ALL
            .iter()
            .map(|&f| (f.name(), p.allows(f)))
            .collect();
        self.setting_value.insert(GLOBAL_KEY, encode(&map))?;
        Ok(())
    }

    /// The room's level (`user: None`) or one user's level in the room.
    pub fn permission_layer(
        &self,
        room_id: RoomId,
        user: Option<UserId>,
    ) -> Result<PermissionLayer> {
        let value = match user {
            None => self.roomid_permissions.get(be(room_id))?,
            Some(u) => self.roomid_userid_permissions.get(pair(room_id, u))?,
        };
        value
            .map(|v| decode("permission layer", &v))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    pub fn set_permission_layer(
        &self,
        room_id: RoomId,
        user: Option<UserId>,
        layer: &PermissionLayer,
    ) -> Result<()> {
        match (user, layer.is_empty()) {
            (None, true) => {
                self.roomid_permissions.remove(be(room_id))?;
            }
            (None, false) => {
                self.roomid_permissions.insert(be(room_id), encode(layer))?;
            }
            (Some(u), true) => {
                self.roomid_userid_permissions.remove(pair(room_id, u))?;
            }
            (Some(u), false) => {
                self.roomid_userid_permissions
                    .insert(pair(room_id, u), encode(layer))?;
            }
        }
        Ok(())
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
