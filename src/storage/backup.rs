//! Backups: a consistent snapshot of a storage folder as one archive, and the restore that
//! makes a new folder from one.
//!
//! The archive is a tar file (members in this order):
//! - `confab-backup.json`: the manifest (format, Confab version, schema, time, encrypted?,
//!   record and file counts);
//! - `db.records`: every tree's records exactly as stored (sealed when the folder is
//!   encrypted), zstd-compressed, ending with a count that proves the stream is whole;
//! - `attachments/…`: the content files (and thumbnails) the database references, as stored;
//! - `tls/…`: the certificate made at first start, so a moved server keeps its fingerprint.
//!
//! A snapshot is taken in two steps, so writers wait only for the first: with the apply
//! lock held (every write unit is whole, none half-applied) the records are copied to a
//! staging folder inside the storage folder and the content files hard-linked there (they
//! are immutable; a link keeps a file a later delete removes). The archive is then written
//! from the staging folder with no lock held, and the staging folder removed.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::tables::{self, sync_dir, Table, Trees};
use super::{Result, StorageError, SCHEMA_VERSION};

/// The archive format this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
const MANIFEST: &str = "confab-backup.json";
const RECORDS: &str = "db.records";
/// Left in a folder while a restore writes it; a server refuses to start on it.
pub const RESTORE_MARKER: &str = "restore-incomplete";
/// Staging folders of snapshots start with this (removed at open if a crash left one).
pub(super) const STAGING_PREFIX: &str = "backup-staging-";

/// What a backup archive says about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub confab_version: String,
    pub schema_version: u32,
    pub created_utc: u64,
    pub encrypted: bool,
    pub records: u64,
    pub content_files: u64,
    pub content_bytes: u64,
}

fn io(what: &'static str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::io(what, path, e)
}

fn bad_archive(detail: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        what: "backup archive",
        detail: detail.into(),
    }
}

/// A snapshot staged inside the storage folder, waiting to be written as an archive.
/// Dropping it removes the staging folder.
pub struct Snapshot {
    staging: PathBuf,
    manifest: Manifest,
    /// Paths relative to the staging folder, in archive order (after the records).
    files: Vec<String>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// Removes staging folders a crash left behind (at open; the folder's lock is held).
pub(super) fn remove_stale_staging(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(STAGING_PREFIX))
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The content file (and thumbnail) paths, relative to the folder, of each referenced
/// content name in `contenthash_refs`.
fn content_members(trees: &Trees, dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for kv in trees[Table::ContenthashRefs].iter() {
        let (name, _) = kv?;
        let name = std::str::from_utf8(&name)
            .ok()
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| StorageError::Corrupt {
                what: "content reference",
                detail: format!("not a content name: {}", hex::encode(&name)),
            })?;
        let shard = &name[..2];
        out.push(format!("attachments/{shard}/{name}"));
        let thumb = format!("attachments/thumbs/{shard}/{name}.jpg");
        if dir.join(&thumb).exists() {
            out.push(thumb);
        }
    }
    Ok(out)
}

