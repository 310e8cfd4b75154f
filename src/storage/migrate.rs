//! What a database holds about ids and the change log, read at open; and the schema
//! migrations that bring an older storage folder up to this version.

use std::path::Path;

use super::tables::{Table, Trees};
use super::unit::IdKind;
use super::{
    backup, be, decode, id_at, rooms, seal, users, MessageRecord, Result, RoomRecord,
    SessionRecord, StorageError, UserRecord, SCHEMA_VERSION,
};
use crate::model::MessageType;

/// What a database holds about ids and the change log.
pub(super) struct LoadedState {
    pub hw: [u64; 4],
    /// The change log continues after its last entry: a sequence number is seen by clients
    /// only once durable, so one taken by a write a crash undid may be taken again.
    pub next_change: u64,
}

fn meta_u64(trees: &Trees, key: &str) -> Result<u64> {
    match trees[Table::Meta].get(key)? {
        Some(v) => id_at(&v, 0),
        None => Ok(0),
    }
}

fn next_after_last(tree: &sled::Tree) -> Result<u64> {
    match tree.last()? {
        Some((k, _)) => Ok(id_at(&k, 0)? + 1),
        None => Ok(1),
    }
}

/// High-water marks as stored, raised to cover every id present (older folders have none;
/// deleted messages leave tombstones, so their ids count too).
pub(super) fn load_state(trees: &Trees) -> Result<LoadedState> {
    let derived = [
        next_after_last(&trees[Table::UseridUser])?,
        next_after_last(&trees[Table::RoomidRoom])?,
        next_after_last(&trees[Table::MessageidMessage])?
            .max(next_after_last(&trees[Table::MessageidTombstone])?),
        next_after_last(&trees[Table::AttachmentidAttachment])?,
    ];
    let mut hw = [0u64; 4];
    for kind in IdKind::ALL {
        let i = kind as usize;
        hw[i] = meta_u64(trees, kind.meta_key())?.max(derived[i]).max(1);
    }
    Ok(LoadedState {
        hw,
        next_change: next_after_last(&trees[Table::ChangeseqChange])?,
    })
}

/// Checks the schema version and brings an older folder up to this one.
pub(super) fn migrate(trees: &Trees, dir: &Path, sealer: Option<&seal::Sealer>) -> Result<()> {
    let open = |t: Table, k: &[u8], v: &[u8]| -> Result<Vec<u8>> {
        match sealer {
            Some(s) => s.open(t, k, v),
            None => Ok(v.to_vec()),
        }
    };
    let meta = &trees[Table::Meta];
    let found = match meta.get("schema_version")? {
        Some(v) => u32::from_be_bytes(<[u8; 4]>::try_from(v.as_ref()).map_err(|_| {
            StorageError::Corrupt {
                what: "schema version",
                detail: "not 4 bytes".into(),
            }
        })?),
        None => 0,
    };
    if found > SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            path: dir.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
            written_by: written_by(trees)?.unwrap_or_else(|| "(a version not recorded)".into()),
        });
    }
    if found == SCHEMA_VERSION {
        return record_version(trees);
    }
    if found > 0 {
        let saved = backup_before_upgrade(trees, dir, found, sealer.is_some())?;
        tracing::info!(
            "storage folder at schema {found}: a backup of it is in {} before the upgrade to schema {SCHEMA_VERSION}",
            saved.display()
        );
    }
    // Each step only adds what the newer schema derives from the older records, so a step
    // interrupted by a crash is run again whole at the next start; the version is written
    // only after everything before it is on the device.
    if found < 2 {
        // Version 1 (or new): persist the high-water marks and index the administrators.
        let state = load_state(trees)?;
        for kind in IdKind::ALL {
            meta.insert(kind.meta_key(), &be(state.hw[kind as usize]))?;
        }
        for kv in trees[Table::UseridUser].iter() {
            let (k, v) = kv?;
            if decode::<UserRecord>("user", &open(Table::UseridUser, &k, &v)?)?.is_admin {
                trees[Table::UseridAdmin].insert(k, &[])?;
            }
        }
    }
    // Version 2: index each user's sessions and the rooms new users join.
    for kv in trees[Table::SessionhashSession].iter() {
        let (k, v) = kv?;
        let session =
            decode::<SessionRecord>("session", &open(Table::SessionhashSession, &k, &v)?)?;
        trees[Table::UseridSessionhash]
            .insert(users::session_index_key(session.user_id, &k), &[])?;
    }
    for kv in trees[Table::RoomidRoom].iter() {
        let (k, v) = kv?;
        if rooms::joins_new_users(&decode::<RoomRecord>(
            "room",
            &open(Table::RoomidRoom, &k, &v)?,
        )?) {
            trees[Table::AutoaddRoomid].insert(k, &[])?;
        }
    }
    // Version 4: the issue and meeting lists.
    for kv in trees[Table::MessageidMessage].iter() {
        let (k, v) = kv?;
        let m = decode::<MessageRecord>("message", &open(Table::MessageidMessage, &k, &v)?)?;
        let table = match m.message_type {
            MessageType::Issue => Table::RoomidIssueid,
            MessageType::Meeting => Table::RoomidMeetingid,
            MessageType::Regular => continue,
        };
        trees[table].insert(super::pair(m.room_id, m.message_id), &[])?;
    }
    trees.db.flush()?;
    trees.sync_to_device()?;
    if std::env::var_os("CONFAB_TEST_PAUSE_MIGRATION").is_some() {
        // tests/upgrade.rs: a migration killed after its writes, before its version.
        tracing::warn!("migration paused before its schema version is written (test)");
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
    meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
    meta.insert(VERSION_KEY, crate::config::VERSION.as_bytes())?;
    trees.db.flush()?;
    trees.sync_to_device()?;
    if found > 0 {
        tracing::info!("storage folder upgraded from schema {found} to {SCHEMA_VERSION}");
    }
    Ok(())
}

