//! Helpers shared by the integration tests: start the real `confab-server` binary on a free
//! loopback port with a temporary storage folder, log in over real TLS, talk raw bytes.
#![allow(dead_code)]

pub mod fake_push;
pub mod team;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab::client::{Client, Trust};

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_confab-server");

/// The server binary the tests start: this build's, or another one named by
/// `CONFAB_TEST_SERVER_BIN` (to check that a regression test fails on an older build).
pub fn server_bin() -> String {
    std::env::var("CONFAB_TEST_SERVER_BIN").unwrap_or_else(|_| SERVER_BIN.to_string())
}
pub const CLI_BIN: &str = env!("CARGO_BIN_EXE_confab");

pub struct TestServer {
    pub child: Option<Child>,
    pub addr: String,
    pub dir: PathBuf,
    pub fingerprint: String,
    pub log: Arc<Mutex<String>>,
    _tmp: Option<tempfile::TempDir>,
}

/// What a server start that is expected to fail printed.
pub struct FailedStart {
    pub status: ExitStatus,
    pub stderr: String,
}

impl TestServer {
    /// A server on a fresh temporary storage folder.
    pub fn start() -> TestServer {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("storage");
        let mut s = Self::start_in(&dir, &[]);
        s._tmp = Some(tmp);
        s
    }

    /// A server on `dir` with extra arguments; panics if it does not come up.
    pub fn start_in(dir: &Path, extra: &[&str]) -> TestServer {
        Self::start_in_env(dir, extra, &[])
    }

    /// [`TestServer::start_in`] with environment variables set for the server.
    pub fn start_in_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> TestServer {
        let mut cmd = Command::new(server_bin());
        cmd.args(["--listen", "127.0.0.1:0", "--storage-dir"])
            .arg(dir)
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1");
        let mut child = cmd.spawn().expect("spawn confab-server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log_w = log.clone();
        std::thread::spawn(move || {
            let mut addr = None;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on https://").nth(1) {
                    addr = rest.split_whitespace().next().map(str::to_string);
                }
                if let Some(fp) = line.split("SHA-256 fingerprint ").nth(1) {
                    let _ = tx.send((addr.clone(), fp.trim().to_string()));
                }
                if let Ok(mut l) = log_w.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((Some(addr), fingerprint)) => TestServer {
                child: Some(child),
                addr,
                dir: dir.to_path_buf(),
                fingerprint,
                log,
                _tmp: None,
            },
            _ => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "server did not start (exit {status:?}):\n{}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
        }
    }

    /// Runs the server binary expecting it to exit by itself (a start-up error).
    pub fn start_expect_failure(args: &[&str], uid: Option<u32>) -> FailedStart {
        Self::run_expect_failure(Path::new(SERVER_BIN), args, uid)
    }

    /// Like [`Self::start_expect_failure`] with another copy of the binary (one an
    /// unprivileged user can reach).
    pub fn run_expect_failure(bin: &Path, args: &[&str], uid: Option<u32>) -> FailedStart {
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).env("NO_COLOR", "1");
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let mut stderr = String::new();
                let _ = child
                    .stderr
                    .take()
                    .map(|mut s| s.read_to_string(&mut stderr));
                return FailedStart { status, stderr };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server kept running; expected it to fail with {args:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.dir.join("initial-admin-password"))
            .expect("initial-admin-password")
            .trim()
            .to_string()
    }

    pub fn client(&self) -> Client {
        Client::new(&self.addr, Trust::Fingerprint(self.fingerprint.clone())).expect("client")
    }

    pub async fn login(&self, user: &str, password: &str) -> Client {
        let mut c = self.client();
        c.login(user, password).await.expect("login");
        c
    }

    pub async fn admin(&self) -> Client {
        self.login("admin", &self.admin_password()).await
    }

    /// Creates a user with a known password and returns a logged-in client for it.
    pub async fn user(&self, admin: &mut Client, name: &str) -> (u64, Client) {
        let password = format!("{name}-password-123");
        let (id, _) = admin
            .create_user(name, Some(&password), false)
            .await
            .expect("create user");
        (id, self.login(name, &password).await)
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_timeout(&mut child, Duration::from_secs(20))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().map(|c| c.id()).unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `request` over TLS (no certificate check) and returns the whole response text.
pub fn raw_https(addr: &str, request: &[u8]) -> String {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut tls = tls_over(tcp);
    tls.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

/// A TLS client session over `tcp`, without certificate checks.
pub fn tls_over(tcp: TcpStream) -> openssl::ssl::SslStream<TcpStream> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut b = SslConnector::builder(SslMethod::tls_client()).expect("ssl");
    b.set_verify(SslVerifyMode::NONE);
    b.build().connect("localhost", tcp).expect("tls handshake")
}

/// A raw HTTP/1.1 request with `Connection: close`.
pub fn http_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The JSON body of a raw response.
pub fn body_json(response: &str) -> serde_json::Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {response}"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The HTTP status of an API error (panics on success or a transport error).
pub fn status_of<T: std::fmt::Debug>(r: Result<T, confab::client::ClientError>) -> u16 {
    r.expect_err("expected an error")
        .status()
        .expect("an API error")
}

/// The `confab` command line as `user` (password `USER-password-123`, as
/// [`TestServer::user`] makes them) against `server`, with `home` as its HOME: its
/// standard output; panics if it fails.
pub fn run_cli(server: &TestServer, user: &str, home: &Path, args: &[&str]) -> String {
    let out = Command::new(CLI_BIN)
        .args([
            "--server",
            &server.addr,
            "--fingerprint",
            &server.fingerprint,
        ])
        .args(["--user", user])
        .args(args)
        .env("CONFAB_PASSWORD", format!("{user}-password-123"))
        .env("HOME", home)
        .output()
        .expect("run confab");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `tests/browser`, with its npm packages (playwright-core, axe-core) installed.
pub fn browser_tools() -> PathBuf {
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let installed = ["playwright-core", "axe-core"]
        .iter()
        .all(|p| browser.join("node_modules").join(p).exists());
    if !installed {
        // Pinned by tests/browser/package-lock.json.
        let npm = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&browser)
            .status()
            .expect("run npm (apt-get install nodejs npm chromium)");
        assert!(npm.success(), "npm ci --prefix tests/browser failed");
    }
    browser
}

/// Runs `tests/browser/SCRIPT CONFIG` under node (from `browser_tools()`); the one JSON
/// line of findings it prints (also shown on stderr, for `--nocapture`).
pub fn run_browser_script(
    browser: &Path,
    script: &str,
    config: &serde_json::Value,
) -> serde_json::Value {
    let run = Command::new("node")
        .arg(browser.join(script))
        .arg(config.to_string())
        .output()
        .expect("run node (install nodejs)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "{script}: {stdout}\n{}",
            String::from_utf8_lossy(&run.stderr)
        )
    });
    eprintln!("{script}: {out}");
    out
}

