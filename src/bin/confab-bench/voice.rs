//! The voice scenario: talkers on real UDP sockets, relay latency, loss and ordering.

use super::*;

/// C channels × P talkers, each sending `pps` packets of `payload` bytes over real UDP from
/// its own socket. Receivers do not decrypt: the relay latency is taken from the send time
/// the sender recorded for (speaker, sequence), which the server copies into the clear,
/// authenticated header. That keeps the generator cheap enough to share the two cores.
pub(super) async fn run_voice(args: Args, server: &Server) -> serde_json::Value {
    use confab::voice::packet::{
        CipherKind, Header, Key, FROM_CLIENT, HEADER_LEN, KIND_PING, KIND_VOICE,
    };
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicBool;

    let Some(pid) = server.child.as_ref().map(|c| c.id()) else {
        return json!({ "error": "voice mode needs a server started by the bench (no --server)" });
    };
    let (channels, talkers) = (
        args.voice_channels as usize,
        args.voice_talkers.max(2) as usize,
    );
    let mut admin = Client::new(&server.addr, trust(server)).expect("client");
    admin
        .login("admin", &server.admin_password)
        .await
        .expect("login");
    let port: u16 = server
        .addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port");

    struct Talker {
        id: u32,
        key: Key,
        sock: std::net::UdpSocket,
        counter: u64,
    }
    let mut all: Vec<Talker> = Vec::new();
    // One user per talker slot (a user may bring only a few devices into a channel),
    // each in every channel.
    let mut voices: Vec<Client> = Vec::new();
    let mut voice_ids = Vec::new();
    for t in 0..talkers {
        let name = format!("talker{t}");
        let password = format!("talker-password-{t}");
        let (id, _) = admin
            .create_user(&name, Some(&password), false)
            .await
            .expect("create talker");
        let mut c = admin.another();
        c.login(&name, &password).await.expect("talker login");
        voices.push(c);
        voice_ids.push(id);
    }
    for c in 0..channels {
        let room = admin
            .create_room(&format!("voice{c}"), &voice_ids)
            .await
            .expect("room");
        for voice in voices.iter_mut() {
            let info = voice
                .join_voice(room, "aes-256-gcm", false)
                .await
                .expect("join");
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(info["key"].as_str().unwrap_or(""), &mut bytes).expect("key");
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
            sock.connect(("127.0.0.1", port)).expect("connect");
            sock.set_nonblocking(true).expect("nonblocking");
            all.push(Talker {
                id: info["participantId"].as_u64().unwrap_or(0) as u32,
                key: Key::new(
                    CipherKind::Aes256Gcm,
                    info["keyEpoch"].as_u64().unwrap_or(1) as u32,
                    bytes,
                ),
                sock,
                counter: 0,
            });
        }
    }
    let n = all.len();
    let max_id = all.iter().map(|t| t.id).max().unwrap_or(0) as usize;
    // Send times (µs) per speaker and sequence, in a ring of 4096 per speaker.
    const RING: usize = 4096;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new(
        (0..(max_id + 1) * RING)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let seal = |t: &mut Talker, kind: u8, seq: u64, payload: &[u8]| -> Vec<u8> {
        t.counter += 1;
        let h = Header {
            kind,
            cipher: 1,
            participant: t.id,
            epoch: t.key.epoch,
            counter: t.counter,
            speaker: t.id,
            speaker_seq: seq,
        };
        let mut out = vec![0u8; HEADER_LEN];
        out.extend_from_slice(payload);
        t.key.seal(FROM_CLIENT, &h, &mut out);
        out
    };
    // Everyone says hello so the server knows where to send.
    for t in all.iter_mut() {
        let p = seal(t, KIND_PING, 0, &[0u8; 8]);
        let _ = t.sock.send(&p);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recv_socks: Vec<std::net::UdpSocket> = all
        .iter()
        .map(|t| t.sock.try_clone().expect("clone"))
        .collect();
    // Drain the pongs.
    let mut junk = [0u8; 2048];
    for s in &recv_socks {
        while s.recv(&mut junk).is_ok() {}
    }

    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let latencies: Arc<std::sync::Mutex<Vec<u32>>> = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut receivers = Vec::new();
    // Packets that arrived after a later one: (listener counter, speaker → listener stream).
    let reordered = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let groups = 2usize.min(n);
    let mut per_group: Vec<Vec<std::net::UdpSocket>> = (0..groups).map(|_| Vec::new()).collect();
    for (i, s) in recv_socks.into_iter().enumerate() {
        per_group[i % groups].push(s);
    }
    for socks in per_group {
        let (stop, received, latencies, sent_at) = (
            stop.clone(),
            received.clone(),
            latencies.clone(),
            sent_at.clone(),
        );
        let sweep_us = args.voice_sweep_us;
        let reordered = reordered.clone();
        receivers.push(std::thread::spawn(move || {
            // Per listener socket: the last counter, and each speaker's last sequence.
            let mut last_counter = vec![0u64; socks.len()];
            let mut last_seq: Vec<std::collections::HashMap<u32, u64>> =
                vec![Default::default(); socks.len()];
            let (mut counter_back, mut stream_back) = (0u64, 0u64);
            let mut fds: Vec<libc::pollfd> = socks
                .iter()
                .map(|s| libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let mut buf = [0u8; 2048];
            let mut local_lat = Vec::with_capacity(1 << 20);
            let mut count = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if sweep_us > 0 {
                    // Nobody waits in the kernel, so the sender's side wakes no thread.
                    std::thread::sleep(Duration::from_micros(sweep_us));
                    for fd in fds.iter_mut() {
                        fd.revents = libc::POLLIN;
                    }
                } else {
                    // SAFETY: fds points to fds.len() initialised pollfd structs.
                    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
                    if r <= 0 {
                        continue;
                    }
                }
                for (i, fd) in fds.iter_mut().enumerate() {
                    if fd.revents & libc::POLLIN == 0 {
                        continue;
                    }
                    fd.revents = 0;
                    while let Ok(len) = socks[i].recv(&mut buf) {
                        let Some(h) = Header::read(&buf[..len]) else {
                            continue;
                        };
                        if h.kind != KIND_VOICE {
                            continue;
                        }
                        count += 1;
                        if h.counter < last_counter[i] {
                            counter_back += 1;
                        }
                        last_counter[i] = last_counter[i].max(h.counter);
                        let last = last_seq[i].entry(h.speaker).or_insert(0);
                        if h.speaker_seq < *last {
                            stream_back += 1;
                        }
                        *last = (*last).max(h.speaker_seq);
                        let slot = h.speaker as usize * RING + (h.speaker_seq as usize % RING);
                        let t0 = sent_at
                            .get(slot)
                            .map(|a| a.load(Ordering::Relaxed))
                            .unwrap_or(0);
                        if t0 > 0 {
                            local_lat.push(now_us().saturating_sub(t0) as u32);
                        }
                    }
                }
            }
            received.fetch_add(count, Ordering::Relaxed);
            reordered.0.fetch_add(counter_back, Ordering::Relaxed);
            reordered.1.fetch_add(stream_back, Ordering::Relaxed);
            if let Ok(mut l) = latencies.lock() {
                l.extend_from_slice(&local_lat);
            }
        }));
    }

    let before = admin.server_health().await.ok();
    let cpu0 = cpu_ms(pid);
    let rss_before = proc_status_kib(pid, "VmRSS:");
    let secs = args.voice_secs.max(1);
    let pps = args.voice_pps.max(1) as u64;
    let payload = vec![0x55u8; args.voice_payload.clamp(16, 1024)];
    let payload_len = payload.len();
    let sender_sent_at = sent_at.clone();
    let sender = std::thread::spawn(move || {
        // Each talker sends every 1/pps s; talkers are spread evenly over that period.
        let period_us = 1_000_000 / pps;
        let start = now_us() + 10_000;
        let total_ticks = secs * pps;
        let mut sent = 0u64;
        for tick in 0..total_ticks {
            for (i, t) in all.iter_mut().enumerate() {
                let due = start + tick * period_us + (i as u64 * period_us) / n as u64;
                let now = now_us();
                if due > now + 50 {
                    std::thread::sleep(Duration::from_micros(due - now));
                }
                let seq = tick + 1;
                let p = seal(t, KIND_VOICE, seq, &payload);
                if let Some(a) = sender_sent_at.get(t.id as usize * RING + (seq as usize % RING)) {
                    a.store(now_us(), Ordering::Relaxed);
                }
                if t.sock.send(&p).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    });
    let sent = tokio::task::spawn_blocking(move || sender.join().unwrap_or(0))
        .await
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu1 = cpu_ms(pid);
    let rss_after = proc_status_kib(pid, "VmRSS:");
    stop.store(true, Ordering::Relaxed);
    for r in receivers {
        let _ = tokio::task::spawn_blocking(move || r.join()).await;
    }
    let after = admin.server_health().await.ok();
    let delivered_by_server = |h: &Option<serde_json::Value>| {
        h.as_ref()
            .and_then(|h| h["voice"]["packets"]["delivered"].as_u64())
            .unwrap_or(0)
    };
    let delivered = delivered_by_server(&after) - delivered_by_server(&before);
    let got = received.load(Ordering::Relaxed);
    let expected = sent * (talkers as u64 - 1);
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let v = lat[((lat.len() - 1) as f64 * p) as usize];
        (v as f64 / 10.0).round() / 100.0
    };
    let duration = secs as f64;
    let cpu_ms_used = cpu1.saturating_sub(cpu0) as f64;
    json!({
        "voice": {
            "channels": channels,
            "talkersPerChannel": talkers,
            "packetsPerSecondPerTalker": pps,
            "payloadBytes": payload_len,
            "seconds": secs,
            "sent": sent,
            "expectedDeliveries": expected,
            "deliveredByServer": delivered,
            "receivedByClients": got,
            "lossPercent": if expected > 0 { ((expected.saturating_sub(got)) as f64 * 10000.0 / expected as f64).round() / 100.0 } else { 0.0 },
            "deliveredPerSec": (delivered as f64 / duration).round(),
            "serverCpuPercent": (cpu_ms_used / 10.0 / duration).round(),
            "serverCpuUsPerDelivered": if delivered > 0 { (cpu_ms_used * 1000.0 / delivered as f64 * 100.0).round() / 100.0 } else { 0.0 },
            "relayLatencyMs": { "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) },
            "outOfOrder": {
                "listenerCounter": reordered.0.load(Ordering::Relaxed),
                "speakerStream": reordered.1.load(Ordering::Relaxed),
                "listenerCounterPercent": if got > 0 { (reordered.0.load(Ordering::Relaxed) as f64 * 10000.0 / got as f64).round() / 100.0 } else { 0.0 },
                "speakerStreamPercent": if got > 0 { (reordered.1.load(Ordering::Relaxed) as f64 * 10000.0 / got as f64).round() / 100.0 } else { 0.0 },
            },
            "serverRssBeforeKiB": rss_before,
            "serverRssAfterKiB": rss_after,
            "participants": n,
        }
    })
}
