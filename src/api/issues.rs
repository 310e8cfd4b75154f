//! Issues and meetings across rooms (extensions): the Virola `Issue` and `Meeting` message
//! types, listed from every room the caller belongs to, with the filters a board needs, and
//! meetings as iCalendar. Changing an issue stays the message edit (`PUT
//! /api/v1/messages/{id}`) with its permissions; these endpoints only read.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::Authed;
use super::error::ApiError;
use super::{ok_json, AppState, State};
use crate::model::{IssueStatus, IssueType, MessageId, Priority, RoomId, UserId};
use crate::storage::MessageRecord;

/// At most this many issues or meetings in one answer (`limit` lowers it).
const MAX_LIST: usize = 1000;
/// Without `to`, meetings are listed this far ahead (90 days).
const DEFAULT_MEETING_WINDOW_MS: u64 = 90 * 24 * 3600 * 1000;

/// Comma-separated values of one query parameter (`status=ToDo,InProgress`).
fn list_of<T: serde::de::DeserializeOwned>(
    name: &str,
    value: &Option<String>,
) -> Result<Vec<T>, ApiError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            serde_json::from_value(serde_json::Value::String(v.to_string()))
                .map_err(|_| ApiError::BadRequest(format!("Unknown {name} \"{v}\"")))
        })
        .collect()
}

/// The rooms a listing covers: the one asked for (the caller must belong to it), or all of
/// the caller's rooms.
fn rooms_in_scope(
    state: &AppState,
    auth: &Authed,
    room_id: Option<RoomId>,
) -> Result<Vec<RoomId>, ApiError> {
    match room_id {
        Some(id) => {
            super::rooms::visible_room(state, auth, id)?;
            Ok(vec![id])
        }
        None => Ok(state.store.rooms_of_user(auth.id())?),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssueQuery {
    status: Option<String>,
    /// A user id, or `me`.
    assignee: Option<String>,
    room_id: Option<RoomId>,
    #[serde(rename = "type")]
    issue_type: Option<String>,
    priority: Option<String>,
    sort: Option<String>,
    limit: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum IssueSort {
    Newest,
    Oldest,
    Updated,
    Priority,
}

/// `GET /api/v1/issues`: the issues the caller can see, filtered, with counts per status
/// over every filter but `status` (a board's column headings).
pub async fn list(
    state: State,
    auth: Authed,
    query: web::Query<IssueQuery>,
) -> Result<HttpResponse, ApiError> {
    let statuses: Vec<IssueStatus> = list_of("status", &query.status)?;
    let types: Vec<IssueType> = list_of("type", &query.issue_type)?;
    let priorities: Vec<Priority> = list_of("priority", &query.priority)?;
    let assignee: Option<UserId> = match query.assignee.as_deref() {
        None | Some("") => None,
        Some("me") => Some(auth.id()),
        Some(v) => Some(v.parse().map_err(|_| {
            ApiError::BadRequest(format!("assignee must be a user id or \"me\", not \"{v}\""))
        })?),
    };
    let sort = match query.sort.as_deref() {
        None | Some("newest") => IssueSort::Newest,
        Some("oldest") => IssueSort::Oldest,
        Some("updated") => IssueSort::Updated,
        Some("priority") => IssueSort::Priority,
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "sort must be newest, oldest, updated or priority, not \"{s}\""
            )))
        }
    };
    let limit = query.limit.unwrap_or(MAX_LIST).clamp(1, MAX_LIST);

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut found: Vec<MessageRecord> = Vec::new();
    for room in rooms_in_scope(&state, &auth, query.room_id)? {
        for id in state.store.room_issue_ids(room)? {
            let Some(m) = state.store.message(id)? else {
                continue;
            };
            let Some(props) = m.issue_properties.as_ref() else {
                continue;
            };
            let wanted = (types.is_empty() || types.contains(&props.issue_type))
                && (priorities.is_empty() || priorities.contains(&m.priority))
                && assignee.is_none_or(|a| props.assignees.contains(&a));
            if !wanted {
                continue;
            }
            *counts.entry(status_name(props.status)).or_default() += 1;
            if statuses.is_empty() || statuses.contains(&props.status) {
                found.push(m);
            }
        }
    }
    match sort {
        IssueSort::Newest => found.sort_by_key(|m| std::cmp::Reverse(m.message_id)),
        IssueSort::Oldest => found.sort_by_key(|m| m.message_id),
        IssueSort::Updated => found.sort_by_key(|m| std::cmp::Reverse(m.last_modified_utc)),
        // Blocker first (the enum's order), newest first within a priority.
        IssueSort::Priority => {
            found.sort_by_key(|m| (m.priority as u8, std::cmp::Reverse(m.message_id)))
        }
    }
    let total = found.len();
    found.truncate(limit);
    let issues = found
        .iter()
        .map(|m| state.store.api_message(m))
        .collect::<Result<Vec<_>, _>>()?;
    for s in ALL_STATUSES {
        counts.entry(status_name(s)).or_default();
    }
    Ok(ok_json(json!({
        "issues": issues,
        "total": total,
        "countsByStatus": counts,
    })))
}

