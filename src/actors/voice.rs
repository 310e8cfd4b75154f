//! Voice actors. `VoiceHub` (one) maps rooms to running
//! `VoiceChannel` actors and starts each on demand. A `VoiceChannel` owns one
//! room's participants: it admits them (per the room's intercom permissions), renews their
//! keys when the `KeyRotation` timer says so, erases expired keys, drops anyone who left,
//! was removed, suspended or lost the permission, and announces joins, leaves, talking and
//! new keys on the event streams. The relay itself (`crate::voice::relay`) reads the
//! participants these actors publish and never changes membership.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::json;

use super::directory::Directory;
use super::event_payload;
use crate::api::error::ApiError;
use crate::model::{Permission, RoomId, UserId};
use crate::storage::Store;
use crate::voice::relay::{ChannelShared, Participant, Router, TalkingStarted, TALK_GAP_MS};
use crate::voice::CipherKind;

/// How voice is configured for this server run.
#[derive(Clone)]
pub struct VoiceConfig {
    /// Set once the listener is bound (the port may have been chosen by the system).
    pub udp_port: Arc<std::sync::atomic::AtomicU16>,
    pub rotation: Duration,
    pub grace: Duration,
}

/// Bounds on a channel, so joins cannot grow the server without limit.
pub const MAX_PER_USER: usize = 8;
pub const MAX_PER_CHANNEL: usize = 1000;

/// What a participant learns when joining.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinInfo {
    pub room_id: RoomId,
    pub participant_id: u32,
    pub udp_port: u16,
    pub cipher: &'static str,
    pub key_epoch: u32,
    /// 32 bytes, hex. Sent only over this TLS connection; never stored or logged.
    pub key: String,
    pub can_talk: bool,
    pub can_listen: bool,
    pub key_rotation_seconds: u64,
    pub key_grace_ms: u64,
    pub participants: Vec<serde_json::Value>,
}

pub struct VoiceHub {
    store: Arc<Store>,
    directory: Arc<Directory>,
    router: Arc<Router>,
    config: VoiceConfig,
    channels: HashMap<RoomId, Addr<VoiceChannel>>,
    /// Channels run on the room arbiters (by room id), beside the rooms' actors.
    arbiters: Vec<ArbiterHandle>,
}

impl VoiceHub {
    pub fn new(
        store: Arc<Store>,
        directory: Arc<Directory>,
        router: Arc<Router>,
        config: VoiceConfig,
        arbiters: Vec<ArbiterHandle>,
    ) -> Self {
        VoiceHub {
            store,
            directory,
            router,
            config,
            channels: HashMap::new(),
            arbiters,
        }
    }

    fn running(&self) -> impl Iterator<Item = &Addr<VoiceChannel>> {
        self.channels.values().filter(|a| a.connected())
    }
}

impl Actor for VoiceHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.router
            .set_talking_recipient(ctx.address().recipient::<TalkingStarted>());
        ctx.run_interval(Duration::from_secs(10), |act, _| {
            act.channels.retain(|_, a| a.connected());
        });
    }
}

/// The channel actor of a room, started on demand.
#[derive(Message)]
#[rtype(result = "Addr<VoiceChannel>")]
pub struct GetChannel(pub RoomId);

impl Handler<GetChannel> for VoiceHub {
    type Result = Addr<VoiceChannel>;
    fn handle(&mut self, GetChannel(room_id): GetChannel, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(a) = self.channels.get(&room_id) {
            if a.connected() {
                return a.clone();
            }
        }
        let (store, directory, router, config) = (
            self.store.clone(),
            self.directory.clone(),
            self.router.clone(),
            self.config.clone(),
        );
        let hub = ctx.address();
        // Not supervised: an empty channel stops for good, and a damaged one repairs itself
        // in place (see `reset`), so there is nothing a restart would fix.
        let make = move |_: &mut Context<VoiceChannel>| VoiceChannel {
            room_id,
            hub,
            store,
            directory,
            router,
            config,
            shared: Arc::new(ChannelShared {
                room_id,
                members: std::sync::RwLock::new(Vec::new()),
            }),
            idle_ticks: 0,
            ticks: 0,
            retired: false,
        };
        let addr = match self
            .arbiters
            .get(room_id as usize % self.arbiters.len().max(1))
        {
            Some(arbiter) => VoiceChannel::start_in_arbiter(arbiter, make),
            None => VoiceChannel::create(make),
        };
        self.channels.insert(room_id, addr.clone());
        addr
    }
}

