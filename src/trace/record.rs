//! The spans of one sampled request, recorded while it is served — only when an exporter is
//! configured (`telemetry.otlp_endpoint`) and the request's trace is sampled; otherwise nothing
//! here runs beyond a check that finds no recording.
//!
//! The request's own span (kind server) is made when the request ends
//! (`pipeline/finish.rs`); its children are timed where they happen: the refresh and the bearer
//! token's check in the pipeline (through the request's [`super::RequestTrace`]), each Redis
//! command in `session::redis` (through a task-local, [`child_of_current`]), the upstream request
//! in `pipeline/forward.rs`. A child's parent is the span in force where it starts
//! ([`super::within`]): a Redis command made for a refresh is a child of the refresh.
//!
//! Attributes are chosen, never copied from the request: no token, cookie, email, query string
//! or header value is recorded (the request id, the client's `X-Request-Id` when it sent a sane
//! one, apart), and each is bounded in size.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{TraceParent, CURRENT};

/// What a span is to its trace (OTLP's `SpanKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// The request the proxy serves.
    Server,
    /// A call the proxy makes (the app, Redis).
    Client,
    /// Work of the proxy's own that may call others (a refresh, a token check).
    Internal,
}

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Text.
    Text(Cow<'static, str>),
    /// An integer.
    Int(i64),
}

impl From<&'static str> for Value {
    fn from(text: &'static str) -> Value {
        Value::Text(Cow::Borrowed(text))
    }
}

