//! Presence, typing, issues and meetings through the real binary: presence told to the
//! people who share a room (online, away by timer and by the client, offline within a
//! minute of the last session, never for a quick reconnect), status lines, typing relayed
//! and rate-limited, the cross-room issue list with its filters and board counts, meetings
//! listed and exported as iCalendar.

mod util;

use std::time::{Duration, Instant};

use awc::http::Method;
use confab::client::{Client, EventStream};
use confab::model::ServerEvent;
use serde_json::{json, Value};
use util::*;

/// The next presence event about `user`, within `secs`.
async fn presence_of(events: &mut EventStream, user: u64, secs: u64) -> (String, Value) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = events
            .next_within(left)
            .await
            .expect("stream")
            .unwrap_or_else(|| panic!("no presence change of user {user} within {secs} s"));
        if ev.event_type == "UserPresenceChanged" && ev.data["userId"] == json!(user) {
            return (ev.data["presence"].as_str().unwrap().to_string(), ev.data);
        }
    }
}

/// Every event within `ms` of the given type.
async fn events_of(events: &mut EventStream, kind: &str, ms: u64) -> Vec<ServerEvent> {
    let deadline = Instant::now() + Duration::from_millis(ms);
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        match events.next_within(left).await.expect("stream") {
            Some(ev) if ev.event_type == kind => out.push(ev),
            Some(_) => {}
            None => return out,
        }
    }
}

async fn presence_in_list(c: &mut Client, user: u64) -> Value {
    let (_, v) = c
        .request_raw(Method::GET, "/api/v1/users", None)
        .await
        .unwrap();
    v["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userId"] == json!(user))
        .cloned()
        .unwrap()
}

