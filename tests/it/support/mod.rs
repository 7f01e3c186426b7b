//! Test helpers: a real proxy on a loopback port in front of a real upstream app, signing in
//! against the embedded Trousseau twin, driven by a small cookie-keeping HTTP client.
#![allow(dead_code)]

pub mod chromium;
pub mod heap;
pub mod parts;
pub mod pki;
pub mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

use trousseau_proxy::config::{FileConfig, Settings, SourceText};
use trousseau_proxy::devidp::{DevIdp, DevIdpConfig, LocalDevIdp};
use trousseau_proxy::app::{App, Current};
use trousseau_proxy::server;

pub use upstream::Upstream;

/// The test session secret (base64 of 32 bytes).
pub const SECRET: &str = "dGVzdC1zZWNyZXQtdGhhdC1pcy0zMi1ieXRlcy1sb25nISE=";
/// Client credentials registered at the test IdP.
pub const CLIENT_ID: &str = "app-oidc";
/// Client secret registered at the test IdP.
pub const CLIENT_SECRET: &str = "app-secret";

/// The seed's Jean Dupont: two hotels, fr-FR.
pub const JEAN: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";

/// A running proxy with its IdP and upstream.
pub struct Env {
    /// The proxy's address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    /// The test IdP.
    pub idp: LocalDevIdp,
    /// The upstream app.
    pub upstream: Upstream,
    /// The app, for its counters (the one in force: [`Env::reload`] moves it).
    pub app: Arc<App>,
    /// What the listener serves with: a reload puts a new app in it.
    pub current: Arc<Current>,
    /// The proxy configuration it runs with (replicas start from it).
    pub file: FileConfig,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// Another proxy replica beside an [`Env`]'s: same configuration and secrets, same IdP and
/// upstream, its own listener and memory. Stopped when dropped.
pub struct Replica {
    /// The replica's address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` of this replica (`public_url` stays the first replica's).
    pub origin: String,
    /// The app, for its counters.
    pub app: Arc<App>,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    /// A browser on this replica carrying `other`'s cookies (ports share cookies, like behind a
    /// load balancer).
    pub fn browser_like(&self, other: &Browser) -> Browser {
        let mut b = Browser::new(&self.origin);
        b.jar = other.jar.clone();
        b.headers = other.headers.clone();
        b
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How to set up an [`Env`].
pub struct EnvOptions {
    /// Changes to the proxy configuration before validation.
    pub configure: Box<dyn FnOnce(&mut FileConfig) + Send>,
    /// Changes to the IdP configuration.
    pub idp: Box<dyn FnOnce(&mut DevIdpConfig) + Send>,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions { configure: Box::new(|_| {}), idp: Box::new(|_| {}) }
    }
}

/// A loopback port that is free now, for a server a test starts later (nginx, a proxy process,
/// Redis): drawn at random below the system's ephemeral range, so that no socket bound to port 0
/// meanwhile (every in-process server and client of the other tests) can take it before the
/// server binds it — the race that made a port handed out by `bind(0)` and released sometimes
/// answered by another test's server.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static DRAWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000u16, ephemeral_low.max(12_000));
    loop {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(DRAWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let port = low + (hasher.finish() % u64::from(high - low)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The test IdP's configuration for a proxy at `origin`: our client, its callback, its sign-out
/// landing pages and its back-channel logout endpoint.
pub fn idp_config_for(origin: &str) -> DevIdpConfig {
    DevIdpConfig {
        base_url: url::Url::parse("http://127.0.0.1:1").unwrap(),
        slug: "app".into(),
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uris: vec![format!("{origin}/.trousseau/callback")],
        post_logout_redirect_uris: vec![format!("{origin}/"), format!("{origin}/bye")],
        backchannel_logout_uri: Some(format!("{origin}/.trousseau/backchannel-logout")),
        ..DevIdpConfig::default()
    }
}

impl Env {
    /// Proxy + IdP + upstream with default settings.
    pub async fn start() -> Env {
        Env::start_with(EnvOptions::default()).await
    }

    /// Proxy + IdP + upstream, customized.
    pub async fn start_with(options: EnvOptions) -> Env {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = format!("http://{addr}");

        let mut idp_config = idp_config_for(&origin);
        (options.idp)(&mut idp_config);
        let idp = LocalDevIdp::start(idp_config).await.unwrap();
        let upstream = Upstream::start().await;

        let mut file = FileConfig {
            public_url: Some(origin.clone()),
            upstream: Some(upstream.url()),
            ..FileConfig::default()
        };
        file.oidc.issuer = Some(idp.issuer());
        file.oidc.client_id = Some(CLIENT_ID.into());
        file.oidc.client_secret = Some(CLIENT_SECRET.into());
        file.oidc.scopes = ["openid", "email", "profile", "trousseau:context", "trousseau:organization"]
            .map(String::from)
            .to_vec();
        file.session.secrets = vec![SECRET.into()];
        (options.configure)(&mut file);
        let settings = settings(&file);
        let saved_file = file.clone();

        let app = App::new(settings).unwrap();
        app.oidc().discover().await.expect("discovery against the test IdP");
        let (tx, rx) = oneshot::channel::<()>();
        let current = Arc::new(Current::new(app.clone()));
        let task = tokio::spawn(server::serve_current(listener, current.clone(), async move { let _ = rx.await; }, Duration::from_secs(5)));
        Env { addr, origin, idp, upstream, app, current, file: saved_file, shutdown: Some(tx), task }
    }

    /// Reloads the configuration as SIGHUP does, with `configure`'s changes: validated, built from
    /// the running app's lasting parts ([`App::succeed`]) and put in force for new connections and
    /// requests.
    pub fn reload(&mut self, configure: impl FnOnce(&mut FileConfig)) -> Result<(), trousseau_proxy::app::StartError> {
        let mut file = self.file.clone();
        configure(&mut file);
        let next = Arc::new(self.current.get().succeed(settings(&file))?);
        self.current.put(next.clone());
        self.app = next;
        self.file = file;
        Ok(())
    }

    /// Starts a second proxy replica with the same configuration, IdP and upstream.
    pub async fn start_replica(&self) -> Replica {
        self.start_replica_with(|_| {}).await
    }

    /// Starts another replica of the same application (same `public_url`, IdP and client) with its
    /// configuration changed by `configure`: a redeployment (rotated secrets, another store).
    pub async fn start_replica_with(&self, configure: impl FnOnce(&mut FileConfig)) -> Replica {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut file = self.file.clone();
        configure(&mut file);
        let app = App::new(settings(&file)).unwrap();
        app.oidc().discover().await.expect("discovery against the test IdP");
        let task = tokio::spawn(server::serve(listener, app.clone(), std::future::pending(), Duration::from_secs(5)));
        Replica { addr, origin: format!("http://{addr}"), app, task }
    }

    /// A sealer like this proxy's: the test secret, bound to this application (issuer, client id,
    /// public URL), to open what the proxy sealed.
    pub fn sealer(&self) -> trousseau_proxy::session::seal::Sealer {
        use trousseau_proxy::session::seal::{parse_secret, AppBinding, Sealer};
        let issuer = self.file.oidc.issuer.clone().unwrap_or_default();
        let client_id = self.file.oidc.client_id.clone().unwrap_or_default();
        let public_url = self.file.public_url.clone().unwrap_or_default();
        let secrets: Vec<Vec<u8>> = self.file.session.secrets.iter().map(|s| parse_secret(s).unwrap()).collect();
        Sealer::new(&secrets, AppBinding { issuer: &issuer, client_id: &client_id, public_url: public_url.trim_end_matches('/') }).unwrap()
    }

    /// The IdP's controls.
    pub fn trousseau(&self) -> &Arc<DevIdp> {
        self.idp.idp()
    }

    /// A fresh browser pointed at this proxy.
    pub fn browser(&self) -> Browser {
        Browser::new(&self.origin)
    }

    /// Stops the proxy (graceful) and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Validates a file config built in a test.
pub fn settings(file: &FileConfig) -> Settings {
    trousseau_proxy::config::validate(file, &SourceText::default()).expect("valid test configuration")
}

/// One HTTP answer, fully read.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `Location` header.
    pub fn location(&self) -> String {
        self.headers.get(header::LOCATION).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }
}

/// A cookie-keeping client that behaves like a browser tab (but never follows redirects by
/// itself, so tests can look at each hop).
#[derive(Clone)]
pub struct Browser {
    /// The proxy origin.
    pub origin: String,
    /// Cookie name → value (one host, like 127.0.0.1 in a real browser: ports share cookies).
    pub jar: BTreeMap<String, String>,
    client: Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>,
    /// Extra headers sent with every request.
    pub headers: Vec<(String, String)>,
}

impl Browser {
    /// A browser for this origin.
    pub fn new(origin: &str) -> Browser {
        Browser {
            origin: origin.to_string(),
            jar: BTreeMap::new(),
            client: https_client(rustls::RootCertStore::empty()),
            headers: Vec::new(),
        }
    }

    /// A browser for an `https://` origin whose certificate `roots` vouch for.
    pub fn trusting(origin: &str, roots: rustls::RootCertStore) -> Browser {
        Browser { client: https_client(roots), ..Browser::new(origin) }
    }

    /// The `Cookie:` header this browser would send.
    pub fn cookie_header(&self) -> String {
        self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    /// Sends a request (a path on the proxy, or an absolute URL) and keeps the cookies it sets.
    pub async fn request(&mut self, method: Method, url: &str, headers: &[(&str, &str)], body: Bytes) -> Answer {
        let url = if url.starts_with("http") { url.to_string() } else { format!("{}{}", self.origin, url) };
        let mut b = Request::builder().method(method).uri(&url);
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if !self.jar.is_empty() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("cookie")) {
            b = b.header(header::COOKIE, self.cookie_header());
        }
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(b.body(Full::new(body)).unwrap()))
            .await
            .expect("request timed out")
            .expect("request failed");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        let answer = Answer { status: parts.status, headers: parts.headers, body };
        for sc in answer.set_cookies() {
            let c = cookie::Cookie::parse(sc).expect("valid Set-Cookie");
            let removed = c.max_age().is_some_and(|a| a.is_zero() || a.is_negative())
                || c.expires_datetime().is_some_and(|t| t < cookie::time::OffsetDateTime::now_utc());
            if removed {
                self.jar.remove(c.name());
            } else {
                self.jar.insert(c.name().to_string(), c.value().to_string());
            }
        }
        answer
    }

    /// A top-level navigation (GET accepting HTML).
    pub async fn navigate(&mut self, url: &str) -> Answer {
        self.request(Method::GET, url, &[("accept", "text/html,application/xhtml+xml"), ("sec-fetch-mode", "navigate")], Bytes::new()).await
    }

    /// An API call (GET accepting JSON).
    pub async fn api_get(&mut self, url: &str) -> Answer {
        self.request(Method::GET, url, &[("accept", "application/json")], Bytes::new()).await
    }

    /// Follows redirects from a navigation until a non-redirect answer.
    pub async fn follow(&mut self, mut answer: Answer) -> Answer {
        for _ in 0..10 {
            if !answer.status.is_redirection() {
                return answer;
            }
            let next = answer.location();
            answer = self.navigate(&next).await;
        }
        panic!("redirect loop");
    }

    /// Starts at `path`, signs in at the IdP as `sub`, and returns the callback's answer (a
    /// redirect back to the app, or an error page).
    pub async fn sign_in_to_callback(&mut self, path: &str, sub: &str) -> Answer {
        let start = self.navigate(path).await;
        assert_eq!(start.status, StatusCode::FOUND, "expected a redirect to Trousseau from {path}: {}", start.text());
        self.sign_in_at_idp(&start.location(), sub).await
    }

    /// At the IdP's authorize URL: picks the user on the sign-in page and returns the callback's answer.
    pub async fn sign_in_at_idp(&mut self, authorize_url: &str, sub: &str) -> Answer {
        let to_callback = self.callback_url_from_idp(authorize_url, sub).await;
        self.navigate(&to_callback).await
    }

    /// At the IdP's authorize URL: picks the user on the sign-in page and returns the callback URL
    /// the IdP sends the browser to, without visiting it.
    pub async fn callback_url_from_idp(&mut self, authorize_url: &str, sub: &str) -> String {
        let page = self.navigate(authorize_url).await;
        assert_eq!(page.status, StatusCode::OK, "sign-in page at {authorize_url}: {} (location: {:?})", page.text(), page.headers.get("location"));
        let html = page.text();
        let form = Form::find(&html, "user", sub).unwrap_or_else(|| panic!("no sign-in button for {sub} in:\n{html}"));
        let action = absolute(authorize_url, &form.action);
        let mut fields = form.fields.clone();
        fields.push(("user".into(), sub.into()));
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let redirect = self
            .request(
                Method::POST,
                &action,
                &[("content-type", "application/x-www-form-urlencoded"), ("accept", "text/html")],
                Bytes::from(body),
            )
            .await;
        assert_eq!(redirect.status, StatusCode::FOUND, "IdP sign-in answer: {}", redirect.text());
        redirect.location()
    }

    /// Signs in as `sub` starting at `path` and returns the app's final answer.
    pub async fn sign_in(&mut self, path: &str, sub: &str) -> Answer {
        let callback = self.sign_in_to_callback(path, sub).await;
        assert_eq!(callback.status, StatusCode::FOUND, "callback: {}", callback.text());
        self.follow(callback).await
    }
}

/// A `<form>` found in a page: its action and hidden fields.
#[derive(Debug, Clone)]
pub struct Form {
    /// The `action` attribute.
    pub action: String,
    /// Hidden inputs.
    pub fields: Vec<(String, String)>,
}

impl Form {
    /// The form containing a button `name=value`.
    pub fn find(html: &str, button_name: &str, button_value: &str) -> Option<Form> {
        let needle = format!("name=\"{button_name}\" value=\"{button_value}\"");
        for chunk in html.split("<form").skip(1) {
            let chunk = chunk.split("</form>").next().unwrap_or("");
            if !chunk.contains(&needle) {
                continue;
            }
            let action = attr(chunk, "action").unwrap_or_default();
            let mut fields = Vec::new();
            for input in chunk.split("<input").skip(1) {
                let tag = input.split('>').next().unwrap_or("");
                if attr(tag, "type").as_deref() == Some("hidden") {
                    if let (Some(n), Some(v)) = (attr(tag, "name"), attr(tag, "value")) {
                        fields.push((n, v));
                    }
                }
            }
            return Some(Form { action: html_unescape(&action), fields });
        }
        None
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(html_unescape(&tag[start..end]))
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// Resolves `href` against `base`.
pub fn absolute(base: &str, href: &str) -> String {
    url::Url::parse(base).unwrap().join(href).unwrap().to_string()
}

/// Decodes a compact JWS's parts without verifying (tests verify separately).
pub fn jws_parts(jws: &str) -> (serde_json::Value, serde_json::Value) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = jws.split('.');
    let h = b64.decode(parts.next().unwrap()).unwrap();
    let p = b64.decode(parts.next().unwrap()).unwrap();
    (serde_json::from_slice(&h).unwrap(), serde_json::from_slice(&p).unwrap())
}

/// An HTTP/1.1 client for `http://` and for `https://` origins `roots` vouch for.
fn https_client(roots: rustls::RootCertStore) -> Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>> {
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http().enable_http1().build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A configuration value named as the YAML file names it (`named::<StoreKind>("memory")`), for
/// tests that run the same story under several settings and print which.
pub fn named<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_yaml::from_str(name).unwrap_or_else(|e| panic!("`{name}`: {e}"))
}
