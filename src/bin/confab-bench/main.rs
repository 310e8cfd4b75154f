//! `confab-bench`: a load generator for Confab, on loopback only.
//!
//! It starts its own `confab-server` (the sibling binary) on a temporary storage folder, or
//! uses `--server` (a loopback address). It logs in N users, opens one event WebSocket per
//! user, spreads them over R rooms, then
//! 1. posts as fast as P concurrent posters can get fsync-acknowledged answers, and
//! 2. posts at a fixed rate and measures post-to-event latency at every receiver.
//!
//! It prints fsynced posts/s, event deliveries/s, p50/p99 latency, and the server's RSS
//! before and after the sessions connected (memory per connected session).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argh::FromArgs;
use confab::client::{Client, Trust};
use futures_util::future::join_all;
use serde_json::json;

mod backup;
mod files;
mod hostile;
mod push;
mod search;
mod voice;
mod web;

use backup::run_backup;
use files::{run_attachment, run_history, run_images};
use hostile::run_hostile;
use voice::run_voice;

/// Load-test a Confab server over loopback.
#[derive(FromArgs, Clone)]
struct Args {
    /// server HOST:PORT on loopback (default: start a fresh server)
    #[argh(option)]
    server: Option<String>,
    /// admin password file for --server
    #[argh(option)]
    password_file: Option<String>,
    /// connected event sessions (one user each)
    #[argh(option, default = "1000")]
    sessions: usize,
    /// rooms the users are spread over
    #[argh(option, default = "10")]
    rooms: usize,
    /// concurrent posters in the throughput phase
    #[argh(option, default = "64")]
    posters: usize,
    /// messages posted in the throughput phase
    #[argh(option, default = "20000")]
    posts: usize,
    /// posts per second in the latency phase
    #[argh(option, default = "1000")]
    rate: u64,
    /// seconds of the latency phase
    #[argh(option, default = "10")]
    rate_secs: u64,
    /// threads receiving events
    #[argh(option, default = "2")]
    receiver_threads: usize,
    /// open no event sessions: members exist but nobody is connected, so the server's CPU
    /// per post is its fixed cost without any delivery
    #[argh(switch)]
    no_events: bool,
    /// after the latency phase, every member of the first room marks one message read;
    /// reports the bytes all sessions received for it (O(n) is the goal)
    #[argh(switch)]
    read_all: bool,
    /// instead of messages: fill one room with this many messages, then time history pages
    /// (limit 100) at random cursors and stream the whole history, sampling the RSS
    #[argh(option, default = "0")]
    history_messages: u64,
    /// instead of messages: this many members, each with an FCM device and not connected,
    /// get the room's posts as push notifications through a fake FCM on loopback
    #[argh(option, default = "0")]
    push_users: usize,
    /// with --push-users: posts whose notifications are timed (default 20)
    #[argh(option, default = "20")]
    push_posts: usize,
    /// instead of messages: fill one room with this many messages, then take a live backup
    /// while --posters post (posting latency alone and during the backup), and restore it
    #[argh(option, default = "0")]
    backup_messages: u64,
    /// instead of messages: measure the web client's first load (bytes sent, gzip)
    #[argh(switch)]
    web_first_load: bool,
    /// instead of messages: fill one room with this many messages, then scroll it from the
    /// newest to the oldest in headless Chromium (the web client's scroll cost)
    #[argh(option, default = "0")]
    web_scroll: u64,
    /// instead of messages: post this many messages over --search-rooms rooms, then time
    /// searches of a member of --search-user-rooms of them, and an offline reindex
    #[argh(option, default = "0")]
    search_messages: u64,
    /// with --search-messages: rooms (default 1000)
    #[argh(option, default = "1000")]
    search_rooms: usize,
    /// with --search-messages: rooms the searching user belongs to (default 50)
    #[argh(option, default = "50")]
    search_user_rooms: usize,
    /// with --attachment-mb: this many clients log in over and over during the upload,
    /// while /status is timed every 10 ms
    #[argh(option, default = "0")]
    busy_logins: usize,
    /// server worker threads when starting a fresh server
    #[argh(option)]
    server_workers: Option<usize>,
    /// instead of messages: upload and download one attachment of this many MiB (twice, to
    /// show deduplication), sampling the server's RSS
    #[argh(option, default = "0")]
    attachment_mb: u64,
    /// instead of messages: upload this many distinct JPEG photos (--image-mp megapixels
    /// each) and time the thumbnails, sampling the server's RSS
    #[argh(option, default = "0")]
    images: u32,
    /// megapixels per image for --images
    #[argh(option, default = "12")]
    image_mp: u32,
    /// instead of messages: open this many hostile connections from 127.0.0.2 (silent, and
    /// login bodies sent a byte every 5 s) and time a member's logins and posts meanwhile
    #[argh(option, default = "0")]
    hostile: usize,
    /// with --hostile: how many logins and posts the member times (default 200)
    #[argh(option, default = "200")]
    hostile_rounds: usize,
    /// instead of messages: voice with this many channels (rooms)
    #[argh(option, default = "0")]
    voice_channels: u32,
    /// talkers per voice channel (default 10)
    #[argh(option, default = "10")]
    voice_talkers: u32,
    /// packets per second per talker (default 50)
    #[argh(option, default = "50")]
    voice_pps: u32,
    /// payload bytes per voice packet (default 80)
    #[argh(option, default = "80")]
    voice_payload: usize,
    /// seconds of voice (default 10)
    #[argh(option, default = "10")]
    voice_secs: u64,
    /// voice receivers check their sockets every this many µs instead of sleeping in poll
    /// (0, the default: block in poll, so each packet wakes a receiver thread)
    #[argh(option, default = "0")]
    voice_sweep_us: u64,
    /// start the fresh server with its storage encrypted at rest (a random key), to
    /// measure what sealing costs
    #[argh(switch)]
    encrypted: bool,
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

struct Counters {
    connected: AtomicUsize,
    deliveries: AtomicU64,
    bytes: AtomicU64,
    last_delivery_us: AtomicU64,
    latencies: Mutex<Vec<u32>>,
    /// Per latency-phase post (by its send time): the latest delivery to any member.
    last_member: Mutex<std::collections::HashMap<u64, u32>>,
}

struct Server {
    addr: String,
    fingerprint: Option<String>,
    admin_password: String,
    child: Option<Child>,
    _tmp: Option<tempfile_dir::TempDir>,
}

mod tempfile_dir {
    /// A temporary folder removed on drop (the bench needs nothing more than this).
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn is_loopback(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map(|mut a| a.all(|s| s.ip().is_loopback()))
        .unwrap_or(false)
}

fn start_server(args: &Args, extra: &[String]) -> Server {
    if let Some(addr) = &args.server {
        if !is_loopback(addr) {
            eprintln!("confab-bench: --server must be a loopback address (127.0.0.0/8 or ::1)");
            std::process::exit(2);
        }
        let pw = args
            .password_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .or_else(|| std::env::var("CONFAB_PASSWORD").ok())
            .unwrap_or_default();
        return Server {
            addr: addr.clone(),
            fingerprint: None,
            admin_password: pw.trim().into(),
            child: None,
            _tmp: None,
        };
    }
    let exe = std::env::current_exe().expect("current exe");
    let server_bin = exe.with_file_name("confab-server");
    let dir = std::env::temp_dir().join(format!("confab-bench-{}", std::process::id()));
    let tmp = tempfile_dir::TempDir(dir.clone());
    let mut cmd = Command::new(server_bin);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "warn,confab=info,confab::access=off",
        "--storage-dir",
    ])
    .arg(&dir)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Some(w) = args.server_workers {
        cmd.args(["--workers", &w.to_string()]);
    }
    cmd.args(extra);
    if args.encrypted {
        let mut key = [0u8; 32];
        if let Err(e) = openssl::rand::rand_bytes(&mut key) {
            eprintln!("confab-bench: no random key: {e}");
            std::process::exit(1);
        }
        // Inside the run's folder, so it goes with it.
        let key_path = dir.join("bench.key");
        let written =
            std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&key_path, hex::encode(key)));
        if let Err(e) = written {
            eprintln!("confab-bench: cannot write {}: {e}", key_path.display());
            std::process::exit(1);
        }
        cmd.arg("--encryption-key-file").arg(&key_path);
    }
    if args.hostile == 0 {
        // Every session of the load comes from 127.0.0.1: no per-address budget.
        cmd.args([
            "--max-connections-per-address",
            "1000000",
            "--max-unauthenticated-per-address",
            "1000000",
        ]);
    }
    if args.voice_channels > 0 {
        // The load generator does not follow key renewals; keep one key for the run.
        cmd.args(["--voice-key-rotation", "3600"]);
        if let Ok(t) = std::env::var("CONFAB_BENCH_VOICE_THREADS") {
            cmd.args(["--voice-threads", &t]);
        }
    }
    // The server must not outlive the bench, however the bench ends.
    // SAFETY: prctl in the forked child before exec; async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .expect("start confab-server (build it with cargo build --release)");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut addr = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on https://").nth(1) {
                addr = rest.split_whitespace().next().map(str::to_string);
            }
            if let Some(fp) = line.split("SHA-256 fingerprint ").nth(1) {
                let _ = tx.send((addr.clone(), fp.trim().to_string()));
            }
        }
    });
    let (addr, fp) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server start");
    let admin_password =
        std::fs::read_to_string(dir.join("initial-admin-password")).expect("admin password");
    Server {
        addr: addr.expect("address"),
        fingerprint: Some(fp),
        admin_password: admin_password.trim().into(),
        child: Some(child),
        _tmp: Some(tmp),
    }
}

