//! The storage folder on disk, tried through the real binary: records are stored
//! compressed, a folder made before compression is converted once at open with nothing
//! lost, and `admin compact` erases deleted text without growing the folder.

mod util;

use std::path::Path;

use confab::client::Client;
use util::*;

/// What sled's `conf` file says about compression (sled fixes it when a database is made).
fn compression_of(dir: &Path) -> bool {
    let conf = std::fs::read(dir.join("db/conf")).expect("the database's conf file");
    let text = String::from_utf8_lossy(&conf);
    match text
        .lines()
        .find_map(|l| l.strip_prefix("use_compression:"))
    {
        Some(v) => v.trim() == "true",
        None => panic!("no use_compression line in {text:?}"),
    }
}

/// Rewrites a stopped server's database uncompressed, as builds before compression made
/// them: same trees, same records, sled's plain log.
fn rewrite_uncompressed(dir: &Path) {
    let db_path = dir.join("db");
    let plain_path = dir.join("db.plain");
    {
        let db = sled::Config::new()
            .path(&db_path)
            .use_compression(true)
            .open()
            .expect("open the stopped server's database");
        let plain = sled::Config::new()
            .path(&plain_path)
            .use_compression(false)
            .open()
            .expect("a plain database");
        plain.import(db.export());
        plain.flush().unwrap();
    }
    std::fs::remove_dir_all(&db_path).unwrap();
    std::fs::rename(&plain_path, &db_path).unwrap();
}

fn folder_bytes(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// The two sizes of "compacted …: B bytes before, A bytes after".
fn sizes(output: &str) -> (u64, u64) {
    // The database's line (a second one may say what left the search index).
    let line = output.lines().next().unwrap_or_default();
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [.., before, after] => (before, after),
        _ => panic!("no sizes in {line:?}"),
    }
}

/// Searches for `q` until the message ids found satisfy `check` (the index follows history
/// within about a second); panics after 10 s.
async fn search_until(c: &mut Client, q: &str, check: impl Fn(&[u64]) -> bool) {
    let p = confab::client::SearchParams {
        q: q.into(),
        ..Default::default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = c.search(&p).await.expect("search");
        let ids: Vec<u64> = answer["results"]
            .as_array()
            .map(|r| r.iter().filter_map(|m| m["messageId"].as_u64()).collect())
            .unwrap_or_default();
        if check(&ids) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "search {q:?} never satisfied the check: {answer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn texts(c: &mut Client, room: u64) -> Vec<(u64, String)> {
    c.history(room, None, None, None)
        .await
        .expect("history")
        .into_iter()
        .map(|m| (m.message_id, m.text))
        .collect()
}

#[actix_rt::test]
async fn a_folder_made_before_compression_is_converted_once_with_nothing_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let password = server.admin_password();
    let mut admin = server.admin().await;
    let (bob_id, _) = server.user(&mut admin, "bob").await;
    let room = admin.create_room("Old times", &[bob_id]).await.unwrap();
    for i in 0..400 {
        admin
            .send_text(room, &format!("message {i} from before"))
            .await
            .unwrap();
    }
    let doomed = admin.send_text(room, "deleted before").await.unwrap();
    admin.delete_message(doomed.message_id).await.unwrap();
    let expected = texts(&mut admin, room).await;
    server.stop();

    rewrite_uncompressed(&dir);
    assert!(!compression_of(&dir), "the folder is in the old format");

    let mut server = TestServer::start_in(&dir, &[]);
    assert!(
        server.log_text().contains("database compressed"),
        "the conversion is logged:\n{}",
        server.log_text()
    );
    assert!(compression_of(&dir), "converted at open");
    let mut admin = server.login("admin", &password).await;
    assert_eq!(
        texts(&mut admin, room).await,
        expected,
        "every message kept"
    );
    assert_eq!(
        status_of(admin.delete_message(doomed.message_id).await),
        410,
        "the deletion kept too"
    );
    let next = admin.send_text(room, "after").await.unwrap();
    assert!(next.message_id > doomed.message_id, "ids go on");
    server.stop();
    assert!(!dir.join("db.old").exists() && !dir.join("db.compact").exists());
    let (sound, report) = run_check(&dir);
    assert!(sound, "{report}");

    // Once only: the next start finds it compressed.
    let server = TestServer::start_in(&dir, &[]);
    assert!(!server.log_text().contains("compressing"));
}

