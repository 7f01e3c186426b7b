//! What a pod asks for: the opt-in label and the `trousseau.keysuite.app/*` annotations, read and
//! checked before anything is changed, so a typo is a clear answer and never a half-injected pod.

use super::scan::{Annotations, PodMeta};
pub use super::{CONFIG_ANNOTATION, DEFAULT_CONTAINER_ANNOTATION, PORT_ANNOTATION, PROXY_PORT_ANNOTATION, PUBLIC_PATHS_ANNOTATION, SECRET_ANNOTATION};
use super::INJECT_VALUE;

/// Default ConfigMap name.
pub const DEFAULT_CONFIG: &str = "trousseau-proxy";
/// Default Secret name.
pub const DEFAULT_SECRET: &str = "trousseau-proxy";
/// Default proxy port.
pub const DEFAULT_PROXY_PORT: u16 = 4180;
/// The longest annotation value read: Kubernetes refuses a pod whose annotations add up to more
/// (but only after the webhook ran, so the injector checks it first rather than expand it).
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// The app's port as the pod author named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    /// A container port number.
    Number(u16),
    /// A container port name (`http`).
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => write!(f, "`{name}`"),
        }
    }
}

/// The injection options of one pod, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// ConfigMap name.
    pub config_map: String,
    /// Secret name.
    pub secret: String,
    /// The app's port; `None`: the first declared one.
    pub app_port: Option<PortRef>,
    /// Public paths, each checked to start with `/`, comma-separated (as
    /// `TROUSSEAU_PROXY_ROUTES_PUBLIC` takes them); empty: none given.
    pub public_paths: String,
    /// The proxy's port inside the pod.
    pub proxy_port: u16,
    /// Annotations under our prefix that we do not know (likely typos), for a warning: the first
    /// few of them.
    pub unknown_annotations: Vec<String>,
    /// How many unknown annotations there are in all.
    pub unknown_annotation_count: usize,
}

/// Why a pod's annotations cannot be used. Each message names the annotation and says what is
/// expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    /// A ConfigMap or Secret name that Kubernetes would refuse.
    #[error("annotation {annotation}: `{value}` is not a valid object name (lower-case letters, digits, `-` and `.`)")]
    BadName {
        /// The annotation.
        annotation: &'static str,
        /// Its value.
        value: String,
    },
    /// A port that is neither a number in 1–65535 nor a port name.
    #[error("annotation {annotation}: `{value}` is neither a port number (1-65535) nor a port name")]
    BadPort {
        /// The annotation.
        annotation: &'static str,
        /// Its value.
        value: String,
    },
    /// An annotation longer than Kubernetes allows for all annotations together.
    #[error("annotation {0}: longer than {MAX_ANNOTATION_BYTES} bytes, Kubernetes' limit for all annotations together")]
    TooLong(&'static str),
    /// A public path that does not start with `/`, or holds a character that could turn it into
    /// something else on the way to the proxy.
    #[error("annotation {PUBLIC_PATHS_ANNOTATION}: `{0}` is not a plain path: it must start with `/` and hold only letters, digits and /-._~*%+@!= (separate paths with commas)")]
    BadPublicPath(String),
}

/// Whether the pod opted in: the label is exactly [`INJECT_VALUE`], the one value the chart's
/// `objectSelector` sends to the webhook (`True` or `yes` would be injected by one and skipped by
/// the other).
pub fn opted_in(meta: &PodMeta<'_>) -> bool {
    meta.inject_label.as_deref() == Some(INJECT_VALUE)
}

impl Options {
    /// Reads the options from the pod's annotations (an absent annotations map means defaults).
    pub fn from_annotations(annotations: &Annotations<'_>) -> Result<Options, OptionsError> {
        let config_map = object_name(annotations, CONFIG_ANNOTATION, DEFAULT_CONFIG)?;
        let secret = object_name(annotations, SECRET_ANNOTATION, DEFAULT_SECRET)?;
        let app_port = match annotations.get(PORT_ANNOTATION).map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(parse_port_ref(text).ok_or_else(|| OptionsError::BadPort {
                annotation: PORT_ANNOTATION,
                value: text.to_string(),
            })?),
        };
        let proxy_port = match annotations.get(PROXY_PORT_ANNOTATION).map(str::trim) {
            None | Some("") => DEFAULT_PROXY_PORT,
            Some(text) => text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| OptionsError::BadPort {
                annotation: PROXY_PORT_ANNOTATION,
                value: text.to_string(),
            })?,
        };
        let public_paths = match annotations.get(PUBLIC_PATHS_ANNOTATION) {
            None => String::new(),
            Some(text) if text.len() > MAX_ANNOTATION_BYTES => return Err(OptionsError::TooLong(PUBLIC_PATHS_ANNOTATION)),
            Some(text) => {
                // One string, not one allocation per path: the annotation may hold many.
                let mut joined = String::with_capacity(text.len());
                for path in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    if !is_plain_public_path(path) {
                        return Err(OptionsError::BadPublicPath(path.to_string()));
                    }
                    if !joined.is_empty() {
                        joined.push(',');
                    }
                    joined.push_str(path);
                }
                joined
            }
        };
        let unknown_annotations = annotations.unknown.iter().map(|a| a.to_string()).collect();
        Ok(Options {
            config_map,
            secret,
            app_port,
            public_paths,
            proxy_port,
            unknown_annotations,
            unknown_annotation_count: annotations.unknown_count,
        })
    }
}

