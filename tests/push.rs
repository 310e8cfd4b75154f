//! Push notifications end to end: the real server, real TLS fakes of FCM, APNs and a Web
//! Push service on loopback (`util::fake_push`), real devices registered through the API.

mod util;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::fake_push::*;
use util::*;

const KEY_ID: &str = "TESTKEY123";
const TEAM_ID: &str = "TEAM123456";

struct Push {
    keys: PushKeys,
    fcm: Fake,
    apns: Fake,
    web: Fake,
    _tmp: tempfile::TempDir,
}

/// The fakes, with two browser subscribers ("bob-browser", "gone-browser").
fn providers() -> Push {
    let tmp = tempfile::tempdir().unwrap();
    let keys = PushKeys::new(tmp.path());
    let fcm = fake_fcm(&keys);
    let apns = fake_apns(&keys, KEY_ID, TEAM_ID);
    let web = fake_webpush(
        &keys,
        vec![
            Subscriber::new("bob-browser"),
            Subscriber::new("gone-browser"),
        ],
    );
    Push {
        keys,
        fcm,
        apns,
        web,
        _tmp: tmp,
    }
}

/// A server pointed at the fakes.
fn server_for(p: &Push, dir: &std::path::Path, extra: &[&str]) -> TestServer {
    let account = p.keys.service_account(&p.fcm);
    let mut args: Vec<String> = vec![
        "--push-fcm-service-account".into(),
        account.display().to_string(),
        "--push-fcm-url".into(),
        p.fcm.url(),
        "--push-apns-key".into(),
        p.keys.apns_key_file.display().to_string(),
        "--push-apns-key-id".into(),
        KEY_ID.into(),
        "--push-apns-team-id".into(),
        TEAM_ID.into(),
        "--push-apns-topic".into(),
        "com.example.confab".into(),
        "--push-apns-url".into(),
        p.apns.url(),
        "--push-ca-file".into(),
        p.keys.ca_file.display().to_string(),
        "--push-coalesce-ms".into(),
        "700".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    TestServer::start_in(dir, &refs)
}

/// A server on the fakes with its administrator and two members.
struct Team {
    server: TestServer,
    admin: confab::client::Client,
    alice: (u64, confab::client::Client),
    bob: (u64, confab::client::Client),
}

async fn team(p: &Push, dir: &std::path::Path) -> Team {
    let server = server_for(p, dir, &[]);
    let mut admin = server.admin().await;
    let alice = server.user(&mut admin, "alice").await;
    let bob = server.user(&mut admin, "bob").await;
    Team {
        server,
        admin,
        alice,
        bob,
    }
}

async fn register(c: &mut confab::client::Client, device: Value) -> u64 {
    c.push_register(device).await.expect("register device")
}

/// Waits until `check` holds (up to `secs`), then returns true; false at the deadline.
async fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

async fn push_health(c: &mut confab::client::Client) -> Value {
    c.server_health().await.unwrap()["push"].clone()
}

#[actix_rt::test]
async fn an_offline_member_is_notified_on_every_device_and_nobody_else_is() {
    let p = providers();
    let tmp = tempfile::tempdir().unwrap();
    let Team {
        mut server,
        mut admin,
        alice: (alice, mut alice_c),
        bob: (bob, mut bob_c),
    } = team(&p, &tmp.path().join("storage")).await;
    let (carol, mut carol_c) = server.user(&mut admin, "carol").await;
    let room = admin
        .create_room("Launch", &[alice, bob, carol])
        .await
        .unwrap();
    // Bob: a phone of each kind and a browser. Carol: a phone, but she is connected.
    // Alice: a phone (she writes: never notified of her own message).
    register(
        &mut bob_c,
        json!({"platform": "fcm", "token": "bob-android"}),
    )
    .await;
    register(
        &mut bob_c,
        json!({"platform": "apns", "token": "bob-iphone"}),
    )
    .await;
    register(
        &mut bob_c,
        json!({"platform": "webpush", "subscription": subscription_of(&p.web, "bob-browser")}),
    )
    .await;
    register(
        &mut carol_c,
        json!({"platform": "fcm", "token": "carol-android"}),
    )
    .await;
    register(
        &mut alice_c,
        json!({"platform": "fcm", "token": "alice-android"}),
    )
    .await;
    assert_eq!(bob_c.push_devices().await.unwrap().len(), 3);
    let mut carol_events = carol_c.events().await.unwrap();

    let secret = "the launch moves to thursday";
    alice_c.send_text(room, secret).await.unwrap();
    assert!(
        eventually(15, || p.fcm.received_for("bob-android").len() == 1
            && p.apns.received_for("bob-iphone").len() == 1
            && p.web.received_for("bob-browser").len() == 1)
        .await,
        "fcm {:?}\napns {:?}\nweb {:?}\nfcm refused {:?}\n{}",
        p.fcm.received(),
        p.apns.received(),
        p.web.received(),
        p.fcm.refused(),
        server.log_text()
    );
    // Nothing to the connected member or the author, even after a while.
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    assert!(p.fcm.received_for("carol-android").is_empty());
    assert!(p.fcm.received_for("alice-android").is_empty());

    // What each provider got: the room and the sender, never the text.
    let fcm = &p.fcm.received_for("bob-android")[0];
    assert_eq!(fcm.body["notification"]["title"], "Launch");
    assert!(fcm.body["notification"]["body"]
        .as_str()
        .unwrap()
        .contains("alice"));
    assert_eq!(fcm.body["data"]["roomId"], room.to_string());
    assert_eq!(fcm.body["android"]["collapse_key"], format!("room-{room}"));
    let apns = &p.apns.received_for("bob-iphone")[0];
    assert!(apns.http2, "APNs is HTTP/2");
    assert_eq!(apns.headers["apns-topic"], "com.example.confab");
    assert_eq!(apns.headers["apns-push-type"], "alert");
    assert_eq!(apns.headers["apns-collapse-id"], format!("room-{room}"));
    assert_eq!(apns.body["aps"]["alert"]["title"], "Launch");
    let web = &p.web.received_for("bob-browser")[0];
    assert_eq!(web.body["title"], "Launch");
    for r in [fcm, apns, web] {
        assert!(
            !r.body.to_string().contains(secret),
            "the text left the server: {}",
            r.body
        );
    }
    let health = push_health(&mut admin).await;
    assert!(health["sent"].as_u64().unwrap() >= 3, "{health}");

    // Logging out unregisters the devices that session registered.
    bob_c.logout().await.unwrap();
    alice_c
        .send_text(room, "after bob logged out")
        .await
        .unwrap();
    actix_rt::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(p.fcm.received_for("bob-android").len(), 1);
    assert_eq!(p.apns.received_for("bob-iphone").len(), 1);
    let mut bob_again = server.login("bob", "bob-password-123").await;
    assert!(bob_again.push_devices().await.unwrap().is_empty());

    // Carol's app goes to the background (still connected): she is notified now; back in
    // front, not any more.
    carol_events
        .send_text(r#"{"type": "AppState", "state": "background"}"#)
        .await
        .unwrap();
    expect_event(&mut carol_events, "AppState").await;
    alice_c.send_text(room, "carol is away").await.unwrap();
    assert!(eventually(10, || p.fcm.received_for("carol-android").len() == 1).await);
    carol_events
        .send_text(r#"{"type": "AppState", "state": "foreground"}"#)
        .await
        .unwrap();
    expect_event(&mut carol_events, "AppState").await;
    alice_c.send_text(room, "carol is back").await.unwrap();
    actix_rt::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(p.fcm.received_for("carol-android").len(), 1);

    assert!(server.stop().success());
}

#[actix_rt::test]
async fn messages_within_the_window_become_one_notification_and_settings_apply() {
    let p = providers();
    let tmp = tempfile::tempdir().unwrap();
    let Team {
        mut server,
        mut admin,
        alice: (alice, mut alice_c),
        bob: (bob, mut bob_c),
    } = team(&p, &tmp.path().join("storage")).await;
    let room = admin.create_room("Ops", &[alice, bob]).await.unwrap();
    let other = admin.create_room("Random", &[alice, bob]).await.unwrap();
    register(
        &mut bob_c,
        json!({"platform": "fcm", "token": "bob-android"}),
    )
    .await;

    // Three at once: one notification, with the count.
    for i in 0..3 {
        alice_c
            .send_text(room, &format!("update {i}"))
            .await
            .unwrap();
    }
    assert!(eventually(10, || !p.fcm.received_for("bob-android").is_empty()).await);
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    let got = p.fcm.received_for("bob-android");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].body["data"]["count"], "3");

    // Mentions only: a plain message notifies nothing, a mention does.
    bob_c
        .push_settings(json!({"mentionsOnly": true}))
        .await
        .unwrap();
    alice_c
        .send_text(room, "nothing for bob here")
        .await
        .unwrap();
    alice_c.send_text(room, "@bob can you look?").await.unwrap();
    assert!(eventually(10, || p.fcm.received_for("bob-android").len() == 2).await);
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    let got = p.fcm.received_for("bob-android");
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].body["data"]["count"], "1");

    // A muted room notifies nothing, even a mention; the other room still does.
    bob_c
        .push_settings(json!({"mentionsOnly": false, "mutedRooms": [room]}))
        .await
        .unwrap();
    alice_c.send_text(room, "@bob muted").await.unwrap();
    alice_c.send_text(other, "in random").await.unwrap();
    assert!(eventually(10, || p.fcm.received_for("bob-android").len() == 3).await);
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    let got = p.fcm.received_for("bob-android");
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].body["data"]["roomId"], other.to_string());

    // Reading on one device updates the badge on the others, silently.
    let newest = bob_c.history(other, None, Some(1), None).await.unwrap();
    bob_c.mark_read(newest[0].message_id).await.unwrap();
    assert!(eventually(10, || p.fcm.received_for("bob-android").len() == 4).await);
    let badge = &p.fcm.received_for("bob-android")[3];
    assert_eq!(badge.body["data"]["silent"], "1", "{}", badge.body);
    assert!(badge.body.get("notification").is_none(), "{}", badge.body);
    let unread: u64 = badge.body["data"]["badge"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        unread < 7,
        "the badge counts what is still unread: {unread}"
    );

    // A removed member and a suspended user get nothing.
    admin.remove_member(other, bob).await.unwrap();
    alice_c.send_text(other, "after bob left").await.unwrap();
    let (carol, mut carol_c) = server.user(&mut admin, "carol").await;
    admin.add_member(other, carol).await.unwrap();
    register(
        &mut carol_c,
        json!({"platform": "fcm", "token": "carol-android"}),
    )
    .await;
    admin.suspend(carol).await.unwrap();
    alice_c
        .send_text(other, "while carol is suspended")
        .await
        .unwrap();
    actix_rt::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(p.fcm.received_for("bob-android").len(), 4);
    assert!(p.fcm.received_for("carol-android").is_empty());
    assert!(server.stop().success());
}

