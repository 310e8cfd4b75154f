//! The Web API over real TLS against the real server binary: authentication, rooms,
//! messages, comments, read receipts, events, permissions and bad input.

mod util;

use std::time::Duration;

use confab::client::{Client, Direction};
use confab::model::{MessageType, NewMessage, Priority};
use serde_json::json;
use util::*;

#[actix_rt::test]
async fn login_cookie_status_logout_and_documented_errors() {
    let server = TestServer::start();
    // Wrong password: the documented 401 text.
    let mut c = server.client();
    let err = c.login("admin", "wrong").await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(
        err.to_string()
            .contains("The username or password is invalid."),
        "{err}"
    );

    // The cookie is Secure and HttpOnly; the body carries userId and userSessionId.
    let body = json!({ "userName": "admin", "password": server.admin_password() }).to_string();
    let resp = raw_https(
        &server.addr,
        &http_request(
            "POST",
            "/api/v1/login",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let cookie = resp
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("set-cookie");
    assert!(cookie.contains("VirolaUserSessionId="), "{cookie}");
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let v = body_json(&resp);
    assert_eq!(v["httpStatusCode"], 200);
    assert_eq!(v["userId"], 1);
    let sid = v["userSessionId"].as_str().expect("session id").to_string();
    assert!(cookie.contains(&sid));

    // Status with that cookie.
    let resp = raw_https(
        &server.addr,
        &http_request(
            "GET",
            "/api/v1/status",
            &[("Cookie", &format!("VirolaUserSessionId={sid}"))],
            b"",
        ),
    );
    let v = body_json(&resp);
    assert_eq!(
        v,
        json!({ "httpStatusCode": 200, "userId": 1, "userSessionId": sid })
    );

    // No credentials: the documented 401.
    let resp = raw_https(
        &server.addr,
        &http_request("GET", "/api/v1/status", &[], b""),
    );
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert_eq!(
        body_json(&resp),
        json!({ "errorText": "The Authorization HTTP-header or VirolaUserSessionId cookie expected", "httpStatusCode": 401 })
    );

    // Logout ends the session and clears the cookie.
    let mut admin = server.admin().await;
    admin.status().await.expect("status");
    admin.logout().await.expect("logout");
    let resp = raw_https(
        &server.addr,
        &http_request(
            "POST",
            "/api/v1/logout",
            &[
                ("Cookie", &format!("VirolaUserSessionId={sid}")),
                ("Origin", "https://localhost"),
            ],
            b"",
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("set-cookie: virolausersessionid=;"),
        "{resp}"
    );
    let resp = raw_https(
        &server.addr,
        &http_request(
            "GET",
            "/api/v1/status",
            &[("Cookie", &format!("VirolaUserSessionId={sid}"))],
            b"",
        ),
    );
    assert_eq!(
        body_json(&resp)["errorText"],
        "Wrong Bearer, please renew Web API Access Token"
    );
}

#[actix_rt::test]
async fn web_api_tokens_bearer_and_revocation() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let first = admin.create_token().await.expect("token");
    let mut by_token = server.client();
    by_token.use_token(&first);
    let health = by_token.server_health().await.expect("health with Bearer");
    assert_eq!(health["httpStatusCode"], 200);
    assert_eq!(health["status"], "Healthy");
    assert!(!by_token.users().await.expect("users").is_empty());

    // A new token revokes the previous one.
    let second = admin.create_token().await.expect("token 2");
    assert_ne!(first, second);
    let err = by_token.server_health().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err
        .to_string()
        .contains("Wrong Bearer, please renew Web API Access Token"));
    by_token.use_token(&second);
    by_token.server_health().await.expect("new token works");
}

#[actix_rt::test]
async fn failed_logins_are_rate_limited() {
    let server = TestServer::start();
    let mut c = server.client();
    for _ in 0..5 {
        assert_eq!(status_of(c.login("admin", "nope").await), 401);
    }
    let err = c.login("admin", "nope").await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert!(err.to_string().contains("Too many failed logins"), "{err}");
    // Even the right password waits out the window for that user.
    assert_eq!(
        status_of(c.login("admin", &server.admin_password()).await),
        429
    );
}

#[actix_rt::test]
async fn users_rooms_and_room_created_events() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (alice_id, mut alice) = server.user(&mut admin, "alice").await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let (_carol_id, mut carol) = server.user(&mut admin, "carol").await;

    // Only administrators create users.
    assert_eq!(
        status_of(alice.create_user("mallory", None, false).await),
        403
    );
    // Duplicate names are refused.
    assert_eq!(
        status_of(admin.create_user("ALICE", None, false).await),
        409
    );

    let users = alice.users().await.expect("users");
    let names: Vec<_> = users.iter().map(|u| u.user_name.as_str()).collect();
    assert_eq!(names, ["admin", "alice", "bob", "carol"]);
    assert!(users[0].is_admin && !users[1].is_admin);

    let mut bob_events = bob.events().await.expect("events");
    let mut carol_events = carol.events().await.expect("events");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let room = alice.create_room("Project", &[bob_id]).await.expect("room");
    let ev = expect_event(&mut bob_events, "RoomCreated").await;
    assert_eq!(ev.data["room"]["roomId"], room);
    assert_eq!(ev.data["room"]["displayName"], "Project");
    assert_eq!(ev.data["room"]["isModerator"], false);
    expect_silence(&mut carol_events, 300).await;

    let rooms = alice.rooms().await.expect("rooms");
    assert_eq!(rooms.len(), 1);
    assert!(rooms[0].is_moderator);
    assert_eq!(rooms[0].room_type, confab::model::RoomType::Public);
    assert!(carol.rooms().await.expect("rooms").is_empty());

    // Private rooms are named after the other user and found again, not duplicated.
    let private = alice.create_private_room(bob_id).await.expect("private");
    assert_eq!(
        bob.create_private_room(alice_id).await.expect("same"),
        private
    );
    let bob_rooms = bob.rooms().await.expect("rooms");
    let p = bob_rooms
        .iter()
        .find(|r| r.room_id == private)
        .expect("private room");
    assert_eq!(p.display_name, "alice");
    assert_eq!(p.room_type, confab::model::RoomType::Private);

    // Adding a member: moderators only; the new member gets RoomCreated.
    assert_eq!(status_of(bob.add_member(room, 4).await), 403);
    alice.add_member(room, 4).await.expect("add carol");
    let ev = expect_event(&mut carol_events, "RoomCreated").await;
    assert_eq!(ev.data["room"]["roomId"], room);
    assert_eq!(carol.rooms().await.expect("rooms").len(), 1);
    assert_eq!(status_of(alice.add_member(room, 999).await), 404);
}

