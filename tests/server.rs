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
        server.log_text().contains(&password),
        "the initial password is logged once"
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
    let server = TestServer::start_in(
        &storage,
        &[
            "--use-ssl",
            "--ssl-certificate",
            &p("cert.pem"),
            "--ssl-private-key",
            &p("key.pem"),
            "--ssl-private-key-password",
            "QWERTY",
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
        assert!(
            failed.stderr.trim().lines().count() <= 2,
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
