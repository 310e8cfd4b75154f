//! `confab-server healthcheck`: asks the server running with this configuration whether
//! it is ready (`GET /readyz` over TLS on loopback) and exits 0 or 1. For a container's
//! `HEALTHCHECK` and for scripts: no curl, no certificate to hand out.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};

/// The loopback address to reach a server listening on `listen`.
fn loopback_of(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        // The default `[::]` also takes IPv4 (or the server fell back to 0.0.0.0).
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `Ok(())` when the server answers 200 to `/readyz`; otherwise what went wrong.
pub fn check_ready(listen: SocketAddr, timeout: Duration) -> Result<(), String> {
    let addr = loopback_of(listen);
    let tcp = TcpStream::connect_timeout(&addr, timeout)
        .or_else(|e| {
            // A server on `[::]` without IPv4 mapping: try ::1.
            if addr.is_ipv4() && listen.is_ipv6() {
                TcpStream::connect_timeout(
                    &SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port()),
                    timeout,
                )
            } else {
                Err(e)
            }
        })
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    tcp.set_read_timeout(Some(timeout)).ok();
    tcp.set_write_timeout(Some(timeout)).ok();
    let mut connector =
        SslConnector::builder(SslMethod::tls_client()).map_err(|e| format!("TLS: {e}"))?;
    // The server's own certificate on loopback: this asks "are you up", it sends nothing.
    connector.set_verify(SslVerifyMode::NONE);
    let mut tls = connector
        .build()
        .configure()
        .map_err(|e| format!("TLS: {e}"))?
        .verify_hostname(false)
        .connect("localhost", tcp)
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    tls.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("request: {e}"))?;
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match tls.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(format!("answer: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..got]);
    let status = line.split_whitespace().nth(1).unwrap_or("none");
    if status == "200" {
        Ok(())
    } else {
        Err(format!("{addr} answered /readyz with status {status}"))
    }
}
