//! The relay hot path, shared by the UDP receive threads and the WebSocket fallback: find
//! the sender by the participant id in the header, authenticate and decrypt under its key,
//! check the replay window, then re-seal the payload for every listener of the channel
//! under each listener's own key and send it where that listener was last heard from.
//! Channel actors own membership and keys (they add, rotate and remove participants here);
//! this code only reads them, under short per-participant locks, so both cores relay.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use actix::Recipient;
use bytes::Bytes;

use super::batch::{enlarge_buffers, RecvBatch, SendBatch};
use super::packet::{
    CipherKind, Header, Key, ReplayWindow, FROM_CLIENT, FROM_SERVER, HEADER_LEN, KIND_CHALLENGE,
    KIND_CHALLENGE_RESPONSE, KIND_PING, KIND_PONG, KIND_VOICE, MAX_PACKET, TAG_LEN,
};
use crate::model::{RoomId, UserId};

/// Counters of the relay, for `/api/v1/server-health` and the tests.
#[derive(Default)]
pub struct VoiceStats {
    pub received: AtomicU64,
    pub delivered: AtomicU64,
    pub pings: AtomicU64,
    pub oversized: AtomicU64,
    pub malformed: AtomicU64,
    pub unknown_participant: AtomicU64,
    pub expired_epoch: AtomicU64,
    pub replayed: AtomicU64,
    pub auth_failed: AtomicU64,
    pub not_allowed: AtomicU64,
    pub no_route: AtomicU64,
    pub send_failed: AtomicU64,
    pub panics: AtomicU64,
    pub address_changes: AtomicU64,
    pub path_challenges: AtomicU64,
    pub paths_validated: AtomicU64,
    pub unvalidated_address: AtomicU64,
}

impl VoiceStats {
    pub fn to_json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "received": g(&self.received),
            "delivered": g(&self.delivered),
            "pings": g(&self.pings),
            "droppedOversized": g(&self.oversized),
            "droppedMalformed": g(&self.malformed),
            "droppedUnknownParticipant": g(&self.unknown_participant),
            "droppedExpiredEpoch": g(&self.expired_epoch),
            "droppedReplayed": g(&self.replayed),
            "droppedAuthFailed": g(&self.auth_failed),
            "droppedNotAllowedToTalk": g(&self.not_allowed),
            "undeliverableNoAddress": g(&self.no_route),
            "sendFailed": g(&self.send_failed),
            "relayPanics": g(&self.panics),
            "addressChanges": g(&self.address_changes),
            "pathChallenges": g(&self.path_challenges),
            "pathsValidated": g(&self.paths_validated),
            "fromUnvalidatedAddress": g(&self.unvalidated_address),
        })
    }
}

/// A binary frame for an event session (the TCP fallback).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct VoiceOut(pub Bytes);

/// Where a participant was last heard from.
#[derive(Clone)]
pub enum Route {
    Udp(SocketAddr),
    Ws {
        session: u64,
        to: Recipient<VoiceOut>,
    },
}

