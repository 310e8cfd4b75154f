//! Attachments. Content lives in files under `<storage>/attachments/`, named by its SHA-256,
//! so identical content is stored once however often it is attached; sled holds the
//! metadata and a reference count per content. (Chunks inside sled were measured first:
//! sled 0.34 kept every written chunk in memory, about 280 MB RSS for a 256 MiB upload,
//! whatever its cache bound; files keep the server flat.)
//!
//! An upload goes in three steps:
//! 1. the HTTP handler streams it into a temporary file while both checksums are computed
//!    ([`ContentWriter`]), fsyncs it and *places* it: renamed under its hash unless that
//!    content is stored already, and *pinned* ([`PreparedUpload`]);
//! 2. the room's actor attaches it to the message in one unit (records, index, reference
//!    count, quota, change log) — or refuses, if the message was deleted meanwhile;
//! 3. the pin goes. Content whose last reference went is erased only once that is durable,
//!    and only if no reference and no pin appeared since ([`Store::erase_unreferenced`]),
//!    so deduplication cannot race a deletion into a reference without a file.
//!
//! Files left by a crash between these steps (placed but never attached) are swept at the
//! next start.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openssl::sha::{Sha1, Sha256};
use serde::{Deserialize, Serialize};

use super::seal::{seal_bytes_to, ContentOpener, ContentSealer};
use super::{
    be, id_at, pair, tables::sync_dir, Applied, Change, IdKind, IdempotencyKey, IdempotentResult,
    MessageRecord, Reader, Result, Scope, StorageError, Store, Table, WriteUnit, EMPTY,
};
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
    /// SHA-256 of the content, hex: the name of the content file (in an encrypted folder a
    /// keyed hash of it, [`super::seal::Sealer::content_name`]).
    pub content_hash: String,
    pub content_type: String,
    pub created_utc: u64,
    pub last_modified_utc: u64,
    /// A JPEG thumbnail exists for the content (see [`make_thumbnail`]).
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

/// Decodes an image (stored content) with bounded dimensions and allocation.
fn decode_bounded(store: &Store, hash: &str) -> std::result::Result<image::DynamicImage, String> {
    let path = store.content_path(hash);
    let mut reader = match &store.shared.sealer {
        Some(sealer) => {
            let plain = ContentOpener::open(sealer.clone(), &path)
                .and_then(|mut c| c.read_all(THUMBNAIL_MAX_SOURCE))
                .map_err(|e| e.to_string())?;
            image::ImageReader::new(Box::new(std::io::Cursor::new(plain)) as Box<dyn BufReadSeek>)
        }
        None => image::ImageReader::new(Box::new(std::io::BufReader::new(
            File::open(&path).map_err(|e| e.to_string())?,
        )) as Box<dyn BufReadSeek>),
    }
    .with_guessed_format()
    .map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(12_000);
    limits.max_image_height = Some(12_000);
    limits.max_alloc = Some(200 << 20);
    reader.limits(limits);
    reader.decode().map_err(|e| e.to_string())
}

/// What an image is decoded from: stored content as it is, or opened into memory.
trait BufReadSeek: std::io::BufRead + std::io::Seek {}
impl<T: std::io::BufRead + std::io::Seek> BufReadSeek for T {}

/// Deletes a file after overwriting its bytes with zeros (and syncing), so deleted content
/// does not linger in the file's old blocks for someone reading the raw disk. The file is
/// first renamed aside (atomic), so an upload of the same content right after is not
/// touched. Blocking: run it off the async threads.
pub(super) fn erase_file(path: &Path, aside_dir: &Path) {
    let aside = aside_dir.join(format!("erase-{}", crate::api::auth::random_hex(8)));
    if let Err(e) = std::fs::create_dir_all(aside_dir).and_then(|_| std::fs::rename(path, &aside)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::error!("cannot erase {}: {e}", path.display());
        }
        return;
    }
    let zero = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).open(&aside)?;
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
    if let Err(e) = zero().and_then(|_| std::fs::remove_file(&aside)) {
        tracing::error!("cannot erase {}: {e}", aside.display());
    }
}

/// Serializes placing and erasing content files, and counts the pins of uploads between
/// placing and attaching.
#[derive(Default)]
pub(crate) struct ContentGuard {
    pins: Mutex<HashMap<String, usize>>,
}

impl ContentGuard {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.pins.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps placed content from being erased until the upload is attached (or given up).
pub struct ContentPin {
    guard: Arc<ContentGuard>,
    hash: String,
}

impl Drop for ContentPin {
    fn drop(&mut self) {
        let mut pins = self.guard.lock();
        if let Some(n) = pins.get_mut(&self.hash) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.hash);
            }
        }
    }
}