impl Handler<TalkingStarted> for VoiceHub {
    type Result = ();
    fn handle(&mut self, msg: TalkingStarted, _: &mut Context<Self>) {
        if let Some(a) = self.channels.get(&msg.room_id) {
            a.do_send(msg);
        }
    }
}

/// A channel that became empty: forget it (unless a new one already took its place).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChannelIdle(pub RoomId, pub Addr<VoiceChannel>);

impl Handler<ChannelIdle> for VoiceHub {
    type Result = ();
    fn handle(&mut self, ChannelIdle(room, addr): ChannelIdle, _: &mut Context<Self>) {
        if self.channels.get(&room) == Some(&addr) {
            self.channels.remove(&room);
        }
    }
}

/// Re-evaluate who may stay: after a removal, a suspension or a permission change. In one
/// room (`Some`) or everywhere.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Recheck(pub Option<RoomId>);

impl Handler<Recheck> for VoiceHub {
    type Result = ();
    fn handle(&mut self, msg: Recheck, _: &mut Context<Self>) {
        match msg.0 {
            Some(room) => {
                if let Some(a) = self.channels.get(&room) {
                    a.do_send(msg);
                }
            }
            None => self.running().for_each(|a| a.do_send(msg)),
        }
    }
}

/// Renew every participant's key (from the rotation timer).
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct RotateKeys;

impl Handler<RotateKeys> for VoiceHub {
    type Result = ();
    fn handle(&mut self, _: RotateKeys, _: &mut Context<Self>) {
        self.running().for_each(|a| a.do_send(RotateKeys));
    }
}

/// The key-rotation timer: every `period` it tells the hub to renew all keys. Supervised,
/// so a crash restarts the timer.
pub struct KeyRotation {
    pub hub: Addr<VoiceHub>,
    pub period: Duration,
}

impl Actor for KeyRotation {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.period, |act, _| act.hub.do_send(RotateKeys));
    }
}

impl Supervised for KeyRotation {}

pub struct VoiceChannel {
    room_id: RoomId,
    hub: Addr<VoiceHub>,
    store: Arc<Store>,
    directory: Arc<Directory>,
    router: Arc<Router>,
    config: VoiceConfig,
    shared: Arc<ChannelShared>,
    /// Ticks in a row with nobody in the channel (it stops after a few).
    idle_ticks: u32,
    /// Ticks since start (every 25th looks for participants whose client is gone).
    ticks: u64,
    /// Handed back to the hub as idle: a join that still reaches this actor (through an
    /// address fetched just before) is refused, and the caller asks the hub again.
    retired: bool,
}

impl VoiceChannel {
    fn members(&self) -> Vec<Arc<Participant>> {
        // A poisoned list is still read: the channel is about to restart from it.
        self.shared
            .members
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// A relay thread panicked while holding a participant's key lock (or the member list
    /// is poisoned): that state cannot be trusted any more.
    fn damaged(&self) -> bool {
        self.shared.members.is_poisoned() || self.members().iter().any(|p| p.keys.is_poisoned())
    }

    /// Every user with a participant here, plus `extra`, gets the event.
    fn announce(&self, kind: &str, data: serde_json::Value, extra: Option<UserId>) {
        let payload = event_payload(kind, data);
        let mut users: Vec<UserId> = self.members().iter().map(|p| p.user_id).collect();
        users.extend(extra);
        users.sort_unstable();
        users.dedup();
        let each: Vec<_> = users.into_iter().map(|u| (u, payload.clone())).collect();
        self.directory.deliver_each(&each);
    }

    /// Takes a participant out: off the routing table and the channel; its keys are erased
    /// when the last reference (a relay thread mid-packet at most) goes.
    fn remove(&mut self, id: u32, reason: &str) -> Option<UserId> {
        let removed = self.router.remove(id);
        self.shared
            .members
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p.id != id);
        let p = removed?;
        self.announce(
            "VoiceParticipantLeft",
            json!({ "roomId": self.room_id, "participantId": id, "userId": p.user_id, "reason": reason }),
            Some(p.user_id),
        );
        Some(p.user_id)
    }

