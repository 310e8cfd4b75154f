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
            c.get_raw_with(&path, &[("Accept-Encoding", "gzip")]).await,
            c.get_raw_with(&path, &[]).await,
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
