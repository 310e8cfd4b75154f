//! `confab-server admin …` and `confab-server check`: offline work on a stopped server's
//! storage folder (a lost administrator password, compaction, encryption, an integrity
//! check). Each
//! takes the folder's lock like the server does, so it refuses clearly while a server runs
//! on that folder.

use std::path::Path;
use std::sync::Arc;

use argh::FromArgs;

use crate::api::{auth, users};
use crate::storage::{self, StorageError, Store};

/// An offline command instead of running the server.
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand)]
pub enum ServerCommand {
    Admin(AdminArgs),
    Check(CheckArgs),
    Healthcheck(HealthcheckArgs),
}

/// ask the server running with these options whether it is ready (GET /readyz over TLS
/// on loopback): exit 0 if so, 1 if not (a container's HEALTHCHECK)
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand, name = "healthcheck")]
pub struct HealthcheckArgs {
    /// seconds to wait for the answer (default 5)
    #[argh(option, default = "5")]
    pub timeout: u64,
}

/// check a stopped server's storage folder: every invariant of the stored records, one line
/// per problem (exit 1 when there is any)
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand, name = "check")]
pub struct CheckArgs {}

/// offline administration of a stopped server's storage folder
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand, name = "admin")]
pub struct AdminArgs {
    #[argh(subcommand)]
    pub action: AdminAction,
}

#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand)]
pub enum AdminAction {
    ResetPassword(ResetPassword),
    CreateAdmin(CreateAdmin),
    Compact(Compact),
    Encrypt(Encrypt),
    Backup(Backup),
    Restore(Restore),
    Export(Export),
    Reindex(Reindex),
}

/// rebuild the search index of a stopped server's folder from its history (a running
/// server rebuilds a missing or damaged index by itself, in the background)
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand, name = "reindex")]
pub struct Reindex {}

/// write a backup archive of a stopped server's folder (records, attachments, the
/// self-signed certificate); a running server's is made with `confab backup`
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand, name = "backup")]
pub struct Backup {
    /// the archive to write (a tar file; replaced only once complete)
    #[argh(option)]
    pub out: std::path::PathBuf,
}

/// make the storage folder (new or empty) from a backup archive, then check it
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand, name = "restore")]
pub struct Restore {
    /// the archive (`-` reads it from standard input)
    #[argh(positional)]
    pub file: std::path::PathBuf,
}

/// write everything the folder holds as JSON lines (every record, opened; every content
/// file by its SHA-256): to compare two folders, or to take the data elsewhere
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand, name = "export")]
pub struct Export {
    /// where to write it (default: standard output)
    #[argh(option)]
    pub out: Option<std::path::PathBuf>,
}

/// encrypt a clear storage folder at rest (message texts, names, sessions, attachments):
/// from then on the server starts only with --encryption-key-file naming the same file
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand, name = "encrypt")]
pub struct Encrypt {
    /// the key file: 64 hex digits (`openssl rand -hex 32 > FILE`) or a passphrase of at
    /// least 12 characters. Without it the folder cannot be read: keep a copy apart
    #[argh(option)]
    pub encryption_key_file: Option<std::path::PathBuf>,
}

/// rewrite the database with only its live records, so deleted messages leave no trace in
/// old log segments; prints the size before and after
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand, name = "compact")]
pub struct Compact {}

/// set a user's password (printed when generated); ends their login sessions
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand, name = "reset-password")]
pub struct ResetPassword {
    /// user name
    #[argh(positional)]
    pub user: String,
    /// file holding the new password (otherwise one is generated and printed)
    #[argh(option)]
    pub password_file: Option<std::path::PathBuf>,
}

/// create an administrator (password printed when generated)
#[derive(FromArgs, Debug, Clone, PartialEq)]
#[argh(subcommand, name = "create-admin")]
pub struct CreateAdmin {
    /// user name
    #[argh(positional)]
    pub user: String,
    /// file holding the password (otherwise one is generated and printed)
    #[argh(option)]
    pub password_file: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Usage(String),
    /// The check found problems (each line printed already).
    #[error("{0}")]
    Problems(String),
}

