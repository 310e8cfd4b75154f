//! `GET /api/v1/search` (extension): full-text search over the messages, comments, issues,
//! meetings and file names of the rooms the caller belongs to now.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::Authed;
use super::error::ApiError;
use super::{ok_json, State};
use crate::model::{MessageType, RoomId, UserId};
use crate::search::{SearchError, SearchRequest, MAX_LIMIT, MAX_OFFSET};

/// Queries longer than this are refused (a query is a handful of words).
const MAX_QUERY_CHARS: usize = 500;
const DEFAULT_LIMIT: usize = 20;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
    room_id: Option<RoomId>,
    author_id: Option<UserId>,
    from: Option<u64>,
    to: Option<u64>,
    #[serde(rename = "type")]
    message_type: Option<MessageType>,
    has_attachment: Option<bool>,
    sort: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

pub async fn search(
    state: State,
    auth: Authed,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let Some(index) = state.search.clone() else {
        return Err(ApiError::Unavailable(
            "Search is unavailable: the search index could not be opened (see the server log)"
                .into(),
        ));
    };
    if query.q.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::BadRequest(format!(
            "q is longer than {MAX_QUERY_CHARS} characters"
        )));
    }
    let filtered = query.room_id.is_some()
        || query.author_id.is_some()
        || query.from.is_some()
        || query.to.is_some()
        || query.message_type.is_some()
        || query.has_attachment.is_some();
    if query.q.trim().is_empty() && !filtered {
        return Err(ApiError::BadRequest(
            "q (the text to search for) is required unless a filter is given".into(),
        ));
    }
    let newest_first = match query.sort.as_deref() {
        None | Some("relevance") => false,
        Some("newest") => true,
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "sort must be relevance or newest, not \"{s}\""
            )))
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let offset = query.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(ApiError::BadRequest(format!(
            "offset must be at most {MAX_OFFSET}"
        )));
    }
    // Membership now, not when the message was written: that is the history rule.
    let rooms = match query.room_id {
        Some(room) => {
            super::rooms::visible_room(&state, &auth, room)?;
            vec![room]
        }
        None => state.store.rooms_of_user(auth.id())?,
    };
    let request = SearchRequest {
        q: query.q,
        author_id: query.author_id,
        from: query.from,
        to: query.to,
        message_type: query.message_type,
        has_attachment: query.has_attachment,
        newest_first,
        limit,
        offset,
    };
    let answer = web::block(move || index.search(&request, &rooms))
        .await
        .map_err(|_| ApiError::Unavailable("The search was interrupted; try again.".into()))?
        .map_err(|e| match e {
            SearchError::Query(text) => ApiError::BadRequest(text),
            SearchError::Storage(e) => e.into(),
            other => ApiError::Unavailable(format!("Search failed: {other}")),
        })?;
    // The index lags history by a moment: a hit deleted since is not shown.
    let mut results = Vec::with_capacity(answer.hits.len());
    for hit in answer.hits {
        if state.store.message(hit.message_id)?.is_some() {
            results.push(hit);
        }
    }
    Ok(ok_json(json!({
        "results": results,
        "total": answer.total,
        "complete": answer.complete,
    })))
}
