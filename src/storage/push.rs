//! Push notifications at rest: the devices users register, their notification settings,
//! and the persistent queue the push dispatcher works from.
//!
//! The queue has two stages. A **job** (one per message and recipient) is written in the
//! same unit as the message that causes it, so a message and its notifications are stored
//! together or not at all. The dispatcher turns a user's ready jobs into one coalesced
//! notification and one **delivery** per device, again in one unit (jobs out, deliveries
//! in); a delivery leaves the queue when its provider accepted it, when its device is gone,
//! or when it expires. Keys start with a time (ms, big-endian), so the oldest come first:
//! jobs by creation, deliveries by their next attempt.

use serde::{Deserialize, Serialize};

use super::{be, decode, pair, Applied, Reader, Result, Scope, Store, Table, WriteUnit};
use crate::model::{MessageId, RoomId, UserId};
use std::ops::Bound;

/// A push service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Fcm,
    Apns,
    Webpush,
}

impl Platform {
    pub fn name(self) -> &'static str {
        match self {
            Platform::Fcm => "fcm",
            Platform::Apns => "apns",
            Platform::Webpush => "webpush",
        }
    }
}

/// A browser's push subscription (the `PushSubscription` JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebPushSubscription {
    pub endpoint: String,
    pub keys: WebPushKeys,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebPushKeys {
    pub p256dh: String,
    pub auth: String,
}

/// A registered push target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    pub device_id: u64,
    pub user_id: UserId,
    pub platform: Platform,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(default)]
    pub sandbox: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<WebPushSubscription>,
    /// The login session that registered it (hex of its hash): when that session ends the
    /// device gets nothing more and is removed. None when registered with a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub created_utc: u64,
}

impl DeviceRecord {
    /// What makes two registrations the same device (the same target twice).
    pub fn target(&self) -> (&Platform, Option<&str>, Option<&str>) {
        (
            &self.platform,
            self.token.as_deref(),
            self.subscription.as_ref().map(|s| s.endpoint.as_str()),
        )
    }
}

/// Why a user is notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobKind {
    /// A message they did not see.
    Message,
    /// They read on some device: update the badge everywhere, silently.
    Badge,
}

/// One message for one recipient (or a badge update), waiting to be coalesced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushJob {
    pub kind: JobKind,
    pub user_id: UserId,
    pub room_id: RoomId,
    pub message_id: MessageId,
    pub sender_id: UserId,
    /// The message names the recipient (`@name`).
    #[serde(default)]
    pub mention: bool,
    /// A private (two-person) room.
    #[serde(default)]
    pub private_room: bool,
    pub created_utc: u64,
}

/// What a device is told: never the text unless the operator opted in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    pub room_id: RoomId,
    pub room_name: String,
    pub sender_name: String,
    /// Messages this notification stands for.
    pub count: u64,
    /// The newest of them.
    pub message_id: MessageId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Unread messages of the user in all rooms (the app's badge).
    pub badge: u64,
    /// A badge update or a quiet-hours notification: no sound, no banner.
    #[serde(default)]
    pub silent: bool,
}

/// One notification on its way to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    pub device_id: u64,
    pub user_id: UserId,
    pub notification: NotificationRecord,
    pub attempts: u32,
    pub created_utc: u64,
    pub expires_utc: u64,
}

/// A user's notification settings (extension).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushSettings {
    /// Rooms that notify nothing.
    #[serde(default)]
    pub muted_rooms: Vec<RoomId>,
    /// Only messages that mention the user, and private rooms.
    #[serde(default)]
    pub mentions_only: bool,
    /// Notifications in this span arrive silently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuietHours {
    /// Minutes after local midnight (0–1439).
    pub start_minute: u32,
    pub end_minute: u32,
    /// The user's offset from UTC, in minutes (−720…840).
    #[serde(default)]
    pub utc_offset_minutes: i32,
}

impl QuietHours {
    /// Whether `now_ms` (UTC) falls inside, in the user's local time.
    pub fn contains(&self, now_ms: u64) -> bool {
        let local = (now_ms / 60_000) as i64 + i64::from(self.utc_offset_minutes);
        let minute = local.rem_euclid(1440) as u32;
        if self.start_minute <= self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute)
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }
}

/// The queue key of a job: creation time ‖ message ‖ user.
pub fn job_key(job: &PushJob) -> Vec<u8> {
    let mut k = be(job.created_utc).to_vec();
    k.extend_from_slice(&pair(job.message_id, job.user_id));
    k.push(match job.kind {
        JobKind::Message => b'm',
        JobKind::Badge => b'b',
    });
    k
}

/// The queue key of a delivery: next attempt time ‖ device ‖ a unique tail.
pub fn delivery_key(next_attempt_ms: u64, device_id: u64, tail: u64) -> Vec<u8> {
    let mut k = be(next_attempt_ms).to_vec();
    k.extend_from_slice(&pair(device_id, tail));
    k
}

/// The time a delivery key is due.
pub fn delivery_due(key: &[u8]) -> u64 {
    super::id_at(key, 0).unwrap_or(0)
}

/// Adds the jobs to a unit (the post that causes them).
pub fn enqueue_jobs(unit: &mut WriteUnit, jobs: &[PushJob]) {
    for job in jobs {
        unit.put_json(Table::PushJob, job_key(job), job);
    }
}

impl Reader {
    pub fn device(&self, device_id: u64) -> Result<Option<DeviceRecord>> {
        self.get_json(Table::DeviceidDevice, "device", be(device_id))
    }

