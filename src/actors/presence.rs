//! Presence and typing. The [`PresenceBoard`] is told by event sessions when they open,
//! close, and report idle or active, and by the API when a user does something; the
//! [`PresenceActor`] looks at it once a second and tells the people who share a room with
//! a user when that user became `online`, `away` or `offline`.
//!
//! Changes are coalesced: a user whose last session closed is `offline` only after a grace
//! period (a connection that drops and comes back is never seen offline), and one user's
//! presence changes at most once per [`MIN_GAP`]. Typing notices are rate-limited per user
//! and room and never stored.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message, Supervised};
use serde_json::json;

use super::Directory;
use crate::model::{Presence, RoomId, UserId};
use crate::storage::Store;

/// How often presence is looked at.
const TICK: Duration = Duration::from_secs(1);
/// A user whose last session closed stays `online` (or `away`) this long.
pub const OFFLINE_GRACE: Duration = Duration::from_secs(15);
/// One user's presence changes at most this often.
const MIN_GAP: Duration = Duration::from_secs(2);
/// A user with no activity this long is `away` (`--presence-away-after`).
pub const DEFAULT_AWAY_AFTER: Duration = Duration::from_secs(600);
/// One typing notice per user and room this often at most.
pub const TYPING_EVERY: Duration = Duration::from_secs(3);
/// Rate-limit entries kept before old ones are swept.
const TYPING_ENTRIES: usize = 10_000;

struct UserState {
    /// Open event sessions, each with whether its client reported idle.
    sessions: HashMap<u64, bool>,
    last_active: Instant,
    /// When the last session closed (while there is none).
    closed_at: Option<Instant>,
}

#[derive(Default)]
struct Board {
    users: HashMap<UserId, UserState>,
    /// What others were last told (absent: offline).
    published: HashMap<UserId, (Presence, Instant)>,
    typing: HashMap<(UserId, RoomId), Instant>,
}

/// The shared state of presence: written by sessions and the API, read by everyone.
pub struct PresenceBoard {
    board: Mutex<Board>,
    away_after: Duration,
    actor: OnceLock<Addr<PresenceActor>>,
}

impl Default for PresenceBoard {
    fn default() -> Self {
        PresenceBoard::new(DEFAULT_AWAY_AFTER)
    }
}

