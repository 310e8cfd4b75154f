//! Login, logout, status and Web API tokens.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{self, Authed, SESSION_COOKIE};
use super::error::{ApiError, NO_CREDENTIALS};
use super::mfa::{self, Second};
use super::{ok_json, State};
use crate::model::UserStatus;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginBody {
    user_name: String,
    password: String,
    /// The one-time code (or a recovery code) of a user with two-factor authentication.
    #[serde(default)]
    totp_code: Option<String>,
}

const INVALID_LOGIN: &str = "The username or password is invalid.";
/// For a client that does not know two-factor authentication: what to send.
pub const MFA_REQUIRED: &str = "This account uses two-factor authentication: send the code from the authenticator app (or a recovery code) as totpCode along with userName and password";

fn session_cookie(value: String) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, value)
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish()
}

/// `POST /api/v1/login`
pub async fn login(
    state: State,
    req: HttpRequest,
    body: web::Json<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    let LoginBody {
        user_name,
        password,
        totp_code,
    } = body.into_inner();
    let user_key = user_name.to_lowercase();
    let addr = state.client_ip(&req);
    state.login_throttle.gate(&user_key, addr).await?;
    let user = state.store.user_by_name(&user_name)?;
    // Verify against a dummy hash when the user is unknown, so timing does not tell.
    // (The dummy hash is made on the blocking pool too: the first unknown name hashes.)
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let ok = auth::with_hash_slot(&state, move || {
        auth::verify_password(&password, hash.as_deref().unwrap_or_else(|| dummy_hash()))
    })
    .await?;
    let user = match (ok, user) {
        (true, Some(u)) => u,
        _ => {
            state.login_throttle.failed(&user_key, addr);
            tracing::info!(target: "confab::audit", user = %user_key, %addr, "login failed");
            return Err(ApiError::Unauthorized(INVALID_LOGIN.into()));
        }
    };
    match user.status {
        UserStatus::Active => {}
        UserStatus::Suspended => {
            return Err(ApiError::Unauthorized(
                "This account is suspended; ask an administrator to reactivate it.".into(),
            ))
        }
        UserStatus::DeletionInProgress => {
            return Err(ApiError::Unauthorized("This account was removed.".into()))
        }
    }
    match mfa::check(&user, totp_code.as_deref())? {
        Second::NotEnrolled => {}
        Second::Passed(rec) => {
            mfa::spend(&state, &user, *rec).map_err(|e| ApiError::Unauthorized(e.to_string()))?
        }
        Second::Missing => return Err(ApiError::Unauthorized(MFA_REQUIRED.into())),
        Second::Wrong => {
            state.login_throttle.failed(&user_key, addr);
            tracing::info!(target: "confab::audit", user = %user_key, %addr, "login failed: wrong one-time code");
            return Err(ApiError::Unauthorized(
                "The one-time code is invalid.".into(),
            ));
        }
    }
    state.login_throttle.succeeded(&user_key, addr);
    tracing::info!(target: "confab::audit", user = %user_key, %addr, user_id = user.user_id, "login");
    let session_id = auth::random_hex(24);
    let client: String = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect();
    state
        .store
        .create_session_from(user.user_id, &session_id, addr.to_string(), client)?;
    state.store.durable().await?;
    let mut resp = ok_json(json!({ "userId": user.user_id, "userSessionId": session_id }));
    resp.add_cookie(&session_cookie(session_id))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(resp)
}

/// argon2id of a random secret: verifying an unknown user against it costs what a real
/// check costs, so response time does not reveal which user names exist.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| auth::hash_password(&auth::random_hex(16)).unwrap_or_default())
}

/// `POST /api/v1/logout`
pub async fn logout(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let cred =
        auth::credential(&req).ok_or_else(|| ApiError::Unauthorized(NO_CREDENTIALS.into()))?;
    // Safe to call with an expired session: the cookie is cleared either way.
    let owner = state.store.latest().session(&cred)?.map(|s| s.user_id);
    if state.store.delete_session(&cred)? {
        state.store.durable().await?;
    }
    // The session's open event streams end with it.
    if let Some(user) = owner {
        let tag = crate::actors::session::login_tag(&cred);
        state
            .directory
            .close_logins(user, Some(tag), None, "logged out");
    }
    let mut resp = ok_json(json!({}));
    let mut gone = session_cookie(String::new());
    gone.make_removal();
    resp.add_cookie(&gone)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(resp)
}

/// `GET /api/v1/status`
pub async fn status(auth: Authed) -> HttpResponse {
    ok_json(json!({ "userId": auth.id(), "userSessionId": auth.session_id.unwrap_or_default() }))
}

/// `POST /api/v1/web-api-token` (extension): a new token; the previous one stops working.
pub async fn create_token(state: State, auth: Authed) -> Result<HttpResponse, ApiError> {
    let token = auth::random_hex(32);
    state.store.replace_api_token(auth.id(), &token)?;
    state.store.durable().await?;
    Ok(ok_json(json!({ "token": token, "userId": auth.id() })))
}
