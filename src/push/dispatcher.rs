//! The push dispatcher: one supervised actor on its own arbiter that works through the
//! persistent queue (`storage::push`) every [`TICK`].
//!
//! 1. **Coalesce.** A user's jobs wait until the oldest is `--push-coalesce-ms` old, then
//!    become one notification (a count, the newest message) after their settings (muted
//!    rooms, mentions only, quiet hours), their status (suspended or removed: nothing) and
//!    the messages (deleted meanwhile, or the user no longer a member: left out). One
//!    delivery per device is written in the same durable unit that removes the jobs.
//! 2. **Send** due deliveries, at most [`PER_PLATFORM`] at a time per provider. Sent: the
//!    delivery is removed (durably, before it can be picked again). Retry: it moves to its
//!    next attempt, with exponential back-off and jitter or the provider's `Retry-After`.
//!    Gone: the device is removed. Failed or expired: the delivery is dropped.
//! 3. **Bound** the queue: beyond `--push-queue-max` the oldest are dropped (counted).
//!
//! A restart (or a supervisor restart) loses nothing: everything is in sled; what was
//! being sent when the process died is sent again (the providers collapse repeats of one
//! room's notifications).

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rand::Rng;

use super::{
    apns::Apns, fcm::Fcm, relay::Relay, webpush::Vapid, webpush::WebPush, Outcome, PushConfig,
};
use crate::actors::directory::Directory;
use crate::model::{RoomType, UserId, UserStatus};
use crate::storage::push::{
    delivery_key, DeliveryRecord, DeviceRecord, JobKind, NotificationRecord, Platform, PushJob,
};
use crate::storage::{Store, Table, WriteUnit};

/// How often the queue is looked at.
pub const TICK: Duration = Duration::from_millis(200);
/// Sends in flight per provider at most.
pub const PER_PLATFORM: usize = 32;
/// Free sending slots that make a finished send look for more before the next tick.
const REFILL_BATCH: usize = 16;
/// Jobs read per coalescing round.
const JOBS_PER_ROUND: usize = 5000;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A user's notification is sent without waiting for the window once this many wait.
const COALESCE_AT_MOST: usize = 100;

/// The dispatcher's counters, read by `server-health` and the metrics.
pub static STATS: super::PushStats = super::PushStats {
    queued: std::sync::atomic::AtomicU64::new(0),
    sent: std::sync::atomic::AtomicU64::new(0),
    retried: std::sync::atomic::AtomicU64::new(0),
    failed: std::sync::atomic::AtomicU64::new(0),
    devices_removed: std::sync::atomic::AtomicU64::new(0),
    dropped: std::sync::atomic::AtomicU64::new(0),
};

/// The providers, made on the dispatcher's thread (their HTTP client lives there).
pub struct Providers {
    fcm: Option<Fcm>,
    apns: Option<Apns>,
    webpush: WebPush,
    relay: Option<Relay>,
}

impl Providers {
    pub fn build(cfg: &PushConfig, vapid: Vapid) -> Result<Providers, String> {
        let http = super::client::build(cfg.ca_file.as_deref())?;
        let fcm = match &cfg.fcm_service_account {
            Some(path) => Some(Fcm::new(http.clone(), &cfg.fcm_url, path)?),
            None => None,
        };
        let apns = match (&cfg.apns_key, &cfg.apns_key_id, &cfg.apns_team_id) {
            (Some(key), Some(id), Some(team)) => Some(Apns::new(
                http.clone(),
                cfg.apns_url.clone(),
                key,
                id,
                team,
                cfg.apns_topic.clone(),
            )?),
            _ => None,
        };
        Ok(Providers {
            fcm,
            apns,
            webpush: WebPush::new(http.clone(), vapid, cfg.include_content),
            relay: cfg.relay_url.clone().map(|u| Relay::new(http, u)),
        })
    }