/// Posts a message with any JSON body (`content`, `messageType`, …); its id.
pub async fn post_json(c: &mut Client, room: u64, body: serde_json::Value) -> u64 {
    let (status, v) = c
        .request_raw(
            awc::http::Method::POST,
            &format!("/api/v1/rooms/{room}/messages"),
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    v["message"]["messageId"].as_u64().unwrap()
}

/// The next event of type `kind` within `within`, skipping others.
pub async fn expect_event_within(
    events: &mut confab::client::EventStream,
    kind: &str,
    within: Duration,
) -> confab::model::ServerEvent {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = events
            .next_within(left)
            .await
            .expect("event stream")
            .unwrap_or_else(|| panic!("no {kind} event within {within:?}"));
        if ev.event_type == kind {
            return ev;
        }
    }
}

/// The next event of type `kind` within 5 s.
pub async fn expect_event(
    events: &mut confab::client::EventStream,
    kind: &str,
) -> confab::model::ServerEvent {
    expect_event_within(events, kind, Duration::from_secs(5)).await
}

/// No event at all for `ms` milliseconds.
pub async fn expect_silence(events: &mut confab::client::EventStream, ms: u64) {
    if let Some(ev) = events
        .next_within(Duration::from_millis(ms))
        .await
        .expect("stream")
    {
        panic!("expected no event, got {ev:?}");
    }
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Whether `needle` is anywhere in the files below `dir`: as plain bytes, or inside any
/// zstd frame (sled compresses its log, so a plain search of the database would find
/// nothing even where the text is still stored). Every frame magic is tried, so a frame
/// inside a record or a torn one at a segment's end is read as far as it goes.
pub fn contains_bytes_decoded(dir: &Path, needle: &[u8]) -> bool {
    use std::io::Read;
    const MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
    let has = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle);
    files_under(dir).iter().any(|p| {
        let Ok(bytes) = std::fs::read(p) else {
            return false;
        };
        if has(&bytes) {
            return true;
        }
        (0..bytes.len().saturating_sub(4))
            .filter(|&i| bytes[i..i + 4] == MAGIC)
            .any(|i| {
                let mut out = Vec::new();
                if let Ok(d) = zstd::stream::read::Decoder::new(&bytes[i..]) {
                    let _ = d.single_frame().take(64 << 20).read_to_end(&mut out);
                }
                has(&out)
            })
    })
}

/// `confab-server --storage-dir DIR admin compact` with the server stopped: its one line of
/// output; panics if it fails.
pub fn run_compact(dir: &Path) -> String {
    let out = Command::new(server_bin())
        .arg("--storage-dir")
        .arg(dir)
        .args(["admin", "compact"])
        .output()
        .expect("run admin compact");
    assert!(
        out.status.success(),
        "compact failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `confab-server --storage-dir DIR check`: whether it found the folder sound, and what it
/// printed.
pub fn run_check(dir: &Path) -> (bool, String) {
    let out = Command::new(server_bin())
        .arg("--storage-dir")
        .arg(dir)
        .arg("check")
        .output()
        .expect("run check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The exact number of live connections whose one end is `local` and other end `remote`
/// (`/proc/net/tcp`, ports only: the tests run on loopback), in state ESTABLISHED.
pub fn established(local_port: u16, remote_port: u16) -> usize {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let port = |a: &str| {
                a.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if port(f[1]) == Some(local_port) && port(f[2]) == Some(remote_port) && f[3] == "01" {
                n += 1;
            }
        }
    }
    n
}

/// A tmpfs of `mb` MiB mounted for a test (needs root); unmounted when dropped.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` when this process may not mount (not root): the caller reports the skip.
    pub fn mount(mb: u64) -> Option<Tmpfs> {
        if !is_root() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs failed although running as root"
        );
        Some(Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }

    /// Fills the file system to the last byte (a file named `filler`).
    pub fn fill(&self) -> PathBuf {
        let path = self.path.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 1 << 20];
        while f.write_all(&block).is_ok() {}
        let mut small = vec![0u8; 4096];
        while f.write_all(&small).is_ok() {}
        small.truncate(1);
        while f.write_all(&small).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A PNG image of this size, with a pattern its encoder keeps.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}