impl Route {
    fn same(&self, other: &Route) -> bool {
        match (self, other) {
            (Route::Udp(a), Route::Udp(b)) => a == b,
            (Route::Ws { session: a, .. }, Route::Ws { session: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// The keys and counters of one participant. Replaced keys are dropped, which zeroizes them.
pub struct KeyState {
    pub current: Key,
    current_window: ReplayWindow,
    /// The previous epoch's key, accepted until the instant.
    previous: Option<(Key, ReplayWindow, Instant)>,
    /// The client has used the current epoch (so it has the key): send with it.
    client_has_current: bool,
    /// Server → client counter (strictly increasing for the participant's whole stay).
    tx_counter: u64,
    /// Where the participant's packets go: a validated address (see [`Probe`]).
    pub route: Option<Route>,
    /// A new address heard from but not yet validated.
    probe: Option<Probe>,
}

/// A challenge out to an address a participant's authenticated packet came from, which is
/// neither the address its HTTPS join came from nor its WebSocket. The route moves there
/// only when the answer comes back from there (as QUIC validates a new path): a forged
/// source address cannot point anyone's stream at a third party.
struct Probe {
    route: Route,
    token: [u8; 16],
    sent: Instant,
}

/// Challenges to one participant's new address: at most one per this interval.
const PROBE_EVERY: Duration = Duration::from_millis(200);

impl KeyState {
    /// The key to seal server → client packets with: the newest one the client is known to
    /// hold (the previous one during the grace period, until the client uses the new one).
    fn sending_key(&self, now: Instant) -> &Key {
        match &self.previous {
            Some((k, _, until)) if !self.client_has_current && now < *until => k,
            _ => &self.current,
        }
    }

    /// The next server → client counter, with the key to seal under it.
    fn next_sending(&mut self, now: Instant) -> (u64, &Key) {
        self.tx_counter += 1;
        (self.tx_counter, self.sending_key(now))
    }
}

pub struct Participant {
    pub id: u32,
    pub user_id: UserId,
    pub room_id: RoomId,
    pub cipher: CipherKind,
    pub can_talk: AtomicBool,
    pub can_listen: AtomicBool,
    pub keys: Mutex<KeyState>,
    pub channel: Arc<ChannelShared>,
    /// Milliseconds (server clock) of the last relayed voice packet, and whether a
    /// "talking" event is out for the current burst.
    pub last_voice_ms: AtomicU64,
    pub talking: AtomicBool,
    /// Milliseconds (server clock) of the last authenticated packet of any kind (pings
    /// included), or of the join: a participant silent for long, whose user has no event
    /// session either, is gone.
    pub last_packet_ms: AtomicU64,
    /// The client address of the HTTPS request that joined: UDP from it is trusted at once
    /// (that address completed a TLS handshake with us); any other must answer a challenge.
    pub join_ip: Option<std::net::IpAddr>,
    /// The outbox (see [`Outbox`]) holding sealed packets for this participant not yet
    /// sent (0: none). One at a time, so the participant's counters leave in order.
    pending: AtomicU64,
}

/// A relay thread's sealed datagrams not yet sent, and the listeners it holds them for.
/// Relay threads take listeners' counters concurrently; a listener's packets may sit in
/// only one outbox at a time, so they leave in counter order (claim before taking a
/// counter, release after the send).
pub struct Outbox {
    sends: SendBatch,
    token: u64,
    claimed: Vec<Arc<Participant>>,
    /// Scratch: the listeners of the packet being relayed.
    listeners: Vec<Arc<Participant>>,
    /// Packets held back until this batch is sent (see `Router::finish_batch`).
    deferred: Vec<Deferred>,
    deferred_ids: Vec<u32>,
}

static NEXT_OUTBOX: AtomicU64 = AtomicU64::new(1);

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            sends: SendBatch::default(),
            token: NEXT_OUTBOX.fetch_add(1, Ordering::Relaxed),
            claimed: Vec::new(),
            listeners: Vec::new(),
            deferred: Vec::new(),
            deferred_ids: Vec::new(),
        }
    }
}

impl Outbox {
    /// Forgets what is queued (after a contained panic) and releases every claim.
    fn reset(&mut self) {
        self.sends = SendBatch::default();
        self.deferred.clear();
        self.deferred_ids.clear();
        self.release();
    }

    fn release(&mut self) {
        for p in self.claimed.drain(..) {
            p.pending.store(0, Ordering::Release);
        }
    }
}

/// What the relay needs of a channel: its participants, for fan-out.
pub struct ChannelShared {
    pub room_id: RoomId,
    pub members: RwLock<Vec<Arc<Participant>>>,
}

/// Told when a participant starts talking (the channel actor announces it).
#[derive(actix::Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct TalkingStarted {
    pub room_id: RoomId,
    pub participant: u32,
}

/// The routing table and the socket.
pub struct Router {
    participants: RwLock<HashMap<u32, Arc<Participant>>>,
    next_id: AtomicU32,
    /// The socket every relay thread sends on (the first of the receiving sockets).
    socket: OnceLock<UdpSocket>,
    pub stats: VoiceStats,
    talking: OnceLock<Recipient<TalkingStarted>>,
    stop: AtomicBool,
}

/// Where a packet came from.
pub enum Source {
    Udp(SocketAddr),
    Ws {
        session: u64,
        to: Recipient<VoiceOut>,
    },
}

/// A talker silent this long has stopped talking.
pub const TALK_GAP_MS: u64 = 400;

impl Router {
    pub fn new() -> Arc<Router> {
        Arc::new(Router {
            participants: RwLock::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            socket: OnceLock::new(),
            stats: VoiceStats::default(),
            talking: OnceLock::new(),
            stop: AtomicBool::new(false),
        })
    }

