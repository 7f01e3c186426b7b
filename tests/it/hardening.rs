//! Holes an attack pass found in the request path (issue 14), each closed and kept closed: protocol
//! upgrades that would tunnel past the proxy, path and method spellings that app servers route
//! differently from the rules, a path prefix that could be left, forward-auth descriptions that
//! disagree, identity headers a gateway would keep from the client, cookies of ours set by the
//! app, return paths too long for a cookie, and a reloaded callback.


use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trousseau_proxy::config::{FileConfig, RuleConfig};

/// Hélène Lefèvre: one organization (selected automatically), role `hr`: not an admin.
const HELENE: &str = "3f6c2d1e-8a47-4b9e-9c21-5d7e8f90a1b2";
/// Sam Taylor: no organization, no picture.
const SAM: &str = "7b1e9c4d-2f38-4a6b-8e5d-c0a9f1e2d3b4";

/// `/public/*` needs no session; `/admin/*` and DELETE/GET on `/reports/*` need the admin role.
fn admin_rules(c: &mut FileConfig) {
    c.routes.public = vec!["/public/*".into()];
    c.routes.rules = vec![
        RuleConfig { path: "/admin/*".into(), roles: vec!["admin".into()], ..Default::default() },
        RuleConfig { path: "/reports/*".into(), methods: vec!["DELETE".into(), "GET".into()], roles: vec!["admin".into()], ..Default::default() },
    ];
}

async fn env_with_admin_rules() -> Env {
    Env::start_with(EnvOptions { configure: Box::new(admin_rules), ..Default::default() }).await
}

async fn signed_in(env: &Env, sub: &str) -> Browser {
    let mut b = env.browser();
    b.sign_in("/", sub).await;
    b
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from a raw stream; the head only
/// for a `101`.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    let head = read_head(stream).await;
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut body)).await;
    head + &String::from_utf8_lossy(&body)
}

/// Reads one HTTP/1.1 response head from a raw stream.
async fn read_head(stream: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(0) | Err(_) => break,
                Ok(_) => head.push(byte[0]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no response head within 10 s");
    String::from_utf8_lossy(&head).into_owned()
}

/// An app that switches protocols whenever it is asked to, as hypercorn does for `Upgrade: h2c`
/// with its default settings: it answers `101 Switching Protocols` with `Upgrade: h2c` to any
/// request carrying an `Upgrade` header (a websocket one included, which a misbehaving app might),
/// and a plain `200` otherwise. It keeps every request head it received, and every byte that
/// arrived after a switch (what a tunnel would carry past the proxy).
struct SwitchingApp {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    tunneled: Arc<Mutex<Vec<u8>>>,
}

impl SwitchingApp {
    async fn start() -> SwitchingApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let tunneled = Arc::new(Mutex::new(Vec::new()));
        let (h, t) = (heads.clone(), tunneled.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { continue };
                let (heads, tunneled) = (h.clone(), t.clone());
                tokio::spawn(async move {
                    loop {
                        let head = read_head(&mut stream).await.to_ascii_lowercase();
                        if head.is_empty() {
                            return;
                        }
                        heads.lock().unwrap().push(head.clone());
                        if head.contains("\r\nupgrade:") {
                            let _ = stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n").await;
                            let mut buf = [0u8; 4096];
                            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                                tunneled.lock().unwrap().extend_from_slice(&buf[..n]);
                            }
                            return;
                        }
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nplain").await;
                    }
                });
            }
        });
        SwitchingApp { addr, heads, tunneled }
    }
}

