//! Who is connected: each user's open event sessions (desktop, phone, browser…), shared by
//! every deliverer. A room's actor, on whichever arbiter it runs, pushes its events straight
//! into the recipients' session queues: delivery never funnels through one thread. The map
//! is sharded by user so readers on different cores rarely meet on a lock, and sessions
//! change it only when they connect and disconnect.
//!
//! It also knows who can be reached when not connected: the users with a push device
//! registered, so a room's actor picks a post's push recipients without a storage read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use actix::Addr;
use actix_ws::CloseCode;

use super::session::{CloseSession, EventSession, Pushed, SessionQueue};
use super::Payload;
use crate::model::UserId;

const SHARDS: usize = 16;

#[derive(Clone)]
struct SessionHandle {
    id: u64,
    /// The login session it authenticated with (`session::login_tag`; 0: a token).
    login: u64,
    queue: Arc<SessionQueue>,
    addr: Addr<EventSession>,
    extensions: Extensions,
    /// The client said its app is in the background (`AppState`): it is connected, but
    /// its user is not looking, so push notifications go out as if it were not.
    background: bool,
}

/// Event-stream extensions a session asked for when it connected
/// (`/api/v1/events?extensions=…`, see `docs/api.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `MessagesRead` deltas instead of whole messages for read receipts.
    pub read_deltas: bool,
}

impl Extensions {
    /// Parses a comma-separated list; unknown names are ignored so clients can ask for
    /// extensions newer servers add.
    pub fn parse(list: &str) -> Extensions {
        let mut e = Extensions::default();
        for name in list.split(',').map(str::trim) {
            if name.eq_ignore_ascii_case("readDeltas") {
                e.read_deltas = true;
            }
        }
        e
    }
}

type Shard = HashMap<UserId, Vec<SessionHandle>>;

pub struct Directory {
    shards: Vec<RwLock<Shard>>,
    sessions: AtomicUsize,
    users: AtomicUsize,
    /// Users with at least one push device (loaded at start, kept by the device calls).
    pushable: RwLock<std::collections::HashSet<UserId>>,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryStats {
    pub connected_sessions: usize,
    pub connected_users: usize,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            sessions: AtomicUsize::new(0),
            users: AtomicUsize::new(0),
            pushable: RwLock::default(),
        }
    }
}

impl Directory {
    fn shard(&self, user: UserId) -> &RwLock<Shard> {
        &self.shards[(user as usize) % SHARDS]
    }

