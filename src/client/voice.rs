//! A voice participant: joins a room's channel over the API, sends synthetic frames (a
//! timestamp and a sequence number, padded to the payload size) over UDP or, with `tcp`,
//! inside the event WebSocket, receives everyone else's, follows key renewals from the
//! event stream, and measures what arrived. `confab voice` and `confab-bench` use it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{Client, ClientError, Incoming};
use crate::voice::packet::{
    CipherKind, Header, Key, ReplayWindow, FROM_CLIENT, FROM_SERVER, HEADER_LEN, KIND_CHALLENGE,
    KIND_CHALLENGE_RESPONSE, KIND_PING, KIND_PONG, KIND_VOICE, MAX_PAYLOAD, TAG_LEN,
};

#[derive(Debug, Clone)]
pub struct VoiceOptions {
    pub duration: Duration,
    pub packets_per_second: u32,
    pub payload: usize,
    pub tcp: bool,
    pub cipher: CipherKind,
    /// Join to listen only.
    pub listen_only: bool,
    /// Keep receiving this long after the last send.
    pub drain: Duration,
    /// Send UDP to this port instead of the one the server names (to test a blocked path:
    /// the client then falls back to the WebSocket).
    pub udp_port_override: Option<u16>,
}

impl Default for VoiceOptions {
    fn default() -> Self {
        VoiceOptions {
            duration: Duration::from_secs(5),
            packets_per_second: 50,
            payload: 80,
            tcp: false,
            cipher: CipherKind::Aes256Gcm,
            listen_only: false,
            drain: Duration::from_millis(700),
            udp_port_override: None,
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[derive(Default)]
struct SpeakerStats {
    seqs: BTreeSet<u64>,
    received: u64,
    duplicated: u64,
    out_of_order: u64,
    highest: Option<u64>,
    latencies_us: Vec<u64>,
}

/// Keys as the client holds them: the newest, and the one before (the server may still
/// seal with it during the grace period).
struct ClientKeys {
    current: Key,
    current_window: ReplayWindow,
    previous: Option<(Key, ReplayWindow)>,
}

impl ClientKeys {
    fn key_for(&mut self, epoch: u32) -> Option<(&Key, &mut ReplayWindow)> {
        if self.current.epoch == epoch {
            return Some((&self.current, &mut self.current_window));
        }
        match &mut self.previous {
            Some((k, w)) if k.epoch == epoch => Some((&*k, w)),
            _ => None,
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    (sorted[i] as f64 / 10.0).round() / 100.0
}

/// Joins, talks for `duration`, listens, leaves; returns the statistics as JSON.
pub async fn run(
    client: &mut Client,
    room_id: u64,
    opts: &VoiceOptions,
) -> Result<Value, ClientError> {
    if opts.payload < 16 || opts.payload > MAX_PAYLOAD {
        return Err(ClientError::Usage(format!(
            "--payload must be 16-{MAX_PAYLOAD} bytes"
        )));
    }
    let mut events = client.events().await?;
    let info = client
        .join_voice(room_id, opts.cipher.name(), opts.listen_only)
        .await?;
    let field = |name: &str| info.get(name).cloned().unwrap_or(Value::Null);
    let me = field("participantId").as_u64().unwrap_or(0) as u32;
    let udp_port = opts
        .udp_port_override
        .unwrap_or(field("udpPort").as_u64().unwrap_or(0) as u16);
    let cipher = CipherKind::from_name(field("cipher").as_str().unwrap_or(""))
        .ok_or_else(|| ClientError::Decode("join answer without a known cipher".into()))?;
    let parse_key = |epoch: u64, hex_key: &str| -> Result<Key, ClientError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_key, &mut bytes)
            .map_err(|e| ClientError::Decode(format!("voice key: {e}")))?;
        let key = Key::new(cipher, epoch as u32, bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(key)
    };
    let first = parse_key(
        field("keyEpoch").as_u64().unwrap_or(0),
        field("key").as_str().unwrap_or(""),
    )?;
    let mut keys = ClientKeys {
        current: first,
        current_window: ReplayWindow::default(),
        previous: None,
    };
    let mut epochs_seen: BTreeSet<u32> = BTreeSet::new();
    epochs_seen.insert(keys.current.epoch);

    let socket = if opts.tcp {
        None
    } else {
        let host = client.host().to_string();
        let target = tokio::net::lookup_host((host.as_str(), udp_port))
            .await
            .map_err(|e| ClientError::Transport(format!("cannot resolve {host}: {e}")))?
            .next()
            .ok_or_else(|| ClientError::Transport(format!("cannot resolve {host}")))?;
        let bind = if target.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let s = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| ClientError::Transport(format!("UDP socket: {e}")))?;
        s.connect(target)
            .await
            .map_err(|e| ClientError::Transport(format!("UDP connect: {e}")))?;
        Some(s)
    };

    let period = Duration::from_secs_f64(1.0 / opts.packets_per_second.max(1) as f64);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut ping_ticker = tokio::time::interval(Duration::from_millis(500));
    let started = Instant::now();
    let send_until = started + opts.duration;
    let stop_at = send_until + opts.drain;
    let mut seq: u64 = 0;
    let mut counter: u64 = 0;
    let mut sent = 0u64;
    let mut speakers: HashMap<u32, SpeakerStats> = HashMap::new();
    let mut auth_failures = 0u64;
    let mut replays = 0u64;
    let mut unknown_epoch = 0u64;
    let mut rtts_us: Vec<u64> = Vec::new();
    let mut buf = vec![0u8; 2048];
    let can_talk = field("canTalk").as_bool().unwrap_or(false);

    let seal =
        |kind: u8, speaker_seq: u64, payload: &[u8], keys: &ClientKeys, counter: &mut u64| {
            *counter += 1;
            let h = Header {
                kind,
                cipher: cipher.id(),
                participant: me,
                epoch: keys.current.epoch,
                counter: *counter,
                speaker: me,
                speaker_seq,
            };
            let mut out = vec![0u8; HEADER_LEN];
            out.extend_from_slice(payload);
            keys.current.seal(FROM_CLIENT, &h, &mut out);
            out
        };

    // Without a pong over UDP for this long, voice goes over the WebSocket until UDP pongs
    // come back.
    const UDP_SILENCE: Duration = Duration::from_millis(1500);
    let mut on_tcp = socket.is_none();
    let mut last_udp_pong = started;
    let mut switches = 0u32;
    let mut challenge: Option<Vec<u8>> = None;
    let mut challenges_answered = 0u32;
    loop {
        let now = Instant::now();
        if now >= stop_at {
            break;
        }
        if socket.is_some() && !on_tcp && now.duration_since(last_udp_pong) > UDP_SILENCE {
            on_tcp = true;
            switches += 1;
            // Tell the server where we are now.
            let packet = seal(KIND_PING, 0, &now_us().to_be_bytes(), &keys, &mut counter);
            let _ = events.send_binary(packet).await;
        }
        let sleep = tokio::time::sleep_until((stop_at).into());
        tokio::select! {
            _ = ticker.tick(), if now < send_until && can_talk => {
                seq += 1;
                let mut payload = vec![0u8; opts.payload];
                payload[..8].copy_from_slice(&now_us().to_be_bytes());
                payload[8..16].copy_from_slice(&seq.to_be_bytes());
                let packet = seal(KIND_VOICE, seq, &payload, &keys, &mut counter);
                let ok = match &socket {
                    Some(s) if !on_tcp => s.send(&packet).await.is_ok(),
                    _ => events.send_binary(packet).await.is_ok(),
                };
                if ok { sent += 1; }
            }
            _ = ping_ticker.tick() => {
                // Ping over UDP always (to notice when it works again), and over the
                // WebSocket while voice travels there.
                let packet = seal(KIND_PING, 0, &now_us().to_be_bytes(), &keys, &mut counter);
                if let Some(s) = &socket {
                    let _ = s.send(&packet).await;
                }
                if on_tcp {
                    let packet = seal(KIND_PING, 0, &now_us().to_be_bytes(), &keys, &mut counter);
                    let _ = events.send_binary(packet).await;
                }
            }
            r = async {
                match &socket {
                    Some(s) => s.recv(&mut buf).await.map(|n| buf[..n].to_vec()).map_err(|e| e.to_string()),
                    None => std::future::pending().await,
                }
            } => {
                if let Ok(packet) = r {
                    let kind = receive(packet, me, &mut keys, &mut speakers, &mut rtts_us, &mut epochs_seen,
                            &mut auth_failures, &mut replays, &mut unknown_epoch, &mut challenge);
                    // A new address of ours (the server did not see us join from it):
                    // prove we receive there.
                    if let (Some(token), Some(s)) = (challenge.take(), &socket) {
                        let packet = seal(KIND_CHALLENGE_RESPONSE, 0, &token, &keys, &mut counter);
                        let _ = s.send(&packet).await;
                        challenges_answered += 1;
                    }
                    if kind == Some(KIND_PONG) {
                        last_udp_pong = Instant::now();
                        if on_tcp {
                            on_tcp = false;
                            switches += 1;
                        }
                    }
                }
            }
            incoming = events.next_incoming() => {
                match incoming? {
                    Incoming::Binary(b) => {
                        receive(b.to_vec(), me, &mut keys, &mut speakers, &mut rtts_us,
                            &mut epochs_seen, &mut auth_failures, &mut replays, &mut unknown_epoch,
                            &mut challenge);
                    }
                    Incoming::Event(ev) if ev.event_type == "VoiceKey"
                        && ev.data["participantId"].as_u64() == Some(me as u64) => {
                        let epoch = ev.data["keyEpoch"].as_u64().unwrap_or(0);
                        let key = parse_key(epoch, ev.data["key"].as_str().unwrap_or(""))?;
                        epochs_seen.insert(key.epoch);
                        let old = std::mem::replace(&mut keys.current, key);
                        let old_window = std::mem::take(&mut keys.current_window);
                        keys.previous = Some((old, old_window));
                    }
                    Incoming::Event(ev) if ev.event_type == "VoiceParticipantLeft"
                        && ev.data["participantId"].as_u64() == Some(me as u64) => {
                        return Err(ClientError::Api { status: 403, text: format!("dropped from the voice channel: {}", ev.data["reason"]) });
                    }
                    Incoming::Event(_) => {}
                    Incoming::Closed => return Err(ClientError::Transport("the event stream closed".into())),
                }
            }
            _ = sleep => {}
        }
    }
    let _ = client.leave_voice(room_id).await;

    let mut per_speaker = BTreeMap::new();
    let mut all_lat: Vec<u64> = Vec::new();
    let (mut received, mut lost, mut dup, mut ooo) = (0u64, 0u64, 0u64, 0u64);
    for (id, s) in speakers.iter_mut() {
        let (lo, hi) = (
            s.seqs.iter().next().copied().unwrap_or(0),
            s.seqs.iter().last().copied().unwrap_or(0),
        );
        // Counted from the first frame heard: what a speaker sent before this participant
        // joined was never meant for it.
        let expected = if s.seqs.is_empty() { 0 } else { hi - lo + 1 };
        let missing = expected.saturating_sub(s.seqs.len() as u64);
        s.latencies_us.sort_unstable();
        per_speaker.insert(
            id.to_string(),
            json!({ "received": s.received, "lost": missing, "duplicated": s.duplicated,
                    "outOfOrder": s.out_of_order, "highestSeq": hi }),
        );
        received += s.received;
        lost += missing;
        dup += s.duplicated;
        ooo += s.out_of_order;
        all_lat.extend_from_slice(&s.latencies_us);
    }
    all_lat.sort_unstable();
    rtts_us.sort_unstable();
    Ok(json!({
        "roomId": room_id,
        "participantId": me,
        "cipher": cipher.name(),
        "transport": if on_tcp { "tcp" } else { "udp" },
        "transportSwitches": switches,
        "challengesAnswered": challenges_answered,
        "sent": sent,
        "received": received,
        "receivedPerSpeaker": per_speaker,
        "lost": lost,
        "duplicated": dup,
        "outOfOrder": ooo,
        "latencyMs": { "p50": percentile(&all_lat, 0.5), "p99": percentile(&all_lat, 0.99) },
        "pingRttMs": { "p50": percentile(&rtts_us, 0.5), "count": rtts_us.len() },
        "authFailures": auth_failures,
        "replaysRejected": replays,
        "unknownEpochs": unknown_epoch,
        "keyEpochsSeen": epochs_seen.into_iter().collect::<Vec<_>>(),
    }))
}

#[allow(clippy::too_many_arguments)]
fn receive(
    mut packet: Vec<u8>,
    me: u32,
    keys: &mut ClientKeys,
    speakers: &mut HashMap<u32, SpeakerStats>,
    rtts: &mut Vec<u64>,
    epochs_seen: &mut BTreeSet<u32>,
    auth_failures: &mut u64,
    replays: &mut u64,
    unknown_epoch: &mut u64,
    challenge: &mut Option<Vec<u8>>,
) -> Option<u8> {
    let Some(h) = Header::read(&packet) else {
        *auth_failures += 1;
        return None;
    };
    if h.participant != me {
        *auth_failures += 1;
        return None;
    }
    let Some((key, window)) = keys.key_for(h.epoch) else {
        *unknown_epoch += 1;
        return None;
    };
    if !window.check(h.counter) {
        *replays += 1;
        return None;
    }
    if !key.open(FROM_SERVER, &h, &mut packet) {
        *auth_failures += 1;
        return None;
    }
    window.record(h.counter);
    epochs_seen.insert(h.epoch);
    let payload = &packet[HEADER_LEN..packet.len() - TAG_LEN];
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&payload[i..i + 8]);
        u64::from_be_bytes(b)
    };
    match h.kind {
        KIND_PONG if payload.len() >= 8 => rtts.push(now_us().saturating_sub(u64_at(0))),
        KIND_CHALLENGE => *challenge = Some(payload.to_vec()),
        KIND_VOICE => {
            // Counted by the header's speakerSeq (the server copies it), so frames from
            // any client count — a browser's Opus frames too; only frames stamped by a
            // `confab voice` (its sequence repeated in the payload) give a latency.
            let seq = h.speaker_seq;
            let sent_at = (payload.len() >= 16 && u64_at(8) == seq).then(|| u64_at(0));
            let s = speakers.entry(h.speaker).or_default();
            s.received += 1;
            if !s.seqs.insert(seq) {
                s.duplicated += 1;
            }
            if s.highest.is_some_and(|hi| seq < hi) {
                s.out_of_order += 1;
            }
            s.highest = Some(s.highest.map_or(seq, |hi| hi.max(seq)));
            if let Some(sent_at) = sent_at {
                s.latencies_us.push(now_us().saturating_sub(sent_at));
            }
        }
        _ => {}
    }
    Some(h.kind)
}