    async fn send(&self, d: &DeviceRecord, n: &NotificationRecord, expires: u64) -> Outcome {
        match (d.platform, &self.relay, &self.fcm, &self.apns) {
            (Platform::Webpush, ..) => self.webpush.send(d, n, expires).await,
            (_, Some(relay), ..) => relay.send(d, n, expires).await,
            (Platform::Fcm, _, Some(fcm), _) => fcm.send(d, n).await,
            (Platform::Apns, _, _, Some(apns)) => apns.send(d, n, expires).await,
            (p, ..) => Outcome::Failed(format!(
                "{} is not configured on this server (docs/push.md)",
                p.name()
            )),
        }
    }
}

/// One user's part of a coalescing round: jobs out, deliveries in.
struct Round {
    unit: WriteUnit,
    jobs: u64,
    deliveries: Vec<Vec<u8>>,
}

pub struct PushDispatcher {
    store: Arc<Store>,
    directory: Arc<Directory>,
    cfg: PushConfig,
    storage_dir: std::path::PathBuf,
    providers: Option<Rc<Providers>>,
    /// Deliveries being sent (or whose outcome is being made durable).
    in_flight: HashSet<Vec<u8>>,
    per_platform: [usize; 3],
    /// A coalescing round's units are being made durable.
    coalescing: bool,
    /// Deliveries of that round: not sent until it is durable.
    not_yet_durable: HashSet<Vec<u8>>,
}

fn platform_index(p: Platform) -> usize {
    match p {
        Platform::Fcm => 0,
        Platform::Apns => 1,
        Platform::Webpush => 2,
    }
}

