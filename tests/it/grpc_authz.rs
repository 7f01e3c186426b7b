//! `grpc_authz_listen`: Envoy's external authorization over gRPC, asked by a real gRPC client
//! (envoy-types' `AuthorizationClient` over tonic) on a real socket, as Envoy, Envoy Gateway and
//! Cilium ask it. Every answer is compared with what `/.trousseau/auth` answers about the same
//! request, so "the same decision" is shown, not assumed.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request as AttributeRequest};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use http::{Method, StatusCode};
use tonic::transport::Channel;

use crate::support::*;
use trousseau_proxy::config::{HumanDuration, RuleConfig};
use trousseau_proxy::limits::ListenerKind;

/// Sam Taylor: no organization.
const SAM: &str = "7b1e9c4d-2f38-4a6b-8e5d-c0a9f1e2d3b4";
/// The identity headers a browser-side client might send to pass as someone, in both spellings.
const SPOOFED: [(&str, &str); 4] = [("x-trousseau-sub", "spoofed"), ("x_trousseau_email", "spoofed@evil.com"), ("x-trousseau-org-role", "admin"), ("x-trousseau-superuser", "yes")];

/// A proxy with `grpc_authz_listen` on a port of its own: `/assets/*` public, `/admin/*` for
/// nobody, and `configure`'s changes.
async fn env_with(configure: impl FnOnce(&mut trousseau_proxy::config::FileConfig) + Send + 'static, idp: impl FnOnce(&mut trousseau_proxy::devidp::DevIdpConfig) + Send + 'static) -> Env {
    Env::start_with(EnvOptions {
        configure: Box::new(move |c| {
            c.grpc_authz_listen = Some(format!("127.0.0.1:{}", free_port()));
            crate::forward_auth::assets_public_admin_for_nobody(c);
            configure(c);
        }),
        idp: Box::new(idp),
    })
    .await
}

async fn env() -> Env {
    env_with(|_| {}, |_| {}).await
}

/// A gRPC client connected to `env`'s `grpc_authz_listen` (the listener is bound as the server
/// task starts: retried for a moment).
async fn client(env: &Env) -> AuthorizationClient<Channel> {
    let addr = env.app.settings().grpc_authz_listen.expect("grpc_authz_listen is set");
    for _ in 0..100 {
        if let Ok(client) = AuthorizationClient::connect(format!("http://{addr}")).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing answers gRPC on {addr}");
}

/// The check request Envoy sends for `method path` from `browser` (its cookies), with `headers`
/// and the route's `extensions`: pseudo-headers in the map, as Envoy writes them.
fn check_request(browser: &Browser, method: &str, path: &str, headers: &[(&str, &str)], extensions: &[(&str, &str)]) -> CheckRequest {
    let mut map: std::collections::HashMap<String, String> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    for (k, v) in [(":method", method), (":path", path), (":authority", "app.example.com"), (":scheme", "https")] {
        map.insert(k.into(), v.into());
    }
    if !browser.jar.is_empty() {
        map.insert("cookie".into(), browser.cookie_header());
    }
    let http = HttpRequest { method: method.into(), path: path.into(), host: "app.example.com".into(), scheme: "https".into(), headers: map, protocol: "HTTP/2".into(), ..Default::default() };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttributeRequest { http: Some(http), ..Default::default() }),
            context_extensions: extensions.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }),
    }
}

/// What a check answered, in HTTP terms.
#[derive(Debug)]
struct Checked {
    /// The `google.rpc.Status` code (0: allowed).
    code: i32,
    /// 200 for an OK response, else the denied response's status.
    status: u16,
    /// OK: the headers to set upstream; denied: the headers to the client.
    headers: Vec<(String, String)>,
    /// OK only.
    remove: Vec<String>,
    /// OK only: `response_headers_to_add`.
    to_client: Vec<(String, String)>,
    body: String,
}

