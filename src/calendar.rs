//! Meetings as iCalendar (RFC 5545), for `GET /api/v1/meetings.ics` and
//! `GET /api/v1/meetings/{id}.ics`: one `VEVENT` per meeting message, its summary the
//! message's first line, its description the whole text.

use std::collections::BTreeMap;

use icalendar::{Calendar, Component, Event, EventLike};

use crate::model::RoomId;
use crate::storage::MessageRecord;

fn utc(ms: u64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// A calendar holding each meeting in `meetings` (records without meeting properties are
/// left out); `room_names` names their rooms (as the location).
pub fn meetings_ics(meetings: &[MessageRecord], room_names: &BTreeMap<RoomId, String>) -> String {
    let mut calendar = Calendar::new();
    calendar.name("Confab meetings");
    for m in meetings {
        let Some(p) = m.meeting_properties.as_ref() else {
            continue;
        };
        let summary = m.text.lines().next().unwrap_or("").trim();
        let summary = if summary.is_empty() {
            "Meeting"
        } else {
            summary
        };
        let mut event = Event::with_uid(&format!("confab-meeting-{}", m.message_id));
        event
            .summary(summary)
            .description(&m.text)
            .starts(utc(p.time_utc))
            .ends(utc(p.time_utc.saturating_add(p.duration)))
            .timestamp(utc(m.last_modified_utc.max(m.created_utc)));
        if let Some(room) = room_names.get(&m.room_id) {
            event.location(room);
        }
        calendar.push(event.done());
    }
    calendar.done().to_string()
}
