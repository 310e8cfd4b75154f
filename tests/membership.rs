//! Team rules as the seed describes them: removal (online and offline), re-adding with the
//! whole history, others unaffected, suspension and reactivation, editing.

mod util;

use std::time::Duration;

use serde_json::json;
use util::*;

#[actix_rt::test]
async fn removed_online_user_loses_the_room_at_once_and_gets_it_all_back_when_re_added() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (alice_id, mut alice) = server.user(&mut admin, "alice").await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let room = alice.create_room("Team", &[bob_id]).await.unwrap();
    let before = bob.send_text(room, "bob before").await.unwrap();
    let parent = alice.send_text(room, "alice before").await.unwrap();
    bob.comment(parent.message_id, "bob's comment")
        .await
        .unwrap();

    // Bob on two devices; removal reaches both within a second.
    let mut bob_a = bob.events().await.unwrap();
    let mut bob_b = server
        .login("bob", "bob-password-123")
        .await
        .events()
        .await
        .unwrap();
    let mut alice_events = alice.events().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = std::time::Instant::now();
    alice
        .remove_member(room, bob_id)
        .await
        .expect("moderator removes bob");
    for s in [&mut bob_a, &mut bob_b] {
        let ev = expect_event_within(s, "RoomDeleted", Duration::from_secs(1)).await;
        assert_eq!(ev.data, json!({ "roomId": room }));
    }
    assert!(t0.elapsed() < Duration::from_secs(1));

    // From now on: nothing of the room, only 403/404.
    assert!(bob.rooms().await.unwrap().iter().all(|r| r.room_id != room));
    assert_eq!(status_of(bob.history(room, None, None, None).await), 403);
    assert_eq!(status_of(bob.send_text(room, "let me back").await), 403);
    assert_eq!(
        status_of(bob.comments(parent.message_id, None, None, None).await),
        403
    );
    assert_eq!(status_of(bob.comment(parent.message_id, "x").await), 403);
    assert_eq!(status_of(bob.mark_read(parent.message_id).await), 403);
    assert_eq!(status_of(bob.permissions(room).await), 403);
    assert_eq!(status_of(bob.members(room).await), 403);
    assert_eq!(status_of(bob.edit(before.message_id, "rewrite").await), 403);

    // While he is away, the room goes on; he hears nothing of it.
    let during = alice.send_text(room, "while bob was away").await.unwrap();
    let ev = expect_event_within(
        &mut alice_events,
        "TextMessagesCreated",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(ev.data["messages"][0]["messageId"], during.message_id);
    if let Some(ev) = bob_a.next_within(Duration::from_millis(300)).await.unwrap() {
        panic!("removed user got {ev:?}");
    }

    // Others see no change: bob's messages and comments stay, attributed to him.
    let history = alice.history(room, None, None, None).await.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(
        (history[0].message_id, history[0].user_id),
        (before.message_id, bob_id)
    );
    let comments = alice
        .comments(parent.message_id, None, None, None)
        .await
        .unwrap();
    assert_eq!(comments[0].user_id, bob_id);

    // Re-added: the room comes back with the whole history, including what he missed.
    alice.add_member(room, bob_id).await.unwrap();
    let ev = expect_event_within(&mut bob_a, "RoomCreated", Duration::from_secs(1)).await;
    assert_eq!(ev.data["room"]["roomId"], room);
    let history = bob.history(room, None, None, None).await.unwrap();
    let ids: Vec<u64> = history.iter().map(|m| m.message_id).collect();
    assert_eq!(
        ids,
        vec![before.message_id, parent.message_id, during.message_id]
    );
    let after = alice.send_text(room, "welcome back").await.unwrap();
    let ev = expect_event_within(&mut bob_a, "TextMessagesCreated", Duration::from_secs(5)).await;
    assert_eq!(ev.data["messages"][0]["messageId"], after.message_id);
    assert_eq!(
        bob.comments(parent.message_id, None, None, None)
            .await
            .unwrap()
            .len(),
        1
    );
    let _ = alice_id;
}

#[actix_rt::test]
async fn removed_offline_user_finds_the_room_gone_at_next_login() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (_a, mut alice) = server.user(&mut admin, "alice").await;
    let (bob_id, bob) = server.user(&mut admin, "bob").await;
    let room = alice.create_room("Quiet", &[bob_id]).await.unwrap();
    drop(bob); // bob is offline
    alice.remove_member(room, bob_id).await.unwrap();
    let mut bob = server.login("bob", "bob-password-123").await;
    assert!(bob.rooms().await.unwrap().is_empty());
    assert_eq!(status_of(bob.history(room, None, None, None).await), 403);
}

