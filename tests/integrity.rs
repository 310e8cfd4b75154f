//! Core integrity, tried from outside through the real binary: ids are never reused, every
//! write is atomic and acknowledged only once durable, retries with an Idempotency-Key never
//! duplicate, sync never skips a change, one damaged record costs only its room, the room
//! actor is the only writer of its records, concurrent updates are never lost.

mod util;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use confab::client::Client;
use serde_json::{json, Value};
use util::*;

async fn get_json(c: &mut Client, path: &str) -> (u16, Value) {
    c.request_raw(awc::http::Method::GET, path, None)
        .await
        .expect("request")
}

async fn post_with_key(c: &mut Client, path: &str, body: Value, key: &str) -> (u16, Value) {
    c.request_with_headers(
        awc::http::Method::POST,
        path,
        Some(serde_json::to_vec(&body).unwrap()),
        &[("Idempotency-Key", key)],
    )
    .await
    .expect("request")
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

async fn unread(c: &mut Client, room: u64) -> u64 {
    c.rooms()
        .await
        .unwrap()
        .iter()
        .find(|r| r.room_id == room)
        .map(|r| r.unread_message_count)
        .expect("room listed")
}

#[actix_rt::test]
async fn ids_are_never_reused_after_a_restart_or_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let password = server.admin_password();
    let mut admin = server.admin().await;
    let room = admin.create_room("Ids", &[]).await.unwrap();
    let m1 = admin.send_text(room, "m1").await.unwrap();
    let m2 = admin.send_text(room, "m2").await.unwrap();
    let file = write_file(tmp.path(), "f.txt", b"attached");
    let a1 = admin
        .upload(m1.message_id, std::slice::from_ref(&file), false)
        .await
        .unwrap();
    let a2 = admin
        .upload(m1.message_id, std::slice::from_ref(&file), false)
        .await
        .unwrap();
    admin.delete_attachment(a2[0].attachment_id).await.unwrap();
    admin.delete_message(m2.message_id).await.unwrap();
    let (_, sync) = get_json(&mut admin, "/api/v1/sync").await;
    let cursor = sync["cursor"].as_u64().unwrap();
    assert!(server.stop().success());

    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.login("admin", &password).await;
    let m3 = admin.send_text(room, "m3").await.unwrap();
    assert!(
        m3.message_id > m2.message_id,
        "a deleted message's id was handed out again: {} after {}",
        m3.message_id,
        m2.message_id
    );
    let (status, body) = get_json(&mut admin, &format!("/api/v1/messages/{}", m2.message_id)).await;
    assert_eq!(status, 410, "the deleted message stays deleted: {body}");
    assert_eq!(
        unread(&mut admin, room).await,
        0,
        "own messages are never unread"
    );
    let a3 = admin
        .upload(m3.message_id, std::slice::from_ref(&file), false)
        .await
        .unwrap();
    assert!(
        a3[0].attachment_id > a2[0].attachment_id,
        "attachment ids grow"
    );
    assert!(a1[0].attachment_id < a2[0].attachment_id);
    let (_, page) = get_json(&mut admin, &format!("/api/v1/sync?cursor={cursor}")).await;
    assert!(page["cursor"].as_u64().unwrap() > cursor, "{page}");
    let synced: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["messageId"].as_u64().unwrap())
        .collect();
    assert!(
        synced.contains(&m3.message_id),
        "sync after restart shows m3: {page}"
    );

    // kill -9 between writes: the next id is still new.
    let m4 = admin.send_text(room, "m4").await.unwrap();
    admin.delete_message(m4.message_id).await.unwrap();
    server.kill9();
    let server = TestServer::start_in(&dir, &[]);
    let mut admin = server.login("admin", &password).await;
    let m5 = admin.send_text(room, "m5").await.unwrap();
    assert!(m5.message_id > m4.message_id);
    drop(server);
    let (sound, report) = run_check(&dir);
    assert!(sound, "{report}");
}

