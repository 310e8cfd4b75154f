//! The sled trees and the open database that holds them.
//!
//! Every tree is named `key_value`; keys are big-endian ids (or pairs of them), so prefix and
//! range scans come back in id order. [`Trees`] is one open database: the store swaps in a
//! fresh one when it reopens the database after a storage fault.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Result, StorageError};

macro_rules! tables {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// One sled tree. The storage layer addresses trees by this name, so a write unit is
        /// plain data: (table, key, value) triples. The order is part of the storage format
        /// (the unit journal names tables by position): new tables go at the end.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Table { $($(#[$doc])* $variant,)* }

        impl Table {
            pub const ALL: &'static [Table] = &[$(Table::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Table::$variant => $name,)* }
            }
        }
    };
}

tables! {
    /// name → schema version, id high-water marks (`hw_message`, …)
    Meta => "meta",
    /// user → `UserRecord`
    UseridUser => "userid_user",
    /// lower-case name → user
    UsernameUserid => "username_userid",
    /// user → empty, for every administrator
    UseridAdmin => "userid_admin",
    /// sha256(session id) → `SessionRecord`
    SessionhashSession => "sessionhash_session",
    /// sha256(token) → user
    TokenhashUserid => "tokenhash_userid",
    /// user → sha256(token)
    UseridTokenhash => "userid_tokenhash",
    /// room → `RoomRecord`
    RoomidRoom => "roomid_room",
    /// room ‖ user → `MemberRecord`
    RoomidUseridMember => "roomid_userid_member",
    /// user ‖ room → empty, or `p` when pinned
    UseridRoomid => "userid_roomid",
    /// min(user) ‖ max(user) → private room
    UserpairRoomid => "userpair_roomid",
    /// message → `MessageRecord`
    MessageidMessage => "messageid_message",
    /// room ‖ message → empty (top-level messages in order)
    RoomidMessageid => "roomid_messageid",
    /// parent ‖ comment → empty (comments in order)
    ParentidCommentid => "parentid_commentid",
    /// message ‖ user → read time (ms, BE)
    MessageidUseridRead => "messageid_userid_read",
    /// user ‖ room → newest message read ‖ its room sequence number
    UseridRoomidLastread => "userid_roomid_lastread",
    /// room → sequence number of its newest top-level message
    RoomidSeq => "roomid_seq",
    /// room ‖ seq → empty (deleted top-level messages)
    RoomidSeqDeleted => "roomid_seq_deleted",
    /// message ‖ user ‖ emoji → empty
    MessageidUseridReaction => "messageid_userid_reaction",
    /// attachment → `AttachmentRecord`
    AttachmentidAttachment => "attachmentid_attachment",
    /// message ‖ attachment → empty
    MessageidAttachmentid => "messageid_attachmentid",
    /// SHA-256 (hex) → reference count ‖ size
    ContenthashRefs => "contenthash_refs",
    /// sequence number → `Change` (the sync log)
    ChangeseqChange => "changeseq_change",
    /// `u`/`r` ‖ id → content type, NUL, image
    AvatarImage => "avatar_image",
    /// user → attachment bytes they uploaded (BE)
    UseridQuotaused => "userid_quotaused",
    /// name → server-wide setting
    SettingValue => "setting_value",
    /// message → `Tombstone`
    MessageidTombstone => "messageid_tombstone",
    /// join code → room
    JoincodeRoomid => "joincode_roomid",
    /// room → `PermissionLayer`
    RoomidPermissions => "roomid_permissions",
    /// room ‖ user → `PermissionLayer`
    RoomidUseridPermissions => "roomid_userid_permissions",
    /// user ‖ Idempotency-Key → `IdempotentResult`
    UseridIdemkeyResult => "userid_idemkey_result",
    /// created (ms) ‖ user ‖ key → empty (expiry order of idempotency keys)
    IdemtimeUseridKey => "idemtime_userid_key",
    /// unit number → the unit's writes, until they are durable (see `journal`)
    UnitJournal => "unitno_unit",
    /// user ‖ session hash → empty (a user's login sessions, ended without a scan)
    UseridSessionhash => "userid_sessionhash",
    /// room → empty (public rooms every new user joins: `autoAddNewUsers`)
    AutoaddRoomid => "autoadd_roomid",
    /// device → `DeviceRecord` (push targets)
    DeviceidDevice => "deviceid_device",
    /// user ‖ device → empty
    UseridDeviceid => "userid_deviceid",
    /// user → `PushSettings`
    UseridPushsettings => "userid_pushsettings",
    /// created (ms) ‖ message ‖ user ‖ kind → `PushJob` (notifications to coalesce)
    PushJob => "pushtime_job",
    /// next attempt (ms) ‖ device ‖ tail → `DeliveryRecord` (notifications to send)
    PushDelivery => "pushtime_delivery",
    /// room ‖ message → empty (messages of type Issue: the cross-room issue list)
    RoomidIssueid => "roomid_issueid",
    /// room ‖ message → empty (messages of type Meeting)
    RoomidMeetingid => "roomid_meetingid",
}

