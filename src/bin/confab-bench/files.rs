//! Storage-side scenarios: a room of many messages (history pages and the streamed whole),
//! attachments (with a /status probe and busy logins), thumbnails.

use super::*;

/// Fills one room with `n` messages, then times history pages (limit 100) at random
/// cursors and streams the whole history (no limit), sampling the server's RSS.
pub(super) async fn run_history(n: u64, posters: usize, server: &Server) -> serde_json::Value {
    use rand::Rng;
    let Some(pid) = server.child.as_ref().map(|c| c.id()) else {
        return json!({ "error": "--history-messages needs a server started by the bench" });
    };
    let mut admin = Client::new(&server.addr, trust(server)).expect("client");
    admin
        .login("admin", &server.admin_password)
        .await
        .expect("login");
    let room = admin.create_room("history", &[]).await.expect("room");
    let storage = |h: serde_json::Value| h["storageBytes"].as_u64().unwrap_or(0);
    let disk_before = storage(admin.server_health().await.unwrap_or_default());
    let start = Instant::now();
    let (lo, hi) = fill_room(&admin, room, n, posters).await;
    let fill_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let disk_after = storage(admin.server_health().await.unwrap_or_default());

    // Pages at random cursors, one at a time.
    let mut page_us = Vec::new();
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let cursor = rng.gen_range(lo..=hi.max(lo));
        let t = Instant::now();
        let page = admin
            .history(
                room,
                Some(cursor),
                Some(100),
                Some(confab::client::Direction::Backward),
            )
            .await;
        if page.is_ok() {
            page_us.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }
    page_us.sort_unstable();

    // The whole history, streamed.
    let sampler = RssSampler::start(pid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = proc_status_kib(pid, "VmRSS:");
    sampler.reset(rss_before);
    let t = Instant::now();
    let whole = admin
        .get_to(
            &format!("/api/v1/rooms/{room}/messages"),
            &mut std::io::sink(),
        )
        .await;
    let whole_secs = t.elapsed().as_secs_f64();
    let rss_peak = sampler.peak();
    let (status, bytes) = match whole {
        Ok((s, b, _)) => (s, b),
        Err(e) => return json!({ "error": e.to_string() }),
    };
    json!({
        "history": {
            "messages": n,
            "fillSeconds": (fill_secs * 10.0).round() / 10.0,
            "fillPostsPerSec": (n as f64 / fill_secs).round(),
            "storageBytesPerMessage": disk_after.saturating_sub(disk_before) / n.max(1),
            "pagesTimed": page_us.len(),
            "pageP50Ms": percentile(&page_us, 0.50),
            "pageP99Ms": percentile(&page_us, 0.99),
            "pageMaxMs": percentile(&page_us, 1.0),
            "wholeHistoryStatus": status,
            "wholeHistoryBytes": bytes,
            "wholeHistorySeconds": (whole_secs * 100.0).round() / 100.0,
            "serverRssBeforeKiB": rss_before,
            "serverRssGrowthKiB": rss_peak.saturating_sub(rss_before),
        }
    })
}

/// Posts `n` short messages (~15 bytes of text, as in the disk figure of issue 9) to
/// `room` from `posters` concurrent clients sharing `admin`'s session; the lowest and
/// highest message ids.
pub(super) async fn fill_room(admin: &Client, room: u64, n: u64, posters: usize) -> (u64, u64) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..posters.max(1) {
        let mut c = admin.another();
        c.use_token(admin.session_id().unwrap_or_default());
        let next = next.clone();
        tasks.push(async move {
            let (mut lo, mut hi) = (u64::MAX, 0u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if let Ok(m) = c.send_text(room, &format!("short msg {i:05}")).await {
                    lo = lo.min(m.message_id);
                    hi = hi.max(m.message_id);
                }
            }
            (lo, hi)
        });
    }
    let spans = join_all(tasks).await;
    (
        spans.iter().map(|s| s.0).min().unwrap_or(0),
        spans.iter().map(|s| s.1).max().unwrap_or(0),
    )
}

