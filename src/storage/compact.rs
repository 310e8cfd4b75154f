//! Compaction: the database rewritten with only its live records, so deleted content
//! leaves no old version in sled's log, without ever leaving the folder larger; also how a
//! folder made before compression is converted at open.

use std::fs::File;
use std::path::Path;

use super::tables;
use super::{Result, StorageError};

/// What a compaction did.
pub struct Compaction {
    /// Bytes of the database folder before, and after (the same when it was kept).
    pub before: u64,
    pub after: u64,
    /// False when the database had not been opened since a compaction made it: it is
    /// kept as it is (sled writes to its log whenever it is opened, so even a look would
    /// change it).
    pub replaced: bool,
}

/// Rewrites `<dir>/db` with only its live records (sled's export and import), so deleted
/// content no longer sits in old log segments. The copy is always compressed, so this is
/// also how a folder made before compression is converted (`convert`). The caller holds
/// the folder's lock. The new copy is complete and flushed before it replaces the old
/// one; [`Store::open`](super::Store::open) puts the old one back if a crash came between
/// the two renames.
///
/// The folder does not grow. A database untouched since a compaction made it (its log
/// file's length and time match the stamp left in `db.compacted`) is left alone without
/// being opened. Otherwise the copy replaces it; sled lays the same records out a few
/// percent differently from copy to copy, so a copy that came out no smaller is copied
/// again, up to [`COPY_ATTEMPTS`] times, and the smallest is kept.
pub fn compact(dir: &Path) -> Result<Compaction> {
    compact_with(dir, false)
}

/// Copies made at most by one compaction (see [`compact`]).
const COPY_ATTEMPTS: usize = 3;

/// Copies every tree of `from` into a new database at `to`; returns its size on disk.
fn copy_database(from: &sled::Db, to: &Path) -> Result<u64> {
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(|e| StorageError::io("compaction", to, e))?;
    }
    {
        // sled's default cache is 1 GiB; a copy reads each page once.
        let new = tables::open_db(to, 64 << 20)?;
        new.import(from.export());
        new.flush()?;
    }
    folder_bytes(to)
}

/// The bytes of the files in a database folder (log, snapshot, blobs), as `du
/// --apparent-size` counts them: what a compaction must not increase.
fn folder_bytes(path: &Path) -> Result<u64> {
    let mut total = 0;
    let entries = std::fs::read_dir(path).map_err(|e| StorageError::io("compaction", path, e))?;
    for entry in entries.flatten() {
        let meta = entry
            .metadata()
            .map_err(|e| StorageError::io("compaction", &entry.path(), e))?;
        total += if meta.is_dir() {
            folder_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The length and modification time of a database's log file: a compaction's stamp.
fn log_stamp(db_path: &Path) -> Result<String> {
    let log = db_path.join("db");
    let meta = std::fs::metadata(&log).map_err(|e| StorageError::io("compaction", &log, e))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    Ok(format!(
        "{} {}.{:09}",
        meta.len(),
        modified.as_secs(),
        modified.subsec_nanos()
    ))
}

pub(super) fn compact_with(dir: &Path, convert: bool) -> Result<Compaction> {
    let db_path = dir.join("db");
    let new_path = dir.join("db.compact");
    let retry_path = dir.join("db.compact2");
    let old_path = dir.join("db.old");
    let stamp_path = dir.join("db.compacted");
    let remove = |path: &Path| {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(|e| StorageError::io("compaction", path, e))?;
        }
        Ok::<(), StorageError>(())
    };
    remove(&retry_path)?;
    let before = folder_bytes(&db_path)?;
    let stamp = std::fs::read_to_string(&stamp_path).unwrap_or_default();
    if !convert && stamp.trim() == log_stamp(&db_path)? {
        return Ok(Compaction {
            before,
            after: before,
            replaced: false,
        });
    }
    let old = tables::open_db(&db_path, 64 << 20)?;
    let mut after = copy_database(&old, &new_path)?;
    for _ in 1..COPY_ATTEMPTS {
        if after < before || convert {
            break;
        }
        let size = copy_database(&old, &retry_path)?;
        if size < after {
            remove(&new_path)?;
            std::fs::rename(&retry_path, &new_path)
                .map_err(|e| StorageError::io("compaction", &retry_path, e))?;
            after = size;
        } else {
            remove(&retry_path)?;
        }
    }
    drop(old);
    File::open(new_path.join("db"))
        .and_then(|f| f.sync_all())
        .map_err(|e| StorageError::io("compaction", &new_path, e))?;
    std::fs::rename(&db_path, &old_path)
        .map_err(|e| StorageError::io("compaction", &db_path, e))?;
    std::fs::rename(&new_path, &db_path)
        .map_err(|e| StorageError::io("compaction", &new_path, e))?;
    remove(&old_path)?;
    std::fs::write(&stamp_path, log_stamp(&db_path)?)
        .map_err(|e| StorageError::io("compaction", &stamp_path, e))?;
    tables::sync_dir(dir)?;
    Ok(Compaction {
        before,
        after,
        replaced: true,
    })
}