#[actix_rt::test]
async fn events_reach_every_session_of_members_and_nobody_else() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (_a, mut alice) = server.user(&mut admin, "alice").await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let (_c, mut carol) = server.user(&mut admin, "carol").await;
    let room = alice.create_room("Team", &[bob_id]).await.expect("room");

    // Alice on two devices, Bob on one, Carol (not a member) on one.
    let mut alice_desktop = alice.events().await.expect("events");
    let mut alice_phone = server
        .login("alice", "alice-password-123")
        .await
        .events()
        .await
        .expect("events");
    let mut bob_events = bob.events().await.expect("events");
    let mut carol_events = carol.events().await.expect("events");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let sent = bob.send_text(room, "hello team").await.expect("send");
    for stream in [&mut alice_desktop, &mut alice_phone, &mut bob_events] {
        let ev = expect_event(stream, "TextMessagesCreated").await;
        let m = &ev.data["messages"][0];
        assert_eq!(m["messageId"], sent.message_id);
        assert_eq!(m["text"], "hello team");
        assert_eq!(m["roomId"], room);
        assert_eq!(m["userId"], bob_id);
        assert_eq!(m["parentMessageId"], 0);
        for field in [
            "attachments",
            "commentCount",
            "createdUtc",
            "lastEditedUtc",
            "lastModifiedUtc",
            "markupType",
            "messageType",
            "priority",
            "readTimestamps",
        ] {
            assert!(m.get(field).is_some(), "event message lacks {field}");
        }
    }
    // Shortly after, members get their own view of the room: new last message, unread count.
    let ev = expect_event(&mut alice_desktop, "RoomUpdated").await;
    assert_eq!(ev.data["room"]["roomId"], room);
    assert_eq!(ev.data["room"]["lastMessage"]["messageId"], sent.message_id);
    assert_eq!(ev.data["room"]["unreadMessageCount"], 1);
    let ev = expect_event(&mut bob_events, "RoomUpdated").await;
    assert_eq!(
        ev.data["room"]["unreadMessageCount"], 0,
        "own messages are not unread"
    );
    expect_silence(&mut carol_events, 300).await;

    // Reading updates the reader's badge on all of their sessions at once.
    alice.mark_read(sent.message_id).await.expect("read");
    for stream in [&mut alice_desktop, &mut alice_phone] {
        loop {
            let ev = expect_event(stream, "RoomUpdated").await;
            if ev.data["room"]["unreadMessageCount"] == 0 {
                break;
            }
        }
    }

    // Deletion reaches members only, in the documented shape.
    bob.delete_message(sent.message_id).await.expect("delete");
    let ev = expect_event(&mut alice_phone, "TextMessageDeleted").await;
    assert_eq!(
        ev.data,
        json!({ "parentMessageId": 0, "roomId": room, "messageId": sent.message_id })
    );
    expect_silence(&mut carol_events, 300).await;
}