#[actix_rt::test]
async fn dead_devices_are_removed_and_refusals_are_retried() {
    let p = providers();
    let tmp = tempfile::tempdir().unwrap();
    let Team {
        mut server,
        mut admin,
        alice: (alice, mut alice_c),
        bob: (bob, mut bob_c),
    } = team(&p, &tmp.path().join("storage")).await;
    let room = admin.create_room("Devices", &[alice, bob]).await.unwrap();
    p.fcm.set("dead-android", Answer::Gone);
    p.apns.set("dead-iphone", Answer::Gone);
    p.web.set("gone-browser", Answer::Gone);
    p.fcm.set("busy-android", Answer::Down);
    p.apns.set("slow-iphone", Answer::Throttle(1));
    for d in [
        json!({"platform": "fcm", "token": "dead-android"}),
        json!({"platform": "apns", "token": "dead-iphone"}),
        json!({"platform": "webpush", "subscription": subscription_of(&p.web, "gone-browser")}),
        json!({"platform": "fcm", "token": "busy-android"}),
        json!({"platform": "apns", "token": "slow-iphone"}),
    ] {
        register(&mut bob_c, d).await;
    }
    alice_c.send_text(room, "hello devices").await.unwrap();

    // The three dead ones are removed at their first answer.
    assert!(
        eventually(15, || {
            let n = p.fcm.refused().len() + p.apns.refused().len();
            n >= 2
        })
        .await
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut devices = bob_c.push_devices().await.unwrap();
    while devices.len() != 2 && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        devices = bob_c.push_devices().await.unwrap();
    }
    assert_eq!(devices.len(), 2, "{devices:?}");
    // 503 then fine: retried with back-off. 429 with Retry-After: 1: retried after it.
    p.fcm.set("busy-android", Answer::Ok);
    p.apns.set("slow-iphone", Answer::Ok);
    assert!(
        eventually(30, || p.fcm.received_for("busy-android").len() == 1
            && p.apns.received_for("slow-iphone").len() == 1)
        .await,
        "fcm refused {:?}, apns refused {:?}",
        p.fcm.refused(),
        p.apns.refused()
    );
    let health = push_health(&mut admin).await;
    assert!(health["devicesRemoved"].as_u64().unwrap() >= 3, "{health}");
    assert!(health["retried"].as_u64().unwrap() >= 2, "{health}");
    assert!(server.stop().success());
}

