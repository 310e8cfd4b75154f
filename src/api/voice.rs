//! Voice control (extensions): join and leave a room's voice channel, list who is in it.
//! The answers carry the participant's key; they travel only over this TLS connection.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::Authed;
use super::error::ApiError;
use super::rooms::visible_room;
use super::{ok_json, State};
use crate::actors::voice::{GetChannel, Join, Leave, ListParticipants};
use crate::voice::CipherKind;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinBody {
    /// `aes-256-gcm` (default) or `chacha20-poly1305`.
    #[serde(default)]
    cipher: Option<String>,
    #[serde(default)]
    listen_only: bool,
}

/// `POST /api/v1/rooms/{roomId}/voice` (extension): join the room's voice channel.
pub async fn join(
    state: State,
    auth: Authed,
    req: actix_web::HttpRequest,
    path: web::Path<u64>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let room_id = path.into_inner();
    visible_room(&state, &auth, room_id)?;
    // The body is optional; when given it is checked like every extension body (unknown
    // fields are a 400, not silently ignored).
    let body: JoinBody = if body.iter().all(u8::is_ascii_whitespace) {
        JoinBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("Malformed JSON request: {e}")))?
    };
    let cipher = match body.cipher.as_deref() {
        None => CipherKind::Aes256Gcm,
        Some(name) => CipherKind::from_name(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Unknown cipher '{name}': use aes-256-gcm or chacha20-poly1305"
            ))
        })?,
    };
    let from = state.client_ip(&req);
    let join = || Join {
        user_id: auth.id(),
        cipher,
        listen_only: body.listen_only,
        from: Some(from),
    };
    let channel = state.voice.hub.send(GetChannel(room_id)).await?;
    let info = match channel.send(join()).await? {
        // The channel closed as we joined; the hub has forgotten it by now and starts a
        // new one.
        Err(ApiError::Unavailable(_)) => {
            let channel = state.voice.hub.send(GetChannel(room_id)).await?;
            channel.send(join()).await??
        }
        other => other?,
    };
    let mut v = serde_json::to_value(&info).unwrap_or_default();
    v["httpStatusCode"] = json!(200);
    Ok(HttpResponse::Ok().json(v))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaveQuery {
    participant_id: Option<u32>,
}

/// `DELETE /api/v1/rooms/{roomId}/voice[?participantId=N]` (extension): leave (one
/// participant of the caller, or all of theirs in this room). Their keys are erased.
pub async fn leave(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    query: web::Query<LeaveQuery>,
) -> Result<HttpResponse, ApiError> {
    let room_id = path.into_inner();
    visible_room(&state, &auth, room_id)?;
    let channel = state.voice.hub.send(GetChannel(room_id)).await?;
    let left = channel
        .send(Leave {
            user_id: auth.id(),
            participant: query.participant_id,
        })
        .await??;
    Ok(ok_json(json!({ "roomId": room_id, "left": left })))
}

/// `GET /api/v1/rooms/{roomId}/voice` (extension): the channel's participants.
pub async fn participants(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let room_id = path.into_inner();
    visible_room(&state, &auth, room_id)?;
    let channel = state.voice.hub.send(GetChannel(room_id)).await?;
    let list = channel.send(ListParticipants).await?;
    Ok(ok_json(json!({ "roomId": room_id, "participants": list })))
}