#[actix_rt::test]
async fn an_idempotency_key_gives_the_first_answer_and_never_a_second_message() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let room = admin.create_room("Retry", &[bob_id]).await.unwrap();
    let path = format!("/api/v1/rooms/{room}/messages");
    let (s1, first) = post_with_key(&mut admin, &path, json!({"content": "once"}), "k-1").await;
    let (s2, again) = post_with_key(&mut admin, &path, json!({"content": "once"}), "k-1").await;
    assert_eq!((s1, s2), (200, 200), "{first} {again}");
    assert_eq!(first["messageId"], again["messageId"]);
    // The key is the user's: bob's "k-1" is another request.
    let (_, bobs) = post_with_key(&mut bob, &path, json!({"content": "once"}), "k-1").await;
    assert_ne!(bobs["messageId"], first["messageId"]);
    let texts: Vec<String> = admin
        .history(room, None, None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, vec!["once", "once"], "one message per user and key");

    // Comments and uploads take keys too.
    let parent = first["messageId"].as_u64().unwrap();
    let cpath = format!("/api/v1/messages/{parent}/comments");
    let (_, c1) = post_with_key(&mut admin, &cpath, json!({"content": "c"}), "k-2").await;
    let (_, c2) = post_with_key(&mut admin, &cpath, json!({"content": "c"}), "k-2").await;
    assert_eq!(c1["messageId"], c2["messageId"]);
    let file = write_file(tmp.path(), "doc.txt", b"some content");
    let u1 = admin
        .upload_with_key(parent, std::slice::from_ref(&file), false, Some("k-3"))
        .await
        .unwrap();
    let u2 = admin
        .upload_with_key(parent, std::slice::from_ref(&file), false, Some("k-3"))
        .await
        .unwrap();
    assert_eq!(u1[0].attachment_id, u2[0].attachment_id);
    let (_, m) = get_json(&mut admin, &format!("/api/v1/messages/{parent}")).await;
    assert_eq!(
        m["message"]["attachments"].as_array().unwrap().len(),
        1,
        "{m}"
    );
    assert_eq!(m["message"]["commentCount"], 1, "{m}");

    // A key of a message is not a key of files; bad keys are refused.
    let err = admin
        .upload_with_key(parent, &[file], false, Some("k-1"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    for bad in ["", &"x".repeat(129), "tab\there"] {
        let (status, body) = post_with_key(&mut admin, &path, json!({"content": "x"}), bad).await;
        assert_eq!(status, 400, "key {bad:?}: {body}");
    }
    // `confab send --idempotency-key` twice prints one id.
    let cli = |key: &str| {
        let out = std::process::Command::new(CLI_BIN)
            .args([
                "--server",
                &server.addr,
                "--fingerprint",
                &server.fingerprint,
            ])
            .args(["--user", "admin", "send", &room.to_string(), "from the cli"])
            .args(["--idempotency-key", key])
            .env("CONFAB_PASSWORD", server.admin_password())
            .env("HOME", tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli("cli-key"), cli("cli-key"));
}

#[actix_rt::test]
async fn sync_never_skips_a_change_under_concurrent_writers() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let password = server.admin_password();
    let mut rooms = Vec::new();
    for w in 0..6u64 {
        rooms.push(admin.create_room(&format!("R{w}"), &[]).await.unwrap());
    }
    // A follower that keeps its cursor, as a client's local copy does.
    let (_, first) = get_json(&mut admin, "/api/v1/sync").await;
    let mut cursor = first["cursor"].as_u64().unwrap();
    let mut writers = Vec::new();
    // Writers in several rooms at once (each room its own actor), and rooms being created.
    for (w, room) in rooms.into_iter().enumerate() {
        let mut c = server.login("admin", &password).await;
        writers.push(actix_rt::spawn(async move {
            let mut made = Vec::new();
            for i in 0..80 {
                if w % 2 == 0 && i % 4 == 0 {
                    let r = c.create_room(&format!("R{w}-{i}"), &[]).await.unwrap();
                    made.push((r, 0));
                }
                let m = c.send_text(room, &format!("w{w} {i}")).await.unwrap();
                made.push((room, m.message_id));
            }
            made
        }));
    }
    let mut seen_messages = BTreeSet::new();
    let mut seen_rooms = BTreeSet::new();
    let mut follow = |page: &Value| {
        for m in page["messages"].as_array().unwrap() {
            seen_messages.insert(m["messageId"].as_u64().unwrap());
        }
        for r in page["roomsAdded"].as_array().unwrap() {
            seen_rooms.insert(r["roomId"].as_u64().unwrap());
        }
    };
    let mut expected = Vec::new();
    loop {
        let (_, page) =
            get_json(&mut admin, &format!("/api/v1/sync?cursor={cursor}&limit=7")).await;
        follow(&page);
        cursor = page["cursor"].as_u64().unwrap();
        if writers.iter().all(|w| w.is_finished()) && page["hasMore"] == false {
            for w in writers.drain(..) {
                expected.extend(w.await.unwrap());
            }
            let (_, last) = get_json(&mut admin, &format!("/api/v1/sync?cursor={cursor}")).await;
            follow(&last);
            break;
        }
    }
    for (room, message) in expected {
        if message == 0 {
            assert!(seen_rooms.contains(&room), "sync skipped room {room}");
        } else {
            assert!(
                seen_messages.contains(&message),
                "sync skipped message {message}"
            );
        }
    }
}

/// Overwrites one record of a stopped server's database with bytes that do not decode.
fn damage_record(dir: &Path, tree: &str, key: &[u8]) {
    let db = sled::Config::new()
        .path(dir.join("db"))
        .use_compression(true)
        .open()
        .expect("open the stopped server's database");
    let t = db.open_tree(tree).unwrap();
    assert!(t.get(key).unwrap().is_some(), "the record exists");
    t.insert(key, &b"\xff\x00 not a record"[..]).unwrap();
    db.flush().unwrap();
}

fn pair(a: u64, b: u64) -> Vec<u8> {
    let mut k = a.to_be_bytes().to_vec();
    k.extend_from_slice(&b.to_be_bytes());
    k
}

#[actix_rt::test]
async fn a_damaged_record_fails_its_room_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let password = server.admin_password();
    let mut admin = server.admin().await;
    let (bob_id, _) = server.user(&mut admin, "bob").await;
    let broken = admin.create_room("Broken", &[bob_id]).await.unwrap();
    let fine = admin.create_room("Fine", &[bob_id]).await.unwrap();
    admin.send_text(broken, "before").await.unwrap();
    assert!(server.stop().success());
    damage_record(&dir, "roomid_userid_member", &pair(broken, bob_id));

    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.login("admin", &password).await;
    let started = Instant::now();
    for i in 0..30 {
        let err = admin
            .send_text(broken, &format!("try {i}"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(500), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("Room {broken} cannot be loaded")),
            "{err}"
        );
        admin
            .send_text(fine, &format!("fine {i}"))
            .await
            .expect("other rooms work");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no request waited on the broken room"
    );
    admin.server_health().await.expect("health answers");
    let log = server.log_text();
    let lines = log.matches("cannot load room").count();
    assert!(
        (1..=3).contains(&lines),
        "one log line per retry, not per request: {lines}\n{log}"
    );
    let stopping = Instant::now();
    assert!(server.stop().success(), "SIGTERM still stops the server");
    assert!(stopping.elapsed() < Duration::from_secs(10));

    let (sound, report) = run_check(&dir);
    assert!(!sound, "check notices the damage: {report}");
    assert!(
        report.contains(&format!("roomid_userid_member {broken}/{bob_id}")),
        "the problem names its tree and key: {report}"
    );
}

