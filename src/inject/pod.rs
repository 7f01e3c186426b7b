//! The change made to one pod: decide it, then write it as a JSON patch.
//!
//! Named-port takeover is how traffic reaches the proxy without iptables (which needs
//! `NET_ADMIN`, forbidden by the restricted Pod Security Standard): a Service whose `targetPort`
//! is a name resolves it, per pod, to the first port with that name — regular containers first,
//! then native sidecars. The app's port `http` is renamed (`app-http`) and the proxy's port takes
//! the name `http`, so the Service now lands on the proxy, which forwards to the app on
//! `127.0.0.1`. That only holds while the proxy's port is the *only* one with that name: a pod
//! where another container shares it is refused. The app's own probes and hooks that named the
//! port are rewritten to its number, since the name has moved.
//!
//! The pod is read through [`scan`] in two passes over the request body (where the app's port
//! is; then what could clash with the names and numbers that choice implies), and the patch is
//! the handful of operations the change needs, never a copy of the pod.

use serde_json::{json, Value};

use super::options::{self, Options, OptionsError, PortRef, DEFAULT_CONTAINER_ANNOTATION};
use super::scan::{self, ContainerView, List, PodMeta, PortView, SpecShape, SpecWalker, Text, PORT_REFERENCES};
use super::sidecar::{Sidecar, CONFIG_VOLUME, SECRETS_VOLUME};
use super::{InjectorSettings, INJECTED_ANNOTATION, PROXY_CONTAINER};

/// Port name the proxy takes when the app's port has no name to take over.
pub const FALLBACK_PORT_NAME: &str = "trousseau";

/// How many privileged containers a warning names.
const NAMED_PRIVILEGED: usize = 3;

/// What the injector decided for one pod.
#[derive(Debug)]
pub enum Decision {
    /// The pod did not opt in: leave it alone.
    NotOptedIn,
    /// The pod already has the proxy (marker annotation or container): leave it alone.
    AlreadyInjected,
    /// Inject: the RFC 6902 operations that change the pod, and notes for its author.
    Inject {
        /// The JSON patch, as a list of operations.
        patch: Vec<Value>,
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
    /// Another port of the pod has the name the proxy's port must take: a Service's named
    /// `targetPort` could resolve to it and skip the proxy.
    #[error(
        "port name `{name}` is also declared by container `{holder}`: a Service's targetPort `{name}` could reach it \
         instead of the proxy; give that port another name"
    )]
    PortNameShared {
        /// The port name.
        name: String,
        /// The container declaring it too.
        holder: String,
    },
    /// The app's port is bound on the node: the node's port would reach the app around the proxy.
    #[error(
        "the app's port {port} has hostPort {host_port}: the node's port would reach the app around the proxy; \
         remove hostPort and reach the pod through a Service"
    )]
    HostPort {
        /// The app's port.
        port: u16,
        /// Its `hostPort`.
        host_port: i64,
    },
    /// The pod is not what the API server sends (a field of the wrong type, a repeated key).
    #[error("malformed pod: {0}")]
    Malformed(String),
}

impl From<serde_json::Error> for PodError {
    fn from(e: serde_json::Error) -> PodError {
        PodError::Malformed(e.to_string())
    }
}