#[actix_rt::test]
async fn who_may_remove_and_leave() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (alice_id, mut alice) = server.user(&mut admin, "alice").await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let (carol_id, mut carol) = server.user(&mut admin, "carol").await;
    let room = alice
        .create_room("Rules", &[bob_id, carol_id])
        .await
        .unwrap();
    // A plain member cannot remove others; a stranger gets 404; the admin can.
    assert_eq!(status_of(bob.remove_member(room, carol_id).await), 403);
    let (_s, mut stranger) = server.user(&mut admin, "stranger").await;
    assert_eq!(status_of(stranger.remove_member(room, carol_id).await), 404);
    admin
        .remove_member(room, carol_id)
        .await
        .expect("admin removes");
    assert_eq!(status_of(alice.remove_member(room, carol_id).await), 404);
    // Members may leave by default; not when the room forbids it.
    alice
        .update_room(room, json!({ "membersMayLeave": false }))
        .await
        .unwrap();
    assert_eq!(status_of(bob.leave(room).await), 403);
    alice
        .update_room(room, json!({ "membersMayLeave": true }))
        .await
        .unwrap();
    bob.leave(room).await.expect("leave");
    assert!(bob.rooms().await.unwrap().is_empty());
    // Private rooms keep their two users.
    let private = alice.create_private_room(carol_id).await.unwrap();
    assert_eq!(status_of(alice.remove_member(private, carol_id).await), 400);
    let _ = (alice_id, &mut carol);
}

#[actix_rt::test]
async fn renaming_and_archiving_reach_members_as_room_updated() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (_a, mut alice) = server.user(&mut admin, "alice").await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let room = alice.create_room("Old name", &[bob_id]).await.unwrap();
    let mut events = bob.events().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        status_of(
            bob.update_room(room, json!({ "displayName": "Bob's" }))
                .await
        ),
        403
    );
    let updated = alice
        .update_room(
            room,
            json!({ "displayName": "New name", "isArchived": true }),
        )
        .await
        .unwrap();
    assert_eq!(updated.display_name, "New name");
    let ev = expect_event_within(&mut events, "RoomUpdated", Duration::from_secs(2)).await;
    assert_eq!(ev.data["room"]["displayName"], "New name");
    assert_eq!(ev.data["room"]["isArchived"], true);
    assert_eq!(
        status_of(alice.update_room(room, json!({ "displayName": "" })).await),
        400
    );
    assert_eq!(
        status_of(alice.update_room(room, json!({ "colour": "red" })).await),
        400
    );
}

#[actix_rt::test]
async fn suspension_stops_everything_at_once_and_reactivation_restores_it() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let room = admin.create_room("Work", &[bob_id]).await.unwrap();
    let msg = bob.send_text(room, "my work").await.unwrap();
    let token = bob.create_token().await.unwrap();
    let mut by_token = server.client();
    by_token.use_token(&token);
    let mut events = bob.events().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_eq!(status_of(bob.suspend(1).await), 403, "only admins suspend");
    admin.suspend(bob_id).await.expect("suspend");
    // The open stream is closed with a reason.
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match events.next_frame().await {
                Ok(Ok(_)) => continue,
                Ok(Err(c)) => return Some(c),
                Err(_) => return None,
            }
        }
    })
    .await
    .expect("stream closed within 2 s");
    assert_eq!(closed.and_then(|c| c.code), Some(1008));
    // Session, token and login all refused, with a clear message.
    let err = bob.rooms().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("suspended"), "{err}");
    assert_eq!(status_of(by_token.rooms().await), 401);
    let err = server
        .client()
        .login("bob", "bob-password-123")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("suspended"), "{err}");
    let users = admin.users().await.unwrap();
    assert_eq!(
        users.iter().find(|u| u.user_id == bob_id).unwrap().status,
        confab::model::UserStatus::Suspended
    );
    // His messages stay.
    assert_eq!(admin.history(room, None, None, None).await.unwrap()[0], msg);

    admin.reactivate(bob_id).await.expect("reactivate");
    bob.rooms().await.expect("the old session works again");
    by_token.rooms().await.expect("the token works again");
    assert_eq!(status_of(admin.suspend(1).await), 400, "no self-suspension");
}

