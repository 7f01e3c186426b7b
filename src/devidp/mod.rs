//! The embedded Trousseau twin: a small, spec-checked OpenID Provider for `trousseau-proxy dev` and
//! for the tests.
//!
//! It answers exactly where Trousseau (Authentik underneath) answers, relative to
//! [`DevIdpConfig::base_url`]:
//!
//! | path | module |
//! |---|---|
//! | `/application/o/{slug}/.well-known/openid-configuration`, `/application/o/{slug}/jwks/` | `discovery` |
//! | `/application/o/authorize/` (GET: sign-in page, POST: the choice) | `authorize` |
//! | `/application/o/token/` (authorization_code, refresh_token) | `token` |
//! | `/application/o/userinfo/` | `userinfo` |
//! | `/application/o/introspect/` (RFC 7662) | `introspect` |
//! | `/application/o/{slug}/end-session/` (+ back-channel logout) | `logout` |
//!
//! It is strict where Trousseau is strict, so a relying-party bug shows up here rather than in
//! production: PKCE S256 is mandatory, the client authenticates only with `client_secret_post`,
//! redirect URIs match exactly, codes are single-use, refresh tokens rotate and a replayed one
//! revokes its whole grant. Instead of passwords, the sign-in page lists demo users as buttons.
//!
//! Tests drive it over a real socket ([`serve`] or [`LocalDevIdp`]) and steer it with the control
//! methods on [`DevIdp`] (disable a user, change organizations, slow down or take down the IdP,
//! mint a token as another application of the same IdP would hold it).

mod authorize;
mod claims;
mod discovery;
mod grants;
mod introspect;
mod keys;
mod logout;
mod pages;
mod token;
mod userinfo;
mod users;
mod web;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::body::{Body, BoxError};
use crate::identity::Organization;

pub use users::{default_users, DevUser};

use authorize::{PendingRequest, SsoSession};
use grants::Grants;
use keys::SigningKey;
use users::Directory;

/// How the dev IdP is set up: where it lives, the one client it knows, token lifetimes, users.
///
/// Defaults mirror Trousseau: 5-minute access and ID tokens, 30-day refresh tokens rotated on
/// every use, 60-second codes, all six scopes allowed.
#[derive(Clone, Debug)]
pub struct DevIdpConfig {
    /// Absolute root of the IdP, without trailing slash: `http://127.0.0.1:4180/.trousseau/dev-idp`
    /// (embedded in the proxy) or `http://127.0.0.1:PORT` (standalone).
    pub base_url: url::Url,
    /// Application slug; the issuer is `{base_url}/application/o/{slug}/` (with the slash).
    pub slug: String,
    /// The only client id the IdP accepts.
    pub client_id: String,
    /// That client's secret, accepted only in the token request body (`client_secret_post`).
    pub client_secret: String,
    /// Registered redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// Registered post-logout redirect URIs, matched exactly.
    pub post_logout_redirect_uris: Vec<String>,
    /// Where a `logout_token` is POSTed when a session ends at the end-session endpoint.
    pub backchannel_logout_uri: Option<String>,
    /// Scopes the client may request; anything else is `invalid_scope`.
    pub allowed_scopes: Vec<String>,
    /// Lifetime of the opaque access tokens (`expires_in`).
    pub access_token_ttl: Duration,
    /// Lifetime of ID tokens (`exp - iat`).
    pub id_token_ttl: Duration,
    /// Lifetime of refresh tokens; a rotated refresh token gets a fresh lifetime.
    pub refresh_token_ttl: Duration,
    /// Lifetime of authorization codes.
    pub code_ttl: Duration,
    /// `true` (Trousseau's behaviour): every refresh revokes the refresh token it used, and
    /// presenting a revoked one again is treated as theft: `invalid_grant` and the whole grant is
    /// revoked. `false`: the same refresh token keeps working until it expires.
    pub rotate_refresh_tokens: bool,
    /// The people shown on the sign-in page.
    pub users: Vec<DevUser>,
}

/// The scopes Trousseau knows, all allowed by default.
pub const ALL_SCOPES: [&str; 6] = [
    "openid",
    "email",
    "profile",
    "offline_access",
    "trousseau:context",
    "trousseau:organization",
];

