//! Apple Push Notification service over HTTP/2 with a provider token: an ES256 JWT made
//! from the `.p8` key (key id, team id), renewed about every 50 minutes and never more
//! often than every 20 (Apple refuses tokens renewed too often). One HTTP/2 connection per
//! host carries the requests.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{classify_status, collapse_key, notification_body, Outcome};
use crate::storage::push::{DeviceRecord, NotificationRecord};

const RENEW_AFTER: Duration = Duration::from_secs(50 * 60);
const RENEW_AT_MOST_EVERY: Duration = Duration::from_secs(20 * 60);

pub struct Apns {
    http: awc::Client,
    /// Every device uses it when given (a test server, a proxy).
    url: Option<String>,
    key: jsonwebtoken::EncodingKey,
    key_id: String,
    team_id: String,
    topic: Option<String>,
    token: RefCell<Option<(String, Instant)>>,
}

impl Apns {
    pub fn new(
        http: awc::Client,
        url: Option<String>,
        key_path: &std::path::Path,
        key_id: &str,
        team_id: &str,
        topic: Option<String>,
    ) -> Result<Apns, String> {
        let pem = std::fs::read(key_path)
            .map_err(|e| format!("--push-apns-key {}: {e}", key_path.display()))?;
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).map_err(|e| {
            format!(
                "--push-apns-key {}: not an EC (.p8) key: {e}",
                key_path.display()
            )
        })?;
        Ok(Apns {
            http,
            url,
            key,
            key_id: key_id.to_string(),
            team_id: team_id.to_string(),
            topic,
            token: RefCell::new(None),
        })
    }

    /// The provider token, renewed after 50 minutes (or when refused, if it is at least
    /// 20 minutes old).
    fn provider_token(&self, refused: bool) -> Result<String, Outcome> {
        if let Some((token, made)) = self.token.borrow().as_ref() {
            let age = made.elapsed();
            if age < RENEW_AFTER && !(refused && age >= RENEW_AT_MOST_EVERY) {
                return Ok(token.clone());
            }
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = json!({ "iss": self.team_id, "iat": crate::now_ms() / 1000 });
        let token = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| Outcome::Failed(format!("APNs provider token: {e}")))?;
        *self.token.borrow_mut() = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    pub async fn send(
        &self,
        device: &DeviceRecord,
        n: &NotificationRecord,
        expires_utc: u64,
    ) -> Outcome {
        let Some(token) = device.token.as_deref() else {
            return Outcome::Gone("an APNs device without a token".into());
        };
        let Some(topic) = device.app_id.clone().or_else(|| self.topic.clone()) else {
            return Outcome::Failed(
                "an APNs device without an appId, and no --push-apns-topic".into(),
            );
        };
        let base = match (&self.url, device.sandbox) {
            (Some(u), _) => u.as_str(),
            (None, true) => super::APNS_SANDBOX_URL,
            (None, false) => super::APNS_URL,
        };
        let refused = false;
        let provider = match self.provider_token(refused) {
            Ok(t) => t,
            Err(o) => return o,
        };
        let mut payload = json!({
            "roomId": n.room_id,
            "messageId": n.message_id,
            "count": n.count,
        });
        if n.silent {
            payload["aps"] = json!({ "content-available": 1, "badge": n.badge });
        } else {
            let (title, body) = notification_body(n);
            payload["aps"] = json!({
                "alert": { "title": title, "body": body },
                "badge": n.badge,
                "sound": "default",
                "thread-id": collapse_key(n),
            });
        }
        let req = self
            .http
            .post(format!("{base}/3/device/{token}"))
            .insert_header(("authorization", format!("bearer {provider}")))
            .insert_header(("apns-topic", topic))
            .insert_header((
                "apns-push-type",
                if n.silent { "background" } else { "alert" },
            ))
            .insert_header(("apns-priority", if n.silent { "5" } else { "10" }))
            .insert_header(("apns-expiration", (expires_utc / 1000).to_string()))
            .insert_header(("apns-collapse-id", collapse_key(n)));
        let a = match super::answer(req.send_json(&payload), "APNs").await {
            Ok(a) => a,
            Err(o) => return o,
        };
        let status = a.status;
        let reason = serde_json::from_slice::<Value>(&a.body)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_string))
            .unwrap_or_default();
        match (status, reason.as_str()) {
            (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
                Outcome::Gone(format!("APNs: {status} {reason}"))
            }
            (403, "ExpiredProviderToken" | "InvalidProviderToken") => {
                // Renewed at the next send if old enough (Apple limits renewals).
                let _ = self.provider_token(true);
                Outcome::Retry {
                    after: None,
                    why: format!("APNs: {reason}"),
                }
            }
            _ => classify_status(status, &a.headers, &reason)
                .unwrap_or_else(|| Outcome::Failed(format!("APNs answered {status} {reason}"))),
        }
    }
}
