//! Attachments: files cut into 256 KiB chunks stored under their SHA-256, with reference
//! counts, so identical content is stored once however often it is attached. An upload
//! streams through a [`ChunkWriter`] holding at most one chunk in memory; a download reads
//! one chunk at a time.

use std::sync::atomic::Ordering;

use openssl::sha::{Sha1, Sha256};
use serde::{Deserialize, Serialize};

use super::{be, decode, encode, id_at, pair, Result, StorageError, Store};
use crate::model::{Attachment, MessageId, RoomId, UserId};

pub const CHUNK_SIZE: usize = 256 * 1024;

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

/// An upload in progress: the chunks stored so far and the running checksum.
pub struct ChunkWriter {
    chunks: Vec<[u8; 32]>,
    buf: Vec<u8>,
    sha1: Sha1,
    pub size: u64,
}

impl ChunkWriter {
    pub fn write(&mut self, store: &Store, mut data: &[u8]) -> Result<()> {
        self.size += data.len() as u64;
        self.sha1.update(data);
        while !data.is_empty() {
            let take = (CHUNK_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK_SIZE {
                self.chunks.push(store.put_chunk(&self.buf)?);
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Gives back the chunks of an upload that will not be kept.
    pub fn abort(mut self, store: &Store) {
        for hash in self.chunks.drain(..) {
            if let Err(e) = store.release_chunk(&hash) {
                tracing::error!("releasing a chunk of an aborted upload: {e}");
            }
        }
    }

    /// Stores the last chunk and the attachment record.
    pub fn finish(
        mut self,
        store: &Store,
        message_id: MessageId,
        room_id: RoomId,
        user_id: UserId,
        file_name: &str,
        content_type: &str,
    ) -> Result<AttachmentRecord> {
        if !self.buf.is_empty() {
            let hash = store.put_chunk(&self.buf)?;
            self.chunks.push(hash);
            self.buf.clear();
        }
        let now = crate::now_ms();
        let record = AttachmentRecord {
            attachment_id: store.next_attachment_id.fetch_add(1, Ordering::SeqCst),
            message_id,
            room_id,
            user_id,
            file_name: file_name.to_string(),
            file_size: self.size,
            checksum: hex::encode(self.sha1.clone().finish()),
            content_type: content_type.to_string(),
            created_utc: now,
            last_modified_utc: now,
        };
        let manifest: Vec<u8> = self.chunks.iter().flatten().copied().collect();
        store
            .attachmentid_chunks
            .insert(be(record.attachment_id), manifest)?;
        store
            .attachmentid_attachment
            .insert(be(record.attachment_id), encode(&record))?;
        store
            .messageid_attachmentid
            .insert(pair(message_id, record.attachment_id), &[])?;
        Ok(record)
    }
}

impl Store {
    pub fn begin_upload(&self) -> ChunkWriter {
        ChunkWriter {
            chunks: Vec::new(),
            buf: Vec::with_capacity(CHUNK_SIZE),
            sha1: Sha1::new(),
            size: 0,
        }
    }

    /// Stores a chunk (once per distinct content) and counts one more reference to it.
    fn put_chunk(&self, data: &[u8]) -> Result<[u8; 32]> {
        let mut h = Sha256::new();
        h.update(data);
        let hash = h.finish();
        // Data first, then the reference: a crash in between leaves an unreferenced chunk,
        // never a reference to missing data.
        if !self.chunkhash_chunk.contains_key(hash)? {
            self.chunkhash_chunk.insert(hash, data)?;
        }
        self.chunkhash_refs.update_and_fetch(hash, |old| {
            let n = old.and_then(|o| id_at(o, 0).ok()).unwrap_or(0);
            Some(be(n + 1).to_vec())
        })?;
        Ok(hash)
    }

    /// Drops one reference; the data goes when the last one does.
    fn release_chunk(&self, hash: &[u8; 32]) -> Result<()> {
        let left = self.chunkhash_refs.update_and_fetch(hash, |old| {
            let n = old.and_then(|o| id_at(o, 0).ok()).unwrap_or(0);
            (n > 1).then(|| be(n - 1).to_vec())
        })?;
        if left.is_none() {
            self.chunkhash_chunk.remove(hash)?;
        }
        Ok(())
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

    /// The chunk hashes of an attachment, in order.
    pub fn attachment_chunks(&self, id: u64) -> Result<Vec<[u8; 32]>> {
        let manifest = self
            .attachmentid_chunks
            .get(be(id))?
            .ok_or(StorageError::Corrupt {
                what: "attachment",
                detail: format!("attachment {id} has no chunk list"),
            })?;
        Ok(manifest
            .chunks_exact(32)
            .filter_map(|c| <[u8; 32]>::try_from(c).ok())
            .collect())
    }

    pub fn chunk(&self, hash: &[u8; 32]) -> Result<sled::IVec> {
        self.chunkhash_chunk
            .get(hash)?
            .ok_or(StorageError::Corrupt {
                what: "attachment chunk",
                detail: hex::encode(hash),
            })
    }

    /// Number of distinct chunks stored (for deduplication checks).
    pub fn chunk_count(&self) -> usize {
        self.chunkhash_chunk.len()
    }

    pub fn delete_attachment(&self, record: &AttachmentRecord) -> Result<()> {
        let chunks = self
            .attachment_chunks(record.attachment_id)
            .unwrap_or_default();
        self.messageid_attachmentid
            .remove(pair(record.message_id, record.attachment_id))?;
        self.attachmentid_attachment
            .remove(be(record.attachment_id))?;
        self.attachmentid_chunks.remove(be(record.attachment_id))?;
        for hash in &chunks {
            self.release_chunk(hash)?;
        }
        Ok(())
    }
}