impl Default for DevIdpConfig {
    fn default() -> Self {
        DevIdpConfig {
            base_url: url::Url::parse("http://127.0.0.1:0").expect("constant URL parses"),
            slug: "dev".to_owned(),
            client_id: "dev-oidc".to_owned(),
            client_secret: "dev-secret".to_owned(),
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            backchannel_logout_uri: None,
            allowed_scopes: ALL_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            access_token_ttl: Duration::from_secs(300),
            id_token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            code_ttl: Duration::from_secs(60),
            rotate_refresh_tokens: true,
            users: default_users(),
        }
    }
}

/// Why a [`DevIdp`] could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum DevIdpError {
    /// `base_url` is not an absolute http(s) URL without query or fragment.
    #[error(
        "dev IdP base_url must be an absolute http(s) URL without query or fragment, got {0:?}"
    )]
    InvalidBaseUrl(String),
    /// The slug is empty or has characters other than letters, digits, `-` and `_`.
    #[error("dev IdP slug must be non-empty and use only letters, digits, '-' and '_', got {0:?}")]
    InvalidSlug(String),
    /// `client_id` or `client_secret` is empty.
    #[error("dev IdP client_id and client_secret must not be empty")]
    MissingClientCredentials,
    /// A redirect, post-logout or back-channel URI is not an absolute URL without fragment.
    #[error("dev IdP URI {0:?} is not an absolute http(s) URL without fragment")]
    InvalidUri(String),
    /// `allowed_scopes` lacks `openid`.
    #[error("dev IdP allowed_scopes must include \"openid\"")]
    OpenidScopeNotAllowed,
    /// Two users share a `sub`.
    #[error("dev IdP has two users with sub {0:?}")]
    DuplicateUser(String),
    /// The RSA signing key could not be generated.
    #[error("dev IdP could not generate its RSA signing key")]
    KeyGeneration,
    /// Binding the listening socket failed.
    #[error("dev IdP could not listen: {0}")]
    Io(#[from] std::io::Error),
}

/// The client id of [`DevIdp::issue_foreign_access_token`]'s tokens: another application of the
/// same IdP.
pub const FOREIGN_CLIENT_ID: &str = "another-application";

/// What the IdP has done so far, for tests to assert on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevIdpStats {
    /// Successful `authorization_code` grants.
    pub code_grants: u64,
    /// Successful `refresh_token` grants.
    pub refresh_grants_ok: u64,
    /// Refused `refresh_token` grants (any reason, reuse included).
    pub refresh_grants_failed: u64,
    /// Refresh tokens presented again after rotation (each revoked its grant family).
    pub refresh_reuse_detected: u64,
    /// Userinfo requests, answered or refused.
    pub userinfo_calls: u64,
    /// Introspection requests, answered or refused.
    pub introspection_calls: u64,
    /// Key set (JWKS) requests, answered or not (counted while unavailable too).
    pub jwks_calls: u64,
    /// Requests to the end-session endpoint.
    pub end_sessions: u64,
    /// Logout tokens delivered to `backchannel_logout_uri` and answered with 2xx.
    pub backchannel_sent: u64,
    /// Logout tokens that could not be delivered or were refused (non-2xx).
    pub backchannel_failed: u64,
}

