//! `GET /api/v1/backup` (Confab): a consistent backup archive of the running server, for
//! an administrator, streamed as it is written (`confab backup --out FILE` saves it).
//!
//! The snapshot is staged under the apply lock (writers pause while the records are copied,
//! see `storage::backup`), made durable, then written into the response from a thread of
//! its own through a bounded channel: a slow client holds a few chunks, never the archive.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{http::header, web, HttpResponse};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::auth::Admin;
use super::{ApiError, State};

/// One backup at a time: each stages a copy of the records in the storage folder.
static RUNNING: AtomicBool = AtomicBool::new(false);

struct RunningGuard;

impl Drop for RunningGuard {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::SeqCst);
    }
}

/// Bytes handed to the response per chunk.
const CHUNK: usize = 256 << 10;
/// Chunks written ahead of the client.
const CHUNKS_AHEAD: usize = 8;

/// A `Write` that sends what it is given to the response, `CHUNK` bytes at a time. When
/// the client has gone the send fails, and so does the write: the archive stops.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: BytesMut,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = self.buf.split().freeze();
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

pub async fn backup(state: State, admin: Admin) -> Result<HttpResponse, ApiError> {
    if RUNNING.swap(true, Ordering::SeqCst) {
        return Err(ApiError::Conflict(
            "A backup is already being made; try again when it is done".into(),
        ));
    }
    let running = RunningGuard;
    let store = state.store.clone();
    let started = std::time::Instant::now();
    let snapshot = web::block(move || store.snapshot())
        .await
        .map_err(|e| ApiError::Internal(format!("backup worker: {e}")))??;
    let staged_ms = started.elapsed().as_millis();
    // Everything in the snapshot is on the device before the archive says it exists.
    state.store.durable().await?;
    let manifest = snapshot.manifest().clone();
    tracing::info!(
        target: "confab::audit",
        by = admin.0.id(),
        records = manifest.records,
        content_files = manifest.content_files,
        staged_ms,
        "backup started"
    );
    let (tx, mut rx) = mpsc::channel(CHUNKS_AHEAD);
    let by = admin.0.id();
    std::thread::Builder::new()
        .name("confab-backup".into())
        .spawn(move || {
            let _running = running;
            let mut out = ChannelWriter {
                tx: tx.clone(),
                buf: BytesMut::with_capacity(CHUNK),
            };
            match snapshot.write_archive(&mut out) {
                Ok(()) => tracing::info!(target: "confab::audit", by, "backup sent"),
                Err(e) => {
                    tracing::warn!(target: "confab::audit", by, "backup not completed: {e}");
                    // Ends the response with an error, so the client cannot take a cut
                    // archive for a whole one.
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                }
            }
        })
        .map_err(|e| ApiError::Internal(format!("backup worker: {e}")))?;
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let name = format!("confab-backup-{}.tar", manifest.created_utc / 1000);
    Ok(HttpResponse::Ok()
        .content_type("application/x-tar")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .insert_header(("X-Confab-Backup-Records", manifest.records.to_string()))
        .insert_header((
            "X-Confab-Backup-Content-Files",
            manifest.content_files.to_string(),
        ))
        .streaming(body))
}
