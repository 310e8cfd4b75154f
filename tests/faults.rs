//! Storage and connection faults, made for real: every group commit reaches the device
//! (`fdatasync`, counted with strace), a full disk on a small tmpfs, sled itself meeting
//! ENOSPC, the storage folder deleted under a running server, and a client that stops
//! reading its event stream.

mod util;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use confab::client::Client;
use serde_json::{json, Value};
use util::*;

async fn health(c: &mut Client) -> Value {
    c.server_health().await.expect("health")
}

/// Polls health until `want` ("Healthy"/"Unhealthy") or `limit` passes.
async fn wait_status(c: &mut Client, want: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let h = health(c).await;
        if h["status"] == want || Instant::now() > deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tmpfs_or_skip(mb: u64) -> Option<Tmpfs> {
    let t = Tmpfs::mount(mb);
    if t.is_none() {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
    }
    t
}

#[actix_rt::test]
async fn every_group_commit_ends_with_an_fdatasync_of_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let server = TestServer::start_in(&dir, &[]);
    let mut admin = server.admin().await;
    let room = admin.create_room("Synced", &[]).await.unwrap();
    let pid = server.child.as_ref().unwrap().id();
    let trace = tmp.path().join("trace");
    // -f with -p attaches every thread of the running server.
    let mut strace = std::process::Command::new("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=fdatasync,fsync,sync_file_range",
            "-o",
        ])
        .arg(&trace)
        .args(["-p", &pid.to_string()])
        .spawn()
        .expect("strace is installed (.ci/run installs it)");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = health(&mut admin).await["fsyncs"].as_u64().unwrap();
    let posts = 200;
    for i in 0..posts {
        admin
            .send_text(room, &format!("durable {i}"))
            .await
            .unwrap();
    }
    let commits = health(&mut admin).await["fsyncs"].as_u64().unwrap() - before;
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    strace.wait().unwrap();
    let text = std::fs::read_to_string(&trace).unwrap();
    // With several traced threads strace may split a call into
    // "fdatasync(11</…/db> <unfinished ...>" and a later "<... resumed>) = 0"
    // line, so count the calls by their opening half and fail on any error.
    let db_log = format!("{}>", dir.join("db").join("db").display());
    let calls: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("fdatasync(") && l.contains(&db_log))
        .collect();
    let failed = text
        .lines()
        .filter(|l| (l.contains("fdatasync") || l.contains("resumed>")) && l.contains("= -1"))
        .count();
    assert_eq!(failed, 0, "no fdatasync failed:\n{text}");
    let datasyncs = calls.len();
    assert!(
        commits >= posts,
        "one commit per sequential post at least: {commits}"
    );
    assert!(
        datasyncs as u64 >= commits,
        "every commit fdatasyncs {}: {datasyncs} fdatasyncs for {commits} commits\n{}",
        dir.join("db/db").display(),
        text.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}

#[actix_rt::test]
async fn a_full_disk_fails_writes_fast_and_writes_resume_when_space_is_back() {
    let Some(fs) = tmpfs_or_skip(48) else { return };
    let dir = fs.path.join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.admin().await;
    let room = admin.create_room("Full", &[]).await.unwrap();
    admin.send_text(room, "before").await.unwrap();
    let filler = fs.fill();
    let h = wait_status(&mut admin, "Unhealthy", Duration::from_secs(3)).await;
    assert_eq!(h["status"], "Unhealthy", "{h}");
    assert!(
        h["reason"]
            .as_str()
            .unwrap()
            .contains("Insufficient storage"),
        "{h}"
    );

    let t = Instant::now();
    let err = admin.send_text(room, "while full").await.unwrap_err();
    assert_eq!(err.status(), Some(507), "{err}");
    assert!(err.to_string().contains("disk"), "{err}");
    let login = server
        .client()
        .login("admin", &server.admin_password())
        .await;
    assert_eq!(login.map(|_| ()).unwrap_err().status(), Some(507));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "writes fail fast: {:?}",
        t.elapsed()
    );
    let texts: Vec<String> = admin
        .history(room, None, None, None)
        .await
        .expect("reads go on")
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, vec!["before"]);

    std::fs::remove_file(filler).unwrap();
    let h = wait_status(&mut admin, "Healthy", Duration::from_secs(5)).await;
    assert_eq!(h["status"], "Healthy", "{h}");
    admin
        .send_text(room, "after")
        .await
        .expect("writes resume by themselves");
    let stopping = Instant::now();
    assert!(server.stop().success());
    assert!(stopping.elapsed() < Duration::from_secs(10));
    let (sound, report) = run_check(&dir);
    assert!(sound, "{report}");
}