/// An uploaded file, on disk under its hash and pinned, ready to attach.
pub struct PreparedUpload {
    pub file_name: String,
    pub content_type: String,
    pub size: u64,
    /// SHA-1, hex.
    pub checksum: String,
    /// The content's name: SHA-256, hex (keyed when the folder is encrypted).
    pub content_hash: String,
    pub has_thumbnail: bool,
    _pin: ContentPin,
}

/// An upload in progress: a temporary file and the running checksums.
pub struct ContentWriter {
    file: File,
    tmp_path: PathBuf,
    sha1: Sha1,
    sha256: Sha256,
    pub size: u64,
    unchecked: u64,
    /// Seals the content on its way to the file (encrypted folders).
    seal: Option<ContentSealer>,
}

/// Free space is checked again after this many bytes of an upload.
const SPACE_CHECK_EVERY: u64 = 8 << 20;

impl ContentWriter {
    pub fn write(&mut self, store: &Store, data: &[u8]) -> Result<()> {
        self.unchecked += data.len() as u64;
        if self.unchecked >= SPACE_CHECK_EVERY {
            self.unchecked = 0;
            store.shared.health.check_space();
        }
        store.shared.health.check_writable()?;
        match &mut self.seal {
            Some(sealer) => sealer.write(&mut self.file, data),
            None => self.file.write_all(data),
        }
        .map_err(|e| upload_error(&self.tmp_path, e))?;
        self.sha1.update(data);
        self.sha256.update(data);
        self.size += data.len() as u64;
        Ok(())
    }

    /// Throws away an upload that will not be kept.
    pub fn abort(self) {
        let _ = std::fs::remove_file(&self.tmp_path);
    }

    /// Makes the content durable under its hash (unless it is stored already), pins it
    /// and makes its thumbnail. Blocking (fsync, image decoding): run it off the async
    /// threads.
    pub fn finish(
        self,
        store: &Store,
        file_name: &str,
        content_type: &str,
    ) -> Result<PreparedUpload> {
        let sha256 = hex::encode(self.sha256.finish());
        let content_hash = match &store.shared.sealer {
            Some(sealer) => sealer.content_name(&sha256),
            None => sha256,
        };
        let checksum = hex::encode(self.sha1.finish());
        let mut file = self.file;
        let synced = match self.seal {
            Some(sealer) => sealer.finish(&mut file),
            None => Ok(()),
        }
        .and_then(|_| file.sync_all());
        drop(file);
        if let Err(e) = synced {
            let _ = std::fs::remove_file(&self.tmp_path);
            return Err(upload_error(&self.tmp_path, e));
        }
        let pin = store.place_content(&self.tmp_path, &content_hash)?;
        let has_thumbnail = thumbnail_candidate(content_type, self.size)
            && make_thumbnail(store, &content_hash, file_name)?;
        Ok(PreparedUpload {
            file_name: file_name.to_string(),
            content_type: content_type.to_string(),
            size: self.size,
            checksum,
            content_hash,
            has_thumbnail,
            _pin: pin,
        })
    }
}

fn upload_error(path: &Path, e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        return StorageError::DiskFull(format!(
            "Insufficient storage: the disk is full ({}); the upload was not stored.",
            path.display()
        ));
    }
    StorageError::io("attachment upload", path, e)
}

/// Makes the JPEG thumbnail of image content (once per content). Decoding is bounded by
/// the image library's limits, so a crafted "decompression bomb" fails instead of taking
/// the server's memory. Returns whether a thumbnail exists.
fn make_thumbnail(store: &Store, hash: &str, file_name: &str) -> Result<bool> {
    let thumb = store.thumbnail_path(hash);
    if thumb.exists() {
        return Ok(true);
    }
    let image = match decode_bounded(store, hash) {
        Ok(image) => image,
        Err(e) => {
            tracing::info!("no thumbnail for {file_name}: {e}");
            return Ok(false);
        }
    };
    let small = image.thumbnail(THUMBNAIL_SIZE, THUMBNAIL_SIZE).to_rgb8();
    let dir = thumb.parent().unwrap_or(&store.content_dir).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("thumbnail folder", &dir, e))?;
    let tmp = dir.join(format!(".{}.tmp", crate::api::auth::random_hex(8)));
    let written = (|| -> std::result::Result<(), String> {
        let mut file = File::create(&tmp).map_err(|e| e.to_string())?;
        match &store.shared.sealer {
            Some(sealer) => {
                let mut jpeg = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
                    .encode_image(&small)
                    .map_err(|e| e.to_string())?;
                seal_bytes_to(sealer, &jpeg, &mut file).map_err(|e| e.to_string())?;
            }
            None => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut file, 80)
                .encode_image(&small)
                .map_err(|e| e.to_string())?,
        }
        file.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &thumb).map_err(|e| e.to_string())
    })();
    if let Err(detail) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(StorageError::Io {
            what: "thumbnail",
            path: thumb,
            detail,
            disk_full: false,
        });
    }
    Ok(true)
}