/// Decides what to do with the pod `object` (the JSON text of `request.object`, whose metadata
/// `meta` was read from it) and, when injecting, returns the patch.
pub fn decide(object: &str, meta: &PodMeta<'_>, settings: &InjectorSettings) -> Result<Decision, PodError> {
    if !options::opted_in(meta) {
        return Ok(Decision::NotOptedIn);
    }
    if meta.annotations.get(INJECTED_ANNOTATION).is_some() {
        return Ok(Decision::AlreadyInjected);
    }
    let options = Options::from_annotations(&meta.annotations);
    let mut locate = Locate {
        wanted: options.as_ref().ok().and_then(|o| o.app_port.clone()),
        main: meta.annotations.get(DEFAULT_CONTAINER_ANNOTATION),
        ..Locate::default()
    };
    let shape = scan::walk_spec(object, &mut locate)?;
    if locate.has_proxy_container {
        return Ok(Decision::AlreadyInjected);
    }
    let options = options?;
    if shape.containers.len == 0 {
        return Err(PodError::NoContainers);
    }
    let app = locate.app_port(options.app_port.as_ref())?;
    if let (Some(host_port), false) = (app.host_port, shape.host_network) {
        return Err(PodError::HostPort { port: app.number, host_port });
    }

    // What the app's port implies: the proxy's port name, and the app port's new one.
    let (proxy_port_name, renames) = match (&app.name, app.declared) {
        (Some(name), Some(_)) => (name.to_string(), vec![format!("app-{name}"), format!("app-{}", app.number)]),
        _ => (FALLBACK_PORT_NAME.to_string(), Vec::new()),
    };
    let clashes = clashes(object, &app, &options, &proxy_port_name, &renames)?;

    let mut warnings = warnings(&options, &app, &locate, &shape);
    let mut patch = Vec::new();
    take_over_port(&mut patch, &mut warnings, &app, &options, &renames, &clashes)?;

    let sidecar = Sidecar {
        image: &settings.image,
        port_name: &proxy_port_name,
        proxy_port: options.proxy_port,
        app_port: app.number,
        public_paths: &options.public_paths,
        native: settings.native_sidecar,
    };
    append(&mut patch, "volumes", shape.volumes, Sidecar::volumes(&options.config_map, &options.secret).into());
    // Last: existing init containers (migrations, ...) run first and need no proxy; a native
    // sidecar placed last still starts, and is ready, before any app container.
    let (list, shape_of_list) =
        if settings.native_sidecar { ("initContainers", shape.init_containers) } else { ("containers", shape.containers) };
    append(&mut patch, list, shape_of_list, vec![sidecar.container()]);

    let mode = json!(if settings.native_sidecar { "native-sidecar" } else { "container" });
    patch.push(match (meta.present, meta.annotations.present) {
        (false, _) => op("add", "/metadata".into(), json!({"annotations": {INJECTED_ANNOTATION: mode}})),
        (true, false) => op("add", "/metadata/annotations".into(), json!({INJECTED_ANNOTATION: mode})),
        (true, true) => op("add", format!("/metadata/annotations/{}", pointer_token(INJECTED_ANNOTATION)), mode),
    });
    Ok(Decision::Inject { patch, warnings })
}

/// Checks that the proxy's port, its port name and its volumes are free in the pod, and finds
/// what must change for the app's port to be renamed.
fn clashes<'q>(object: &str, app: &'q AppPort<'_>, options: &Options, proxy_port_name: &'q str, renames: &'q [String]) -> Result<Clashes<'q>, PodError> {
    let mut clashes = Clashes {
        app: app.declared,
        app_name: app.name.as_deref(),
        proxy_name: proxy_port_name,
        proxy_port: options.proxy_port,
        renames,
        ..Clashes::default()
    };
    scan::walk_spec(object, &mut clashes)?;
    if app.number == options.proxy_port || clashes.proxy_port_used {
        return Err(PodError::ProxyPortTaken(options.proxy_port));
    }
    if let Some((list, c)) = clashes.holder {
        let holder = clashes.holder_name.unwrap_or_else(|| format!("{}[{c}]", list.key()));
        return Err(PodError::PortNameShared { name: proxy_port_name.into(), holder });
    }
    if let Some(name) = clashes.volume_taken {
        return Err(PodError::NameTaken { kind: "volume", name: name.into() });
    }

    Ok(clashes)
}

