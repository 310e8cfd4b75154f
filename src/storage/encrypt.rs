//! `confab-server admin encrypt`: converts a stopped server's clear storage folder to one
//! encrypted at rest ([`super::seal`]), offline.
//!
//! Every step leaves a folder that opens: content files are sealed first under their new
//! (keyed) names, which the clear database does not reference, so a crash there leaves
//! orphans the next start sweeps; the database is then copied sealed into `db.compact` and
//! swapped in with the same renames a compaction uses (and the same recovery at open);
//! only then are the clear database and the clear content files overwritten with zeros and
//! removed (a crash before that leaves them unreferenced, and the next start erases them).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::attachments::erase_file;
use super::seal::{self, KeyMaterial};
use super::tables::{self, sync_dir};
use super::{Result, StorageError, Store};

/// What a conversion did.
pub struct Encryption {
    /// Records sealed in the database.
    pub records: u64,
    /// Content files (and thumbnails) sealed.
    pub files: u64,
}

fn io(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::io("encryption", path, e)
}

/// Content files and thumbnails of a clear folder: (path, name without `.jpg`, thumbnail?).
fn content_files(content_dir: &Path) -> Vec<(PathBuf, String, bool)> {
    let mut out = Vec::new();
    for (dir, thumbs) in [
        (content_dir.to_path_buf(), false),
        (content_dir.join("thumbs"), true),
    ] {
        for sub in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let sub = sub.path();
            let is_shard = sub
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 2);
            if !is_shard || !sub.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&sub).into_iter().flatten().flatten() {
                let Some(name) = file.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let hash = name.trim_end_matches(".jpg");
                if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    out.push((file.path(), hash.to_string(), thumbs));
                }
            }
        }
    }
    out
}

/// fsync of every file under `dir` and of the folders holding them.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&path, e))?;
        }
    }
    sync_dir(dir)
}

/// Converts the clear folder `dir` (lock held by the caller) to one sealed under `key`.
pub fn encrypt_folder(dir: &Path, key: Arc<KeyMaterial>, cache_bytes: u64) -> Result<Encryption> {
    let db_path = dir.join("db");
    {
        // A clean open first: interrupted units completed, older layouts migrated,
        // unreferenced content swept, everything flushed.
        let store = Store::open(dir, cache_bytes).map_err(|e| match e {
            StorageError::Key(_) => StorageError::Key(format!(
                "the storage folder {} is encrypted already",
                dir.display()
            )),
            e => e,
        })?;
        store.flush()?;
    }
    let (sealer, header) = seal::new_key(&key)?;
    let sealer = Arc::new(sealer);

    // 1. Content, sealed under its new names.
    let content_dir = dir.join("attachments");
    let tmp_dir = content_dir.join("tmp");
    std::fs::create_dir_all(&tmp_dir).map_err(|e| io(&tmp_dir, e))?;
    let clear_files = content_files(&content_dir);
    for (path, hash, thumb) in &clear_files {
        let name = sealer.content_name(hash);
        let target = if *thumb {
            content_dir
                .join("thumbs")
                .join(&name[..2])
                .join(format!("{name}.jpg"))
        } else {
            content_dir.join(&name[..2]).join(&name)
        };
        let tmp = tmp_dir.join(format!("encrypt-{name}"));
        let sealed = (|| -> std::io::Result<()> {
            let mut from = std::io::BufReader::new(std::fs::File::open(path)?);
            let mut to = std::fs::File::create(&tmp)?;
            let mut writer = seal::ContentSealer::new(sealer.clone());
            let mut buf = vec![0u8; seal::CHUNK];
            loop {
                let n = std::io::Read::read(&mut from, &mut buf)?;
                if n == 0 {
                    break;
                }
                writer.write(&mut to, &buf[..n])?;
            }
            writer.finish(&mut to)?;
            to.sync_all()
        })();
        sealed.map_err(|e| io(path, e))?;
        let parent = target.parent().unwrap_or(&content_dir).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
        std::fs::rename(&tmp, &target).map_err(|e| io(&target, e))?;
        sync_dir(&parent)?;
    }

    // 2. The database, sealed into a copy.
    let new_path = dir.join("db.compact");
    if new_path.exists() {
        std::fs::remove_dir_all(&new_path).map_err(|e| io(&new_path, e))?;
    }
    let records = {
        let old = tables::open_db(&db_path, 64 << 20)?;
        let new = tables::open_db(&new_path, 64 << 20)?;
        seal::export_sealed(&old, &new, &sealer, header)?
    };
    sync_tree(&new_path)?;

    // 3. The swap (recovered at open like a compaction's).
    let old_path = dir.join("db.old");
    std::fs::rename(&db_path, &old_path).map_err(|e| io(&db_path, e))?;
    std::fs::rename(&new_path, &db_path).map_err(|e| io(&new_path, e))?;
    sync_dir(dir)?;
    let _ = std::fs::remove_file(dir.join("db.compacted"));

    // 4. The clear copies, overwritten and removed.
    let aside = tmp_dir.clone();
    let mut old_files = Vec::new();
    collect_files(&old_path, &mut old_files);
    for file in old_files {
        erase_file(&file, &aside);
    }
    std::fs::remove_dir_all(&old_path).map_err(|e| io(&old_path, e))?;
    for (path, _, _) in &clear_files {
        erase_file(path, &aside);
    }
    let _ = std::fs::remove_dir_all(&tmp_dir);
    sync_dir(dir)?;

    // 5. It opens with the key.
    let store = Store::open_with(
        dir,
        &super::StoreOptions {
            cache_bytes,
            key: Some(key),
            ..super::StoreOptions::default()
        },
    )?;
    store.flush()?;
    Ok(Encryption {
        records,
        files: clear_files.len() as u64,
    })
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}
