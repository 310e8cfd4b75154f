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
fn sizes(line: &str) -> (u64, u64) {
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [.., before, after] => (before, after),
        _ => panic!("no sizes in {line:?}"),
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
    admin.delete_message(doomed.message_id).await.unwrap();
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
