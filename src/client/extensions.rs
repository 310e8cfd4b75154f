//! The client's calls beyond login, history and posting (docs/api.md): permissions,
//! joining by code, user and room administration, edits, reactions and pins,
//! attachments, tokens, name resolution, voice, and the event stream. The request
//! plumbing they share is in `mod.rs`.

use super::*;

impl Client {
    // ---- Confab extensions ---------------------------------------------------------------

    /// `PUT /api/v1/permissions` (administrators): changes server-wide defaults.
    pub async fn set_global_permissions(&mut self, flags: Value) -> Result<Value, ClientError> {
        self.call(
            awc::http::Method::PUT,
            "/api/v1/permissions",
            Some(json!({ "permissions": flags })),
        )
        .await
    }

    /// `PUT /api/v1/room-permissions/{roomId}`: flags to `true`, `false` or `null`
    /// (inherit), for the room or one user in it.
    pub async fn set_room_permissions(
        &mut self,
        room_id: u64,
        user_id: Option<u64>,
        flags: Value,
    ) -> Result<Value, ClientError> {
        let mut body = json!({ "permissions": flags });
        if let Some(u) = user_id {
            body["userId"] = json!(u);
        }
        self.call(
            awc::http::Method::PUT,
            &format!("/api/v1/room-permissions/{room_id}"),
            Some(body),
        )
        .await
    }

    pub async fn set_moderator(
        &mut self,
        room_id: u64,
        user_id: u64,
        on: bool,
    ) -> Result<(), ClientError> {
        self.call(
            awc::http::Method::PUT,
            &format!("/api/v1/rooms/{room_id}/members/{user_id}"),
            Some(json!({ "isModerator": on })),
        )
        .await
        .map(|_| ())
    }

    /// Joins a room with its join code; returns the caller's view of it.
    pub async fn join(&mut self, code: &str) -> Result<Room, ClientError> {
        let v = self
            .post("/api/v1/rooms/join", json!({ "joinCode": code }))
            .await?;
        Self::field(&v, "room")
    }

    /// Creates a user (administrators); returns its id and the generated password if none
    /// was given.
    pub async fn create_user(
        &mut self,
        user_name: &str,
        password: Option<&str>,
        is_admin: bool,
    ) -> Result<(u64, Option<String>), ClientError> {
        let mut body = json!({ "userName": user_name, "isAdmin": is_admin });
        if let Some(p) = password {
            body["password"] = json!(p);
        }
        let v = self.post("/api/v1/users", body).await?;
        Ok((Self::field(&v, "userId")?, Self::field(&v, "password").ok()))
    }

    pub async fn create_room(&mut self, name: &str, members: &[u64]) -> Result<u64, ClientError> {
        let v = self
            .post(
                "/api/v1/rooms",
                json!({ "displayName": name, "members": members }),
            )
            .await?;
        Self::field(&v, "roomId")
    }

    pub async fn create_private_room(&mut self, other: u64) -> Result<u64, ClientError> {
        let v = self
            .post(
                "/api/v1/rooms",
                json!({ "roomType": "Private", "members": [other] }),
            )
            .await?;
        Self::field(&v, "roomId")
    }

    pub async fn add_member(&mut self, room_id: u64, user_id: u64) -> Result<(), ClientError> {
        self.post(
            &format!("/api/v1/rooms/{room_id}/members"),
            json!({ "userId": user_id }),
        )
        .await
        .map(|_| ())
    }

    pub async fn members(&mut self, room_id: u64) -> Result<Vec<Value>, ClientError> {
        let v = self
            .get(&format!("/api/v1/rooms/{room_id}/members"))
            .await?;
        Self::field(&v, "members")
    }

    /// Removes a member (moderators and administrators).
    pub async fn remove_member(&mut self, room_id: u64, user_id: u64) -> Result<(), ClientError> {
        self.call(
            awc::http::Method::DELETE,
            &format!("/api/v1/rooms/{room_id}/members/{user_id}"),
            None,
        )
        .await
        .map(|_| ())
    }

