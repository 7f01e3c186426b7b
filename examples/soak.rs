//! Endurance ("soak") driver for `bench/soak.sh`: a compressed day of traffic through the real
//! `trousseau-proxy` binary, ending in a verdict on errors, refresh-token reuse, revocations, and
//! whether the proxy's memory and file descriptors stay flat.
//!
//! ```text
//! soak --proxy-bin target/release/trousseau-proxy --store cookie [--minutes 30] [--users 300]
//! soak --proxy-bin … --store redis --redis-url-file FILE   # FILE holds redis://:PASSWORD@127.0.0.1:PORT/0
//! ```
//! Other flags (defaults): `--outage-seconds 60`, `--report-seconds 30`, `--churn-seconds 120`
//! (how often, on average, one browser signs out, switches organization or is logged out by the
//! IdP), `--access-token-ttl 10s`, `--refresh-grace 5m`, `--sse-gap 3` (seconds an event stream
//! may stay silent), `--work-dir DIR` (the proxy's configuration, secrets and log; default a new
//! directory under /tmp). Normally run through `bench/soak.sh`, which builds release, starts Redis
//! and runs this twice (cookie store, then Redis).
//!
//! Everything stays on 127.0.0.1 and stops by itself:
//! - in this process, the dev IdP (`DevIdp`: access tokens of 10 s, refresh tokens rotated on every
//!   use with reuse detection, back-channel logout to the proxy), and the app: every path answers
//!   a small JSON saying who the proxy said the user is, `/ws` echoes websocket messages, `/sse`
//!   sends one event a second;
//! - the proxy binary as a child, configured by a YAML file written here (its secrets in files
//!   beside it, never on a command line), `/metrics` on a second port;
//! - `--users` virtual browsers grouped into people: each person has one to three browsers that
//!   share the IdP's SSO cookie (one Trousseau session, one `sid`) but each have their own proxy
//!   session. Each browser requests a page every 1–2 s; one in five holds a websocket, one in five
//!   an event stream. Now and then one signs out (its siblings on the same `sid` must be refused
//!   at their next request, and so must a copy of its own cookie), switches organization, or has
//!   every session of its person ended by a back-channel logout naming the `sub` (what Trousseau
//!   sends when an administrator ends a user's sessions); then it signs in again.
//! - Halfway, the IdP is down for `--outage-seconds`: refreshes fail, and the README promises that
//!   sessions keep working for `session.refresh_grace` past expiry and that an outage signs no one
//!   out. So during it a 401 or a 503 to a signed-in browser is unexpected (a 503 only becomes
//!   expected past the grace), while a sign-in, or the IdP's half of a sign-out, is expected to fail.
//!
//! Every `--report-seconds` one table row: request rate, unexpected and expected errors, the proxy's
//! refreshes (from `/metrics`), refresh-token reuse seen by the IdP, browsers signed in and
//! streams held, the proxy's connections and requests in flight, its RSS and open descriptors.
//! The verdict (last line, `VERDICT store=… PASS|FAIL`, exit status 1 on FAIL): no unexpected
//! error, no refresh-token reuse, every request of a revoked session refused, and RSS and
//! descriptors flat within ±10% over the last two thirds (a least-squares line through samples
//! taken every 5 s).
//!
//! Only for loopback test runs against the dev IdP. It never prints a token, a cookie or a secret.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};

use trousseau_proxy::config::HumanDuration;
use trousseau_proxy::devidp::{default_users, DevIdp, DevIdpConfig, DevUser, LocalDevIdp};

#[path = "support/dev_idp_form.rs"]
mod dev_idp_form;
use dev_idp_form::find_form;

type Http = Client<HttpConnector, Full<Bytes>>;
type AppBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// The client registered at the IdP for this run.
const CLIENT_ID: &str = "soak-proxy";
/// Paths a browser visits; the app answers them all alike.
const PATHS: [&str; 6] = ["/", "/dashboard", "/api/items", "/api/items/42", "/reports/monthly", "/settings/profile"];
/// How often RSS and descriptors are sampled for the flatness fit.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// One HTTP exchange, connection included, may take this long before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Tolerated drift of RSS and descriptors after warm-up.
const FLAT_LIMIT: f64 = 0.10;
/// How long the proxy may take to let go of every connection once the browsers are gone: past
/// the IdP's pool idle timeout (30 s), short of the proxy's `limits.idle_timeout` (60 s).
const HELD_WAIT: Duration = Duration::from_secs(45);

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
    proxy_bin: PathBuf,
    store: String,
    redis_url_file: Option<PathBuf>,
    minutes: f64,
    users: usize,
    outage_seconds: u64,
    report_seconds: u64,
    churn_seconds: f64,
    access_token_ttl: Duration,
    refresh_grace: Duration,
    sse_gap: Duration,
    work_dir: Option<PathBuf>,
}

const USAGE: &str = "usage: soak --proxy-bin PATH --store cookie|memory|redis [--redis-url-file FILE] [--minutes 30] \
[--users 300] [--outage-seconds 60] [--report-seconds 30] [--churn-seconds 120] [--access-token-ttl 10s] \
[--refresh-grace 5m] [--sse-gap 3] [--work-dir DIR]";

