//! The accounts-and-security findings, each reproduced from outside against the real
//! server: what an attacker or a careless team member could do, and no longer can.

mod util;

use std::os::unix::fs::symlink;

use util::*;

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

/// Finding 6: a symlink under `--web-root` does not lead out of it.
#[test]
fn web_root_serves_nothing_outside_it_through_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("web");
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(root.join("index.html"), "<p>confab</p>").unwrap();
    std::fs::write(root.join("assets/app.js"), "console.log(1)").unwrap();
    let outside = tmp.path().join("secret");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("key.txt"), "TOP-SECRET-VALUE").unwrap();
    symlink("/etc/passwd", root.join("passwd")).unwrap();
    symlink(outside.join("key.txt"), root.join("key.txt")).unwrap();
    symlink(&outside, root.join("linked-dir")).unwrap();
    // A link that stays inside the root is fine.
    symlink(root.join("assets/app.js"), root.join("app.js")).unwrap();
    let server = TestServer::start_in(
        &tmp.path().join("storage"),
        &["--web-root", root.to_str().unwrap()],
    );
    let get = |path: &str| raw_https(&server.addr, &http_request("GET", path, &[], b""));
    for path in ["/passwd", "/key.txt", "/linked-dir/key.txt", "/linked-dir/"] {
        let r = get(path);
        assert!(status_line(&r).contains(" 404"), "{path}: {r}");
        assert!(
            !r.contains("root:") && !r.contains("TOP-SECRET"),
            "{path}: {r}"
        );
    }
    assert!(status_line(&get("/")).contains(" 200"));
    assert!(get("/").contains("<p>confab</p>"));
    let js = get("/app.js");
    assert!(
        status_line(&js).contains(" 200") && js.contains("console.log(1)"),
        "{js}"
    );
    assert!(status_line(&get("/assets/app.js")).contains(" 200"));
}

fn login_from(server: &TestServer, from: &str, user: &str, password: &str) -> String {
    let body = serde_json::json!({ "userName": user, "password": password }).to_string();
    raw_https(
        &server.addr,
        &http_request(
            "POST",
            "/api/v1/login",
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-For", from),
            ],
            body.as_bytes(),
        ),
    )
}

fn storage_with(tmp: &tempfile::TempDir, args: &[&str]) -> TestServer {
    TestServer::start_in(&tmp.path().join("storage"), args)
}

/// Finding 2: five wrong passwords from one address lock that address out for that user,
/// not the user: the correct password from another address still works.
#[test]
fn a_strangers_wrong_passwords_do_not_lock_out_the_user() {
    let tmp = tempfile::tempdir().unwrap();
    let server = storage_with(&tmp, &["--trusted-proxy", "127.0.0.1"]);
    let pw = server.admin_password();
    for _ in 0..5 {
        let r = login_from(&server, "203.0.113.66", "admin", "guess");
        assert!(status_line(&r).contains(" 401"), "{r}");
    }
    let r = login_from(&server, "203.0.113.66", "admin", &pw);
    assert!(
        status_line(&r).contains(" 429"),
        "the guesser's address is locked: {r}"
    );
    let r = login_from(&server, "198.51.100.7", "admin", &pw);
    assert!(status_line(&r).contains(" 200"), "the user is not: {r}");
    let log = server.log_text();
    assert!(
        log.contains("login locked for this user from this address")
            && log.contains("203.0.113.66"),
        "the lock-out is in the audit log: {log}"
    );
    assert!(log.contains("login refused"), "{log}");
}

/// Behind no declared proxy, `X-Forwarded-For` is the client's own claim: it is ignored.
#[test]
fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let server = storage_with(&tmp, &[]);
    for _ in 0..5 {
        login_from(&server, "203.0.113.66", "admin", "guess");
    }
    let r = login_from(&server, "198.51.100.7", "admin", &server.admin_password());
    assert!(status_line(&r).contains(" 429"), "{r}");
}

