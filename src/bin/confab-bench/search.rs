//! The search scenario: `--search-messages N` spread over `--search-rooms R` rooms (words
//! drawn from a 20,000-word vocabulary with a Zipf-like skew), then a reader who belongs to
//! `--search-user-rooms K` of them times queries of every kind; then the server is stopped
//! and `admin reindex` rebuilds the index. Reports the server's CPU per post with indexing,
//! how far the index lags, its size per message, query latencies and the rebuild's time.

use rand::{Rng, SeedableRng};

use super::*;

const VOCABULARY: usize = 20_000;
const SYLLABLES: [&str; 16] = [
    "ka", "lo", "mi", "ten", "ra", "vo", "shi", "pu", "del", "an", "or", "es", "ti", "qua", "ber",
    "gon",
];

/// The `rank`-th word of the vocabulary (0 the most frequent).
fn word(rank: usize) -> String {
    let mut n = rank + SYLLABLES.len();
    let mut out = String::new();
    while n > 0 {
        out.push_str(SYLLABLES[n % SYLLABLES.len()]);
        n /= SYLLABLES.len();
    }
    out
}

/// A rank with probability about 1/rank (log-uniform).
fn zipf_rank(rng: &mut impl Rng) -> usize {
    let u: f64 = rng.gen();
    ((u * (VOCABULARY as f64).ln()).exp() as usize).saturating_sub(1) % VOCABULARY
}

