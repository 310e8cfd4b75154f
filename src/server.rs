//! Server start-up and shutdown: take the storage folder, open storage, make the first
//! administrator, set up TLS, start the actors and the HTTPS listener, and stop cleanly on
//! SIGINT/SIGTERM (close event streams with a close frame, stop accepting, flush, exit 0).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Supervisor};
use actix_web::{middleware, web, App};

use crate::actors::registry::RoomAddrs;
use crate::actors::voice::{KeyRotation, VoiceConfig, VoiceHub};
use crate::actors::{Directory, Registry};
use crate::api::{self, auth, AppState, VoiceHandle};
use crate::config::ServerConfig;
use crate::storage::{self, StorageError, Store};
use crate::tls;
use crate::voice::Router;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// The TCP listener: address reuse (a restart does not wait for old connections' TIME_WAIT)
/// and a deep accept queue.
fn bind_tcp(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // `[::]` takes IPv4 clients too (as ::ffff:a.b.c.d), whatever the system default.
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Creates the administrator on an empty storage folder; its random password goes to
/// `<storage>/initial-admin-password` (mode 0600) and to the log, once.
fn ensure_admin(store: &Store, dir: &Path) -> Result<(), StartError> {
    if store.user_count() > 0 {
        return Ok(());
    }
    let password = api::users::generate_password();
    let hash = auth::hash_password(&password).map_err(|e| StartError::Other(e.to_string()))?;
    store.create_user("admin", "Administrator", hash, true)?;
    store.flush()?;
    let path = dir.join("initial-admin-password");
    write_secret(&path, &format!("{password}\n"))
        .map_err(|e| StartError::Other(format!("cannot write {}: {e}", path.display())))?;
    // The password itself stays out of the log (logs are kept and shipped elsewhere).
    tracing::info!(
        "created the administrator 'admin'; its password is in {} (readable only by this user)",
        path.display()
    );
    Ok(())
}

fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|s| !s.is_empty())
}

/// Warns (once, at start) when the storage folder can be read by other users: it holds
/// every message (in clear unless encrypted at rest) and the password hashes.
fn warn_if_shared(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the storage folder {} is open to other users (mode {mode:03o}): run chmod 700 {}",
                dir.display(),
                dir.display()
            );
        }
    }
}