fn options() -> Result<Options, String> {
    let mut o = Options {
        proxy_bin: PathBuf::from("target/release/trousseau-proxy"),
        store: "cookie".into(),
        redis_url_file: None,
        minutes: 30.0,
        users: 300,
        outage_seconds: 60,
        report_seconds: 30,
        churn_seconds: 120.0,
        access_token_ttl: Duration::from_secs(10),
        refresh_grace: Duration::from_secs(300),
        sse_gap: Duration::from_secs(3),
        work_dir: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |what: &str| value.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0).ok_or_else(|| format!("{what}: a number, got {value}"));
        let duration = |what: &str| HumanDuration::parse(&value).map(|d| d.0).map_err(|e| format!("{what}: {e}"));
        match flag.as_str() {
            "--proxy-bin" => o.proxy_bin = PathBuf::from(&value),
            "--store" => o.store = value.clone(),
            "--redis-url-file" => o.redis_url_file = Some(PathBuf::from(&value)),
            "--minutes" => o.minutes = number("--minutes")?,
            "--users" => o.users = number("--users")? as usize,
            "--outage-seconds" => o.outage_seconds = number("--outage-seconds")? as u64,
            "--report-seconds" => o.report_seconds = (number("--report-seconds")? as u64).max(1),
            "--churn-seconds" => o.churn_seconds = number("--churn-seconds")?.max(1.0),
            "--access-token-ttl" => o.access_token_ttl = duration("--access-token-ttl")?,
            "--refresh-grace" => o.refresh_grace = duration("--refresh-grace")?,
            "--sse-gap" => o.sse_gap = Duration::from_secs_f64(number("--sse-gap")?.max(1.5)),
            "--work-dir" => o.work_dir = Some(PathBuf::from(&value)),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if !matches!(o.store.as_str(), "cookie" | "memory" | "redis") {
        return Err(format!("--store: cookie, memory or redis, got {}", o.store));
    }
    if o.store == "redis" && o.redis_url_file.is_none() {
        return Err("--store redis needs --redis-url-file".into());
    }
    if o.users == 0 || o.minutes <= 0.0 {
        return Err("--users and --minutes must be positive".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A small PRNG (splitmix64): jitter and choices need no cryptographic quality, and the examples
/// may only use crates the project already depends on.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Rng {
        let mut seed = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut seed);
        Rng(u64::from_le_bytes(seed) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, low: f64, high: f64) -> Duration {
        Duration::from_secs_f64(low + (high - low) * self.unit())
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// Only the path of a URL: queries carry codes and state, which are never printed.
fn path_of(url: &str) -> String {
    url::Url::parse(url).map(|u| u.path().to_string()).unwrap_or_else(|_| url.split('?').next().unwrap_or("").to_string())
}

use trousseau_proxy::util::error_chain;

/// The `error` field of a JSON error body, if any (the proxy's answers carry no secrets there).
fn error_field(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(|e| format!(" ({e})")))
        .unwrap_or_default()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let _ = aws_lc_rs::rand::fill(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a file only its owner can read: secrets for the proxy.
fn write_private(path: &Path, content: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(content.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// A free loopback port: bound, read, released. The proxy binds it a moment later; another
/// process taking it in between would only make the start fail loudly.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Cookies and one HTTP exchange

type Jar = BTreeMap<String, String>;

fn cookie_header(jar: &Jar) -> String {
    jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
}

/// Applies `Set-Cookie` headers the way a browser does (a past expiry or `Max-Age=0` removes).
fn store_cookies(jar: &mut Jar, headers: &HeaderMap) {
    for value in headers.get_all(header::SET_COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        let Ok(c) = cookie::Cookie::parse(text) else { continue };
        let removed = c.max_age().is_some_and(|a| a.is_zero() || a.is_negative())
            || c.expires_datetime().is_some_and(|t| t < cookie::time::OffsetDateTime::now_utc());
        if removed {
            jar.remove(c.name());
        } else {
            jar.insert(c.name().to_string(), c.value().to_string());
        }
    }
}

/// One answer, fully read.
struct Answer {
    status: StatusCode,
    location: String,
    body: Bytes,
}

const NAVIGATE: [(&str, &str); 2] = [("accept", "text/html,application/xhtml+xml"), ("sec-fetch-mode", "navigate")];
const API: [(&str, &str); 1] = [("accept", "application/json")];

async fn send(http: &Http, method: Method, url: &str, headers: &[(&str, &str)], body: String, jar: &mut Jar) -> Result<Answer, String> {
    let what = format!("{method} {}", path_of(url));
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if !jar.is_empty() {
        builder = builder.header(header::COOKIE, cookie_header(jar));
    }
    let request = builder.body(Full::new(Bytes::from(body))).map_err(|e| format!("{what}: {e}"))?;
    let exchange = async {
        let response = http.request(request).await.map_err(|e| format!("{what}: {}", error_chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| format!("{what}: body: {}", error_chain(&e)))?.to_bytes();
        Ok::<_, String>((parts, body))
    };
    let (parts, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| format!("{what}: timed out"))??;
    store_cookies(jar, &parts.headers);
    let location = parts.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    Ok(Answer { status: parts.status, location, body })
}

fn new_client() -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // Idle connections are dropped well before the proxy's own idle_timeout (60 s) would close
    // them, so a request never races the proxy's close on a reused connection.
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(20))
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(2)
        .build(connector)
}


// ---------------------------------------------------------------------------------------------
// What happened: counters, and the classification into expected and unexpected

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    served: AtomicU64,
    sign_ins: AtomicU64,
    sign_outs: AtomicU64,
    sub_logouts: AtomicU64,
    siblings_revoked: AtomicU64,
    org_switches: AtomicU64,
    ws_opened: AtomicU64,
    ws_echoes: AtomicU64,
    sse_opened: AtomicU64,
    sse_events: AtomicU64,
    /// Requests of a revoked session (or a copy of a signed-out cookie) that were refused…
    revoked_refused: AtomicU64,
    /// …and that were served: each one fails the verdict.
    revoked_served: AtomicU64,
    signed_in: AtomicI64,
    ws_open: AtomicI64,
    sse_open: AtomicI64,
    expected: Mutex<BTreeMap<&'static str, u64>>,
    unexpected: Mutex<BTreeMap<&'static str, u64>>,
    /// Observations that are neither errors nor promises.
    notes: Mutex<BTreeMap<&'static str, u64>>,
    /// The first unexpected errors in detail, for the reports.
    details: Mutex<Vec<String>>,
}

impl Tally {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn expected(&self, kind: &'static str) {
        *lock(&self.expected).entry(kind).or_default() += 1;
    }

    fn note(&self, kind: &'static str) {
        *lock(&self.notes).entry(kind).or_default() += 1;
    }

    fn unexpected(&self, at: f64, kind: &'static str, detail: String) {
        *lock(&self.unexpected).entry(kind).or_default() += 1;
        let mut details = lock(&self.details);
        if details.len() < 200 {
            details.push(format!("t={at:.1}s {kind}: {detail}"));
        }
    }

    fn total(map: &Mutex<BTreeMap<&'static str, u64>>) -> u64 {
        lock(map).values().sum()
    }

    fn describe(map: &Mutex<BTreeMap<&'static str, u64>>) -> String {
        let map = lock(map);
        if map.is_empty() {
            return "none".into();
        }
        map.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    }
}

/// When the IdP was down (seconds since the start).
#[derive(Default)]
struct Outage {
    window: Mutex<(Option<f64>, Option<f64>)>,
}

impl Outage {
    /// Whether the IdP was down at some moment of [t0, t1] (with a second of slack after it came
    /// back, for calls the proxy made just before).
    fn overlaps(&self, t0: f64, t1: f64) -> bool {
        match *lock(&self.window) {
            (Some(start), end) => t1 >= start && end.is_none_or(|end| t0 <= end + 1.0),
            _ => false,
        }
    }

    fn started(&self) -> Option<f64> {
        lock(&self.window).0
    }
}

/// Everything the tasks share.
struct Soak {
    opts: Options,
    start: Instant,
    /// The proxy: `http://127.0.0.1:PORT`.
    origin: String,
    idp_origin: String,
    idp: Arc<DevIdp>,
    outage: Outage,
    tally: Tally,
    stop: watch::Sender<bool>,
}

impl Soak {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `d` unless the run stops first; false when it stops.
    async fn pause(&self, d: Duration) -> bool {
        let mut stop = self.stop.subscribe();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopping(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    fn unexpected(&self, kind: &'static str, detail: String) {
        self.tally.unexpected(self.now(), kind, detail);
    }

    /// A 503 to a signed-in browser while the IdP is down is a broken promise until the session
    /// is `refresh_grace` past its expiry; expiry comes at most one access-token lifetime after
    /// the outage began, so only answers later than start + grace may be 503s.
    fn judge_503(&self, t0: f64, t1: f64, what: &str) {
        match self.outage.started() {
            Some(start) if self.outage.overlaps(t0, t1) && t0 >= start + self.opts.refresh_grace.as_secs_f64() => {
                self.tally.expected("503_past_refresh_grace")
            }
            Some(_) if self.outage.overlaps(t0, t1) => self.unexpected("503_within_refresh_grace", format!("{what}: 503 while Trousseau is down, within session.refresh_grace")),
            _ => self.unexpected("5xx", format!("{what}: 503")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The app behind the proxy

#[derive(Default)]
struct AppCounters {
    connections: AtomicI64,
    websockets: AtomicI64,
    event_streams: AtomicI64,
}

/// Decrements a gauge when dropped: a connection, websocket or event stream that ends, however
/// it ends.
struct Held(Arc<AppCounters>, fn(&AppCounters) -> &AtomicI64);

impl Held {
    fn new(counters: Arc<AppCounters>, gauge: fn(&AppCounters) -> &AtomicI64) -> Held {
        gauge(&counters).fetch_add(1, Ordering::Relaxed);
        Held(counters, gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

async fn start_app(counters: Arc<AppCounters>) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("app: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let counters = counters.clone();
            tokio::spawn(async move {
                let _held = Held::new(counters.clone(), |c| &c.connections);
                let service = hyper::service::service_fn(move |req| {
                    let counters = counters.clone();
                    async move { Ok::<_, Infallible>(app(req, counters)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn app(mut req: Request<Incoming>, counters: Arc<AppCounters>) -> Response<AppBody> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/ws" => {
            let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
                return text(StatusCode::BAD_REQUEST, "expected a websocket");
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let _held = Held::new(counters, |c| &c.websockets);
                if let Ok(upgraded) = on_upgrade.await {
                    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), tungstenite::protocol::Role::Server, None).await;
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_close() || ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let mut r = text(StatusCode::SWITCHING_PROTOCOLS, "");
            r.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("upgrade"));
            r.headers_mut().insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
            if let Ok(v) = http::HeaderValue::from_str(&accept) {
                r.headers_mut().insert("sec-websocket-accept", v);
            }
            r
        }
        "/sse" => {
            // One event a second for as long as the body is read; the stream (and the gauge it
            // holds) is dropped when the proxy lets go of the response.
            let held = Held::new(counters, |c| &c.event_streams);
            let ticks = tokio::time::interval(Duration::from_secs(1));
            let events = futures_util::stream::unfold((ticks, 0u64, held), |(mut ticks, n, held)| async move {
                ticks.tick().await;
                let frame = Frame::data(Bytes::from(format!("event: tick\ndata: {n}\n\n")));
                Some((Ok::<_, Infallible>(frame), (ticks, n + 1, held)))
            });
            let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(events)));
            r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
            r.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            r
        }
        _ => {
            // Who the proxy says this is: the browser checks it against who signed in.
            let header_text = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            let echo = serde_json::json!({
                "path": path,
                "sub": header_text("x-trousseau-sub"),
                "org": header_text("x-trousseau-org-id"),
                "assertion": req.headers().contains_key("x-trousseau-jwt-assertion"),
            });
            let mut r = text(StatusCode::OK, echo.to_string());
            r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            r
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<AppBody> {
    let mut r = Response::new(BodyExt::boxed_unsync(Full::new(body.into())));
    *r.status_mut() = status;
    r
}

// ---------------------------------------------------------------------------------------------
// People and their browsers

/// One browser's proxy session, as its siblings and the revokers see it.
#[derive(Default)]
struct SessionState {
    signed_in: bool,
    /// When a logout that covers this session was acknowledged (seconds since the start): every
    /// request started after it must be refused.
    revoked_at: Option<f64>,
    /// The IdP cookies this session was signed in with: equal values mean the same IdP session,
    /// the same `sid`.
    idp_session: String,
}

/// A person at the IdP: one user, one to three browsers sharing the IdP's cookies.
struct Person {
    sub: String,
    organizations: Vec<String>,
    /// The IdP's cookies (the SSO session), shared by the person's browsers.
    idp_jar: Mutex<Jar>,
    /// Held while one of the person's browsers signs in, signs out or is logged out by the IdP:
    /// which browsers a logout ends is then exactly known.
    turn: tokio::sync::Mutex<()>,
    /// A logout is under way: a refusal seen meanwhile may be its doing.
    logout_pending: AtomicBool,
    browsers: Vec<Arc<Mutex<SessionState>>>,
}

fn idp_session_of(jar: &Jar) -> String {
    cookie_header(jar)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Browse,
    Websocket,
    EventStream,
}

/// A websocket or event stream the browser holds.
struct HeldStream {
    /// Set before the browser closes it on purpose.
    closing: Arc<AtomicBool>,
    alive: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    websocket: bool,
}

/// Marks a stream dead and lowers the client-side gauge when its task ends or is aborted.
struct StreamGuard {
    alive: Arc<AtomicBool>,
    soak: Arc<Soak>,
    websocket: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Relaxed);
        let gauge = if self.websocket { &self.soak.tally.ws_open } else { &self.soak.tally.sse_open };
        gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Browser {
    soak: Arc<Soak>,
    id: usize,
    person: Arc<Person>,
    state: Arc<Mutex<SessionState>>,
    http: Http,
    /// The proxy's cookies.
    jar: Jar,
    /// The organization the app should see: the only one, or the last one chosen.
    expected_org: Option<String>,
    role: Role,
    streams: Vec<HeldStream>,
    rng: Rng,
}

impl Browser {
    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.soak.origin)
        }
    }

    /// A request to the proxy with this browser's cookies.
    async fn proxy(&mut self, method: Method, path: &str, headers: &[(&str, &str)], body: String) -> Result<Answer, String> {
        let url = self.url(path);
        send(&self.http, method, &url, headers, body, &mut self.jar).await
    }

    /// A request to the IdP with the person's cookies.
    async fn idp(&mut self, method: Method, url: &str, headers: &[(&str, &str)], body: String) -> Result<Answer, String> {
        let mut jar = lock(&self.person.idp_jar).clone();
        let answer = send(&self.http, method, url, headers, body, &mut jar).await;
        *lock(&self.person.idp_jar) = jar;
        answer
    }

    fn revoked(&self) -> bool {
        lock(&self.state).revoked_at.is_some()
    }

    async fn run(mut self, start_after: Duration) {
        if !self.soak.pause(start_after).await {
            return;
        }
        let churn_chance = 1.5 / self.soak.opts.churn_seconds;
        while !self.soak.stopping() {
            if !lock(&self.state).signed_in {
                let t0 = self.soak.now();
                if let Err(e) = self.sign_in().await {
                    if self.soak.outage.overlaps(t0, self.soak.now()) {
                        self.soak.tally.expected("sign_in_while_idp_down");
                    } else if !self.soak.stopping() {
                        self.soak.unexpected("sign_in_failed", e);
                    }
                    if !self.soak.pause(self.rng.between(2.0, 5.0)).await {
                        break;
                    }
                    continue;
                }
            }
            self.keep_streams().await;
            if self.rng.unit() < churn_chance {
                self.churn().await;
            } else {
                self.browse().await;
            }
            // Think time: about one request every 1–2 s per browser.
            if !self.soak.pause(self.rng.between(1.0, 2.0)).await {
                break;
            }
        }
        self.close_streams();
    }

    /// Through the sign-in page like a person: the proxy sends the browser to the IdP, the
    /// person's button is pressed (or the IdP's SSO session is reused), the callback sets the
    /// session cookie.
    async fn sign_in(&mut self) -> Result<(), String> {
        let person = self.person.clone();
        let _turn = person.turn.lock().await;
        let start = self.proxy(Method::GET, "/", &NAVIGATE, String::new()).await?;
        if start.status != StatusCode::FOUND || !start.location.starts_with(&self.soak.idp_origin) {
            return Err(format!("the first navigation answered {} instead of a redirect to Trousseau", start.status));
        }
        let authorize = start.location;
        let page = self.idp(Method::GET, &authorize, &NAVIGATE, String::new()).await?;
        if page.status != StatusCode::OK {
            return Err(format!("the IdP's sign-in page answered {}", page.status));
        }
        let html = String::from_utf8_lossy(&page.body);
        let (action, mut fields) = find_form(&html, &person.sub).ok_or("no sign-in button for this person on the IdP's page")?;
        fields.push(("user".into(), person.sub.clone()));
        let form = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let action = url::Url::parse(&authorize).and_then(|base| base.join(&action)).map_err(|e| e.to_string())?;
        let headers = [("content-type", "application/x-www-form-urlencoded"), ("accept", "text/html")];
        let chosen = self.idp(Method::POST, action.as_str(), &headers, form).await?;
        if chosen.status != StatusCode::FOUND || !chosen.location.starts_with(&format!("{}/.trousseau/callback", self.soak.origin)) {
            return Err(format!("the IdP answered the choice with {}", chosen.status));
        }
        let idp_session = idp_session_of(&lock(&person.idp_jar));
        let callback = self.proxy(Method::GET, &chosen.location, &NAVIGATE, String::new()).await?;
        if callback.status != StatusCode::FOUND {
            return Err(format!("the callback answered {}{}", callback.status, error_field(&callback.body)));
        }
        {
            let mut state = lock(&self.state);
            state.signed_in = true;
            state.revoked_at = None;
            state.idp_session = idp_session;
        }
        // One organization is selected by itself; with several, none until the person picks one.
        self.expected_org = (person.organizations.len() == 1).then(|| person.organizations[0].clone());
        Tally::bump(&self.soak.tally.sign_ins);
        self.soak.tally.signed_in.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn signed_out(&mut self) {
        let mut state = lock(&self.state);
        if state.signed_in {
            state.signed_in = false;
            self.soak.tally.signed_in.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn churn(&mut self) {
        let r = self.rng.unit();
        if r < 0.40 {
            self.sign_out().await;
        } else if r < 0.75 && self.person.organizations.len() > 1 {
            self.switch_organization().await;
        } else if (0.75..0.90).contains(&r) {
            self.end_every_session_of_the_person().await;
        } else if r >= 0.90 && self.role != Role::Browse {
            // The page holding the stream is reloaded: the stream closes and opens again.
            self.close_streams();
            self.soak.tally.note("stream_reopened");
            self.browse().await;
        } else {
            self.browse().await;
        }
    }

    async fn browse(&mut self) {
        let path = *self.rng.pick(&PATHS);
        let navigation = self.rng.unit() < 0.2;
        let headers: &[(&str, &str)] = if navigation { &NAVIGATE } else { &API };
        let must_refuse = self.revoked();
        let t0 = self.soak.now();
        Tally::bump(&self.soak.tally.requests);
        match self.proxy(Method::GET, path, headers, String::new()).await {
            Err(e) => self.soak.unexpected("connection", e),
            Ok(a) if a.status == StatusCode::OK => {
                if must_refuse {
                    self.revoked_but_served(&format!("GET {path}"));
                } else {
                    self.check_identity(path, &a.body);
                }
            }
            Ok(a) => self.not_served(&format!("GET {path}"), a.status, &a.body, must_refuse, t0).await,
        }
    }

    /// The app must see exactly who signed in, with the organization last chosen.
    fn check_identity(&mut self, path: &str, body: &[u8]) {
        let Ok(echo) = serde_json::from_slice::<serde_json::Value>(body) else {
            return self.soak.unexpected("bad_app_answer", format!("GET {path}: not the app's JSON"));
        };
        let sub_ok = echo["sub"].as_str() == Some(self.person.sub.as_str());
        let org_ok = echo["org"].as_str() == self.expected_org.as_deref();
        if sub_ok && org_ok && echo["assertion"] == true && echo["path"] == path {
            Tally::bump(&self.soak.tally.served);
        } else {
            self.soak.unexpected(
                "identity_mismatch",
                format!(
                    "GET {path}: the app saw sub {} org {} assertion {} (expected sub {} org {})",
                    echo["sub"], echo["org"], echo["assertion"], self.person.sub, self.expected_org.as_deref().unwrap_or("none")
                ),
            );
        }
    }

    fn revoked_but_served(&mut self, what: &str) {
        Tally::bump(&self.soak.tally.revoked_served);
        self.soak.unexpected("revoked_session_served", format!("{what}: served after a logout that covers this session"));
    }

    /// Any answer but the app's on an app path.
    async fn not_served(&mut self, what: &str, status: StatusCode, body: &[u8], must_refuse: bool, t0: f64) {
        let t1 = self.soak.now();
        if status == StatusCode::UNAUTHORIZED || status.is_redirection() {
            self.refused(what, must_refuse).await;
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            self.soak.judge_503(t0, t1, what);
        } else {
            let kind = if status.is_server_error() { "5xx" } else { "unexpected_status" };
            self.soak.unexpected(kind, format!("{what}: {status}{}", error_field(body)));
        }
    }

    /// The proxy no longer knows this session: right after a logout that covers it, wrong
    /// otherwise. Either way the browser signs in again after a while.
    async fn refused(&mut self, what: &str, must_refuse: bool) {
        let explained = must_refuse || self.revocation_explains().await;
        if explained {
            Tally::bump(&self.soak.tally.revoked_refused);
            self.soak.tally.expected("refused_after_logout");
            // The proxy ends a revoked session's websockets and streams within
            // `revocation_staleness` + 1 s (README, "Open connections end with the session").
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while self.streams.iter().any(|s| s.alive.load(Ordering::Relaxed)) && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if self.streams.iter().any(|s| s.alive.load(Ordering::Relaxed)) {
                let kinds: Vec<&str> = self.streams.iter().filter(|s| s.alive.load(Ordering::Relaxed)).map(|s| if s.websocket { "websocket" } else { "event stream" }).collect();
                self.soak.unexpected(
                    "stream_outlived_session",
                    format!("{what}: {} of sub {} still open 5 s after its session was refused (the driver notices a close up to 3.5 s late)", kinds.join(" and "), self.person.sub),
                );
            }
        } else {
            self.soak.unexpected("session_lost", format!("{what}: refused though no logout covers this session"));
        }
        self.close_streams();
        self.signed_out();
        self.soak.pause(self.rng.between(2.0, 8.0)).await;
    }

    /// A refusal that raced a logout in progress: wait for the logout to be acknowledged, then
    /// see whether it covered this session.
    async fn revocation_explains(&self) -> bool {
        for _ in 0..200 {
            if !self.person.logout_pending.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.revoked()
    }

    /// `/.trousseau/logout`, then the IdP's end-session endpoint, which ends the IdP session and
    /// sends the proxy a back-channel logout for its `sid` before answering: the siblings signed in
    /// with that IdP session are revoked from then on, and so is a copy of this browser's cookie.
    async fn sign_out(&mut self) {
        let person = self.person.clone();
        let turn = person.turn.lock().await;
        if self.revoked() {
            // Already logged out elsewhere: the next request finds out.
            drop(turn);
            return self.browse().await;
        }
        person.logout_pending.store(true, Ordering::Release);
        self.close_streams();
        let copy = self.jar.clone();
        let own_idp_session = lock(&self.state).idp_session.clone();
        let t0 = self.soak.now();
        match self.sign_out_steps(&own_idp_session).await {
            Ok(ended) => {
                let at = self.soak.now();
                for sibling in &person.browsers {
                    if Arc::ptr_eq(sibling, &self.state) {
                        continue;
                    }
                    let mut s = lock(sibling);
                    if s.signed_in && s.revoked_at.is_none() && ended.contains(&s.idp_session) {
                        s.revoked_at = Some(at);
                        Tally::bump(&self.soak.tally.siblings_revoked);
                    }
                }
            }
            Err(_) if self.soak.outage.overlaps(t0, self.soak.now()) => self.soak.tally.expected("sign_out_while_idp_down"),
            Err(e) => self.soak.unexpected("sign_out_failed", e),
        }
        person.logout_pending.store(false, Ordering::Release);
        self.signed_out();
        Tally::bump(&self.soak.tally.sign_outs);
        drop(turn);
        self.check_copy_is_dead(copy).await;
        self.soak.pause(self.rng.between(2.0, 8.0)).await;
    }

    /// The IdP sessions the sign-out ended.
    async fn sign_out_steps(&mut self, own_idp_session: &str) -> Result<Vec<String>, String> {
        let logout = self.proxy(Method::GET, "/.trousseau/logout", &NAVIGATE, String::new()).await?;
        if !logout.status.is_redirection() || !logout.location.starts_with(&self.soak.idp_origin) {
            return Err(format!("/.trousseau/logout answered {} instead of a redirect to Trousseau", logout.status));
        }
        // With the ID token as a hint, the IdP ends the hinted session as well as the browser's.
        let hinted = logout.location.contains("id_token_hint=");
        let current = idp_session_of(&lock(&self.person.idp_jar));
        let end = self.idp(Method::GET, &logout.location, &NAVIGATE, String::new()).await?;
        if !end.status.is_redirection() {
            return Err(format!("the IdP's end-session endpoint answered {}", end.status));
        }
        let mut ended = vec![current];
        if hinted {
            ended.push(own_idp_session.to_string());
        }
        ended.retain(|s| !s.is_empty());
        Ok(ended)
    }

    /// "Sign-out is final for copies of the cookie too."
    async fn check_copy_is_dead(&mut self, mut copy: Jar) {
        if copy.is_empty() {
            return;
        }
        let url = self.url("/api/after-sign-out");
        match send(&self.http, Method::GET, &url, &API, String::new(), &mut copy).await {
            Ok(a) if a.status == StatusCode::UNAUTHORIZED => Tally::bump(&self.soak.tally.revoked_refused),
            Ok(a) if a.status == StatusCode::OK => self.revoked_but_served("a copy of a signed-out cookie"),
            Ok(a) => self.soak.unexpected("unexpected_status", format!("a copy of a signed-out cookie: {}{}", a.status, error_field(&a.body))),
            Err(e) => self.soak.unexpected("connection", e),
        }
    }

    /// What Trousseau sends when a user's sessions are ended there (an administrator, a disabled
    /// account): a logout token naming only the `sub`. Every session of the person that began
    /// before it is refused from its next request on.
    async fn end_every_session_of_the_person(&mut self) {
        if self.soak.outage.overlaps(self.soak.now(), self.soak.now()) {
            // A Trousseau that is down sends nothing.
            return self.browse().await;
        }
        let person = self.person.clone();
        let _turn = person.turn.lock().await;
        person.logout_pending.store(true, Ordering::Release);
        let token = self.soak.idp.logout_token(Some(&person.sub), None);
        let form = url::form_urlencoded::Serializer::new(String::new()).append_pair("logout_token", &token).finish();
        let url = self.url("/.trousseau/backchannel-logout");
        let headers = [("content-type", "application/x-www-form-urlencoded"), ("accept", "application/json")];
        match send(&self.http, Method::POST, &url, &headers, form, &mut Jar::new()).await {
            Ok(a) if a.status == StatusCode::OK => {
                let at = self.soak.now();
                for browser in &person.browsers {
                    let mut s = lock(browser);
                    if s.signed_in && s.revoked_at.is_none() {
                        s.revoked_at = Some(at);
                        if !Arc::ptr_eq(browser, &self.state) {
                            Tally::bump(&self.soak.tally.siblings_revoked);
                        }
                    }
                }
                Tally::bump(&self.soak.tally.sub_logouts);
            }
            Ok(a) => self.soak.unexpected("backchannel_logout_refused", format!("{}{}", a.status, error_field(&a.body))),
            Err(e) => self.soak.unexpected("connection", e),
        }
        // A logout by `sub` ends sessions created up to its second (unix seconds, inclusive): a
        // sign-in within the same second would be ended too. Hold the person's sign-ins until the
        // next second has begun.
        let now = unix_now();
        tokio::time::sleep(Duration::from_secs_f64(now.floor() + 1.05 - now)).await;
        person.logout_pending.store(false, Ordering::Release);
    }

    /// The organization selector's POST, as its form sends it; the app must see the new one.
    async fn switch_organization(&mut self) {
        let choices: Vec<String> = self.person.organizations.iter().filter(|o| Some(o.as_str()) != self.expected_org.as_deref()).cloned().collect();
        let org = self.rng.pick(&choices).clone();
        let form = url::form_urlencoded::Serializer::new(String::new()).append_pair("org", &org).append_pair("rd", "/").finish();
        let origin = self.soak.origin.clone();
        let headers = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "text/html"),
            ("origin", origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ];
        let must_refuse = self.revoked();
        let t0 = self.soak.now();
        match self.proxy(Method::POST, "/.trousseau/organizations", &headers, form).await {
            Err(e) => self.soak.unexpected("connection", e),
            Ok(a) if a.status == StatusCode::SEE_OTHER => {
                if must_refuse {
                    self.revoked_but_served("POST /.trousseau/organizations");
                } else {
                    self.expected_org = Some(org);
                    Tally::bump(&self.soak.tally.org_switches);
                }
            }
            Ok(a) => self.not_served("POST /.trousseau/organizations", a.status, &a.body, must_refuse, t0).await,
        }
    }

    // --- streams -------------------------------------------------------------------------------

    async fn keep_streams(&mut self) {
        self.streams.retain(|s| s.alive.load(Ordering::Relaxed));
        if self.role == Role::Browse || !self.streams.is_empty() || self.soak.stopping() || !lock(&self.state).signed_in {
            return;
        }
        match self.role {
            Role::Websocket => self.open_websocket().await,
            Role::EventStream => self.open_event_stream().await,
            Role::Browse => {}
        }
    }

    fn close_streams(&mut self) {
        for s in self.streams.drain(..) {
            s.closing.store(true, Ordering::Release);
            s.task.abort();
        }
    }

    fn hold(&mut self, websocket: bool) -> (Arc<AtomicBool>, StreamGuard) {
        let closing = Arc::new(AtomicBool::new(false));
        let alive = Arc::new(AtomicBool::new(true));
        let gauge = if websocket { &self.soak.tally.ws_open } else { &self.soak.tally.sse_open };
        gauge.fetch_add(1, Ordering::Relaxed);
        (closing, StreamGuard { alive, soak: self.soak.clone(), websocket })
    }

    async fn open_websocket(&mut self) {
        let must_refuse = self.revoked();
        let t0 = self.soak.now();
        let ws_url = format!("{}/ws", self.soak.origin.replacen("http://", "ws://", 1));
        let mut request = match ws_url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => return self.soak.unexpected("websocket_open", e.to_string()),
        };
        if let Ok(cookies) = http::HeaderValue::from_str(&cookie_header(&self.jar)) {
            request.headers_mut().insert(header::COOKIE, cookies);
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(request)).await {
            Err(_) => self.soak.unexpected("websocket_open", "the upgrade timed out".into()),
            Ok(Ok((ws, response))) => {
                // A refresh may happen on the upgrade itself: its new cookie must be kept.
                store_cookies(&mut self.jar, response.headers());
                if must_refuse {
                    return self.revoked_but_served("websocket upgrade");
                }
                Tally::bump(&self.soak.tally.ws_opened);
                let (closing, guard) = self.hold(true);
                let alive = guard.alive.clone();
                let (soak, state, person, id) = (self.soak.clone(), self.state.clone(), self.person.clone(), self.id);
                let seed = self.rng.next();
                let flag = closing.clone();
                let task = tokio::spawn(async move {
                    let _guard = guard;
                    let why = websocket_pump(&soak, ws, id, seed).await;
                    stream_broke(&soak, &state, &person, &flag, "websocket_broken", why).await;
                });
                self.streams.push(HeldStream { closing, alive, task, websocket: true });
            }
            Ok(Err(tungstenite::Error::Http(response))) => {
                store_cookies(&mut self.jar, response.headers());
                let body = response.body().clone().unwrap_or_default();
                self.not_served("websocket upgrade", response.status(), &body, must_refuse, t0).await;
            }
            Ok(Err(e)) => self.soak.unexpected("websocket_open", e.to_string()),
        }
    }

    async fn open_event_stream(&mut self) {
        let must_refuse = self.revoked();
        let t0 = self.soak.now();
        let mut builder = Request::get(self.url("/sse")).header(header::ACCEPT, "text/event-stream");
        if !self.jar.is_empty() {
            builder = builder.header(header::COOKIE, cookie_header(&self.jar));
        }
        let Ok(request) = builder.body(Full::new(Bytes::new())) else { return };
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request)).await {
            Err(_) => return self.soak.unexpected("event_stream_open", "timed out".into()),
            Ok(Err(e)) => return self.soak.unexpected("connection", format!("GET /sse: {}", error_chain(&e))),
            Ok(Ok(r)) => r,
        };
        let (parts, body) = response.into_parts();
        store_cookies(&mut self.jar, &parts.headers);
        if parts.status != StatusCode::OK {
            let body = tokio::time::timeout(Duration::from_secs(5), body.collect()).await.ok().and_then(Result::ok).map(|b| b.to_bytes()).unwrap_or_default();
            return self.not_served("GET /sse", parts.status, &body, must_refuse, t0).await;
        }
        if must_refuse {
            return self.revoked_but_served("GET /sse");
        }
        Tally::bump(&self.soak.tally.sse_opened);
        let (closing, guard) = self.hold(false);
        let alive = guard.alive.clone();
        let (soak, state, person) = (self.soak.clone(), self.state.clone(), self.person.clone());
        let flag = closing.clone();
        let gap = self.soak.opts.sse_gap;
        let task = tokio::spawn(async move {
            let _guard = guard;
            let why = event_stream_reader(&soak, body, gap).await;
            stream_broke(&soak, &state, &person, &flag, "event_stream_broken", why).await;
        });
        self.streams.push(HeldStream { closing, alive, task, websocket: false });
    }
}

/// Sends a message every 3–5 s and expects its echo within 5 s; returns why it stopped.
async fn websocket_pump(
    soak: &Soak,
    mut ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    id: usize,
    seed: u64,
) -> String {
    let mut rng = Rng::seeded(seed);
    let mut n = 0u64;
    loop {
        n += 1;
        // Between messages the socket is still read: a close from the proxy (a logout ends the
        // session's websockets at once) is noticed when it comes, not at the next send.
        let pause = soak.pause(rng.between(3.0, 5.0));
        tokio::pin!(pause);
        loop {
            tokio::select! {
                go_on = &mut pause => {
                    if !go_on {
                        return "stopping".into();
                    }
                    break;
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Close(_))) | None => return "receive: closed".into(),
                    Some(Err(e)) => return format!("receive: {e}"),
                    Some(Ok(_)) => continue,
                },
            }
        }
        let text = format!("soak {id} {n}");
        if let Err(e) = ws.send(Message::text(text.clone())).await {
            return format!("send: {e}");
        }
        let echo = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return Ok(t.as_str() == text),
                    Some(Ok(Message::Close(_))) | None => return Err("closed".to_string()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.to_string()),
                }
            }
        })
        .await;
        match echo {
            Ok(Ok(true)) => Tally::bump(&soak.tally.ws_echoes),
            Ok(Ok(false)) => return "the echo differed from the message".into(),
            Ok(Err(e)) => return format!("receive: {e}"),
            Err(_) => return "no echo within 5 s".into(),
        }
    }
}

/// Reads events, each within `gap` of the one before; returns why it stopped.
async fn event_stream_reader(soak: &Soak, mut body: Incoming, gap: Duration) -> String {
    loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(gap, body.frame()) => f,
            _ = async { let mut stop = soak.stop.subscribe(); let _ = stop.wait_for(|s| *s).await; } => return "stopping".into(),
        };
        match frame {
            Err(_) => return format!("no event for {:.1} s", gap.as_secs_f64()),
            Ok(None) => return "the stream ended".into(),
            Ok(Some(Err(e))) => return error_chain(&e),
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let events = data.windows(5).filter(|w| w == b"data:").count() as u64;
                    soak.tally.sse_events.fetch_add(events, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A stream ended without the browser closing it: fine if a logout covers the session (the
/// proxy may cut it) or the run is stopping, unexpected otherwise. Waits a moment first, since the
/// proxy can cut the stream before the logout's acknowledgement reaches the driver.
async fn stream_broke(soak: &Soak, state: &Mutex<SessionState>, person: &Person, closing: &AtomicBool, kind: &'static str, why: String) {
    if closing.load(Ordering::Acquire) || soak.stopping() {
        return;
    }
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !person.logout_pending.load(Ordering::Acquire) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    if closing.load(Ordering::Acquire) || soak.stopping() {
        return;
    }
    let covered = {
        let s = lock(state);
        s.revoked_at.is_some() || !s.signed_in
    };
    if covered {
        soak.tally.expected("stream_closed_after_logout");
    } else {
        soak.unexpected(kind, why);
    }
}

// ---------------------------------------------------------------------------------------------
// The people of this run

/// Browsers per person, in turn: most people have one, some two or three.
const BROWSERS_PER_PERSON: [usize; 5] = [1, 2, 1, 3, 1];

struct PersonSpec {
    user: DevUser,
    browsers: usize,
}

fn people(browsers: usize) -> Result<Vec<PersonSpec>, String> {
    // Jean Dupont's two hotels: odd people belong to both and switch between them.
    let jean = default_users().into_iter().find(|u| u.organizations.len() >= 2).ok_or("no demo user with two organizations")?;
    let mut specs = Vec::new();
    let mut left = browsers;
    for k in 0usize.. {
        if left == 0 {
            break;
        }
        let n = BROWSERS_PER_PERSON[k % BROWSERS_PER_PERSON.len()].min(left);
        left -= n;
        let organizations = if k % 2 == 1 { jean.organizations.clone() } else { jean.organizations[..1].to_vec() };
        let user = DevUser {
            sub: format!("50a50000-0000-4000-8000-{k:012}"),
            email: format!("soak-{k}@example.test"),
            name: format!("Soak User {k}"),
            given_name: "Soak".into(),
            family_name: format!("User {k}"),
            picture: String::new(),
            trousseau_user_id: format!("0190aaaa-0000-7000-8000-{k:012}"),
            locale: if k % 3 == 0 { "fr-FR".into() } else { "en-GB".into() },
            organizations,
            denied: false,
            description: format!("soak person {k}"),
        };
        specs.push(PersonSpec { user, browsers: n });
    }
    Ok(specs)
}

// ---------------------------------------------------------------------------------------------
// The proxy process: configuration, /proc, /metrics, its log

/// The proxy's YAML. Secrets are files beside it (`*_file` keys).
fn proxy_config(work: &Path, opts: &Options, proxy_port: u16, metrics_port: u16, app: SocketAddr, issuer: &str) -> String {
    let redis = match &opts.redis_url_file {
        Some(file) if opts.store == "redis" => format!("  redis_url_file: \"{}\"\n", file.display()),
        _ => String::new(),
    };
    format!(
        r#"# Written by examples/soak.rs for one soak run; loopback only.
listen: "127.0.0.1:{proxy_port}"
public_url: "http://127.0.0.1:{proxy_port}"
upstream: "http://{app}"
metrics_listen: "127.0.0.1:{metrics_port}"
proxy:
  drain_timeout: "2s"
oidc:
  issuer: "{issuer}"
  client_id: "{CLIENT_ID}"
  client_secret_file: "{work}/client-secret"
  scopes: ["openid", "email", "profile", "trousseau:context", "trousseau:organization"]
session:
  secrets_file: "{work}/session-secret"
  store: "{store}"
{redis}  refresh_grace: "{grace}s"
limits:
  # Every virtual browser comes from 127.0.0.1, which would make them all one client for the
  # per-client cap; the global caps stay on.
  max_requests_per_client: 0
"#,
        work = work.display(),
        store = opts.store,
        grace = opts.refresh_grace.as_secs(),
    )
}

/// VmRSS in kB and open descriptors of a process.
fn proc_sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

type Metrics = BTreeMap<String, f64>;

async fn scrape(http: &Http, metrics_url: &str) -> Metrics {
    let mut jar = Jar::new();
    let Ok(a) = send(http, Method::GET, metrics_url, &[], String::new(), &mut jar).await else {
        return Metrics::new();
    };
    String::from_utf8_lossy(&a.body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
        .collect()
}

fn metric(m: &Metrics, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// WARN and ERROR lines of the proxy's JSON log by message, and a few INFO events worth counting.
fn log_summary(path: &Path) -> (Vec<(String, u64)>, BTreeMap<String, u64>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut problems: BTreeMap<String, u64> = BTreeMap::new();
    let mut infos: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let level = v["level"].as_str().unwrap_or("");
        let message = v["message"].as_str().unwrap_or("").to_string();
        match level {
            "WARN" | "ERROR" => *problems.entry(format!("{level} {message}")).or_default() += 1,
            "INFO" if matches!(
                message.as_str(),
                "session refreshed" | "refresh refused by Trousseau (invalid_grant): session ended" | "back-channel logout: sessions ended"
            ) =>
            {
                *infos.entry(message).or_default() += 1
            }
            _ => {}
        }
    }
    let mut problems: Vec<(String, u64)> = problems.into_iter().collect();
    problems.sort_by_key(|p| std::cmp::Reverse(p.1));
    (problems, infos)
}

/// Least-squares line through (t, y): slope per second, and the fitted value at the first t.
fn fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let var = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum::<f64>();
    if var == 0.0 {
        return None;
    }
    let slope = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_y)).sum::<f64>() / var;
    Some((slope, mean_y + slope * (points[0].0 - mean_t)))
}

/// One line of the verdict on a resource: its drift over the fitted window.
fn flatness(name: &str, unit: &str, scale: f64, points: &[(f64, f64)]) -> (bool, String) {
    let Some((slope, first)) = fit(points) else {
        return (false, format!("{name}: too few samples after warm-up to fit a line"));
    };
    let span = points[points.len() - 1].0 - points[0].0;
    let change = if first.abs() > f64::EPSILON { slope * span / first } else { 0.0 };
    let ok = change.abs() <= FLAT_LIMIT;
    let (min, max) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    (
        ok,
        format!(
            "{name}: {:.1}–{:.1} {unit} after warm-up ({} samples over {:.1} min); slope {:+.2} {unit}/h, change {:+.1}% (limit ±{:.0}%) → {}",
            min / scale,
            max / scale,
            points.len(),
            span / 60.0,
            slope * 3600.0 / scale,
            change * 100.0,
            FLAT_LIMIT * 100.0,
            if ok { "flat" } else { "NOT flat" }
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Reports

struct Reporter {
    http: Http,
    metrics_url: String,
    redis: Option<redis::aio::MultiplexedConnection>,
    last_metrics: Metrics,
    last_requests: u64,
    last_unexpected: u64,
    last_expected: u64,
    last_details: usize,
    last_at: f64,
    rows: usize,
}

impl Reporter {
    async fn row(&mut self, soak: &Soak, pid: u32, note: &str) {
        let now = soak.now();
        let m = scrape(&self.http, &self.metrics_url).await;
        let t = &soak.tally;
        let delta = |name: &str, last: &Metrics| metric(&m, name) - metric(last, name);
        let requests = t.requests.load(Ordering::Relaxed);
        let rate = (requests - self.last_requests) as f64 / (now - self.last_at).max(0.001);
        let unexpected = Tally::total(&t.unexpected);
        let expected = Tally::total(&t.expected);
        let (rss, fds) = proc_sample(pid).unwrap_or((0, 0));
        let redis_keys = match self.redis.as_mut() {
            Some(c) => redis::cmd("DBSIZE").query_async::<u64>(c).await.map(|n| n.to_string()).unwrap_or_else(|_| "?".into()),
            None => "-".into(),
        };
        let stats = soak.idp.stats();
        let idp_down = soak.outage.overlaps(now, now);
        if self.rows.is_multiple_of(20) {
            println!(
                "{:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>5} {:>5} {:>8} {:>5} {:>5} {:>6} {:>6} {:>7} {:>5} {:>6}  note",
                "time", "req/s", "unexp", "expct", "ref ok", "fail", "coal", "reuse", "in/brws", "ws", "sse", "conns", "flight", "RSS MB", "fds", "redis"
            );
        }
        self.rows += 1;
        println!(
            "{:>5.0}s {:>6.1} {:>6} {:>6} {:>6.0} {:>6.0} {:>5.0} {:>5} {:>8} {:>5} {:>5} {:>6.0} {:>6.0} {:>7.1} {:>5} {:>6}  {}",
            now,
            rate,
            format!("+{}", unexpected - self.last_unexpected),
            format!("+{}", expected - self.last_expected),
            delta("trousseau_proxy_refreshes_total{result=\"ok\"}", &self.last_metrics),
            delta("trousseau_proxy_refreshes_total{result=\"failed\"}", &self.last_metrics),
            delta("trousseau_proxy_refreshes_total{result=\"coalesced\"}", &self.last_metrics),
            stats.refresh_reuse_detected,
            format!("{}/{}", t.signed_in.load(Ordering::Relaxed), soak.opts.users),
            t.ws_open.load(Ordering::Relaxed),
            t.sse_open.load(Ordering::Relaxed),
            metric(&m, "trousseau_proxy_connections_open{listener=\"main\"}"),
            metric(&m, "trousseau_proxy_requests_in_flight"),
            rss as f64 / 1024.0,
            fds,
            redis_keys,
            if idp_down { "Trousseau down" } else { note },
        );
        let details = lock(&t.details);
        for d in details.iter().skip(self.last_details).take(5) {
            println!("         ! {d}");
        }
        if details.len() > self.last_details + 5 {
            println!("         ! … {} more", details.len() - self.last_details - 5);
        }
        self.last_details = details.len();
        drop(details);
        self.last_metrics = m;
        self.last_requests = requests;
        self.last_unexpected = unexpected;
        self.last_expected = expected;
        self.last_at = now;
    }
}

/// Keys of ours in Redis by kind (`session`, `revoked:sid`, …): what grows with the churn.
async fn redis_breakdown(c: &mut redis::aio::MultiplexedConnection) -> String {
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)) = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg("trousseau-proxy:*").arg("COUNT").arg(1000).query_async::<(u64, Vec<String>)>(c).await else {
            return "unreadable".into();
        };
        for key in keys {
            let rest = key.trim_start_matches("trousseau-proxy:");
            let kind = rest.rsplit_once(':').map(|(k, _)| k).unwrap_or(rest);
            *kinds.entry(kind.to_string()).or_default() += 1;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    kinds.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------------------------
// The run

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let opts = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    match run(opts).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            println!("VERDICT store=? FAIL (the run could not be set up: {e})");
            ExitCode::FAILURE
        }
    }
}

async fn run(opts: Options) -> Result<bool, String> {
    let work = match &opts.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("trousseau-soak-{}-{}", opts.store, std::process::id())),
    };
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let duration = opts.minutes * 60.0;
    let store = opts.store.clone();

    // Ports first: the IdP must know where to send back-channel logouts and browsers back.
    let proxy_port = free_port()?;
    let metrics_port = free_port()?;
    let origin = format!("http://127.0.0.1:{proxy_port}");
    let specs = people(opts.users)?;
    let mut users = default_users();
    users.extend(specs.iter().map(|p| p.user.clone()));
    let client_secret = random_hex(24);
    let idp = LocalDevIdp::start(DevIdpConfig {
        base_url: url::Url::parse("http://127.0.0.1:1").map_err(|e| e.to_string())?,
        slug: "soak".into(),
        client_id: CLIENT_ID.into(),
        client_secret: client_secret.clone(),
        redirect_uris: vec![format!("{origin}/.trousseau/callback")],
        post_logout_redirect_uris: vec![format!("{origin}/")],
        backchannel_logout_uri: Some(format!("{origin}/.trousseau/backchannel-logout")),
        access_token_ttl: opts.access_token_ttl,
        // As dev mode does: ID tokens live at least a minute.
        id_token_ttl: opts.access_token_ttl.max(Duration::from_secs(60)),
        users,
        ..DevIdpConfig::default()
    })
    .await
    .map_err(|e| format!("dev IdP: {e}"))?;
    let app_counters = Arc::new(AppCounters::default());
    let app_addr = start_app(app_counters.clone()).await?;

    write_private(&work.join("client-secret"), &client_secret)?;
    write_private(&work.join("session-secret"), &trousseau_proxy::session::seal::generate_secret())?;
    let config_path = work.join("proxy.yaml");
    std::fs::write(&config_path, proxy_config(&work, &opts, proxy_port, metrics_port, app_addr, &idp.issuer()))
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let log_path = work.join("proxy.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log_filter = std::env::var("TROUSSEAU_PROXY_LOG").unwrap_or_else(|_| "info,hyper=warn,rustls=warn,h2=warn,trousseau_proxy::access=off".into());
    let mut child = tokio::process::Command::new(&opts.proxy_bin)
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .arg("--log-format")
        .arg("json")
        .env("TROUSSEAU_PROXY_LOG", log_filter)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", opts.proxy_bin.display()))?;
    let pid = child.id().ok_or("the proxy exited at once")?;

    // Ready: discovery and keys loaded from the IdP.
    let http = new_client();
    let ready_url = format!("{origin}/.trousseau/readyz");
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(a) = send(&http, Method::GET, &ready_url, &[], String::new(), &mut Jar::new()).await {
            if a.status == StatusCode::OK {
                ready = true;
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the proxy exited ({status}); see {}", log_path.display()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready {
        return Err(format!("the proxy did not become ready in 30 s; see {}", log_path.display()));
    }
    // Its pooled connection would count as a client still connected at the end.
    drop(http);

    let redis = match (&opts.redis_url_file, store.as_str()) {
        (Some(file), "redis") => {
            let url = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let client = redis::Client::open(url.trim()).map_err(|_| "the Redis URL does not parse".to_string())?;
            Some(client.get_multiplexed_async_connection().await.map_err(|e| format!("Redis: {e}"))?)
        }
        _ => None,
    };

    let outage_seconds = (opts.outage_seconds as f64).min(duration / 3.0);
    let outage_start = duration / 2.0 - outage_seconds / 2.0;
    let ramp = (duration / 10.0).min(30.0);
    println!(
        "soak: store {store}, {} browsers of {} people, {:.1} min; access tokens {} s, refresh_grace {} s; IdP down {:.0} s from t={:.0}s; churn about every {:.0} s per browser; work dir {}",
        opts.users,
        specs.len(),
        opts.minutes,
        opts.access_token_ttl.as_secs(),
        opts.refresh_grace.as_secs(),
        outage_seconds,
        outage_start,
        opts.churn_seconds,
        work.display()
    );

    let (stop, _) = watch::channel(false);
    let soak = Arc::new(Soak {
        idp: idp.idp().clone(),
        idp_origin: format!("http://{}", idp.addr()),
        origin,
        opts,
        start: Instant::now(),
        outage: Outage::default(),
        tally: Tally::default(),
        stop,
    });

    // People and browsers; starts are spread over the ramp.
    let mut browsers = Vec::new();
    let mut id = 0usize;
    for spec in specs {
        let states: Vec<Arc<Mutex<SessionState>>> = (0..spec.browsers).map(|_| Arc::new(Mutex::new(SessionState::default()))).collect();
        let person = Arc::new(Person {
            sub: spec.user.sub.clone(),
            organizations: spec.user.organizations.iter().map(|o| o.id.clone()).collect(),
            idp_jar: Mutex::new(Jar::new()),
            turn: tokio::sync::Mutex::new(()),
            logout_pending: AtomicBool::new(false),
            browsers: states.clone(),
        });
        for state in states {
            let role = match id % 5 {
                0 => Role::Websocket,
                1 => Role::EventStream,
                _ => Role::Browse,
            };
            let browser = Browser {
                soak: soak.clone(),
                id,
                person: person.clone(),
                state,
                http: new_client(),
                jar: Jar::new(),
                expected_org: None,
                role,
                streams: Vec::new(),
                rng: Rng::seeded(id as u64 + 1),
            };
            let start_after = Duration::from_secs_f64(ramp * id as f64 / soak.opts.users as f64);
            browsers.push(tokio::spawn(browser.run(start_after)));
            id += 1;
        }
    }

    // The IdP outage, halfway.
    let outage_task = {
        let soak = soak.clone();
        tokio::spawn(async move {
            if outage_seconds < 1.0 || !soak.pause(Duration::from_secs_f64(outage_start)).await {
                return;
            }
            soak.idp.set_unavailable(true);
            lock(&soak.outage.window).0 = Some(soak.now());
            println!("{:>5.0}s Trousseau is down (every IdP endpoint answers 503) for {outage_seconds:.0} s", soak.now());
            let completed = soak.pause(Duration::from_secs_f64(outage_seconds)).await;
            soak.idp.set_unavailable(false);
            lock(&soak.outage.window).1 = Some(soak.now());
            if completed {
                println!("{:>5.0}s Trousseau is back", soak.now());
            }
        })
    };

    // RSS and descriptors every few seconds, for the fit.
    let samples: Arc<Mutex<Vec<(f64, u64, u64)>>> = Arc::default();
    let sampler = {
        let (soak, samples) = (soak.clone(), samples.clone());
        tokio::spawn(async move {
            loop {
                if let Some((rss, fds)) = proc_sample(pid) {
                    lock(&samples).push((soak.now(), rss, fds));
                }
                if !soak.pause(SAMPLE_EVERY).await {
                    break;
                }
            }
        })
    };

    let mut reporter = Reporter {
        http: new_client(),
        metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
        redis,
        last_metrics: Metrics::new(),
        last_requests: 0,
        last_unexpected: 0,
        last_expected: 0,
        last_details: 0,
        last_at: 0.0,
        rows: 0,
    };
    let first_metrics = scrape(&reporter.http, &reporter.metrics_url).await;
    reporter.last_metrics = first_metrics.clone();

    // Report until the end, or until the proxy dies.
    let deadline = soak.start + Duration::from_secs_f64(duration);
    let mut next_report = soak.start + Duration::from_secs(soak.opts.report_seconds);
    let mut proxy_exit = None;
    while Instant::now() < deadline {
        let wake = next_report.min(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            status = child.wait() => {
                proxy_exit = Some(status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
                break;
            }
        }
        if Instant::now() >= next_report {
            reporter.row(&soak, pid, "").await;
            next_report += Duration::from_secs(soak.opts.report_seconds);
        }
    }
    if let Some(status) = &proxy_exit {
        soak.unexpected("proxy_exited", format!("the proxy exited during the run ({status}); see {}", log_path.display()));
    }

    // Stop: browsers finish what they are doing (a request is bounded by REQUEST_TIMEOUT).
    let _ = soak.stop.send(true);
    for b in browsers {
        let abort = b.abort_handle();
        if tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), b).await.is_err() {
            abort.abort();
        }
    }
    let _ = outage_task.await;
    let _ = sampler.await;
    if proxy_exit.is_none() {
        // Every browser is gone: the proxy must let go of every client connection and request
        // (websockets and event streams included). One client is left: the IdP, whose pooled
        // keep-alive connection for back-channel logouts closes after 30 s idle (as Trousseau's
        // would). The wait ends before the proxy's own `idle_timeout` (60 s) could close a
        // connection it should have let go of.
        let stopped = soak.now();
        let mut held = (0.0, 0.0);
        for _ in 0..(HELD_WAIT.as_millis() / 250) {
            let m = scrape(&reporter.http, &reporter.metrics_url).await;
            held = (metric(&m, "trousseau_proxy_connections_open{listener=\"main\"}"), metric(&m, "trousseau_proxy_requests_in_flight"));
            if held == (0.0, 0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let note = if held == (0.0, 0.0) {
            format!("browsers gone; the proxy let go of everything within {:.1} s", soak.now() - stopped)
        } else {
            soak.unexpected(
                "held_after_browsers_left",
                format!(
                    "{} client connections and {} requests in flight still open {} s after every browser left",
                    held.0,
                    held.1,
                    HELD_WAIT.as_secs()
                ),
            );
            format!("browsers gone {} s ago; the proxy still holds connections", HELD_WAIT.as_secs())
        };
        reporter.row(&soak, pid, &note).await;
    }
    let final_metrics = scrape(&reporter.http, &reporter.metrics_url).await;
    let redis_keys = match reporter.redis.as_mut() {
        Some(c) => Some(redis_breakdown(c).await),
        None => None,
    };

    // The proxy is stopped like a service would be: SIGTERM, then it drains (2 s) and exits.
    if proxy_exit.is_none() {
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => soak.unexpected("proxy_exit_status", format!("the proxy exited with {status} after SIGTERM")),
            _ => {
                let _ = child.kill().await;
                soak.unexpected("proxy_exit_status", "the proxy did not exit within 10 s of SIGTERM".into());
            }
        }
    }
    drop(idp);

    // --- summary and verdict --------------------------------------------------------------------
    let t = &soak.tally;
    let stats = soak.idp.stats();
    if stats.backchannel_failed > 0 {
        soak.unexpected("backchannel_delivery_failed", format!("the IdP could not deliver {} back-channel logout(s) to the proxy", stats.backchannel_failed));
    }
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let m = |name: &str| metric(&final_metrics, name) - metric(&first_metrics, name);
    let elapsed = soak.now();
    println!();
    println!("summary store={store}: {:.1} min, {} browsers", elapsed / 60.0, soak.opts.users);
    println!(
        "  requests {} ({:.1}/s), served with the right identity {}; sign-ins {}, sign-outs {}, back-channel logouts by sub {}, siblings revoked {}, organization switches {}",
        load(&t.requests),
        load(&t.requests) as f64 / elapsed.max(1.0),
        load(&t.served),
        load(&t.sign_ins),
        load(&t.sign_outs),
        load(&t.sub_logouts),
        load(&t.siblings_revoked),
        load(&t.org_switches)
    );
    println!(
        "  websockets opened {} (echoes {}), event streams opened {} (events {})",
        load(&t.ws_opened),
        load(&t.ws_echoes),
        load(&t.sse_opened),
        load(&t.sse_events)
    );
    println!(
        "  proxy: refreshes ok {:.0} failed {:.0} coalesced {:.0}; sign-ins completed {:.0}; back-channel revocations {:.0}; requests upstream_5xx {:.0} unavailable_503 {:.0} limited {:.0}; revocations held {:.0}",
        m("trousseau_proxy_refreshes_total{result=\"ok\"}"),
        m("trousseau_proxy_refreshes_total{result=\"failed\"}"),
        m("trousseau_proxy_refreshes_total{result=\"coalesced\"}"),
        m("trousseau_proxy_sign_ins_total{stage=\"completed\"}"),
        m("trousseau_proxy_backchannel_revocations_total"),
        m("trousseau_proxy_requests_total{outcome=\"upstream_5xx\"}"),
        m("trousseau_proxy_requests_total{outcome=\"unavailable_503\"}"),
        m("trousseau_proxy_requests_total{outcome=\"limited\"}"),
        metric(&final_metrics, "trousseau_proxy_revocations_held"),
    );
    println!(
        "  IdP: code grants {}, refresh grants ok {} failed {}, refresh-token reuse detected {}, end-sessions {}, back-channel logouts delivered {} failed {}",
        stats.code_grants,
        stats.refresh_grants_ok,
        stats.refresh_grants_failed,
        stats.refresh_reuse_detected,
        stats.end_sessions,
        stats.backchannel_sent,
        stats.backchannel_failed
    );
    println!(
        "  app: connections open {}, websockets {}, event streams {} (after the browsers stopped)",
        app_counters.connections.load(Ordering::Relaxed),
        app_counters.websockets.load(Ordering::Relaxed),
        app_counters.event_streams.load(Ordering::Relaxed)
    );
    if let Some(keys) = redis_keys {
        println!("  Redis keys at the end: {keys}");
    }
    println!("  expected: {}", Tally::describe(&t.expected));
    println!("  notes: {}", Tally::describe(&t.notes));
    println!("  unexpected: {}", Tally::describe(&t.unexpected));
    for d in lock(&t.details).iter().take(20) {
        println!("    {d}");
    }
    let (problems, infos) = log_summary(&log_path);
    println!(
        "  proxy log ({}): {}",
        log_path.display(),
        if infos.is_empty() { "no INFO events counted".to_string() } else { infos.iter().map(|(k, v)| format!("\"{k}\" ×{v}")).collect::<Vec<_>>().join(", ") }
    );
    for (line, count) in problems.iter().take(8) {
        println!("    {count:>6} × {line}");
    }

    let warm = duration / 3.0;
    let after: Vec<(f64, u64, u64)> = lock(&samples).iter().copied().filter(|s| s.0 >= warm).collect();
    let rss_points: Vec<(f64, f64)> = after.iter().map(|s| (s.0, s.1 as f64)).collect();
    let fd_points: Vec<(f64, f64)> = after.iter().map(|s| (s.0, s.2 as f64)).collect();
    let (rss_flat, rss_line) = flatness("RSS", "MB", 1024.0, &rss_points);
    let (fds_flat, fds_line) = flatness("fds", "fds", 1.0, &fd_points);
    println!("  {rss_line}");
    println!("  {fds_line}");

    let unexpected = Tally::total(&t.unexpected);
    let refused = load(&t.revoked_refused);
    let served = load(&t.revoked_served);
    println!("  revoked sessions: {} requests checked, {refused} refused, {served} served", refused + served);
    let mut failures = Vec::new();
    if unexpected > 0 {
        failures.push(format!("{unexpected} unexpected errors"));
    }
    if stats.refresh_reuse_detected > 0 {
        failures.push(format!("{} refresh-token reuse detections", stats.refresh_reuse_detected));
    }
    if !rss_flat {
        failures.push("RSS not flat".into());
    }
    if !fds_flat {
        failures.push("descriptors not flat".into());
    }
    if served > 0 {
        failures.push(format!("{served} requests of revoked sessions served"));
    }
    if refused + served == 0 {
        failures.push("no revocation was exercised (run longer or lower --churn-seconds)".into());
    }
    if failures.is_empty() {
        println!("VERDICT store={store} PASS: 0 unexpected errors, 0 refresh-token reuse, RSS and fds flat, {refused} revoked requests all refused");
        Ok(true)
    } else {
        println!("VERDICT store={store} FAIL: {}", failures.join("; "));
        Ok(false)
    }
}