/// The app's port hands its name to the proxy's (renamed `app-<name>`, and the container's
/// probes and references to it by name moved to its number), or, without a name to take over,
/// a warning saying how to point the Service at the proxy.
fn take_over_port(patch: &mut Vec<Value>, warnings: &mut Vec<String>, app: &AppPort<'_>, options: &Options, renames: &[String], clashes: &Clashes<'_>) -> Result<(), PodError> {
    match app.declared {
        Some((c, p)) if app.name.is_some() => {
            let renamed = renames
                .iter()
                .zip(clashes.rename_taken)
                .find(|(name, taken)| options::is_port_name(name) && !taken)
                .map(|(name, _)| name.clone())
                .ok_or_else(|| PodError::NameTaken { kind: "port", name: format!("app-{}", app.number) })?;
            patch.push(op("replace", format!("/spec/containers/{c}/ports/{p}/name"), json!(renamed)));
            for reference in &clashes.rewrites {
                patch.push(op("replace", format!("/spec/containers/{c}{}", PORT_REFERENCES[*reference]), json!(app.number)));
            }
        }
        _ => warnings.push(format!(
            "trousseau-proxy: port {} has no name to take over; set the Service's targetPort to `{}` ({}) \
             and keep {} unreachable (bind the app to 127.0.0.1 or use a NetworkPolicy)",
            app.number, FALLBACK_PORT_NAME, options.proxy_port, app.number
        )),
    }
    Ok(())
}

/// What the pod's author should hear about: unknown annotations, and the ways around the
/// proxy the injector cannot close (it cannot refuse them: they are the pod's own business).
fn warnings(options: &Options, app: &AppPort<'_>, locate: &Locate<'_, '_>, shape: &SpecShape) -> Vec<String> {
    let mut warnings: Vec<String> = options
        .unknown_annotations
        .iter()
        .map(|a| format!("trousseau-proxy: unknown annotation {a} ignored (typo?)"))
        .collect();
    if options.unknown_annotation_count > options.unknown_annotations.len() {
        warnings.push(format!(
            "trousseau-proxy: {} more unknown trousseau.keysuite.app/ annotations ignored",
            options.unknown_annotation_count - options.unknown_annotations.len()
        ));
    }
    if shape.host_network {
        warnings.push(format!(
            "trousseau-proxy: the pod uses hostNetwork: the app's port {} is open on the node's address, around the \
             proxy; bind the app to 127.0.0.1 or drop hostNetwork",
            app.number
        ));
    }
    if locate.privileged_count > 0 {
        let mut names = locate.privileged.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        if locate.privileged_count > locate.privileged.len() {
            names.push_str(&format!(" and {} more", locate.privileged_count - locate.privileged.len()));
        }
        let (noun, verb) = if locate.privileged_count == 1 { ("container", "is") } else { ("containers", "are") };
        warnings.push(format!(
            "trousseau-proxy: {noun} {names} {verb} privileged: able to reach the node and other pods' traffic \
             around the proxy; drop privileged unless it is needed"
        ));
    }
    warnings
}

/// One RFC 6902 operation.
fn op(op: &str, path: String, value: Value) -> Value {
    json!({"op": op, "path": path, "value": value})
}

/// Adds `items` at the end of `spec.<key>`, creating the list when it is absent or `null`.
fn append(patch: &mut Vec<Value>, key: &str, shape: scan::ListShape, items: Vec<Value>) {
    if !shape.present {
        patch.push(op("add", format!("/spec/{key}"), Value::Array(items)));
        return;
    }
    for (i, item) in items.into_iter().enumerate() {
        patch.push(op("add", format!("/spec/{key}/{}", shape.len + i), item));
    }
}

/// A JSON pointer token (RFC 6901): `~` and `/` escaped.
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The app's port, found in the pod.
#[derive(Clone, Debug)]
struct AppPort<'a> {
    /// Where in `spec.containers` it is declared, when it is.
    declared: Option<(usize, usize)>,
    number: u16,
    name: Option<Text<'a>>,
    /// Its `hostPort`, when it has one.
    host_port: Option<i64>,
}

/// A TCP port as [`Locate`] saw it, before its number is checked.
#[derive(Clone, Debug)]
struct Seen<'a> {
    c: usize,
    p: usize,
    number: Option<i64>,
    name: Option<Text<'a>>,
    host_port: Option<i64>,
}