/// Critical: `Upgrade: h2c` on a public route used to reach the app, which switched to HTTP/2, and
/// the proxy spliced the sockets — every later request on that connection went to the app with no
/// session check, no rule and no header stripping.
#[tokio::test]
async fn an_h2c_upgrade_never_opens_a_tunnel_to_the_app() {
    let app = SwitchingApp::start().await;
    let url = format!("http://{}", app.addr);
    let env = Env::start_with(EnvOptions {
        configure: Box::new(move |c| {
            admin_rules(c);
            c.upstream = Some(url);
        }),
        ..Default::default()
    })
    .await;
    for (upgrade, connection) in [("h2c", "Upgrade, HTTP2-Settings"), ("H2C", "upgrade"), ("websocket, h2c", "Upgrade"), ("h2c", "keep-alive, Upgrade")] {
        let mut stream = tokio::net::TcpStream::connect(env.addr).await.unwrap();
        let request = format!(
            "GET /public/page HTTP/1.1\r\nHost: app.local\r\nConnection: {connection}\r\nUpgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "Upgrade: {upgrade} was answered {head:?}: the proxy let the app switch protocols");
        // The connection is still ours: a second request on it is judged like any other.
        stream
            .write_all(b"GET /admin/secret HTTP/1.1\r\nHost: app.local\r\nX-Trousseau-Sub: attacker\r\nX-Trousseau-Org-Role: admin\r\nAccept: application/json\r\n\r\n")
            .await
            .unwrap();
        let second = read_head(&mut stream).await;
        assert!(second.starts_with("HTTP/1.1 401"), "the request after the upgrade attempt got {second:?}");
    }
    let heads = app.heads.lock().unwrap().clone();
    assert!(!heads.is_empty());
    for head in &heads {
        assert!(!head.contains("\r\nupgrade:") && !head.contains("\r\nhttp2-settings:"), "the app was asked to switch protocols: {head}");
        assert!(!head.contains("/admin/secret"), "the protected path reached the app: {head}");
    }
    assert!(app.tunneled.lock().unwrap().is_empty());
}

/// A `101` is only spliced when it switches to the websocket the request asked for; an app that
/// answers a websocket upgrade by switching to something else gets the client a 502, no tunnel.
#[tokio::test]
async fn an_app_switching_to_another_protocol_than_asked_is_a_502() {
    let app = SwitchingApp::start().await;
    let url = format!("http://{}", app.addr);
    let env = Env::start_with(EnvOptions { configure: Box::new(move |c| c.upstream = Some(url)), ..Default::default() }).await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let mut stream = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: app.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {}\r\n\r\n",
        b.cookie_header()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 502"), "a switch to h2c in answer to a websocket upgrade was {head:?}");
    let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(app.tunneled.lock().unwrap().is_empty(), "bytes were tunneled to the app");
    // Real websockets still work end to end (tests/it/proxying.rs has the echo).
    let seen = app.heads.lock().unwrap().clone();
    assert!(seen.iter().any(|h| h.contains("upgrade: websocket")), "the websocket upgrade itself is forwarded");
}

/// Servlet containers drop `;…` from each segment before routing (Jetty: `/admin;x/x` is
/// `/admin/x`), Express, ASP.NET and IIS route without regard to case, and a folder rule must cover
/// the folder's index: a member reaches none of the admin area, however it is spelled.
#[tokio::test]
async fn a_member_cannot_reach_the_admin_area_by_any_spelling_of_its_path() {
    let env = env_with_admin_rules().await;
    let mut member = signed_in(&env, HELENE).await;
    assert_eq!(member.api_get("/reports-overview").await.status, StatusCode::OK);
    let before = env.upstream.hits();
    for path in [
        "/admin", "/admin/", "/admin/x", "/admin;x/x", "/admin;jsessionid=0/x", "/admin%3Bx/x", "/x/..;/admin/x", "/ADMIN/x", "/Admin/x",
        "/%41dmin/x", "/aDmIn", "/ADMIN;x", "/Admin%2Fusers",
        // Spring decodes `%2F`, then drops parameters: `/admin/x//..` is `/admin` (fuzz finding).
        "/admin;..;%2Fx//..;", "/%41dmin;%25..;%2FF//..;1",
        // A servlet container decodes `%2F` but keeps `\` a plain character: `/admin/=`.
        "//picA\\ai-.;/..//admin%2f=",
        // To Tomcat `%3B` is no parameter, only a `;` once decoded: `/admin/;./..` is `/admin`.
        "/admin;/%3b./..",
    ] {
        let r = member.api_get(path).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text());
    }
    assert_eq!(env.upstream.hits(), before, "a denied request reached the app");
}