#[actix_rt::test]
async fn password_reset_ends_sessions_and_admin_flag_changes() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let new = admin
        .reset_password(bob_id, None)
        .await
        .unwrap()
        .expect("generated");
    assert_eq!(status_of(bob.rooms().await), 401, "old session ended");
    assert_eq!(
        status_of(server.client().login("bob", "bob-password-123").await),
        401
    );
    let mut bob = server.login("bob", &new).await;
    assert_eq!(status_of(bob.create_user("x", None, false).await), 403);
    admin.set_admin(bob_id, true).await.unwrap();
    bob.create_user("made-by-bob", None, false)
        .await
        .expect("bob is admin now");
    admin.set_admin(bob_id, false).await.unwrap();
    assert_eq!(
        status_of(admin.set_admin(1, false).await),
        409,
        "the last admin stays"
    );
}

#[actix_rt::test]
async fn editing_messages() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (alice_id, mut alice) = server.user(&mut admin, "alice").await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let room = alice.create_room("Edits", &[bob_id]).await.unwrap();
    let m = bob.send_text(room, "teh typo").await.unwrap();
    let mut events = alice.events().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let edited = bob.edit(m.message_id, "the typo").await.unwrap();
    assert_eq!(edited.text, "the typo");
    assert!(edited.last_edited_utc >= m.created_utc);
    assert_eq!(edited.created_utc, m.created_utc);
    let ev = expect_event_within(&mut events, "TextMessagesUpdated", Duration::from_secs(2)).await;
    assert_eq!(ev.data["messages"][0]["text"], "the typo");
    // Another member cannot; the moderator (alice) and the admin can.
    let (_c, mut carol) = server.user(&mut admin, "carol").await;
    alice.add_member(room, 4).await.unwrap();
    assert_eq!(status_of(carol.edit(m.message_id, "vandal").await), 403);
    alice.edit(m.message_id, "moderated").await.unwrap();
    assert_eq!(
        bob.history(room, None, None, None).await.unwrap()[0].text,
        "moderated"
    );
    assert_eq!(status_of(bob.edit(m.message_id, "  ").await), 400);
    assert_eq!(status_of(bob.edit(999_999, "x").await), 404);
    let _ = alice_id;
}

#[actix_rt::test]
async fn reactions_and_pinned_rooms() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (alice_id, mut alice) = server.user(&mut admin, "alice").await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let room = alice.create_room("Fun", &[bob_id]).await.unwrap();
    let other = alice.create_room("Other", &[bob_id]).await.unwrap();
    let m = alice.send_text(room, "lunch?").await.unwrap();
    let mut events = alice.events().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let after = bob.react(m.message_id, "👍", true).await.unwrap();
    assert_eq!(
        after.reactions,
        vec![confab::model::Reaction {
            emoji: "👍".into(),
            user_ids: vec![bob_id]
        }]
    );
    let ev = expect_event_within(&mut events, "TextMessagesUpdated", Duration::from_secs(2)).await;
    assert_eq!(ev.data["messages"][0]["reactions"][0]["emoji"], "👍");
    alice.react(m.message_id, "👍", true).await.unwrap();
    alice.react(m.message_id, "🎉", true).await.unwrap();
    let r = bob
        .react(m.message_id, "👍", false)
        .await
        .unwrap()
        .reactions;
    assert_eq!(r.len(), 2);
    assert_eq!(
        r.iter().find(|x| x.emoji == "👍").unwrap().user_ids,
        vec![alice_id]
    );
    assert_eq!(
        status_of(bob.react(m.message_id, "two words", true).await),
        400
    );
    assert_eq!(status_of(bob.react(m.message_id, "", true).await), 400);
    let (_s, mut stranger) = server.user(&mut admin, "stranger").await;
    assert_eq!(
        status_of(stranger.react(m.message_id, "👎", true).await),
        403
    );
    // A message without reactions carries no reactions field (the documented shape).
    let plain = alice.send_text(room, "plain").await.unwrap();
    let (_, v) = alice
        .request_raw(
            awc::http::Method::GET,
            &format!("/api/v1/messages/{}", plain.message_id),
            None,
        )
        .await
        .unwrap();
    assert!(v["message"].get("reactions").is_none());

    // Pinning is per user.
    let pinned = bob.pin(other, true).await.unwrap();
    assert!(pinned.is_pinned);
    let bob_rooms = bob.rooms().await.unwrap();
    assert!(
        bob_rooms
            .iter()
            .find(|r| r.room_id == other)
            .unwrap()
            .is_pinned
    );
    assert!(!alice.rooms().await.unwrap().iter().any(|r| r.is_pinned));
    bob.pin(other, false).await.unwrap();
    assert!(!bob.rooms().await.unwrap().iter().any(|r| r.is_pinned));
    assert_eq!(status_of(stranger.pin(room, true).await), 403);
}