impl Value {
    /// A method's name, without an allocation for the standard ones.
    pub fn method(method: &http::Method) -> Value {
        Value::Text(method_name(method))
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn bounded(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A method's name, without an allocation for the standard ones; any other method is `_OTHER`
/// (OpenTelemetry's convention: a client's made-up methods do not make names or values of their
/// own).
pub fn method_name(method: &http::Method) -> Cow<'static, str> {
    const STANDARD: [(http::Method, &str); 9] = [
        (http::Method::GET, "GET"),
        (http::Method::POST, "POST"),
        (http::Method::PUT, "PUT"),
        (http::Method::DELETE, "DELETE"),
        (http::Method::HEAD, "HEAD"),
        (http::Method::OPTIONS, "OPTIONS"),
        (http::Method::PATCH, "PATCH"),
        (http::Method::CONNECT, "CONNECT"),
        (http::Method::TRACE, "TRACE"),
    ];
    match STANDARD.iter().find(|(m, _)| m == method) {
        Some((_, name)) => Cow::Borrowed(name),
        None => Cow::Borrowed("_OTHER"),
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::Text(Cow::Owned(text))
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

/// One finished span.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    /// Its trace.
    pub trace_id: [u8; 16],
    /// Its own id.
    pub span_id: [u8; 8],
    /// Its parent's id: the caller's span for the request's own span of a continued trace.
    pub parent: Option<[u8; 8]>,
    /// Its name: low-cardinality (`GET`, `GET /.trousseau/auth`, `refresh`, `redis`).
    pub name: Cow<'static, str>,
    /// Its kind.
    pub kind: SpanKind,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// Its attributes (OpenTelemetry's semantic conventions where one fits, else `trousseau.*`).
    pub attributes: Vec<(&'static str, Value)>,
    /// Whether it failed (OTLP status `ERROR`).
    pub error: bool,
}

/// What the request's span says of how it was judged, noted along the way.
#[derive(Clone, Copy, Debug)]
struct Notes {
    route: &'static str,
    session: &'static str,
}

/// The spans of one request being recorded: its own span's place, its children as they end, and
/// the notes its span will carry.
#[derive(Debug)]
pub struct Recording {
    span: TraceParent,
    /// The request's start on the wall clock and on the monotonic one: spans' times are
    /// offsets from it, so a clock step during a request cannot make a span end before it starts.
    started_unix_nanos: u64,
    started: Instant,
    children: Mutex<Vec<SpanRecord>>,
    notes: Mutex<Notes>,
}

impl Recording {
    /// Starts recording the request whose span is `span`, begun at `started`.
    pub fn new(span: TraceParent, started: Instant) -> Arc<Recording> {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().saturating_sub(started.elapsed());
        Arc::new(Recording {
            span,
            started_unix_nanos: since_epoch.as_nanos() as u64,
            started,
            children: Mutex::new(Vec::new()),
            notes: Mutex::new(Notes { route: "protected", session: "none" }),
        })
    }

    /// `at` on the wall clock, in nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self, at: Instant) -> u64 {
        self.started_unix_nanos + at.saturating_duration_since(self.started).as_nanos() as u64
    }

    /// Starts timing a child span of `parent` (the request's own span when `None`); it is
    /// recorded when dropped.
    pub fn child(self: &Arc<Self>, name: impl Into<Cow<'static, str>>, kind: SpanKind, parent: Option<[u8; 8]>) -> ChildSpan {
        ChildSpan {
            recording: Arc::clone(self),
            span: self.span.child(),
            parent: parent.unwrap_or(self.span.span_id),
            name: name.into(),
            kind,
            started: Instant::now(),
            attributes: Vec::new(),
            error: false,
        }
    }

    /// Notes how the route was judged: `reserved`, `public`, `preflight`, `protected`, `denied`, …
    pub fn note_route(&self, route: &'static str) {
        if let Ok(mut notes) = self.notes.lock() {
            notes.route = route;
        }
    }

    /// Notes what became of the session: `none` (the default), `valid`, `refreshed`, `ended`
    /// (Trousseau refused its refresh), `revoked`, `bearer`.
    pub fn note_session(&self, session: &'static str) {
        if let Ok(mut notes) = self.notes.lock() {
            notes.session = session;
        }
    }

    /// The notes: route, session.
    pub fn notes(&self) -> (&'static str, &'static str) {
        self.notes.lock().map(|n| (n.route, n.session)).unwrap_or(("protected", "none"))
    }

    /// The children ended so far, taken out.
    pub fn take_children(&self) -> Vec<SpanRecord> {
        self.children.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default()
    }

    /// The request's own span.
    pub fn span(&self) -> TraceParent {
        self.span
    }

    /// When the request began.
    pub fn started(&self) -> Instant {
        self.started
    }
}

/// A child span being timed, recorded when dropped.
pub struct ChildSpan {
    recording: Arc<Recording>,
    span: TraceParent,
    parent: [u8; 8],
    name: Cow<'static, str>,
    kind: SpanKind,
    started: Instant,
    attributes: Vec<(&'static str, Value)>,
    error: bool,
}

impl ChildSpan {
    /// Its place in the trace: the parent of what is called within it ([`super::within`]).
    pub fn span(&self) -> TraceParent {
        self.span
    }

    /// Sets an attribute.
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        self.attributes.push((key, value.into()));
    }

    /// Marks it failed.
    pub fn fail(&mut self) {
        self.error = true;
    }
}

impl Drop for ChildSpan {
    fn drop(&mut self) {
        let record = SpanRecord {
            trace_id: self.span.trace_id,
            span_id: self.span.span_id,
            parent: Some(self.parent),
            name: std::mem::take(&mut self.name),
            kind: self.kind,
            start_unix_nanos: self.recording.unix_nanos(self.started),
            end_unix_nanos: self.recording.unix_nanos(Instant::now()),
            attributes: std::mem::take(&mut self.attributes),
            error: self.error,
        };
        if let Ok(mut children) = self.recording.children.lock() {
            children.push(record);
        }
    }
}

tokio::task_local! {
    /// The request being recorded, for the code that has no request at hand (Redis).
    static RECORDING: Arc<Recording>;
}

/// Runs `work` with `recording`, when there is one, reachable by [`child_of_current`] and
/// [`note_session`]; else as it is. Boxed when recorded: only a recorded request pays for the
/// scope. (Not an `async fn`: that would hold `work` twice, and it is the whole request.)
pub fn maybe_recording<F: std::future::Future>(recording: Option<Arc<Recording>>, work: F) -> impl std::future::Future<Output = F::Output> {
    use futures_util::future::Either;
    match recording {
        Some(r) => Either::Left(Box::pin(RECORDING.scope(r, work))),
        None => Either::Right(work),
    }
}

/// A child span of the span in force, when the request being served is recorded.
pub fn child_of_current(name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Option<ChildSpan> {
    let parent = CURRENT.try_with(|span| span.span_id).ok();
    RECORDING.try_with(|r| r.child(name, kind, parent)).ok()
}

/// Notes the session's fate on the request being recorded, if any (for code without the request
/// at hand: a revoked session found by the store).
pub fn note_session(session: &'static str) {
    let _ = RECORDING.try_with(|r| r.note_session(session));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn children_are_recorded_under_the_span_in_force() {
        let request = TraceParent::new_root(true);
        let rec = Recording::new(request, Instant::now());
        assert!(child_of_current("outside", SpanKind::Client).is_none(), "nothing recorded outside a recording");
        maybe_recording(Some(Arc::clone(&rec)), async {
            let refresh = rec.child("refresh", SpanKind::Internal, None);
            super::super::within(refresh.span(), async {
                let mut redis = child_of_current("redis GET", SpanKind::Client).expect("recording");
                redis.set("db.system.name", "redis");
            })
            .await;
            note_session("revoked");
        })
        .await;
        let children = rec.take_children();
        let [redis, refresh] = children.as_slice() else { panic!("{children:?}") };
        assert_eq!((redis.name.as_ref(), refresh.name.as_ref()), ("redis GET", "refresh"));
        assert_eq!(refresh.parent, Some(request.span_id));
        assert_eq!(redis.parent, Some(refresh.span_id), "a command made for the refresh is its child");
        assert!(redis.trace_id == request.trace_id && refresh.start_unix_nanos <= redis.start_unix_nanos && redis.end_unix_nanos <= refresh.end_unix_nanos);
        assert_eq!(rec.notes(), ("protected", "revoked"));
    }
}
