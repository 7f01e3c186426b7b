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

use trousseau_proxy::tls::serving::ReloadingCert;
use crate::support::pki::TestCa;
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
    let ca = TestCa::new("trousseau-proxy injector test");
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

// ---------------------------------------------------------------------------------------------
// Hardening (issue 14): reviews sent over real HTTPS to a webhook serving on a loopback port.

/// A webhook with a fresh test CA, and a client trusting it: every review goes over HTTPS, as the
/// API server sends it.
struct HttpsWebhook {
    webhook: Webhook,
    ca: TestCa,
    client: Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>,
    _dir: TempDir,
}

impl HttpsWebhook {
    async fn start() -> HttpsWebhook {
        let dir = TempDir::new("hardening");
        let ca = TestCa::new("trousseau-proxy injector test");
        let (cert_pem, key_pem) = ca.server_pair("served-first");
        let (cert, key) = (dir.0.join("tls.crt"), dir.0.join("tls.key"));
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let webhook = Webhook::start(&cert, &key, Duration::from_secs(60)).await;
        let client = https_client(&ca);
        HttpsWebhook { webhook, ca, client, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.webhook.addr.port())
    }

    /// Posts `body` to `/mutate`: the status and the body of the answer.
    async fn post(&self, body: Vec<u8>) -> (StatusCode, Bytes) {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.url("/mutate"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.client.request(request).await.expect("the webhook answers");
        let status = response.status();
        (status, response.into_body().collect().await.unwrap().to_bytes())
    }

    /// Sends `review` and applies the answer as the API server does.
    async fn admit(&self, review: &Value) -> Outcome {
        let (status, body) = self.post(serde_json::to_vec(review).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        apply(review, serde_json::from_slice(&body).expect("an AdmissionReview"))
    }

    /// A raw TLS connection to the webhook (for requests no well-behaved client sends).
    async fn connect(&self) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        tls_connect(self.webhook.addr, &self.ca.roots()).await
    }
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    roots: &rustls::RootCertStore,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = rustls::ClientConfig::builder_with_provider(trousseau_proxy::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

fn https_client(
    ca: &TestCa,
) -> Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>> {
    let config = rustls::ClientConfig::builder_with_provider(trousseau_proxy::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    Client::builder(TokioExecutor::new()).build(trousseau_proxy::tls::https_connector(config, Duration::from_secs(5)))
}

/// Every port of the pod (containers and init containers): (container, port name).
fn port_names(pod: &Value) -> Vec<(String, String)> {
    ["containers", "initContainers"]
        .iter()
        .filter_map(|list| pod["spec"][list].as_array())
        .flatten()
        .flat_map(|c| {
            let container = c["name"].as_str().unwrap_or_default().to_string();
            c["ports"].as_array().into_iter().flatten().filter_map(move |p| {
                p["name"].as_str().map(|n| (container.clone(), n.to_string()))
            })
        })
        .collect()
}

fn refusal(out: &Outcome) -> String {
    assert_eq!(out.response["allowed"], false, "expected a refusal: {}", out.response);
    assert!(!out.patched);
    assert_eq!(out.response["status"]["code"], 422);
    out.response["status"]["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_port_name_another_container_shares_is_refused_rather_than_handed_to_the_proxy() {
    let webhook = HttpsWebhook::start().await;

    // `side` also names a port `http`: a Service's targetPort `http` resolves to a regular
    // container before a native sidecar, so the proxy would never see the traffic.
    let mut review = fixture("plain-pod");
    review["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": "side:1", "ports": [{"name": "http", "containerPort": 9000}]}));
    let message = refusal(&webhook.admit(&review).await);
    assert!(message.contains("`http`") && message.contains("side"), "{message}");

    // The same when an existing native sidecar declares the name.
    let mut review = fixture("plain-pod");
    review["request"]["object"]["spec"]["initContainers"] = json!([{
        "name": "mesh", "image": "mesh:1", "restartPolicy": "Always",
        "ports": [{"name": "http", "containerPort": 15001}],
    }]);
    for native in [true, false] {
        let out = admit(&review, &settings(native));
        let message = refusal(&out);
        assert!(message.contains("`http`") && message.contains("mesh"), "{message}");
    }
    let message = refusal(&webhook.admit(&review).await);
    assert!(message.contains("mesh"), "{message}");

    // The fallback name too, when the app's port has no name.
    let mut review = fixture("unnamed-port");
    review["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "exporter", "image": "exporter:1", "ports": [{"name": "trousseau", "containerPort": 9100}]}));
    let message = refusal(&webhook.admit(&review).await);
    assert!(message.contains("`trousseau`") && message.contains("exporter"), "{message}");

    // A pod whose names are distinct is injected, and the proxy's port name is then unique.
    let mut review = fixture("plain-pod");
    review["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": "side:1", "ports": [{"name": "metrics", "containerPort": 9000}]}));
    let out = webhook.admit(&review).await;
    assert!(out.patched, "{}", out.response);
    let names = port_names(&out.pod);
    let holders: Vec<&String> = names.iter().filter(|(_, n)| n == "http").map(|(c, _)| c).collect();
    assert_eq!(holders, ["trousseau-proxy"], "{names:?}");
    webhook.webhook.stop().await;
}

#[test]
fn after_injection_the_proxys_port_name_is_unique_in_every_golden_pod() {
    for name in ["plain-pod", "no-annotations", "named-port-probes", "existing-init-containers", "unnamed-port"] {
        for native in [true, false] {
            let out = admit(&fixture(name), &settings(native));
            let proxy_list = if native { "initContainers" } else { "containers" };
            let proxy = container(&out.pod, proxy_list, "trousseau-proxy");
            let proxy_name = proxy["ports"][0]["name"].as_str().unwrap();
            let names = port_names(&out.pod);
            assert_eq!(names.iter().filter(|(_, n)| n == proxy_name).count(), 1, "{name}: {names:?}");
        }
    }
}

#[tokio::test]
async fn only_the_exact_label_value_the_chart_selects_opts_in() {
    let webhook = HttpsWebhook::start().await;
    // The chart's objectSelector matches exactly "true": the webhook decides on the same value,
    // so a pod is never injected by one and skipped by the other.
    for value in ["True", "TRUE", "yes", "1", " true"] {
        let mut review = fixture("plain-pod");
        review["request"]["object"]["metadata"]["labels"]["trousseau.keysuite.app/inject"] = json!(value);
        let out = webhook.admit(&review).await;
        assert_eq!(out.response["allowed"], true, "{value}");
        assert!(!out.patched, "{value:?} is not the opt-in value");
    }
    assert!(webhook.admit(&fixture("plain-pod")).await.patched);
    webhook.webhook.stop().await;
}

#[tokio::test]
async fn a_host_port_on_the_proxied_port_is_refused() {
    let webhook = HttpsWebhook::start().await;
    // The node's port 80 would reach the app directly, around the proxy.
    let mut review = fixture("plain-pod");
    review["request"]["object"]["spec"]["containers"][0]["ports"][0]["hostPort"] = json!(80);
    let message = refusal(&webhook.admit(&review).await);
    assert!(message.contains("hostPort") && message.contains("8080"), "{message}");

    // A hostPort on another port is that port's business.
    let mut review = fixture("named-port-probes");
    let ports = review["request"]["object"]["spec"]["containers"][0]["ports"].as_array_mut().unwrap();
    let metrics = ports.iter_mut().find(|p| p["name"] == "metrics").unwrap();
    metrics["hostPort"] = json!(9090);
    assert!(webhook.admit(&review).await.patched);
    webhook.webhook.stop().await;
}

#[tokio::test]
async fn host_network_and_privileged_apps_are_injected_with_a_warning() {
    let webhook = HttpsWebhook::start().await;
    // hostNetwork: the API server has already defaulted hostPort to containerPort.
    let mut review = fixture("plain-pod");
    review["request"]["object"]["spec"]["hostNetwork"] = json!(true);
    review["request"]["object"]["spec"]["containers"][0]["ports"][0]["hostPort"] = json!(8080);
    let out = webhook.admit(&review).await;
    assert!(out.patched, "{}", out.response);
    let warnings = out.warnings();
    assert!(warnings.iter().any(|w| w.contains("hostNetwork") && w.contains("8080")), "{warnings:?}");

    let mut review = fixture("plain-pod");
    review["request"]["object"]["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    let out = webhook.admit(&review).await;
    assert!(out.patched, "{}", out.response);
    let warnings = out.warnings();
    assert!(warnings.iter().any(|w| w.contains("privileged") && w.contains("shop")), "{warnings:?}");

    // An ordinary pod gets no such warning.
    assert!(webhook.admit(&fixture("plain-pod")).await.warnings().is_empty());
    webhook.webhook.stop().await;
}

/// `review` padded with an annotation to about `size` bytes.
fn padded_review(size: usize) -> Vec<u8> {
    let mut review = fixture("plain-pod");
    let base = serde_json::to_vec(&review).unwrap().len();
    review["request"]["object"]["metadata"]["annotations"]["example.com/padding"] = json!("x".repeat(size - base - 40));
    serde_json::to_vec(&review).unwrap()
}

#[tokio::test]
async fn a_review_larger_than_the_api_server_sends_is_refused() {
    let webhook = HttpsWebhook::start().await;
    // Just under the API server's 3 MiB: answered.
    let body = padded_review(3 * 1024 * 1024 - 64 * 1024);
    let (status, _) = webhook.post(body).await;
    assert_eq!(status, StatusCode::OK);

    // Over it: refused, whole or announced.
    let body = padded_review(3 * 1024 * 1024 + 64 * 1024);
    let (status, answer) = webhook.post(body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{}", String::from_utf8_lossy(&answer));

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = webhook.connect().await.unwrap();
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "an announced 100 MiB body is refused before it is sent");
    assert!(answer.starts_with(b"HTTP/1.1 413"), "{}", String::from_utf8_lossy(&answer));
    webhook.webhook.stop().await;
}

#[tokio::test]
async fn a_stalled_review_body_is_cut_at_its_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let webhook = HttpsWebhook::start().await;
    let mut tls = webhook.connect().await.unwrap();
    let started = Instant::now();
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n",
    )
    .await
    .unwrap();
    tls.write_all(&vec![b' '; 1_000_000]).await.unwrap();
    tls.flush().await.unwrap();
    // ... and nothing more.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(25), tls.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the webhook still waits for the body after {:?}", started.elapsed());
    assert!(answer.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&answer));
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());

    // Meanwhile and afterwards, the webhook answers.
    assert!(webhook.admit(&fixture("plain-pod")).await.patched);
    webhook.webhook.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_the_webhook_recovers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let webhook = HttpsWebhook::start().await;
    let mut held = Vec::new();
    for _ in 0..inject::webhook::MAX_CONNECTIONS {
        held.push(webhook.connect().await.expect("a connection under the cap"));
    }
    // One more: closed at once, before any request is read.
    let refused = match webhook.connect().await {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
            answer.is_empty()
        }
    };
    assert!(refused, "a connection over the cap was served");

    // Freed connections make room again.
    held.truncate(held.len() - 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let client = https_client(&webhook.ca);
        let health = client.get(webhook.url("/healthz").parse().unwrap()).await;
        if health.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(Instant::now() < deadline, "the webhook did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    webhook.webhook.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Memory: a real `trousseau-proxy inject-webhook` process, fed the worst reviews we can build
// under the API server's 3 MiB request limit; its peak resident set (VmHWM) must stay far below
// the chart's 128 MiB limit.

/// The largest review body these tests build: under the webhook's bound.
const WORST_REVIEW: usize = 3 * 1024 * 1024 - 128 * 1024;

/// A review of `plain-pod` whose list at `pointer` is extended with `item` until the body is
/// about `WORST_REVIEW` bytes.
fn worst_review(pointer: &str, item: Value) -> Vec<u8> {
    let mut review = fixture("plain-pod");
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = review["request"]["object"].pointer_mut(parent).unwrap_or_else(|| panic!("{pointer}"));
    let list = parent[key].take();
    let mut list = if list.is_null() { Vec::new() } else { list.as_array().unwrap().clone() };
    let base = serde_json::to_vec(&review).unwrap().len() + serde_json::to_vec(&list).unwrap().len();
    let item_len = serde_json::to_vec(&item).unwrap().len() + 1;
    list.extend(std::iter::repeat_n(item, (WORST_REVIEW - base) / item_len));
    review["request"]["object"].pointer_mut(pointer.rsplit_once('/').unwrap().0).unwrap()[key] = Value::Array(list);
    serde_json::to_vec(&review).unwrap()
}

/// The worst reviews we found, by name.
fn worst_reviews() -> Vec<(&'static str, Vec<u8>)> {
    let mut annotations = fixture("plain-pod");
    let map = annotations["request"]["object"]["metadata"]["annotations"].as_object_mut().unwrap();
    let mut i = 0;
    while serde_json::to_vec(&map).unwrap().len() < WORST_REVIEW - 8 * 1024 {
        for _ in 0..1000 {
            map.insert(format!("trousseau.keysuite.app/x{i}"), json!(""));
            i += 1;
        }
    }
    vec![
        ("1M empty volumes", worst_review("/spec/volumes", json!({}))),
        ("1M empty containers", worst_review("/spec/containers", json!({}))),
        ("1M empty init containers", {
            let mut review: Value = serde_json::from_slice(&worst_review("/spec/containers", json!({}))).unwrap();
            let spec = review["request"]["object"]["spec"].as_object_mut().unwrap();
            let mut containers = spec["containers"].as_array().unwrap().clone();
            let app = containers.remove(0);
            spec.insert("initContainers".into(), Value::Array(containers));
            spec.insert("containers".into(), json!([app]));
            serde_json::to_vec(&review).unwrap()
        }),
        ("1M empty ports", worst_review("/spec/containers/0/ports", json!({}))),
        ("distinct named ports", {
            let mut review = fixture("plain-pod");
            let ports = review["request"]["object"]["spec"]["containers"][0]["ports"].as_array_mut().unwrap();
            let (mut i, mut size) = (0u32, 4 * 1024);
            while size < WORST_REVIEW - 4 * 1024 {
                let port = json!({"name": format!("p{i:x}"), "containerPort": 1 + i % 60000});
                size += serde_json::to_vec(&port).unwrap().len() + 1;
                ports.push(port);
                i += 1;
            }
            serde_json::to_vec(&review).unwrap()
        }),
        ("deep env list", worst_review("/spec/containers/0/env", json!({"name": "A", "value": "b"}))),
        ("unknown annotations", serde_json::to_vec(&annotations).unwrap()),
        ("128K public paths (the annotation limit)", {
            let mut review = fixture("plain-pod");
            let paths = "/,".repeat(128 * 1024 - 1);
            review["request"]["object"]["metadata"]["annotations"]["trousseau.keysuite.app/public-paths"] = json!(paths);
            serde_json::to_vec(&review).unwrap()
        }),
        ("1M public paths", {
            let mut review = fixture("plain-pod");
            let paths = "/,".repeat((WORST_REVIEW - 8 * 1024) / 2);
            review["request"]["object"]["metadata"]["annotations"]["trousseau.keysuite.app/public-paths"] = json!(paths);
            serde_json::to_vec(&review).unwrap()
        }),
    ]
    .into_iter()
    .inspect(|(name, body)| assert!(body.len() < 3 * 1024 * 1024, "{name}: {}", body.len()))
    .collect()
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A real `trousseau-proxy inject-webhook` process on a loopback port.
struct InjectorProcess {
    child: std::process::Child,
    port: u16,
    client: Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>,
}

impl InjectorProcess {
    /// Starts `binary` with the certificate in `dir` (signed by `ca`) and waits until it answers.
    async fn start(binary: &str, dir: &Path, ca: &TestCa) -> InjectorProcess {
        let port = crate::support::free_port();
        let child = std::process::Command::new(binary)
            .args(["inject-webhook", "--listen", &format!("127.0.0.1:{port}"), "--image", IMAGE])
            .arg("--tls-cert")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let injector = InjectorProcess { child, port, client: https_client(ca) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while injector.client.get(injector.url("/healthz").parse().unwrap()).await.map(|r| r.status()).ok()
            != Some(StatusCode::OK)
        {
            assert!(Instant::now() < deadline, "the injector did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        injector
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    fn peak_kib(&self) -> u64 {
        peak_rss_kib(self.child.id()).expect("VmHWM")
    }
}

impl Drop for InjectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends 30 connections' worth of near-3 MiB bodies that stall; what became of each.
async fn stall_thirty_bodies(port: u16, ca: &TestCa) -> std::collections::BTreeMap<String, usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stalled: Vec<_> = (0..30)
        .map(|_| {
            let roots = ca.roots();
            tokio::spawn(async move {
                let Ok(mut tls) = tls_connect(addr, &roots).await else { return String::from("refused") };
                let headers = format!(
                    "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    3 * 1024 * 1024 - 1024
                );
                let send = async {
                    tls.write_all(headers.as_bytes()).await?;
                    tls.write_all(&vec![b' '; WORST_REVIEW]).await?;
                    tls.flush().await?;
                    let mut answer = Vec::new();
                    tls.read_to_end(&mut answer).await?;
                    Ok::<_, std::io::Error>(answer)
                };
                match tokio::time::timeout(Duration::from_secs(20), send).await {
                    Ok(Ok(answer)) => String::from_utf8_lossy(&answer).lines().next().unwrap_or("closed").to_string(),
                    Ok(Err(e)) => format!("closed ({})", e.kind()),
                    Err(_) => "still held after 20 s".into(),
                }
            })
        })
        .collect();
    let mut outcomes = std::collections::BTreeMap::new();
    for task in stalled {
        *outcomes.entry(task.await.unwrap()).or_default() += 1;
    }
    outcomes
}

#[tokio::test]
async fn the_worst_reviews_keep_the_injector_process_small() {
    if peak_rss_kib(std::process::id()).is_none() {
        eprintln!("SKIPPED: no /proc/<pid>/status VmHWM on this system");
        return;
    }
    // Built first: an idle pooled connection would not outlive the webhook's header deadline.
    let reviews = worst_reviews();
    let dir = TempDir::new("rss");
    let ca = TestCa::new("trousseau-proxy injector test");
    let (cert_pem, key_pem) = ca.server_pair("served-first");
    std::fs::write(dir.0.join("tls.crt"), cert_pem).unwrap();
    std::fs::write(dir.0.join("tls.key"), key_pem).unwrap();
    // TROUSSEAU_INJECTOR_BIN measures another build (the release figures in the README).
    let binary = std::env::var("TROUSSEAU_INJECTOR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_trousseau-proxy").into());

    // Each scenario in a fresh process: VmHWM is the peak since start.
    let mut report = Vec::new();
    let mut worst_single = 0;
    for (name, body) in reviews {
        let injector = InjectorProcess::start(&binary, &dir.0, &ca).await;
        let baseline = injector.peak_kib();
        let request = Request::builder()
            .method(Method::POST)
            .uri(injector.url("/mutate"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        let response = injector.client.request(request).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let status = response.status();
        let answer = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, StatusCode::OK, "{name}");
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert!(answer["response"]["uid"].is_string(), "{name}");
        let grown = injector.peak_kib() - baseline;
        worst_single = worst_single.max(grown);
        report.push(format!("{name} ({} KiB body): {baseline} KiB at start, peak +{grown} KiB", body.len() / 1024));
    }

    // Then 30 connections that each send most of a 3 MiB body, and stall.
    let injector = InjectorProcess::start(&binary, &dir.0, &ca).await;
    let baseline = injector.peak_kib();
    let outcomes = stall_thirty_bodies(injector.port, &ca).await;
    let stalled = injector.peak_kib() - baseline;
    report.push(format!("30 stalled near-3 MiB bodies {outcomes:?}: {baseline} KiB at start, peak +{stalled} KiB"));

    eprintln!("injector peak RSS ({binary}):\n  {}", report.join("\n  "));
    // Each review costs its body (< 3 MiB) and a little more: nothing like a copy of the pod.
    assert!(worst_single < 24 * 1024, "{report:#?}");
    // Stalled bodies are cut at their deadline, and only a few are held at once.
    assert!(!outcomes.contains_key("still held after 20 s"), "{outcomes:?}");
    assert!(stalled < 32 * 1024, "{report:#?}");
}
