//! The registry: which room actors run, and where. It is the room actors' supervisor: it
//! starts a room's actor on demand, on one of a pool of arbiters (one per core, chosen by
//! room id, so rooms use every core), starts a fresh one if the previous has stopped, and
//! retires idle ones. Handlers find a running room's address in the shared [`RoomAddrs`]
//! without a round trip through here. Its own supervisor is the actix system.
//!
//! One writer per room, always: a room's actor is started only here, on this actor's one
//! thread, and an idle actor leaves only through [`Retire`], which takes it out of every
//! lookup first; it then answers what still reaches it with "retry" for a grace period
//! before it stops, so no write is lost or made by two actors.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix::prelude::*;

use super::directory::Directory;
use super::room::RoomActor;
use crate::model::RoomId;
use crate::storage::{StorageError, Store};

/// The running room actors, readable by every handler.
#[derive(Default)]
pub struct RoomAddrs(RwLock<HashMap<RoomId, Addr<RoomActor>>>);

impl RoomAddrs {
    pub fn get(&self, room: RoomId) -> Option<Addr<RoomActor>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&room)
            .filter(|a| a.connected())
            .cloned()
    }

    fn insert(&self, room: RoomId, addr: Addr<RoomActor>) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room, addr);
    }

    /// Removes the room's entry if it is `addr`; true if it was.
    fn remove_if(&self, room: RoomId, addr: &Addr<RoomActor>) -> bool {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if map.get(&room) == Some(addr) {
            map.remove(&room);
            return true;
        }
        false
    }

    fn len(&self) -> usize {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, a| a.connected());
        map.len()
    }
}

pub struct Registry {
    store: Arc<Store>,
    directory: Arc<Directory>,
    rooms: Arc<RoomAddrs>,
    arbiters: Vec<ArbiterHandle>,
    /// How long a room actor waits with nothing to do before it retires.
    room_idle: std::time::Duration,
}

impl Registry {
    pub fn new(
        store: Arc<Store>,
        directory: Arc<Directory>,
        rooms: Arc<RoomAddrs>,
        arbiters: Vec<ArbiterHandle>,
        room_idle: std::time::Duration,
    ) -> Self {
        Registry {
            store,
            directory,
            rooms,
            arbiters,
            room_idle,
        }
    }

    fn start_room(&mut self, room_id: RoomId, ctx: &mut Context<Self>) -> Addr<RoomActor> {
        let (store, directory, registry, idle) = (
            self.store.clone(),
            self.directory.clone(),
            ctx.address(),
            self.room_idle,
        );
        let make = move |_: &mut Context<RoomActor>| {
            RoomActor::new(room_id, store, directory, registry, idle)
        };
        let addr = match self
            .arbiters
            .get(room_id as usize % self.arbiters.len().max(1))
        {
            Some(arbiter) => RoomActor::start_in_arbiter(arbiter, make),
            None => RoomActor::create(make),
        };
        self.rooms.insert(room_id, addr.clone());
        addr
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Supervised for Registry {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Its state is the shared map of room actors, which stays valid.
        tracing::warn!("registry restarting");
    }
}

/// The actor of a room, started if the room exists (as far as clients can see: durably)
/// and none runs.
#[derive(Message)]
#[rtype(result = "Result<Option<Addr<RoomActor>>, StorageError>")]
pub struct GetRoom(pub RoomId);

impl Handler<GetRoom> for Registry {
    type Result = Result<Option<Addr<RoomActor>>, StorageError>;
    fn handle(&mut self, GetRoom(room_id): GetRoom, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(addr) = self.rooms.get(room_id) {
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
        match self.rooms.get(room_id) {
            Some(addr) => addr,
            None => self.start_room(room_id, ctx),
        }
    }
}

/// An idle room actor asks to leave. Answers true when it was taken out of every lookup:
/// the actor then answers "retry" to what still reaches it and stops after a grace period.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Retire {
    pub room_id: RoomId,
    pub addr: Addr<RoomActor>,
}

impl Handler<Retire> for Registry {
    type Result = bool;
    fn handle(&mut self, msg: Retire, _: &mut Context<Self>) -> bool {
        self.rooms.remove_if(msg.room_id, &msg.addr)
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStats {
    pub active_rooms: usize,
}

#[derive(Message)]
#[rtype(result = "RegistryStats")]
pub struct GetStats;

impl Handler<GetStats> for Registry {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(RegistryStats {
            active_rooms: self.rooms.len(),
        })
    }
}
