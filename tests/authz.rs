//! Authorization: the matrix in `docs/api.md` ("Who may call what") walked cell by cell
//! against the real server, and the three permission levels (global, room, user) enforced
//! on the endpoints they govern.

mod util;

use std::collections::HashMap;
use std::path::PathBuf;

use awc::http::Method;
use confab::client::Client;
use serde_json::{json, Value};
use util::*;

const ROLES: [&str; 7] = [
    "owner",
    "member",
    "moderator",
    "admin",
    "removed",
    "suspended",
    "stranger",
];

struct Row {
    method: Method,
    path: String,
    body: String,
    expect: [u16; 7],
}

/// The rows of the table under "## Who may call what" in docs/api.md.
fn matrix() -> Vec<Row> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md"))
        .expect("docs/api.md");
    let section = doc
        .split("## Who may call what")
        .nth(1)
        .expect("docs/api.md has the section 'Who may call what'");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(cells.len(), 9, "a matrix row has 9 cells: {line}");
        let request = cells[0].trim_matches('`');
        let (method, path) = request.split_once(' ').expect("METHOD path");
        let expect: Vec<u16> = cells[2..]
            .iter()
            .map(|c| {
                c.parse()
                    .unwrap_or_else(|_| panic!("status cell {c:?} in {line}"))
            })
            .collect();
        rows.push(Row {
            method: method.parse().expect("HTTP method"),
            path: path.to_string(),
            body: cells[1].trim_matches('`').to_string(),
            expect: expect.try_into().expect("7 statuses"),
        });
    }
    assert!(rows.len() >= 40, "the matrix lists every endpoint");
    rows
}

fn write_file(dir: &std::path::Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    path
}

struct Fixture {
    /// Kept alive for the test's duration (the server stops when it drops).
    _server: TestServer,
    admin: Client,
    clients: Vec<Client>,
    ids: Vec<u64>,
    room: u64,
    message: u64,
    attachment: u64,
    image: u64,
    files: tempfile::TempDir,
    counter: u32,
}

impl Fixture {
    async fn new() -> Fixture {
        let server = TestServer::start();
        let mut admin = server.admin().await;
        let admin_id = admin.status().await.unwrap()["userId"].as_u64().unwrap();
        let mut clients = Vec::new();
        let mut ids = Vec::new();
        for role in ROLES {
            if role == "admin" {
                clients.push(server.admin().await);
                ids.push(admin_id);
            } else {
                let (id, c) = server.user(&mut admin, role).await;
                clients.push(c);
                ids.push(id);
            }
        }
        let members: Vec<u64> = ["owner", "member", "removed", "suspended"]
            .iter()
            .map(|r| ids[ROLES.iter().position(|x| x == r).unwrap()])
            .collect();
        let room = clients[2].create_room("Matrix", &members).await.unwrap();
        let message = clients[0]
            .send_text(room, "the owner's message")
            .await
            .unwrap()
            .message_id;
        let files = tempfile::tempdir().unwrap();
        let notes = write_file(files.path(), "notes.txt", b"some notes\n");
        let attachment = clients[0].upload(message, &[notes], true).await.unwrap()[0].attachment_id;
        let pic = write_file(files.path(), "pic.png", &png(640, 480));
        let uploaded = clients[0].upload(message, &[pic], true).await.unwrap();
        assert!(uploaded[0].has_thumbnail, "a PNG gets a thumbnail");
        let image = uploaded[0].attachment_id;
        clients[2].remove_member(room, ids[4]).await.unwrap();
        admin.suspend(ids[5]).await.unwrap();
        Fixture {
            _server: server,
            admin,
            clients,
            ids,
            room,
            message,
            attachment,
            image,
            files,
            counter: 0,
        }
    }

    async fn fresh_user(&mut self) -> u64 {
        self.counter += 1;
        let name = format!("extra{}", self.counter);
        self.admin
            .create_user(&name, Some("extra-password-1"), false)
            .await
            .unwrap()
            .0
    }

