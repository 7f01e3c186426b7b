//! The chart behind a Gateway API gateway: the standalone form's HTTPRoute, the gRPC external
//! authorization port, and the gateway external auth form (the app's HTTPRoute whose ExternalAuth
//! filter asks the proxy, with `/.trousseau/` routed to the proxy).
//!
//! HTTPRoutes are validated with `check-jsonschema` against the Gateway API's own HTTPRoute CRD
//! schema, vendored in `tests/data/gateway-api/` (v1.6.1, standard and experimental channels, made
//! strict: unknown fields refused; `derive.py` there says how). No package of the registries this
//! project uses ships it: `@kubernetes-models/gateway-api` (npm) is generated from the Go types, not
//! the CRDs, leaves objects open and lacks `ExternalAuth` in its filter types. The CRDs' CEL rules
//! are not run by a JSON Schema validator: the ones the routes depend on are asserted here.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{root, run, temp_dir, text, tools, CheckConfig, Manifest, Render, Tools, STANDALONE, STANDALONE_FULL};

const HTTP_ROUTE: &str = "helm/trousseau-proxy/ci/standalone-httproute-values.yaml";
const EXTERNAL_AUTH: &str = "helm/trousseau-proxy/ci/gateway-external-auth-values.yaml";
const EXTERNAL_AUTH_HTTP: &str = "helm/trousseau-proxy/ci/gateway-external-auth-http-values.yaml";

/// The Gateway API release channel whose CRDs a cluster installed.
#[derive(Clone, Copy, Debug)]
enum Channel {
    Standard,
    Experimental,
}

/// `check-jsonschema` on one HTTPRoute against the vendored CRD schema of `channel`.
fn validate_route(tools: &Tools, route: &Value, channel: Channel) -> Result<(), String> {
    let schema = root().join(match channel {
        Channel::Standard => "tests/data/gateway-api/httproute-v1-standard.schema.json",
        Channel::Experimental => "tests/data/gateway-api/httproute-v1-experimental.schema.json",
    });
    let dir = temp_dir("httproute");
    let file = dir.join("httproute.json");
    std::fs::write(&file, serde_json::to_vec_pretty(route).unwrap()).unwrap();
    let output = run(&tools.check_jsonschema, &["--schemafile", schema.to_str().unwrap(), file.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    if output.status.success() {
        Ok(())
    } else {
        Err(text(&output))
    }
}

/// The CEL rules of the HTTPRoute CRD that the routes here could break and JSON Schema cannot
/// check: a filter carries its settings exactly when its type says so, and a Service backend
/// names its port.
fn assert_cel_rules_hold(route: &Value) {
    for rule in route["spec"]["rules"].as_array().unwrap() {
        for filter in rule["filters"].as_array().into_iter().flatten() {
            let is_auth = filter["type"] == "ExternalAuth";
            assert_eq!(filter.get("externalAuth").is_some(), is_auth, "filter.externalAuth ⇔ type ExternalAuth: {filter}");
            if is_auth {
                assert!(filter["externalAuth"]["backendRef"]["port"].is_u64(), "Must have port for Service reference: {filter}");
            }
        }
        for backend in rule["backendRefs"].as_array().unwrap() {
            assert!(backend["port"].is_u64(), "Must have port for Service reference: {backend}");
        }
    }
}

/// The Service port named `name`.
fn service_port<'a>(manifest: &'a Manifest, name: &str) -> Option<&'a Value> {
    manifest.one("Service")["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == name)
}

fn route_named<'a>(manifest: &'a Manifest, name: &str) -> &'a Value {
    let routes = manifest.of_kind("HTTPRoute");
    routes.into_iter().find(|r| r["metadata"]["name"] == name).unwrap_or_else(|| panic!("no HTTPRoute {name}"))
}

