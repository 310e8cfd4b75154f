//! Command line of `confab-server`, compatible with the seed server's flags, and the
//! resolved settings the rest of the server uses.

use std::net::SocketAddr;
use std::path::PathBuf;

use argh::FromArgs;

/// Confab: a self-hosted team messenger server (HTTPS + WebSocket on TCP, voice on UDP, one port).
#[derive(FromArgs, Debug, Clone)]
pub struct ServerArgs {
    /// address to listen on, HOST:PORT (default [::]:7777: IPv6 and IPv4, or 0.0.0.0:7777
    /// where the machine has no IPv6)
    #[argh(option)]
    pub listen: Option<String>,
    /// host to listen on (seed-compatible; combined with --listen-port)
    #[argh(option)]
    pub listen_host: Option<String>,
    /// port to listen on (seed-compatible; combined with --listen-host)
    #[argh(option)]
    pub listen_port: Option<u16>,
    /// folder holding everything the server stores (default ./confab-data)
    #[argh(option)]
    pub storage_dir: Option<PathBuf>,
    /// same as --storage-dir (seed-compatible name)
    #[argh(option)]
    pub database_dir: Option<PathBuf>,
    /// accepted for compatibility: TLS is always on
    #[argh(switch)]
    pub use_ssl: bool,
    /// PEM certificate chain; without it a self-signed certificate is made and kept in the storage folder
    #[argh(option)]
    pub ssl_certificate: Option<PathBuf>,
    /// PEM private key for --ssl-certificate (may be encrypted)
    #[argh(option)]
    pub ssl_private_key: Option<PathBuf>,
    /// password of an encrypted --ssl-private-key (visible in `ps`: prefer
    /// --ssl-private-key-password-file)
    #[argh(option)]
    pub ssl_private_key_password: Option<String>,
    /// file holding the password of an encrypted --ssl-private-key (its first line)
    #[argh(option)]
    pub ssl_private_key_password_file: Option<PathBuf>,
    /// serve this folder of static files at / (e.g. a built web client)
    #[argh(option)]
    pub web_root: Option<PathBuf>,
    /// log level: error, warn, info, debug or trace, or TARGET=LEVEL lists such as
    /// info,confab::access=off (default info)
    #[argh(option, default = "String::from(\"info\")")]
    pub log_level: String,
    /// log lines as text (default) or json
    #[argh(option, default = "String::from(\"text\")")]
    pub log_format: String,
    /// write the log to this file instead of standard error; SIGHUP reopens it (logrotate)
    #[argh(option)]
    pub log_file: Option<PathBuf>,
    /// sled page cache in MiB (default 64)
    #[argh(option, default = "64")]
    pub cache_mb: u64,
    /// writes stop (507) while the storage folder's disk has less than this many MiB free,
    /// and resume by themselves when there is more again (default 16)
    #[argh(option, default = "16")]
    pub storage_reserve_mb: u64,
    /// group commits start at most every this many microseconds: under load, writes share
    /// a flush to the device instead of each paying for one; an isolated write is never
    /// delayed (default 4000)
    #[argh(option, default = "4000")]
    pub commit_interval_us: u64,
    /// the sync change log keeps this many newest entries; a client whose cursor is older
    /// starts over (`"resync": true`). Pruned at start and every 10 minutes (default 1000000)
    #[argh(option, default = "1_000_000")]
    pub change_log_keep: u64,
    /// HTTP worker threads (default: number of CPUs)
    #[argh(option)]
    pub workers: Option<usize>,
    /// most open connections from one client address (default 1024)
    #[argh(option, default = "1024")]
    pub max_connections_per_address: usize,
    /// most connections from one client address that have not yet made an authenticated
    /// request (default 64)
    #[argh(option, default = "64")]
    pub max_unauthenticated_per_address: usize,
    /// most simultaneous connections per worker (default 25000)
    #[argh(option, default = "25000")]
    pub max_connections: usize,
    /// largest attachment in MiB (default 4096)
    #[argh(option, default = "4096")]
    pub max_file_mb: u64,
    /// attachment storage per user in MiB (default 0: no limit)
    #[argh(option, default = "0")]
    pub quota_mb: u64,
    /// seconds between voice key renewals (default 60; the old key stays valid for a short
    /// grace period: half of this, at most 5 s)
    #[argh(option, default = "60")]
    pub voice_key_rotation: u64,
    /// threads relaying voice packets (default: the number of CPU cores)
    #[argh(option)]
    pub voice_threads: Option<usize>,
    /// threads running the rooms' actors and voice channels, each room on one of them
    /// (default: the number of CPU cores)
    #[argh(option)]
    pub room_threads: Option<usize>,
    /// a room with nothing to do for this many seconds frees its memory until its next
    /// request (default 300)
    #[argh(option, default = "300")]
    pub room_idle_secs: u64,
    /// a connected user with no activity for this many seconds is shown as away
    /// (default 600)
    #[argh(option, default = "600")]
    pub presence_away_secs: u64,
    /// every user must turn on two-factor authentication (TOTP): until they do, their
    /// sessions can only do that (and change their password, log out)
    #[argh(switch)]
    pub require_mfa: bool,
    /// a login session ends after this long unused, e.g. 30d, 12h (default 30d)
    #[argh(option, default = "String::from(\"30d\")")]
    pub session_idle: String,
    /// a login session ends this long after its login however much it is used (default 180d)
    #[argh(option, default = "String::from(\"180d\")")]
    pub session_max: String,
    /// a reverse proxy in front of the server (an address or CIDR, repeatable): its
    /// X-Forwarded-For header then names the client, for login throttling and the logs
    #[argh(option)]
    pub trusted_proxy: Vec<String>,
    /// another origin allowed to use the API with a member's session cookie (e.g.
    /// https://chat.example.com when a proxy rewrites the Host header; repeatable)
    #[argh(option)]
    pub allowed_origin: Vec<String>,
    /// encrypt the storage folder at rest with the key in this file: 64 hex digits (make
    /// one with `openssl rand -hex 32`) or a passphrase; needed at every start once used
    #[argh(option)]
    pub encryption_key_file: Option<PathBuf>,
    /// serve Prometheus metrics at http://ADDR/metrics (plain HTTP: give a loopback or
    /// private address, e.g. 127.0.0.1:9477)
    #[argh(option)]
    pub metrics_listen: Option<String>,
    /// push through Firebase Cloud Messaging with this service-account JSON file (its
    /// project_id and token_uri are used as they stand)
    #[argh(option)]
    pub push_fcm_service_account: Option<PathBuf>,
    /// FCM's base URL (default https://fcm.googleapis.com)
    #[argh(option)]
    pub push_fcm_url: Option<String>,
    /// push to iOS through APNs with this .p8 key (with --push-apns-key-id,
    /// --push-apns-team-id and --push-apns-topic)
    #[argh(option)]
    pub push_apns_key: Option<PathBuf>,
    /// the APNs key's id (10 characters, from Apple's developer account)
    #[argh(option)]
    pub push_apns_key_id: Option<String>,
    /// the Apple developer team id
    #[argh(option)]
    pub push_apns_team_id: Option<String>,
    /// the iOS app's bundle id (apns-topic) for devices that register without an appId
    #[argh(option)]
    pub push_apns_topic: Option<String>,
    /// APNs base URL (default https://api.push.apple.com; sandbox devices use
    /// https://api.sandbox.push.apple.com unless this is given)
    #[argh(option)]
    pub push_apns_url: Option<String>,
    /// send FCM and APNs notifications to this relay URL instead (apps published by
    /// someone else)
    #[argh(option)]
    pub push_relay_url: Option<String>,
    /// an extra CA certificate (PEM) the push HTTPS clients trust
    #[argh(option)]
    pub push_ca_file: Option<PathBuf>,
    /// put the message text in notifications (by default only the room, the sender and a
    /// count leave the server)
    #[argh(switch)]
    pub push_include_content: bool,
    /// a user's notifications within this many ms become one, with a count (default 1000)
    #[argh(option, default = "1000")]
    pub push_coalesce_ms: u64,
    /// a notification not delivered within this many seconds is dropped (default 86400)
    #[argh(option, default = "86400")]
    pub push_ttl_secs: u64,
    /// notifications kept waiting at most (the oldest are dropped beyond; default 100000)
    #[argh(option, default = "100000")]
    pub push_queue_max: u64,
    /// read options from this TOML file (keys are these flags without the dashes);
    /// CONFAB_<OPTION> variables override it, and flags override both (also CONFAB_CONFIG)
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// print the version (and the storage schema it writes) and exit
    #[argh(switch)]
    pub version: bool,
    #[argh(subcommand)]
    pub command: Option<crate::admin::ServerCommand>,
}