#[derive(Default)]
struct Counters {
    code_grants: AtomicU64,
    refresh_grants_ok: AtomicU64,
    refresh_grants_failed: AtomicU64,
    refresh_reuse_detected: AtomicU64,
    userinfo_calls: AtomicU64,
    introspection_calls: AtomicU64,
    jwks_calls: AtomicU64,
    end_sessions: AtomicU64,
    backchannel_sent: AtomicU64,
    backchannel_failed: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The HTTP client that delivers back-channel logout tokens.
type BackchannelClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

/// A running Trousseau twin: keys, users, pending sign-ins, codes and tokens, all in memory.
///
/// Invariants: every token it signs uses its one RS256 key (published at the JWKS endpoint); a
/// code or rotated refresh token is accepted at most once; a revoked grant family never yields
/// another token or userinfo answer.
pub struct DevIdp {
    config: DevIdpConfig,
    /// `base_url` as a string without trailing slash.
    base: String,
    /// Path of `base_url` without trailing slash: `""` or `/.trousseau/dev-idp`.
    prefix: String,
    issuer: String,
    key: SigningKey,
    directory: Directory,
    grants: Grants,
    /// Authorization requests waiting for someone to pick a user, keyed by a random id.
    pending: moka::sync::Cache<String, Arc<PendingRequest>>,
    /// Browser sessions at the IdP (the SSO cookie), keyed by the cookie's random value.
    sso: moka::sync::Cache<String, SsoSession>,
    token_delay_ms: AtomicU64,
    unavailable: AtomicBool,
    counters: Counters,
    backchannel: OnceLock<Option<BackchannelClient>>,
    /// The `traceparent` of the latest requests (path, value), newest last, at most 64: for tests
    /// of trace propagation.
    traceparents: std::sync::Mutex<std::collections::VecDeque<(String, String)>>,
}

impl std::fmt::Debug for DevIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIdp")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl DevIdp {
    /// Validates `config` and builds the IdP with a fresh in-memory RS256 (2048-bit) key.
    pub fn new(config: DevIdpConfig) -> Result<Arc<DevIdp>, DevIdpError> {
        let base_url = &config.base_url;
        if !matches!(base_url.scheme(), "http" | "https")
            || base_url.host_str().is_none()
            || base_url.query().is_some()
            || base_url.fragment().is_some()
        {
            return Err(DevIdpError::InvalidBaseUrl(base_url.to_string()));
        }
        let base = base_url.as_str().trim_end_matches('/').to_owned();
        let prefix = base_url.path().trim_end_matches('/').to_owned();
        if config.slug.is_empty()
            || !config
                .slug
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(DevIdpError::InvalidSlug(config.slug.clone()));
        }
        if config.client_id.is_empty() || config.client_secret.is_empty() {
            return Err(DevIdpError::MissingClientCredentials);
        }
        let uris = config
            .redirect_uris
            .iter()
            .chain(&config.post_logout_redirect_uris)
            .chain(&config.backchannel_logout_uri);
        for uri in uris {
            let ok = url::Url::parse(uri).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.fragment().is_none()
            });
            if !ok {
                return Err(DevIdpError::InvalidUri(uri.clone()));
            }
        }
        if !config.allowed_scopes.iter().any(|s| s == "openid") {
            return Err(DevIdpError::OpenidScopeNotAllowed);
        }
        let directory = Directory::new(config.users.clone())?;
        let key = SigningKey::generate()?;
        let issuer = format!("{base}/application/o/{}/", config.slug);
        Ok(Arc::new(DevIdp {
            base,
            prefix,
            issuer,
            key,
            directory,
            grants: Grants::new(),
            pending: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            sso: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
            token_delay_ms: AtomicU64::new(0),
            unavailable: AtomicBool::new(false),
            counters: Counters::default(),
            traceparents: std::sync::Mutex::new(std::collections::VecDeque::new()),
            backchannel: OnceLock::new(),
            config,
        }))
    }

    /// The issuer, `{base_url}/application/o/{slug}/`, with its trailing slash.
    pub fn issuer(&self) -> String {
        self.issuer.clone()
    }

    /// The path of `base_url` without trailing slash (`""` or `/.trousseau/dev-idp`): the proxy
    /// hands every request under it to [`DevIdp::handle`].
    pub fn path_prefix(&self) -> &str {
        &self.prefix
    }

    /// The validated configuration this IdP runs with.
    pub fn config(&self) -> &DevIdpConfig {
        &self.config
    }

    /// `{base_url}/application/o/{slug}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}.well-known/openid-configuration", self.issuer)
    }

    /// The `traceparent` headers of the latest requests (at most 64), with their paths, oldest first.
    pub fn traceparents(&self) -> Vec<(String, String)> {
        self.traceparents.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// Answers one request: routes it to the endpoint it names, or 404.
    pub async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        self.handle_request(req).await
    }

    /// [`DevIdp::handle`] for any request body (in-memory bodies, other servers).
    pub async fn handle_request<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let path = req.uri().path().to_owned();
        let Some(rest) = strip_prefix(&path, &self.prefix) else {
            return web::not_found();
        };
        let lang = web::lang(req.headers());
        if let Some(traceparent) = req.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
            let mut seen = self.traceparents.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() == 64 {
                seen.pop_front();
            }
            seen.push_back((path.clone(), traceparent.to_string()));
        }
        let route = Route::of(rest, &self.config.slug);
        if route == Route::Jwks {
            Counters::bump(&self.counters.jwks_calls);
        }
        if self.unavailable.load(Ordering::Relaxed) {
            return web::unavailable(route.is_api(), lang);
        }
        let method = req.method().clone();
        match (route, &method) {
            (Route::Index, &Method::GET | &Method::HEAD) => {
                web::html(StatusCode::OK, pages::index(self, lang))
            }
            (Route::Discovery, &Method::GET | &Method::HEAD) => discovery::configuration(self),
            (Route::Jwks, &Method::GET | &Method::HEAD) => discovery::jwks(self),
            (Route::Authorize, &Method::GET | &Method::HEAD) => {
                authorize::start(self, req.uri().query(), req.headers(), lang)
            }
            (Route::Authorize, &Method::POST) => authorize::choose(self, req, lang).await,
            (Route::Token, &Method::POST) => token::token(self, req).await,
            (Route::Introspect, &Method::POST) => introspect::introspect(self, req).await,
            (Route::Userinfo, &Method::GET | &Method::HEAD | &Method::POST) => {
                userinfo::userinfo(self, req.headers())
            }
            (Route::EndSession, &Method::GET | &Method::HEAD | &Method::POST) => {
                logout::end_session(self, req, lang).await
            }
            (Route::NotFound, _) => web::not_found(),
            (route, _) => web::method_not_allowed(route.allowed_methods()),
        }
    }

    /// Disables or re-enables a user: a disabled user cannot sign in (`access_denied`), refresh
    /// (`invalid_grant`) or call userinfo (401). Re-enabling restores unexpired grants.
    pub fn set_user_disabled(&self, sub: &str, disabled: bool) {
        self.directory.set_disabled(sub, disabled);
    }

    /// Replaces a user's organization memberships; later ID tokens and userinfo answers carry them.
    pub fn set_user_organizations(&self, sub: &str, orgs: Vec<Organization>) {
        self.directory.set_organizations(sub, orgs);
    }

    /// Makes every token request wait `d` before being processed (concurrency tests).
    pub fn set_token_endpoint_delay(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.token_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Simulates an outage: while on, every endpoint answers 503 with `Retry-After`.
    pub fn set_unavailable(&self, on: bool) {
        self.unavailable.store(on, Ordering::Relaxed);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DevIdpStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DevIdpStats {
            code_grants: get(&c.code_grants),
            refresh_grants_ok: get(&c.refresh_grants_ok),
            refresh_grants_failed: get(&c.refresh_grants_failed),
            refresh_reuse_detected: get(&c.refresh_reuse_detected),
            userinfo_calls: get(&c.userinfo_calls),
            introspection_calls: get(&c.introspection_calls),
            jwks_calls: get(&c.jwks_calls),
            end_sessions: get(&c.end_sessions),
            backchannel_sent: get(&c.backchannel_sent),
            backchannel_failed: get(&c.backchannel_failed),
        }
    }

    /// Signs `claims` as a compact RS256 JWS with the IdP's key and `kid`; `typ` goes in the
    /// header unless empty. Tests use it to issue or forge tokens the proxy must accept or refuse.
    ///
    /// # Panics
    /// Only if RSA signing with the IdP's own in-memory key fails, which aws-lc-rs does not do
    /// for a well-formed key.
    pub fn sign_jwt(&self, claims: &serde_json::Value, typ: &str) -> String {
        self.key
            .sign(claims, typ)
            .expect("RSA signing with the IdP's own key does not fail")
    }

    /// Signs `claims` with the IdP's key under exactly `header` (which should say `"alg":
    /// "RS256"`): for tests that forge tokens with headers Trousseau never writes, such as `crit`
    /// or a `kid` it does not publish.
    ///
    /// # Panics
    /// As [`DevIdp::sign_jwt`].
    pub fn sign_jwt_with_header(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        self.key
            .sign_with_header(header, claims)
            .expect("RSA signing with the IdP's own key does not fail")
    }

    /// The `kid` of the IdP's signing key, as published in its JWKS.
    pub fn key_id(&self) -> String {
        self.key.jwk()["kid"].as_str().unwrap_or_default().to_owned()
    }

    /// An access token for `sub` as if Trousseau had issued it to another application (client
    /// [`FOREIGN_CLIENT_ID`]) with every allowed scope: userinfo accepts it like any other live
    /// token (Trousseau's userinfo is shared by all its applications), and introspection answers it
    /// `active` with that other `client_id`. `sub` should be a configured user.
    pub fn issue_foreign_access_token(&self, sub: &str) -> String {
        self.grants.issue_for_client(
            FOREIGN_CLIENT_ID,
            sub,
            &self.config.allowed_scopes,
            web::random_token(16),
            token::lifetimes(self),
        )
    }

    /// A valid back-channel logout token for the configured client (`typ: logout+jwt`, fresh
    /// `jti`, two-minute `exp`), naming `sub` and/or `sid` as given.
    pub fn logout_token(&self, sub: Option<&str>, sid: Option<&str>) -> String {
        self.sign_jwt(&logout::logout_claims(self, sub, sid), "logout+jwt")
    }
}