#[actix_rt::test]
async fn presence_goes_to_room_mates_and_typing_is_relayed_and_rate_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(&tmp.path().join("storage"), &["--presence-away-secs", "4"]);
    let mut admin = server.admin().await;
    let (alice, mut a) = server.user(&mut admin, "alice").await;
    let (bob, mut b) = server.user(&mut admin, "bob").await;
    let (_carol, mut c) = server.user(&mut admin, "carol").await;
    let room = admin.create_room("Team", &[alice, bob]).await.unwrap();
    let lonely = admin.create_room("Elsewhere", &[]).await.unwrap();

    let mut bob_events = b.events().await.unwrap();
    let mut carol_events = c.events().await.unwrap();
    assert_eq!(
        presence_in_list(&mut b, alice).await["presence"],
        json!("offline")
    );

    // Online when a session opens, told to bob (who shares a room), not to carol.
    let mut alice_events = a.events().await.unwrap();
    let (p, _) = presence_of(&mut bob_events, alice, 5).await;
    assert_eq!(p, "online");
    assert_eq!(
        presence_in_list(&mut c, alice).await["presence"],
        json!("online")
    );

    // Away after 4 s without activity; back online when she does something.
    let (p, _) = presence_of(&mut bob_events, alice, 10).await;
    assert_eq!(p, "away");
    a.send_text(room, "back at my desk").await.unwrap();
    let (p, _) = presence_of(&mut bob_events, alice, 5).await;
    assert_eq!(p, "online");
    // Away when every client says idle.
    alice_events
        .send_text(r#"{"type":"Presence","state":"idle"}"#)
        .await
        .unwrap();
    let ack = expect_event(&mut alice_events, "Presence").await;
    assert_eq!(ack.data["state"], json!("idle"));
    let (p, _) = presence_of(&mut bob_events, alice, 5).await;
    assert_eq!(p, "away");
    alice_events
        .send_text(r#"{"type":"Presence","state":"active"}"#)
        .await
        .unwrap();
    let (p, _) = presence_of(&mut bob_events, alice, 5).await;
    assert_eq!(p, "online");

    // Typing: bob gets it, carol (not in the room) and alice herself do not.
    alice_events
        .send_text(&format!(r#"{{"type":"Typing","roomId":{room}}}"#))
        .await
        .unwrap();
    let typing = expect_event(&mut bob_events, "UserTyping").await;
    assert_eq!(typing.data, json!({ "roomId": room, "userId": alice }));
    // Rate-limited: more notices within 3 s are dropped.
    for _ in 0..5 {
        alice_events
            .send_text(&format!(r#"{{"type":"Typing","roomId":{room}}}"#))
            .await
            .unwrap();
    }
    assert!(events_of(&mut bob_events, "UserTyping", 1500)
        .await
        .is_empty());
    tokio::time::sleep(Duration::from_millis(1600)).await;
    alice_events
        .send_text(&format!(r#"{{"type":"Typing","roomId":{room}}}"#))
        .await
        .unwrap();
    expect_event(&mut bob_events, "UserTyping").await;
    assert!(events_of(&mut carol_events, "UserTyping", 300)
        .await
        .is_empty());
    assert!(events_of(&mut alice_events, "UserTyping", 300)
        .await
        .is_empty());
    // Typing in a room she is not in, or without a room: an error, the stream stays open.
    alice_events
        .send_text(&format!(r#"{{"type":"Typing","roomId":{lonely}}}"#))
        .await
        .unwrap();
    let e = expect_event(&mut alice_events, "Error").await;
    assert!(
        e.data["errorText"]
            .as_str()
            .unwrap()
            .contains("not a member"),
        "{e:?}"
    );
    alice_events
        .send_text(r#"{"type":"Typing"}"#)
        .await
        .unwrap();
    let e = expect_event(&mut alice_events, "Error").await;
    assert!(
        e.data["errorText"].as_str().unwrap().contains("roomId"),
        "{e:?}"
    );
    alice_events.send_text(r#"{"type":"Ping"}"#).await.unwrap();
    expect_event(&mut alice_events, "Pong").await;

    // A status line: told to room mates with the presence, shown in user objects.
    let me = a.set_status_text("On call until 18:00").await.unwrap();
    assert_eq!(me["statusText"], json!("On call until 18:00"));
    let (p, data) = presence_of(&mut bob_events, alice, 5).await;
    assert_eq!(
        (p.as_str(), &data["statusText"]),
        ("online", &json!("On call until 18:00"))
    );
    assert_eq!(
        presence_in_list(&mut b, alice).await["statusText"],
        json!("On call until 18:00")
    );
    assert_eq!(status_of(a.set_status_text(&"x".repeat(200)).await), 400);
    assert_eq!(status_of(a.set_status_text("two\nlines").await), 400);

    // A quick reconnect is never seen as offline.
    alice_events.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alice_events = a.events().await.unwrap();
    assert!(events_of(&mut bob_events, "UserPresenceChanged", 3000)
        .await
        .is_empty());
    // Offline within a minute of the last session closing.
    alice_events.close().await;
    let closed = Instant::now();
    let (p, _) = presence_of(&mut bob_events, alice, 60).await;
    assert_eq!(p, "offline");
    assert!(closed.elapsed() < Duration::from_secs(60));
    assert_eq!(
        presence_in_list(&mut b, alice).await["presence"],
        json!("offline")
    );
    assert!(events_of(&mut carol_events, "UserPresenceChanged", 200)
        .await
        .iter()
        .all(|e| e.data["userId"] != json!(alice)));
}

/// `PUT /api/v1/messages/{id}` with `body`: the status and answer.
async fn edit_json(c: &mut Client, id: u64, body: &Value) -> (u16, Value) {
    c.request_raw(
        Method::PUT,
        &format!("/api/v1/messages/{id}"),
        Some(serde_json::to_vec(body).unwrap()),
    )
    .await
    .unwrap()
}

fn issue(text: &str, kind: &str, status: &str, assignees: &[u64]) -> Value {
    json!({ "content": text, "messageType": "Issue",
            "issueProperties": { "type": kind, "status": status, "assignees": assignees } })
}

async fn list(c: &mut Client, query: &str) -> (Vec<u64>, Value) {
    let (status, v) = c
        .request_raw(Method::GET, &format!("/api/v1/issues{query}"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{query}: {v}");
    let ids = v["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["messageId"].as_u64().unwrap())
        .collect();
    (ids, v["countsByStatus"].clone())
}

#[actix_rt::test]
async fn issues_and_meetings_are_listed_across_rooms_with_filters_and_calendars() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (alice, mut a) = server.user(&mut admin, "alice").await;
    let (bob, mut b) = server.user(&mut admin, "bob").await;
    let web = admin.create_room("Web", &[alice, bob]).await.unwrap();
    let ops = admin.create_room("Ops", &[alice]).await.unwrap();

    let login = post_json(
        &mut a,
        web,
        issue("Login fails on Safari", "Bug", "ToDo", &[bob]),
    )
    .await;
    let dark = post_json(
        &mut a,
        web,
        issue("Dark theme", "FeatureRequest", "Backlog", &[]),
    )
    .await;
    let deploy = post_json(
        &mut a,
        ops,
        issue("Automate deploys", "Task", "InProgress", &[alice, bob]),
    )
    .await;
    let _chat = post_json(&mut a, web, json!({ "content": "just chatting" })).await;
    let backups = post_json(
        &mut a,
        ops,
        issue("Test restores", "Task", "ToDo", &[alice]),
    )
    .await;

    // Everything alice can see, newest first, with a board's counts.
    let (ids, counts) = list(&mut a, "").await;
    assert_eq!(ids, vec![backups, deploy, dark, login]);
    assert_eq!(counts["ToDo"], json!(2));
    assert_eq!(counts["InProgress"], json!(1));
    assert_eq!(counts["Backlog"], json!(1));
    assert_eq!(counts["Done"], json!(0));
    // Bob is not in Ops.
    let (ids, _) = list(&mut b, "").await;
    assert_eq!(ids, vec![dark, login]);
    // Filters: assignee me, status (several), room, type; counts ignore the status filter.
    let (ids, counts) = list(&mut a, "?assignee=me").await;
    assert_eq!(ids, vec![backups, deploy]);
    assert_eq!(
        (counts["ToDo"].clone(), counts["InProgress"].clone()),
        (json!(1), json!(1))
    );
    let (ids, _) = list(&mut a, "?status=ToDo,InProgress&sort=oldest").await;
    assert_eq!(ids, vec![login, deploy, backups]);
    let (ids, counts) = list(&mut a, &format!("?roomId={ops}&status=ToDo")).await;
    assert_eq!(ids, vec![backups]);
    assert_eq!(counts["InProgress"], json!(1));
    let (ids, _) = list(&mut a, "?type=Bug").await;
    assert_eq!(ids, vec![login]);
    let (ids, _) = list(&mut a, &format!("?assignee={bob}")).await;
    assert_eq!(ids, vec![deploy, login]);
    // Bad filters are clear errors; another room's list is refused.
    for (query, status) in [
        ("?status=Finished", 400),
        ("?assignee=someone", 400),
        ("?sort=sideways", 400),
        ("?colour=red", 400),
        (&*format!("?roomId={ops}"), 403),
        ("?roomId=999999", 404),
    ] {
        let (got, v) = b
            .request_raw(Method::GET, &format!("/api/v1/issues{query}"), None)
            .await
            .unwrap();
        assert_eq!(got, status, "{query}: {v}");
        assert!(
            v["errorText"].as_str().is_some_and(|t| !t.is_empty()),
            "{v}"
        );
    }

    // A status change goes through the message edit (and its permissions).
    let done = issue("Login fails on Safari", "Bug", "Done", &[bob]);
    let (status, v) = edit_json(&mut b, login, &done).await;
    assert!(status == 200 || status == 403, "{v}");
    if status == 403 {
        // Bob may not edit alice's message: alice closes it.
        let (status, v) = edit_json(&mut a, login, &done).await;
        assert_eq!(status, 200, "{v}");
    }
    let (ids, counts) = list(&mut b, "?status=Done").await;
    assert_eq!(ids, vec![login]);
    assert_eq!(counts["ToDo"], json!(0));
    // An edit that makes it a plain message takes it off the list; a delete too.
    let (status, _) = edit_json(
        &mut a,
        dark,
        &json!({ "content": "never mind", "messageType": "Regular" }),
    )
    .await;
    assert_eq!(status, 200);
    a.delete_message(backups).await.unwrap();
    let (ids, _) = list(&mut a, "").await;
    assert_eq!(ids, vec![deploy, login]);
    // Removed from Web: bob sees none of its issues.
    admin.remove_member(web, bob).await.unwrap();
    assert!(list(&mut b, "").await.0.is_empty());

    // The command line.
    let home = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| run_cli(&server, "alice", home.path(), args);
    let text = cli(&[
        "issues",
        "--mine",
        "--status",
        "InProgress",
        "--room",
        "Ops",
    ]);
    assert!(
        text.starts_with(&format!(
            "{deploy}\troom {ops}\tInProgress\tTask\tNormal\tAutomate deploys"
        )),
        "{text}"
    );
    assert!(!text.contains("Login"), "{text}");

    // Meetings: listed by time, one or all as iCalendar.
    let hour = 3_600_000u64;
    let now = confab::now_ms();
    let standup = post_json(
        &mut a,
        web,
        json!({ "content": "Standup\nDaily sync", "messageType": "Meeting",
                "meetingProperties": { "timeUtc": now + 2 * hour, "duration": 900_000 } }),
    )
    .await;
    let review = post_json(
        &mut a,
        ops,
        json!({ "content": "Ops review", "messageType": "Meeting",
                "meetingProperties": { "timeUtc": now + hour, "duration": hour } }),
    )
    .await;
    let _past = post_json(
        &mut a,
        ops,
        json!({ "content": "Last week", "messageType": "Meeting",
                "meetingProperties": { "timeUtc": now - 200 * hour, "duration": hour } }),
    )
    .await;
    let upcoming = a.meetings(None, None).await.unwrap();
    let ids: Vec<u64> = upcoming
        .iter()
        .map(|m| m["messageId"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![review, standup]);
    // A window catches the meetings that overlap it: the review (1 h to 2 h from now) is
    // still on at 1:30, the standup (at 2 h) has not begun by 1:40.
    let window = a
        .meetings(Some(now + 90 * 60_000), Some(now + 100 * 60_000))
        .await
        .unwrap();
    assert_eq!(window.len(), 1);
    assert_eq!(window[0]["messageId"], json!(review));
    let one = a.meetings_ics(Some(standup)).await.unwrap();
    let calendar: icalendar::Calendar = one.parse().expect("valid iCalendar");
    let events: Vec<_> = calendar.events().collect();
    assert_eq!(events.len(), 1);
    use icalendar::{Component, EventLike};
    assert_eq!(events[0].get_summary(), Some("Standup"));
    assert_eq!(events[0].get_location(), Some("Web"));
    let start = match events[0].get_start() {
        Some(icalendar::DatePerhapsTime::DateTime(icalendar::CalendarDateTime::Utc(t))) => {
            t.timestamp_millis() as u64
        }
        other => panic!("start {other:?}"),
    };
    assert_eq!(start / 1000, (now + 2 * hour) / 1000);
    let all: icalendar::Calendar = a.meetings_ics(None).await.unwrap().parse().unwrap();
    assert_eq!(all.events().count(), 2);
    assert!(cli(&["meetings", "--ics"]).contains("SUMMARY:Ops review"));
    // Not a meeting, not visible, not there: clear errors.
    assert_eq!(status_of(a.meetings_ics(Some(deploy)).await), 400);
    assert_eq!(status_of(b.meetings_ics(Some(review)).await), 403);
    assert_eq!(status_of(a.meetings_ics(Some(987_654)).await), 404);
    let (status, _) = a
        .request_raw(Method::GET, "/api/v1/meetings?from=10&to=5", None)
        .await
        .unwrap();
    assert_eq!(status, 400);
}
