//! The connection-budget scenario: thousands of hostile connections from one address (silent
//! sockets and login bodies sent one byte at a time), while a member logs in and posts from
//! another; their latencies are what counts.

use std::io::Write;

use super::*;

/// Opens `n` hostile connections from 127.0.0.2 — half silent (each reopened as soon as the
/// server closes it), half dribbling a login body — then times `rounds` logins and posts
/// of a legitimate client from 127.0.0.1, each on a new connection.
pub(super) async fn run_hostile(n: usize, rounds: usize, server: &Server) -> serde_json::Value {
    let addr: std::net::SocketAddr = server.addr.parse().expect("server address");
    let pid = server.child.as_ref().map(|c| c.id()).unwrap_or(0);
    let fds = move || std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let fds_before = fds();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let connect = || {
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).and_then(
                    |s| {
                        let from: std::net::SocketAddr = "127.0.0.2:0".parse().expect("addr");
                        s.bind(&from.into())?;
                        s.connect(&addr.into())?;
                        Ok(std::net::TcpStream::from(s))
                    },
                )
            };
            // Half silent sockets (no ClientHello), opened first, all at once.
            let mut silent = Vec::new();
            let (mut connected, mut failed) = (0usize, 0usize);
            for _ in 0..n / 2 {
                match connect() {
                    Ok(tcp) => {
                        let _ = tcp.set_nonblocking(true);
                        silent.push(tcp);
                        connected += 1;
                    }
                    Err(_) => failed += 1,
                }
            }
            // Half logins whose body never finishes (for those the server takes at all).
            let mut slow = Vec::new();
            for _ in n / 2..n {
                let Ok(tcp) = connect() else {
                    failed += 1;
                    continue;
                };
                connected += 1;
                tcp.set_read_timeout(Some(Duration::from_millis(200))).ok();
                let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
                    .expect("ssl");
                b.set_verify(openssl::ssl::SslVerifyMode::NONE);
                if let Ok(mut tls) = b.build().connect("localhost", tcp) {
                    let head = "POST /api/v1/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{";
                    if tls.write_all(head.as_bytes()).is_ok() {
                        slow.push(tls);
                    }
                }
            }
            let _ = opened_tx.send((connected, failed, slow.len()));
            // Until the measurement is over: a byte every 5 s on each slow body, and every
            // silent socket the server closed is opened again at once.
            let mut reopened = 0usize;
            let mut last_byte = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if last_byte.elapsed() >= Duration::from_secs(5) {
                    for s in &mut slow {
                        let _ = s.write_all(b" ");
                    }
                    last_byte = Instant::now();
                }
                for s in &mut silent {
                    let mut buf = [0u8; 1];
                    let gone = match std::io::Read::read(s, &mut buf) {
                        Ok(_) => true,
                        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    };
                    if gone {
                        if let Ok(tcp) = connect() {
                            let _ = tcp.set_nonblocking(true);
                            *s = tcp;
                            reopened += 1;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            reopened
        })
    };
    let (connected, failed, slow_bodies) = loop {
        if let Ok(v) = opened_rx.try_recv() {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let fds_during = fds();
    let mut login_us = Vec::new();
    let mut post_us = Vec::new();
    // The room the legitimate member posts in (made before the attack would be fairer to
    // the old build; made now, it is the first thing a member does).
    let mut admin = Client::new(&server.addr, trust(server)).expect("client");
    let room = match admin.login("admin", &server.admin_password).await {
        Ok(_) => admin.create_room("hostile", &[]).await.ok(),
        Err(e) => {
            eprintln!("confab-bench: the member could not log in: {e}");
            None
        }
    };
    let mut login_failures = 0usize;
    for i in 0..rounds {
        // A new client each round: a new TCP connection and TLS handshake each time.
        let mut c = Client::new(&server.addr, trust(server)).expect("client");
        let t = Instant::now();
        let ok = c.login("admin", &server.admin_password).await.is_ok();
        login_us.push(t.elapsed().as_micros() as u32);
        let (true, Some(room)) = (ok, room) else {
            login_failures += 1;
            continue;
        };
        let t = Instant::now();
        let _ = c.send_text(room, &format!("legit {i}")).await;
        post_us.push(t.elapsed().as_micros() as u32);
    }
    stop.store(true, Ordering::Relaxed);
    let reopened = attacker.join().unwrap_or(0);
    login_us.sort_unstable();
    post_us.sort_unstable();
    json!({
        "hostile": {
            "connectionsAttempted": n,
            "tcpConnected": connected,
            "tcpFailed": failed,
            "slowBodiesSending": slow_bodies,
            "silentSocketsReopened": reopened,
            "serverFdsBefore": fds_before,
            "serverFdsDuring": fds_during,
        },
        "legit": {
            "rounds": rounds,
            "loginsOk": post_us.len(),
            "loginsFailed": login_failures,
            "loginP50Ms": percentile(&login_us, 0.5),
            "loginP99Ms": percentile(&login_us, 0.99),
            "postP50Ms": percentile(&post_us, 0.5),
            "postP99Ms": percentile(&post_us, 0.99),
        }
    })
}