/// A user name guessed from many addresses slows logins from addresses it never used; the
/// user's own address is not slowed, and nobody is refused.
#[test]
fn a_name_guessed_from_many_addresses_slows_only_unknown_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let server = storage_with(&tmp, &["--trusted-proxy", "127.0.0.0/8"]);
    let pw = server.admin_password();
    let r = login_from(&server, "192.0.2.10", "admin", &pw);
    assert!(status_line(&r).contains(" 200"), "{r}");
    for i in 0..10 {
        let r = login_from(&server, &format!("203.0.113.{i}"), "admin", "guess");
        assert!(status_line(&r).contains(" 401"), "{r}");
    }
    let t = std::time::Instant::now();
    let r = login_from(&server, "192.0.2.10", "admin", &pw);
    let known = t.elapsed();
    assert!(status_line(&r).contains(" 200"), "{r}");
    let t = std::time::Instant::now();
    let r = login_from(&server, "198.51.100.99", "admin", &pw);
    let unknown = t.elapsed();
    assert!(
        status_line(&r).contains(" 200"),
        "delayed, not refused: {r}"
    );
    assert!(
        unknown >= std::time::Duration::from_millis(1000),
        "{unknown:?}"
    );
    assert!(
        known + std::time::Duration::from_millis(500) < unknown,
        "{known:?} vs {unknown:?}"
    );
    assert!(server.log_text().contains("login delayed"));
}

/// Finding 3 without a browser: what a page on another origin of the same site can make a
/// browser send, answered with 403 (cookie writes) or 400 (a form posing as JSON).
#[actix_rt::test]
async fn cookie_writes_and_event_sockets_only_from_the_servers_own_origin() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let room = admin.create_room("Forgery", &[]).await.expect("room");
    let sid = admin.session_id().unwrap().to_string();
    let cookie = format!("VirolaUserSessionId={sid}");
    let path = format!("/api/v1/rooms/{room}/messages");
    let body = br#"{"content":"posted by a page on another port"}"#;
    let post = |headers: &[(&str, &str)]| {
        let mut h = vec![("Cookie", cookie.as_str())];
        h.extend_from_slice(headers);
        raw_https(&server.addr, &http_request("POST", &path, &h, body))
    };
    let json = ("Content-Type", "application/json");
    // The attack: a text/plain form from another port of the same host.
    let r = post(&[
        ("Content-Type", "text/plain"),
        ("Origin", "https://localhost:9999"),
    ]);
    assert!(status_line(&r).contains(" 403"), "{r}");
    assert!(body_json(&r)["errorText"]
        .as_str()
        .unwrap()
        .contains("https://localhost:9999"));
    // Even with the right origin, text/plain is not JSON.
    let r = post(&[
        ("Content-Type", "text/plain"),
        ("Origin", "https://localhost"),
    ]);
    assert!(status_line(&r).contains(" 400"), "{r}");
    assert!(r.contains("Content-Type: application/json"), "{r}");
    // JSON from another origin, from http://, from a sandboxed page, or with no origin.
    for origin in ["https://localhost:9999", "http://localhost", "null"] {
        let r = post(&[json, ("Origin", origin)]);
        assert!(status_line(&r).contains(" 403"), "{origin}: {r}");
    }
    let r = post(&[json]);
    assert!(status_line(&r).contains(" 403"), "{r}");
    assert!(r.contains("Origin or Referer"), "{r}");
    let r = post(&[json, ("Referer", "https://evil.localhost/page")]);
    assert!(status_line(&r).contains(" 403"), "{r}");
    // The server's own pages.
    let r = post(&[json, ("Origin", "https://localhost")]);
    assert!(status_line(&r).contains(" 200"), "{r}");
    let r = post(&[json, ("Referer", "https://localhost/rooms/1")]);
    assert!(status_line(&r).contains(" 200"), "{r}");
    // Bearer clients (scripts, the CLI) need no Origin.
    let r = raw_https(
        &server.addr,
        &http_request(
            "POST",
            &path,
            &[("Authorization", &format!("Bearer {sid}")), json],
            body,
        ),
    );
    assert!(status_line(&r).contains(" 200"), "{r}");
    // Reading with the cookie needs nothing more.
    let r = raw_https(
        &server.addr,
        &http_request("GET", &path, &[("Cookie", &cookie)], b""),
    );
    assert!(status_line(&r).contains(" 200"), "{r}");
    // The event socket: a foreign origin cannot open it with the member's cookie.
    let ws = |origin: &str| {
        let req = format!(
            "GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: {cookie}\r\nOrigin: {origin}\r\n\r\n"
        );
        let tcp = std::net::TcpStream::connect(&server.addr).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .ok();
        let mut tls = tls_over(tcp);
        use std::io::{Read, Write};
        tls.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let n = tls.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    assert!(status_line(&ws("https://localhost:9999")).contains(" 403"));
    assert!(status_line(&ws("https://localhost")).contains(" 101"));
    // The messages that got through are exactly the three allowed ones.
    let history = admin
        .history(room, None, None, None)
        .await
        .expect("history");
    assert_eq!(history.len(), 3, "{history:?}");
}

