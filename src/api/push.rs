//! Push devices and notification settings (Confab): `POST|GET /api/v1/push/devices`,
//! `DELETE /api/v1/push/devices/{id}`, `GET|PUT /api/v1/push/settings`,
//! `GET /api/v1/push/vapid-public-key`, `POST /api/v1/push/test`.

use actix_web::{web, HttpResponse};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use super::auth::Authed;
use super::error::ApiError;
use super::{ok_json, State};
use crate::storage::push::{
    delivery_key, DeliveryRecord, DeviceRecord, NotificationRecord, Platform, PushSettings,
    QuietHours, WebPushKeys, WebPushSubscription,
};
use crate::storage::{Table, WriteUnit};

/// Devices one user may register.
const MAX_DEVICES: usize = 20;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewDevice {
    platform: Platform,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    sandbox: bool,
    #[serde(default)]
    subscription: Option<SubscriptionBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionBody {
    endpoint: String,
    keys: KeysBody,
    /// Browsers include it in `PushSubscription.toJSON()`; not used.
    #[serde(default, rename = "expirationTime")]
    _expiration_time: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysBody {
    p256dh: String,
    auth: String,
}

fn bad(text: impl Into<String>) -> ApiError {
    ApiError::BadRequest(text.into())
}

/// A token or app id: printable, bounded.
fn check_text(name: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > max || value.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad(format!(
            "{name} must be 1-{max} printable characters without spaces"
        )));
    }
    Ok(())
}

fn device_view(d: &DeviceRecord) -> serde_json::Value {
    // Enough to tell one's devices apart; the full token stays on the server.
    let tail = |s: &str| {
        s.chars()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
    };
    json!({
        "deviceId": d.device_id,
        "platform": d.platform,
        "appId": d.app_id,
        "sandbox": d.sandbox,
        "tokenEnd": d.token.as_deref().map(tail),
        "endpointHost": d.subscription.as_ref().and_then(|s| {
            s.endpoint.split("://").nth(1).and_then(|r| r.split('/').next()).map(str::to_string)
        }),
        "createdUtc": d.created_utc,
    })
}

/// `POST /api/v1/push/devices`.
pub async fn register(
    state: State,
    auth: Authed,
    body: web::Json<NewDevice>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let subscription = match (b.platform, b.subscription) {
        (Platform::Webpush, Some(s)) => {
            let endpoint = s.endpoint.trim().to_string();
            let ok = endpoint
                .strip_prefix("https://")
                .is_some_and(|rest| !rest.is_empty() && rest.len() < 2000);
            if !ok || endpoint.parse::<awc::http::Uri>().is_err() {
                return Err(bad("subscription.endpoint must be an https:// URL"));
            }
            crate::push::webpush::check_keys(&s.keys.p256dh, &s.keys.auth).map_err(bad)?;
            Some(WebPushSubscription {
                endpoint,
                keys: WebPushKeys {
                    p256dh: s.keys.p256dh,
                    auth: s.keys.auth,
                },
            })
        }
        (Platform::Webpush, None) => {
            return Err(bad(
                "a webpush device needs subscription: {endpoint, keys: {p256dh, auth}}",
            ))
        }
        (_, Some(_)) => return Err(bad("subscription is for webpush devices only")),
        (_, None) => None,
    };
    match (&b.platform, &b.token) {
        (Platform::Fcm | Platform::Apns, Some(t)) => check_text("token", t, 4096)?,
        (Platform::Fcm | Platform::Apns, None) => {
            return Err(bad(format!("a {} device needs a token", b.platform.name())))
        }
        (Platform::Webpush, Some(_)) => return Err(bad("a webpush device has no token")),
        (Platform::Webpush, None) => {}
    }
    if let Some(a) = &b.app_id {
        check_text("appId", a, 256)?;
    }
    let user_id = auth.id();
    let existing = state.store.latest().devices_of(user_id)?;
    let device = DeviceRecord {
        device_id: rand::thread_rng().gen_range(1..(1u64 << 53)),
        user_id,
        platform: b.platform,
        token: b.token,
        app_id: b.app_id,
        sandbox: b.sandbox,
        subscription,
        session: auth
            .session_id
            .as_deref()
            .map(|s| hex::encode(crate::storage::token_hash(s))),
        created_utc: crate::now_ms(),
    };
    let same = existing.iter().any(|d| d.target() == device.target());
    if !same && existing.len() >= MAX_DEVICES {
        return Err(ApiError::Conflict(format!(
            "At most {MAX_DEVICES} push devices per user; remove one first"
        )));
    }
    let stored = state.store.register_device(device).await?;
    state.directory.set_pushable(user_id, true);
    tracing::info!(target: "confab::audit", user_id, device = stored.device_id, platform = stored.platform.name(), "push device registered");
    Ok(ok_json(json!({ "deviceId": stored.device_id })))
}