    /// (can join, can talk, can listen) for a user now.
    fn rights(&self, user_id: UserId) -> Result<Option<(bool, bool)>, ApiError> {
        let Some(user) = self.store.user(user_id)? else {
            return Ok(None);
        };
        if user.status != crate::model::UserStatus::Active {
            return Ok(None);
        }
        let Some(p) = self
            .store
            .effective_permissions(self.room_id, user_id, user.is_admin)?
        else {
            return Ok(None);
        };
        let talk = p.allows(Permission::CanIntercomTalk);
        let listen = p.allows(Permission::CanIntercomListen);
        if !p.allows(Permission::CanUseIntercom) || !(talk || listen) {
            return Ok(None);
        }
        Ok(Some((talk, listen)))
    }

    /// An empty channel hands its address back to the hub and stops; the supervisor then
    /// has nothing left to restart for.
    fn stop_if_empty(&mut self, ctx: &mut Context<Self>) {
        if self.members().is_empty() {
            self.retired = true;
            self.hub.do_send(ChannelIdle(self.room_id, ctx.address()));
            ctx.stop();
        }
    }
}

impl Actor for VoiceChannel {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Erase expired keys and notice talkers who went quiet.
        ctx.run_interval(Duration::from_millis(200), |act, ctx| {
            let now = crate::now_ms();
            // An empty channel (someone only listed it, or everyone left) goes after ~10 s.
            if act.members().is_empty() {
                act.idle_ticks += 1;
                if act.idle_ticks > 50 {
                    act.stop_if_empty(ctx);
                }
                return;
            }
            act.idle_ticks = 0;
            if act.damaged() {
                tracing::error!(room = act.room_id, "voice channel state damaged by a relay panic; resetting it");
                act.reset();
                return;
            }
            act.ticks += 1;
            if act.ticks % 25 == 0 {
                act.drop_abandoned(ctx);
            }
            for p in act.members() {
                p.expire_previous();
                let last = p.last_voice_ms.load(Ordering::Relaxed);
                if p.talking.load(Ordering::Relaxed) && now.saturating_sub(last) > TALK_GAP_MS {
                    p.talking.store(false, Ordering::Relaxed);
                    act.announce(
                        "VoiceTalking",
                        json!({ "roomId": act.room_id, "participantId": p.id, "userId": p.user_id, "talking": false }),
                        None,
                    );
                }
            }
        });
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        // Stopping for good (empty): make sure nothing is left in the routing table.
        for p in self.members() {
            self.router.remove(p.id);
        }
        Running::Stop
    }
}

impl VoiceChannel {
    /// After a relay panic the participants' state cannot be trusted: drop them all (their
    /// keys are erased), start a fresh member list and tell each to join again.
    fn reset(&mut self) {
        let members = self.members();
        for p in &members {
            self.router.remove(p.id);
        }
        // A fresh member list: the old one may be poisoned, and the dropped participants
        // (with their keys) go with it.
        self.shared = Arc::new(ChannelShared {
            room_id: self.room_id,
            members: std::sync::RwLock::new(Vec::new()),
        });
        let payload = event_payload("VoiceRejoin", json!({ "roomId": self.room_id }));
        let mut users: Vec<UserId> = members.iter().map(|p| p.user_id).collect();
        users.sort_unstable();
        users.dedup();
        let each: Vec<_> = users.into_iter().map(|u| (u, payload.clone())).collect();
        self.directory.deliver_each(&each);
    }

