//! Backup, restore and moving a storage folder, with the real binaries: `confab backup`
//! from a running server while it takes writes, `admin backup` of a stopped folder,
//! `admin restore` into a new folder, compared record by record with `admin export`.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use util::team::*;
use util::*;

/// `confab-server --storage-dir DIR ARGS…`: success and everything printed.
fn server_command(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(server_bin())
        .arg("--storage-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run confab-server");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `admin export` of a stopped folder, as text.
fn export(dir: &Path) -> String {
    let out = Command::new(server_bin())
        .arg("--storage-dir")
        .arg(dir)
        .args(["admin", "export"])
        .output()
        .expect("run admin export");
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 export")
}

/// `confab backup --out FILE` as `user`; success and everything printed.
fn cli_backup(addr: &str, known: &Path, user: &str, pw: &str, out: &Path) -> (bool, String) {
    let o = Command::new(CLI_BIN)
        .env("CONFAB_SERVER", addr)
        .env("CONFAB_USER", user)
        .env("CONFAB_PASSWORD", pw)
        .env("CONFAB_KNOWN_SERVERS", known)
        .env_remove("CONFAB_TOKEN")
        .arg("backup")
        .arg("--out")
        .arg(out)
        .output()
        .expect("run confab backup");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Two exports are the same (on a difference: the first line that differs, not both whole).
fn assert_same_export(a: &str, b: &str) {
    if a != b {
        let (la, lb): (Vec<_>, Vec<_>) = (a.lines().collect(), b.lines().collect());
        let at = la
            .iter()
            .zip(&lb)
            .position(|(x, y)| x != y)
            .unwrap_or(la.len().min(lb.len()));
        panic!(
            "exports differ ({} and {} lines), first at line {at}:\n  {}\n  {}",
            la.len(),
            lb.len(),
            la.get(at).unwrap_or(&"(end)"),
            lb.get(at).unwrap_or(&"(end)")
        );
    }
}

/// Lines of an export of one table.
fn table_lines<'a>(export: &'a str, table: &str) -> Vec<&'a str> {
    let tag = format!("\"table\":\"{table}\"");
    export.lines().filter(|l| l.contains(&tag)).collect()
}

