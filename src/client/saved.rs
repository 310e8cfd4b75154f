//! Login sessions the CLI keeps between runs, so ten `confab` commands are one login
//! session on the server, not ten, and a password is needed only when the session has
//! ended. One file (`sessions`, beside `known_servers`, or `CONFAB_SESSIONS`), mode 0600,
//! replaced atomically: `server user session-id user-id` per line.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ClientError;

pub struct SavedSessions {
    path: PathBuf,
}

/// A kept session: its id (a secret) and its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub session_id: String,
    pub user_id: u64,
}

impl SavedSessions {
    /// `CONFAB_SESSIONS`, or `sessions` in the folder of the known-servers file.
    pub fn default_path(known_servers: &Path) -> PathBuf {
        if let Ok(p) = std::env::var("CONFAB_SESSIONS") {
            return PathBuf::from(p);
        }
        known_servers.with_file_name("sessions")
    }

    pub fn at(path: PathBuf) -> Self {
        SavedSessions { path }
    }

    fn read(&self) -> BTreeMap<(String, String), Saved> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (server, user, sid, uid) = (f.next()?, f.next()?, f.next()?, f.next()?);
                Some((
                    (server.to_string(), user.to_lowercase()),
                    Saved {
                        session_id: sid.to_string(),
                        user_id: uid.parse().ok()?,
                    },
                ))
            })
            .collect()
    }

    fn write(&self, all: &BTreeMap<(String, String), Saved>) -> Result<(), ClientError> {
        let fail = |e: std::io::Error| {
            ClientError::Usage(format!(
                "cannot save the session in {}: {e}",
                self.path.display()
            ))
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        // Per process: two `confab` commands at once must not share a temporary file. (The
        // later rename wins; a session one of them kept may be lost, and it logs in again.)
        let tmp = self
            .path
            .with_extension(format!("tmp.{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        // A file left by an older version may have a wider mode: narrow it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
        for ((server, user), s) in all {
            writeln!(f, "{server} {user} {} {}", s.session_id, s.user_id).map_err(fail)?;
        }
        f.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, &self.path).map_err(fail)
    }

    pub fn get(&self, server: &str, user: &str) -> Option<Saved> {
        self.read()
            .remove(&(server.to_string(), user.to_lowercase()))
    }

    pub fn put(&self, server: &str, user: &str, saved: Saved) -> Result<(), ClientError> {
        let mut all = self.read();
        all.insert((server.to_string(), user.to_lowercase()), saved);
        self.write(&all)
    }

    pub fn forget(&self, server: &str, user: &str) -> Result<(), ClientError> {
        let mut all = self.read();
        if all
            .remove(&(server.to_string(), user.to_lowercase()))
            .is_some()
        {
            self.write(&all)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_kept_per_server_and_user_in_a_private_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SavedSessions::at(dir.path().join("conf/sessions"));
        assert_eq!(s.get("h:1", "admin"), None);
        let a = Saved {
            session_id: "abc".into(),
            user_id: 1,
        };
        s.put("h:1", "Admin", a.clone()).expect("put");
        s.put(
            "h:2",
            "admin",
            Saved {
                session_id: "def".into(),
                user_id: 1,
            },
        )
        .expect("put");
        assert_eq!(s.get("h:1", "admin"), Some(a));
        let mode = std::fs::metadata(dir.path().join("conf/sessions"))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        s.forget("h:1", "admin").expect("forget");
        assert_eq!(s.get("h:1", "admin"), None);
        assert!(s.get("h:2", "admin").is_some());
    }
}
