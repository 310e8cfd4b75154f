//! Embeds the web client (`web/`) in the binary: every file with its gzip form and a
//! content hash (its ETag), listed in `$OUT_DIR/web_assets.rs` for `src/api/web.rs`.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("mjs" | "js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json" | "webmanifest") => "application/manifest+json",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

fn main() {
    println!("cargo:rerun-if-changed=web");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let root = Path::new("web");
    let mut list = Vec::new();
    files(root, &mut list);
    let mut code = String::from("pub static ASSETS: &[Asset] = &[\n");
    for (i, path) in list.iter().enumerate() {
        let bytes = std::fs::read(path).expect("read a web/ file");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let raw_name = format!("web{i}.raw");
        let gz_name = format!("web{i}.gz");
        std::fs::write(out_dir.join(&raw_name), &bytes).expect("write");
        std::fs::write(out_dir.join(&gz_name), &gz).expect("write");
        let hash = hex::encode(&Sha256::digest(&bytes)[..12]);
        let rel = path.strip_prefix(root).expect("under web/");
        let url = format!("/{}", rel.to_string_lossy().replace('\\', "/"));
        code.push_str(&format!(
            "    Asset {{ path: {url:?}, content_type: {:?}, etag: \"\\\"{hash}\\\"\", raw: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{raw_name}\")), gzip: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{gz_name}\")) }},\n",
            mime(path)
        ));
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("web_assets.rs"), code).expect("write web_assets.rs");
}