/// Stages a snapshot of the folder `dir` whose open database is `trees`. The caller makes
/// sure no write unit is applied meanwhile (the apply lock, or the folder's lock offline).
pub(super) fn stage(trees: &Trees, dir: &Path, encrypted: bool) -> Result<Snapshot> {
    let staging = dir.join(format!(
        "{STAGING_PREFIX}{}-{}",
        std::process::id(),
        crate::api::auth::random_hex(4)
    ));
    std::fs::create_dir(&staging).map_err(|e| io("backup staging", &staging, e))?;
    // The folder's own schema (older than this build's while an upgrade backs it up).
    let schema_version = match trees[Table::Meta].get("schema_version")? {
        Some(v) => u32::from_be_bytes(<[u8; 4]>::try_from(v.as_ref()).map_err(|_| {
            StorageError::Corrupt {
                what: "schema version",
                detail: "not 4 bytes".into(),
            }
        })?),
        None => SCHEMA_VERSION,
    };
    let mut snapshot = Snapshot {
        staging: staging.clone(),
        manifest: Manifest {
            format: BACKUP_FORMAT,
            confab_version: crate::config::VERSION.into(),
            schema_version,
            created_utc: crate::now_ms(),
            encrypted,
            records: 0,
            content_files: 0,
            content_bytes: 0,
        },
        files: Vec::new(),
    };
    let records_path = staging.join(RECORDS);
    let file = File::create(&records_path).map_err(|e| io("backup", &records_path, e))?;
    let mut out = zstd::stream::Encoder::new(BufWriter::new(file), 1)
        .map_err(|e| io("backup", &records_path, e))?;
    let mut records = 0u64;
    let w = |out: &mut dyn Write, bytes: &[u8]| -> Result<()> {
        out.write_all(bytes)
            .map_err(|e| io("backup", &records_path, e))
    };
    for &table in Table::ALL {
        if table == Table::UnitJournal {
            continue; // every unit is whole under the lock: nothing to replay
        }
        let name = table.name().as_bytes();
        w(&mut out, b"T")?;
        w(&mut out, &(name.len() as u16).to_be_bytes())?;
        w(&mut out, name)?;
        for kv in trees[table].iter() {
            let (k, v) = kv?;
            w(&mut out, b"R")?;
            w(&mut out, &(k.len() as u32).to_be_bytes())?;
            w(&mut out, &k)?;
            w(&mut out, &(v.len() as u32).to_be_bytes())?;
            w(&mut out, &v)?;
            records += 1;
        }
    }
    w(&mut out, b"E")?;
    w(&mut out, &records.to_be_bytes())?;
    out.finish()
        .and_then(|mut b| b.flush())
        .map_err(|e| io("backup", &records_path, e))?;
    snapshot.manifest.records = records;

    let mut members = content_members(trees, dir)?;
    for tls in ["tls/cert.pem", "tls/key.pem"] {
        if dir.join(tls).exists() {
            members.push(tls.to_string());
        }
    }
    for member in members {
        let from = dir.join(&member);
        let to = staging.join(&member);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("backup staging", parent, e))?;
        }
        // A hard link costs nothing and keeps the file if a delete removes it meanwhile.
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(|e| io("backup: content file", &from, e))?;
        }
        if member.starts_with("attachments/") && !member.starts_with("attachments/thumbs/") {
            snapshot.manifest.content_files += 1;
            snapshot.manifest.content_bytes += std::fs::metadata(&to)
                .map_err(|e| io("backup: content file", &to, e))?
                .len();
        }
        snapshot.files.push(member);
    }
    Ok(snapshot)
}