#[actix_rt::test]
async fn history_pagination_follows_the_documented_cursor_semantics() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let room = admin.create_room("History", &[]).await.expect("room");
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            admin
                .send_text(room, &format!("m{i}"))
                .await
                .expect("send")
                .message_id,
        );
    }
    let page = |v: Vec<confab::model::TextMessage>| {
        v.into_iter().map(|m| m.message_id).collect::<Vec<_>>()
    };

    // No parameters: everything, oldest first ("newer messages" is the default direction).
    assert_eq!(
        page(admin.history(room, None, None, None).await.unwrap()),
        ids
    );
    // Forward without cursor starts at the oldest; backward at the newest; both ascending.
    assert_eq!(
        page(
            admin
                .history(room, None, Some(3), Some(Direction::Forward))
                .await
                .unwrap()
        ),
        ids[..3]
    );
    assert_eq!(
        page(
            admin
                .history(room, None, Some(3), Some(Direction::Backward))
                .await
                .unwrap()
        ),
        ids[7..]
    );
    // With a cursor: strictly older / strictly newer than the cursor message.
    assert_eq!(
        page(
            admin
                .history(room, Some(ids[5]), Some(2), Some(Direction::Backward))
                .await
                .unwrap()
        ),
        ids[3..5]
    );
    assert_eq!(
        page(
            admin
                .history(room, Some(ids[5]), Some(2), Some(Direction::Forward))
                .await
                .unwrap()
        ),
        ids[6..8]
    );
    assert_eq!(
        page(
            admin
                .history(room, Some(ids[5]), None, Some(Direction::Backward))
                .await
                .unwrap()
        ),
        ids[..5]
    );
    assert_eq!(
        page(
            admin
                .history(room, Some(ids[5]), None, Some(Direction::Forward))
                .await
                .unwrap()
        ),
        ids[6..]
    );
    // Edges: before the first and after the last are empty; a limit past the end is fine.
    assert!(admin
        .history(room, Some(ids[0]), Some(5), Some(Direction::Backward))
        .await
        .unwrap()
        .is_empty());
    assert!(admin
        .history(room, Some(ids[9]), Some(5), Some(Direction::Forward))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        page(
            admin
                .history(room, Some(ids[8]), Some(50), Some(Direction::Forward))
                .await
                .unwrap()
        ),
        ids[9..]
    );
    // A cursor that is not a message of this room still splits the order by id.
    assert_eq!(
        page(
            admin
                .history(
                    room,
                    Some(ids[9] + 1000),
                    Some(1),
                    Some(Direction::Backward)
                )
                .await
                .unwrap()
        ),
        ids[9..]
    );
    // cursor=-1 (as in the docs' comment example) means "no cursor".
    for (query, want) in [
        ("?cursor=-1&limit=2&direction=backward", ids[8..].to_vec()),
        ("?cursor=0&limit=2", ids[..2].to_vec()),
        ("?direction=BACKWARD&limit=1", ids[9..].to_vec()),
    ] {
        let (status, v) = admin
            .request_raw(
                awc::http::Method::GET,
                &format!("/api/v1/rooms/{room}/messages{query}"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{query}");
        assert_eq!(v["roomId"], room);
        let got: Vec<u64> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["messageId"].as_u64().unwrap())
            .collect();
        assert_eq!(got, want, "{query}");
    }
    for query in [
        "?direction=sideways",
        "?limit=-5",
        "?limit=abc",
        "?cursor=x",
    ] {
        let (status, v) = admin
            .request_raw(
                awc::http::Method::GET,
                &format!("/api/v1/rooms/{room}/messages{query}"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 400, "{query}");
        assert_eq!(v["httpStatusCode"], 400);
        assert!(v["errorText"].as_str().unwrap().len() > 5);
    }
}

#[actix_rt::test]
async fn comments_counts_events_and_pages() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let room = admin.create_room("Threads", &[bob_id]).await.expect("room");
    let parent = admin.send_text(room, "discuss this").await.expect("send");
    let mut events = bob.events().await.expect("events");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut comment_ids = Vec::new();
    for i in 0..4 {
        let c = bob
            .comment(parent.message_id, &format!("c{i}"))
            .await
            .expect("comment");
        assert_eq!(c.parent_message_id, parent.message_id);
        comment_ids.push(c.message_id);
    }
    let created = expect_event(&mut events, "TextMessagesCreated").await;
    assert_eq!(
        created.data["messages"][0]["parentMessageId"],
        parent.message_id
    );
    let updated = expect_event(&mut events, "TextMessagesUpdated").await;
    assert_eq!(updated.data["messages"][0]["messageId"], parent.message_id);
    assert_eq!(updated.data["messages"][0]["commentCount"], 1);

    // Comments are not in the room's main history; the parent counts them.
    let history = admin.history(room, None, None, None).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].comment_count, 4);
    let all = admin
        .comments(parent.message_id, None, None, None)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        comment_ids
    );
    let last2 = admin
        .comments(parent.message_id, None, Some(2), Some(Direction::Backward))
        .await
        .unwrap();
    assert_eq!(
        last2.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        comment_ids[2..]
    );
    let before = admin
        .comments(
            parent.message_id,
            Some(comment_ids[2]),
            Some(1),
            Some(Direction::Backward),
        )
        .await
        .unwrap();
    assert_eq!(before[0].message_id, comment_ids[1]);

    // No comments on comments.
    assert_eq!(
        status_of(admin.comment(comment_ids[0], "nested").await),
        400
    );
    // Deleting a comment lowers the count; deleting the parent removes its comments.
    bob.delete_message(comment_ids[0])
        .await
        .expect("delete comment");
    assert_eq!(
        admin.history(room, None, None, None).await.unwrap()[0].comment_count,
        3
    );
    admin
        .delete_message(parent.message_id)
        .await
        .expect("delete parent");
    assert!(admin
        .history(room, None, None, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        status_of(admin.comments(parent.message_id, None, None, None).await),
        410,
        "a deleted message's id answers Gone to members"
    );
    assert_eq!(status_of(admin.delete_message(comment_ids[1]).await), 410);
}