/// Times `/status` every 10 ms and keeps `logins` clients logging in, on a thread of its
/// own (so the bench's own upload work does not delay the probe), until `stop` is set.
fn spawn_status_probe(
    addr: String,
    trust: Trust,
    password: String,
    logins: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(Vec<u32>, usize)> {
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            let mut probe = Client::new(&addr, trust.clone()).expect("client");
            probe.login("admin", &password).await.expect("login");
            let login_count = Arc::new(AtomicUsize::new(0));
            for _ in 0..logins {
                let (stop, addr, trust, password) =
                    (stop.clone(), addr.clone(), trust.clone(), password.clone());
                let count = login_count.clone();
                actix_rt::spawn(async move {
                    let mut c = Client::new(&addr, trust).expect("client");
                    while !stop.load(Ordering::Relaxed) {
                        if c.login("admin", &password).await.is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            // Warm up (connection open, logins under way) before the upload starts.
            let _ = probe.status().await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            ready.store(true, Ordering::Relaxed);
            let logins_before = login_count.load(Ordering::Relaxed);
            let mut times = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if probe.status().await.is_ok() {
                    times.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            times.sort_unstable();
            (times, login_count.load(Ordering::Relaxed) - logins_before)
        })
    })
}

pub(super) async fn run_attachment(
    mb: u64,
    busy_logins: usize,
    server: &Server,
) -> serde_json::Value {
    use std::io::Write;
    let Some(pid) = server.child.as_ref().map(|c| c.id()) else {
        return json!({ "error": "--attachment-mb needs a server started by the bench (no --server)" });
    };
    let mut admin = Client::new(&server.addr, trust(server)).expect("client");
    admin
        .login("admin", &server.admin_password)
        .await
        .expect("login");
    let room = admin.create_room("files", &[]).await.expect("room");
    let msg = admin
        .send_text(room, "a big file")
        .await
        .expect("message")
        .message_id;

    // A file of pseudo-random bytes (incompressible, no repeated chunks).
    let path = std::env::temp_dir().join(format!("confab-bench-{}.bin", std::process::id()));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("temp file"));
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..mb {
            for b in block.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block).expect("write temp file");
        }
    }
    let local_sha1 = confab::client::sha1_of(&path).expect("sha1");
    let sampler = RssSampler::start(pid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = proc_status_kib(pid, "VmRSS:");
    let disk_before = admin
        .server_health()
        .await
        .ok()
        .and_then(|h| h["storageBytes"].as_u64())
        .unwrap_or(0);

    sampler.reset(rss_before);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = spawn_status_probe(
        server.addr.clone(),
        trust(server),
        server.admin_password.clone(),
        busy_logins,
        stop.clone(),
        ready.clone(),
    );
    while !ready.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    let up = admin
        .upload(msg, std::slice::from_ref(&path), true)
        .await
        .expect("upload");
    let up_secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (status_us, logins_done) = probe.join().unwrap_or_default();
    let rss_peak_upload = sampler.peak();
    let disk_after_one = admin
        .server_health()
        .await
        .ok()
        .and_then(|h| h["storageBytes"].as_u64())
        .unwrap_or(0);

    sampler.reset(proc_status_kib(pid, "VmRSS:"));
    let t = Instant::now();
    let (_, n, sha1) = admin
        .download(
            up[0].attachment_id,
            &up[0].file_name,
            None,
            &mut std::io::sink(),
        )
        .await
        .expect("download");
    let down_secs = t.elapsed().as_secs_f64();
    let rss_peak_download = sampler.peak();

    let again = admin
        .upload(msg, std::slice::from_ref(&path), false)
        .await
        .expect("second upload");
    let disk_after_two = admin
        .server_health()
        .await
        .ok()
        .and_then(|h| h["storageBytes"].as_u64())
        .unwrap_or(0);
    let _ = std::fs::remove_file(&path);
    let mib = (mb << 20) as f64 / (1 << 20) as f64;
    json!({
        "attachment": {
            "sizeMiB": mb,
            "uploadSeconds": (up_secs * 100.0).round() / 100.0,
            "uploadMiBPerSec": (mib / up_secs).round(),
            "concurrentLoginClients": busy_logins,
            "loginsDuringUpload": logins_done,
            "statusProbes": status_us.len(),
            "statusP50Ms": percentile(&status_us, 0.50),
            "statusP99Ms": percentile(&status_us, 0.99),
            "statusMaxMs": percentile(&status_us, 1.0),
            "downloadSeconds": (down_secs * 100.0).round() / 100.0,
            "downloadMiBPerSec": (mib / down_secs).round(),
            "bytesDownloaded": n,
            "checksumMatches": sha1 == local_sha1 && up[0].file_checksum == local_sha1 && again[0].file_checksum == local_sha1,
            "serverRssBeforeKiB": rss_before,
            "serverRssPeakDuringUploadKiB": rss_peak_upload,
            "serverRssPeakDuringDownloadKiB": rss_peak_download,
            "storageBytesBefore": disk_before,
            "storageBytesAfterFirstUpload": disk_after_one,
            "storageBytesAfterSameFileAgain": disk_after_two,
        }
    })
}