/// Message `i`'s text: 5 to 24 words (deterministic).
fn text(i: u64) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(i);
    let n = rng.gen_range(5..25);
    (0..n)
        .map(|_| word(zipf_rank(&mut rng)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    confab::admin::folder_bytes(dir)
}

/// Children's CPU (user + system), ms: `admin reindex` is measured by the difference.
fn children_cpu_ms() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

pub(super) async fn run_search(
    n: u64,
    rooms: usize,
    user_rooms: usize,
    posters: usize,
    server: &mut Server,
) -> serde_json::Value {
    let (Some(dir), Some(pid)) = (
        server._tmp.as_ref().map(|t| t.0.clone()),
        server.child.as_ref().map(|c| c.id()),
    ) else {
        return json!({ "error": "--search-messages needs a server started by the bench" });
    };
    let mut admin = Client::new(&server.addr, trust(server)).expect("client");
    admin
        .login("admin", &server.admin_password)
        .await
        .expect("login");
    let (reader, _) = admin
        .create_user("reader", Some("reader-password-123"), false)
        .await
        .expect("reader");
    let mut room_ids = Vec::with_capacity(rooms);
    for r in 0..rooms.max(1) {
        let members: Vec<u64> = if r < user_rooms { vec![reader] } else { vec![] };
        room_ids.push(
            admin
                .create_room(&format!("room {r}"), &members)
                .await
                .expect("room"),
        );
    }
    let room_ids = Arc::new(room_ids);

    // Fill, measuring the server's CPU (posting, fsync and indexing together).
    let cpu0 = cpu_ms(pid);
    let t = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..posters.max(1) {
        let mut c = admin.another();
        c.use_token(admin.session_id().unwrap_or_default());
        let (next, room_ids) = (next.clone(), room_ids.clone());
        tasks.push(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let room = room_ids[(i as usize) % room_ids.len()];
                let _ = c.send_text(room, &text(i)).await;
            }
        });
    }
    join_all(tasks).await;
    let fill_secs = t.elapsed().as_secs_f64();
    // The index's lag: a marker posted now, searched for until found.
    let marked = Instant::now();
    admin
        .send_text(room_ids[0], "zzmarkerword at the end")
        .await
        .expect("marker");
    let marker = confab::client::SearchParams {
        q: "zzmarkerword".into(),
        ..Default::default()
    };
    loop {
        let found = admin
            .search(&marker)
            .await
            .map(|v| v["total"].as_u64().unwrap_or(0));
        if found.unwrap_or(0) > 0 {
            break;
        }
        if marked.elapsed() > Duration::from_secs(600) {
            return json!({ "error": "the index did not catch up within 10 minutes" });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up_secs = marked.elapsed().as_secs_f64();
    let fill_cpu_ms = cpu_ms(pid).saturating_sub(cpu0);
    // Let merges settle before measuring the size.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let index_bytes = dir_bytes(&dir.join(confab::search::DIR));
    // With --encrypted the index is in the server's memory: compare with a plain run.
    let server_rss_kib = rss_kib(server, &mut admin).await;
    let storage_bytes = admin.server_health().await.unwrap_or_default()["storageBytes"]
        .as_u64()
        .unwrap_or(0);

    // Queries, as the reader (in `user_rooms` rooms).
    let mut c = Client::new(&server.addr, trust(server)).expect("client");
    c.login("reader", "reader-password-123")
        .await
        .expect("reader login");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut kinds: Vec<(&str, Vec<u32>, u64)> = Vec::new();
    for kind in [
        "common word",
        "mid word",
        "rare word",
        "two words",
        "phrase",
        "prefix",
        "common, newest first",
        "common, one room",
    ] {
        let mut lat = Vec::new();
        let mut hits = 0u64;
        for _ in 0..100 {
            let q = match kind {
                "common word" | "common, newest first" | "common, one room" => {
                    word(rng.gen_range(0..10))
                }
                "mid word" => word(rng.gen_range(100..1000)),
                "rare word" => word(rng.gen_range(5000..VOCABULARY)),
                "two words" => format!(
                    "{} {}",
                    word(rng.gen_range(0..50)),
                    word(rng.gen_range(0..50))
                ),
                "phrase" => {
                    // Two adjacent words of a message that exists.
                    let words: Vec<String> = text(rng.gen_range(0..n))
                        .split(' ')
                        .map(str::to_string)
                        .collect();
                    format!("\"{} {}\"", words[0], words[1])
                }
                _ => {
                    let w = word(rng.gen_range(0..200));
                    format!("{}*", &w[..w.len().min(4)])
                }
            };
            let room_id =
                (kind == "common, one room").then(|| room_ids[rng.gen_range(0..user_rooms.max(1))]);
            let p = confab::client::SearchParams {
                q,
                room_id,
                newest_first: kind == "common, newest first",
                ..Default::default()
            };
            let t = Instant::now();
            if let Ok(v) = c.search(&p).await {
                hits += v["total"].as_u64().unwrap_or(0);
            }
            lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
        lat.sort_unstable();
        kinds.push((kind, lat, hits / 100));
    }
    let mut all: Vec<u32> = kinds.iter().flat_map(|k| k.1.iter().copied()).collect();
    all.sort_unstable();
    let per_kind: Vec<serde_json::Value> = kinds
        .iter()
        .map(|(kind, lat, hits)| {
            json!({ "query": kind, "p50Ms": percentile(lat, 0.5), "p99Ms": percentile(lat, 0.99), "meanMatches": hits })
        })
        .collect();

    // Stop the server; rebuild the index offline.
    if let Some(mut child) = server.child.take() {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
    }
    let exe = std::env::current_exe().expect("current exe");
    let cpu_before = children_cpu_ms();
    let t = Instant::now();
    let out = Command::new(exe.with_file_name("confab-server"))
        .arg("--storage-dir")
        .arg(&dir)
        .args(["admin", "reindex"])
        .output();
    let reindex_secs = t.elapsed().as_secs_f64();
    let reindex_cpu_ms = children_cpu_ms().saturating_sub(cpu_before);
    let reindex_said = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Err(e) => format!("reindex failed: {e}"),
    };
    let rebuilt_bytes = dir_bytes(&dir.join(confab::search::DIR));

    let total = n + 1;
    json!({
        "messages": total,
        "rooms": rooms,
        "readerRooms": user_rooms,
        "fill": {
            "seconds": (fill_secs * 10.0).round() / 10.0,
            "postsPerSec": (n as f64 / fill_secs).round(),
            "serverCpuPerPostUs": (fill_cpu_ms as f64 * 1000.0 / n as f64).round(),
            "indexCaughtUpSecondsAfterLastPost": (caught_up_secs * 100.0).round() / 100.0,
        },
        "storageBytes": storage_bytes,
        "serverRssKib": server_rss_kib,
        "indexBytes": index_bytes,
        "indexBytesPerMessage": (index_bytes as f64 / total as f64).round(),
        "queries": {
            "p50Ms": percentile(&all, 0.5),
            "p99Ms": percentile(&all, 0.99),
            "byKind": per_kind,
        },
        "reindex": {
            "seconds": (reindex_secs * 10.0).round() / 10.0,
            "cpuPerMessageUs": (reindex_cpu_ms as f64 * 1000.0 / total as f64).round(),
            "indexBytes": rebuilt_bytes,
            "said": reindex_said,
        },
    })
}
