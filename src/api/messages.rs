//! Messages and comments: history pages, posting, deleting, read receipts.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::Authed;
use super::error::ApiError;
use super::rooms::visible_room;
use super::{idempotency_key, ok_json, AppState, State};
use crate::actors::room::{DeleteMessage, EditMessage, MarkRead, PostMessage, React};
use crate::model::{IssueProperties, IssueStatus, IssueType, MessageType, NewMessage};
use crate::storage::{Direction, MessageRecord};

/// `cursor`, `limit` and `direction` as the docs define them. A missing (or non-positive)
/// cursor starts at the newest message going backward and at the oldest going forward; a
/// missing limit returns everything in that direction.
#[derive(Deserialize)]
pub struct PageQuery {
    cursor: Option<i64>,
    limit: Option<i64>,
    direction: Option<String>,
}

impl PageQuery {
    fn parse(&self) -> Result<(Option<u64>, Option<usize>, Direction), ApiError> {
        let cursor = self.cursor.filter(|&c| c > 0).map(|c| c as u64);
        let limit = match self.limit {
            None | Some(0) => None,
            Some(l) if l < 0 => {
                return Err(ApiError::BadRequest(
                    "limit must be a positive number".into(),
                ))
            }
            Some(l) => Some(l as usize),
        };
        let direction = match self
            .direction
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("forward") => Direction::Forward,
            Some("backward") => Direction::Backward,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "direction must be \"backward\" or \"forward\", not \"{other}\""
                )))
            }
        };
        Ok((cursor, limit, direction))
    }
}

/// Checks the optional message-model fields and the text; fills defaults.
fn validate(state: &AppState, mut draft: NewMessage) -> Result<NewMessage, ApiError> {
    if draft.content.trim().is_empty() {
        return Err(ApiError::BadRequest("content must not be empty".into()));
    }
    if draft.content.len() > state.limits.max_message_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "content is longer than {} bytes",
            state.limits.max_message_bytes
        )));
    }
    let kind = draft.message_type.unwrap_or_default();
    if draft.issue_properties.is_some() && kind != MessageType::Issue {
        return Err(ApiError::BadRequest(
            "issueProperties need messageType \"Issue\"".into(),
        ));
    }
    if draft.meeting_properties.is_some() && kind != MessageType::Meeting {
        return Err(ApiError::BadRequest(
            "meetingProperties need messageType \"Meeting\"".into(),
        ));
    }
    if kind == MessageType::Issue && draft.issue_properties.is_none() {
        draft.issue_properties = Some(IssueProperties {
            issue_type: IssueType::Task,
            status: IssueStatus::ToDo,
            assignees: Vec::new(),
        });
    }
    if kind == MessageType::Meeting && draft.meeting_properties.is_none() {
        return Err(ApiError::BadRequest(
            "messageType \"Meeting\" needs meetingProperties".into(),
        ));
    }
    if let Some(issue) = &draft.issue_properties {
        for &a in &issue.assignees {
            if state.store.user(a)?.is_none() {
                return Err(ApiError::NotFound(format!("Assignee {a} not found")));
            }
        }
    }
    Ok(draft)
}

/// The message, if it exists and the caller is a member of its room.
pub(super) fn visible_message(
    state: &AppState,
    auth: &Authed,
    message_id: u64,
) -> Result<MessageRecord, ApiError> {
    let Some(record) = state.store.message(message_id)? else {
        return Err(missing_message(state, auth, message_id)?);
    };
    visible_room(state, auth, record.room_id)?;
    Ok(record)
}

/// 410 for a deleted message of a room the caller belongs to, 404 otherwise (strangers
/// learn nothing from guessing ids).
pub fn missing_message(
    state: &AppState,
    auth: &Authed,
    message_id: u64,
) -> Result<ApiError, ApiError> {
    if let Some(t) = state.store.tombstone(message_id)? {
        if state.store.member(t.room_id, auth.id())?.is_some() {
            return Ok(ApiError::Gone(format!("Message {message_id} was deleted")));
        }
    }
    Ok(ApiError::message_not_found(message_id))
}

/// Hands a validated message (or comment) to its room's actor; answers once it is durable.
async fn post_through_room(
    state: &AppState,
    req: &HttpRequest,
    room_id: u64,
    auth: &Authed,
    draft: NewMessage,
) -> Result<HttpResponse, ApiError> {
    let idempotency = idempotency_key(req, auth.id())?;
    let message = state
        .in_room(
            room_id,
            PostMessage {
                user_id: auth.id(),
                is_admin: auth.user.is_admin,
                draft,
                idempotency,
            },
        )
        .await?;
    crate::metrics::MESSAGES_POSTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(ok_json(
        json!({ "messageId": message.message_id, "message": message }),
    ))
}