#[test]
fn every_rendered_http_route_validates_against_the_gateway_api_crd_of_its_channel() {
    let Some(tools) = tools() else { return };
    let mut checked = Vec::new();
    for values in super::ci_values_files() {
        for route in Render::with(&values).objects(&tools).of_kind("HTTPRoute") {
            let name = format!("{values}: {}", route["metadata"]["name"]);
            assert_cel_rules_hold(route);
            let external_auth = route.to_string().contains("\"ExternalAuth\"");
            // Every route is valid where the experimental CRDs are installed (a superset); a
            // route without ExternalAuth also where only the standard ones are.
            validate_route(&tools, route, Channel::Experimental).unwrap_or_else(|e| panic!("{name}: {e}"));
            if external_auth {
                let err = validate_route(&tools, route, Channel::Standard).expect_err(&name);
                assert!(err.contains("ExternalAuth"), "{name}: the standard channel refuses it for its filter:\n{err}");
            } else {
                validate_route(&tools, route, Channel::Standard).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            checked.push((name, external_auth));
        }
    }
    assert_eq!(checked.iter().filter(|(_, auth)| *auth).count(), 2, "{checked:?}");
    assert_eq!(checked.iter().filter(|(_, auth)| !*auth).count(), 1, "{checked:?}");

    // The vendored schemas are real and strict: a misspelt field or a wrong value is refused.
    let manifest = Render::with(EXTERNAL_AUTH).objects(&tools);
    let route = manifest.one("HTTPRoute");
    for (path, bad, named) in [
        ("/spec/parentRefs/0", json!({"name": "public", "sectionname": "https"}), "sectionname"),
        ("/spec/rules/1/filters/0/externalAuth/protocol", json!("gRPC"), "gRPC"),
        ("/spec/rules/1/filters/0/externalAuth/backendRef", json!({"name": "p", "port": 9001, "weight": 1}), "weight"),
        ("/spec/rules/0/matches/0/path/type", json!("Prefix"), "Prefix"),
    ] {
        let mut broken = route.clone();
        *broken.pointer_mut(path).unwrap() = bad;
        let err = validate_route(&tools, &broken, Channel::Experimental).expect_err(path);
        assert!(err.contains(named), "{path}: {err}");
    }
}

#[test]
fn the_http_route_sends_the_whole_host_to_the_proxy_service() {
    let Some(tools) = tools() else { return };
    let manifest = Render::with(HTTP_ROUTE).objects(&tools);
    let route = manifest.one("HTTPRoute");
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(route["spec"]["parentRefs"], json!([{"name": "public", "namespace": "gateways", "sectionName": "https"}]));
    assert_eq!(route["spec"]["hostnames"], json!(["shop.example.com", "www.shop.example.com"]));
    let service = manifest.one("Service");
    assert_eq!(
        route["spec"]["rules"],
        json!([{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            // The Service's port (8080 here), not the container's: what a backendRef names.
            "backendRefs": [{"name": service["metadata"]["name"], "port": 8080}],
        }])
    );
    assert_eq!(service_port(&manifest, "http").unwrap()["port"], 8080);
    assert!(manifest.of_kind("Ingress").is_empty());

    // Hostnames default to the host of public_url; an HTTPRoute needs a Gateway to attach to.
    let defaults = Render::with(STANDALONE).set("httpRoute.enabled=true").set("httpRoute.parentRefs[0].name=public");
    let route = defaults.objects(&tools).one("HTTPRoute").clone();
    assert_eq!(route["spec"]["hostnames"], json!(["shop.example.com"]));
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["port"], 80);
    let err = Render::with(STANDALONE).set("httpRoute.enabled=true").yaml(&tools).expect_err("no parentRefs");
    assert!(err.contains("httpRoute.parentRefs is required"), "{err}");
    // Off by default; beside an Ingress it is allowed (moving from one to the other).
    assert!(Render::with(STANDALONE).objects(&tools).of_kind("HTTPRoute").is_empty());
    let both = Render::with(STANDALONE_FULL).set("httpRoute.enabled=true").set("httpRoute.parentRefs[0].name=public").objects(&tools);
    assert_eq!((both.of_kind("Ingress").len(), both.of_kind("HTTPRoute").len()), (1, 1));
}