/// Finding 7: a member changes their own password (the current one required), and their
/// other sessions end while this one stays; administrators keep resetting others'.
#[actix_rt::test]
async fn members_change_their_own_password_and_name() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (alice_id, mut alice) = server.user(&mut admin, "alice").await;
    let (bob_id, _bob) = server.user(&mut admin, "bob").await;
    let mut alice_phone = server.login("alice", "alice-password-123").await;
    let mut phone_events = alice_phone.events().await.expect("events");
    // Without the current password, or a wrong one, or for someone else: refused.
    let no_old = alice
        .reset_password(alice_id, Some("new-password-456"))
        .await
        .unwrap_err();
    assert_eq!(no_old.status(), Some(400), "{no_old}");
    assert!(no_old.to_string().contains("oldPassword"), "{no_old}");
    let wrong = alice
        .change_own_password(alice_id, "not-it-at-all", "new-password-456")
        .await
        .unwrap_err();
    assert_eq!(wrong.status(), Some(403), "{wrong}");
    let other = alice
        .change_own_password(bob_id, "bob-password-123", "new-password-456")
        .await
        .unwrap_err();
    assert_eq!(other.status(), Some(403), "{other}");
    assert_eq!(status_of(alice.reset_password(bob_id, None).await), 403);
    let short = alice
        .change_own_password(alice_id, "alice-password-123", "short")
        .await
        .unwrap_err();
    assert_eq!(short.status(), Some(400), "{short}");
    // The change.
    let ended = alice
        .change_own_password(alice_id, "alice-password-123", "new-password-456")
        .await
        .expect("own password");
    assert_eq!(ended, 1);
    alice.status().await.expect("this session stays");
    assert_eq!(status_of(alice_phone.status().await), 401);
    // `next` answers `None` once the server closed the stream; it waits while it is open.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(_)) = phone_events.next().await {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "the other session's event stream was closed"
    );
    assert_eq!(
        status_of(server.client().login("alice", "alice-password-123").await),
        401
    );
    server.login("alice", "new-password-456").await;
    // Administrators still reset anyone's password without the old one.
    let generated = admin.reset_password(alice_id, None).await.expect("reset");
    assert!(generated.is_some());
    assert_eq!(status_of(alice.status().await), 401);

    // Display name: one's own, or anyone's for an administrator; renames are for them.
    let mut alice = server.login("alice", generated.as_deref().unwrap()).await;
    let me = alice
        .update_user(
            alice_id,
            serde_json::json!({ "displayName": "Alice Liddell" }),
        )
        .await
        .expect("own display name");
    assert_eq!(me.display_name, "Alice Liddell");
    for change in [
        serde_json::json!({ "displayName": "Not Bob" }),
        serde_json::json!({ "userName": "robert" }),
    ] {
        let target = if change.get("userName").is_some() {
            alice_id
        } else {
            bob_id
        };
        assert_eq!(status_of(alice.update_user(target, change).await), 403);
    }
    assert_eq!(
        status_of(
            alice
                .update_user(alice_id, serde_json::json!({ "displayName": "\u{1b}[2J" }))
                .await
        ),
        400
    );
    let bob = admin
        .update_user(bob_id, serde_json::json!({ "userName": "robert" }))
        .await
        .expect("rename");
    assert_eq!(bob.user_name, "robert");
    assert_eq!(
        status_of(
            admin
                .update_user(bob_id, serde_json::json!({ "userName": "alice" }))
                .await
        ),
        409
    );
    server.login("robert", "bob-password-123").await;
    assert_eq!(
        status_of(server.client().login("bob", "bob-password-123").await),
        401
    );
}

