//! Push notifications for members who are not connected: FCM (Android), APNs (iOS), Web
//! Push (browsers), or a relay in front of the first two.
//!
//! - [`dispatcher`]: the supervised actor that works through the persistent queue
//!   (`storage::push`): coalesces a user's jobs into one notification per device, sends,
//!   retries with back-off, removes dead devices, drops what expired.
//! - [`fcm`], [`apns`], [`webpush`], [`relay`]: one provider each; every send ends in an
//!   [`Outcome`] the dispatcher acts on.
//! - [`client`]: the HTTPS client they share (HTTP/2 where the provider offers it, the
//!   operator's extra CA).

pub mod apns;
pub mod client;
pub mod dispatcher;
pub mod fcm;
pub mod relay;
pub mod webpush;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::storage::push::NotificationRecord;

/// The push settings of the server (`--push-…`).
#[derive(Debug, Clone, Default)]
pub struct PushConfig {
    pub fcm_service_account: Option<PathBuf>,
    pub fcm_url: String,
    pub apns_key: Option<PathBuf>,
    pub apns_key_id: Option<String>,
    pub apns_team_id: Option<String>,
    pub apns_topic: Option<String>,
    /// Given: every APNs device uses it. None: production, or sandbox for sandbox devices.
    pub apns_url: Option<String>,
    pub relay_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub include_content: bool,
    pub coalesce: Duration,
    pub ttl: Duration,
    pub queue_max: u64,
}

pub const FCM_URL: &str = "https://fcm.googleapis.com";
pub const APNS_URL: &str = "https://api.push.apple.com";
pub const APNS_SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";

fn https_url(flag: &str, url: &str) -> Result<String, String> {
    let u = url.trim().trim_end_matches('/');
    match u.split_once("://") {
        Some(("https", rest)) if !rest.is_empty() => Ok(u.to_string()),
        _ => Err(format!("{flag}: '{url}' is not an https:// URL")),
    }
}

impl PushConfig {
    pub fn from_args(a: &crate::config::ServerArgs) -> Result<PushConfig, String> {
        let apns_parts = [
            a.push_apns_key.is_some(),
            a.push_apns_key_id.is_some(),
            a.push_apns_team_id.is_some(),
        ];
        if apns_parts.iter().any(|&p| p) && !apns_parts.iter().all(|&p| p) {
            return Err(
                "APNs needs --push-apns-key, --push-apns-key-id and --push-apns-team-id together"
                    .into(),
            );
        }
        Ok(PushConfig {
            fcm_service_account: a.push_fcm_service_account.clone(),
            fcm_url: https_url(
                "--push-fcm-url",
                a.push_fcm_url.as_deref().unwrap_or(FCM_URL),
            )?,
            apns_key: a.push_apns_key.clone(),
            apns_key_id: a.push_apns_key_id.clone(),
            apns_team_id: a.push_apns_team_id.clone(),
            apns_topic: a.push_apns_topic.clone(),
            apns_url: a
                .push_apns_url
                .as_deref()
                .map(|u| https_url("--push-apns-url", u))
                .transpose()?,
            relay_url: a
                .push_relay_url
                .as_deref()
                .map(|u| https_url("--push-relay-url", u))
                .transpose()?,
            ca_file: a.push_ca_file.clone(),
            include_content: a.push_include_content,
            coalesce: Duration::from_millis(a.push_coalesce_ms.min(60_000)),
            ttl: Duration::from_secs(a.push_ttl_secs.clamp(60, 28 * 86_400)),
            queue_max: a.push_queue_max.max(100),
        })
    }
}

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider took it.
    Sent,
    /// Try again later (after `after` when the provider said so).
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// The device is gone for good (unregistered, bad token): remove it.
    Gone(String),
    /// This notification cannot be sent (not configured, refused as malformed): drop it.
    Failed(String),
}

/// Counters of the dispatcher (server-health `push`, the metrics).
#[derive(Debug, Default)]
pub struct PushStats {
    pub queued: AtomicU64,
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    pub devices_removed: AtomicU64,
    /// Dropped because the queue was full or they expired.
    pub dropped: AtomicU64,
}

impl PushStats {
    pub fn to_json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "queued": g(&self.queued),
            "sent": g(&self.sent),
            "retried": g(&self.retried),
            "failed": g(&self.failed),
            "devicesRemoved": g(&self.devices_removed),
            "dropped": g(&self.dropped),
        })
    }
}

/// The text a notification shows (no message text unless the operator opted in).
pub fn notification_body(n: &NotificationRecord) -> (String, String) {
    let title = n.room_name.clone();
    let body = match (&n.text, n.count) {
        (Some(text), 1) => format!("{}: {text}", n.sender_name),
        (_, 1) => format!("New message from {}", n.sender_name),
        (_, count) => format!("{count} new messages, the last from {}", n.sender_name),
    };
    (title, body)
}

/// The data fields every provider carries (strings, as FCM requires).
pub fn notification_data(n: &NotificationRecord) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("roomId".into(), n.room_id.to_string().into());
    m.insert("messageId".into(), n.message_id.to_string().into());
    m.insert("count".into(), n.count.to_string().into());
    m.insert("badge".into(), n.badge.to_string().into());
    m
}

/// The collapse key of a room's notifications: a newer one replaces an older one.
pub fn collapse_key(n: &NotificationRecord) -> String {
    format!("room-{}", n.room_id)
}

/// What a provider answered: the status, the headers, the start of the body.
pub struct ProviderAnswer {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl ProviderAnswer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(300)
            .collect()
    }

    /// 404/410: the device is gone; otherwise the shared classes, else a failure.
    pub fn outcome_404_gone(&self, provider: &str) -> Outcome {
        match self.status {
            404 | 410 => Outcome::Gone(format!("{provider}: device gone ({})", self.status)),
            s => classify_status(s, &self.headers, &self.text()).unwrap_or_else(|| {
                Outcome::Failed(format!("{provider} answered {s}: {}", self.text()))
            }),
        }
    }
}

/// Sends a request to a provider; a failure to reach it is a retry.
pub async fn answer(
    sent: awc::SendClientRequest,
    provider: &str,
) -> Result<ProviderAnswer, Outcome> {
    let mut resp = sent.await.map_err(|e| Outcome::Retry {
        after: None,
        why: format!("{provider}: {e}"),
    })?;
    let body = resp.body().limit(64 << 10).await.unwrap_or_default();
    Ok(ProviderAnswer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body,
    })
}

/// The `Retry-After` header in seconds (the HTTP-date form is rare here and read as absent).
pub fn retry_after(headers: &awc::http::header::HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)))
}

/// The outcome of an HTTP answer for the classes every provider shares.
pub fn classify_status(
    status: u16,
    headers: &awc::http::header::HeaderMap,
    body: &str,
) -> Option<Outcome> {
    match status {
        200..=299 => Some(Outcome::Sent),
        429 | 500..=599 => Some(Outcome::Retry {
            after: retry_after(headers),
            why: format!("{status} {}", body.chars().take(200).collect::<String>()),
        }),
        _ => None,
    }
}
