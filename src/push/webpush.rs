//! Web Push (RFC 8030) to browsers: the payload encrypted for the subscription (RFC 8291,
//! aes128gcm: always, whatever `--push-include-content` says) and signed with the
//! server's VAPID key (RFC 8292), made on first start and kept in the storage folder
//! (`push/vapid.pem`, 0600); clients subscribe with its public key
//! (`GET /api/v1/push/vapid-public-key`).

use std::path::{Path, PathBuf};

use base64::Engine;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::nid::Nid;
use serde_json::json;
use web_push::{
    ContentEncoding, SubscriptionInfo, Urgency, VapidSignatureBuilder, WebPushMessageBuilder,
};

use super::{collapse_key, notification_body, notification_data, Outcome};
use crate::storage::push::{DeviceRecord, NotificationRecord};

/// The VAPID `sub` claim: a contact for push services (RFC 8292 §2.1).
const SUBJECT: &str = "mailto:admin@localhost";

/// The server's VAPID key.
pub struct Vapid {
    pem: Vec<u8>,
    /// The uncompressed P-256 public key, base64url without padding (what
    /// `PushManager.subscribe({applicationServerKey})` takes).
    pub public_key: String,
}

fn vapid_path(storage: &Path) -> PathBuf {
    storage.join("push").join("vapid.pem")
}

impl Vapid {
    /// Loads the folder's VAPID key, making one on first start.
    pub fn load_or_create(storage: &Path) -> Result<Vapid, String> {
        let path = vapid_path(storage);
        let fail = |e: &dyn std::fmt::Display| format!("VAPID key {}: {e}", path.display());
        let pem = match std::fs::read(&path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let group =
                    EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|e| fail(&e))?;
                let key = EcKey::generate(&group).map_err(|e| fail(&e))?;
                let pem = openssl::pkey::PKey::from_ec_key(key)
                    .and_then(|k| k.private_key_to_pem_pkcs8())
                    .map_err(|e| fail(&e))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
                }
                let tmp = path.with_extension("pem.tmp");
                std::fs::write(&tmp, &pem)
                    .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                    .and_then(|_| std::fs::rename(&tmp, &path))
                    .map_err(|e| fail(&e))?;
                pem
            }
            Err(e) => return Err(fail(&e)),
        };
        let key = EcKey::private_key_from_pem(&pem).map_err(|e| fail(&e))?;
        let mut ctx = openssl::bn::BigNumContext::new().map_err(|e| fail(&e))?;
        let raw = key
            .public_key()
            .to_bytes(key.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
            .map_err(|e| fail(&e))?;
        Ok(Vapid {
            pem,
            public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
        })
    }
}

/// Checks a subscription's keys as a browser gives them (base64url: a P-256 point of 65
/// bytes, an authentication secret of 16).
pub fn check_keys(p256dh: &str, auth: &str) -> Result<(), String> {
    let decode = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| "is not base64url".to_string())
    };
    let p = decode(p256dh).map_err(|e| format!("keys.p256dh {e}"))?;
    let a = decode(auth).map_err(|e| format!("keys.auth {e}"))?;
    if p.len() != 65 || p[0] != 4 {
        return Err("keys.p256dh must be an uncompressed P-256 point (65 bytes)".into());
    }
    if a.len() != 16 {
        return Err("keys.auth must be 16 bytes".into());
    }
    Ok(())
}

pub struct WebPush {
    http: awc::Client,
    vapid: Vapid,
    include_content: bool,
}

impl WebPush {
    pub fn new(http: awc::Client, vapid: Vapid, include_content: bool) -> WebPush {
        WebPush {
            http,
            vapid,
            include_content,
        }
    }

    pub async fn send(
        &self,
        device: &DeviceRecord,
        n: &NotificationRecord,
        expires_utc: u64,
    ) -> Outcome {
        let Some(sub) = &device.subscription else {
            return Outcome::Gone("a Web Push device without a subscription".into());
        };
        let info = SubscriptionInfo::new(
            sub.endpoint.as_str(),
            sub.keys.p256dh.as_str(),
            sub.keys.auth.as_str(),
        );
        let (title, body) = notification_body(n);
        let mut data = notification_data(n);
        if n.silent {
            data.insert("silent".into(), "1".into());
        }
        let mut payload = json!({ "title": title, "body": body, "data": data });
        if !self.include_content {
            // notification_body already left the text out; nothing else carries it.
            payload["contentIncluded"] = false.into();
        }
        let bytes = serde_json::to_vec(&payload).unwrap_or_default();
        let mut builder = WebPushMessageBuilder::new(&info);
        builder.set_payload(ContentEncoding::Aes128Gcm, &bytes);
        let ttl = expires_utc.saturating_sub(crate::now_ms()) / 1000;
        builder.set_ttl(ttl.min(u32::MAX as u64) as u32);
        builder.set_urgency(if n.silent {
            Urgency::Low
        } else {
            Urgency::High
        });
        builder.set_topic(collapse_key(n));
        let signature = VapidSignatureBuilder::from_pem(self.vapid.pem.as_slice(), &info)
            .map(|mut b| {
                b.add_claim("sub", SUBJECT);
                b
            })
            .and_then(|b| b.build());
        match signature {
            Ok(s) => builder.set_vapid_signature(s),
            Err(e) => return Outcome::Gone(format!("Web Push subscription refused: {e}")),
        }
        let message = match builder.build() {
            Ok(m) => m,
            Err(e) => return Outcome::Gone(format!("Web Push subscription keys: {e}")),
        };
        let request = web_push::request_builder::build_request::<Vec<u8>>(message);
        let mut req = self.http.post(request.uri().to_string());
        for (name, value) in request.headers() {
            if let Ok(v) = value.to_str() {
                req = req.insert_header((name.as_str(), v));
            }
        }
        match super::answer(req.send_body(request.into_body()), "Web Push").await {
            Ok(a) => a.outcome_404_gone("Web Push"),
            Err(o) => o,
        }
    }
}