    pub async fn leave(&mut self, room_id: u64) -> Result<(), ClientError> {
        self.post(&format!("/api/v1/rooms/{room_id}/leave"), json!({}))
            .await
            .map(|_| ())
    }

    /// Renames, archives or sets options of a room: `change` holds any of `displayName`,
    /// `isArchived`, `membersMayLeave`.
    pub async fn update_room(&mut self, room_id: u64, change: Value) -> Result<Room, ClientError> {
        let v = self
            .call(
                awc::http::Method::PATCH,
                &format!("/api/v1/rooms/{room_id}"),
                Some(change),
            )
            .await?;
        Self::field(&v, "room")
    }

    pub async fn edit(&mut self, message_id: u64, text: &str) -> Result<TextMessage, ClientError> {
        let v = self
            .call(
                awc::http::Method::PUT,
                &format!("/api/v1/messages/{message_id}"),
                Some(json!({ "content": text })),
            )
            .await?;
        Self::field(&v, "message")
    }

    /// Adds (or with `add == false` removes) an emoji reaction.
    pub async fn react(
        &mut self,
        message_id: u64,
        emoji: &str,
        add: bool,
    ) -> Result<TextMessage, ClientError> {
        let v = self
            .post(
                &format!("/api/v1/messages/{message_id}/reactions"),
                json!({ "emoji": emoji, "add": add }),
            )
            .await?;
        Self::field(&v, "message")
    }

    /// Pins or unpins a room for the caller.
    pub async fn pin(&mut self, room_id: u64, pinned: bool) -> Result<Room, ClientError> {
        let v = self
            .call(
                awc::http::Method::PUT,
                &format!("/api/v1/rooms/{room_id}/pin"),
                Some(json!({ "isPinned": pinned })),
            )
            .await?;
        Self::field(&v, "room")
    }

    pub async fn suspend(&mut self, user_id: u64) -> Result<(), ClientError> {
        self.post(&format!("/api/v1/users/{user_id}/suspend"), json!({}))
            .await
            .map(|_| ())
    }

    pub async fn reactivate(&mut self, user_id: u64) -> Result<(), ClientError> {
        self.post(&format!("/api/v1/users/{user_id}/reactivate"), json!({}))
            .await
            .map(|_| ())
    }

    /// Sets (or, with `None`, generates and returns) a user's password.
    pub async fn reset_password(
        &mut self,
        user_id: u64,
        password: Option<&str>,
    ) -> Result<Option<String>, ClientError> {
        let body = match password {
            Some(p) => json!({ "password": p }),
            None => json!({}),
        };
        let v = self
            .post(&format!("/api/v1/users/{user_id}/password"), body)
            .await?;
        Ok(Self::field(&v, "password").ok())
    }

    pub async fn set_admin(&mut self, user_id: u64, is_admin: bool) -> Result<(), ClientError> {
        self.post(
            &format!("/api/v1/users/{user_id}/admin"),
            json!({ "isAdmin": is_admin }),
        )
        .await
        .map(|_| ())
    }

    /// Uploads files to a message as `multipart/form-data` (field `files`), streaming each
    /// from disk. With `checksums`, each file is preceded by its SHA-1 for the server to verify.
    pub async fn upload(
        &mut self,
        message_id: u64,
        files: &[std::path::PathBuf],
        checksums: bool,
    ) -> Result<Vec<crate::model::Attachment>, ClientError> {
        self.upload_with_key(message_id, files, checksums, None)
            .await
    }

