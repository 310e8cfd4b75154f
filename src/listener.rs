//! The HTTPS listener and its connection budget.
//!
//! Each accepted TCP connection first asks the [`Budget`] for a [`Ticket`]: at most
//! `per_address` open connections per client address, of which at most
//! `unauthenticated_per_address` have not yet made an authenticated request. A connection
//! over either cap is closed before any TLS work. So one address — a stranger without an
//! account — cannot hold more than a few dozen connections however slowly it talks, and
//! cannot use up the server's descriptors or its TLS handshakes; silent sockets that never
//! send a ClientHello wait out the handshake timeout without holding anyone else's slot.
//! Reverse proxies named by `--trusted-proxy` are exempt (they carry many clients).
//!
//! Then TLS (actix-tls over OpenSSL, with a handshake timeout), then actix-http serving the
//! actix-web application. This replaces `HttpServer`, which offers no hook before the
//! handshake.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::{HttpService, Protocol};
use actix_rt::net::{ActixStream, Ready, TcpStream};
use actix_service::{fn_service, map_config, ServiceFactoryExt as _};
use actix_tls::accept::openssl::{reexports::SslAcceptor, Acceptor, TlsStream};
use actix_web::dev::AppConfig;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much one client address may hold.
#[derive(Debug, Clone)]
pub struct BudgetConfig {
    pub per_address: usize,
    pub unauthenticated_per_address: usize,
    pub handshake_timeout: Duration,
    /// Not counted: reverse proxies.
    pub exempt: Vec<IpNet>,
}

#[derive(Default)]
struct Counts {
    open: usize,
    unauthenticated: usize,
}

/// Open and not-yet-authenticated connections per client address.
pub struct Budget {
    config: BudgetConfig,
    counts: Mutex<HashMap<IpAddr, Counts>>,
    /// When a refusal was last logged (ms since the epoch): at most one line a minute.
    last_refusal_log: AtomicU64,
    refused: AtomicU64,
}

impl Budget {
    pub fn new(config: BudgetConfig) -> Arc<Budget> {
        Arc::new(Budget {
            config,
            counts: Mutex::new(HashMap::new()),
            last_refusal_log: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// A ticket for a new connection from `ip`, or `None` if that address is at a cap.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        let ip = crate::canonical_ip(ip);
        if self.config.exempt.iter().any(|n| n.contains(&ip)) {
            return Some(Ticket {
                budget: None,
                ip,
                authenticated: AtomicBool::new(true),
            });
        }
        let ip = budget_key(ip);
        let Ok(mut counts) = self.counts.lock() else {
            return None;
        };
        let c = counts.entry(ip).or_default();
        if c.open >= self.config.per_address
            || c.unauthenticated >= self.config.unauthenticated_per_address
        {
            let (open, unauth) = (c.open, c.unauthenticated);
            drop(counts);
            self.refused(ip, open, unauth);
            return None;
        }
        c.open += 1;
        c.unauthenticated += 1;
        Some(Ticket {
            budget: Some(self.clone()),
            ip,
            authenticated: AtomicBool::new(false),
        })
    }

    fn refused(&self, ip: IpAddr, open: usize, unauthenticated: usize) {
        let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = crate::now_ms();
        let last = self.last_refusal_log.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60_000
            && self
                .last_refusal_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                target: "confab::audit",
                %ip, open, unauthenticated, refused_since_start = total,
                "connection refused: this address is at its connection cap (--max-connections-per-address, --max-unauthenticated-per-address); logged at most once a minute"
            );
        }
    }

    /// Connections open now (reverse proxies' not counted).
    pub fn open_total(&self) -> u64 {
        self.counts
            .lock()
            .map(|c| c.values().map(|n| n.open as u64).sum())
            .unwrap_or(0)
    }

