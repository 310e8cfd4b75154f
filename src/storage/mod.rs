//! The storage layer: every sled call of the server lives here.
//!
//! Trees are named `key_value`; keys are big-endian ids (or pairs of them) so that prefix
//! and range scans come back in id order, which is message order within a room.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | name | schema version, … |
//! | `userid_user` | user | [`UserRecord`] JSON |
//! | `username_userid` | lower-case name | user |
//! | `sessionhash_session` | sha256(session id) | [`SessionRecord`] JSON |
//! | `tokenhash_userid` / `userid_tokenhash` | sha256(token) / user | user / sha256(token) |
//! | `roomid_room` | room | [`RoomRecord`] JSON |
//! | `roomid_userid_member` | room ‖ user | [`MemberRecord`] JSON |
//! | `userid_roomid` | user ‖ room | empty, or `p` when the user pinned the room |
//! | `messageid_userid_reaction` | message ‖ user ‖ emoji | empty (emoji reactions) |
//! | `attachmentid_attachment` | attachment | [`AttachmentRecord`] JSON |
//! | `messageid_attachmentid` | message ‖ attachment | empty |
//! | `contenthash_refs` | SHA-256 (hex) of content | reference count ‖ size |
//! | `changeseq_change` | sequence number | [`Change`] JSON (the sync log) |
//! | `userid_quotaused` | user | bytes of attachments they uploaded (BE) |
//! | `joincode_roomid` | join code | room (self-join by link) |
//! | `messageid_tombstone` | message | [`Tombstone`] JSON: what is left of a deleted message |
//! | `setting_value` | name | server-wide settings (`global_permissions`: flag name → bool) |
//! | `roomid_permissions` | room | [`PermissionLayer`] JSON (room level) |
//! | `roomid_userid_permissions` | room ‖ user | [`PermissionLayer`] JSON (user level) |
//! | `avatar_image` | `u`/`r` ‖ user or room id | content type, NUL, image bytes (≤ 1 MiB) |
//!
//! Attachment content itself lives in `<storage>/attachments/ab/abcdef…` (see
//! [`attachments`]).
//! | `userpair_roomid` | min(user) ‖ max(user) | private room |
//! | `messageid_message` | message | [`MessageRecord`] JSON |
//! | `roomid_messageid` | room ‖ message | empty (top-level messages in order) |
//! | `parentid_commentid` | parent ‖ comment | empty (comments in order) |
//! | `messageid_userid_read` | message ‖ user | read time (ms, BE) |
//! | `userid_roomid_lastread` | user ‖ room | newest message id read ‖ its room sequence number |
//! | `roomid_seq` | room | sequence number of the room's newest top-level message |
//! | `roomid_seq_deleted` | room ‖ seq | empty (deleted top-level messages, for unread counts) |
//!
//! Writes are applied in memory by sled and made durable by [`GroupCommit`]: callers that
//! acknowledge a write to a client first await [`Store::durable`].

pub mod attachments;
mod changes;
mod commit;
mod error;
mod permissions;
mod views;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub use attachments::{AttachmentRecord, ContentWriter};
pub use changes::Change;
pub use commit::{CommitStats, GroupCommit};
pub use error::StorageError;
pub use permissions::PermissionLayer;

use crate::model::{
    IssueProperties, MarkupType, MeetingProperties, MessageId, MessageType, Priority, Reaction,
    ReadTimestamp, RoomId, RoomType, TextMessage, User, UserId, UserStatus,
};

pub const SCHEMA_VERSION: u32 = 1;
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
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: UserId,
    pub created_utc: u64,
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

/// The lock that keeps a second server away from a storage folder while one runs.
pub struct FolderLock {
    _file: File,
    pub path: PathBuf,
}

