//! Single-page apps (issue 18): the session endpoint, `login_url`s that come back to the page that
//! made the request, CORS headers on the proxy's own answers for the allowed origins only, and
//! preflights that reach the app without a session only when the configuration says so.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::support::*;
use trousseau_proxy::config::RuleConfig;

const SPA: &str = "https://spa.example.com";

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The return path inside a `login_url` (`/.trousseau/login?rd=…`).
fn rd_of(login_url: &str) -> String {
    let query = login_url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "rd").map(|(_, v)| v.into_owned()).unwrap_or_default()
}

#[tokio::test]
async fn the_session_endpoint_says_who_and_when_never_a_token_and_refreshes_when_due() {
    let env = Env::start_with(EnvOptions { idp: Box::new(|i| i.access_token_ttl = Duration::from_secs(3)), ..Default::default() }).await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let r = b.api_get("/.trousseau/session").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let state = r.json();
    assert_eq!(state["authenticated"], true);
    assert_eq!(state["sub"], JEAN);
    assert!(state["org"].is_null(), "Jean has two hotels and chose none yet: {state}");
    let expires_in = state["expires_in"].as_u64().unwrap();
    assert!(expires_in > 29 * 86_400 && expires_in <= 30 * 86_400, "max_lifetime 30 days: {expires_in}");
    assert!(state["refresh_in"].as_u64().unwrap() <= 2, "3 s tokens are due at half life: {state}");
    let text = r.text();
    for secret in ["access_token", "refresh_token", "id_token", "eyJ"] {
        assert!(!text.contains(secret), "never a token: {text}");
    }
    assert_eq!(header(&r, "cache-control"), Some("no-store"));

    // Called when due, it refreshes: a front end keeps its session alive with it alone.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = env.trousseau().stats().refresh_grants_ok;
    let r = b.api_get("/.trousseau/session").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(env.trousseau().stats().refresh_grants_ok, before + 1, "refreshed");
    assert!(r.set_cookies().iter().any(|c| c.starts_with("trousseau_session=")), "with the new cookie");
    assert!(r.json()["refresh_in"].as_u64().unwrap() >= 1);

    // The sign-in's and the refresh's cookies were weighed: two small sessions (one cookie each).
    let metrics = env.app.metrics_text();
    let sample = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().parse::<f64>().unwrap());
    assert_eq!(sample("trousseau_proxy_session_cookie_bytes_count"), Some(2.0), "{metrics}");
    assert_eq!(sample("trousseau_proxy_session_cookie_bytes_bucket{le=\"4096\"}"), Some(2.0), "{metrics}");
    let sum = sample("trousseau_proxy_session_cookie_bytes_sum").unwrap();
    assert!((1000.0..8192.0).contains(&sum), "{sum} bytes");

    // Jean picks a hotel: the endpoint names it.
    b.api_get("/").await;
    let page = b.navigate("/.trousseau/organizations").await;
    let form = Form::find(&page.text(), "org", "018dd362-a511-89dd-9f1d-111ff551ff51").expect("the Riviera button");
    let mut fields = form.fields.clone();
    fields.push(("org".into(), "018dd362-a511-89dd-9f1d-111ff551ff51".into()));
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let action = absolute(&env.origin, &form.action);
    let chosen = b.request(Method::POST, &action, &[("content-type", "application/x-www-form-urlencoded"), ("accept", "text/html"), ("origin", &env.origin)], Bytes::from(body)).await;
    assert!(chosen.status.is_redirection(), "{} {}", chosen.status, chosen.text());
    assert_eq!(b.api_get("/.trousseau/session").await.json()["org"], "018dd362-a511-89dd-9f1d-111ff551ff51");
}