fn write_file(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(openssl::sha::sha1(bytes))
}

#[actix_rt::test]
async fn attachments_round_trip_deduplicate_and_stay_in_their_room() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (_a, mut alice) = server.user(&mut admin, "alice").await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let (_s, mut stranger) = server.user(&mut admin, "stranger").await;
    let room = alice.create_room("Files", &[bob_id]).await.unwrap();
    let msg = alice.send_text(room, "see attached").await.unwrap();
    let mut bob_events = bob.events().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 3 MiB of varied bytes (several chunks, last one partial), a small text, and a copy of
    // the big one under another name.
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 12345)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let f_big = write_file(tmp.path(), "data.bin", &big);
    let f_txt = write_file(tmp.path(), "notes ü.txt", b"hello attachments\n");
    let f_copy = write_file(tmp.path(), "copy.bin", &big);
    let up = alice
        .upload(msg.message_id, &[f_big.clone(), f_txt.clone()], true)
        .await
        .expect("upload");
    assert_eq!(up.len(), 2);
    assert_eq!(up[0].file_size, big.len() as u64);
    assert_eq!(up[0].file_checksum, sha1_hex(&big));
    assert_eq!(up[0].attachment_state, "ReadyForDownloadFromServerToClient");
    assert_eq!(up[1].file_name, "notes ü.txt");
    let ev = expect_event_within(
        &mut bob_events,
        "TextMessagesUpdated",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(
        ev.data["messages"][0]["attachments"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Byte-exact download with the checksum; metadata in the documented shape.
    let mut out = Vec::new();
    let (status, n, sum) = bob
        .download(up[0].attachment_id, "data.bin", None, &mut out)
        .await
        .unwrap();
    assert_eq!((status, n), (200, big.len() as u64));
    assert_eq!(out, big);
    assert_eq!(sum, up[0].file_checksum);
    let meta = bob.attachment(up[1].attachment_id).await.unwrap();
    assert_eq!(meta, up[1]);
    let (_, v) = bob
        .request_raw(
            awc::http::Method::GET,
            &format!("/api/v1/attachments/{}", up[0].attachment_id),
            None,
        )
        .await
        .unwrap();
    for field in [
        "attachmentId",
        "attachmentState",
        "createdUtc",
        "fileChecksum",
        "fileName",
        "fileSize",
        "hasThumbnail",
        "lastModifiedUtc",
        "roomId",
        "textMessageId",
    ] {
        assert!(v.get(field).is_some(), "metadata lacks {field}");
    }
    // Headers: type from the name, disposition with the name, length; ranges.
    let resp = raw_https(
        &server.addr,
        &http_request(
            "GET",
            &format!("/api/v1/attachments/{}/x", up[1].attachment_id),
            &[(
                "Cookie",
                &format!("VirolaUserSessionId={}", bob.session_id().unwrap()),
            )],
            b"",
        ),
    );
    let lower = resp.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/plain"), "{resp}");
    assert!(
        lower.contains("content-disposition: attachment; filename*=utf-8''notes%20%c3%bc.txt"),
        "{resp}"
    );
    assert!(lower.contains("content-length: 18"), "{resp}");
    let mut part = Vec::new();
    let (status, _, _) = bob
        .download(
            up[0].attachment_id,
            "data.bin",
            Some("bytes=262140-262150"),
            &mut part,
        )
        .await
        .unwrap();
    assert_eq!(status, 206);
    assert_eq!(part, big[262140..=262150]);
    let mut tail = Vec::new();
    bob.download(
        up[0].attachment_id,
        "data.bin",
        Some("bytes=-100"),
        &mut tail,
    )
    .await
    .unwrap();
    assert_eq!(tail, big[big.len() - 100..]);
    let err = bob
        .download(
            up[0].attachment_id,
            "data.bin",
            Some("bytes=99999999-"),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(416));

    // The same content again is stored once.
    let health0 = admin.server_health().await.unwrap()["storageBytes"]
        .as_u64()
        .unwrap();
    let again = alice
        .upload(msg.message_id, &[f_copy], false)
        .await
        .unwrap();
    assert_eq!(again[0].file_checksum, up[0].file_checksum);
    let health1 = admin.server_health().await.unwrap()["storageBytes"]
        .as_u64()
        .unwrap();
    assert!(
        health1 < health0 + big.len() as u64 / 2,
        "duplicate content was not stored again ({health0} -> {health1})"
    );

    // Strangers get 404 whatever id they guess; bob (not the author) cannot delete or attach.
    for id in [up[0].attachment_id, up[1].attachment_id, 999] {
        assert_eq!(status_of(stranger.attachment(id).await), 404);
        let e = stranger
            .download(id, "data.bin", None, &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(404));
    }
    assert_eq!(
        status_of(
            stranger
                .upload(msg.message_id, std::slice::from_ref(&f_txt), false)
                .await
        ),
        403
    );
    assert_eq!(
        status_of(
            bob.upload(msg.message_id, std::slice::from_ref(&f_txt), false)
                .await
        ),
        403
    );
    assert_eq!(
        status_of(bob.delete_attachment(up[1].attachment_id).await),
        403
    );

    // A wrong client checksum is refused and nothing is kept.
    let before = alice.history(room, None, None, None).await.unwrap()[0]
        .attachments
        .len();
    // The checksum field names another content's SHA-1.
    let url_msg = msg.message_id;
    let (status, v) = {
        let boundary = "b0undary";
        let body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"fileChecksum\"\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"bad.txt\"\r\n\r\nabc\r\n--{boundary}--\r\n", sha1_hex(b"xyz"));
        let resp = raw_https(
            &server.addr,
            &http_request(
                "POST",
                &format!("/api/v1/messages/{url_msg}/attachments"),
                &[
                    (
                        "Cookie",
                        &format!("VirolaUserSessionId={}", alice.session_id().unwrap()),
                    ),
                    ("Origin", "https://localhost"),
                    (
                        "Content-Type",
                        &format!("multipart/form-data; boundary={boundary}"),
                    ),
                ],
                body.as_bytes(),
            ),
        );
        (
            resp.split_whitespace().nth(1).unwrap_or("").to_string(),
            body_json(&resp),
        )
    };
    assert_eq!(status, "400");
    assert!(v["errorText"]
        .as_str()
        .unwrap()
        .contains("ChecksumVerificationOnServerSideMismatch"));
    assert_eq!(
        alice.history(room, None, None, None).await.unwrap()[0]
            .attachments
            .len(),
        before
    );

    // Deleting frees the space once the last reference goes; deleting the message removes its files.
    alice.delete_attachment(up[1].attachment_id).await.unwrap();
    assert_eq!(status_of(bob.attachment(up[1].attachment_id).await), 404);
    alice.delete_message(msg.message_id).await.unwrap();
    assert_eq!(status_of(alice.attachment(up[0].attachment_id).await), 404);
    assert_eq!(
        status_of(alice.attachment(again[0].attachment_id).await),
        404
    );
}

#[actix_rt::test]
async fn oversized_attachments_are_refused_with_413() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let server = TestServer::start_in(&dir, &["--max-file-mb", "1"]);
    let mut admin = server.admin().await;
    let room = admin.create_room("Small", &[]).await.unwrap();
    let msg = admin.send_text(room, "x").await.unwrap();
    let f = write_file(tmp.path(), "big.bin", &vec![7u8; 1024 * 1024 + 1]);
    let err = admin.upload(msg.message_id, &[f], false).await.unwrap_err();
    assert_eq!(err.status(), Some(413));
    assert!(err.to_string().contains("larger than the limit"), "{err}");
    assert!(admin.history(room, None, None, None).await.unwrap()[0]
        .attachments
        .is_empty());
    let ok = write_file(tmp.path(), "ok.bin", &vec![7u8; 1024 * 1024]);
    admin
        .upload(msg.message_id, &[ok], false)
        .await
        .expect("exactly the limit is fine");
}

