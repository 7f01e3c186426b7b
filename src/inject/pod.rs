//! The change made to one pod: decide, then rewrite a copy of the pod.
//!
//! Named-port takeover is how traffic reaches the proxy without iptables (which needs
//! `NET_ADMIN`, forbidden by the restricted Pod Security Standard): a Service whose `targetPort`
//! is a name resolves it, per pod, to the first container port with that name. The app's port
//! `http` is renamed (`app-http`) and the proxy's port takes the name `http`, so the Service now
//! lands on the proxy, which forwards to the app on `127.0.0.1`. The app's own probes and hooks
//! that named the port are rewritten to its number, since the name has moved.

use serde_json::{json, Map, Value};

use super::options::{self, Options, OptionsError, PortRef};
use super::sidecar::{Sidecar, CONFIG_VOLUME, SECRETS_VOLUME};
use super::{InjectorSettings, INJECTED_ANNOTATION, PROXY_CONTAINER};

/// Port name the proxy takes when the app's port has no name to take over.
pub const FALLBACK_PORT_NAME: &str = "trousseau";

/// `kubectl`'s annotation naming the pod's main container.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// What the injector decided for one pod.
#[derive(Debug)]
pub enum Decision {
    /// The pod did not opt in: leave it alone.
    NotOptedIn,
    /// The pod already has the proxy (marker annotation or container): leave it alone.
    AlreadyInjected,
    /// Inject: the pod as it must become, and notes for its author.
    Inject {
        /// The changed pod.
        pod: Value,
        /// Things the author should know (shown by `kubectl`).
        warnings: Vec<String>,
    },
}

/// Why an opted-in pod cannot get its proxy. The pod is then refused, never admitted without
/// the protection it asked for.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// An annotation is unusable.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The object has no `spec.containers` list.
    #[error("the pod has no spec.containers")]
    NoContainers,
    /// No container declares the port named by the annotation.
    #[error("no container declares the TCP port {0} named by trousseau.keysuite.app/port")]
    PortNotFound(PortRef),
    /// Nothing says which port the app serves on.
    #[error("no container declares a TCP port: set trousseau.keysuite.app/port to the app's port")]
    NoPort,
    /// The proxy's port is already used in the pod.
    #[error("port {0} is already used in the pod: set trousseau.keysuite.app/proxy-port to a free port")]
    ProxyPortTaken(u16),
    /// A name the injector must add is already used in the pod.
    #[error("the pod already has a {kind} named `{name}`")]
    NameTaken {
        /// `volume` or `port`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A field has the wrong JSON type.
    #[error("malformed pod: {0}")]
    Malformed(&'static str),
}

/// The app's port, found in the pod.
#[derive(Debug)]
struct AppPort {
    /// Index in `spec.containers` of the container declaring it, when one does.
    declared: Option<(usize, usize)>,
    number: u16,
    name: Option<String>,
}

/// Decides what to do with `pod` and, when injecting, returns the changed pod.
pub fn decide(pod: &Value, settings: &InjectorSettings) -> Result<Decision, PodError> {
    if !options::opted_in(pod) {
        return Ok(Decision::NotOptedIn);
    }
    if already_injected(pod) {
        return Ok(Decision::AlreadyInjected);
    }
    let options = Options::from_pod(pod)?;
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or(PodError::NoContainers)?;

    let app = find_app_port(pod, containers, options.app_port.as_ref())?;
    if app.number == options.proxy_port || all_ports(pod).any(|(_, number)| number == Some(options.proxy_port)) {
        return Err(PodError::ProxyPortTaken(options.proxy_port));
    }
    let taken: Vec<String> = all_ports(pod).filter_map(|(name, _)| name).collect();
    let mut warnings: Vec<String> = options
        .unknown_annotations
        .iter()
        .map(|a| format!("trousseau-proxy: unknown annotation {a} ignored (typo?)"))
        .collect();

    let mut out = pod.clone();
    let proxy_port_name = match (&app.name, app.declared) {
        (Some(name), Some((c, p))) => {
            let renamed = app_port_name(name, app.number, &taken)?;
            out["spec"]["containers"][c]["ports"][p]["name"] = json!(renamed);
            rewrite_named_port(&mut out["spec"]["containers"][c], name, app.number);
            name.clone()
        }
        _ => {
            if taken.iter().any(|n| n == FALLBACK_PORT_NAME) {
                return Err(PodError::NameTaken { kind: "port", name: FALLBACK_PORT_NAME.into() });
            }
            warnings.push(format!(
                "trousseau-proxy: port {} has no name to take over; set the Service's targetPort to `{}` ({}) \
                 and keep {} unreachable (bind the app to 127.0.0.1 or use a NetworkPolicy)",
                app.number, FALLBACK_PORT_NAME, options.proxy_port, app.number
            ));
            FALLBACK_PORT_NAME.to_string()
        }
    };

    let sidecar = Sidecar {
        image: &settings.image,
        port_name: &proxy_port_name,
        proxy_port: options.proxy_port,
        app_port: app.number,
        public_paths: &options.public_paths,
        native: settings.native_sidecar,
    };
    let spec = out.get_mut("spec").and_then(Value::as_object_mut).ok_or(PodError::Malformed("spec is not an object"))?;
    let volumes = array_field(spec, "volumes")?;
    for name in [CONFIG_VOLUME, SECRETS_VOLUME] {
        if volumes.iter().any(|v| v.get("name").and_then(Value::as_str) == Some(name)) {
            return Err(PodError::NameTaken { kind: "volume", name: name.into() });
        }
    }
    volumes.extend(Sidecar::volumes(&options.config_map, &options.secret));
    let list = if settings.native_sidecar { "initContainers" } else { "containers" };
    // Last: existing init containers (migrations, ...) run first and need no proxy; a native
    // sidecar placed last still starts, and is ready, before any app container.
    array_field(spec, list)?.push(sidecar.container());

    let metadata = out
        .as_object_mut()
        .ok_or(PodError::Malformed("the pod is not an object"))?
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let annotations = metadata
        .as_object_mut()
        .ok_or(PodError::Malformed("metadata is not an object"))?
        .entry("annotations")
        .or_insert_with(|| json!({}));
    // `annotations: null` is how some clients write "none".
    if annotations.is_null() {
        *annotations = json!({});
    }
    annotations
        .as_object_mut()
        .ok_or(PodError::Malformed("metadata.annotations is not an object"))?
        .insert(INJECTED_ANNOTATION.into(), json!(if settings.native_sidecar { "native-sidecar" } else { "container" }));

    Ok(Decision::Inject { pod: out, warnings })
}

/// The marker annotation, or a container already named like ours (added by hand or by an
/// earlier injection whose annotation was dropped).
fn already_injected(pod: &Value) -> bool {
    if options::annotation(pod, INJECTED_ANNOTATION).is_some() {
        return true;
    }
    ["/spec/containers", "/spec/initContainers"].iter().any(|list| {
        pod.pointer(list)
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c.get("name").and_then(Value::as_str) == Some(PROXY_CONTAINER)))
    })
}

