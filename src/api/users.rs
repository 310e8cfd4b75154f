//! Users: the documented list, and the admin extension to create users.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{self, Admin, Authed};
use super::error::ApiError;
use super::{ok_json, State};
use crate::model::UserStatus;

/// `GET /api/v1/users`
/// Paging of `GET /users` (extension): without `limit` every user, as Web API v1 has it.
#[derive(Deserialize)]
pub struct UsersQuery {
    cursor: Option<u64>,
    limit: Option<i64>,
}

/// Most users one page lists.
const MAX_USERS_PAGE: usize = 1000;

/// `GET /api/v1/users`; with `limit` (extension) a page of users with ids above `cursor`
/// and the `nextCursor` to ask for the next (`null` after the last page).
pub async fn list(
    state: State,
    _auth: Authed,
    query: web::Query<UsersQuery>,
) -> Result<HttpResponse, ApiError> {
    let Some(limit) = query.limit else {
        let users: Vec<_> = state
            .store
            .users()?
            .iter()
            .map(|u| state.user_view(u))
            .collect();
        return Ok(ok_json(json!({ "users": users })));
    };
    if limit <= 0 || limit as usize > MAX_USERS_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_USERS_PAGE}"
        )));
    }
    let page = state
        .store
        .users_page(query.cursor.unwrap_or(0), limit as usize + 1)?;
    let more = page.len() > limit as usize;
    let users: Vec<_> = page
        .iter()
        .take(limit as usize)
        .map(|u| state.user_view(u))
        .collect();
    let next = if more {
        page.get(limit as usize - 1).map(|u| u.user_id)
    } else {
        None
    };
    Ok(ok_json(json!({ "users": users, "nextCursor": next })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewUser {
    user_name: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    is_admin: bool,
}

/// User names: 1–64 characters of letters, digits, `.`, `_` and `-`.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A readable random password (used when none is given).
pub fn generate_password() -> String {
    auth::random_hex(12)
}

/// `POST /api/v1/users` (extension, administrators only)
pub async fn create(
    state: State,
    admin: Admin,
    body: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let NewUser {
        user_name,
        display_name,
        password,
        is_admin,
    } = body.into_inner();
    if !valid_user_name(&user_name) {
        return Err(ApiError::BadRequest(
            "userName must be 1-64 characters of letters, digits, '.', '_' or '-'".into(),
        ));
    }
    let display_name = display_name.unwrap_or_else(|| user_name.clone());
    if display_name.trim().is_empty() || display_name.len() > 128 {
        return Err(ApiError::BadRequest(
            "displayName must be 1-128 bytes".into(),
        ));
    }
    if let Some(p) = &password {
        if p.len() < 8 || p.len() > 1024 {
            return Err(ApiError::BadRequest("password must be 8-1024 bytes".into()));
        }
    }
    if state.store.user_by_name(&user_name)?.is_some() {
        return Err(ApiError::Conflict(format!(
            "A user named '{user_name}' already exists"
        )));
    }
    let generated = password.is_none();
    let password = password.unwrap_or_else(generate_password);
    let to_hash = password.clone();
    let hash = auth::with_hash_slot(&state, move || auth::hash_password(&to_hash)).await??;
    let user = state
        .store
        .create_user(&user_name, &display_name, hash, is_admin)?;
    state.store.durable().await?;
    // Rooms every new user joins (room option `autoAddNewUsers`).
    for room_id in state.store.auto_add_room_ids()? {
        state
            .in_room(
                room_id,
                crate::actors::room::AddMember {
                    by: admin.0.id(),
                    by_admin: true,
                    user_id: user.user_id,
                    via_link: None,
                },
            )
            .await?;
    }
    tracing::info!(target: "confab::audit", by = admin.0.id(), user_id = user.user_id, user = %user.user_name, is_admin = user.is_admin, "user created");
    let mut body = json!({ "userId": user.user_id, "user": state.user_view(&user) });
    if generated {
        body["password"] = json!(password);
    }
    Ok(ok_json(body))
}

fn user_not_found(id: u64) -> ApiError {
    ApiError::NotFound(format!("User {id} not found"))
}

/// After a user's suspension or removal: their event streams close (with `reason`) and they
/// are dropped from every voice channel at once, keys erased. Answers the streams closed.
pub fn cut_off(state: &super::AppState, id: u64, reason: &str) -> usize {
    let closed = state
        .directory
        .close_user(id, actix_ws::CloseCode::Policy, reason);
    state.voice.hub.do_send(crate::actors::voice::Recheck(None));
    closed
}

/// `POST /api/v1/users/{userId}/suspend` (extension, administrators): every session and token
/// of the user stops working at once and their open event streams are closed; login is
/// refused. Their messages stay. Nothing is deleted.
pub async fn suspend(
    state: State,
    admin: Admin,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    if id == admin.0.id() {
        return Err(ApiError::BadRequest("You cannot suspend yourself".into()));
    }
    let user = state
        .store
        .update_user(id, |u| {
            u.status = UserStatus::Suspended;
            Ok(())
        })?
        .ok_or_else(|| user_not_found(id))?;
    state.store.durable().await?;
    let closed = cut_off(&state, id, "account suspended");
    tracing::info!(target: "confab::audit", by = admin.0.id(), user_id = id, "user suspended");
    Ok(ok_json(
        json!({ "user": state.user_view(&user), "closedEventStreams": closed }),
    ))
}

/// `POST /api/v1/users/{userId}/reactivate` (extension, administrators): everything works again.
pub async fn reactivate(
    state: State,
    admin: Admin,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let user = state
        .store
        .update_user(id, |u| {
            if u.status == UserStatus::DeletionInProgress {
                return Err(crate::storage::StorageError::Conflict(
                    "This user was removed; a removed account cannot be reactivated".into(),
                ));
            }
            u.status = UserStatus::Active;
            Ok(())
        })?
        .ok_or_else(|| user_not_found(id))?;
    state.store.durable().await?;
    tracing::info!(target: "confab::audit", by = admin.0.id(), user_id = id, "user reactivated");
    Ok(ok_json(json!({ "user": state.user_view(&user) })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminBody {
    is_admin: bool,
}

/// `POST /api/v1/users/{userId}/admin` (extension, administrators): make or unmake an
/// administrator. The last administrator cannot be unmade.
pub async fn set_admin(
    state: State,
    admin: Admin,
    path: web::Path<u64>,
    body: web::Json<AdminBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let is_admin = body.is_admin;
    // The last active administrator stays one: checked in the same step as the change.
    let user = state
        .store
        .update_user(id, |u| {
            u.is_admin = is_admin;
            Ok(())
        })?
        .ok_or_else(|| user_not_found(id))?;
    state.store.durable().await?;
    tracing::info!(target: "confab::audit", by = admin.0.id(), user_id = id, is_admin, "administrator right changed");
    Ok(ok_json(json!({ "user": state.user_view(&user) })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusBody {
    status_text: String,
}

/// Longest status line, in characters.
const MAX_STATUS_CHARS: usize = 140;

/// `PUT /api/v1/presence` (extension): sets the caller's status line (`""` clears it);
/// the people who share a room with them get `UserPresenceChanged` with it.
pub async fn set_status(
    state: State,
    auth: Authed,
    body: web::Json<StatusBody>,
) -> Result<HttpResponse, ApiError> {
    let text = body.into_inner().status_text.trim().to_string();
    if text.chars().count() > MAX_STATUS_CHARS {
        return Err(ApiError::BadRequest(format!(
            "statusText is longer than {MAX_STATUS_CHARS} characters"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "statusText must be one line without control characters".into(),
        ));
    }
    let user = state
        .store
        .update_user(auth.id(), |u| {
            u.status_text = text.clone();
            Ok(())
        })?
        .ok_or_else(|| ApiError::NotFound(format!("No user {}", auth.id())))?;
    state.store.durable().await?;
    if let Some(actor) = state.presence.actor() {
        actor.do_send(crate::actors::presence::StatusChanged(auth.id()));
    }
    Ok(ok_json(json!({ "user": state.user_view(&user) })))
}
