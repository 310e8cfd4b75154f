//! The storage layer: every sled call of the server lives here.
//!
//! - **Trees** ([`tables`]) are named `key_value`; keys are big-endian ids (or pairs of
//!   them), so prefix and range scans come back in id order, which is message order within
//!   a room. Attachment content lives in files under `<storage>/attachments/` ([`attachments`]).
//! - **Writes** are [`WriteUnit`]s: one logical write, applied atomically ([`unit`], made
//!   atomic on sled by the unit journal, [`journal`]). Ids come from persisted high-water
//!   marks and are never handed out twice.
//! - **Durability**: a caller acknowledges a write only after [`Store::durable`], which
//!   resolves once a group commit has flushed and `fdatasync`ed it ([`commit`]).
//! - **Reads**: `Store` derefs to its *durable view* ([`Reader`]), which shows only what is
//!   on the device ([`overlay`]): no client ever sees a write that a crash would erase.
//!   The single writer of a record (a room's actor) reads the *latest* view
//!   ([`Store::latest`]), its own writes included.
//! - **Faults** ([`health`]): a full disk, a failing device or a folder removed under the
//!   server make writes fail fast; the first clears when space is back, the second after
//!   the database is reopened, the last never (restart).
//! - **On disk** the database is compressed by sled (zstd, fixed when it is made;
//!   [`tables::open_db`]); [`compact`] rewrites it with only live records, never larger,
//!   and converts a folder made before compression once, at open.

pub mod attachments;
pub mod backup;
mod changes;
mod check;
mod commit;
mod compact;
mod encrypt;
mod error;
mod export;
mod health;
mod idempotency;
mod journal;
mod messages;
mod migrate;
mod overlay;
mod permissions;
pub mod push;
mod rooms;
pub mod seal;
mod sessions;
mod tables;
mod unit;
mod users;
mod views;

#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::IVec;

pub use attachments::{AttachmentRecord, ContentWriter, PreparedUpload};
pub use changes::Change;
pub use check::{check_folder, CheckReport};
pub use commit::{CommitStats, GroupCommit, COMMIT_DEADLINE, DEFAULT_COMMIT_INTERVAL};
pub use compact::{compact, Compaction};
pub use encrypt::{encrypt_folder, Encryption};
pub use error::StorageError;
pub use export::{export_folder, Exported};
pub use health::{Fault, DEFAULT_RESERVE_BYTES};
pub use idempotency::{IdempotencyKey, IdempotentResult};
pub use messages::{new_message_view, NewPost};
pub use permissions::PermissionLayer;
pub use seal::{read_key_file, KeyMaterial};
pub use sessions::{session_key, SessionLifetime, TOUCH_EVERY_MS};
pub use tables::Table;
pub use unit::{Applied, IdKind, Scope, WriteUnit};

use crate::model::{
    IssueProperties, MarkupType, MeetingProperties, MessageId, MessageType, Priority, RoomId,
    RoomType, User, UserId, UserStatus,
};
use health::{FolderIdentity, Health};
use migrate::{load_state, migrate};
use overlay::Overlay;
use tables::Trees;

/// 1: the first layout. 2: id high-water marks in `meta`, the administrator index, write
/// units. 3: indexes of each user's sessions and of the rooms new users join (older
/// folders are migrated at open).
pub const SCHEMA_VERSION: u32 = 4;
pub type Result<T> = std::result::Result<T, StorageError>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub user_id: UserId,
    pub user_name: String,
    pub display_name: String,
    pub is_admin: bool,
    pub status: UserStatus,
    pub created_utc: u64,
    pub last_modified_utc: u64,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Two-factor authentication (TOTP), when the user enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<TotpRecord>,
    /// The status line the user set (`PUT /api/v1/presence`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_text: String,
}

/// A user's TOTP (RFC 6238: SHA-1, 6 digits, 30 s) enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TotpRecord {
    /// The shared secret, base32.
    pub secret: String,
    /// Confirmed with a code: logins need a code from now on.
    pub enabled: bool,
    /// SHA-256 (hex) of each unused recovery code.
    #[serde(default)]
    pub recovery: Vec<String>,
    /// The last time step a code was accepted for: a code is good once.
    #[serde(default)]
    pub last_step: u64,
}