/// Removes the folder's search index, if it has one (it is derived from the records: the
/// server rebuilds a missing one). Whether there was one.
fn remove_search_index(dir: &Path) -> Result<bool, AdminError> {
    let index = dir.join(crate::search::DIR);
    if !index.exists() {
        return Ok(false);
    }
    std::fs::remove_dir_all(&index)
        .map_err(|e| AdminError::Usage(format!("cannot remove {}: {e}", index.display())))?;
    Ok(true)
}

fn password_from(file: &Option<std::path::PathBuf>) -> Result<(String, bool), AdminError> {
    match file {
        Some(f) => {
            let p = std::fs::read_to_string(f)
                .map_err(|e| AdminError::Usage(format!("cannot read {}: {e}", f.display())))?
                .trim_end_matches(['\n', '\r'])
                .to_string();
            if p.len() < 8 {
                return Err(AdminError::Usage(
                    "the password must be at least 8 bytes".into(),
                ));
            }
            Ok((p, false))
        }
        None => Ok((users::generate_password(), true)),
    }
}

/// Offline commands started by root act as the storage folder's owner (when that is
/// another user): the files they create or rewrite stay the service's, so the next start as
/// the service user works. Answers the uid switched to, if any.
pub fn become_folder_owner(dir: &Path) -> Result<Option<u32>, AdminError> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(None);
    };
    let (uid, gid) = (meta.uid(), meta.gid());
    if uid == 0 {
        return Ok(None);
    }
    // SAFETY: plain credential calls; groups first, then the group, then the user (after
    // which the others would be refused).
    let switched = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(gid) == 0
            && libc::setuid(uid) == 0
    };
    if !switched {
        return Err(AdminError::Usage(format!(
            "cannot act as the owner of {} (uid {uid}): {}; run it as that user, e.g. sudo -u '#{uid}' confab-server --storage-dir {} …",
            dir.display(),
            std::io::Error::last_os_error(),
            dir.display()
        )));
    }
    Ok(Some(uid))
}

