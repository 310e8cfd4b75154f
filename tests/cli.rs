//! The `confab` command-line client against the real server.

mod util;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use util::*;

struct Cli<'a> {
    server: &'a TestServer,
    known: std::path::PathBuf,
}

impl<'a> Cli<'a> {
    fn new(server: &'a TestServer, tmp: &Path) -> Self {
        Cli {
            server,
            known: tmp.join("known_servers"),
        }
    }

    fn cmd(&self, user: &str, password: &str) -> Command {
        let mut c = Command::new(CLI_BIN);
        c.env("CONFAB_SERVER", &self.server.addr)
            .env("CONFAB_USER", user)
            .env("CONFAB_PASSWORD", password)
            .env("CONFAB_KNOWN_SERVERS", &self.known)
            .env_remove("CONFAB_TOKEN")
            .stdin(Stdio::null());
        c
    }

    /// Runs a command; returns stdout, panicking on failure.
    fn ok(&self, user: &str, password: &str, args: &[&str]) -> String {
        let out = self
            .cmd(user, password)
            .args(args)
            .output()
            .expect("run confab");
        assert!(
            out.status.success(),
            "confab {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn fails(&self, user: &str, password: &str, args: &[&str]) -> String {
        let out = self
            .cmd(user, password)
            .args(args)
            .output()
            .expect("run confab");
        assert!(!out.status.success(), "confab {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

#[test]
fn two_users_chat_live_with_follow_and_send() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    let cli = Cli::new(&server, tmp.path());
    let admin_pw = server.admin_password();
    let pw_file = tmp.path().join("pw");
    std::fs::write(&pw_file, "correct horse battery\n").unwrap();
    let pw_s = pw_file.to_string_lossy().to_string();

    // First use: trusted and remembered.
    let alice_id = cli.ok(
        "admin",
        &admin_pw,
        &["create-user", "alice", "--password-file", &pw_s],
    );
    assert!(alice_id.parse::<u64>().is_ok(), "{alice_id}");
    let known = std::fs::read_to_string(&cli.known).unwrap();
    assert!(known.contains(&server.addr), "{known}");
    assert!(
        known.contains(&server.fingerprint.replace(':', "")),
        "{known}"
    );

    let bob = cli.ok("admin", &admin_pw, &["--json", "create-user", "bob"]);
    let bob: Value = serde_json::from_str(&bob).unwrap();
    let bob_pw = bob["password"]
        .as_str()
        .expect("generated password")
        .to_string();
    let room = cli.ok(
        "alice",
        "correct horse battery",
        &["create-room", "Lunch", "--member", "bob"],
    );

    // Bob follows; Alice sends two messages by room name.
    let mut follow = cli
        .cmd("bob", &bob_pw)
        .args(["follow", "--count", "2", "--timeout", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(follow.stderr.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.contains("following events"), "{ready}");
    let id1 = cli.ok(
        "alice",
        "correct horse battery",
        &["send", "Lunch", "pizza?"],
    );
    let id2 = cli.ok(
        "alice",
        "correct horse battery",
        &["send", &room, "at noon"],
    );
    let status = wait_timeout(&mut follow, Duration::from_secs(20));
    assert!(status.success());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut follow.stdout.take().unwrap(), &mut out).unwrap();
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{out}");
    assert_eq!(events[0]["type"], "TextMessagesCreated");
    assert_eq!(events[0]["data"]["messages"][0]["text"], "pizza?");
    assert_eq!(
        events[0]["data"]["messages"][0]["messageId"].to_string(),
        id1
    );
    assert_eq!(events[1]["data"]["messages"][0]["text"], "at noon");
    assert_eq!(
        events[1]["data"]["messages"][0]["messageId"].to_string(),
        id2
    );

    // History, comment, read, delete, as Bob.
    let history = cli.ok("bob", &bob_pw, &["history", "Lunch"]);
    assert!(
        history.contains("pizza?") && history.contains("at noon"),
        "{history}"
    );
    let last1 = cli.ok(
        "bob",
        &bob_pw,
        &["--json", "history", "Lunch", "--limit", "1"],
    );
    let last1: Value = serde_json::from_str(&last1).unwrap();
    assert_eq!(last1.as_array().unwrap().len(), 1);
    assert_eq!(last1[0]["text"], "at noon");
    let before: Value = serde_json::from_str(&cli.ok(
        "bob",
        &bob_pw,
        &["--json", "history", "Lunch", "--before", &id2],
    ))
    .unwrap();
    assert_eq!(before[0]["text"], "pizza?");
    let comment = cli.ok("bob", &bob_pw, &["comment", &id1, "yes please"]);
    assert!(comment.parse::<u64>().is_ok());
    cli.ok("bob", &bob_pw, &["read", &id1]);
    let fails = cli.fails("bob", &bob_pw, &["delete", &id1]);
    assert!(fails.contains("403"), "{fails}");
    cli.ok("alice", "correct horse battery", &["delete", &id1]);
    let history = cli.ok("bob", &bob_pw, &["history", "Lunch"]);
    assert!(!history.contains("pizza?"), "{history}");

    // Tokens: CONFAB_TOKEN works in place of a password.
    let token = cli.ok("bob", &bob_pw, &["token"]);
    let out = cli
        .cmd("nobody", "wrong")
        .env("CONFAB_TOKEN", &token)
        .args(["--json", "rooms"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rooms: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rooms[0]["displayName"], "Lunch");
}

#[test]
fn trust_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    let cli = Cli::new(&server, tmp.path());
    let pw = server.admin_password();
    // A pinned fingerprint in any case, with or without colons.
    let fp = server.fingerprint.to_lowercase();
    cli.ok("admin", &pw, &["--fingerprint", &fp, "rooms"]);
    cli.ok(
        "admin",
        &pw,
        &["--fingerprint", &fp.replace(':', ""), "rooms"],
    );
    let wrong = "AB".repeat(32);
    let err = cli.fails("admin", &pw, &["--fingerprint", &wrong, "rooms"]);
    assert!(err.contains("does not match --fingerprint"), "{err}");
    // A remembered certificate that changed is refused.
    std::fs::write(&cli.known, format!("{} {}\n", server.addr, wrong)).unwrap();
    let err = cli.fails("admin", &pw, &["rooms"]);
    assert!(
        err.contains("has CHANGED") && err.contains(&cli.known.to_string_lossy().to_string()),
        "{err}"
    );
    // Wrong password and missing password (once the kept login session is ended: until
    // then no password is asked for).
    cli.ok("admin", &pw, &["--insecure", "logout"]);
    let err = cli.fails("admin", "nope", &["--insecure", "rooms"]);
    assert!(
        err.contains("The username or password is invalid."),
        "{err}"
    );
    let out = Command::new(CLI_BIN)
        .env_remove("CONFAB_PASSWORD")
        .env_remove("CONFAB_TOKEN")
        .args(["--server", &server.addr, "--insecure", "rooms"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no password"));
}

#[test]
fn files_unread_and_permissions_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    let cli = Cli::new(&server, tmp.path());
    let pw = server.admin_password();
    let bob: Value =
        serde_json::from_str(&cli.ok("admin", &pw, &["--json", "create-user", "bob"])).unwrap();
    let bob_pw = bob["password"].as_str().unwrap().to_string();
    cli.ok("admin", &pw, &["create-room", "Docs", "--member", "bob"]);
    let id = cli.ok("admin", &pw, &["send", "Docs", "the report"]);
    let file = tmp.path().join("report.pdf");
    std::fs::write(&file, b"%PDF-1.4 not really").unwrap();
    let up: Value = serde_json::from_str(&cli.ok(
        "admin",
        &pw,
        &["--json", "upload", &id, &file.to_string_lossy()],
    ))
    .unwrap();
    let att = up[0]["attachmentId"].to_string();
    let out = tmp.path().join("copy.pdf");
    let said = cli.ok("bob", &bob_pw, &["download", &att, &out.to_string_lossy()]);
    assert!(said.contains("sha1 verified"), "{said}");
    assert_eq!(std::fs::read(&out).unwrap(), b"%PDF-1.4 not really");
    let unread: Value =
        serde_json::from_str(&cli.ok("bob", &bob_pw, &["--json", "unread"])).unwrap();
    assert_eq!(unread[0]["displayName"], "Docs");
    assert_eq!(unread[0]["unreadMessageCount"], 1);
    let perms: Value =
        serde_json::from_str(&cli.ok("bob", &bob_pw, &["--json", "permissions", "Docs"])).unwrap();
    assert_eq!(perms["canSendMessagesInMainThread"], true);
    cli.ok("bob", &bob_pw, &["read", &id]);
    assert_eq!(cli.ok("bob", &bob_pw, &["--json", "unread"]), "[]");
}

#[test]
fn sync_keeps_a_local_copy_drops_a_lost_room_and_brings_it_back_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    let cli = Cli::new(&server, tmp.path());
    let pw = server.admin_password();
    let bob: Value =
        serde_json::from_str(&cli.ok("admin", &pw, &["--json", "create-user", "bob"])).unwrap();
    let bob_pw = bob["password"].as_str().unwrap().to_string();
    let store = tmp.path().join("bob-local").to_string_lossy().to_string();
    cli.ok("admin", &pw, &["create-room", "Plans", "--member", "bob"]);
    let m1 = cli.ok("admin", &pw, &["send", "Plans", "first plan"]);
    let m2 = cli.ok("admin", &pw, &["send", "Plans", "second plan"]);
    cli.ok("admin", &pw, &["comment", &m1, "a thought"]);
    let sync = |label: &str| -> Value {
        let out = cli.ok("bob", &bob_pw, &["--json", "sync", "--store", &store]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{label}: {e}: {out}"))
    };
    let local = || {
        cli.ok(
            "bob",
            "unused",
            &["history", "Plans", "--local", "--store", &store],
        )
    };

    let s = sync("initial");
    assert_eq!(s["roomsAdded"], 1);
    let h = local();
    assert!(h.contains("first plan") && h.contains("second plan"), "{h}");

    // Changes arrive: a new message, an edit, a deletion.
    let m3 = cli.ok("admin", &pw, &["send", "Plans", "third plan"]);
    cli.ok("admin", &pw, &["edit", &m1, "first plan (revised)"]);
    cli.ok("admin", &pw, &["delete", &m2]);
    let s = sync("changes");
    assert!(s["messagesStored"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(s["messagesDeleted"], 1);
    let h = local();
    assert!(
        h.contains("first plan (revised)")
            && h.contains("third plan")
            && !h.contains("second plan"),
        "{h}"
    );

    // Removed: the room and its history leave the local store.
    cli.ok("admin", &pw, &["remove-member", "Plans", "bob"]);
    let m4 = cli.ok("admin", &pw, &["send", "Plans", "said while bob was away"]);
    let s = sync("removed");
    assert_eq!(s["roomsRemoved"], 1);
    let out = cli
        .cmd("bob", "unused")
        .args(["history", "Plans", "--local", "--store", &store])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no room named 'Plans'"));

    // Re-added: the whole history comes back, including what was said meanwhile.
    cli.ok("admin", &pw, &["add-member", "Plans", "bob"]);
    let s = sync("re-added");
    assert_eq!(s["roomsAdded"], 1);
    let h: Value = serde_json::from_str(&cli.ok(
        "bob",
        "unused",
        &["--json", "history", "Plans", "--local", "--store", &store],
    ))
    .unwrap();
    let ids: Vec<String> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["messageId"].to_string())
        .collect();
    assert_eq!(ids, vec![m1.clone(), m3, m4]);
    assert_eq!(h[0]["text"], "first plan (revised)");
    assert_eq!(h[0]["commentCount"], 1);
    // Nothing new: an empty sync.
    let s = sync("idle");
    assert_eq!(
        (s["roomsAdded"].as_u64(), s["messagesStored"].as_u64()),
        (Some(0), Some(0))
    );
}

#[actix_rt::test]
async fn permissions_moderators_and_join_links_from_the_command_line() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::new(&server, tmp.path());
    let admin_pw = server.admin_password();
    let mut admin = server.admin().await;
    server.user(&mut admin, "mia").await;
    server.user(&mut admin, "noa").await;
    let mia = ("mia", "mia-password-123");
    let noa = ("noa", "noa-password-123");
    cli.ok(mia.0, mia.1, &["create-room", "Crew", "--member", "noa"]);

    // A room-level restriction by the moderator, seen by the member and enforced.
    cli.ok(
        mia.0,
        mia.1,
        &[
            "set-permission",
            "--room",
            "Crew",
            "canSendMessagesInMainThread",
            "off",
        ],
    );
    let flags = cli.ok(noa.0, noa.1, &["permissions", "Crew"]);
    assert!(
        flags.contains("canSendMessagesInMainThread\tfalse"),
        "{flags}"
    );
    let err = cli.fails(noa.0, noa.1, &["send", "Crew", "hello"]);
    assert!(err.contains("canSendMessagesInMainThread"), "{err}");
    // The moderator cannot grant what the administrator switched off server-wide.
    cli.ok(
        "admin",
        &admin_pw,
        &["set-permission", "canCreateMeetings", "off", "--global"],
    );
    let err = cli.fails(
        mia.0,
        mia.1,
        &[
            "set-permission",
            "--room",
            "Crew",
            "canCreateMeetings",
            "on",
        ],
    );
    assert!(err.contains("cannot grant"), "{err}");
    cli.ok(
        mia.0,
        mia.1,
        &[
            "set-permission",
            "--room",
            "Crew",
            "canSendMessagesInMainThread",
            "inherit",
        ],
    );
    cli.ok(noa.0, noa.1, &["send", "Crew", "hello"]);

    // Moderator role and the join link.
    cli.ok(mia.0, mia.1, &["moderator", "Crew", "noa"]);
    let out = cli.ok(noa.0, noa.1, &["room-options", "Crew", "--join-link", "on"]);
    let code = out.rsplit("join code: ").next().unwrap().trim().to_string();
    assert_eq!(code.len(), 32, "{out}");
    server.user(&mut admin, "ola").await;
    let joined = cli.ok("ola", "ola-password-123", &["join", &code]);
    assert!(joined.contains("Crew"), "{joined}");
    let history = cli.ok("ola", "ola-password-123", &["history", "Crew"]);
    assert!(
        history.contains("hello"),
        "a joiner gets the history: {history}"
    );
}

/// Finding 5 of the accounts issue: a member's message text and room names reach another
/// member's terminal with their escape sequences shown, not obeyed.
#[test]
fn terminal_escapes_from_other_members_are_shown_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    let cli = Cli::new(&server, tmp.path());
    let pw = server.admin_password();
    let bob: Value =
        serde_json::from_str(&cli.ok("admin", &pw, &["--json", "create-user", "bob"])).unwrap();
    let bob_pw = bob["password"].as_str().unwrap().to_string();
    let room = "Ops\x1b]0;owned\x07";
    cli.ok("admin", &pw, &["create-room", room, "--member", "bob"]);
    let text = "hi\x1b[2J\x1b[31m red \u{9b}1;1H\rforged line";
    cli.ok("admin", &pw, &["send", room, text]);
    for args in [&["history", room][..], &["rooms"][..], &["unread"][..]] {
        let out = cli.ok("bob", &bob_pw, args);
        assert!(
            !out.chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "confab {args:?} printed raw control characters: {out:?}"
        );
        if args[0] != "history" {
            assert!(out.contains("Ops\\x1b]0;owned\\x07"), "{args:?}: {out}");
        }
    }
    let history = cli.ok("bob", &bob_pw, &["history", room]);
    assert!(
        history.contains("hi\\x1b[2J\\x1b[31m red \\x9b1;1H\\x0dforged line"),
        "{history}"
    );
    // --json is unchanged: the text comes back exactly as sent.
    let json: Value =
        serde_json::from_str(&cli.ok("bob", &bob_pw, &["--json", "history", room])).unwrap();
    assert_eq!(json[0]["text"], text);
}

/// Finding 7 from the command line: one kept login session for many commands, `passwd`,
/// `sessions`, `logout --all`, and the administrators' account commands.
#[test]
fn account_commands_and_one_kept_session() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    let cli = Cli::new(&server, tmp.path());
    let pw = server.admin_password();
    let frank: Value =
        serde_json::from_str(&cli.ok("admin", &pw, &["--json", "create-user", "frank"])).unwrap();
    let frank_pw = frank["password"].as_str().unwrap().to_string();
    for _ in 0..10 {
        cli.ok("frank", &frank_pw, &["status"]);
    }
    let sessions: Value =
        serde_json::from_str(&cli.ok("frank", &frank_pw, &["--json", "sessions"])).unwrap();
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
    let kept = std::fs::metadata(tmp.path().join("sessions")).expect("kept session file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(kept.permissions().mode() & 0o777, 0o600);
    // The kept session works without a password.
    let out = cli
        .cmd("frank", "")
        .env_remove("CONFAB_PASSWORD")
        .arg("status")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // passwd: current and new password from the environment (a terminal would be asked).
    let out = cli
        .cmd("frank", &frank_pw)
        .env("CONFAB_NEW_PASSWORD", "franks-new-password")
        .arg("passwd")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("password changed"));
    cli.ok("frank", "franks-new-password", &["status"]);
    let bad = cli
        .cmd("frank", "wrong-current-password")
        .env("CONFAB_NEW_PASSWORD", "another-new-password")
        .arg("passwd")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("current password is wrong"));
    // logout --all ends the kept session: the old password no longer logs in, the new does.
    cli.ok("frank", "franks-new-password", &["logout", "--all"]);
    let err = cli.fails("frank", &frank_pw, &["status"]);
    assert!(err.contains("invalid"), "{err}");
    cli.ok("frank", "franks-new-password", &["status"]);
    cli.ok(
        "frank",
        "franks-new-password",
        &["display-name", "Frank Zappa"],
    );
    // Administrators.
    cli.ok(
        "admin",
        &pw,
        &["create-room", "Secret", "--member", "frank"],
    );
    let all = cli.ok("admin", &pw, &["rooms", "--all"]);
    assert!(all.contains("Secret") && all.contains("2 members"), "{all}");
    let err = cli.fails("frank", "franks-new-password", &["rooms", "--all"]);
    assert!(err.contains("administrator"), "{err}");
    cli.ok("admin", &pw, &["grant-admin", "frank"]);
    let users: Value = serde_json::from_str(&cli.ok("admin", &pw, &["--json", "users"])).unwrap();
    let f = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userName"] == "frank")
        .unwrap()
        .clone();
    assert_eq!(f["isAdmin"], true);
    assert_eq!(f["displayName"], "Frank Zappa");
    cli.ok("admin", &pw, &["revoke-admin", "frank"]);
    cli.ok("admin", &pw, &["rename-user", "frank", "francis"]);
    cli.ok("francis", "franks-new-password", &["status"]);
    let said = cli.ok("admin", &pw, &["remove-user", "francis"]);
    assert!(said.contains("left 1 room"), "{said}");
    let err = cli.fails("francis", "franks-new-password", &["status"]);
    assert!(err.contains("removed"), "{err}");
}

/// A certificate signed by `ca` (or self-signed CA when `ca` is `None`), valid from
/// `from_days` to `to_days` relative to now, for `names` (DNS) and `ips`.
fn make_cert(
    ca: Option<(
        &openssl::x509::X509,
        &openssl::pkey::PKey<openssl::pkey::Private>,
    )>,
    cn: &str,
    names: &[&str],
    ips: &[&str],
    from_days: i64,
    to_days: i64,
) -> (
    openssl::x509::X509,
    openssl::pkey::PKey<openssl::pkey::Private>,
) {
    use openssl::asn1::Asn1Time;
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    let key = openssl::pkey::PKey::from_ec_key(
        openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = openssl::x509::X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(rand_serial())
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    b.set_not_before(&Asn1Time::from_unix(now + from_days * 86_400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + to_days * 86_400).unwrap())
        .unwrap();
    b.set_pubkey(&key).unwrap();
    match ca {
        None => {
            b.set_issuer_name(&name).unwrap();
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.sign(&key, openssl::hash::MessageDigest::sha256())
                .unwrap();
        }
        Some((ca_cert, ca_key)) => {
            b.set_issuer_name(ca_cert.subject_name()).unwrap();
            let mut san = SubjectAlternativeName::new();
            for n in names {
                san.dns(n);
            }
            for ip in ips {
                san.ip(ip);
            }
            let ext = san.build(&b.x509v3_context(Some(ca_cert), None)).unwrap();
            b.append_extension(ext).unwrap();
            b.sign(ca_key, openssl::hash::MessageDigest::sha256())
                .unwrap();
        }
    }
    (b.build(), key)
}

fn rand_serial() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::Instant::now().elapsed().as_nanos() as u64);
    (h.finish() as u32) | 1
}

fn write_pair(
    dir: &Path,
    stem: &str,
    pair: &(
        openssl::x509::X509,
        openssl::pkey::PKey<openssl::pkey::Private>,
    ),
) -> (String, String) {
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, pair.0.to_pem().unwrap()).unwrap();
    std::fs::write(&key, pair.1.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert.to_string_lossy().into(), key.to_string_lossy().into())
}

