//! `GET /api/v1/sync` (extension): what changed for the caller since a cursor, so a client
//! can keep a local copy of exactly what its user may see.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::Authed;
use super::error::ApiError;
use super::{ok_json, State};
use crate::storage::Change;

#[derive(Deserialize)]
pub struct SyncQuery {
    cursor: Option<u64>,
    limit: Option<usize>,
}

/// With no cursor (or 0): every room of the caller as `roomsAdded` (fetch their history
/// with the messages API) and the cursor to continue from. With a cursor: one page of at
/// most `limit` (default 500, at most 1000) log entries after it, reduced to what the
/// caller may see now: rooms added (fetch their whole history), removed (drop them and their
/// local history), changed; messages created or changed (current content) and deleted.
pub async fn sync(
    state: State,
    auth: Authed,
    query: web::Query<SyncQuery>,
) -> Result<HttpResponse, ApiError> {
    let me = auth.id();
    let store = &state.store;
    let limit = query.limit.unwrap_or(500).clamp(1, 1000);
    let room_views =
        |ids: &mut dyn Iterator<Item = u64>| -> Result<Vec<crate::model::Room>, ApiError> {
            let mut out = Vec::new();
            for id in ids {
                if store.member(id, me)?.is_none() {
                    continue;
                }
                if let Some(room) = store.room(id)? {
                    out.push(store.room_view(&room, me)?);
                }
            }
            Ok(out)
        };
    let cursor = query.cursor.unwrap_or(0);
    // A cursor older than the log's horizon cannot be continued: the full answer again,
    // marked so the client knows to drop its copy and start over.
    let resync = cursor != 0 && cursor < store.changes_pruned_through()?;
    if cursor == 0 || resync {
        // Read the cursor first: anything after it will come in the next page.
        let cursor = store.last_change_seq();
        let rooms = room_views(&mut store.rooms_of_user(me)?.into_iter())?;
        return Ok(ok_json(json!({
            "cursor": cursor, "hasMore": false, "full": true, "resync": resync,
            "roomsAdded": rooms, "roomsRemoved": [], "roomsChanged": [],
            "messages": [], "deletedMessages": [],
        })));
    }
    let changes = store.changes_after(cursor, limit)?;
    let has_more = changes.len() == limit;
    let next = changes.last().map(|(seq, _)| *seq).unwrap_or(cursor);
    let mut added = BTreeSet::new();
    let mut removed = BTreeSet::new();
    let mut changed = BTreeSet::new();
    let mut messages: BTreeMap<(u64, u64), ()> = BTreeMap::new();
    let mut deleted = Vec::new();
    for (_, change) in changes {
        match change {
            Change::MemberAdded { room_id, user_id } if user_id == me => {
                removed.remove(&room_id);
                added.insert(room_id);
            }
            Change::MemberRemoved { room_id, user_id } if user_id == me => {
                added.remove(&room_id);
                changed.remove(&room_id);
                messages.retain(|(r, _), _| *r != room_id);
                deleted.retain(|(r, _, _)| *r != room_id);
                removed.insert(room_id);
            }
            Change::MemberAdded { room_id, .. }
            | Change::MemberRemoved { room_id, .. }
            | Change::Room { room_id } => {
                changed.insert(room_id);
            }
            Change::Message {
                room_id,
                message_id,
            } => {
                messages.insert((room_id, message_id), ());
            }
            Change::MessageDeleted {
                room_id,
                message_id,
                parent_message_id,
            } => {
                messages.remove(&(room_id, message_id));
                deleted.push((room_id, message_id, parent_message_id));
            }
        }
    }
    // Everything below is filtered by membership now: never data of a room the caller lost.
    let mut is_member = BTreeMap::new();
    let mut member = |room: u64| -> Result<bool, ApiError> {
        if let Some(&m) = is_member.get(&room) {
            return Ok(m);
        }
        let m = store.member(room, me)?.is_some();
        is_member.insert(room, m);
        Ok(m)
    };
    let mut rooms_removed = Vec::new();
    for &r in &removed {
        if !member(r)? {
            rooms_removed.push(r);
        }
    }
    let rooms_added = room_views(&mut added.iter().copied())?;
    let rooms_changed = room_views(&mut changed.iter().copied().filter(|r| !added.contains(r)))?;
    let mut out_messages = Vec::new();
    for (room_id, message_id) in messages.keys() {
        if added.contains(room_id) || !member(*room_id)? {
            continue; // an added room is fetched whole by the client
        }
        if let Some(record) = store.message(*message_id)? {
            out_messages.push(store.api_message(&record)?);
        }
    }
    let mut out_deleted = Vec::new();
    for (room_id, message_id, parent) in deleted {
        if member(room_id)? {
            out_deleted.push(
                json!({ "roomId": room_id, "messageId": message_id, "parentMessageId": parent }),
            );
        }
    }
    Ok(ok_json(json!({
        "cursor": next, "hasMore": has_more, "full": false, "resync": false,
        "roomsAdded": rooms_added, "roomsRemoved": rooms_removed, "roomsChanged": rooms_changed,
        "messages": out_messages, "deletedMessages": out_deleted,
    })))
}