/// Runs one offline command; returns the line to print. `key_file`: the server's
/// `--encryption-key-file`, for an encrypted folder.
pub fn run(
    dir: &Path,
    command: &ServerCommand,
    cache_bytes: u64,
    key_file: Option<&Path>,
) -> Result<String, AdminError> {
    if let ServerCommand::Admin(AdminArgs {
        action: AdminAction::Restore(r),
    }) = command
    {
        return restore(dir, r, cache_bytes, key_file);
    }
    if !dir.join("db").exists() {
        return Err(AdminError::Usage(format!(
            "{} holds no Confab storage (no db/ inside); give the server's --storage-dir",
            dir.display()
        )));
    }
    let _lock = storage::prepare_folder(dir)?;
    let key = match key_file {
        Some(path) => Some(Arc::new(storage::read_key_file(path)?)),
        None => None,
    };
    let args = match command {
        ServerCommand::Check(_) => return check(dir, cache_bytes, key.as_deref()),
        ServerCommand::Admin(args) => args,
        ServerCommand::Healthcheck(_) => {
            return Err(AdminError::Usage(
                "healthcheck asks the running server; it opens no folder".into(),
            ))
        }
    };
    match &args.action {
        // Compaction rewrites the database files, so it runs with the database closed.
        AdminAction::Compact(_) => {
            let done = storage::compact(dir)?;
            let db = dir.join("db");
            // The search index keeps a deleted message's words in its segment (marked deleted
            // until a merge), and may not have applied the latest deletions yet: it goes, and
            // the server rebuilds it from the records at its next start.
            let search = if remove_search_index(dir)? {
                "\nthe search index was removed: the server rebuilds it at its next start"
            } else {
                ""
            };
            Ok(if done.replaced {
                format!(
                    "compacted {}: {} bytes before, {} bytes after{search}",
                    db.display(),
                    done.before,
                    done.after
                )
            } else {
                format!(
                    "{} is already compact ({} bytes, nothing changed since its last compaction){search}",
                    db.display(),
                    done.before
                )
            })
        }
        AdminAction::Encrypt(e) => {
            let path = e.encryption_key_file.as_deref().or(key_file).ok_or_else(|| {
                AdminError::Usage(
                    "admin encrypt needs --encryption-key-file FILE (make a key with: openssl rand -hex 32 > FILE)".into(),
                )
            })?;
            let key = Arc::new(storage::read_key_file(path)?);
            // The search index holds the words of every message in clear: it goes first
            // (an encrypted folder keeps its index in memory only).
            remove_search_index(dir)?;
            let done = storage::encrypt_folder(dir, key, cache_bytes)?;
            Ok(format!(
                "encrypted {}: {} records and {} content files sealed; the server now starts only with --encryption-key-file {}",
                dir.display(),
                done.records,
                done.files,
                path.display()
            ))
        }
        AdminAction::Backup(b) => {
            let m = storage::backup::backup_stopped_folder(dir, &b.out, cache_bytes)?;
            Ok(format!(
                "backup of {} written to {}: {} records, {} attachment files ({} bytes), schema {}{}",
                dir.display(),
                b.out.display(),
                m.records,
                m.content_files,
                m.content_bytes,
                m.schema_version,
                if m.encrypted { ", encrypted at rest (restoring needs the same key file)" } else { "" }
            ))
        }
        AdminAction::Export(x) => {
            let done = match &x.out {
                Some(path) => {
                    let file = std::fs::File::create(path).map_err(|e| {
                        AdminError::Usage(format!("cannot create {}: {e}", path.display()))
                    })?;
                    storage::export_folder(
                        dir,
                        cache_bytes,
                        key.as_deref(),
                        std::io::BufWriter::new(file),
                    )?
                }
                None => storage::export_folder(
                    dir,
                    cache_bytes,
                    key.as_deref(),
                    std::io::BufWriter::new(std::io::stdout().lock()),
                )?,
            };
            let summary = format!(
                "exported {}: {} records, {} content files",
                dir.display(),
                done.records,
                done.content_files
            );
            if x.out.is_none() {
                // Standard output holds the export alone.
                eprintln!("{summary}");
                return Ok(String::new());
            }
            Ok(summary)
        }
        AdminAction::Restore(_) => Err(AdminError::Usage(
            "restore runs before a folder is opened".into(),
        )),
        AdminAction::Reindex(_) => reindex(dir, cache_bytes, key),
        AdminAction::ResetPassword(r) => {
            with_store(dir, cache_bytes, key, |store| reset_password(store, r))
        }
        AdminAction::CreateAdmin(c) => {
            with_store(dir, cache_bytes, key, |store| create_admin(store, c))
        }
    }
}

/// `admin restore`: the folder made from the archive, then checked like `check` does.
fn restore(
    dir: &Path,
    r: &Restore,
    cache_bytes: u64,
    key_file: Option<&Path>,
) -> Result<String, AdminError> {
    let restored = if r.file.as_os_str() == "-" {
        storage::backup::restore(std::io::stdin().lock(), dir)?
    } else {
        let file = std::fs::File::open(&r.file)
            .map_err(|e| AdminError::Usage(format!("cannot open {}: {e}", r.file.display())))?;
        storage::backup::restore(std::io::BufReader::new(file), dir)?
    };
    let m = &restored.manifest;
    let made = format!(
        "restored {} from a backup of Confab {} (schema {}): {} records, {} files",
        dir.display(),
        m.confab_version,
        m.schema_version,
        m.records,
        restored.files
    );
    if m.encrypted && key_file.is_none() {
        return Ok(format!(
            "{made}; encrypted at rest: start the server (and check it) with the folder's --encryption-key-file"
        ));
    }
    if m.schema_version < storage::SCHEMA_VERSION {
        return Ok(format!(
            "{made}; the server upgrades it to schema {} at its first start",
            storage::SCHEMA_VERSION
        ));
    }
    let _lock = storage::prepare_folder(dir)?;
    let key = match key_file {
        Some(path) => Some(storage::read_key_file(path)?),
        None => None,
    };
    let checked = check(dir, cache_bytes, key.as_ref())?;
    Ok(format!("{made}; {checked}"))
}