/// Finding 7: sessions can be listed and ended by their owner, and end by themselves.
#[actix_rt::test]
async fn sessions_are_listed_revoked_and_expire() {
    let tmp = tempfile::tempdir().unwrap();
    let server = storage_with(&tmp, &["--session-idle", "3s", "--session-max", "1h"]);
    let mut admin = server.admin().await;
    let (_, mut laptop) = server.user(&mut admin, "carol").await;
    let mut phone = server.login("carol", "carol-password-123").await;
    let list = laptop.sessions().await.expect("sessions");
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(list.iter().all(|s| s["address"] == "127.0.0.1"), "{list:?}");
    let phone_key = list
        .iter()
        .find(|s| s["current"] != true)
        .and_then(|s| s["sessionKey"].as_str())
        .unwrap()
        .to_string();
    // Nobody else's sessions can be named.
    assert_eq!(status_of(admin.end_session(&phone_key).await), 404);
    laptop
        .end_session(&phone_key)
        .await
        .expect("end the phone's");
    assert_eq!(status_of(phone.status().await), 401);
    assert_eq!(laptop.sessions().await.expect("sessions").len(), 1);
    // Logging out everywhere ends this one too.
    let mut tablet = server.login("carol", "carol-password-123").await;
    assert_eq!(tablet.end_all_sessions(true).await.expect("others"), 1);
    tablet.status().await.expect("kept");
    assert_eq!(status_of(laptop.status().await), 401);
    assert_eq!(tablet.end_all_sessions(false).await.expect("all"), 1);
    assert_eq!(status_of(tablet.status().await), 401);
    // Idle for longer than --session-idle: over.
    let mut idle = server.login("carol", "carol-password-123").await;
    idle.status().await.expect("fresh");
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let err = idle.status().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("expired"), "{err}");
}

/// Finding 7: a session used all the time still ends at `--session-max`.
#[actix_rt::test]
async fn sessions_end_at_their_maximum_age_however_used() {
    let tmp = tempfile::tempdir().unwrap();
    let server = storage_with(&tmp, &["--session-idle", "1h", "--session-max", "2s"]);
    let mut admin = server.admin().await;
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_millis(1500) {
        admin.status().await.expect("in use");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(status_of(admin.status().await), 401);
    let r = TestServer::run_expect_failure(
        std::path::Path::new(&server_bin()),
        &[
            "--session-idle",
            "soon",
            "--storage-dir",
            tmp.path().join("x").to_str().unwrap(),
        ],
        None,
    );
    assert!(r.stderr.contains("--session-idle"), "{}", r.stderr);
}

/// Finding 7: administrators remove users (messages stay attributed) and list every room.
#[actix_rt::test]
async fn administrators_remove_users_and_see_every_room() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (dave_id, mut dave) = server.user(&mut admin, "dave").await;
    let (erin_id, mut erin) = server.user(&mut admin, "erin").await;
    let team = admin
        .create_room("Team", &[dave_id, erin_id])
        .await
        .expect("room");
    let hidden = erin.create_room("Erin's corner", &[]).await.expect("room");
    let said = dave
        .send_text(team, "dave was here")
        .await
        .expect("post")
        .message_id;
    // Only administrators see every room.
    assert_eq!(status_of(dave.all_rooms().await), 403);
    let all = admin.all_rooms().await.expect("all rooms");
    assert!(
        all.iter()
            .any(|r| r["roomId"] == hidden && r["memberCount"] == 1),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|r| r["roomId"] == team && r["memberCount"] == 3),
        "{all:?}"
    );
    // Removal.
    assert_eq!(status_of(dave.remove_user(erin_id).await), 403);
    let v = admin.remove_user(dave_id).await.expect("remove");
    assert_eq!(v["user"]["status"], "DeletionInProgress");
    assert_eq!(v["roomsLeft"], 1);
    assert_eq!(status_of(dave.status().await), 401);
    assert_eq!(
        status_of(server.client().login("dave", "dave-password-123").await),
        401
    );
    assert_eq!(status_of(admin.reactivate(dave_id).await), 409);
    let history = erin.history(team, None, None, None).await.expect("history");
    assert!(history
        .iter()
        .any(|m| m.message_id == said && m.user_id == dave_id && m.text == "dave was here"));
    let members = erin.members(team).await.expect("members");
    assert!(
        !members.iter().any(|m| m["userId"] == dave_id),
        "{members:?}"
    );
    let users = admin.users().await.expect("users");
    assert!(users
        .iter()
        .any(|u| u.user_id == dave_id && u.user_name == "dave"));
    assert_eq!(
        status_of(admin.remove_user(admin.user_id.unwrap()).await),
        400
    );
}