/// This build's version (recorded in the storage folders it writes and in backups).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `confab-server 0.1.0 (storage schema 3)`.
pub fn version_line(binary: &str) -> String {
    format!(
        "{binary} {VERSION} (storage schema {})",
        crate::storage::SCHEMA_VERSION
    )
}

/// Checks `--log-level`: comma-separated levels (`error`, `warn`, `info`, `debug`,
/// `trace`, `off`) or `TARGET=LEVEL` directives. A typo is an error rather than a filter
/// that silences the server (tracing would read `verbose` as a target name).
pub fn check_log_level(value: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let level_ok = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    for directive in value.split(',') {
        let ok = match directive.split_once('=') {
            Some((target, level)) => !target.trim().is_empty() && level_ok(level),
            None => level_ok(directive),
        };
        if !ok {
            return Err(format!(
                "--log-level: '{directive}' is not a level (error, warn, info, debug, trace, off) \
                 or TARGET=LEVEL (e.g. info,confab::audit=debug)"
            ));
        }
    }
    Ok(())
}

/// A duration flag (`30d`, `12h`, `90s`) in milliseconds, at least one second.
fn duration_ms(flag: &str, value: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(value.trim())
        .map_err(|e| format!("{flag}: '{value}' is not a duration like 30d, 12h or 90s ({e})"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("{flag}: '{value}' is shorter than a second"));
    }
    Ok(d.as_millis().min(u64::MAX as u128) as u64)
}