    /// Whether the login session that registered `device` still exists (registered with
    /// a token: always).
    pub fn device_session_alive(&self, device: &DeviceRecord) -> Result<bool> {
        match &device.session {
            None => Ok(true),
            Some(hash) => match hex::decode(hash) {
                Ok(h) => self.contains(Table::SessionhashSession, h),
                Err(_) => Ok(false),
            },
        }
    }

    /// A user's devices, oldest first.
    pub fn devices_of(&self, user_id: UserId) -> Result<Vec<DeviceRecord>> {
        let mut out = Vec::new();
        for (k, _) in self.prefix(Table::UseridDeviceid, &be(user_id))? {
            let device = super::id_at(&k, 8)?;
            if let Some(d) = self.device(device)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Every user with at least one device (the room actors' filter, built at start).
    pub fn users_with_devices(&self) -> Result<std::collections::HashSet<UserId>> {
        let mut out = std::collections::HashSet::new();
        for (k, _) in self.all(Table::UseridDeviceid)? {
            out.insert(super::id_at(&k, 0)?);
        }
        Ok(out)
    }

    pub fn push_settings(&self, user_id: UserId) -> Result<PushSettings> {
        Ok(self
            .get_json(Table::UseridPushsettings, "push settings", be(user_id))?
            .unwrap_or_default())
    }

    /// Up to `limit` jobs, oldest first.
    pub fn push_jobs(&self, limit: usize) -> Result<Vec<(Vec<u8>, PushJob)>> {
        self.scan(
            Table::PushJob,
            Bound::Unbounded,
            Bound::Unbounded,
            false,
            limit,
        )?
        .into_iter()
        .map(|(k, v)| Ok((k.to_vec(), decode("push job", &v)?)))
        .collect()
    }

    /// Up to `limit` deliveries due at `now_ms`, the most overdue first.
    pub fn due_deliveries(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, DeliveryRecord)>> {
        let end = be(now_ms.saturating_add(1));
        self.scan(
            Table::PushDelivery,
            Bound::Unbounded,
            Bound::Excluded(&end[..]),
            false,
            limit,
        )?
        .into_iter()
        .map(|(k, v)| Ok((k.to_vec(), decode("push delivery", &v)?)))
        .collect()
    }

    /// Jobs and deliveries waiting (counted at start; the dispatcher keeps the count).
    pub fn push_queue_len(&self) -> Result<(u64, u64)> {
        Ok((
            self.count_latest(Table::PushJob)?,
            self.count_latest(Table::PushDelivery)?,
        ))
    }
}

impl Store {
    /// Registers a device; the same target registered again by the same user replaces the
    /// old record (keeping its id). Returns the device as stored.
    pub async fn register_device(&self, mut device: DeviceRecord) -> Result<DeviceRecord> {
        let existing = self
            .latest()
            .devices_of(device.user_id)?
            .into_iter()
            .find(|d| d.target() == device.target());
        let mut unit = WriteUnit::new(Scope::Server);
        if let Some(old) = existing {
            device.device_id = old.device_id;
            device.created_utc = old.created_utc;
        } else {
            unit.require_absent(
                Table::DeviceidDevice,
                be(device.device_id),
                "device id taken; try again",
            );
        }
        unit.put_json(Table::DeviceidDevice, be(device.device_id), &device);
        unit.put(
            Table::UseridDeviceid,
            pair(device.user_id, device.device_id),
            Vec::new(),
        );
        self.apply_durable(unit).await?;
        Ok(device)
    }

    /// Removes a device (its deliveries are dropped when the dispatcher reaches them).
    pub fn remove_device_unit(device: &DeviceRecord) -> WriteUnit {
        let mut unit = WriteUnit::new(Scope::Server);
        unit.remove(Table::DeviceidDevice, be(device.device_id));
        unit.remove(
            Table::UseridDeviceid,
            pair(device.user_id, device.device_id),
        );
        unit
    }

    pub async fn remove_device(&self, device: &DeviceRecord) -> Result<Applied> {
        self.apply_durable(Self::remove_device_unit(device)).await
    }

    pub async fn set_push_settings(
        &self,
        user_id: UserId,
        settings: &PushSettings,
    ) -> Result<Applied> {
        let mut unit = WriteUnit::new(Scope::Server);
        unit.put_json(Table::UseridPushsettings, be(user_id), settings);
        self.apply_durable(unit).await
    }
}

#[cfg(test)]
mod tests {
    use super::QuietHours;

    #[test]
    fn quiet_hours_wrap_midnight_in_local_time() {
        let at = |h: u64, m: u64| (h * 60 + m) * 60_000;
        let night = QuietHours {
            start_minute: 22 * 60,
            end_minute: 7 * 60,
            utc_offset_minutes: 0,
        };
        assert!(night.contains(at(23, 0)));
        assert!(night.contains(at(3, 30)));
        assert!(!night.contains(at(7, 0)));
        assert!(!night.contains(at(12, 0)));
        // 21:30 UTC is 23:30 at UTC+2, inside; 05:30 UTC is 07:30 there, outside.
        let east = QuietHours {
            utc_offset_minutes: 120,
            ..night.clone()
        };
        assert!(east.contains(at(21, 30)));
        assert!(!east.contains(at(5, 30)));
        let lunch = QuietHours {
            start_minute: 12 * 60,
            end_minute: 13 * 60,
            utc_offset_minutes: -60,
        };
        assert!(lunch.contains(at(13, 30)));
        assert!(!lunch.contains(at(12, 30)));
    }
}
