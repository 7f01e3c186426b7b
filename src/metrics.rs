//! Prometheus metrics: what the proxy counts on the request path, and the `metrics_listen` admin
//! listener that serves them as text (exposition format 0.0.4).
//!
//! Everything here is plain atomics bumped on the request path and read only when `/metrics` is
//! scraped, so counting costs a few relaxed increments per request and nothing else. Counters that
//! belong to another module (the refresher's [`RefreshStats`], the IdP client's latency
//! [`Histogram`]) stay there and are read at render time through [`Sources`]; this module owns
//! only the names, the help texts and the format.
//!
//! The exposed series, all prefixed `trousseau_proxy_`:
//! `requests_total{outcome}`, `upstream_duration_seconds` (histogram), `refreshes_total{result}`,
//! `idp_request_duration_seconds` (histogram), `backchannel_revocations_total`,
//! `revocations_held`, `revocations_bytes`, `revocations_evicted_total`, `config_reloads_total`, `config_reload_failures_total`,
//! `config_last_reload_success_timestamp_seconds`, `sign_ins_total{stage}`, `sign_in_flows_active`, `build_info{version}`, and
//! the limits' `connections_open{listener}`, `connections_refused_total{listener}`,
//! `connections_closed_total{reason}`, `requests_in_flight`, `requests_refused_total{limit}`,
//! `responses_abandoned_total` and `client_faults_total{kind}`; `connections_ended_total{reason}`
//! and `session_connections` (websockets and streams tied to a session); `session_cookie_bytes`
//! (histogram); `trace_spans_exported_total` and `trace_spans_dropped_total{reason}` (the OTLP
//! export, `crate::trace::otlp`); and, with the worker threads of
//! `run`, `worker_connections_open{worker}` and `connections_handed_over_total`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::limits::inflight::InFlight;
use crate::limits::connection::{Connection, ListenerKind};
use crate::limits::listener::serve_connections;
use crate::limits::{ClientFault, CloseReason, Limits, Refusal};
use crate::session::refresh::RefreshStats;

/// `Content-Type` of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upstream latency buckets (seconds): an app on the same host answers in well under a
/// millisecond, a slow report in tens of seconds (the default `response_timeout` is 60s).
pub const UPSTREAM_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

pub use crate::util::histogram::{Histogram, IDP_BUCKETS};

/// How long a sign-in flow counts as active: the lifetime of its state cookie.
const SIGN_IN_WINDOW_MINUTES: u64 = 10;

/// Who produced the answer to a request; set by the request path, read by [`Outcome::classify`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnsweredBy {
    /// The proxy itself on an app path (sign-in redirect, 401, 403, 502, 503…).
    #[default]
    Proxy,
    /// One of the proxy's `/.trousseau/` endpoints.
    Reserved,
    /// The upstream app (its own status, whatever it is).
    Upstream,
}

/// What became of one request, as counted in `trousseau_proxy_requests_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered (below 500).
    Proxied,
    /// A browser was sent to sign in (or to pick its organization, the last step of signing in).
    RedirectedToSignIn,
    /// 401 for a client without a (valid) session.
    Unauthenticated401,
    /// 403: the policy refused.
    Forbidden403,
    /// The upstream answered 5xx, could not be reached, or timed out (our 502/504).
    Upstream5xx,
    /// 503: Trousseau was needed and could not be reached.
    Unavailable503,
    /// Refused by a limit: 429 (too many requests from one client) or 503 (from everyone).
    Limited,
    /// The client's fault: 400 (malformed or broken request body, unforwardable request) or 408
    /// (a request body too slow).
    ClientError,
    /// A `/.trousseau/` endpoint (sign-in callback, logout, forward-auth, health…).
    Reserved,
    /// Anything else the proxy answered on an app path (not expected; counted so totals add up).
    Other,
}

impl Outcome {
    /// Every outcome, in exposition order.
    pub const ALL: [Outcome; 10] = [
        Outcome::Proxied,
        Outcome::RedirectedToSignIn,
        Outcome::Unauthenticated401,
        Outcome::Forbidden403,
        Outcome::Upstream5xx,
        Outcome::Unavailable503,
        Outcome::Limited,
        Outcome::ClientError,
        Outcome::Reserved,
        Outcome::Other,
    ];