/// Tomcat resolves `..;` as `..`: `/public/..;/admin/x` is the admin page, so a path with a
/// parameter is never public.
#[tokio::test]
async fn path_parameters_never_make_a_path_public() {
    let env = env_with_admin_rules().await;
    let mut anonymous = env.browser();
    assert_eq!(anonymous.api_get("/public/app.js").await.status, StatusCode::OK);
    let before = env.upstream.hits();
    for path in ["/public/..;/admin/x", "/public/..;x=1/admin/x", "/public;x/../admin", "/public/app.js;v=2", "/public/%2e%2e%3b/admin"] {
        let r = anonymous.api_get(path).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} was served without a session: {}", r.text());
    }
    assert_eq!(env.upstream.hits(), before);
}

/// `delete` is `DELETE` to servers that upper-case methods, and `HEAD` is served by the `GET`
/// handler: rules on methods hold in any spelling.
#[tokio::test]
async fn method_rules_hold_in_any_case_and_get_covers_head() {
    let env = env_with_admin_rules().await;
    let mut member = signed_in(&env, HELENE).await;
    let before = env.upstream.hits();
    for method in ["DELETE", "delete", "Delete", "GET", "get", "HEAD", "head"] {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let r = member.request(m, "/reports/1", &[("accept", "application/json")], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} /reports/1 got {}", r.status);
    }
    assert_eq!(env.upstream.hits(), before);
    let post = member.request(Method::from_bytes(b"post").unwrap(), "/reports/1", &[("accept", "application/json")], Bytes::new()).await;
    assert_eq!(post.status, StatusCode::OK, "no rule covers POST");
}

/// Symfony, Laminas and IIS modules route by `X-Original-URL`/`X-Rewrite-URL` instead of the path
/// the proxy judged: neither reaches the app.
#[tokio::test]
async fn url_rewrite_headers_never_reach_the_app() {
    let env = env_with_admin_rules().await;
    let mut member = signed_in(&env, HELENE).await;
    let r = member
        .request(Method::GET, "/reports-overview", &[("accept", "application/json"), ("X-Original-URL", "/admin/x"), ("x-rewrite-url", "/admin/x")], Bytes::new())
        .await;
    let headers = r.json()["headers"].clone();
    assert!(headers.get("x-original-url").is_none() && headers.get("x-rewrite-url").is_none(), "{headers}");
    let mut anonymous = env.browser();
    let public = anonymous.request(Method::GET, "/public/x", &[("X-Original-URL", "/admin/x")], Bytes::new()).await;
    assert!(public.json()["headers"].get("x-original-url").is_none());
}

/// With `upstream: http://app/app/`, `GET /../internal/x` used to reach the app as
/// `/app/../internal/x`, outside the prefix it is mounted under.
#[tokio::test]
async fn the_upstream_path_prefix_cannot_be_left() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            let url = c.upstream.clone().unwrap();
            c.upstream = Some(format!("{url}/app/"));
            c.routes.public = vec!["/public/*".into()];
        }),
        ..Default::default()
    })
    .await;
    let mut b = signed_in(&env, HELENE).await;
    let before = env.upstream.hits();
    for path in ["/../internal/x", "/%2e%2e/internal/x", "/a/../../internal", "/..;/internal", "/..%2Finternal", "/..\\internal"] {
        let r = b.api_get(path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text());
    }
    assert_eq!(env.upstream.hits(), before, "a path leaving the prefix reached the app");
    let inside = b.api_get("/a/../b").await;
    assert_eq!(inside.status, StatusCode::OK);
    assert!(inside.json()["path"].as_str().unwrap().starts_with("/app/"));
}

