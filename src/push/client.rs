//! The HTTPS client the push providers share: the system's CAs plus the operator's
//! `--push-ca-file`, HTTP/2 where the server offers it (APNs requires it; one connection
//! then carries many requests), bounded connections and timeouts.

use std::path::Path;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;

/// Connections per provider host at most.
const CONNECTIONS: usize = 8;

/// A client for the push providers (to be used on the thread that made it).
pub fn build(ca_file: Option<&Path>) -> Result<awc::Client, String> {
    let mut ssl = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    ssl.set_verify(SslVerifyMode::PEER);
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("--push-ca-file {}: {e}", path.display()))?;
        let certs = X509::stack_from_pem(&pem).map_err(|e| {
            format!(
                "--push-ca-file {}: not PEM certificates: {e}",
                path.display()
            )
        })?;
        if certs.is_empty() {
            return Err(format!(
                "--push-ca-file {}: no certificate in it",
                path.display()
            ));
        }
        for cert in certs {
            ssl.cert_store_mut()
                .add_cert(cert)
                .map_err(|e| format!("--push-ca-file {}: {e}", path.display()))?;
        }
    }
    ssl.set_alpn_protos(b"\x02h2\x08http/1.1")
        .map_err(|e| e.to_string())?;
    Ok(awc::Client::builder()
        .connector(
            awc::Connector::new()
                .openssl(ssl.build())
                .limit(CONNECTIONS)
                .timeout(Duration::from_secs(10))
                .handshake_timeout(Duration::from_secs(10)),
        )
        .timeout(Duration::from_secs(30))
        .finish())
}