impl UserRecord {
    pub fn to_api(&self) -> User {
        User {
            user_id: self.user_id,
            user_name: self.user_name.clone(),
            display_name: self.display_name.clone(),
            is_admin: self.is_admin,
            status: self.status,
            created_utc: self.created_utc,
            last_modified_utc: self.last_modified_utc,
            presence: None,
            status_text: self.status_text.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: UserId,
    pub created_utc: u64,
    /// When a request last used it (to within `sessions::TOUCH_EVERY_MS`; 0 before that).
    #[serde(default)]
    pub last_seen_utc: u64,
    /// The address it logged in from, and the client's `User-Agent` (shortened).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomRecord {
    pub room_id: RoomId,
    pub name: String,
    pub room_type: RoomType,
    pub creator_id: UserId,
    pub created_utc: u64,
    pub last_modified_utc: u64,
    pub is_archived: bool,
    /// Members may leave the room themselves.
    #[serde(default = "yes")]
    pub members_may_leave: bool,
    /// Users created later become members automatically.
    #[serde(default)]
    pub auto_add_new_users: bool,
    /// Self-join by link: anyone holding this code may join (with the full history).
    #[serde(default)]
    pub join_code: Option<String>,
}

fn yes() -> bool {
    true
}

/// Kept for a deleted message so its id stays answerable ("deleted", 410) and the thread
/// it sat in stays consistent; the text, reactions, receipts and files are gone.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Tombstone {
    pub room_id: RoomId,
    pub parent_message_id: MessageId,
    pub user_id: UserId,
    pub created_utc: u64,
    pub deleted_utc: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MemberRecord {
    pub is_moderator: bool,
    pub joined_utc: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRecord {
    pub message_id: MessageId,
    pub parent_message_id: MessageId,
    pub room_id: RoomId,
    pub user_id: UserId,
    pub text: String,
    pub created_utc: u64,
    pub last_modified_utc: u64,
    pub last_edited_utc: u64,
    pub markup_type: MarkupType,
    pub message_type: MessageType,
    pub priority: Priority,
    pub comment_count: u64,
    pub issue_properties: Option<IssueProperties>,
    pub meeting_properties: Option<MeetingProperties>,
    /// Position among the room's top-level messages (1, 2, …); 0 for comments. Makes unread
    /// counts a subtraction instead of a scan.
    #[serde(default)]
    pub seq: u64,
}

/// Which way a history page goes from its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Backward,
    Forward,
}

/// The value of index entries that carry nothing but their key.
const EMPTY: &[u8] = &[];

fn be(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn pair(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

fn id_at(bytes: &[u8], offset: usize) -> Result<u64> {
    bytes
        .get(offset..offset + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::Corrupt {
            what: "key",
            detail: format!(
                "expected an id at byte {offset} of a {}-byte key",
                bytes.len()
            ),
        })
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs to JSON cannot fail (no maps with non-string keys).
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn token_hash(token: &str) -> [u8; 32] {
    openssl::sha::sha256(token.as_bytes())
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The lock that keeps a second server away from a storage folder while one runs.
pub struct FolderLock {
    _file: File,
    pub path: PathBuf,
}

/// Creates `dir` if needed, checks it is writable and takes its lock. A folder written by
/// a newer Confab is refused first, with nothing in it touched (not even the lock file).
pub fn prepare_folder(dir: &Path) -> Result<FolderLock> {
    migrate::refuse_newer(dir)?;
    std::fs::create_dir_all(dir).map_err(|e| StorageError::create_dir(dir, e))?;
    let probe = dir.join(".write-test");
    let probe_result = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"ok"));
    if let Err(e) = probe_result {
        return Err(StorageError::not_writable(dir, e));
    }
    let _ = std::fs::remove_file(&probe);
    let lock_path = dir.join("confab.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StorageError::not_writable(dir, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StorageError::InUse {
                path: dir.to_path_buf(),
                lock: lock_path,
            })
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(StorageError::not_writable(dir, e)),
    }
    let mut f = &file;
    let _ = f.write_all(format!("{}\n", std::process::id()).as_bytes());
    Ok(FolderLock {
        _file: file,
        path: lock_path,
    })
}

/// What the apply lock guards.
pub(crate) struct ApplyState {
    /// Number of the last unit applied.
    pub applied: u64,
    /// The next change-log sequence number.
    pub next_change: u64,
    /// Persisted high-water marks per [`IdKind`] (the next id never handed out).
    pub hw: [u64; 4],
}

/// The state the store, its readers, the group commit and the monitor share.
pub(crate) struct Shared {
    dir: PathBuf,
    cache_bytes: u64,
    trees: ArcSwapOption<Trees>,
    overlay: Overlay,
    health: Health,
    apply: Mutex<ApplyState>,
    /// Units up to this one are on the device.
    durable_unit: AtomicU64,
    /// The newest change-log entry on the device.
    durable_change: AtomicU64,
    /// Bumped when the database is reopened: actors that cache records reload them.
    generation: AtomicU64,
    /// Bumped when the server-wide permission defaults change: room actors cache their
    /// members' effective permissions and drop the cache when this moves.
    permissions_version: AtomicU64,
    stats: CommitStats,
    /// The keys of an encrypted folder ([`seal`]).
    sealer: Option<Arc<seal::Sealer>>,
    /// Next id per [`IdKind`].
    ids: [AtomicU64; 4],
}

impl Shared {
    /// The key `t` stores for `key` (a keyed hash for name-keyed indexes when encrypted).
    fn blind<'a>(&self, t: Table, key: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        seal::blind(self.sealer.as_deref(), t, key)
    }

    /// A stored value as its writer gave it: opened when the table is sealed.
    fn reveal(&self, t: Table, key: &[u8], raw: IVec) -> Result<IVec> {
        match &self.sealer {
            Some(s) if seal::sealed_table(t) => Ok(IVec::from(s.open(t, key, &raw)?)),
            _ => Ok(raw),
        }
    }

    /// A value as it is stored: sealed when the table is.
    fn conceal(&self, t: Table, key: &[u8], plain: Vec<u8>) -> Vec<u8> {
        match &self.sealer {
            Some(s) if seal::sealed_table(t) => s.seal(t, key, &plain),
            _ => plain,
        }
    }

    fn apply_state(&self) -> MutexGuard<'_, ApplyState> {
        self.apply.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open database. While it is being reopened (after a storage fault; that takes
    /// milliseconds) a reader waits for it, up to a second, then gets 503.
    fn trees(&self) -> Result<Arc<Trees>> {
        if let Some(t) = self.trees.load_full() {
            return Ok(t);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            if let Some(t) = self.trees.load_full() {
                return Ok(t);
            }
        }
        Err(StorageError::Unavailable(
            "The database is being reopened after a storage fault; try again in a moment.".into(),
        ))
    }

    /// Reopens the database after a device fault: writers are held off, every handle of
    /// the old database is dropped (sled refuses all writes after an I/O error until then),
    /// and the new one holds exactly what reached the disk.
    fn reopen(&self) -> Result<()> {
        let mut state = self.apply_state();
        let Some(old) = self.trees.swap(None) else {
            return Ok(());
        };
        // Readers and the group commit hold the old handle only briefly.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while Arc::strong_count(&old) > 1 {
            if std::time::Instant::now() > deadline {
                self.trees.store(Some(old));
                return Err(StorageError::Unavailable(
                    "the old database is still in use".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(old);
        let trees = Trees::open(&self.dir.join("db"), self.cache_bytes)?;
        trees.replay_journal()?;
        if seal::is_encrypted(&trees)? != self.sealer.is_some() {
            return Err(StorageError::Unavailable(
                "the reopened database is not the one opened at start".into(),
            ));
        }
        let loaded = load_state(&trees)?;
        self.overlay.clear();
        for kind in IdKind::ALL {
            self.ids[kind as usize].fetch_max(loaded.hw[kind as usize], Ordering::SeqCst);
        }
        self.durable_unit.store(state.applied, Ordering::SeqCst);
        self.durable_change
            .store(loaded.next_change.saturating_sub(1), Ordering::SeqCst);
        state.next_change = loaded.next_change;
        state.hw = loaded.hw;
        self.trees.store(Some(Arc::new(trees)));
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.health.clear_if(|f| matches!(f, Fault::Device(_)));
        tracing::warn!("database reopened after a storage fault");
        Ok(())
    }

    /// One check of the monitor: folder identity, free space, stalled commits, reopen.
    fn monitor_tick(&self) {
        if self.health.verify_folder().is_err() {
            return;
        }
        self.health.check_space();
        let started = self.stats.flush_started_ms.load(Ordering::SeqCst);
        if started != 0 {
            let secs = crate::now_ms().saturating_sub(started) / 1000;
            if secs >= COMMIT_DEADLINE.as_secs() {
                self.health.set(Fault::Stalled(secs));
            }
        }
        if let Some(Fault::Device(_)) = self.health.current() {
            // Opening writes too (recovery, a snapshot): wait for room to do it, since the
            // old database (still serving reads) is gone once the reopen starts.
            let need = self.health.reserve.max(REOPEN_MIN_FREE);
            if health::free_bytes(&self.dir).unwrap_or(0) >= need && health::writable(&self.dir) {
                if let Err(e) = self.reopen() {
                    tracing::warn!("reopening the database failed, retrying: {e}");
                }
            }
        }
    }
}

/// Free space needed before the database is reopened after a device fault.
const REOPEN_MIN_FREE: u64 = 8 << 20;

/// Reads of the database: the durable view (what `Store` derefs to) or the latest view (a
/// record's single writer, which must see its own un-durable writes).
#[derive(Clone)]
pub struct Reader {
    shared: Arc<Shared>,
    latest: bool,
}

impl Reader {
    /// Whether the folder is encrypted at rest (`--encryption-key-file`): what derives
    /// from the records (the search index) must not be written in clear either.
    pub fn is_encrypted(&self) -> bool {
        self.shared.sealer.is_some()
    }

    pub(crate) fn get(&self, t: Table, key: impl AsRef<[u8]>) -> Result<Option<IVec>> {
        let shared = &self.shared;
        let key = shared.blind(t, key.as_ref());
        let value = shared.trees()?[t].get(&key)?;
        let value = if self.latest {
            value
        } else {
            match shared.overlay.get(t, &key) {
                Some(durable) => durable,
                None => value,
            }
        };
        value.map(|v| shared.reveal(t, &key, v)).transpose()
    }

    pub(crate) fn contains(&self, t: Table, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.get(t, key)?.is_some())
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        t: Table,
        what: &'static str,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>> {
        self.get(t, key)?.map(|v| decode(what, &v)).transpose()
    }

    /// Up to `limit` entries between the bounds, ascending (descending with `reverse`);
    /// values opened when the table is sealed.
    pub(crate) fn scan(
        &self,
        t: Table,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(IVec, IVec)>> {
        let items = self.scan_stored(t, lo, hi, reverse, limit)?;
        if self.shared.sealer.is_none() || !seal::sealed_table(t) {
            return Ok(items);
        }
        items
            .into_iter()
            .map(|(k, v)| {
                let v = self.shared.reveal(t, &k, v)?;
                Ok((k, v))
            })
            .collect()
    }

    /// [`Reader::scan`] of the values as stored.
    fn scan_stored(
        &self,
        t: Table,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(IVec, IVec)>> {
        let trees = self.shared.trees()?;
        let range = trees[t].range::<&[u8], _>((lo, hi));
        if self.latest {
            let items: sled::Result<Vec<_>> = if reverse {
                range.rev().take(limit).collect()
            } else {
                range.take(limit).collect()
            };
            return Ok(items?);
        }
        let overlay = &self.shared.overlay;
        let before = overlay.range(t, lo, hi);
        let (out, covered) = if reverse {
            overlay::merge(range.rev(), before.clone(), true, limit)?
        } else {
            overlay::merge(range, before.clone(), false, limit)?
        };
        if overlay.is_empty() {
            return Ok(out);
        }
        // Units applied while the scan ran may show in it: hide them too (their keys are in
        // the overlay now, and were not before), within the part of the range the scan saw.
        let seen = |k: &[u8]| match &covered {
            None => true,
            Some(c) if reverse => k >= c.as_ref(),
            Some(c) => k <= c.as_ref(),
        };
        let fresh: Vec<_> = overlay
            .range(t, lo, hi)
            .into_iter()
            .filter(|(k, _)| {
                seen(k)
                    && before
                        .binary_search_by(|(b, _)| b.as_slice().cmp(k.as_slice()))
                        .is_err()
            })
            .collect();
        if fresh.is_empty() {
            return Ok(out);
        }
        Ok(overlay::merge(out.into_iter().map(Ok), fresh, reverse, limit)?.0)
    }

    /// Every entry whose key starts with `prefix`, ascending.
    pub(crate) fn prefix(&self, t: Table, prefix: &[u8]) -> Result<Vec<(IVec, IVec)>> {
        self.prefix_limited(t, prefix, false, usize::MAX)
    }

    pub(crate) fn prefix_limited(
        &self,
        t: Table,
        prefix: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(IVec, IVec)>> {
        let end = prefix_end(prefix);
        let hi = match &end {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        };
        self.scan(t, Bound::Included(prefix), hi, reverse, limit)
    }

    /// Every entry of a table, ascending.
    /// How many records `t` holds, as written (the latest view), counted key by key
    /// without keeping any: a queue of 100,000 costs no memory to count.
    pub(crate) fn count_latest(&self, t: Table) -> Result<u64> {
        let trees = self.shared.trees()?;
        let mut n = 0;
        for key in trees[t].iter().keys() {
            key?;
            n += 1;
        }
        Ok(n)
    }

    pub(crate) fn all(&self, t: Table) -> Result<Vec<(IVec, IVec)>> {
        self.scan(t, Bound::Unbounded, Bound::Unbounded, false, usize::MAX)
    }

    /// The store's generation: it changes when the database was reopened after a fault.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::SeqCst)
    }

    /// Changes whenever the server-wide permission defaults change (or the database was
    /// reopened): what was computed from them before is stale.
    pub fn permissions_version(&self) -> u64 {
        self.shared.permissions_version.load(Ordering::SeqCst) + self.generation()
    }
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Bound of sled's page cache.
    pub cache_bytes: u64,
    /// Writes stop while less than this is free on the storage folder's disk.
    pub reserve_bytes: u64,
    /// Group commits start at most this often: under load, writes arriving meanwhile share
    /// the next commit (one flush and `fdatasync` costs about 225 µs of CPU here, so
    /// spacing them cuts the cost per write); an isolated write is never held back.
    pub commit_interval: Duration,
    /// The key file's contents, for an encrypted folder (or a new one to encrypt).
    pub key: Option<Arc<KeyMaterial>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 << 20,
            reserve_bytes: DEFAULT_RESERVE_BYTES,
            commit_interval: commit::DEFAULT_COMMIT_INTERVAL,
            key: None,
        }
    }
}

/// A background thread that watches the storage folder (see [`health`]).
struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct Store {
    // Dropped in this order: the monitor and the commit thread first, so the database's
    // last handle goes with `shared` and the folder can be opened again at once.
    _monitor: Monitor,
    commit: GroupCommit,
    durable: Reader,
    latest: Reader,
    shared: Arc<Shared>,
    content_dir: PathBuf,
    content: Arc<attachments::ContentGuard>,
}

impl std::ops::Deref for Store {
    type Target = Reader;
    /// The durable view: what every client-facing read uses.
    fn deref(&self) -> &Reader {
        &self.durable
    }
}

impl Store {
    /// Opens (or creates) the database inside an already prepared storage folder.
    /// `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store> {
        Self::open_with(
            dir,
            &StoreOptions {
                cache_bytes,
                ..StoreOptions::default()
            },
        )
    }

    /// Opens the database with these options.
    pub fn open_with(dir: &Path, options: &StoreOptions) -> Result<Store> {
        let (cache_bytes, reserve) = (options.cache_bytes, options.reserve_bytes);
        let db_path = dir.join("db");
        if dir.join(backup::RESTORE_MARKER).exists() {
            return Err(StorageError::Unavailable(format!(
                "a restore into {} did not finish ({} is there): remove the folder and run the restore again",
                dir.display(),
                backup::RESTORE_MARKER
            )));
        }
        // A folder from a newer Confab is refused before anything in it is opened.
        migrate::refuse_newer(dir)?;
        backup::remove_stale_staging(dir);
        let old_path = dir.join("db.old");
        if !db_path.exists() && old_path.exists() {
            // A compaction stopped between its renames: the old database is whole.
            std::fs::rename(&old_path, &db_path)
                .map_err(|e| StorageError::io("interrupted compaction", &old_path, e))?;
        }
        for partial in [dir.join("db.compact"), dir.join("db.compact2"), old_path] {
            if db_path.exists() && partial.exists() {
                // A compaction that stopped before its copy was complete, or after its
                // copy replaced the database but before the old one was removed.
                std::fs::remove_dir_all(&partial)
                    .map_err(|e| StorageError::io("interrupted compaction", &partial, e))?;
            }
        }
        if db_path.exists() && !tables::is_compressed(&db_path)? {
            // Made before records were compressed (sled fixes that at creation): one copy.
            tracing::info!("storage folder: compressing the database (once)…");
            let done = compact::compact_with(dir, true)?;
            let (before, after) = (done.before, done.after);
            tracing::info!("storage folder: database compressed, {before} → {after} bytes");
        }
        let trees = Trees::open(&db_path, cache_bytes)?;
        let replayed = trees.replay_journal()?;
        if replayed > 0 {
            tracing::info!("completed {replayed} write(s) interrupted by a crash");
        }
        let sealer = seal::unlock(&trees, dir, options.key.as_deref())?.map(Arc::new);
        migrate(&trees, dir, sealer.as_deref())?;
        migrate::write_folder_file(dir)?;
        let loaded = load_state(&trees)?;
        let identity = FolderIdentity::of(&[
            dir.to_path_buf(),
            dir.join("confab.lock"),
            db_path.join("db"),
        ])?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            cache_bytes,
            trees: ArcSwapOption::from_pointee(trees),
            overlay: Overlay::new(),
            health: Health::new(dir, reserve, identity),
            apply: Mutex::new(ApplyState {
                applied: 0,
                next_change: loaded.next_change,
                hw: loaded.hw,
            }),
            durable_unit: AtomicU64::new(0),
            durable_change: AtomicU64::new(loaded.next_change.saturating_sub(1)),
            generation: AtomicU64::new(0),
            permissions_version: AtomicU64::new(0),
            stats: CommitStats::default(),
            sealer,
            ids: loaded.hw.map(AtomicU64::new),
        });
        let commit = GroupCommit::start(shared.clone(), options.commit_interval)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (monitor_shared, monitor_stop) = (shared.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("confab-storage-monitor".into())
            .spawn(move || {
                while !monitor_stop.load(Ordering::SeqCst) {
                    monitor_shared.monitor_tick();
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
            .map_err(|e| {
                StorageError::Unavailable(format!("cannot start the storage monitor: {e}"))
            })?;
        let store = Store {
            _monitor: Monitor {
                stop,
                thread: Some(thread),
            },
            commit,
            durable: Reader {
                shared: shared.clone(),
                latest: false,
            },
            latest: Reader {
                shared: shared.clone(),
                latest: true,
            },
            content_dir: dir.join("attachments"),
            content: Arc::default(),
            shared,
        };
        store.shared.health.check_space();
        store.sweep_content()?;
        Ok(store)
    }

    /// The latest view: includes writes not yet durable. Only for the single writer of the
    /// records read (a room's actor for its room), which must build on its own writes.
    pub fn latest(&self) -> &Reader {
        &self.latest
    }

    /// Stages a consistent snapshot of the folder for a backup archive
    /// ([`backup::Snapshot::write_archive`]). Writers wait while the records are copied
    /// and the content files linked (no longer: the archive is written from the copy).
    pub fn snapshot(&self) -> Result<backup::Snapshot> {
        self.shared.health.check_writable()?;
        let _state = self.shared.apply_state();
        let trees = self.shared.trees()?;
        backup::stage(&trees, &self.shared.dir, self.shared.sealer.is_some())
    }

    /// Resolves once every unit applied before the call is on the device (group commit).
    pub async fn durable(&self) -> Result<()> {
        self.commit.durable().await
    }

    /// Applies `unit` and waits until it is durable.
    pub async fn apply_durable(&self, unit: WriteUnit) -> Result<Applied> {
        let applied = self.apply(unit)?;
        self.durable().await?;
        Ok(applied)
    }

    pub fn commit_stats(&self) -> &CommitStats {
        &self.shared.stats
    }

    /// The storage fault now, if any, as a sentence for health reports.
    pub fn fault(&self) -> Option<String> {
        self.shared
            .health
            .current()
            .map(|f| f.describe(self.shared.health.dir()))
    }

    /// Synchronous commit of everything applied, for shutdown and offline tools. Fails
    /// (instead of touching anything) when the folder is gone or the device failed.
    pub fn flush(&self) -> Result<()> {
        self.shared.make_durable()
    }

    /// Free bytes on the storage folder's disk (`None` when it cannot be asked).
    pub fn free_disk_bytes(&self) -> Option<u64> {
        health::free_bytes(&self.shared.dir)
    }

    /// Database plus attachment content.
    pub fn size_on_disk(&self) -> u64 {
        let db = self
            .shared
            .trees()
            .ok()
            .and_then(|t| t.db.size_on_disk().ok())
            .unwrap_or(0);
        db + self.content_bytes()
    }
}
