//! The same-site forgery guard. `SameSite=Strict` keeps the session cookie from other
//! *sites*, but a page on another port of the same host is the same site: without this
//! guard it could post as a logged-in member (`<form enctype="text/plain">`) or read their
//! live events (`new WebSocket(...)`).
//!
//! A request authenticated by the session cookie (no `Authorization` header) that changes
//! state, or opens the event WebSocket, must come from this server's own origin: its
//! `Origin` header (or, without one, its `Referer`) must be `https://` + the request's own
//! `Host`, or one of `--allowed-origin`. Reads with `GET` and every request with a bearer
//! token (scripts, the CLI) are unaffected. JSON bodies are only taken as
//! `application/json` (see `api::configure`), so a form cannot fake one.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;

use super::auth::SESSION_COOKIE;
use super::error::ApiError;
use super::State;

/// The middleware (on `/api/v1`).
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Err(e) = check(&req) {
        tracing::info!(
            target: "confab::audit",
            path = req.path(),
            peer = ?req.peer_addr().map(|a| a.ip()),
            "cross-origin request refused: {e}"
        );
        return Ok(req.error_response(e).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

fn check(req: &ServiceRequest) -> Result<(), ApiError> {
    let headers = req.headers();
    let cookie_auth =
        !headers.contains_key(header::AUTHORIZATION) && req.cookie(SESSION_COOKIE).is_some();
    if !cookie_auth {
        return Ok(());
    }
    let websocket = headers.contains_key(header::UPGRADE);
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe && !websocket {
        return Ok(());
    }
    let claimed = match headers.get(header::ORIGIN) {
        Some(o) => o.to_str().ok().map(str::to_string),
        None => headers
            .get(header::REFERER)
            .and_then(|r| r.to_str().ok())
            .and_then(origin_of_url),
    };
    let Some(claimed) = claimed else {
        return Err(ApiError::Forbidden(
            "A request authenticated by the session cookie must carry an Origin or Referer header of this server (scripts: use Authorization: Bearer)".into(),
        ));
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let allowed = req
        .app_data::<State>()
        .map(|s| s.allowed_origins.as_slice())
        .unwrap_or(&[]);
    if host.is_some_and(|h| same_origin(&claimed, h))
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(&claimed))
    {
        return Ok(());
    }
    let shown: String = claimed.chars().take(200).collect();
    Err(ApiError::Forbidden(format!(
        "Cross-origin request refused: {shown} is not this server's origin (an operator can allow it with --allowed-origin)"
    )))
}

/// `https://host[:port]` of a URL.
fn origin_of_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    Some(format!("{scheme}://{authority}"))
}

/// Whether `origin` is `https://` + `host` (ports compared with 443 as the default).
fn same_origin(origin: &str, host: &str) -> bool {
    let Some(authority) = origin.strip_prefix("https://") else {
        return false;
    };
    let norm = |a: &str| {
        let a = a.to_ascii_lowercase();
        a.strip_suffix(":443").map(str::to_string).unwrap_or(a)
    };
    !authority.is_empty() && norm(authority) == norm(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_by_scheme_host_and_port() {
        assert!(same_origin("https://chat.example.com", "chat.example.com"));
        assert!(same_origin(
            "https://chat.example.com",
            "Chat.Example.com:443"
        ));
        assert!(same_origin("https://localhost:7777", "localhost:7777"));
        assert!(!same_origin("https://localhost:7778", "localhost:7777"));
        assert!(!same_origin("http://localhost:7777", "localhost:7777"));
        assert!(!same_origin("null", "localhost:7777"));
        assert!(!same_origin("https://", ""));
        assert_eq!(
            origin_of_url("https://localhost:7777/rooms/1?x=2").as_deref(),
            Some("https://localhost:7777")
        );
        assert_eq!(origin_of_url("garbage"), None);
    }
}
