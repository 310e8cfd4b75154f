//! Attachments. Content lives in files under `<storage>/attachments/`, named by its SHA-256,
//! so identical content is stored once however often it is attached; sled holds the
//! metadata and a reference count per content. (Chunks inside sled were measured first:
//! sled 0.34 kept every written chunk in memory, about 280 MB RSS for a 256 MiB upload,
//! whatever its cache bound; files keep the server flat.) An upload streams into a temporary
//! file while both checksums are computed; it is fsynced and renamed into place only when
//! complete, so a crash never leaves a half file under a content name.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use openssl::sha::{Sha1, Sha256};
use serde::{Deserialize, Serialize};

use super::{be, decode, encode, id_at, pair, Result, StorageError, Store};
use crate::model::{Attachment, MessageId, RoomId, UserId};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub attachment_id: u64,
    pub message_id: MessageId,
    pub room_id: RoomId,
    pub user_id: UserId,
    pub file_name: String,
    pub file_size: u64,
    /// SHA-1 of the content, hex (the API's `fileChecksum`).
    pub checksum: String,
    /// SHA-256 of the content, hex: the name of the content file.
    pub content_hash: String,
    pub content_type: String,
    pub created_utc: u64,
    pub last_modified_utc: u64,
}

impl AttachmentRecord {
    pub fn to_api(&self) -> Attachment {
        Attachment {
            attachment_id: self.attachment_id,
            attachment_state: "ReadyForDownloadFromServerToClient".into(),
            created_utc: self.created_utc,
            file_checksum: self.checksum.clone(),
            file_name: self.file_name.clone(),
            file_size: self.file_size,
            has_thumbnail: false,
            last_modified_utc: self.last_modified_utc,
            room_id: self.room_id,
            text_message_id: self.message_id,
        }
    }
}

fn io_err(what: &'static str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Corrupt {
        what,
        detail: format!("{}: {e}", path.display()),
    }
}

/// An upload in progress: a temporary file and the running checksums.
pub struct ContentWriter {
    file: File,
    tmp_path: PathBuf,
    sha1: Sha1,
    sha256: Sha256,
    pub size: u64,
}

impl ContentWriter {
    pub fn write(&mut self, _store: &Store, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .map_err(|e| io_err("attachment upload", &self.tmp_path, e))?;
        self.sha1.update(data);
        self.sha256.update(data);
        self.size += data.len() as u64;
        Ok(())
    }

    /// Throws away an upload that will not be kept.
    pub fn abort(self, _store: &Store) {
        let _ = std::fs::remove_file(&self.tmp_path);
    }

    /// Makes the content durable under its hash (unless it is stored already) and stores
    /// the attachment record.
    pub fn finish(
        self,
        store: &Store,
        message_id: MessageId,
        room_id: RoomId,
        user_id: UserId,
        file_name: &str,
        content_type: &str,
    ) -> Result<AttachmentRecord> {
        let content_hash = hex::encode(self.sha256.finish());
        let final_path = store.content_path(&content_hash);
        let exists = store
            .contenthash_refs
            .contains_key(content_hash.as_bytes())?
            && final_path.exists();
        if exists {
            let _ = std::fs::remove_file(&self.tmp_path);
        } else {
            self.file
                .sync_all()
                .map_err(|e| io_err("attachment upload", &self.tmp_path, e))?;
            drop(self.file);
            let dir = final_path
                .parent()
                .unwrap_or(&store.content_dir)
                .to_path_buf();
            std::fs::create_dir_all(&dir).map_err(|e| io_err("attachment folder", &dir, e))?;
            std::fs::rename(&self.tmp_path, &final_path)
                .map_err(|e| io_err("attachment content", &final_path, e))?;
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err("attachment folder", &dir, e))?;
        }
        store
            .contenthash_refs
            .update_and_fetch(content_hash.as_bytes(), |old| {
                let n = old.and_then(|o| id_at(o, 0).ok()).unwrap_or(0);
                Some(pair(n + 1, self.size).to_vec())
            })?;
        let now = crate::now_ms();
        let record = AttachmentRecord {
            attachment_id: store.next_attachment_id.fetch_add(1, Ordering::SeqCst),
            message_id,
            room_id,
            user_id,
            file_name: file_name.to_string(),
            file_size: self.size,
            checksum: hex::encode(self.sha1.finish()),
            content_hash,
            content_type: content_type.to_string(),
            created_utc: now,
            last_modified_utc: now,
        };
        store
            .attachmentid_attachment
            .insert(be(record.attachment_id), encode(&record))?;
        store
            .messageid_attachmentid
            .insert(pair(message_id, record.attachment_id), &[])?;
        store.add_quota_used(user_id, record.file_size as i128)?;
        Ok(record)
    }
}

