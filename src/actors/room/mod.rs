//! The room actor: one per active room, the single writer of the room's records (messages,
//! comments, receipts, reactions, attachments, members, pins, settings, permissions). It
//! owns the order of the room's writes, their persistence and their announcement.
//!
//! A write is checked against the latest state, applied as one storage unit at once, then
//! waits with the other writes of the moment for one group commit; only after the flush
//! are events sent (to the members *at the time the write was applied*) and the caller
//! answered, in the order the writes arrived.
//!
//! A room whose records cannot be loaded (a damaged record) does not stop: it answers every
//! request with 500 and a clear text, retries the load at most every few seconds, and logs
//! once per retry, so one bad record never costs the rest of the server anything.

mod members;
mod messages;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::directory::Directory;
use super::registry::{Registry, Retire};
use super::{event_payload, Payload};
use crate::api::error::ApiError;
use crate::model::{
    MessageId, Permission, ReadTimestamp, RoomId, RoomPermissions, TextMessage, UserId,
};
use crate::storage::{MemberRecord, MessageRecord, Reader, RoomRecord, Store};

pub use members::{
    AddMember, CreateRoom, RemoveMember, RoomChange, SetModerator, SetPermissions, SetPinned,
    SetRoomAvatar, UpdateRoom,
};
pub use messages::{
    may_change_files, AttachFiles, DeleteAttachment, DeleteMessage, EditMessage, MarkRead,
    PostMessage, React, Uploads,
};

/// Who an event goes to once the write is durable.
enum Delivery {
    /// These users (the members when the write was applied).
    Users(Arc<[UserId]>, Payload),
    /// One user, with a payload of their own.
    User(UserId, Payload),
    /// A read receipt, gathered with the others of the next moment (see
    /// [`RoomActor::schedule_receipts`]).
    Read(MessageId, ReadTimestamp),
}

/// What a write leaves to do once it is durable.
#[derive(Default)]
struct AfterDurable {
    deliveries: Vec<Delivery>,
    /// Attachment content whose last reference this write removed.
    erase: Vec<String>,
}

struct Pending {
    after: AfterDurable,
    reply: Box<dyn FnOnce(Result<(), ApiError>)>,
}

/// Why the room is not loaded, and when to try again.
struct Broken {
    error: ApiError,
    retry_at: Instant,
}

pub struct RoomActor {
    room_id: RoomId,
    store: Arc<Store>,
    directory: Arc<Directory>,
    registry: Addr<Registry>,
    room: Option<RoomRecord>,
    members: HashMap<UserId, MemberRecord>,
    /// Sequence number of the room's newest top-level message (this actor assigns them).
    room_seq: u64,
    /// Plain members' effective permissions, as of a permissions version of the store
    /// (the room's own levels change only through this actor, which clears it then).
    permissions: std::cell::RefCell<(u64, HashMap<UserId, RoomPermissions>)>,
    /// The members now, shared by the events of every write applied until they change.
    audience: Arc<[UserId]>,
    /// The store generation the cache was loaded from (`None`: not loaded; a reopened
    /// database reloads it).
    generation: Option<u64>,
    broken: Option<Broken>,
    awaiting: Vec<Pending>,
    flushing: bool,
    /// A coalesced `RoomUpdated` (new last message, unread counts) is scheduled.
    update_scheduled: bool,
    /// Durable read receipts not yet announced, by message (see `schedule_receipts`).
    pending_reads: HashMap<MessageId, Vec<ReadTimestamp>>,
    pending_read_count: usize,
    /// When the room last took a request.
    last_active: Instant,
    /// Taken out of every lookup by the registry: what still reaches the actor is answered
    /// "retry", until it stops.
    retiring: bool,
    /// Nothing to do for this long: retire (`--room-idle-secs`).
    idle_after: Duration,
}

/// How long new messages are gathered before members get one `RoomUpdated` for them.
const ROOM_UPDATE_DELAY: Duration = Duration::from_secs(1);
/// How long read receipts are gathered before they are announced, one event per message.
const RECEIPT_DELAY: Duration = Duration::from_millis(500);
/// Gathered receipts beyond this many are announced at once (the gathering stays bounded).
const MAX_PENDING_RECEIPTS: usize = 65_536;
/// How long a room that failed to load waits before trying again.
const LOAD_RETRY: Duration = Duration::from_secs(5);
/// How long a retiring actor answers "retry" before it stops.
const RETIRE_GRACE: Duration = Duration::from_secs(5);

type Reply<T> = ResponseFuture<Result<T, ApiError>>;

fn answer<T: 'static>(result: Result<T, ApiError>) -> Reply<T> {
    Box::pin(async move { result })
}

