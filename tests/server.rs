//! The server as an operator meets it: flags, TLS identity, the storage folder (restart,
//! kill -9, read-only, in use) and graceful shutdown.

mod util;

use std::path::Path;
use std::time::Duration;

use confab::client::{Client, Trust};
use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::symm::Cipher;
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};
use util::*;

const SEED_FLAGS: [&str; 9] = [
    "--listen",
    "--listen-host",
    "--listen-port",
    "--storage-dir",
    "--database-dir",
    "--use-ssl",
    "--ssl-certificate",
    "--ssl-private-key",
    "--ssl-private-key-password",
];

#[test]
fn help_flags_list_every_seed_flag() {
    for flag in ["--help", "-h", "-?"] {
        let out = std::process::Command::new(SERVER_BIN)
            .arg(flag)
            .output()
            .expect("run");
        assert!(out.status.success(), "{flag}: {:?}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        for seed in SEED_FLAGS.iter().chain(&["--web-root", "--log-level"]) {
            assert!(text.contains(seed), "{flag} output lacks {seed}:\n{text}");
        }
    }
}

#[test]
fn seed_style_flags_start_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new(SERVER_BIN)
        .args([
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            &port.to_string(),
            "--use-ssl",
            "--database-dir",
        ])
        .arg(tmp.path().join("db"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut up = false;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let resp = if up {
        raw_https(
            &format!("127.0.0.1:{port}"),
            &http_request("GET", "/api/v1/status", &[], b""),
        )
    } else {
        String::new()
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        up,
        "server did not listen on the --listen-host/--listen-port address"
    );
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert!(tmp
        .path()
        .join("db")
        .join("initial-admin-password")
        .exists());
}

#[actix_rt::test]
async fn restart_keeps_history_certificate_and_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let password = server.admin_password();
    let mode = std::fs::metadata(dir.join("initial-admin-password")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    assert!(
        !server.log_text().contains(&password)
            && server.log_text().contains("initial-admin-password"),
        "the initial password is in its file, which the log names, and not in the log"
    );
    let mut admin = server.admin().await;
    let room = admin.create_room("Durable", &[]).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(
            admin
                .send_text(room, &format!("message {i}"))
                .await
                .unwrap(),
        );
    }
    let mut events = admin.events().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first_fp = server.fingerprint.clone();

    // SIGTERM: the event stream gets a close frame (1001 going away), exit 0.
    let status = server.stop();
    assert!(status.success(), "graceful stop exits 0: {status:?}");
    let closed = events
        .next_frame()
        .await
        .expect("frame")
        .expect_err("closed");
    assert_eq!(closed.code, Some(1001), "{closed:?}");

    let server = TestServer::start_in(&dir, &[]);
    assert_eq!(
        server.fingerprint, first_fp,
        "self-signed certificate is reused"
    );
    assert_eq!(server.admin_password(), password);
    assert!(
        !server.log_text().contains(&password),
        "password logged only on first start"
    );
    let mut admin = server.login("admin", &password).await;
    let history = admin.history(room, None, None, None).await.unwrap();
    assert_eq!(history, sent);
    let next = admin.send_text(room, "after restart").await.unwrap();
    assert!(
        next.message_id > sent.last().unwrap().message_id,
        "ids keep increasing"
    );
}

