//! Group commit: many writers wait for one flush to the device.
//!
//! A writer first applies its unit (in memory), then calls [`GroupCommit::durable`]. A
//! dedicated thread takes every request that is waiting, notes which units are applied,
//! flushes sled, then `fdatasync`s the database log and syncs new blob files (sled's own
//! flush uses `sync_file_range`, which persists neither metadata nor the device's write
//! cache). It then releases those units to the durable view and answers every request. A
//! caller that has its answer knows its write is on the device.
//!
//! The queue is bounded, and a caller waits at most [`COMMIT_DEADLINE`]: a device that stops
//! answering makes writes fail with a clear error instead of hanging the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::health::Fault;
use super::{Shared, StorageError};

const QUEUE_CAPACITY: usize = 16_384;

/// The longest a writer waits for its commit.
pub const COMMIT_DEADLINE: Duration = Duration::from_secs(10);

/// Commits start at most this often (see `StoreOptions::commit_interval`).
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(4);

type Waiter = oneshot::Sender<Result<(), StorageError>>;

#[derive(Default, Debug)]
pub struct CommitStats {
    /// Flushes to the device (each ends with `fdatasync` of the database log).
    pub flushes: AtomicU64,
    /// Durable-write requests answered.
    pub requests: AtomicU64,
    /// Requests answered with an error.
    pub failures: AtomicU64,
    /// Milliseconds since the epoch when the running flush started (0: none running).
    pub flush_started_ms: AtomicU64,
}

pub struct GroupCommit {
    /// `None` only while dropping.
    queue: Option<mpsc::Sender<Waiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for GroupCommit {
    /// Closing the queue ends the thread; joining it releases its database handle.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl GroupCommit {
    pub(crate) fn start(shared: Arc<Shared>, interval: Duration) -> Result<Self, StorageError> {
        let (queue, mut rx) = mpsc::channel::<Waiter>(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("confab-group-commit".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(256);
                let mut last_start: Option<std::time::Instant> = None;
                while let Some(first) = rx.blocking_recv() {
                    // Pacing: right after a commit, wait out the interval so the writes of
                    // the next moments join this one.
                    if let Some(wait) = last_start.and_then(|t| interval.checked_sub(t.elapsed())) {
                        std::thread::sleep(wait);
                    }
                    last_start = Some(std::time::Instant::now());
                    batch.push(first);
                    while let Ok(next) = rx.try_recv() {
                        batch.push(next);
                    }
                    let result = shared.make_durable();
                    let stats = &shared.stats;
                    stats
                        .requests
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if result.is_err() {
                        stats
                            .failures
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    for waiter in batch.drain(..) {
                        let _ = waiter.send(result.clone());
                    }
                }
            })
            .map_err(|e| {
                StorageError::Unavailable(format!("cannot start the group-commit thread: {e}"))
            })?;
        Ok(GroupCommit {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Resolves once every unit applied before this call is on the device.
    pub async fn durable(&self) -> Result<(), StorageError> {
        let stopped = || StorageError::Unavailable("the group-commit thread has stopped".into());
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        let (tx, rx) = oneshot::channel();
        let wait = async {
            queue.send(tx).await.map_err(|_| stopped())?;
            rx.await.map_err(|_| stopped())?
        };
        match tokio::time::timeout(COMMIT_DEADLINE, wait).await {
            Ok(result) => result,
            Err(_) => Err(StorageError::Unavailable(format!(
                "The storage device did not confirm the write within {} s; it may or may not be stored (retry with the same Idempotency-Key to find out).",
                COMMIT_DEADLINE.as_secs()
            ))),
        }
    }
}

impl Shared {
    /// One group commit: flush, sync to the device, check the folder, release the units.
    pub(crate) fn make_durable(&self) -> Result<(), StorageError> {
        if let Some(Fault::FolderGone(_) | Fault::Device(_)) = self.health.current() {
            return self.health.check_writable();
        }
        let (unit, change) = {
            let s = self.apply_state();
            (s.applied, s.next_change.saturating_sub(1))
        };
        if unit <= self.durable_unit.load(Ordering::SeqCst) {
            return Ok(());
        }
        let trees = self.trees()?;
        self.stats
            .flush_started_ms
            .store(crate::now_ms(), Ordering::SeqCst);
        let flush_started = std::time::Instant::now();
        let synced = trees
            .db
            .flush()
            .map_err(StorageError::Db)
            .and_then(|_| trees.sync_to_device());
        crate::metrics::observe_fsync(flush_started.elapsed());
        self.stats.flush_started_ms.store(0, Ordering::SeqCst);
        self.health.clear_if(|f| matches!(f, Fault::Stalled(_)));
        if let Err(e) = synced {
            self.health.set(Fault::device(&e));
            return Err(self
                .health
                .check_writable()
                .err()
                .unwrap_or(StorageError::Unavailable(e.to_string())));
        }
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        // Synced, but to the folder that was opened? After `rm -rf` the files live on,
        // unreachable: nothing may be acknowledged then.
        self.health.verify_folder()?;
        self.overlay.release(unit);
        self.durable_change.fetch_max(change, Ordering::SeqCst);
        self.durable_unit.fetch_max(unit, Ordering::SeqCst);
        // Durable units need no replay any more.
        if let Err(e) = trees.prune_journal(unit) {
            self.health.set(Fault::device(&e));
        }
        Ok(())
    }
}
