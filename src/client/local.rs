//! The client's local copy (sled, one folder per server and user): the rooms its user may
//! see and their messages, kept current by [`sync`]. A room the user loses is dropped with
//! all its messages; a room they get (back) is fetched whole.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{Client, ClientError, Direction};
use crate::model::{Room, TextMessage};

pub struct LocalStore {
    db: sled::Db,
    rooms: sled::Tree,
    messages: sled::Tree,
}

fn key(room: u64, message: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&room.to_be_bytes());
    k[8..].copy_from_slice(&message.to_be_bytes());
    k
}

fn local_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Usage(format!("local store: {e}"))
}

impl LocalStore {
    /// `$XDG_DATA_HOME/confab/<server>/<user>` (or `~/.local/share/…`).
    pub fn default_dir(server: &str, user: &str) -> PathBuf {
        let base = std::env::var("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|_| PathBuf::from("."));
        let safe = |s: &str| s.replace(['/', '\\', ':'], "_");
        base.join("confab").join(safe(server)).join(safe(user))
    }

    pub fn open(dir: &Path) -> Result<LocalStore, ClientError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(16 << 20)
            .open()
            .map_err(local_err)?;
        Ok(LocalStore {
            rooms: db.open_tree("roomid_room").map_err(local_err)?,
            messages: db
                .open_tree("roomid_messageid_message")
                .map_err(local_err)?,
            db,
        })
    }

    pub fn cursor(&self) -> u64 {
        self.db
            .get("cursor")
            .ok()
            .flatten()
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0)
    }

    fn set_cursor(&self, c: u64) -> Result<(), ClientError> {
        self.db
            .insert("cursor", &c.to_be_bytes())
            .map_err(local_err)?;
        Ok(())
    }

    fn put_room(&self, room: &Room) -> Result<(), ClientError> {
        let v = serde_json::to_vec(room).map_err(local_err)?;
        self.rooms
            .insert(room.room_id.to_be_bytes(), v)
            .map_err(local_err)?;
        Ok(())
    }

    fn drop_room(&self, room_id: u64) -> Result<(), ClientError> {
        self.rooms
            .remove(room_id.to_be_bytes())
            .map_err(local_err)?;
        for kv in self.messages.scan_prefix(room_id.to_be_bytes()) {
            let (k, _) = kv.map_err(local_err)?;
            self.messages.remove(k).map_err(local_err)?;
        }
        Ok(())
    }

    fn put_message(&self, m: &TextMessage) -> Result<(), ClientError> {
        let v = serde_json::to_vec(m).map_err(local_err)?;
        self.messages
            .insert(key(m.room_id, m.message_id), v)
            .map_err(local_err)?;
        Ok(())
    }

    pub fn rooms(&self) -> Result<Vec<Room>, ClientError> {
        self.rooms
            .iter()
            .map(|kv| serde_json::from_slice(&kv.map_err(local_err)?.1).map_err(local_err))
            .collect()
    }

    /// A room id from an id or a unique display name, among the local rooms.
    pub fn resolve_room(&self, room: &str) -> Result<u64, ClientError> {
        if let Ok(id) = room.parse() {
            return Ok(id);
        }
        let found: Vec<u64> = self
            .rooms()?
            .into_iter()
            .filter(|r| r.display_name == room)
            .map(|r| r.room_id)
            .collect();
        match found.as_slice() {
            [id] => Ok(*id),
            [] => Err(ClientError::Usage(format!(
                "no room named '{room}' in the local store (run confab sync)"
            ))),
            _ => Err(ClientError::Usage(format!(
                "several local rooms are named '{room}'; use the id"
            ))),
        }
    }

    /// All messages (and comments) of a local room, in id order.
    pub fn messages(&self, room_id: u64) -> Result<Vec<TextMessage>, ClientError> {
        self.messages
            .scan_prefix(room_id.to_be_bytes())
            .map(|kv| serde_json::from_slice(&kv.map_err(local_err)?.1).map_err(local_err))
            .collect()
    }

    pub fn message_count(&self) -> usize {
        self.messages.len()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyncPage {
    cursor: u64,
    has_more: bool,
    /// Every room of the user (a first sync, or a cursor beyond the server's horizon).
    #[serde(default)]
    full: bool,
    rooms_added: Vec<Room>,
    rooms_removed: Vec<u64>,
    rooms_changed: Vec<Room>,
    messages: Vec<TextMessage>,
    deleted_messages: Vec<Value>,
}

/// What one sync did.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncSummary {
    pub rooms_added: usize,
    pub rooms_removed: usize,
    pub rooms_changed: usize,
    pub messages_stored: usize,
    pub messages_deleted: usize,
    pub cursor: u64,
}

/// Brings the local store up to date with the server.
pub async fn sync(client: &mut Client, store: &LocalStore) -> Result<SyncSummary, ClientError> {
    let mut summary = SyncSummary::default();
    loop {
        let cursor = store.cursor();
        let (status, v) = client
            .request_raw(
                awc::http::Method::GET,
                &format!("/api/v1/sync?cursor={cursor}"),
                None,
            )
            .await?;
        if status != 200 {
            return Err(ClientError::Api {
                status,
                text: v["errorText"].as_str().unwrap_or("").to_string(),
            });
        }
        let page: SyncPage =
            serde_json::from_value(v).map_err(|e| ClientError::Decode(e.to_string()))?;
        for room_id in &page.rooms_removed {
            store.drop_room(*room_id)?;
        }
        if page.full {
            // A full answer lists every room the user has: any other is gone.
            for room in store.rooms()? {
                if !page.rooms_added.iter().any(|r| r.room_id == room.room_id) {
                    store.drop_room(room.room_id)?;
                    summary.rooms_removed += 1;
                }
            }
        }
        for room in &page.rooms_added {
            // (Back) in this room: its whole history, comments included.
            store.drop_room(room.room_id)?;
            store.put_room(room)?;
            let mut after = None;
            loop {
                let batch = client
                    .history(room.room_id, after, Some(500), Some(Direction::Forward))
                    .await?;
                for m in &batch {
                    store.put_message(m)?;
                    summary.messages_stored += 1;
                    if m.comment_count > 0 {
                        for c in client.comments(m.message_id, None, None, None).await? {
                            store.put_message(&c)?;
                            summary.messages_stored += 1;
                        }
                    }
                }
                match batch.last() {
                    Some(last) if batch.len() == 500 => after = Some(last.message_id),
                    _ => break,
                }
            }
        }
        for room in &page.rooms_changed {
            store.put_room(room)?;
        }
        for m in &page.messages {
            if store
                .rooms
                .contains_key(m.room_id.to_be_bytes())
                .map_err(local_err)?
            {
                store.put_message(m)?;
                summary.messages_stored += 1;
            }
        }
        for d in &page.deleted_messages {
            if let (Some(r), Some(id)) = (d["roomId"].as_u64(), d["messageId"].as_u64()) {
                store.messages.remove(key(r, id)).map_err(local_err)?;
                summary.messages_deleted += 1;
            }
        }
        summary.rooms_added += page.rooms_added.len();
        summary.rooms_removed += page.rooms_removed.len();
        summary.rooms_changed += page.rooms_changed.len();
        store.set_cursor(page.cursor)?;
        store.db.flush_async().await.map_err(local_err)?;
        summary.cursor = page.cursor;
        if !page.has_more {
            return Ok(summary);
        }
    }
}