impl Checked {
    fn of(response: CheckResponse) -> Checked {
        let code = response.status.expect("a status, never left out").code;
        let pairs = |options: &[envoy_types::ext_authz::v3::pb::HeaderValueOption]| -> Vec<(String, String)> {
            options.iter().map(|o| o.header.as_ref().map(|h| (h.key.clone(), h.value.clone())).unwrap()).collect()
        };
        match response.http_response.expect("an http_response, always") {
            HttpResponse::OkResponse(ok) => {
                Checked { code, status: 200, headers: pairs(&ok.headers), remove: ok.headers_to_remove, to_client: pairs(&ok.response_headers_to_add), body: String::new() }
            }
            HttpResponse::DeniedResponse(denied) => Checked {
                code,
                status: denied.status.expect("denied with a status").code as u16,
                headers: pairs(&denied.headers),
                remove: vec![],
                to_client: vec![],
                body: denied.body,
            },
            HttpResponse::ErrorResponse(_) => panic!("an error response: Envoy's failure_mode_allow could let it through"),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The identity headers set upstream, by name.
    fn identity(&self) -> BTreeMap<String, String> {
        self.headers.iter().filter(|(k, _)| k.starts_with("x-trousseau-")).cloned().collect()
    }
}

async fn check(client: &mut AuthorizationClient<Channel>, request: CheckRequest) -> Checked {
    Checked::of(client.check(request).await.expect("a policy outcome is never a gRPC error").into_inner())
}

/// `/.trousseau/auth` about the same request, asked as Traefik asks (which hands a browser's
/// 302 on, like Envoy).
async fn http_check(browser: &mut Browser, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut all = vec![("x-forwarded-method", method), ("x-forwarded-uri", path)];
    all.extend_from_slice(headers);
    let before = browser.jar.clone();
    let answer = browser.request(Method::GET, "/.trousseau/auth", &all, Bytes::new()).await;
    // The comparison must not change what the gRPC check is asked with.
    browser.jar = before;
    answer
}

/// The identity headers of a 200 from `/.trousseau/auth`, by name.
fn identity_of(answer: &Answer) -> BTreeMap<String, String> {
    answer.headers.iter().filter(|(k, _)| k.as_str().starts_with("x-trousseau-")).map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())).collect()
}

const API: (&str, &str) = ("accept", "application/json");
const NAVIGATION: [(&str, &str); 2] = [("accept", "text/html,application/xhtml+xml"), ("sec-fetch-mode", "navigate")];

#[tokio::test]
async fn a_signed_in_user_is_let_through_with_the_headers_of_the_http_check() {
    let env = env().await;
    let mut grpc = client(&env).await;
    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    let ok = check(&mut grpc, check_request(&jean, "GET", "/reports?q=1", &[API], &[])).await;
    assert_eq!((ok.code, ok.status), (0, 200), "{ok:?}");
    assert_eq!(ok.header("x-trousseau-sub"), Some(JEAN));
    assert_eq!(ok.header("x-trousseau-email"), Some("jean.dupont@hotel.com"));
    assert_eq!(ok.header("x-trousseau-org-id"), Some(""), "named, empty: no organization is selected");
    let verifier = trousseau_proxy::dev::JwksVerifier::new(format!("{}/.trousseau/jwks.json", env.origin));
    let (_, claims) = verifier.verify(ok.header("x-trousseau-jwt-assertion").unwrap()).await.expect("the assertion verifies");
    assert_eq!(claims["sub"], JEAN);
    assert!(ok.to_client.is_empty(), "nothing to the browser without a refresh: {:?}", ok.to_client);

    let http = http_check(&mut jean, "GET", "/reports?q=1", &[API]).await;
    assert_eq!(http.status, StatusCode::OK);
    assert_eq!(ok.identity(), identity_of(&http), "the same identity headers, every one named");
    assert_eq!(env.upstream.hits(), 1, "checks never touch the app (one hit from sign-in)");
    assert!(env.app.limits().listener(ListenerKind::GrpcAuthz).open.load(std::sync::atomic::Ordering::Relaxed) >= 1, "counted on its own listener");
}