#[actix_rt::test]
async fn a_live_backup_taken_under_writes_restores_whole_and_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let known = tmp.path().join("known_servers");
    let mut server = TestServer::start_in(&dir, &[]);
    let admin_pw = server.admin_password();
    let mut admin = server.admin().await;
    let team = make_team(&server, &mut admin).await;

    // A writer posts all along while the first backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, posted) = (stop.clone(), posted.clone());
        let mut c = server.login("alice", "alice-password-123").await;
        let room = team.room;
        actix_rt::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                c.send_text(room, &format!("written during the backup #{n}"))
                    .await
                    .unwrap();
                posted.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while posted.load(Ordering::SeqCst) < 20 {
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let under_load = tmp.path().join("under-load.tar");
    let (ok, said) = actix_rt::task::spawn_blocking({
        let (server_addr, known, out, pw) = (
            server.addr.clone(),
            known.clone(),
            under_load.clone(),
            admin_pw.clone(),
        );
        move || cli_backup(&server_addr, &known, "admin", &pw, &out)
    })
    .await
    .unwrap();
    assert!(ok, "{said}");
    assert!(said.contains("checked"), "{said}");
    let during = posted.load(Ordering::SeqCst);
    actix_rt::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    assert!(
        posted.load(Ordering::SeqCst) > during.min(20),
        "the server kept taking writes during the backup"
    );

    // A member who is not an administrator gets no backup.
    let (ok, said) = cli_backup(
        &server.addr,
        &known,
        "bob",
        &team.bob_password,
        &tmp.path().join("bob.tar"),
    );
    assert!(!ok && said.contains("administrator"), "{said}");
    assert!(!tmp.path().join("bob.tar").exists());

    // The backup taken under writes restores to a sound folder (every unit whole).
    let restored = tmp.path().join("restored-under-load");
    let (ok, said) = server_command(
        &restored,
        &["admin", "restore", under_load.to_str().unwrap()],
    );
    assert!(ok && said.contains("is sound"), "{said}");

    // A quiet backup, the server stopped: the restored folder's export is the original's.
    let quiet = tmp.path().join("quiet.tar");
    let (ok, said) = cli_backup(&server.addr, &known, "admin", &admin_pw, &quiet);
    assert!(ok, "{said}");
    assert!(server.stop().success());
    let original = export(&dir);
    let copy = tmp.path().join("restored");
    let (ok, said) = server_command(&copy, &["admin", "restore", quiet.to_str().unwrap()]);
    assert!(ok && said.contains("is sound"), "{said}");
    let restored_export = export(&copy);
    assert_same_export(&original, &restored_export);
    for table in [
        "userid_user",
        "roomid_room",
        "roomid_userid_member",
        "messageid_message",
        "messageid_userid_read",
        "userid_roomid_lastread",
        "roomid_userid_permissions",
        "attachmentid_attachment",
    ] {
        assert!(
            !table_lines(&original, table).is_empty(),
            "the export has no {table}: the comparison would prove nothing"
        );
    }
    let sha = |data: &[u8]| hex::encode(openssl::sha::sha256(data));
    for content in [&team.text_file.2, &team.picture.1] {
        assert!(
            original.contains(&format!("\"sha256\":\"{}\"", sha(content))),
            "attachment content missing from the export"
        );
    }

    // The restored folder serves the same team, with the same certificate.
    let mut again = TestServer::start_in(&copy, &[]);
    assert_eq!(again.fingerprint, server.fingerprint);
    let mut bob = again.login("bob", &team.bob_password).await;
    let history = texts(&mut bob, team.room).await;
    assert!(history.iter().any(|t| t == "the first message"));
    assert!(history
        .iter()
        .any(|t| t.starts_with("written during the backup")));
    let (id, name, content) = &team.text_file;
    assert_eq!(&download(&mut bob, *id, name).await, content);
    assert_eq!(
        download(&mut bob, team.picture.0, "photo.png").await,
        team.picture.1
    );
    let (status, thumb) = bob
        .request_bytes(
            awc::http::Method::GET,
            &format!("/api/v1/thumbnails/{}", team.picture.0),
            None,
        )
        .await
        .unwrap();
    assert!(
        status == 200 && thumb.starts_with(&[0xff, 0xd8]),
        "{status}"
    );
    assert!(again.stop().success());
}

#[actix_rt::test]
async fn a_stopped_folder_backs_up_offline_and_moves_by_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.admin().await;
    let team = make_team(&server, &mut admin).await;
    let fingerprint = server.fingerprint.clone();
    // Refused while the server runs: the folder is in use.
    let archive = tmp.path().join("offline.tar");
    let (ok, said) = server_command(
        &dir,
        &["admin", "backup", "--out", archive.to_str().unwrap()],
    );
    assert!(!ok && said.contains("in use"), "{said}");
    assert!(server.stop().success());

    let (ok, said) = server_command(
        &dir,
        &["admin", "backup", "--out", archive.to_str().unwrap()],
    );
    assert!(ok, "{said}");
    assert!(said.contains("2 attachment files"), "{said}");
    let original = export(&dir);
    let restored = tmp.path().join("restored");
    let (ok, said) = server_command(&restored, &["admin", "restore", archive.to_str().unwrap()]);
    assert!(ok && said.contains("is sound"), "{said}");
    assert_same_export(&original, &export(&restored));

    // Restoring over a folder that holds anything is refused, and changes nothing there.
    let (ok, said) = server_command(&restored, &["admin", "restore", archive.to_str().unwrap()]);
    assert!(!ok && said.contains("not empty"), "{said}");
    assert_same_export(&original, &export(&restored));

    // A damaged archive: a clear error, and the half-made folder refuses to start.
    let bytes = std::fs::read(&archive).unwrap();
    let cut = tmp.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let half = tmp.path().join("half");
    let (ok, said) = server_command(&half, &["admin", "restore", cut.to_str().unwrap()]);
    assert!(!ok, "{said}");
    assert!(
        said.contains("backup archive") || said.contains("cut short"),
        "{said}"
    );
    let failed = TestServer::start_expect_failure(
        &[
            "--listen",
            "127.0.0.1:0",
            "--storage-dir",
            half.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        failed.stderr.contains("did not finish"),
        "{}",
        failed.stderr
    );
    let junk = tmp.path().join("junk.tar");
    std::fs::write(&junk, b"this is not an archive at all").unwrap();
    let (ok, said) = server_command(
        &tmp.path().join("junk"),
        &["admin", "restore", junk.to_str().unwrap()],
    );
    assert!(!ok && said.contains("backup archive"), "{said}");

    // A cleanly stopped folder copied elsewhere (cp -a) works unchanged.
    let moved = tmp.path().join("moved");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&dir)
        .arg(&moved)
        .status()
        .unwrap();
    assert!(cp.success());
    let mut there = TestServer::start_in(&moved, &[]);
    assert_eq!(there.fingerprint, fingerprint);
    let mut bob = there.login("bob", &team.bob_password).await;
    assert!(texts(&mut bob, team.room)
        .await
        .iter()
        .any(|t| t == "the first message"));
    let (id, name, content) = &team.text_file;
    assert_eq!(&download(&mut bob, *id, name).await, content);
    assert!(there.stop().success());
}