    /// Connections refused since start.
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Whose budget an address draws on: an IPv4 address, or an IPv6 /64 — one subscriber's
/// network usually holds a whole /64, so counting each address apart would let one client
/// open as many connections as it has addresses.
fn budget_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// One admitted connection's place in the budget, given back when the connection closes.
pub struct Ticket {
    budget: Option<Arc<Budget>>,
    ip: IpAddr,
    authenticated: AtomicBool,
}

impl Ticket {
    /// The connection made an authenticated request: it no longer counts as a stranger's.
    pub fn authenticated(&self) {
        if self.authenticated.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(b) = &self.budget {
            if let Ok(mut counts) = b.counts.lock() {
                if let Some(c) = counts.get_mut(&self.ip) {
                    c.unauthenticated = c.unauthenticated.saturating_sub(1);
                }
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(b) = &self.budget else { return };
        if let Ok(mut counts) = b.counts.lock() {
            if let Some(c) = counts.get_mut(&self.ip) {
                c.open = c.open.saturating_sub(1);
                if !self.authenticated.load(Ordering::Relaxed) {
                    c.unauthenticated = c.unauthenticated.saturating_sub(1);
                }
                if c.open == 0 {
                    counts.remove(&self.ip);
                }
            }
        }
    }
}

/// A TCP connection holding its ticket for as long as it is open.
pub struct Budgeted {
    tcp: TcpStream,
    ticket: Arc<Ticket>,
}

impl Budgeted {
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn ticket(&self) -> &Arc<Ticket> {
        &self.ticket
    }
}

impl AsyncRead for Budgeted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Budgeted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl ActixStream for Budgeted {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_read_ready(&self.tcp, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_write_ready(&self.tcp, cx)
    }
}

/// What a plain `http://` request to the HTTPS port gets, instead of a reset connection.
const PLAIN_HTTP_ANSWER: &str = "This port speaks HTTPS only: use https:// instead of http://\n";

/// Waits (up to the handshake timeout) for the connection's first byte. A TLS connection
/// starts with a handshake record (0x16); one starting with a letter is a plain HTTP
/// request, which is answered 400 with a sentence saying to use `https://`, and closed.
/// Answers whether that happened (or the client went away first).
async fn plain_http_answered(tcp: &TcpStream, timeout: Duration) -> bool {
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0].is_ascii_uppercase() => {}
        Ok(Ok(1)) => return false,
        // Closed, failed or silent: nothing to serve.
        _ => return true,
    }
    // Read the request head (what has arrived), so closing does not reset the connection
    // before the answer is read.
    let mut head = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        loop {
            tcp.readable().await?;
            match tcp.try_read(&mut head) {
                Ok(n) if n < head.len() => return Ok::<(), io::Error>(()),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_HTTP_ANSWER}",
        PLAIN_HTTP_ANSWER.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut rest = answer.as_bytes();
        while !rest.is_empty() {
            tcp.writable().await?;
            match tcp.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write)
    })
    .await;
    true
}

/// What the HTTP side is built with.
pub struct HttpSettings {
    pub workers: usize,
    pub max_connections: usize,
    pub request_head_timeout: Duration,
}

