//! A member's own account (extensions): their password, display name and login sessions;
//! and what administrators do to accounts beyond creating and suspending them: rename,
//! remove, list every room.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{self, Admin, Authed};
use super::error::ApiError;
use super::users::{generate_password, valid_user_name};
use super::{ok_json, State};
use crate::model::{RoomType, UserStatus};

fn user_not_found(id: u64) -> ApiError {
    ApiError::NotFound(format!("User {id} not found"))
}

fn check_new_password(p: &str) -> Result<(), ApiError> {
    if p.len() < 8 || p.len() > 1024 {
        return Err(ApiError::BadRequest("password must be 8-1024 bytes".into()));
    }
    Ok(())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordBody {
    #[serde(default)]
    old_password: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `POST /api/v1/users/{userId}/password`. For one's own account: `{"oldPassword",
/// "password"}`; every other session of the user ends. For administrators, on anyone:
/// `{"password"}` or `{}` (a password is generated and returned); all of that user's
/// sessions end. Web API tokens stay.
pub async fn set_password(
    state: State,
    auth: Authed,
    req: HttpRequest,
    path: web::Path<u64>,
    body: web::Json<PasswordBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let PasswordBody {
        old_password,
        password,
    } = body.into_inner();
    if let Some(old) = old_password {
        if id != auth.id() {
            return Err(ApiError::Forbidden(
                "oldPassword changes only your own password; administrators reset others' without it".into(),
            ));
        }
        let password = password
            .ok_or_else(|| ApiError::BadRequest("password (the new one) is required".into()))?;
        check_new_password(&password)?;
        return change_own_password(&state, &auth, &req, old, password).await;
    }
    if !auth.user.is_admin {
        return Err(if id == auth.id() {
            ApiError::BadRequest("oldPassword is required to change your own password".into())
        } else {
            ApiError::Forbidden("Only an administrator may do this".into())
        });
    }
    reset_password(&state, &auth, id, password).await
}

async fn change_own_password(
    state: &State,
    auth: &Authed,
    req: &HttpRequest,
    old: String,
    password: String,
) -> Result<HttpResponse, ApiError> {
    // A stolen session must not become a way to guess the password: the same throttle as
    // login.
    let name = auth.user.user_name.to_lowercase();
    let addr = state.client_ip(req);
    state.login_throttle.gate(&name, addr).await?;
    let hash = auth.user.password_hash.clone();
    let ok = auth::with_hash_slot(state, move || auth::verify_password(&old, &hash)).await?;
    if !ok {
        state.login_throttle.failed(&name, addr);
        tracing::info!(target: "confab::audit", user = %name, %addr, "password change refused: wrong current password");
        return Err(ApiError::Forbidden("The current password is wrong".into()));
    }
    let new_hash = auth::with_hash_slot(state, move || auth::hash_password(&password)).await??;
    let id = auth.id();
    state.store.update_user(id, |u| {
        u.password_hash = new_hash.clone();
        Ok(())
    })?;
    let ended = state
        .store
        .end_sessions_except(id, auth.session_id.as_deref())?;
    state.store.durable().await?;
    let keep = auth
        .session_id
        .as_deref()
        .map(crate::actors::session::login_tag);
    state
        .directory
        .close_logins(id, None, keep, "password changed");
    tracing::info!(target: "confab::audit", user = %name, %addr, ended_sessions = ended, "password changed by its owner");
    Ok(ok_json(json!({ "userId": id, "endedSessions": ended })))
}

async fn reset_password(
    state: &State,
    admin: &Authed,
    id: u64,
    given: Option<String>,
) -> Result<HttpResponse, ApiError> {
    if state.store.user(id)?.is_none() {
        return Err(user_not_found(id));
    }
    if let Some(p) = &given {
        check_new_password(p)?;
    }
    let generated = given.is_none();
    let password = given.unwrap_or_else(generate_password);
    let to_hash = password.clone();
    let hash = auth::with_hash_slot(state, move || auth::hash_password(&to_hash)).await??;
    state.store.update_user(id, |u| {
        u.password_hash = hash.clone();
        Ok(())
    })?;
    // An administrator resetting their own password keeps the session they do it from.
    let keep = (id == admin.id())
        .then_some(admin.session_id.as_deref())
        .flatten();
    let ended = state.store.end_sessions_except(id, keep)?;
    state.store.durable().await?;
    state.directory.close_logins(
        id,
        None,
        keep.map(crate::actors::session::login_tag),
        "password reset by an administrator",
    );
    tracing::info!(target: "confab::audit", by = admin.id(), user_id = id, ended_sessions = ended, "password reset by an administrator");
    let mut body = json!({ "userId": id, "endedSessions": ended });
    if generated {
        body["password"] = json!(password);
    }
    Ok(ok_json(body))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileChange {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
}

/// `PATCH /api/v1/users/{userId}`: `displayName` (the user or an administrator),
/// `userName` (administrators: a rename; the old name is free again).
pub async fn update_profile(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    body: web::Json<ProfileChange>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let ProfileChange {
        display_name,
        user_name,
    } = body.into_inner();
    if id != auth.id() && !auth.user.is_admin {
        return Err(ApiError::Forbidden(
            "Only an administrator may change another user".into(),
        ));
    }
    if let Some(d) = &display_name {
        if d.trim().is_empty() || d.len() > 128 || d.chars().any(char::is_control) {
            return Err(ApiError::BadRequest(
                "displayName must be 1-128 bytes without control characters".into(),
            ));
        }
    }
    if let Some(n) = &user_name {
        if !auth.user.is_admin {
            return Err(ApiError::Forbidden(
                "Only an administrator may rename a user".into(),
            ));
        }
        if !valid_user_name(n) {
            return Err(ApiError::BadRequest(
                "userName must be 1-64 characters of letters, digits, '.', '_' or '-'".into(),
            ));
        }
    }
    if display_name.is_none() && user_name.is_none() {
        return Err(ApiError::BadRequest(
            "Nothing to change: give displayName or userName".into(),
        ));
    }
    let mut user = state.store.user(id)?.ok_or_else(|| user_not_found(id))?;
    if let Some(n) = user_name {
        let old = user.user_name.clone();
        user = state
            .store
            .rename_user(id, &n)?
            .ok_or_else(|| user_not_found(id))?;
        tracing::info!(target: "confab::audit", by = auth.id(), user_id = id, from = %old, to = %n, "user renamed");
    }
    if let Some(d) = display_name {
        user = state
            .store
            .update_user(id, |u| {
                u.display_name = d.trim().to_string();
                Ok(())
            })?
            .ok_or_else(|| user_not_found(id))?;
    }
    state.store.durable().await?;
    Ok(ok_json(json!({ "user": state.user_view(&user) })))
}

/// `DELETE /api/v1/users/{userId}` (administrators): the account is removed for good. Its
/// status becomes `DeletionInProgress`, it can no longer log in, its sessions, token and
/// event streams end, and it leaves every group room. Its messages and files stay, still
/// attributed to it (as for a suspended user), and its private rooms stay readable to the
/// other person.
pub async fn remove_user(
    state: State,
    admin: Admin,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    if id == admin.0.id() {
        return Err(ApiError::BadRequest("You cannot remove yourself".into()));
    }
    let user = state
        .store
        .update_user(id, |u| {
            u.status = UserStatus::DeletionInProgress;
            u.is_admin = false;
            Ok(())
        })?
        .ok_or_else(|| user_not_found(id))?;
    let ended = state.store.end_sessions_except(id, None)?;
    state.store.revoke_api_token(id)?;
    state.store.durable().await?;
    let closed = super::users::cut_off(&state, id, "account removed");
    let mut left = 0;
    for room_id in state.store.rooms_of_user(id)? {
        let Some(room) = state.store.room(room_id)? else {
            continue;
        };
        if room.room_type == RoomType::Private {
            continue;
        }
        state
            .in_room(
                room_id,
                crate::actors::room::RemoveMember {
                    by: admin.0.id(),
                    by_admin: true,
                    user_id: id,
                },
            )
            .await?;
        left += 1;
    }
    tracing::info!(target: "confab::audit", by = admin.0.id(), user_id = id, user = %user.user_name, rooms_left = left, "user removed");
    Ok(ok_json(json!({
        "user": state.user_view(&user),
        "endedSessions": ended,
        "closedEventStreams": closed,
        "roomsLeft": left,
    })))
}

/// `GET /api/v1/sessions`: the caller's login sessions, with the one in use marked.
pub async fn sessions(state: State, auth: Authed) -> Result<HttpResponse, ApiError> {
    let lifetime = state.limits.session_lifetime;
    let current = auth
        .session_id
        .as_deref()
        .map(|s| crate::storage::session_key(&crate::storage::token_hash(s)));
    let list: Vec<_> = state
        .store
        .latest()
        .sessions_of(auth.id())?
        .into_iter()
        .map(|(key, s)| {
            json!({
                "sessionKey": key,
                "createdUtc": s.created_utc,
                "lastSeenUtc": s.last_seen_utc.max(s.created_utc),
                "expiresUtc": lifetime.expires_utc(&s),
                "address": s.address,
                "client": s.client,
                "current": current.as_deref() == Some(key.as_str()),
            })
        })
        .collect();
    Ok(ok_json(json!({ "sessions": list })))
}

/// `DELETE /api/v1/sessions/{sessionKey}`: ends one of the caller's sessions.
pub async fn end_session(
    state: State,
    auth: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = path.into_inner();
    if !state.store.end_session_by_key(auth.id(), &key)? {
        return Err(ApiError::NotFound(format!("You have no session {key}")));
    }
    state.store.durable().await?;
    if let Some(tag) = crate::actors::session::login_tag_of_key(&key) {
        state
            .directory
            .close_logins(auth.id(), Some(tag), None, "login session ended");
    }
    Ok(ok_json(json!({ "endedSessions": 1 })))
}

#[derive(Deserialize)]
pub struct EndAllQuery {
    #[serde(default)]
    others: bool,
}

/// `DELETE /api/v1/sessions` (`?others=true` keeps the one in use): log out everywhere.
pub async fn end_all_sessions(
    state: State,
    auth: Authed,
    query: web::Query<EndAllQuery>,
) -> Result<HttpResponse, ApiError> {
    let keep = if query.others {
        auth.session_id.as_deref()
    } else {
        None
    };
    let ended = state.store.end_sessions_except(auth.id(), keep)?;
    state.store.durable().await?;
    let keep = keep.map(crate::actors::session::login_tag);
    state
        .directory
        .close_logins(auth.id(), None, keep, "logged out everywhere");
    tracing::info!(target: "confab::audit", user_id = auth.id(), ended_sessions = ended, "logged out everywhere");
    Ok(ok_json(json!({ "endedSessions": ended })))
}