#[tokio::test]
async fn without_a_session_the_login_url_comes_back_to_the_page_that_asked() {
    let env = Env::start().await;
    let mut b = env.browser();
    let page = format!("{}/orders/42?tab=lines", env.origin);
    for path in ["/.trousseau/session", "/api/orders/42/lines", "/.trousseau/userinfo"] {
        let r = b.request(Method::GET, path, &[("accept", "application/json"), ("referer", &page)], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        let body = r.json();
        assert_eq!(body["authenticated"], false, "{path}: {body}");
        assert_eq!(rd_of(body["login_url"].as_str().unwrap()), "/orders/42?tab=lines", "{path}: back to the page, not the call");
    }
    // Another origin's page is not where to come back to; without a Referer, the call itself.
    let r = b.request(Method::GET, "/api/x", &[("accept", "application/json"), ("referer", "https://evil.example/orders")], Bytes::new()).await;
    assert_eq!(rd_of(r.json()["login_url"].as_str().unwrap()), "/api/x");
    let r = b.request(Method::GET, "/api/x", &[("accept", "application/json")], Bytes::new()).await;
    assert_eq!(rd_of(r.json()["login_url"].as_str().unwrap()), "/api/x");
    // Fifty background calls at once: fifty 401s, not one sign-in started.
    let calls = (0..50).map(|_| {
        let mut b = env.browser();
        let page = page.clone();
        async move { b.request(Method::GET, "/api/x", &[("accept", "*/*"), ("sec-fetch-mode", "cors"), ("referer", &page)], Bytes::new()).await }
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.set_cookies().is_empty(), "no sign-in attempt (state cookie) for a background call");
    }
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn a_sign_in_started_from_an_allowed_front_end_comes_back_to_its_page() {
    let env = Env::start_with(EnvOptions { configure: Box::new(|c| c.cors.allowed_origins = vec![SPA.into()]), ..Default::default() }).await;
    let mut b = env.browser();
    let page = format!("{SPA}/orders/42?tab=lines");
    let r = b.request(Method::GET, "/api/x", &[("accept", "application/json"), ("origin", SPA), ("referer", &page)], Bytes::new()).await;
    let login_url = r.json()["login_url"].as_str().unwrap().to_string();
    assert_eq!(rd_of(&login_url), page, "back to the front end's page");
    // Signing in there ends on that page.
    let done = b.sign_in_to_callback(&login_url, JEAN).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.text());
    assert_eq!(done.location(), page);
    // Any other absolute return stays on our origin.
    for rd in ["https://evil.example/", "https://spa.example.com.evil.example/x", "https://spa.example.com@evil.example/"] {
        let mut other = env.browser();
        let url = format!("/.trousseau/login?rd={}", url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>());
        let done = other.sign_in_to_callback(&url, JEAN).await;
        assert_eq!(done.location(), format!("{}/", env.origin), "{rd}");
    }
}

#[tokio::test]
async fn the_proxys_own_answers_are_readable_by_allowed_origins_only() {
    let env = Env::start_with(EnvOptions { configure: Box::new(|c| c.cors.allowed_origins = vec![SPA.into()]), ..Default::default() }).await;
    let mut anonymous = env.browser();
    let r = anonymous.request(Method::GET, "/api/x", &[("accept", "application/json"), ("origin", SPA)], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(SPA));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert!(r.headers.get_all("vary").iter().any(|v| v == "Origin"));
    let r = anonymous.request(Method::GET, "/.trousseau/session", &[("origin", SPA)], Bytes::new()).await;
    assert_eq!(header(&r, "access-control-allow-origin"), Some(SPA));

    for other in ["https://evil.example", "https://spa.example.com.evil.example", "http://spa.example.com", "null"] {
        let r = anonymous.request(Method::GET, "/api/x", &[("accept", "application/json"), ("origin", other)], Bytes::new()).await;
        assert_eq!(header(&r, "access-control-allow-origin"), None, "{other}");
        assert_eq!(header(&r, "access-control-allow-credentials"), None, "{other}");
    }

    // Signed in: the proxy's session answer carries them; the app's answers are the app's own.
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let r = b.request(Method::GET, "/.trousseau/session", &[("origin", SPA)], Bytes::new()).await;
    assert_eq!((r.status, header(&r, "access-control-allow-origin")), (StatusCode::OK, Some(SPA)));
    let r = b.request(Method::GET, "/api/x", &[("accept", "application/json"), ("origin", SPA)], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(header(&r, "access-control-allow-origin"), None, "the app decides on its own answers");
}

#[tokio::test]
async fn a_genuine_preflight_reaches_the_app_without_an_identity_only_where_configured() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.cors.preflight = trousseau_proxy::config::Preflight::Pass;
            c.routes.rules = vec![RuleConfig { path: "/admin/*".into(), cors_preflight: Some(trousseau_proxy::config::Preflight::Authenticate), ..Default::default() }];
        }),
        ..Default::default()
    })
    .await;
    let preflight = [("origin", SPA), ("access-control-request-method", "POST"), ("access-control-request-headers", "content-type")];
    let mut b = env.browser();
    let r = b.request(Method::OPTIONS, "/api/orders", &preflight, Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK, "the app answers it: {}", r.text());
    let seen = env.upstream.seen.lock().unwrap().last().cloned().unwrap();
    assert!(seen.keys().all(|k| !k.starts_with("x-trousseau-")), "no identity: {seen:?}");
    let hits = env.upstream.hits();

    // Not a genuine preflight, or a route that says authenticate: judged like any request.
    let spoofed_auth = [("origin", SPA), ("access-control-request-method", "POST"), ("authorization", "Bearer x")];
    let with_cookie = [("origin", SPA), ("access-control-request-method", "POST"), ("cookie", "trousseau_session=forged")];
    for (what, path, headers) in [
        ("a rule saying authenticate", "/admin/users", &preflight[..]),
        ("the same rule in capitals", "/ADMIN/users", &preflight[..]),
        ("without Access-Control-Request-Method", "/api/orders", &preflight[..1]),
        ("with credentials", "/api/orders", &spoofed_auth[..]),
        ("with a cookie", "/api/orders", &with_cookie[..]),
    ] {
        let mut h = headers.to_vec();
        h.push(("accept", "application/json"));
        let r = b.request(Method::OPTIONS, path, &h, Bytes::new()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}");
    }
    assert_eq!(env.upstream.hits(), hits, "none reached the app");

    // By default preflights are judged like any request.
    let strict = Env::start().await;
    let r = strict.browser().request(Method::OPTIONS, "/api/orders", &preflight, Bytes::new()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forward_auth_lets_a_described_preflight_through_and_never_a_spoofed_one() {
    let env = Env::start_with(EnvOptions { configure: Box::new(|c| c.cors.preflight = trousseau_proxy::config::Preflight::Pass), ..Default::default() }).await;
    let mut b = env.browser();
    let ask = |method: &'static str, extra: Vec<(&'static str, &'static str)>| {
        let mut h = vec![("x-original-method", method), ("x-original-uri", "/api/orders"), ("origin", SPA), ("access-control-request-method", "POST")];
        h.extend(extra);
        h
    };
    let r = b.request(Method::GET, "/.trousseau/auth", &ask("OPTIONS", vec![]), Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK, "nginx describes a preflight: {}", r.text());
    assert_eq!(header(&r, "x-trousseau-sub"), Some(""), "no identity");
    // The client adds the other family to pass a GET off as a preflight: refused as ambiguous.
    let r = b.request(Method::GET, "/.trousseau/auth", &ask("GET", vec![("x-forwarded-method", "OPTIONS")]), Bytes::new()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    // A described GET with preflight headers is a GET.
    let r = b.request(Method::GET, "/.trousseau/auth", &ask("GET", vec![("accept", "application/json")]), Bytes::new()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