    /// Fills the placeholders of a path or body for one request by `role`.
    async fn substitute(
        &mut self,
        text: &str,
        role: usize,
        vars: &mut HashMap<String, String>,
    ) -> String {
        let mut out = text.to_string();
        let mut from = 0;
        while let Some(offset) = out[from..].find('{') {
            let start = from + offset;
            let len = out[start..].find('}').unwrap_or(0);
            let name = out[start + 1..start + len.max(1)].to_string();
            if len == 0 || name.is_empty() || !name.chars().all(|c| c.is_ascii_alphabetic()) {
                from = start + 1; // JSON, not a placeholder
                continue;
            }
            let value = match vars.get(&name) {
                Some(v) => v.clone(),
                None => {
                    let v = match name.as_str() {
                        "room" => self.room.to_string(),
                        "message" => self.message.to_string(),
                        "attachment" => self.attachment.to_string(),
                        "image" => self.image.to_string(),
                        "self" => self.ids[role].to_string(),
                        "ownMessage" => self.clients[0]
                            .send_text(self.room, "to be deleted")
                            .await
                            .unwrap()
                            .message_id
                            .to_string(),
                        "ownAttachment" => {
                            let m = self.clients[0]
                                .send_text(self.room, "with a file")
                                .await
                                .unwrap()
                                .message_id;
                            let f = write_file(self.files.path(), "own.txt", b"own file");
                            self.clients[0].upload(m, &[f], false).await.unwrap()[0]
                                .attachment_id
                                .to_string()
                        }
                        "newMember" => {
                            let u = self.fresh_user().await;
                            self.admin.add_member(self.room, u).await.unwrap();
                            u.to_string()
                        }
                        "outsider" => self.fresh_user().await.to_string(),
                        "fresh" => {
                            self.counter += 1;
                            format!("fresh{}", self.counter)
                        }
                        other => panic!("unknown placeholder {{{other}}}"),
                    };
                    vars.insert(name.clone(), v.clone());
                    v
                }
            };
            out.replace_range(start..start + len + 1, &value);
            from = start + value.len();
        }
        out
    }

    async fn call(&mut self, row: &Row, role: usize) -> u16 {
        let mut vars = HashMap::new();
        let path = self.substitute(&row.path, role, &mut vars).await;
        let body = self.substitute(&row.body, role, &mut vars).await;
        match body.as_str() {
            "multipart" => {
                let message: u64 = path
                    .trim_start_matches("/api/v1/messages/")
                    .trim_end_matches("/attachments")
                    .parse()
                    .expect("upload path");
                let f = write_file(self.files.path(), "upload.txt", b"uploaded");
                match self.clients[role].upload(message, &[f], false).await {
                    Ok(_) => 200,
                    Err(e) => e.status().expect("an API status"),
                }
            }
            _ => {
                let payload = match body.as_str() {
                    "" => None,
                    "png" => Some(("image/png", png(8, 8))),
                    json => Some(("application/json", json.as_bytes().to_vec())),
                };
                let (status, bytes) = self.clients[role]
                    .request_bytes(row.method.clone(), &path, payload)
                    .await
                    .expect("transport");
                if matches!(ROLES[role], "removed" | "suspended" | "stranger" | "admin") {
                    // Those outside the room never get its content, whatever the status.
                    for secret in [&b"the owner's message"[..], b"some notes"] {
                        assert!(
                            !bytes.windows(secret.len()).any(|w| w == secret),
                            "{} {path} as {} leaked room content",
                            row.method,
                            ROLES[role]
                        );
                    }
                }
                if status != 200 {
                    // Every refusal has the documented error shape.
                    let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                        panic!("{} {path}: error body is not JSON", row.method)
                    });
                    assert_eq!(v["httpStatusCode"], json!(status), "{v}");
                    assert!(v["errorText"].as_str().is_some_and(|t| !t.is_empty()));
                }
                status
            }
        }
    }

    /// Undoes what a successful cell changed that later cells depend on.
    async fn restore(&mut self, row: &Row, role: usize) {
        if row.path.ends_with("/leave") {
            let user = self.ids[role];
            self.admin.add_member(self.room, user).await.unwrap();
            if ROLES[role] == "moderator" {
                self.admin
                    .set_moderator(self.room, user, true)
                    .await
                    .unwrap();
            }
        }
    }
}

