//! A stand-in behind mutual TLS: certificates generated per test with `rcgen`
//! (a private CA, a server certificate for `127.0.0.1`, a client certificate),
//! and an HTTPS server that requires a client certificate the CA signed.
//!
//! Requests that pass the handshake are answered `200 {"ok":true}` and counted;
//! handshakes that fail are counted apart, so a test can tell "refused at the
//! TLS layer" from "never tried".

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// PEM files of one test's private PKI, in a temporary directory.
pub struct Pki {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The client certificate.
    pub client_cert: PathBuf,
    /// The client key (PKCS#8).
    pub client_key: PathBuf,
    server_cert: String,
    server_key: String,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Pki {
    /// A fresh CA and a server and a client certificate signed by it.
    pub fn generate() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "hookfleet test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).expect("signed");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            vec!["worker.hookfleet.test".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            server_cert,
            server_key,
            ca_pem: ca.pem(),
            _dir: dir,
        }
    }
}

/// A running HTTPS server requiring a client certificate.
pub struct MtlsStandIn {
    url: String,
    served: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl MtlsStandIn {
    /// Starts on `https://127.0.0.1:0` with `pki`'s server certificate,
    /// trusting client certificates its CA signed; answers `{"ok":true}`.
    pub async fn start(pki: &Pki) -> Self {
        Self::answering(pki, serde_json::json!({ "ok": true })).await
    }

    /// As [`start`](Self::start), answering every request with `body`.
    pub async fn answering(pki: &Pki, body: serde_json::Value) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("CA PEM"))
            .expect("CA");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(pki.server_cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).expect("key"),
            )
            .expect("server config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("https://{}", listener.local_addr().expect("bound"));
        let (served, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let stop = CancellationToken::new();
        let tls = TlsListener {
            tcp: listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            refused: refused.clone(),
        };
        let counter = served.clone();
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            async move { axum::Json(body) }
        });
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(tls, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        Self {
            url,
            served,
            refused,
            stop,
        }
    }

    /// `https://127.0.0.1:{port}`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests answered (their handshake succeeded).
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Handshakes that failed (no or an untrusted client certificate).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for MtlsStandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Accepts TCP connections and completes their TLS handshake; a failed
/// handshake is counted and the next connection awaited.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    refused: Arc<AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(stream).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Reads a PEM file into a string.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read PEM")
}
