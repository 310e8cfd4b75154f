//! Avatars. Until uploads exist, each user and room gets a generated placeholder: an SVG
//! with initials on a colour derived from the id (served at the documented `.jpg` paths
//! with its true Content-Type).

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
    let view = state.store.room_view(&room, auth.id())?;
    let seed = match room.room_type {
        RoomType::Public => id,
        RoomType::Private => id.wrapping_add(7),
    };
    Ok(image(placeholder(seed, &view.display_name), "avatar.svg"))
}