/// The Prometheus listener (`--metrics-listen`): plain HTTP, one route, one worker.
fn start_metrics(
    addr: std::net::SocketAddr,
    state: web::Data<api::AppState>,
    budget: Arc<crate::listener::Budget>,
) -> Result<actix_web::dev::ServerHandle, StartError> {
    let source = web::Data::new(api::health::MetricsSource {
        state,
        budget,
        metrics: crate::metrics::Metrics::new(),
    });
    let server = actix_web::HttpServer::new(move || {
        App::new()
            .app_data(source.clone())
            .route("/metrics", web::get().to(api::health::metrics))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)
    .map_err(|source| StartError::Bind {
        addr: format!("{addr} (--metrics-listen)"),
        source,
    })?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    tracing::info!("metrics on http://{addr}/metrics");
    Ok(handle)
}

/// Runs the server until a signal stops it. Must be called inside an actix system.
pub async fn run(config: ServerConfig) -> Result<(), StartError> {
    // Take over SIGINT/SIGTERM before anything is announced: a signal that arrives right
    // after "listening on" must stop the server cleanly, not kill it.
    let mut signals = ShutdownSignals::install()?;
    tracing::info!("{}", crate::config::version_line("confab-server"));
    let lock = storage::prepare_folder(&config.storage_dir)?;
    warn_if_shared(&config.storage_dir);
    let key = match &config.encryption_key_file {
        Some(path) => Some(Arc::new(storage::read_key_file(path)?)),
        None => None,
    };
    let store = Arc::new(Store::open_with(
        &config.storage_dir,
        &storage::StoreOptions {
            cache_bytes: config.cache_bytes,
            reserve_bytes: config.storage_reserve_bytes,
            commit_interval: config.commit_interval,
            key,
        },
    )?);
    ensure_admin(&store, &config.storage_dir)?;

    let load_identity = {
        let config = config.clone();
        move || match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => tls::load(cert, key, config.tls_key_password.as_deref()),
            (None, None) => {
                let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
                hosts.extend(host_name());
                hosts.push(config.listen_host.clone());
                tls::load_or_generate(&config.storage_dir, &hosts)
            }
            _ => Err(tls::TlsError::HalfPair),
        }
    };
    let identity = load_identity()?;
    let (acceptor, live_certificate) = tls::LiveCertificate::start(&identity)?;
    let not_after = identity.not_after();
    if let Some((at, text)) = &not_after {
        let left = at - (crate::now_ms() / 1000) as i64;
        if left <= 0 {
            tracing::warn!(
                "the TLS certificate {} EXPIRED on {text}: clients that check it will refuse to connect; renew it",
                identity.source
            );
        } else if left < 30 * 86_400 {
            tracing::warn!(
                "the TLS certificate {} expires in {} days ({text}); renew it",
                identity.source,
                left / 86_400
            );
        }
    }

    // Rooms (and voice channels) run on a pool of arbiters, one per core, by room id.
    let arbiters: Vec<actix::ArbiterHandle> = (0..config.room_threads)
        .map(|_| actix_rt::Arbiter::new().handle())
        .collect();
    let directory = Arc::new(Directory::default());
    let rooms = Arc::new(RoomAddrs::default());
    let (registry_store, registry_directory, registry_rooms, registry_arbiters) = (
        store.clone(),
        directory.clone(),
        rooms.clone(),
        arbiters.clone(),
    );
    let room_idle = config.room_idle;
    let registry = Supervisor::start(move |_| {
        Registry::new(
            registry_store.clone(),
            registry_directory.clone(),
            registry_rooms.clone(),
            registry_arbiters.clone(),
            room_idle,
        )
    });
    // Voice: the relay and its actors exist before the listener; the UDP socket is bound
    // on the listener's port once that is known.
    let router = Router::new();
    let udp_port = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let voice_config = VoiceConfig {
        udp_port: udp_port.clone(),
        rotation: config.voice_rotation,
        grace: config.voice_grace,
    };
    let hub = VoiceHub::new(
        store.clone(),
        directory.clone(),
        router.clone(),
        voice_config,
        arbiters.clone(),
    )
    .start();
    let rotation_hub = hub.clone();
    let period = config.voice_rotation;
    Supervisor::start(move |_| KeyRotation {
        hub: rotation_hub,
        period,
    });
    // Push: the VAPID key (made on first start) and the providers, checked here so a bad
    // credential stops the start with one line; then the dispatcher on its own arbiter.
    let vapid = crate::push::webpush::Vapid::load_or_create(&config.storage_dir)
        .map_err(StartError::Other)?;
    let vapid_public_key = vapid.public_key.clone();
    crate::push::dispatcher::Providers::build(&config.push, vapid).map_err(StartError::Other)?;
    for user in store.users_with_devices()? {
        directory.set_pushable(user, true);
    }
    let push_arbiter = actix_rt::Arbiter::new().handle();
    let (push_store, push_directory, push_config, push_dir) = (
        store.clone(),
        directory.clone(),
        config.push.clone(),
        config.storage_dir.clone(),
    );
    Supervisor::start_in_arbiter(&push_arbiter, move |_| {
        crate::push::dispatcher::PushDispatcher::new(
            push_store.clone(),
            push_directory.clone(),
            push_config.clone(),
            push_dir.clone(),
        )
    });
    // Search: the index opened (or made empty, to be rebuilt) before the listener, the
    // indexer on its own arbiter. An index that cannot be opened at all leaves search off,
    // not the server down.
    let leftover = config.storage_dir.join(crate::search::DIR);
    if store.is_encrypted() && leftover.exists() {
        // An index written before the folder was encrypted holds its words in clear.
        match std::fs::remove_dir_all(&leftover) {
            Ok(()) => tracing::warn!(
                "removed {}: an on-disk search index has no place in an encrypted folder (the index is kept in memory)",
                leftover.display()
            ),
            Err(e) => tracing::error!("cannot remove {}: {e}", leftover.display()),
        }
    }
    let search = match crate::search::SearchIndex::open(crate::search::Location::for_folder(
        &config.storage_dir,
        store.is_encrypted(),
    )) {
        Ok((index, needs_rebuild)) => {
            let search_arbiter = actix_rt::Arbiter::new().handle();
            let (indexer_store, indexer_index) = (store.clone(), index.clone());
            let mut first = Some(needs_rebuild);
            Supervisor::start_in_arbiter(&search_arbiter, move |_| {
                crate::search::indexer::SearchIndexer::new(
                    indexer_store.clone(),
                    indexer_index.clone(),
                    first.take().unwrap_or(false),
                )
            });
            Some(index)
        }
        Err(e) => {
            tracing::error!("search is off: {e}");
            None
        }
    };
    // Presence: the board sessions report to, and its actor on its own arbiter.
    let presence = Arc::new(crate::actors::presence::PresenceBoard::new(
        config.presence_away_after,
    ));
    let presence_arbiter = actix_rt::Arbiter::new().handle();
    let (presence_store, presence_directory, presence_board) =
        (store.clone(), directory.clone(), presence.clone());
    Supervisor::start_in_arbiter(&presence_arbiter, move |_| {
        crate::actors::presence::PresenceActor::new(
            presence_store.clone(),
            presence_directory.clone(),
            presence_board.clone(),
        )
    });
    let certificate_expiry = Arc::new(std::sync::atomic::AtomicI64::new(
        not_after.as_ref().map_or(i64::MIN, |(at, _)| *at),
    ));
    let state = web::Data::new(
        AppState::new(
            store.clone(),
            registry.clone(),
            directory.clone(),
            rooms,
            config.limits.clone(),
            VoiceHandle {
                hub,
                router: router.clone(),
            },
        )
        .trusting(config.trusted_proxies.clone())
        .with_certificate_expiry(certificate_expiry.clone())
        .with_vapid_key(vapid_public_key)
        .with_search(search)
        .with_presence(presence)
        .allowing_origins(config.allowed_origins.clone()),
    );
    let limits = config.limits.clone();
    let web_root = config.web_root.clone();

    let bind_error = |source| StartError::Bind {
        addr: config.listen.to_string(),
        source,
    };
    let lst = match (bind_tcp(config.listen), config.listen_fallback) {
        (Ok(lst), _) => lst,
        (Err(e), Some(fallback)) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            tracing::info!("no IPv6 on this machine: listening on IPv4 only");
            bind_tcp(fallback).map_err(bind_error)?
        }
        (Err(e), _) => return Err(bind_error(e)),
    };
    let addrs = vec![lst.local_addr().map_err(bind_error)?];
    let budget = crate::listener::Budget::new(crate::listener::BudgetConfig {
        per_address: config.max_connections_per_address,
        unauthenticated_per_address: config.max_unauthenticated_per_address,
        handshake_timeout: Duration::from_secs(10),
        exempt: config.trusted_proxies.clone(),
    });
    let metrics_server = match config.metrics_listen {
        Some(addr) => Some(start_metrics(addr, state.clone(), budget.clone())?),
        None => None,
    };
    let server = crate::listener::serve(
        lst,
        acceptor,
        budget,
        crate::listener::HttpSettings {
            workers: config.workers,
            max_connections: config.max_connections,
            request_head_timeout: Duration::from_secs(10),
        },
        move || {
            App::new()
                .app_data(state.clone())
                .wrap(middleware::DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff")))
                .wrap(middleware::from_fn(api::access_log::log))
                .configure(|cfg| api::configure(cfg, &limits, web_root.clone()))
        },
    )
    .map_err(bind_error)?;
    for &addr in &addrs {
        let udp = router
            .start_udp(addr, config.voice_threads)
            .map_err(|source| StartError::Bind {
                addr: format!("{addr} (UDP, for voice)"),
                source,
            })?;
        udp_port.store(udp.port(), std::sync::atomic::Ordering::Relaxed);
        tracing::info!("voice on udp://{udp}");
    }
    for addr in addrs {
        tracing::info!(
            "listening on https://{addr} (storage {})",
            config.storage_dir.display()
        );
    }
    tracing::info!(
        "TLS certificate {} SHA-256 fingerprint {}",
        identity.source,
        identity.fingerprint()
    );
    let handle = server.handle();
    // systemd (Type=notify): up now. Without NOTIFY_SOCKET this does nothing.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    // SIGHUP: new handshakes get the certificate and key as the files hold them now.
    let hangups = signals.hangups();
    actix_rt::spawn(async move {
        let Some(mut hangups) = hangups else { return };
        while hangups.recv().await.is_some() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
            // `--log-file` under its name again (logrotate moved the old one away).
            match crate::logging::reopen() {
                Ok(()) => tracing::info!("SIGHUP: log reopened"),
                Err(e) => tracing::error!("SIGHUP: cannot reopen the log file: {e}"),
            }
            let loaded = actix_rt::task::spawn_blocking({
                let load_identity = load_identity.clone();
                move || load_identity()
            })
            .await;
            match loaded {
                Ok(Ok(identity)) => match live_certificate.replace(&identity) {
                    Ok(()) => {
                        certificate_expiry.store(
                            live_certificate.not_after.load(std::sync::atomic::Ordering::Acquire),
                            std::sync::atomic::Ordering::Release,
                        );
                        tracing::info!(
                            "SIGHUP: TLS certificate {} reloaded, SHA-256 fingerprint {}",
                            identity.source,
                            identity.fingerprint()
                        );
                    }
                    Err(e) => tracing::error!(
                        "SIGHUP: the certificate was NOT reloaded ({e}); still serving the previous one"
                    ),
                },
                Ok(Err(e)) => tracing::error!(
                    "SIGHUP: the certificate was NOT reloaded ({e}); still serving the previous one"
                ),
                Err(e) => tracing::error!("SIGHUP: reload failed: {e}"),
            }
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        }
    });

    actix_rt::spawn(async move {
        signals.wait().await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        tracing::info!("shutting down: closing event streams");
        let closed = directory.close_all(actix_ws::CloseCode::Away, "server shutting down");
        tracing::info!("closed {closed} event stream(s)");
        // Give the writers a moment to put the close frames on the wire.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(metrics) = &metrics_server {
            metrics.stop(false).await;
        }
        handle.stop(true).await;
    });

    // Idempotency keys are remembered for 24 hours and the sync log keeps its newest
    // `--change-log-keep` entries; older ones are forgotten at start and now and then.
    let prune_store = store.clone();
    let keep = config.change_log_keep;
    let lifetime = config.limits.session_lifetime;
    actix_rt::spawn(async move {
        loop {
            let store = prune_store.clone();
            let _ = actix_rt::task::spawn_blocking(move || {
                store.prune_idempotency_keys(10_000)?;
                let ended = store.prune_sessions(lifetime, crate::now_ms(), 10_000)?;
                if ended > 0 {
                    tracing::info!(target: "confab::audit", ended, "expired login sessions ended");
                }
                // In bounded units until nothing is left beyond the horizon.
                while store.prune_changes(keep, 10_000)? > 0 {}
                Ok::<_, crate::storage::StorageError>(())
            })
            .await;
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
    });

    let result = server.await;
    router.shutdown();
    let flushed = flush_with_deadline(store);
    drop(lock);
    match &flushed {
        Ok(()) => tracing::info!("stopped; storage flushed"),
        Err(e) => tracing::error!("stopped; the storage could not be flushed: {e}"),
    }
    result.map_err(|e| StartError::Other(format!("server error: {e}")))?;
    Ok(flushed?)
}

