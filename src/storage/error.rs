//! Errors of the storage layer. The API layer maps them to client-visible errors in one
//! place (`api::error`), so nothing here knows about HTTP.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create the storage folder {path}: {source}. Choose a folder the server's user may write to (--storage-dir).")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the storage folder {path} is not writable ({source}). The folder must be writable by the server's user; choose another with --storage-dir or fix its permissions.")]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the storage folder {path} is in use by another running Confab server (lock file {lock}). Stop that server first, or choose another folder with --storage-dir.")]
    InUse { path: PathBuf, lock: PathBuf },
    #[error("cannot open the database in {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the storage folder {path} holds schema version {found}, newer than this server understands ({supported}). Upgrade Confab.")]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error("a stored record is damaged ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("the durable write could not be completed: {0}")]
    Flush(String),
    #[error("{0}")]
    Conflict(String),
}

impl From<sled::transaction::TransactionError<StorageError>> for StorageError {
    fn from(e: sled::transaction::TransactionError<StorageError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StorageError::Db(e),
        }
    }
}
