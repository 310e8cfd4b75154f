//! Encryption at rest (`--encryption-key-file`): with a server key, records holding user
//! data are sealed with XChaCha20-Poly1305 before they reach sled, attachment content and
//! thumbnails before they reach the attachments folder, and indexes keyed by a name (user
//! names, join codes, content hashes) are keyed by a keyed hash (HMAC-SHA256) of it instead.
//!
//! - **Keys.** The key file holds a 256-bit key (64 hex digits, `openssl rand -hex 32`) or a
//!   passphrase (argon2id with a per-folder salt turns it into the key). Four subkeys are
//!   derived from it (HMAC-SHA256 of a label): records, index keys, content, content names.
//!   The key is never written to the storage folder; the folder's `meta` tree holds the salt
//!   and a sealed check value, so a wrong key is refused at open instead of reading garbage.
//! - **Records**: `[1][24-byte random nonce][ciphertext][16-byte tag]`, the table name and
//!   the record's key as associated data, so a sealed value moved to another record (or
//!   another table) does not open.
//! - **Content**: a header (`CFXC`, version, 16 random bytes) and 64 KiB chunks, each sealed
//!   under the header's bytes and its index as nonce and a last-chunk flag as associated
//!   data (the STREAM construction): a range is read by opening only the chunks under it,
//!   and a truncated or reordered file fails to open.
//!
//! What stays in clear: ids and the index keys made of them (room ‖ message, message ‖
//! user…), membership and permission flags, read times, reference counts and sizes, the
//! change log (it names ids, never content), reaction emoji in their index keys, the names
//! of server settings.

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::tables::{Table, Trees};
use super::{Result, StorageError};

/// The `meta` key of the folder's encryption header.
pub(crate) const HEADER_KEY: &str = "encryption";

/// Tables whose values are sealed.
pub(crate) fn sealed_table(t: Table) -> bool {
    matches!(
        t,
        Table::UseridUser
            | Table::SessionhashSession
            | Table::RoomidRoom
            | Table::MessageidMessage
            | Table::AttachmentidAttachment
            | Table::AvatarImage
            | Table::SettingValue
            | Table::UseridIdemkeyResult
            | Table::DeviceidDevice
            | Table::UseridPushsettings
            | Table::PushJob
            | Table::PushDelivery
    )
}

/// Tables keyed by a name, which an encrypted folder keys by the name's keyed hash.
pub(crate) fn blind_table(t: Table) -> bool {
    matches!(t, Table::UsernameUserid | Table::JoincodeRoomid)
}

/// What a key file holds.
pub enum KeyMaterial {
    Key(Zeroizing<[u8; 32]>),
    Passphrase(Zeroizing<String>),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyMaterial::Key(_) => "KeyMaterial::Key(..)",
            KeyMaterial::Passphrase(_) => "KeyMaterial::Passphrase(..)",
        })
    }
}

/// Shortest passphrase accepted.
pub const MIN_PASSPHRASE: usize = 12;

/// Reads `--encryption-key-file`: 64 hex digits are a key; anything else (its first line)
/// is a passphrase of at least [`MIN_PASSPHRASE`] characters.
pub fn read_key_file(path: &Path) -> Result<KeyMaterial> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        StorageError::Key(format!(
            "cannot read the encryption key file {}: {e}",
            path.display()
        ))
    })?);
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        StorageError::Key(format!(
            "the encryption key file {} is neither 64 hex digits nor a text passphrase \
             (make one with: openssl rand -hex 32 > {})",
            path.display(),
            path.display()
        ))
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    let hexdigits = line.trim();
    if hexdigits.len() == 64 && hexdigits.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hexdigits, &mut key[..]).map_err(|e| {
            StorageError::Key(format!("the encryption key in {}: {e}", path.display()))
        })?;
        return Ok(KeyMaterial::Key(key));
    }
    if line.chars().count() < MIN_PASSPHRASE {
        return Err(StorageError::Key(format!(
            "the encryption key file {} holds neither a key (64 hex digits, e.g. from \
             `openssl rand -hex 32`) nor a passphrase of at least {MIN_PASSPHRASE} characters",
            path.display()
        )));
    }
    Ok(KeyMaterial::Passphrase(Zeroizing::new(line.to_string())))
}

