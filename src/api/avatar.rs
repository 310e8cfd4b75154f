//! Avatars: an uploaded image (PNG, JPEG, GIF or WebP, at most 1 MiB) or, without one, a
//! generated placeholder: an SVG with initials on a colour derived from the id. Both are
//! served at the documented `.jpg` paths with their true Content-Type.

use actix_web::{web, HttpResponse};

use super::auth::Authed;
use super::error::ApiError;
use super::State;
use crate::model::RoomType;

fn placeholder(id: u64, name: &str) -> String {
    let initials: String = name
        .split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .flat_map(|c| c.to_uppercase())
        .collect();
    let initials = if initials.is_empty() {
        "?".to_string()
    } else {
        initials
    };
    let escaped = initials
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let hue = (id.wrapping_mul(2654435761) % 360) as u32;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"128\" height=\"128\" viewBox=\"0 0 128 128\">\
<rect width=\"128\" height=\"128\" rx=\"16\" fill=\"hsl({hue},55%,45%)\"/>\
<text x=\"64\" y=\"64\" dy=\".35em\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"52\" fill=\"#fff\">{escaped}</text></svg>"
    )
}

fn image(svg: String, file: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header((
            "Content-Disposition",
            format!("inline; filename=\"{file}\""),
        ))
        .insert_header(("Cache-Control", "private, max-age=300"))
        .body(svg)
}

/// `GET /api/v1/users/{userId}/avatar.jpg`
pub async fn user_avatar(
    state: State,
    _auth: Authed,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let user = state
        .store
        .user(id)?
        .ok_or_else(|| ApiError::NotFound(format!("User {id} not found")))?;
    if let Some((content_type, bytes)) = state.store.avatar(b'u', id)? {
        return Ok(uploaded(content_type, bytes));
    }
    Ok(image(placeholder(id, &user.display_name), "avatar.svg"))
}

/// `GET /api/v1/rooms/{roomId}/avatar.jpg` (members only)
pub async fn room_avatar(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let room = super::rooms::visible_room(&state, &auth, id)?;
    if let Some((content_type, bytes)) = state.store.avatar(b'r', id)? {
        return Ok(uploaded(content_type, bytes));
    }
    let view = state.store.room_view(&room, auth.id())?;
    let seed = match room.room_type {
        RoomType::Public => id,
        RoomType::Private => id.wrapping_add(7),
    };
    Ok(image(placeholder(seed, &view.display_name), "avatar.svg"))
}

fn uploaded(content_type: String, bytes: Vec<u8>) -> HttpResponse {
    let ext = content_type.rsplit('/').next().unwrap_or("img").to_string();
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            "Content-Disposition",
            format!("inline; filename=\"avatar.{ext}\""),
        ))
        .insert_header(("Cache-Control", "private, max-age=300"))
        .body(bytes)
}

const MAX_AVATAR: usize = 1024 * 1024;

/// The image's type from its first bytes; the client's Content-Type is not trusted.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Reads the request body, refusing (413, in the API's error shape) past `MAX_AVATAR`.
async fn read_image(mut payload: web::Payload) -> Result<Vec<u8>, ApiError> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::BadRequest(format!("Could not read the request body: {e}")))?;
        if out.len() + chunk.len() > MAX_AVATAR {
            return Err(ApiError::PayloadTooLarge(format!(
                "An avatar may be at most {MAX_AVATAR} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads and checks an avatar upload: its content type and bytes.
async fn read_avatar(payload: web::Payload) -> Result<(&'static str, Vec<u8>), ApiError> {
    let body = read_image(payload).await?;
    let content_type = sniff(&body).ok_or_else(|| {
        ApiError::BadRequest("An avatar must be a PNG, JPEG, GIF or WebP image".into())
    })?;
    Ok((content_type, body))
}

/// `PUT /api/v1/users/{userId}/avatar.jpg` (extension): the image as the request body; the
/// user themself or an administrator.
pub async fn put_user_avatar(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    if id != auth.id() && !auth.user.is_admin {
        return Err(ApiError::Forbidden(
            "Only the user or an administrator may change this avatar".into(),
        ));
    }
    if state.store.user(id)?.is_none() {
        return Err(ApiError::NotFound(format!("User {id} not found")));
    }
    let (content_type, image) = read_avatar(payload).await?;
    state.store.set_avatar(b'u', id, content_type, &image)?;
    state.store.durable().await?;
    Ok(super::ok_json(
        serde_json::json!({ "userId": id, "contentType": content_type, "size": image.len() }),
    ))
}

/// `PUT /api/v1/rooms/{roomId}/avatar.jpg` (extension): the room's moderators and
/// administrators.
pub async fn put_room_avatar(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    if state.store.room(id)?.is_none() {
        return Err(ApiError::room_not_found(id));
    }
    let member = state.store.member(id, auth.id())?;
    if !auth.user.is_admin && !member.map(|m| m.is_moderator).unwrap_or(false) {
        return Err(ApiError::Forbidden(
            "Only a room moderator or an administrator may change the room's avatar".into(),
        ));
    }
    let (content_type, image) = read_avatar(payload).await?;
    let size = image.len();
    state
        .in_room(
            id,
            crate::actors::room::SetRoomAvatar {
                by: auth.id(),
                by_admin: auth.user.is_admin,
                content_type,
                image,
            },
        )
        .await?;
    Ok(super::ok_json(
        serde_json::json!({ "roomId": id, "contentType": content_type, "size": size }),
    ))
}
