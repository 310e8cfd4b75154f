//! Group commit: many writers wait for one `fsync`.
//!
//! A writer first applies its change to sled (in memory), then calls
//! [`GroupCommit::durable`]. A dedicated thread takes every request that is waiting,
//! flushes sled once, and answers them all. Every write made before a request was queued
//! is covered by the flush that answers it, so a caller that has its answer knows its write
//! is on disk. The queue is bounded: writers wait (asynchronously) when it is full.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::StorageError;

const QUEUE_CAPACITY: usize = 16_384;

type Waiter = oneshot::Sender<Result<(), String>>;

#[derive(Default, Debug)]
pub struct CommitStats {
    /// Number of `fsync`s done.
    pub flushes: AtomicU64,
    /// Number of writes made durable.
    pub requests: AtomicU64,
}

pub struct GroupCommit {
    /// `None` only while dropping.
    queue: Option<mpsc::Sender<Waiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub stats: Arc<CommitStats>,
}

impl Drop for GroupCommit {
    /// Closing the queue ends the thread; joining it releases its database handle, so the
    /// storage folder can be opened again at once.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl GroupCommit {
    pub fn start(db: sled::Db) -> Result<Self, StorageError> {
        let (queue, mut rx) = mpsc::channel::<Waiter>(QUEUE_CAPACITY);
        let stats = Arc::new(CommitStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("confab-group-commit".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(256);
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    while let Ok(next) = rx.try_recv() {
                        batch.push(next);
                    }
                    let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        tracing::error!("fsync of the storage folder failed: {e}");
                    }
                    thread_stats.flushes.fetch_add(1, Ordering::Relaxed);
                    thread_stats
                        .requests
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for waiter in batch.drain(..) {
                        let _ = waiter.send(result.clone());
                    }
                }
            })
            .map_err(|e| {
                StorageError::Flush(format!("cannot start the group-commit thread: {e}"))
            })?;
        Ok(GroupCommit {
            queue: Some(queue),
            thread: Some(thread),
            stats,
        })
    }

    /// Resolves once every write made before this call is on disk.
    pub async fn durable(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| StorageError::Flush("the group-commit thread has stopped".into()))?;
        queue
            .send(tx)
            .await
            .map_err(|_| StorageError::Flush("the group-commit thread has stopped".into()))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageError::Flush(e)),
            Err(_) => Err(StorageError::Flush(
                "the group-commit thread has stopped".into(),
            )),
        }
    }
}
