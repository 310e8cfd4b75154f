//! The registry: which event sessions each user has open (a user may have several: desktop,
//! phone, browser), and which room actors run. It starts room actors on demand under a
//! supervisor, and fans events out to sessions. Its own supervisor is the actix system.

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

/// The actor of a room, started (under a supervisor) if the room exists and is not running.
#[derive(Message)]
#[rtype(result = "Result<Option<Addr<RoomActor>>, StorageError>")]
pub struct GetRoom(pub RoomId);

impl Handler<GetRoom> for Registry {
    type Result = Result<Option<Addr<RoomActor>>, StorageError>;
    fn handle(&mut self, GetRoom(room_id): GetRoom, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(addr) = self.rooms.get(&room_id) {
            if addr.connected() {
                return Ok(Some(addr.clone()));
            }
        }
        if self.store.room(room_id)?.is_none() {
            return Ok(None);
        }
        let store = self.store.clone();
        let registry = ctx.address();
        let addr = Supervisor::start(move |_| RoomActor::new(room_id, store, registry));
        self.rooms.insert(room_id, addr.clone());
        Ok(Some(addr))
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
        MessageResult(RegistryStats {
            connected_sessions: self.session_count,
            connected_users: self.sessions.len(),
            active_rooms: self.rooms.len(),
        })
    }
}
