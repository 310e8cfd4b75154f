//! The push scenario: a fake FCM on loopback (TLS, its token endpoint and `messages:send`),
//! a server pointed at it, many members each with an FCM device, none connected. Measures
//! notifications/s through the dispatcher (one room's posts fanned out to every member's
//! device) and the server's memory with a backlog queued while the provider is down.

use std::sync::atomic::AtomicBool;

use actix_web::{web, App, HttpResponse, HttpServer};

use super::*;

/// The fake FCM: counts accepted sends, answers 503 while `down`.
pub(super) struct FakeFcm {
    received: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    first_us: Arc<AtomicU64>,
    last_us: Arc<AtomicU64>,
    _dir: tempfile_dir::TempDir,
}

/// Starts the fake; returns it and the server flags that point at it.
pub(super) fn start_fake_fcm() -> (FakeFcm, Vec<String>) {
    let dir = std::env::temp_dir().join(format!("confab-bench-fcm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("fake FCM folder");
    let (cert, key) = confab::tls::generate_self_signed(&["127.0.0.1".to_string()])
        .expect("fake FCM certificate");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, cert.to_pem().expect("pem")).expect("ca file");
    let rsa = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa"))
        .expect("rsa key");
    let private_key =
        String::from_utf8(rsa.private_key_to_pem_pkcs8().expect("pem")).expect("utf-8 pem");
    let mut acceptor =
        openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls())
            .expect("acceptor");
    acceptor.set_certificate(&cert).expect("certificate");
    acceptor.set_private_key(&key).expect("key");
    let received = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let first_us = Arc::new(AtomicU64::new(0));
    let last_us = Arc::new(AtomicU64::new(0));
    let (r, d, f, l) = (
        received.clone(),
        down.clone(),
        first_us.clone(),
        last_us.clone(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            let server = HttpServer::new(move || {
                let (r, d, f, l) = (r.clone(), d.clone(), f.clone(), l.clone());
                App::new()
                    .route(
                        "/token",
                        web::post().to(|| async {
                            HttpResponse::Ok()
                                .json(json!({"access_token": "bench", "expires_in": 3600}))
                        }),
                    )
                    .route(
                        "/v1/projects/{p}/messages:send",
                        web::post().to(move |_body: web::Bytes| {
                            let (r, d, f, l) = (r.clone(), d.clone(), f.clone(), l.clone());
                            async move {
                                if d.load(Ordering::Relaxed) {
                                    return HttpResponse::ServiceUnavailable().finish();
                                }
                                let now = now_us();
                                let _ = f.compare_exchange(
                                    0,
                                    now,
                                    Ordering::Relaxed,
                                    Ordering::Relaxed,
                                );
                                l.fetch_max(now, Ordering::Relaxed);
                                r.fetch_add(1, Ordering::Relaxed);
                                HttpResponse::Ok().json(json!({"name": "m"}))
                            }
                        }),
                    )
            })
            .workers(1)
            .bind_openssl("127.0.0.1:0", acceptor)
            .expect("fake FCM bind");
            let _ = tx.send(server.addrs()[0]);
            let _ = server.run().await;
        });
    });
    let addr = rx.recv().expect("fake FCM address");
    let account = dir.join("service-account.json");
    std::fs::write(
        &account,
        json!({
            "project_id": "bench", "private_key": private_key, "private_key_id": "k",
            "client_email": "bench@bench.iam.gserviceaccount.com",
            "token_uri": format!("https://{addr}/token"),
        })
        .to_string(),
    )
    .expect("service account");
    let flags = vec![
        "--push-fcm-service-account".into(),
        account.display().to_string(),
        "--push-fcm-url".into(),
        format!("https://{addr}"),
        "--push-ca-file".into(),
        ca.display().to_string(),
        "--push-coalesce-ms".into(),
        "100".into(),
        "--push-queue-max".into(),
        "1000000".into(),
    ];
    (
        FakeFcm {
            received,
            down,
            first_us,
            last_us,
            _dir: tempfile_dir::TempDir(dir),
        },
        flags,
    )
}