impl Store {
    /// Bytes of attachments a user has uploaded and not deleted (what their quota counts;
    /// shared content counts for each uploader).
    pub fn quota_used(&self, user_id: UserId) -> Result<u64> {
        Ok(match self.userid_quotaused.get(be(user_id))? {
            Some(v) => id_at(&v, 0)?,
            None => 0,
        })
    }

    fn add_quota_used(&self, user_id: UserId, delta: i128) -> Result<()> {
        self.userid_quotaused.update_and_fetch(be(user_id), |old| {
            let n = old.and_then(|o| id_at(o, 0).ok()).unwrap_or(0) as i128;
            Some(be((n + delta).max(0) as u64).to_vec())
        })?;
        Ok(())
    }

    /// Where content with this SHA-256 (hex) lives.
    pub fn content_path(&self, hash: &str) -> PathBuf {
        self.content_dir.join(&hash[..2.min(hash.len())]).join(hash)
    }

    pub fn begin_upload(&self) -> Result<ContentWriter> {
        let tmp_dir = self.content_dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(|e| io_err("attachment folder", &tmp_dir, e))?;
        let tmp_path = tmp_dir.join(crate::api::auth::random_hex(16));
        let file =
            File::create(&tmp_path).map_err(|e| io_err("attachment upload", &tmp_path, e))?;
        Ok(ContentWriter {
            file,
            tmp_path,
            sha1: Sha1::new(),
            sha256: Sha256::new(),
            size: 0,
        })
    }

    pub fn attachment(&self, id: u64) -> Result<Option<AttachmentRecord>> {
        self.attachmentid_attachment
            .get(be(id))?
            .map(|v| decode("attachment", &v))
            .transpose()
    }

    pub fn attachments_of(&self, message_id: MessageId) -> Result<Vec<AttachmentRecord>> {
        let mut out = Vec::new();
        for kv in self.messageid_attachmentid.scan_prefix(be(message_id)) {
            if let Some(a) = self.attachment(id_at(&kv?.0, 8)?)? {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Bytes of distinct attachment content stored.
    pub fn content_bytes(&self) -> u64 {
        self.contenthash_refs
            .iter()
            .filter_map(|kv| kv.ok())
            .filter_map(|(_, v)| id_at(&v, 8).ok())
            .sum()
    }

    /// Removes the attachment; its content file goes with the last reference.
    pub fn delete_attachment(&self, record: &AttachmentRecord) -> Result<()> {
        self.messageid_attachmentid
            .remove(pair(record.message_id, record.attachment_id))?;
        self.attachmentid_attachment
            .remove(be(record.attachment_id))?;
        self.add_quota_used(record.user_id, -(record.file_size as i128))?;
        let left =
            self.contenthash_refs
                .update_and_fetch(record.content_hash.as_bytes(), |old| {
                    let (n, size) = old
                        .map(|o| (id_at(o, 0).unwrap_or(0), id_at(o, 8).unwrap_or(0)))
                        .unwrap_or((0, 0));
                    (n > 1).then(|| pair(n - 1, size).to_vec())
                })?;
        if left.is_none() {
            let path = self.content_path(&record.content_hash);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::error!("cannot remove {}: {e}", path.display());
                }
            }
        }
        Ok(())
    }

    /// Removes uploads a crash interrupted.
    pub(super) fn clean_interrupted_uploads(&self) {
        let _ = std::fs::remove_dir_all(self.content_dir.join("tmp"));
    }
}
