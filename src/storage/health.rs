//! Storage faults: a full disk, a failing device, a folder deleted or replaced under the
//! running server, a commit that does not return. Each is noticed (by the write path, the
//! group commit or the monitor thread), makes writes fail fast with a clear text, shows in
//! `/server-health`, and clears by itself when the cause goes (free space back; the
//! database reopened after a device error). A folder that was deleted or replaced never
//! clears: nothing written after that could be trusted to be where the next start looks.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{Result, StorageError};

/// Writes stop when the storage folder's file system has less than this free. sled grows
/// its log in 512 KiB segments and writes snapshots; this keeps it from ever meeting
/// ENOSPC half-way through a write, after which it would refuse every write until reopened.
pub const DEFAULT_RESERVE_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Less free space than the reserve.
    DiskFull { free: u64, reserve: u64 },
    /// sled or a sync failed: the database is reopened once the device works again.
    Device(String),
    /// The storage folder (or its lock file or database) is not the one the server opened.
    FolderGone(String),
    /// A durable commit has been running for this many seconds.
    Stalled(u64),
}

impl Fault {
    fn error(&self, dir: &Path) -> StorageError {
        match self {
            Fault::DiskFull { free, reserve } => StorageError::DiskFull(format!(
                "Insufficient storage: the disk holding {} has {} MiB free and Confab keeps {} MiB in reserve; nothing was stored. Free some space: writes resume by themselves.",
                dir.display(),
                free >> 20,
                reserve >> 20
            )),
            // sled met ENOSPC (the disk filled up behind the reserve's back): a full disk
            // to the client, a device fault to the store (it must reopen the database).
            Fault::Device(e) if e == NO_SPACE => {
                StorageError::DiskFull(format!(
                    "Insufficient storage: the disk holding {} is full; nothing was stored. Free some space: the server reopens its database and resumes by itself.",
                    dir.display()
                ))
            }
            Fault::Device(e) => StorageError::Unavailable(format!(
                "The storage device failed ({e}); nothing was stored. The server reopens its database as soon as the device works again."
            )),
            Fault::FolderGone(why) => StorageError::Unavailable(format!(
                "The storage folder {} {why} while the server was running; no write is accepted any more. Restore the folder and restart the server.",
                dir.display()
            )),
            Fault::Stalled(secs) => StorageError::Unavailable(format!(
                "The storage device has not confirmed writes for {secs} s; nothing was stored. Try again later."
            )),
        }
    }

    /// The reason, for `/server-health` and the log.
    pub fn describe(&self, dir: &Path) -> String {
        self.error(dir).to_string()
    }
}

const NO_SPACE: &str = "no space left on device";

impl Fault {
    /// A device fault from an error of sled or of a sync (a full disk named plainly).
    pub fn device(e: &dyn std::fmt::Display) -> Fault {
        let text = e.to_string();
        if text.contains("No space left on device") || text.contains("StorageFull") {
            return Fault::Device(NO_SPACE.into());
        }
        Fault::Device(text)
    }
}

/// Identity of the storage folder as opened: device and inode of the folder, its lock file
/// and the database log. A folder removed and recreated, or swapped for another, changes
/// at least one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FolderIdentity {
    entries: Vec<(PathBuf, u64, u64)>,
}

impl FolderIdentity {
    pub fn of(paths: &[PathBuf]) -> Result<FolderIdentity> {
        let mut entries = Vec::new();
        for p in paths {
            let m = std::fs::metadata(p).map_err(|e| StorageError::io("storage folder", p, e))?;
            entries.push((p.clone(), m.dev(), m.ino()));
        }
        Ok(FolderIdentity { entries })
    }

    /// `Err(what happened)` when a path is gone or is another file now.
    pub fn verify(&self) -> std::result::Result<(), String> {
        for (p, dev, ino) in &self.entries {
            match std::fs::metadata(p) {
                Ok(m) if m.dev() == *dev && m.ino() == *ino => {}
                Ok(_) => {
                    return Err(format!(
                        "was replaced ({} is another file now)",
                        p.display()
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(format!("was deleted ({} is gone)", p.display()))
                }
                Err(e) => return Err(format!("became unreadable ({}: {e})", p.display())),
            }
        }
        Ok(())
    }
}

/// Free bytes for unprivileged users on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

/// Whether a file can be created in `dir` now (a folder remounted read-only cannot).
pub fn writable(dir: &Path) -> bool {
    let probe = dir.join(".write-test");
    let ok = std::fs::write(&probe, b"ok").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

pub(crate) struct Health {
    dir: PathBuf,
    pub reserve: u64,
    fault: Mutex<Option<Fault>>,
    faulted: AtomicBool,
    identity: FolderIdentity,
}

impl Health {
    pub fn new(dir: &Path, reserve: u64, identity: FolderIdentity) -> Health {
        Health {
            dir: dir.to_path_buf(),
            reserve,
            fault: Mutex::new(None),
            faulted: AtomicBool::new(false),
            identity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Fault>> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok` when writes may go ahead; the fault's error otherwise. One atomic load when
    /// healthy.
    pub fn check_writable(&self) -> Result<()> {
        if !self.faulted.load(Ordering::Acquire) {
            return Ok(());
        }
        match &*self.lock() {
            Some(f) => Err(f.error(&self.dir)),
            None => Ok(()),
        }
    }

    pub fn current(&self) -> Option<Fault> {
        self.lock().clone()
    }

    /// Records a fault (a folder that is gone outranks everything; otherwise the newest
    /// wins). Logged once per change.
    pub fn set(&self, fault: Fault) {
        let mut cur = self.lock();
        if matches!(&*cur, Some(Fault::FolderGone(_))) || cur.as_ref() == Some(&fault) {
            return;
        }
        // A device error waits for a reopen; a lack of space does not replace it.
        if matches!(&*cur, Some(Fault::Device(_))) && matches!(fault, Fault::DiskFull { .. }) {
            return;
        }
        let same_kind = cur
            .as_ref()
            .is_some_and(|c| std::mem::discriminant(c) == std::mem::discriminant(&fault));
        if !same_kind {
            tracing::error!("storage fault: {}", fault.describe(&self.dir));
        }
        *cur = Some(fault);
        self.faulted.store(true, Ordering::Release);
    }

    /// Clears the current fault if `which` says it is the one that went away.
    pub fn clear_if(&self, which: impl Fn(&Fault) -> bool) {
        let mut cur = self.lock();
        if cur.as_ref().is_some_and(which) {
            tracing::warn!("storage fault cleared; writes resume");
            *cur = None;
            self.faulted.store(false, Ordering::Release);
        }
    }

    /// The folder is still the one that was opened; a `FolderGone` fault otherwise.
    pub fn verify_folder(&self) -> Result<()> {
        if let Err(why) = self.identity.verify() {
            self.set(Fault::FolderGone(why));
            return self.check_writable();
        }
        Ok(())
    }

    /// Sets or clears `DiskFull` from the free space now.
    pub fn check_space(&self) {
        let Some(free) = free_bytes(&self.dir) else {
            return;
        };
        if free < self.reserve {
            self.set(Fault::DiskFull {
                free,
                reserve: self.reserve,
            });
        } else {
            self.clear_if(|f| matches!(f, Fault::DiskFull { .. }));
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