/// The folder's encryption header, in `meta` (clear: it holds nothing secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    version: u32,
    cipher: String,
    /// argon2id salt for a passphrase (hex).
    salt: String,
    /// [`CHECK_TEXT`] sealed under the record key (hex).
    check: String,
}

const CHECK_TEXT: &[u8] = b"confab storage key check";
const CIPHER_NAME: &str = "XChaCha20-Poly1305";
const RECORD_VERSION: u8 = 1;
/// A record compressed (zstd) before it was sealed.
const RECORD_COMPRESSED: u8 = 2;
/// Records shorter than this are sealed as they are (compression would not pay).
const COMPRESS_FROM: usize = 96;
/// The largest record a compressed one may claim to expand to.
const MAX_RECORD: usize = 64 << 20;
const NONCE: usize = 24;
const TAG: usize = 16;

/// The keys of an encrypted folder, derived from its key file.
pub struct Sealer {
    record: XChaCha20Poly1305,
    content: XChaCha20Poly1305,
    index_key: Zeroizing<[u8; 32]>,
    content_name_key: Zeroizing<[u8; 32]>,
}

fn hmac(key: &[u8], data: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for d in data {
        mac.update(d);
    }
    mac.finalize().into_bytes().into()
}

fn master_key(material: &KeyMaterial, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    match material {
        KeyMaterial::Key(k) => Ok(k.clone()),
        KeyMaterial::Passphrase(p) => {
            // 64 MiB, 3 passes: about a quarter second, once per start.
            let params = argon2::Params::new(64 * 1024, 3, 1, Some(32))
                .map_err(|e| StorageError::Key(format!("key derivation: {e}")))?;
            let argon =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let mut out = Zeroizing::new([0u8; 32]);
            argon
                .hash_password_into(p.as_bytes(), salt, &mut out[..])
                .map_err(|e| StorageError::Key(format!("key derivation: {e}")))?;
            Ok(out)
        }
    }
}

fn corrupt(what: &'static str, detail: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        what,
        detail: detail.into(),
    }
}

impl Sealer {
    fn derive(master: &[u8; 32]) -> Sealer {
        let sub = |label: &[u8]| Zeroizing::new(hmac(master, &[b"confab/", label, b"/v1"]));
        let record = sub(b"record");
        let content = sub(b"content");
        Sealer {
            record: XChaCha20Poly1305::new(record.as_ref().into()),
            content: XChaCha20Poly1305::new(content.as_ref().into()),
            index_key: sub(b"index"),
            content_name_key: sub(b"content-name"),
        }
    }

    /// A new key for a folder: the header to store with it.
    fn create(material: &KeyMaterial) -> Result<(Sealer, Header)> {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let sealer = Sealer::derive(&*master_key(material, &salt)?);
        let check = sealer.seal(Table::Meta, HEADER_KEY.as_bytes(), CHECK_TEXT);
        let header = Header {
            version: 1,
            cipher: CIPHER_NAME.into(),
            salt: hex::encode(salt),
            check: hex::encode(check),
        };
        Ok((sealer, header))
    }

