//! Server TLS: load the operator's certificate chain and (possibly encrypted) key, or make a
//! self-signed certificate on first start and keep it in the storage folder.

use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslAcceptorBuilder, SslMethod, SslVersion};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509NameBuilder, X509};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate file {path}: {source}")]
    ReadCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the TLS private key file {path}: {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the TLS certificate file {path} holds no valid PEM certificate")]
    BadCert { path: PathBuf },
    #[error(
        "cannot decrypt the TLS private key {path}: wrong or missing --ssl-private-key-password"
    )]
    KeyPassword { path: PathBuf },
    #[error("the TLS private key file {path} holds no valid PEM private key")]
    BadKey { path: PathBuf },
    #[error("the TLS private key {key} does not match the certificate {cert}")]
    Mismatch { key: PathBuf, cert: PathBuf },
    #[error("--ssl-certificate and --ssl-private-key must be given together")]
    HalfPair,
    #[error("cannot write the generated TLS certificate to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// The certificate and key the listener will use.
pub struct TlsIdentity {
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    /// Where it came from, for the log line.
    pub source: String,
}

impl TlsIdentity {
    /// When the leaf certificate stops being valid: seconds since the epoch, and as text.
    pub fn not_after(&self) -> Option<(i64, String)> {
        let leaf = self.chain.first()?;
        let d = Asn1Time::from_unix(0).ok()?.diff(leaf.not_after()).ok()?;
        Some((
            i64::from(d.days) * 86_400 + i64::from(d.secs),
            leaf.not_after().to_string(),
        ))
    }

    /// SHA-256 of the leaf certificate (DER), as colon-separated upper-case hex.
    pub fn fingerprint(&self) -> String {
        self.chain
            .first()
            .and_then(|c| c.digest(MessageDigest::sha256()).ok())
            .map(|d| fingerprint_hex(&d))
            .unwrap_or_default()
    }

    pub fn acceptor(&self) -> Result<SslAcceptorBuilder, TlsError> {
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
        builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
        let mut certs = self.chain.iter();
        if let Some(leaf) = certs.next() {
            builder.set_certificate(leaf)?;
        }
        for extra in certs {
            builder.add_extra_chain_cert(extra.clone())?;
        }
        builder.set_private_key(&self.key)?;
        builder.check_private_key()?;
        // Smaller per-connection memory: release idle read/write buffers.
        builder.set_mode(openssl::ssl::SslMode::RELEASE_BUFFERS);
        Ok(builder)
    }
}

/// The certificate new handshakes get, replaceable while the server runs (SIGHUP): the
/// listener's acceptor switches each new connection to the current context in its
/// ClientHello callback, so connections already open keep theirs and nothing restarts.
pub struct LiveCertificate {
    current: arc_swap::ArcSwap<openssl::ssl::SslContext>,
    /// 0 until the first reload: until then the acceptor's own context is the current one.
    generation: std::sync::atomic::AtomicU64,
    /// The leaf's expiry (seconds since the epoch; `i64::MIN`: unknown), for health.
    pub not_after: std::sync::atomic::AtomicI64,
}

impl LiveCertificate {
    /// The acceptor for `identity`, and the handle that later replaces its certificate.
    pub fn start(
        identity: &TlsIdentity,
    ) -> Result<(SslAcceptor, std::sync::Arc<LiveCertificate>), TlsError> {
        use std::sync::atomic::Ordering;
        let first = identity.acceptor()?.build();
        let live = std::sync::Arc::new(LiveCertificate {
            current: arc_swap::ArcSwap::from_pointee(first.context().to_owned()),
            generation: std::sync::atomic::AtomicU64::new(0),
            not_after: std::sync::atomic::AtomicI64::new(
                identity.not_after().map_or(i64::MIN, |(at, _)| at),
            ),
        });
        let mut builder = identity.acceptor()?;
        let switch = live.clone();
        builder.set_client_hello_callback(move |ssl, _alert| {
            if switch.generation.load(Ordering::Acquire) > 0 {
                ssl.set_ssl_context(&switch.current.load())?;
            }
            Ok(openssl::ssl::ClientHelloResponse::SUCCESS)
        });
        Ok((builder.build(), live))
    }