impl Snapshot {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Writes the archive to `out` (a file, or a response body as it is sent).
    pub fn write_archive(&self, out: impl Write) -> Result<()> {
        let fail = |e: std::io::Error| io("backup archive", Path::new("(output)"), e);
        let mut tar = tar::Builder::new(out);
        let manifest = serde_json::to_vec_pretty(&self.manifest).unwrap_or_default();
        let mut header = tar::Header::new_gnu();
        header.set_size(manifest.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(self.manifest.created_utc / 1000);
        header.set_cksum();
        tar.append_data(&mut header, MANIFEST, manifest.as_slice())
            .map_err(fail)?;
        for member in std::iter::once(RECORDS).chain(self.files.iter().map(String::as_str)) {
            let path = self.staging.join(member);
            let mut file = File::open(&path).map_err(|e| io("backup staging", &path, e))?;
            let len = file
                .metadata()
                .map_err(|e| io("backup staging", &path, e))?
                .len();
            let mut header = tar::Header::new_gnu();
            header.set_size(len);
            header.set_mode(0o600);
            header.set_mtime(self.manifest.created_utc / 1000);
            header.set_cksum();
            tar.append_data(&mut header, member, &mut file)
                .map_err(fail)?;
        }
        tar.into_inner().and_then(|mut o| o.flush()).map_err(fail)?;
        Ok(())
    }
}

/// Writes a snapshot of a stopped folder (`admin backup`) to `out_path`, fsynced.
pub fn backup_stopped_folder(dir: &Path, out_path: &Path, cache_bytes: u64) -> Result<Manifest> {
    let trees = Trees::open(&dir.join("db"), cache_bytes)?;
    trees.replay_journal()?;
    let encrypted = super::seal::is_encrypted(&trees)?;
    let snapshot = stage(&trees, dir, encrypted)?;
    drop(trees);
    write_file(&snapshot, out_path)?;
    Ok(snapshot.manifest.clone())
}

/// Writes the archive to a new file beside `out_path`, fsyncs it and renames it into place:
/// `out_path` is either a whole archive or untouched.
pub fn write_file(snapshot: &Snapshot, out_path: &Path) -> Result<()> {
    let name = out_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let tmp = out_path.with_file_name(format!(".{name}.partial"));
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| io("backup file", &tmp, e))?;
        let mut out = BufWriter::new(file);
        snapshot.write_archive(&mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| io("backup file", &tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io("backup file", &tmp, e))?;
        std::fs::rename(&tmp, out_path).map_err(|e| io("backup file", out_path, e))?;
        if let Some(parent) = out_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What a restore made.
pub struct Restored {
    pub manifest: Manifest,
    pub files: u64,
}

/// Whether `member` is a path a backup writes (and nothing else: no `..`, no absolute path).
fn allowed_member(member: &str) -> bool {
    let parts: Vec<&str> = member.split('/').collect();
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        ["attachments", shard, name] => shard.len() == 2 && hex64(name) && name[..2] == **shard,
        ["attachments", "thumbs", shard, name] => name
            .strip_suffix(".jpg")
            .is_some_and(|n| hex64(n) && n[..2] == **shard),
        ["tls", "cert.pem" | "key.pem"] => true,
        _ => false,
    }
}

/// Makes the storage folder `dir` (absent or empty) from the archive read from `input`.
/// Until it is complete the folder holds [`RESTORE_MARKER`], and a server refuses it.
pub fn restore(input: impl Read, dir: &Path) -> Result<Restored> {
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(StorageError::Conflict(format!(
                "{} is not empty: a restore makes a new storage folder (give an empty or new --storage-dir)",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| StorageError::create_dir(dir, e))?;
    let _lock = super::prepare_folder(dir)?;
    let marker = dir.join(RESTORE_MARKER);
    File::create(&marker).map_err(|e| io("restore", &marker, e))?;
    sync_dir(dir)?;
    let restored = read_archive(input, Some(dir))?;
    for sub in ["attachments", "attachments/thumbs", "tls"] {
        let p = dir.join(sub);
        for shard in std::fs::read_dir(&p).into_iter().flatten().flatten() {
            if shard.path().is_dir() {
                sync_dir(&shard.path())?;
            }
        }
        if p.is_dir() {
            sync_dir(&p)?;
        }
    }
    std::fs::remove_file(&marker).map_err(|e| io("restore", &marker, e))?;
    sync_dir(dir)?;
    Ok(restored)
}

/// Reads a whole archive and checks it (the manifest, every member's name, the record
/// stream to its count) without writing anything: what `confab backup` does with the
/// archive it received.
pub fn verify(input: impl Read) -> Result<Restored> {
    read_archive(input, None)
}

/// Reads an archive; with `dir`, writes the folder's database and files there.
fn read_archive(input: impl Read, dir: Option<&Path>) -> Result<Restored> {
    let mut archive = tar::Archive::new(input);
    let mut entries = archive
        .entries()
        .map_err(|e| bad_archive(format!("not a tar archive: {e}")))?;
    let manifest: Manifest = {
        let mut first = entries
            .next()
            .ok_or_else(|| bad_archive("empty file"))?
            .map_err(|e| bad_archive(format!("not a tar archive: {e}")))?;
        let path = first.path().map_err(|e| bad_archive(e.to_string()))?;
        if path.to_str() != Some(MANIFEST) {
            return Err(bad_archive(format!(
                "not a Confab backup: it starts with {}, not {MANIFEST}",
                path.display()
            )));
        }
        let mut bytes = Vec::new();
        (&mut first)
            .take(1 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| bad_archive(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| bad_archive(format!("manifest: {e}")))?
    };
    if manifest.format != BACKUP_FORMAT {
        return Err(bad_archive(format!(
            "archive format {} (this Confab reads format {BACKUP_FORMAT})",
            manifest.format
        )));
    }
    if manifest.schema_version > SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            path: dir.unwrap_or(Path::new("(archive)")).to_path_buf(),
            found: manifest.schema_version,
            supported: SCHEMA_VERSION,
            written_by: manifest.confab_version.clone(),
        });
    }
    let mut records_seen = false;
    let mut files = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad_archive(e.to_string()))?;
        let member = entry
            .path()
            .map_err(|e| bad_archive(e.to_string()))?
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| bad_archive("a member name is not UTF-8"))?;
        if member == RECORDS && !records_seen {
            load_records(&mut entry, dir, manifest.records)?;
            records_seen = true;
            continue;
        }
        if !allowed_member(&member) {
            return Err(bad_archive(format!("unexpected member {member}")));
        }
        match dir {
            Some(dir) => {
                let path = dir.join(&member);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io("restore", parent, e))?;
                }
                let mut file = File::create(&path).map_err(|e| io("restore", &path, e))?;
                std::io::copy(&mut entry, &mut file).map_err(|e| io("restore", &path, e))?;
                file.sync_all().map_err(|e| io("restore", &path, e))?;
            }
            None => {
                std::io::copy(&mut entry, &mut std::io::sink())
                    .map_err(|e| bad_archive(format!("{member}: {e}")))?;
            }
        }
        files += 1;
    }
    if !records_seen {
        return Err(bad_archive(format!("{RECORDS} is missing")));
    }
    Ok(Restored { manifest, files })
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<()> {
    r.read_exact(buf)
        .map_err(|e| bad_archive(format!("{RECORDS} is cut short: {e}")))
}

