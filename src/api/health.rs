//! `GET /api/v1/server-health`: is the server up, and how busy is it; `GET /healthz` and
//! `GET /readyz`: the same question for load balancers and uptime probes, without a login
//! and without any data in the answer.

use actix_web::HttpResponse;
use serde_json::json;
use std::sync::atomic::Ordering;

use super::auth::Authed;
use super::error::ApiError;
use super::{ok_json, State};
use crate::actors::registry::GetStats;

/// What `/metrics` reads (see [`crate::metrics`]).
pub struct MetricsSource {
    pub state: State,
    pub budget: std::sync::Arc<crate::listener::Budget>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// `GET /metrics` on `--metrics-listen`: Prometheus (OpenMetrics) text.
pub async fn metrics(source: actix_web::web::Data<MetricsSource>) -> HttpResponse {
    let state = &source.state;
    let rooms = state
        .registry
        .send(GetStats)
        .await
        .map_or(0, |s| s.active_rooms as u64);
    let connected = state.directory.stats();
    let commits = state.store.commit_stats();
    let voice = &state.voice.router.stats;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let dropped = [
        &voice.oversized,
        &voice.malformed,
        &voice.unknown_participant,
        &voice.expired_epoch,
        &voice.replayed,
        &voice.auth_failed,
        &voice.not_allowed,
        &voice.no_route,
        &voice.send_failed,
    ]
    .into_iter()
    .map(g)
    .sum();
    let now = crate::metrics::Snapshot {
        connections: source.budget.open_total(),
        sessions: connected.connected_sessions as u64,
        users_connected: connected.connected_users as u64,
        rooms_active: rooms,
        voice_participants: state.voice.router.participant_count() as u64,
        durable_writes: g(&commits.requests),
        fsyncs: g(&commits.flushes),
        failed_writes: g(&commits.failures),
        voice_received: g(&voice.received),
        voice_delivered: g(&voice.delivered),
        voice_dropped: dropped,
        resident_memory_bytes: resident_memory_bytes(),
        free_disk_bytes: state.store.free_disk_bytes().unwrap_or(0),
    };
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(source.metrics.render(&now))
}

/// `GET /healthz`: the server answers (liveness). No login.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "live" }))
}

/// `GET /readyz`: the server can take writes (no storage fault: disk space above the
/// reserve, device working, folder in place). No login; 503 when not.
pub async fn readyz(state: State) -> HttpResponse {
    match state.store.fault() {
        None => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Some(_) => HttpResponse::ServiceUnavailable().json(json!({ "status": "unready" })),
    }
}

pub async fn server_health(state: State, _auth: Authed) -> Result<HttpResponse, ApiError> {
    let stats = state.registry.send(GetStats).await?;
    let connected = state.directory.stats();
    let channels = state
        .voice
        .hub
        .send(crate::actors::voice::ChannelCount)
        .await?;
    let commits = state.store.commit_stats();
    let fault = state.store.fault();
    Ok(ok_json(json!({
        "status": if fault.is_some() { "Unhealthy" } else { "Healthy" },
        "reason": fault,
        "serverVersion": env!("CARGO_PKG_VERSION"),
        "schemaVersion": crate::storage::SCHEMA_VERSION,
        "freeDiskBytes": state.store.free_disk_bytes(),
        "uptimeSeconds": state.started.elapsed().as_secs(),
        "connectedSessions": connected.connected_sessions,
        "connectedUsers": connected.connected_users,
        "activeRooms": stats.active_rooms,
        "userCount": state.store.user_count(),
        "storageBytes": state.store.size_on_disk(),
        "durableWrites": commits.requests.load(Ordering::Relaxed),
        "fsyncs": commits.flushes.load(Ordering::Relaxed),
        "failedWrites": commits.failures.load(Ordering::Relaxed),
        "residentMemoryBytes": resident_memory_bytes(),
        "certificate": Some(state.certificate_not_after.load(Ordering::Acquire))
            .filter(|&at| at != i64::MIN)
            .map(|at| {
            let left = at - (crate::now_ms() / 1000) as i64;
            json!({
                "notAfterUtc": at.saturating_mul(1000),
                "daysLeft": left.div_euclid(86_400),
                "expired": left <= 0,
            })
        }),
        "push": crate::push::dispatcher::STATS.to_json(),
        "voice": {
            "channels": channels,
            "participants": state.voice.router.participant_count(),
            "packets": state.voice.router.stats.to_json(),
        },
    })))
}

/// Resident set size of this process, from /proc (0 where unavailable).
pub fn resident_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}