    /// Participants silent for [`ABANDONED_AFTER`] whose user has no event session either
    /// (the client went away without leaving) are dropped, their keys erased.
    fn drop_abandoned(&mut self, ctx: &mut Context<Self>) {
        let now = crate::now_ms();
        let silent: Vec<(u32, UserId)> = self
            .members()
            .iter()
            .filter(|p| {
                now.saturating_sub(p.last_packet_ms.load(Ordering::Relaxed))
                    > ABANDONED_AFTER.as_millis() as u64
            })
            .map(|p| (p.id, p.user_id))
            .collect();
        if silent.is_empty() {
            return;
        }
        let users: Vec<UserId> = silent.iter().map(|&(_, u)| u).collect();
        let gone = self.directory.without_sessions(&users);
        for (id, user) in silent {
            if gone.contains(&user) {
                self.remove(id, "connection lost");
            }
        }
        self.stop_if_empty(ctx);
    }
}

/// How long a participant may send nothing (not even a ping) while its user has no event
/// session, before it is dropped.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(30);

/// Join the channel.
#[derive(Message)]
#[rtype(result = "Result<JoinInfo, ApiError>")]
pub struct Join {
    pub user_id: UserId,
    pub cipher: CipherKind,
    /// Join to listen only, even if allowed to talk.
    pub listen_only: bool,
    /// The client address of the joining HTTPS request.
    pub from: Option<std::net::IpAddr>,
}

impl Handler<Join> for VoiceChannel {
    type Result = Result<JoinInfo, ApiError>;
    fn handle(&mut self, msg: Join, _: &mut Context<Self>) -> Self::Result {
        if self.retired {
            return Err(ApiError::Unavailable(
                "The voice channel was just closed; join again".into(),
            ));
        }
        let Some((talk, listen)) = self.rights(msg.user_id)? else {
            return Err(ApiError::Forbidden(format!(
                "You may not use the voice channel of room {} (permission canUseIntercom, and canIntercomTalk or canIntercomListen)",
                self.room_id
            )));
        };
        let members = self.members();
        if members.iter().filter(|p| p.user_id == msg.user_id).count() >= MAX_PER_USER {
            return Err(ApiError::TooManyRequests(format!(
                "At most {MAX_PER_USER} of your devices can be in one voice channel; leave with one first"
            )));
        }
        if members.len() >= MAX_PER_CHANNEL {
            return Err(ApiError::TooManyRequests(format!(
                "The voice channel is full ({MAX_PER_CHANNEL} participants)"
            )));
        }
        let talk = talk && !msg.listen_only;
        let id = self.router.next_participant_id();
        let mut participant = Participant::new(
            id,
            msg.user_id,
            self.shared.clone(),
            msg.cipher,
            talk,
            listen,
        );
        if let Some(ip) = msg.from {
            participant = participant.joined_from(ip);
        }
        let p = Arc::new(participant);
        let (epoch, key) = p
            .current_key()
            .ok_or_else(|| ApiError::Internal("voice key unavailable".into()))?;
        let participants: Vec<serde_json::Value> = self
            .members()
            .iter()
            .map(|o| json!({ "participantId": o.id, "userId": o.user_id }))
            .collect();
        self.announce(
            "VoiceParticipantJoined",
            json!({ "roomId": self.room_id, "participantId": id, "userId": msg.user_id }),
            None,
        );
        self.router.insert(p.clone());
        if let Ok(mut m) = self.shared.members.write() {
            m.push(p);
        }
        tracing::info!(
            room = self.room_id,
            user = msg.user_id,
            participant = id,
            "voice join"
        );
        Ok(JoinInfo {
            room_id: self.room_id,
            participant_id: id,
            udp_port: self.config.udp_port.load(Ordering::Relaxed),
            cipher: msg.cipher.name(),
            key_epoch: epoch,
            key,
            can_talk: talk,
            can_listen: listen,
            key_rotation_seconds: self.config.rotation.as_secs(),
            key_grace_ms: self.config.grace.as_millis() as u64,
            participants,
        })
    }
}

