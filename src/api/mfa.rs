//! Two-factor authentication (extension): TOTP (RFC 6238 — SHA-1, 6 digits, 30 s steps,
//! one step of clock skew either way) per user, with ten single-use recovery codes, and
//! `--require-mfa` to make it mandatory. The codes are checked by `totp-rs`; a code is
//! accepted once (the step it matched is remembered), and wrong codes count as failed
//! logins for throttling.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use totp_rs::{Algorithm, Secret, TOTP};

use super::auth::{self, Authed};
use super::error::ApiError;
use super::{ok_json, State};
use crate::storage::{StorageError, TotpRecord, UserRecord};

const STEP: u64 = 30;
const RECOVERY_CODES: usize = 10;

/// The TOTP of a base32 secret, labelled for an authenticator app.
fn totp(secret: &str, account: &str) -> Result<TOTP, ApiError> {
    let bytes = Secret::Encoded(secret.to_string())
        .to_bytes()
        .map_err(|e| ApiError::Internal(format!("stored TOTP secret unreadable: {e:?}")))?;
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        STEP,
        bytes,
        Some("Confab".into()),
        account.replace(':', "_"),
    )
    .map_err(|e| ApiError::Internal(format!("TOTP setup failed: {e}")))
}

/// The time step `code` is valid for (now, or one step before or after), if any.
fn matching_step(t: &TOTP, code: &str, now_secs: u64) -> Option<u64> {
    let now_step = now_secs / STEP;
    [now_step, now_step.saturating_sub(1), now_step + 1]
        .into_iter()
        .find(|&step| t.generate(step * STEP) == code)
}

fn recovery_hash(code: &str) -> String {
    hex::encode(crate::storage::token_hash(
        &code.trim().to_ascii_lowercase(),
    ))
}

/// What a login with `code` for `user` comes to.
pub enum Second {
    /// The user has no second factor.
    NotEnrolled,
    /// A good code (or recovery code): the record to store (step or code used up).
    Passed(Box<TotpRecord>),
    Missing,
    Wrong,
}

/// Checks the second factor of a login (after the password).
pub fn check(user: &UserRecord, code: Option<&str>) -> Result<Second, ApiError> {
    let Some(rec) = user.totp.as_ref().filter(|t| t.enabled) else {
        return Ok(Second::NotEnrolled);
    };
    let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
        return Ok(Second::Missing);
    };
    let mut rec = rec.clone();
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        let t = totp(&rec.secret, &user.user_name)?;
        return Ok(match matching_step(&t, code, crate::now_ms() / 1000) {
            Some(step) if step > rec.last_step => {
                rec.last_step = step;
                Second::Passed(Box::new(rec))
            }
            _ => Second::Wrong,
        });
    }
    let h = recovery_hash(code);
    match rec.recovery.iter().position(|r| *r == h) {
        Some(i) => {
            rec.recovery.remove(i);
            Ok(Second::Passed(Box::new(rec)))
        }
        None => Ok(Second::Wrong),
    }
}

fn own(auth: &Authed, id: u64) -> Result<(), ApiError> {
    if auth.id() != id {
        return Err(ApiError::Forbidden(
            "Two-factor authentication is set up by its owner".into(),
        ));
    }
    Ok(())
}

