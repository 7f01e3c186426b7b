//! The injected proxy container and its volumes: the same shape the Helm chart gives a standalone
//! proxy, so there is one way the proxy runs in Kubernetes.
//!
//! - config: the ConfigMap's `config.yaml` at [`CONFIG_FILE`] (`TROUSSEAU_PROXY_CONFIG`);
//! - secrets: the Secret mounted at [`SECRETS_DIR`], read through the `*_file` keys set in the
//!   environment (so they win over the file and never sit in a ConfigMap);
//! - `listen` and `upstream` from the environment: the proxy takes the app's named port, and
//!   reaches the app on loopback;
//! - restricted Pod Security Standard: non-root, read-only root filesystem, no capabilities,
//!   `RuntimeDefault` seccomp.

use serde_json::{json, Value};

/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/trousseau-proxy";
/// The configuration file the proxy reads.
pub const CONFIG_FILE: &str = "/etc/trousseau-proxy/config.yaml";
/// Where the Secret is mounted.
pub const SECRETS_DIR: &str = "/var/run/secrets/trousseau-proxy";
/// Volume holding the ConfigMap.
pub const CONFIG_VOLUME: &str = "trousseau-proxy-config";
/// Volume holding the Secret.
pub const SECRETS_VOLUME: &str = "trousseau-proxy-secrets";

/// The keys the Secret must hold, and the configuration key each one feeds.
pub const SECRET_KEYS: &[(&str, &str)] = &[
    ("client_secret", "TROUSSEAU_PROXY_OIDC_CLIENT_SECRET_FILE"),
    ("session_secrets", "TROUSSEAU_PROXY_SESSION_SECRETS_FILE"),
    ("signing_key.pem", "TROUSSEAU_PROXY_IDENTITY_SIGNING_KEY_FILE"),
];

/// The distroless `nonroot` user and group.
pub const RUN_AS: u32 = 65532;

/// Everything that varies from one injected proxy to the next.
#[derive(Clone, Debug)]
pub struct Sidecar<'a> {
    /// The proxy image.
    pub image: &'a str,
    /// Port name the proxy takes over (the Service's named targetPort).
    pub port_name: &'a str,
    /// Port the proxy listens on.
    pub proxy_port: u16,
    /// The app's port on loopback.
    pub app_port: u16,
    /// `routes.public` from the annotation, comma-separated (empty: the ConfigMap's own).
    pub public_paths: &'a str,
    /// An `initContainers` entry with `restartPolicy: Always` (true) or a regular container.
    pub native: bool,
}

impl Sidecar<'_> {
    /// The container object.
    pub fn container(&self) -> Value {
        let mut env = vec![
            env("TROUSSEAU_PROXY_CONFIG", CONFIG_FILE),
            env("TROUSSEAU_PROXY_LISTEN", &format!("0.0.0.0:{}", self.proxy_port)),
            env("TROUSSEAU_PROXY_UPSTREAM", &format!("http://127.0.0.1:{}", self.app_port)),
        ];
        for (key, var) in SECRET_KEYS {
            env.push(self::env(var, &format!("{SECRETS_DIR}/{key}")));
        }
        if !self.public_paths.is_empty() {
            env.push(self::env("TROUSSEAU_PROXY_ROUTES_PUBLIC", self.public_paths));
        }
        let probe = |path: &str, period: u32, failures: u32| {
            json!({
                "httpGet": {"path": path, "port": self.proxy_port, "scheme": "HTTP"},
                "periodSeconds": period,
                "timeoutSeconds": 2,
                "failureThreshold": failures,
            })
        };
        let mut container = json!({
            "name": super::PROXY_CONTAINER,
            "image": self.image,
            "imagePullPolicy": "IfNotPresent",
            "args": ["run"],
            "ports": [{"name": self.port_name, "containerPort": self.proxy_port, "protocol": "TCP"}],
            "env": env,
            "volumeMounts": [
                {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": true},
                {"name": SECRETS_VOLUME, "mountPath": SECRETS_DIR, "readOnly": true},
            ],
            // Up to two minutes for Trousseau's discovery and keys; a native sidecar holds the
            // app's start until then, so the app never serves before the proxy can sign in.
            "startupProbe": probe("/.trousseau/readyz", 2, 60),
            "livenessProbe": probe("/.trousseau/healthz", 10, 3),
            "readinessProbe": probe("/.trousseau/readyz", 5, 2),
            "resources": {
                "requests": {"cpu": "10m", "memory": "32Mi"},
                "limits": {"memory": "256Mi"},
            },
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "terminationMessagePolicy": "FallbackToLogsOnError",
        });
        if self.native {
            container["restartPolicy"] = json!("Always");
        }
        container
    }

    /// The two volumes the container mounts.
    pub fn volumes(config_map: &str, secret: &str) -> [Value; 2] {
        [
            json!({
                "name": CONFIG_VOLUME,
                "configMap": {"name": config_map, "items": [{"key": "config.yaml", "path": "config.yaml"}]},
            }),
            json!({"name": SECRETS_VOLUME, "secret": {"secretName": secret}}),
        ]
    }
}

fn env(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}
