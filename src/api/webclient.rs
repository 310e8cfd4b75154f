//! Confab Web, the client in the box: the files of `web/`, embedded at build time
//! (`build.rs`) with their gzip form and a content hash, served at `/` unless
//! `--web-root` names a folder to serve instead. Every answer carries a strict
//! Content-Security-Policy: scripts only from this origin, no inline script, no plugins,
//! no framing.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

/// One embedded file.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    /// A strong ETag: a hash of the content.
    pub etag: &'static str,
    pub raw: &'static [u8],
    pub gzip: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The policy every page of the client is held to.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; \
    connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.trim().split(';');
            parts.next().is_some_and(|e| e.trim() == "gzip") && parts.all(|q| q.trim() != "q=0")
        })
}

/// `GET` of an embedded file: 304 when the client has it, gzip when it takes it.
pub async fn serve(req: HttpRequest) -> HttpResponse {
    let readable = matches!(
        *req.method(),
        actix_web::http::Method::GET | actix_web::http::Method::HEAD
    );
    let Some(a) = asset(req.path()).filter(|_| readable) else {
        return super::not_found(req).await;
    };
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == a.etag || t.trim() == "*")
        });
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, a.etag))
        // Revalidated each time (a 304 when unchanged): a new build is picked up at once.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::VARY, "Accept-Encoding"))
        .insert_header(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("X-Frame-Options", "DENY"))
        .content_type(a.content_type);
    if unchanged {
        return response.finish();
    }
    if accepts_gzip(&req) {
        response
            .insert_header((header::CONTENT_ENCODING, "gzip"))
            .body(a.gzip)
    } else {
        response
            .insert_header((header::CONTENT_ENCODING, "identity"))
            .body(a.raw)
    }
}