#[tokio::test]
async fn without_a_session_a_browser_is_sent_to_sign_in_and_an_api_client_gets_the_same_401() {
    let env = env().await;
    let mut grpc = client(&env).await;
    let mut anonymous = env.browser();

    let sent = check(&mut grpc, check_request(&anonymous, "GET", "/reports?q=1", &NAVIGATION, &[])).await;
    let http = http_check(&mut anonymous, "GET", "/reports?q=1", &NAVIGATION).await;
    assert_eq!((sent.code, sent.status), (16, 302), "{sent:?}");
    assert_eq!(http.status, StatusCode::FOUND);
    let (grpc_to, http_to) = (url::Url::parse(sent.header("location").unwrap()).unwrap(), url::Url::parse(&http.location()).unwrap());
    assert_eq!(grpc_to[..url::Position::AfterPath], http_to[..url::Position::AfterPath], "to Trousseau's authorize endpoint");
    let redirect_uri = |u: &url::Url| u.query_pairs().find(|(k, _)| k == "redirect_uri").map(|(_, v)| v.into_owned());
    assert_eq!(redirect_uri(&grpc_to), redirect_uri(&http_to));
    let state_cookie = sent.headers.iter().find(|(k, _)| k == "set-cookie").map(|(_, v)| v.clone()).expect("the sign-in attempt's state cookie");
    let grpc_cookies = sent.headers.iter().filter(|(k, _)| k == "set-cookie").count();
    assert_eq!(grpc_cookies, http.set_cookies().len(), "the same cookies (one state cookie per attempt)");
    // The attempt completes: the browser comes back to the page it asked for.
    let mut browser = env.browser();
    browser.jar.insert(state_cookie.split('=').next().unwrap().into(), state_cookie.split_once('=').unwrap().1.split(';').next().unwrap().into());
    let back = browser.sign_in_at_idp(grpc_to.as_str(), JEAN).await;
    assert_eq!(back.location(), format!("{}/reports?q=1", env.origin));

    let refused = check(&mut grpc, check_request(&anonymous, "GET", "/api/x", &[API], &[])).await;
    let http = http_check(&mut anonymous, "GET", "/api/x", &[API]).await;
    assert_eq!((refused.code, refused.status), (16, 401));
    assert_eq!(refused.json(), http.json(), "the same JSON body");
    assert_eq!(refused.header("www-authenticate"), http.headers.get("www-authenticate").map(|v| v.to_str().unwrap()));
    assert_eq!(refused.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn a_refreshed_session_reaches_the_browser_and_then_works() {
    // Access tokens always due: every check refreshes the session.
    let env = env_with(|c| c.session.refresh_skew = HumanDuration(Duration::from_secs(30)), |i| i.access_token_ttl = Duration::ZERO).await;
    let mut grpc = client(&env).await;
    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    let refreshes = env.trousseau().stats().refresh_grants_ok;
    let ok = check(&mut grpc, check_request(&jean, "GET", "/reports", &[API], &[])).await;
    assert_eq!((ok.code, ok.status), (0, 200), "{ok:?}");
    assert_eq!(ok.header("x-trousseau-sub"), Some(JEAN));
    assert_eq!(env.trousseau().stats().refresh_grants_ok, refreshes + 1, "refreshed during the check");
    let cookies: Vec<&String> = ok.to_client.iter().filter(|(k, _)| k == "set-cookie").map(|(_, v)| v).collect();
    assert!(cookies.iter().any(|c| c.starts_with("trousseau_session")), "the refreshed session, for the browser: {:?}", ok.to_client);
    assert!(ok.headers.iter().all(|(k, _)| k != "set-cookie"), "never upstream");

    // The browser keeps what Envoy hands it; that cookie is a session the proxy accepts.
    let mut after = env.browser();
    for c in cookies {
        let c = cookie::Cookie::parse(c.clone()).unwrap();
        after.jar.insert(c.name().into(), c.value().into());
    }
    let page = after.api_get("/x").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_eq!(page.json()["headers"]["x-trousseau-sub"][0], JEAN);
}

#[tokio::test]
async fn spoofed_identity_headers_never_pass_as_the_clients_values() {
    let env = env().await;
    let mut grpc = client(&env).await;
    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    let mut headers = SPOOFED.to_vec();
    headers.push(API);
    for (who, browser, path) in [("signed in", jean.clone(), "/reports"), ("anonymous, public route", env.browser(), "/assets/app.css")] {
        let mut browser = browser;
        let ok = check(&mut grpc, check_request(&browser, "GET", path, &headers, &[])).await;
        assert_eq!(ok.status, 200, "{who}: {ok:?}");
        for (name, value) in &ok.headers {
            assert!(!SPOOFED.iter().any(|(_, spoofed)| spoofed == value && !value.is_empty()), "{who}: the client's {name}: {value} passed");
        }
        // Overwritten where we set the name; removed in every other spelling.
        let expected_sub = if who == "signed in" { JEAN } else { "" };
        assert_eq!(ok.header("x-trousseau-sub"), Some(expected_sub), "{who}");
        assert_eq!(ok.header("x-trousseau-org-role"), Some(""), "{who}");
        let mut removed = ok.remove.clone();
        removed.sort();
        assert_eq!(removed, ["x-trousseau-superuser", "x_trousseau_email"], "{who}: never a header we set (Envoy removes after it sets)");
        let http = http_check(&mut browser, "GET", path, &headers).await;
        assert_eq!(ok.identity(), identity_of(&http), "{who}: the same headers as the HTTP check");
    }
}

#[tokio::test]
async fn a_route_rule_refuses_with_the_same_403_as_the_http_check() {
    let env = env().await;
    let mut grpc = client(&env).await;
    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    let refused = check(&mut grpc, check_request(&jean, "POST", "/admin/users", &[API], &[])).await;
    let http = http_check(&mut jean, "POST", "/admin/users", &[API]).await;
    assert_eq!((refused.code, refused.status), (7, 403), "{refused:?}");
    assert_eq!(http.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json(), http.json());
    assert_eq!(refused.json()["reason"], "email_not_allowed");
    // A browser gets the same page.
    let page = check(&mut grpc, check_request(&jean, "GET", "/admin/users", &NAVIGATION, &[])).await;
    let http = http_check(&mut jean, "GET", "/admin/users", &NAVIGATION).await;
    assert_eq!((page.status, page.header("content-type")), (403, Some("text/html; charset=utf-8")));
    assert_eq!(page.body, http.text());
}

#[tokio::test]
async fn a_signed_out_or_back_channel_logged_out_session_is_refused() {
    let env = env().await;
    let mut grpc = client(&env).await;
    // Signed out: a copy of the cookie taken before is refused.
    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    let mut copy = jean.clone();
    assert_eq!(check(&mut grpc, check_request(&copy, "GET", "/x", &[API], &[])).await.status, 200);
    jean.request(Method::POST, "/.trousseau/logout", &[API], Bytes::new()).await;
    let refused = check(&mut grpc, check_request(&copy, "GET", "/x", &[API], &[])).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(http_check(&mut copy, "GET", "/x", &[API]).await.status, StatusCode::UNAUTHORIZED);
    // Back-channel logout from Trousseau: the session ends everywhere.
    let mut sam = env.browser();
    sam.sign_in("/", SAM).await;
    assert_eq!(check(&mut grpc, check_request(&sam, "GET", "/x", &[API], &[])).await.status, 200);
    let token = env.trousseau().logout_token(Some(SAM), None);
    let posted = env.browser().request(Method::POST, "/.trousseau/backchannel-logout", &[("content-type", "application/x-www-form-urlencoded")], Bytes::from(format!("logout_token={token}"))).await;
    assert!(posted.status.is_success(), "{}", posted.text());
    let refused = check(&mut grpc, check_request(&sam, "GET", "/x", &[API], &[])).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.json(), http_check(&mut sam, "GET", "/x", &[API]).await.json());
}

#[tokio::test]
async fn client_sent_forwarding_headers_never_change_the_path_judged() {
    let env = env().await;
    let mut grpc = client(&env).await;
    let pointing = |uri: &'static str, method: &'static str| vec![("x-original-uri", uri), ("x-forwarded-uri", uri), ("x-forwarded-method", method), ("x-original-method", method), API];
    // Anonymous on a protected path, claiming a public one: still refused.
    let anonymous = env.browser();
    let refused = check(&mut grpc, check_request(&anonymous, "GET", "/reports", &pointing("/assets/app.css", "GET"), &[])).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    // Signed in on a path a rule refuses, claiming an allowed path or method: still refused.
    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    let refused = check(&mut grpc, check_request(&jean, "POST", "/admin/x", &pointing("/reports", "GET"), &[])).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    // And the other way: a public path claimed to be a protected one is judged as itself.
    let ok = check(&mut grpc, check_request(&anonymous, "GET", "/assets/app.css", &pointing("/admin/x", "POST"), &[])).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    // The check request's own path is the only description: unreadable, it is refused.
    let unreadable = check(&mut grpc, check_request(&jean, "GET", "reports", &[API], &[])).await;
    assert_eq!((unreadable.status, unreadable.json()["reason"].as_str()), (403, Some("ambiguous_request")));
}

#[tokio::test]
async fn context_extensions_narrow_a_route_and_never_widen_it() {
    let env = env().await;
    let mut grpc = client(&env).await;
    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    // Not yet in an organization: asked to choose one, as a rule naming roles would.
    let choose = check(&mut grpc, check_request(&jean, "GET", "/team", &[API], &[("roles", "admin")])).await;
    assert_eq!((choose.status, choose.json()["error"].as_str()), (403, Some("organization_required")), "{choose:?}");
    choose_organization(&env, &mut jean, "hotel-le-grand-paris").await; // admin there
    let ask = |extensions: &'static [(&'static str, &'static str)], path: &'static str| check_request(&jean, "GET", path, &[API], extensions);
    assert_eq!(check(&mut grpc, ask(&[("roles", "admin,owner")], "/team")).await.status, 200);
    assert_eq!(check(&mut grpc, ask(&[("orgs", "hotel-le-grand-paris"), ("roles", "admin")], "/team")).await.status, 200);
    for (extensions, reason) in [
        (&[("roles", "owner")][..], "role_not_allowed"),
        (&[("orgs", "hotel-riviera-nice")][..], "organization_not_allowed"),
        (&[("roles", "")][..], "organization_not_allowed"),
    ] {
        let refused = check(&mut grpc, ask(extensions, "/team")).await;
        assert_eq!((refused.status, refused.json()["reason"].as_str()), (403, Some(reason)), "{extensions:?}");
    }
    // Never wider than the configuration: /admin/* is for nobody, whatever the route allows.
    let refused = check(&mut grpc, ask(&[("roles", "admin")], "/admin/x")).await;
    assert_eq!((refused.status, refused.json()["reason"].as_str()), (403, Some("email_not_allowed")));
    // The client's query is not the route's: `?roles=` in the path narrows nothing.
    assert_eq!(check(&mut grpc, ask(&[], "/team?roles=&orgs=nobody")).await.status, 200);
    // A narrowed public route needs a session.
    let anonymous = check(&mut grpc, check_request(&env.browser(), "GET", "/assets/app.css", &[API], &[("roles", "admin")])).await;
    assert_eq!(anonymous.status, 401);
}

/// Selects `slug` as the browser's organization.
async fn choose_organization(env: &Env, b: &mut Browser, slug: &str) {
    let listed = b.api_get("/.trousseau/organizations").await;
    let org = listed.json()["organizations"].as_array().unwrap().iter().find(|o| o["slug"] == slug).expect("the user is a member")["id"].as_str().unwrap().to_string();
    let chosen = b
        .request(Method::POST, "/.trousseau/organizations", &[("content-type", "application/x-www-form-urlencoded"), ("origin", &env.origin)], Bytes::from(format!("org={org}&rd=%2F")))
        .await;
    assert_eq!(chosen.status, StatusCode::SEE_OTHER, "{}", chosen.text());
}

#[tokio::test]
async fn a_reload_changes_the_rules_checks_are_judged_by() {
    let mut env = env().await;
    let mut grpc = client(&env).await;
    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    assert_eq!(check(&mut grpc, check_request(&jean, "GET", "/reports", &[API], &[])).await.status, 200);
    env.reload(|c| c.routes.rules.push(RuleConfig { path: "/reports".into(), emails: vec!["nobody@example.com".into()], ..Default::default() })).unwrap();
    // The same gRPC connection, the new configuration.
    assert_eq!(check(&mut grpc, check_request(&jean, "GET", "/reports", &[API], &[])).await.status, 403);
}

#[tokio::test]
async fn the_apps_request_keeps_the_clients_own_cookies_and_never_the_session_cookie() {
    let env = env().await;
    let mut grpc = client(&env).await;
    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    // The dev IdP shares the proxy's origin in tests: its own sign-in cookie is not the proxy's.
    jean.jar.retain(|name, _| name.starts_with("trousseau_session"));
    // Only our cookies: the app's request loses the header.
    let ok = check(&mut grpc, check_request(&jean, "GET", "/reports", &[API], &[])).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.remove.iter().any(|h| h == "cookie") && ok.header("cookie").is_none(), "removed, not set: {ok:?}");
    // Ours beside the app's own: the app's request keeps exactly its own.
    jean.jar.insert("app_pref".into(), "dark".into());
    jean.jar.insert("app_cart".into(), "3".into());
    let ok = check(&mut grpc, check_request(&jean, "GET", "/reports", &[API], &[])).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let kept = ok.header("cookie").expect("set to the client's own cookies");
    let mut names: Vec<&str> = kept.split("; ").map(|c| c.split('=').next().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["app_cart", "app_pref"], "{kept}");
    assert!(!ok.remove.iter().any(|h| h == "cookie"), "set, so never removed after: {ok:?}");
    // No cookie of ours (an API client): nothing changes.
    let mut api = env.browser();
    api.jar.insert("app_pref".into(), "dark".into());
    let denied = check(&mut grpc, check_request(&api, "GET", "/reports", &[API], &[])).await;
    assert_eq!(denied.status, 401);
    env.stop().await;
}
