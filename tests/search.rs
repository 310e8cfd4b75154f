//! Full-text search through the real binary: membership decided at query time (removed,
//! then re-added), edits and deletes leaving the index, stems and diacritics, phrases and
//! prefixes, file names, filters; a `kill -9` while indexing, a damaged index rebuilt at
//! start while chat goes on, `admin reindex`; an encrypted folder's index kept off disk.

mod util;

use std::time::{Duration, Instant};

use awc::http::Method;
use confab::client::{Client, SearchParams};
use serde_json::{json, Value};
use util::*;

fn q(text: &str) -> SearchParams {
    SearchParams {
        q: text.into(),
        ..SearchParams::default()
    }
}

fn ids(answer: &Value) -> Vec<u64> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["messageId"].as_u64().unwrap())
        .collect()
}

/// Searches until `check` holds (the index lags by up to a second), or panics after `secs`.
async fn until(
    c: &mut Client,
    p: &SearchParams,
    secs: u64,
    check: impl Fn(&[u64]) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let answer = c.search(p).await.expect("search");
        if check(&ids(&answer)) {
            return answer;
        }
        if Instant::now() > deadline {
            panic!("search {:?} never satisfied the check: {answer}", p.q);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn raw_search(c: &mut Client, query: &str) -> (u16, Value) {
    c.request_raw(Method::GET, &format!("/api/v1/search?{query}"), None)
        .await
        .unwrap()
}

#[actix_rt::test]
async fn search_follows_membership_edits_and_deletes_with_stems_diacritics_and_filters() {
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let (alice, mut a) = server.user(&mut admin, "alice").await;
    let (bob, mut b) = server.user(&mut admin, "bob").await;
    let projects = admin.create_room("Projects", &[alice, bob]).await.unwrap();
    let secret = a.create_room("Secret", &[]).await.unwrap();

    let posted = Instant::now();
    let deploy = post_json(
        &mut a,
        projects,
        json!({ "content": "Deploying the résumé parser tomorrow" }),
    )
    .await;
    let comment = post_json(
        &mut a,
        projects,
        json!({ "content": "the deployment went fine", "parentMessageId": deploy }),
    )
    .await;
    let lunch = post_json(
        &mut b,
        projects,
        json!({ "content": "lunch at noon, naïve café" }),
    )
    .await;
    let hidden = post_json(&mut a, secret, json!({ "content": "salary résumé review" })).await;
    let issue = post_json(
        &mut a,
        projects,
        json!({ "content": "Fix the login crash", "messageType": "Issue",
                "issueProperties": { "type": "Bug", "status": "ToDo", "assignees": [bob] } }),
    )
    .await;
    let with_file = post_json(&mut a, projects, json!({ "content": "see attached" })).await;
    let files = tempfile::tempdir().unwrap();
    let sheet = files.path().join("budget-2027.xlsx");
    std::fs::write(&sheet, b"numbers").unwrap();
    a.upload(with_file, &[sheet], false).await.unwrap();

    // Found within about a second of the post's acknowledgement.
    let found = until(&mut b, &q("resume"), 5, |ids| ids.contains(&deploy)).await;
    let lag = posted.elapsed();
    assert!(lag < Duration::from_secs(3), "indexed after {lag:?}");
    assert!(
        !ids(&found).contains(&hidden),
        "a room bob is not in leaked: {found}"
    );
    // The snippet highlights the word as written (UTF-16 ranges).
    let hit = &found["results"][0];
    let snippet: Vec<u16> = hit["snippet"].as_str().unwrap().encode_utf16().collect();
    let h = &hit["highlights"][0];
    let marked = String::from_utf16(
        &snippet[h[0].as_u64().unwrap() as usize..h[1].as_u64().unwrap() as usize],
    )
    .unwrap();
    assert_eq!(marked, "résumé", "{hit}");
    assert_eq!(hit["roomId"], json!(projects));
    assert_eq!(hit["authorId"], json!(alice));
    // Alice sees both rooms' résumés.
    let both = until(&mut a, &q("résumé"), 5, |ids| ids.contains(&hidden)).await;
    assert!(ids(&both).contains(&deploy));

    // English stems: "deploy" finds "Deploying" and the comment's "deployment".
    let stems = until(&mut b, &q("deploy"), 5, |ids| ids.contains(&comment)).await;
    assert!(ids(&stems).contains(&deploy), "{stems}");
    let c = stems["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["messageId"] == json!(comment))
        .unwrap();
    assert_eq!(c["parentMessageId"], json!(deploy));
    // Diacritics both ways, a phrase, a prefix, a file name, an exclusion.
    assert_eq!(ids(&b.search(&q("naive cafe")).await.unwrap()), vec![lunch]);
    assert_eq!(
        ids(&b.search(&q("\"résumé parser\"")).await.unwrap()),
        vec![deploy]
    );
    assert!(ids(&b.search(&q("\"parser résumé\"")).await.unwrap()).is_empty());
    let budget = until(&mut b, &q("budg*"), 5, |ids| ids.contains(&with_file)).await;
    assert_eq!(ids(&budget), vec![with_file]);
    assert_eq!(ids(&b.search(&q("xlsx")).await.unwrap()), vec![with_file]);
    assert_eq!(
        ids(&b.search(&q("deploy -fine")).await.unwrap()),
        vec![deploy]
    );
    // Filters: type, author, room, attachment, dates, newest first.
    let issues = b
        .search(&SearchParams {
            message_type: Some("Issue".into()),
            ..q("crash")
        })
        .await
        .unwrap();
    assert_eq!(ids(&issues), vec![issue]);
    let by_bob = b
        .search(&SearchParams {
            author_id: Some(bob),
            ..q("")
        })
        .await
        .unwrap();
    assert_eq!(ids(&by_bob), vec![lunch]);
    let with_files = b
        .search(&SearchParams {
            has_attachment: Some(true),
            room_id: Some(projects),
            ..q("")
        })
        .await
        .unwrap();
    assert_eq!(ids(&with_files), vec![with_file]);
    let newest = b
        .search(&SearchParams {
            newest_first: true,
            room_id: Some(projects),
            ..q("")
        })
        .await
        .unwrap();
    assert_eq!(ids(&newest), vec![with_file, issue, lunch, comment, deploy]);
    let future = now_ms_plus(3_600_000);
    let none_later = b
        .search(&SearchParams {
            from: Some(future),
            ..q("deploy")
        })
        .await
        .unwrap();
    assert!(ids(&none_later).is_empty());
    assert_eq!(
        status_of(
            b.search(&SearchParams {
                room_id: Some(secret),
                ..q("x")
            })
            .await
        ),
        403
    );

    // Bad input: a clear 400 each.
    for (query, says) in [
        ("q=", "q (the text"),
        ("q=a&sort=loudest", "sort must be"),
        ("q=a&limit=0", "limit must be"),
        ("q=a&limit=1000", "limit must be"),
        ("q=a&colour=red", "unknown field"),
        ("q=a&type=Poem", "Invalid query"),
        ("q=a&roomId=abc", "Invalid query"),
    ] {
        let (status, v) = raw_search(&mut b, query).await;
        assert_eq!(status, 400, "{query}: {v}");
        assert!(
            v["errorText"].as_str().unwrap().contains(says),
            "{query}: {v}"
        );
    }
    let (status, v) = raw_search(&mut b, &format!("q={}", "x".repeat(600))).await;
    assert_eq!(status, 400, "{v}");
    let mut stranger = server.client();
    assert_eq!(status_of(stranger.search(&q("resume")).await), 401);

    // Removed from the room: nothing of it. Re-added: all of it again.
    admin.remove_member(projects, bob).await.unwrap();
    assert!(ids(&b.search(&q("resume")).await.unwrap()).is_empty());
    assert!(ids(&b.search(&q("deploy")).await.unwrap()).is_empty());
    admin.add_member(projects, bob).await.unwrap();
    let back = b.search(&q("deploy")).await.unwrap();
    assert_eq!(ids(&back).len(), 2, "{back}");

    // An edit leaves the old words behind; a delete leaves nothing.
    a.edit(deploy, "Shipping the CV parser tomorrow")
        .await
        .unwrap();
    until(&mut b, &q("resume"), 5, |ids| ids.is_empty()).await;
    until(&mut b, &q("shipping"), 5, |ids| ids == [deploy]).await;
    a.delete_message(comment).await.unwrap();
    // Never shown once deleted (the answer is checked against history), and gone from the index.
    assert!(!ids(&b.search(&q("deployment")).await.unwrap()).contains(&comment));
    wait_total(&mut b, "fine", 0, 5).await;

    // The command line.
    let text = run_cli(
        &server,
        "bob",
        files.path(),
        &[
            "search", "shipping", "--room", "Projects", "--from", "alice",
        ],
    );
    assert!(
        text.contains(&format!(
            "{deploy}\troom {projects}\tuser {alice}\t[Shipping] the CV parser"
        )),
        "{text}"
    );
}

fn now_ms_plus(ms: u64) -> u64 {
    confab::now_ms() + ms
}

/// `confab-server --storage-dir DIR [extra] admin reindex`: success, and what it said.
fn reindex(dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(SERVER_BIN)
        .arg("--storage-dir")
        .arg(dir)
        .args(extra)
        .args(["admin", "reindex"])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

/// Posts `n` messages saying `word` and a number; their ids.
async fn post_many(c: &mut Client, room: u64, word: &str, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(post_json(c, room, json!({ "content": format!("{word} number {i}") })).await);
    }
    out
}

async fn total(c: &mut Client, word: &str) -> u64 {
    c.search(&q(word)).await.unwrap()["total"].as_u64().unwrap()
}

async fn wait_total(c: &mut Client, word: &str, want: u64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = total(c, word).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{word}: {got} of {want} found after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_rt::test]
async fn the_index_survives_kill9_and_is_rebuilt_when_damaged_missing_or_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.admin().await;
    let room = admin.create_room("Busy", &[]).await.unwrap();
    post_many(&mut admin, room, "before", 50).await;
    wait_total(&mut admin, "before", 50, 10).await;
    // Killed while indexing: the last posts are acknowledged, maybe not yet indexed.
    post_many(&mut admin, room, "crashing", 300).await;
    server.kill9();
    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.admin().await;
    wait_total(&mut admin, "crashing", 300, 10).await;
    assert_eq!(total(&mut admin, "before").await, 50);
    assert!(
        !server.log_text().contains("rebuilding"),
        "a clean catch-up, not a rebuild:\n{}",
        server.log_text()
    );
    server.stop();

    // A damaged index: rebuilt at start, and chat works while it is.
    std::fs::write(dir.join("search/meta.json"), b"{ this is not an index").unwrap();
    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.admin().await;
    let during = post_json(&mut admin, room, json!({ "content": "during the rebuild" })).await;
    assert!(admin.history(room, None, Some(1), None).await.is_ok());
    wait_total(&mut admin, "crashing", 300, 20).await;
    wait_total(&mut admin, "rebuild", 1, 10).await;
    assert!(
        server.log_text().contains("cannot be used"),
        "{}",
        server.log_text()
    );
    let answer = admin.search(&q("during")).await.unwrap();
    assert_eq!(ids(&answer), vec![during]);
    assert_eq!(answer["complete"], json!(true));
    server.stop();

    // A missing index: the same.
    std::fs::remove_dir_all(dir.join("search")).unwrap();
    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.admin().await;
    wait_total(&mut admin, "before", 50, 20).await;
    server.stop();

    // Offline: admin reindex builds it anew; the server then starts with it whole.
    let (ok, said) = reindex(&dir, &[]);
    assert!(ok, "{said}");
    assert!(said.contains("rebuilt: 351 messages"), "{said}");
    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.admin().await;
    let answer = admin.search(&q("crashing")).await.unwrap();
    assert_eq!(answer["total"], json!(300));
    assert_eq!(answer["complete"], json!(true));
    assert!(
        !server.log_text().contains("rebuilding"),
        "{}",
        server.log_text()
    );
    // Reindexing a running server's folder is refused (the folder is locked).
    let (ok, said) = reindex(&dir, &[]);
    assert!(!ok && said.contains("confab.lock"), "{said}");
    server.stop();
}

#[actix_rt::test]
async fn an_encrypted_folder_keeps_its_index_in_memory_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let key = tmp.path().join("key");
    std::fs::write(&key, "correct horse battery staple\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let key_arg = key.to_str().unwrap();
    let mut server = TestServer::start_in(&dir, &["--encryption-key-file", key_arg]);
    let mut admin = server.admin().await;
    let room = admin.create_room("Vault", &[]).await.unwrap();
    let id = post_json(
        &mut admin,
        room,
        json!({ "content": "the zanzibarquux merger" }),
    )
    .await;
    until(&mut admin, &q("zanzibarquux"), 5, |ids| ids == [id]).await;
    server.stop();
    assert!(!dir.join("search").exists());
    assert!(
        !contains_bytes_decoded(&dir, b"zanzibarquux"),
        "the word is on disk in clear"
    );
    // An index left from before the folder was encrypted is removed at start.
    std::fs::create_dir_all(dir.join("search")).unwrap();
    std::fs::write(dir.join("search/meta.json"), b"zanzibarquux").unwrap();
    // Built again at the next start.
    let mut server = TestServer::start_in(&dir, &["--encryption-key-file", key_arg]);
    let mut admin = server.admin().await;
    until(&mut admin, &q("zanzibarquux"), 10, |ids| ids == [id]).await;
    server.stop();
    assert!(!dir.join("search").exists());
    let (ok, said) = reindex(&dir, &["--encryption-key-file", key_arg]);
    assert!(ok && said.contains("in memory only"), "{said}");
}