    /// Seals one record value, bound to its table and key. Records are compressed first
    /// when that makes them smaller (sled's own compression sees only ciphertext).
    pub fn seal(&self, t: Table, key: &[u8], plain: &[u8]) -> Vec<u8> {
        let packed = (plain.len() >= COMPRESS_FROM)
            .then(|| zstd::block::compress(plain, 1).ok())
            .flatten()
            .filter(|c| c.len() + 4 < plain.len())
            .map(|c| {
                // The plain length first: decompression then allocates exactly that.
                let mut body = Vec::with_capacity(4 + c.len());
                body.extend_from_slice(&(plain.len() as u32).to_be_bytes());
                body.extend_from_slice(&c);
                body
            });
        let (version, body) = match &packed {
            Some(c) => (RECORD_COMPRESSED, c.as_slice()),
            None => (RECORD_VERSION, plain),
        };
        self.seal_as(version, t, key, body)
    }

    fn seal_as(&self, version: u8, t: Table, key: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE];
        rand::thread_rng().fill_bytes(&mut nonce);
        let aad = record_aad(t, key);
        let sealed = self
            .record
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            // Encryption fails only for messages over 256 GiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE + sealed.len());
        out.push(version);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a record value sealed by [`Sealer::seal`] for this table and key.
    pub fn open(&self, t: Table, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < 1 + NONCE + TAG
            || (sealed[0] != RECORD_VERSION && sealed[0] != RECORD_COMPRESSED)
        {
            return Err(corrupt(
                "sealed record",
                format!("{}: not a sealed value", t.name()),
            ));
        }
        let aad = record_aad(t, key);
        let opened = self
            .record
            .decrypt(
                XNonce::from_slice(&sealed[1..1 + NONCE]),
                Payload {
                    msg: &sealed[1 + NONCE..],
                    aad: &aad,
                },
            )
            .map_err(|_| {
                corrupt(
                    "sealed record",
                    format!(
                        "{}: does not open under the storage key (damaged, or not this record's)",
                        t.name()
                    ),
                )
            })?;
        if sealed[0] == RECORD_COMPRESSED {
            return decompress(&opened)
                .map_err(|e| corrupt("sealed record", format!("{}: {e}", t.name())));
        }
        Ok(opened)
    }

    /// The key an index keyed by a name stores for `name`.
    pub fn index_key(&self, name: &[u8]) -> Vec<u8> {
        hmac(&self.index_key[..], &[name]).to_vec()
    }

    /// The name (64 hex digits) under which content with this SHA-256 is stored: a keyed
    /// hash, so the folder does not tell which known files it holds.
    pub fn content_name(&self, sha256_hex: &str) -> String {
        hex::encode(hmac(&self.content_name_key[..], &[sha256_hex.as_bytes()]))
    }
}

/// `[plain length u32][zstd block]` back to the plain record (one decompressor per thread:
/// a fresh zstd context costs more than a small record).
fn decompress(body: &[u8]) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<zstd::block::Decompressor> =
            std::cell::RefCell::new(zstd::block::Decompressor::new());
    }
    let (len, block) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| std::io::Error::other("compressed record without its length"))?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > MAX_RECORD {
        return Err(std::io::Error::other("compressed record too long"));
    }
    DECOMPRESSOR.with(|d| match d.try_borrow_mut() {
        Ok(mut d) => d.decompress(block, len),
        Err(_) => zstd::block::Decompressor::new().decompress(block, len),
    })
}

fn record_aad(t: Table, key: &[u8]) -> Vec<u8> {
    let name = t.name().as_bytes();
    let mut aad = Vec::with_capacity(name.len() + 1 + key.len());
    aad.extend_from_slice(name);
    aad.push(0);
    aad.extend_from_slice(key);
    aad
}

/// The key a table stores for `key`: a keyed hash for name-keyed indexes of an encrypted
/// folder, the key itself otherwise.
pub(crate) fn blind<'a>(sealer: Option<&Sealer>, t: Table, key: &'a [u8]) -> Cow<'a, [u8]> {
    match sealer {
        Some(s) if blind_table(t) => Cow::Owned(s.index_key(key)),
        _ => Cow::Borrowed(key),
    }
}

