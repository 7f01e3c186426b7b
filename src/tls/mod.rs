//! TLS for the connections the proxy opens itself: to an `https` app and to Trousseau; the
//! serving side (the HTTPS listener, the injector's webhook) is [`serving`].
//!
//! Which certificate authorities we trust, in one place — a straight union of:
//! - the system's CA store (rustls-native-certs: `SSL_CERT_FILE` / `SSL_CERT_DIR`, else the
//!   distribution's bundle), so a company CA installed in the image is trusted as users expect;
//! - Mozilla's roots compiled into the binary (webpki-roots), so a static binary on an image with no
//!   CA store at all (`scratch`, distroless-static) still reaches public hosts;
//! - plus the PEM file the operator names (`ca_file`), typically the CA of the app's own certificate.
//!
//! The aws-lc-rs crypto provider is passed explicitly: nothing here depends on, or panics for lack
//! of, a process-wide default provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

pub mod serving;

/// ALPN identifier of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN identifier of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// How often the kernel probes an idle pooled connection, so half-dead ones (a NAT or load balancer
/// dropped them silently) are noticed instead of hanging the next request.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Why a TLS client configuration could not be built. Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read.
    #[error("cannot read the CA file {}: {source}", path.display())]
    ReadCaFile {
        /// The file named in the configuration.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The CA file is not well-formed PEM.
    #[error("the CA file {} is not valid PEM: {source}", path.display())]
    InvalidCaFile {
        /// The file named in the configuration.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: pem::Error,
    },
    /// The CA file holds no `CERTIFICATE` block.
    #[error("the CA file {} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file named in the configuration.
        path: PathBuf,
    },
    /// A certificate in the CA file cannot serve as a trust anchor.
    #[error("certificate #{index} of the CA file {} cannot be trusted: {source}", path.display())]
    InvalidCertificate {
        /// The file named in the configuration.
        path: PathBuf,
        /// Position of the certificate in the file, from 1.
        index: usize,
        /// Why rustls refused it.
        #[source]
        source: rustls::Error,
    },
    /// The crypto provider does not support the protocol versions we ask for (a build problem).
    #[error("TLS setup failed: {0}")]
    Provider(#[source] rustls::Error),
}

/// The crypto provider of every TLS connection the proxy makes.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration trusting [`root_store`], offering HTTP/2 and HTTP/1.1 through ALPN.
pub fn client_config(extra_ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let roots = root_store(extra_ca_file)?;
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// The trust anchors: the system's CA store, Mozilla's roots, and the certificates of
/// `extra_ca_file`. A missing or partly unreadable system store is not an error (the built-in
/// roots still apply); the operator's own `ca_file` is the one that must load. The system store is
/// read once per process (a reload reads the `ca_file`s again, not the ~150 system certificates,
/// which cost milliseconds of a core each time).
pub fn root_store(extra_ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    static SYSTEM: std::sync::OnceLock<RootCertStore> = std::sync::OnceLock::new();
    let mut roots = SYSTEM
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let system = rustls_native_certs::load_native_certs();
            for error in &system.errors {
                tracing::debug!(%error, "skipped part of the system CA store");
            }
            let (_, unusable) = roots.add_parsable_certificates(system.certs);
            if unusable > 0 {
                tracing::debug!(unusable, "skipped unusable certificates of the system CA store");
            }
            roots
        })
        .clone();

    if let Some(path) = extra_ca_file {
        add_ca_file(&mut roots, path)?;
    }
    Ok(roots)
}

/// A connector for `http` and `https` URIs: TCP with `TCP_NODELAY` and keep-alive probes,
/// `connect_timeout` for the TCP connection, and TLS with `config` (its ALPN list is used as is,
/// so an HTTP/1.1-only client is a config offering only `http/1.1`).
pub fn https_connector(
    config: ClientConfig,
    connect_timeout: Duration,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    // The TLS layer on top handles `https`; without this the TCP connector refuses those URIs.
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.set_connect_timeout(Some(connect_timeout));
    HttpsConnector::from((http, config))
}

/// The certificate authorities of the PEM file at `path` alone (no system or built-in roots): the
/// issuers a mutual-TLS listener accepts client certificates from.
pub fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    add_ca_file(&mut roots, path)?;
    Ok(roots)
}

