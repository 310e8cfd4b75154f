//! A small team's worth of data, made the same way by every test that needs one (and by
//! the old releases that wrote the upgrade fixtures): users, a room, messages, a comment,
//! read state, a pin, a permission, two attachments.

use confab::client::Client;

use super::{png, TestServer};

pub struct Team {
    pub room: u64,
    pub text_file: (u64, String, Vec<u8>),
    pub picture: (u64, Vec<u8>),
    pub bob_password: String,
}

/// Users, a group room with messages, a comment, read state, a room permission, a pinned
/// room, and two attachments (one an image, so it has a thumbnail).
pub async fn make_team(server: &TestServer, admin: &mut Client) -> Team {
    let (alice, mut alice_c) = server.user(admin, "alice").await;
    let (bob, _) = server.user(admin, "bob").await;
    let room = admin.create_room("Backups", &[alice, bob]).await.unwrap();
    let first = admin.send_text(room, "the first message").await.unwrap();
    alice_c
        .comment(first.message_id, "a comment on it")
        .await
        .unwrap();
    alice_c.mark_read(first.message_id).await.unwrap();
    alice_c.pin(room, true).await.unwrap();
    admin
        .set_room_permissions(
            room,
            Some(bob),
            serde_json::json!({ "canCreateIssues": false }),
        )
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let text: Vec<u8> = "quarterly numbers, line after line\n"
        .repeat(9000)
        .into_bytes();
    let doc = files.path().join("numbers.txt");
    std::fs::write(&doc, &text).unwrap();
    let pic = files.path().join("photo.png");
    let picture = png(320, 200);
    std::fs::write(&pic, &picture).unwrap();
    let with_files = alice_c.send_text(room, "two files").await.unwrap();
    let up = alice_c
        .upload(with_files.message_id, &[doc, pic], true)
        .await
        .unwrap();
    Team {
        room,
        text_file: (up[0].attachment_id, "numbers.txt".into(), text),
        picture: (up[1].attachment_id, picture),
        bob_password: "bob-password-123".into(),
    }
}

pub async fn download(c: &mut Client, id: u64, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (status, _, _) = c.download(id, name, None, &mut out).await.unwrap();
    assert_eq!(status, 200);
    out
}

/// The texts of a room's messages, oldest first.
pub async fn texts(c: &mut Client, room: u64) -> Vec<String> {
    c.history(room, None, Some(1000), None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect()
}