/// The last commit at shutdown, bounded in time: a device that hangs must not keep the
/// process from exiting.
fn flush_with_deadline(store: Arc<Store>) -> Result<(), StorageError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new()
        .name("confab-final-flush".into())
        .spawn(move || {
            let _ = tx.send(store.flush());
        });
    rx.recv_timeout(storage::COMMIT_DEADLINE)
        .unwrap_or_else(|_| {
            Err(StorageError::Unavailable(
                "the storage device did not confirm the final flush in time".into(),
            ))
        })
}

/// SIGTERM and SIGINT, registered with the runtime (which replaces their default action).
/// The signals the server handles, taken over at start: SIGTERM and SIGINT stop it,
/// SIGHUP reloads (instead of killing it, the default).
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> Result<Self, StartError> {
        use tokio::signal::unix::{signal, SignalKind};
        let err = |e: std::io::Error| StartError::Other(format!("cannot handle signals: {e}"));
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).map_err(err)?,
            int: signal(SignalKind::interrupt()).map_err(err)?,
            hup: Some(signal(SignalKind::hangup()).map_err(err)?),
        })
    }

    /// The SIGHUP stream (taken once, at start).
    fn hangups(&mut self) -> Option<tokio::signal::unix::Signal> {
        self.hup.take()
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}
