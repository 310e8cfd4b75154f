//! The client's account calls (docs/api.md, "Accounts"): one's own password, display name
//! and login sessions; renaming, removing and listing for administrators.

use super::*;

impl Client {
    /// `POST /api/v1/users/{me}/password` with the current password: the caller's other
    /// sessions end; this one stays. Answers how many ended.
    pub async fn change_own_password(
        &mut self,
        user_id: u64,
        old: &str,
        new: &str,
    ) -> Result<u64, ClientError> {
        let v = self
            .post(
                &format!("/api/v1/users/{user_id}/password"),
                json!({ "oldPassword": old, "password": new }),
            )
            .await?;
        Self::field(&v, "endedSessions")
    }

    /// `PATCH /api/v1/users/{id}`: `displayName` and (administrators) `userName`.
    pub async fn update_user(&mut self, user_id: u64, change: Value) -> Result<User, ClientError> {
        let v = self
            .call(
                awc::http::Method::PATCH,
                &format!("/api/v1/users/{user_id}"),
                Some(change),
            )
            .await?;
        Self::field(&v, "user")
    }

    /// `DELETE /api/v1/users/{id}` (administrators): the whole answer.
    pub async fn remove_user(&mut self, user_id: u64) -> Result<Value, ClientError> {
        self.call(
            awc::http::Method::DELETE,
            &format!("/api/v1/users/{user_id}"),
            None,
        )
        .await
    }

    /// `GET /api/v1/sessions`: the caller's login sessions.
    pub async fn sessions(&mut self) -> Result<Vec<Value>, ClientError> {
        let v = self.get("/api/v1/sessions").await?;
        Self::field(&v, "sessions")
    }

    /// `DELETE /api/v1/sessions/{key}`.
    pub async fn end_session(&mut self, key: &str) -> Result<(), ClientError> {
        self.call(
            awc::http::Method::DELETE,
            &format!("/api/v1/sessions/{key}"),
            None,
        )
        .await
        .map(|_| ())
    }

    /// `DELETE /api/v1/sessions` (all, or `others` only); answers how many ended.
    pub async fn end_all_sessions(&mut self, others: bool) -> Result<u64, ClientError> {
        let path = if others {
            "/api/v1/sessions?others=true"
        } else {
            "/api/v1/sessions"
        };
        let v = self.call(awc::http::Method::DELETE, path, None).await?;
        Self::field(&v, "endedSessions")
    }

    /// `GET /api/v1/rooms?all=true` (administrators): every room on the server.
    pub async fn all_rooms(&mut self) -> Result<Vec<Value>, ClientError> {
        let v = self.get("/api/v1/rooms?all=true").await?;
        Self::field(&v, "rooms")
    }

    /// `POST /api/v1/users/{me}/totp`: `{secret, otpauthUri}`.
    pub async fn totp_begin(&mut self, user_id: u64) -> Result<Value, ClientError> {
        self.post(&format!("/api/v1/users/{user_id}/totp"), json!({}))
            .await
    }

    /// `POST /api/v1/users/{me}/totp/confirm`: the recovery codes.
    pub async fn totp_confirm(
        &mut self,
        user_id: u64,
        code: &str,
    ) -> Result<Vec<String>, ClientError> {
        let v = self
            .post(
                &format!("/api/v1/users/{user_id}/totp/confirm"),
                json!({ "code": code }),
            )
            .await?;
        Self::field(&v, "recoveryCodes")
    }

    /// `DELETE /api/v1/users/{id}/totp` (with a code, or as an administrator without).
    pub async fn totp_disable(
        &mut self,
        user_id: u64,
        code: Option<&str>,
    ) -> Result<(), ClientError> {
        let body = code.map(|c| json!({ "code": c }));
        self.call(
            awc::http::Method::DELETE,
            &format!("/api/v1/users/{user_id}/totp"),
            body,
        )
        .await
        .map(|_| ())
    }

    /// Uses an existing login session (e.g. one the CLI kept) instead of logging in.
    pub fn use_session(&mut self, session_id: &str, user_id: Option<u64>) {
        self.credential = Some(Credential::Session(session_id.to_string()));
        self.user_id = user_id;
    }
}