/// `POST /api/v1/users/{ownId}/totp`: starts (or restarts) enrolment: a new secret, not in
/// force until confirmed. Answers `{secret, otpauthUri}` for an authenticator app.
pub async fn begin(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    own(&auth, id)?;
    if auth.user.totp.as_ref().is_some_and(|t| t.enabled) {
        return Err(ApiError::Conflict(
            "Two-factor authentication is already on; turn it off first".into(),
        ));
    }
    // 160 bits, as RFC 4226 recommends for HMAC-SHA1.
    let mut raw = [0u8; 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut raw);
    let secret = Secret::Raw(raw.to_vec()).to_encoded().to_string();
    let t = totp(&secret, &auth.user.user_name)?;
    let record = TotpRecord {
        secret: secret.clone(),
        enabled: false,
        recovery: Vec::new(),
        last_step: 0,
    };
    state.store.update_user(id, |u| {
        u.totp = Some(record.clone());
        Ok(())
    })?;
    state.store.durable().await?;
    Ok(ok_json(
        json!({ "secret": secret, "otpauthUri": t.get_url() }),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CodeBody {
    code: String,
}

/// `POST /api/v1/users/{ownId}/totp/confirm` `{"code"}`: turns it on with a code from the
/// app; answers the ten recovery codes, shown this once.
pub async fn confirm(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    body: web::Json<CodeBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    own(&auth, id)?;
    let Some(pending) = auth.user.totp.clone().filter(|t| !t.enabled) else {
        return Err(ApiError::Conflict(
            "Nothing to confirm: start with POST /api/v1/users/{id}/totp".into(),
        ));
    };
    let t = totp(&pending.secret, &auth.user.user_name)?;
    let Some(step) = matching_step(&t, body.code.trim(), crate::now_ms() / 1000) else {
        return Err(ApiError::BadRequest(
            "That code does not match; check the app's clock and try the next code".into(),
        ));
    };
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| auth::random_hex(5)).collect();
    let record = TotpRecord {
        enabled: true,
        recovery: codes.iter().map(|c| recovery_hash(c)).collect(),
        last_step: step,
        ..pending
    };
    state.store.update_user(id, |u| {
        u.totp = Some(record.clone());
        Ok(())
    })?;
    state.store.durable().await?;
    tracing::info!(target: "confab::audit", user_id = id, "two-factor authentication turned on");
    Ok(ok_json(json!({ "enabled": true, "recoveryCodes": codes })))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OffBody {
    #[serde(default)]
    code: Option<String>,
}

/// `DELETE /api/v1/users/{userId}/totp`: turns it off — the owner with a current code or a
/// recovery code (`{"code"}`), an administrator for anyone without one (a lost phone).
pub async fn disable(
    state: State,
    auth: Authed,
    req: HttpRequest,
    path: web::Path<u64>,
    body: Option<web::Json<OffBody>>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let code = body.and_then(|b| b.into_inner().code);
    if id != auth.id() || (auth.user.is_admin && code.is_none()) {
        if !auth.user.is_admin {
            return Err(ApiError::Forbidden(
                "Only an administrator may do this".into(),
            ));
        }
    } else {
        let name = auth.user.user_name.to_lowercase();
        let addr = state.client_ip(&req);
        state.login_throttle.gate(&name, addr).await?;
        match check(&auth.user, code.as_deref())? {
            Second::Passed(_) | Second::NotEnrolled => {}
            Second::Missing => {
                return Err(ApiError::BadRequest(
                    "Give a current code or a recovery code: {\"code\": \"123456\"}".into(),
                ))
            }
            Second::Wrong => {
                state.login_throttle.failed(&name, addr);
                return Err(ApiError::Forbidden("The code is invalid".into()));
            }
        }
    }
    let user = state
        .store
        .update_user(id, |u| {
            u.totp = None;
            Ok(())
        })?
        .ok_or_else(|| ApiError::NotFound(format!("User {id} not found")))?;
    state.store.durable().await?;
    tracing::info!(target: "confab::audit", by = auth.id(), user_id = id, "two-factor authentication turned off");
    Ok(ok_json(json!({ "userId": user.user_id, "enabled": false })))
}

/// Stores what a passed second factor used up (the step, or a recovery code), in the same
/// compare-and-swap as the check it was made against: two logins with one code, at once,
/// cannot both pass.
pub fn spend(state: &State, user: &UserRecord, rec: TotpRecord) -> Result<(), StorageError> {
    let before = user.totp.clone();
    state.store.update_user(user.user_id, |u| {
        if u.totp != before {
            return Err(StorageError::Conflict(
                "That one-time code was just used; wait for the next one".into(),
            ));
        }
        u.totp = Some(rec.clone());
        Ok(())
    })?;
    Ok(())
}
