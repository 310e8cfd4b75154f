//! The `SearchIndexer` actor: follows the change log (the same durable writes clients
//! sync from) and brings the index up to date, committing at most every half second, so a
//! search lags history by well under a second. The index records in each commit the last
//! change it took in; after a crash the indexer goes on from there, and an index that is
//! missing, damaged, or behind the log's horizon is rebuilt from the records while chat
//! goes on. It runs on an arbiter of its own: indexing never delays a room.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Running, Supervised};

use super::{file_names, IndexedMessage, Result, SearchIndex};
use crate::model::MessageId;
use crate::storage::{Change, Store};

const TICK: Duration = Duration::from_millis(200);
/// Indexed documents become visible (and durable) this often at most.
const COMMIT_EVERY: Duration = Duration::from_millis(500);
/// A cursor that moved over changes that touched no document (read receipts, reactions)
/// is committed this often: a restart re-reads at most this much of the log.
const CURSOR_COMMIT_EVERY: Duration = Duration::from_secs(5);
/// Change-log entries read per step.
const BATCH: usize = 2000;
/// Messages read per page of a rebuild; a rebuild step works this long before it lets the
/// actor breathe (and commits what it has, so searches see a growing index).
const REBUILD_PAGE: usize = 1000;
const REBUILD_STEP: Duration = Duration::from_millis(500);

struct Rebuild {
    /// The last message id added.
    after: MessageId,
    /// The change log's position when the rebuild began: changes after it are replayed.
    cursor: u64,
    started: Instant,
    added: u64,
}

pub struct SearchIndexer {
    store: Arc<Store>,
    index: Arc<SearchIndex>,
    rebuild: Option<Rebuild>,
    /// The change-log entry applied (maybe not committed yet).
    applied: u64,
    /// Documents changed since the last commit.
    dirty: usize,
    last_commit: Instant,
    failing: bool,
}

impl SearchIndexer {
    pub fn new(store: Arc<Store>, index: Arc<SearchIndex>, needs_rebuild: bool) -> Self {
        let mut this = SearchIndexer {
            applied: index.cursor(),
            store,
            index,
            rebuild: None,
            dirty: 0,
            last_commit: Instant::now(),
            failing: false,
        };
        if needs_rebuild {
            this.start_rebuild("no usable index");
        }
        this
    }

    fn start_rebuild(&mut self, why: &str) {
        tracing::info!("search index: rebuilding from history ({why})");
        if let Err(e) = self.index.clear() {
            tracing::warn!("search index: cannot clear it: {e}");
        }
        self.rebuild = Some(Rebuild {
            after: 0,
            cursor: self.store.last_change_seq(),
            started: Instant::now(),
            added: 0,
        });
    }

    /// One step: some of a rebuild, or the changes logged since the last step.
    fn step(&mut self) -> Result<()> {
        if self.rebuild.is_some() {
            return self.rebuild_step();
        }
        let log_end = self.store.last_change_seq();
        if self.applied > log_end {
            // The log is behind the index: the folder was restored or replaced.
            self.start_rebuild("the index is newer than the storage folder");
            return Ok(());
        }
        if self.applied < log_end {
            if self.store.changes_pruned_through()? > self.applied {
                self.start_rebuild("the change log no longer reaches back to the index");
                return Ok(());
            }
            let changes = self.store.changes_after(self.applied, BATCH)?;
            let mut latest: BTreeMap<MessageId, bool> = BTreeMap::new();
            let mut last_seq = self.applied;
            for (seq, change) in changes {
                if seq > log_end {
                    break;
                }
                last_seq = seq;
                match change {
                    Change::Message { message_id, .. } => {
                        latest.insert(message_id, true);
                    }
                    Change::MessageDeleted { message_id, .. } => {
                        latest.insert(message_id, false);
                    }
                    _ => {}
                }
            }
            let mut batch: Vec<(MessageId, Option<IndexedMessage>)> =
                Vec::with_capacity(latest.len());
            for (id, present) in latest {
                let record = match present {
                    true => self.store.message(id)?,
                    false => None,
                };
                let entry = match record {
                    Some(record) => Some(IndexedMessage {
                        record,
                        file_names: file_names(&self.store, id)?,
                    }),
                    None => None,
                };
                batch.push((id, entry));
            }
            self.dirty += self.index.apply(&batch)?;
            self.applied = last_seq;
        }
        let since = self.last_commit.elapsed();
        let due = (self.dirty > 0 && since >= COMMIT_EVERY)
            || (self.applied > self.index.cursor() && since >= CURSOR_COMMIT_EVERY);
        if due {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.index.commit(self.applied, false)?;
        self.dirty = 0;
        self.last_commit = Instant::now();
        Ok(())
    }

    fn rebuild_step(&mut self) -> Result<()> {
        let begun = Instant::now();
        let Some(rebuild) = self.rebuild.as_mut() else {
            return Ok(());
        };
        loop {
            let page = self.store.messages_after(rebuild.after, REBUILD_PAGE)?;
            let Some(last) = page.last().map(|m| m.message_id) else {
                // Done: the log from the rebuild's start on is replayed next.
                self.index.commit(rebuild.cursor, true)?;
                self.applied = rebuild.cursor;
                tracing::info!(
                    "search index: rebuilt, {} messages in {:.1} s",
                    rebuild.added,
                    rebuild.started.elapsed().as_secs_f64()
                );
                self.rebuild = None;
                self.dirty = 0;
                self.last_commit = Instant::now();
                return Ok(());
            };
            rebuild.after = last;
            let mut docs = Vec::with_capacity(page.len());
            for record in page {
                let file_names = file_names(&self.store, record.message_id)?;
                docs.push(IndexedMessage { record, file_names });
            }
            self.index.add_fresh(&docs)?;
            rebuild.added += docs.len() as u64;
            if begun.elapsed() >= REBUILD_STEP {
                // Visible, but not marked complete: a crash now rebuilds again.
                self.index.commit_partial()?;
                return Ok(());
            }
        }
    }
}

impl Actor for SearchIndexer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |act, _| match act.step() {
            Ok(()) => {
                if act.failing {
                    tracing::info!("search index: indexing again");
                    act.failing = false;
                }
            }
            Err(e) => {
                if !act.failing {
                    tracing::warn!("search index: {e} (retrying)");
                    act.failing = true;
                }
            }
        });
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        if self.rebuild.is_none() && self.applied > self.index.cursor() {
            if let Err(e) = self.commit() {
                tracing::warn!("search index: last commit failed: {e}");
            }
        }
        Running::Stop
    }
}

impl Supervised for SearchIndexer {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("search indexer restarted");
    }
}

/// Builds the whole index from the records, synchronously (`admin reindex`, and the
/// benchmark): answers how many messages it holds.
pub fn rebuild_now(store: Arc<Store>, index: Arc<SearchIndex>) -> Result<u64> {
    let mut indexer = SearchIndexer::new(store, index, false);
    indexer.start_rebuild("asked for");
    while indexer.rebuild.is_some() {
        indexer.rebuild_step()?;
    }
    Ok(indexer.index.num_docs())
}