/// Envoy appends the original path to `/.trousseau/auth`; a client-added `X-Forwarded-Uri` naming
/// a public path used to be judged instead of it.
#[tokio::test]
async fn envoy_form_with_a_disagreeing_uri_header_is_ambiguous() {
    let env = env_with_admin_rules().await;
    let json = ("accept", "application/json");
    let mut anonymous = env.browser();
    let r = anonymous.request(Method::GET, "/.trousseau/auth/admin/x", &[json, ("x-forwarded-uri", "/public/x")], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.json()["reason"], "ambiguous_request");
    assert_eq!(anonymous.request(Method::GET, "/.trousseau/auth/public/x", &[json], Bytes::new()).await.status, StatusCode::OK);
    let mut member = signed_in(&env, HELENE).await;
    let r = member.request(Method::DELETE, "/.trousseau/auth/reports/1", &[json, ("x-original-method", "POST")], Bytes::new()).await;
    assert_eq!(r.json()["reason"], "ambiguous_request");
    let r = member.request(Method::GET, "/.trousseau/auth/reports-overview", &[json, ("x-forwarded-uri", "/reports-overview")], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK, "agreeing descriptions are fine");
    // A raw `#` in a described target: servers disagree on where the path ends.
    let r = member.request(Method::GET, "/.trousseau/auth", &[json, ("x-original-uri", "/public#/../admin/x")], Bytes::new()).await;
    assert_eq!(r.json()["reason"], "ambiguous_request");
}

/// Caddy's `copy_headers` and Envoy's `allowed_upstream_headers` copy only what the auth answer
/// names and keep the client's own copy of the rest: a 2xx names every identity header.
#[tokio::test]
async fn forward_auth_names_every_identity_header_even_when_empty() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.identity.headers_preset = trousseau_proxy::identity::HeadersPreset::Oauth2Proxy;
            c.identity.headers.insert("X-User-Picture".into(), "picture".into());
        }),
        ..Default::default()
    })
    .await;
    let mut sam = signed_in(&env, SAM).await;
    let r = sam.request(Method::GET, "/.trousseau/auth", &[("x-forwarded-uri", "/x"), ("x-forwarded-method", "GET")], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-trousseau-sub"], SAM);
    for name in [
        "x-trousseau-org-id", "x-trousseau-org-slug", "x-trousseau-org-name", "x-trousseau-org-role", "x-forwarded-groups", "x-user-picture",
    ] {
        let values: Vec<_> = r.headers.get_all(name).iter().collect();
        assert_eq!(values.len(), 1, "{name} missing from the auth answer: {:?}", r.headers);
        assert!(values[0].is_empty(), "{name}: {:?}", values[0]);
    }
    for name in ["x-trousseau-email", "x-trousseau-name", "x-trousseau-jwt-assertion", "x-forwarded-user", "x-trousseau-locale"] {
        assert!(!r.headers[name].is_empty(), "{name} should carry Sam's value");
    }
    assert!(r.headers.get("x-trousseau-access-token").is_none(), "the access token is only named when it is passed");
}