#[actix_rt::test]
async fn delete_permissions_and_read_receipts() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (alice_id, mut alice) = server.user(&mut admin, "alice").await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let room = alice.create_room("Reads", &[bob_id]).await.expect("room");
    let m1 = alice.send_text(room, "one").await.unwrap();
    let m2 = alice.send_text(room, "two").await.unwrap();

    // Unread counts: bob has two, alice none (her own posts).
    let unread = |rooms: Vec<confab::model::Room>| {
        rooms
            .iter()
            .find(|r| r.room_id == room)
            .unwrap()
            .unread_message_count
    };
    assert_eq!(unread(bob.rooms().await.unwrap()), 2);
    assert_eq!(unread(alice.rooms().await.unwrap()), 0);

    let mut alice_events = alice.events().await.expect("events");
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.mark_read(m1.message_id).await.expect("read");
    let ev = expect_event(&mut alice_events, "TextMessagesUpdated").await;
    assert_eq!(ev.data["messages"][0]["messageId"], m1.message_id);
    assert_eq!(
        ev.data["messages"][0]["readTimestamps"][0]["userId"],
        bob_id
    );
    assert_eq!(unread(bob.rooms().await.unwrap()), 1);
    // Reading again changes nothing.
    bob.mark_read(m1.message_id).await.expect("read again");
    let history = alice.history(room, None, None, None).await.unwrap();
    assert_eq!(history[0].read_timestamps.len(), 1);
    assert!(history[0].read_timestamps[0].read_utc > 0);
    bob.mark_read(m2.message_id).await.expect("read");
    assert_eq!(unread(bob.rooms().await.unwrap()), 0);
    let rooms = bob.rooms().await.unwrap();
    let last = rooms[0].last_message.as_ref().expect("lastMessage");
    assert_eq!((last.message_id, last.user_id), (m2.message_id, alice_id));

    // Bob (member, not moderator) cannot delete Alice's message; Alice (moderator) can
    // delete Bob's; the admin can delete anything.
    let b1 = bob.send_text(room, "bob's").await.unwrap();
    assert_eq!(status_of(bob.delete_message(m1.message_id).await), 403);
    alice
        .delete_message(b1.message_id)
        .await
        .expect("moderator deletes");
    admin
        .delete_message(m1.message_id)
        .await
        .expect("admin deletes");
    assert_eq!(status_of(alice.delete_message(m1.message_id).await), 410);
    assert_eq!(status_of(alice.mark_read(987654).await), 404);
}

#[actix_rt::test]
async fn non_members_are_denied_everything() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (_a, mut alice) = server.user(&mut admin, "alice").await;
    let (_s, mut stranger) = server.user(&mut admin, "stranger").await;
    let room = alice.create_room("Secret", &[]).await.expect("room");
    let m = alice.send_text(room, "classified").await.unwrap();

    assert_eq!(
        status_of(stranger.history(room, None, None, None).await),
        403
    );
    assert_eq!(status_of(stranger.send_text(room, "let me in").await), 403);
    assert_eq!(
        status_of(stranger.comments(m.message_id, None, None, None).await),
        403
    );
    assert_eq!(status_of(stranger.comment(m.message_id, "hi").await), 403);
    assert_eq!(status_of(stranger.mark_read(m.message_id).await), 403);
    assert_eq!(status_of(stranger.delete_message(m.message_id).await), 404);
    assert_eq!(status_of(stranger.permissions(room).await), 403);
    assert_eq!(status_of(stranger.members(room).await), 403);
    let (status, v) = stranger
        .request_raw(
            awc::http::Method::GET,
            &format!("/api/v1/rooms/{room}/avatar.jpg"),
            None,
        )
        .await
        .unwrap();
    assert_eq!((status, v["httpStatusCode"].as_u64()), (403, Some(403)));
    // Nothing of the room leaked into the stranger's view, and nothing was stored.
    assert!(stranger.rooms().await.unwrap().is_empty());
    assert_eq!(
        alice.history(room, None, None, None).await.unwrap().len(),
        1
    );
    // Unknown rooms are 404.
    assert_eq!(
        status_of(alice.history(424242, None, None, None).await),
        404
    );
    assert_eq!(status_of(alice.send_text(424242, "x").await), 404);
}