impl<'a> Seen<'a> {
    fn new(c: usize, p: usize, port: &PortView<'a>) -> Seen<'a> {
        Seen {
            c,
            p,
            number: port.container_port,
            name: port.name.clone().filter(|n| !n.is_empty()),
            host_port: port.host_port.filter(|h| *h != 0),
        }
    }

    fn into_app_port(self) -> Result<AppPort<'a>, PodError> {
        let number = self
            .number
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| PodError::Malformed("a containerPort is not a port number".into()))?;
        Ok(AppPort { declared: Some((self.c, self.p)), number, name: self.name, host_port: self.host_port })
    }
}

/// First pass over `spec`: where the app's port is, whether the proxy is already there, and
/// which containers are privileged.
#[derive(Default)]
struct Locate<'a, 'o> {
    /// The `port` annotation.
    wanted: Option<PortRef>,
    /// The `default-container` annotation.
    main: Option<&'o str>,
    /// The first TCP port matching `wanted`.
    matched: Option<Seen<'a>>,
    /// The first TCP port of the container being read.
    first_of_current: Option<Seen<'a>>,
    /// The first TCP port of the `main` container.
    first_of_main: Option<Seen<'a>>,
    main_seen: bool,
    /// The first TCP port in container order.
    first: Option<Seen<'a>>,
    has_proxy_container: bool,
    /// The first few privileged containers' names.
    privileged: Vec<String>,
    privileged_count: usize,
}

impl<'a> SpecWalker<'a> for Locate<'a, '_> {
    fn port(&mut self, list: List, c: usize, p: usize, port: PortView<'a>) {
        if list != List::Containers || !port.is_tcp() {
            return;
        }
        if self.first_of_current.is_none() {
            self.first_of_current = Some(Seen::new(c, p, &port));
        }
        let matches = match &self.wanted {
            Some(PortRef::Name(name)) => port.name.as_deref() == Some(name.as_str()),
            Some(PortRef::Number(number)) => port.container_port == Some(i64::from(*number)),
            None => false,
        };
        if matches && self.matched.is_none() {
            self.matched = Some(Seen::new(c, p, &port));
        }
    }

    fn container(&mut self, list: List, _c: usize, container: ContainerView<'a>) {
        if container.name.as_deref() == Some(PROXY_CONTAINER) {
            self.has_proxy_container = true;
        }
        if list != List::Containers {
            return;
        }
        if container.privileged {
            self.privileged_count += 1;
            if self.privileged.len() < NAMED_PRIVILEGED {
                self.privileged.push(container.name.as_deref().unwrap_or("(unnamed)").to_string());
            }
        }
        let first = self.first_of_current.take();
        if !self.main_seen && self.main.is_some() && container.name.as_deref() == self.main {
            self.main_seen = true;
            self.first_of_main = first.clone();
        }
        if self.first.is_none() {
            self.first = first;
        }
    }
}

impl<'a> Locate<'a, '_> {
    /// The app's port: the one the annotation names, else the first TCP port of the
    /// `default-container`, else the first TCP port of any container.
    fn app_port(&self, wanted: Option<&PortRef>) -> Result<AppPort<'a>, PodError> {
        match wanted {
            Some(PortRef::Name(name)) => match &self.matched {
                Some(seen) => seen.clone().into_app_port(),
                None => Err(PodError::PortNotFound(PortRef::Name(name.clone()))),
            },
            Some(PortRef::Number(number)) => match &self.matched {
                Some(seen) => seen.clone().into_app_port(),
                // Undeclared ports are legal: the app still listens there.
                None => Ok(AppPort { declared: None, number: *number, name: None, host_port: None }),
            },
            None => match self.first_of_main.as_ref().or(self.first.as_ref()) {
                Some(seen) => seen.clone().into_app_port(),
                None => Err(PodError::NoPort),
            },
        }
    }
}