/// A public path the sidecar can be given as written: it starts with `/` and holds only letters,
/// digits and `/-._~*%+@!=`. Anything else could turn into something else on the way: the value
/// travels in an environment variable, where the kubelet expands `$(VAR)`, and the proxy reads
/// YAML syntax (`[`, `{`, `:`, quotes, `#`) there.
fn is_plain_public_path(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~*%+@!=".contains(&b))
}

fn object_name(annotations: &Annotations<'_>, annotation_name: &'static str, default: &str) -> Result<String, OptionsError> {
    match annotations.get(annotation_name).map(str::trim) {
        None | Some("") => Ok(default.to_string()),
        Some(name) if is_dns_subdomain(name) => Ok(name.to_string()),
        Some(name) => Err(OptionsError::BadName { annotation: annotation_name, value: name.to_string() }),
    }
}

/// A number in 1–65535 or an IANA service name as Kubernetes accepts for port names.
pub fn parse_port_ref(text: &str) -> Option<PortRef> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u16>().ok().filter(|p| *p > 0).map(PortRef::Number);
    }
    is_port_name(text).then(|| PortRef::Name(text.to_string()))
}

/// Kubernetes' IANA_SVC_NAME: 1–15 lower-case letters, digits and `-`, at least one letter, no
/// `-` at either end, no `--`.
pub fn is_port_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Kubernetes' DNS-1123 subdomain: what ConfigMap and Secret names must be.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::scan;
    use crate::inject::INJECT_LABEL;
    use serde_json::{json, Value};

    fn options(annotations: Value) -> Result<Options, OptionsError> {
        let pod = json!({"metadata": {"annotations": annotations}}).to_string();
        Options::from_annotations(&scan::metadata(&pod).unwrap().annotations)
    }

    #[test]
    fn a_pod_without_annotations_gets_the_defaults() {
        let options = Options::from_annotations(&scan::metadata(r#"{"metadata": {}}"#).unwrap().annotations).unwrap();
        assert_eq!(options.config_map, DEFAULT_CONFIG);
        assert_eq!(options.secret, DEFAULT_SECRET);
        assert_eq!(options.app_port, None);
        assert_eq!(options.proxy_port, DEFAULT_PROXY_PORT);
        assert!(options.public_paths.is_empty());
    }

    #[test]
    fn annotations_are_read_and_checked() {
        let read = options(json!({
            CONFIG_ANNOTATION: "shop-auth",
            SECRET_ANNOTATION: "shop-auth-secrets",
            PORT_ANNOTATION: "http",
            PUBLIC_PATHS_ANNOTATION: " /healthz, /assets/* ,",
            PROXY_PORT_ANNOTATION: "9000",
            "trousseau.keysuite.app/confg": "typo",
        }))
        .unwrap();
        assert_eq!(read.config_map, "shop-auth");
        assert_eq!(read.secret, "shop-auth-secrets");
        assert_eq!(read.app_port, Some(PortRef::Name("http".into())));
        assert_eq!(read.public_paths, "/healthz,/assets/*");
        assert_eq!(read.proxy_port, 9000);
        assert_eq!(read.unknown_annotations, ["trousseau.keysuite.app/confg"]);

        assert_eq!(options(json!({PORT_ANNOTATION: "8080"})).unwrap().app_port, Some(PortRef::Number(8080)));
        for bad in ["0", "70000", "HTTP", "a--b", "-http", "way-too-long-port-name"] {
            assert!(options(json!({PORT_ANNOTATION: bad})).is_err(), "{bad}");
        }
        assert!(options(json!({CONFIG_ANNOTATION: "Not_A_Name"})).is_err());
        assert!(options(json!({PUBLIC_PATHS_ANNOTATION: "healthz"})).is_err());
        assert!(options(json!({PROXY_PORT_ANNOTATION: "http"})).is_err());
        let huge = "/,".repeat(MAX_ANNOTATION_BYTES / 2 + 1);
        assert_eq!(options(json!({PUBLIC_PATHS_ANNOTATION: huge})), Err(OptionsError::TooLong(PUBLIC_PATHS_ANNOTATION)));
    }

    #[test]
    fn many_unknown_annotations_are_named_a_few_and_counted() {
        let many: serde_json::Map<String, Value> =
            (0..100).map(|i| (format!("trousseau.keysuite.app/x{i}"), json!(""))).collect();
        let read = options(Value::Object(many)).unwrap();
        assert_eq!(read.unknown_annotations.len(), scan::MAX_NAMED_UNKNOWN);
        assert_eq!(read.unknown_annotation_count, 100);
    }

    #[test]
    fn only_the_exact_label_opts_in() {
        let label = |value: Value| {
            let pod = json!({"metadata": {"labels": {INJECT_LABEL: value}}}).to_string();
            opted_in(&scan::metadata(&pod).unwrap())
        };
        assert!(label(json!("true")));
        for other in ["True", "TRUE", "false", "yes", "1", " true", ""] {
            assert!(!label(json!(other)), "{other:?}");
        }
        assert!(!opted_in(&scan::metadata(r#"{"metadata": {}}"#).unwrap()));
    }
}