/// `GET /api/v1/rooms/{roomId}/messages`
pub async fn history(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let room_id = path.into_inner();
    let (cursor, limit, direction) = query.parse()?;
    visible_room(&state, &auth, room_id)?;
    let Some(limit) = limit else {
        let tail = format!(",\"roomId\":{room_id},\"httpStatusCode\":200}}");
        return Ok(stream_messages(
            state.store.clone(),
            Thread::Room(room_id),
            cursor,
            direction,
            tail,
        ));
    };
    let ids = state
        .store
        .room_message_ids(room_id, cursor, Some(limit), direction)?;
    let messages = state.store.api_messages(&ids)?;
    Ok(ok_json(json!({ "messages": messages, "roomId": room_id })))
}

/// Whose messages a streamed answer lists.
#[derive(Clone, Copy)]
enum Thread {
    Room(u64),
    Comments(u64),
}

/// Messages read and serialized this many at a time by a streamed answer.
const STREAM_PAGE: usize = 128;

/// A history answer without `limit`, streamed: `{"messages":[…]` then `tail`. Messages are
/// read a page at a time as the client takes the body, so a million-message room costs a
/// page of memory, not the whole room. Both directions list messages oldest first (as the
/// paged answer does); backward means "older than the cursor".
fn stream_messages(
    store: std::sync::Arc<crate::storage::Store>,
    thread: Thread,
    cursor: Option<u64>,
    direction: Direction,
    tail: String,
) -> HttpResponse {
    let (after, before) = match direction {
        Direction::Forward => (cursor, None),
        Direction::Backward => (None, cursor),
    };
    // (next page starts after this id, first message still to write, done)
    let state = (after, true, false);
    let body = futures_util::stream::unfold(state, move |(after, first, done)| {
        let store = store.clone();
        let tail = tail.clone();
        async move {
            if done {
                return None;
            }
            let page = match thread {
                Thread::Room(room) => {
                    store.room_message_ids(room, after, Some(STREAM_PAGE), Direction::Forward)
                }
                Thread::Comments(parent) => {
                    store.comment_page_ids(parent, after, Some(STREAM_PAGE), Direction::Forward)
                }
            };
            let chunk = page.and_then(|mut ids| {
                ids.retain(|&id| before.is_none_or(|b| id < b));
                let messages = store.api_messages(&ids)?;
                Ok((ids.last().copied(), messages))
            });
            let (last, messages) = match chunk {
                Ok(c) => c,
                Err(e) => {
                    // The status is sent already: end the body short so the client sees
                    // a broken answer rather than a wrong one.
                    tracing::error!("streamed history failed: {e}");
                    let err = std::io::Error::other(e.to_string());
                    return Some((Err(err), (after, first, true)));
                }
            };
            let mut out = Vec::with_capacity(messages.len() * 256 + 32);
            if first {
                out.extend_from_slice(b"{\"messages\":[");
            }
            for (i, m) in messages.iter().enumerate() {
                if !(first && i == 0) {
                    out.push(b',');
                }
                if let Err(e) = serde_json::to_writer(&mut out, m) {
                    return Some((Err(std::io::Error::other(e)), (after, first, true)));
                }
            }
            let first = first && messages.is_empty();
            match last {
                Some(last) if messages.len() <= STREAM_PAGE => {
                    Some((Ok(bytes::Bytes::from(out)), (Some(last), first, false)))
                }
                _ => {
                    out.push(b']');
                    out.extend_from_slice(tail.as_bytes());
                    Some((Ok(bytes::Bytes::from(out)), (after, first, true)))
                }
            }
        }
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body)
}

/// `POST /api/v1/rooms/{roomId}/messages`: answers once the message is on disk. With an
/// `Idempotency-Key` used before by the caller, answers that request's message instead.
pub async fn post(
    state: State,
    auth: Authed,
    req: HttpRequest,
    path: web::Path<u64>,
    body: web::Json<NewMessage>,
) -> Result<HttpResponse, ApiError> {
    let room_id = path.into_inner();
    let draft = validate(&state, body.into_inner())?;
    post_through_room(&state, &req, room_id, &auth, draft).await
}

/// `GET /api/v1/messages/{messageId}` (extension)
pub async fn get_one(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let record = visible_message(&state, &auth, path.into_inner())?;
    let message = state.store.api_message(&record)?;
    Ok(ok_json(json!({ "message": message })))
}

/// `DELETE /api/v1/messages/{messageId}`
pub async fn delete(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let message_id = path.into_inner();
    let Some(record) = state.store.message(message_id)? else {
        return Err(missing_message(&state, &auth, message_id)?);
    };
    state
        .in_room(
            record.room_id,
            DeleteMessage {
                user_id: auth.id(),
                is_admin: auth.user.is_admin,
                message_id,
            },
        )
        .await?;
    Ok(ok_json(json!({})))
}

/// `POST /api/v1/messages/{messageId}/read`
pub async fn mark_read(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let record = visible_message(&state, &auth, path.into_inner())?;
    state
        .in_room(
            record.room_id,
            MarkRead {
                user_id: auth.id(),
                message_id: record.message_id,
            },
        )
        .await?;
    Ok(ok_json(json!({})))
}

/// `GET /api/v1/messages/{messageId}/comments`
pub async fn comments(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (cursor, limit, direction) = query.parse()?;
    let parent = visible_message(&state, &auth, path.into_inner())?;
    let Some(limit) = limit else {
        let tail = format!(
            ",\"roomId\":{},\"parentMessageId\":{},\"httpStatusCode\":200}}",
            parent.room_id, parent.message_id
        );
        return Ok(stream_messages(
            state.store.clone(),
            Thread::Comments(parent.message_id),
            cursor,
            direction,
            tail,
        ));
    };
    let limit = Some(limit);
    let ids = state
        .store
        .comment_page_ids(parent.message_id, cursor, limit, direction)?;
    let messages = state.store.api_messages(&ids)?;
    Ok(ok_json(json!({
        "messages": messages,
        "roomId": parent.room_id,
        "parentMessageId": parent.message_id,
    })))
}

/// `POST /api/v1/messages/{messageId}/comments`
pub async fn post_comment(
    state: State,
    auth: Authed,
    req: HttpRequest,
    path: web::Path<u64>,
    body: web::Json<NewMessage>,
) -> Result<HttpResponse, ApiError> {
    let parent = visible_message(&state, &auth, path.into_inner())?;
    let mut draft = validate(&state, body.into_inner())?;
    draft.parent_message_id = Some(parent.message_id);
    post_through_room(&state, &req, parent.room_id, &auth, draft).await
}

/// `PUT /api/v1/messages/{messageId}` (extension): edit the text (and optionally the model
/// fields) — the author, a room moderator or an administrator. Members get
/// `TextMessagesUpdated`.
pub async fn edit(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    body: web::Json<NewMessage>,
) -> Result<HttpResponse, ApiError> {
    let message_id = path.into_inner();
    let draft = validate(&state, body.into_inner())?;
    if draft.parent_message_id.is_some() {
        return Err(ApiError::BadRequest(
            "parentMessageId cannot be changed".into(),
        ));
    }
    let record = visible_message(&state, &auth, message_id)?;
    let message = state
        .in_room(
            record.room_id,
            EditMessage {
                user_id: auth.id(),
                is_admin: auth.user.is_admin,
                message_id,
                draft,
            },
        )
        .await?;
    Ok(ok_json(
        json!({ "messageId": message.message_id, "message": message }),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReactionBody {
    emoji: String,
    /// `false` removes the reaction; default `true`.
    #[serde(default = "default_true")]
    add: bool,
}

fn default_true() -> bool {
    true
}

/// `POST /api/v1/messages/{messageId}/reactions` (extension): `{"emoji", "add"?}`.
pub async fn react(
    state: State,
    auth: Authed,
    path: web::Path<u64>,
    body: web::Json<ReactionBody>,
) -> Result<HttpResponse, ApiError> {
    let ReactionBody { emoji, add } = body.into_inner();
    let emoji = emoji.trim().to_string();
    if emoji.is_empty()
        || emoji.len() > 32
        || emoji.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::BadRequest(
            "emoji must be 1-32 bytes without spaces or control characters".into(),
        ));
    }
    let record = visible_message(&state, &auth, path.into_inner())?;
    let message = state
        .in_room(
            record.room_id,
            React {
                user_id: auth.id(),
                is_admin: auth.user.is_admin,
                message_id: record.message_id,
                emoji,
                on: add,
            },
        )
        .await?;
    Ok(ok_json(
        json!({ "messageId": message.message_id, "message": message }),
    ))
}
