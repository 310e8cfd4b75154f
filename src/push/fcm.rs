//! Firebase Cloud Messaging, HTTP v1: an OAuth2 access token from the service account (an
//! RS256 JWT assertion to its `token_uri`, cached until shortly before it expires), then
//! `POST {base}/v1/projects/{project}/messages:send`.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{classify_status, collapse_key, notification_body, notification_data, Outcome};
use crate::storage::push::{DeviceRecord, NotificationRecord};

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// The fields of a Google service-account JSON file that are used.
#[derive(Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    pub client_email: String,
    pub token_uri: String,
}

pub struct Fcm {
    http: awc::Client,
    base: String,
    account: ServiceAccount,
    key: jsonwebtoken::EncodingKey,
    token: RefCell<Option<(String, Instant)>>,
}

impl Fcm {
    /// Reads and checks the service account (at start: a bad file stops the server).
    pub fn new(http: awc::Client, base: &str, path: &std::path::Path) -> Result<Fcm, String> {
        let text = std::fs::read(path)
            .map_err(|e| format!("--push-fcm-service-account {}: {e}", path.display()))?;
        let account: ServiceAccount = serde_json::from_slice(&text).map_err(|e| {
            format!(
                "--push-fcm-service-account {}: not a service-account JSON file: {e}",
                path.display()
            )
        })?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(
            |e| {
                format!(
                    "--push-fcm-service-account {}: private_key is not an RSA key: {e}",
                    path.display()
                )
            },
        )?;
        Ok(Fcm {
            http,
            base: base.to_string(),
            account,
            key,
            token: RefCell::new(None),
        })
    }

    /// A valid access token, fetched when there is none or it is about to expire.
    async fn access_token(&self) -> Result<String, Outcome> {
        if let Some((token, until)) = self.token.borrow().as_ref() {
            if Instant::now() + RENEW_BEFORE < *until {
                return Ok(token.clone());
            }
        }
        let now = crate::now_ms() / 1000;
        let claims = json!({
            "iss": self.account.client_email,
            "scope": SCOPE,
            "aud": self.account.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self.account.private_key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| Outcome::Failed(format!("FCM assertion: {e}")))?;
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ];
        let sent = self.http.post(&self.account.token_uri).send_form(&form);
        let a = super::answer(sent, "FCM token endpoint").await?;
        if a.status != 200 {
            let text = a.text();
            return Err(match classify_status(a.status, &a.headers, &text) {
                Some(retry @ Outcome::Retry { .. }) => retry,
                _ => Outcome::Failed(format!("FCM token endpoint answered {}: {text}", a.status)),
            });
        }
        let v: Value = serde_json::from_slice(&a.body).unwrap_or_default();
        let Some(token) = v["access_token"].as_str() else {
            return Err(Outcome::Failed(
                "FCM token endpoint: no access_token in its answer".into(),
            ));
        };
        let lifetime = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3600).min(86_400));
        *self.token.borrow_mut() = Some((token.to_string(), Instant::now() + lifetime));
        Ok(token.to_string())
    }

    pub async fn send(&self, device: &DeviceRecord, n: &NotificationRecord) -> Outcome {
        let Some(token) = device.token.as_deref() else {
            return Outcome::Gone("an FCM device without a token".into());
        };
        let access = match self.access_token().await {
            Ok(t) => t,
            Err(outcome) => return outcome,
        };
        let mut data = notification_data(n);
        let mut message = json!({
            "token": token,
            "android": {
                "collapse_key": collapse_key(n),
                "priority": if n.silent { "NORMAL" } else { "HIGH" },
            },
        });
        if n.silent {
            data.insert("silent".into(), "1".into());
        } else {
            let (title, body) = notification_body(n);
            message["notification"] = json!({ "title": title, "body": body });
        }
        message["data"] = Value::Object(data);
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.base, self.account.project_id
        );
        let sent = self
            .http
            .post(url)
            .bearer_auth(&access)
            .send_json(&json!({ "message": message }));
        let a = match super::answer(sent, "FCM").await {
            Ok(a) => a,
            Err(o) => return o,
        };
        let (status, text) = (a.status, a.text());
        if status == 401 {
            // The token was refused (revoked, clock skew): fetch a new one next time.
            *self.token.borrow_mut() = None;
            return Outcome::Retry {
                after: None,
                why: "FCM refused the access token".into(),
            };
        }
        if let Some(o) = classify_status(status, &a.headers, &text) {
            return o;
        }
        let v: Value = serde_json::from_slice(&a.body).unwrap_or_default();
        let code = fcm_error_code(&v);
        match code.as_str() {
            "UNREGISTERED" | "SENDER_ID_MISMATCH" | "INVALID_ARGUMENT" | "NOT_FOUND" => {
                Outcome::Gone(format!("FCM: {code}"))
            }
            "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" => Outcome::Retry {
                after: super::retry_after(&a.headers),
                why: format!("FCM: {code}"),
            },
            _ => Outcome::Failed(format!("FCM answered {status}: {code}")),
        }
    }
}

/// The FCM error code of an error answer: `details[].errorCode`, else `error.status`.
fn fcm_error_code(v: &Value) -> String {
    let details = v["error"]["details"].as_array();
    details
        .into_iter()
        .flatten()
        .find_map(|d| d["errorCode"].as_str())
        .or_else(|| v["error"]["status"].as_str())
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::fcm_error_code;

    #[test]
    fn the_error_code_comes_from_the_details_first() {
        let v = serde_json::json!({"error": {"code": 404, "status": "NOT_FOUND",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                         "errorCode": "UNREGISTERED"}]}});
        assert_eq!(fcm_error_code(&v), "UNREGISTERED");
        let v = serde_json::json!({"error": {"code": 400, "status": "INVALID_ARGUMENT"}});
        assert_eq!(fcm_error_code(&v), "INVALID_ARGUMENT");
        assert_eq!(fcm_error_code(&serde_json::json!({})), "");
    }
}
