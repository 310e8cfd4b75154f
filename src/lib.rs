//! Confab: a self-hosted team messenger server that speaks the Virola Web API v1.
//!
//! The crate is one library with thin binaries on top (`src/bin/`):
//! - [`server`] wires storage, actors and the HTTPS listener together;
//! - [`storage`] is the only layer that touches sled;
//! - [`actors`] holds the supervised actors (registry, rooms, event sessions);
//! - [`api`] maps HTTP requests onto storage and actors;
//! - [`client`] is the Rust client used by the `confab` CLI, the tests and the benchmark;
//! - [`model`] holds the JSON shapes shared by server and client.

pub mod actors;
pub mod api;
pub mod client;
pub mod config;
pub mod model;
pub mod server;
pub mod storage;
pub mod tls;

/// Milliseconds since the Unix epoch, UTC: the unit of every timestamp in the API.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