#[actix_rt::test]
async fn sled_meeting_enospc_is_reopened_and_a_retry_stores_once() {
    let Some(fs) = tmpfs_or_skip(48) else { return };
    let dir = fs.path.join("storage");
    // No reserve: the disk fills up under sled itself.
    let mut server = TestServer::start_in(&dir, &["--storage-reserve-mb", "0"]);
    let mut admin = server.admin().await;
    let room = admin.create_room("Enospc", &[]).await.unwrap();
    let path = format!("/api/v1/rooms/{room}/messages");
    let filler = fs.fill();
    let big = "y".repeat(60_000);
    let mut acked = Vec::new();
    let mut failed = None;
    for i in 0..400 {
        let key = format!("key-{i}");
        let body = serde_json::to_vec(&json!({ "content": format!("{i} {big}") })).unwrap();
        let t = Instant::now();
        let (status, v) = admin
            .request_with_headers(
                awc::http::Method::POST,
                &path,
                Some(body),
                &[("Idempotency-Key", &key)],
            )
            .await
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a write answered in {:?}",
            t.elapsed()
        );
        if status == 200 {
            acked.push(v["messageId"].as_u64().unwrap());
            continue;
        }
        assert!(status == 507 || status == 503, "{status} {v}");
        failed = Some((i, key));
        break;
    }
    let (failed_i, failed_key) = failed.expect("the disk filled up");
    let h = health(&mut admin).await;
    assert_eq!(h["status"], "Unhealthy", "{h}");
    let visible: Vec<u64> = admin
        .history(room, None, None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(visible, acked, "reads show exactly what was acknowledged");

    std::fs::remove_file(filler).unwrap();
    let h = wait_status(&mut admin, "Healthy", Duration::from_secs(10)).await;
    assert_eq!(h["status"], "Healthy", "the database was reopened: {h}");
    let body = serde_json::to_vec(&json!({ "content": format!("{failed_i} {big}") })).unwrap();
    let (status, _) = admin
        .request_with_headers(
            awc::http::Method::POST,
            &path,
            Some(body),
            &[("Idempotency-Key", &failed_key)],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let history = admin.history(room, None, None, None).await.unwrap();
    let copies = history
        .iter()
        .filter(|m| m.text.starts_with(&format!("{failed_i} ")))
        .count();
    assert_eq!(copies, 1, "the retried write is stored exactly once");
    for id in &acked {
        assert!(
            history.iter().any(|m| m.message_id == *id),
            "acknowledged {id} kept"
        );
    }
    assert!(server.stop().success());
    let (sound, report) = run_check(&dir);
    assert!(sound, "{report}");
}

#[actix_rt::test]
async fn a_storage_folder_deleted_under_the_server_acknowledges_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.admin().await;
    let room = admin.create_room("Gone", &[]).await.unwrap();
    let m = admin.send_text(room, "before").await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    for i in 0..5 {
        let err = admin
            .send_text(room, &format!("after {i}"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(503), "{err}");
        assert!(err.to_string().contains("deleted"), "{err}");
    }
    let file = tmp.path().join("f.txt");
    std::fs::write(&file, b"content").unwrap();
    let err = admin
        .upload(m.message_id, &[file], false)
        .await
        .unwrap_err();
    assert!(matches!(err.status(), Some(503) | Some(507)), "{err}");
    let h = health(&mut admin).await;
    assert_eq!(h["status"], "Unhealthy", "{h}");
    assert!(h["reason"].as_str().unwrap().contains("deleted"), "{h}");
    let stopping = Instant::now();
    let status = server.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "SIGTERM still stops it"
    );
    assert!(
        !status.success(),
        "the exit status tells the last flush failed"
    );
    assert!(
        !server.log_text().contains("storage flushed"),
        "{}",
        server.log_text()
    );
}

/// Connects to the event stream over raw TLS with a tiny receive buffer, then never reads.
/// Returns the stream (kept open) and its local port.
fn stuck_event_client(
    addr: &str,
    cookie: &str,
) -> (openssl::ssl::SslStream<std::net::TcpStream>, u16) {
    let target: std::net::SocketAddr = addr.parse().unwrap();
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&target.into()).unwrap();
    let tcp: std::net::TcpStream = sock.into();
    let port = tcp.local_addr().unwrap().port();
    let mut tls = tls_over(tcp);
    let req = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: VirolaUserSessionId={cookie}\r\nOrigin: https://localhost\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    (tls, port)
}

#[actix_rt::test]
async fn a_client_that_stops_reading_has_its_connection_closed() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (alice_id, alice) = server.user(&mut admin, "alice").await;
    let room = admin.create_room("Firehose", &[alice_id]).await.unwrap();
    let server_port: u16 = server.addr.rsplit(':').next().unwrap().parse().unwrap();
    let (stuck, port) = stuck_event_client(&server.addr, alice.session_id().unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        established(server_port, port),
        1,
        "the event connection is up"
    );
    let big = "x".repeat(60 * 1024);
    let started = Instant::now();
    for _ in 0..400 {
        admin.send_text(room, &big).await.unwrap();
    }
    let deadline = started + Duration::from_secs(35);
    while established(server_port, port) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        established(server_port, port),
        0,
        "the server closed its side of the stuck connection within {:?}",
        started.elapsed()
    );
    let h = health(&mut admin).await;
    assert_eq!(h["connectedSessions"], 0, "{h}");
    drop(stuck);
}
