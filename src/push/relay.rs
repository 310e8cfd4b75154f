//! Relay mode (`--push-relay-url`): FCM and APNs notifications are posted to a relay the
//! app's publisher runs, which holds the provider credentials. Same outcomes as a
//! provider: 2xx sent, 404/410 the device is gone, 429/5xx retried.

use serde_json::json;

use super::{classify_status, notification_body, notification_data, Outcome};
use crate::storage::push::{DeviceRecord, NotificationRecord};

pub struct Relay {
    http: awc::Client,
    url: String,
}

impl Relay {
    pub fn new(http: awc::Client, url: String) -> Relay {
        Relay { http, url }
    }

    pub async fn send(
        &self,
        device: &DeviceRecord,
        n: &NotificationRecord,
        expires_utc: u64,
    ) -> Outcome {
        let (title, body) = notification_body(n);
        let request = json!({
            "platform": device.platform.name(),
            "token": device.token,
            "appId": device.app_id,
            "sandbox": device.sandbox,
            "expiresUtc": expires_utc,
            "collapseKey": super::collapse_key(n),
            "notification": if n.silent { serde_json::Value::Null } else {
                json!({ "title": title, "body": body })
            },
            "data": notification_data(n),
        });
        let mut resp = match self.http.post(&self.url).send_json(&request).await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    why: format!("push relay: {e}"),
                }
            }
        };
        let status = resp.status().as_u16();
        let text = String::from_utf8_lossy(&resp.body().limit(16 << 10).await.unwrap_or_default())
            .into_owned();
        match status {
            404 | 410 => Outcome::Gone(format!("push relay: device gone ({status})")),
            _ => classify_status(status, resp.headers(), &text).unwrap_or_else(|| {
                Outcome::Failed(format!("push relay answered {status}: {text}"))
            }),
        }
    }
}
