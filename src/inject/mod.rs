//! `trousseau-proxy inject-webhook`: the Kubernetes mutating admission webhook that puts the proxy
//! in front of a pod's app, with no change to the app's image or chart.
//!
//! How a pod gets its proxy, in order:
//! 1. [`admission`] reads the AdmissionReview v1 the API server sends to `POST /mutate` and always
//!    answers one (allowed, with or without a patch; denied only when the request is malformed or
//!    the pod asked for protection we cannot give it).
//! 2. [`options`] reads the pod's opt-in label and `trousseau.keysuite.app/*` annotations.
//! 3. [`pod`] decides the change: named-port takeover, probes rewritten to numbers, the proxy
//!    container from [`sidecar`], the config and secret volumes, and writes it as a JSON patch of
//!    the few operations it needs. It reads the pod through [`scan`], straight from the request
//!    body, so a review costs its body and little more, however large the pod.
//!
//! [`webhook`] is the HTTPS listener around it; [`crate::tls::serving`] reloads its certificate
//! when the files change (cert-manager renews it in place).

pub mod admission;
pub mod options;
pub mod pod;
pub mod scan;
pub mod sidecar;
pub mod webhook;

use std::path::PathBuf;

pub use admission::{review, AdmissionReviewResponse, MalformedReview};
pub use webhook::{run, WebhookError};

/// The label that opts a pod in.
pub const INJECT_LABEL: &str = "trousseau.keysuite.app/inject";
/// The one value of [`INJECT_LABEL`] that opts in, exactly as the chart's `objectSelector`
/// matches it.
pub const INJECT_VALUE: &str = "true";
/// Prefix of every annotation the injector reads or writes.
pub const ANNOTATION_PREFIX: &str = "trousseau.keysuite.app/";
/// The marker the injector leaves on a pod it changed; its value is how the proxy was injected
/// (`native-sidecar` or `container`).
pub const INJECTED_ANNOTATION: &str = "trousseau.keysuite.app/injected";
/// Annotation: the ConfigMap holding `config.yaml` (default [`options::DEFAULT_CONFIG`]).
pub const CONFIG_ANNOTATION: &str = "trousseau.keysuite.app/config";
/// Annotation: the Secret holding `client_secret`, `session_secrets` and `signing_key.pem`
/// (default [`options::DEFAULT_SECRET`]).
pub const SECRET_ANNOTATION: &str = "trousseau.keysuite.app/secret";
/// Annotation: the app's port, a number or a container port name (default: the first port of
/// the first container that declares one).
pub const PORT_ANNOTATION: &str = "trousseau.keysuite.app/port";
/// Annotation: comma-separated paths proxied without a session (`routes.public`).
pub const PUBLIC_PATHS_ANNOTATION: &str = "trousseau.keysuite.app/public-paths";
/// Annotation: the port the proxy listens on inside the pod (default [`options::DEFAULT_PROXY_PORT`]).
pub const PROXY_PORT_ANNOTATION: &str = "trousseau.keysuite.app/proxy-port";

/// `kubectl`'s annotation naming the pod's main container: the app, unless `port` says otherwise.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// Every annotation the injector understands; any other under the prefix is reported as a
/// likely typo.
pub(crate) const KNOWN_ANNOTATIONS: &[&str] = &[
    CONFIG_ANNOTATION,
    SECRET_ANNOTATION,
    PORT_ANNOTATION,
    PUBLIC_PATHS_ANNOTATION,
    PROXY_PORT_ANNOTATION,
    INJECTED_ANNOTATION,
];

/// The name of the injected container.
pub const PROXY_CONTAINER: &str = "trousseau-proxy";

/// First Kubernetes minor version (1.x) whose API server accepts native sidecars by default.
pub const NATIVE_SIDECAR_MINOR: u32 = 29;

/// `--native-sidecar`: how to inject the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NativeSidecarMode {
    /// Native sidecar when `--kube-version` is 1.29 or newer (or not given: every supported
    /// Kubernetes release is), a regular container otherwise.
    Auto,
    /// Always a native sidecar: an `initContainers` entry with `restartPolicy: Always`.
    True,
    /// Always a regular container (clusters older than 1.29).
    False,
}

impl NativeSidecarMode {
    /// Whether to inject a native sidecar, given the cluster version the operator told us
    /// (`v1.30.2`, `1.28`, `v1.29.0-eks-1234`).
    pub fn resolve(self, kube_version: Option<&str>) -> Result<bool, String> {
        match self {
            NativeSidecarMode::True => Ok(true),
            NativeSidecarMode::False => Ok(false),
            NativeSidecarMode::Auto => match kube_version {
                None => Ok(true),
                Some(v) => {
                    let (major, minor) = parse_kube_version(v)
                        .ok_or_else(|| format!("--kube-version `{v}` is not a version like v1.30.2"))?;
                    Ok(major > 1 || minor >= NATIVE_SIDECAR_MINOR)
                }
            },
        }
    }
}

/// `1.30`, `v1.30.2`, `v1.29.0-eks-1234`, `1.28+` → (1, 30).
fn parse_kube_version(text: &str) -> Option<(u32, u32)> {
    let text = text.trim().trim_start_matches('v');
    let mut parts = text.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts.next()?.chars().take_while(char::is_ascii_digit).collect();
    Some((major, minor.parse().ok()?))
}

/// What every injection needs to know, decided once at start.
#[derive(Clone, Debug)]
pub struct InjectorSettings {
    /// The proxy image of injected containers.
    pub image: String,
    /// Inject a native sidecar (true) or a regular container (false).
    pub native_sidecar: bool,
}

/// The default proxy image: this build's own version.
pub fn default_image() -> String {
    format!("ghcr.io/keysuite/trousseau-proxy:{}", env!("CARGO_PKG_VERSION"))
}

/// `trousseau-proxy inject-webhook` flags.
#[derive(clap::Args, Debug)]
pub struct WebhookArgs {
    /// Where to listen (HTTPS).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: String,
    /// The serving certificate chain (PEM); re-read when it changes.
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// The serving certificate's private key (PEM); re-read when it changes.
    #[arg(long)]
    pub tls_key: PathBuf,
    /// Inject a native sidecar (Kubernetes 1.29+) or a regular container.
    #[arg(long, value_enum, default_value_t = NativeSidecarMode::Auto)]
    pub native_sidecar: NativeSidecarMode,
    /// The cluster's Kubernetes version (e.g. v1.30.2), for `--native-sidecar auto`. The Helm
    /// chart passes the version it was installed on.
    #[arg(long, env = "TROUSSEAU_INJECT_KUBE_VERSION")]
    pub kube_version: Option<String>,
    /// The proxy image to inject. Default: this build's version.
    #[arg(long)]
    pub image: Option<String>,
    /// Seconds between checks of the certificate files.
    #[arg(long, default_value_t = 10)]
    pub cert_reload_seconds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_cluster_version() {
        let auto = NativeSidecarMode::Auto;
        assert_eq!(auto.resolve(Some("v1.29.0")), Ok(true));
        assert_eq!(auto.resolve(Some("v1.33.1-eks-1234")), Ok(true));
        assert_eq!(auto.resolve(Some("1.28+")), Ok(false));
        assert_eq!(auto.resolve(Some("v1.27.3-gke.100")), Ok(false));
        assert_eq!(auto.resolve(None), Ok(true));
        assert!(auto.resolve(Some("latest")).is_err());
        assert_eq!(NativeSidecarMode::False.resolve(Some("v1.33.0")), Ok(false));
        assert_eq!(NativeSidecarMode::True.resolve(Some("v1.20.0")), Ok(true));
    }
}