/// A multipart upload over a raw TLS connection, sent slowly: `chunks` pieces of `chunk`
/// bytes with `pause` between them. Returns the response's status line and body.
fn slow_upload(
    addr: &str,
    cookie: &str,
    message: u64,
    chunks: usize,
    chunk: usize,
    pause: Duration,
) -> String {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut tls = tls_over(tcp);
    let boundary = "slowslowslow";
    let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n");
    let tail = format!("\r\n--{boundary}--\r\n");
    let len = head.len() + chunks * chunk + tail.len();
    let req = format!(
        "POST /api/v1/messages/{message}/attachments HTTP/1.1\r\nHost: localhost\r\nCookie: VirolaUserSessionId={cookie}\r\nOrigin: https://localhost\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{head}"
    );
    tls.write_all(req.as_bytes()).unwrap();
    let data = vec![b'z'; chunk];
    for _ in 0..chunks {
        if tls.write_all(&data).is_err() {
            break;
        }
        std::thread::sleep(pause);
    }
    let _ = tls.write_all(tail.as_bytes());
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

#[actix_rt::test]
async fn an_upload_racing_its_messages_deletion_keeps_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.admin().await;
    let room = admin.create_room("Race", &[]).await.unwrap();
    let m = admin.send_text(room, "with a big file").await.unwrap();
    let (addr, cookie, id) = (
        server.addr.clone(),
        admin.session_id().unwrap().to_string(),
        m.message_id,
    );
    // 20 MiB over about 2 s; the message is deleted 1 s in.
    let upload = std::thread::spawn(move || {
        slow_upload(&addr, &cookie, id, 20, 1 << 20, Duration::from_millis(100))
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    admin.delete_message(m.message_id).await.unwrap();
    let answer = upload.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 410") || answer.starts_with("HTTP/1.1 404"),
        "an upload to a deleted message is refused: {}",
        answer.lines().next().unwrap_or("")
    );

    // Deduplication racing the deletion of the content's last reference.
    let file = write_file(tmp.path(), "same.bin", &vec![7u8; 300_000]);
    for i in 0..12 {
        let a = admin.send_text(room, &format!("a{i}")).await.unwrap();
        let b = admin.send_text(room, &format!("b{i}")).await.unwrap();
        let first = admin
            .upload(a.message_id, std::slice::from_ref(&file), false)
            .await
            .unwrap();
        let mut other = server.login("admin", &server.admin_password()).await;
        let (f, path) = (first[0].attachment_id, file.clone());
        let deleting = actix_rt::spawn(async move { other.delete_attachment(f).await });
        let second = admin.upload(b.message_id, &[path], false).await.unwrap();
        deleting.await.unwrap().unwrap();
        let mut sink = Vec::new();
        let (status, bytes, _) = admin
            .download(second[0].attachment_id, "same.bin", None, &mut sink)
            .await
            .unwrap();
        assert_eq!(
            (status, bytes),
            (200, 300_000),
            "round {i}: the surviving attachment has its content"
        );
    }
    assert!(server.stop().success());
    let (sound, report) = run_check(&dir);
    assert!(sound, "nothing dangling, counts and quotas right: {report}");
    let leftovers: Vec<_> = files_under(&dir.join("attachments"))
        .into_iter()
        .filter(|p| p.metadata().map(|m| m.len() == 20 << 20).unwrap_or(false))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the refused upload's content is gone: {leftovers:?}"
    );
}

