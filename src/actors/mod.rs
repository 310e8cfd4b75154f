//! Supervised actors. See `actors.md` at the top of the repository for the map.
//!
//! - [`registry::Registry`]: who is connected (user → event sessions) and which room actors
//!   run; fans events out to sessions.
//! - [`room::RoomActor`]: one per active room; orders, persists and announces its writes.
//! - [`session::EventSession`]: one per `/api/v1/events` WebSocket; a bounded outbound queue.
//!
//! Places for what comes next: a voice-channel actor per active room channel, the
//! key-rotation timer and the push dispatcher register with the registry the same way.

pub mod registry;
pub mod room;
pub mod session;
pub mod voice;

pub use registry::Registry;
pub use room::RoomActor;
pub use session::EventSession;

/// One serialized event. Cloning shares the bytes (reference count), so one event sent to a
/// hundred sessions is serialized once and never copied.
pub type Payload = bytestring::ByteString;

/// Serializes one event as it goes on the wire: `{"type": kind, "data": data}`.
pub fn event_payload(kind: &str, data: serde_json::Value) -> Payload {
    let event = crate::model::ServerEvent {
        event_type: kind.to_string(),
        data,
    };
    Payload::from(serde_json::to_string(&event).unwrap_or_default())
}