    /// The `outcome` label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Proxied => "proxied",
            Outcome::RedirectedToSignIn => "redirected_to_sign_in",
            Outcome::Unauthenticated401 => "unauthenticated_401",
            Outcome::Forbidden403 => "forbidden_403",
            Outcome::Upstream5xx => "upstream_5xx",
            Outcome::Unavailable503 => "unavailable_503",
            Outcome::Limited => "limited",
            Outcome::ClientError => "client_error",
            Outcome::Reserved => "reserved",
            Outcome::Other => "other",
        }
    }

    /// Classifies a finished request by who answered and with which status.
    pub fn classify(answered_by: AnsweredBy, status: StatusCode) -> Outcome {
        match answered_by {
            AnsweredBy::Reserved => Outcome::Reserved,
            AnsweredBy::Upstream if status.is_server_error() => Outcome::Upstream5xx,
            AnsweredBy::Upstream => Outcome::Proxied,
            AnsweredBy::Proxy => match status {
                StatusCode::UNAUTHORIZED => Outcome::Unauthenticated401,
                StatusCode::FORBIDDEN => Outcome::Forbidden403,
                StatusCode::SERVICE_UNAVAILABLE => Outcome::Unavailable503,
                StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => Outcome::Upstream5xx,
                StatusCode::TOO_MANY_REQUESTS => Outcome::Limited,
                StatusCode::BAD_REQUEST | StatusCode::REQUEST_TIMEOUT => Outcome::ClientError,
                s if s.is_redirection() => Outcome::RedirectedToSignIn,
                _ => Outcome::Other,
            },
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Sign-in flows started and completed per minute over the last ten minutes: the flows still in
/// progress are those started minus those completed in that window (a state cookie lives ten
/// minutes, so older flows cannot complete anymore). Only sign-ins touch it, so a mutex is fine.
#[derive(Debug)]
struct SignInFlows {
    epoch: Instant,
    /// `(minute since epoch, started, completed)`, one slot per minute of the window.
    slots: Mutex<[(u64, u64, u64); SIGN_IN_WINDOW_MINUTES as usize]>,
}

impl SignInFlows {
    fn new() -> SignInFlows {
        SignInFlows { epoch: Instant::now(), slots: Mutex::new([(u64::MAX, 0, 0); SIGN_IN_WINDOW_MINUTES as usize]) }
    }

    fn minute(&self) -> u64 {
        self.epoch.elapsed().as_secs() / 60
    }

    fn record(&self, minute: u64, started: u64, completed: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = &mut slots[(minute % SIGN_IN_WINDOW_MINUTES) as usize];
        if slot.0 != minute {
            *slot = (minute, 0, 0);
        }
        slot.1 += started;
        slot.2 += completed;
    }

    fn active(&self, minute: u64) -> u64 {
        let slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let window = slots.iter().filter(|(m, _, _)| *m <= minute && minute - *m < SIGN_IN_WINDOW_MINUTES);
        let (started, completed) = window.fold((0u64, 0u64), |(s, c), slot| (s + slot.1, c + slot.2));
        started.saturating_sub(completed)
    }
}

/// The request path's counters. One per [`crate::app::App`]; cheap to bump from any thread.
#[derive(Debug)]
pub struct Metrics {
    requests: [AtomicU64; Outcome::ALL.len()],
    upstream_latency: Histogram,
    backchannel_revocations: AtomicU64,
    sign_ins_started: AtomicU64,
    sign_ins_completed: AtomicU64,
    sign_in_loops: AtomicU64,
    flows: SignInFlows,
    /// Configuration reloads put in force, and refused.
    config_reloads: [AtomicU64; 2],
    /// Unix seconds of the start, then of the last reload put in force.
    config_loaded_at: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Counters owned by other modules, read when `/metrics` is rendered.
pub struct Sources<'a> {
    /// The refresher's counters.
    pub refresh: &'a RefreshStats,
    /// Latency of every HTTP call to Trousseau (discovery, JWKS, token).
    pub idp_latency: &'a Histogram,
    /// Revoked `sid`s and `sub`s currently remembered.
    pub revocations_held: u64,
    /// Bytes they take (this replica's memory).
    pub revocations_bytes: u64,
    /// Revocations forgotten for want of room before they expired.
    pub revocations_evicted: u64,
    /// The shared Redis, when replicas use one.
    pub redis: Option<&'a crate::session::redis::Redis>,
    /// Connection and request limits, with what they refused.
    pub limits: &'a Limits,
    /// Websockets and streams tied to a session.
    pub open_connections: &'a crate::live::OpenConnections,
    /// Bytes of session cookies set.
    pub cookie_bytes: &'a Histogram,
    /// Spans exported to the OpenTelemetry collector, and dropped.
    pub trace_export: &'a crate::trace::otlp::ExportStats,
}

impl Metrics {
    /// All counters at zero.
    pub fn new() -> Metrics {
        Metrics {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            upstream_latency: Histogram::new(UPSTREAM_BUCKETS),
            backchannel_revocations: AtomicU64::new(0),
            sign_ins_started: AtomicU64::new(0),
            sign_ins_completed: AtomicU64::new(0),
            sign_in_loops: AtomicU64::new(0),
            flows: SignInFlows::new(),
            config_reloads: Default::default(),
            config_loaded_at: AtomicU64::new(crate::util::clock::now_secs()),
        }
    }

    /// Counts a configuration reload: put in force (`true`) or refused, the running one kept.
    pub fn config_reload(&self, in_force: bool) {
        self.config_reloads[usize::from(!in_force)].fetch_add(1, Ordering::Relaxed);
        if in_force {
            self.config_loaded_at.store(crate::util::clock::now_secs(), Ordering::Relaxed);
        }
    }

    /// Configuration reloads put in force (`true`) or refused so far.
    pub fn config_reloads(&self, in_force: bool) -> u64 {
        self.config_reloads[usize::from(!in_force)].load(Ordering::Relaxed)
    }

    /// Counts one finished request.
    pub fn request(&self, outcome: Outcome) {
        self.requests[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests ended with `outcome` (for tests and logs).
    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests[outcome.index()].load(Ordering::Relaxed)
    }

    /// Records how long the upstream took to answer (or to fail).
    pub fn upstream_latency(&self, duration: Duration) {
        self.upstream_latency.observe(duration);
    }

    /// Counts one accepted back-channel logout.
    pub fn backchannel_revocation(&self) {
        self.backchannel_revocations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one sign-in sent to Trousseau.
    pub fn sign_in_started(&self) {
        self.sign_ins_started.fetch_add(1, Ordering::Relaxed);
        self.flows.record(self.flows.minute(), 1, 0);
    }

    /// Counts one sign-in that came back and became a session.
    pub fn sign_in_completed(&self) {
        self.sign_ins_completed.fetch_add(1, Ordering::Relaxed);
        self.flows.record(self.flows.minute(), 0, 1);
    }

    /// Counts one sign-in not started because the browser was looping (its session never came back).
    pub fn sign_in_loop(&self) {
        self.sign_in_loops.fetch_add(1, Ordering::Relaxed);
    }

    /// The whole exposition, ready to serve.
    pub fn render(&self, sources: &Sources<'_>) -> String {
        let mut out = Exposition::default();
        let requests: Vec<(&str, u64)> = Outcome::ALL.iter().map(|&o| (o.label(), self.requests(o))).collect();
        out.labelled(
            "trousseau_proxy_requests_total",
            "counter",
            "Requests by what became of them.",
            "outcome",
            &requests,
        );
        out.histogram(
            "trousseau_proxy_upstream_duration_seconds",
            "Time from forwarding a request to the upstream's response headers (or its failure).",
            &self.upstream_latency,
        );
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.labelled(
            "trousseau_proxy_refreshes_total",
            "counter",
            "Token refreshes: calls to Trousseau that succeeded or failed, and requests that joined another request's refresh.",
            "result",
            &[("ok", load(&sources.refresh.ok)), ("failed", load(&sources.refresh.failed)), ("coalesced", load(&sources.refresh.coalesced))],
        );
        out.histogram(
            "trousseau_proxy_idp_request_duration_seconds",
            "Duration of HTTP calls to Trousseau (discovery, JWKS, token endpoint), including failed ones.",
            sources.idp_latency,
        );
        out.single(
            "trousseau_proxy_backchannel_revocations_total",
            "counter",
            "Back-channel logout tokens accepted: each ends the sessions of one sid (or sub).",
            load(&self.backchannel_revocations),
        );
        self.state_families(&mut out, sources);
        self.sign_in_families(&mut out);
        limit_families(&mut out, sources.limits);
        let ended: Vec<(&str, u64)> = sources.open_connections.ended().map(|(reason, n)| (reason.as_str(), n)).collect();
        out.labelled(
            "trousseau_proxy_connections_ended_total",
            "counter",
            "Websockets and streams the proxy ended because their session ended, by why the session ended.",
            "reason",
            &ended,
        );
        out.histogram(
            "trousseau_proxy_session_cookie_bytes",
            "Bytes of the session cookies set on one response (all chunks; a store's handle). Browsers keep about 4 KB per cookie; nginx's default header buffers are 8 KB.",
            sources.cookie_bytes,
        );
        out.single(
            "trousseau_proxy_trace_spans_exported_total",
            "counter",
            "Spans the OpenTelemetry collector accepted (telemetry.otlp_endpoint).",
            load(&sources.trace_export.exported),
        );
        out.labelled(
            "trousseau_proxy_trace_spans_dropped_total",
            "counter",
            "Spans not exported: the queue was full (the collector slow or down a while), or their export failed. Requests never wait for the collector.",
            "reason",
            &[("queue_full", load(&sources.trace_export.dropped_queue_full)), ("export_failed", load(&sources.trace_export.dropped_export_failed))],
        );
        out.single(
            "trousseau_proxy_session_connections",
            "gauge",
            "Websockets and long responses open for a session, as of the last sweep (once a second).",
            sources.open_connections.open(),
        );
        out.labelled(
            "trousseau_proxy_build_info",
            "gauge",
            "The running build; always 1.",
            "version",
            &[(env!("CARGO_PKG_VERSION"), 1)],
        );
        out.text
    }

    /// The configuration reloads, the revocation set, Redis.
    fn state_families(&self, out: &mut Exposition, sources: &Sources) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.single(
            "trousseau_proxy_config_reloads_total",
            "counter",
            "Configuration reloads (SIGHUP, a changed file) put in force.",
            load(&self.config_reloads[0]),
        );
        out.single(
            "trousseau_proxy_config_reload_failures_total",
            "counter",
            "Configuration reloads refused (invalid, or a change that needs a restart): the running configuration was kept.",
            load(&self.config_reloads[1]),
        );
        out.single(
            "trousseau_proxy_config_last_reload_success_timestamp_seconds",
            "gauge",
            "When the configuration in force was loaded (unix seconds): the start, or the last reload put in force.",
            load(&self.config_loaded_at),
        );
        out.single(
            "trousseau_proxy_revocations_held",
            "gauge",
            "Revoked Trousseau sessions and users currently remembered (counted lazily: approximate).",
            sources.revocations_held,
        );
        out.single(
            "trousseau_proxy_revocations_bytes",
            "gauge",
            "Bytes this replica's revocation set holds (weighed keys; approximate), each map bounded at 64 MiB.",
            sources.revocations_bytes,
        );
        out.single(
            "trousseau_proxy_revocations_evicted_total",
            "counter",
            "Revocations forgotten for want of room before they expired: a copied cookie of such a session would be accepted again (use session.revocations: redis).",
            sources.revocations_evicted,
        );
        if let Some(redis) = sources.redis {
            out.single(
                "trousseau_proxy_redis_up",
                "gauge",
                "Whether the last Redis command succeeded (1) or not (0); requests that need Redis get 503 while it is 0.",
                u64::from(redis.is_up().unwrap_or(true)),
            );
            out.labelled(
                "trousseau_proxy_redis_commands_total",
                "counter",
                "Redis commands (sessions, revocations, refresh coordination) that succeeded or failed.",
                "result",
                &[("ok", load(&redis.stats().commands_ok)), ("failed", load(&redis.stats().commands_failed))],
            );
        }
    }

    /// Sign-ins: started, completed, loops stopped, flows in progress.
    fn sign_in_families(&self, out: &mut Exposition) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.labelled(
            "trousseau_proxy_sign_ins_total",
            "counter",
            "Sign-ins sent to Trousseau (started), come back as a session (completed), and not started because the browser's earlier sessions never came back (loop_stopped).",
            "stage",
            &[("started", load(&self.sign_ins_started)), ("completed", load(&self.sign_ins_completed)), ("loop_stopped", load(&self.sign_in_loops))],
        );
        out.single(
            "trousseau_proxy_sign_in_flows_active",
            "gauge",
            "Sign-ins started in the last 10 minutes and not completed (yet).",
            self.flows.active(self.flows.minute()),
        );
    }
}

/// What the limits counted ([`crate::limits`]).
fn limit_families(out: &mut Exposition, limits: &Limits) {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let listeners = [ListenerKind::Main, ListenerKind::Metrics, ListenerKind::Redirect, ListenerKind::GrpcAuthz];
    let open: Vec<(&str, u64)> = listeners.iter().map(|&k| (k.label(), limits.listener(k).open.load(Ordering::Relaxed) as u64)).collect();
    out.labelled(
        "trousseau_proxy_connections_open",
        "gauge",
        "Client connections open now, by listener (a websocket counts until its tunnel closes).",
        "listener",
        &open,
    );
    if let Some(balance) = limits.balance() {
        let names: Vec<String> = (0..balance.open_by_worker().len()).map(|i| i.to_string()).collect();
        let by_worker: Vec<(&str, u64)> = names.iter().map(String::as_str).zip(balance.open_by_worker().into_iter().map(|n| n as u64)).collect();
        out.labelled(
            "trousseau_proxy_worker_connections_open",
            "gauge",
            "Client connections of the main listener each worker thread holds now.",
            "worker",
            &by_worker,
        );
        out.single(
            "trousseau_proxy_connections_handed_over_total",
            "counter",
            "Connections a worker accepted and handed to a less loaded one.",
            balance.handed_over(),
        );
    }
    let refused: Vec<(&str, u64)> = listeners.iter().map(|&k| (k.label(), load(&limits.listener(k).refused))).collect();
    out.labelled(
        "trousseau_proxy_connections_refused_total",
        "counter",
        "Connections closed on arrival because the listener was full (limits.max_connections) and no idle connection could make room.",
        "listener",
        &refused,
    );
    let closed: Vec<(&str, u64)> = CloseReason::ALL.iter().map(|&r| (r.label(), limits.closed(r))).collect();
    out.labelled(
        "trousseau_proxy_connections_closed_total",
        "counter",
        "Connections the proxy closed: no request head in time, idle too long, a response not read, or evicted to make room for a new one.",
        "reason",
        &closed,
    );
    out.single(
        "trousseau_proxy_requests_in_flight",
        "gauge",
        "Requests being served now, response bodies included (limits.max_requests_in_flight).",
        limits.in_flight() as u64,
    );
    out.labelled(
        "trousseau_proxy_requests_refused_total",
        "counter",
        "Requests refused by a limit: everyone's in flight (503) or one client's (429).",
        "limit",
        &[(Refusal::InFlight.label(), limits.refused(Refusal::InFlight)), (Refusal::PerClient.label(), limits.refused(Refusal::PerClient))],
    );
    out.single(
        "trousseau_proxy_responses_abandoned_total",
        "counter",
        "Responses the client stopped reading for limits.send_timeout: their connection to the app was dropped.",
        limits.abandoned(),
    );
    out.labelled(
        "trousseau_proxy_client_faults_total",
        "counter",
        "Requests that failed through the client's fault: a request body broken off or malformed (400), or too slow (408).",
        "kind",
        &[(ClientFault::BrokenBody.label(), limits.faults(ClientFault::BrokenBody)), (ClientFault::SlowBody.label(), limits.faults(ClientFault::SlowBody))],
    );
}

/// Writes the text exposition format, one metric family at a time.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.header(name, kind, help);
        let _ = writeln!(self.text, "{name} {value}");
    }

    fn labelled(&mut self, name: &str, kind: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        self.header(name, kind, help);
        for (label_value, value) in values {
            let _ = writeln!(self.text, "{name}{{{label}=\"{}\"}} {value}", escape_label(label_value));
        }
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.header(name, "histogram", help);
        let mut cumulative = 0u64;
        for (i, count) in histogram.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            match histogram.bounds.get(i) {
                Some(le) => {
                    let _ = writeln!(self.text, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(self.text, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 * histogram.sum_scale;
        let _ = writeln!(self.text, "{name}_sum {sum}");
        let _ = writeln!(self.text, "{name}_count {cumulative}");
    }
}

/// HELP text escaping: backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label value escaping: backslash, double quote and line feed.
fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Serves `GET /metrics` (and `/`, for a quick look) on `listener` with whatever `render` returns,
/// until `shutdown` completes. Anything else is 404; the admin listener serves nothing else. Its
/// connections are held to the same header and idle timeouts as the main listener's, under a cap
/// of their own (`limits.metrics_max_connections`), so a flood here cannot take descriptors from
/// the main listener.
pub async fn serve_metrics<F>(listener: TcpListener, render: F, limits: Arc<Limits>, shutdown: impl std::future::Future<Output = ()>)
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    let handler = move |req: Request<Incoming>, conn: &Arc<Connection>| {
        let flight = InFlight::begin(conn, &req);
        let response = metrics_answer(&req, render.as_ref()).map(|body| flight.respond(body));
        std::future::ready(response)
    };
    serve_connections(crate::limits::listener::Listening::plain(listener), limits, ListenerKind::Metrics, handler, shutdown, Duration::from_secs(1), None).await;
}

fn metrics_answer(req: &Request<Incoming>, render: &(dyn Fn() -> String + Send + Sync)) -> Response<Body> {
    let found = matches!(*req.method(), Method::GET | Method::HEAD) && matches!(req.uri().path(), "/metrics" | "/");
    let (status, content_type, text) = if found {
        (StatusCode::OK, CONTENT_TYPE, render())
    } else {
        (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found: the metrics are at /metrics\n".to_string())
    };
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(metrics: &Metrics, refresh: &RefreshStats, idp: &Histogram) -> String {
        let limits = Limits::new(crate::limits::LimitSettings::default());
        metrics.render(&Sources { refresh, idp_latency: idp, revocations_held: 2, revocations_bytes: 300, revocations_evicted: 0, redis: None, limits: &limits, open_connections: &crate::live::OpenConnections::new(true, None, String::new()), cookie_bytes: &Histogram::of_sizes(crate::util::histogram::COOKIE_BYTES_BUCKETS), trace_export: &Default::default() })
    }

    /// The value of the sample line `series` (name and labels exactly as written).
    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = render(&Metrics::new(), &RefreshStats::default(), &Histogram::new(IDP_BUCKETS));
        let mut declared: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has a text");
                assert!(!help.is_empty());
                assert!(declared.iter().all(|(n, _)| n != name), "{name} declared twice");
                declared.push((name.to_string(), String::new()));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let last = declared.last_mut().expect("TYPE after HELP");
                assert_eq!(last.0, name, "TYPE follows its HELP");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{kind}");
                last.1 = kind.to_string();
            } else {
                let series = line.split([' ', '{']).next().unwrap();
                let (family, kind) = declared.last().expect("samples after their TYPE");
                let ok = match kind.as_str() {
                    "histogram" => [family.clone() + "_bucket", family.clone() + "_sum", family.clone() + "_count"].contains(&series.to_string()),
                    _ => series == family,
                };
                assert!(ok, "sample {series} outside its family {family}");
                assert!(family.starts_with("trousseau_proxy_"));
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "value of {line}");
            }
        }
        assert!(text.ends_with('\n'));
        let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "trousseau_proxy_requests_total",
            "trousseau_proxy_upstream_duration_seconds",
            "trousseau_proxy_refreshes_total",
            "trousseau_proxy_idp_request_duration_seconds",
            "trousseau_proxy_backchannel_revocations_total",
            "trousseau_proxy_sign_in_flows_active",
            "trousseau_proxy_build_info",
        ] {
            assert!(names.contains(&expected), "{expected} missing from {names:?}");
        }
        assert_eq!(sample(&text, &format!("trousseau_proxy_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1.0);
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let metrics = Metrics::new();
        for ms in [0.3, 0.8, 0.8, 7.0, 120_000.0] {
            metrics.upstream_latency(Duration::from_secs_f64(ms / 1000.0));
        }
        let text = render(&metrics, &RefreshStats::default(), &Histogram::new(IDP_BUCKETS));
        let name = "trousseau_proxy_upstream_duration_seconds";
        assert_eq!(sample(&text, &format!("{name}_bucket{{le=\"0.0005\"}}")), 1.0);
        assert_eq!(sample(&text, &format!("{name}_bucket{{le=\"0.001\"}}")), 3.0);
        assert_eq!(sample(&text, &format!("{name}_bucket{{le=\"0.005\"}}")), 3.0);
        assert_eq!(sample(&text, &format!("{name}_bucket{{le=\"0.01\"}}")), 4.0);
        assert_eq!(sample(&text, &format!("{name}_bucket{{le=\"60\"}}")), 4.0);
        assert_eq!(sample(&text, &format!("{name}_bucket{{le=\"+Inf\"}}")), 5.0);
        assert_eq!(sample(&text, &format!("{name}_count")), 5.0);
        let sum = sample(&text, &format!("{name}_sum"));
        assert!((sum - 120.0089).abs() < 1e-6, "{sum}");

        // Bounds ascend and every bucket holds at least the one before it.
        let buckets: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket")))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(buckets.len(), UPSTREAM_BUCKETS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    }

    #[test]
    fn a_value_on_a_bound_counts_in_that_bucket() {
        let h = Histogram::new(&[0.5, 1.0]);
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(1));
        let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(counts, vec![1, 1, 0]);
    }

    #[test]
    fn outcomes_refreshes_and_revocations_are_counted() {
        let metrics = Metrics::new();
        metrics.request(Outcome::Proxied);
        metrics.request(Outcome::Proxied);
        metrics.request(Outcome::Unauthenticated401);
        metrics.backchannel_revocation();
        let refresh = RefreshStats::default();
        refresh.ok.fetch_add(3, Ordering::Relaxed);
        refresh.coalesced.fetch_add(5, Ordering::Relaxed);
        let idp = Histogram::new(IDP_BUCKETS);
        idp.observe(Duration::from_millis(20));
        let text = render(&metrics, &refresh, &idp);

        assert_eq!(sample(&text, "trousseau_proxy_requests_total{outcome=\"proxied\"}"), 2.0);
        assert_eq!(sample(&text, "trousseau_proxy_requests_total{outcome=\"unauthenticated_401\"}"), 1.0);
        assert_eq!(sample(&text, "trousseau_proxy_requests_total{outcome=\"forbidden_403\"}"), 0.0);
        assert_eq!(sample(&text, "trousseau_proxy_refreshes_total{result=\"ok\"}"), 3.0);
        assert_eq!(sample(&text, "trousseau_proxy_refreshes_total{result=\"failed\"}"), 0.0);
        assert_eq!(sample(&text, "trousseau_proxy_refreshes_total{result=\"coalesced\"}"), 5.0);
        assert_eq!(sample(&text, "trousseau_proxy_idp_request_duration_seconds_count"), 1.0);
        assert_eq!(sample(&text, "trousseau_proxy_idp_request_duration_seconds_bucket{le=\"0.01\"}"), 0.0);
        assert_eq!(sample(&text, "trousseau_proxy_idp_request_duration_seconds_bucket{le=\"0.025\"}"), 1.0);
        assert_eq!(sample(&text, "trousseau_proxy_backchannel_revocations_total"), 1.0);
        assert_eq!(sample(&text, "trousseau_proxy_revocations_held"), 2.0);
    }

    #[test]
    fn requests_are_classified_by_who_answered_and_the_status() {
        use AnsweredBy::*;
        let cases = [
            (Upstream, 200, Outcome::Proxied),
            (Upstream, 404, Outcome::Proxied),
            (Upstream, 101, Outcome::Proxied),
            (Upstream, 500, Outcome::Upstream5xx),
            (Upstream, 503, Outcome::Upstream5xx),
            (Proxy, 302, Outcome::RedirectedToSignIn),
            (Proxy, 401, Outcome::Unauthenticated401),
            (Proxy, 403, Outcome::Forbidden403),
            (Proxy, 502, Outcome::Upstream5xx),
            (Proxy, 504, Outcome::Upstream5xx),
            (Proxy, 503, Outcome::Unavailable503),
            (Proxy, 500, Outcome::Other),
            (Proxy, 429, Outcome::Limited),
            (Proxy, 400, Outcome::ClientError),
            (Proxy, 408, Outcome::ClientError),
            (Upstream, 400, Outcome::Proxied),
            (Reserved, 200, Outcome::Reserved),
            (Reserved, 401, Outcome::Reserved),
        ];
        for (by, status, expected) in cases {
            assert_eq!(Outcome::classify(by, StatusCode::from_u16(status).unwrap()), expected, "{by:?} {status}");
        }
    }

    #[test]
    fn active_sign_in_flows_are_those_of_the_last_ten_minutes_not_completed() {
        let flows = SignInFlows::new();
        flows.record(100, 3, 0);
        flows.record(101, 1, 2);
        assert_eq!(flows.active(101), 2);
        assert_eq!(flows.active(109), 2);
        // Minute 100 has left the window: its starts no longer count, minute 101's completions do.
        assert_eq!(flows.active(110), 0);
        assert_eq!(flows.active(111), 0);
        // A slot is reused for a later minute.
        flows.record(110, 4, 0);
        assert_eq!(flows.active(110), 3);
    }

    #[test]
    fn help_and_label_values_are_escaped() {
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
