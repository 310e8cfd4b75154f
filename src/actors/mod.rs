//! Actors. See `actors.md` at the top of the repository for the map.
//!
//! - [`registry::Registry`]: which room actors run, on which arbiter; starts and retires them.
//! - [`room::RoomActor`]: one per active room; orders, persists and announces its writes.
//! - [`session::EventSession`]: one per `/api/v1/events` WebSocket, with its bounded queue.
//! - [`directory::Directory`]: who is connected; every deliverer pushes through it.
//! - [`presence`]: who is online or away, told to co-members; typing notices.
//! - [`voice`]: the voice hub, a channel per active room, the key-rotation timer.

pub mod directory;
pub mod presence;
pub mod registry;
pub mod room;
pub mod session;
pub mod voice;

pub use directory::Directory;
pub use registry::Registry;
pub use room::RoomActor;
pub use session::EventSession;

/// One event, serialized once and framed once (a WebSocket text frame). Cloning shares the
/// bytes, so one event sent to a thousand sessions is encoded once and never copied until
/// it is written to each socket.
#[derive(Clone, Debug)]
pub struct Payload(bytes::Bytes);

impl Payload {
    /// The encoded frame.
    pub fn frame(&self) -> &bytes::Bytes {
        &self.0
    }
}

/// Serializes and frames one event as it goes on the wire: `{"type": kind, "data": data}`.
pub fn event_payload(kind: &str, data: serde_json::Value) -> Payload {
    let event = crate::model::ServerEvent {
        event_type: kind.to_string(),
        data,
    };
    let text = serde_json::to_string(&event).unwrap_or_default();
    Payload(session::text_frame(text.into()))
}