#[actix_rt::test]
async fn kill_9_loses_no_acknowledged_message() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let password = server.admin_password();
    let mut admin = server.admin().await;
    let room = admin.create_room("Crash", &[]).await.unwrap();

    // Eight concurrent posters; kill -9 while they are mid-flight.
    let acked = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let mut tasks = Vec::new();
    for p in 0..8 {
        let mut c = server.login("admin", &password).await;
        let acked = acked.clone();
        tasks.push(actix_rt::spawn(async move {
            for i in 0.. {
                match c.send_text(room, &format!("p{p}-{i}")).await {
                    Ok(m) => acked.borrow_mut().push((m.message_id, m.text)),
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.borrow().clone();
    assert!(
        acked.len() > 20,
        "posters made progress before the kill ({})",
        acked.len()
    );

    let server = TestServer::start_in(&dir, &[]);
    let mut admin = server.login("admin", &password).await;
    let stored: std::collections::HashMap<u64, String> = admin
        .history(room, None, None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.message_id, m.text))
        .collect();
    for (id, text) in &acked {
        assert_eq!(
            stored.get(id),
            Some(text),
            "acknowledged message {id} lost after kill -9"
        );
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// A CA and a server certificate for localhost/127.0.0.1 signed by it.
fn make_ca_and_cert(dir: &Path, key_password: &str) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let ca_key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "Test CA")
        .unwrap();
    let ca_name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&ca_name).unwrap();
    b.set_issuer_name(&ca_name).unwrap();
    b.set_pubkey(&ca_key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = b.build();

    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "localhost")
        .unwrap();
    let subject = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&b.x509v3_context(Some(&ca), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let cert = b.build();

    write(&dir.join("ca.pem"), &ca.to_pem().unwrap());
    let mut chain = cert.to_pem().unwrap();
    chain.extend(ca.to_pem().unwrap());
    write(&dir.join("cert.pem"), &chain);
    write(
        &dir.join("key.pem"),
        &key.private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), key_password.as_bytes())
            .unwrap(),
    );
    let other = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    write(
        &dir.join("other-key.pem"),
        &other.private_key_to_pem_pkcs8().unwrap(),
    );
}

#[actix_rt::test]
async fn custom_certificate_with_encrypted_key() {
    let tmp = tempfile::tempdir().unwrap();
    make_ca_and_cert(tmp.path(), "QWERTY");
    let p = |f: &str| tmp.path().join(f).to_string_lossy().to_string();
    let storage = tmp.path().join("storage");
    // The password from a file, not the command line (where `ps` shows it).
    std::fs::write(tmp.path().join("keypass"), "QWERTY\n").unwrap();
    let server = TestServer::start_in(
        &storage,
        &[
            "--use-ssl",
            "--ssl-certificate",
            &p("cert.pem"),
            "--ssl-private-key",
            &p("key.pem"),
            "--ssl-private-key-password-file",
            &p("keypass"),
        ],
    );
    assert!(
        !storage.join("tls").exists(),
        "no self-signed certificate when one is given"
    );
    // A client that trusts only the CA connects (chain and host name verified).
    let mut c = Client::new(&server.addr, Trust::CaFile(tmp.path().join("ca.pem"))).unwrap();
    c.login("admin", &server.admin_password())
        .await
        .expect("login over the custom certificate");
    // A client trusting another CA is refused.
    let mut wrong = Client::new(&server.addr, Trust::CaFile(storage.join("nonexistent.pem")));
    if let Ok(w) = wrong.as_mut() {
        assert!(w.status().await.is_err());
    }
    drop(server);

    let base = ["--listen", "127.0.0.1:0", "--storage-dir"];
    let storage_s = storage.to_string_lossy().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--ssl-certificate".into(),
                p("cert.pem"),
                "--ssl-private-key".into(),
                p("key.pem"),
                "--ssl-private-key-password".into(),
                "wrong".into(),
            ],
            "wrong or missing --ssl-private-key-password",
        ),
        (
            vec![
                "--ssl-certificate".into(),
                p("cert.pem"),
                "--ssl-private-key".into(),
                p("key.pem"),
            ],
            "wrong or missing --ssl-private-key-password",
        ),
        (
            vec![
                "--ssl-certificate".into(),
                p("cert.pem"),
                "--ssl-private-key".into(),
                p("other-key.pem"),
            ],
            "does not match",
        ),
        (
            vec![
                "--ssl-certificate".into(),
                p("missing.pem"),
                "--ssl-private-key".into(),
                p("key.pem"),
            ],
            "missing.pem",
        ),
        (
            vec![
                "--ssl-certificate".into(),
                p("key.pem"),
                "--ssl-private-key".into(),
                p("key.pem"),
            ],
            "no valid PEM certificate",
        ),
        (
            vec!["--ssl-certificate".into(), p("cert.pem")],
            "must be given together",
        ),
    ];
    for (extra, expected) in cases {
        let mut args: Vec<&str> = base.to_vec();
        args.push(&storage_s);
        args.extend(extra.iter().map(String::as_str));
        let failed = TestServer::start_expect_failure(&args, None);
        assert!(!failed.status.success(), "{extra:?} should fail");
        assert!(
            failed.stderr.contains(expected),
            "{extra:?}: stderr lacks '{expected}':\n{}",
            failed.stderr
        );
        assert!(
            !failed.stderr.contains("panicked") && !failed.stderr.contains("backtrace"),
            "{}",
            failed.stderr
        );
        // Informational lines (the version, recovery) aside: one clear line.
        assert!(
            failed
                .stderr
                .trim()
                .lines()
                .filter(|l| !l.contains(" INFO "))
                .count()
                <= 1,
            "one clear line:\n{}",
            failed.stderr
        );
    }
}