/// `10.0.0.0/8`, `fd00::/8`, or a single address (`10.0.0.5`, as a /32 or /128).
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Rewrites `-h` and `-?` into `--help`, which is what argh understands.
pub fn normalize_help_flags(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .map(|a| {
            if a == "-h" || a == "-?" {
                "--help".to_string()
            } else {
                a
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where to listen when `listen` cannot be bound for want of IPv6 (the default only).
    pub listen_fallback: Option<SocketAddr>,
    pub listen_host: String,
    pub storage_dir: PathBuf,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_key_password: Option<String>,
    pub web_root: Option<PathBuf>,
    pub cache_bytes: u64,
    pub storage_reserve_bytes: u64,
    pub commit_interval: std::time::Duration,
    pub workers: usize,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub max_unauthenticated_per_address: usize,
    pub limits: Limits,
    pub voice_rotation: std::time::Duration,
    pub voice_grace: std::time::Duration,
    pub voice_threads: usize,
    pub room_threads: usize,
    pub room_idle: std::time::Duration,
    pub presence_away_after: std::time::Duration,
    pub change_log_keep: u64,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub allowed_origins: Vec<String>,
    pub encryption_key_file: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub push: crate::push::PushConfig,
}

/// Bounds on what a client may send or make the server hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest JSON request body.
    pub max_json_body: usize,
    /// Largest attachment file.
    pub max_file_bytes: u64,
    /// Attachment bytes one user may have stored (0: no limit).
    pub user_quota_bytes: u64,
    /// Longest message text, in bytes.
    pub max_message_bytes: usize,
    /// Outbound events queued for one event connection before it is dropped as too slow.
    pub session_queue: usize,
    /// Largest WebSocket frame a client may send.
    pub max_ws_frame: usize,
    /// Failed logins allowed per user name and per address in one window.
    pub login_failures: u32,
    pub login_window_secs: u64,
    /// When login sessions end by themselves.
    pub session_lifetime: crate::storage::SessionLifetime,
    /// Users must enrol in two-factor authentication (`--require-mfa`).
    pub require_mfa: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_json_body: 256 * 1024,
            max_file_bytes: 4 << 30,
            user_quota_bytes: 0,
            max_message_bytes: 64 * 1024,
            session_queue: 256,
            max_ws_frame: 64 * 1024,
            login_failures: 5,
            login_window_secs: 60,
            session_lifetime: crate::storage::SessionLifetime {
                idle_ms: 30 * 24 * 3600 * 1000,
                max_ms: 180 * 24 * 3600 * 1000,
            },
            require_mfa: false,
        }
    }
}