/// Whether the database holds anything a client made (a folder that does not may be given
/// a key at its first start).
fn holds_data(trees: &Trees) -> Result<bool> {
    for t in [
        Table::UseridUser,
        Table::RoomidRoom,
        Table::MessageidMessage,
        Table::AttachmentidAttachment,
    ] {
        if trees[t].first()?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn read_header(trees: &Trees) -> Result<Option<Header>> {
    match trees[Table::Meta].get(HEADER_KEY)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| corrupt("encryption header", e.to_string())),
    }
}

/// Whether the database is encrypted (has an encryption header).
pub(crate) fn is_encrypted(trees: &Trees) -> Result<bool> {
    Ok(read_header(trees)?.is_some())
}

/// At open: the sealer of an encrypted folder (checked against its header), none for a
/// clear one, a new key for a new folder given one; a clear error for every mismatch.
pub(crate) fn unlock(
    trees: &Trees,
    dir: &Path,
    key: Option<&KeyMaterial>,
) -> Result<Option<Sealer>> {
    unlock_with(trees, dir, key, true)
}

/// Like [`unlock`], for tools that write nothing: a key for a clear folder is an error.
pub(crate) fn unlock_existing(
    trees: &Trees,
    dir: &Path,
    key: Option<&KeyMaterial>,
) -> Result<Option<Sealer>> {
    unlock_with(trees, dir, key, false)
}

fn unlock_with(
    trees: &Trees,
    dir: &Path,
    key: Option<&KeyMaterial>,
    may_create: bool,
) -> Result<Option<Sealer>> {
    match (read_header(trees)?, key) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(StorageError::Key(format!(
            "the storage folder {} is encrypted: start with --encryption-key-file FILE naming \
             the key file it was encrypted with",
            dir.display()
        ))),
        (None, Some(material)) => {
            if !may_create || holds_data(trees)? {
                return Err(StorageError::Key(format!(
                    "the storage folder {} is not encrypted: start without \
                     --encryption-key-file, or convert it first with the server stopped: \
                     confab-server --storage-dir {} admin encrypt --encryption-key-file FILE",
                    dir.display(),
                    dir.display()
                )));
            }
            let (sealer, header) = Sealer::create(material)?;
            write_header(trees, &header)?;
            tracing::info!("storage folder {}: encrypted at rest", dir.display());
            Ok(Some(sealer))
        }
        (Some(header), Some(material)) => open_with_header(&header, material, dir).map(Some),
    }
}

fn open_with_header(header: &Header, material: &KeyMaterial, dir: &Path) -> Result<Sealer> {
    if header.version != 1 || header.cipher != CIPHER_NAME {
        return Err(StorageError::Key(format!(
            "the storage folder {} is encrypted with {} (version {}), which this server does \
             not know: upgrade Confab",
            dir.display(),
            header.cipher,
            header.version
        )));
    }
    let salt =
        hex::decode(&header.salt).map_err(|e| corrupt("encryption header", e.to_string()))?;
    let check =
        hex::decode(&header.check).map_err(|e| corrupt("encryption header", e.to_string()))?;
    let sealer = Sealer::derive(&*master_key(material, &salt)?);
    match sealer.open(Table::Meta, HEADER_KEY.as_bytes(), &check) {
        Ok(text) if text == CHECK_TEXT => Ok(sealer),
        _ => Err(StorageError::Key(format!(
            "the encryption key does not open the storage folder {}: it was encrypted with a \
             different key or passphrase",
            dir.display()
        ))),
    }
}

fn write_header(trees: &Trees, header: &Header) -> Result<()> {
    let bytes =
        serde_json::to_vec(header).map_err(|e| corrupt("encryption header", e.to_string()))?;
    trees[Table::Meta].insert(HEADER_KEY, bytes)?;
    trees.db.flush()?;
    trees.sync_to_device()
}

// ---- content files ----