    /// New handshakes get `identity` from now on.
    pub fn replace(&self, identity: &TlsIdentity) -> Result<(), TlsError> {
        use std::sync::atomic::Ordering;
        let context = identity.acceptor()?.build().into_context();
        self.current.store(std::sync::Arc::new(context));
        self.not_after.store(
            identity.not_after().map_or(i64::MIN, |(at, _)| at),
            Ordering::Release,
        );
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

pub fn fingerprint_hex(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Loads the operator's certificate/key pair.
pub fn load(cert: &Path, key: &Path, password: Option<&str>) -> Result<TlsIdentity, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::ReadCert {
        path: cert.into(),
        source,
    })?;
    let chain =
        X509::stack_from_pem(&cert_pem).map_err(|_| TlsError::BadCert { path: cert.into() })?;
    if chain.is_empty() {
        return Err(TlsError::BadCert { path: cert.into() });
    }
    let key_pem = std::fs::read(key).map_err(|source| TlsError::ReadKey {
        path: key.into(),
        source,
    })?;
    let encrypted = key_pem.windows(9).any(|w| w == b"ENCRYPTED");
    // Always answer OpenSSL's pass-phrase request ourselves: its default would prompt on the
    // terminal, which a daemon must never do.
    let pass = password.unwrap_or("").as_bytes().to_vec();
    let pkey = PKey::private_key_from_pem_callback(&key_pem, move |buf| {
        let n = pass.len().min(buf.len());
        buf[..n].copy_from_slice(&pass[..n]);
        Ok(n)
    })
    .map_err(|_| {
        if encrypted {
            TlsError::KeyPassword { path: key.into() }
        } else {
            TlsError::BadKey { path: key.into() }
        }
    })?;
    let leaf_key = chain[0].public_key()?;
    if !leaf_key.public_eq(&pkey) {
        return Err(TlsError::Mismatch {
            key: key.into(),
            cert: cert.into(),
        });
    }
    Ok(TlsIdentity {
        chain,
        key: pkey,
        source: format!("{} / {}", cert.display(), key.display()),
    })
}

/// Loads the self-signed pair from `<storage>/tls/`, making it on first start.
pub fn load_or_generate(storage: &Path, hosts: &[String]) -> Result<TlsIdentity, TlsError> {
    let dir = storage.join("tls");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        let mut id = load(&cert_path, &key_path, None)?;
        id.source = format!("self-signed {}", cert_path.display());
        return Ok(id);
    }
    let (cert, key) = generate_self_signed(hosts)?;
    std::fs::create_dir_all(&dir).map_err(|source| TlsError::Write {
        path: dir.clone(),
        source,
    })?;
    write_private(&key_path, &key.private_key_to_pem_pkcs8()?)?;
    std::fs::write(&cert_path, cert.to_pem()?).map_err(|source| TlsError::Write {
        path: cert_path.clone(),
        source,
    })?;
    Ok(TlsIdentity {
        chain: vec![cert],
        key,
        source: format!("self-signed {} (new)", cert_path.display()),
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| TlsError::Write {
            path: path.into(),
            source,
        })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|source| TlsError::Write {
            path: path.into(),
            source,
        })
}

/// A P-256 self-signed certificate valid for ten years, naming `hosts` (DNS names or IPs).
pub fn generate_self_signed(hosts: &[String]) -> Result<(X509, PKey<Private>), TlsError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, "Confab server")?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Confab (self-signed)")?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    let not_before = Asn1Time::days_from_now(0)?;
    let not_after = Asn1Time::days_from_now(3650)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()?,
    )?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let mut san = SubjectAlternativeName::new();
    let mut seen = std::collections::BTreeSet::new();
    for h in hosts {
        let h = h.trim_matches(|c| c == '[' || c == ']');
        if h.is_empty() || h == "0.0.0.0" || h == "::" || !seen.insert(h.to_string()) {
            continue;
        }
        if h.parse::<std::net::IpAddr>().is_ok() {
            san.ip(h);
        } else {
            san.dns(h);
        }
    }
    let ext = san.build(&b.x509v3_context(None, None))?;
    b.append_extension(ext)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok((b.build(), key))
}
