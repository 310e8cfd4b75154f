//! `admin export`: everything a stopped folder holds, as JSON lines an operator (or a test)
//! can read and compare: every record of every table, opened when the folder is encrypted
//! (users, rooms, members, messages, attachments, permissions, read state, settings…), and
//! every content file by the SHA-256 of its content. Two folders with the same export hold
//! the same data; a backup restored is checked this way.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::seal::{self, ContentOpener};
use super::tables::{Table, Trees};
use super::{Result, StorageError};

/// What an export wrote.
pub struct Exported {
    pub records: u64,
    pub content_files: u64,
}

/// A stored value as the export shows it: JSON records as JSON, anything else as hex.
fn shown(value: &[u8]) -> Value {
    match value.first() {
        Some(b'{') | Some(b'[') => {
            serde_json::from_slice(value).unwrap_or_else(|_| Value::String(hex::encode(value)))
        }
        _ => Value::String(hex::encode(value)),
    }
}

/// Writes the export of the folder `dir` (stopped; the caller holds its lock) to `out`.
pub fn export_folder(
    dir: &Path,
    cache_bytes: u64,
    key: Option<&super::KeyMaterial>,
    mut out: impl Write,
) -> Result<Exported> {
    let trees = Trees::open(&dir.join("db"), cache_bytes)?;
    let sealer = seal::unlock_existing(&trees, dir, key)?.map(Arc::new);
    let fail = |e: std::io::Error| StorageError::io("export", Path::new("(output)"), e);
    let mut done = Exported {
        records: 0,
        content_files: 0,
    };
    // What the journal would still apply is applied at the next start; an export of a
    // cleanly stopped folder has none.
    for &table in Table::ALL {
        if table == Table::UnitJournal {
            continue;
        }
        for kv in trees[table].iter() {
            let (k, v) = kv?;
            let value = match &sealer {
                Some(s) if seal::sealed_table(table) => s.open(table, &k, &v)?,
                _ => v.to_vec(),
            };
            let line =
                json!({ "table": table.name(), "key": hex::encode(&k), "value": shown(&value) });
            writeln!(out, "{line}").map_err(fail)?;
            done.records += 1;
        }
    }
    for kv in trees[Table::ContenthashRefs].iter() {
        let (name, _) = kv?;
        let name = String::from_utf8_lossy(&name).into_owned();
        let path = dir
            .join("attachments")
            .join(&name[..2.min(name.len())])
            .join(&name);
        let (sha256, bytes) = content_digest(sealer.as_ref(), &path)
            .map_err(|e| StorageError::io("content file", &path, e))?;
        let line = json!({ "content": name, "sha256": sha256, "bytes": bytes });
        writeln!(out, "{line}").map_err(fail)?;
        done.content_files += 1;
    }
    out.flush().map_err(fail)?;
    Ok(done)
}

/// SHA-256 (hex) and length of a content file's content (opened when sealed).
fn content_digest(
    sealer: Option<&Arc<seal::Sealer>>,
    path: &Path,
) -> std::io::Result<(String, u64)> {
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    match sealer {
        Some(s) => {
            let mut opener = ContentOpener::open(s.clone(), path)?;
            let len = opener.len;
            opener.read_range(0, len, |b| {
                hash.update(b);
                bytes += b.len() as u64;
                true
            })?;
        }
        None => {
            let mut file = std::fs::File::open(path)?;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                bytes += n as u64;
            }
        }
    }
    Ok((hex::encode(hash.finalize()), bytes))
}
