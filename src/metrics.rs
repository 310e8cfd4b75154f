//! Prometheus metrics, served on `--metrics-listen ADDR` at `/metrics` (OpenMetrics text,
//! encoded by the `prometheus-client` crate). A separate plain-HTTP listener, meant for a
//! loopback or private address: the numbers are the server's, not a member's.
//!
//! Most values already exist as counters of their own layer (commits, voice, connections);
//! they are copied into the registry when it is scraped. What had no counter gets one here:
//! messages posted, event clients dropped for being too slow, and the fsync latency
//! histogram the group commit feeds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Messages and comments posted (counted once stored).
pub static MESSAGES_POSTED: AtomicU64 = AtomicU64::new(0);
/// Event connections reset because their outbound queue was full.
pub static EVENT_CLIENTS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Seconds per group commit's flush and `fdatasync`: 50 µs to ~1.6 s.
static FSYNC_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(0.000_05, 2.0, 16)));

/// One group commit's flush and sync took this long.
pub fn observe_fsync(took: Duration) {
    FSYNC_SECONDS.observe(took.as_secs_f64());
}

/// What a scrape reads, taken from the running server.
pub struct Snapshot {
    pub connections: u64,
    pub sessions: u64,
    pub users_connected: u64,
    pub rooms_active: u64,
    pub voice_participants: u64,
    pub durable_writes: u64,
    pub fsyncs: u64,
    pub failed_writes: u64,
    pub voice_received: u64,
    pub voice_delivered: u64,
    pub voice_dropped: u64,
    pub resident_memory_bytes: u64,
    pub free_disk_bytes: u64,
}

/// The registry and the metrics in it.
pub struct Metrics {
    registry: Registry,
    connections: Gauge,
    sessions: Gauge,
    users_connected: Gauge,
    rooms_active: Gauge,
    voice_participants: Gauge,
    resident_memory: Gauge,
    free_disk: Gauge,
    posted: Counter,
    durable_writes: Counter,
    fsyncs: Counter,
    failed_writes: Counter,
    event_drops: Counter,
    voice_received: Counter,
    voice_delivered: Counter,
    voice_dropped: Counter,
    push_queued: Gauge,
    push_sent: Counter,
    push_retried: Counter,
    push_failed: Counter,
    push_dropped: Counter,
    push_devices_removed: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut m = Metrics {
            registry: Registry::with_prefix("confab"),
            connections: Gauge::default(),
            sessions: Gauge::default(),
            users_connected: Gauge::default(),
            rooms_active: Gauge::default(),
            voice_participants: Gauge::default(),
            resident_memory: Gauge::default(),
            free_disk: Gauge::default(),
            posted: Counter::default(),
            durable_writes: Counter::default(),
            fsyncs: Counter::default(),
            failed_writes: Counter::default(),
            event_drops: Counter::default(),
            voice_received: Counter::default(),
            voice_delivered: Counter::default(),
            voice_dropped: Counter::default(),
            push_queued: Gauge::default(),
            push_sent: Counter::default(),
            push_retried: Counter::default(),
            push_failed: Counter::default(),
            push_dropped: Counter::default(),
            push_devices_removed: Counter::default(),
        };
        let gauges = [
            (
                "connections",
                "Open client connections (HTTPS and WebSocket)",
                m.connections.clone(),
            ),
            (
                "event_sessions",
                "Connected event streams",
                m.sessions.clone(),
            ),
            (
                "users_connected",
                "Users with at least one event stream",
                m.users_connected.clone(),
            ),
            (
                "rooms_active",
                "Rooms whose actor is running",
                m.rooms_active.clone(),
            ),
            (
                "voice_participants",
                "Participants in voice channels",
                m.voice_participants.clone(),
            ),
            (
                "resident_memory_bytes",
                "Resident memory of the server",
                m.resident_memory.clone(),
            ),
            (
                "storage_free_bytes",
                "Free space on the storage folder's disk",
                m.free_disk.clone(),
            ),
            (
                "push_queued",
                "Push notifications waiting (to coalesce, or to send)",
                m.push_queued.clone(),
            ),
        ];
        for (name, help, gauge) in gauges {
            m.registry.register(name, help, gauge);
        }
        let counters = [
            (
                "messages_posted",
                "Messages and comments stored",
                m.posted.clone(),
            ),
            (
                "durable_writes",
                "Writes confirmed on the device",
                m.durable_writes.clone(),
            ),
            (
                "fsyncs",
                "Group commits (each ends with fdatasync)",
                m.fsyncs.clone(),
            ),
            (
                "failed_writes",
                "Writes that could not be confirmed",
                m.failed_writes.clone(),
            ),
            (
                "event_clients_dropped",
                "Event streams reset for falling behind",
                m.event_drops.clone(),
            ),
            (
                "voice_packets_received",
                "Voice packets received",
                m.voice_received.clone(),
            ),
            (
                "voice_packets_relayed",
                "Voice packets delivered to participants",
                m.voice_delivered.clone(),
            ),
            (
                "voice_packets_dropped",
                "Voice packets dropped (malformed, replayed, not allowed, undeliverable)",
                m.voice_dropped.clone(),
            ),
            (
                "push_sent",
                "Push notifications a provider accepted",
                m.push_sent.clone(),
            ),
            (
                "push_retried",
                "Push sends to be tried again",
                m.push_retried.clone(),
            ),
            (
                "push_failed",
                "Push notifications that could not be sent",
                m.push_failed.clone(),
            ),
            (
                "push_dropped",
                "Push notifications dropped (expired, or the queue full)",
                m.push_dropped.clone(),
            ),
            (
                "push_devices_removed",
                "Push devices removed (unregistered at the provider, session ended)",
                m.push_devices_removed.clone(),
            ),
        ];
        for (name, help, counter) in counters {
            m.registry.register(name, help, counter);
        }
        m.registry.register(
            "fsync_seconds",
            "Time of one group commit's flush and fdatasync",
            FSYNC_SECONDS.clone(),
        );
        Arc::new(m)
    }

    /// The OpenMetrics text of `now`.
    pub fn render(&self, now: &Snapshot) -> String {
        let set = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.connections, now.connections);
        set(&self.sessions, now.sessions);
        set(&self.users_connected, now.users_connected);
        set(&self.rooms_active, now.rooms_active);
        set(&self.voice_participants, now.voice_participants);
        set(&self.resident_memory, now.resident_memory_bytes);
        set(&self.free_disk, now.free_disk_bytes);
        let copy = |c: &Counter, v: u64| c.inner().store(v, Ordering::Relaxed);
        copy(&self.posted, MESSAGES_POSTED.load(Ordering::Relaxed));
        copy(
            &self.event_drops,
            EVENT_CLIENTS_DROPPED.load(Ordering::Relaxed),
        );
        copy(&self.durable_writes, now.durable_writes);
        copy(&self.fsyncs, now.fsyncs);
        copy(&self.failed_writes, now.failed_writes);
        copy(&self.voice_received, now.voice_received);
        copy(&self.voice_delivered, now.voice_delivered);
        copy(&self.voice_dropped, now.voice_dropped);
        let push = &crate::push::dispatcher::STATS;
        set(&self.push_queued, push.queued.load(Ordering::Relaxed));
        copy(&self.push_sent, push.sent.load(Ordering::Relaxed));
        copy(&self.push_retried, push.retried.load(Ordering::Relaxed));
        copy(&self.push_failed, push.failed.load(Ordering::Relaxed));
        copy(&self.push_dropped, push.dropped.load(Ordering::Relaxed));
        copy(
            &self.push_devices_removed,
            push.devices_removed.load(Ordering::Relaxed),
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
