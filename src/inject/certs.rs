//! The webhook's serving certificate, re-read when its files change.
//!
//! cert-manager (or whoever writes the Secret) renews the certificate in place; the kubelet then
//! swaps the mounted files. [`ReloadingCert`] serves the last good pair and [`ReloadingCert::watch`]
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

    /// A rustls server configuration serving this certificate, HTTP/2 and HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
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