#[test]
fn the_grpc_authz_port_is_served_declared_and_let_in() {
    let Some(tools) = tools() else { return };
    let manifest = Render::with(EXTERNAL_AUTH).objects(&tools);
    let container = &manifest.one("Deployment")["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_array().unwrap();
    let listen = env.iter().find(|e| e["name"] == "TROUSSEAU_PROXY_GRPC_AUTHZ_LISTEN").expect("the listener's variable");
    assert_eq!(listen["value"], "0.0.0.0:9001");
    let ports = container["ports"].as_array().unwrap();
    assert!(ports.contains(&json!({"name": "grpc-authz", "containerPort": 9001, "protocol": "TCP"})), "{ports:?}");
    assert_eq!(
        service_port(&manifest, "grpc-authz"),
        Some(&json!({"name": "grpc-authz", "port": 9001, "targetPort": "grpc-authz", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}))
    );
    // The NetworkPolicy opens it to the same sources as the http port: the gateway's namespace.
    let policies = manifest.of_kind("NetworkPolicy");
    let policy = policies.iter().find(|p| p["metadata"]["name"] == manifest.one("Service")["metadata"]["name"]).unwrap();
    let ingress = &policy["spec"]["ingress"][0];
    let open: BTreeSet<u64> = ingress["ports"].as_array().unwrap().iter().map(|p| p["port"].as_u64().unwrap()).collect();
    assert_eq!(open, BTreeSet::from([4180, 9001]));
    assert_eq!(ingress["from"], json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateways"}}}]));

    // Another port: everywhere at once.
    let moved = Render::with(EXTERNAL_AUTH).set("grpcAuthz.port=19001").objects(&tools);
    let container = &moved.one("Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert!(container["env"].as_array().unwrap().contains(&json!({"name": "TROUSSEAU_PROXY_GRPC_AUTHZ_LISTEN", "value": "0.0.0.0:19001"})));
    assert_eq!(service_port(&moved, "grpc-authz").unwrap()["port"], 19001);
    assert_eq!(moved.one("HTTPRoute")["spec"]["rules"][1]["filters"][0]["externalAuth"]["backendRef"]["port"], 19001);
    assert!(moved.of_kind("NetworkPolicy").iter().any(|p| p.to_string().contains("19001")));

    // Off by default: no variable, no port anywhere.
    let off = Render::with(STANDALONE).set("networkPolicy.enabled=true").objects(&tools);
    let off_text = [off.one("Deployment"), off.one("Service"), off.one("NetworkPolicy")].map(Value::to_string).join("\n");
    assert!(!off_text.contains("grpc-authz") && !off_text.contains("GRPC_AUTHZ") && !off_text.contains("9001"), "{off_text}");

    // A port another listener has is refused, named.
    for port in ["4180", "9180"] {
        let err = Render::with(EXTERNAL_AUTH).set(&format!("grpcAuthz.port={port}")).yaml(&tools).expect_err(port);
        assert!(err.contains(&format!("grpcAuthz.port {port} is taken")), "{err}");
    }
}

#[test]
fn gateway_external_auth_over_grpc_asks_the_proxy_and_routes_its_pages_to_it() {
    let Some(tools) = tools() else { return };
    let manifest = Render::with(EXTERNAL_AUTH).objects(&tools);
    let proxy = manifest.one("Service")["metadata"]["name"].as_str().unwrap().to_string();
    let route = route_named(&manifest, &format!("{proxy}-app"));
    assert_eq!(route["spec"]["parentRefs"], json!([{"name": "public", "namespace": "gateways", "sectionName": "https"}]));
    assert_eq!(route["spec"]["hostnames"], json!(["crm.example.com"]), "the host of public_url");
    let rules = route["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    // The proxy's own pages (sign-in, callback, logout) on the app's host: to the proxy, unfiltered.
    assert_eq!(
        rules[0],
        json!({"matches": [{"path": {"type": "PathPrefix", "value": "/.trousseau"}}], "backendRefs": [{"name": proxy, "port": 80}]})
    );
    // Everything else: the gateway asks the proxy's gRPC port, then sends it to the app.
    assert_eq!(rules[1]["matches"], json!([{"path": {"type": "PathPrefix", "value": "/"}}]));
    let grpc_port = service_port(&manifest, "grpc-authz").expect("the grpc-authz Service port")["port"].clone();
    assert_eq!(
        rules[1]["filters"],
        json!([{"type": "ExternalAuth", "externalAuth": {"protocol": "GRPC", "backendRef": {"name": proxy, "port": grpc_port}}}])
    );
    assert_eq!(rules[1]["backendRefs"], json!([{"name": "crm", "port": 8080}]));
    // The proxy's pages are reachable from the gateway: its http port is open to it as well.
    let policies = manifest.of_kind("NetworkPolicy");
    let (fence, own): (Vec<&Value>, Vec<&Value>) = policies.iter().partition(|p| p["metadata"]["name"] == format!("{proxy}-upstream"));
    assert!(own[0]["spec"]["ingress"][0]["ports"].as_array().unwrap().contains(&json!({"port": 4180, "protocol": "TCP"})));
    // The app's fence lets in the gateway, which forwards to the app, not the proxy, which does not.
    assert_eq!(fence[0]["spec"]["podSelector"]["matchLabels"], json!({"app.kubernetes.io/name": "crm"}));
    assert_eq!(fence[0]["spec"]["ingress"], json!([{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateways"}}}]}]));
    assert_eq!(manifest.one("HorizontalPodAutoscaler")["spec"]["minReplicas"], 2);

    // The install notes say where browsers and gateways go.
    let output = run(&tools.helm, &["install", "crm-auth", super::CHART, "--namespace", "crm", "--values", EXTERNAL_AUTH, "--dry-run=client"]);
    let notes = text(&output);
    assert!(output.status.success(), "{notes}");
    assert!(notes.contains("through the HTTPRoute crm-auth-trousseau-proxy-app: the gateway\nasks the proxy (GRPC)"), "{notes}");
    assert!(notes.contains("crm-auth-trousseau-proxy.crm.svc:9001 (port grpc-authz, h2c)"), "{notes}");
    assert!(notes.contains("lets only networkPolicy.ingressFrom reach it"), "{notes}");

    // What could not work is refused, named.
    let refused: &[(&[&str], &str)] = &[
        (&["grpcAuthz.enabled=false"], "gatewayExternalAuth.protocol GRPC asks the proxy's gRPC port: set grpcAuthz.enabled: true"),
        (&["gatewayExternalAuth.backendRef.name="], "gatewayExternalAuth.backendRef.name is required"),
        (&["gatewayExternalAuth.parentRefs=null"], "gatewayExternalAuth.parentRefs is required"),
        (&["httpRoute.enabled=true", "httpRoute.parentRefs[0].name=public"], "httpRoute.enabled and gatewayExternalAuth.enabled both route the host"),
        // A fence open to anyone would be no fence.
        (&["networkPolicy.ingressFrom=null"], "networkPolicy.upstreamPodSelector with gatewayExternalAuth"),
    ];
    for (sets, named) in refused {
        let err = sets.iter().fold(Render::with(EXTERNAL_AUTH), |r, s| r.set(s)).yaml(&tools).expect_err(&format!("{sets:?}"));
        assert!(err.contains(named), "{sets:?}: the error should say {named:?}:\n{err}");
    }
}

#[test]
fn gateway_external_auth_over_http_asks_the_auth_endpoint_the_proxy_understands() {
    use trousseau_proxy::identity::{self, ExtraHeaders, HeadersPreset};
    let Some(tools) = tools() else { return };
    let manifest = Render::with(EXTERNAL_AUTH_HTTP).objects(&tools);
    let proxy = manifest.one("Service")["metadata"]["name"].as_str().unwrap().to_string();
    let route = route_named(&manifest, &format!("{proxy}-app"));
    let filter = &route["spec"]["rules"][1]["filters"][0]["externalAuth"];
    assert_eq!(filter["protocol"], "HTTP");
    assert_eq!(filter["backendRef"], json!({"name": proxy, "port": 80}), "the proxy's http Service port");
    assert!(service_port(&manifest, "grpc-authz").is_none());
    assert_eq!(route["spec"]["rules"][1]["backendRefs"], json!([{"name": "crm", "namespace": "crm", "port": 80}]));

    // The gateway asks `path` + the original path with the original method: the proxy's
    // forward-auth reads exactly that request, not another.
    let prefix = filter["http"]["path"].as_str().unwrap();
    let asked: http::Uri = format!("{prefix}/admin/reports?year=2026").parse().unwrap();
    let original = trousseau_proxy::forward_auth::describe(&http::Method::DELETE, &asked, &http::HeaderMap::new()).unwrap();
    assert_eq!((original.method, original.path.as_str(), original.uri.as_str()), (http::Method::DELETE, "/admin/reports", "/admin/reports?year=2026"));

    // It sends the session cookie and what tells a browser's navigation from an API call.
    let sent: Vec<String> = filter["http"]["allowedHeaders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_ascii_lowercase()).collect();
    for header in ["cookie", "accept", "sec-fetch-mode", "sec-fetch-dest", "x-requested-with"] {
        assert!(sent.iter().any(|h| h == header), "{header} not sent to the proxy: {sent:?}");
    }
    // It copies exactly the headers a 2xx answer names (every one, empty when absent), so each
    // replaces a client's own copy: the binary's list for these values (pass_access_token, a
    // custom header).
    let copied: BTreeSet<String> =
        filter["http"]["allowedResponseHeaders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_ascii_lowercase()).collect();
    let custom = std::collections::BTreeMap::from([("X-User-Email".to_string(), "email".to_string())]);
    let extra = ExtraHeaders::new(HeadersPreset::Trousseau, &custom).unwrap();
    let mut named = http::HeaderMap::new();
    identity::name_absent_headers(&mut named, &extra, true);
    let named: BTreeSet<String> = named.keys().map(|k| k.as_str().to_string()).collect();
    assert_eq!(copied, named);
    // Without the access token or extra headers: the X-Trousseau-* claim headers and the assertion.
    let plain = Render::with(EXTERNAL_AUTH_HTTP)
        .set("config.identity.pass_access_token=false")
        .set("gatewayExternalAuth.extraResponseHeaders=null")
        .objects(&tools);
    let plain_filter = &plain.one("HTTPRoute")["spec"]["rules"][1]["filters"][0]["externalAuth"];
    let plain_copied: Vec<&str> = plain_filter["http"]["allowedResponseHeaders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert_eq!(plain_copied.len(), 10, "{plain_copied:?}");
    assert!(plain_copied.iter().all(|h| h.starts_with("X-Trousseau-")) && plain_copied.contains(&"X-Trousseau-Jwt-Assertion"), "{plain_copied:?}");
}

/// The proxy's configuration for the gateway forms is one `check-config` accepts, with the gRPC
/// listener where the Service and the filter point.
#[test]
fn the_proxy_accepts_the_grpc_listener_the_chart_sets() {
    let Some(tools) = tools() else { return };
    let effective = CheckConfig::of(&Render::with(EXTERNAL_AUTH).objects(&tools), EXTERNAL_AUTH).accepted(EXTERNAL_AUTH);
    assert!(effective.contains("grpc_authz_listen: 0.0.0.0:9001"), "{effective}");
    // Without it, the binary has no gRPC listener.
    let off = CheckConfig::of(&Render::with(EXTERNAL_AUTH_HTTP).objects(&tools), EXTERNAL_AUTH_HTTP).accepted(EXTERNAL_AUTH_HTTP);
    assert!(off.contains("grpc_authz_listen: null"), "{off}");
}
