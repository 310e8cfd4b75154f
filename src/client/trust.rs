//! How the client decides to trust a server's certificate: a CA file, a pinned SHA-256
//! fingerprint, no check at all, or (the default) trust on first use remembered in a
//! known-servers file, like SSH's known_hosts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openssl::hash::MessageDigest;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};

use super::ClientError;

#[derive(Debug, Clone)]
pub enum Trust {
    /// Verify the chain against this CA bundle (and the host name).
    CaFile(PathBuf),
    /// Verify the chain against the system's CA store (and the host name): `--system-ca`.
    SystemCa,
    /// Accept exactly the certificate with this SHA-256 fingerprint.
    Fingerprint(String),
    /// Accept any certificate (testing only).
    Insecure,
    /// Trust on first use, remembered in this file.
    KnownServers(PathBuf),
}

/// Upper-case hex without separators; `None` unless it is 32 bytes of hex.
///
/// ```
/// use confab::client::normalize_fingerprint;
/// let colons = "ab:".repeat(31) + "ab";
/// assert_eq!(normalize_fingerprint(&colons), Some("AB".repeat(32)));
/// assert_eq!(normalize_fingerprint("00:11"), None);
/// assert_eq!(normalize_fingerprint(&"zz".repeat(32)), None);
/// ```
pub fn normalize_fingerprint(fp: &str) -> Option<String> {
    let hex: String = fp
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_ascii_uppercase();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

pub fn default_known_servers() -> PathBuf {
    if let Ok(p) = std::env::var("CONFAB_KNOWN_SERVERS") {
        return PathBuf::from(p);
    }
    let base = std::env::var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|_| PathBuf::from("."));
    base.join("confab").join("known_servers")
}

fn read_known(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((
                parts.next()?.to_string(),
                normalize_fingerprint(parts.next()?)?,
            ))
        })
        .collect()
}

/// The TLS side of one client: the connector and what it saw.
#[derive(Clone)]
pub struct TrustState {
    pub trust: Trust,
    pub server: String,
    /// The pinned fingerprint in force (explicit, or from the known-servers file).
    pub expected: Option<String>,
    /// Fingerprint of the last leaf certificate the server presented.
    pub seen: Arc<Mutex<Option<String>>>,
    /// Why the chain did not verify, in words (expired, name mismatch, unknown CA).
    problem: Arc<Mutex<Option<String>>>,
    /// The chain verified against a CA (trust on first use then pins nothing: a renewed
    /// certificate is not a "change").
    ca_verified: Arc<std::sync::atomic::AtomicBool>,
    recorded: bool,
}