fn read_u32(r: &mut impl Read) -> Result<usize> {
    let mut b = [0u8; 4];
    read_exact(r, &mut b)?;
    Ok(u32::from_be_bytes(b) as usize)
}

/// The largest key or value a record stream may hold (sled's own limit is far above what
/// Confab writes; this bounds what a damaged archive can make us allocate).
const MAX_RECORD_PART: usize = 64 << 20;

fn read_part(r: &mut impl Read) -> Result<Vec<u8>> {
    let len = read_u32(r)?;
    if len > MAX_RECORD_PART {
        return Err(bad_archive(format!("a record part of {len} bytes")));
    }
    let mut v = vec![0u8; len];
    read_exact(r, &mut v)?;
    Ok(v)
}

/// Reads the record stream to its end marker; with `dir`, into a new database at
/// `<dir>/db`, flushed and synced.
fn load_records(input: impl Read, dir: Option<&Path>, expected: u64) -> Result<()> {
    let db = match dir {
        Some(dir) => Some(tables::open_db(&dir.join("db"), 64 << 20)?),
        None => None,
    };
    let mut r = BufReader::new(
        zstd::stream::Decoder::new(input).map_err(|e| bad_archive(format!("{RECORDS}: {e}")))?,
    );
    let mut tree: Option<sled::Tree> = None;
    let mut table_seen = false;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    let mut records = 0u64;
    loop {
        let mut tag = [0u8; 1];
        read_exact(&mut r, &mut tag)?;
        match &tag {
            b"T" => {
                if let Some(t) = &tree {
                    t.apply_batch(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
                let mut len = [0u8; 2];
                read_exact(&mut r, &mut len)?;
                let mut name = vec![0u8; u16::from_be_bytes(len) as usize];
                read_exact(&mut r, &mut name)?;
                if !Table::ALL.iter().any(|t| t.name().as_bytes() == name) {
                    return Err(bad_archive(format!(
                        "unknown table {}",
                        String::from_utf8_lossy(&name)
                    )));
                }
                tree = match &db {
                    Some(db) => Some(db.open_tree(&name)?),
                    None => None,
                };
                table_seen = true;
            }
            b"R" => {
                let key = read_part(&mut r)?;
                let value = read_part(&mut r)?;
                if !table_seen {
                    return Err(bad_archive("a record before its table"));
                }
                records += 1;
                if let Some(t) = &tree {
                    batch.insert(key, value);
                    in_batch += 1;
                    if in_batch == 4096 {
                        t.apply_batch(std::mem::take(&mut batch))?;
                        in_batch = 0;
                    }
                }
            }
            b"E" => {
                if let Some(t) = &tree {
                    t.apply_batch(std::mem::take(&mut batch))?;
                }
                let mut n = [0u8; 8];
                read_exact(&mut r, &mut n)?;
                let n = u64::from_be_bytes(n);
                if n != records || n != expected {
                    return Err(bad_archive(format!(
                        "{records} records read, the archive says {n} (manifest {expected})"
                    )));
                }
                break;
            }
            other => return Err(bad_archive(format!("unknown tag {other:?} in {RECORDS}"))),
        }
    }
    let (Some(db), Some(dir)) = (db, dir) else {
        return Ok(());
    };
    db.flush()?;
    drop(db);
    // sled's flush is not an fsync: sync every file it wrote (log, snapshot, blobs).
    sync_tree(&dir.join("db"))
}

/// `fsync` of every file and folder under `path`.
fn sync_tree(path: &Path) -> Result<()> {
    for entry in std::fs::read_dir(path).map_err(|e| io("restore", path, e))? {
        let entry = entry.map_err(|e| io("restore", path, e))?;
        let p = entry.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("restore", &p, e))?;
        }
    }
    sync_dir(path)
}

#[cfg(test)]
mod tests {
    use super::allowed_member;

    #[test]
    fn only_the_members_a_backup_writes_are_restored() {
        let h = "ab".to_string() + &"0".repeat(62);
        assert!(allowed_member(&format!("attachments/ab/{h}")));
        assert!(allowed_member(&format!("attachments/thumbs/ab/{h}.jpg")));
        assert!(allowed_member("tls/key.pem"));
        assert!(!allowed_member(&format!("attachments/cd/{h}")));
        assert!(!allowed_member("../etc/passwd"));
        assert!(!allowed_member(&format!("attachments/ab/../{h}")));
        assert!(!allowed_member("db/conf"));
        assert!(!allowed_member("/tls/key.pem"));
    }
}
