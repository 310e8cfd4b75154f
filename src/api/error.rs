//! Client-visible errors. Every failing request ends here and leaves as
//! `{"errorText": "...", "httpStatusCode": N}` with the same HTTP status, never as HTML or
//! a panic. Lower layers' errors are mapped in this one place.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::model::ErrorBody;
use crate::storage::StorageError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Unavailable(String),
    /// 507: the storage folder's disk is full.
    #[error("{0}")]
    InsufficientStorage(String),
    /// The room's actor was retiring: send the request to its successor (never reaches a
    /// client; if it did, it would be a 503).
    #[error("The room is restarting; try again")]
    Retry,
    #[error("{0}")]
    Internal(String),
}

/// The documented text for a request that carries no credentials at all.
pub const NO_CREDENTIALS: &str =
    "The Authorization HTTP-header or VirolaUserSessionId cookie expected";
/// The documented text for credentials the server does not know (or no longer accepts).
pub const BAD_CREDENTIALS: &str = "Wrong Bearer, please renew Web API Access Token";

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Retry => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error_text: self.to_string(),
            http_status_code: self.status().as_u16(),
        }
    }

    pub fn room_not_found(room_id: u64) -> Self {
        ApiError::NotFound(format!("Room {room_id} not found"))
    }

    pub fn message_not_found(message_id: u64) -> Self {
        ApiError::NotFound(format!("Message {message_id} not found"))
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Conflict(text) => ApiError::Conflict(text),
            StorageError::DiskFull(text) => ApiError::InsufficientStorage(text),
            StorageError::TooLarge(text) => ApiError::PayloadTooLarge(text),
            StorageError::Io {
                disk_full: true, ..
            } => ApiError::InsufficientStorage(format!(
                "Insufficient storage: the disk is full ({e}); nothing was stored."
            )),
            StorageError::Unavailable(text) => ApiError::Unavailable(text),
            StorageError::Db(sled::Error::Io(_)) | StorageError::Io { .. } => {
                tracing::error!("storage write failed: {e}");
                ApiError::Unavailable(format!(
                    "The server could not store the change ({e}); nothing was acknowledged. Try again later."
                ))
            }
            StorageError::Corrupt { what, detail } => {
                if log_allowed() {
                    tracing::error!("damaged record ({what}): {detail}");
                }
                ApiError::Internal(format!(
                    "A stored record is damaged ({what}); an administrator can list damaged records with confab-server check"
                ))
            }
            other => {
                tracing::error!("storage error: {other}");
                ApiError::Internal(format!("Internal storage error: {other}"))
            }
        }
    }
}

/// At most one log line per second for errors a client can trigger again and again.
fn log_allowed() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::now_ms();
    let last = LAST.load(Ordering::Relaxed);
    now.saturating_sub(last) >= 1000
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        tracing::warn!("actor unavailable: {e}");
        ApiError::Unavailable("The server is busy or restarting a component; try again.".into())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status()).json(self.body())
    }
}

/// Maps actix-web's JSON extractor failures (bad syntax, wrong types, size) to ApiError.
pub fn json_error(err: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::Overflow { limit } | E::OverflowKnownLength { limit, .. } => {
            ApiError::PayloadTooLarge(format!("Request body is larger than {limit} bytes"))
        }
        E::ContentType => {
            ApiError::BadRequest("Expected a JSON body (Content-Type: application/json)".into())
        }
        E::Deserialize(e) => ApiError::BadRequest(format!("Malformed JSON request: {e}")),
        E::Payload(e) => ApiError::BadRequest(format!("Could not read the request body: {e}")),
        other => ApiError::BadRequest(format!("Malformed JSON request: {other}")),
    }
}