#[test]
fn storage_folder_in_use_fails_clearly() {
    let server = TestServer::start();
    let dir = server.dir.to_string_lossy().to_string();
    let failed =
        TestServer::start_expect_failure(&["--listen", "127.0.0.1:0", "--storage-dir", &dir], None);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        failed
            .stderr
            .contains("in use by another running Confab server"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains(&dir),
        "names the folder: {}",
        failed.stderr
    );
}

#[test]
fn read_only_storage_folder_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("readonly");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // Root ignores permissions, so run the server as an unprivileged user when we are root,
    // from a copy of the binary that user can reach wherever the checkout lives.
    let uid = if is_root() { Some(65534) } else { None };
    let bin = tmp.path().join("confab-server");
    std::fs::copy(SERVER_BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ro_s = ro.to_string_lossy().to_string();
    let failed = TestServer::run_expect_failure(
        &bin,
        &["--listen", "127.0.0.1:0", "--storage-dir", &ro_s],
        uid,
    );
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
    assert!(
        failed.stderr.contains("is not writable") && failed.stderr.contains(&ro_s),
        "{}",
        failed.stderr
    );
    assert!(!failed.stderr.contains("panicked"));

    let nested = ro.join("sub").to_string_lossy().to_string();
    let failed = TestServer::run_expect_failure(
        &bin,
        &["--listen", "127.0.0.1:0", "--storage-dir", &nested],
        uid,
    );
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
    assert!(
        failed.stderr.contains("cannot create the storage folder")
            && failed.stderr.contains(&nested),
        "{}",
        failed.stderr
    );
    // Nothing was written into the read-only folder.
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[actix_rt::test]
async fn storage_folder_can_be_moved_to_another_place() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("old-home").join("storage");
    let mut server = TestServer::start_in(&first, &[]);
    let password = server.admin_password();
    let mut admin = server.admin().await;
    let room = admin.create_room("Moving", &[]).await.unwrap();
    let sent = admin.send_text(room, "packed in a box").await.unwrap();
    let fp = server.fingerprint.clone();
    assert!(server.stop().success());

    // Copy (not rename) to a different path, then remove the original.
    let moved = tmp.path().join("new-home").join("data");
    copy_dir(&first, &moved);
    std::fs::remove_dir_all(tmp.path().join("old-home")).unwrap();
    let server = TestServer::start_in(&moved, &[]);
    assert_eq!(
        server.fingerprint, fp,
        "the certificate moved with the folder"
    );
    let mut admin = server.login("admin", &password).await;
    let history = admin.history(room, None, None, None).await.unwrap();
    assert_eq!(history, vec![sent]);
}