/// Adds every certificate of the PEM file at `path` to `roots`.
fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    let certs = CertificateDer::pem_file_iter(path).map_err(|err| pem_error(path, err))?;
    let mut count = 0;
    for cert in certs {
        let cert = cert.map_err(|err| pem_error(path, err))?;
        count += 1;
        roots
            .add(cert)
            .map_err(|source| TlsError::InvalidCertificate {
                path: path.to_owned(),
                index: count,
                source,
            })?;
    }
    if count == 0 {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn pem_error(path: &Path, err: pem::Error) -> TlsError {
    match err {
        pem::Error::Io(source) => TlsError::ReadCaFile {
            path: path.to_owned(),
            source,
        },
        pem::Error::NoItemsFound => TlsError::NoCertificate {
            path: path.to_owned(),
        },
        source => TlsError::InvalidCaFile {
            path: path.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("trousseau-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write temp file");
        path
    }

    #[test]
    fn client_config_offers_http2_and_http1() {
        let config = client_config(None).expect("default config");
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn a_ca_file_is_trusted_besides_the_system_store() {
        let path = temp_file("ca.pem", test_certs::CA);
        let config = client_config(Some(&path));
        std::fs::remove_file(&path).ok();
        assert!(config.is_ok(), "{:?}", config.err());
    }

    #[test]
    fn a_missing_ca_file_is_named_in_the_error() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(err, TlsError::ReadCaFile { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let path = temp_file("empty.pem", "not a certificate\n");
        let err = client_config(Some(&path)).unwrap_err();
        std::fs::remove_file(&path).ok();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
        assert!(err.to_string().contains("empty.pem"), "{err}");
    }

    #[test]
    fn a_broken_pem_block_is_refused() {
        let path = temp_file("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let err = client_config(Some(&path)).unwrap_err();
        std::fs::remove_file(&path).ok();
        assert!(matches!(err, TlsError::InvalidCaFile { .. }), "{err:?}");
    }

    #[test]
    fn trust_is_the_union_of_mozilla_roots_the_system_store_and_the_ca_file() {
        let mozilla = webpki_roots::TLS_SERVER_ROOTS.len();
        let without = root_store(None).expect("default roots").len();
        assert!(without >= mozilla, "{without} < {mozilla}");

        let path = temp_file("union.pem", test_certs::CA);
        let with = root_store(Some(&path));
        std::fs::remove_file(&path).ok();
        assert_eq!(with.expect("roots with CA file").len(), without + 1);
    }
}

/// A test certificate authority and a `localhost` / `127.0.0.1` server certificate it signed (both
/// ECDSA P-256, valid 2000–2125), for tests that need a real TLS server.
#[cfg(test)]
pub(crate) mod test_certs {
    /// The CA certificate (PEM).
    pub const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBeDCCAR6gAwIBAgICEAAwCgYIKoZIzj0EAwIwIjEgMB4GA1UEAwwXdHJvdXNz
ZWF1LXByb3h5IHRlc3QgQ0EwIBcNMDAwMTAxMDAwMDAwWhgPMjEyNTAxMDEwMDAw
MDBaMCIxIDAeBgNVBAMMF3Ryb3Vzc2VhdS1wcm94eSB0ZXN0IENBMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAERYFCTLsCns2eScwrytyflfkblHO3wALN8puUcMtN
Xk2qULvxagwqJTx3JakOUFvq8XxEWJ4Je7Rz3aUM6Nzv6aNCMEAwDwYDVR0TAQH/
BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAQYwHQYDVR0OBBYEFDFkq9o80r5uxbGZZ+VD
/AnOyx5CMAoGCCqGSM49BAMCA0gAMEUCIQCresCjw5SDfA3CyNNtZrdTqtSb13Ix
FgRQHKluQR71lQIgUG2IdsPVUTMN/yhFIAFuAPl9xUN70ecf5JH53LU10L4=
-----END CERTIFICATE-----
";
    /// The server certificate for `localhost` and `127.0.0.1` (PEM).
    pub const SERVER_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBuzCCAWGgAwIBAgICEAEwCgYIKoZIzj0EAwIwIjEgMB4GA1UEAwwXdHJvdXNz
ZWF1LXByb3h5IHRlc3QgQ0EwIBcNMDAwMTAxMDAwMDAwWhgPMjEyNTAxMDEwMDAw
MDBaMBQxEjAQBgNVBAMMCWxvY2FsaG9zdDBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABAag72Ze2avJZFoHGlSg//CEl+FjKFJjj8AV0WLLgnAu6E9MnY3yMM156Roz
adKKpNPEdrko8bhA61Cnn854WDWjgZIwgY8wDAYDVR0TAQH/BAIwADAOBgNVHQ8B
Af8EBAMCB4AwEwYDVR0lBAwwCgYIKwYBBQUHAwEwGgYDVR0RBBMwEYIJbG9jYWxo
b3N0hwR/AAABMB0GA1UdDgQWBBSIw3MAr3O5yeNAiXHWHhTD4anifzAfBgNVHSME
GDAWgBQxZKvaPNK+bsWxmWflQ/wJzsseQjAKBggqhkjOPQQDAgNIADBFAiBgBWnR
oeLcIuGZ7n8IClpf9lrFJIL130k3TKHWuBJ/CQIhALaZm2XNvKB0MaKdJs5yXaEP
mM+wGdCjO5od47nqe1ya
-----END CERTIFICATE-----
";
    /// The server certificate's private key (PKCS#8 PEM).
    pub const SERVER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgFmvlPg9CQnzJYMcW
22aatkQznVJ2STn0cu2SNy6c07ehRANCAAQGoO9mXtmryWRaBxpUoP/whJfhYyhS
Y4/AFdFiy4JwLuhPTJ2N8jDNeekaM2nSiqTTxHa5KPG4QOtQp5/OeFg1
-----END PRIVATE KEY-----
";
}