const CONTENT_MAGIC: &[u8; 4] = b"CFXC";
const CONTENT_VERSION: u8 = 1;
const PREFIX: usize = 16;
const CONTENT_HEADER: usize = 4 + 1 + PREFIX;
/// Plain bytes per sealed chunk.
pub const CHUNK: usize = 64 * 1024;
const SEALED_CHUNK: usize = CHUNK + TAG;

/// Chunks of `plain` bytes of content (an empty file has one, empty).
fn chunks_of(plain: u64) -> u64 {
    plain.div_ceil(CHUNK as u64).max(1)
}

/// Bytes of the sealed file of `plain` bytes of content.
pub fn sealed_content_len(plain: u64) -> u64 {
    CONTENT_HEADER as u64 + plain + TAG as u64 * chunks_of(plain)
}

fn chunk_nonce(prefix: &[u8; PREFIX], index: u64) -> [u8; NONCE] {
    let mut n = [0u8; NONCE];
    n[..PREFIX].copy_from_slice(prefix);
    n[PREFIX..].copy_from_slice(&index.to_be_bytes());
    n
}

/// Seals content as it is written: whole chunks go out as soon as more bytes follow them
/// (only [`ContentSealer::finish`] knows which chunk is the last).
pub struct ContentSealer {
    sealer: std::sync::Arc<Sealer>,
    prefix: [u8; PREFIX],
    index: u64,
    buf: Vec<u8>,
    started: bool,
}

impl ContentSealer {
    pub fn new(sealer: std::sync::Arc<Sealer>) -> ContentSealer {
        let mut prefix = [0u8; PREFIX];
        rand::rngs::OsRng.fill_bytes(&mut prefix);
        ContentSealer {
            sealer,
            prefix,
            index: 0,
            buf: Vec::with_capacity(CHUNK),
            started: false,
        }
    }

    fn emit(&mut self, out: &mut impl Write, last: bool) -> std::io::Result<()> {
        if !self.started {
            out.write_all(CONTENT_MAGIC)?;
            out.write_all(&[CONTENT_VERSION])?;
            out.write_all(&self.prefix)?;
            self.started = true;
        }
        let nonce = chunk_nonce(&self.prefix, self.index);
        let sealed = self
            .sealer
            .content
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &self.buf,
                    aad: &[u8::from(last)],
                },
            )
            .map_err(|_| std::io::Error::other("sealing a chunk failed"))?;
        out.write_all(&sealed)?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    pub fn write(&mut self, out: &mut impl Write, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.buf.len() == CHUNK {
                self.emit(out, false)?;
            }
            let n = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        Ok(())
    }

    /// Seals the last chunk.
    pub fn finish(mut self, out: &mut impl Write) -> std::io::Result<()> {
        self.emit(out, true)
    }
}

/// Writes `plain` to `path` sealed (a thumbnail, a converted file).
pub fn seal_bytes_to(
    sealer: &std::sync::Arc<Sealer>,
    plain: &[u8],
    out: &mut File,
) -> std::io::Result<()> {
    let mut s = ContentSealer::new(sealer.clone());
    let mut w = std::io::BufWriter::new(out);
    s.write(&mut w, plain)?;
    s.finish(&mut w)?;
    w.flush()
}

/// A sealed content file opened for reading ranges of its plain bytes.
pub struct ContentOpener {
    sealer: std::sync::Arc<Sealer>,
    file: File,
    prefix: [u8; PREFIX],
    chunks: u64,
    /// Plain bytes.
    pub len: u64,
}