#[actix_rt::test]
async fn a_provider_down_then_a_crash_loses_and_duplicates_nothing() {
    let p = providers();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let Team {
        mut server,
        mut admin,
        alice: (alice, mut alice_c),
        bob: (bob, mut bob_c),
    } = team(&p, &dir).await;
    register(
        &mut bob_c,
        json!({"platform": "fcm", "token": "bob-android"}),
    )
    .await;
    register(
        &mut bob_c,
        json!({"platform": "webpush", "subscription": subscription_of(&p.web, "bob-browser")}),
    )
    .await;
    // FCM and the Web Push service are down; five rooms, one message each (five
    // notifications per device: different rooms are not coalesced into one).
    p.fcm.set("*", Answer::Down);
    p.web.set("*", Answer::Down);
    let mut messages = Vec::new();
    for i in 0..5 {
        let room = admin
            .create_room(&format!("room {i}"), &[alice, bob])
            .await
            .unwrap();
        let m = alice_c
            .send_text(room, &format!("message {i}"))
            .await
            .unwrap();
        actix_rt::time::sleep(Duration::from_millis(800)).await;
        messages.push(m.message_id);
    }
    assert!(
        eventually(15, || p.fcm.refused().len() >= 5
            && p.web.refused().len() >= 5)
        .await
    );
    let queued = push_health(&mut admin).await["queued"].as_u64().unwrap();
    assert!(queued >= 2, "queued {queued}");

    // kill -9 with everything queued; the providers come back; the server restarts.
    server.kill9();
    p.fcm.set("*", Answer::Ok);
    p.web.set("*", Answer::Ok);
    let mut server = server_for(&p, &dir, &[]);
    // Each message counted once per device: a notification stands for `count` messages
    // (the dispatcher may coalesce ones that waited together), none sent twice.
    let counted = |fake: &Fake, device: &str| -> (u64, Vec<String>) {
        let got = fake.received_for(device);
        let total = got
            .iter()
            .map(|r| {
                r.body["data"]["count"]
                    .as_str()
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
            .sum();
        let mut ids: Vec<String> = got
            .iter()
            .map(|r| {
                r.body["data"]["messageId"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        ids.sort();
        (total, ids)
    };
    assert!(
        eventually(60, || counted(&p.fcm, "bob-android").0 >= 5
            && counted(&p.web, "bob-browser").0 >= 5)
        .await,
        "fcm {:?} web {:?}",
        counted(&p.fcm, "bob-android"),
        counted(&p.web, "bob-browser")
    );
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    let last = messages.last().unwrap().to_string();
    for (fake, device) in [(&p.fcm, "bob-android"), (&p.web, "bob-browser")] {
        let (total, ids) = counted(fake, device);
        assert_eq!(
            total, 5,
            "{device}: every message counted exactly once ({ids:?})"
        );
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(unique, ids, "{device}: a notification sent twice");
        assert!(ids.contains(&last), "{device}: the last message announced");
    }
    let mut admin = server.admin().await;
    assert_eq!(push_health(&mut admin).await["queued"], 0);
    assert!(server.stop().success());
}

#[actix_rt::test]
async fn a_provider_down_for_a_minute_gets_everything_once_when_it_is_back() {
    let p = providers();
    let tmp = tempfile::tempdir().unwrap();
    let Team {
        mut server,
        mut admin,
        alice: (alice, mut alice_c),
        bob: (bob, mut bob_c),
    } = team(&p, &tmp.path().join("storage")).await;
    register(
        &mut bob_c,
        json!({"platform": "apns", "token": "bob-iphone"}),
    )
    .await;
    p.apns.set("*", Answer::Down);
    let first = admin.create_room("first", &[alice, bob]).await.unwrap();
    let second = admin.create_room("second", &[alice, bob]).await.unwrap();
    alice_c
        .send_text(first, "while APNs is down")
        .await
        .unwrap();
    actix_rt::time::sleep(Duration::from_secs(30)).await;
    alice_c.send_text(second, "still down").await.unwrap();
    actix_rt::time::sleep(Duration::from_secs(30)).await;
    let refused = p.apns.refused().len();
    assert!(refused >= 4, "retried all minute: {refused} attempts");
    assert!(p.apns.received().is_empty());
    p.apns.set("*", Answer::Ok);
    // Back-off is at most 30 s (with jitter): everything arrives within the next minute.
    assert!(eventually(60, || p.apns.received().len() >= 2).await);
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    let got = p.apns.received_for("bob-iphone");
    let mut rooms: Vec<u64> = got
        .iter()
        .map(|r| r.body["roomId"].as_u64().unwrap())
        .collect();
    rooms.sort();
    assert_eq!(rooms, vec![first, second], "each once");
    assert_eq!(push_health(&mut admin).await["queued"], 0);
    assert!(server.stop().success());
}

#[actix_rt::test]
async fn relay_mode_forwards_fcm_and_apns_and_removes_what_it_says_is_gone() {
    let p = providers();
    let relay = fake_relay(&p.keys);
    p.fcm.set("*", Answer::Down); // nothing may go to FCM directly in relay mode
    relay.set("gone-android", Answer::Gone);
    let tmp = tempfile::tempdir().unwrap();
    let relay_url = format!("{}/relay", relay.url());
    let mut server = server_for(
        &p,
        &tmp.path().join("storage"),
        &["--push-relay-url", &relay_url],
    );
    let mut admin = server.admin().await;
    let (alice, mut alice_c) = server.user(&mut admin, "alice").await;
    let (bob, mut bob_c) = server.user(&mut admin, "bob").await;
    let room = admin.create_room("Relayed", &[alice, bob]).await.unwrap();
    register(
        &mut bob_c,
        json!({"platform": "fcm", "token": "bob-android"}),
    )
    .await;
    register(
        &mut bob_c,
        json!({"platform": "apns", "token": "bob-iphone", "appId": "com.example.confab", "sandbox": true}),
    )
    .await;
    register(
        &mut bob_c,
        json!({"platform": "fcm", "token": "gone-android"}),
    )
    .await;
    alice_c.send_text(room, "through the relay").await.unwrap();
    assert!(
        eventually(15, || relay.received().len() == 2).await,
        "{:?}",
        relay.received()
    );
    let android = &relay.received_for("bob-android")[0];
    assert_eq!(android.body["platform"], "fcm");
    assert_eq!(android.body["notification"]["title"], "Relayed");
    assert_eq!(android.body["collapseKey"], format!("room-{room}"));
    assert!(!android.body.to_string().contains("through the relay"));
    let iphone = &relay.received_for("bob-iphone")[0];
    assert_eq!(iphone.body["platform"], "apns");
    assert_eq!(iphone.body["appId"], "com.example.confab");
    assert_eq!(iphone.body["sandbox"], true);
    assert!(p.fcm.received().is_empty() && p.fcm.refused().is_empty());
    assert!(p.apns.received().is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut devices = bob_c.push_devices().await.unwrap();
    while devices.len() != 2 && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        devices = bob_c.push_devices().await.unwrap();
    }
    assert_eq!(
        devices.len(),
        2,
        "the device the relay called gone is removed"
    );
    assert!(server.stop().success());
}