/// Finding 8: TLS problems are told in one human line naming the cause; `--system-ca`;
/// a CA-verified certificate is trusted on first use without a pin (so renewing it is not
/// a "change"); the server warns about its own expired certificate, in the log and health.
#[test]
fn tls_problems_are_explained_and_ca_verified_servers_are_not_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = make_cert(None, "Confab Test CA", &[], &[], -1, 365);
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.0.to_pem().unwrap()).unwrap();
    let ca_ref = Some((&ca.0, &ca.1));
    let expired = write_pair(
        dir,
        "expired",
        &make_cert(ca_ref, "old", &["localhost"], &["127.0.0.1"], -30, -2),
    );
    let wrong = write_pair(
        dir,
        "wrong",
        &make_cert(ca_ref, "other", &["other.example"], &[], -1, 90),
    );
    let good = write_pair(
        dir,
        "good",
        &make_cert(ca_ref, "good", &["localhost"], &["127.0.0.1"], -1, 90),
    );
    let renewed = write_pair(
        dir,
        "renewed",
        &make_cert(ca_ref, "good", &["localhost"], &["127.0.0.1"], -1, 90),
    );
    let start = |name: &str, pair: &(String, String)| {
        TestServer::start_in(
            &dir.join(name),
            &["--ssl-certificate", &pair.0, "--ssl-private-key", &pair.1],
        )
    };
    let run = |server: &TestServer, env: &[(&str, &str)], args: &[&str]| {
        let cli = Cli::new(server, dir);
        let mut c = cli.cmd("admin", &server.admin_password());
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let ca_file = ca_pem.to_str().unwrap();

    // An expired certificate: the date, in words; and the server says so itself.
    let old = start("s-expired", &expired);
    let (ok, err) = run(&old, &[], &["--ca-file", ca_file, "status"]);
    assert!(!ok && err.contains("expired on"), "{err}");
    assert!(!err.contains("statem"), "no raw OpenSSL text: {err}");
    assert!(old.log_text().contains("EXPIRED"), "{}", old.log_text());
    let health: serde_json::Value = serde_json::from_str(&Cli::new(&old, dir).ok(
        "admin",
        &old.admin_password(),
        &["--insecure", "--json", "health"],
    ))
    .unwrap();
    assert_eq!(health["certificate"]["expired"], true, "{health}");
    // A name mismatch: the names the certificate has.
    let other = start("s-wrong", &wrong);
    let (ok, err) = run(&other, &[], &["--ca-file", ca_file, "status"]);
    assert!(!ok && err.contains("is for other.example"), "{err}");
    // An unknown CA, with --system-ca.
    let server = start("s-good", &good);
    let (ok, err) = run(
        &server,
        &[("SSL_CERT_FILE", "/nonexistent")],
        &["--system-ca", "status"],
    );
    assert!(
        !ok && err.contains("signed by a CA you have not trusted"),
        "{err}"
    );
    // A missing CA file.
    let (ok, err) = run(
        &server,
        &[],
        &["--ca-file", "/nonexistent/ca.pem", "status"],
    );
    assert!(
        !ok && err.contains("/nonexistent/ca.pem does not exist"),
        "{err}"
    );
    // The right CA: fine, with --ca-file or as the system's store (SSL_CERT_FILE).
    assert!(run(&server, &[], &["--ca-file", ca_file, "status"]).0);
    let system = [("SSL_CERT_FILE", ca_file)];
    assert!(run(&server, &system, &["--system-ca", "status"]).0);
    // Trust on first use of a CA-verified server pins nothing, so a renewal is no alarm.
    let known = dir.join("known_servers");
    let _ = std::fs::remove_file(&known);
    let (ok, err) = run(&server, &system, &["status"]);
    assert!(ok, "{err}");
    assert!(
        !known.exists()
            || !std::fs::read_to_string(&known)
                .unwrap()
                .contains(&server.addr)
    );
    let mut server = server;
    server.stop();
    let renewed_server = TestServer::start_in(
        &dir.join("s-good"),
        &[
            "--ssl-certificate",
            &renewed.0,
            "--ssl-private-key",
            &renewed.1,
        ],
    );
    // As if the old certificate had been pinned at this address: a renewal by the CA the
    // client trusts is no alarm.
    std::fs::write(
        &known,
        format!("{} {}\n", renewed_server.addr, "AB".repeat(32)),
    )
    .unwrap();
    let (ok, err) = run(&renewed_server, &system, &["status"]);
    assert!(ok && !err.contains("CHANGED"), "{err}");
}

