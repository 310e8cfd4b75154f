//! Just enough `multipart/form-data` framing to stream files from disk to the upload
//! endpoint (awc has no multipart writer): text parts are framing, file parts are read
//! 256 KiB at a time as the request body is sent.

use std::io::Read;

use bytes::Bytes;
use futures_util::Stream;

use super::ClientError;

pub enum Part {
    Text(String),
    File(std::fs::File),
}

/// The parts as one body stream.
pub fn stream(parts: Vec<Part>) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(
        (parts.into_iter(), None::<std::fs::File>),
        |(mut rest, mut file)| async move {
            loop {
                if let Some(f) = file.as_mut() {
                    let mut buf = vec![0u8; 256 * 1024];
                    match f.read(&mut buf) {
                        Ok(0) => {} // this file is done; the next part follows
                        Ok(n) => {
                            buf.truncate(n);
                            return Some((Ok(Bytes::from(buf)), (rest, file)));
                        }
                        Err(e) => return Some((Err(e), (rest, None))),
                    }
                }
                match rest.next()? {
                    Part::Text(t) => return Some((Ok(Bytes::from(t)), (rest, None))),
                    Part::File(f) => file = Some(f),
                }
            }
        },
    )
}

/// SHA-1 of a file, hex.
pub fn sha1_of(path: &std::path::Path) -> Result<String, ClientError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| ClientError::Usage(format!("cannot open {}: {e}", path.display())))?;
    let mut h = openssl::sha::Sha1::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finish()))
}

/// Percent-encodes a file name for a URL path segment.
pub fn path_escape(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
