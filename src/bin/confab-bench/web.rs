//! The web client's first load: what a browser fetches to show the login form — the page,
//! its stylesheet and every ES module reachable from its script through static imports —
//! as sent (gzip) and as it is, over TLS from the server.

use super::*;

/// `import … from "./x.mjs"` targets in a module, resolved against its path.
fn imports(path: &str, source: &str) -> Vec<String> {
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let mut out = Vec::new();
    for line in source.lines() {
        let line = line.trim();
        if !(line.starts_with("import ") || line.starts_with("} from ")) {
            continue;
        }
        let Some(spec) = line.split(['"', '\'']).nth(1) else {
            continue;
        };
        let mut parts: Vec<&str> = dir.trim_end_matches('/').split('/').collect();
        for piece in spec.split('/') {
            match piece {
                "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        out.push(parts.join("/"));
    }
    out
}

pub(super) async fn run_web_first_load(server: &Server) -> serde_json::Value {
    const GET: awc::http::Method = awc::http::Method::GET;
    let client = Client::new(&server.addr, trust(server)).expect("client");
    let mut queue = vec!["/index.html".to_string()];
    let mut seen = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    let (mut sent, mut raw) = (0usize, 0usize);
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let mut c = client.another();
        let (Ok((status, zipped)), Ok((_, body))) = (
            c.request_bytes_with(GET, &path, None, &[("Accept-Encoding", "gzip")])
                .await,
            c.request_bytes_with(GET, &path, None, &[]).await,
        ) else {
            return json!({ "error": format!("cannot fetch {path}") });
        };
        let gz = zipped.len();
        if status != 200 {
            return json!({ "error": format!("{path}: HTTP {status}") });
        }
        let text = String::from_utf8_lossy(&body).to_string();
        if path.ends_with(".html") {
            for attr in ["src=\"", "href=\""] {
                for piece in text.split(attr).skip(1) {
                    if let Some(target) = piece.split('"').next().filter(|t| t.starts_with('/')) {
                        queue.push(target.to_string());
                    }
                }
            }
        }
        if path.ends_with(".mjs") {
            queue.extend(imports(&path, &text));
        }
        sent += gz;
        raw += body.len();
        files.push(json!({ "path": path, "gzipBytes": gz, "bytes": body.len() }));
    }
    json!({
        "files": files.len(),
        "firstLoadGzipBytes": sent,
        "firstLoadBytes": raw,
        "budgetBytes": 150 * 1024,
        "byFile": files,
    })
}

/// A room of `n` messages scrolled from the newest to the oldest in headless Chromium
/// (`tests/browser/scroll.mjs`, with the npm packages of `tests/browser` installed): the
/// cost of each step and the most DOM the page ever held.
pub(super) async fn run_web_scroll(server: &Server, n: u64, posters: usize) -> serde_json::Value {
    let mut admin = Client::new(&server.addr, trust(server)).expect("client");
    if let Err(e) = admin.login("admin", &server.admin_password).await {
        return json!({ "error": format!("login: {e}") });
    }
    let room = match admin.create_room("Long room", &[]).await {
        Ok(r) => r,
        Err(e) => return json!({ "error": format!("create room: {e}") }),
    };
    let started = Instant::now();
    super::files::fill_room(&admin, room, n, posters).await;
    let fill_secs = started.elapsed().as_secs_f64();
    let browser = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !browser.join("node_modules/playwright-core").exists() {
        let npm = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&browser)
            .status();
        if !npm.is_ok_and(|s| s.success()) {
            return json!({ "error": "npm ci --prefix tests/browser failed (apt-get install nodejs npm chromium)" });
        }
    }
    let port = server.addr.rsplit(':').next().unwrap_or("7777");
    let config = json!({
        "server": format!("localhost:{port}"), "user": "admin", "password": server.admin_password,
        "room": "Long room", "expect": n,
        "profile": std::env::var_os("CONFAB_BENCH_PROFILE").is_some(),
    });
    let run = match Command::new("node")
        .arg(browser.join("scroll.mjs"))
        .arg(config.to_string())
        .output()
    {
        Ok(r) => r,
        Err(e) => return json!({ "error": format!("node: {e}") }),
    };
    let stdout = String::from_utf8_lossy(&run.stdout);
    let mut report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        json!({ "error": format!("scroll.mjs: {stdout} {}", String::from_utf8_lossy(&run.stderr)) })
    });
    report["messages"] = n.into();
    report["fillSeconds"] = ((fill_secs * 10.0).round() / 10.0).into();
    report
}