/// One open database: its trees, and the files a durable commit syncs.
pub(crate) struct Trees {
    pub db: sled::Db,
    trees: Vec<sled::Tree>,
    /// The database's log file, kept open for `fdatasync` after sled's own flush (which uses
    /// `sync_file_range`: neither metadata nor the device's write cache).
    log_file: File,
    log_path: PathBuf,
    /// sled writes values over ~128 KiB to files of their own and never syncs them.
    blobs_dir: PathBuf,
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl std::ops::Index<Table> for Trees {
    type Output = sled::Tree;
    fn index(&self, t: Table) -> &sled::Tree {
        &self.trees[t as usize]
    }
}

fn io(what: &'static str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::io(what, path, e)
}

impl Trees {
    /// Opens the database in `db_path` and every tree.
    pub fn open(db_path: &Path, cache_bytes: u64) -> Result<Trees> {
        let db = open_db(db_path, cache_bytes)?;
        let trees = Table::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let log_path = db_path.join("db");
        let log_file = File::open(&log_path).map_err(|e| io("database log", &log_path, e))?;
        // The folder's entries (conf, db, blobs/) must survive a power loss too.
        sync_dir(db_path)?;
        let blobs_dir = db_path.join("blobs");
        let synced_blobs = Mutex::new(blob_names(&blobs_dir));
        Ok(Trees {
            db,
            trees,
            log_file,
            log_path,
            blobs_dir,
            synced_blobs,
        })
    }

    /// After sled's flush: `fdatasync` of the log, and `fsync` of blob files written since
    /// the last commit (and of their folder).
    pub fn sync_to_device(&self) -> Result<()> {
        self.log_file
            .sync_data()
            .map_err(|e| io("database log", &self.log_path, e))?;
        let names = blob_names(&self.blobs_dir);
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut new = false;
        for name in &names {
            if !synced.contains(name) {
                let path = self.blobs_dir.join(name);
                match File::open(&path) {
                    Ok(f) => f.sync_all().map_err(|e| io("database blob", &path, e))?,
                    // sled removed it meanwhile (a rewritten value): nothing to sync.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("database blob", &path, e)),
                }
                new = true;
            }
        }
        if new {
            sync_dir(&self.blobs_dir)?;
        }
        // Forget removed blobs so the set stays as small as the folder.
        *synced = names;
        Ok(())
    }
}

/// Opens the sled database in `db_path` as it was created: sled fixes compression when a
/// database is made and refuses to open it with the other setting. A new database is
/// compressed (zstd, per page written to the log): a short message's JSON record and its
/// index entries take about a quarter of their plain size on disk.
pub(crate) fn open_db(db_path: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let compressed = is_compressed(db_path)?;
    // sled counts a cached page by its size in the log, compressed when compression is on,
    // while the page in memory is whole: a 64 MiB bound held ~520 MiB of a 1M-message
    // room's pages. The bound given to sled is scaled down. Measured on that room: ÷8 kept
    // the cache near 64 MiB of memory but cost 20 % of the 10 × 100 throughput (more
    // pages read back and decompressed); ÷3 keeps the throughput of the uncompressed
    // store with the cache at ~190 MiB of memory (docs/benchmarks.md).
    let capacity = if compressed {
        cache_bytes / COMPRESSED_CACHE_RATIO
    } else {
        cache_bytes
    };
    let config = sled::Config::new()
        .path(db_path)
        .cache_capacity(capacity)
        .flush_every_ms(Some(1000))
        .use_compression(compressed)
        // zstd's fastest level: the log is written on every commit.
        .compression_factor(1);
    // The folder's own lock (`confab.lock`) keeps other processes out, so a held sled lock
    // is this process's previous handle, whose threads let go a moment after it was
    // dropped (seen under load when a database is closed and opened again at once).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => {
                return result.map_err(|source| StorageError::Open {
                    path: db_path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// How much the cache bound is scaled down for a compressed database (see `open_db`).
const COMPRESSED_CACHE_RATIO: u64 = 3;

/// Whether the database in `db_path` is (or, if new, will be) compressed: its `conf` file
/// says `use_compression: true` or `false`. Folders made before compression say `false`
/// and are rewritten once at open (see `Store::open_with`).
pub(crate) fn is_compressed(db_path: &Path) -> Result<bool> {
    let conf_path = db_path.join("conf");
    let bytes = match std::fs::read(&conf_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(io("database configuration", &conf_path, e)),
    };
    // The file is text lines followed by a 4-byte checksum, which sled verifies itself.
    let text = String::from_utf8_lossy(&bytes);
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("use_compression:"))
        .map(str::trim);
    match value {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(StorageError::Corrupt {
            what: "database configuration",
            detail: format!("{} has no use_compression line", conf_path.display()),
        }),
    }
}

fn blob_names(dir: &Path) -> HashSet<OsString> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// `fsync` of a folder, so the entries created or renamed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("folder", dir, e))
}