#[actix_rt::test]
async fn offline_admin_resets_a_lost_password_but_not_while_the_server_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let dir_s = dir.to_string_lossy().to_string();
    let mut server = TestServer::start_in(&dir, &[]);
    let old = server.admin_password();

    // Refused while the server runs on the folder.
    let out = std::process::Command::new(SERVER_BIN)
        .args(["--storage-dir", &dir_s, "admin", "reset-password", "admin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another running Confab server"),
        "{err}"
    );
    assert!(server.stop().success());

    let out = std::process::Command::new(SERVER_BIN)
        .args(["--storage-dir", &dir_s, "admin", "reset-password", "admin"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let new = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(
        line.contains("new password of 'admin'") && new.len() >= 16,
        "{line}"
    );
    let pw_file = tmp.path().join("pw");
    std::fs::write(&pw_file, "rescue-password-1\n").unwrap();
    let out = std::process::Command::new(SERVER_BIN)
        .args([
            "--storage-dir",
            &dir_s,
            "admin",
            "create-admin",
            "rescuer",
            "--password-file",
        ])
        .arg(&pw_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(SERVER_BIN)
        .args([
            "--storage-dir",
            &tmp.path().join("nothing").to_string_lossy(),
            "admin",
            "create-admin",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no Confab storage"));

    let server = TestServer::start_in(&dir, &[]);
    assert!(
        server.client().login("admin", &old).await.is_err(),
        "old password is gone"
    );
    server.login("admin", &new).await;
    let mut rescuer = server.login("rescuer", "rescue-password-1").await;
    let users = rescuer.users().await.unwrap();
    assert!(users.iter().any(|u| u.user_name == "rescuer" && u.is_admin));
}

#[test]
fn sigterm_right_after_start_is_a_clean_stop() {
    // The "listening" line must only appear once SIGTERM is handled.
    for _ in 0..3 {
        let mut server = TestServer::start();
        let status = server.stop();
        assert!(status.success(), "exit {status:?}:\n{}", server.log_text());
    }
}

#[test]
fn version_and_log_level_are_checked_before_anything_starts() {
    for bin in [SERVER_BIN, CLI_BIN] {
        let out = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .expect("run --version");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{bin}: {text}");
        assert!(
            text.contains(env!("CARGO_PKG_VERSION")) && text.contains("storage schema"),
            "{bin}: {text}"
        );
    }
    // A typo used to be read as a target name and silenced the server entirely.
    let tmp = tempfile::tempdir().unwrap();
    let storage = tmp.path().join("storage");
    let failed = TestServer::start_expect_failure(
        &[
            "--listen",
            "127.0.0.1:0",
            "--storage-dir",
            storage.to_str().unwrap(),
            "--log-level",
            "verbose",
        ],
        None,
    );
    assert_eq!(failed.status.code(), Some(2), "{}", failed.stderr);
    assert!(
        failed.stderr.contains("--log-level: 'verbose'"),
        "{}",
        failed.stderr
    );
    assert!(!storage.exists(), "nothing was created");
    let server = TestServer::start_in(&storage, &["--log-level", "warn,confab=info"]);
    assert!(
        server
            .log_text()
            .contains(&format!("confab-server {}", env!("CARGO_PKG_VERSION"))),
        "{}",
        server.log_text()
    );
}

#[actix_rt::test]
async fn probes_need_no_login_and_readyz_follows_the_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let server = TestServer::start_in(&dir, &[]);
    let get = |path: &str| raw_https(&server.addr, &http_request("GET", path, &[], b""));
    let live = get("/healthz");
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    assert_eq!(body_json(&live), serde_json::json!({ "status": "live" }));
    assert!(
        !server.log_text().contains(&server.admin_password()),
        "the first password is in its file, not in the log"
    );
    let ready = get("/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert_eq!(body_json(&ready), serde_json::json!({ "status": "ready" }));

    let mut admin = server.admin().await;
    let health = admin.server_health().await.unwrap();
    assert_eq!(
        health["schemaVersion"],
        confab::storage::SCHEMA_VERSION,
        "{health}"
    );
    assert!(
        health["freeDiskBytes"].as_u64().unwrap_or(0) > 0,
        "{health}"
    );

    // The folder taken away under the server: not ready (still live), with no detail.
    std::fs::remove_dir_all(&dir).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let unready = loop {
        let r = get("/readyz");
        if r.starts_with("HTTP/1.1 503") || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(unready.starts_with("HTTP/1.1 503"), "{unready}");
    assert_eq!(
        body_json(&unready),
        serde_json::json!({ "status": "unready" })
    );
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
}

#[actix_rt::test]
async fn the_storage_folder_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    // The usual umask, which left the database world-readable.
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { libc::umask(0o022) };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.admin().await;
    let room = admin.create_room("Private", &[]).await.unwrap();
    let m = admin.send_text(room, "on disk").await.unwrap();
    let file = tmp.path().join("notes.txt");
    std::fs::write(&file, b"attached").unwrap();
    admin.upload(m.message_id, &[file], true).await.unwrap();
    server.stop();
    let mut checked = 0;
    let mut paths = files_under(&dir);
    paths.push(dir.clone());
    paths.push(dir.join("db"));
    paths.push(dir.join("attachments"));
    for p in paths {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:03o}", p.display());
        checked += 1;
    }
    assert!(checked > 5);

    // A folder opened up by hand: the next start says so.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = TestServer::start_in(&dir, &[]);
    assert!(
        server.log_text().contains("open to other users (mode 755)"),
        "{}",
        server.log_text()
    );
}

#[test]
fn options_that_contradict_each_other_are_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let dir = dir.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--listen",
                "127.0.0.1:7000",
                "--listen-port",
                "7001",
                "--storage-dir",
                dir,
            ],
            "--listen and --listen-port",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--storage-dir",
                dir,
                "--database-dir",
                dir,
            ],
            "--storage-dir and --database-dir",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--storage-dir",
                dir,
                "--ssl-private-key-password",
                "x",
                "--ssl-private-key-password-file",
                "/dev/null",
            ],
            "--ssl-private-key-password and --ssl-private-key-password-file",
        ),
    ];
    for (args, names) in cases {
        let out = std::process::Command::new(SERVER_BIN)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
    }
    assert!(!tmp.path().join("storage").exists(), "nothing was created");
}