    pub fn set_talking_recipient(&self, r: Recipient<TalkingStarted>) {
        let _ = self.talking.set(r);
    }

    pub fn next_participant_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn insert(&self, p: Arc<Participant>) {
        if let Ok(mut map) = self.participants.write() {
            map.insert(p.id, p);
        }
    }

    pub fn remove(&self, id: u32) -> Option<Arc<Participant>> {
        self.participants
            .write()
            .ok()
            .and_then(|mut m| m.remove(&id))
    }

    pub fn participant_count(&self) -> usize {
        self.participants.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Binds one UDP socket per relay thread on the TCP listener's address
    /// (`SO_REUSEPORT`) and starts the threads. The kernel steers each sender's datagrams
    /// to one socket by their addresses, so one thread relays a speaker's packets, in order.
    pub fn start_udp(
        self: &Arc<Self>,
        addr: SocketAddr,
        threads: usize,
    ) -> std::io::Result<SocketAddr> {
        let mut sockets = Vec::new();
        let mut local = addr;
        for _ in 0..threads.max(1) {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            socket.set_reuse_port(true)?;
            if local.is_ipv6() && local.ip().is_unspecified() {
                // Like the TCP listener on `[::]`: IPv4 clients too.
                socket.set_only_v6(false)?;
            }
            socket.bind(&local.into())?;
            let socket: UdpSocket = socket.into();
            socket.set_read_timeout(Some(Duration::from_millis(250)))?;
            // Room for bursts (the kernel caps it at net.core.[rw]mem_max).
            enlarge_buffers(&socket, 4 << 20);
            // (Port 0: the others join the port the first one got.)
            local = socket.local_addr()?;
            sockets.push(socket);
        }
        let _ = self.socket.set(sockets[0].try_clone()?);
        for (i, socket) in sockets.into_iter().enumerate() {
            let router = self.clone();
            std::thread::Builder::new()
                .name(format!("voice-udp-{i}"))
                .spawn(move || router.receive_loop(socket))?;
        }
        Ok(local)
    }

    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn receive_loop(&self, socket: UdpSocket) {
        // One byte more than the largest valid packet, so oversized ones are recognised.
        let mut batch = RecvBatch::new(MAX_PACKET + 1);
        let mut out = Vec::with_capacity(MAX_PACKET);
        let mut sends = Outbox::default();
        while !self.stop.load(Ordering::Relaxed) {
            match batch.recv(&socket) {
                Ok(n) => {
                    // A bug triggered by one packet must not take the relay thread down:
                    // the panic is contained here, and the channel actor notices the
                    // poisoned lock and restarts the channel (its participants re-join).
                    let relayed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        for i in 0..n {
                            if let Some((packet, from)) = batch.get(i) {
                                self.handle(packet, Source::Udp(from), &mut out, &mut sends);
                            }
                        }
                        self.finish_batch(&mut out, &mut sends);
                    }));
                    if relayed.is_err() {
                        self.stats.panics.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("voice relay: a packet caused a panic; dropped it");
                        sends.reset();
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => {
                    tracing::warn!("voice socket: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// A packet that arrived in a binary WebSocket frame.
    pub fn handle_ws(&self, mut packet: Vec<u8>, session: u64, to: Recipient<VoiceOut>) {
        let mut out = Vec::with_capacity(MAX_PACKET);
        let mut sends = Outbox::default();
        let relayed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.handle(
                &mut packet,
                Source::Ws { session, to },
                &mut out,
                &mut sends,
            );
            self.finish_batch(&mut out, &mut sends);
        }));
        if relayed.is_err() {
            self.stats.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!("voice relay: a WebSocket packet caused a panic; dropped it");
            sends.reset();
        }
    }

    /// Sends what the outbox holds and releases its listeners.
    fn flush(&self, outbox: &mut Outbox) {
        if !outbox.sends.is_empty() {
            if let Some(socket) = self.socket.get() {
                let failed = outbox.sends.flush(socket);
                if failed > 0 {
                    self.stats
                        .send_failed
                        .fetch_add(failed as u64, Ordering::Relaxed);
                }
            }
        }
        outbox.release();
    }

    /// Claims `listener` for `outbox` if no other outbox holds packets for it.
    fn try_claim(&self, listener: &Arc<Participant>, outbox: &mut Outbox) -> bool {
        match listener.pending.compare_exchange(
            0,
            outbox.token,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                outbox.claimed.push(listener.clone());
                true
            }
            Err(t) => t == outbox.token,
        }
    }

    /// Makes `outbox` the one holding `listener`'s unsent packets. If another thread's
    /// outbox holds some, this one is sent first (so nobody ever waits on a thread that
    /// waits) and the other is awaited: it is mid-batch and sends within microseconds.
    /// Never called with a participant's key lock held.
    fn claim(&self, listener: &Arc<Participant>, outbox: &mut Outbox) {
        let mut spins = 0u32;
        while !self.try_claim(listener, outbox) {
            self.flush(outbox);
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Seals `payload` under `key` with header `h` and queues it for `route`: UDP
    /// datagrams join the batch, WebSocket frames go to the session at once.
    fn emit(
        &self,
        route: &Route,
        key: &Key,
        h: &Header,
        payload: &[u8],
        out: &mut Vec<u8>,
        sends: &mut Outbox,
    ) -> bool {
        match route {
            Route::Udp(addr) => {
                let sends = &mut sends.sends;
                let b = sends.next_buf(addr);
                b.resize(HEADER_LEN, 0);
                b.extend_from_slice(payload);
                if key.seal(FROM_SERVER, h, b) {
                    true
                } else {
                    sends.undo();
                    false
                }
            }
            Route::Ws { to, .. } => {
                out.clear();
                out.resize(HEADER_LEN, 0);
                out.extend_from_slice(payload);
                key.seal(FROM_SERVER, h, out)
                    && to.try_send(VoiceOut(Bytes::copy_from_slice(out))).is_ok()
            }
        }
    }

    /// The hot path. Every failure is counted and the packet dropped; nothing about an
    /// unauthenticated packet changes any state.
    pub fn handle(&self, packet: &mut [u8], source: Source, out: &mut Vec<u8>, sends: &mut Outbox) {
        let s = &self.stats;
        if packet.len() > MAX_PACKET {
            s.oversized.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(header) = Header::read(packet) else {
            s.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !matches!(
            header.kind,
            KIND_VOICE | KIND_PING | KIND_CHALLENGE_RESPONSE
        ) || header.speaker != header.participant
        {
            s.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sender = match self.participants.read() {
            Ok(map) => map.get(&header.participant).cloned(),
            Err(_) => None,
        };
        let Some(sender) = sender else {
            s.unknown_participant.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if header.cipher != sender.cipher.id() {
            s.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = Instant::now();
        if header.kind == KIND_PING {
            // The pong takes a counter of the sender's: claimed before its key lock.
            self.claim(&sender, sends);
        }
        let route = match source {
            Source::Udp(a) => Route::Udp(a),
            Source::Ws { session, to } => Route::Ws { session, to },
        };
        {
            let Ok(mut keys) = sender.keys.lock() else {
                return;
            };
            let ks = &mut *keys;
            let (key, window, is_current) = if header.epoch == ks.current.epoch {
                (&ks.current, &mut ks.current_window, true)
            } else {
                match &mut ks.previous {
                    Some((k, w, until)) if k.epoch == header.epoch && now < *until => {
                        (&*k, w, false)
                    }
                    _ => {
                        s.expired_epoch.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            };
            if !window.check(header.counter) {
                s.replayed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if !key.open(FROM_CLIENT, &header, packet) {
                s.auth_failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            window.record(header.counter);
            if is_current {
                ks.client_has_current = true;
            }
            sender
                .last_packet_ms
                .store(crate::now_ms(), Ordering::Relaxed);
            // Authenticated: learn or follow the sender's address — at once from the
            // address that joined or the WebSocket, after a challenge from anywhere else.
            let trusted = match &route {
                Route::Ws { .. } => true,
                Route::Udp(a) => sender.join_ip == Some(crate::canonical_ip(a.ip())),
            };
            let moved = ks.route.as_ref().map(|r| !r.same(&route)).unwrap_or(true);
            if header.kind == KIND_CHALLENGE_RESPONSE {
                s.received.fetch_add(1, Ordering::Relaxed);
                let payload = &packet[HEADER_LEN..packet.len() - TAG_LEN];
                let answered = ks
                    .probe
                    .as_ref()
                    .is_some_and(|p| p.route.same(&route) && p.token[..] == *payload);
                if answered {
                    if ks.route.is_some() {
                        s.address_changes.fetch_add(1, Ordering::Relaxed);
                    }
                    ks.route = Some(route);
                    ks.probe = None;
                    s.paths_validated.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            if moved && trusted {
                if ks.route.is_some() {
                    s.address_changes.fetch_add(1, Ordering::Relaxed);
                }
                ks.route = Some(route.clone());
                ks.probe = None;
            } else if moved {
                s.unvalidated_address.fetch_add(1, Ordering::Relaxed);
                // A ping from a new address is answered with a challenge there (the ping's
                // claim covers the counter it takes); its pong goes to the validated route.
                let due = ks.probe.as_ref().is_none_or(|p| {
                    !p.route.same(&route) || now.duration_since(p.sent) >= PROBE_EVERY
                });
                if header.kind == KIND_PING && due {
                    let mut token = [0u8; 16];
                    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut token);
                    let (counter, key) = ks.next_sending(now);
                    let challenge = Header {
                        kind: KIND_CHALLENGE,
                        cipher: sender.cipher.id(),
                        participant: sender.id,
                        epoch: key.epoch,
                        counter,
                        speaker: sender.id,
                        speaker_seq: 0,
                    };
                    self.emit(&route, key, &challenge, &token, out, sends);
                    ks.probe = Some(Probe {
                        route: route.clone(),
                        token,
                        sent: now,
                    });
                    s.path_challenges.fetch_add(1, Ordering::Relaxed);
                }
            }
            s.received.fetch_add(1, Ordering::Relaxed);
            if header.kind == KIND_PING {
                s.pings.fetch_add(1, Ordering::Relaxed);
                let payload = &packet[HEADER_LEN..packet.len() - TAG_LEN];
                let route = ks.route.clone();
                let (counter, key) = ks.next_sending(now);
                let reply = Header {
                    kind: KIND_PONG,
                    cipher: sender.cipher.id(),
                    participant: sender.id,
                    epoch: key.epoch,
                    counter,
                    speaker: sender.id,
                    speaker_seq: header.speaker_seq,
                };
                if let Some(r) = &route {
                    self.emit(r, key, &reply, payload, out, sends);
                }
                return;
            }
        }
        if !sender.can_talk.load(Ordering::Relaxed) {
            s.not_allowed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The channel actor clears `talking` after a silence; the first packet after it
        // announces the talker again.
        sender
            .last_voice_ms
            .store(crate::now_ms(), Ordering::Relaxed);
        if !sender.talking.swap(true, Ordering::Relaxed) {
            if let Some(r) = self.talking.get() {
                let _ = r.try_send(TalkingStarted {
                    room_id: sender.room_id,
                    participant: sender.id,
                });
            }
        }
        let payload_range = HEADER_LEN..packet.len() - TAG_LEN;
        // The channel actor takes this lock for writing only to add or remove someone,
        // never while holding a participant's key lock, so reading it here is safe.
        // Copied out, so no thread waits for a claim while holding the members' lock
        // (a writer queued on it would block the thread that could release the claim).
        let mut listeners = std::mem::take(&mut sends.listeners);
        listeners.clear();
        match sender.channel.members.read() {
            Ok(members) => listeners.extend(
                members
                    .iter()
                    .filter(|l| l.id != sender.id && l.can_listen.load(Ordering::Relaxed))
                    .cloned(),
            ),
            Err(_) => return,
        }
        let payload = &packet[payload_range];
        for listener in listeners.drain(..) {
            // A listener another thread holds packets for waits until this batch is sent
            // (and so does every later packet for it in this batch, to keep its order).
            if sends.deferred_ids.contains(&listener.id) || !self.try_claim(&listener, sends) {
                sends.deferred_ids.push(listener.id);
                sends.deferred.push(Deferred {
                    listener,
                    speaker: sender.id,
                    speaker_seq: header.speaker_seq,
                    payload: payload.to_vec(),
                });
                continue;
            }
            self.relay_to(
                &listener,
                sender.id,
                header.speaker_seq,
                payload,
                now,
                out,
                sends,
            );
        }
        sends.listeners = listeners;
    }

    /// Seals one voice packet for `listener` (claimed by `sends`) and queues it.
    #[allow(clippy::too_many_arguments)]
    fn relay_to(
        &self,
        listener: &Participant,
        speaker: u32,
        speaker_seq: u64,
        payload: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
        sends: &mut Outbox,
    ) {
        let Ok(mut keys) = listener.keys.lock() else {
            return;
        };
        let Some(route) = keys.route.clone() else {
            self.stats.no_route.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (counter, key) = keys.next_sending(now);
        let h = Header {
            kind: KIND_VOICE,
            cipher: listener.cipher.id(),
            participant: listener.id,
            epoch: key.epoch,
            counter,
            speaker,
            speaker_seq,
        };
        if self.emit(&route, key, &h, payload, out, sends) {
            self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends the batch, then relays what was deferred (waiting for the other threads to
    /// send what they hold for those listeners) and sends that.
    fn finish_batch(&self, out: &mut Vec<u8>, sends: &mut Outbox) {
        self.flush(sends);
        if sends.deferred.is_empty() {
            return;
        }
        let now = Instant::now();
        let deferred = std::mem::take(&mut sends.deferred);
        for d in &deferred {
            self.claim(&d.listener, sends);
            self.relay_to(
                &d.listener,
                d.speaker,
                d.speaker_seq,
                &d.payload,
                now,
                out,
                sends,
            );
        }
        sends.deferred = deferred;
        sends.deferred.clear();
        sends.deferred_ids.clear();
        self.flush(sends);
    }
}

/// A packet for a listener whose earlier packets sat in another thread's outbox.
pub struct Deferred {
    listener: Arc<Participant>,
    speaker: u32,
    speaker_seq: u64,
    payload: Vec<u8>,
}

impl Participant {
    pub fn new(
        id: u32,
        user_id: UserId,
        channel: Arc<ChannelShared>,
        cipher: CipherKind,
        can_talk: bool,
        can_listen: bool,
    ) -> Participant {
        Participant {
            id,
            user_id,
            room_id: channel.room_id,
            cipher,
            can_talk: AtomicBool::new(can_talk),
            can_listen: AtomicBool::new(can_listen),
            keys: Mutex::new(KeyState {
                current: Key::generate(cipher, 1),
                current_window: ReplayWindow::default(),
                previous: None,
                client_has_current: false,
                tx_counter: 0,
                route: None,
                probe: None,
            }),
            channel,
            last_voice_ms: AtomicU64::new(0),
            last_packet_ms: AtomicU64::new(crate::now_ms()),
            talking: AtomicBool::new(false),
            pending: AtomicU64::new(0),
            join_ip: None,
        }
    }

    /// The address the join came from (see `join_ip`).
    pub fn joined_from(mut self, ip: std::net::IpAddr) -> Participant {
        self.join_ip = Some(crate::canonical_ip(ip));
        self
    }

    /// A new key under the next epoch; the old one stays valid for `grace`. Returns the new
    /// epoch and key bytes (hex) for the participant's event stream.
    pub fn rotate(&self, grace: Duration) -> Option<(u32, String)> {
        let mut keys = self.keys.lock().ok()?;
        let epoch = keys.current.epoch.wrapping_add(1);
        let fresh = Key::generate(self.cipher, epoch);
        let hex = hex::encode(fresh.bytes.as_slice());
        let old = std::mem::replace(&mut keys.current, fresh);
        let old_window = std::mem::take(&mut keys.current_window);
        // The key before the previous one is dropped here (zeroized).
        keys.previous = Some((old, old_window, Instant::now() + grace));
        keys.client_has_current = false;
        Some((epoch, hex))
    }

    /// Drops the previous key once its grace period is over (zeroizing it).
    pub fn expire_previous(&self) {
        if let Ok(mut keys) = self.keys.lock() {
            if matches!(&keys.previous, Some((_, _, until)) if Instant::now() >= *until) {
                keys.previous = None;
            }
        }
    }

    pub fn current_key(&self) -> Option<(u32, String)> {
        let keys = self.keys.lock().ok()?;
        Some((
            keys.current.epoch,
            hex::encode(keys.current.bytes.as_slice()),
        ))
    }
}