/// Starts the listener on `lst`: budget, TLS, HTTP, and the application `app` builds.
pub fn serve<F, I, S, B>(
    lst: std::net::TcpListener,
    acceptor: SslAcceptor,
    budget: Arc<Budget>,
    http: HttpSettings,
    app: F,
) -> io::Result<actix_server::Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, actix_http::Request>,
    S: actix_service::ServiceFactory<
            actix_http::Request,
            Config = AppConfig,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    S::Future: 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let local = lst.local_addr()?;
    // Handshakes in progress per worker: silent sockets only wait, so this is high; what
    // bounds them is the per-address budget.
    actix_tls::accept::max_concurrent_tls_connect(4096);
    let builder = actix_server::Server::build()
        .workers(http.workers)
        .max_concurrent_connections(http.max_connections)
        .backlog(4096)
        .disable_signals()
        .shutdown_timeout(5);
    let shutdown = builder.graceful_shutdown_signal();
    let handshake_timeout = budget.config.handshake_timeout;
    Ok(builder
        .listen("confab-https", lst, move || {
            let budget = budget.clone();
            let app = app.clone();
            let shutdown = shutdown.clone();
            let mut tls = Acceptor::new(acceptor.clone());
            tls.set_handshake_timeout(handshake_timeout);
            let admit = fn_service(move |tcp: TcpStream| {
                let admitted = tcp
                    .peer_addr()
                    .ok()
                    .and_then(|peer| budget.admit(peer.ip()))
                    .map(|ticket| {
                        let _ = tcp.set_nodelay(true);
                        Budgeted {
                            tcp,
                            ticket: Arc::new(ticket),
                        }
                    });
                // Refused: the socket is dropped (closed) here, before any TLS work.
                async move {
                    let conn = admitted.ok_or(())?;
                    if plain_http_answered(&conn.tcp, handshake_timeout).await {
                        return Err(());
                    }
                    Ok(conn)
                }
            });
            let http_service = HttpService::<TlsStream<Budgeted>, _, _, _, _>::build()
                .client_request_timeout(http.request_head_timeout)
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(local)
                .graceful_shutdown_signal(move || {
                    let s = shutdown.clone();
                    async move { s.notified().await }
                })
                .on_connect_ext(|io: &TlsStream<Budgeted>, ext| {
                    let conn = io.get_ref();
                    ext.insert(conn.ticket().clone());
                    if let Some(socket) = crate::actors::session::ConnSocket::of_tcp(conn.tcp()) {
                        ext.insert(socket);
                    }
                })
                .finish(map_config(
                    app()
                        .into_factory()
                        .map_err(|e: actix_web::Error| e.error_response()),
                    move |_| AppConfig::default(),
                ));
            admit
                .map_err(|()| ())
                .and_then(tls.map_err(|_| ()))
                .map(|io: TlsStream<Budgeted>| {
                    let proto = match io.ssl().selected_alpn_protocol() {
                        Some(p) if p.windows(2).any(|w| w == b"h2") => Protocol::Http2,
                        _ => Protocol::Http1,
                    };
                    let peer: Option<SocketAddr> = io.get_ref().tcp().peer_addr().ok();
                    (io, proto, peer)
                })
                .and_then(http_service.map_err(|_| ()))
        })?
        .run())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_address: usize, unauthenticated: usize) -> Arc<Budget> {
        Budget::new(BudgetConfig {
            per_address,
            unauthenticated_per_address: unauthenticated,
            handshake_timeout: Duration::from_secs(10),
            exempt: vec!["10.9.0.0/16".parse().unwrap()],
        })
    }

    #[test]
    fn an_address_gets_its_caps_and_an_ipv6_network_shares_one() {
        let b = budget(3, 2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let t1 = b.admit(ip("192.0.2.1")).expect("first");
        let _t2 = b.admit(ip("192.0.2.1")).expect("second");
        assert!(
            b.admit(ip("192.0.2.1")).is_none(),
            "two unauthenticated at most"
        );
        t1.authenticated();
        let _t3 = b
            .admit(ip("192.0.2.1"))
            .expect("one authenticated: room again");
        assert!(b.admit(ip("192.0.2.1")).is_none(), "three open at most");
        assert!(
            b.admit(ip("192.0.2.2")).is_some(),
            "another address, another budget"
        );
        drop(t1);
        assert!(
            b.admit(ip("192.0.2.1")).is_none(),
            "still two unauthenticated"
        );
        // One /64: one budget, whatever the interface ids.
        let _a = b.admit(ip("2001:db8:1:2::1")).expect("a");
        let _b = b.admit(ip("2001:db8:1:2:ffff::9")).expect("b");
        assert!(b.admit(ip("2001:db8:1:2:abcd::7")).is_none());
        assert!(b.admit(ip("2001:db8:1:3::1")).is_some(), "the next /64");
        // Proxies are not counted.
        for _ in 0..10 {
            std::mem::forget(b.admit(ip("10.9.1.1")).expect("exempt"));
        }
        assert_eq!(b.refused_total(), 4);
    }
}