const ALL_STATUSES: [IssueStatus; 6] = [
    IssueStatus::Backlog,
    IssueStatus::ToDo,
    IssueStatus::InProgress,
    IssueStatus::ToVerify,
    IssueStatus::Done,
    IssueStatus::Declined,
];

fn status_name(s: IssueStatus) -> String {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{s:?}"),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeetingQuery {
    from: Option<u64>,
    to: Option<u64>,
    room_id: Option<RoomId>,
}

/// The caller's meetings that overlap `[from, to]` (by default from now, 90 days ahead),
/// earliest first.
fn meetings_in(
    state: &AppState,
    auth: &Authed,
    query: &MeetingQuery,
) -> Result<Vec<MessageRecord>, ApiError> {
    let from = query.from.unwrap_or_else(crate::now_ms);
    let to = query
        .to
        .unwrap_or_else(|| from.saturating_add(DEFAULT_MEETING_WINDOW_MS));
    if to < from {
        return Err(ApiError::BadRequest("to must not be before from".into()));
    }
    let mut found = Vec::new();
    for room in rooms_in_scope(state, auth, query.room_id)? {
        for id in state.store.room_meeting_ids(room)? {
            let Some(m) = state.store.message(id)? else {
                continue;
            };
            let Some(p) = m.meeting_properties.as_ref() else {
                continue;
            };
            let end = p.time_utc.saturating_add(p.duration);
            if p.time_utc <= to && end >= from {
                found.push(m);
            }
        }
    }
    found.sort_by_key(|m| {
        (
            m.meeting_properties.as_ref().map_or(0, |p| p.time_utc),
            m.message_id,
        )
    });
    found.truncate(MAX_LIST);
    Ok(found)
}

/// `GET /api/v1/meetings?from=MS&to=MS[&roomId=N]`.
pub async fn meetings(
    state: State,
    auth: Authed,
    query: web::Query<MeetingQuery>,
) -> Result<HttpResponse, ApiError> {
    let found = meetings_in(&state, &auth, &query)?;
    let meetings = found
        .iter()
        .map(|m| state.store.api_message(m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ok_json(json!({ "meetings": meetings })))
}

/// `GET /api/v1/meetings.ics`: the caller's upcoming meetings as one calendar.
pub async fn calendar(
    state: State,
    auth: Authed,
    query: web::Query<MeetingQuery>,
) -> Result<HttpResponse, ApiError> {
    let found = meetings_in(&state, &auth, &query)?;
    Ok(ics_response(&state, &found, "meetings.ics"))
}

/// `GET /api/v1/meetings/{messageId}.ics`: one meeting (the caller must be in its room).
pub async fn one_calendar(
    state: State,
    auth: Authed,
    path: web::Path<MessageId>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let m = state
        .store
        .message(id)?
        .ok_or_else(|| ApiError::NotFound(format!("No message {id}")))?;
    super::rooms::visible_room(&state, &auth, m.room_id)?;
    if m.meeting_properties.is_none() {
        return Err(ApiError::BadRequest(format!(
            "Message {id} is not a meeting"
        )));
    }
    Ok(ics_response(&state, &[m], &format!("meeting-{id}.ics")))
}

fn ics_response(state: &AppState, meetings: &[MessageRecord], file: &str) -> HttpResponse {
    let room_names: BTreeMap<RoomId, String> = meetings
        .iter()
        .filter_map(|m| {
            let room = state.store.room(m.room_id).ok().flatten()?;
            Some((m.room_id, room.name))
        })
        .collect();
    let text = crate::calendar::meetings_ics(meetings, &room_names);
    HttpResponse::Ok()
        .content_type("text/calendar; charset=utf-8")
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        ))
        .body(text)
}