/// Every declared port of the pod (containers and init containers): (name, number).
fn all_ports(pod: &Value) -> impl Iterator<Item = (Option<String>, Option<u16>)> + '_ {
    ["/spec/containers", "/spec/initContainers"]
        .into_iter()
        .filter_map(|list| pod.pointer(list).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .map(|p| {
            (
                p.get("name").and_then(Value::as_str).map(String::from),
                p.get("containerPort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()),
            )
        })
}

fn is_tcp(port: &Value) -> bool {
    port.get("protocol").and_then(Value::as_str).is_none_or(|p| p == "TCP")
}

fn find_app_port(pod: &Value, containers: &[Value], wanted: Option<&PortRef>) -> Result<AppPort, PodError> {
    let declared = |c: usize, p: usize, port: &Value| -> Option<AppPort> {
        let number = port.get("containerPort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok())?;
        let name = port.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).map(String::from);
        Some(AppPort { declared: Some((c, p)), number, name })
    };
    let ports_of = |c: &Value| c.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
    match wanted {
        Some(PortRef::Name(name)) => {
            for (c, container) in containers.iter().enumerate() {
                for (p, port) in ports_of(container).iter().enumerate() {
                    if port.get("name").and_then(Value::as_str) == Some(name.as_str()) && is_tcp(port) {
                        return declared(c, p, port).ok_or(PodError::Malformed("a containerPort is not a port number"));
                    }
                }
            }
            Err(PodError::PortNotFound(PortRef::Name(name.clone())))
        }
        Some(PortRef::Number(number)) => {
            for (c, container) in containers.iter().enumerate() {
                for (p, port) in ports_of(container).iter().enumerate() {
                    if port.get("containerPort").and_then(Value::as_u64) == Some(u64::from(*number)) && is_tcp(port) {
                        return declared(c, p, port).ok_or(PodError::Malformed("a containerPort is not a port number"));
                    }
                }
            }
            // Undeclared ports are legal: the app still listens there.
            Ok(AppPort { declared: None, number: *number, name: None })
        }
        None => {
            let main = options::annotation(pod, DEFAULT_CONTAINER_ANNOTATION)
                .and_then(|name| containers.iter().position(|c| c.get("name").and_then(Value::as_str) == Some(name)))
                .unwrap_or(0);
            let order = std::iter::once(main).chain((0..containers.len()).filter(|&c| c != main));
            for c in order {
                if let Some((p, port)) = ports_of(&containers[c]).iter().enumerate().find(|(_, port)| is_tcp(port)) {
                    return declared(c, p, port).ok_or(PodError::Malformed("a containerPort is not a port number"));
                }
            }
            Err(PodError::NoPort)
        }
    }
}

/// The app's port's new name: `app-<name>` when that is a valid, unused port name, else
/// `app-<number>`.
fn app_port_name(name: &str, number: u16, taken: &[String]) -> Result<String, PodError> {
    let free = |n: &String| options::is_port_name(n) && !taken.contains(n);
    [format!("app-{name}"), format!("app-{number}")]
        .into_iter()
        .find(free)
        .ok_or_else(|| PodError::NameTaken { kind: "port", name: format!("app-{number}") })
}

/// Rewrites the container's probes and lifecycle hooks that name port `name` to `number`.
fn rewrite_named_port(container: &mut Value, name: &str, number: u16) {
    let targets = ["livenessProbe", "readinessProbe", "startupProbe"]
        .into_iter()
        .flat_map(|probe| ["httpGet", "tcpSocket"].map(|h| format!("/{probe}/{h}/port")))
        .chain(
            ["postStart", "preStop"]
                .into_iter()
                .flat_map(|hook| ["httpGet", "tcpSocket"].map(|h| format!("/lifecycle/{hook}/{h}/port"))),
        );
    for pointer in targets {
        if let Some(port) = container.pointer_mut(&pointer) {
            if port.as_str() == Some(name) {
                *port = json!(number);
            }
        }
    }
}

/// `spec[key]` as a mutable list, created when absent (or `null`).
fn array_field<'a>(spec: &'a mut Map<String, Value>, key: &'static str) -> Result<&'a mut Vec<Value>, PodError> {
    let field = spec.entry(key).or_insert_with(|| json!([]));
    if field.is_null() {
        *field = json!([]);
    }
    field.as_array_mut().ok_or(PodError::Malformed(match key {
        "volumes" => "spec.volumes is not a list",
        "initContainers" => "spec.initContainers is not a list",
        _ => "spec.containers is not a list",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(native: bool) -> InjectorSettings {
        InjectorSettings { image: "trousseau-proxy:test".into(), native_sidecar: native }
    }

    #[test]
    fn a_fifteen_character_port_name_is_renamed_by_number() {
        assert_eq!(app_port_name("http", 8080, &[]).unwrap(), "app-http");
        assert_eq!(app_port_name("fifteen-chars-x", 8080, &[]).unwrap(), "app-8080");
        assert_eq!(app_port_name("http", 8080, &["app-http".into()]).unwrap(), "app-8080");
    }

    #[test]
    fn probes_and_hooks_naming_the_port_get_its_number() {
        let mut c = json!({
            "livenessProbe": {"httpGet": {"path": "/", "port": "http"}},
            "readinessProbe": {"tcpSocket": {"port": "http"}},
            "startupProbe": {"httpGet": {"port": "metrics"}},
            "lifecycle": {"preStop": {"httpGet": {"port": "http"}}},
        });
        rewrite_named_port(&mut c, "http", 8080);
        assert_eq!(c.pointer("/livenessProbe/httpGet/port"), Some(&json!(8080)));
        assert_eq!(c.pointer("/readinessProbe/tcpSocket/port"), Some(&json!(8080)));
        assert_eq!(c.pointer("/startupProbe/httpGet/port"), Some(&json!("metrics")));
        assert_eq!(c.pointer("/lifecycle/preStop/httpGet/port"), Some(&json!(8080)));
    }

    #[test]
    fn an_opted_in_pod_without_ports_is_refused_with_a_hint() {
        let pod = json!({
            "metadata": {"labels": {"trousseau.keysuite.app/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "app"}]},
        });
        let err = decide(&pod, &settings(true)).unwrap_err();
        assert!(err.to_string().contains("trousseau.keysuite.app/port"), "{err}");
    }

    #[test]
    fn the_proxy_port_must_be_free() {
        let pod = json!({
            "metadata": {"labels": {"trousseau.keysuite.app/inject": "true"}},
            "spec": {"containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 4180}]}]},
        });
        assert!(matches!(decide(&pod, &settings(true)), Err(PodError::ProxyPortTaken(4180))));
    }

    #[test]
    fn the_default_container_annotation_picks_the_app() {
        let pod = json!({
            "metadata": {
                "labels": {"trousseau.keysuite.app/inject": "true"},
                "annotations": {"kubectl.kubernetes.io/default-container": "web"},
            },
            "spec": {"containers": [
                {"name": "exporter", "ports": [{"name": "metrics", "containerPort": 9100}]},
                {"name": "web", "ports": [{"name": "http", "containerPort": 3000}]},
            ]},
        });
        let Decision::Inject { pod, .. } = decide(&pod, &settings(false)).unwrap() else { panic!("not injected") };
        assert_eq!(pod.pointer("/spec/containers/1/ports/0/name"), Some(&json!("app-http")));
        assert_eq!(pod.pointer("/spec/containers/0/ports/0/name"), Some(&json!("metrics")));
        assert_eq!(pod.pointer("/spec/containers/2/name"), Some(&json!("trousseau-proxy")));
    }
}