/// Prints each problem on stdout; the summary line is the answer.
fn check(
    dir: &Path,
    cache_bytes: u64,
    key: Option<&storage::KeyMaterial>,
) -> Result<String, AdminError> {
    let report = storage::check_folder(dir, cache_bytes, key)?;
    if report.problems.is_empty() {
        return Ok(format!("{} is sound: {}", dir.display(), report.summary));
    }
    for p in &report.problems {
        println!("{p}");
    }
    Err(AdminError::Problems(format!(
        "{} problem(s) in {}: {}",
        report.problems.len(),
        dir.display(),
        report.summary
    )))
}

/// `admin reindex`: a new index built beside the old one, then put in its place.
fn reindex(
    dir: &Path,
    cache_bytes: u64,
    key: Option<Arc<storage::KeyMaterial>>,
) -> Result<String, AdminError> {
    let store = Arc::new(Store::open_with(
        dir,
        &storage::StoreOptions {
            cache_bytes,
            key,
            ..storage::StoreOptions::default()
        },
    )?);
    if store.is_encrypted() {
        return Ok(format!(
            "{} is encrypted at rest: its search index is kept in memory only and built at every start; there is nothing on disk to rebuild",
            dir.display()
        ));
    }
    let fail = |e: crate::search::SearchError| AdminError::Usage(format!("reindex failed: {e}"));
    let io = |what: &str, e: std::io::Error| AdminError::Usage(format!("reindex: {what}: {e}"));
    let started = std::time::Instant::now();
    let building = dir.join("search.rebuilding");
    if building.exists() {
        std::fs::remove_dir_all(&building).map_err(|e| io("cannot clear search.rebuilding", e))?;
    }
    let (index, _) =
        crate::search::SearchIndex::open(crate::search::Location::Dir(building.clone()))
            .map_err(fail)?;
    let count = crate::search::indexer::rebuild_now(store.clone(), index.clone()).map_err(fail)?;
    drop(index);
    let live = dir.join(crate::search::DIR);
    if live.exists() {
        std::fs::remove_dir_all(&live).map_err(|e| io("cannot remove the old index", e))?;
    }
    std::fs::rename(&building, &live).map_err(|e| io("cannot move the new index in", e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync the folder", e))?;
    let bytes = folder_bytes(&live);
    Ok(format!(
        "search index of {} rebuilt: {count} messages, {bytes} bytes, {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    ))
}

/// Bytes of the files in a folder (not recursive: an index is flat).
pub fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Opens the store, runs `action`, and flushes what it wrote.
fn with_store(
    dir: &Path,
    cache_bytes: u64,
    key: Option<Arc<storage::KeyMaterial>>,
    action: impl FnOnce(&Store) -> Result<String, AdminError>,
) -> Result<String, AdminError> {
    let store = Store::open_with(
        dir,
        &storage::StoreOptions {
            cache_bytes,
            key,
            ..storage::StoreOptions::default()
        },
    )?;
    let line = action(&store)?;
    store.flush()?;
    Ok(line)
}

fn hash(password: &str) -> Result<String, AdminError> {
    auth::hash_password(password).map_err(|e| AdminError::Usage(e.to_string()))
}

fn reset_password(store: &Store, r: &ResetPassword) -> Result<String, AdminError> {
    let user = store
        .user_by_name(&r.user)?
        .ok_or_else(|| AdminError::Usage(format!("no user named '{}'", r.user)))?;
    let (password, generated) = password_from(&r.password_file)?;
    let h = hash(&password)?;
    store.update_user(user.user_id, |u| {
        u.password_hash = h.clone();
        Ok(())
    })?;
    store.delete_sessions_of(user.user_id)?;
    Ok(if generated {
        format!("new password of '{}': {password}", user.user_name)
    } else {
        format!("password of '{}' set", user.user_name)
    })
}

fn create_admin(store: &Store, c: &CreateAdmin) -> Result<String, AdminError> {
    if !users::valid_user_name(&c.user) {
        return Err(AdminError::Usage(
            "a user name is 1-64 characters of letters, digits, '.', '_' or '-'".into(),
        ));
    }
    let (password, generated) = password_from(&c.password_file)?;
    let user = store.create_user(&c.user, &c.user, hash(&password)?, true)?;
    Ok(if generated {
        format!(
            "created administrator '{}' (id {}) with password {password}",
            user.user_name, user.user_id
        )
    } else {
        format!(
            "created administrator '{}' (id {})",
            user.user_name, user.user_id
        )
    })
}
