//! `/.trousseau/auth`: the same sessions and rules, answered to a reverse proxy in front of the app
//! — driven through a real nginx (`auth_request`) and as Traefik/Caddy/Envoy would call it.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use support::*;
use trousseau_proxy::config::RuleConfig;

struct Nginx {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The README's nginx recipe, with test ports.
fn nginx_config(dir: &std::path::Path, port: u16, proxy: &str, app: &str) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 1;
daemon off;
master_process off;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};

    # trousseau-proxy's own pages: sign-in, callback, logout, organization selector.
    location /.trousseau/ {{
      proxy_pass http://{proxy};
      proxy_set_header Host $http_host;
    }}

    location = /_trousseau_auth {{
      internal;
      proxy_pass http://{proxy}/.trousseau/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
    }}

    location / {{
      auth_request /_trousseau_auth;
      auth_request_set $trousseau_jwt   $upstream_http_x_trousseau_jwt_assertion;
      auth_request_set $trousseau_sub   $upstream_http_x_trousseau_sub;
      auth_request_set $trousseau_email $upstream_http_x_trousseau_email;
      auth_request_set $trousseau_name  $upstream_http_x_trousseau_name;
      auth_request_set $trousseau_org   $upstream_http_x_trousseau_org_id;
      auth_request_set $trousseau_role  $upstream_http_x_trousseau_org_role;
      auth_request_set $trousseau_cookie $upstream_http_set_cookie;
      add_header Set-Cookie $trousseau_cookie;
      # Always set (an empty value removes a client-sent copy).
      proxy_set_header X-Trousseau-Jwt-Assertion $trousseau_jwt;
      proxy_set_header X-Trousseau-Sub   $trousseau_sub;
      proxy_set_header X-Trousseau-Email $trousseau_email;
      proxy_set_header X-Trousseau-Name  $trousseau_name;
      proxy_set_header X-Trousseau-Org-Id $trousseau_org;
      proxy_set_header X-Trousseau-Org-Role $trousseau_role;
      error_page 401 = @trousseau_sign_in;
      proxy_pass http://{app};
    }}
    location @trousseau_sign_in {{
      return 302 /.trousseau/login?rd=$request_uri;
    }}
  }}
}}
"#
    )
}