fn trust(server: &Server) -> Trust {
    match &server.fingerprint {
        Some(fp) => Trust::Fingerprint(fp.clone()),
        None => Trust::Insecure,
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of the process, in milliseconds.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1000 / hz
}

async fn rss_kib(server: &Server, admin: &mut Client) -> u64 {
    match &server.child {
        Some(c) => proc_status_kib(c.id(), "VmRSS:"),
        None => {
            admin
                .server_health()
                .await
                .ok()
                .and_then(|h| h["residentMemoryBytes"].as_u64())
                .unwrap_or(0)
                / 1024
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

/// One receiver thread: its own runtime, its share of the sessions.
fn spawn_receivers(addr: String, trust: Trust, sessions: Vec<String>, counters: Arc<Counters>) {
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            let base = Client::with_pool_limit(&addr, trust.clone(), 0).expect("client");
            for chunk in sessions.chunks(16) {
                let mut opens = Vec::new();
                for sid in chunk {
                    let mut c = base.another();
                    c.use_token(sid);
                    // As a Confab client would: read receipts as small deltas.
                    opens.push(async move { c.events_with_extensions("readDeltas").await });
                }
                for stream in join_all(opens).await {
                    let mut stream = match stream {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("event stream failed: {e}");
                            continue;
                        }
                    };
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                    let counters = counters.clone();
                    actix_rt::spawn(async move {
                        let mut local = Vec::new();
                        let mut local_posts: Vec<(u64, u32)> = Vec::new();
                        while let Ok(Some(frame)) = stream.next_raw().await {
                            let now = now_us();
                            counters.deliveries.fetch_add(1, Ordering::Relaxed);
                            counters
                                .bytes
                                .fetch_add(frame.len() as u64, Ordering::Relaxed);
                            counters.last_delivery_us.fetch_max(now, Ordering::Relaxed);
                            if let Some(pos) = memchr_find(&frame, b"bench:2:") {
                                let digits: Vec<u8> = frame[pos + 8..]
                                    .iter()
                                    .take_while(|b| b.is_ascii_digit())
                                    .copied()
                                    .collect();
                                if let Some(sent) = std::str::from_utf8(&digits)
                                    .ok()
                                    .and_then(|s| s.parse::<u64>().ok())
                                {
                                    let l = now.saturating_sub(sent).min(u32::MAX as u64) as u32;
                                    local.push(l);
                                    local_posts.push((sent, l));
                                    if local.len() >= 256 {
                                        merge(&counters, &mut local, &mut local_posts);
                                    }
                                }
                            }
                            if !local.is_empty() && counters.latencies.try_lock().is_ok() {
                                merge(&counters, &mut local, &mut local_posts);
                            }
                        }
                    });
                }
            }
            // Keep the runtime alive for the receivers.
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
    });
}

/// Adds a receiver's latencies to the shared ones.
fn merge(counters: &Counters, local: &mut Vec<u32>, posts: &mut Vec<(u64, u32)>) {
    if let Ok(mut l) = counters.latencies.lock() {
        l.append(local);
    }
    if let Ok(mut m) = counters.last_member.lock() {
        for (sent, l) in posts.drain(..) {
            let e = m.entry(sent).or_insert(0);
            *e = (*e).max(l);
        }
    }
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn main() {
    let args: Args = argh::from_env();
    confab::raise_fd_limit();
    epoch();
    let fake_fcm = (args.push_users > 0).then(push::start_fake_fcm);
    let extra = fake_fcm.as_ref().map(|f| f.1.clone()).unwrap_or_default();
    let mut server = start_server(&args, &extra);
    let system = actix_rt::System::new();
    let report = if let Some((fake, _)) = &fake_fcm {
        system.block_on(push::run_push(
            args.push_users,
            args.push_posts,
            &server,
            fake,
        ))
    } else if args.voice_channels > 0 {
        system.block_on(run_voice(args.clone(), &server))
    } else if args.hostile > 0 {
        system.block_on(run_hostile(args.hostile, args.hostile_rounds, &server))
    } else if args.images > 0 {
        system.block_on(run_images(args.images, args.image_mp, &server))
    } else if args.web_scroll > 0 {
        system.block_on(web::run_web_scroll(&server, args.web_scroll, args.posters))
    } else if args.web_first_load {
        system.block_on(web::run_web_first_load(&server))
    } else if args.search_messages > 0 {
        system.block_on(search::run_search(
            args.search_messages,
            args.search_rooms,
            args.search_user_rooms,
            args.posters,
            &mut server,
        ))
    } else if args.backup_messages > 0 {
        system.block_on(run_backup(args.backup_messages, args.posters, &server))
    } else if args.history_messages > 0 {
        system.block_on(run_history(args.history_messages, args.posters, &server))
    } else if args.attachment_mb > 0 {
        system.block_on(run_attachment(
            args.attachment_mb,
            args.busy_logins,
            &server,
        ))
    } else {
        system.block_on(run(args.clone(), &server))
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if let Some(mut c) = server.child {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let _ = c.wait();
    }
    // exit() runs no destructors: remove the fresh server's folder first.
    drop(server._tmp);
    std::process::exit(0);
}

async fn run(args: Args, server: &Server) -> serde_json::Value {
    let t = trust(server);
    // No pool limit: the posters and setup tasks share this client's connections.
    let mut admin = Client::with_pool_limit(&server.addr, t.clone(), 0).expect("client");
    admin
        .login("admin", &server.admin_password)
        .await
        .expect("admin login");
    let rss_start = rss_kib(server, &mut admin).await;

    // Users, in parallel batches (argon2 on the server bounds this).
    let setup = Instant::now();
    let n = args.sessions.max(1);
    let password = "bench-password-1";
    let mut user_ids = Vec::with_capacity(n);
    let run_tag = std::process::id();
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let futs = chunk.iter().map(|i| {
            let mut c = admin.another();
            c.use_token(admin.session_id().unwrap_or_default());
            async move {
                c.create_user(&format!("bench{run_tag}-{i}"), Some(password), false)
                    .await
            }
        });
        for r in join_all(futs).await {
            user_ids.push(r.expect("create user").0);
        }
    }
    let rooms_n = args.rooms.max(1);
    let mut rooms = Vec::new();
    for r in 0..rooms_n {
        let members: Vec<u64> = user_ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % rooms_n == r)
            .map(|(_, &u)| u)
            .collect();
        rooms.push(
            admin
                .create_room(&format!("bench-room-{r}"), &members)
                .await
                .expect("room"),
        );
    }
    let mut sessions = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let futs = chunk.iter().map(|i| {
            let mut c = admin.another();
            async move {
                c.login(&format!("bench{run_tag}-{i}"), password)
                    .await
                    .expect("login");
                c.session_id().unwrap_or_default().to_string()
            }
        });
        sessions.extend(join_all(futs).await);
    }
    let setup_secs = setup.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib(server, &mut admin).await;

    // Event sessions on receiver threads.
    let counters = Arc::new(Counters {
        connected: AtomicUsize::new(0),
        deliveries: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        latencies: Mutex::new(Vec::new()),
        last_member: Mutex::new(std::collections::HashMap::new()),
    });
    let threads = args.receiver_threads.max(1);
    let per = n.div_ceil(threads);
    if !args.no_events {
        for part in sessions.chunks(per) {
            spawn_receivers(
                server.addr.clone(),
                t.clone(),
                part.to_vec(),
                counters.clone(),
            );
        }
    }
    let want = if args.no_events { 0 } else { n };
    let connect_start = Instant::now();
    while counters.connected.load(Ordering::Relaxed) < want
        && connect_start.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connected = counters.connected.load(Ordering::Relaxed);
    let connect_secs = connect_start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = rss_kib(server, &mut admin).await;
    let per_session_kib =
        (rss_connected.saturating_sub(rss_before)) as f64 / connected.max(1) as f64;
    let members_per_room = if args.no_events {
        0.0
    } else {
        n as f64 / rooms_n as f64
    };

    // Phase 1: throughput.
    let health0 = admin.server_health().await.unwrap_or_default();
    let cpu0 = server.child.as_ref().map(|c| cpu_ms(c.id()));
    let deliveries0 = counters.deliveries.load(Ordering::Relaxed);
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..args.posters.max(1) {
        let mut c = admin.another();
        c.use_token(admin.session_id().unwrap_or_default());
        // Open the connection before the clock starts.
        let _ = c.status().await;
        clients.push(c);
    }
    let p1_start = Instant::now();
    let p1_start_us = now_us();
    let mut posters = Vec::new();
    for mut c in clients {
        let next = next.clone();
        let rooms = rooms.clone();
        let total = args.posts;
        posters.push(async move {
            let mut ok = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if c.send_text(rooms[i % rooms.len()], &format!("bench:1:{}", now_us()))
                    .await
                    .is_ok()
                {
                    ok += 1;
                }
            }
            ok
        });
    }
    let acked: usize = join_all(posters).await.into_iter().sum();
    let p1_secs = p1_start.elapsed().as_secs_f64();
    let cpu1 = server.child.as_ref().map(|c| cpu_ms(c.id()));
    let health1 = admin.server_health().await.unwrap_or_default();
    let expected = (acked as f64 * members_per_room) as u64;
    let wait_start = Instant::now();
    while counters.deliveries.load(Ordering::Relaxed) - deliveries0 < expected
        && wait_start.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = counters.deliveries.load(Ordering::Relaxed) - deliveries0;
    let delivery_secs = (counters
        .last_delivery_us
        .load(Ordering::Relaxed)
        .saturating_sub(p1_start_us)) as f64
        / 1e6;
    let fsyncs = health1["fsyncs"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(health0["fsyncs"].as_u64().unwrap_or(0));

    // Phase 2: fixed rate, latency.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deliveries2 = counters.deliveries.load(Ordering::Relaxed);
    let rate = args.rate.max(1);
    let total2 = (rate * args.rate_secs) as usize;
    let conc = args.posters.max(1).min(total2.max(1));
    let interval_us = 1_000_000 * conc as u64 / rate;
    let mut clients = Vec::new();
    for _ in 0..conc {
        let mut c = admin.another();
        c.use_token(admin.session_id().unwrap_or_default());
        let _ = c.status().await;
        clients.push(c);
    }
    let p2_start_us = now_us();
    let cpu2 = server.child.as_ref().map(|c| cpu_ms(c.id()));
    let mut posters = Vec::new();
    for (p, mut c) in clients.into_iter().enumerate() {
        let rooms = rooms.clone();
        posters.push(async move {
            let mut ok = 0usize;
            let mut k = 0u64;
            loop {
                let i = p + (k as usize) * conc;
                if i >= total2 {
                    break;
                }
                let due = p2_start_us + k * interval_us + (p as u64 * interval_us) / conc as u64;
                let now = now_us();
                if due > now {
                    tokio::time::sleep(Duration::from_micros(due - now)).await;
                }
                if c.send_text(rooms[i % rooms.len()], &format!("bench:2:{}", now_us()))
                    .await
                    .is_ok()
                {
                    ok += 1;
                }
                k += 1;
            }
            ok
        });
    }
    let acked2: usize = join_all(posters).await.into_iter().sum();
    let p2_secs = (now_us() - p2_start_us) as f64 / 1e6;
    let expected2 = (acked2 as f64 * members_per_room) as u64;
    let wait_start = Instant::now();
    while counters.deliveries.load(Ordering::Relaxed) - deliveries2 < expected2
        && wait_start.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu3 = server.child.as_ref().map(|c| cpu_ms(c.id()));
    let delivered2 = counters.deliveries.load(Ordering::Relaxed) - deliveries2;
    let rate_cpu_ms = match (cpu2, cpu3) {
        (Some(a), Some(b)) => Some((b - a) as f64),
        _ => None,
    };
    let mut lat = counters
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let mut last_member: Vec<u32> = counters
        .last_member
        .lock()
        .map(|m| m.values().copied().collect())
        .unwrap_or_default();
    last_member.sort_unstable();
    let read_all = if args.read_all && !args.no_events {
        read_all_phase(&mut admin, &counters, rooms[0], &sessions, rooms_n).await
    } else {
        serde_json::Value::Null
    };
    let rss_end = rss_kib(server, &mut admin).await;

    json!({
        "setup": { "users": n, "rooms": rooms_n, "membersPerRoom": members_per_room, "connectedSessions": connected, "connectSeconds": (connect_secs * 10.0).round() / 10.0, "setupSeconds": (setup_secs * 10.0).round() / 10.0 },
        "throughput": {
            "posters": args.posters, "postsAcked": acked, "seconds": (p1_secs * 100.0).round() / 100.0,
            "fsyncedPostsPerSec": (acked as f64 / p1_secs).round(),
            "fsyncs": fsyncs, "postsPerFsync": if fsyncs > 0 { ((acked as f64 / fsyncs as f64) * 10.0).round() / 10.0 } else { 0.0 },
            "eventDeliveries": delivered, "expectedDeliveries": expected,
            "deliveriesPerSec": if delivery_secs > 0.0 { (delivered as f64 / delivery_secs).round() } else { 0.0 },
            "serverCpuMsPerPost": match (cpu0, cpu1) { (Some(a), Some(b)) if acked > 0 => ((b - a) as f64 / acked as f64 * 1000.0).round() / 1000.0, _ => -1.0 },
        },
        "latency": {
            "targetPostsPerSec": rate, "postsAcked": acked2, "achievedPostsPerSec": (acked2 as f64 / p2_secs).round(),
            "deliveriesMeasured": lat.len(), "expectedDeliveries": expected2,
            "p50Ms": percentile(&lat, 0.50), "p99Ms": percentile(&lat, 0.99), "maxMs": percentile(&lat, 1.0),
            "postsTimedToLastMember": last_member.len(),
            "lastMemberP50Ms": percentile(&last_member, 0.50), "lastMemberP99Ms": percentile(&last_member, 0.99),
            "eventDeliveries": delivered2,
            "serverCpuUsPerPost": rate_cpu_ms.filter(|_| acked2 > 0).map(|ms| (ms * 1000.0 / acked2 as f64).round()),
            "serverCpuUsPerDelivery": rate_cpu_ms.filter(|_| delivered2 > 0).map(|ms| (ms * 1000.0 / delivered2 as f64 * 100.0).round() / 100.0),
        },
        "readAll": read_all,
        "memory": {
            "rssAtStartKiB": rss_start, "rssBeforeSessionsKiB": rss_before, "rssWithSessionsKiB": rss_connected,
            "perConnectedSessionKiB": (per_session_kib * 10.0).round() / 10.0, "rssAtEndKiB": rss_end,
        },
    })
}

