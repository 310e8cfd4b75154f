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
    /// A JPEG thumbnail exists for the content (see [`Store::make_thumbnail`]).
    #[serde(default)]
    pub has_thumbnail: bool,
}

/// Thumbnails fit in a square of this many pixels.
pub const THUMBNAIL_SIZE: u32 = 256;
/// Images larger than this (bytes) get no thumbnail: decoding them costs too much memory.
pub const THUMBNAIL_MAX_SOURCE: u64 = 50 << 20;

/// Whether content of this type can get a thumbnail.
pub fn thumbnail_candidate(content_type: &str, size: u64) -> bool {
    size <= THUMBNAIL_MAX_SOURCE
        && matches!(
            content_type,
            "image/png" | "image/jpeg" | "image/gif" | "image/webp"
        )
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
            has_thumbnail: self.has_thumbnail,
            last_modified_utc: self.last_modified_utc,
            room_id: self.room_id,
            text_message_id: self.message_id,
        }
    }
}

/// Decodes an image with bounded dimensions and allocation.
fn decode_bounded(path: &Path) -> std::result::Result<image::DynamicImage, String> {
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(12_000);
    limits.max_image_height = Some(12_000);
    limits.max_alloc = Some(200 << 20);
    reader.limits(limits);
    reader.decode().map_err(|e| e.to_string())
}

/// Deletes a file after overwriting its bytes with zeros (and syncing), so deleted content
/// does not linger in the file's old blocks for someone reading the raw disk. The file is
/// first renamed aside (atomic), so an upload of the same content right after is not
/// touched; large files are overwritten on a background thread.
pub(super) fn erase_file(path: &Path, aside_dir: &Path) {
    let aside = aside_dir.join(format!("erase-{}", crate::api::auth::random_hex(8)));
    if let Err(e) = std::fs::create_dir_all(aside_dir).and_then(|_| std::fs::rename(path, &aside)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::error!("cannot erase {}: {e}", path.display());
        }
        return;
    }
    let aside_path = aside.clone();
    let overwrite = move || {
        let zero = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new().write(true).open(&aside_path)?;
            let len = file.metadata()?.len();
            let zeros = vec![0u8; 1 << 16];
            let mut left = len;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                file.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            file.sync_all()
        };
        if let Err(e) = zero().and_then(|_| std::fs::remove_file(&aside_path)) {
            tracing::error!("cannot erase {}: {e}", aside_path.display());
        }
    };
    let len = std::fs::metadata(&aside).map(|m| m.len()).unwrap_or(0);
    if len < (1 << 20) {
        overwrite();
    } else {
        std::thread::spawn(overwrite);
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
            has_thumbnail: false,
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
            for path in [
                self.content_path(&record.content_hash),
                self.thumbnail_path(&record.content_hash),
            ] {
                erase_file(&path, &self.content_dir.join("tmp"));
            }
        }
        Ok(())
    }

    /// Where the thumbnail of content with this SHA-256 lives.
    pub fn thumbnail_path(&self, hash: &str) -> PathBuf {
        self.content_dir
            .join("thumbs")
            .join(&hash[..2.min(hash.len())])
            .join(format!("{hash}.jpg"))
    }

    /// Makes the JPEG thumbnail of an image attachment (once per content) and marks the
    /// record. Blocking (decodes the image): run it off the async threads. Decoding is
    /// bounded by the image library's limits, so a crafted "decompression bomb" fails
    /// instead of taking the server's memory. Returns whether a thumbnail exists.
    pub fn make_thumbnail(&self, record: &AttachmentRecord) -> Result<bool> {
        if !thumbnail_candidate(&record.content_type, record.file_size) {
            return Ok(false);
        }
        let thumb = self.thumbnail_path(&record.content_hash);
        if !thumb.exists() {
            let source = self.content_path(&record.content_hash);
            let image = match decode_bounded(&source) {
                Ok(image) => image,
                Err(e) => {
                    tracing::info!(
                        attachment = record.attachment_id,
                        "no thumbnail for {}: {e}",
                        record.file_name
                    );
                    return Ok(false);
                }
            };
            let small = image.thumbnail(THUMBNAIL_SIZE, THUMBNAIL_SIZE).to_rgb8();
            let dir = thumb.parent().unwrap_or(&self.content_dir).to_path_buf();
            std::fs::create_dir_all(&dir).map_err(|e| io_err("thumbnail folder", &dir, e))?;
            let tmp = dir.join(format!(".{}.tmp", crate::api::auth::random_hex(8)));
            let written = (|| -> std::result::Result<(), String> {
                let mut file = File::create(&tmp).map_err(|e| e.to_string())?;
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut file, 80)
                    .encode_image(&small)
                    .map_err(|e| e.to_string())?;
                file.sync_all().map_err(|e| e.to_string())?;
                std::fs::rename(&tmp, &thumb).map_err(|e| e.to_string())
            })();
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(StorageError::Corrupt {
                    what: "thumbnail",
                    detail: format!("{}: {e}", thumb.display()),
                });
            }
        }
        let mut updated = record.clone();
        updated.has_thumbnail = true;
        if self.attachment(record.attachment_id)?.is_some() {
            self.attachmentid_attachment
                .insert(be(record.attachment_id), encode(&updated))?;
        }
        Ok(true)
    }

    /// Removes uploads a crash interrupted.
    pub(super) fn clean_interrupted_uploads(&self) {
        let _ = std::fs::remove_dir_all(self.content_dir.join("tmp"));
    }
}
