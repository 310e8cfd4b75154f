//! Errors of the storage layer. The API layer maps them to client-visible errors in one
//! place (`api::error`), so nothing here knows about HTTP.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create the storage folder {path}: {source}. Choose a folder the server's user may write to (--storage-dir).")]
    CreateDir {
        path: PathBuf,
        source: std::sync::Arc<std::io::Error>,
    },
    #[error("the storage folder {path} is not writable ({source}). The folder must be writable by the server's user; choose another with --storage-dir or fix its permissions.")]
    NotWritable {
        path: PathBuf,
        source: std::sync::Arc<std::io::Error>,
    },
    #[error("the storage folder {path} is in use by another running Confab server (lock file {lock}). Stop that server first, or choose another folder with --storage-dir.")]
    InUse { path: PathBuf, lock: PathBuf },
    #[error("cannot open the database in {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the storage folder {path} was written by Confab {written_by} (schema version {found}); this is Confab {} (schema version {supported} at most). Nothing was changed: run Confab {written_by} or newer on it.", env!("CARGO_PKG_VERSION"))]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
        /// The Confab version that last wrote the folder ("unknown" before it was recorded).
        written_by: String,
    },
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error("a stored record is damaged ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// A file of the storage folder could not be read or written.
    #[error("{what} {path}: {detail}")]
    Io {
        what: &'static str,
        path: PathBuf,
        detail: String,
        disk_full: bool,
    },
    /// Writes are refused: the disk is (almost) full.
    #[error("{0}")]
    DiskFull(String),
    /// Writes are refused or could not be confirmed: device failure, folder gone, stalled
    /// commit, database being reopened.
    #[error("{0}")]
    Unavailable(String),
    /// A precondition of a write unit failed in a way the caller reports as a conflict.
    #[error("{0}")]
    Conflict(String),
    /// The write would pass a limit (an attachment quota).
    #[error("{0}")]
    TooLarge(String),
    /// The storage key is missing, wrong, or unreadable (encryption at rest).
    #[error("{0}")]
    Key(String),
    /// A compare-and-swap lost to a concurrent writer (retried by `apply_cas`).
    #[error("the record changed concurrently")]
    Stale,
}

impl StorageError {
    pub fn io(what: &'static str, path: &Path, e: std::io::Error) -> StorageError {
        StorageError::Io {
            what,
            path: path.to_path_buf(),
            disk_full: e.kind() == std::io::ErrorKind::StorageFull,
            detail: e.to_string(),
        }
    }

    pub(crate) fn create_dir(path: &Path, source: std::io::Error) -> StorageError {
        StorageError::CreateDir {
            path: path.to_path_buf(),
            source: std::sync::Arc::new(source),
        }
    }

    pub(crate) fn not_writable(path: &Path, source: std::io::Error) -> StorageError {
        StorageError::NotWritable {
            path: path.to_path_buf(),
            source: std::sync::Arc::new(source),
        }
    }
}
