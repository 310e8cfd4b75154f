//! What a database holds about ids and the change log, read at open; and the schema
//! migrations that bring an older storage folder up to this version.

use std::path::Path;

use super::tables::{Table, Trees};
use super::unit::IdKind;
use super::{
    be, decode, id_at, rooms, seal, users, Result, RoomRecord, SessionRecord, StorageError,
    UserRecord, SCHEMA_VERSION,
};

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
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
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
    meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
    trees.db.flush()?;
    trees.sync_to_device()?;
    if found > 0 {
        tracing::info!("storage folder upgraded from schema {found} to {SCHEMA_VERSION}");
    }
    Ok(())
}