impl ContentOpener {
    pub fn open(sealer: std::sync::Arc<Sealer>, path: &Path) -> std::io::Result<ContentOpener> {
        let mut file = File::open(path)?;
        let size = file.metadata()?.len();
        let mut head = [0u8; CONTENT_HEADER];
        file.read_exact(&mut head)?;
        if &head[..4] != CONTENT_MAGIC || head[4] != CONTENT_VERSION {
            return Err(std::io::Error::other("not a sealed content file"));
        }
        let mut prefix = [0u8; PREFIX];
        prefix.copy_from_slice(&head[5..]);
        let truncated = || std::io::Error::other("sealed content file is truncated");
        let body = size
            .checked_sub(CONTENT_HEADER as u64)
            .ok_or_else(truncated)?;
        let chunks = body.div_ceil(SEALED_CHUNK as u64).max(1);
        // Every chunk, the last included, holds at least its tag: then `len` counts the
        // plain bytes and every chunk's offset lies inside it.
        let last = body - (chunks - 1) * SEALED_CHUNK as u64;
        if last < TAG as u64 {
            return Err(truncated());
        }
        let len = body - TAG as u64 * chunks;
        Ok(ContentOpener {
            sealer,
            file,
            prefix,
            chunks,
            len,
        })
    }

    /// The plain bytes of chunk `index`.
    pub fn chunk(&mut self, index: u64) -> std::io::Result<Vec<u8>> {
        if index >= self.chunks {
            return Err(std::io::Error::other("chunk past the end"));
        }
        let at = CONTENT_HEADER as u64 + index * SEALED_CHUNK as u64;
        let plain = (self.len - index * CHUNK as u64).min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; plain + TAG];
        self.file.seek(SeekFrom::Start(at))?;
        self.file.read_exact(&mut buf)?;
        let last = index + 1 == self.chunks;
        self.sealer
            .content
            .decrypt(
                XNonce::from_slice(&chunk_nonce(&self.prefix, index)),
                Payload {
                    msg: &buf,
                    aad: &[u8::from(last)],
                },
            )
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "sealed content does not open under the storage key (damaged file)",
                )
            })
    }

    /// Plain bytes `start..end` (end exclusive, at most `len`), one chunk at a time.
    pub fn read_range(
        &mut self,
        start: u64,
        end: u64,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> std::io::Result<()> {
        let end = end.min(self.len);
        let mut at = start;
        while at < end {
            let index = at / CHUNK as u64;
            let chunk = self.chunk(index)?;
            let from = (at - index * CHUNK as u64) as usize;
            let to = ((end - index * CHUNK as u64) as usize).min(chunk.len());
            if !each(&chunk[from..to]) {
                break;
            }
            at = index * CHUNK as u64 + to as u64;
        }
        Ok(())
    }

    /// The whole plain content, refused above `limit` bytes.
    pub fn read_all(&mut self, limit: u64) -> std::io::Result<Vec<u8>> {
        if self.len > limit {
            return Err(std::io::Error::other("content too large to read whole"));
        }
        let mut out = Vec::with_capacity(self.len as usize);
        self.read_range(0, self.len, |b| {
            out.extend_from_slice(b);
            true
        })?;
        Ok(out)
    }
}