/// The app may not plant, clear or overwrite the proxy's cookies through `Set-Cookie`.
#[tokio::test]
async fn the_app_cannot_set_the_proxys_cookies() {
    let env = Env::start().await;
    let mut b = signed_in(&env, JEAN).await;
    let session = b.jar["trousseau_session"].clone();
    let cookies = [
        "trousseau_session=planted", "trousseau_session_1=x", "__Host-Trousseau_Session=y", "trousseau_session_login_abcdef=z",
        "TROUSSEAU_SESSION=w", "app_theme=dark",
    ];
    let query: String = cookies.iter().map(|c| format!("c={}", url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>())).collect::<Vec<_>>().join("&");
    let r = b.api_get(&format!("/set-cookies?{query}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.set_cookies(), vec!["app_theme=dark".to_string()], "only the app's own cookie passes");
    assert_eq!(b.jar["trousseau_session"], session);
    assert_eq!(b.api_get("/still-signed-in").await.status, StatusCode::OK);
}

/// The return path travels in the sign-in state cookie: a very long one used to push the cookie
/// past the browsers' 4 KB, so the browser dropped it and sign-in ended on "expired".
#[tokio::test]
async fn a_very_long_return_path_keeps_the_state_cookie_small() {
    let env = Env::start().await;
    let mut b = env.browser();
    let long = format!("/reports/2026?filter={}", "x".repeat(3000));
    let start = b.navigate(&long).await;
    assert_eq!(start.status, StatusCode::FOUND);
    for cookie in start.set_cookies() {
        assert!(cookie.len() < 4000, "a {}-byte state cookie: browsers drop cookies over 4 KB", cookie.len());
    }
    let cb = b.sign_in_at_idp(&start.location(), JEAN).await;
    assert_eq!(cb.status, StatusCode::FOUND, "{}", cb.text());
    assert_eq!(cb.location(), format!("{}/reports/2026", env.origin), "the path is kept, the oversized query is not");
    let login = b.navigate(&format!("/.trousseau/login?rd=/a?q={}", "y".repeat(5000))).await;
    assert!(login.set_cookies().iter().all(|c| c.len() < 4000));
}

/// Pressing reload on the callback (or a double click while it is under way) sends a used code
/// again: the user is offered to start again (or simply goes on when already signed in), not a
/// gateway error.
#[tokio::test]
async fn reloading_the_callback_starts_again_instead_of_failing() {
    let env = Env::start().await;
    let mut b = env.browser();
    let start = b.navigate("/reports?week=48").await;
    let callback = b.callback_url_from_idp(&start.location(), JEAN).await;
    let before_callback = b.jar.clone();
    let first = b.navigate(&callback).await;
    assert_eq!(first.status, StatusCode::FOUND);
    assert_eq!(first.location(), format!("{}/reports?week=48", env.origin));

    // A second tab replaying the callback with the cookies the first had (state cookie, no session).
    let mut replay = env.browser();
    replay.jar = before_callback.clone();
    let again = replay.navigate(&callback).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.text());
    assert!(again.text().contains("/.trousseau/login?rd=/reports%3Fweek%3D48"), "the page offers to start again where the user was: {}", again.text());

    // The same browser, signed in by the first answer, reloading the callback: it just goes on.
    let mut reload = env.browser();
    reload.jar = before_callback;
    reload.jar.extend(b.jar.clone());
    let again = reload.navigate(&callback).await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.text());
    assert_eq!(again.location(), format!("{}/reports?week=48", env.origin));
}

/// oauth2-proxy CVE-2026-40574: `a@evil.com@corp.com` passed a `corp.com` domain check. Only a
/// plain, verified `local@domain` address meets an email rule.
#[tokio::test]
async fn an_email_rule_accepts_only_a_plain_address_at_the_domain() {
    let tricky = ["intruder@evil.com@corp.com", "intruder@corp.com.", "intruder@c\u{043e}rp.com", "intruder@CORP.com"];
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.routes.rules = vec![RuleConfig { path: "/corp/*".into(), email_domains: vec!["corp.com".into()], ..Default::default() }];
        }),
        idp: Box::new(move |i| {
            let template = i.users.iter().find(|u| u.sub == SAM).unwrap().clone();
            for (n, email) in tricky.iter().enumerate() {
                let mut user = template.clone();
                user.sub = format!("00000000-0000-4000-8000-00000000000{n}");
                user.email = email.to_string();
                user.name = format!("Tricky {n}");
                i.users.push(user);
            }
        }),
    })
    .await;
    for (n, email) in tricky.iter().enumerate() {
        let mut b = signed_in(&env, &format!("00000000-0000-4000-8000-00000000000{n}")).await;
        let r = b.api_get("/corp/books").await;
        if email.ends_with("@CORP.com") {
            assert_eq!(r.status, StatusCode::OK, "{email}: domains compare without regard to case");
        } else {
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{email} passed the corp.com rule: {}", r.text());
            assert_eq!(r.json()["reason"], "email_not_allowed");
        }
    }
}
