//! Forwarding a request the proxy has let through to the app, and streaming the app's answer back.
//!
//! [`Upstream::forward`] is the whole exchange, in this order:
//! 1. **request headers** ([`Upstream::rewrite_headers`], which the request path calls from its
//!    one phase that changes the outgoing request): hop-by-hop fields removed
//!    ([`remove_hop_by_hop`]), `X-Forwarded-*` set, `Host` decided;
//! 2. **target** ([`Upstream::send`] from here on): the app's scheme and authority, its path
//!    prefix joined to the request's path and query;
//! 3. **send**, waiting at most `response_timeout` for the response head — counted from the last
//!    moment the request body moved, so a long upload is not mistaken for a silent app;
//! 4. **response headers**: hop-by-hop fields removed;
//! 5. **body** streamed back untouched — or, for `101 Switching Protocols` to a websocket upgrade,
//!    the browser's and the app's connections spliced together in a task of their own.
//!
//! Only websocket upgrades pass ([`wants_upgrade`]). Any other `Upgrade` — `h2c` above all, which
//! would turn the connection into an HTTP/2 connection straight to the app, every later request on
//! it unseen by the proxy — is removed with `HTTP2-Settings`, and a `101` is only spliced when it
//! switches to the protocol that was asked for.
//!
//! Bodies are never buffered: frames pass as they come, with backpressure both ways, so SSE, long
//! polls and multi-gigabyte uploads run in constant memory. The time to stream a body is not
//! limited (an SSE stream may last for hours).
//!
//! Connections are pooled per server worker ([`pool`]) with HTTP/1.1 keep-alive. An `https` app
//! that offers HTTP/2 through ALPN gets multiplexed HTTP/2 — unless `preserve_host` is on: HTTP/2
//! carries the host in `:authority`, which comes from the address we dial, so the app would see its
//! own address instead of the browser's `Host`. With `preserve_host` we therefore offer HTTP/1.1
//! only. Upgrades exist only in HTTP/1.1, so each gets an HTTP/1.1 connection of its own.

mod pool;
mod splice;

pub use splice::{tethered, POLICY_VIOLATION};