#[actix_rt::test]
async fn a_member_added_during_a_flush_gets_room_created_before_its_messages() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let password = server.admin_password();
    let (carol_id, mut carol) = server.user(&mut admin, "carol").await;
    let room = admin.create_room("Busy", &[]).await.unwrap();
    let mut events = carol.events().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stop = std::rc::Rc::new(std::cell::Cell::new(false));
    let mut posters = Vec::new();
    for p in 0..4 {
        let mut c = server.login("admin", &password).await;
        let stop = stop.clone();
        posters.push(actix_rt::spawn(async move {
            let mut i = 0;
            while !stop.get() {
                let _ = c.send_text(room, &format!("p{p} {i}")).await;
                i += 1;
            }
        }));
    }
    let recorder = actix_rt::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(ev)) = events.next_within(Duration::from_secs(3)).await {
            seen.push(ev);
        }
        seen
    });
    for _ in 0..40 {
        admin.add_member(room, carol_id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
        admin.remove_member(room, carol_id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.set(true);
    for p in posters {
        p.await.unwrap();
    }
    let seen = recorder.await.unwrap();
    let mut member = false;
    let (mut created, mut violations) = (0, 0);
    for ev in &seen {
        let in_room = |d: &Value| d["roomId"] == room || d["room"]["roomId"] == room;
        match ev.event_type.as_str() {
            "RoomCreated" if in_room(&ev.data) => {
                member = true;
                created += 1;
            }
            "RoomDeleted" if in_room(&ev.data) => member = false,
            "TextMessagesCreated" if !member => violations += 1,
            _ => {}
        }
    }
    assert_eq!(created, 40, "carol was added 40 times");
    assert_eq!(
        violations, 0,
        "messages reached carol while she was not a member"
    );
}

#[actix_rt::test]
async fn concurrent_updates_are_never_lost_and_the_last_admin_and_moderator_stay() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let password = server.admin_password();
    let (bob_id, _) = server.user(&mut admin, "bob").await;
    for i in 0..15 {
        let mut a = server.login("admin", &password).await;
        let mut b = server.login("admin", &password).await;
        let pw = format!("new-password-{i}");
        let pw2 = pw.clone();
        let suspending = actix_rt::spawn(async move { a.suspend(bob_id).await });
        let resetting = actix_rt::spawn(async move { b.reset_password(bob_id, Some(&pw2)).await });
        suspending.await.unwrap().unwrap();
        resetting.await.unwrap().unwrap();
        let users = admin.users().await.unwrap();
        let bob = users.iter().find(|u| u.user_id == bob_id).unwrap();
        assert_eq!(
            bob.status,
            confab::model::UserStatus::Suspended,
            "round {i}: the suspension was undone"
        );
        admin.reactivate(bob_id).await.unwrap();
        server
            .client()
            .login("bob", &pw)
            .await
            .unwrap_or_else(|e| panic!("round {i}: the password reset was undone: {e}"));
    }

    // Two administrators unmaking each other at once: one stays.
    let (dora_id, _) = server.user(&mut admin, "dora").await;
    admin.set_admin(dora_id, true).await.unwrap();
    for i in 0..10 {
        let mut dora = server.login("dora", "dora-password-123").await;
        let mut a = server.login("admin", &password).await;
        let one = actix_rt::spawn(async move { a.set_admin(dora_id, false).await });
        let two = actix_rt::spawn(async move { dora.set_admin(1, false).await });
        let results = [one.await.unwrap().is_ok(), two.await.unwrap().is_ok()];
        let admins: Vec<u64> = admin
            .users()
            .await
            .unwrap()
            .into_iter()
            .filter(|u| u.is_admin)
            .map(|u| u.user_id)
            .collect();
        assert_eq!(
            admins.len(),
            1,
            "round {i}: exactly one change may win ({results:?})"
        );
        // The one left makes the other an administrator again.
        let mut left = if admins[0] == 1 {
            server.login("admin", &password).await
        } else {
            server.login("dora", "dora-password-123").await
        };
        let other = if admins[0] == 1 { dora_id } else { 1 };
        left.set_admin(other, true).await.unwrap();
    }

    // The last moderator cannot leave a room others are in.
    let (_, mut erin) = server.user(&mut admin, "erin").await;
    let room = erin.create_room("Erin's", &[bob_id]).await.unwrap();
    assert_eq!(status_of(erin.leave(room).await), 409);
    erin.set_moderator(room, bob_id, true).await.unwrap();
    erin.leave(room)
        .await
        .expect("with another moderator she may leave");
}

/// The change log keeps its newest `--change-log-keep` entries: a cursor from before that
/// horizon gets the full answer marked `resync`, a recent one continues as usual.
#[actix_rt::test]
async fn a_sync_cursor_beyond_the_log_horizon_gets_a_resync() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let keep = ["--change-log-keep", "5"];
    let mut server = TestServer::start_in(&dir, &keep);
    let mut admin = server.admin().await;
    let room = admin.create_room("Horizon", &[]).await.unwrap();
    let (_, first) = get_json(&mut admin, "/api/v1/sync").await;
    let old_cursor = first["cursor"].as_u64().unwrap();
    for i in 0..20 {
        admin.send_text(room, &format!("m{i}")).await.unwrap();
    }
    let (_, page) = get_json(&mut admin, &format!("/api/v1/sync?cursor={old_cursor}")).await;
    assert_eq!(page["resync"], false, "{page}");
    let recent = page["cursor"].as_u64().unwrap();
    assert!(server.stop().success());

    // Pruned at start: the old cursor is beyond the horizon now, the recent one is not.
    let server = TestServer::start_in(&dir, &keep);
    let mut admin = server.admin().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, page) =
            get_json(&mut admin, &format!("/api/v1/sync?cursor={old_cursor}")).await;
        assert_eq!(status, 200, "{page}");
        if page["resync"] == true {
            assert_eq!(page["full"], true);
            assert!(page["roomsAdded"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["roomId"] == room));
            assert!(page["cursor"].as_u64().unwrap() >= recent);
            break;
        }
        assert!(Instant::now() < deadline, "never pruned: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, page) = get_json(&mut admin, &format!("/api/v1/sync?cursor={recent}")).await;
    assert_eq!(page["resync"], false, "{page}");
    assert_eq!(page["full"], false, "{page}");
}