async fn queued(admin: &mut Client) -> u64 {
    admin.server_health().await.unwrap_or_default()["push"]["queued"]
        .as_u64()
        .unwrap_or(0)
}

pub(super) async fn run_push(
    users: usize,
    posts: usize,
    server: &Server,
    fake: &FakeFcm,
) -> serde_json::Value {
    let Some(pid) = server.child.as_ref().map(|c| c.id()) else {
        return json!({ "error": "--push-users needs a server started by the bench" });
    };
    let mut admin = Client::new(&server.addr, trust(server)).expect("client");
    admin
        .login("admin", &server.admin_password)
        .await
        .expect("login");
    // Members, each with an FCM device, none connected.
    let mut ids = Vec::with_capacity(users);
    for i in 0..users {
        let name = format!("p{i}");
        let (id, _) = admin
            .create_user(&name, Some("bench-password-1"), false)
            .await
            .expect("user");
        let mut c = admin.another();
        c.login(&name, "bench-password-1").await.expect("login");
        c.push_register(json!({"platform": "fcm", "token": format!("bench-{i}")}))
            .await
            .expect("device");
        ids.push(id);
    }
    let room = admin.create_room("push", &ids).await.expect("room");

    // 1. Throughput: each post fans out to every member's device.
    let before = fake.received.load(Ordering::Relaxed);
    for i in 0..posts {
        admin
            .send_text(room, &format!("post {i}"))
            .await
            .expect("post");
        // Beyond the coalescing window: each post is its own notification.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Done when nothing more arrives for 3 s.
    let mut last = (fake.received.load(Ordering::Relaxed), Instant::now());
    while last.1.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = fake.received.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let delivered = fake.received.load(Ordering::Relaxed) - before;
    let span_s =
        (fake.last_us.load(Ordering::Relaxed) - fake.first_us.load(Ordering::Relaxed)) as f64 / 1e6;
    let cpu_after_throughput = cpu_ms(pid);

    // 2. A backlog while the provider is down: the queue is on disk, memory stays flat.
    fake.down.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = proc_status_kib(pid, "VmRSS:");
    let sampler = RssSampler::start(pid);
    sampler.reset(rss_before);
    let backlog_target = 100_000u64;
    let mut i = 0;
    while queued(&mut admin).await < backlog_target && i < 10_000 {
        admin
            .send_text(room, &format!("backlog {i}"))
            .await
            .expect("post");
        tokio::time::sleep(Duration::from_millis(120)).await;
        i += 1;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = queued(&mut admin).await;
    let rss_peak = sampler.peak();
    let rss_pending = proc_status_kib(pid, "VmRSS:");

    // 3. The provider back: the backlog drains.
    let drained_from = fake.received.load(Ordering::Relaxed);
    fake.down.store(false, Ordering::Relaxed);
    let t = Instant::now();
    while queued(&mut admin).await > 0 && t.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_s = t.elapsed().as_secs_f64();
    let drained = fake.received.load(Ordering::Relaxed) - drained_from;
    json!({
        "push": {
            "members": users,
            "posts": posts,
            "notificationsDelivered": delivered,
            "firstToLastSeconds": (span_s * 100.0).round() / 100.0,
            "notificationsPerSec": (delivered as f64 / span_s.max(0.001)).round(),
            "serverCpuMsAfterThroughput": cpu_after_throughput,
            "backlogPostsWhileDown": i,
            "pendingWhileDown": pending,
            "serverRssBeforeBacklogKiB": rss_before,
            "serverRssWithBacklogKiB": rss_pending,
            "serverRssPeakKiB": rss_peak,
            "backlogDrainedNotifications": drained,
            "backlogDrainSeconds": (drain_s * 10.0).round() / 10.0,
        }
    })
}