/// Leave: one participant of the caller, or (`None`) all of theirs.
#[derive(Message)]
#[rtype(result = "Result<usize, ApiError>")]
pub struct Leave {
    pub user_id: UserId,
    pub participant: Option<u32>,
}

impl Handler<Leave> for VoiceChannel {
    type Result = Result<usize, ApiError>;
    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) -> Self::Result {
        let ids: Vec<u32> = self
            .members()
            .iter()
            .filter(|p| p.user_id == msg.user_id && msg.participant.is_none_or(|id| id == p.id))
            .map(|p| p.id)
            .collect();
        for &id in &ids {
            self.remove(id, "left");
        }
        self.stop_if_empty(ctx);
        Ok(ids.len())
    }
}

/// The channel's participants.
#[derive(Message)]
#[rtype(result = "Vec<serde_json::Value>")]
pub struct ListParticipants;

impl Handler<ListParticipants> for VoiceChannel {
    type Result = Vec<serde_json::Value>;
    fn handle(&mut self, _: ListParticipants, _: &mut Context<Self>) -> Self::Result {
        self.members()
            .iter()
            .map(|p| {
                json!({
                    "participantId": p.id,
                    "userId": p.user_id,
                    "canTalk": p.can_talk.load(Ordering::Relaxed),
                    "canListen": p.can_listen.load(Ordering::Relaxed),
                    "talking": p.talking.load(Ordering::Relaxed),
                })
            })
            .collect()
    }
}

impl Handler<Recheck> for VoiceChannel {
    type Result = ();
    fn handle(&mut self, _: Recheck, ctx: &mut Context<Self>) {
        for p in self.members() {
            match self.rights(p.user_id) {
                Ok(Some((talk, listen))) => {
                    if !talk {
                        p.can_talk.store(false, Ordering::Relaxed);
                    }
                    p.can_listen.store(listen, Ordering::Relaxed);
                }
                Ok(None) => {
                    self.remove(p.id, "access lost");
                }
                Err(e) => tracing::error!(room = self.room_id, "voice recheck: {e}"),
            }
        }
        self.stop_if_empty(ctx);
    }
}

impl Handler<RotateKeys> for VoiceChannel {
    type Result = ();
    fn handle(&mut self, _: RotateKeys, _: &mut Context<Self>) {
        let mut each = Vec::new();
        for p in self.members() {
            if let Some((epoch, key)) = p.rotate(self.config.grace) {
                each.push((
                    p.user_id,
                    event_payload(
                        "VoiceKey",
                        json!({ "roomId": self.room_id, "participantId": p.id, "keyEpoch": epoch, "key": key }),
                    ),
                ));
            }
        }
        if !each.is_empty() {
            self.directory.deliver_each(&each);
        }
    }
}

impl Handler<TalkingStarted> for VoiceChannel {
    type Result = ();
    fn handle(&mut self, msg: TalkingStarted, _: &mut Context<Self>) {
        let user = self
            .members()
            .iter()
            .find(|p| p.id == msg.participant)
            .map(|p| p.user_id);
        if let Some(user_id) = user {
            self.announce(
                "VoiceTalking",
                json!({ "roomId": self.room_id, "participantId": msg.participant, "userId": user_id, "talking": true }),
                None,
            );
        }
    }
}

/// How many voice channels are running (for `/server-health`).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ChannelCount;

impl Handler<ChannelCount> for VoiceHub {
    type Result = usize;
    fn handle(&mut self, _: ChannelCount, _: &mut Context<Self>) -> usize {
        self.channels.retain(|_, a| a.connected());
        self.channels.len()
    }
}
