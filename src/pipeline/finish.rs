//! Phase 7, for every request however it ended: the cookies decided along the way, the request
//! id back to the client, one metrics outcome, one access line.

use std::net::SocketAddr;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::{lang, RequestCtx, X_REQUEST_ID};
use crate::answer;
use crate::app::App;
use crate::body::Body;
use crate::limits::Refusal;
use crate::logging::Access;
use crate::metrics::{AnsweredBy, Outcome};
use crate::request::is_browser_navigation;
use crate::trace::record::{Recording, SpanKind, SpanRecord, Value};

/// What the access line says about the request, taken before the request is consumed.
pub(super) struct Line {
    method: Method,
    path: String,
}

impl Line {
    /// The request's method and path (never the query: it may carry secrets).
    pub(super) fn of<B>(req: &Request<B>) -> Line {
        Line { method: req.method().clone(), path: req.uri().path().to_string() }
    }
}

/// A value new with every response (the request id), marked for HTTP/2 to send as a literal
/// (HPACK "never indexed"), as nginx sends every response header. Indexed, each one took a place in
/// the connection's header table for nothing, and h2 looked the next one up by comparing it with
/// every earlier one still there: ~50 comparisons a response, 8% of an HTTP/2 request's
/// instructions. HTTP/1.1 ignores the mark.
fn unindexed(value: &HeaderValue) -> HeaderValue {
    let mut value = value.clone();
    value.set_sensitive(true);
    value
}

/// Completes the answer. May change: the response's headers.
pub(super) fn finish(app: &App, mut response: Response<Body>, mut ctx: RequestCtx, line: &Line, started: Instant) -> Response<Body> {
    app.metrics.request(Outcome::classify(ctx.answered_by, response.status()));
    for value in ctx.jar.outgoing.drain(..) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response.headers_mut().insert(X_REQUEST_ID.clone(), unindexed(&ctx.request_id));
    if let Some(origin) = ctx.cors_origin.take().filter(|_| ctx.answered_by != AnsweredBy::Upstream) {
        // Our own answer, to an allowed origin: its code may read it (the app's answers carry the
        // app's own CORS headers).
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    crate::logging::access(&Access {
        method: line.method.as_str(),
        path: &line.path,
        status: response.status().as_u16(),
        latency: started.elapsed(),
        sub: ctx.sub.as_deref().unwrap_or("-"),
        request_id: ctx.request_id.to_str().unwrap_or("-"),
        trace_id: ctx.trace.span.trace_id_hex().as_str(),
    });
    if let (Some(recording), Some(exporter)) = (ctx.trace.recording.take(), &app.exporter) {
        exporter.submit(request_span(app, &recording, &ctx, line, response.status()), recording.take_children());
    }
    response
}

/// The proxy's endpoints under `/.trousseau/`, as a request's span names them.
const ENDPOINTS: [&str; 11] =
    ["healthz", "readyz", "jwks.json", "login", "callback", "logout", "auth", "backchannel-logout", "organizations", "userinfo", "session"];

/// The most of a path a span carries: a span's size is bounded, whatever a client sends (the
/// queue counts spans, not bytes).
const MAX_PATH: usize = 1024;

/// The span of a recorded request (kind server, named by its method — and by the endpoint for
/// the proxy's own paths, a handful). It ends here, at the answer's headers; a streamed body or a
/// websocket goes on without it.
fn request_span(app: &App, recording: &Recording, ctx: &RequestCtx, line: &Line, status: http::StatusCode) -> SpanRecord {
    let (route, session) = recording.notes();
    let method = crate::trace::record::method_name(&line.method);
    let name = match line.path.strip_prefix(super::RESERVED_PREFIX) {
        // The proxy's own endpoints by name, a fixed handful: a client's made-up path is `*`.
        Some(rest) => {
            let endpoint = rest.split('/').next().unwrap_or_default();
            let endpoint = ENDPOINTS.iter().find(|e| **e == endpoint).copied().unwrap_or("*");
            format!("{method} {}{endpoint}", super::RESERVED_PREFIX).into()
        }
        None => method.clone(),
    };
    let mut attributes: Vec<(&'static str, Value)> = vec![
        ("http.request.method", Value::Text(method)),
        ("url.path", Value::from(crate::trace::record::bounded(&line.path, MAX_PATH).to_string())),
        ("http.response.status_code", Value::Int(i64::from(status.as_u16()))),
        ("trousseau.route", Value::from(route)),
        ("trousseau.session", Value::from(session)),
        ("trousseau.request_id", Value::from(ctx.request_id.to_str().unwrap_or("-").to_string())),
    ];
    if let Some(sub) = ctx.sub.as_ref().filter(|_| app.settings.telemetry.include_sub) {
        attributes.push(("enduser.id", Value::from(sub.clone())));
    }
    let span = recording.span();
    SpanRecord {
        trace_id: span.trace_id,
        span_id: span.span_id,
        parent: ctx.trace.parent,
        name,
        kind: SpanKind::Server,
        start_unix_nanos: recording.unix_nanos(recording.started()),
        end_unix_nanos: recording.unix_nanos(Instant::now()),
        attributes,
        error: status.is_server_error(),
    }
}

/// The answer to a request refused by a limit before it entered the pipeline (429 for one
/// client, 503 for everyone), counted and logged like any other; a warning at most once a
/// second says who is being refused.
pub(crate) fn refused(app: &App, req: &Request<Incoming>, peer: SocketAddr, refusal: Refusal) -> Response<Body> {
    let started = Instant::now();
    app.metrics.request(Outcome::Limited);
    static WARNING: crate::logging::LogBudget = crate::logging::LogBudget::every_second();
    if let Some(unlogged) = WARNING.take() {
        let (limit, value) = match refusal {
            Refusal::PerClient => ("limits.max_requests_per_client", app.limits.settings().max_requests_per_client),
            Refusal::InFlight => ("limits.max_requests_in_flight", app.limits.settings().max_requests_in_flight),
        };
        tracing::warn!(client = %peer.ip(), limit, value, unlogged, "request refused: too many requests in flight");
    }
    let mut response = answer::over_limit(is_browser_navigation(req), lang(req.headers(), None), refusal);
    let request_id = super::sanitize::new_request_id();
    response.headers_mut().insert(X_REQUEST_ID.clone(), unindexed(&request_id));
    crate::logging::access(&Access {
        method: req.method().as_str(),
        path: req.uri().path(),
        status: response.status().as_u16(),
        latency: started.elapsed(),
        sub: "-",
        request_id: request_id.to_str().unwrap_or("-"),
        // The caller's trace when it sent one and is trusted to (a new one otherwise, though
        // nothing goes further).
        trace_id: super::sanitize::trace_of(app, req.headers(), 0.0).span.trace_id_hex().as_str(),
    });
    response
}