impl ServerArgs {
    pub fn resolve(&self) -> Result<ServerConfig, String> {
        let (mut host, mut port) = ("::".to_string(), 7777u16);
        let default_host = self.listen.is_none() && self.listen_host.is_none();
        if let Some(l) = &self.listen {
            let (h, p) = l
                .rsplit_once(':')
                .ok_or_else(|| format!("--listen expects HOST:PORT, got '{l}'"))?;
            host = h.trim_matches(|c| c == '[' || c == ']').to_string();
            port = p
                .parse()
                .map_err(|_| format!("--listen: '{p}' is not a port number"))?;
        }
        if let Some(h) = &self.listen_host {
            host = h.trim_matches(|c| c == '[' || c == ']').to_string();
        }
        if let Some(p) = self.listen_port {
            port = p;
        }
        let ip: std::net::IpAddr = match host.parse() {
            Ok(ip) => ip,
            Err(_) if host == "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
            Err(_) => {
                use std::net::ToSocketAddrs;
                (host.as_str(), port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .map(|a| a.ip())
                    .ok_or_else(|| format!("cannot resolve listen host '{host}'"))?
            }
        };
        if self.listen.is_some() && (self.listen_host.is_some() || self.listen_port.is_some()) {
            let other = if self.listen_port.is_some() {
                "--listen-port"
            } else {
                "--listen-host"
            };
            return Err(format!(
                "--listen and {other} both say where to listen: give --listen HOST:PORT, or \
                 --listen-host and --listen-port"
            ));
        }
        if self.storage_dir.is_some() && self.database_dir.is_some() {
            return Err(
                "--storage-dir and --database-dir name the same folder: give one of them".into(),
            );
        }
        let tls_key_password = match (
            &self.ssl_private_key_password,
            &self.ssl_private_key_password_file,
        ) {
            (Some(_), Some(_)) => {
                return Err(
                    "--ssl-private-key-password and --ssl-private-key-password-file \
                            both give the key's password: give one of them"
                        .into(),
                )
            }
            (Some(p), None) => Some(p.clone()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| {
                        format!(
                            "--ssl-private-key-password-file: cannot read {}: {e}",
                            file.display()
                        )
                    })?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            (None, None) => None,
        };
        if self.ssl_certificate.is_some() != self.ssl_private_key.is_some() {
            return Err("--ssl-certificate and --ssl-private-key must be given together".into());
        }
        let storage_dir = self
            .storage_dir
            .clone()
            .or_else(|| self.database_dir.clone())
            .unwrap_or_else(|| PathBuf::from("./confab-data"));
        let workers = self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        let trusted_proxies = self
            .trusted_proxy
            .iter()
            .map(|p| {
                parse_net(p).ok_or_else(|| {
                    format!("--trusted-proxy: '{p}' is not an address or CIDR (e.g. 10.0.0.0/8)")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allowed_origins = self
            .allowed_origin
            .iter()
            .map(|o| {
                let o = o.trim().trim_end_matches('/');
                match o.split_once("://") {
                    Some(("https" | "http", host)) if !host.is_empty() && !host.contains('/') => {
                        Ok(o.to_string())
                    }
                    _ => Err(format!(
                        "--allowed-origin: '{o}' is not an origin like https://chat.example.com"
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let push = crate::push::PushConfig::from_args(self)?;
        Ok(ServerConfig {
            push,
            trusted_proxies,
            allowed_origins,
            encryption_key_file: self.encryption_key_file.clone(),
            metrics_listen: match &self.metrics_listen {
                Some(a) => Some(a.trim().parse().map_err(|_| {
                    format!("--metrics-listen: '{a}' is not an address like 127.0.0.1:9477")
                })?),
                None => None,
            },
            listen: SocketAddr::new(ip, port),
            listen_host: host,
            // The default listens on both families; a machine without IPv6 gets IPv4.
            listen_fallback: default_host
                .then(|| SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port)),
            storage_dir,
            tls_cert: self.ssl_certificate.clone(),
            tls_key: self.ssl_private_key.clone(),
            tls_key_password,
            web_root: self.web_root.clone(),
            cache_bytes: self.cache_mb.max(1) * 1024 * 1024,
            storage_reserve_bytes: self.storage_reserve_mb * 1024 * 1024,
            commit_interval: std::time::Duration::from_micros(
                self.commit_interval_us.min(1_000_000),
            ),
            workers: workers.max(1),
            max_connections: self.max_connections.max(1),
            max_connections_per_address: self.max_connections_per_address.max(1),
            max_unauthenticated_per_address: self.max_unauthenticated_per_address.max(1),
            voice_rotation: std::time::Duration::from_secs(self.voice_key_rotation.max(1)),
            voice_grace: std::time::Duration::from_millis(
                (self.voice_key_rotation.max(1) * 500).min(5000),
            ),
            voice_threads: self.voice_threads.unwrap_or(workers).clamp(1, 64),
            room_threads: self.room_threads.unwrap_or(workers).clamp(1, 64),
            change_log_keep: self.change_log_keep.max(1),
            room_idle: std::time::Duration::from_secs(self.room_idle_secs.max(1)),
            presence_away_after: std::time::Duration::from_secs(self.presence_away_secs.max(1)),
            limits: Limits {
                max_file_bytes: self.max_file_mb.max(1) * 1024 * 1024,
                user_quota_bytes: self.quota_mb * 1024 * 1024,
                session_lifetime: crate::storage::SessionLifetime {
                    idle_ms: duration_ms("--session-idle", &self.session_idle)?,
                    max_ms: duration_ms("--session-max", &self.session_max)?,
                },
                require_mfa: self.require_mfa,
                ..Limits::default()
            },
        })
    }
}
