//! The sidecar injector, as the Kubernetes API server drives it: golden AdmissionReview requests
//! (tests/data/admission/) go in, the returned JSON patch is applied with `json-patch` exactly as
//! the API server would, and the resulting pod is checked — field by field for what matters, and
//! whole against tests/data/admission/golden/ (refresh those with TROUSSEAU_UPDATE_GOLDEN=1 and
//! review the diff).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use trousseau_proxy::inject::certs::ReloadingCert;
use trousseau_proxy::inject::{self, InjectorSettings};

const IMAGE: &str = "ghcr.io/keysuite/trousseau-proxy:test";

fn settings(native_sidecar: bool) -> InjectorSettings {
    InjectorSettings { image: IMAGE.into(), native_sidecar }
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/admission")
}

fn fixture(name: &str) -> Value {
    let path = data_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the API server does with an answer: check it, then apply the patch to the pod.
struct Outcome {
    response: Value,
    /// The pod after the patch (the pod as sent when there is none).
    pod: Value,
    patched: bool,
}

impl Outcome {
    fn warnings(&self) -> Vec<String> {
        self.response["warnings"]
            .as_array()
            .map(|w| w.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }
}

/// Answers `review` in-process and applies the answer the way the API server does.
fn admit(review: &Value, settings: &InjectorSettings) -> Outcome {
    let body = serde_json::to_vec(review).unwrap();
    let answer = inject::review(&body, settings).expect("an AdmissionReview answer");
    let answer = serde_json::to_value(answer).unwrap();
    apply(review, answer)
}

fn apply(review: &Value, answer: Value) -> Outcome {
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = answer["response"].clone();
    assert_eq!(response["uid"], review["request"]["uid"], "the uid is echoed");
    let mut pod = review["request"]["object"].clone();
    let patched = match response.get("patch").and_then(Value::as_str) {
        None => {
            assert!(response.get("patchType").is_none(), "patchType without patch: {response}");
            false
        }
        Some(patch) => {
            assert_eq!(response["patchType"], "JSONPatch");
            assert_eq!(response["allowed"], true, "a patch comes only with allowed: true");
            let bytes = base64::engine::general_purpose::STANDARD.decode(patch).expect("base64 patch");
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("an RFC 6902 patch");
            json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod as sent");
            true
        }
    };
    Outcome { response, pod, patched }
}

/// The same review, now carrying `pod` (what a re-invocation sends).
fn with_object(review: &Value, pod: &Value) -> Value {
    let mut again = review.clone();
    again["request"]["object"] = pod.clone();
    again
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} entry named {name} in {}", pod["spec"]))
}

fn env_of(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap_or_default().to_string()))
        .collect()
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    env_of(container).into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// What every injected proxy must look like, whatever the pod: restricted-PSS compliant, probed,
/// bounded, configured from the mounted ConfigMap and Secret.
fn assert_hardened_proxy(proxy: &Value, proxy_port: u16) {
    assert_eq!(proxy["image"], IMAGE);
    let sc = &proxy["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(sc["runAsUser"].as_u64().unwrap() > 0);
    assert!(proxy["resources"]["requests"]["cpu"].is_string());
    assert!(proxy["resources"]["limits"]["memory"].is_string());
    for (probe, path) in
        [("livenessProbe", "/.trousseau/healthz"), ("readinessProbe", "/.trousseau/readyz"), ("startupProbe", "/.trousseau/readyz")]
    {
        assert_eq!(proxy[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(proxy[probe]["httpGet"]["port"], proxy_port, "{probe}");
    }
    assert_eq!(env_value(proxy, "TROUSSEAU_PROXY_CONFIG").as_deref(), Some("/etc/trousseau-proxy/config.yaml"));
    assert_eq!(env_value(proxy, "TROUSSEAU_PROXY_LISTEN"), Some(format!("0.0.0.0:{proxy_port}")));
    for (var, file) in [
        ("TROUSSEAU_PROXY_OIDC_CLIENT_SECRET_FILE", "client_secret"),
        ("TROUSSEAU_PROXY_SESSION_SECRETS_FILE", "session_secrets"),
        ("TROUSSEAU_PROXY_IDENTITY_SIGNING_KEY_FILE", "signing_key.pem"),
    ] {
        assert_eq!(env_value(proxy, var), Some(format!("/var/run/secrets/trousseau-proxy/{file}")), "{var}");
    }
    let mounts = proxy["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().all(|m| m["readOnly"] == true), "{mounts:?}");
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn port_named<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["ports"].as_array()?.iter().find(|p| p["name"] == name)
}

#[test]
fn a_labelled_pod_gets_the_proxy_as_a_native_sidecar_in_front_of_its_named_port() {
    let review = fixture("plain-pod");
    let out = admit(&review, &settings(true));
    assert_eq!(out.response["allowed"], true);
    assert!(out.patched);
    assert!(out.warnings().is_empty(), "{:?}", out.warnings());

    // The Service's targetPort `http` now lands on the proxy; the app keeps its port, renamed.
    let app = container(&out.pod, "containers", "shop");
    assert_eq!(port_named(app, "app-http").unwrap()["containerPort"], 8080);
    assert!(port_named(app, "http").is_none());
    let proxy = container(&out.pod, "initContainers", "trousseau-proxy");
    assert_eq!(proxy["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(port_named(proxy, "http").unwrap()["containerPort"], 4180);
    assert_eq!(port_named(proxy, "http").unwrap()["protocol"], "TCP");
    assert_eq!(env_value(proxy, "TROUSSEAU_PROXY_UPSTREAM").as_deref(), Some("http://127.0.0.1:8080"));
    assert_eq!(env_value(proxy, "TROUSSEAU_PROXY_ROUTES_PUBLIC"), None, "the ConfigMap's routes stay in force");
    assert_hardened_proxy(proxy, 4180);
    assert_eq!(out.pod["spec"]["containers"].as_array().unwrap().len(), 1, "no regular container added");

    // Config and secrets come from the named ConfigMap and Secret.
    assert_eq!(volume(&out.pod, "trousseau-proxy-config")["configMap"]["name"], "shop-auth");
    assert_eq!(volume(&out.pod, "trousseau-proxy-secrets")["secret"]["secretName"], "shop-auth-secrets");
    assert!(volume(&out.pod, "kube-api-access-x7k2p").is_object(), "existing volumes kept");
    assert_eq!(out.pod["metadata"]["annotations"]["trousseau.keysuite.app/injected"], "native-sidecar");
    assert_eq!(out.pod["metadata"]["annotations"]["trousseau.keysuite.app/config"], "shop-auth");
}

#[test]
fn a_pod_without_an_annotations_map_gets_the_defaults() {
    let review = fixture("no-annotations");
    assert!(review["request"]["object"]["metadata"].get("annotations").is_none(), "fixture has no annotations map");
    let out = admit(&review, &settings(true));
    assert!(out.patched);
    assert_eq!(out.pod["metadata"]["annotations"], json!({"trousseau.keysuite.app/injected": "native-sidecar"}));
    let app = container(&out.pod, "containers", "legacy");
    assert_eq!(port_named(app, "app-web").unwrap()["containerPort"], 3000);
    let proxy = container(&out.pod, "initContainers", "trousseau-proxy");
    assert_eq!(port_named(proxy, "web").unwrap()["containerPort"], 4180);
    assert_eq!(env_value(proxy, "TROUSSEAU_PROXY_UPSTREAM").as_deref(), Some("http://127.0.0.1:3000"));
    assert_eq!(volume(&out.pod, "trousseau-proxy-config")["configMap"]["name"], "trousseau-proxy");
    assert_eq!(volume(&out.pod, "trousseau-proxy-secrets")["secret"]["secretName"], "trousseau-proxy");
    assert_hardened_proxy(proxy, 4180);
}

#[test]
fn probes_and_hooks_that_named_the_taken_port_now_use_its_number() {
    let out = admit(&fixture("named-port-probes"), &settings(true));
    assert!(out.patched);
    let app = container(&out.pod, "containers", "billing");
    assert_eq!(app["livenessProbe"]["httpGet"]["port"], 8080);
    assert_eq!(app["readinessProbe"]["tcpSocket"]["port"], 8080);
    assert_eq!(app["lifecycle"]["preStop"]["httpGet"]["port"], 8080);
    // The other named port is not taken over, and its probe keeps the name.
    assert_eq!(app["startupProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(port_named(app, "metrics").unwrap()["containerPort"], 9090);
    assert_eq!(port_named(app, "app-http").unwrap()["containerPort"], 8080);
    let proxy = container(&out.pod, "initContainers", "trousseau-proxy");
    assert_eq!(port_named(proxy, "http").unwrap()["containerPort"], 4180);
    assert_eq!(env_value(proxy, "TROUSSEAU_PROXY_ROUTES_PUBLIC").as_deref(), Some("/healthz,/assets/*"));
    assert_eq!(out.pod["metadata"]["annotations"]["prometheus.io/scrape"], "true", "other annotations kept");
}

#[test]
fn existing_init_containers_are_kept_and_run_before_the_sidecar() {
    let out = admit(&fixture("existing-init-containers"), &settings(true));
    assert!(out.patched);
    let names: Vec<&str> =
        out.pod["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["migrate", "warm-cache", "trousseau-proxy"]);
    assert_eq!(container(&out.pod, "initContainers", "migrate")["command"], json!(["/shop", "migrate"]));
    // `port: "8080"` (a number) whose declaration has a name: the name is taken over.
    let proxy = container(&out.pod, "initContainers", "trousseau-proxy");
    assert_eq!(port_named(proxy, "http").unwrap()["containerPort"], 4180);
}

#[test]
fn a_dry_run_gets_the_same_patch_as_the_real_request() {
    let real = fixture("plain-pod");
    let dry = fixture("dry-run");
    assert_eq!(dry["request"]["dryRun"], true);
    let (real, dry) = (admit(&real, &settings(true)), admit(&dry, &settings(true)));
    assert!(dry.patched);
    assert_eq!(dry.response["patch"], real.response["patch"]);
    assert_eq!(dry.pod, real.pod);
}

#[test]
fn an_already_injected_pod_is_skipped_with_a_warning() {
    let review = fixture("already-injected");
    let out = admit(&review, &settings(true));
    assert_eq!(out.response["allowed"], true);
    assert!(!out.patched, "not injected twice: {}", out.response);
    let warnings = out.warnings();
    assert!(warnings.iter().any(|w| w.contains("already has the proxy")), "{warnings:?}");
    assert_eq!(out.pod, review["request"]["object"]);
}

#[test]
fn injecting_again_changes_nothing_for_every_fixture() {
    for name in ["plain-pod", "no-annotations", "named-port-probes", "existing-init-containers", "unnamed-port"] {
        for native in [true, false] {
            let review = fixture(name);
            let first = admit(&review, &settings(native));
            assert!(first.patched, "{name}");
            let second = admit(&with_object(&review, &first.pod), &settings(native));
            assert!(!second.patched, "{name}: re-invocation must not patch again");
            assert_eq!(second.response["allowed"], true);

            // Even with the marker annotation dropped, the container is recognised.
            let mut unmarked = first.pod.clone();
            unmarked["metadata"]["annotations"].as_object_mut().unwrap().remove("trousseau.keysuite.app/injected");
            let third = admit(&with_object(&review, &unmarked), &settings(native));
            assert!(!third.patched, "{name}: a pod with a trousseau-proxy container is not injected again");
        }
    }
}

#[test]
fn clusters_older_than_1_29_get_a_regular_container() {
    let out = admit(&fixture("plain-pod"), &settings(false));
    assert!(out.patched);
    assert!(out.pod["spec"].get("initContainers").is_none(), "no init container added");
    let names: Vec<&str> =
        out.pod["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["shop", "trousseau-proxy"], "the app stays the default container");
    let proxy = container(&out.pod, "containers", "trousseau-proxy");
    assert!(proxy.get("restartPolicy").is_none());
    assert_eq!(port_named(proxy, "http").unwrap()["containerPort"], 4180);
    assert_hardened_proxy(proxy, 4180);
    assert_eq!(out.pod["metadata"]["annotations"]["trousseau.keysuite.app/injected"], "container");

    let auto = inject::NativeSidecarMode::Auto;
    assert_eq!(auto.resolve(Some("v1.28.9")), Ok(false));
    assert_eq!(auto.resolve(Some("v1.29.0")), Ok(true));
}

#[test]
fn an_unlabelled_pod_is_admitted_untouched() {
    let out = admit(&fixture("not-labelled"), &settings(true));
    assert_eq!(out.response["allowed"], true);
    assert!(!out.patched);
    assert!(out.warnings().is_empty());
}

#[test]
fn an_unnamed_port_is_served_on_the_proxys_own_named_port_with_a_warning() {
    let out = admit(&fixture("unnamed-port"), &settings(true));
    assert!(out.patched);
    let proxy = container(&out.pod, "initContainers", "trousseau-proxy");
    assert_eq!(port_named(proxy, "trousseau").unwrap()["containerPort"], 4180);
    assert_eq!(env_value(proxy, "TROUSSEAU_PROXY_UPSTREAM").as_deref(), Some("http://127.0.0.1:8080"));
    let warnings = out.warnings();
    assert!(warnings.iter().any(|w| w.contains("targetPort") && w.contains("127.0.0.1")), "{warnings:?}");
}

#[test]
fn an_opted_in_pod_that_cannot_be_protected_is_refused_with_the_reason() {
    let out = admit(&fixture("unknown-port"), &settings(true));
    assert_eq!(out.response["allowed"], false, "fail closed: never run an opted-in pod unprotected");
    assert!(!out.patched);
    assert_eq!(out.response["status"]["code"], 422);
    let message = out.response["status"]["message"].as_str().unwrap();
    assert!(message.contains("`https`") && message.contains("trousseau.keysuite.app/port"), "{message}");

    let mut review = fixture("plain-pod");
    review["request"]["object"]["metadata"]["annotations"]["trousseau.keysuite.app/public-paths"] = json!("healthz");
    let out = admit(&review, &settings(true));
    assert_eq!(out.response["allowed"], false);
    assert!(out.response["status"]["message"].as_str().unwrap().contains("public-paths"));
}

#[test]
fn a_typo_in_an_annotation_is_reported() {
    let mut review = fixture("plain-pod");
    review["request"]["object"]["metadata"]["annotations"]["trousseau.keysuite.app/public-path"] = json!("/healthz");
    let out = admit(&review, &settings(true));
    assert!(out.patched);
    assert!(out.warnings().iter().any(|w| w.contains("trousseau.keysuite.app/public-path ")), "{:?}", out.warnings());
}

#[test]
fn malformed_reviews_are_answered_with_a_clear_message() {
    // A review we can answer (it has a uid), but without the pod.
    let out = admit(&fixture("malformed-no-object"), &settings(true));
    assert_eq!(out.response["allowed"], false);
    assert_eq!(out.response["status"]["code"], 400);
    assert!(out.response["status"]["message"].as_str().unwrap().contains("request.object"));

    // An older AdmissionReview version: refused with the fix.
    let mut old = fixture("plain-pod");
    old["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let out = admit(&old, &settings(true));
    assert_eq!(out.response["allowed"], false);
    assert!(out.response["status"]["message"].as_str().unwrap().contains("admissionReviewVersions"));

    // Nothing to answer to: an error, never a panic.
    for body in [&b"not json"[..], br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, br#"{"request":{}}"#] {
        let err = inject::review(body, &settings(true)).unwrap_err();
        assert!(err.to_string().contains("AdmissionReview"), "{err}");
    }

    // Another kind reaching the webhook (a misconfigured rule) is let through, with a warning.
    let mut deployment = fixture("plain-pod");
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let out = admit(&deployment, &settings(true));
    assert_eq!(out.response["allowed"], true);
    assert!(!out.patched);
    assert!(out.warnings()[0].contains("only pods"));
}

#[test]
fn patched_pods_match_the_golden_files() {
    let update = std::env::var_os("TROUSSEAU_UPDATE_GOLDEN").is_some();
    let golden_dir = data_dir().join("golden");
    let mut mismatched = Vec::new();
    for (name, native) in [
        ("plain-pod", true),
        ("plain-pod", false),
        ("no-annotations", true),
        ("named-port-probes", true),
        ("existing-init-containers", true),
        ("unnamed-port", true),
    ] {
        let out = admit(&fixture(name), &settings(native));
        let file = golden_dir.join(format!("{name}{}.json", if native { "" } else { ".container" }));
        let text = serde_json::to_string_pretty(&out.pod).unwrap() + "\n";
        if update {
            std::fs::create_dir_all(&golden_dir).unwrap();
            std::fs::write(&file, &text).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (create it with TROUSSEAU_UPDATE_GOLDEN=1)", file.display()));
        let expected: Value = serde_json::from_str(&expected).unwrap();
        if expected != out.pod {
            mismatched.push(file.display().to_string());
        }
    }
    assert!(
        mismatched.is_empty(),
        "patched pods differ from {mismatched:?}; if the change is intended, rerun with TROUSSEAU_UPDATE_GOLDEN=1 and review the diff"
    );
}

// ---------------------------------------------------------------------------------------------
// Over a real HTTPS socket, with certificates made at test time.

/// A CA and server certificates it signs for `localhost` / `127.0.0.1`.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "trousseau-proxy injector test CA");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    /// A fresh server certificate and key (PEM).
    fn server_pair(&self, common_name: &str) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("trousseau-inject-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The webhook serving on a loopback port, as `inject-webhook` runs it.
struct Webhook {
    addr: std::net::SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    async fn start(cert: &Path, key: &Path, reload_every: Duration) -> Webhook {
        let certs = Arc::new(ReloadingCert::load(cert, key).expect("certificate loads"));
        tokio::spawn(certs.clone().watch(reload_every));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.await;
            };
            inject::webhook::serve(listener, certs, Arc::new(settings(true)), shutdown).await.expect("webhook serves");
        });
        Webhook { addr, shutdown: Some(tx), task }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), self.task).await.expect("stops").unwrap();
    }
}

/// The common name of the certificate the server presents.
async fn served_common_name(addr: std::net::SocketAddr, roots: rustls::RootCertStore) -> String {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake with the test CA");
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    // Good enough for a test: the CN is the only printable run we put in the subject.
    ["served-first", "served-second"]
        .into_iter()
        .find(|cn| cert.windows(cn.len()).any(|w| w == cn.as_bytes()))
        .unwrap_or("unknown")
        .to_string()
}

#[tokio::test]
async fn the_webhook_answers_reviews_over_https_and_picks_up_a_renewed_certificate() {
    let dir = TempDir::new("https");
    let ca = TestCa::new();
    let (cert_pem, key_pem) = ca.server_pair("served-first");
    let (cert, key) = (dir.0.join("tls.crt"), dir.0.join("tls.key"));
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let webhook = Webhook::start(&cert, &key, Duration::from_millis(100)).await;

    let client_config = rustls::ClientConfig::builder_with_provider(trousseau_proxy::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .build(trousseau_proxy::tls::https_connector(client_config, Duration::from_secs(5)));
    let url = |path: &str| format!("https://localhost:{}{path}", webhook.addr.port());
    let post = |body: Vec<u8>, content_type: &'static str| {
        Request::builder()
            .method(Method::POST)
            .uri(url("/mutate"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };

    // The API server's request: a review in, a review with a patch out.
    let review = fixture("named-port-probes");
    let response = client.request(post(serde_json::to_vec(&review).unwrap(), "application/json")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let answer: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let out = apply(&review, answer);
    assert!(out.patched);
    let proxy = container(&out.pod, "initContainers", "trousseau-proxy");
    assert_eq!(port_named(proxy, "http").unwrap()["containerPort"], 4180);
    assert_eq!(container(&out.pod, "containers", "billing")["livenessProbe"]["httpGet"]["port"], 8080);

    // Health, and clear refusals for what is not a review.
    let health = client.get(url("/healthz").parse().unwrap()).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let garbage = client.request(post(b"{not json".to_vec(), "application/json")).await.unwrap();
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    let text = garbage.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("AdmissionReview"));
    let form = client.request(post(b"a=b".to_vec(), "application/x-www-form-urlencoded")).await.unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(client.get(url("/").parse().unwrap()).await.unwrap().status(), StatusCode::NOT_FOUND);

    // cert-manager renews the certificate in place: new connections get the new one.
    assert_eq!(served_common_name(webhook.addr, ca.roots()).await, "served-first");
    let (cert_pem, key_pem) = ca.server_pair("served-second");
    std::fs::write(&key, key_pem).unwrap();
    std::fs::write(&cert, cert_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if served_common_name(webhook.addr, ca.roots()).await == "served-second" {
            break;
        }
        assert!(Instant::now() < deadline, "the renewed certificate was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken renewal keeps the last good certificate.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_common_name(webhook.addr, ca.roots()).await, "served-second");

    webhook.stop().await;
}

/// The environment and mounts the injector writes are the proxy's real configuration contract:
/// run `check-config` with exactly that environment, the ConfigMap and Secret "mounted" in a
/// temporary directory.
#[test]
fn the_injected_environment_is_a_configuration_the_proxy_accepts() {
    let out = admit(&fixture("named-port-probes"), &settings(true));
    let proxy = container(&out.pod, "initContainers", "trousseau-proxy");
    let dir = TempDir::new("env");
    let (config_dir, secrets_dir) = (dir.0.join("config"), dir.0.join("secrets"));
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::create_dir_all(&secrets_dir).unwrap();
    // What an operator puts in the ConfigMap: everything but listen, upstream and secrets.
    std::fs::write(
        config_dir.join("config.yaml"),
        "public_url: https://billing.example.com\n\
         oidc:\n  issuer: https://auth.keysuite.app/application/o/billing/\n  client_id: billing\n\
         routes:\n  public: [/robots.txt]\n",
    )
    .unwrap();
    std::fs::write(secrets_dir.join("client_secret"), "s3cr3t\n").unwrap();
    std::fs::write(secrets_dir.join("session_secrets"), trousseau_proxy::session::seal::generate_secret() + "\n").unwrap();
    std::fs::write(secrets_dir.join("signing_key.pem"), trousseau_proxy::identity::generate_pkcs8_pem()).unwrap();

    let relocate = |value: &str| {
        value
            .replace("/etc/trousseau-proxy", config_dir.to_str().unwrap())
            .replace("/var/run/secrets/trousseau-proxy", secrets_dir.to_str().unwrap())
    };
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_trousseau-proxy"));
    command.arg("check-config");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TROUSSEAU_PROXY_")) {
        command.env_remove(key);
    }
    for (name, value) in env_of(proxy) {
        command.env(name, relocate(&value));
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}{stdout}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("0.0.0.0:4180"), "{stdout}");
    assert!(stdout.contains("http://127.0.0.1:8080"), "{stdout}");
    assert!(stdout.contains("/assets/*") && !stdout.contains("/robots.txt"), "the annotation's public paths win: {stdout}");
    assert!(!stdout.contains("s3cr3t"), "secrets are redacted: {stdout}");
}

#[test]
fn the_webhook_refuses_to_start_without_its_certificate() {
    let dir = TempDir::new("cli");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_trousseau-proxy"))
        .args(["inject-webhook", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(dir.0.join("missing.crt"))
        .arg("--tls-key")
        .arg(dir.0.join("missing.key"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing.crt"), "{stderr}");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_trousseau-proxy"))
        .args(["inject-webhook", "--tls-cert", "a", "--tls-key", "b", "--kube-version", "latest"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--kube-version"));
}
