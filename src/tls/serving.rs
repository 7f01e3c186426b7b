//! A serving certificate, re-read when its files change: the HTTPS listener's (`tls.cert_file`)
//! and the injector's webhook's.
//!
//! cert-manager, certbot or whoever writes the files renews the certificate in place (the kubelet
//! swaps a mounted Secret's files behind a symlink; reading the paths again follows it). [`ReloadingCert`] serves the last good pair and [`ReloadingCert::watch`]
//! checks the files every few seconds: a changed pair that loads replaces it, a pair that does
//! not (caught half-written, or wrong) is logged and the old one kept, so a bad renewal never
//! takes the webhook down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate pair could not be loaded. Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The certificate file holds no usable PEM certificate.
    #[error("{} holds no PEM certificate: {reason}", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// The key file holds no usable PEM private key.
    #[error("{} holds no PEM private key: {reason}", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// The key is not supported, or does not match the certificate.
    #[error("{} does not fit {}: {source}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
}

/// The acceptor an HTTPS listener hands its next connection to. A configuration reload puts in a
/// new one (another `tls.client_ca_file`, another certificate file). When the clients it accepts
/// change (the client CAs), its generation moves on, and the listener drains the connections
/// accepted before: a client whose CA was removed keeps nothing it opened under it.
pub struct Door {
    acceptor: arc_swap::ArcSwap<(tokio_rustls::TlsAcceptor, u64)>,
}

impl std::fmt::Debug for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Door").field("generation", &self.generation()).finish_non_exhaustive()
    }
}

impl Door {
    /// A door with this acceptor.
    pub fn new(acceptor: tokio_rustls::TlsAcceptor) -> Door {
        Door { acceptor: arc_swap::ArcSwap::from_pointee((acceptor, 0)) }
    }

    /// The acceptor for the next connection, and its generation.
    pub fn current(&self) -> (tokio_rustls::TlsAcceptor, u64) {
        let current = self.acceptor.load();
        (current.0.clone(), current.1)
    }

    /// The generation of the clients accepted now.
    pub fn generation(&self) -> u64 {
        self.acceptor.load().1
    }

    /// Serves the next connections with `acceptor`; `other_clients` when it accepts other clients
    /// than the one before (the connections accepted before are then drained).
    pub fn replace(&self, acceptor: tokio_rustls::TlsAcceptor, other_clients: bool) {
        let generation = self.generation() + u64::from(other_clients);
        self.acceptor.store(Arc::new((acceptor, generation)));
    }
}

/// The files' bytes, to notice any change (mtime alone misses same-second rewrites).
#[derive(PartialEq, Eq)]
struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// A certificate resolver serving the current pair of `cert`/`key` files.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Loaded)>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert").field("cert", &self.cert_path).field("key", &self.key_path).finish()
    }
}

impl ReloadingCert {
    /// Loads the pair; fails when it does not load (the webhook must not start without it).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ReloadingCert, CertError> {
        let (key, loaded) = load_pair(cert_path, key_path)?;
        Ok(ReloadingCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new((key, loaded)),
        })
    }

    /// The certificate and key files.
    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert_path, &self.key_path)
    }

    /// Re-reads the files; swaps the pair in when they changed and load. Returns whether it
    /// swapped.
    pub fn reload(&self) -> Result<bool, CertError> {
        let cert_pem = read(&self.cert_path)?;
        let key_pem = read(&self.key_path)?;
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.1.cert_pem == cert_pem && current.1.key_pem == key_pem {
                return Ok(false);
            }
        }
        let (key, loaded) = parse_pair(&self.cert_path, &self.key_path, cert_pem, key_pem)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (key, loaded);
        Ok(true)
    }

    /// Checks the files every `interval`, forever (spawn it).
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "serving certificate not reloaded; keeping the previous one"),
            }
        }
    }

    /// A rustls server configuration serving this certificate, HTTP/2 and HTTP/1.1 by ALPN, TLS
    /// 1.2 and 1.3 (rustls' safe defaults). With `client_roots`, clients must present a
    /// certificate those authorities issued (mutual TLS).
    pub fn server_config(self: &Arc<Self>, client_roots: Option<rustls::RootCertStore>) -> Result<rustls::ServerConfig, rustls::Error> {
        let provider = crate::tls::crypto_provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let builder = match client_roots {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = vec![crate::tls::ALPN_H2.to_vec(), crate::tls::ALPN_HTTP1.to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read { path: path.to_owned(), source })
}

fn load_pair(cert_path: &Path, key_path: &Path) -> Result<(Arc<CertifiedKey>, Loaded), CertError> {
    parse_pair(cert_path, key_path, read(cert_path)?, read(key_path)?)
}

fn parse_pair(
    cert_path: &Path,
    key_path: &Path,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
) -> Result<(Arc<CertifiedKey>, Loaded), CertError> {
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::NoCertificate { path: cert_path.to_owned(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate { path: cert_path.to_owned(), reason: "no CERTIFICATE block".into() });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| CertError::NoKey { path: key_path.to_owned(), reason: e.to_string() })?;
    let certified = CertifiedKey::from_der(chain, key, &crate::tls::crypto_provider()).map_err(|source| {
        CertError::Mismatch { cert: cert_path.to_owned(), key: key_path.to_owned(), source }
    })?;
    Ok((Arc::new(certified), Loaded { cert_pem, key_pem }))
}

/// A client connection of a listener: plain TCP, or TLS the proxy terminated.
pub enum ClientStream {
    /// Plain TCP.
    Plain(tokio::net::TcpStream),
    /// TLS over TCP, after the handshake.
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// What a TLS handshake established about the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The subject of the certificate the client presented (mutual TLS), RFC 4514 style
    /// (`CN=ops-robot,O=Hotel Group`).
    pub subject: Option<String>,
}

/// Completes the TLS handshake of `stream` within `timeout`. `None`: the client did not finish it
/// (a scanner, a plain-http client on the https port, a certificate refused) — logged at debug
/// level, the connection is simply closed.
pub async fn handshake(acceptor: &tokio_rustls::TlsAcceptor, stream: tokio::net::TcpStream, timeout: Duration) -> Option<(ClientStream, ClientTls)> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let subject = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(|leaf| subject_of(leaf.as_ref()));
            Some((ClientStream::Tls(Box::new(tls)), ClientTls { subject }))
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?timeout, "TLS handshake not finished in time");
            None
        }
    }
}

/// The subject of a DER certificate as text, RFC 4514 style; `None` when it does not parse
/// (rustls verified it already; this is only for the header). Public for the fuzz targets.
#[doc(hidden)]
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject().to_string();
    (!subject.is_empty()).then_some(subject)
}

impl tokio::io::AsyncRead for ClientStream {
    fn poll_read(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for ClientStream {
    fn poll_write(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