impl Reader {
    /// Bytes of attachments a user has uploaded and not deleted (what their quota counts;
    /// shared content counts for each uploader).
    pub fn quota_used(&self, user_id: UserId) -> Result<u64> {
        Ok(match self.get(Table::UseridQuotaused, be(user_id))? {
            Some(v) => id_at(&v, 0)?,
            None => 0,
        })
    }

    pub fn attachment(&self, id: u64) -> Result<Option<AttachmentRecord>> {
        self.get_json(Table::AttachmentidAttachment, "attachment", be(id))
    }

    pub fn attachments_of(&self, message_id: MessageId) -> Result<Vec<AttachmentRecord>> {
        let mut out = Vec::new();
        for (k, _) in self.prefix(Table::MessageidAttachmentid, &be(message_id))? {
            if let Some(a) = self.attachment(id_at(&k, 8)?)? {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// References to stored content (attachments using it).
    pub fn content_refs(&self, hash: &str) -> Result<u64> {
        Ok(match self.get(Table::ContenthashRefs, hash.as_bytes())? {
            Some(v) => id_at(&v, 0)?,
            None => 0,
        })
    }

    /// Bytes of distinct attachment content stored.
    pub fn content_bytes(&self) -> u64 {
        self.all(Table::ContenthashRefs)
            .map(|all| all.iter().filter_map(|(_, v)| id_at(v, 8).ok()).sum())
            .unwrap_or(0)
    }
}

impl Store {
    /// Stored content opened for reading, when the folder is encrypted (`None`: the file
    /// at [`Store::content_path`] holds the content as it is).
    pub fn sealed_content(&self, path: &Path) -> Option<std::io::Result<ContentOpener>> {
        let sealer = self.shared.sealer.clone()?;
        Some(ContentOpener::open(sealer, path))
    }

    /// Where content with this hash (an attachment's `content_hash`) lives.
    pub fn content_path(&self, hash: &str) -> PathBuf {
        self.content_dir.join(&hash[..2.min(hash.len())]).join(hash)
    }

    /// Where the thumbnail of content with this SHA-256 lives.
    pub fn thumbnail_path(&self, hash: &str) -> PathBuf {
        self.content_dir
            .join("thumbs")
            .join(&hash[..2.min(hash.len())])
            .join(format!("{hash}.jpg"))
    }

    fn tmp_dir(&self) -> PathBuf {
        self.content_dir.join("tmp")
    }

    pub fn begin_upload(&self) -> Result<ContentWriter> {
        self.shared.health.check_writable()?;
        let tmp_dir = self.tmp_dir();
        std::fs::create_dir_all(&tmp_dir).map_err(|e| upload_error(&tmp_dir, e))?;
        let tmp_path = tmp_dir.join(crate::api::auth::random_hex(16));
        let file = File::create(&tmp_path).map_err(|e| upload_error(&tmp_path, e))?;
        Ok(ContentWriter {
            file,
            tmp_path,
            sha1: Sha1::new(),
            sha256: Sha256::new(),
            size: 0,
            unchecked: 0,
            seal: self.shared.sealer.clone().map(ContentSealer::new),
        })
    }

    /// Moves a finished (fsynced) temporary file under its hash, unless that content is
    /// there already, and pins it.
    fn place_content(&self, tmp: &Path, hash: &str) -> Result<ContentPin> {
        let mut pins = self.content.lock();
        *pins.entry(hash.to_string()).or_insert(0) += 1;
        let pin = ContentPin {
            guard: self.content.clone(),
            hash: hash.to_string(),
        };
        let path = self.content_path(hash);
        if path.exists() {
            let _ = std::fs::remove_file(tmp);
            drop(pins);
            return Ok(pin);
        }
        let dir = path.parent().unwrap_or(&self.content_dir).to_path_buf();
        let placed = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::rename(tmp, &path))
            .map_err(|e| upload_error(&path, e))
            .and_then(|_| sync_dir(&dir));
        drop(pins);
        if let Err(e) = placed {
            let _ = std::fs::remove_file(tmp);
            return Err(e);
        }
        Ok(pin)
    }

    /// Attaches prepared uploads to a message (the room's actor, after checking the message
    /// still exists): one unit for all of them.
    /// `quota` (bytes, 0: none) bounds what the uploader may have stored, checked in the
    /// same step as the write.
    pub fn attach_files(
        &self,
        message: &MessageRecord,
        user_id: UserId,
        files: &[PreparedUpload],
        quota: u64,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<(Applied, Vec<AttachmentRecord>)> {
        let mut unit = WriteUnit::new(Scope::Room(message.room_id));
        if quota > 0 {
            let adding: u64 = files.iter().map(|f| f.size).sum();
            unit.require(move |r| {
                if r.quota_used(user_id)?.saturating_add(adding) > quota {
                    return Err(StorageError::TooLarge(format!(
                        "These files do not fit in your attachment quota of {quota} bytes; delete files or ask an administrator"
                    )));
                }
                Ok(())
            });
        }
        let now = crate::now_ms();
        let mut records = Vec::with_capacity(files.len());
        for f in files {
            let record = AttachmentRecord {
                attachment_id: self.next_id(IdKind::Attachment),
                message_id: message.message_id,
                room_id: message.room_id,
                user_id,
                file_name: f.file_name.clone(),
                file_size: f.size,
                checksum: f.checksum.clone(),
                content_hash: f.content_hash.clone(),
                content_type: f.content_type.clone(),
                created_utc: now,
                last_modified_utc: now,
                has_thumbnail: f.has_thumbnail,
            };
            unit.uses_id(IdKind::Attachment, record.attachment_id);
            unit.put_json(
                Table::AttachmentidAttachment,
                be(record.attachment_id),
                &record,
            );
            unit.put(
                Table::MessageidAttachmentid,
                pair(message.message_id, record.attachment_id),
                EMPTY,
            );
            let size = f.size;
            unit.update(
                Table::ContenthashRefs,
                f.content_hash.as_bytes(),
                move |old| {
                    let n = old.and_then(|o| id_at(o, 0).ok()).unwrap_or(0);
                    Some(pair(n + 1, size).to_vec())
                },
            );
            unit.add_to_counter(Table::UseridQuotaused, be(user_id), size as i64);
            records.push(record);
        }
        unit.log(Change::Message {
            room_id: message.room_id,
            message_id: message.message_id,
        });
        if let Some(key) = idempotency {
            key.record(
                &mut unit,
                &IdempotentResult::Attachments {
                    message_id: message.message_id,
                    attachment_ids: records.iter().map(|r| r.attachment_id).collect(),
                },
            );
        }
        Ok((self.apply(unit)?, records))
    }

    /// Removes one attachment (the room's actor). Erase its content with
    /// [`Store::erase_unreferenced`] once the unit is durable.
    pub fn delete_attachment(&self, record: &AttachmentRecord) -> Result<Applied> {
        let mut unit = WriteUnit::new(Scope::Room(record.room_id));
        super::messages::remove_attachment(&mut unit, record);
        unit.log(Change::Message {
            room_id: record.room_id,
            message_id: record.message_id,
        });
        self.apply(unit)
    }

    /// Erases the content (and thumbnail) of each hash that no attachment references and no
    /// upload has pinned. Call it after the unit that dropped the references is durable;
    /// blocking (overwrites the file).
    pub fn erase_unreferenced(&self, hashes: &[String]) {
        for hash in hashes {
            let pins = self.content.lock();
            if pins.contains_key(hash) {
                continue;
            }
            match self.latest().content_refs(hash) {
                Ok(0) => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::error!("erasing content {hash}: {e}");
                    continue;
                }
            }
            for path in [self.content_path(hash), self.thumbnail_path(hash)] {
                erase_file(&path, &self.tmp_dir());
            }
        }
    }

    /// At start: removes interrupted uploads, and content that no attachment references
    /// (placed by an upload that a crash stopped before it was attached).
    pub(super) fn sweep_content(&self) -> Result<()> {
        let _ = std::fs::remove_dir_all(self.tmp_dir());
        let mut orphans = Vec::new();
        for dir in [self.content_dir.clone(), self.content_dir.join("thumbs")] {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let sub = entry.path();
                let Some(name) = sub.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if name.len() != 2 || !sub.is_dir() {
                    continue;
                }
                for file in std::fs::read_dir(&sub).into_iter().flatten().flatten() {
                    let Some(hash) = file
                        .file_name()
                        .to_str()
                        .map(|n| n.trim_end_matches(".jpg").to_string())
                    else {
                        continue;
                    };
                    if hash.len() == 64 && self.latest().content_refs(&hash)? == 0 {
                        orphans.push(hash);
                    }
                }
            }
        }
        orphans.sort();
        orphans.dedup();
        if !orphans.is_empty() {
            tracing::info!(
                "removing {} unreferenced content file(s) left by an interrupted upload",
                orphans.len()
            );
            self.erase_unreferenced(&orphans);
        }
        Ok(())
    }
}