/// Creates `dir` if needed, checks it is writable and takes its lock.
pub fn prepare_folder(dir: &Path) -> Result<FolderLock> {
    std::fs::create_dir_all(dir).map_err(|source| StorageError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let probe = dir.join(".write-test");
    let probe_result = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"ok"));
    if let Err(source) = probe_result {
        return Err(StorageError::NotWritable {
            path: dir.to_path_buf(),
            source,
        });
    }
    let _ = std::fs::remove_file(&probe);
    let lock_path = dir.join("confab.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StorageError::NotWritable {
            path: dir.to_path_buf(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StorageError::InUse {
                path: dir.to_path_buf(),
                lock: lock_path,
            })
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(StorageError::NotWritable {
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    let mut f = &file;
    let _ = f.write_all(format!("{}\n", std::process::id()).as_bytes());
    Ok(FolderLock {
        _file: file,
        path: lock_path,
    })
}

pub struct Store {
    db: sled::Db,
    commit: GroupCommit,
    userid_user: sled::Tree,
    username_userid: sled::Tree,
    sessionhash_session: sled::Tree,
    tokenhash_userid: sled::Tree,
    userid_tokenhash: sled::Tree,
    roomid_room: sled::Tree,
    roomid_userid_member: sled::Tree,
    userid_roomid: sled::Tree,
    userpair_roomid: sled::Tree,
    messageid_message: sled::Tree,
    roomid_messageid: sled::Tree,
    parentid_commentid: sled::Tree,
    messageid_userid_read: sled::Tree,
    userid_roomid_lastread: sled::Tree,
    roomid_seq: sled::Tree,
    roomid_seq_deleted: sled::Tree,
    messageid_userid_reaction: sled::Tree,
    attachmentid_attachment: sled::Tree,
    messageid_attachmentid: sled::Tree,
    contenthash_refs: sled::Tree,
    changeseq_change: sled::Tree,
    avatar_image: sled::Tree,
    userid_quotaused: sled::Tree,
    setting_value: sled::Tree,
    messageid_tombstone: sled::Tree,
    joincode_roomid: sled::Tree,
    roomid_permissions: sled::Tree,
    roomid_userid_permissions: sled::Tree,
    next_change_seq: AtomicU64,
    content_dir: PathBuf,
    next_attachment_id: AtomicU64,
    next_user_id: AtomicU64,
    next_room_id: AtomicU64,
    next_message_id: AtomicU64,
    /// Serializes private-room creation so two concurrent requests make one room.
    private_rooms: std::sync::Mutex<()>,
    /// Serializes read-modify-write of permission settings.
    permissions: std::sync::Mutex<()>,
}

/// Rewrites `<dir>/db` with only its live records (sled's export and import), so deleted
/// content no longer sits in old log segments. The caller holds the folder's lock. The new
/// copy is complete and flushed before it replaces the old one; [`Store::open`] puts the
/// old one back if a crash came between the two renames.
pub fn compact(dir: &Path) -> Result<(u64, u64)> {
    let db_path = dir.join("db");
    let new_path = dir.join("db.compact");
    let old_path = dir.join("db.old");
    let open = |path: &Path| {
        sled::Config::new()
            .path(path)
            .open()
            .map_err(|source| StorageError::Open {
                path: path.to_path_buf(),
                source,
            })
    };
    let io = |what: &'static str, path: &Path, e: std::io::Error| StorageError::Corrupt {
        what,
        detail: format!("{}: {e}", path.display()),
    };
    if new_path.exists() {
        std::fs::remove_dir_all(&new_path).map_err(|e| io("compaction", &new_path, e))?;
    }
    let old = open(&db_path)?;
    let before = old.size_on_disk()?;
    let new = open(&new_path)?;
    new.import(old.export());
    new.flush()?;
    let after = new.size_on_disk()?;
    drop(old);
    drop(new);
    std::fs::rename(&db_path, &old_path).map_err(|e| io("compaction", &db_path, e))?;
    std::fs::rename(&new_path, &db_path).map_err(|e| io("compaction", &new_path, e))?;
    std::fs::remove_dir_all(&old_path).map_err(|e| io("compaction", &old_path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("compaction", dir, e))?;
    Ok((before, after))
}

fn next_id_after_last(tree: &sled::Tree) -> Result<u64> {
    match tree.last()? {
        Some((k, _)) => Ok(id_at(&k, 0)? + 1),
        None => Ok(1),
    }
}

impl Store {
    /// Opens (or creates) the database inside an already prepared storage folder.
    /// `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store> {
        let db_path = dir.join("db");
        let old_path = dir.join("db.old");
        if !db_path.exists() && old_path.exists() {
            // A compaction stopped between its renames: the old database is whole.
            std::fs::rename(&old_path, &db_path).map_err(|e| StorageError::Corrupt {
                what: "interrupted compaction",
                detail: format!("{}: {e}", old_path.display()),
            })?;
        }
        let db = sled::Config::new()
            .path(&db_path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|source| StorageError::Open {
                path: db_path.clone(),
                source,
            })?;
        let t = |name: &str| db.open_tree(name);
        let meta = t("meta")?;
        match meta.get("schema_version")? {
            Some(v) => {
                let found = u32::from_be_bytes(<[u8; 4]>::try_from(v.as_ref()).map_err(|_| {
                    StorageError::Corrupt {
                        what: "schema version",
                        detail: "not 4 bytes".into(),
                    }
                })?);
                if found > SCHEMA_VERSION {
                    return Err(StorageError::SchemaTooNew {
                        path: dir.to_path_buf(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
            }
        }
        let store = Store {
            commit: GroupCommit::start(db.clone())?,
            userid_user: t("userid_user")?,
            username_userid: t("username_userid")?,
            sessionhash_session: t("sessionhash_session")?,
            tokenhash_userid: t("tokenhash_userid")?,
            userid_tokenhash: t("userid_tokenhash")?,
            roomid_room: t("roomid_room")?,
            roomid_userid_member: t("roomid_userid_member")?,
            userid_roomid: t("userid_roomid")?,
            userpair_roomid: t("userpair_roomid")?,
            messageid_message: t("messageid_message")?,
            roomid_messageid: t("roomid_messageid")?,
            parentid_commentid: t("parentid_commentid")?,
            messageid_userid_read: t("messageid_userid_read")?,
            userid_roomid_lastread: t("userid_roomid_lastread")?,
            roomid_seq: t("roomid_seq")?,
            roomid_seq_deleted: t("roomid_seq_deleted")?,
            messageid_userid_reaction: t("messageid_userid_reaction")?,
            attachmentid_attachment: t("attachmentid_attachment")?,
            messageid_attachmentid: t("messageid_attachmentid")?,
            contenthash_refs: t("contenthash_refs")?,
            changeseq_change: t("changeseq_change")?,
            avatar_image: t("avatar_image")?,
            userid_quotaused: t("userid_quotaused")?,
            setting_value: t("setting_value")?,
            messageid_tombstone: t("messageid_tombstone")?,
            joincode_roomid: t("joincode_roomid")?,
            roomid_permissions: t("roomid_permissions")?,
            roomid_userid_permissions: t("roomid_userid_permissions")?,
            next_change_seq: AtomicU64::new(0),
            content_dir: dir.join("attachments"),
            next_attachment_id: AtomicU64::new(0),
            next_user_id: AtomicU64::new(0),
            next_room_id: AtomicU64::new(0),
            next_message_id: AtomicU64::new(0),
            private_rooms: std::sync::Mutex::new(()),
            permissions: std::sync::Mutex::new(()),
            db,
        };
        store
            .next_user_id
            .store(next_id_after_last(&store.userid_user)?, Ordering::SeqCst);
        store
            .next_room_id
            .store(next_id_after_last(&store.roomid_room)?, Ordering::SeqCst);
        store.clean_interrupted_uploads();
        store.next_change_seq.store(
            next_id_after_last(&store.changeseq_change)?,
            Ordering::SeqCst,
        );
        store.next_attachment_id.store(
            next_id_after_last(&store.attachmentid_attachment)?,
            Ordering::SeqCst,
        );
        store.next_message_id.store(
            next_id_after_last(&store.messageid_message)?,
            Ordering::SeqCst,
        );
        Ok(store)
    }

    /// Resolves once every write made before the call is fsynced (group commit).
    pub async fn durable(&self) -> Result<()> {
        self.commit.durable().await
    }

    pub fn commit_stats(&self) -> &CommitStats {
        &self.commit.stats
    }

    /// Synchronous flush, for shutdown.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Database plus attachment content.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0) + self.content_bytes()
    }

    // ---- users ----------------------------------------------------------------------

    pub fn user_count(&self) -> usize {
        self.userid_user.len()
    }

    pub fn create_user(
        &self,
        user_name: &str,
        display_name: &str,
        password_hash: String,
        is_admin: bool,
    ) -> Result<UserRecord> {
        let name_key = user_name.to_lowercase();
        let user_id = self.next_user_id.fetch_add(1, Ordering::SeqCst);
        // Claim the name atomically so two concurrent creations cannot both win.
        if self
            .username_userid
            .compare_and_swap(&name_key, None as Option<&[u8]>, Some(&be(user_id)))?
            .is_err()
        {
            return Err(StorageError::Conflict(format!(
                "a user named '{user_name}' already exists"
            )));
        }
        let now = crate::now_ms();
        let record = UserRecord {
            user_id,
            user_name: user_name.to_string(),
            display_name: display_name.to_string(),
            is_admin,
            status: UserStatus::Active,
            created_utc: now,
            last_modified_utc: now,
            password_hash,
        };
        self.userid_user.insert(be(user_id), encode(&record))?;
        Ok(record)
    }

    pub fn user(&self, user_id: UserId) -> Result<Option<UserRecord>> {
        self.userid_user
            .get(be(user_id))?
            .map(|v| decode("user", &v))
            .transpose()
    }

    pub fn user_by_name(&self, user_name: &str) -> Result<Option<UserRecord>> {
        match self.username_userid.get(user_name.to_lowercase())? {
            Some(id) => self.user(id_at(&id, 0)?),
            None => Ok(None),
        }
    }

    pub fn users(&self) -> Result<Vec<UserRecord>> {
        self.userid_user
            .iter()
            .map(|kv| decode("user", &kv?.1))
            .collect()
    }

    /// Applies `change` to the stored user and saves it; `None` if there is no such user.
    pub fn update_user(
        &self,
        user_id: UserId,
        change: impl FnOnce(&mut UserRecord),
    ) -> Result<Option<UserRecord>> {
        let Some(mut record) = self.user(user_id)? else {
            return Ok(None);
        };
        change(&mut record);
        record.last_modified_utc = crate::now_ms();
        self.userid_user.insert(be(user_id), encode(&record))?;
        Ok(Some(record))
    }

    /// Ends every login session of the user (after a password reset). Web API tokens stay.
    pub fn delete_sessions_of(&self, user_id: UserId) -> Result<usize> {
        let mut n = 0;
        for kv in self.sessionhash_session.iter() {
            let (k, v) = kv?;
            if decode::<SessionRecord>("session", &v)?.user_id == user_id {
                self.sessionhash_session.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    // ---- sessions and Web API tokens --------------------------------------------------

    pub fn create_session(&self, user_id: UserId, session_id: &str) -> Result<()> {
        let record = SessionRecord {
            user_id,
            created_utc: crate::now_ms(),
        };
        self.sessionhash_session
            .insert(token_hash(session_id), encode(&record))?;
        Ok(())
    }

    pub fn session_user(&self, session_id: &str) -> Result<Option<UserId>> {
        match self.sessionhash_session.get(token_hash(session_id))? {
            Some(v) => Ok(Some(decode::<SessionRecord>("session", &v)?.user_id)),
            None => Ok(None),
        }
    }

    pub fn delete_session(&self, session_id: &str) -> Result<bool> {
        Ok(self
            .sessionhash_session
            .remove(token_hash(session_id))?
            .is_some())
    }

    /// Stores a new Web API token for the user, revoking the previous one.
    pub fn replace_api_token(&self, user_id: UserId, token: &str) -> Result<()> {
        let hash = token_hash(token);
        if let Some(old) = self.userid_tokenhash.insert(be(user_id), &hash)? {
            self.tokenhash_userid.remove(old)?;
        }
        self.tokenhash_userid.insert(hash, &be(user_id))?;
        Ok(())
    }

    pub fn token_user(&self, token: &str) -> Result<Option<UserId>> {
        match self.tokenhash_userid.get(token_hash(token))? {
            Some(v) => Ok(Some(id_at(&v, 0)?)),
            None => Ok(None),
        }
    }

    // ---- rooms and membership ----------------------------------------------------------

    pub fn create_room(
        &self,
        name: &str,
        room_type: RoomType,
        creator_id: UserId,
        members: &[UserId],
    ) -> Result<RoomRecord> {
        let room_id = self.next_room_id.fetch_add(1, Ordering::SeqCst);
        let now = crate::now_ms();
        let record = RoomRecord {
            room_id,
            name: name.to_string(),
            room_type,
            creator_id,
            created_utc: now,
            last_modified_utc: now,
            is_archived: false,
            members_may_leave: true,
            auto_add_new_users: false,
            join_code: None,
        };
        self.roomid_room.insert(be(room_id), encode(&record))?;
        for &user in members {
            let moderator = user == creator_id && room_type == RoomType::Public;
            self.add_member(room_id, user, moderator)?;
        }
        Ok(record)
    }

    /// Finds or creates the private room between two users.
    pub fn private_room(&self, a: UserId, b: UserId) -> Result<(RoomRecord, bool)> {
        let key = pair(a.min(b), a.max(b));
        let _guard = self.private_rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = self.userpair_roomid.get(key)? {
            if let Some(room) = self.room(id_at(&existing, 0)?)? {
                return Ok((room, false));
            }
        }
        let room = self.create_room("", RoomType::Private, a, &[a, b])?;
        self.userpair_roomid.insert(key, &be(room.room_id))?;
        Ok((room, true))
    }

    pub fn room(&self, room_id: RoomId) -> Result<Option<RoomRecord>> {
        self.roomid_room
            .get(be(room_id))?
            .map(|v| decode("room", &v))
            .transpose()
    }

    pub fn update_room(&self, record: &RoomRecord) -> Result<()> {
        let old = self
            .roomid_room
            .insert(be(record.room_id), encode(record))?
            .map(|v| decode::<RoomRecord>("room", &v))
            .transpose()?;
        // Keep the join-code index in step with the room's code.
        let old_code = old.and_then(|r| r.join_code);
        if old_code != record.join_code {
            if let Some(code) = old_code {
                self.joincode_roomid.remove(code.as_bytes())?;
            }
            if let Some(code) = &record.join_code {
                self.joincode_roomid
                    .insert(code.as_bytes(), &be(record.room_id))?;
            }
        }
        Ok(())
    }

    /// Every room, in id order (for the server-wide scan of auto-add rooms).
    pub fn rooms(&self) -> Result<Vec<RoomRecord>> {
        self.roomid_room
            .iter()
            .map(|kv| decode("room", &kv?.1))
            .collect()
    }

    /// The group room whose join link carries this code.
    pub fn room_by_join_code(&self, code: &str) -> Result<Option<RoomRecord>> {
        match self.joincode_roomid.get(code.as_bytes())? {
            Some(v) => self.room(id_at(&v, 0)?),
            None => Ok(None),
        }
    }

    /// Sets a member's moderator flag; false if they are not a member.
    pub fn set_moderator(&self, room_id: RoomId, user_id: UserId, on: bool) -> Result<bool> {
        let Some(mut m) = self.member(room_id, user_id)? else {
            return Ok(false);
        };
        m.is_moderator = on;
        self.roomid_userid_member
            .insert(pair(room_id, user_id), encode(&m))?;
        Ok(true)
    }

    /// Takes the user out of the room. Their messages stay; their read position stays too,
    /// so after a re-add the unread count picks up where they left.
    pub fn remove_member(&self, room_id: RoomId, user_id: UserId) -> Result<bool> {
        self.userid_roomid.remove(pair(user_id, room_id))?;
        Ok(self
            .roomid_userid_member
            .remove(pair(room_id, user_id))?
            .is_some())
    }

    pub fn add_member(&self, room_id: RoomId, user_id: UserId, is_moderator: bool) -> Result<()> {
        let record = MemberRecord {
            is_moderator,
            joined_utc: crate::now_ms(),
        };
        self.roomid_userid_member
            .insert(pair(room_id, user_id), encode(&record))?;
        self.userid_roomid.insert(pair(user_id, room_id), &[])?;
        Ok(())
    }

    /// Pins or unpins a room for one user; false if they are not a member.
    pub fn set_pinned(&self, user_id: UserId, room_id: RoomId, pinned: bool) -> Result<bool> {
        let key = pair(user_id, room_id);
        if self.userid_roomid.get(key)?.is_none() {
            return Ok(false);
        }
        self.userid_roomid
            .insert(key, if pinned { &b"p"[..] } else { &[] })?;
        Ok(true)
    }

    pub fn is_pinned(&self, user_id: UserId, room_id: RoomId) -> Result<bool> {
        Ok(self
            .userid_roomid
            .get(pair(user_id, room_id))?
            .map(|v| v.as_ref() == b"p")
            .unwrap_or(false))
    }

    pub fn member(&self, room_id: RoomId, user_id: UserId) -> Result<Option<MemberRecord>> {
        self.roomid_userid_member
            .get(pair(room_id, user_id))?
            .map(|v| decode("membership", &v))
            .transpose()
    }

    pub fn members(&self, room_id: RoomId) -> Result<Vec<(UserId, MemberRecord)>> {
        self.roomid_userid_member
            .scan_prefix(be(room_id))
            .map(|kv| {
                let (k, v) = kv?;
                Ok((id_at(&k, 8)?, decode("membership", &v)?))
            })
            .collect()
    }

    pub fn rooms_of_user(&self, user_id: UserId) -> Result<Vec<RoomId>> {
        self.userid_roomid
            .scan_prefix(be(user_id))
            .map(|kv| id_at(&kv?.0, 8))
            .collect()
    }

    // ---- messages ----------------------------------------------------------------------

    pub fn next_message_id(&self) -> MessageId {
        self.next_message_id.fetch_add(1, Ordering::SeqCst)
    }

    /// The next sequence number for a top-level message of the room.
    pub fn next_room_seq(&self, room_id: RoomId) -> Result<u64> {
        let new = self.roomid_seq.update_and_fetch(be(room_id), |old| {
            let n = old
                .and_then(|o| <[u8; 8]>::try_from(o).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some(be(n + 1).to_vec())
        })?;
        match new {
            Some(v) => id_at(&v, 0),
            None => Ok(1),
        }
    }

    /// Stores a new message and indexes it. The record is written before the indexes so a
    /// crash can leave an unindexed record (invisible) but never an index without a record.
    pub fn insert_message(&self, record: &MessageRecord) -> Result<()> {
        self.messageid_message
            .insert(be(record.message_id), encode(record))?;
        if record.parent_message_id == 0 {
            self.roomid_messageid
                .insert(pair(record.room_id, record.message_id), &[])?;
        } else {
            self.parentid_commentid
                .insert(pair(record.parent_message_id, record.message_id), &[])?;
        }
        Ok(())
    }

    pub fn update_message(&self, record: &MessageRecord) -> Result<()> {
        self.messageid_message
            .insert(be(record.message_id), encode(record))?;
        Ok(())
    }

    pub fn message(&self, message_id: MessageId) -> Result<Option<MessageRecord>> {
        self.messageid_message
            .get(be(message_id))?
            .map(|v| decode("message", &v))
            .transpose()
    }

    /// Removes a message, its indexes, read receipts, reactions and attachments (freeing
    /// their chunks when no other attachment uses them). Indexes go first, so a crash
    /// half-way leaves at worst an unreachable record.
    pub fn delete_message(&self, record: &MessageRecord) -> Result<()> {
        if record.parent_message_id == 0 {
            self.roomid_messageid
                .remove(pair(record.room_id, record.message_id))?;
            if record.seq > 0 {
                self.roomid_seq_deleted
                    .insert(pair(record.room_id, record.seq), &[])?;
            }
        } else {
            self.parentid_commentid
                .remove(pair(record.parent_message_id, record.message_id))?;
        }
        for kv in self
            .messageid_userid_read
            .scan_prefix(be(record.message_id))
        {
            self.messageid_userid_read.remove(kv?.0)?;
        }
        for kv in self
            .messageid_userid_reaction
            .scan_prefix(be(record.message_id))
        {
            self.messageid_userid_reaction.remove(kv?.0)?;
        }
        for attachment in self.attachments_of(record.message_id)? {
            self.delete_attachment(&attachment)?;
        }
        let tombstone = Tombstone {
            room_id: record.room_id,
            parent_message_id: record.parent_message_id,
            user_id: record.user_id,
            created_utc: record.created_utc,
            deleted_utc: crate::now_ms(),
        };
        self.messageid_tombstone
            .insert(be(record.message_id), encode(&tombstone))?;
        self.messageid_message.remove(be(record.message_id))?;
        Ok(())
    }

    /// What is left of a deleted message: where it was, never what it said.
    pub fn tombstone(&self, message_id: MessageId) -> Result<Option<Tombstone>> {
        self.messageid_tombstone
            .get(be(message_id))?
            .map(|v| decode("tombstone", &v))
            .transpose()
    }

    /// Ids of the comments of a message, oldest first.
    pub fn comment_ids(&self, parent: MessageId) -> Result<Vec<MessageId>> {
        self.parentid_commentid
            .scan_prefix(be(parent))
            .map(|kv| id_at(&kv?.0, 8))
            .collect()
    }

    /// A page of an ordered index (`roomid_messageid` or `parentid_commentid`) under
    /// `owner`, with the API's cursor semantics: with no cursor, backward starts at the
    /// newest and forward at the oldest; with a cursor, the page holds the ids strictly
    /// older (backward) or strictly newer (forward) than it. Always returned oldest first.
    fn page(
        index: &sled::Tree,
        owner: u64,
        cursor: Option<MessageId>,
        limit: Option<usize>,
        direction: Direction,
    ) -> Result<Vec<MessageId>> {
        let limit = limit.unwrap_or(usize::MAX);
        let lo = pair(owner, 0);
        let hi_end = pair(owner, u64::MAX);
        let mut ids = Vec::new();
        match direction {
            Direction::Backward => {
                let hi = match cursor {
                    Some(c) => pair(owner, c),
                    None => hi_end,
                };
                // [lo, hi): strictly older than the cursor; with no cursor `hi` excludes
                // only id u64::MAX, which is never handed out.
                for kv in index.range(lo..hi).rev().take(limit) {
                    ids.push(id_at(&kv?.0, 8)?);
                }
                ids.reverse();
            }
            Direction::Forward => {
                let start = match cursor {
                    Some(c) => pair(owner, c.saturating_add(1)),
                    None => lo,
                };
                for kv in index.range(start..=hi_end).take(limit) {
                    ids.push(id_at(&kv?.0, 8)?);
                }
            }
        }
        Ok(ids)
    }

    pub fn room_message_ids(
        &self,
        room_id: RoomId,
        cursor: Option<MessageId>,
        limit: Option<usize>,
        direction: Direction,
    ) -> Result<Vec<MessageId>> {
        Self::page(&self.roomid_messageid, room_id, cursor, limit, direction)
    }

    pub fn comment_page_ids(
        &self,
        parent: MessageId,
        cursor: Option<MessageId>,
        limit: Option<usize>,
        direction: Direction,
    ) -> Result<Vec<MessageId>> {
        Self::page(&self.parentid_commentid, parent, cursor, limit, direction)
    }

    pub fn last_message(&self, room_id: RoomId) -> Result<Option<MessageRecord>> {
        for kv in self.roomid_messageid.scan_prefix(be(room_id)).rev() {
            if let Some(m) = self.message(id_at(&kv?.0, 8)?)? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// The message as the API shows it: the stored record plus its read receipts.
    pub fn api_message(&self, record: &MessageRecord) -> Result<TextMessage> {
        Ok(TextMessage {
            message_id: record.message_id,
            parent_message_id: record.parent_message_id,
            user_id: record.user_id,
            room_id: record.room_id,
            text: record.text.clone(),
            created_utc: record.created_utc,
            last_modified_utc: record.last_modified_utc,
            last_edited_utc: record.last_edited_utc,
            markup_type: record.markup_type,
            message_type: record.message_type,
            priority: record.priority,
            comment_count: record.comment_count,
            attachments: self
                .attachments_of(record.message_id)?
                .iter()
                .map(|a| a.to_api())
                .collect(),
            read_timestamps: self.read_timestamps(record.message_id)?,
            reactions: self.reactions(record.message_id)?,
            issue_properties: record.issue_properties.clone(),
            meeting_properties: record.meeting_properties.clone(),
        })
    }

    pub fn api_messages(&self, ids: &[MessageId]) -> Result<Vec<TextMessage>> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(record) = self.message(id)? {
                out.push(self.api_message(&record)?);
            }
        }
        Ok(out)
    }

    // ---- avatars ------------------------------------------------------------------------

    fn avatar_key(kind: u8, id: u64) -> [u8; 9] {
        let mut k = [0u8; 9];
        k[0] = kind;
        k[1..].copy_from_slice(&id.to_be_bytes());
        k
    }

    /// Stores an uploaded avatar (`kind` is `b'u'` for users, `b'r'` for rooms).
    pub fn set_avatar(&self, kind: u8, id: u64, content_type: &str, image: &[u8]) -> Result<()> {
        let mut v = Vec::with_capacity(content_type.len() + 1 + image.len());
        v.extend_from_slice(content_type.as_bytes());
        v.push(0);
        v.extend_from_slice(image);
        self.avatar_image.insert(Self::avatar_key(kind, id), v)?;
        Ok(())
    }

    /// The uploaded avatar: content type and bytes.
    pub fn avatar(&self, kind: u8, id: u64) -> Result<Option<(String, Vec<u8>)>> {
        Ok(self
            .avatar_image
            .get(Self::avatar_key(kind, id))?
            .and_then(|v| {
                let cut = v.iter().position(|&b| b == 0)?;
                Some((
                    String::from_utf8_lossy(&v[..cut]).to_string(),
                    v[cut + 1..].to_vec(),
                ))
            }))
    }

    // ---- reactions ----------------------------------------------------------------------

    /// Adds or removes one user's reaction; true if anything changed.
    pub fn set_reaction(
        &self,
        message_id: MessageId,
        user_id: UserId,
        emoji: &str,
        on: bool,
    ) -> Result<bool> {
        let mut key = pair(message_id, user_id).to_vec();
        key.extend_from_slice(emoji.as_bytes());
        Ok(if on {
            self.messageid_userid_reaction.insert(key, &[])?.is_none()
        } else {
            self.messageid_userid_reaction.remove(key)?.is_some()
        })
    }

    /// The message's reactions, grouped by emoji (in order of first use by user id).
    pub fn reactions(&self, message_id: MessageId) -> Result<Vec<Reaction>> {
        let mut out: Vec<Reaction> = Vec::new();
        for kv in self.messageid_userid_reaction.scan_prefix(be(message_id)) {
            let (k, _) = kv?;
            let user = id_at(&k, 8)?;
            let emoji = String::from_utf8_lossy(&k[16..]).to_string();
            match out.iter_mut().find(|r| r.emoji == emoji) {
                Some(r) => r.user_ids.push(user),
                None => out.push(Reaction {
                    emoji,
                    user_ids: vec![user],
                }),
            }
        }
        Ok(out)
    }

    // ---- read receipts ------------------------------------------------------------------

    pub fn read_timestamps(&self, message_id: MessageId) -> Result<Vec<ReadTimestamp>> {
        self.messageid_userid_read
            .scan_prefix(be(message_id))
            .map(|kv| {
                let (k, v) = kv?;
                Ok(ReadTimestamp {
                    user_id: id_at(&k, 8)?,
                    read_utc: id_at(&v, 0)?,
                })
            })
            .collect()
    }

    /// Records that `user` read `message`; returns false if it had already been read.
    /// Also advances the user's read position in the room (for `unreadMessageCount`).
    pub fn mark_read(&self, record: &MessageRecord, user_id: UserId, now: u64) -> Result<bool> {
        let key = pair(record.message_id, user_id);
        let fresh = self
            .messageid_userid_read
            .compare_and_swap(key, None as Option<&[u8]>, Some(&be(now)))?
            .is_ok();
        if record.parent_message_id == 0 {
            self.advance_read_position(user_id, record)?;
        }
        Ok(fresh)
    }

    /// Moves the user's read position in the message's room forward to it (never back).
    /// Posting a message counts as having read the room up to it.
    pub fn advance_read_position(&self, user_id: UserId, record: &MessageRecord) -> Result<()> {
        self.userid_roomid_lastread
            .fetch_and_update(pair(user_id, record.room_id), |old| {
                let old_id = old.and_then(|o| id_at(o, 0).ok()).unwrap_or(0);
                if old_id >= record.message_id {
                    return old.map(|o| o.to_vec());
                }
                Some(pair(record.message_id, record.seq).to_vec())
            })?;
        Ok(())
    }

    /// Top-level messages newer than the user's read position: the room's newest sequence
    /// number minus the one read, minus messages deleted since (a short scan of deletions).
    pub fn unread_count(&self, user_id: UserId, room_id: RoomId) -> Result<u64> {
        let read_seq = match self.userid_roomid_lastread.get(pair(user_id, room_id))? {
            Some(v) => id_at(&v, 8).unwrap_or(0),
            None => 0,
        };
        let newest = match self.roomid_seq.get(be(room_id))? {
            Some(v) => id_at(&v, 0)?,
            None => 0,
        };
        let mut deleted = 0;
        for kv in self
            .roomid_seq_deleted
            .range(pair(room_id, read_seq.saturating_add(1))..=pair(room_id, u64::MAX))
        {
            kv?;
            deleted += 1;
        }
        Ok(newest.saturating_sub(read_seq).saturating_sub(deleted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 8 * 1024 * 1024).expect("open");
        (dir, store)
    }

    fn message(store: &Store, room: RoomId, parent: MessageId) -> MessageRecord {
        let record = MessageRecord {
            message_id: store.next_message_id(),
            parent_message_id: parent,
            room_id: room,
            user_id: 1,
            text: "t".into(),
            created_utc: 1,
            last_modified_utc: 1,
            last_edited_utc: 1,
            markup_type: MarkupType::TextPlain,
            message_type: MessageType::Regular,
            priority: Priority::Normal,
            comment_count: 0,
            issue_properties: None,
            meeting_properties: None,
            seq: if parent == 0 {
                store.next_room_seq(room).expect("seq")
            } else {
                0
            },
        };
        store.insert_message(&record).expect("insert");
        record
    }

    #[test]
    fn pages_stay_within_their_room_and_respect_cursor_edges() {
        let (_d, store) = store();
        // Interleave two rooms so a page that leaked across the key prefix would show it.
        let mut a = Vec::new();
        for _ in 0..5 {
            a.push(message(&store, 7, 0).message_id);
            message(&store, 8, 0);
        }
        let page = |c, l, d| store.room_message_ids(7, c, l, d).expect("page");
        assert_eq!(page(None, None, Direction::Forward), a);
        assert_eq!(page(None, Some(2), Direction::Backward), a[3..]);
        assert_eq!(page(Some(a[2]), Some(10), Direction::Backward), a[..2]);
        assert_eq!(page(Some(a[2]), Some(1), Direction::Forward), a[3..4]);
        assert!(page(Some(a[0]), None, Direction::Backward).is_empty());
        assert!(page(Some(a[4]), None, Direction::Forward).is_empty());
        assert!(page(Some(u64::MAX), None, Direction::Forward).is_empty());
        assert_eq!(page(Some(u64::MAX), Some(1), Direction::Backward), a[4..]);
        assert!(store
            .room_message_ids(9, None, None, Direction::Backward)
            .expect("page")
            .is_empty());
    }

    #[test]
    fn unread_counts_follow_the_read_position() {
        let (_d, store) = store();
        let ids: Vec<_> = (0..4).map(|_| message(&store, 3, 0)).collect();
        assert_eq!(store.unread_count(2, 3).expect("count"), 4);
        assert!(store.mark_read(&ids[1], 2, 10).expect("read"));
        assert!(!store.mark_read(&ids[1], 2, 11).expect("read again"));
        assert_eq!(store.unread_count(2, 3).expect("count"), 2);
        // Reading an older message never moves the position back.
        store.mark_read(&ids[0], 2, 12).expect("read");
        assert_eq!(store.unread_count(2, 3).expect("count"), 2);
        assert_eq!(
            store.read_timestamps(ids[1].message_id).expect("ts")[0].read_utc,
            10
        );
    }

    #[test]
    fn ids_continue_after_reopen_and_names_are_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        let last = {
            let store = Store::open(dir.path(), 8 << 20).expect("open");
            store
                .create_user("Ann", "Ann", String::new(), false)
                .expect("user");
            assert!(matches!(
                store.create_user("ann", "x", String::new(), false),
                Err(StorageError::Conflict(_))
            ));
            let m = message(&store, 1, 0);
            store.flush().expect("flush");
            m.message_id
        };
        let store = Store::open(dir.path(), 8 << 20).expect("reopen");
        assert!(store.next_message_id() > last);
        assert_eq!(
            store
                .user_by_name("ANN")
                .expect("lookup")
                .map(|u| u.user_id),
            Some(1)
        );
    }
}
