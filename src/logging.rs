//! The server's log: human-readable text or JSON lines (`--log-format`), on standard error or
//! in a file (`--log-file`) that SIGHUP reopens, so logrotate can move it away.
//!
//! Targets an operator filters on with `--log-level`: `confab::audit` (security events:
//! logins, throttling, account and administrator actions), `confab::access` (one line per
//! HTTP request). `sled` is off unless named.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriter};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("--log-format: '{other}' is not text or json")),
        }
    }
}

/// A log file that can be reopened under its name (after logrotate moved it).
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    pub fn open(path: &Path) -> io::Result<Arc<LogFile>> {
        Ok(Arc::new(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(open_append(path)?),
        }))
    }

    /// Opens the file under its name again; later lines go there.
    pub fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

/// One event's write, holding the file for its duration (lines never interleave).
pub struct LogFileWriter<'a>(MutexGuard<'a, File>);

impl Write for LogFileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The writer tracing is given for a log file.
#[derive(Clone)]
struct FileMaker(Arc<LogFile>);

impl<'a> MakeWriter<'a> for FileMaker {
    type Writer = LogFileWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(self.0.file.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The log file in use, for [`reopen`].
static LOG_FILE: OnceLock<Arc<LogFile>> = OnceLock::new();

/// SIGHUP: reopens `--log-file` (nothing to do when logging to standard error).
pub fn reopen() -> io::Result<()> {
    match LOG_FILE.get() {
        Some(f) => f.reopen(),
        None => Ok(()),
    }
}

/// Sets up the process's log. `level` was checked by `config::check_log_level`.
pub fn init(level: &str, format: LogFormat, file: Option<&Path>) -> Result<(), String> {
    // sled's own lines are off unless asked for: Confab reports storage faults itself, once
    // per change, where sled repeats them every second.
    let level = if level.contains("sled") {
        level.to_string()
    } else {
        format!("{level},sled=off")
    };
    let filter =
        tracing_subscriber::EnvFilter::try_new(&level).map_err(|e| format!("--log-level: {e}"))?;
    let (writer, ansi) = match file {
        Some(path) => {
            let log = LogFile::open(path)
                .map_err(|e| format!("--log-file: cannot open {}: {e}", path.display()))?;
            let _ = LOG_FILE.set(log.clone());
            (BoxMakeWriter::new(FileMaker(log)), false)
        }
        None => (
            BoxMakeWriter::new(io::stderr),
            std::io::IsTerminal::is_terminal(&io::stderr()),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // A closed standard error (the reading end of a pipe gone) must not matter: by
        // default tracing reports a failed write with `eprintln!`, which panics there and
        // took the shutdown task down with it (SIGTERM then never stopped the server).
        .log_internal_errors(false);
    let installed = match format {
        // Text: one short line per event, without the target (as the server always logged).
        LogFormat::Text => builder.with_target(false).with_ansi(ansi).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    installed.map_err(|e| format!("cannot set up the log: {e}"))
}