use std::error::Error as StdError;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{self, Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::body::{self, Body, BoxError};
use crate::limits::rate::{BodyClock, BodyRate};
use crate::tls::{self, TlsError};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Hop-by-hop fields (RFC 9110 §7.6.1) besides `Connection`, the fields it names and `Upgrade`,
/// which [`remove_hop_by_hop`] handles itself. `TE` comes back as `TE: trailers` when it asked
/// for trailers. `HTTP2-Settings` belongs to an `h2c` upgrade, which never passes (RFC 7540 §3.2.1
/// makes it connection-specific).
// Statics, not consts: a const array is built (and its names dropped) at each use, and
// `set_forwarded`'s scan used one per header of every request.
static HOP_BY_HOP: [HeaderName; 8] = [
    KEEP_ALIVE,
    PROXY_CONNECTION,
    HTTP2_SETTINGS,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Forwarding headers we do not set ourselves. A browser can forge them, so unless the peer is a
/// trusted proxy they are removed: the app must only ever learn who connected from us. The
/// URL-rewrite headers go with them: some frameworks (Symfony, Laminas, IIS modules) route by
/// `X-Original-URL`/`X-Rewrite-URL` instead of the path the proxy judged.
static FORGEABLE_FORWARDING: [HeaderName; 6] = [
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// Prefix of the headers the proxy vouches for; `Connection` may never name them for removal.
const VOUCHED_PREFIX: &str = "x-trousseau-";

const UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");
/// The one protocol an upgrade may switch to.
const WEBSOCKET: &str = "websocket";
const TRAILERS: HeaderValue = HeaderValue::from_static("trailers");

/// Where the app is and how to talk to it; turned into an [`Upstream`] at start, and again at a
/// reload that changes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// The app: `http` or `https`, optionally with a path prefix (`http://127.0.0.1:8080/app/`).
    /// No user info, query or fragment.
    pub url: url::Url,
    /// Forward the browser's `Host` (true, the default) or the app's own authority (false).
    pub preserve_host: bool,
    /// PEM CA file trusted, besides the system's CAs, for an `https` app.
    pub ca_file: Option<PathBuf>,
    /// Longest wait for a TCP connection to the app (default 5 s).
    pub connect_timeout: Duration,
    /// Longest the app may keep us waiting for response headers (default 60 s); see
    /// [`Upstream::forward`].
    pub response_timeout: Duration,
    /// How long an idle pooled connection is kept (default 90 s).
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per app (default 64).
    pub pool_max_idle_per_host: usize,
    /// How long a request body may keep us waiting in all before its bytes earn more time
    /// (`limits.request_body_timeout`, default 30 s); see [`crate::limits::rate`].
    pub request_body_timeout: Duration,
    /// Bytes of request body that earn one more second of waiting (`limits.request_body_min_rate`,
    /// default 500; 0: none).
    pub request_body_min_rate: u64,
}

impl UpstreamSettings {
    /// Settings for the app at `url`, with the defaults above.
    pub fn new(url: url::Url) -> Self {
        UpstreamSettings {
            url,
            preserve_host: true,
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
            request_body_timeout: Duration::from_secs(30),
            request_body_min_rate: 500,
        }
    }
}

/// What [`Upstream::forward`] needs to know about the browser's request beyond the request itself.
#[derive(Debug, Clone)]
pub struct ForwardContext {
    /// The peer of the connection the request came in on.
    pub client_ip: IpAddr,
    /// How the browser reached us: `"http"` or `"https"`; sent as `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// The `Host` (or HTTP/2 `:authority`) the browser asked for; sent as `X-Forwarded-Host`, and
    /// as `Host` when `preserve_host` is on.
    pub host: Option<HeaderValue>,
    /// The peer is a proxy we trust: append to its `X-Forwarded-For` and keep its other forwarding
    /// headers instead of replacing them.
    pub trust_forwarded: bool,
}

/// Why a request could not be forwarded. The server turns these into 502 (504 for
/// [`ProxyError::Timeout`]) pages. Messages never contain header values or cookies.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream URL cannot be used (found at startup).
    #[error("the upstream URL {0}")]
    InvalidUpstream(&'static str),
    /// The TLS configuration for an `https` app cannot be built (found at startup).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// No connection to the app: refused, DNS failure, connect timeout, TLS handshake failure.
    #[error("the app cannot be reached: {}", root_cause(&**.0))]
    Unreachable(#[source] BoxError),
    /// The app sent no response headers within `response_timeout`.
    #[error("the app did not answer in time")]
    Timeout,
    /// The connection to the app failed during the exchange, or the app's answer is not valid HTTP.
    #[error("the exchange with the app failed: {}", root_cause(&**.0))]
    Protocol(#[source] BoxError),
    /// The request has no origin-form target to forward (`CONNECT`, `OPTIONS *`), or its path
    /// would leave the app's path prefix.
    #[error("the request cannot be forwarded: {0}")]
    InvalidRequest(&'static str),
    /// The app answered `101 Switching Protocols` to something other than the websocket upgrade
    /// the request asked for.
    #[error("the app switched protocols without being asked for a websocket")]
    UnexpectedSwitch,
    /// The client's request body broke off or was malformed (bad chunked encoding): the client's
    /// fault, answered 400.
    #[error("the request body could not be read: {}", root_cause(&**.0))]
    ClientBody(#[source] BoxError),
    /// The client's request body fell behind `limits.request_body_min_rate`: answered 408.
    #[error("the request body arrived too slowly (limits.request_body_timeout, limits.request_body_min_rate)")]
    SlowClientBody,
}

impl ProxyError {
    /// The client's fault rather than the app's, when it is.
    pub fn client_fault(&self) -> Option<crate::limits::ClientFault> {
        match self {
            ProxyError::ClientBody(_) => Some(crate::limits::ClientFault::BrokenBody),
            ProxyError::SlowClientBody => Some(crate::limits::ClientFault::SlowBody),
            _ => None,
        }
    }
}

impl From<pool::SendError> for ProxyError {
    fn from(err: pool::SendError) -> Self {
        match err {
            pool::SendError::Connect(e) => ProxyError::Unreachable(e),
            pool::SendError::Exchange(e) => ProxyError::Protocol(e),
        }
    }
}

/// The innermost cause: hyper's own messages ("client error (Connect)") say little, the cause
/// ("Connection refused", "invalid peer certificate: UnknownIssuer") says what to fix.
fn root_cause<'a>(err: &'a (dyn StdError + 'static)) -> &'a (dyn StdError + 'static) {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause
}

/// The app behind the proxy: its address, the connection pools to it and the forwarding rules.
/// Cloning is cheap (one reference count); clones share the pools.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    /// Connection pools for ordinary requests, one per server worker thread (see [`set_worker`]);
    /// they may negotiate HTTP/2 (see the module doc).
    pools: Box<[Arc<pool::Pool>]>,
    /// HTTP/1.1 connections for upgrade requests, one each.
    upgrades: Arc<pool::Pool>,
    scheme: Scheme,
    authority: Authority,
    /// The URL's path without its trailing `/`; empty when the app is at the root.
    path_prefix: Box<str>,
    preserve_host: bool,
    response_timeout: Duration,
    body_rate: BodyRate,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("scheme", &self.inner.scheme)
            .field("authority", &self.inner.authority)
            .field("path_prefix", &self.inner.path_prefix)
            .field("preserve_host", &self.inner.preserve_host)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Checks the URL, builds the TLS configuration and the connection pools. Nothing is
    /// connected until the first request.
    pub fn new(settings: UpstreamSettings) -> Result<Upstream, ProxyError> {
        let url = &settings.url;
        let scheme = match url.scheme() {
            "http" => Scheme::HTTP,
            "https" => Scheme::HTTPS,
            _ => {
                return Err(ProxyError::InvalidUpstream(
                    "must start with http:// or https://",
                ))
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ProxyError::InvalidUpstream(
                "must not contain a user name or password",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ProxyError::InvalidUpstream(
                "must not have a query or a fragment",
            ));
        }
        let authority: Authority = url[url::Position::BeforeHost..url::Position::AfterPort]
            .parse()
            .map_err(|_| ProxyError::InvalidUpstream("has no valid host"))?;
        if authority.host().is_empty() {
            return Err(ProxyError::InvalidUpstream("has no host"));
        }

        let tls = tls::client_config(settings.ca_file.as_deref())?;
        let address = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| ProxyError::InvalidUpstream("has no valid host"))?;
        let own_host = own_host(&scheme, &authority)?;
        let new_pool = |tls: rustls::ClientConfig, purpose| {
            Arc::new(pool::Pool::new(
                tls::https_connector(tls, settings.connect_timeout),
                address.clone(),
                own_host.clone(),
                purpose,
                settings.pool_max_idle_per_host,
                settings.pool_idle_timeout,
            ))
        };
        let upgrades = new_pool(http1_tls_for(&tls), pool::Purpose::Upgrades);
        let workers = crate::util::worker_count();
        let pools = (0..workers)
            .map(|_| {
                let tls = if scheme == Scheme::HTTPS && !settings.preserve_host { tls.clone() } else { http1_tls_for(&tls) };
                new_pool(tls, pool::Purpose::Requests)
            })
            .collect();

        Ok(Upstream {
            inner: Arc::new(Inner {
                pools,
                upgrades,
                scheme,
                authority,
                path_prefix: url.path().trim_end_matches('/').into(),
                preserve_host: settings.preserve_host,
                response_timeout: settings.response_timeout,
                body_rate: BodyRate { timeout: settings.request_body_timeout, min_rate: settings.request_body_min_rate },
            }),
        })
    }

    /// Forwards `req` (already authorized, identity headers already added) to the app and returns
    /// its response: [`Upstream::rewrite_headers`], then [`Upstream::send`]. The request path calls
    /// the two from its phases (`crate::pipeline`); this is the one call for everything else.
    pub async fn forward(&self, mut req: Request<Body>, ctx: &ForwardContext) -> Result<Response<Body>, ProxyError> {
        self.rewrite_headers(req.headers_mut(), ctx);
        self.send(req).await
    }

    /// The request headers' changes on the way to the app: hop-by-hop fields go (an `Upgrade` to
    /// a websocket stays), `X-Forwarded-*` say who asked and how, and `Host` is the app's (or the
    /// browser's, with `preserve_host`).
    pub fn rewrite_headers(&self, headers: &mut HeaderMap, ctx: &ForwardContext) {
        remove_hop_by_hop(headers, wants_upgrade(headers));
        set_forwarded(headers, ctx);
        self.inner.set_host(headers, ctx);
    }

    /// Sends `req`, its headers already rewritten, to the app and returns its response, whose body
    /// streams from the app as the caller sends it on. See the module doc for the steps.
    ///
    /// `response_timeout` bounds the wait for the response head only, and restarts whenever the
    /// request body makes progress. A `Connection: Upgrade` request answered with `101` is tunneled:
    /// the returned `101` must be sent on a connection served with upgrades enabled
    /// (`serve_connection_with_upgrades`), after which the bytes flow in a spawned task.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let inner = &*self.inner;
        let upgrade = wants_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        // Keeps the browser's connection counted as open while a tunnel replaces it.
        let hold = parts.extensions.remove::<crate::limits::UpgradeHold>();
        // Ties a tunnel to its session: cut, it closes with 1008 (`splice`).
        let tether = parts.extensions.remove::<crate::tether::Tether>();

        // 1. Target. Whatever the browser spoke, we speak HTTP/1.1 (or HTTP/2 through ALPN); the
        //    server's extensions (connection info, upgrade handle) stay on this side.
        parts.uri = inner.target(&parts.uri)?;
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();

        // 2. Send.
        let (body, upload) = watch_upload(body, inner.body_rate);
        let pool = if upgrade { &inner.upgrades } else { &inner.pools[WORKER.get() % inner.pools.len()] };
        let sending = pool.send(Request::from_parts(parts, body));
        let mut response = inner.response_head(sending, upload.as_deref()).await?;

        // 3. Response headers. A `101` is only good as the answer to our websocket upgrade: to
        //    anything else (a switch nobody asked for, or to `h2c`) it would leave the browser
        //    talking to the app past the proxy.
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching && !(upgrade && switches_to_websocket(response.headers())) {
            return Err(ProxyError::UnexpectedSwitch);
        }
        remove_hop_by_hop(response.headers_mut(), switching);
        if let Some(date) = response.headers_mut().get_mut(header::DATE) {
            // New every second: over HTTP/2 it is sent as a literal, not put in the connection's
            // header table (see `pipeline::finish::unindexed`).
            date.set_sensitive(true);
        }

        // 4. Body, or tunnel.
        if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
            splice::splice(client_upgrade, hyper::upgrade::on(&mut response), hold, tether);
            return Ok(response.map(|_| body::empty()));
        }
        Ok(response)
    }
}

impl Inner {
    /// The absolute-form URI at the app: its scheme and authority, its path prefix, then the
    /// request's path and query as the browser sent them.
    fn target(&self, uri: &Uri) -> Result<Uri, ProxyError> {
        let request_target = match uri.path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => pq.clone(),
            // An absolute-form request for the root ("http://host" without a path).
            None if uri.scheme().is_some() => PathAndQuery::from_static("/"),
            _ => return Err(ProxyError::InvalidRequest("the target is not a path")),
        };
        let path_and_query = if self.path_prefix.is_empty() {
            request_target
        } else if crate::policy::climbs_above_root(request_target.path()) {
            // `/../internal` would reach `<prefix>/../internal`: outside the app we front.
            return Err(ProxyError::InvalidRequest("the path climbs above the app's path prefix"));
        } else {
            let mut joined =
                String::with_capacity(self.path_prefix.len() + request_target.as_str().len());
            joined.push_str(&self.path_prefix);
            joined.push_str(request_target.as_str());
            PathAndQuery::try_from(joined)
                .map_err(|_| ProxyError::InvalidRequest("the target is not a valid path"))?
        };
        let mut parts = uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts)
            .map_err(|_| ProxyError::InvalidRequest("the target is not a valid URI"))
    }

    /// `Host`: the browser's when `preserve_host` is on and we know it. Otherwise none, and the
    /// client fills it from the target URI — `Host` on HTTP/1.1, `:authority` on HTTP/2 — so the app
    /// sees its own authority and an HTTP/2 request never carries a conflicting `Host`.
    fn set_host(&self, headers: &mut HeaderMap, ctx: &ForwardContext) {
        match (&ctx.host, self.preserve_host) {
            (Some(host), true) => {
                headers.insert(header::HOST, host.clone());
            }
            _ => {
                headers.remove(header::HOST);
            }
        }
    }

    /// Waits for the response head. The deadline is `response_timeout` after the later of the
    /// start and the last movement of the request body. A failure caused by the client's body
    /// (broken off, malformed, too slow) is the client's fault, whatever the exchange with the app
    /// made of it.
    async fn response_head(
        &self,
        sending: impl Future<Output = Result<Response<Body>, pool::SendError>>,
        upload: Option<&UploadWatch>,
    ) -> Result<Response<Body>, ProxyError> {
        let timeout = self.response_timeout;
        let mut sending = pin!(sending);
        let mut sleep = pin!(tokio::time::sleep(timeout));
        loop {
            tokio::select! {
                result = &mut sending => {
                    return result.map_err(|e| match upload.and_then(UploadWatch::fault) {
                        Some(fault) => fault,
                        None => ProxyError::from(e),
                    })
                }
                () = &mut sleep => match upload.map(|watch| watch.last_moved() + timeout) {
                    Some(deadline) if deadline > Instant::now() => sleep.as_mut().reset(deadline),
                    _ => return Err(ProxyError::Timeout),
                },
            }
        }
    }
}

/// `tls` offering only HTTP/1.1.
fn http1_tls_for(tls: &rustls::ClientConfig) -> rustls::ClientConfig {
    let mut http1 = tls.clone();
    http1.alpn_protocols = vec![tls::ALPN_HTTP1.to_vec()];
    http1
}

thread_local! {
    /// Which server worker runs on this thread (0 outside the server's worker threads).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Tells the upstream pools that this thread is server worker `index`: its requests use pool
/// `index`. Called once by each worker thread of [`crate::server::run`].
pub fn set_worker(index: usize) {
    WORKER.set(index);
}

/// The `Host` an HTTP/1.1 request gets when it does not carry the browser's: the app's host, with
/// the port unless it is the scheme's default.
fn own_host(scheme: &Scheme, authority: &Authority) -> Result<HeaderValue, ProxyError> {
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let host = match authority.port_u16() {
        Some(port) if port != default_port => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    HeaderValue::try_from(host).map_err(|_| ProxyError::InvalidUpstream("has no valid host"))
}

/// Removes the hop-by-hop fields of RFC 9110 §7.6.1: `Connection` and every field it names,
/// `Keep-Alive`, `Proxy-Connection`, `TE` (a request for `trailers` survives as `TE: trailers`),
/// `Trailer`, `Transfer-Encoding`, `Proxy-Authenticate`, `Proxy-Authorization` and `Upgrade`.
///
/// With `keep_upgrade` (an upgrade request, or the `101` answering it), `Upgrade` stays and
/// `Connection` becomes exactly `upgrade`. `Connection` cannot remove `X-Trousseau-*` headers: a
/// browser must not be able to strip the identity the proxy vouches for.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Performance: one pass over the field names (comparing standard names is an integer compare)
    // finds the hop-by-hop ones; most requests have none, or only `Connection`, and most responses
    // none, so this replaces a dozen hashed lookups per message with a scan of ~20 names.
    let present: Vec<HeaderName> = headers.keys().filter(|name| is_hop_by_hop(name)).cloned().collect();
    if present.is_empty() {
        return;
    }
    let wants_trailers = present.contains(&header::TE)
        && comma_tokens(headers, &header::TE).any(|token| {
            let coding = token.split(';').next().unwrap_or_default();
            coding.trim().eq_ignore_ascii_case("trailers")
        });

    if present.contains(&header::CONNECTION) {
        let named: Vec<HeaderName> = comma_tokens(headers, &header::CONNECTION)
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .filter(|name| !name.as_str().starts_with(VOUCHED_PREFIX))
            .filter(|name| !(keep_upgrade && name == header::UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in present.iter().filter(|name| HOP_BY_HOP.contains(name)) {
        headers.remove(name);
    }
    if wants_trailers {
        headers.insert(header::TE, TRAILERS);
    }
    if keep_upgrade && headers.contains_key(header::UPGRADE) {
        headers.insert(header::CONNECTION, UPGRADE_TOKEN);
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// `Connection`, `Upgrade` and the fields of [`HOP_BY_HOP`].
///
/// Performance: runs on every field of every message (three times a proxied request), so the
/// name's length picks the one or two names it could be before any comparison.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    let name = name.as_str();
    match name.len() {
        2 => name == "te",
        7 => name == "trailer" || name == "upgrade",
        10 => name == "connection" || name == "keep-alive",
        14 => name == "http2-settings",
        16 => name == "proxy-connection",
        17 => name == "transfer-encoding",
        18 => name == "proxy-authenticate",
        19 => name == "proxy-authorization",
        _ => false,
    }
}

/// The comma-separated tokens of every `name` field, trimmed, empty ones skipped.
fn comma_tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// A request asks to switch to a websocket: `Connection: upgrade` and exactly one `Upgrade` field
/// naming `websocket` alone (any case). Anything else — `h2c`, a list of protocols, another
/// protocol — is not an upgrade: [`remove_hop_by_hop`] then removes `Upgrade`.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    switches_to_websocket(headers) && comma_tokens(headers, &header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// The message has exactly one `Upgrade` field, naming `websocket` alone: for a `101`, the switch
/// our websocket upgrade asked for.
fn switches_to_websocket(headers: &HeaderMap) -> bool {
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    matches!((upgrades.next(), upgrades.next()), (Some(value), None) if value.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case(WEBSOCKET)))
}

/// `X-Forwarded-For`, `-Proto` and `-Host` as we saw the request. From an untrusted peer, whatever
/// it claimed about earlier hops is dropped, along with the other forgeable forwarding headers.
fn set_forwarded(headers: &mut HeaderMap, ctx: &ForwardContext) {
    // A dual-stack listener reports IPv4 peers as `::ffff:a.b.c.d`; apps expect `a.b.c.d`.
    let client_ip = ip_text(ctx.client_ip.to_canonical());
    let forwarded_for = if ctx.trust_forwarded {
        append_forwarded_for(headers, &client_ip)
    } else {
        // Performance: a scan of the names first; requests rarely carry any of these.
        if headers.keys().any(|name| FORGEABLE_FORWARDING.contains(name)) {
            for name in &FORGEABLE_FORWARDING {
                headers.remove(name);
            }
        }
        HeaderValue::from_str(&client_ip).ok()
    };
    match forwarded_for {
        Some(value) => headers.insert(X_FORWARDED_FOR, value),
        None => headers.remove(X_FORWARDED_FOR),
    };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(ctx.proto));
    match &ctx.host {
        Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

/// An address as text; IPv4 without the formatting machinery (this runs on every request).
fn ip_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
            text
        }
        std::net::IpAddr::V6(v6) => v6.to_string(),
    }
}

/// The trusted peer's `X-Forwarded-For` list (all its fields, in order) followed by `client_ip`.
fn append_forwarded_for(headers: &HeaderMap, client_ip: &str) -> Option<HeaderValue> {
    let mut list = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            list.extend_from_slice(value);
            list.extend_from_slice(b", ");
        }
    }
    list.extend_from_slice(client_ip.as_bytes());
    HeaderValue::from_maybe_shared(Bytes::from(list)).ok()
}

/// When the request body last moved, so that the response timeout counts only the time the app
/// keeps us waiting, not the time a large upload takes to arrive; and whether the body failed
/// through the client's fault.
struct UploadWatch {
    started: Instant,
    /// Nanoseconds from `started` to the last frame (or end) of the body.
    last_moved: AtomicU64,
    /// [`FAULT_NONE`], [`FAULT_BROKEN`] or [`FAULT_SLOW`].
    fault: AtomicU8,
    /// The client's error when the body broke off or was malformed.
    broken: std::sync::Mutex<Option<BoxError>>,
}

const FAULT_NONE: u8 = 0;
const FAULT_BROKEN: u8 = 1;
const FAULT_SLOW: u8 = 2;

impl UploadWatch {
    fn moved(&self) {
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_moved.fetch_max(nanos, Ordering::Relaxed);
    }

    fn last_moved(&self) -> Instant {
        self.started + Duration::from_nanos(self.last_moved.load(Ordering::Relaxed))
    }

    /// What the client did wrong, if the body failed through its fault.
    fn fault(&self) -> Option<ProxyError> {
        match self.fault.load(Ordering::Relaxed) {
            FAULT_BROKEN => {
                let error = self.broken.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                Some(ProxyError::ClientBody(error.unwrap_or_else(|| "the request body broke off".into())))
            }
            FAULT_SLOW => Some(ProxyError::SlowClientBody),
            _ => None,
        }
    }
}

/// A request body that reports its progress to an [`UploadWatch`] and is cut, as the client's
/// fault, when it falls behind its [`BodyRate`] (see [`crate::limits::rate`]).
struct WatchedBody {
    inner: Body,
    watch: Arc<UploadWatch>,
    rate: BodyRate,
    clock: BodyClock,
    /// Armed while the body waits for the client, to end the wait at its deadline; kept once made.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error a body cut for its rate ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
struct TooSlow;

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let now = Instant::now();
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.clock.received(now, frame.data_ref().map_or(0, Bytes::len));
                this.watch.moved();
            }
            Poll::Ready(Some(Err(e))) => {
                // The client's connection broke or its chunked encoding is malformed: its fault.
                *this.watch.broken.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string().into());
                this.watch.fault.store(FAULT_BROKEN, Ordering::Relaxed);
                this.watch.moved();
            }
            Poll::Ready(None) => this.watch.moved(),
            Poll::Pending => {
                this.clock.waiting(now);
                let Some(deadline) = this.clock.deadline(this.rate) else { return Poll::Pending };
                if deadline <= now {
                    this.watch.fault.store(FAULT_SLOW, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(TooSlow.into())));
                }
                // Deadlines only move later, so an armed one is never late: it is left alone until
                // it passes, then moved to the real deadline (one timer operation per deadline
                // reached, not one per frame).
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() <= now {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    // It passed between `now` and here: look again at once.
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps a request body that has something to send in a [`WatchedBody`]; an empty one (most
/// requests) goes as it is.
fn watch_upload(body: Body, rate: BodyRate) -> (Body, Option<Arc<UploadWatch>>) {
    if http_body::Body::is_end_stream(&body) {
        return (body, None);
    }
    let watch = Arc::new(UploadWatch {
        started: Instant::now(),
        last_moved: AtomicU64::new(0),
        fault: AtomicU8::new(FAULT_NONE),
        broken: std::sync::Mutex::new(None),
    });
    let body = WatchedBody {
        inner: body,
        watch: Arc::clone(&watch),
        rate,
        clock: BodyClock::default(),
        timer: None,
    };
    (body.boxed_unsync(), Some(watch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use futures_util::{SinkExt, StreamExt};
    use http_body_util::StreamBody;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use hyper_util::rt::TokioExecutor;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{mpsc, oneshot};
    use tokio_tungstenite::tungstenite::{self, handshake::derive_accept_key, protocol::Role};

    use crate::tls::test_certs;

    const PUBLIC_HOST: &str = "app.example.com:4180";
    const MIB: usize = 1024 * 1024;

    #[test]
    fn client_addresses_are_written_as_std_writes_them() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.30.40", "100.9.255.199", "255.255.255.255", "::1", "2001:db8::7"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    // ----- the app -----

    /// An app on 127.0.0.1 answering with `handler`: HTTP/1.1 and HTTP/2 (over TLS when `tls`),
    /// upgrades allowed. Counts the connections it accepts.
    struct App {
        addr: SocketAddr,
        connections: Arc<AtomicUsize>,
    }

    async fn spawn_app<F, Fut>(tls: bool, handler: F) -> App
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.then(tls_acceptor);
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let answer = handler(req);
                        async move { Ok::<_, Infallible>(answer.await) }
                    });
                    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match acceptor {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            server
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await
                        }
                        None => {
                            server
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await
                        }
                    };
                });
            }
        });
        App { addr, connections }
    }

    fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
        let certs = CertificateDer::pem_slice_iter(test_certs::SERVER_CERT.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(test_certs::SERVER_KEY.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// An app that reports every request head it receives and answers `200 hello`.
    async fn spawn_recording_app(
        tls: bool,
    ) -> (App, mpsc::UnboundedReceiver<http::request::Parts>) {
        let (seen, heads) = mpsc::unbounded_channel();
        let app = spawn_app(tls, move |req: Request<Incoming>| {
            let seen = seen.clone();
            async move {
                let (parts, _) = req.into_parts();
                let _ = seen.send(parts);
                Response::new(body::full("hello"))
            }
        })
        .await;
        (app, heads)
    }

    /// An app that counts the bytes of the request body and answers with the count.
    async fn spawn_counting_app() -> App {
        spawn_app(false, |req: Request<Incoming>| async move {
            let mut body = req.into_body();
            let mut count = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    count += data.len();
                }
            }
            Response::new(body::full(count.to_string()))
        })
        .await
    }

    /// An app that echoes websocket messages.
    async fn spawn_websocket_app(tls: bool) -> App {
        spawn_app(tls, |mut req: Request<Incoming>| async move {
            let key = req.headers().get("sec-websocket-key").cloned();
            let upgrade = req.headers().get(header::UPGRADE).cloned();
            let (Some(key), Some("websocket")) =
                (key, upgrade.as_ref().and_then(|u| u.to_str().ok()))
            else {
                return status(StatusCode::BAD_REQUEST);
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let upgraded = on_upgrade.await.expect("app side upgrade");
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() || message.is_binary() {
                        ws.send(message).await.unwrap();
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, "websocket")
                .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
                .body(body::empty())
                .unwrap()
        })
        .await
    }

    fn status(code: StatusCode) -> Response<Body> {
        let mut response = Response::new(body::empty());
        *response.status_mut() = code;
        response
    }

    // ----- the proxy -----

    fn settings(url: &str) -> UpstreamSettings {
        UpstreamSettings::new(url.parse().unwrap())
    }

    fn upstream(url: &str) -> Upstream {
        Upstream::new(settings(url)).unwrap()
    }

    /// A proxy on 127.0.0.1 that forwards every request with `Upstream::forward`, the way the
    /// server does: 504 for a timeout, 502 for anything else.
    async fn spawn_proxy(upstream: Upstream, trust_forwarded: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let upstream = upstream.clone();
                        async move {
                            let ctx = ForwardContext {
                                client_ip: peer.ip(),
                                proto: "http",
                                host: req.headers().get(header::HOST).cloned(),
                                trust_forwarded,
                            };
                            let answer = match upstream.forward(req.map(body::stream), &ctx).await {
                                Ok(response) => response,
                                Err(ProxyError::Timeout) => status(StatusCode::GATEWAY_TIMEOUT),
                                Err(_) => status(StatusCode::BAD_GATEWAY),
                            };
                            Ok::<_, Infallible>(answer)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    /// Sends one request on a fresh HTTP/1.1 connection; a minute at most.
    async fn send(addr: SocketAddr, req: Request<Body>) -> Response<Incoming> {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
            .await
            .expect("a response within a minute")
            .unwrap()
    }

    fn get(path: &str) -> http::request::Builder {
        Request::get(path).header(header::HOST, PUBLIC_HOST)
    }

    fn browser_context() -> ForwardContext {
        ForwardContext {
            client_ip: "203.0.113.7".parse().unwrap(),
            proto: "https",
            host: Some(HeaderValue::from_static(PUBLIC_HOST)),
            trust_forwarded: false,
        }
    }

    async fn text(response: Response<Incoming>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers.get(name).map(|value| value.to_str().unwrap())
    }

    fn temp_ca_file(test: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "trousseau-proxy-ca-{}-{test}.pem",
            std::process::id()
        ));
        std::fs::write(&path, test_certs::CA).unwrap();
        path
    }

    // ----- headers -----

    #[tokio::test]
    async fn hop_by_hop_headers_never_cross_the_proxy() {
        let app = spawn_app(false, |req: Request<Incoming>| async move {
            // Echo which request headers arrived, and add hop-by-hop headers of our own.
            let mut names: Vec<&str> = req.headers().keys().map(HeaderName::as_str).collect();
            names.sort_unstable();
            let te = header_str(req.headers(), "te").unwrap_or("-").to_owned();
            Response::builder()
                .header(header::CONNECTION, "x-app-hop")
                .header("x-app-hop", "1")
                .header("keep-alive", "timeout=5")
                .header("proxy-authenticate", "Basic realm=app")
                .header("upgrade", "h2c")
                .header("x-app-end-to-end", "kept")
                .body(body::full(format!("{}\nte={te}", names.join(","))))
                .unwrap()
        })
        .await;
        let proxy = spawn_proxy(upstream(&format!("http://{}", app.addr)), false).await;

        let response = send(
            proxy,
            get("/")
                .header(
                    header::CONNECTION,
                    "keep-alive, X-Client-Hop, x-trousseau-sub",
                )
                .header("x-client-hop", "secret")
                .header("keep-alive", "timeout=5")
                .header("proxy-connection", "keep-alive")
                .header("proxy-authorization", "Basic c2VjcmV0")
                .header("te", "trailers, deflate;q=0.5")
                .header("trailer", "x-checksum")
                .header("upgrade", "h2c")
                .header("x-trousseau-sub", "user-1")
                .header("x-end-to-end", "kept")
                .body(body::empty())
                .unwrap(),
        )
        .await;

        let headers = response.headers().clone();
        for hop in ["x-app-hop", "keep-alive", "proxy-authenticate", "upgrade"] {
            assert!(
                !headers.contains_key(hop),
                "response kept {hop}: {headers:?}"
            );
        }
        assert_ne!(header_str(&headers, "connection"), Some("x-app-hop"));
        assert_eq!(header_str(&headers, "x-app-end-to-end"), Some("kept"));

        let body = text(response).await;
        let (names, te) = body.split_once('\n').unwrap();
        let names: Vec<&str> = names.split(',').collect();
        for hop in [
            "connection",
            "x-client-hop",
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
            "trailer",
            "upgrade",
            "transfer-encoding",
        ] {
            assert!(!names.contains(&hop), "the app received {hop}: {names:?}");
        }
        assert!(names.contains(&"x-end-to-end"), "{names:?}");
        assert!(
            names.contains(&"x-trousseau-sub"),
            "Connection stripped an identity header: {names:?}"
        );
        assert_eq!(te, "te=trailers");
    }

    #[tokio::test]
    async fn the_app_learns_who_connected_and_forged_forwarding_headers_are_replaced() {
        let (app, mut heads) = spawn_recording_app(false).await;
        let proxy = spawn_proxy(upstream(&format!("http://{}", app.addr)), false).await;

        let response = send(
            proxy,
            get("/")
                .header("x-forwarded-for", "6.6.6.6")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "evil.example")
                .header("forwarded", "for=6.6.6.6")
                .header("x-real-ip", "6.6.6.6")
                .body(body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);

        let seen = heads.recv().await.unwrap();
        assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            header_str(&seen.headers, "x-forwarded-for"),
            Some("127.0.0.1")
        );
        assert_eq!(header_str(&seen.headers, "x-forwarded-proto"), Some("http"));
        assert_eq!(
            header_str(&seen.headers, "x-forwarded-host"),
            Some(PUBLIC_HOST)
        );
        assert!(!seen.headers.contains_key("forwarded"));
        assert!(!seen.headers.contains_key("x-real-ip"));
    }

    #[tokio::test]
    async fn a_trusted_proxy_chain_is_extended() {
        let (app, mut heads) = spawn_recording_app(false).await;
        let proxy = spawn_proxy(upstream(&format!("http://{}", app.addr)), true).await;

        send(
            proxy,
            get("/")
                .header("x-forwarded-for", "198.51.100.1")
                .header("x-forwarded-for", "10.0.0.2 ")
                .header("forwarded", "for=198.51.100.1")
                .body(body::empty())
                .unwrap(),
        )
        .await;

        let seen = heads.recv().await.unwrap();
        assert_eq!(
            header_str(&seen.headers, "x-forwarded-for"),
            Some("198.51.100.1, 10.0.0.2, 127.0.0.1")
        );
        assert_eq!(
            header_str(&seen.headers, "forwarded"),
            Some("for=198.51.100.1")
        );
    }

    #[tokio::test]
    async fn ipv4_mapped_client_addresses_are_forwarded_as_ipv4() {
        let mut headers = HeaderMap::new();
        let ctx = ForwardContext {
            client_ip: "::ffff:192.0.2.9".parse().unwrap(),
            ..browser_context()
        };
        set_forwarded(&mut headers, &ctx);
        assert_eq!(header_str(&headers, "x-forwarded-for"), Some("192.0.2.9"));
        assert_eq!(header_str(&headers, "x-forwarded-proto"), Some("https"));
    }

    #[tokio::test]
    async fn the_browser_host_is_preserved_by_default() {
        let (app, mut heads) = spawn_recording_app(false).await;
        let proxy = spawn_proxy(upstream(&format!("http://{}", app.addr)), false).await;

        send(proxy, get("/").body(body::empty()).unwrap()).await;

        let seen = heads.recv().await.unwrap();
        assert_eq!(header_str(&seen.headers, "host"), Some(PUBLIC_HOST));
    }

    #[tokio::test]
    async fn the_app_can_get_its_own_authority_as_host() {
        let (app, mut heads) = spawn_recording_app(false).await;
        let mut settings = settings(&format!("http://{}", app.addr));
        settings.preserve_host = false;
        let proxy = spawn_proxy(Upstream::new(settings).unwrap(), false).await;

        send(proxy, get("/").body(body::empty()).unwrap()).await;

        let seen = heads.recv().await.unwrap();
        assert_eq!(seen.headers.get_all("host").iter().count(), 1);
        assert_eq!(
            header_str(&seen.headers, "host"),
            Some(app.addr.to_string().as_str())
        );
        assert_eq!(
            header_str(&seen.headers, "x-forwarded-host"),
            Some(PUBLIC_HOST)
        );
    }

    #[tokio::test]
    async fn the_app_path_prefix_is_joined_without_double_slashes() {
        let (app, mut heads) = spawn_recording_app(false).await;
        let cases = [
            ("", "/x/y?z=1&w", "/x/y?z=1&w"),
            ("/", "/", "/"),
            ("/app", "/x?q", "/app/x?q"),
            ("/app/", "/x?q", "/app/x?q"),
            ("/app/", "/", "/app/"),
            ("/a/b", "/c%20d/", "/a/b/c%20d/"),
        ];
        for (prefix, path, expected) in cases {
            let upstream = upstream(&format!("http://{}{prefix}", app.addr));
            let response = upstream
                .forward(get(path).body(body::empty()).unwrap(), &browser_context())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let seen = heads.recv().await.unwrap();
            assert_eq!(seen.uri, expected, "prefix {prefix:?} + {path:?}");
        }
    }

    #[test]
    fn unusable_upstream_urls_are_refused() {
        for url in [
            "ftp://127.0.0.1/",
            "http://user:pw@127.0.0.1/",
            "http://127.0.0.1/?a=b",
            "http://127.0.0.1/#top",
        ] {
            let err = Upstream::new(settings(url)).unwrap_err();
            assert!(
                matches!(err, ProxyError::InvalidUpstream(_)),
                "{url}: {err:?}"
            );
            assert!(!err.to_string().contains("pw"), "{err}");
        }
    }

    #[test]
    fn hop_by_hop_names_are_exactly_the_listed_ones() {
        for name in HOP_BY_HOP.iter().chain([&header::CONNECTION, &header::UPGRADE]) {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in ["host", "tes", "trailers", "upgrades", "x-trousseau-sub", "keep-alivex", "proxy-authorizatio", "cookie"] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn connection_cannot_strip_what_the_proxy_vouches_for() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("X-Trousseau-Jwt-Assertion, close"),
        );
        headers.insert(
            "x-trousseau-jwt-assertion",
            HeaderValue::from_static("eyJ..."),
        );
        remove_hop_by_hop(&mut headers, false);
        assert!(headers.contains_key("x-trousseau-jwt-assertion"));
        assert!(!headers.contains_key(header::CONNECTION));
    }

    #[test]
    fn an_upgrade_keeps_exactly_upgrade_and_connection_upgrade() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade, x-hop"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        assert!(wants_upgrade(&headers));
        remove_hop_by_hop(&mut headers, true);
        assert_eq!(header_str(&headers, "connection"), Some("upgrade"));
        assert_eq!(header_str(&headers, "upgrade"), Some("websocket"));
        assert!(!headers.contains_key("x-hop"));
    }

    // ----- streaming -----

    #[tokio::test]
    async fn responses_stream_chunk_by_chunk() {
        let (go, wait) = oneshot::channel::<()>();
        let wait = Arc::new(tokio::sync::Mutex::new(Some(wait)));
        let app = spawn_app(false, move |_req: Request<Incoming>| {
            let wait = Arc::clone(&wait);
            async move {
                let (chunks, receiver) = mpsc::channel::<Bytes>(1);
                chunks
                    .send(Bytes::from_static(b"data: first\n\n"))
                    .await
                    .unwrap();
                tokio::spawn(async move {
                    // The second chunk exists only once the test has read the first through the proxy.
                    let wait = wait.lock().await.take().unwrap();
                    wait.await.unwrap();
                    chunks
                        .send(Bytes::from_static(b"data: second\n\n"))
                        .await
                        .unwrap();
                });
                let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
                    let chunk = receiver.recv().await?;
                    Some((Ok::<_, BoxError>(Frame::data(chunk)), receiver))
                });
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(StreamBody::new(stream).boxed_unsync())
                    .unwrap()
            }
        })
        .await;
        let proxy = spawn_proxy(upstream(&format!("http://{}", app.addr)), false).await;

        let head = send(proxy, get("/events").body(body::empty()).unwrap());
        let mut response = tokio::time::timeout(Duration::from_secs(5), head)
            .await
            .expect("the response head arrives before the body ends");
        assert_eq!(
            next_chunk(response.body_mut()).await.unwrap(),
            "data: first\n\n"
        );
        go.send(()).unwrap();
        assert_eq!(
            next_chunk(response.body_mut()).await.unwrap(),
            "data: second\n\n"
        );
        assert_eq!(next_chunk(response.body_mut()).await, None);
    }

    async fn next_chunk(body: &mut Incoming) -> Option<Bytes> {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await;
        frame
            .expect("a chunk in time")
            .map(|frame| frame.unwrap().into_data().unwrap())
    }

    #[tokio::test]
    async fn a_256_mib_upload_streams_through() {
        const CHUNK: usize = 64 * 1024;
        const TOTAL: usize = 256 * MIB;
        let app = spawn_counting_app().await;
        let proxy = spawn_proxy(upstream(&format!("http://{}", app.addr)), false).await;

        let chunk = Bytes::from(vec![b'z'; CHUNK]);
        let chunks = futures_util::stream::iter(0..TOTAL / CHUNK)
            .map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone())));
        let request = Request::post("/upload")
            .header(header::HOST, PUBLIC_HOST)
            .header(header::CONTENT_LENGTH, TOTAL)
            .body(StreamBody::new(chunks).boxed_unsync())
            .unwrap();

        let response = send(proxy, request).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, TOTAL.to_string());
    }

    #[tokio::test]
    async fn a_slow_upload_is_not_cut_by_the_response_timeout() {
        let app = spawn_counting_app().await;
        let mut settings = settings(&format!("http://{}", app.addr));
        settings.response_timeout = Duration::from_millis(300);
        let upstream = Upstream::new(settings).unwrap();

        // Eight chunks 100 ms apart: the upload outlasts the timeout, but never pauses that long.
        let chunks = futures_util::stream::unfold(0, |sent| async move {
            if sent == 8 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"0123456789"))),
                sent + 1,
            ))
        });
        let request = Request::post("/upload")
            .body(StreamBody::new(chunks).boxed_unsync())
            .unwrap();

        let response = upstream.forward(request, &browser_context()).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "80");
    }

    // ----- upgrades -----

    async fn websocket_echo_through(proxy: SocketAddr) {
        let stream = TcpStream::connect(proxy).await.unwrap();
        let url = format!("ws://{proxy}/socket");
        let (mut ws, response) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        for text in ["bonjour", "hello"] {
            ws.send(tungstenite::Message::text(text)).await.unwrap();
            let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .unwrap();
            assert_eq!(echo.unwrap().unwrap().into_text().unwrap(), text);
        }
        ws.send(tungstenite::Message::binary(vec![0u8, 1, 2]))
            .await
            .unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap();
        assert_eq!(echo.unwrap().unwrap().into_data(), vec![0u8, 1, 2]);
        ws.close(None).await.unwrap();
    }

    #[tokio::test]
    async fn websockets_work_through_the_proxy() {
        let app = spawn_websocket_app(false).await;
        let proxy = spawn_proxy(upstream(&format!("http://{}", app.addr)), false).await;
        websocket_echo_through(proxy).await;
    }

    #[tokio::test]
    async fn websockets_work_with_an_https_app_that_offers_http2() {
        let app = spawn_websocket_app(true).await;
        let mut settings = settings(&format!("https://127.0.0.1:{}", app.addr.port()));
        settings.preserve_host = false;
        settings.ca_file = Some(temp_ca_file("websocket"));
        let proxy = spawn_proxy(Upstream::new(settings).unwrap(), false).await;
        websocket_echo_through(proxy).await;
    }

    // ----- HTTPS and HTTP/2 -----

    #[tokio::test]
    async fn an_https_app_that_offers_http2_gets_http2_with_its_own_authority() {
        let (app, mut heads) = spawn_recording_app(true).await;
        let authority = format!("127.0.0.1:{}", app.addr.port());
        let mut settings = settings(&format!("https://{authority}"));
        settings.preserve_host = false;
        settings.ca_file = Some(temp_ca_file("h2"));
        let upstream = Upstream::new(settings).unwrap();

        let request = get("/h2?x=1")
            .header(header::CONNECTION, "keep-alive")
            .header("te", "trailers")
            .body(body::empty())
            .unwrap();
        let response = upstream.forward(request, &browser_context()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        let seen = heads.recv().await.unwrap();
        assert_eq!(seen.version, Version::HTTP_2);
        assert_eq!(
            seen.uri.authority().map(Authority::as_str),
            Some(authority.as_str())
        );
        assert_eq!(
            seen.uri.path_and_query().map(PathAndQuery::as_str),
            Some("/h2?x=1")
        );
        assert!(!seen.headers.contains_key("host"), "{:?}", seen.headers);
        assert_eq!(
            header_str(&seen.headers, "x-forwarded-host"),
            Some(PUBLIC_HOST)
        );
    }

    #[tokio::test]
    async fn an_https_app_keeps_the_browser_host_over_http1() {
        let (app, mut heads) = spawn_recording_app(true).await;
        let mut settings = settings(&format!("https://localhost:{}", app.addr.port()));
        settings.ca_file = Some(temp_ca_file("h1"));
        let upstream = Upstream::new(settings).unwrap();

        for _ in 0..2 {
            let response = upstream
                .forward(get("/").body(body::empty()).unwrap(), &browser_context())
                .await
                .unwrap();
            assert_eq!(text_of(response).await, "hello");
            let seen = heads.recv().await.unwrap();
            assert_eq!(seen.version, Version::HTTP_11);
            assert_eq!(header_str(&seen.headers, "host"), Some(PUBLIC_HOST));
        }
    }

    #[tokio::test]
    async fn an_untrusted_app_certificate_makes_the_app_unreachable() {
        let (app, _heads) = spawn_recording_app(true).await;
        let upstream = upstream(&format!("https://127.0.0.1:{}", app.addr.port()));

        let err = upstream
            .forward(get("/").body(body::empty()).unwrap(), &browser_context())
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Unreachable(_)), "{err:?}");
        assert!(err.to_string().contains("certificate"), "{err}");
    }

    // ----- failures and pooling -----

    #[tokio::test]
    async fn a_stopped_app_is_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let upstream = upstream(&format!("http://{addr}"));

        let request = get("/")
            .header(header::COOKIE, "trousseau_session=secret-cookie")
            .body(body::empty())
            .unwrap();
        let err = upstream
            .forward(request, &browser_context())
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Unreachable(_)), "{err:?}");
        assert!(!err.to_string().contains("secret-cookie"), "{err}");
    }

    #[tokio::test]
    async fn an_app_slow_to_answer_times_out() {
        let app = spawn_app(false, |_req: Request<Incoming>| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Response::new(body::empty())
        })
        .await;
        let mut settings = settings(&format!("http://{}", app.addr));
        settings.response_timeout = Duration::from_millis(200);
        let upstream = Upstream::new(settings).unwrap();

        let started = std::time::Instant::now();
        let err = upstream
            .forward(get("/").body(body::empty()).unwrap(), &browser_context())
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Timeout), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_slow_body_is_not_a_timeout() {
        // The timeout covers the response head only: an SSE stream may stay quiet for long.
        let app = spawn_app(false, |_req: Request<Incoming>| async {
            let stream = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"late")))
            });
            Response::new(StreamBody::new(stream).boxed_unsync())
        })
        .await;
        let mut settings = settings(&format!("http://{}", app.addr));
        settings.response_timeout = Duration::from_millis(200);
        let upstream = Upstream::new(settings).unwrap();

        let response = upstream
            .forward(get("/").body(body::empty()).unwrap(), &browser_context())
            .await
            .unwrap();
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "late"
        );
    }

    #[tokio::test]
    async fn keep_alive_reuses_the_app_connection() {
        let (app, mut heads) = spawn_recording_app(false).await;
        let upstream = upstream(&format!("http://{}", app.addr));
        for _ in 0..3 {
            let response = upstream
                .forward(get("/").body(body::empty()).unwrap(), &browser_context())
                .await
                .unwrap();
            assert_eq!(text_of(response).await, "hello");
            heads.recv().await.unwrap();
            // Let the finished connection go back to the pool.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(app.connections.load(Ordering::SeqCst), 1);
    }

    /// An app speaking raw HTTP/1.1 that answers the first request head of each connection with
    /// `hello` (keep-alive) at once, whatever body follows, then keeps reading what comes — until
    /// `close_after` the answer, when given (an app's keep-alive timeout).
    async fn spawn_one_answer_app(close_after: Option<Duration>) -> App {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = vec![0u8; 65536];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\nhello";
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let drain = async { while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {} };
                    match close_after {
                        Some(after) => {
                            let _ = tokio::time::timeout(after, drain).await;
                        }
                        None => drain.await,
                    }
                });
            }
        });
        App { addr, connections }
    }

    async fn get_text(upstream: &Upstream) -> String {
        let response = upstream
            .forward(get("/").body(body::empty()).unwrap(), &browser_context())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        text_of(response).await
    }

    #[tokio::test]
    async fn a_connection_the_app_closed_while_idle_costs_no_request() {
        let app = spawn_one_answer_app(Some(Duration::from_millis(30))).await;
        let upstream = upstream(&format!("http://{}", app.addr));
        for _ in 0..3 {
            assert_eq!(get_text(&upstream).await, "hello");
            // The app closes the connection meanwhile; the next request must not see it.
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
        assert_eq!(app.connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn idle_connections_older_than_the_idle_timeout_are_not_reused() {
        let (app, _heads) = spawn_recording_app(false).await;
        let mut settings = settings(&format!("http://{}", app.addr));
        settings.pool_idle_timeout = Duration::from_millis(50);
        let upstream = Upstream::new(settings).unwrap();
        assert_eq!(get_text(&upstream).await, "hello");
        assert_eq!(get_text(&upstream).await, "hello");
        assert_eq!(app.connections.load(Ordering::SeqCst), 1, "reused while fresh");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(get_text(&upstream).await, "hello");
        assert_eq!(app.connections.load(Ordering::SeqCst), 2, "a new connection after the idle timeout");
    }

    #[tokio::test]
    async fn a_body_left_unread_closes_its_connection_and_the_next_request_is_served() {
        const SIZE: usize = 4 * 1024 * 1024;
        let app = spawn_app(false, |req: Request<Incoming>| async move {
            if req.uri().path() == "/big" {
                Response::new(body::full(vec![b'x'; SIZE]))
            } else {
                Response::new(body::full("small"))
            }
        })
        .await;
        let upstream = upstream(&format!("http://{}", app.addr));

        let response = upstream
            .forward(get("/big").body(body::empty()).unwrap(), &browser_context())
            .await
            .unwrap();
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.data_ref().is_some_and(|d| !d.is_empty() && d.len() < SIZE));
        drop(body); // the browser went away mid-body

        for _ in 0..2 {
            let response = upstream
                .forward(get("/small").body(body::empty()).unwrap(), &browser_context())
                .await
                .unwrap();
            assert_eq!(text_of(response).await, "small");
        }
        assert_eq!(app.connections.load(Ordering::SeqCst), 2, "the half-read connection is not reused; the next one is");
    }

    #[tokio::test]
    async fn a_connection_still_uploading_is_not_handed_to_the_next_request() {
        let app = spawn_one_answer_app(None).await;
        let mut settings = settings(&format!("http://{}", app.addr));
        settings.response_timeout = Duration::from_secs(2);
        let upstream = Upstream::new(settings).unwrap();

        // The browser sends a first chunk of a large upload, then nothing yet: the app has answered.
        let (chunks, mut pending) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        chunks.send(Ok(Frame::data(Bytes::from_static(b"abc")))).await.unwrap();
        let upload = http_body_util::StreamBody::new(futures_util::stream::poll_fn(move |cx| pending.poll_recv(cx)));
        let request = Request::post("/upload").header(header::CONTENT_LENGTH, "1000000").body(upload.boxed_unsync()).unwrap();
        let response = upstream.forward(request, &browser_context()).await.unwrap();
        assert_eq!(text_of(response).await, "hello");

        // The next request must not wait for that upload to finish.
        let response = upstream.forward(get("/next").body(body::empty()).unwrap(), &browser_context()).await.unwrap();
        assert_eq!(text_of(response).await, "hello");
        assert_eq!(app.connections.load(Ordering::SeqCst), 2, "the uploading connection was not reused");
        drop(chunks);
    }

    #[tokio::test]
    async fn concurrent_requests_get_connections_of_their_own_and_return_them() {
        let app = spawn_app(false, |_req: Request<Incoming>| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Response::new(body::full("slow"))
        })
        .await;
        let upstream = upstream(&format!("http://{}", app.addr));
        for _ in 0..2 {
            let answers = futures_util::future::join_all((0..8).map(|_| {
                let upstream = upstream.clone();
                async move {
                    let response = upstream
                        .forward(get("/").body(body::empty()).unwrap(), &browser_context())
                        .await
                        .unwrap();
                    text_of(response).await
                }
            }))
            .await;
            assert!(answers.iter().all(|a| a == "slow"), "{answers:?}");
        }
        assert_eq!(app.connections.load(Ordering::SeqCst), 8, "eight at once, then the same eight again");
    }

    async fn text_of(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}