/// `GET /api/v1/push/devices`: the caller's devices.
pub async fn list(state: State, auth: Authed) -> Result<HttpResponse, ApiError> {
    let r = state.store.latest();
    let mut devices = Vec::new();
    for d in r.devices_of(auth.id())? {
        // A device whose login session ended is gone (the dispatcher removes it).
        if r.device_session_alive(&d)? {
            devices.push(device_view(&d));
        }
    }
    Ok(ok_json(json!({ "devices": devices })))
}

/// `DELETE /api/v1/push/devices/{deviceId}`: one of the caller's devices.
pub async fn unregister(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let device = state
        .store
        .latest()
        .device(id)?
        .filter(|d| d.user_id == auth.id())
        .ok_or_else(|| ApiError::NotFound(format!("Push device {id} not found")))?;
    state.store.remove_device(&device).await?;
    let left = state.store.latest().devices_of(auth.id())?;
    state.directory.set_pushable(auth.id(), !left.is_empty());
    Ok(ok_json(json!({ "deviceId": id })))
}

pub async fn settings(state: State, auth: Authed) -> Result<HttpResponse, ApiError> {
    let s = state.store.latest().push_settings(auth.id())?;
    Ok(ok_json(json!({ "settings": s })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsBody {
    #[serde(default)]
    muted_rooms: Option<Vec<u64>>,
    #[serde(default)]
    mentions_only: Option<bool>,
    /// `null` turns quiet hours off.
    #[serde(default, with = "serde_with_null")]
    quiet_hours: Option<Option<QuietHours>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
mod serde_with_null {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// `PUT /api/v1/push/settings`: the fields given replace the stored ones.
pub async fn set_settings(
    state: State,
    auth: Authed,
    body: web::Json<SettingsBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let mut s: PushSettings = state.store.latest().push_settings(auth.id())?;
    if let Some(rooms) = b.muted_rooms {
        if rooms.len() > 10_000 {
            return Err(bad("mutedRooms: at most 10000 rooms"));
        }
        s.muted_rooms = rooms;
        s.muted_rooms.sort_unstable();
        s.muted_rooms.dedup();
    }
    if let Some(m) = b.mentions_only {
        s.mentions_only = m;
    }
    if let Some(q) = b.quiet_hours {
        if let Some(q) = &q {
            if q.start_minute >= 1440
                || q.end_minute >= 1440
                || !(-720..=840).contains(&q.utc_offset_minutes)
            {
                return Err(bad(
                    "quietHours: startMinute and endMinute are 0-1439, utcOffsetMinutes -720..840",
                ));
            }
        }
        s.quiet_hours = q;
    }
    state.store.set_push_settings(auth.id(), &s).await?;
    Ok(ok_json(json!({ "settings": s })))
}

pub async fn vapid_public_key(state: State, _auth: Authed) -> Result<HttpResponse, ApiError> {
    Ok(ok_json(json!({ "publicKey": state.vapid_public_key })))
}

/// `POST /api/v1/push/test`: a test notification to each of the caller's devices.
pub async fn test(state: State, auth: Authed) -> Result<HttpResponse, ApiError> {
    let devices = state.store.latest().devices_of(auth.id())?;
    if devices.is_empty() {
        return Err(ApiError::NotFound(
            "You have no push device registered".into(),
        ));
    }
    let now = crate::now_ms();
    let mut unit = WriteUnit::new(crate::storage::Scope::User(auth.id()));
    for d in &devices {
        let record = DeliveryRecord {
            device_id: d.device_id,
            user_id: auth.id(),
            notification: NotificationRecord {
                room_id: 0,
                room_name: "Confab".into(),
                sender_name: "Confab".into(),
                count: 1,
                message_id: 0,
                text: Some("This is a test notification.".into()),
                badge: 0,
                silent: false,
            },
            attempts: 0,
            created_utc: now,
            expires_utc: now + 600_000,
        };
        let tail: u64 = rand::thread_rng().gen();
        unit.put_json(
            Table::PushDelivery,
            delivery_key(now, d.device_id, tail),
            &record,
        );
    }
    state.store.apply_durable(unit).await?;
    crate::push::dispatcher::STATS
        .queued
        .fetch_add(devices.len() as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(ok_json(json!({ "devices": devices.len() })))
}