/// Which endpoint a path (below the prefix) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Index,
    Discovery,
    Jwks,
    Authorize,
    Token,
    Userinfo,
    Introspect,
    EndSession,
    NotFound,
}

impl Route {
    fn of(rest: &str, slug: &str) -> Route {
        match rest {
            "" | "/" => return Route::Index,
            "/application/o/authorize/" => return Route::Authorize,
            "/application/o/token/" => return Route::Token,
            "/application/o/userinfo/" => return Route::Userinfo,
            "/application/o/introspect/" => return Route::Introspect,
            _ => {}
        }
        let Some(tail) = rest
            .strip_prefix("/application/o/")
            .and_then(|t| t.strip_prefix(slug))
        else {
            return Route::NotFound;
        };
        match tail {
            "/.well-known/openid-configuration" => Route::Discovery,
            "/jwks/" => Route::Jwks,
            "/end-session/" => Route::EndSession,
            _ => Route::NotFound,
        }
    }

    /// Machine endpoints answer JSON; the others answer pages.
    fn is_api(self) -> bool {
        matches!(
            self,
            Route::Discovery
                | Route::Jwks
                | Route::Token
                | Route::Userinfo
                | Route::Introspect
                | Route::NotFound
        )
    }

    fn allowed_methods(self) -> &'static str {
        match self {
            Route::Index | Route::Discovery | Route::Jwks => "GET, HEAD",
            Route::Authorize | Route::Userinfo | Route::EndSession => "GET, HEAD, POST",
            Route::Token | Route::Introspect => "POST",
            Route::NotFound => "",
        }
    }
}