/// `<storage>/confab-folder.json`: the schema and the Confab version that last wrote the
/// folder, beside the database so a newer folder is refused before the database is opened
/// (sled writes to its files whenever it opens them).
pub(super) const FOLDER_FILE: &str = "confab-folder.json";

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FolderFile {
    schema_version: u32,
    confab_version: String,
}

/// Refuses a folder whose version file says a newer schema, touching nothing. Folders
/// from before the file existed have none: the database's own record decides then.
pub(super) fn refuse_newer(dir: &Path) -> Result<()> {
    let path = dir.join(FOLDER_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io("folder version file", &path, e)),
    };
    let file: FolderFile = serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
        what: "folder version file",
        detail: format!("{}: {e}", path.display()),
    })?;
    if file.schema_version > SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            path: dir.to_path_buf(),
            found: file.schema_version,
            supported: SCHEMA_VERSION,
            written_by: file.confab_version,
        });
    }
    Ok(())
}

/// Writes the version file (atomically: a new file renamed over the old, then synced).
pub(super) fn write_folder_file(dir: &Path) -> Result<()> {
    let path = dir.join(FOLDER_FILE);
    let body = serde_json::to_vec_pretty(&FolderFile {
        schema_version: SCHEMA_VERSION,
        confab_version: crate::config::VERSION.into(),
    })
    .unwrap_or_default();
    if std::fs::read(&path).ok().as_deref() == Some(body.as_slice()) {
        return Ok(());
    }
    let tmp = dir.join(format!("{FOLDER_FILE}.tmp"));
    let io = |p: &Path, e| StorageError::io("folder version file", p, e);
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    std::io::Write::write_all(&mut f, &body).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    super::tables::sync_dir(dir)
}

/// `meta` key of the Confab version that last opened the folder for writing.
const VERSION_KEY: &str = "confab_version";

/// The Confab version that last wrote the folder, when it was recorded (from 0.1.0 on).
pub(super) fn written_by(trees: &Trees) -> Result<Option<String>> {
    Ok(trees[Table::Meta]
        .get(VERSION_KEY)?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Records this Confab as the folder's last writer (durable with the next commit).
fn record_version(trees: &Trees) -> Result<()> {
    let ours = crate::config::VERSION.as_bytes();
    if trees[Table::Meta].get(VERSION_KEY)?.as_deref() != Some(ours) {
        trees[Table::Meta].insert(VERSION_KEY, ours)?;
    }
    Ok(())
}

/// Writes a backup archive of the folder, as it is, to `<dir>/upgrade-backups/` before a
/// migration changes anything.
fn backup_before_upgrade(
    trees: &Trees,
    dir: &Path,
    found: u32,
    encrypted: bool,
) -> Result<std::path::PathBuf> {
    let folder = dir.join("upgrade-backups");
    std::fs::create_dir_all(&folder).map_err(|e| StorageError::io("upgrade backup", &folder, e))?;
    let path = folder.join(format!(
        "schema{found}-before-schema{SCHEMA_VERSION}-{}.tar",
        crate::now_ms() / 1000
    ));
    let snapshot = backup::stage(trees, dir, encrypted)?;
    backup::write_file(&snapshot, &path).map_err(|e| {
        StorageError::Unavailable(format!(
            "the storage folder needs an upgrade from schema {found} to {SCHEMA_VERSION}, and the backup taken first could not be written ({e}); nothing was changed"
        ))
    })?;
    Ok(path)
}