/// A verification failure in words. Codes are OpenSSL's `X509_V_ERR_*` (stable ABI).
fn describe(ctx: &openssl::x509::X509StoreContextRef, host: &str) -> String {
    let err = ctx.error();
    let cert = ctx.current_cert();
    let names = || {
        cert.and_then(|c| c.subject_alt_names())
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| {
                        n.dnsname()
                            .map(str::to_string)
                            .or_else(|| n.ipaddress().map(ip_text))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    match err.as_raw() {
        10 => format!(
            "the certificate of {host} expired on {}",
            cert.map(|c| c.not_after().to_string()).unwrap_or_default()
        ),
        9 => format!(
            "the certificate of {host} is not valid before {}",
            cert.map(|c| c.not_before().to_string()).unwrap_or_default()
        ),
        62 | 64 => format!(
            "the certificate of {host} is for {} — not for {host}",
            match names() {
                n if n.is_empty() => "other names".to_string(),
                n => n,
            }
        ),
        18 | 19 | 20 | 21 | 2 => format!(
            "the certificate of {host} is signed by a CA you have not trusted ({}): give --ca-file CA.pem, or --system-ca for a public CA, or pin it with --fingerprint",
            cert.map(|c| {
                c.issuer_name()
                    .entries()
                    .filter_map(|e| e.data().to_string().ok())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
        ),
        _ => format!("the certificate of {host} was refused: {}", err.error_string()),
    }
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::from([bytes[0], bytes[1], bytes[2], bytes[3]]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(bytes);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => String::new(),
    }
}

impl TrustState {
    pub fn new(trust: Trust, server: &str) -> Result<(TrustState, SslConnector), ClientError> {
        let mut builder = SslConnector::builder(SslMethod::tls_client())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        builder
            .set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        builder
            .set_alpn_protos(b"\x08http/1.1")
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let seen = Arc::new(Mutex::new(None));
        let problem: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let ca_verified = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let host = server
            .rsplit_once(':')
            .map_or(server, |(h, _)| h)
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let expected = match &trust {
            Trust::Fingerprint(fp) => Some(normalize_fingerprint(fp).ok_or_else(|| {
                ClientError::Usage(format!(
                    "--fingerprint '{fp}' is not a SHA-256 fingerprint (64 hex digits, colons optional)"
                ))
            })?),
            Trust::KnownServers(file) => read_known(file).get(server).cloned(),
            _ => None,
        };
        match &trust {
            Trust::CaFile(_) | Trust::SystemCa => {
                match &trust {
                    Trust::CaFile(file) => {
                        if !file.is_file() {
                            return Err(ClientError::Usage(format!(
                                "the CA file {} does not exist",
                                file.display()
                            )));
                        }
                        builder.set_ca_file(file).map_err(|_| {
                            ClientError::Usage(format!(
                                "the CA file {} holds no PEM certificate",
                                file.display()
                            ))
                        })?;
                    }
                    _ => builder.set_default_verify_paths().map_err(|e| {
                        ClientError::Tls(format!("cannot load the system's CAs: {e}"))
                    })?,
                }
                let problem_cb = problem.clone();
                let host_cb = host.clone();
                builder.set_verify_callback(SslVerifyMode::PEER, move |preverified, ctx| {
                    if !preverified {
                        if let Ok(mut p) = problem_cb.lock() {
                            p.get_or_insert_with(|| describe(ctx, &host_cb));
                        }
                    }
                    preverified
                });
            }
            Trust::Insecure => builder.set_verify(SslVerifyMode::NONE),
            Trust::Fingerprint(_) | Trust::KnownServers(_) => {
                let seen_cb = seen.clone();
                let expected_cb = expected.clone();
                // Trust on first use also knows the system's CAs: a certificate that
                // verifies against them (name included) is trusted as such, and not pinned.
                let tofu = matches!(trust, Trust::KnownServers(_));
                if tofu {
                    let _ = builder.set_default_verify_paths();
                }
                let ca_cb = ca_verified.clone();
                // OpenSSL reports each problem (and then, once we let it pass, calls again
                // with `preverified` for every certificate): the chain is CA-verified only
                // if nothing failed before the leaf's final call.
                let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
                builder.set_verify_callback(SslVerifyMode::PEER, move |preverified, ctx| {
                    use std::sync::atomic::Ordering::Relaxed;
                    if !preverified {
                        failed.store(true, Relaxed);
                    }
                    if tofu && preverified && ctx.error_depth() == 0 && !failed.load(Relaxed) {
                        ca_cb.store(true, Relaxed);
                        return true;
                    }
                    if ctx.error_depth() != 0 {
                        // Chain problems are expected for self-signed certificates; the leaf
                        // fingerprint decides.
                        return true;
                    }
                    let fp = ctx
                        .current_cert()
                        .and_then(|c| c.digest(MessageDigest::sha256()).ok())
                        .map(|d| hex::encode_upper(&*d));
                    let Some(fp) = fp else { return false };
                    if let Ok(mut s) = seen_cb.lock() {
                        *s = Some(fp.clone());
                    }
                    match &expected_cb {
                        Some(want) => *want == fp,
                        None => true, // first use: accept, remembered after success
                    }
                });
            }
        }
        Ok((
            TrustState {
                trust,
                server: server.to_string(),
                expected,
                seen,
                problem,
                ca_verified,
                recorded: false,
            },
            builder.build(),
        ))
    }

    /// Turns a connection failure into a clear trust error when the certificate was the cause.
    pub fn explain_failure(&self, err: String) -> ClientError {
        if let Some(p) = self.problem.lock().ok().and_then(|p| p.clone()) {
            return ClientError::Tls(p);
        }
        let seen = self.seen.lock().ok().and_then(|s| s.clone());
        if let (Some(want), Some(got)) = (&self.expected, &seen) {
            if want != got {
                return match &self.trust {
                    Trust::KnownServers(file) => ClientError::Tls(format!(
                        "the certificate of {} has CHANGED: remembered SHA-256 {want}, now {got}. \
                         If this change is expected, remove the line for {} from {} and connect again.",
                        self.server,
                        self.server,
                        file.display()
                    )),
                    _ => ClientError::Tls(format!(
                        "the certificate of {} does not match --fingerprint: expected {want}, got {got}",
                        self.server
                    )),
                };
            }
        }
        ClientError::Transport(err)
    }

    /// After a successful exchange, remember a first-use certificate.
    pub fn record_if_new(&mut self) -> Result<(), ClientError> {
        if self.recorded
            || self.expected.is_some()
            || self.ca_verified.load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(());
        }
        let Trust::KnownServers(file) = &self.trust else {
            return Ok(());
        };
        let Some(fp) = self.seen.lock().ok().and_then(|s| s.clone()) else {
            return Ok(());
        };
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                ClientError::Tls(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .map_err(|e| ClientError::Tls(format!("cannot write {}: {e}", file.display())))?;
        writeln!(f, "{} {}", self.server, fp)
            .map_err(|e| ClientError::Tls(format!("cannot write {}: {e}", file.display())))?;
        eprintln!(
            "confab: trusting {} on first use (SHA-256 {}); remembered in {}",
            self.server,
            fp,
            file.display()
        );
        self.expected = Some(fp);
        self.recorded = true;
        Ok(())
    }
}