#[actix_rt::test]
async fn compaction_erases_deleted_text_and_never_grows_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let password = server.admin_password();
    let mut admin = server.admin().await;
    let room = admin.create_room("Erasure", &[]).await.unwrap();
    for i in 0..2000 {
        admin
            .send_text(room, &format!("ordinary message number {i}"))
            .await
            .unwrap();
    }
    let secret = "ERASE-ME-disk-5e1f0c-the-vault-code-is-8642";
    let doomed = admin.send_text(room, secret).await.unwrap();
    // Indexed for search before it is deleted: the index's files keep the text (marked
    // deleted, or not yet) until compaction removes the index.
    let found = |ids: &[u64]| ids.contains(&doomed.message_id);
    search_until(&mut admin, "5e1f0c", |ids| found(ids)).await;
    admin.delete_message(doomed.message_id).await.unwrap();
    search_until(&mut admin, "5e1f0c", |ids| !found(ids)).await;
    let expected = texts(&mut admin, room).await;
    server.stop();
    assert!(compression_of(&dir), "a new folder is compressed");
    assert!(
        contains_bytes_decoded(&dir, secret.as_bytes()),
        "before compaction the log still holds the deleted text (the search sees through \
         compression)"
    );

    // A folder written by the server: the copy is smaller and holds no trace.
    let first = run_compact(&dir);
    let (before, after) = sizes(&first);
    assert!(first.contains("bytes after"), "{first}");
    assert!(first.contains("the search index was removed"), "{first}");
    assert!(after < before, "{first}");
    assert!(!contains_bytes_decoded(&dir, secret.as_bytes()));

    assert_eq!(folder_bytes(&dir.join("db")), after, "{first}");

    // Untouched since: left alone, not even opened.
    for _ in 0..2 {
        let again = run_compact(&dir);
        assert!(again.contains("already compact"), "{again}");
        assert_eq!(folder_bytes(&dir.join("db")), after, "{again}");
    }

    // Opened by the server (which always writes to sled's log), then compacted, and
    // again with a message posted and deleted: the folder never ends larger than it was.
    for round in 0..3 {
        let mut server = TestServer::start_in(&dir, &[]);
        if round > 0 {
            let mut admin = server.login("admin", &password).await;
            let m = admin.send_text(room, "posted and deleted").await.unwrap();
            admin.delete_message(m.message_id).await.unwrap();
        }
        server.stop();
        let size = folder_bytes(&dir.join("db"));
        let line = run_compact(&dir);
        let now = folder_bytes(&dir.join("db"));
        assert!(
            now <= size,
            "round {round}: grew from {size} to {now}: {line}"
        );
        assert_eq!(sizes(&line), (size, now), "{line}");
    }

    // Everything live is still there.
    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.login("admin", &password).await;
    assert_eq!(texts(&mut admin, room).await, expected);
    assert_eq!(
        status_of(admin.delete_message(doomed.message_id).await),
        410
    );
    server.stop();
    let (sound, report) = run_check(&dir);
    assert!(sound, "{report}");
}