async fn start_nginx(port: u16, proxy: &str, app: &str) -> Option<Nginx> {
    if !have_program("/usr/sbin/nginx", "apt-get install nginx") {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("tp-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(&dir, port, proxy, app)).unwrap();
    let child = Command::new("/usr/sbin/nginx")
        .args(["-p", dir.to_str().unwrap(), "-c", conf.to_str().unwrap(), "-e", dir.join("error.log").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx");
    // Owned at once, so the process is killed and waited for on every path, panics included.
    let nginx = Nginx { child, dir };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(nginx);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nginx did not start: {}", std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn nginx_auth_request_protects_an_app_end_to_end() {
    let nginx_port = free_port();
    let origin = format!("http://127.0.0.1:{nginx_port}");
    let public = origin.clone();
    let env = Env::start_with(EnvOptions {
        configure: Box::new(move |c| {
            c.public_url = Some(public);
            c.routes.rules = vec![RuleConfig { path: "/admin/*".into(), emails: vec!["nobody@example.com".into()], ..Default::default() }];
        }),
        idp: Box::new({
            let origin = origin.clone();
            move |i| {
                i.redirect_uris = vec![format!("{origin}/.trousseau/callback")];
                i.post_logout_redirect_uris = vec![format!("{origin}/")];
            }
        }),
    })
    .await;
    let Some(_nginx) = start_nginx(nginx_port, &env.addr.to_string(), &env.upstream.addr.to_string()).await else { return };

    let mut b = Browser::new(&origin);
    // Not signed in: nginx turns the 401 into a redirect to sign in, nothing reaches the app.
    let first = b.navigate("/reports?q=1").await;
    assert_eq!(first.status, StatusCode::FOUND);
    assert_eq!(first.location(), format!("{origin}/.trousseau/login?rd=/reports?q=1"));
    assert_eq!(env.upstream.hits(), 0);
    // Sign in through nginx and land back on the page.
    let start = b.navigate(&first.location()).await;
    let cb = b.sign_in_at_idp(&start.location(), JEAN).await;
    assert_eq!(cb.location(), format!("{origin}/reports?q=1"));
    let page = b.request(Method::GET, "/reports?q=1", &[("accept", "application/json"), ("x-trousseau-sub", "spoofed")], Bytes::new()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let headers = &page.json()["headers"];
    assert_eq!(headers["x-trousseau-sub"], serde_json::json!([JEAN]));
    assert_eq!(headers["x-trousseau-email"][0], "jean.dupont@hotel.com");
    let jws = headers["x-trousseau-jwt-assertion"][0].as_str().unwrap();
    let verifier = trousseau_proxy::dev::JwksVerifier::new(format!("{origin}/.trousseau/jwks.json"));
    let (_, claims) = verifier.verify(jws).await.expect("assertion verifies");
    assert_eq!(claims["sub"], JEAN);
    // A rule that denies: 403 from nginx.
    let denied = b.api_get("/admin/users").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn traefik_caddy_and_envoy_styles_are_understood() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.routes.public = vec!["/assets/*".into()];
            c.routes.rules = vec![RuleConfig { path: "/admin/*".into(), methods: vec!["POST".into()], emails: vec!["nobody@example.com".into()], ..Default::default() }];
        }),
        ..Default::default()
    })
    .await;
    let mut b = env.browser();
    let traefik = |method: &'static str, uri: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![("x-forwarded-method", method), ("x-forwarded-uri", uri), ("x-forwarded-proto", "http"), ("x-forwarded-host", "app.local")]
    };
    // Traefik passes a browser's 302 straight through: start signing in, returning to the original URI.
    let mut h = traefik("GET", "/reports?x=1");
    h.push(("accept", "text/html"));
    let r = b.request(Method::GET, "/.trousseau/auth", &h, Bytes::new()).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(r.location().contains("/application/o/authorize/"));
    // An API call through Traefik: 401.
    let mut h = traefik("GET", "/api/x");
    h.push(("accept", "application/json"));
    assert_eq!(b.request(Method::GET, "/.trousseau/auth", &h, Bytes::new()).await.status, StatusCode::UNAUTHORIZED);
    // Public routes pass without a session.
    assert_eq!(b.request(Method::GET, "/.trousseau/auth", &traefik("GET", "/assets/app.css"), Bytes::new()).await.status, StatusCode::OK);

    b.sign_in("/", JEAN).await;
    let ok = b.request(Method::GET, "/.trousseau/auth", &traefik("GET", "/reports"), Bytes::new()).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.headers["x-trousseau-sub"], JEAN);
    assert!(ok.headers.contains_key("x-trousseau-jwt-assertion"));
    // Rules see the original method: GET /admin is fine, POST /admin is not.
    assert_eq!(b.request(Method::GET, "/.trousseau/auth", &traefik("GET", "/admin/x"), Bytes::new()).await.status, StatusCode::OK);
    assert_eq!(b.request(Method::GET, "/.trousseau/auth", &traefik("POST", "/admin/x"), Bytes::new()).await.status, StatusCode::FORBIDDEN);
    // Envoy ext_authz with path_prefix: the original path follows /.trousseau/auth.
    let envoy = b.request(Method::POST, "/.trousseau/auth/admin/x", &[("accept", "application/json")], Bytes::new()).await;
    assert_eq!(envoy.status, StatusCode::FORBIDDEN);
    let envoy = b.request(Method::GET, "/.trousseau/auth/reports", &[("accept", "application/json")], Bytes::new()).await;
    assert_eq!(envoy.status, StatusCode::OK);
    assert_eq!(env.upstream.hits(), 1, "forward-auth checks never touch the app (one hit from sign-in)");
}