#[actix_rt::test]
async fn every_cell_of_the_documented_authorization_matrix_holds() {
    let rows = matrix();
    let mut fx = Fixture::new().await;
    let mut wrong = Vec::new();
    let mut cells = 0;
    for row in &rows {
        for (role, &want) in row.expect.iter().enumerate() {
            let got = fx.call(row, role).await;
            cells += 1;
            if got != want {
                wrong.push(format!(
                    "{} {} as {}: got {got}, the table says {want}",
                    row.method, row.path, ROLES[role]
                ));
            }
            if got == 200 {
                fx.restore(row, role).await;
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

async fn put_room_permissions(c: &mut Client, room: u64, body: Value) -> (u16, Value) {
    c.request_raw(
        Method::PUT,
        &format!("/api/v1/room-permissions/{room}"),
        Some(body.to_string().into_bytes()),
    )
    .await
    .unwrap()
}

async fn post_status(c: &mut Client, path: &str, body: Value) -> (u16, Value) {
    c.request_raw(Method::POST, path, Some(body.to_string().into_bytes()))
        .await
        .unwrap()
}

#[actix_rt::test]
async fn three_permission_levels_restrict_and_moderators_cannot_grant() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (_, mut moderator) = server.user(&mut admin, "mod").await;
    let (ann_id, mut ann) = server.user(&mut admin, "ann").await;
    let (_, mut ben) = server.user(&mut admin, "ben").await;
    let ben_id = ben.status().await.unwrap()["userId"].as_u64().unwrap();
    let room = moderator
        .create_room("Rules", &[ann_id, ben_id])
        .await
        .unwrap();
    let start = moderator.send_text(room, "welcome").await.unwrap();

    // Global level (administrators): no emoji reactions in main threads.
    let (s, v) = admin
        .request_raw(
            Method::PUT,
            "/api/v1/permissions",
            Some(br#"{"permissions":{"canReactToMessagesWithEmojiInMainThread":false}}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let (s, v) = moderator
        .request_raw(
            Method::PUT,
            "/api/v1/permissions",
            Some(br#"{"permissions":{"canReactToMessagesWithEmojiInMainThread":true}}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(s, 403, "only administrators set defaults: {v}");
    assert!(
        !ann.permissions(room)
            .await
            .unwrap()
            .can_react_to_messages_with_emoji_in_main_thread
    );
    let err = ann.react(start.message_id, "👍", true).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(
        err.to_string()
            .contains("canReactToMessagesWithEmojiInMainThread"),
        "the refusal names the flag: {err}"
    );
    moderator
        .react(start.message_id, "👍", true)
        .await
        .expect("moderators hold every flag");

    // A moderator cannot grant what the administrator took away…
    let (s, v) = put_room_permissions(
        &mut moderator,
        room,
        json!({"permissions": {"canReactToMessagesWithEmojiInMainThread": true}}),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert!(v["errorText"].as_str().unwrap().contains("cannot grant"));
    assert_eq!(
        status_of(ann.react(start.message_id, "👍", true).await),
        403
    );
    // …an administrator can, for this room only.
    let (s, _) = put_room_permissions(
        &mut admin,
        room,
        json!({"permissions": {"canReactToMessagesWithEmojiInMainThread": true}}),
    )
    .await;
    assert_eq!(s, 200);
    ann.react(start.message_id, "🎉", true)
        .await
        .expect("granted in this room by an administrator");
    let other = moderator.create_room("Other", &[ann_id]).await.unwrap();
    let there = moderator.send_text(other, "elsewhere").await.unwrap();
    assert_eq!(
        status_of(ann.react(there.message_id, "👍", true).await),
        403
    );

    // Room level (moderator): no new threads, discussions still open.
    let mut ann_events = ann.events().await.unwrap();
    let (s, v) = put_room_permissions(
        &mut moderator,
        room,
        json!({"permissions": {"canSendMessagesInMainThread": false}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let ev = expect_event(&mut ann_events, "RoomPermissionsChanged").await;
    assert_eq!(ev.data["roomId"], json!(room));
    assert_eq!(status_of(ann.send_text(room, "new topic").await), 403);
    assert_eq!(status_of(ben.send_text(room, "new topic").await), 403);
    ann.comment(start.message_id, "a reply")
        .await
        .expect("discussion allowed");
    moderator
        .send_text(room, "moderators still post")
        .await
        .unwrap();
    assert!(
        !ann.permissions(room)
            .await
            .unwrap()
            .can_send_messages_in_main_thread
    );

    // User level: Ben may not reply either; Ann still may.
    let (s, _) = put_room_permissions(
        &mut moderator,
        room,
        json!({"userId": ben_id, "permissions": {"canSendMessagesInDiscussion": false}}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        status_of(ben.comment(start.message_id, "me too").await),
        403
    );
    ann.comment(start.message_id, "still here").await.unwrap();
    let (s, v) = moderator
        .request_raw(
            Method::GET,
            &format!("/api/v1/room-permissions/{room}?userId={ben_id}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(
        v["roomPermissions"]["permissions"]["canSendMessagesInDiscussion"],
        json!(false)
    );
    assert_eq!(
        v["roomPermissions"]["userSettings"]["deniedByModerator"],
        json!(["canSendMessagesInDiscussion"])
    );
    let (s, _) = ann
        .request_raw(
            Method::GET,
            &format!("/api/v1/room-permissions/{room}?userId={ben_id}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 403, "members see only their own flags");

    // The moderator lifts the room restriction: back to what the administrator allows.
    let (s, _) = put_room_permissions(
        &mut moderator,
        room,
        json!({"permissions": {"canSendMessagesInMainThread": null}}),
    )
    .await;
    assert_eq!(s, 200);
    let ann_msg = ann.send_text(room, "ann's topic").await.unwrap();

    // Editing and deleting one's own messages.
    put_room_permissions(
        &mut moderator,
        room,
        json!({"permissions": {"canEditOrDeleteOwnMessagesInMainThread": false}}),
    )
    .await;
    assert_eq!(
        status_of(ann.edit(ann_msg.message_id, "changed").await),
        403
    );
    assert_eq!(status_of(ann.delete_message(ann_msg.message_id).await), 403);

    // Files: attaching to one's own message, and sending files at all.
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(dir.path(), "a.txt", b"file");
    let att = ann
        .upload(ann_msg.message_id, std::slice::from_ref(&f), false)
        .await
        .unwrap()[0]
        .attachment_id;
    put_room_permissions(
        &mut moderator,
        room,
        json!({"permissions": {"canAttachOrDeleteFilesInOwnMessagesInMainThread": false}}),
    )
    .await;
    assert_eq!(status_of(ann.delete_attachment(att).await), 403);
    assert_eq!(
        status_of(
            ann.upload(ann_msg.message_id, std::slice::from_ref(&f), false)
                .await
        ),
        403
    );
    put_room_permissions(
        &mut moderator,
        room,
        json!({"permissions": {"canAttachOrDeleteFilesInOwnMessagesInMainThread": null,
                               "canSendFilesIntoRoomInMainThread": false}}),
    )
    .await;
    assert_eq!(
        status_of(
            ann.upload(ann_msg.message_id, std::slice::from_ref(&f), false)
                .await
        ),
        403
    );
    ann.delete_attachment(att)
        .await
        .expect("deleting is still allowed");
    moderator
        .delete_message(ann_msg.message_id)
        .await
        .expect("moderators delete");

    // Issues: creating them, and changing the properties of someone else's.
    let issue = json!({"content": "broken build", "messageType": "Issue"});
    let (s, v) = post_status(
        &mut ann,
        &format!("/api/v1/rooms/{room}/messages"),
        issue.clone(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let issue_id = v["messageId"].as_u64().unwrap();
    let props = json!({"content": "broken build", "messageType": "Issue", "issueProperties": {"type": "Bug", "status": "InProgress", "assignees": [ben_id]}});
    let path = format!("/api/v1/messages/{issue_id}");
    let (s, v) = ben
        .request_raw(Method::PUT, &path, Some(props.to_string().into_bytes()))
        .await
        .unwrap();
    assert_eq!(s, 200, "another member moves the issue along: {v}");
    let (s, _) = ben
        .request_raw(
            Method::PUT,
            &path,
            Some(json!({"content": "rewritten"}).to_string().into_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(s, 403, "but cannot rewrite its text");
    put_room_permissions(
        &mut moderator,
        room,
        json!({"permissions": {"canChangePropertiesOfUnrelatedIssues": false, "canCreateIssues": false}}),
    )
    .await;
    let (s, _) = ben
        .request_raw(Method::PUT, &path, Some(props.to_string().into_bytes()))
        .await
        .unwrap();
    assert_eq!(s, 403);
    let (s, _) = post_status(&mut ann, &format!("/api/v1/rooms/{room}/messages"), issue).await;
    assert_eq!(s, 403);

    // Bad requests.
    let (s, v) = put_room_permissions(
        &mut moderator,
        room,
        json!({"permissions": {"canFly": false}}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(v["errorText"].as_str().unwrap().contains("canFly"));
    let (s, _) = put_room_permissions(
        &mut moderator,
        room,
        json!({"permissions": {"canSendNudge": "no"}}),
    )
    .await;
    assert_eq!(s, 400);

    // Everything survives a restart.
    let mut server = server;
    server.stop();
    let server = TestServer::start_in(&server.dir.clone(), &[]);
    let mut ann = server.login("ann", "ann-password-123").await;
    let p = ann.permissions(room).await.unwrap();
    assert!(!p.can_send_files_into_room_in_main_thread);
    assert!(!p.can_create_issues);
    assert!(p.can_react_to_messages_with_emoji_in_main_thread);
    assert!(
        !ann.permissions(other)
            .await
            .unwrap()
            .can_react_to_messages_with_emoji_in_main_thread
    );
}

#[actix_rt::test]
async fn room_options_join_link_auto_add_and_moderators() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (_, mut moderator) = server.user(&mut admin, "mod").await;
    let (ann_id, mut ann) = server.user(&mut admin, "ann").await;
    let room = moderator.create_room("Open", &[]).await.unwrap();
    let first = moderator
        .send_text(room, "history from before")
        .await
        .unwrap();

    // Join by link: off by default; on gives a code only moderators see.
    let (s, _) = post_status(&mut ann, "/api/v1/rooms/join", json!({"joinCode": "nope"})).await;
    assert_eq!(s, 404);
    let r = moderator
        .update_room(room, json!({"joinByLink": true}))
        .await
        .unwrap();
    let code = r.join_code.clone().expect("moderators see the code");
    let mut ann_events = ann.events().await.unwrap();
    let (s, v) = post_status(&mut ann, "/api/v1/rooms/join", json!({"joinCode": code})).await;
    assert_eq!(s, 200, "{v}");
    expect_event(&mut ann_events, "RoomCreated").await;
    let history = ann.history(room, None, None, None).await.unwrap();
    assert_eq!(history[0].message_id, first.message_id, "the whole history");
    assert!(ann
        .rooms()
        .await
        .unwrap()
        .iter()
        .all(|r| r.join_code.is_none()));

    // Renewing the link retires the old code.
    let renewed = moderator
        .update_room(room, json!({"renewJoinLink": true}))
        .await
        .unwrap();
    assert_ne!(renewed.join_code, Some(code.clone()));
    let (_, mut ben) = server.user(&mut admin, "ben").await;
    let (s, _) = post_status(&mut ben, "/api/v1/rooms/join", json!({"joinCode": code})).await;
    assert_eq!(s, 404);
    moderator
        .update_room(room, json!({"joinByLink": false}))
        .await
        .unwrap();
    let (s, _) = post_status(
        &mut ben,
        "/api/v1/rooms/join",
        json!({"joinCode": renewed.join_code}),
    )
    .await;
    assert_eq!(s, 404);

    // Auto-add: administrators only; new users land in the room.
    let (s, _) = moderator
        .request_raw(
            Method::PATCH,
            &format!("/api/v1/rooms/{room}"),
            Some(br#"{"autoAddNewUsers":true}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(s, 403);
    admin
        .update_room(room, json!({"autoAddNewUsers": true}))
        .await
        .unwrap();
    let (_, mut cat) = server.user(&mut admin, "cat").await;
    assert!(cat.rooms().await.unwrap().iter().any(|r| r.room_id == room));
    assert!(
        ben.rooms().await.unwrap().iter().all(|r| r.room_id != room),
        "only new users"
    );
    // Turned off again, the room leaves the index new users are added from.
    admin
        .update_room(room, json!({"autoAddNewUsers": false}))
        .await
        .unwrap();
    let (_, mut dan) = server.user(&mut admin, "dan").await;
    assert!(dan.rooms().await.unwrap().iter().all(|r| r.room_id != room));
    admin
        .update_room(room, json!({"autoAddNewUsers": true}))
        .await
        .unwrap();

    // Moderators: appoint, and the last one cannot step down.
    assert_eq!(status_of(ann.set_moderator(room, ann_id, true).await), 403);
    moderator.set_moderator(room, ann_id, true).await.unwrap();
    // Earlier RoomUpdated events (room options) may come first.
    loop {
        let ev = expect_event(&mut ann_events, "RoomUpdated").await;
        if ev.data["room"]["isModerator"] == json!(true) {
            break;
        }
    }
    let cat_id = cat.status().await.unwrap()["userId"].as_u64().unwrap();
    ann.remove_member(room, cat_id)
        .await
        .expect("a new moderator moderates");
    let mod_id = moderator.status().await.unwrap()["userId"]
        .as_u64()
        .unwrap();
    ann.set_moderator(room, mod_id, false).await.unwrap();
    let err = ann.set_moderator(room, ann_id, false).await.unwrap_err();
    assert_eq!(err.status(), Some(409), "the last moderator stays: {err}");
}

#[actix_rt::test]
async fn thumbnails_for_images_and_deleted_content_is_erased() {
    let mut server = TestServer::start();
    let mut admin = server.admin().await;
    let (ann_id, mut ann) = server.user(&mut admin, "ann").await;
    let room = admin.create_room("Files", &[ann_id]).await.unwrap();
    let msg = ann.send_text(room, "pictures").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pic = write_file(dir.path(), "wide.png", &png(1200, 300));
    let broken = write_file(dir.path(), "broken.png", b"\x89PNG\r\n\x1a\nnot really");
    let text = write_file(dir.path(), "read.me", b"plain");
    let up = ann
        .upload(msg.message_id, &[pic, broken, text], true)
        .await
        .unwrap();
    assert_eq!(
        up.iter().map(|a| a.has_thumbnail).collect::<Vec<_>>(),
        vec![true, false, false],
        "a thumbnail for the real image only; a broken image is stored without one"
    );
    let (s, bytes) = ann
        .request_bytes(
            Method::GET,
            &format!("/api/v1/thumbnails/{}", up[0].attachment_id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    let thumb = image::load_from_memory(&bytes).expect("a decodable thumbnail");
    assert_eq!(
        (thumb.width(), thumb.height()),
        (256, 64),
        "fits 256×256, keeps the aspect"
    );
    let (s, _) = ann
        .request_bytes(
            Method::GET,
            &format!("/api/v1/thumbnails/{}", up[2].attachment_id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 404);

    // Delete: the message becomes a tombstone (410 for members), files and thumbnails go.
    let secret = "ERASE-ME-7f3a9c-the-launch-code-is-1234";
    let doomed = ann.send_text(room, secret).await.unwrap();
    let f = write_file(dir.path(), "secret.txt", b"SECRET-FILE-CONTENT-b81d");
    ann.upload(doomed.message_id, &[f], true).await.unwrap();
    let files_before = count_files(&server.dir.join("attachments"));
    ann.delete_message(doomed.message_id).await.unwrap();
    ann.delete_message(msg.message_id).await.unwrap();
    assert_eq!(status_of(ann.delete_message(doomed.message_id).await), 410);
    let (s, v) = ann
        .request_raw(
            Method::GET,
            &format!("/api/v1/messages/{}", doomed.message_id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (s, v["errorText"].clone()),
        (
            410,
            json!(format!("Message {} was deleted", doomed.message_id))
        )
    );
    let (_, mut stranger) = server.user(&mut admin, "stranger").await;
    let (s, _) = stranger
        .request_raw(
            Method::GET,
            &format!("/api/v1/messages/{}", doomed.message_id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 404, "strangers learn nothing");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let files_after = count_files(&server.dir.join("attachments"));
    assert!(
        files_after + 3 <= files_before,
        "content and thumbnail files erased: {files_before} → {files_after}"
    );
    assert!(!contains_bytes(
        &server.dir.join("attachments"),
        b"SECRET-FILE-CONTENT-b81d"
    ));

    // The database keeps old versions in its log until compaction rewrites it.
    let keep = ann.send_text(room, "keep this").await.unwrap();
    server.stop();
    let line = run_compact(&server.dir);
    assert!(line.contains("bytes after"), "{line}");
    assert!(
        !contains_bytes_decoded(&server.dir, secret.as_bytes()),
        "no trace of the deleted text on disk"
    );
    let server = TestServer::start_in(&server.dir.clone(), &[]);
    let mut ann = server.login("ann", "ann-password-123").await;
    let history = ann.history(room, None, None, None).await.unwrap();
    assert_eq!(
        history.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        vec![keep.message_id]
    );
    assert_eq!(status_of(ann.delete_message(doomed.message_id).await), 410);
}

fn count_files(dir: &std::path::Path) -> usize {
    files_under(dir).len()
}

fn contains_bytes(dir: &std::path::Path, needle: &[u8]) -> bool {
    files_under(dir).iter().any(|p| {
        std::fs::read(p)
            .map(|b| b.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}
