//! The registry: which event sessions each user has open (a user may have several: desktop,
//! phone, browser), and which room actors run. It is the room actors' supervisor: it starts
//! a room's actor on demand, and a fresh one when the previous has stopped. It fans events
//! out to sessions. Its own supervisor is the actix system.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::room::RoomActor;
use super::session::{CloseSession, Deliver, EventSession};
use super::Payload;
use crate::model::{RoomId, UserId};
use crate::storage::{StorageError, Store};

pub struct Registry {
    store: Arc<Store>,
    sessions: HashMap<UserId, Vec<(u64, Addr<EventSession>)>>,
    session_count: usize,
    rooms: HashMap<RoomId, Addr<RoomActor>>,
}

impl Registry {
    pub fn new(store: Arc<Store>) -> Self {
        Registry {
            store,
            sessions: HashMap::new(),
            session_count: 0,
            rooms: HashMap::new(),
        }
    }

    fn deliver_to(&self, user_id: UserId, payload: &Payload) {
        if let Some(list) = self.sessions.get(&user_id) {
            for (_, addr) in list {
                addr.do_send(Deliver(payload.clone()));
            }
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Supervised for Registry {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Sessions re-register themselves only on reconnect, so keep the maps: they are plain
        // data and stay valid. Room actors are supervised on their own.
        tracing::warn!("registry restarting");
    }
}

/// An event session opened: deliver the user's events to it from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub user_id: UserId,
    pub session_id: u64,
    pub addr: Addr<EventSession>,
}

impl Handler<Connect> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        self.sessions
            .entry(msg.user_id)
            .or_default()
            .push((msg.session_id, msg.addr));
        self.session_count += 1;
    }
}

/// An event session ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub user_id: UserId,
    pub session_id: u64,
}

impl Handler<Disconnect> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
        if let Some(list) = self.sessions.get_mut(&msg.user_id) {
            let before = list.len();
            list.retain(|(id, _)| *id != msg.session_id);
            self.session_count -= before - list.len();
            if list.is_empty() {
                self.sessions.remove(&msg.user_id);
            }
        }
    }
}

/// The actor of a room, started if the room exists (as far as clients can see: durably)
/// and none runs.
#[derive(Message)]
#[rtype(result = "Result<Option<Addr<RoomActor>>, StorageError>")]
pub struct GetRoom(pub RoomId);

impl Registry {
    fn running(&self, room_id: RoomId) -> Option<Addr<RoomActor>> {
        self.rooms.get(&room_id).filter(|a| a.connected()).cloned()
    }

    fn start_room(&mut self, room_id: RoomId, ctx: &mut Context<Self>) -> Addr<RoomActor> {
        let addr = RoomActor::new(room_id, self.store.clone(), ctx.address()).start();
        self.rooms.insert(room_id, addr.clone());
        addr
    }
}

impl Handler<GetRoom> for Registry {
    type Result = Result<Option<Addr<RoomActor>>, StorageError>;
    fn handle(&mut self, GetRoom(room_id): GetRoom, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(addr) = self.running(room_id) {
            return Ok(Some(addr));
        }
        if self.store.room(room_id)?.is_none() {
            return Ok(None);
        }
        Ok(Some(self.start_room(room_id, ctx)))
    }
}

/// The actor for a room about to be created (its id freshly allocated): the creation is
/// its first write.
#[derive(Message)]
#[rtype(result = "Addr<RoomActor>")]
pub struct NewRoom(pub RoomId);

impl Handler<NewRoom> for Registry {
    type Result = Addr<RoomActor>;
    fn handle(&mut self, NewRoom(room_id): NewRoom, ctx: &mut Context<Self>) -> Self::Result {
        match self.running(room_id) {
            Some(addr) => addr,
            None => self.start_room(room_id, ctx),
        }
    }
}

/// One payload for every session of each listed user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Broadcast {
    pub users: Arc<[UserId]>,
    pub payload: Payload,
}

impl Handler<Broadcast> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Broadcast, _: &mut Context<Self>) {
        for &user in msg.users.iter() {
            self.deliver_to(user, &msg.payload);
        }
    }
}

/// A payload of its own for each listed user (per-user views such as rooms).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliverEach(pub Vec<(UserId, Payload)>);

impl Handler<DeliverEach> for Registry {
    type Result = ();
    fn handle(&mut self, msg: DeliverEach, _: &mut Context<Self>) {
        for (user, payload) in &msg.0 {
            self.deliver_to(*user, payload);
        }
    }
}

/// Close every event session with a close frame (server shutdown). Answers how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown;

impl Handler<Shutdown> for Registry {
    type Result = usize;
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> usize {
        let mut n = 0;
        for list in self.sessions.values() {
            for (_, addr) in list {
                addr.do_send(CloseSession {
                    code: actix_ws::CloseCode::Away,
                    reason: "server shutting down".into(),
                });
                n += 1;
            }
        }
        n
    }
}

/// Close every event session of one user (suspension). Answers how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseUserSessions {
    pub user_id: UserId,
    pub reason: String,
}

impl Handler<CloseUserSessions> for Registry {
    type Result = usize;
    fn handle(&mut self, msg: CloseUserSessions, _: &mut Context<Self>) -> usize {
        let list = self.sessions.get(&msg.user_id).cloned().unwrap_or_default();
        for (_, addr) in &list {
            addr.do_send(CloseSession {
                code: actix_ws::CloseCode::Policy,
                reason: msg.reason.clone(),
            });
        }
        list.len()
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStats {
    pub connected_sessions: usize,
    pub connected_users: usize,
    pub active_rooms: usize,
}

#[derive(Message)]
#[rtype(result = "RegistryStats")]
pub struct GetStats;

impl Handler<GetStats> for Registry {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        self.rooms.retain(|_, a| a.connected());
        MessageResult(RegistryStats {
            connected_sessions: self.session_count,
            connected_users: self.sessions.len(),
            active_rooms: self.rooms.len(),
        })
    }
}

/// Which of these users have no event session open (the voice channels drop their
/// forgotten participants with it).
#[derive(Message)]
#[rtype(result = "Vec<UserId>")]
pub struct WithoutSessions(pub Vec<UserId>);

impl Handler<WithoutSessions> for Registry {
    type Result = MessageResult<WithoutSessions>;
    fn handle(&mut self, msg: WithoutSessions, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            msg.0
                .into_iter()
                .filter(|u| !self.sessions.contains_key(u))
                .collect(),
        )
    }
}