#[test]
fn plain_http_to_the_https_port_is_told_to_use_https() {
    let server = TestServer::start();
    let mut tcp = std::net::TcpStream::connect(&server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    use std::io::{Read, Write};
    tcp.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("use https://"), "{answer}");
    // HTTPS on the same port is unaffected.
    let ok = raw_https(&server.addr, &http_request("GET", "/healthz", &[], b""));
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[actix_rt::test]
async fn offline_commands_run_by_root_leave_the_folder_to_its_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("storage");
    let mut server = TestServer::start_in(&dir, &[]);
    let mut admin = server.admin().await;
    let room = admin.create_room("Owned", &[]).await.unwrap();
    admin.send_text(room, "kept").await.unwrap();
    server.stop();
    // The service user owns the folder (here: nobody).
    let nobody = 65534;
    let mut all = files_under(&dir);
    all.push(dir.clone());
    for p in walk_dirs(&dir) {
        all.push(p);
    }
    for p in &all {
        std::os::unix::fs::chown(p, Some(nobody), Some(nobody)).unwrap();
    }
    for args in [
        &["admin", "reset-password", "admin"][..],
        &["admin", "compact"][..],
        &["check"][..],
    ] {
        let out = std::process::Command::new(SERVER_BIN)
            .arg("--storage-dir")
            .arg(&dir)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(err.contains("acting as uid 65534"), "{args:?}: {err}");
    }
    let mut after = files_under(&dir);
    after.extend(walk_dirs(&dir));
    for p in after {
        let owner = std::fs::metadata(&p).unwrap().uid();
        assert_eq!(owner, nobody, "{} is owned by {owner}", p.display());
    }
}

/// Every folder below `dir`.
fn walk_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_dirs(&p));
            out.push(p);
        }
    }
    out
}

/// SHA-256 of the certificate the server at `addr` presents to a new connection.
fn served_certificate(addr: &str) -> Vec<u8> {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let tls = tls_over(tcp);
    let cert = tls.ssl().peer_certificate().expect("a certificate");
    cert.digest(MessageDigest::sha256()).unwrap().to_vec()
}

fn leaf_of(pem_path: &Path) -> Vec<u8> {
    let pem = std::fs::read(pem_path).unwrap();
    X509::from_pem(&pem)
        .unwrap()
        .digest(MessageDigest::sha256())
        .unwrap()
        .to_vec()
}

#[actix_rt::test]
async fn sighup_reloads_the_certificate_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    make_ca_and_cert(tmp.path(), "QWERTY");
    let renewed = tempfile::tempdir().unwrap();
    make_ca_and_cert(renewed.path(), "QWERTY");
    let p = |f: &str| tmp.path().join(f).to_string_lossy().to_string();
    let storage = tmp.path().join("storage");
    let mut server = TestServer::start_in(
        &storage,
        &[
            "--ssl-certificate",
            &p("cert.pem"),
            "--ssl-private-key",
            &p("key.pem"),
            "--ssl-private-key-password",
            "QWERTY",
        ],
    );
    let first = leaf_of(&tmp.path().join("cert.pem"));
    assert_eq!(served_certificate(&server.addr), first);
    // A connection open across the reload.
    let mut open = server.admin().await;
    let room = open.create_room("Across the reload", &[]).await.unwrap();

    let wait_for_log = |server: &TestServer, text: &str, count: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while server.log_text().matches(text).count() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "no '{text}' in:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Renewal: the files are replaced, then SIGHUP.
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(renewed.path().join(f), tmp.path().join(f)).unwrap();
    }
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    wait_for_log(&server, "reloaded, SHA-256 fingerprint", 1);
    let second = leaf_of(&renewed.path().join("cert.pem"));
    assert_ne!(first, second);
    assert_eq!(
        served_certificate(&server.addr),
        second,
        "new handshakes get the new one"
    );
    assert!(
        server.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "SIGHUP does not stop the server"
    );
    open.send_text(room, "still talking").await.unwrap();

    // A broken renewal keeps the certificate that works.
    std::fs::write(tmp.path().join("cert.pem"), b"not a certificate").unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    wait_for_log(&server, "was NOT reloaded", 1);
    assert_eq!(served_certificate(&server.addr), second);
    assert_eq!(server.stop().code(), Some(0), "{}", server.log_text());
}