/// Converts a clear folder's database into `to`, sealed under `sealer` (the offline
/// `admin encrypt`): every record of a sealed table sealed, name-keyed indexes rekeyed,
/// content names replaced by keyed names. Returns how many records were sealed.
pub(crate) fn export_sealed(
    from: &sled::Db,
    to: &sled::Db,
    sealer: &Sealer,
    header_json: Vec<u8>,
) -> Result<u64> {
    let mut sealed = 0u64;
    for name in from.tree_names() {
        let Some(table) = Table::ALL
            .iter()
            .copied()
            .find(|t| t.name().as_bytes() == &name[..])
        else {
            // sled's default tree: nothing of Confab's is stored there.
            continue;
        };
        if table == Table::UnitJournal {
            continue; // replayed and empty after a clean open
        }
        let src = from.open_tree(&name)?;
        let dst = to.open_tree(&name)?;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in src.iter() {
            let (k, v) = kv?;
            let key: Vec<u8> = match table {
                Table::ContenthashRefs => sealer
                    .content_name(&String::from_utf8_lossy(&k))
                    .into_bytes(),
                t if blind_table(t) => sealer.index_key(&k),
                _ => k.to_vec(),
            };
            let mut value = v.to_vec();
            if table == Table::AttachmentidAttachment {
                let mut record: serde_json::Value = serde_json::from_slice(&value)
                    .map_err(|e| corrupt("attachment", e.to_string()))?;
                if let Some(hash) = record.get("content_hash").and_then(|h| h.as_str()) {
                    record["content_hash"] = serde_json::Value::String(sealer.content_name(hash));
                }
                value = serde_json::to_vec(&record)
                    .map_err(|e| corrupt("attachment", e.to_string()))?;
            }
            if sealed_table(table) {
                value = sealer.seal(table, &key, &value);
                sealed += 1;
            }
            batch.insert(key, value);
            n += 1;
            if n % 4096 == 0 {
                dst.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        if table == Table::Meta {
            batch.insert(HEADER_KEY.as_bytes(), header_json.clone());
        }
        dst.apply_batch(batch)?;
    }
    to.flush()?;
    Ok(sealed)
}

/// A new sealer and its header (JSON) for converting a folder.
pub(crate) fn new_key(material: &KeyMaterial) -> Result<(Sealer, Vec<u8>)> {
    let (sealer, header) = Sealer::create(material)?;
    let json =
        serde_json::to_vec(&header).map_err(|e| corrupt("encryption header", e.to_string()))?;
    Ok((sealer, json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sealer() -> Arc<Sealer> {
        Arc::new(Sealer::derive(&[7u8; 32]))
    }

    #[test]
    fn records_open_only_where_they_were_sealed() {
        let s = sealer();
        let v = s.seal(Table::MessageidMessage, &[0, 1], b"hello");
        assert_eq!(
            s.open(Table::MessageidMessage, &[0, 1], &v).unwrap(),
            b"hello"
        );
        assert!(s.open(Table::MessageidMessage, &[0, 2], &v).is_err());
        assert!(s.open(Table::RoomidRoom, &[0, 1], &v).is_err());
        let other = Sealer::derive(&[8u8; 32]);
        assert!(other.open(Table::MessageidMessage, &[0, 1], &v).is_err());
        let mut bad = v.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(s.open(Table::MessageidMessage, &[0, 1], &bad).is_err());
    }

    #[test]
    fn content_round_trips_in_ranges_and_truncation_is_caught() {
        let s = sealer();
        let dir = tempfile::tempdir().unwrap();
        for size in [0usize, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let plain: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.path().join(format!("f{size}"));
            let mut f = File::create(&path).unwrap();
            let mut w = ContentSealer::new(s.clone());
            // Odd write sizes, as an upload's frames come.
            for part in plain.chunks(1000) {
                w.write(&mut f, part).unwrap();
            }
            w.finish(&mut f).unwrap();
            drop(f);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                sealed_content_len(size as u64)
            );
            let mut r = ContentOpener::open(s.clone(), &path).unwrap();
            assert_eq!(r.len, size as u64);
            assert_eq!(r.read_all(u64::MAX).unwrap(), plain);
            if size > 10 {
                let (a, b) = (size as u64 / 3, size as u64 - 5);
                let mut got = Vec::new();
                r.read_range(a, b, |x| {
                    got.extend_from_slice(x);
                    true
                })
                .unwrap();
                assert_eq!(got, &plain[a as usize..b as usize]);
            }
            if size > CHUNK {
                // A last chunk cut shorter than its tag: refused at open, not read past.
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(CONTENT_HEADER as u64 + SEALED_CHUNK as u64 + 5)
                    .unwrap();
                assert!(ContentOpener::open(s.clone(), &path).is_err());
                // Cut at a chunk boundary: the new last chunk was not sealed as the last.
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(CONTENT_HEADER as u64 + SEALED_CHUNK as u64)
                    .unwrap();
                let mut r = ContentOpener::open(s.clone(), &path).unwrap();
                assert!(r.read_all(u64::MAX).is_err());
            }
        }
    }
}