impl PresenceBoard {
    pub fn new(away_after: Duration) -> Self {
        PresenceBoard {
            board: Mutex::default(),
            away_after,
            actor: OnceLock::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn session_opened(&self, user: UserId, session: u64) {
        let mut b = self.lock();
        let state = b.users.entry(user).or_insert_with(|| UserState {
            sessions: HashMap::new(),
            last_active: Instant::now(),
            closed_at: None,
        });
        state.sessions.insert(session, false);
        state.closed_at = None;
        state.last_active = Instant::now();
    }

    pub fn session_closed(&self, user: UserId, session: u64) {
        let mut b = self.lock();
        if let Some(state) = b.users.get_mut(&user) {
            state.sessions.remove(&session);
            if state.sessions.is_empty() {
                state.closed_at = Some(Instant::now());
            }
        }
    }

    /// A client reported its user idle (or back).
    pub fn set_idle(&self, user: UserId, session: u64, idle: bool) {
        let mut b = self.lock();
        if let Some(state) = b.users.get_mut(&user) {
            if let Some(s) = state.sessions.get_mut(&session) {
                *s = idle;
            }
            if !idle {
                state.last_active = Instant::now();
            }
        }
    }

    /// The user did something (a write through the API, a command on the event socket).
    pub fn activity(&self, user: UserId) {
        let mut b = self.lock();
        if let Some(state) = b.users.get_mut(&user) {
            state.last_active = Instant::now();
        }
    }

    /// What others see of `user` now.
    pub fn presence_of(&self, user: UserId) -> Presence {
        self.lock()
            .published
            .get(&user)
            .map_or(Presence::Offline, |(p, _)| *p)
    }

    /// Whether `user` may send a typing notice for `room` now (and records that it did).
    pub fn typing_allowed(&self, user: UserId, room: RoomId) -> bool {
        let now = Instant::now();
        let mut b = self.lock();
        if b.typing.len() >= TYPING_ENTRIES {
            b.typing
                .retain(|_, at| now.duration_since(*at) < TYPING_EVERY);
        }
        match b.typing.get(&(user, room)) {
            Some(at) if now.duration_since(*at) < TYPING_EVERY => false,
            _ => {
                b.typing.insert((user, room), now);
                true
            }
        }
    }

    /// The actor that relays typing notices and status changes (set once at start).
    pub fn actor(&self) -> Option<&Addr<PresenceActor>> {
        self.actor.get()
    }

    /// Presence changes due now: (user, new presence), recorded as published.
    fn due_changes(&self) -> Vec<(UserId, Presence)> {
        let now = Instant::now();
        let away_after = self.away_after;
        let mut b = self.lock();
        let mut due = Vec::new();
        let mut gone = Vec::new();
        for (&user, state) in &b.users {
            let want = if state.sessions.is_empty() {
                match state.closed_at {
                    Some(at) if now.duration_since(at) >= OFFLINE_GRACE => {
                        gone.push(user);
                        Presence::Offline
                    }
                    _ => continue,
                }
            } else if state.sessions.values().all(|idle| *idle)
                || now.duration_since(state.last_active) >= away_after
            {
                Presence::Away
            } else {
                Presence::Online
            };
            due.push((user, want));
        }
        for user in gone {
            b.users.remove(&user);
        }
        due.retain(|(user, want)| match b.published.get(user) {
            Some((p, _)) if p == want => false,
            None if *want == Presence::Offline => false,
            Some((_, at)) => now.duration_since(*at) >= MIN_GAP,
            None => true,
        });
        for &(user, p) in &due {
            if p == Presence::Offline {
                b.published.remove(&user);
            } else {
                b.published.insert(user, (p, now));
            }
        }
        due
    }
}

/// Tells co-members about presence changes, and relays typing notices.
pub struct PresenceActor {
    store: Arc<Store>,
    directory: Arc<Directory>,
    board: Arc<PresenceBoard>,
}

impl PresenceActor {
    pub fn new(store: Arc<Store>, directory: Arc<Directory>, board: Arc<PresenceBoard>) -> Self {
        PresenceActor {
            store,
            directory,
            board,
        }
    }

    /// Everyone who shares a room with `user` (not `user`).
    fn co_members(&self, user: UserId) -> crate::storage::Result<Vec<UserId>> {
        let mut out = HashSet::new();
        for room in self.store.rooms_of_user(user)? {
            for (member, _) in self.store.members(room)? {
                out.insert(member);
            }
        }
        out.remove(&user);
        Ok(out.into_iter().collect())
    }

    fn announce(&self, user: UserId, presence: Presence) {
        let status_text = match self.store.user(user) {
            Ok(Some(u)) => u.status_text,
            _ => String::new(),
        };
        match self.co_members(user) {
            Ok(to) => self.directory.deliver(
                &to,
                &super::event_payload(
                    "UserPresenceChanged",
                    json!({ "userId": user, "presence": presence, "statusText": status_text }),
                ),
            ),
            Err(e) => tracing::warn!(user, "presence not announced: {e}"),
        }
    }
}

impl Actor for PresenceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let _ = self.board.actor.set(ctx.address());
        ctx.run_interval(TICK, |act, _| {
            for (user, presence) in act.board.due_changes() {
                act.announce(user, presence);
            }
        });
    }
}

impl Supervised for PresenceActor {}

/// Someone is typing in a room: its other members who are connected are told.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Typing {
    pub user: UserId,
    pub room: RoomId,
}

impl Handler<Typing> for PresenceActor {
    type Result = Result<(), String>;
    fn handle(&mut self, msg: Typing, _: &mut Context<Self>) -> Self::Result {
        let members = self
            .store
            .members(msg.room)
            .map_err(|e| format!("Typing not relayed: {e}"))?;
        if !members.iter().any(|(u, _)| *u == msg.user) {
            return Err(format!("You are not a member of room {}", msg.room));
        }
        let to: Vec<UserId> = members
            .into_iter()
            .map(|(u, _)| u)
            .filter(|&u| u != msg.user)
            .collect();
        self.directory.deliver(
            &to,
            &super::event_payload(
                "UserTyping",
                json!({ "roomId": msg.room, "userId": msg.user }),
            ),
        );
        Ok(())
    }
}

/// A user's status text changed: co-members are told at once, with the presence they see.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StatusChanged(pub UserId);

impl Handler<StatusChanged> for PresenceActor {
    type Result = ();
    fn handle(&mut self, StatusChanged(user): StatusChanged, _: &mut Context<Self>) {
        let presence = self.board.presence_of(user);
        self.announce(user, presence);
    }
}