/// Where the partial archive of an interrupted `confab backup` would be.
fn partial_of(path: &Path) -> PathBuf {
    path.with_file_name(format!(
        ".{}.partial",
        path.file_name().unwrap().to_string_lossy()
    ))
}

#[actix_rt::test]
async fn one_backup_at_a_time_and_a_client_that_goes_away_leaves_nothing_behind() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let known = tmp.path().join("known_servers");
    let mut server = TestServer::start_in(&dir, &[]);
    let admin_pw = server.admin_password();
    let mut admin = server.admin().await;
    let team = make_team(&server, &mut admin).await;
    // 24 MiB that do not compress: more than the response's queue and the socket buffers.
    let big = tmp.path().join("noise.bin");
    let noise: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&big, &noise).unwrap();
    let m = admin.send_text(team.room, "a big file").await.unwrap();
    admin.upload(m.message_id, &[big], true).await.unwrap();

    // A client that asks for a backup and reads only the response's head.
    let session = admin.session_id().unwrap().to_string();
    let addr = server.addr.clone();
    let slow = std::thread::spawn(move || {
        let mut tls = tls_over(std::net::TcpStream::connect(&addr).unwrap());
        write!(
            tls,
            "GET /api/v1/backup HTTP/1.1\r\nHost: confab\r\nAuthorization: Bearer {session}\r\n\r\n"
        )
        .unwrap();
        let mut head = vec![0u8; 512];
        let n = tls.read(&mut head).unwrap();
        (tls, String::from_utf8_lossy(&head[..n]).to_string())
    });
    let (tls, head) = actix_rt::task::spawn_blocking(move || slow.join().unwrap())
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (status, body) = admin
        .request_bytes(awc::http::Method::GET, "/api/v1/backup", None)
        .await
        .unwrap();
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("already"));
    let staging = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("backup-staging"))
            .collect()
    };
    assert_eq!(staging(&dir).len(), 1, "the first backup is staged");

    // It goes away: the backup stops, its staging folder goes, the next one runs.
    drop(tls);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !staging(&dir).is_empty() && std::time::Instant::now() < deadline {
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(staging(&dir).is_empty(), "{:?}", staging(&dir));
    assert!(
        server.log_text().contains("backup not completed"),
        "{}",
        server.log_text()
    );
    let out = tmp.path().join("b.tar");
    let (ok, said) = cli_backup(&server.addr, &known, "admin", &admin_pw, &out);
    assert!(ok, "{said}");
    assert!(said.contains("3 attachment files"), "{said}");
    assert!(!partial_of(&out).exists());
    assert!(staging(&dir).is_empty());
    assert!(
        server.log_text().contains("backup sent"),
        "{}",
        server.log_text()
    );
    assert!(server.stop().success());
}