/// Finding 3 in a real browser (headless Chromium, driven by `tests/browser/forgery.mjs`):
/// a page on another port of the same host — same site, so the `SameSite=Strict` cookie
/// goes along — can neither post as the member (a `text/plain` form, a no-cors fetch) nor
/// read their events (`new WebSocket`), while the server's own page can do both.
#[test]
fn a_page_on_another_port_cannot_post_or_listen_as_a_member_in_chromium() {
    let browser = browser_tools();
    let tmp = tempfile::tempdir().unwrap();
    let home = browser.join("home");
    let attack = browser.join("attacker");
    let victim = TestServer::start_in(
        &tmp.path().join("v"),
        &["--web-root", home.to_str().unwrap()],
    );
    let attacker = TestServer::start_in(
        &tmp.path().join("a"),
        &["--web-root", attack.to_str().unwrap()],
    );
    let localhost = |s: &TestServer| format!("localhost:{}", s.addr.rsplit(':').next().unwrap());
    let system = actix_rt::System::new();
    let (sid, room) = system.block_on(async {
        let mut admin = victim.admin().await;
        let room = admin.create_room("Forgery", &[]).await.expect("room");
        (admin.session_id().unwrap().to_string(), room)
    });
    let run = std::process::Command::new("node")
        .arg(browser.join("forgery.mjs"))
        .args([
            &localhost(&victim),
            &localhost(&attacker),
            &sid,
            &room.to_string(),
        ])
        .output()
        .expect("run node (install nodejs)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "forgery.mjs failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    // The control: the cookie is there and works from the server's own origin.
    assert_eq!(out["own"]["post"], 200, "{out}");
    assert_eq!(out["own"]["ws"], "open", "{out}");
    // The attack.
    assert_ne!(out["attack"]["ws"], "open", "{out}");
    assert!(out["attack"]["wsMessage"].is_null(), "{out}");
    assert_eq!(out["form"]["status"], 403, "{out}");
    assert!(
        out["form"]["body"]
            .as_str()
            .unwrap_or("")
            .contains("Cross-origin request refused"),
        "{out}"
    );
    let texts: Vec<String> = system.block_on(async {
        let mut admin = victim.admin().await;
        admin
            .history(room, None, None, None)
            .await
            .expect("history")
            .into_iter()
            .map(|m| m.text)
            .collect()
    });
    assert_eq!(texts, vec!["posted by the server's own page".to_string()]);
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.0/8 is all ours).
fn connect_from(from: &str, addr: &str) -> std::io::Result<std::net::TcpStream> {
    let target: std::net::SocketAddr = addr.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let local: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into())?;
    socket.connect(&target.into())?;
    Ok(socket.into())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Finding 1: a stranger's silent and slow connections from one address cannot use up the
/// server: past `--max-unauthenticated-per-address` they are closed before any TLS work,
/// and everyone else's handshakes, logins and posts go on at full speed.
#[actix_rt::test]
async fn one_address_cannot_exhaust_connections_or_handshakes() {
    let tmp = tempfile::tempdir().unwrap();
    let server = storage_with(&tmp, &["--max-unauthenticated-per-address", "16"]);
    let pid = server.pid();
    let before = open_fds(pid);
    // 300 silent sockets (no ClientHello) and 100 slow login bodies, from 127.0.0.2.
    let mut hostile = Vec::new();
    for _ in 0..300 {
        hostile.push(connect_from("127.0.0.2", &server.addr).expect("connect"));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let during = open_fds(pid);
    assert!(
        during < before + 40,
        "the server holds {} descriptors for one address's 300 silent sockets",
        during - before
    );
    // Most of them were closed at once: reading gives end-of-file or a reset.
    let closed = hostile
        .iter_mut()
        .filter(|s: &&mut std::net::TcpStream| {
            let mut s: &std::net::TcpStream = s;
            use std::io::Read;
            s.set_read_timeout(Some(std::time::Duration::from_millis(50)))
                .ok();
            match s.read(&mut [0u8; 16]) {
                Ok(0) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => false,
            }
        })
        .count();
    assert!(closed >= 280, "only {closed} of 300 were refused");
    // Everyone else: fresh connections, handshakes and logins at full speed.
    let mut times = Vec::new();
    for _ in 0..10 {
        let t = std::time::Instant::now();
        let mut c = server.admin().await;
        let room = c.create_room("Still here", &[]).await.expect("room");
        c.send_text(room, "hello").await.expect("post");
        times.push(t.elapsed());
    }
    times.sort();
    assert!(
        times[9] < std::time::Duration::from_secs(1),
        "login + post took up to {:?} beside the hostile sockets",
        times[9]
    );
    // Another address of the same machine is its own budget.
    let other = connect_from("127.0.0.3", &server.addr).expect("connect");
    let mut tls = tls_over(other);
    use std::io::{Read, Write};
    tls.write_all(&http_request("GET", "/api/v1/status", &[], b""))
        .unwrap();
    let mut buf = String::new();
    let _ = tls.read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 401"), "{buf}");
    let log = server.log_text();
    assert_eq!(
        log.matches("connection refused: this address is at its connection cap")
            .count(),
        1,
        "logged once, not per connection: {log}"
    );
    // When the hostile sockets go, the address may connect again.
    drop(hostile);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let again = connect_from("127.0.0.2", &server.addr).expect("connect");
    let mut tls = tls_over(again);
    tls.write_all(&http_request("GET", "/api/v1/status", &[], b""))
        .unwrap();
    let mut buf = String::new();
    let _ = tls.read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 401"), "{buf}");
}

fn totp_code(secret: &str, at_secs: u64) -> String {
    use totp_rs::{Algorithm, Secret, TOTP};
    let bytes = Secret::Encoded(secret.to_string()).to_bytes().unwrap();
    TOTP::new(Algorithm::SHA1, 6, 1, 30, bytes, None, "x".into())
        .unwrap()
        .generate(at_secs)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn raw_login(
    c: &mut confab::client::Client,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    c.request_raw(
        awc::http::Method::POST,
        "/api/v1/login",
        Some(body.to_string().into_bytes()),
    )
    .await
    .expect("transport")
}

/// MFA: TOTP enrolment (otpauth URI, confirmation with a code, recovery codes), logins with
/// the code as an extra field (a clear 401 for clients that do not send it), codes good
/// once, recovery codes good once, and `--require-mfa`.
#[actix_rt::test]
async fn totp_enrolment_login_recovery_and_requirement() {
    let tmp = tempfile::tempdir().unwrap();
    let server = storage_with(&tmp, &["--require-mfa"]);
    let mut admin_plain = server.client();
    // Required: the administrator's login works, but only enrolment is open to it.
    admin_plain
        .login("admin", &server.admin_password())
        .await
        .expect("login");
    let err = admin_plain.rooms().await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert!(err.to_string().contains("two-factor"), "{err}");
    let id = admin_plain.user_id.unwrap();
    let (s, v) = admin_plain
        .request_raw(
            awc::http::Method::POST,
            &format!("/api/v1/users/{id}/totp"),
            Some(b"{}".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let secret = v["secret"].as_str().unwrap().to_string();
    let uri = v["otpauthUri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Confab:admin?"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    // A wrong code does not confirm; the right one does, and gives ten recovery codes.
    let confirm = |code: String| serde_json::json!({ "code": code }).to_string().into_bytes();
    let (s, _) = admin_plain
        .request_raw(
            awc::http::Method::POST,
            &format!("/api/v1/users/{id}/totp/confirm"),
            Some(confirm("000000".into())),
        )
        .await
        .unwrap();
    assert_eq!(s, 400);
    let now = now_secs();
    let (s, v) = admin_plain
        .request_raw(
            awc::http::Method::POST,
            &format!("/api/v1/users/{id}/totp/confirm"),
            Some(confirm(totp_code(&secret, now))),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let recovery: Vec<String> = serde_json::from_value(v["recoveryCodes"].clone()).unwrap();
    assert_eq!(recovery.len(), 10);
    admin_plain
        .rooms()
        .await
        .expect("enrolled: everything is open");
    // Logins now need the code.
    let pw = server.admin_password();
    let mut c = server.client();
    let (s, v) = raw_login(
        &mut c,
        serde_json::json!({ "userName": "admin", "password": pw }),
    )
    .await;
    assert_eq!(s, 401);
    assert!(v["errorText"].as_str().unwrap().contains("totpCode"), "{v}");
    let (s, v) = raw_login(
        &mut c,
        serde_json::json!({ "userName": "admin", "password": pw, "totpCode": "123456" }),
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        v["errorText"]
            .as_str()
            .unwrap()
            .contains("one-time code is invalid"),
        "{v}"
    );
    // The confirmation used this step's code: the next step's code logs in, once.
    let next = totp_code(&secret, now + 30);
    let (s, v) = raw_login(
        &mut c,
        serde_json::json!({ "userName": "admin", "password": pw, "totpCode": next }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = raw_login(
        &mut c,
        serde_json::json!({ "userName": "admin", "password": pw, "totpCode": next }),
    )
    .await;
    assert_eq!(s, 401, "a code is good once");
    // A recovery code, once.
    let (s, _) = raw_login(
        &mut c,
        serde_json::json!({ "userName": "admin", "password": pw, "totpCode": recovery[0] }),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = raw_login(
        &mut c,
        serde_json::json!({ "userName": "admin", "password": pw, "totpCode": recovery[0] }),
    )
    .await;
    assert_eq!(s, 401);
    // Turning it off takes a code (here a recovery code); the Client's login then works
    // without one — except that this server requires it again.
    let body = serde_json::json!({ "code": recovery[1] })
        .to_string()
        .into_bytes();
    let (s, v) = admin_plain
        .request_raw(
            awc::http::Method::DELETE,
            &format!("/api/v1/users/{id}/totp"),
            Some(body),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let mut again = server.client();
    again.login("admin", &pw).await.expect("no code needed");
    assert_eq!(status_of(again.rooms().await), 403);
}

/// Finding 1, bodies: a login body sent a byte a second is cut off once the grace period
/// is over (its average is far under 1 KiB/s), with an error naming the cause.
#[test]
fn a_body_that_trickles_is_cut_off() {
    use std::io::{Read, Write};
    let server = TestServer::start();
    let mut tls = tls_over(connect_from("127.0.0.4", &server.addr).unwrap());
    tls.get_ref()
        .set_read_timeout(Some(std::time::Duration::from_millis(900)))
        .unwrap();
    let started = std::time::Instant::now();
    tls.write_all(b"POST /api/v1/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{")
        .unwrap();
    let mut answer = Vec::new();
    while started.elapsed() < std::time::Duration::from_secs(20) {
        if tls.write_all(b" ").is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let took = started.elapsed();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("slower than 1024 bytes/s"), "{text}");
    assert!(
        took >= std::time::Duration::from_secs(9) && took < std::time::Duration::from_secs(15),
        "cut off after {took:?}"
    );
}

/// Logging out ends that session's event streams at once; the user's other sessions keep
/// theirs.
#[actix_rt::test]
async fn logout_closes_that_sessions_event_streams_only() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (_, mut laptop) = server.user(&mut admin, "hank").await;
    let mut phone = server.login("hank", "hank-password-123").await;
    let mut laptop_events = laptop.events().await.expect("events");
    let mut phone_events = phone.events().await.expect("events");
    laptop.logout().await.expect("logout");
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(_)) = laptop_events.next().await {}
    })
    .await;
    assert!(closed.is_ok(), "the logged-out session's stream was closed");
    // The phone's stream is open: a ping is answered.
    phone_events
        .send_text(r#"{"type":"Ping"}"#)
        .await
        .expect("send");
    expect_event(&mut phone_events, "Pong").await;
}