#[test]
fn the_systemd_unit_is_hardened_and_rated_ok() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/confab-server.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "UMask=0077",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
    ] {
        assert!(
            text.lines().any(|l| l.trim() == line),
            "the unit lacks {line}"
        );
    }
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
    else {
        eprintln!("skipped the rating: no systemd-analyze here");
        return;
    };
    let report = String::from_utf8_lossy(&out.stdout);
    let level: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for confab-server.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no rating in:\n{report}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(level <= 2.5, "exposure {level}:\n{report}");
}

#[test]
fn the_server_tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let socket_path = tmp.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = std::process::Command::new(SERVER_BIN)
        .args(["--listen", "127.0.0.1:0", "--storage-dir"])
        .arg(tmp.path().join("storage"))
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let next = || {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    assert!(next().contains("READY=1"));
    // SAFETY: signals to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    assert!(next().contains("RELOADING=1"));
    assert!(next().contains("READY=1"));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(next().contains("STOPPING=1"));
    assert_eq!(
        wait_timeout(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
}

#[test]
fn by_default_the_server_listens_on_ipv6_and_ipv4() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(SERVER_BIN)
        .args(["--listen-port", "0", "--storage-dir"])
        .arg(tmp.path().join("storage"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Read the log to its end (a closed pipe would fail the server's writes).
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("listening on https://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a listening line");
    assert!(addr.starts_with("[::]:"), "{addr}");
    let port: u16 = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let answer = raw_https(&addr, &http_request("GET", "/healthz", &[], b""));
        assert!(answer.starts_with("HTTP/1.1 200"), "{addr}: {answer}");
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(
        wait_timeout(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
}

#[test]
fn a_closed_log_pipe_neither_stops_the_server_nor_its_clean_shutdown() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(SERVER_BIN)
        .args(["--listen", "127.0.0.1:0", "--storage-dir"])
        .arg(tmp.path().join("storage"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut addr = None;
    {
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on https://").nth(1) {
                addr = rest.split_whitespace().next().map(str::to_string);
            }
            if line.contains("fingerprint") {
                break;
            }
        }
        // The reading end goes here, like a log collector that died.
    }
    let addr = addr.expect("a listening line");
    // Every request now logs into the closed pipe; the server goes on.
    for _ in 0..3 {
        let answer = raw_https(&addr, &http_request("GET", "/healthz", &[], b""));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(
        wait_timeout(&mut child, Duration::from_secs(20)).code(),
        Some(0),
        "stopped cleanly although its log pipe is gone"
    );
}

/// The JSON lines of a log file so far (each must be JSON).
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn wait_for_json_line(path: &Path, what: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = json_lines(path).into_iter().find(|v| what(v)) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no such line in {}:\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[actix_rt::test]
async fn json_log_in_a_file_reopened_on_sighup_with_an_access_log() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("confab.log");
    let storage = tmp.path().join("storage");
    let mut child = std::process::Command::new(SERVER_BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--log-file",
        ])
        .arg(&log)
        .arg("--storage-dir")
        .arg(&storage)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let message = |v: &serde_json::Value| v["message"].as_str().unwrap_or("").to_string();
    let listening = wait_for_json_line(&log, |v| message(v).contains("listening on https://"));
    let addr = message(&listening)
        .split("listening on https://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let fingerprint = message(&wait_for_json_line(&log, |v| {
        message(v).contains("fingerprint")
    }))
    .rsplit(' ')
    .next()
    .unwrap()
    .to_string();
    assert_eq!(listening["level"], "INFO");

    // Access lines: method, path without the query, status, client, and the user once
    // authenticated.
    let probe = raw_https(
        &addr,
        &http_request("GET", "/healthz?token=SECRET-IN-QUERY", &[], b""),
    );
    assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");
    let line = wait_for_json_line(&log, |v| {
        v["target"] == "confab::access" && v["path"] == "/healthz"
    });
    assert_eq!(line["method"], "GET");
    assert_eq!(line["status"], 200);
    assert_eq!(line["client"], "127.0.0.1");
    assert!(line["ms"].as_f64().is_some(), "{line}");
    let password = std::fs::read_to_string(storage.join("initial-admin-password")).unwrap();
    let mut admin = Client::new(&addr, Trust::Fingerprint(fingerprint)).unwrap();
    admin.login("admin", password.trim()).await.unwrap();
    admin.status().await.unwrap();
    let line = wait_for_json_line(&log, |v| {
        v["target"] == "confab::access" && v["path"] == "/api/v1/status"
    });
    assert_eq!(line["user"], 1, "{line}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("SECRET-IN-QUERY"),
        "the query string is never logged"
    );
    assert!(!text.contains(password.trim()), "nor a password");
    let audit = wait_for_json_line(&log, |v| {
        v["target"] == "confab::audit" && message(v) == "login"
    });
    assert_eq!(audit["user_id"], 1, "{audit}");
    let (id, _) = admin.create_user("audited", None, false).await.unwrap();
    admin.suspend(id).await.unwrap();
    for what in ["user created", "user suspended"] {
        let line = wait_for_json_line(&log, |v| {
            v["target"] == "confab::audit" && message(v) == what
        });
        assert_eq!(
            (line["by"].as_u64(), line["user_id"].as_u64()),
            (Some(1), Some(id)),
            "{line}"
        );
    }

    // logrotate: the file is moved away, SIGHUP, and the log goes on under its name.
    let rotated = tmp.path().join("confab.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: signals to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    wait_for_json_line(&log, |v| message(v).contains("log reopened"));
    admin.status().await.unwrap();
    wait_for_json_line(&log, |v| {
        v["target"] == "confab::access" && v["path"] == "/api/v1/status"
    });
    assert!(json_lines(&rotated)
        .iter()
        .all(|v| !message(v).contains("log reopened")));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(
        wait_timeout(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
    wait_for_json_line(&log, |v| message(v).contains("stopped; storage flushed"));

    // A format that does not exist is refused.
    let out = std::process::Command::new(SERVER_BIN)
        .args(["--log-format", "xml", "--storage-dir"])
        .arg(&storage)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format: 'xml'"));
}

#[test]
fn a_config_file_and_confab_variables_set_options_under_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let page = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), format!("page from the {name}")).unwrap();
        dir.to_string_lossy().to_string()
    };
    let (from_file, from_env, from_flag) = (page("file"), page("environment"), page("flag"));
    let config = tmp.path().join("confab.toml");
    std::fs::write(
        &config,
        format!("web_root = \"{from_file}\"\ntrusted-proxy = [\"10.0.0.0/8\"]\nsession-idle = \"12h\"\nrequire-mfa = false\n"),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let served = |server: &TestServer| {
        let answer = raw_https(&server.addr, &http_request("GET", "/", &[], b""));
        answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
    };
    let storage = tmp.path().join("storage");
    let server = TestServer::start_in(&storage, &["--config", config_arg]);
    assert_eq!(served(&server), "page from the file");
    drop(server);
    let env = [
        ("CONFAB_WEB_ROOT", from_env.as_str()),
        ("CONFAB_PASSWORD", "the client's, ignored"),
    ];
    let server = TestServer::start_in_env(&storage, &["--config", config_arg], &env);
    assert_eq!(served(&server), "page from the environment");
    drop(server);
    let server = TestServer::start_in_env(
        &storage,
        &["--config", config_arg, "--web-root", &from_flag],
        &env,
    );
    assert_eq!(served(&server), "page from the flag");
    drop(server);
    // CONFAB_CONFIG names the file too.
    let server = TestServer::start_in_env(&storage, &[], &[("CONFAB_CONFIG", config_arg)]);
    assert_eq!(served(&server), "page from the file");
    drop(server);

    // Mistakes stop the start with a line naming them.
    let storage_s = storage.to_str().unwrap();
    let bad = tmp.path().join("bad.toml");
    for (text, expected) in [
        ("web-rot = \"/srv\"\n", "unknown option 'web-rot'"),
        ("require-mfa = \"yes\"\n", "'require-mfa' is true or false"),
        ("listen = [1, 2]\n", "must be a string or a whole number"),
        (
            "listen = \"127.0.0.1:0\"\nlisten-port = 9\n",
            "--listen and --listen-port",
        ),
        ("not toml at all\n", "bad.toml"),
    ] {
        std::fs::write(&bad, text).unwrap();
        let out = std::process::Command::new(SERVER_BIN)
            .args([
                "--storage-dir",
                storage_s,
                "--config",
                bad.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(expected), "{text}: {err}");
    }
    let out = std::process::Command::new(SERVER_BIN)
        .args(["--storage-dir", storage_s, "--version"])
        .env("CONFAB_REQUIRE_MFA", "maybe")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("CONFAB_REQUIRE_MFA: 'maybe'"));

    // The shipped example: every option in it, uncommented, is one the server knows.
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/confab.toml"))
            .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let uncommented: String = shipped
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            let key = l.split(" = ").next().unwrap_or("");
            !key.is_empty()
                && l.contains(" = ")
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                && seen.insert(key.to_string())
        })
        // Alternatives: the two-part listen address and the password on the command line.
        .filter(|l| {
            !l.starts_with("listen-host")
                && !l.starts_with("listen-port")
                && !l.starts_with("database-dir")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(seen.len() > 30, "{seen:?}");
    let all = tmp.path().join("all.toml");
    std::fs::write(&all, &uncommented).unwrap();
    let out = std::process::Command::new(SERVER_BIN)
        .args(["--config", all.to_str().unwrap(), "--version"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{uncommented}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A plain-HTTP GET: the whole answer.
fn plain_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    out
}

/// The value of an OpenMetrics sample line `name value`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[actix_rt::test]
async fn prometheus_metrics_on_their_own_listener() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(
        &tmp.path().join("storage"),
        &["--metrics-listen", &metrics_addr],
    );
    let mut admin = server.admin().await;
    let room = admin.create_room("Measured", &[]).await.unwrap();
    for i in 0..3 {
        admin
            .send_text(room, &format!("counted {i}"))
            .await
            .unwrap();
    }
    let answer = plain_get(&metrics_addr, "/metrics");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("application/openmetrics-text"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    assert!(sample(body, "confab_messages_posted_total") >= 3.0);
    assert!(
        sample(body, "confab_fsync_seconds_count") >= 3.0,
        "each post waited for a commit"
    );
    assert!(sample(body, "confab_durable_writes_total") >= 3.0);
    assert!(
        sample(body, "confab_connections") >= 1.0,
        "the admin's connection"
    );
    assert!(sample(body, "confab_rooms_active") >= 1.0);
    assert!(sample(body, "confab_storage_free_bytes") > 0.0);
    for name in [
        "confab_event_sessions",
        "confab_voice_packets_relayed_total",
        "confab_event_clients_dropped_total",
    ] {
        sample(body, name);
    }
    assert!(
        body.contains("confab_fsync_seconds_bucket{le="),
        "a histogram"
    );
    // Not on the public port.
    let public = raw_https(&server.addr, &http_request("GET", "/metrics", &[], b""));
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
}

#[test]
fn install_systemd_lays_out_binaries_unit_settings_and_a_private_folder() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let bins = Path::new(SERVER_BIN).parent().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-systemd");
    let run = || {
        std::process::Command::new(&script)
            .arg("--root")
            .arg(root.path())
            .arg("--bin-dir")
            .arg(bins)
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |p: &str| {
        std::fs::metadata(root.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("usr/local/bin/confab-server"), 0o755);
    assert_eq!(mode("usr/local/bin/confab"), 0o755);
    assert_eq!(mode("var/lib/confab"), 0o700);
    let unit =
        std::fs::read_to_string(root.path().join("etc/systemd/system/confab-server.service"))
            .unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/confab-server.service"),
    )
    .unwrap();
    assert_eq!(unit, shipped);
    // The unit's settings file is there and the installed server accepts it.
    assert!(unit.contains("--config /etc/confab/confab.toml"));
    let settings = root.path().join("etc/confab/confab.toml");
    let check = std::process::Command::new(root.path().join("usr/local/bin/confab-server"))
        .arg("--config")
        .arg(&settings)
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Settings an operator edited survive a second run.
    std::fs::write(&settings, "quota-mb = 100\n").unwrap();
    let again = run();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("keeping the existing"));
    assert_eq!(
        std::fs::read_to_string(&settings).unwrap(),
        "quota-mb = 100\n"
    );
    // Without binaries it says what to do.
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&script)
        .arg("--root")
        .arg(root.path())
        .arg("--bin-dir")
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cargo build --release"));
}