/// Writes a key file (0600) holding `text`.
fn key_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `confab-server --storage-dir DIR [--encryption-key-file K] ARGS…`: success and output.
fn run_server_command(dir: &Path, key: Option<&Path>, args: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new(server_bin());
    cmd.arg("--storage-dir").arg(dir);
    if let Some(k) = key {
        cmd.arg("--encryption-key-file").arg(k);
    }
    let out = cmd.args(args).output().expect("run confab-server");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Starts the server on `dir` with `key` (or no key file), expecting a refusal; its stderr.
fn refused_start(dir: &Path, key: Option<&Path>) -> String {
    let mut args = vec![
        "--listen".to_string(),
        "127.0.0.1:0".into(),
        "--storage-dir".into(),
        dir.to_string_lossy().into(),
    ];
    if let Some(k) = key {
        args.push("--encryption-key-file".into());
        args.push(k.to_string_lossy().into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let failed = TestServer::start_expect_failure(&args, None);
    assert!(!failed.status.success(), "{args:?} should fail");
    failed.stderr
}

/// Whether the storage folder shows any of `needles` (through sled's compression too);
/// the ones it shows.
fn visible(dir: &Path, needles: &[&[u8]]) -> Vec<String> {
    needles
        .iter()
        .filter(|n| contains_bytes_decoded(dir, n))
        .map(|n| String::from_utf8_lossy(n).to_string())
        .collect()
}

async fn thumbnail(c: &mut Client, id: u64) -> (u16, Vec<u8>) {
    let (status, bytes) = c
        .request_bytes(
            awc::http::Method::GET,
            &format!("/api/v1/thumbnails/{id}"),
            None,
        )
        .await
        .expect("thumbnail");
    (status, bytes.to_vec())
}

async fn download_all(c: &mut Client, id: u64, name: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let mut out = Vec::new();
    let (status, _, _) = c
        .download(id, name, range, &mut out)
        .await
        .expect("download");
    (status, out)
}

#[actix_rt::test]
async fn an_encrypted_folder_shows_no_text_names_or_files_and_opens_only_with_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let key = key_file(
        tmp.path(),
        "storage.key",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n",
    );
    let key_arg = key.to_str().unwrap();
    let mut server = TestServer::start_in(&dir, &["--encryption-key-file", key_arg]);
    assert!(
        server.log_text().contains("encrypted at rest"),
        "{}",
        server.log_text()
    );
    let password = server.admin_password();
    let mut admin = server.admin().await;

    let secret_text = "SEALED-text-4b1d-the-merger-closes-friday";
    let comment_text = "SEALED-comment-77aa-budget-is-3.2M";
    let room_name = "SEALED-room-Nightingale-c0de";
    let user_name = "sealed-user-zebra-91f";
    let file_marker = "SEALED-file-content-e5e5-quarterly-numbers ";
    let file_name = "SEALED-filename-payroll-2026.txt";
    let (user_id, _) = admin
        .create_user(user_name, Some("a-long-password-1"), false)
        .await
        .unwrap();
    let room = admin.create_room(room_name, &[user_id]).await.unwrap();
    let message = admin.send_text(room, secret_text).await.unwrap();
    admin
        .comment(message.message_id, comment_text)
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let content: Vec<u8> = file_marker.repeat(5000).into_bytes(); // ~215 KiB: 4 chunks
    let doc = files.path().join(file_name);
    std::fs::write(&doc, &content).unwrap();
    let pic = files.path().join("photo.png");
    let picture = png(300, 200);
    std::fs::write(&pic, &picture).unwrap();
    let up = admin
        .upload(message.message_id, &[doc, pic], true)
        .await
        .unwrap();
    assert!(
        up[1].has_thumbnail,
        "images get thumbnails when encrypted too"
    );

    // Served as stored: whole, in ranges (across chunk borders), thumbnails.
    assert_eq!(
        download_all(&mut admin, up[0].attachment_id, file_name, None).await,
        (200, content.clone())
    );
    let (status, part) = download_all(
        &mut admin,
        up[0].attachment_id,
        file_name,
        Some("bytes=65000-140000"),
    )
    .await;
    assert_eq!((status, &part[..]), (206, &content[65000..=140000]));
    let (status, tail) = download_all(
        &mut admin,
        up[0].attachment_id,
        file_name,
        Some("bytes=-10"),
    )
    .await;
    assert_eq!((status, &tail[..]), (206, &content[content.len() - 10..]));
    assert_eq!(
        download_all(&mut admin, up[1].attachment_id, "photo.png", None).await,
        (200, picture.clone())
    );
    let (s, thumb) = thumbnail(&mut admin, up[1].attachment_id).await;
    assert_eq!(s, 200);
    assert!(
        image::load_from_memory(&thumb).is_ok(),
        "a decodable thumbnail"
    );
    let expected = texts(&mut admin, room).await;
    server.stop();

    // Nothing readable in the folder, even through sled's compression; not even the
    // content's SHA-256 (which would tell that a known file is stored).
    let sha256 = hex::encode(openssl::sha::sha256(&content));
    let shown = visible(
        &dir,
        &[
            secret_text.as_bytes(),
            comment_text.as_bytes(),
            room_name.as_bytes(),
            user_name.as_bytes(),
            file_marker.as_bytes(),
            file_name.as_bytes(),
            sha256.as_bytes(),
            &picture[200..260],
        ],
    );
    assert!(
        shown.is_empty(),
        "readable in the storage folder: {shown:?}"
    );
    assert!(
        !files_under(&dir)
            .iter()
            .any(|p| p.to_string_lossy().contains(&sha256)),
        "no file is named by the content's hash"
    );

    // Without the key, with another key, with a passphrase: a clear refusal, nothing
    // touched.
    let stderr = refused_start(&dir, None);
    assert!(
        stderr.contains("is encrypted") && stderr.contains("--encryption-key-file"),
        "{stderr}"
    );
    let other = key_file(
        tmp.path(),
        "other.key",
        "0000000000000000000000000000000000000000000000000000000000000001",
    );
    let phrase = key_file(tmp.path(), "phrase.key", "correct horse battery staple\n");
    for wrong in [&other, &phrase] {
        let stderr = refused_start(&dir, Some(wrong));
        assert!(
            stderr.contains("does not open the storage folder"),
            "{stderr}"
        );
    }
    let short = key_file(tmp.path(), "short.key", "hunter2\n");
    let stderr = refused_start(&dir, Some(&short));
    assert!(stderr.contains("at least 12 characters"), "{stderr}");
    let stderr = refused_start(&dir, Some(&tmp.path().join("no-such.key")));
    assert!(
        stderr.contains("cannot read the encryption key file"),
        "{stderr}"
    );

    // The offline check needs the key too, and finds the folder sound with it.
    let (ok, text) = run_server_command(&dir, None, &["check"]);
    assert!(!ok && text.contains("is encrypted"), "{text}");
    let (ok, text) = run_server_command(&dir, Some(&key), &["check"]);
    assert!(ok, "{text}");

    // With the key: everything is back, and the member can log in by name.
    let server = TestServer::start_in(&dir, &["--encryption-key-file", key_arg]);
    let mut admin = server.login("admin", &password).await;
    assert_eq!(texts(&mut admin, room).await, expected);
    assert_eq!(
        download_all(&mut admin, up[0].attachment_id, file_name, None).await,
        (200, content)
    );
    let mut member = server.login(user_name, "a-long-password-1").await;
    let rooms = member.rooms().await.unwrap();
    assert!(
        rooms.iter().any(|r| r.display_name == room_name),
        "{rooms:?}"
    );
}

#[actix_rt::test]
async fn admin_encrypt_converts_a_clear_folder_offline_with_nothing_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let password = server.admin_password();
    let mut admin = server.admin().await;
    let secret = "CONVERT-ME-text-61c3-the-safe-code-is-2718";
    let marker = "CONVERT-ME-file-bytes-9d0e ";
    let room = admin.create_room("Conversion", &[]).await.unwrap();
    for i in 0..300 {
        admin
            .send_text(room, &format!("message {i}"))
            .await
            .unwrap();
    }
    let message = admin.send_text(room, secret).await.unwrap();
    let files = tempfile::tempdir().unwrap();
    let content = marker.repeat(3000).into_bytes();
    let doc = files.path().join("ledger.txt");
    std::fs::write(&doc, &content).unwrap();
    let pic = files.path().join("chart.png");
    std::fs::write(&pic, png(400, 300)).unwrap();
    let up = admin
        .upload(message.message_id, &[doc, pic], true)
        .await
        .unwrap();
    assert!(up[1].has_thumbnail);
    let expected = texts(&mut admin, room).await;
    server.stop();
    assert_eq!(
        visible(&dir, &[secret.as_bytes(), marker.as_bytes()]).len(),
        2,
        "a clear folder shows both (the search works)"
    );

    // A key for a folder holding clear data is refused at start, naming the conversion.
    let key = key_file(
        tmp.path(),
        "passphrase",
        "a passphrase long enough to count\n",
    );
    let stderr = refused_start(&dir, Some(&key));
    assert!(stderr.contains("admin encrypt"), "{stderr}");

    let out = std::process::Command::new(server_bin())
        .arg("--storage-dir")
        .arg(&dir)
        .args(["admin", "encrypt", "--encryption-key-file"])
        .arg(&key)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{line}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        line.contains("encrypted") && line.contains("content files sealed"),
        "{line}"
    );
    let shown = visible(&dir, &[secret.as_bytes(), marker.as_bytes()]);
    assert!(
        shown.is_empty(),
        "still readable after admin encrypt: {shown:?}"
    );
    let (again, text) = run_server_command(
        &dir,
        None,
        &[
            "admin",
            "encrypt",
            "--encryption-key-file",
            key.to_str().unwrap(),
        ],
    );
    assert!(!again && text.contains("encrypted already"), "{text}");

    let (ok, text) = run_server_command(&dir, Some(&key), &["check"]);
    assert!(ok, "{text}");
    let server = TestServer::start_in(&dir, &["--encryption-key-file", key.to_str().unwrap()]);
    let mut admin = server.login("admin", &password).await;
    assert_eq!(texts(&mut admin, room).await, expected);
    assert_eq!(
        download_all(&mut admin, up[0].attachment_id, "ledger.txt", None).await,
        (200, content)
    );
    let (s, thumb) = thumbnail(&mut admin, up[1].attachment_id).await;
    assert_eq!(s, 200);
    assert!(image::load_from_memory(&thumb).is_ok());
    // New writes are sealed too.
    let fresh = "CONVERT-ME-after-the-conversion-5a5a";
    admin.send_text(room, fresh).await.unwrap();
    drop(admin);
    let mut server = server;
    server.stop();
    assert!(visible(&dir, &[fresh.as_bytes()]).is_empty());
}
