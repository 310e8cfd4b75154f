//! Relay mode (`--push-relay-url`): FCM and APNs notifications are posted to a relay the
//! app's publisher runs, which holds the provider credentials. Same outcomes as a
//! provider: 2xx sent, 404/410 the device is gone, 429/5xx retried.

use serde_json::json;

use super::{notification_body, notification_data, Outcome};
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
        match super::answer(self.http.post(&self.url).send_json(&request), "push relay").await {
            Ok(a) => a.outcome_404_gone("push relay"),
            Err(o) => o,
        }
    }
}