/// Two-factor authentication from the command line: the code from CONFAB_TOTP_CODE, a
/// clear error without one, and `confab totp disable` with a recovery code.
#[actix_rt::test]
async fn totp_logins_and_disable_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    let cli = Cli::new(&server, tmp.path());
    let mut admin = server.admin().await;
    let (id, mut gina) = server.user(&mut admin, "gina").await;
    let v = gina.totp_begin(id).await.expect("begin");
    let secret = v["secret"].as_str().unwrap().to_string();
    let code = |at: u64| {
        use totp_rs::{Algorithm, Secret, TOTP};
        TOTP::new(
            Algorithm::SHA1,
            6,
            1,
            30,
            Secret::Encoded(secret.clone()).to_bytes().unwrap(),
            None,
            "g".into(),
        )
        .unwrap()
        .generate(at)
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let recovery = gina.totp_confirm(id, &code(now)).await.expect("confirm");
    let pw = "gina-password-123";
    let err = cli.fails("gina", pw, &["status"]);
    assert!(
        err.contains("totpCode") && err.contains("CONFAB_TOTP_CODE"),
        "{err}"
    );
    let out = cli
        .cmd("gina", pw)
        .env("CONFAB_TOTP_CODE", code(now + 30))
        .arg("status")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The login is kept: the next command needs no code.
    cli.ok("gina", pw, &["status"]);
    let out = cli
        .cmd("gina", pw)
        .env("CONFAB_TOTP_CODE", &recovery[0])
        .args(["totp", "disable"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli.ok("gina", pw, &["logout"]);
    cli.ok("gina", pw, &["status"]);
}

/// The shell lines of the README's "With the `confab` command-line client" block, without
/// their comments.
fn readme_quick_start() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("### With the `confab` command-line client")
        .nth(1)
        .expect("the section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("its code block");
    block
        .lines()
        .map(|l| l.split("  #").next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn the_readme_quick_start_works_as_written() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    // The README runs in the folder the server was started in: `confab-data` is its storage.
    std::os::unix::fs::symlink(&server.dir, work.path().join("confab-data")).unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let bins = Path::new(CLI_BIN).parent().unwrap().to_path_buf();
    let mut env: Vec<(String, String)> = vec![
        ("HOME".into(), home.to_string_lossy().into()),
        // A fresh shell: the binaries come on PATH only through the README's own line.
        ("PATH".into(), "/usr/bin:/bin".into()),
        // No terminal to type the new password into.
        ("CONFAB_NEW_PASSWORD".into(), "a-new-admin-password".into()),
    ];
    let lines = readme_quick_start();
    assert!(lines.iter().any(|l| l.contains("passwd")), "{lines:?}");
    let mut alice_password = String::new();
    for line in &lines {
        if line.starts_with("cargo build") {
            continue; // built already: these are the binaries on PATH
        }
        if let Some(assign) = line.strip_prefix("export ") {
            let (name, value) = assign.split_once('=').unwrap();
            let value = match name {
                // The test's server listens on a port of its own.
                "CONFAB_SERVER" => server.addr.clone(),
                // `$PWD/target/release` of the checkout: where this build's binaries are.
                "PATH" => {
                    let before = env
                        .iter()
                        .rev()
                        .find(|(k, _)| k == "PATH")
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    value
                        .trim_matches('"')
                        .replace("$PWD/target/release", &bins.to_string_lossy())
                        .replace("$PATH", &before)
                }
                _ => value.trim_matches('"').to_string(),
            };
            env.push((name.to_string(), value));
            continue;
        }
        let line = line.replace("ALICES-PASSWORD", &alice_password);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&line)
            .current_dir(work.path())
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null());
        if line.ends_with(" follow") {
            // Runs until stopped: it must show the next message as a JSON line.
            let mut follow = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut ready = String::new();
            BufReader::new(follow.stderr.take().unwrap())
                .read_line(&mut ready)
                .unwrap();
            assert!(ready.contains("following"), "{line}: {ready}");
            let send = Command::new("sh")
                .arg("-c")
                .arg("confab send General 'after the quick start'")
                .current_dir(work.path())
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .output()
                .unwrap();
            assert!(
                send.status.success(),
                "{}",
                String::from_utf8_lossy(&send.stderr)
            );
            // The first lines may be events of the earlier sends (a room's `RoomUpdated`
            // follows its messages by about a second); the new message must come.
            let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
            let mut seen = Vec::new();
            let found = loop {
                let Some(Ok(event)) = lines.next() else {
                    break false;
                };
                let event: Value = serde_json::from_str(&event)
                    .unwrap_or_else(|e| panic!("{line}: not a JSON line ({e}): {event}"));
                if event["type"] == "TextMessagesCreated" {
                    break event.to_string().contains("after the quick start");
                }
                seen.push(event);
                if seen.len() > 5 {
                    break false;
                }
            };
            let _ = follow.kill();
            let _ = follow.wait();
            assert!(
                found,
                "no TextMessagesCreated with the message; before it: {seen:?}"
            );
            continue;
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{line}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if line.starts_with("confab create-user alice") {
            alice_password = stdout
                .lines()
                .find_map(|l| l.strip_prefix("password: "))
                .expect("a generated password")
                .trim()
                .to_string();
        }
        if line.starts_with("confab history") {
            assert!(stdout.contains("Hello, team"), "{stdout}");
        }
    }
    assert!(!alice_password.is_empty());
}

/// `confab push register|list|unregister|test`.
#[test]
fn push_devices_from_the_command_line() {
    use base64::Engine;
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    let cli = Cli::new(&server, tmp.path());
    let pw = server.admin_password();
    let id = cli.ok(
        "admin",
        &pw,
        &[
            "push",
            "register",
            "--platform",
            "fcm",
            "--token",
            "cli-token-1",
        ],
    );
    let id: u64 = id.parse().expect("a device id");
    let err = cli.fails("admin", &pw, &["push", "register", "--platform", "fcm"]);
    assert!(err.contains("needs a token"), "{err}");
    // A browser's subscription, from a file.
    let (keypair, auth) = ece::generate_keypair_and_auth_secret().unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let sub = tmp.path().join("subscription.json");
    std::fs::write(
        &sub,
        serde_json::json!({
            "endpoint": "https://push.example.invalid/send/abc",
            "expirationTime": null,
            "keys": { "p256dh": b64(&keypair.pub_as_raw().unwrap()), "auth": b64(&auth) },
        })
        .to_string(),
    )
    .unwrap();
    let web: u64 = cli
        .ok(
            "admin",
            &pw,
            &[
                "push",
                "register",
                "--platform",
                "webpush",
                "--subscription",
                sub.to_str().unwrap(),
            ],
        )
        .parse()
        .unwrap();
    let list = cli.ok("admin", &pw, &["push", "list"]);
    assert!(list.contains(&format!("{id}\tfcm")), "{list}");
    assert!(
        list.contains(&format!("{web}\twebpush\tpush.example.invalid")),
        "{list}"
    );
    cli.ok("admin", &pw, &["push", "unregister", &id.to_string()]);
    let list = cli.ok("admin", &pw, &["push", "list"]);
    assert!(
        !list.contains(&id.to_string()) && list.contains(&web.to_string()),
        "{list}"
    );
    let said = cli.ok("admin", &pw, &["push", "test"]);
    assert!(said.contains("1 device"), "{said}");
}