    pub fn register(
        &self,
        user: UserId,
        id: u64,
        login: u64,
        queue: Arc<SessionQueue>,
        addr: Addr<EventSession>,
        extensions: Extensions,
    ) {
        let mut shard = self.shard(user).write().unwrap_or_else(|e| e.into_inner());
        let list = shard.entry(user).or_default();
        if list.is_empty() {
            self.users.fetch_add(1, Ordering::Relaxed);
        }
        list.push(SessionHandle {
            id,
            login,
            queue,
            addr,
            extensions,
            background: false,
        });
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unregister(&self, user: UserId, id: u64) {
        let mut shard = self.shard(user).write().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = shard.get_mut(&user) {
            let before = list.len();
            list.retain(|s| s.id != id);
            self.sessions
                .fetch_sub(before - list.len(), Ordering::Relaxed);
            if list.is_empty() {
                shard.remove(&user);
                self.users.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn sessions_of(&self, user: UserId) -> Vec<SessionHandle> {
        self.shard(user)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user)
            .cloned()
            .unwrap_or_default()
    }

    /// Pushes `payload` to every session of `user`; a session whose queue is full is ended.
    fn push(&self, shard: &Shard, user: UserId, payload: &Payload) {
        if let Some(list) = shard.get(&user) {
            for s in list {
                if s.queue.push(payload) == Pushed::Full {
                    s.addr.do_send(CloseSession {
                        code: None,
                        reason: String::new(),
                    });
                }
            }
        }
    }

    /// One event for every session of each listed user.
    pub fn deliver(&self, users: &[UserId], payload: &Payload) {
        // Users grouped by shard: one lock per shard, not per user.
        let mut by_shard: [Vec<UserId>; SHARDS] = Default::default();
        for &u in users {
            by_shard[(u as usize) % SHARDS].push(u);
        }
        for (i, list) in by_shard.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let shard = self.shards[i].read().unwrap_or_else(|e| e.into_inner());
            for &u in list {
                self.push(&shard, u, payload);
            }
        }
    }

    /// Read receipts for the listed users: `delta` to sessions that took the `readDeltas`
    /// extension, `whole` (if any) to the others.
    pub fn deliver_receipts(&self, users: &[UserId], whole: Option<&Payload>, delta: &Payload) {
        for &user in users {
            let shard = self.shard(user).read().unwrap_or_else(|e| e.into_inner());
            let Some(list) = shard.get(&user) else {
                continue;
            };
            for s in list {
                let payload = match (s.extensions.read_deltas, whole) {
                    (true, _) => delta,
                    (false, Some(whole)) => whole,
                    (false, None) => continue,
                };
                if s.queue.push(payload) == Pushed::Full {
                    s.addr.do_send(CloseSession {
                        code: None,
                        reason: String::new(),
                    });
                }
            }
        }
    }

    /// A payload of its own for each listed user.
    pub fn deliver_each(&self, items: &[(UserId, Payload)]) {
        for (user, payload) in items {
            let shard = self.shard(*user).read().unwrap_or_else(|e| e.into_inner());
            self.push(&shard, *user, payload);
        }
    }

    /// Closes every session of one user with `code` and `reason`; answers how many.
    pub fn close_user(&self, user: UserId, code: CloseCode, reason: &str) -> usize {
        let list = self.sessions_of(user);
        for s in &list {
            s.addr.do_send(CloseSession {
                code: Some(code),
                reason: reason.to_string(),
            });
        }
        list.len()
    }

    /// Closes the user's event streams opened with login sessions, except those of `keep`
    /// (a login tag), or only those of `only`: the login sessions were ended. Streams
    /// opened with a Web API token stay. Answers how many were closed.
    pub fn close_logins(
        &self,
        user: UserId,
        only: Option<u64>,
        keep: Option<u64>,
        reason: &str,
    ) -> usize {
        let mut n = 0;
        for s in self.sessions_of(user) {
            let ended = s.login != 0
                && only.is_none_or(|o| s.login == o)
                && keep.is_none_or(|k| s.login != k);
            if ended {
                s.addr.do_send(CloseSession {
                    code: Some(CloseCode::Policy),
                    reason: reason.to_string(),
                });
                n += 1;
            }
        }
        n
    }

    /// Closes every session (shutdown); answers how many.
    pub fn close_all(&self, code: CloseCode, reason: &str) -> usize {
        let mut n = 0;
        for shard in &self.shards {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            for s in shard.values().flatten() {
                s.addr.do_send(CloseSession {
                    code: Some(code),
                    reason: reason.to_string(),
                });
                n += 1;
            }
        }
        n
    }

    /// Which of these users have no session open.
    pub fn without_sessions(&self, users: &[UserId]) -> Vec<UserId> {
        users
            .iter()
            .copied()
            .filter(|&u| {
                !self
                    .shard(u)
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&u)
            })
            .collect()
    }

    /// Marks whether `user` has a push device.
    pub fn set_pushable(&self, user: UserId, has_device: bool) {
        let mut set = self.pushable.write().unwrap_or_else(|e| e.into_inner());
        if has_device {
            set.insert(user);
        } else {
            set.remove(&user);
        }
    }

    /// Whether `user` has a push device.
    pub fn has_push_device(&self, user: UserId) -> bool {
        self.pushable
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&user)
    }

    /// Which of these users have a push device and no session open in the foreground: a
    /// post's push recipients (before their settings, which the dispatcher applies).
    pub fn offline_pushable(&self, users: &[UserId]) -> Vec<UserId> {
        let with_device: Vec<UserId> = {
            let set = self.pushable.read().unwrap_or_else(|e| e.into_inner());
            if set.is_empty() {
                return Vec::new();
            }
            users.iter().copied().filter(|u| set.contains(u)).collect()
        };
        with_device
            .into_iter()
            .filter(|&u| {
                let shard = self.shard(u).read().unwrap_or_else(|e| e.into_inner());
                shard
                    .get(&u)
                    .is_none_or(|sessions| sessions.iter().all(|s| s.background))
            })
            .collect()
    }

    /// Records that session `id` of `user` is in the background (or back in front).
    pub fn set_background(&self, user: UserId, id: u64, background: bool) {
        let mut shard = self.shard(user).write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = shard
            .get_mut(&user)
            .and_then(|sessions| sessions.iter_mut().find(|s| s.id == id))
        {
            s.background = background;
        }
    }

    pub fn is_connected(&self, user: UserId) -> bool {
        self.without_sessions(&[user]).is_empty()
    }

    pub fn stats(&self) -> DirectoryStats {
        DirectoryStats {
            connected_sessions: self.sessions.load(Ordering::Relaxed),
            connected_users: self.users.load(Ordering::Relaxed),
        }
    }
}