impl RoomActor {
    pub fn new(
        room_id: RoomId,
        store: Arc<Store>,
        directory: Arc<Directory>,
        registry: Addr<Registry>,
        idle_after: Duration,
    ) -> Self {
        RoomActor {
            room_id,
            store,
            directory,
            registry,
            room: None,
            members: HashMap::new(),
            room_seq: 0,
            permissions: Default::default(),
            audience: Arc::from(Vec::new()),
            generation: None,
            broken: None,
            awaiting: Vec::new(),
            flushing: false,
            update_scheduled: false,
            pending_reads: HashMap::new(),
            pending_read_count: 0,
            last_active: Instant::now(),
            retiring: false,
            idle_after,
        }
    }

    /// The latest view (this actor is the writer of what it reads there).
    fn latest(&self) -> &Reader {
        self.store.latest()
    }

    fn load(&mut self) -> Result<(), ApiError> {
        self.generation = Some(self.store.generation());
        let r = self.store.latest();
        let room = r.room(self.room_id)?;
        let members = r.members(self.room_id)?.into_iter().collect();
        let room_seq = r.room_seq(self.room_id)?;
        self.room = room;
        self.members = members;
        self.room_seq = room_seq;
        self.refresh_audience();
        Ok(())
    }

    fn refresh_audience(&mut self) {
        self.audience = self.members.keys().copied().collect::<Vec<_>>().into();
        self.forget_permissions();
    }

    /// `Ok` when the room's state is loaded and current; reloads after a reopened database
    /// and retries a failed load (at most every [`LOAD_RETRY`]).
    fn ready(&mut self) -> Result<(), ApiError> {
        if let Some(b) = &self.broken {
            if Instant::now() < b.retry_at {
                return Err(b.error.clone());
            }
        } else if self.generation == Some(self.store.generation()) {
            return Ok(());
        }
        match self.load() {
            Ok(()) => {
                if self.broken.take().is_some() {
                    tracing::warn!(room = self.room_id, "room loads again");
                }
                Ok(())
            }
            Err(e) => {
                let error = ApiError::Internal(format!(
                    "Room {} cannot be loaded ({e}); its other requests fail the same way until an administrator repairs it (confab-server check lists damaged records). Other rooms are not affected.",
                    self.room_id
                ));
                tracing::error!(room = self.room_id, "cannot load room: {e}");
                self.broken = Some(Broken {
                    error: error.clone(),
                    retry_at: Instant::now() + LOAD_RETRY,
                });
                Err(error)
            }
        }
    }

    fn require_member(&self, user_id: UserId) -> Result<&MemberRecord, ApiError> {
        self.members.get(&user_id).ok_or_else(|| {
            ApiError::Forbidden(format!("You are not a member of room {}", self.room_id))
        })
    }

    /// Members must hold the flag (moderators and administrators hold every flag).
    fn require_permission(
        &self,
        user_id: UserId,
        is_admin: bool,
        flag: Permission,
        what: &str,
    ) -> Result<(), ApiError> {
        let Some(member) = self.members.get(&user_id) else {
            return Err(not_a_member(self.room_id));
        };
        if is_admin || member.is_moderator {
            return Ok(());
        }
        let version = self.store.permissions_version();
        let mut cache = self.permissions.borrow_mut();
        if cache.0 != version {
            *cache = (version, HashMap::new());
        }
        let allowed = match cache.1.get(&user_id) {
            Some(p) => p.allows(flag),
            None => {
                let p = self
                    .latest()
                    .effective_permissions(self.room_id, user_id, false)?
                    .ok_or_else(|| not_a_member(self.room_id))?;
                let allowed = p.allows(flag);
                cache.1.insert(user_id, p);
                allowed
            }
        };
        if allowed {
            return Ok(());
        }
        Err(not_allowed(self.room_id, flag, what))
    }

    /// The room's permission levels changed (through this actor), or a member's role.
    fn forget_permissions(&self) {
        self.permissions.borrow_mut().1.clear();
    }

    /// Moderator or administrator of this room, else 403 (404 for strangers).
    fn require_moderator(&self, by: UserId, by_admin: bool, what: &str) -> Result<(), ApiError> {
        if by_admin || self.members.get(&by).is_some_and(|m| m.is_moderator) {
            return Ok(());
        }
        if self.members.contains_key(&by) {
            return Err(ApiError::Forbidden(format!(
                "Only a room moderator or an administrator may {what}"
            )));
        }
        Err(ApiError::room_not_found(self.room_id))
    }

    /// A message of this room, from the latest state.
    fn own_message(&self, message_id: u64) -> Result<MessageRecord, ApiError> {
        self.latest()
            .message(message_id)?
            .filter(|m| m.room_id == self.room_id)
            .ok_or_else(|| ApiError::message_not_found(message_id))
    }