/// Second pass over `spec`, once the app's port is known: what would clash with the names and
/// numbers the injection adds, and the app container's references to its port by name.
#[derive(Default)]
struct Clashes<'q> {
    /// Where the app's port is (it is renamed, so its own name is no clash).
    app: Option<(usize, usize)>,
    app_name: Option<&'q str>,
    /// The name the proxy's port takes.
    proxy_name: &'q str,
    proxy_port: u16,
    /// Candidate new names of the app's port.
    renames: &'q [String],
    /// Another port named `proxy_name`: its container.
    holder: Option<(List, usize)>,
    holder_name: Option<String>,
    proxy_port_used: bool,
    /// Whether each of `renames` is already a port name.
    rename_taken: [bool; 2],
    /// Indices in [`PORT_REFERENCES`] of the app container's references to its port by name.
    rewrites: Vec<usize>,
    /// One of the proxy's volume names, when the pod already has it.
    volume_taken: Option<&'static str>,
}

impl<'a> SpecWalker<'a> for Clashes<'_> {
    fn port(&mut self, list: List, c: usize, p: usize, port: PortView<'a>) {
        if port.container_port == Some(i64::from(self.proxy_port)) {
            self.proxy_port_used = true;
        }
        let Some(name) = port.name.as_deref() else { return };
        let is_app = list == List::Containers && self.app == Some((c, p));
        if name == self.proxy_name && !is_app && self.holder.is_none() {
            self.holder = Some((list, c));
        }
        for (rename, taken) in self.renames.iter().zip(self.rename_taken.iter_mut()) {
            *taken |= name == rename;
        }
    }

    fn container(&mut self, list: List, c: usize, container: ContainerView<'a>) {
        if self.holder == Some((list, c)) && self.holder_name.is_none() {
            self.holder_name = container.name.as_deref().map(String::from);
        }
        if list == List::Containers && self.app.is_some_and(|(app_c, _)| app_c == c) {
            self.rewrites = container
                .named_port_references
                .iter()
                .filter(|(_, name)| Some(&**name) == self.app_name)
                .map(|(reference, _)| *reference)
                .collect();
        }
    }

    fn volume(&mut self, name: Option<&str>) {
        if self.volume_taken.is_none() {
            self.volume_taken = [CONFIG_VOLUME, SECRETS_VOLUME].into_iter().find(|v| Some(*v) == name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(native: bool) -> InjectorSettings {
        InjectorSettings { image: "trousseau-proxy:test".into(), native_sidecar: native }
    }

    fn decide_json(pod: &Value, native: bool) -> Result<Decision, PodError> {
        let text = pod.to_string();
        let meta = scan::metadata(&text).unwrap();
        decide(&text, &meta, &settings(native))
    }

    /// The pod after the decision's patch.
    fn injected(pod: &Value, native: bool) -> Value {
        let Decision::Inject { patch, .. } = decide_json(pod, native).unwrap() else { panic!("not injected") };
        let mut out = pod.clone();
        for op in patch {
            let path = op["path"].as_str().unwrap();
            let (parent, key) = path.rsplit_once('/').unwrap();
            let key = key.replace("~1", "/").replace("~0", "~");
            if parent.is_empty() {
                out[&key] = op["value"].clone();
                continue;
            }
            let target = out.pointer_mut(parent).unwrap_or_else(|| panic!("{path}"));
            match target {
                Value::Array(list) => {
                    let index: usize = key.parse().unwrap();
                    if op["op"] == "add" {
                        list.insert(index, op["value"].clone());
                    } else {
                        list[index] = op["value"].clone();
                    }
                }
                _ => target[&key] = op["value"].clone(),
            }
        }
        out
    }

    #[test]
    fn an_opted_in_pod_without_ports_is_refused_with_a_hint() {
        let pod = json!({
            "metadata": {"labels": {"trousseau.keysuite.app/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "app"}]},
        });
        let err = decide_json(&pod, true).unwrap_err();
        assert!(err.to_string().contains("trousseau.keysuite.app/port"), "{err}");
    }

    #[test]
    fn the_proxy_port_must_be_free() {
        let pod = json!({
            "metadata": {"labels": {"trousseau.keysuite.app/inject": "true"}},
            "spec": {"containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 4180}]}]},
        });
        assert!(matches!(decide_json(&pod, true), Err(PodError::ProxyPortTaken(4180))));
    }

    #[test]
    fn a_fifteen_character_port_name_is_renamed_by_number() {
        let pod = |name: &str, other: &str| {
            json!({
                "metadata": {"labels": {"trousseau.keysuite.app/inject": "true"}},
                "spec": {"containers": [{"name": "app", "ports": [
                    {"name": name, "containerPort": 8080}, {"name": other, "containerPort": 9000},
                ]}]},
            })
        };
        let renamed = |pod: &Value| injected(pod, true)["spec"]["containers"][0]["ports"][0]["name"].clone();
        assert_eq!(renamed(&pod("http", "metrics")), "app-http");
        assert_eq!(renamed(&pod("fifteen-chars-x", "metrics")), "app-8080");
        assert_eq!(renamed(&pod("http", "app-http")), "app-8080");
    }

    #[test]
    fn probes_and_hooks_naming_the_port_get_its_number() {
        let pod = json!({
            "metadata": {"labels": {"trousseau.keysuite.app/inject": "true"}},
            "spec": {"containers": [{
                "name": "app",
                "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
                "livenessProbe": {"httpGet": {"path": "/", "port": "http"}},
                "readinessProbe": {"tcpSocket": {"port": "http"}},
                "startupProbe": {"httpGet": {"port": "metrics"}},
                "lifecycle": {"preStop": {"httpGet": {"port": "http"}}},
            }]},
        });
        let c = &injected(&pod, true)["spec"]["containers"][0];
        assert_eq!(c.pointer("/livenessProbe/httpGet/port"), Some(&json!(8080)));
        assert_eq!(c.pointer("/readinessProbe/tcpSocket/port"), Some(&json!(8080)));
        assert_eq!(c.pointer("/startupProbe/httpGet/port"), Some(&json!("metrics")));
        assert_eq!(c.pointer("/lifecycle/preStop/httpGet/port"), Some(&json!(8080)));
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
        let pod = injected(&pod, false);
        assert_eq!(pod.pointer("/spec/containers/1/ports/0/name"), Some(&json!("app-http")));
        assert_eq!(pod.pointer("/spec/containers/0/ports/0/name"), Some(&json!("metrics")));
        assert_eq!(pod.pointer("/spec/containers/2/name"), Some(&json!("trousseau-proxy")));
    }

    #[test]
    fn the_patch_creates_what_is_missing_and_appends_to_what_is_there() {
        let pod = json!({
            "metadata": {"labels": {"trousseau.keysuite.app/inject": "true"}, "annotations": null},
            "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080}]}], "volumes": null},
        });
        let out = injected(&pod, true);
        assert_eq!(out["metadata"]["annotations"], json!({INJECTED_ANNOTATION: "native-sidecar"}));
        assert_eq!(out["spec"]["volumes"].as_array().unwrap().len(), 2);
        assert_eq!(out["spec"]["initContainers"][0]["name"], PROXY_CONTAINER);

        let pod = json!({
            "metadata": {"labels": {"trousseau.keysuite.app/inject": "true"}, "annotations": {"a/b~c": "x"}},
            "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080}]}], "volumes": [{"name": "v"}]},
        });
        let out = injected(&pod, false);
        assert_eq!(out["metadata"]["annotations"], json!({"a/b~c": "x", INJECTED_ANNOTATION: "container"}));
        assert_eq!(out["spec"]["volumes"][0]["name"], "v");
        assert_eq!(out["spec"]["volumes"][2]["name"], SECRETS_VOLUME);
        assert_eq!(out["spec"]["containers"][1]["name"], PROXY_CONTAINER);
    }
}