#[actix_rt::test]
async fn avatars_can_be_uploaded_by_their_owner_and_fall_back_to_placeholders() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let room = admin.create_room("Pics", &[bob_id]).await.unwrap();
    let png: Vec<u8> = [&b"\x89PNG\r\n\x1a\n"[..], &[0u8; 64]].concat();
    let put = |path: String, session: String, body: Vec<u8>| {
        raw_https(
            &server.addr,
            &http_request(
                "PUT",
                &path,
                &[
                    ("Cookie", &format!("VirolaUserSessionId={session}")),
                    ("Origin", "https://localhost"),
                    ("Content-Type", "image/png"),
                ],
                &body,
            ),
        )
    };
    let bob_sid = bob.session_id().unwrap().to_string();
    let admin_sid = admin.session_id().unwrap().to_string();
    // Placeholder first.
    let get = |path: String, session: &str| {
        raw_https(
            &server.addr,
            &http_request(
                "GET",
                &path,
                &[("Cookie", &format!("VirolaUserSessionId={session}"))],
                b"",
            ),
        )
    };
    assert!(get(format!("/api/v1/users/{bob_id}/avatar.jpg"), &bob_sid)
        .to_ascii_lowercase()
        .contains("image/svg+xml"));
    // Bob sets his own; not someone else's; not a non-image; not an oversized one.
    assert!(put(
        format!("/api/v1/users/{bob_id}/avatar.jpg"),
        bob_sid.clone(),
        png.clone()
    )
    .starts_with("HTTP/1.1 200"));
    assert!(put(
        "/api/v1/users/1/avatar.jpg".into(),
        bob_sid.clone(),
        png.clone()
    )
    .starts_with("HTTP/1.1 403"));
    let r = put(
        format!("/api/v1/users/{bob_id}/avatar.jpg"),
        bob_sid.clone(),
        b"<svg>not allowed</svg>".to_vec(),
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = put(
        format!("/api/v1/users/{bob_id}/avatar.jpg"),
        bob_sid.clone(),
        [png.clone(), vec![0u8; 1024 * 1024]].concat(),
    );
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert_eq!(body_json(&r)["httpStatusCode"], 413);
    let got = get(format!("/api/v1/users/{bob_id}/avatar.jpg"), &admin_sid);
    assert!(
        got.to_ascii_lowercase().contains("content-type: image/png"),
        "{got}"
    );
    assert!(
        got.contains("PNG\r\n\u{1a}\n"),
        "the uploaded bytes come back"
    );
    // Room avatars: the moderator (admin created the room), not a plain member.
    assert!(put(
        format!("/api/v1/rooms/{room}/avatar.jpg"),
        bob_sid.clone(),
        png.clone()
    )
    .starts_with("HTTP/1.1 403"));
    assert!(put(
        format!("/api/v1/rooms/{room}/avatar.jpg"),
        admin_sid.clone(),
        png.clone()
    )
    .starts_with("HTTP/1.1 200"));
    assert!(get(format!("/api/v1/rooms/{room}/avatar.jpg"), &bob_sid)
        .to_ascii_lowercase()
        .contains("content-type: image/png"));
    let _ = &mut bob;
}

#[actix_rt::test]
async fn the_attachment_quota_is_per_user_and_deleting_gives_space_back() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(&tmp.path().join("storage"), &["--quota-mb", "1"]);
    let mut admin = server.admin().await;
    let (bob_id, mut bob) = server.user(&mut admin, "bob").await;
    let room = admin.create_room("Quota", &[bob_id]).await.unwrap();
    let msg = bob.send_text(room, "files").await.unwrap();
    let half = write_file(tmp.path(), "half.bin", &vec![1u8; 600 * 1024]);
    let first = bob
        .upload(msg.message_id, std::slice::from_ref(&half), false)
        .await
        .expect("fits");
    let err = bob
        .upload(msg.message_id, std::slice::from_ref(&half), false)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(413));
    assert!(err.to_string().contains("quota"), "{err}");
    // Another user has their own quota.
    let other = admin.send_text(room, "admin's").await.unwrap();
    admin
        .upload(other.message_id, std::slice::from_ref(&half), false)
        .await
        .expect("admin's own quota");
    // Deleting gives the space back.
    bob.delete_attachment(first[0].attachment_id).await.unwrap();
    bob.upload(msg.message_id, std::slice::from_ref(&half), false)
        .await
        .expect("space was returned");
}
