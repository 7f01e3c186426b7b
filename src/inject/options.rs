//! What a pod asks for: the opt-in label and the `trousseau.keysuite.app/*` annotations, read and
//! checked before anything is changed, so a typo is a clear answer and never a half-injected pod.

use serde_json::Value;

use super::{ANNOTATION_PREFIX, INJECTED_ANNOTATION, INJECT_LABEL};

/// Annotation: the ConfigMap holding `config.yaml` (default [`DEFAULT_CONFIG`]).
pub const CONFIG_ANNOTATION: &str = "trousseau.keysuite.app/config";
/// Annotation: the Secret holding `client_secret`, `session_secrets` and `signing_key.pem`
/// (default [`DEFAULT_SECRET`]).
pub const SECRET_ANNOTATION: &str = "trousseau.keysuite.app/secret";
/// Annotation: the app's port, a number or a container port name (default: the first port of
/// the first container that declares one).
pub const PORT_ANNOTATION: &str = "trousseau.keysuite.app/port";
/// Annotation: comma-separated paths proxied without a session (`routes.public`).
pub const PUBLIC_PATHS_ANNOTATION: &str = "trousseau.keysuite.app/public-paths";
/// Annotation: the port the proxy listens on inside the pod (default [`DEFAULT_PROXY_PORT`]).
pub const PROXY_PORT_ANNOTATION: &str = "trousseau.keysuite.app/proxy-port";

/// Default ConfigMap name.
pub const DEFAULT_CONFIG: &str = "trousseau-proxy";
/// Default Secret name.
pub const DEFAULT_SECRET: &str = "trousseau-proxy";
/// Default proxy port.
pub const DEFAULT_PROXY_PORT: u16 = 4180;

/// Every annotation the injector understands; any other under the prefix is reported as a
/// likely typo.
const KNOWN_ANNOTATIONS: &[&str] = &[
    CONFIG_ANNOTATION,
    SECRET_ANNOTATION,
    PORT_ANNOTATION,
    PUBLIC_PATHS_ANNOTATION,
    PROXY_PORT_ANNOTATION,
    INJECTED_ANNOTATION,
];

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
    /// Public paths, already checked to start with `/`.
    pub public_paths: Vec<String>,
    /// The proxy's port inside the pod.
    pub proxy_port: u16,
    /// Annotations under our prefix that we do not know (likely typos), for a warning.
    pub unknown_annotations: Vec<String>,
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
    /// A public path that does not start with `/`.
    #[error("annotation {PUBLIC_PATHS_ANNOTATION}: `{0}` is not a path starting with `/` (separate paths with commas)")]
    BadPublicPath(String),
}

/// Whether the pod opted in (`trousseau.keysuite.app/inject: "true"`).
pub fn opted_in(pod: &Value) -> bool {
    pod.pointer("/metadata/labels")
        .and_then(|labels| labels.get(INJECT_LABEL))
        .and_then(Value::as_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The value of one annotation, if the pod has an annotations map holding it as a string.
pub fn annotation<'a>(pod: &'a Value, name: &str) -> Option<&'a str> {
    pod.pointer("/metadata/annotations")?.get(name)?.as_str()
}

impl Options {
    /// Reads the options from the pod's annotations (an absent annotations map means defaults).
    pub fn from_pod(pod: &Value) -> Result<Options, OptionsError> {
        let config_map = object_name(pod, CONFIG_ANNOTATION, DEFAULT_CONFIG)?;
        let secret = object_name(pod, SECRET_ANNOTATION, DEFAULT_SECRET)?;
        let app_port = match annotation(pod, PORT_ANNOTATION).map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(parse_port_ref(text).ok_or_else(|| OptionsError::BadPort {
                annotation: PORT_ANNOTATION,
                value: text.to_string(),
            })?),
        };
        let proxy_port = match annotation(pod, PROXY_PORT_ANNOTATION).map(str::trim) {
            None | Some("") => DEFAULT_PROXY_PORT,
            Some(text) => text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| OptionsError::BadPort {
                annotation: PROXY_PORT_ANNOTATION,
                value: text.to_string(),
            })?,
        };
        let public_paths = match annotation(pod, PUBLIC_PATHS_ANNOTATION) {
            None => Vec::new(),
            Some(text) => text
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    if p.starts_with('/') && !p.chars().any(char::is_whitespace) {
                        Ok(p.to_string())
                    } else {
                        Err(OptionsError::BadPublicPath(p.to_string()))
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        let unknown_annotations = pod
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .map(|map| {
                map.keys()
                    .filter(|k| k.starts_with(ANNOTATION_PREFIX) && !KNOWN_ANNOTATIONS.contains(&k.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(Options { config_map, secret, app_port, public_paths, proxy_port, unknown_annotations })
    }
}

fn object_name(pod: &Value, annotation_name: &'static str, default: &str) -> Result<String, OptionsError> {
    match annotation(pod, annotation_name).map(str::trim) {
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
    use serde_json::json;

    fn pod(annotations: Value) -> Value {
        json!({"metadata": {"annotations": annotations}})
    }

    #[test]
    fn a_pod_without_annotations_gets_the_defaults() {
        let options = Options::from_pod(&json!({"metadata": {}})).unwrap();
        assert_eq!(options.config_map, DEFAULT_CONFIG);
        assert_eq!(options.secret, DEFAULT_SECRET);
        assert_eq!(options.app_port, None);
        assert_eq!(options.proxy_port, DEFAULT_PROXY_PORT);
        assert!(options.public_paths.is_empty());
    }

    #[test]
    fn annotations_are_read_and_checked() {
        let options = Options::from_pod(&pod(json!({
            CONFIG_ANNOTATION: "shop-auth",
            SECRET_ANNOTATION: "shop-auth-secrets",
            PORT_ANNOTATION: "http",
            PUBLIC_PATHS_ANNOTATION: " /healthz, /assets/* ,",
            PROXY_PORT_ANNOTATION: "9000",
            "trousseau.keysuite.app/confg": "typo",
        })))
        .unwrap();
        assert_eq!(options.config_map, "shop-auth");
        assert_eq!(options.secret, "shop-auth-secrets");
        assert_eq!(options.app_port, Some(PortRef::Name("http".into())));
        assert_eq!(options.public_paths, ["/healthz", "/assets/*"]);
        assert_eq!(options.proxy_port, 9000);
        assert_eq!(options.unknown_annotations, ["trousseau.keysuite.app/confg"]);

        assert_eq!(
            Options::from_pod(&pod(json!({PORT_ANNOTATION: "8080"}))).unwrap().app_port,
            Some(PortRef::Number(8080))
        );
        for bad in ["0", "70000", "HTTP", "a--b", "-http", "way-too-long-port-name"] {
            assert!(Options::from_pod(&pod(json!({PORT_ANNOTATION: bad}))).is_err(), "{bad}");
        }
        assert!(Options::from_pod(&pod(json!({CONFIG_ANNOTATION: "Not_A_Name"}))).is_err());
        assert!(Options::from_pod(&pod(json!({PUBLIC_PATHS_ANNOTATION: "healthz"}))).is_err());
        assert!(Options::from_pod(&pod(json!({PROXY_PORT_ANNOTATION: "http"}))).is_err());
    }

    #[test]
    fn only_the_exact_label_opts_in() {
        assert!(opted_in(&json!({"metadata": {"labels": {INJECT_LABEL: "true"}}})));
        assert!(!opted_in(&json!({"metadata": {"labels": {INJECT_LABEL: "false"}}})));
        assert!(!opted_in(&json!({"metadata": {}})));
    }
}