impl PushDispatcher {
    pub fn new(
        store: Arc<Store>,
        directory: Arc<Directory>,
        cfg: PushConfig,
        storage_dir: std::path::PathBuf,
    ) -> PushDispatcher {
        PushDispatcher {
            store,
            directory,
            cfg,
            storage_dir,
            providers: None,
            in_flight: HashSet::new(),
            per_platform: [0; 3],
            coalescing: false,
            not_yet_durable: HashSet::new(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if !self.coalescing {
            match self.coalesce() {
                Ok(units) if !units.is_empty() => self.apply_round(ctx, units),
                Ok(_) => {}
                Err(e) => tracing::warn!("push: reading the queue failed: {e}"),
            }
        }
        if let Err(e) = self.send_due(ctx) {
            tracing::warn!("push: reading deliveries failed: {e}");
        }
        if STATS.queued.load(Ordering::Relaxed) > self.cfg.queue_max {
            if let Err(e) = self.drop_oldest() {
                tracing::warn!("push: trimming the queue failed: {e}");
            }
        }
    }

    /// Applies a coalescing round's units at once and waits for one group commit to make
    /// them all durable; until then their deliveries are not sent (a crash would bring
    /// their jobs back, and they would be sent twice).
    fn apply_round(&mut self, ctx: &mut Context<Self>, units: Vec<Round>) {
        self.coalescing = true;
        let (mut jobs, mut added) = (0, 0);
        for round in units {
            match self.store.apply(round.unit) {
                Ok(_) => {
                    jobs += round.jobs;
                    added += round.deliveries.len() as u64;
                    self.not_yet_durable.extend(round.deliveries);
                }
                Err(e) => tracing::warn!("push: queue write failed: {e}"),
            }
        }
        let store = self.store.clone();
        ctx.spawn(async move { store.durable().await }.into_actor(self).map(
            move |result, act, ctx| {
                if let Err(e) = result {
                    // Not known to be on the device: what the round wrote is read again
                    // from storage at the next tick (a reopened database holds only the
                    // durable part).
                    tracing::warn!("push: queue commit failed: {e}");
                }
                let q = STATS.queued.load(Ordering::Relaxed);
                STATS.queued.fetch_sub(jobs.min(q), Ordering::Relaxed);
                STATS.queued.fetch_add(added, Ordering::Relaxed);
                act.not_yet_durable.clear();
                act.coalescing = false;
                if let Err(e) = act.send_due(ctx) {
                    tracing::warn!("push: reading deliveries failed: {e}");
                }
            },
        ));
    }

    /// The units of one coalescing round.
    fn coalesce(&self) -> crate::storage::Result<Vec<Round>> {
        let now = crate::now_ms();
        let window = self.cfg.coalesce.as_millis() as u64;
        let mut by_user: BTreeMap<UserId, Vec<(Vec<u8>, PushJob)>> = BTreeMap::new();
        for (key, job) in self.store.push_jobs(JOBS_PER_ROUND)? {
            by_user.entry(job.user_id).or_default().push((key, job));
        }
        let mut units = Vec::new();
        for (user_id, jobs) in by_user {
            let oldest = jobs.iter().map(|(_, j)| j.created_utc).min().unwrap_or(now);
            if now.saturating_sub(oldest) < window && jobs.len() < COALESCE_AT_MOST {
                continue;
            }
            let mut unit = WriteUnit::new(crate::storage::Scope::User(user_id));
            for (key, _) in &jobs {
                unit.remove(Table::PushJob, key);
            }
            let jobs_n = jobs.len() as u64;
            let mut deliveries = Vec::new();
            if let Some(n) = self.notification_for(user_id, &jobs, now)? {
                let latest = self.store.latest();
                for device in latest.devices_of(user_id)? {
                    if !latest.device_session_alive(&device)? {
                        // Its login session ended: the device goes with it.
                        let gone = Store::remove_device_unit(&device);
                        unit.extend(gone);
                        STATS.devices_removed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let tail: u64 = rand::thread_rng().gen();
                    let record = DeliveryRecord {
                        device_id: device.device_id,
                        user_id,
                        notification: n.clone(),
                        attempts: 0,
                        created_utc: now,
                        expires_utc: now + self.cfg.ttl.as_millis() as u64,
                    };
                    let key = delivery_key(now, device.device_id, tail);
                    unit.put_json(Table::PushDelivery, &key, &record);
                    deliveries.push(key);
                }
            }
            units.push(Round {
                unit,
                jobs: jobs_n,
                deliveries,
            });
        }
        Ok(units)
    }

    /// The one notification a user's jobs become, or none (muted, suspended, nothing left).
    fn notification_for(
        &self,
        user_id: UserId,
        jobs: &[(Vec<u8>, PushJob)],
        now: u64,
    ) -> crate::storage::Result<Option<NotificationRecord>> {
        let r = self.store.latest();
        let Some(user) = r.user(user_id)? else {
            return Ok(None);
        };
        if user.status != UserStatus::Active {
            return Ok(None);
        }
        let settings = r.push_settings(user_id)?;
        let mut kept = Vec::new();
        let mut badge_only = false;
        for (_, job) in jobs {
            if job.kind == JobKind::Badge {
                badge_only = true;
                continue;
            }
            if settings.muted_rooms.contains(&job.room_id)
                || (settings.mentions_only && !job.mention && !job.private_room)
                || r.member(job.room_id, user_id)?.is_none()
            {
                continue;
            }
            // Deleted since it was posted: nothing to announce.
            if let Some(m) = r.message(job.message_id)? {
                kept.push((job, m));
            }
        }
        let mut badge = 0;
        for room in r.rooms_of_user(user_id)? {
            badge += r.unread_count(user_id, room)?;
        }
        let quiet = settings
            .quiet_hours
            .as_ref()
            .is_some_and(|q| q.contains(now));
        let Some((newest, message)) = kept.iter().max_by_key(|(j, _)| j.message_id) else {
            return Ok(badge_only.then(|| NotificationRecord {
                room_id: 0,
                room_name: String::new(),
                sender_name: String::new(),
                count: 0,
                message_id: 0,
                text: None,
                badge,
                silent: true,
            }));
        };
        let sender = r.user(newest.sender_id)?;
        let sender_name = sender
            .map(|u| u.display_name)
            .unwrap_or_else(|| "someone".into());
        let room_name = match r.room(newest.room_id)? {
            Some(room) if room.room_type == RoomType::Private => sender_name.clone(),
            Some(room) => room.name,
            None => String::new(),
        };
        Ok(Some(NotificationRecord {
            room_id: newest.room_id,
            room_name,
            sender_name,
            count: kept.len() as u64,
            message_id: newest.message_id,
            text: (self.cfg.include_content && kept.len() == 1).then(|| message.text.clone()),
            badge,
            silent: quiet,
        }))
    }

    fn send_due(&mut self, ctx: &mut Context<Self>) -> crate::storage::Result<()> {
        let Some(providers) = self.providers.clone() else {
            return Ok(());
        };
        let now = crate::now_ms();
        let room = PER_PLATFORM * 3 - self.in_flight.len().min(PER_PLATFORM * 3);
        if room == 0 {
            return Ok(());
        }
        let due = self
            .store
            .latest()
            .due_deliveries(now, room + self.in_flight.len())?;
        for (key, d) in due {
            if self.in_flight.contains(&key) || self.not_yet_durable.contains(&key) {
                continue;
            }
            let latest = self.store.latest();
            let device = latest.device(d.device_id)?;
            let (Some(device), false) = (device, now >= d.expires_utc) else {
                // Expired, or its device was removed: dropped.
                let mut unit = WriteUnit::new(crate::storage::Scope::User(d.user_id));
                unit.remove(Table::PushDelivery, &key);
                STATS.dropped.fetch_add(1, Ordering::Relaxed);
                self.finish(ctx, key, unit);
                continue;
            };
            let p = platform_index(device.platform);
            if self.per_platform[p] >= PER_PLATFORM {
                continue;
            }
            self.per_platform[p] += 1;
            self.in_flight.insert(key.clone());
            let providers = providers.clone();
            let notification = d.notification.clone();
            let expires = d.expires_utc;
            let sending = device.clone();
            ctx.spawn(
                async move { providers.send(&sending, &notification, expires).await }
                    .into_actor(self)
                    .map(move |outcome, act, ctx| {
                        act.per_platform[p] -= 1;
                        act.handle_outcome(ctx, key, d, device, outcome);
                    }),
            );
        }
        Ok(())
    }

    fn handle_outcome(
        &mut self,
        ctx: &mut Context<Self>,
        key: Vec<u8>,
        d: DeliveryRecord,
        device: DeviceRecord,
        outcome: Outcome,
    ) {
        let mut unit = WriteUnit::new(crate::storage::Scope::User(d.user_id));
        unit.remove(Table::PushDelivery, &key);
        match outcome {
            Outcome::Sent => {
                STATS.sent.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Retry { after, why } => {
                let attempts = d.attempts + 1;
                let delay = after.unwrap_or_else(|| backoff(attempts));
                let next = crate::now_ms() + delay.as_millis() as u64;
                if next >= d.expires_utc {
                    STATS.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(device = d.device_id, "push: gave up before expiry: {why}");
                } else {
                    let tail: u64 = rand::thread_rng().gen();
                    unit.put_json(
                        Table::PushDelivery,
                        delivery_key(next, d.device_id, tail),
                        &DeliveryRecord { attempts, ..d },
                    );
                    STATS.retried.fetch_add(1, Ordering::Relaxed);
                    STATS.queued.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        device = device.device_id,
                        attempts,
                        ?delay,
                        "push: retry: {why}"
                    );
                }
            }
            Outcome::Gone(why) => {
                unit.extend(Store::remove_device_unit(&device));
                STATS.devices_removed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    target: "confab::audit",
                    user_id = device.user_id,
                    device = device.device_id,
                    platform = device.platform.name(),
                    "push device removed: {why}"
                );
                let others = self
                    .store
                    .latest()
                    .devices_of(device.user_id)
                    .map(|ds| ds.iter().any(|o| o.device_id != device.device_id))
                    .unwrap_or(true);
                self.directory.set_pushable(device.user_id, others);
            }
            Outcome::Failed(why) => {
                STATS.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(device = device.device_id, "push: not sent: {why}");
            }
        }
        self.finish(ctx, key, unit);
    }

    /// Applies a delivery's outcome; the delivery stays in flight (not picked again) until
    /// the change is on the device.
    fn finish(&mut self, ctx: &mut Context<Self>, key: Vec<u8>, unit: WriteUnit) {
        self.in_flight.insert(key.clone());
        let store = self.store.clone();
        ctx.spawn(
            async move { store.apply_durable(unit).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    match result {
                        Ok(_) => {
                            let q = STATS.queued.load(Ordering::Relaxed);
                            STATS.queued.fetch_sub(q.min(1), Ordering::Relaxed);
                        }
                        Err(e) => tracing::warn!("push: queue write failed: {e}"),
                    }
                    act.in_flight.remove(&key);
                    // Refill without waiting for the next tick once a batch of slots is
                    // free (a scan per completion would cost more than it saves).
                    if act.in_flight.len() + REFILL_BATCH <= PER_PLATFORM * 3 {
                        if let Err(e) = act.send_due(ctx) {
                            tracing::warn!("push: reading deliveries failed: {e}");
                        }
                    }
                }),
        );
    }

    /// Drops the oldest jobs, then the deliveries due first, beyond `--push-queue-max`.
    fn drop_oldest(&self) -> crate::storage::Result<()> {
        let over = (STATS.queued.load(Ordering::Relaxed) - self.cfg.queue_max).min(10_000) as usize;
        let latest = self.store.latest();
        let mut unit = WriteUnit::new(crate::storage::Scope::Server);
        let mut n = 0usize;
        for (key, _) in latest.push_jobs(over)? {
            unit.remove(Table::PushJob, key);
            n += 1;
        }
        if n < over {
            for (key, _) in latest.due_deliveries(u64::MAX - 1, over - n + self.in_flight.len())? {
                if n >= over {
                    break;
                }
                if !self.in_flight.contains(&key) {
                    unit.remove(Table::PushDelivery, key);
                    n += 1;
                }
            }
        }
        if n == 0 {
            return Ok(());
        }
        self.store.apply(unit)?;
        STATS.dropped.fetch_add(n as u64, Ordering::Relaxed);
        STATS.queued.fetch_sub(n as u64, Ordering::Relaxed);
        tracing::warn!("push: queue above --push-queue-max: the {n} oldest notifications dropped");
        Ok(())
    }
}

/// Exponential back-off with jitter: about 1, 2, 4 … s, at most [`MAX_BACKOFF`].
fn backoff(attempts: u32) -> Duration {
    let base = Duration::from_secs(1 << attempts.min(5)).min(MAX_BACKOFF);
    let jitter = rand::thread_rng().gen_range(0.75..1.25);
    base.mul_f64(jitter)
}

impl Actor for PushDispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.in_flight.clear();
        self.not_yet_durable.clear();
        self.per_platform = [0; 3];
        self.coalescing = false;
        match Vapid::load_or_create(&self.storage_dir)
            .and_then(|vapid| Providers::build(&self.cfg, vapid))
        {
            Ok(p) => self.providers = Some(Rc::new(p)),
            Err(e) => tracing::error!("push: providers unavailable: {e}"),
        }
        match self.store.latest().push_queue_len() {
            Ok((jobs, deliveries)) => STATS.queued.store(jobs + deliveries, Ordering::Relaxed),
            Err(e) => tracing::warn!("push: counting the queue failed: {e}"),
        }
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }
}

impl Supervised for PushDispatcher {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("push dispatcher restarting");
    }
}