#[actix_rt::test]
async fn permissions_avatars_and_message_model() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let room = admin.create_room("Model", &[]).await.expect("room");

    let (status, v) = admin
        .request_raw(
            awc::http::Method::GET,
            &format!("/api/v1/room-permissions/{room}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["roomPermissions"]["roomId"], room);
    let flags = v["roomPermissions"]["permissions"].as_object().unwrap();
    assert_eq!(flags.len(), 24);
    for flag in [
        "canSendMessagesInMainThread",
        "canIntercomTalk",
        "uiCanSeeWhoReadMessageInDiscussion",
        "canSendNudge",
    ] {
        assert_eq!(flags[flag], true, "{flag}");
    }

    // Avatars: an image with the documented headers.
    let resp = raw_https(
        &server.addr,
        &http_request(
            "GET",
            "/api/v1/users/1/avatar.jpg",
            &[(
                "Cookie",
                &format!("VirolaUserSessionId={}", admin.session_id().unwrap()),
            )],
            b"",
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let lower = resp.to_ascii_lowercase();
    assert!(lower.contains("content-type: image/svg+xml"));
    assert!(lower.contains("content-disposition: inline; filename="));
    assert!(lower.contains("content-length:"));
    assert!(resp.contains("<svg"));
    let resp = raw_https(
        &server.addr,
        &http_request(
            "GET",
            "/api/v1/users/99/avatar.jpg",
            &[(
                "Cookie",
                &format!("VirolaUserSessionId={}", admin.session_id().unwrap()),
            )],
            b"",
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 404"));

    // Issue, meeting, markup and priority round-trip.
    let issue = admin
        .send(
            room,
            &serde_json::from_value::<NewMessage>(json!({
                "content": "Fix the login page",
                "messageType": "Issue",
                "priority": "Critical",
                "markupType": "TextMarkdown",
                "issueProperties": { "type": "Bug", "status": "InProgress", "assignees": [1] }
            }))
            .unwrap(),
        )
        .await
        .expect("issue");
    assert_eq!(issue.message_type, MessageType::Issue);
    assert_eq!(issue.priority, Priority::Critical);
    let meeting = admin
        .send(
            room,
            &serde_json::from_value::<NewMessage>(json!({
                "content": "Standup",
                "messageType": "Meeting",
                "meetingProperties": { "timeUtc": 1764350672498u64, "duration": 900000 }
            }))
            .unwrap(),
        )
        .await
        .expect("meeting");
    let (_, v) = admin
        .request_raw(
            awc::http::Method::GET,
            &format!("/api/v1/rooms/{room}/messages"),
            None,
        )
        .await
        .unwrap();
    let stored = &v["messages"];
    assert_eq!(
        stored[0]["issueProperties"],
        json!({ "type": "Bug", "status": "InProgress", "assignees": [1] })
    );
    assert_eq!(stored[0]["markupType"], "TextMarkdown");
    assert_eq!(stored[0]["priority"], "Critical");
    assert_eq!(
        stored[1]["meetingProperties"],
        json!({ "timeUtc": 1764350672498u64, "duration": 900000 })
    );
    assert_eq!(stored[1]["messageId"], meeting.message_id);
    assert!(stored[0].get("meetingProperties").is_none());

    // Invalid model values are 400 with the error shape.
    for body in [
        json!({ "content": "x", "priority": "Urgent" }),
        json!({ "content": "x", "messageType": "Meeting" }),
        json!({ "content": "x", "issueProperties": { "type": "Bug", "status": "ToDo" } }),
        json!({ "content": "   " }),
        json!({ "text": "wrong field" }),
        json!({ "content": ["not", "a", "string"] }),
    ] {
        let (status, v) = admin
            .request_raw(
                awc::http::Method::POST,
                &format!("/api/v1/rooms/{room}/messages"),
                Some(body.to_string().into_bytes()),
            )
            .await
            .unwrap();
        assert_eq!(status, 400, "{body}");
        assert_eq!(v["httpStatusCode"], 400);
    }
}

#[actix_rt::test]
async fn bad_input_gets_clear_errors_and_others_keep_working() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let room = admin.create_room("Robust", &[bob_id]).await.expect("room");
    let mut bob_events = bob.events().await.expect("events");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cookie = format!("VirolaUserSessionId={}", admin.session_id().unwrap());
    let post_path = format!("/api/v1/rooms/{room}/messages");

    // Malformed JSON, wrong types, oversized body, unknown ids, bad ids, unknown paths.
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            http_request(
                "POST",
                &post_path,
                &[
                    ("Cookie", &cookie),
                    ("Origin", "https://localhost"),
                    ("Content-Type", "application/json"),
                ],
                b"{\"content\": ",
            ),
            400,
        ),
        (
            http_request(
                "POST",
                &post_path,
                &[
                    ("Cookie", &cookie),
                    ("Origin", "https://localhost"),
                    ("Content-Type", "application/json"),
                ],
                b"{\"content\": 12}",
            ),
            400,
        ),
        (
            http_request(
                "POST",
                &post_path,
                &[
                    ("Cookie", &cookie),
                    ("Origin", "https://localhost"),
                    ("Content-Type", "application/json"),
                ],
                b"\xff\xfe\x00garbage",
            ),
            400,
        ),
        (
            http_request(
                "POST",
                &post_path,
                &[
                    ("Cookie", &cookie),
                    ("Origin", "https://localhost"),
                    ("Content-Type", "application/json"),
                ],
                format!("{{\"content\": \"{}\"}}", "x".repeat(300 * 1024)).as_bytes(),
            ),
            413,
        ),
        (
            http_request(
                "POST",
                &post_path,
                &[
                    ("Cookie", &cookie),
                    ("Origin", "https://localhost"),
                    ("Content-Type", "application/json"),
                ],
                format!("{{\"content\": \"{}\"}}", "x".repeat(100 * 1024)).as_bytes(),
            ),
            413,
        ),
        (
            http_request(
                "POST",
                "/api/v1/login",
                &[("Content-Type", "application/json")],
                b"[1,2,3]",
            ),
            400,
        ),
        (
            http_request(
                "GET",
                "/api/v1/rooms/99999/messages",
                &[("Cookie", &cookie), ("Origin", "https://localhost")],
                b"",
            ),
            404,
        ),
        (
            http_request(
                "DELETE",
                "/api/v1/messages/99999",
                &[("Cookie", &cookie), ("Origin", "https://localhost")],
                b"",
            ),
            404,
        ),
        (
            http_request(
                "GET",
                "/api/v1/messages/99999/comments",
                &[("Cookie", &cookie), ("Origin", "https://localhost")],
                b"",
            ),
            404,
        ),
        (
            http_request(
                "GET",
                "/api/v1/rooms/-3/messages",
                &[("Cookie", &cookie), ("Origin", "https://localhost")],
                b"",
            ),
            400,
        ),
        (
            http_request(
                "GET",
                "/api/v1/rooms/18446744073709551616/messages",
                &[("Cookie", &cookie), ("Origin", "https://localhost")],
                b"",
            ),
            400,
        ),
        (
            http_request(
                "GET",
                "/api/v1/no-such-thing",
                &[("Cookie", &cookie), ("Origin", "https://localhost")],
                b"",
            ),
            404,
        ),
        (
            http_request(
                "GET",
                "/api/v1/rooms",
                &[("Authorization", "Bearer nonsense")],
                b"",
            ),
            401,
        ),
        (
            http_request(
                "GET",
                "/api/v1/rooms",
                &[("Cookie", "VirolaUserSessionId=")],
                b"",
            ),
            401,
        ),
        (http_request("GET", "/nothing-here.txt", &[], b""), 404),
    ];
    for (request, want) in &cases {
        let resp = raw_https(&server.addr, request);
        let status: u16 = resp
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert_eq!(
            status,
            *want,
            "{}",
            String::from_utf8_lossy(&request[..request.len().min(120)])
        );
        let v = body_json(&resp);
        assert_eq!(v["httpStatusCode"], *want);
        assert!(
            v["errorText"]
                .as_str()
                .map(|t| !t.is_empty())
                .unwrap_or(false),
            "{resp}"
        );
    }

    // Garbage instead of a TLS handshake: the connection is dropped, nobody else notices.
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0u8; 4096][..],
        b"\x16\x03\x01\xff\xff",
    ] {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(&server.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = tcp.write_all(junk);
        let mut buf = [0u8; 64];
        let _ = tcp.read(&mut buf);
    }

    // A WebSocket client sending junk gets an Error event and stays connected.
    let mut junk_ws = server.admin().await.events().await.expect("events");
    junk_ws.send_text("this is not json").await.unwrap();
    let ev = expect_event(&mut junk_ws, "Error").await;
    assert_eq!(ev.data["httpStatusCode"], 400);
    // Binary frames are voice packets (the TCP fallback): junk is dropped and counted.
    junk_ws
        .send_binary(vec![0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    junk_ws.send_text(r#"{"type":"Ping"}"#).await.unwrap();
    expect_event(&mut junk_ws, "Pong").await;
    // An oversized frame ends that connection (and only that one).
    junk_ws.send_text(&"x".repeat(200 * 1024)).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match junk_ws.next_frame().await {
                Ok(Ok(_)) => continue,
                Ok(Err(closed)) => return Some(closed),
                Err(_) => return None,
            }
        }
    })
    .await
    .expect("oversized frame closes the stream");
    if let Some(c) = closed {
        assert_ne!(
            c.code,
            Some(1000),
            "closed as an error, not normally: {c:?}"
        );
    }

    // Everyone else was not disturbed: Bob still gets events, posts still work.
    let m = admin.send_text(room, "still here").await.expect("send");
    let ev = expect_event(&mut bob_events, "TextMessagesCreated").await;
    assert_eq!(ev.data["messages"][0]["messageId"], m.message_id);
    assert_eq!(
        admin.history(room, None, None, None).await.unwrap().len(),
        1
    );
}

#[actix_rt::test]
async fn unauthenticated_event_stream_is_refused_with_401() {
    let server = TestServer::start();
    let mut c: Client = server.client();
    let err = c.events().await.err().expect("refused");
    assert_eq!(err.status(), Some(401));
    let resp = raw_https(
        &server.addr,
        &http_request("GET", "/api/v1/events", &[], b""),
    );
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert_eq!(body_json(&resp)["httpStatusCode"], 401);
}

#[actix_rt::test]
async fn a_client_that_stops_reading_is_dropped_and_others_get_everything() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (alice_id, mut alice) = server.user(&mut admin, "alice").await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let room = admin
        .create_room("Firehose", &[alice_id, bob_id])
        .await
        .expect("room");
    let mut stuck = alice.events().await.expect("events"); // never read until the end
    let mut reader = bob.events().await.expect("events");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Large messages fill the kernel's socket buffers quickly; then the per-session queue
    // (256 events) fills and the server gives up on the stuck client.
    let big = "x".repeat(60 * 1024);
    let total = 700;
    let reading = actix_rt::spawn(async move {
        let mut got = 0;
        while got < total {
            match reader
                .next_within(Duration::from_secs(20))
                .await
                .expect("stream")
            {
                Some(ev) if ev.event_type == "TextMessagesCreated" => got += 1,
                Some(_) => {}
                None => break,
            }
        }
        (got, reader)
    });
    for _ in 0..total {
        admin.send_text(room, &big).await.expect("send");
    }
    let (got, _reader) = reading.await.unwrap();
    assert_eq!(got, total, "a reading client gets every event");

    let mut frames = 0;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(20), stuck.next_frame()).await {
            Ok(Ok(Ok(_))) => frames += 1,
            Ok(Ok(Err(closed))) => break Some(closed),
            Ok(Err(_)) | Err(_) => break None,
        }
    };
    assert!(
        frames < total,
        "the stuck client was cut off ({frames} events reached it)"
    );
    if let Some(c) = closed {
        assert_eq!(c.code, Some(1008), "{c:?}");
    }
    // The server is fine: health answers, the room still takes posts.
    let health = admin.server_health().await.expect("health");
    assert_eq!(health["connectedSessions"], 1, "only bob's session remains");
    admin.send_text(room, "still fine").await.expect("send");
    assert!(
        server.rss_kib() < 512 * 1024,
        "server memory stayed bounded: {} KiB",
        server.rss_kib()
    );
}

