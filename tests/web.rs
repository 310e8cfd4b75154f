//! Confab Web, the client embedded in the binary, in headless Chromium (playwright-core
//! from npm drives Debian's chromium): served at `/` with a strict CSP, precompressed and
//! revalidated by ETag; two people log in, chat live, see each other typing and online then
//! offline, react, comment, edit and delete live, find a message by search; a removed
//! member's room disappears, a suspended user is sent back to the login form, and a hostile
//! message runs no script. Screenshots go to `target/web-screenshots/` (not committed).

mod util;

use serde_json::json;
use util::*;

#[test]
fn the_embedded_client_is_served_with_a_strict_policy_and_caching() {
    let server = TestServer::start();
    let get = |path: &str, headers: &[(&str, &str)]| {
        raw_https(&server.addr, &http_request("GET", path, headers, b""))
    };
    let page = get("/", &[]);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let lower = page.to_lowercase();
    assert!(
        lower.contains("content-security-policy: default-src 'self'; script-src 'self';"),
        "{page}"
    );
    assert!(lower.contains("content-type: text/html"), "{page}");
    assert!(
        page.contains(r#"<script type="module" src="/js/main.mjs"></script>"#),
        "{page}"
    );
    let etag = page
        .lines()
        .find_map(|l| {
            l.to_lowercase()
                .starts_with("etag:")
                .then(|| l[5..].trim().to_string())
        })
        .expect("an ETag");
    let again = get("/index.html", &[("If-None-Match", &etag)]);
    assert!(again.starts_with("HTTP/1.1 304"), "{again}");
    let zipped = get("/js/main.mjs", &[("Accept-Encoding", "gzip, br")]);
    assert!(
        zipped.to_lowercase().contains("content-encoding: gzip"),
        "{zipped}"
    );
    assert!(
        zipped
            .to_lowercase()
            .contains("content-type: text/javascript"),
        "{zipped}"
    );
    // Nothing else is served, and the API's 404s stay JSON.
    let missing = get("/no/such/file.js", &[]);
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(missing.contains("errorText"), "{missing}");
    let post = raw_https(
        &server.addr,
        &http_request("POST", "/index.html", &[], b"x"),
    );
    assert!(post.starts_with("HTTP/1.1 404"), "{post}");
}

#[test]
fn two_people_use_the_team_client_in_chromium_and_a_hostile_message_runs_nothing() {
    let browser = browser_tools();
    let server = TestServer::start();
    let system = actix_rt::System::new();
    let (room, ids) = system.block_on(async {
        let mut admin = server.admin().await;
        let (alice, _) = server.user(&mut admin, "alice").await;
        let (bob, _) = server.user(&mut admin, "bob").await;
        let (mallory, mut m) = server.user(&mut admin, "mallory").await;
        let room = admin.create_room("General", &[alice, bob, mallory]).await.unwrap();
        let (status, v) = m
            .request_raw(
                awc::http::Method::PATCH,
                &format!("/api/v1/users/{mallory}"),
                Some(serde_json::to_vec(&json!({ "displayName": "<b onmouseover=alert(1)>Mallory</b>" })).unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{v}");
        m.send_text(
            room,
            "<script>window.__pwned=1</script> <img src=x onerror=\"window.__pwned=2\"> [click](javascript:window.__pwned=3) javascript:window.__pwned=4 https://example.org/ok **bold**",
        )
        .await
        .unwrap();
        (room, json!({ "alice": alice, "bob": bob, "mallory": mallory }))
    });
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let port = server.addr.rsplit(':').next().unwrap();
    let files = tempfile::tempdir().unwrap();
    let image = files.path().join("photo.png");
    std::fs::write(&image, png(640, 400)).unwrap();
    let config = json!({
        "image": image,
        "server": format!("localhost:{port}"),
        "room": "General",
        "roomId": room,
        "shots": shots,
        "adminPassword": server.admin_password(),
        "ids": ids,
    });
    let out = run_browser_script(&browser, "web.mjs", &config);
    assert_eq!(out["ok"], true, "{out:#}");
    assert!(
        out["csp"]
            .as_str()
            .unwrap_or("")
            .contains("script-src 'self'"),
        "{out}"
    );
    assert!(
        out["multiline"]
            .as_str()
            .unwrap()
            .contains("first line\nsecond line"),
        "{out}"
    );
    assert!(
        out["hostileShown"]
            .as_str()
            .unwrap()
            .contains("<script>window.__pwned=1</script>"),
        "{out}"
    );
    assert!(
        out["hostileShown"]
            .as_str()
            .unwrap()
            .contains("<b onmouseover=alert(1)>Mallory</b>"),
        "{out}"
    );
    assert_eq!(out["pwned"], serde_json::Value::Null, "{out}");
    assert_eq!(out["scriptsInTimeline"], 0, "{out}");
    assert_eq!(out["javascriptLinks"], 0, "{out}");
    assert_eq!(out["safeLinks"], 1, "{out}");
    assert!(out["dialogs"].is_null(), "{out}");
    assert!(out["pageErrors"].is_null(), "{out}");
    assert_eq!(out["searchMarks"], json!(["second"]), "{out}");
    // axe-core on every view: no serious or critical violation.
    for view in [
        "login",
        "timeline",
        "search",
        "members",
        "comments",
        "board",
        "meetings",
        "roomSettings",
        "settings",
        "admin",
        "phone",
        "dark",
    ] {
        assert_eq!(
            out["axe"][view],
            json!([]),
            "{view}: {:#}",
            out["axe"][view]
        );
    }
    assert_eq!(out["daySeparators"], 1, "{out}");
    assert_eq!(out["progressSeen"], true, "{out}");
    assert_eq!(out["thumbnailWidth"], 256, "{out}");
    assert!(
        out["downloadHref"]
            .as_str()
            .unwrap()
            .ends_with("/photo.png"),
        "{out}"
    );
    assert_eq!(out["removeStatus"], 200, "{out}");
    assert_eq!(out["cardsAssignedToAlice"], 0, "{out}");
    assert_eq!(out["cardsAssignedToBob"], 1, "{out}");
    assert_eq!(out["meetingDays"], 1, "{out}");
    assert!(
        out["refusedMove"]
            .as_str()
            .unwrap()
            .contains("canChangePropertiesOfUnrelatedIssues"),
        "{out}"
    );
    assert_eq!(out["unreadMarkers"], 1, "{out}");
    assert_eq!(out["afterReconnect"], 2, "{out}");
    assert_eq!(out["firstRoomOfBob"], "General, pinned", "{out}");
    assert!(out["phoneOverflow"].as_i64().unwrap() <= 0, "{out}");
    assert_eq!(out["eventStreams"], 2, "{out}");
    assert_eq!(out["historyReloadsOnReconnect"], 0, "{out}");
    assert_eq!(
        out["notified"],
        json!([{ "title": "bob in General", "body": "hel" }]),
        "{out}"
    );
    assert!(
        out["serviceWorker"].as_str().unwrap().ends_with("/sw.js"),
        "{out}"
    );
    assert_eq!(out["renamed"], "Mallory M", "{out}");
    assert!(
        out["messageLink"]
            .as_str()
            .unwrap()
            .contains(&format!("/#/room/{room}/message/")),
        "{out}"
    );
    assert!(out["offlineAfterMs"].as_u64().unwrap() < 60_000, "{out}");
    for shot in [
        "timeline.png",
        "search.png",
        "files.png",
        "comments.png",
        "login.png",
        "board.png",
        "meetings.png",
        "room-settings.png",
        "settings.png",
        "admin.png",
        "phone.png",
        "dark.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot}");
    }
}

#[test]
fn the_browser_and_confab_voice_hear_each_other() {
    let browser = browser_tools();
    // Keys renewed every 2 s: the page must follow VoiceKey through the whole call.
    let storage = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(storage.path(), &["--voice-key-rotation", "2"]);
    let system = actix_rt::System::new();
    system.block_on(async {
        let mut admin = server.admin().await;
        let (alice, _) = server.user(&mut admin, "alice").await;
        let (bob, _) = server.user(&mut admin, "bob").await;
        let (carol, _) = server.user(&mut admin, "carol").await;
        admin
            .create_room("Huddle", &[alice, bob, carol])
            .await
            .unwrap();
    });
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let home = tempfile::tempdir().unwrap();
    let port = server.addr.rsplit(':').next().unwrap();
    let config = json!({
        "server": format!("localhost:{port}"),
        "room": "Huddle",
        "shots": shots,
        "cli": {
            "bin": CLI_BIN,
            "args": ["--server", server.addr, "--fingerprint", server.fingerprint, "--user", "bob",
                     "voice", "Huddle", "--duration", "4"],
            "env": { "CONFAB_PASSWORD": "bob-password-123", "HOME": home.path() },
        },
    });
    let out = run_browser_script(&browser, "voice.mjs", &config);
    assert_eq!(out["ok"], true, "{out:#}");
    assert!(out["pageErrors"].is_null(), "{out}");
    assert_eq!(out["axe"], json!([]), "{out:#}");
    let cli = &out["cli"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    // The CLI sent 4 s of frames at 50 per second over UDP; each page got them over its
    // WebSocket, opened each under its own key.
    let cli_sent = n(&cli["sent"]);
    assert!(cli_sent >= 150, "{cli}");
    // The pages' Opus frames (one per 20 ms from each fake microphone) reached the CLI,
    // authenticated under its key, from two speakers: alice's and carol's participants.
    let heard = cli["receivedPerSpeaker"].as_object().unwrap();
    assert_eq!(heard.len(), 2, "{cli}");
    for from_page in heard.values() {
        assert!(n(&from_page["received"]) >= 150, "{cli}");
    }
    assert_eq!(cli["authFailures"], 0, "{cli}");
    assert!(cli["keyEpochsSeen"].as_array().unwrap().len() >= 2, "{cli}");
    // Each page heard the CLI and the other page, decoded every frame (the other page's
    // real Opus and the CLI's synthetic bytes alike) and dropped none.
    for page in ["browser", "carol"] {
        let s = &out[page];
        assert!(
            n(&s["received"]) >= cli_sent * 9 / 10 + 150,
            "{page} heard too little: {out}"
        );
        assert_eq!(n(&s["undecodable"]), 0, "{page}: {out}");
        assert_eq!(n(&s["dropped"]), 0, "{page}: {out}");
        assert!(
            n(&s["played"]) * 10 >= n(&s["received"]) * 9,
            "{page}: {out}"
        );
    }
    assert_eq!(out["browser"]["capture"], "track-processor", "{out}");
    assert_eq!(out["carol"]["capture"], "worklet", "{out}");
    assert_eq!(out["talkingSeen"], true, "{out}");
    assert!(out["sentWhileMuted"].as_u64().unwrap() <= 2, "{out}");
    assert!(shots.join("voice.png").exists());
}

#[test]
fn a_long_room_scrolls_back_to_its_first_message_with_a_bounded_page() {
    let browser = browser_tools();
    let server = TestServer::start();
    let system = actix_rt::System::new();
    const MESSAGES: usize = 1200;
    system.block_on(async {
        let admin = server.admin().await;
        let mut a = admin.another();
        a.use_token(admin.session_id().unwrap());
        let room = a.create_room("Long room", &[]).await.unwrap();
        // Eight posters; each message's number in its text, so the oldest is known.
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let posters = (0..8).map(|_| {
            let mut c = admin.another();
            c.use_token(admin.session_id().unwrap());
            let next = next.clone();
            async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= MESSAGES {
                        break;
                    }
                    c.send_text(room, &format!("message {i:05}")).await.unwrap();
                }
            }
        });
        futures_util::future::join_all(posters).await;
    });
    let port = server.addr.rsplit(':').next().unwrap();
    let config = json!({
        "server": format!("localhost:{port}"), "user": "admin",
        "password": server.admin_password(), "room": "Long room", "expect": MESSAGES,
    });
    let out = run_browser_script(&browser, "scroll.mjs", &config);
    assert_eq!(out["ok"], true, "{out:#}");
    assert!(out["pageErrors"].is_null(), "{out}");
    assert_eq!(out["reachedOldest"], true, "{out}");
    // Messages are posted concurrently, so the oldest is one of the first few numbers.
    let oldest = out["oldestText"].as_str().unwrap();
    assert!(oldest.starts_with("message 0000"), "{out}");
    // The newest page, then 100 per step: about 11 steps to the first of 1,200 messages,
    // and never more than 300 messages in the page.
    assert!(out["pages"].as_u64().unwrap() >= 10, "{out}");
    assert!(out["maxArticles"].as_u64().unwrap() <= 300, "{out}");
    // "Jump to newest" is one page: a page still on its way for the old window (the click
    // scrolled to the bottom, which asks for newer ones) is dropped, not merged in.
    assert_eq!(out["articlesAtNewest"], 100, "{out}");
    // Three live messages at a full window of the newest 300: the three oldest leave, the
    // list still starts with the button and the first message's day, and stays at the bottom.
    let (before, after) = (&out["liveBefore"], &out["liveAfter"]);
    assert_eq!(before["articles"], 300, "{out}");
    assert_eq!(after["articles"], 300, "{out}");
    assert!(
        after["firstId"].as_u64() > before["firstId"].as_u64(),
        "{out}"
    );
    assert_eq!(after["lastText"], "live 2", "{out}");
    assert_eq!(after["head"][0], "button.plain.more", "{out}");
    assert_eq!(after["head"][1], "div.day", "{out}");
    assert_eq!(after["head"][2], "article", "{out}");
    assert_eq!(after["doubledSeparators"], 0, "{out}");
    assert_eq!(after["atBottom"], true, "{out}");
    // In place: only the three oldest articles left the list, nothing was redrawn.
    assert_eq!(out["liveArticlesRemoved"], 3, "{out}");
}
