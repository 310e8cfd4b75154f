//! Upgrades: storage folders written by earlier Confab builds (`tests/fixtures/`, each made
//! by that build's own binary with `scripts/make-upgrade-fixture`) open in this one, are
//! migrated (after a backup of the folder as it was) and check sound; a migration killed
//! with `kill -9` completes at the next start; a folder from a newer Confab is refused,
//! naming both versions, with nothing in it changed.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::team::*;
use util::*;

/// The fixtures: (file, the schema it holds).
const FIXTURES: &[(&str, u32)] = &[
    ("schema1.tar.zst", 1),
    ("schema2.tar.zst", 2),
    ("schema3-uncompressed.tar.zst", 3),
    ("schema3.tar.zst", 3),
];

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Unpacks a fixture into `<into>/storage`.
fn unpack(name: &str, into: &Path) -> PathBuf {
    let file = std::fs::File::open(fixture_path(name)).expect("fixture");
    let mut archive = tar::Archive::new(zstd::stream::Decoder::new(file).expect("zstd"));
    archive.unpack(into).expect("unpack fixture");
    into.join("storage")
}

/// SHA-256 of every file under `dir`, by path: what "nothing changed" is checked against.
fn digest_tree(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<_> = files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, hex::encode(openssl::sha::sha256(&bytes)))
        })
        .collect();
    out.sort();
    out
}

/// Checks through the API that the team `make_team` wrote is all there.
async fn team_is_whole(server: &TestServer) {
    let mut alice = server.login("alice", "alice-password-123").await;
    let rooms = alice.rooms().await.unwrap();
    let room = rooms
        .iter()
        .find(|r| r.display_name == "Backups")
        .expect("the room survives");
    let history = alice
        .history(room.room_id, None, Some(100), None)
        .await
        .unwrap();
    let first = history
        .iter()
        .find(|m| m.text == "the first message")
        .expect("the first message");
    let comments = alice
        .comments(first.message_id, None, None, None)
        .await
        .unwrap();
    assert!(comments.iter().any(|c| c.text == "a comment on it"));
    let files = history
        .iter()
        .find(|m| m.text == "two files")
        .expect("the message with files");
    let attachments = &files.attachments;
    assert_eq!(attachments.len(), 2, "{attachments:?}");
    let text = "quarterly numbers, line after line\n"
        .repeat(9000)
        .into_bytes();
    assert_eq!(
        download(&mut alice, attachments[0].attachment_id, "numbers.txt").await,
        text
    );
    assert_eq!(
        download(&mut alice, attachments[1].attachment_id, "photo.png").await,
        png(320, 200)
    );
    // New writes go on from the old ids.
    let new = alice
        .send_text(room.room_id, "after the upgrade")
        .await
        .unwrap();
    assert!(new.message_id > files.message_id);
    let _ = server.login("bob", "bob-password-123").await;
}

#[actix_rt::test]
async fn folders_of_every_earlier_schema_open_migrate_and_check_sound() {
    for &(name, schema) in FIXTURES {
        let tmp = tempfile::tempdir().unwrap();
        let dir = unpack(name, tmp.path());
        let mut server = TestServer::start_in(&dir, &[]);
        let log = server.log_text();
        if schema < confab::storage::SCHEMA_VERSION {
            assert!(
                log.contains(&format!(
                    "upgraded from schema {schema} to {}",
                    confab::storage::SCHEMA_VERSION
                )),
                "{name}: {log}"
            );
            // The folder as it was is kept in a backup archive that restores.
            let backups: Vec<_> = std::fs::read_dir(dir.join("upgrade-backups"))
                .expect("upgrade-backups")
                .flatten()
                .map(|e| e.path())
                .collect();
            assert_eq!(backups.len(), 1, "{name}: {backups:?}");
            let back = tmp.path().join("as-it-was");
            let out = Command::new(server_bin())
                .arg("--storage-dir")
                .arg(&back)
                .args(["admin", "restore"])
                .arg(&backups[0])
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{name}: {said}");
            assert!(
                said.contains(&format!("(schema {schema})")),
                "{name}: {said}"
            );
        }
        team_is_whole(&server).await;
        assert!(server.stop().success());
        let (sound, said) = run_check(&dir);
        assert!(sound, "{name}: {said}");
        let version = std::fs::read_to_string(dir.join("confab-folder.json")).unwrap();
        assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
        // Opened again: nothing left to migrate, no second backup.
        let mut again = TestServer::start_in(&dir, &[]);
        assert!(!again.log_text().contains("upgraded from"), "{name}");
        assert!(again.stop().success());
    }
}

#[actix_rt::test]
async fn a_migration_killed_midway_completes_at_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = unpack("schema1.tar.zst", tmp.path());
    // Killed after the migration's writes, before its version is written.
    let mut server = std::process::Command::new(server_bin())
        .args(["--listen", "127.0.0.1:0", "--storage-dir"])
        .arg(&dir)
        .env("CONFAB_TEST_PAUSE_MIGRATION", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("migration paused") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the migration reached its pause");
    server.kill().unwrap();
    server.wait().unwrap();

    let mut server = TestServer::start_in(&dir, &[]);
    assert!(
        server.log_text().contains("upgraded from schema 1 to"),
        "{}",
        server.log_text()
    );
    team_is_whole(&server).await;
    assert!(server.stop().success());
    let (sound, said) = run_check(&dir);
    assert!(sound, "{said}");
}

#[actix_rt::test]
async fn a_folder_from_a_newer_confab_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = unpack("schema3.tar.zst", tmp.path());
    std::fs::write(
        dir.join("confab-folder.json"),
        r#"{ "schemaVersion": 99, "confabVersion": "9.9.9" }"#,
    )
    .unwrap();
    let before = digest_tree(&dir);
    let failed = TestServer::start_expect_failure(
        &[
            "--listen",
            "127.0.0.1:0",
            "--storage-dir",
            dir.to_str().unwrap(),
        ],
        None,
    );
    assert!(!failed.status.success());
    let text = failed.stderr;
    assert!(
        text.contains("written by Confab 9.9.9 (schema version 99)")
            && text.contains(&format!(
                "this is Confab {} (schema version {} at most)",
                env!("CARGO_PKG_VERSION"),
                confab::storage::SCHEMA_VERSION
            )),
        "{text}"
    );
    // The offline commands refuse it too.
    let (sound, said) = run_check(&dir);
    assert!(!sound && said.contains("9.9.9"), "{said}");
    assert_eq!(before, digest_tree(&dir), "the refused folder was changed");
}

/// Not a test of this build: writes a fixture with the server named by
/// `CONFAB_TEST_SERVER_BIN` (an earlier build) to `CONFAB_FIXTURE_OUT`. Run by
/// `scripts/make-upgrade-fixture`.
#[actix_rt::test]
#[ignore]
async fn make_fixture() {
    let out = std::env::var("CONFAB_FIXTURE_OUT").expect("CONFAB_FIXTURE_OUT");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.admin().await;
    make_team(&server, &mut admin).await;
    assert!(server.stop().success());
    let _ = std::fs::remove_file(dir.join("initial-admin-password"));
    let file = std::fs::File::create(&out).unwrap();
    let mut encoder = zstd::stream::Encoder::new(file, 19).unwrap();
    {
        let mut tar = tar::Builder::new(&mut encoder);
        tar.append_dir_all("storage", &dir).unwrap();
        tar.finish().unwrap();
    }
    encoder.finish().unwrap();
}