    /// [`Client::upload`] with an optional `Idempotency-Key`: the same key again answers
    /// the first upload's attachments instead of storing the files twice.
    pub async fn upload_with_key(
        &mut self,
        message_id: u64,
        files: &[std::path::PathBuf],
        checksums: bool,
        key: Option<&str>,
    ) -> Result<Vec<crate::model::Attachment>, ClientError> {
        // A boundary that cannot occur in the framing: random hex.
        let boundary = format!("confab-{}", crate::api::auth::random_hex(12));
        let mut parts: Vec<multipart::Part> = Vec::new();
        for path in files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().replace('"', "_"))
                .ok_or_else(|| ClientError::Usage(format!("{} is not a file", path.display())))?;
            let file = std::fs::File::open(path)
                .map_err(|e| ClientError::Usage(format!("cannot open {}: {e}", path.display())))?;
            if checksums {
                let sum = multipart::sha1_of(path)?;
                parts.push(multipart::Part::Text(format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"fileChecksum\"\r\n\r\n{sum}\r\n"
                )));
            }
            parts.push(multipart::Part::Text(format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )));
            parts.push(multipart::Part::File(file));
            parts.push(multipart::Part::Text("\r\n".into()));
        }
        parts.push(multipart::Part::Text(format!("--{boundary}--\r\n")));
        let url = format!("{}/api/v1/messages/{message_id}/attachments", self.base);
        let mut req = self
            .authorize(self.http.post(url))
            .insert_header((
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            ))
            .timeout(Duration::from_secs(3600));
        if let Some(key) = key {
            req = req.insert_header(("Idempotency-Key", key.to_string()));
        }
        let mut resp = req
            .send_stream(multipart::stream(parts))
            .await
            .map_err(|e| self.trust.explain_failure(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body()
            .limit(MAX_BODY)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))?;
        if status != 200 {
            return Err(ClientError::Api {
                status,
                text: v["errorText"].as_str().unwrap_or("").to_string(),
            });
        }
        Self::field(&v, "attachments")
    }

    /// Attachment metadata.
    pub async fn attachment(
        &mut self,
        attachment_id: u64,
    ) -> Result<crate::model::Attachment, ClientError> {
        let v = self
            .get(&format!("/api/v1/attachments/{attachment_id}"))
            .await?;
        serde_json::from_value(v).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn delete_attachment(&mut self, attachment_id: u64) -> Result<(), ClientError> {
        self.call(
            awc::http::Method::DELETE,
            &format!("/api/v1/attachments/{attachment_id}"),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Streams an attachment (or a `Range` of it, e.g. `bytes=0-99`) into `out`; returns the
    /// HTTP status, the bytes written and their SHA-1 (hex).
    pub async fn download(
        &mut self,
        attachment_id: u64,
        file_name: &str,
        range: Option<&str>,
        out: &mut impl std::io::Write,
    ) -> Result<(u16, u64, String), ClientError> {
        let url = format!(
            "{}/api/v1/attachments/{attachment_id}/{}",
            self.base,
            multipart::path_escape(file_name)
        );
        self.stream_url(url, range, out).await
    }

    /// GETs `path` (e.g. a history without `limit`) into `out` as the body arrives, without
    /// holding it: (status, bytes, SHA-1).
    pub async fn get_to(
        &mut self,
        path: &str,
        out: &mut impl std::io::Write,
    ) -> Result<(u16, u64, String), ClientError> {
        let url = format!("{}{path}", self.base);
        self.stream_url(url, None, out).await
    }

    async fn stream_url(
        &mut self,
        url: String,
        range: Option<&str>,
        out: &mut impl std::io::Write,
    ) -> Result<(u16, u64, String), ClientError> {
        let mut req = self
            .authorize(self.http.get(url))
            .timeout(Duration::from_secs(3600));
        if let Some(r) = range {
            req = req.insert_header(("Range", r.to_string()));
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| self.trust.explain_failure(e.to_string()))?;
        let status = resp.status().as_u16();
        if status != 200 && status != 206 {
            let bytes = resp
                .body()
                .limit(MAX_BODY)
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?;
            let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(ClientError::Api {
                status,
                text: v["errorText"].as_str().unwrap_or("").to_string(),
            });
        }
        let mut sha1 = openssl::sha::Sha1::new();
        let mut n = 0u64;
        while let Some(chunk) = resp.next().await {
            let chunk = chunk.map_err(|e| ClientError::Transport(e.to_string()))?;
            sha1.update(&chunk);
            n += chunk.len() as u64;
            out.write_all(&chunk)
                .map_err(|e| ClientError::Usage(format!("cannot write: {e}")))?;
        }
        Ok((status, n, hex::encode(sha1.finish())))
    }

    /// A new Web API token; the previous one stops working.
    pub async fn create_token(&mut self) -> Result<String, ClientError> {
        let v = self.post("/api/v1/web-api-token", json!({})).await?;
        Self::field(&v, "token")
    }

    /// A room id from an id or a display name unique among the user's rooms.
    pub async fn resolve_room(&mut self, room: &str) -> Result<u64, ClientError> {
        if let Ok(id) = room.parse() {
            return Ok(id);
        }
        let matches: Vec<u64> = self
            .rooms()
            .await?
            .into_iter()
            .filter(|r| r.display_name == room)
            .map(|r| r.room_id)
            .collect();
        match matches.as_slice() {
            [id] => Ok(*id),
            [] => Err(ClientError::Usage(format!(
                "no room named '{room}' among your rooms"
            ))),
            _ => Err(ClientError::Usage(format!(
                "several rooms are named '{room}'; use the room id"
            ))),
        }
    }

    /// A user id from an id or a user name.
    pub async fn resolve_user(&mut self, user: &str) -> Result<u64, ClientError> {
        if let Ok(id) = user.parse() {
            return Ok(id);
        }
        self.users()
            .await?
            .into_iter()
            .find(|u| u.user_name.eq_ignore_ascii_case(user))
            .map(|u| u.user_id)
            .ok_or_else(|| ClientError::Usage(format!("no user named '{user}'")))
    }

    /// The server's host name or address, as given.
    pub fn host(&self) -> &str {
        let rest = self.base.trim_start_matches("https://");
        match rest.rsplit_once(':') {
            Some((h, _)) => h.trim_matches(|c| c == '[' || c == ']'),
            None => rest,
        }
    }

    /// `POST /api/v1/rooms/{roomId}/voice` (extension): joins the room's voice channel.
    pub async fn join_voice(
        &mut self,
        room_id: u64,
        cipher: &str,
        listen_only: bool,
    ) -> Result<Value, ClientError> {
        self.post(
            &format!("/api/v1/rooms/{room_id}/voice"),
            json!({ "cipher": cipher, "listenOnly": listen_only }),
        )
        .await
    }

    pub async fn leave_voice(&mut self, room_id: u64) -> Result<(), ClientError> {
        self.call(
            awc::http::Method::DELETE,
            &format!("/api/v1/rooms/{room_id}/voice"),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Opens the event stream (`/api/v1/events`).
    pub async fn events(&mut self) -> Result<EventStream, ClientError> {
        self.events_with_extensions("").await
    }

    /// The event stream with Confab extensions (comma-separated, e.g. `readDeltas`).
    pub async fn events_with_extensions(
        &mut self,
        extensions: &str,
    ) -> Result<EventStream, ClientError> {
        let url = if extensions.is_empty() {
            format!("{}/api/v1/events", self.base)
        } else {
            format!("{}/api/v1/events?extensions={extensions}", self.base)
        };
        let mut req = self.http.ws(url).max_frame_size(16 * 1024 * 1024);
        if let Some(Credential::Session(t) | Credential::Token(t)) = &self.credential {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let (resp, framed) = req.connect().await.map_err(|e| match e {
            awc::error::WsClientError::InvalidResponseStatus(s) => ClientError::Api {
                status: s.as_u16(),
                text: "the event stream was refused".into(),
            },
            other => self.trust.explain_failure(other.to_string()),
        })?;
        drop(resp);
        self.trust.record_if_new()?;
        Ok(EventStream { framed })
    }
}
