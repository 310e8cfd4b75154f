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
pub mod admin;
pub mod api;
pub mod calendar;
pub mod client;
pub mod config;
pub mod config_file;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod push;
pub mod search;
pub mod server;
pub mod storage;
pub mod tls;
pub mod voice;

/// An address as one client is known by: IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, from a
/// dual-stack socket or a proxy header) as the IPv4 address they are.
pub fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// Milliseconds since the Unix epoch, UTC: the unit of every timestamp in the API.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Raises this process's open-file soft limit to its hard limit: every connection is a file
/// descriptor, and the common default of 1024 is far below what one server holds.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

/// Tunes glibc's allocator for a long-running server: a fixed mmap threshold so large
/// short-lived buffers (argon2 uses 19 MiB per hash) go back to the OS when freed instead of
/// staying in a thread's heap. (Limiting the arenas to 2 as well, as before, made threads
/// contend for them: 16 % of the CPU of a post was in malloc and free. mimalloc was tried
/// instead: 10 % less CPU per post, but 4× the resident memory right after start.)
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
