//! Voice: UDP on the server's port number, AEAD per participant, keys made by the server,
//! kept in RAM only and renewed on a timer. `packet` is the wire format, `relay` the hot
//! path (the UDP receive threads and the WebSocket fallback both call it), and the actors
//! in `crate::actors::voice` own channel membership, key rotation and events. See
//! `docs/voice.md`.

pub mod batch;
pub mod packet;
pub mod relay;

pub use packet::CipherKind;
pub use relay::{Router, VoiceStats};
