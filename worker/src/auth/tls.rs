//! TLS settings of an outbound client (`tls = { client_cert, client_key, ca }`):
//! a client certificate for mutual TLS and extra roots for a private CA, read
//! from PEM at start so a bad file stops the worker with its field named.
//!
//! A TLS failure at request time (the server wants a certificate we do not
//! send, or its own is not trusted) is a configuration problem, not a passing
//! one: [`handshake_failure`] finds it in an error chain so callers can fail
//! the request permanently with rustls's own words.

use crate::config::TlsConfig;
use reqwest::ClientBuilder;

use super::SetupError;

/// `builder` with the identity and roots of `tls`, configured at `field`.
pub fn apply(
    builder: ClientBuilder,
    field: &str,
    tls: &TlsConfig,
) -> Result<ClientBuilder, SetupError> {
    let fail = |name: &str, reason: String| SetupError {
        field: format!("{field}.tls.{name}"),
        reason,
    };
    let mut builder = builder;
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let mut pem = std::fs::read(cert).map_err(|e| {
            fail(
                "client_cert",
                format!("cannot read {}: {e}", cert.display()),
            )
        })?;
        pem.push(b'\n');
        pem.extend_from_slice(key.expose().as_bytes());
        // reqwest's error says which part failed to parse, never the PEM.
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| fail("client_key", format!("not a PEM certificate and key: {e}")))?;
        builder = builder.identity(identity);
    }
    if let Some(ca) = &tls.ca {
        let pem = std::fs::read(ca)
            .map_err(|e| fail("ca", format!("cannot read {}: {e}", ca.display())))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| fail("ca", format!("not a PEM certificate bundle: {e}")))?;
        if roots.is_empty() {
            return Err(fail("ca", "holds no certificate".into()));
        }
        builder = builder.tls_certs_merge(roots);
    }
    Ok(builder)
}

/// rustls's complaint somewhere in `error`'s chain: the handshake failed or
/// the peer sent a TLS alert (`CertificateRequired`, `UnknownCA`).
pub fn handshake_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // An io::Error's `source()` skips the error it wraps; look inside.
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        source = e.source();
    }
    None
}
