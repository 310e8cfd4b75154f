//! The client's calls for search, issues, meetings and presence (Confab extensions).

use serde_json::{json, Value};

use super::{Client, ClientError};

/// What `GET /api/v1/search` is asked (fields left `None` are not sent).
#[derive(Debug, Clone, Default)]
pub struct SearchParams {
    pub q: String,
    pub room_id: Option<u64>,
    pub author_id: Option<u64>,
    pub from: Option<u64>,
    pub to: Option<u64>,
    /// `Regular`, `Issue` or `Meeting`.
    pub message_type: Option<String>,
    pub has_attachment: Option<bool>,
    pub newest_first: bool,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

/// Percent-encodes a query parameter value.
pub fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode_query_value(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

impl Client {
    /// `GET /api/v1/search`: the whole answer (`results`, `total`, `complete`).
    pub async fn search(&mut self, p: &SearchParams) -> Result<Value, ClientError> {
        let q = query_string(&[
            ("q", Some(p.q.clone())),
            ("roomId", p.room_id.map(|v| v.to_string())),
            ("authorId", p.author_id.map(|v| v.to_string())),
            ("from", p.from.map(|v| v.to_string())),
            ("to", p.to.map(|v| v.to_string())),
            ("type", p.message_type.clone()),
            ("hasAttachment", p.has_attachment.map(|v| v.to_string())),
            ("sort", p.newest_first.then(|| "newest".to_string())),
            ("limit", p.limit.map(|v| v.to_string())),
            ("offset", p.offset.map(|v| v.to_string())),
        ]);
        self.get(&format!("/api/v1/search{q}")).await
    }

    /// `GET /api/v1/issues` with the given filters (`status`, `assignee`, `roomId`, `type`,
    /// `priority`, `sort`): the whole answer (`issues`, `countsByStatus`, `total`).
    pub async fn issues(&mut self, filters: &[(&str, String)]) -> Result<Value, ClientError> {
        let pairs: Vec<(&str, Option<String>)> =
            filters.iter().map(|(k, v)| (*k, Some(v.clone()))).collect();
        self.get(&format!("/api/v1/issues{}", query_string(&pairs)))
            .await
    }

    /// `GET /api/v1/meetings`: meetings overlapping `[from, to]` (defaults: now, 90 days).
    pub async fn meetings(
        &mut self,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<Vec<Value>, ClientError> {
        let q = query_string(&[
            ("from", from.map(|v| v.to_string())),
            ("to", to.map(|v| v.to_string())),
        ]);
        let v = self.get(&format!("/api/v1/meetings{q}")).await?;
        Self::field(&v, "meetings")
    }

    /// One meeting (`Some(id)`) or the caller's upcoming ones as iCalendar text.
    pub async fn meetings_ics(&mut self, id: Option<u64>) -> Result<String, ClientError> {
        let path = match id {
            Some(id) => format!("/api/v1/meetings/{id}.ics"),
            None => "/api/v1/meetings.ics".to_string(),
        };
        let (status, body) = self
            .request_bytes(awc::http::Method::GET, &path, None)
            .await?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status != 200 {
            let error: Value = serde_json::from_str(&text).unwrap_or(json!({}));
            return Err(ClientError::Api {
                status,
                text: error["errorText"].as_str().unwrap_or(&text).to_string(),
            });
        }
        Ok(text)
    }

    /// `PUT /api/v1/presence`: sets the caller's status line.
    pub async fn set_status_text(&mut self, text: &str) -> Result<Value, ClientError> {
        let v = self
            .call(
                awc::http::Method::PUT,
                "/api/v1/presence",
                Some(json!({ "statusText": text })),
            )
            .await?;
        Self::field(&v, "user")
    }
}