/// Read receipts go to the author (whole message, or a `MessagesRead` delta with the
/// `readDeltas` extension) and to the reader, gathered per message; other members get
/// nothing live, so n readers cost O(n) bytes rather than O(n²).
#[actix_rt::test]
async fn read_receipts_are_gathered_and_go_to_the_author_only() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (_, mut alice) = server.user(&mut admin, "alice").await;
    let (eve_id, mut eve) = server.user(&mut admin, "eve").await;
    let mut readers = Vec::new();
    let mut ids = vec![eve_id];
    for name in ["bob", "carol", "dave"] {
        let (id, client) = server.user(&mut admin, name).await;
        ids.push(id);
        readers.push((id, client));
    }
    let room = alice.create_room("Receipts", &ids).await.expect("room");
    let m = alice.send_text(room, "read me").await.unwrap();
    let m2 = alice.send_text(room, "and me").await.unwrap();
    let mut whole = alice.events().await.expect("events");
    let mut deltas = alice
        .events_with_extensions("readDeltas")
        .await
        .expect("events with deltas");
    let mut observer = eve.events().await.expect("events");
    let (bob_id, bob) = &mut readers[0];
    let mut bob_deltas = bob.events_with_extensions("readDeltas").await.unwrap();
    let bob_id = *bob_id;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (_, reader) in readers.iter_mut() {
        reader.mark_read(m.message_id).await.expect("read");
    }
    // The whole message, gathered per window: at most one event per read (usually one for
    // all three), the last carrying all three receipts.
    let mut events = 0;
    loop {
        let ev = expect_event(&mut whole, "TextMessagesUpdated").await;
        assert_eq!(ev.data["messages"][0]["messageId"], m.message_id);
        events += 1;
        let read_by = ev.data["messages"][0]["readTimestamps"].as_array().unwrap();
        if read_by.len() == 3 {
            break;
        }
        assert!(events < 3, "{ev:?}");
    }
    // The deltas list only new receipts: together, each reader once.
    let mut seen: Vec<u64> = Vec::new();
    while seen.len() < 3 {
        let ev = expect_event(&mut deltas, "MessagesRead").await;
        assert_eq!(ev.data["messageId"], m.message_id);
        assert_eq!(ev.data["roomId"], room);
        assert!(ev.data["readTimestamps"][0]["readUtc"].as_u64().unwrap() > 0);
        seen.extend(
            ev.data["readTimestamps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["userId"].as_u64().unwrap()),
        );
    }
    seen.sort_unstable();
    assert_eq!(seen, ids[1..].to_vec());
    // The reader's own sessions learn of their receipt too: a delta, or the whole message
    // (whose readTimestamps tell a Web API v1 client that its user read it).
    let mut bob_whole = readers[0].1.events().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    readers[0].1.mark_read(m2.message_id).await.expect("read");
    let ev = expect_event(&mut bob_whole, "TextMessagesUpdated").await;
    assert_eq!(ev.data["messages"][0]["messageId"], m2.message_id);
    assert_eq!(
        ev.data["messages"][0]["readTimestamps"][0]["userId"],
        bob_id
    );
    let ev = expect_event(&mut bob_deltas, "MessagesRead").await;
    assert!(ev.data["readTimestamps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["userId"] == bob_id));
    // Another member gets no receipt event; the receipts are in the message when read.
    loop {
        match observer
            .next_within(Duration::from_millis(1500))
            .await
            .expect("stream")
        {
            None => break,
            Some(ev) => assert!(
                ev.event_type != "TextMessagesUpdated" && ev.event_type != "MessagesRead",
                "{ev:?}"
            ),
        }
    }
    let history = eve.history(room, None, None, None).await.unwrap();
    assert_eq!(history[0].read_timestamps.len(), 3);
}

/// History without `limit` is streamed page by page; it lists the same messages, oldest
/// first, in both directions and around cursors, for rooms and for comments.
#[actix_rt::test]
async fn unlimited_history_streams_every_message_in_order() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let room = admin.create_room("Long", &[]).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(
            admin
                .send_text(room, &format!("m{i}"))
                .await
                .unwrap()
                .message_id,
        );
    }
    let got =
        |v: Vec<confab::model::TextMessage>| v.iter().map(|m| m.message_id).collect::<Vec<_>>();
    assert_eq!(
        got(admin.history(room, None, None, None).await.unwrap()),
        ids
    );
    assert_eq!(
        got(admin
            .history(room, None, None, Some(Direction::Backward))
            .await
            .unwrap()),
        ids
    );
    assert_eq!(
        got(admin
            .history(room, Some(ids[200]), None, Some(Direction::Backward))
            .await
            .unwrap()),
        ids[..200].to_vec()
    );
    assert_eq!(
        got(admin
            .history(room, Some(ids[100]), None, Some(Direction::Forward))
            .await
            .unwrap()),
        ids[101..].to_vec()
    );
    assert!(admin
        .history(room, Some(ids[299]), None, Some(Direction::Forward))
        .await
        .unwrap()
        .is_empty());
    // The raw answer is one JSON object with the usual fields.
    let (status, v) = admin
        .request_raw(
            awc::http::Method::GET,
            &format!("/api/v1/rooms/{room}/messages"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["roomId"], room);
    assert_eq!(v["httpStatusCode"], 200);
    assert_eq!(v["messages"][299]["text"], "m299");
    // Comments likewise.
    let mut comment_ids = Vec::new();
    for i in 0..140 {
        comment_ids.push(
            admin
                .comment(ids[0], &format!("c{i}"))
                .await
                .unwrap()
                .message_id,
        );
    }
    assert_eq!(
        got(admin.comments(ids[0], None, None, None).await.unwrap()),
        comment_ids
    );
    assert_eq!(
        got(admin
            .comments(
                ids[0],
                Some(comment_ids[130]),
                None,
                Some(Direction::Backward)
            )
            .await
            .unwrap()),
        comment_ids[..130].to_vec()
    );
}

/// `GET /users?limit=` pages through users by id (extension); without it every user.
/// A password reset ends exactly that user's sessions (found through their index).
#[actix_rt::test]
async fn users_come_in_pages_and_a_reset_ends_only_that_users_sessions() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let mut ids = vec![];
    for i in 0..7 {
        ids.push(server.user(&mut admin, &format!("u{i}")).await.0);
    }
    let all: Vec<u64> = admin
        .users()
        .await
        .unwrap()
        .iter()
        .map(|u| u.user_id)
        .collect();
    assert_eq!(all.len(), 8);
    let mut paged = Vec::new();
    let mut cursor: Option<u64> = None;
    loop {
        let q = match cursor {
            Some(c) => format!("/api/v1/users?limit=3&cursor={c}"),
            None => "/api/v1/users?limit=3".to_string(),
        };
        let (status, v) = admin
            .request_raw(awc::http::Method::GET, &q, None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{v}");
        for u in v["users"].as_array().unwrap() {
            paged.push(u["userId"].as_u64().unwrap());
        }
        match v["nextCursor"].as_u64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(paged, all);
    for bad in ["limit=0", "limit=-1", "limit=100000", "limit=x"] {
        let (status, v) = admin
            .request_raw(
                awc::http::Method::GET,
                &format!("/api/v1/users?{bad}"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 400, "{bad}: {v}");
    }

    // Three sessions of u0 (one from `server.user`), two of u1; resetting u0's password
    // ends u0's three only.
    let mut first = server.login("u0", "u0-password-123").await;
    let mut second = server.login("u0", "u0-password-123").await;
    let mut other = server.login("u1", "u1-password-123").await;
    let (status, v) = admin
        .request_raw(
            awc::http::Method::POST,
            &format!("/api/v1/users/{}/password", ids[0]),
            Some(br#"{"password":"fresh-password-1"}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["endedSessions"], 3, "{v}");
    assert_eq!(status_of(first.rooms().await), 401);
    assert_eq!(status_of(second.rooms().await), 401);
    other.rooms().await.expect("another user's session stays");
}