/// nginx hands every client header to the auth subrequest, so a client can add its own
/// `X-Forwarded-Uri`/`X-Forwarded-Method` (Traefik's names) beside the `X-Original-*` nginx sets —
/// and Traefik/Caddy likewise pass a client's `X-Original-*`. The check must be about the request
/// the front proxy actually serves: conflicting or unreadable descriptions are refused, never
/// replaced by another path (or by `/`).
#[tokio::test]
async fn nginx_forward_auth_cannot_be_pointed_at_another_path_or_method() {
    let nginx_port = free_port();
    let origin = format!("http://127.0.0.1:{nginx_port}");
    let public = origin.clone();
    let env = Env::start_with(EnvOptions {
        configure: Box::new(move |c| {
            c.public_url = Some(public);
            c.routes.public = vec!["/assets/*".into()];
            c.routes.rules = vec![
                RuleConfig { path: "/admin/*".into(), emails: vec!["nobody@example.com".into()], ..Default::default() },
                RuleConfig { path: "/reports/*".into(), methods: vec!["POST".into()], emails: vec!["nobody@example.com".into()], ..Default::default() },
            ];
        }),
        idp: Box::new({
            let origin = origin.clone();
            move |i| {
                i.redirect_uris = vec![format!("{origin}/.trousseau/callback")];
                i.post_logout_redirect_uris = vec![format!("{origin}/")];
            }
        }),
    })
    .await;
    let Some(_nginx) = start_nginx(nginx_port, &env.addr.to_string(), &env.upstream.addr.to_string()).await else { return };
    let json = ("accept", "application/json");

    // Anonymous: pointing the check at a public route must not open a private one.
    let mut anonymous = Browser::new(&origin);
    let before = env.upstream.hits();
    let r = anonymous.request(Method::GET, "/admin/users", &[json, ("x-forwarded-uri", "/assets/app.css")], Bytes::new()).await;
    assert!(matches!(r.status.as_u16(), 401 | 403), "anonymous /admin/users with X-Forwarded-Uri: /assets/app.css got {}: {}", r.status, r.text());
    assert_eq!(env.upstream.hits(), before, "the app was reached without a session");

    // Signed in, but not allowed on /admin/* nor to POST on /reports/*.
    let mut b = Browser::new(&origin);
    let start = b.navigate("/.trousseau/login?rd=/").await;
    b.sign_in_at_idp(&start.location(), JEAN).await;
    assert_eq!(b.api_get("/admin/users").await.status, StatusCode::FORBIDDEN);
    assert_eq!(b.request(Method::POST, "/reports/x", &[json], Bytes::new()).await.status, StatusCode::FORBIDDEN);
    let before = env.upstream.hits();
    let smuggled_uri = b.request(Method::GET, "/admin/users", &[json, ("x-forwarded-uri", "/reports")], Bytes::new()).await;
    assert!(matches!(smuggled_uri.status.as_u16(), 401 | 403), "X-Forwarded-Uri overrode nginx's X-Original-URI: {}", smuggled_uri.status);
    let smuggled_method = b.request(Method::POST, "/reports/x", &[json, ("x-forwarded-method", "GET")], Bytes::new()).await;
    assert!(matches!(smuggled_method.status.as_u16(), 401 | 403), "X-Forwarded-Method overrode nginx's X-Original-Method: {}", smuggled_method.status);
    // A raw UTF-8 request line reaches the auth check as obs-text in X-Original-URI: the check
    // must concern /admin/…, not fall back to `/`.
    let utf8 = b.request(Method::GET, "/admin/\u{e9}t\u{e9}", &[json], Bytes::new()).await;
    assert!(matches!(utf8.status.as_u16(), 401 | 403), "/admin/été through nginx got {}", utf8.status);
    assert_eq!(env.upstream.hits(), before, "a request the rules deny reached the app");
}

/// The same, as Traefik, Caddy or Envoy would ask: the path that is checked is the path that will
/// be served, even when it cannot serve as a return path (backslashes, non-ASCII, obs-text).
#[tokio::test]
async fn forward_auth_checks_the_path_it_is_given_not_a_sanitized_one() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.routes.public = vec!["/assets/*".into()];
            c.routes.rules = vec![RuleConfig { path: "/admin/*".into(), emails: vec!["nobody@example.com".into()], ..Default::default() }];
        }),
        ..Default::default()
    })
    .await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let ask = |uri: &'static str| vec![("x-forwarded-method", "GET"), ("x-forwarded-uri", uri), ("accept", "application/json")];
    assert_eq!(b.request(Method::GET, "/.trousseau/auth", &ask("/reports"), Bytes::new()).await.status, StatusCode::OK);
    assert_eq!(b.request(Method::GET, "/.trousseau/auth", &ask("/admin/x"), Bytes::new()).await.status, StatusCode::FORBIDDEN);
    for uri in ["/admin/x\\y", "/admin/\\", "/admin/\u{e9}", "/admin/x y", "/admin/x\ty", "admin/x", "/admin/%zz"] {
        let r = b.request(Method::GET, "/.trousseau/auth", &ask(uri), Bytes::new()).await;
        assert!(matches!(r.status.as_u16(), 400 | 403), "X-Forwarded-Uri {uri:?} was allowed ({}): the check fell back to another path", r.status);
    }
    // Two descriptions that disagree: refused.
    let mut both = ask("/reports");
    both.push(("x-original-uri", "/admin/x"));
    let r = b.request(Method::GET, "/.trousseau/auth", &both, Bytes::new()).await;
    assert!(matches!(r.status.as_u16(), 400 | 403), "conflicting X-Forwarded-Uri / X-Original-URI allowed ({})", r.status);
    let mut methods = ask("/reports");
    methods.push(("x-original-method", "POST"));
    methods.push(("x-original-uri", "/reports"));
    assert_eq!(b.request(Method::GET, "/.trousseau/auth", &methods, Bytes::new()).await.status.as_u16() / 100, 4, "conflicting methods allowed");
    // Anonymous: an unusable URI never turns into a check of `/` or of a public route.
    let mut anonymous = env.browser();
    for uri in ["/admin/\u{e9}", "/assets/..\\admin"] {
        let r = anonymous.request(Method::GET, "/.trousseau/auth", &ask(uri), Bytes::new()).await;
        assert!(matches!(r.status.as_u16(), 400 | 401 | 403), "anonymous X-Forwarded-Uri {uri:?} got {}", r.status);
    }
}