/// Idle room actors retire (`--room-idle-secs`) and a new one takes over on the next
/// request: posts racing a retirement are all stored, once each, in order.
#[actix_rt::test]
async fn rooms_retire_when_idle_and_posts_racing_a_retirement_are_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(&tmp.path().join("storage"), &["--room-idle-secs", "1"]);
    let mut admin = server.admin().await;
    let room = admin.create_room("Sleepy", &[]).await.unwrap();
    let mut sent = vec![admin.send_text(room, "first").await.unwrap().message_id];
    let active = |h: Value| h["activeRooms"].as_u64().unwrap_or(u64::MAX);
    // The actor retires: no room actor runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, h) = get_json(&mut admin, "/api/v1/server-health").await;
        if active(h) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the idle room never retired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bursts of concurrent posts at moments around the next retirement.
    for (round, pause_ms) in [1000u64, 1150, 1300, 1450, 1600].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        let posts = (0..8).map(|i| {
            let mut c = admin.another();
            c.use_token(admin.session_id().unwrap_or_default());
            async move { c.send_text(room, &format!("r{round} p{i}")).await }
        });
        for m in futures_util::future::join_all(posts).await {
            sent.push(
                m.expect("a post racing a retirement is answered")
                    .message_id,
            );
        }
    }
    let history = admin.history(room, None, None, None).await.unwrap();
    let stored: Vec<u64> = history.iter().map(|m| m.message_id).collect();
    let mut expected = sent.clone();
    expected.sort_unstable();
    assert_eq!(stored, expected, "every post stored once, in id order");
    let texts: BTreeSet<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts.len(), history.len(), "no text stored twice");
}