    /// An event for every member now.
    fn to_members(&self, payload: Payload) -> Delivery {
        Delivery::Users(self.audience.clone(), payload)
    }

    fn messages_event(kind: &str, messages: &[TextMessage]) -> Payload {
        event_payload(kind, serde_json::json!({ "messages": messages }))
    }

    /// Each listed member's view of the room (their unread count, the last message), as
    /// events, read from `view`. The shared parts are read once.
    fn room_updates(
        &self,
        view: &Reader,
        users: impl Iterator<Item = UserId>,
    ) -> Vec<(UserId, Payload)> {
        let Some(room) = &self.room else {
            return Vec::new();
        };
        let last = match view.last_message_summary(self.room_id) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(room = self.room_id, "room view failed: {e}");
                return Vec::new();
            }
        };
        users
            .filter_map(|user| {
                let is_moderator = self.members.get(&user).is_some_and(|m| m.is_moderator);
                match view.room_view_with(room, user, last.clone(), is_moderator) {
                    Ok(v) => Some((
                        user,
                        event_payload("RoomUpdated", serde_json::json!({ "room": v })),
                    )),
                    Err(e) => {
                        tracing::error!(room = self.room_id, "room view failed: {e}");
                        None
                    }
                }
            })
            .collect()
    }

    /// One `RoomUpdated` to every member for the messages of the next moment, from what is
    /// durable then.
    fn schedule_room_update(&mut self, ctx: &mut Context<Self>) {
        if self.update_scheduled {
            return;
        }
        self.update_scheduled = true;
        ctx.run_later(ROOM_UPDATE_DELAY, |act, _| {
            act.update_scheduled = false;
            let store = act.store.clone();
            // Members with no session open would get nothing: their views are not built.
            let directory = act.directory.clone();
            let connected = act
                .members
                .keys()
                .copied()
                .filter(|&u| directory.is_connected(u));
            let updates = act.room_updates(&store, connected);
            act.directory.deliver_each(&updates);
        });
    }

    /// Queues an applied write for the next group commit; `value` is what the caller gets
    /// once the write is durable and its events are out.
    fn commit<T: 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        after: AfterDurable,
        value: T,
    ) -> Reply<T> {
        let (tx, rx) = oneshot::channel();
        self.awaiting.push(Pending {
            after,
            reply: Box::new(move |r| {
                let _ = tx.send(r.map(|_| value));
            }),
        });
        if !self.flushing {
            self.start_flush(ctx);
        }
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(ApiError::Unavailable(
                    "The room stopped before the write was confirmed; check and retry.".into(),
                ))
            })
        })
    }

    /// Like [`Self::commit`] for a write that only delivers events.
    fn commit_deliveries<T: 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        deliveries: Vec<Delivery>,
        value: T,
    ) -> Reply<T> {
        self.commit(
            ctx,
            AfterDurable {
                deliveries,
                erase: Vec::new(),
            },
            value,
        )
    }

    fn start_flush(&mut self, ctx: &mut Context<Self>) {
        let batch = std::mem::take(&mut self.awaiting);
        self.flushing = true;
        let store = self.store.clone();
        ctx.spawn(async move { store.durable().await }.into_actor(self).map(
            move |result, act, ctx| {
                act.flushing = false;
                let result = result.map_err(ApiError::from);
                let mut erase = Vec::new();
                for pending in batch {
                    if result.is_ok() {
                        act.deliver(ctx, pending.after.deliveries);
                        erase.extend(pending.after.erase);
                    }
                    (pending.reply)(result.clone());
                }
                if !erase.is_empty() {
                    let store = act.store.clone();
                    actix_rt::task::spawn_blocking(move || store.erase_unreferenced(&erase));
                }
                if !act.awaiting.is_empty() {
                    act.start_flush(ctx);
                }
            },
        ));
    }

    fn deliver(&mut self, ctx: &mut Context<Self>, deliveries: Vec<Delivery>) {
        for d in deliveries {
            match d {
                Delivery::Users(users, payload) => self.directory.deliver(&users, &payload),
                Delivery::User(user, payload) => self.directory.deliver_each(&[(user, payload)]),
                Delivery::Read(message_id, read) => {
                    self.pending_reads.entry(message_id).or_default().push(read);
                    self.pending_read_count += 1;
                    self.schedule_receipts(ctx);
                }
            }
        }
    }

    /// Announces the read receipts of the next moment, one event per message, to the
    /// message's author and to the readers themselves (every session of theirs: the Virola
    /// client learns that *it* read a message from `readTimestamps`). Nobody else gets them
    /// live (they read `readTimestamps` with the message). Sessions with the `readDeltas`
    /// extension get `MessagesRead` with the new receipts only, so n members reading one
    /// message cost them O(n) bytes in all; Web API v1 sessions get the whole message
    /// (`TextMessagesUpdated`), as those clients expect.
    fn schedule_receipts(&mut self, ctx: &mut Context<Self>) {
        if self.pending_read_count >= MAX_PENDING_RECEIPTS {
            self.announce_receipts();
            return;
        }
        if self.pending_read_count > 1 {
            return; // already scheduled by the first one
        }
        ctx.run_later(RECEIPT_DELAY, |act, _| act.announce_receipts());
    }

    fn announce_receipts(&mut self) {
        let pending = std::mem::take(&mut self.pending_reads);
        self.pending_read_count = 0;
        let store = self.store.clone();
        for (message_id, reads) in pending {
            let record = match store.message(message_id) {
                Ok(Some(r)) => r,
                Ok(None) => continue, // deleted meanwhile
                Err(e) => {
                    tracing::error!(room = self.room_id, "receipts not announced: {e}");
                    continue;
                }
            };
            let delta_of = |reads: &[ReadTimestamp]| {
                event_payload(
                    "MessagesRead",
                    serde_json::json!({
                        "roomId": self.room_id,
                        "messageId": message_id,
                        "parentMessageId": record.parent_message_id,
                        "readTimestamps": reads,
                    }),
                )
            };
            let delta = delta_of(&reads);
            let whole = match store.api_message(&record) {
                Ok(view) => Self::messages_event("TextMessagesUpdated", &[view]),
                Err(e) => {
                    tracing::error!(room = self.room_id, "receipts not announced: {e}");
                    continue;
                }
            };
            let author = record.user_id;
            self.directory
                .deliver_receipts(&[author], Some(&whole), &delta);
            // Each reader's delta holds only their own receipt: k readers in one window
            // cost O(k) bytes, not k copies of all k receipts.
            for read in reads.iter().filter(|r| r.user_id != author) {
                let own = delta_of(std::slice::from_ref(read));
                self.directory
                    .deliver_receipts(&[read.user_id], Some(&whole), &own);
            }
        }
    }

    /// After `idle_after` with nothing to do (no write in flight, no event or receipt
    /// waiting to go out), asks the registry to retire this actor.
    fn retire_if_idle(&mut self, ctx: &mut Context<Self>) {
        if self.retiring
            || self.flushing
            || !self.awaiting.is_empty()
            || self.update_scheduled
            || self.pending_read_count > 0
            || self.last_active.elapsed() < self.idle_after
        {
            return;
        }
        let retire = Retire {
            room_id: self.room_id,
            addr: ctx.address(),
        };
        self.registry
            .send(retire)
            .into_actor(self)
            .map(|retired, act, ctx| {
                if retired == Ok(true) {
                    act.retiring = true;
                    ctx.run_later(RETIRE_GRACE, |_, ctx| ctx.stop());
                }
            })
            .wait(ctx);
    }
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Room actors sit on the hot path of every post; a roomy mailbox smooths bursts.
        ctx.set_mailbox_capacity(1024);
        // A failure is kept (and answered) by `ready`; the actor never stops over it.
        let _ = self.ready();
        ctx.run_interval(self.idle_after / 5, |act, ctx| act.retire_if_idle(ctx));
    }
}

