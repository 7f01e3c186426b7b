//! ingress-nginx CVE-2025-24514 and its kin: annotation values spliced into a configuration. The
//! injector reads five annotations of a labelled pod into the sidecar it adds; a value carrying a
//! newline, a quote, a `$` (Kubernetes expands `$(VAR)` in `env[].value`) or YAML must be refused
//! with the reason — never passed on to become something else than what the annotation says.

use std::path::Path;

use serde_json::{json, Value};
use trousseau_proxy::inject::{self, InjectorSettings};

fn plain_pod_review() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/admission/plain-pod.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The injector's answer to the plain pod with `annotation` set to `value`.
fn answer_with(annotation: &str, value: &str) -> Value {
    let mut review = plain_pod_review();
    review["request"]["object"]["metadata"]["annotations"][annotation] = json!(value);
    let settings = InjectorSettings { image: "ghcr.io/keysuite/trousseau-proxy:test".into(), native_sidecar: true };
    let body = serde_json::to_vec(&review).unwrap();
    serde_json::to_value(inject::review(&body, &settings).expect("an AdmissionReview answer")).unwrap()["response"].clone()
}

/// Values that splice: a newline (a second line of YAML or of a header), quotes, a `$(VAR)`
/// reference, YAML flow and block syntax, and a second item smuggled after a comma.
const SPLICING: &[&str] = &[
    "8080\nextra: true", "http\"", "'http'", "$(TROUSSEAU_PROXY_LISTEN)", "${HOME}", "{a: b}", "[x]", "http: x", "- x", "http,#",
];

#[test]
fn annotations_carrying_a_newline_a_quote_a_dollar_or_yaml_are_refused() {
    for annotation in ["trousseau.keysuite.app/port", "trousseau.keysuite.app/proxy-port", "trousseau.keysuite.app/config", "trousseau.keysuite.app/secret"] {
        for value in SPLICING {
            let response = answer_with(annotation, value);
            assert_eq!(response["allowed"], false, "{annotation}: {value:?} was accepted");
            assert!(response.get("patch").is_none(), "{annotation}: {value:?}");
            assert!(response["status"]["message"].as_str().unwrap_or_default().contains(annotation), "{annotation}: {response}");
        }
    }
    // The public paths: a newline or a path that is not one.
    for value in ["/healthz\n/admin/*", "/a,\n- /admin", "healthz", "/a, admin"] {
        let response = answer_with("trousseau.keysuite.app/public-paths", value);
        assert_eq!(response["allowed"], false, "public-paths: {value:?} was accepted");
    }
}

/// `/$(TROUSSEAU_PROXY_LISTEN)` reaches the sidecar as `TROUSSEAU_PROXY_ROUTES_PUBLIC`, which the
/// kubelet expands: the proxy would get another public path than the annotation shows.
#[test]
fn public_paths_carrying_a_dollar_a_quote_or_yaml_are_refused() {
    for value in ["/$(TROUSSEAU_PROXY_LISTEN)", "/a$b", "/assets/*\"", "/'x'", "/{a: b}", "/a: b", "/x#y"] {
        let response = answer_with("trousseau.keysuite.app/public-paths", value);
        assert_eq!(response["allowed"], false, "public-paths: {value:?} was accepted");
        assert!(response["status"]["message"].as_str().unwrap_or_default().contains("public-paths"), "{response}");
    }
}