/// Every member of `room` (the sessions `i` with `i % rooms == 0`) marks one new message
/// read; answers what all sessions received meanwhile.
async fn read_all_phase(
    admin: &mut Client,
    counters: &Counters,
    room: u64,
    sessions: &[String],
    rooms: usize,
) -> serde_json::Value {
    let target = match admin.send_text(room, "read me, everyone").await {
        Ok(m) => m.message_id,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    // Let the message's own events (and the room's coalesced update) pass first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bytes0 = counters.bytes.load(Ordering::Relaxed);
    let deliveries0 = counters.deliveries.load(Ordering::Relaxed);
    let readers: Vec<String> = sessions.iter().step_by(rooms).cloned().collect();
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let readers = Arc::new(readers);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut c = admin.another();
        let (next, readers) = (next.clone(), readers.clone());
        tasks.push(async move {
            let mut ok = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(sid) = readers.get(i) else { break };
                c.use_token(sid);
                if c.mark_read(target).await.is_ok() {
                    ok += 1;
                }
            }
            ok
        });
    }
    let marked: usize = join_all(tasks).await.into_iter().sum();
    let secs = start.elapsed().as_secs_f64();
    // Receipts are gathered for half a second; room updates for one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bytes = counters.bytes.load(Ordering::Relaxed) - bytes0;
    let deliveries = counters.deliveries.load(Ordering::Relaxed) - deliveries0;
    json!({
        "readers": marked,
        "seconds": (secs * 100.0).round() / 100.0,
        "bytesToAllSessions": bytes,
        "bytesPerReader": if marked > 0 { bytes / marked as u64 } else { 0 },
        "events": deliveries,
    })
}

/// Samples a process's RSS (KiB) every 50 ms; `peak()` gives the largest since the last reset.
struct RssSampler {
    peak: Arc<AtomicU64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let p = peak.clone();
        std::thread::spawn(move || loop {
            p.fetch_max(proc_status_kib(pid, "VmRSS:"), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        });
        RssSampler { peak }
    }

    fn reset(&self, to: u64) {
        self.peak.store(to, Ordering::Relaxed);
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}