/// Runs `handle` once the room is ready, or answers its error ("retry" once retiring).
fn when_ready<T: 'static>(
    act: &mut RoomActor,
    handle: impl FnOnce(&mut RoomActor) -> Reply<T>,
) -> Reply<T> {
    if act.retiring {
        return answer(Err(ApiError::Retry));
    }
    act.last_active = Instant::now();
    match act.ready() {
        Ok(()) => handle(act),
        Err(e) => answer(Err(e)),
    }
}

/// 403 unless the member holds `flag` in the room (moderators and administrators hold
/// every flag); 403 for non-members too. Shared by the room actor (latest view) and the
/// API handlers that check before streaming an upload (durable view).
pub fn require_permission(
    view: &Reader,
    room_id: RoomId,
    user_id: UserId,
    is_admin: bool,
    flag: Permission,
    what: &str,
) -> Result<(), ApiError> {
    match view.effective_permissions(room_id, user_id, is_admin)? {
        None => Err(not_a_member(room_id)),
        Some(p) if p.allows(flag) => Ok(()),
        Some(_) => Err(not_allowed(room_id, flag, what)),
    }
}

fn not_a_member(room_id: RoomId) -> ApiError {
    ApiError::Forbidden(format!("You are not a member of room {room_id}"))
}

fn not_allowed(room_id: RoomId, flag: Permission, what: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "You may not {what} in room {room_id} (permission {} is off)",
        flag.name()
    ))
}
