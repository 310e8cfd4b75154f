//! Authentication: the `VirolaUserSessionId` cookie or an `Authorization: Bearer` header
//! (a Web API token, or a session id), and password hashing with argon2id (throttling of
//! failed logins is in `throttle`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

use super::error::{ApiError, BAD_CREDENTIALS, NO_CREDENTIALS};
use super::AppState;
use crate::model::UserStatus;
use crate::storage::UserRecord;

pub const SESSION_COOKIE: &str = "VirolaUserSessionId";

/// A login session that ended by itself (`--session-idle`, `--session-max`).
pub const SESSION_EXPIRED: &str = "The login session has expired; log in again";

/// An authenticated request: the user, and the session id if one was presented.
pub struct Authed {
    pub user: UserRecord,
    pub session_id: Option<String>,
}

impl Authed {
    pub fn id(&self) -> u64 {
        self.user.user_id
    }
}

/// The credential a request carries, if any.
pub fn credential(req: &HttpRequest) -> Option<String> {
    if let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        if let Ok(s) = h.to_str() {
            if let Some(t) = s
                .strip_prefix("Bearer ")
                .or_else(|| s.strip_prefix("bearer "))
            {
                return Some(t.trim().to_string());
            }
        }
    }
    req.cookie(SESSION_COOKIE).map(|c| c.value().to_string())
}

pub fn authenticate(state: &AppState, req: &HttpRequest) -> Result<Authed, ApiError> {
    let cred = credential(req).ok_or_else(|| ApiError::Unauthorized(NO_CREDENTIALS.into()))?;
    if cred.is_empty() || cred.len() > 256 {
        return Err(ApiError::Unauthorized(BAD_CREDENTIALS.into()));
    }
    let (user_id, session_id) = match state.store.session(&cred)? {
        Some(s) => {
            let now = crate::now_ms();
            if state.limits.session_lifetime.expired(&s, now) {
                // Not waited for: the session is refused from now on either way.
                state.store.delete_session(&cred)?;
                return Err(ApiError::Unauthorized(SESSION_EXPIRED.into()));
            }
            if now.saturating_sub(s.last_seen_utc) >= crate::storage::TOUCH_EVERY_MS {
                state.store.touch_session(&cred, now)?;
            }
            (s.user_id, Some(cred))
        }
        None => match state.store.token_user(&cred)? {
            Some(u) => (u, None),
            None => return Err(ApiError::Unauthorized(BAD_CREDENTIALS.into())),
        },
    };
    let user = state
        .store
        .user(user_id)?
        .ok_or_else(|| ApiError::Unauthorized(BAD_CREDENTIALS.into()))?;
    actix_web::HttpMessage::extensions_mut(req).insert(super::access_log::AccessUser(user.user_id));
    // The connection is no longer a stranger's (see `listener`).
    if let Some(ticket) = req.conn_data::<std::sync::Arc<crate::listener::Ticket>>() {
        ticket.authenticated();
    }
    if state.limits.require_mfa
        && !user.totp.as_ref().is_some_and(|t| t.enabled)
        && !enrolment_path(req.path())
    {
        return Err(ApiError::Forbidden(format!(
            "This server requires two-factor authentication: turn it on first (POST /api/v1/users/{}/totp, then .../totp/confirm; confab totp enable)",
            user.user_id
        )));
    }
    match user.status {
        UserStatus::Active => {}
        UserStatus::Suspended => {
            return Err(ApiError::Unauthorized("This account is suspended".into()))
        }
        UserStatus::DeletionInProgress => {
            return Err(ApiError::Unauthorized("This account was removed".into()))
        }
    }
    Ok(Authed { user, session_id })
}

/// What a user who has yet to enrol in required two-factor authentication may do.
fn enrolment_path(path: &str) -> bool {
    path == "/api/v1/status"
        || path == "/api/v1/logout"
        || path.ends_with("/totp")
        || path.ends_with("/totp/confirm")
        || path.ends_with("/password")
}

impl FromRequest for Authed {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<AppState>>() {
            Some(state) => authenticate(state, req).inspect(|a| {
                // A write is the user at work: it keeps them from turning `away`.
                if req.method() != actix_web::http::Method::GET {
                    state.presence.activity(a.id());
                }
            }),
            None => Err(ApiError::Internal("application state missing".into())),
        };
        Box::pin(async move { result })
    }
}

/// An authenticated administrator.
pub struct Admin(pub Authed);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fut = Authed::from_request(req, payload);
        Box::pin(async move {
            let a = fut.await?;
            if !a.user.is_admin {
                return Err(ApiError::Forbidden(
                    "Only an administrator may do this".into(),
                ));
            }
            Ok(Admin(a))
        })
    }
}

pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(format!("password hashing failed: {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Runs argon2 work on the hashing threads, at most two at a time (more wait here).
pub async fn with_hash_slot<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = state
        .hash_slots
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    hashers()
        .lock()
        .map_err(|_| ApiError::Internal("hashing threads unavailable".into()))?
        .send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .map_err(|_| ApiError::Internal("hashing threads unavailable".into()))?;
    rx.await
        .map_err(|_| ApiError::Internal("a password hash failed".into()))
}

type HashJob = Box<dyn FnOnce() + Send>;

/// Two threads for argon2, at a lower scheduling priority (nice 10): a burst of logins
/// keeps them busy for a while, and the HTTP workers must stay responsive meanwhile
/// (on two cores, two hashes at normal priority would take both from every request).
fn hashers() -> &'static Mutex<std::sync::mpsc::Sender<HashJob>> {
    static HASHERS: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<HashJob>>> =
        std::sync::OnceLock::new();
    HASHERS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<HashJob>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..2 {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("confab-hash-{i}"))
                .spawn(move || {
                    // SAFETY: setpriority on this thread's own id; no memory involved.
                    unsafe {
                        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10)
                    };
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            // A panicking hash must not take the thread: the caller sees
                            // its channel dropped.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => return,
                        }
                    }
                });
        }
        Mutex::new(tx)
    })
}

/// A random secret as lower-case hex (sessions, tokens, generated passwords).
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }
}