/// `path` below `prefix`, if it is under it (`/x` is not under `/xy`).
fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Seconds since the Unix epoch.
fn now_unix() -> i64 {
    i64::try_from(crate::util::clock::now_secs()).unwrap_or(i64::MAX)
}

/// `d` in whole seconds, for JSON.
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Serves `idp` over HTTP/1.1 on `listener` until the task running this future is aborted or
/// dropped (open connections are closed with it).
pub async fn serve(listener: tokio::net::TcpListener, idp: Arc<DevIdp>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(%error, "dev IdP could not accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let idp = idp.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let idp = idp.clone();
                async move { Ok::<_, Infallible>(idp.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = conn.await {
                tracing::debug!(%error, "dev IdP connection ended with an error");
            }
        });
    }
}

/// A dev IdP listening on a loopback port of its own, stopped when dropped. The quickest way
/// for a test to get a Trousseau.
#[derive(Debug)]
pub struct LocalDevIdp {
    idp: Arc<DevIdp>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl LocalDevIdp {
    /// Binds `127.0.0.1:0`, points `config.base_url` at it (keeping the configured path, if any)
    /// and starts serving.
    pub async fn start(mut config: DevIdpConfig) -> Result<LocalDevIdp, DevIdpError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let mut base = config.base_url.clone();
        let path = base.path().to_owned();
        base = url::Url::parse(&format!("http://{addr}{path}"))
            .map_err(|_| DevIdpError::InvalidBaseUrl(base.to_string()))?;
        config.base_url = base;
        let idp = DevIdp::new(config)?;
        let task = tokio::spawn(serve(listener, idp.clone()));
        Ok(LocalDevIdp { idp, addr, task })
    }

    /// The IdP, for its controls and stats.
    pub fn idp(&self) -> &Arc<DevIdp> {
        &self.idp
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its issuer (with trailing slash).
    pub fn issuer(&self) -> String {
        self.idp.issuer()
    }
}

impl Drop for LocalDevIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
