//! `GET /api/v1/events`: upgrade to a WebSocket and hand it to an event-session actor.

use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::authenticate;
use super::error::ApiError;
use super::State;
use crate::actors::directory::Extensions;
use crate::actors::session::ConnSocket;
use crate::actors::EventSession;

/// Confab extensions the client takes (comma-separated, e.g. `readDeltas`).
#[derive(serde::Deserialize)]
pub struct EventsQuery {
    extensions: Option<String>,
}

pub async fn events(
    state: State,
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let auth = authenticate(&state, &req)?;
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::BadRequest(format!("WebSocket upgrade expected: {e}")))?;
    // The session's queue is the response body (see `EventSession`); actix-ws's own
    // per-message channel is not used.
    drop(session);
    let body = EventSession::start(
        stream,
        req.conn_data::<ConnSocket>().copied(),
        auth.id(),
        auth.session_id
            .as_deref()
            .map_or(0, crate::actors::session::login_tag),
        state.directory.clone(),
        state.limits.session_queue,
        state.limits.max_ws_frame,
        state.voice.router.clone(),
        state.presence.clone(),
        Extensions::parse(query.extensions.as_deref().unwrap_or("")),
    );
    Ok(response
        .set_body(actix_web::body::BodyStream::new(body))
        .map_into_boxed_body())
}
