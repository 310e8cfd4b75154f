//! The client's push calls (Confab extensions): devices, settings, a test notification.

use serde_json::{json, Value};

use super::{Client, ClientError};

impl Client {
    /// `POST /api/v1/push/devices` with the body as given; the new device's id.
    pub async fn push_register(&mut self, device: Value) -> Result<u64, ClientError> {
        let v = self.post("/api/v1/push/devices", device).await?;
        Self::field(&v, "deviceId")
    }

    /// The caller's push devices.
    pub async fn push_devices(&mut self) -> Result<Vec<Value>, ClientError> {
        let v = self.get("/api/v1/push/devices").await?;
        Self::field(&v, "devices")
    }

    pub async fn push_unregister(&mut self, device_id: u64) -> Result<(), ClientError> {
        self.call(
            awc::http::Method::DELETE,
            &format!("/api/v1/push/devices/{device_id}"),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Sends a test notification to each of the caller's devices; how many.
    pub async fn push_test(&mut self) -> Result<u64, ClientError> {
        let v = self.post("/api/v1/push/test", json!({})).await?;
        Self::field(&v, "devices")
    }

    /// `PUT /api/v1/push/settings` with the fields given; the settings as stored.
    pub async fn push_settings(&mut self, change: Value) -> Result<Value, ClientError> {
        let v = self
            .call(
                awc::http::Method::PUT,
                "/api/v1/push/settings",
                Some(change),
            )
            .await?;
        Ok(v["settings"].clone())
    }
}