/// Uploads `count` distinct photo-sized JPEGs, one at a time; each upload is answered after
/// its thumbnail is made, so the time per upload minus the time for a same-sized non-image
/// upload is the thumbnail's cost.
pub(super) async fn run_images(count: u32, megapixels: u32, server: &Server) -> serde_json::Value {
    let Some(pid) = server.child.as_ref().map(|c| c.id()) else {
        return json!({ "error": "--images needs a server started by the bench (no --server)" });
    };
    let mut admin = Client::new(&server.addr, trust(server)).expect("client");
    admin
        .login("admin", &server.admin_password)
        .await
        .expect("login");
    let room = admin.create_room("photos", &[]).await.expect("room");
    let msg = admin
        .send_text(room, "photos")
        .await
        .expect("message")
        .message_id;
    let width = ((megapixels as f64 * 1e6 * 4.0 / 3.0).sqrt()) as u32;
    let height = width * 3 / 4;
    let dir = std::env::temp_dir().join(format!("confab-bench-img-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut photos = Vec::new();
    let mut x: u32 = 0x9E37_79B9;
    for i in 0..count {
        // Noise over a gradient: compresses like a photo, not like a flat test card.
        let img = image::RgbImage::from_fn(width, height, |px, py| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let n = (x & 31) as u8;
            image::Rgb([
                (px * 255 / width) as u8 ^ n,
                (py * 255 / height) as u8 ^ n,
                (i * 40) as u8 ^ n,
            ])
        });
        let path = dir.join(format!("photo{i}.jpg"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("file"));
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
            .encode_image(&img)
            .expect("encode");
        drop(out);
        photos.push(path);
    }
    let bytes = std::fs::metadata(&photos[0]).map(|m| m.len()).unwrap_or(0);
    // The same bytes under a name that is not an image: no thumbnail.
    let plain = dir.join("photo0.bin");
    std::fs::copy(&photos[0], &plain).expect("copy");
    let t = Instant::now();
    admin
        .upload(msg, std::slice::from_ref(&plain), false)
        .await
        .expect("plain upload");
    let plain_ms = t.elapsed().as_secs_f64() * 1e3;

    let sampler = RssSampler::start(pid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = proc_status_kib(pid, "VmRSS:");
    sampler.reset(rss_before);
    let mut times = Vec::new();
    let mut with_thumbnail = 0;
    for p in &photos {
        let t = Instant::now();
        let up = admin
            .upload(msg, std::slice::from_ref(p), false)
            .await
            .expect("upload");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        with_thumbnail += up.iter().filter(|a| a.has_thumbnail).count();
    }
    let rss_peak = sampler.peak();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = proc_status_kib(pid, "VmRSS:");
    let _ = std::fs::remove_dir_all(&dir);
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    json!({
        "thumbnails": {
            "images": count,
            "pixels": format!("{width}x{height}"),
            "jpegBytes": bytes,
            "withThumbnail": with_thumbnail,
            "uploadMsMedian": (median * 10.0).round() / 10.0,
            "uploadMsMax": (times[times.len() - 1] * 10.0).round() / 10.0,
            "sameBytesNoThumbnailMs": (plain_ms * 10.0).round() / 10.0,
            "thumbnailMsMedian": ((median - plain_ms).max(0.0) * 10.0).round() / 10.0,
            "serverRssBeforeKiB": rss_before,
            "serverRssPeakKiB": rss_peak,
            "serverRssAfterKiB": rss_after,
        }
    })
}
