//! The request path, top to bottom. [`App::handle`] runs the phases in this order, each a plain
//! function in its own file:
//!
//! 1. [`sanitize`] — nothing the client sent may pose as our identity headers, name one of our
//!    headers in `Connection:`, or reach the app as our cookie; the request gets its id.
//! 2. route — `/.trousseau/…` goes to [`endpoints`]; a public route, or a CORS preflight that
//!    `cors.preflight` lets through, goes straight to step 6 without a session.
//! 3. [`authenticate`] — the session cookie, or an API client's Trousseau access token.
//! 4. [`refresh`] — a new access token when the one behind the session is due.
//! 5. [`authorize`] — the route rules and the organization policy.
//! 6. [`upstream_request`] then [`forward`] — the one place the outgoing request is changed
//!    (identity headers, signed assertion, `X-Forwarded-*`), then the app's answer.
//! 7. [`finish`] — cookies decided along the way, the request id, CORS headers on the proxy's own
//!    answers to an allowed origin, metrics, the access line.
//!
//! A websocket or a streaming answer opened for a session lives on after step 7:
//! [`connections`] watches it until it closes, and ends it when the session ends.
//!
//! A phase that ends the request early returns the answer as the `Err` of a
//! `Result<_, Response<Body>>`, so the steps chain with `?`. Nothing is a trait object or a
//! middleware stack: what runs is what reads here.

// The `Err` of every phase is the answer itself (a `Response`, 128 bytes): moved once, when a
// request ends early. Boxing it would add an allocation to each of those answers for nothing.
#![allow(clippy::result_large_err)]

pub mod connections;
pub mod endpoints;

mod authenticate;
mod authorize;
mod finish;
mod forward;
mod refresh;
mod sanitize;
mod upstream_request;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use crate::app::App;
use crate::body::Body;
use crate::metrics::AnsweredBy;
use crate::pages::Lang;
use crate::forward_auth::{Narrowing, OriginalRequest, AUTH_PATH};
use crate::request::{is_browser_navigation, is_navigation, is_preflight};
use crate::session::sessions::Jar;
use crate::session::Session;

pub(crate) use finish::refused;

/// Prefix of every path the proxy answers itself.
pub const RESERVED_PREFIX: &str = "/.trousseau/";

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// An answer of the proxy's own that ends the request early: the `Err` of every phase.
pub(crate) type Answer = Response<Body>;

/// What one request accumulates on its way through [`App::handle`].
pub(crate) struct RequestCtx {
    /// Its cookies, and the `Set-Cookie` values its answer will carry.
    pub(crate) jar: Jar,
    /// The user's `sub`, once known: for the access line.
    pub(crate) sub: Option<String>,
    pub(crate) peer: SocketAddr,
    pub(crate) request_id: HeaderValue,
    /// Signed in with a Trousseau access token rather than a session cookie: nothing to refresh,
    /// and the token is the app's only with `identity.pass_access_token`.
    pub(crate) via_bearer: bool,
    /// Who answered, for the request's metrics outcome.
    pub(crate) answered_by: AnsweredBy,
    /// The request's `Origin`, when `cors.allowed_origins` lists it: the proxy's own answer
    /// carries the CORS headers that let that origin's code read it.
    pub(crate) cors_origin: Option<HeaderValue>,
    /// Its place in its W3C trace.
    pub(crate) trace: crate::trace::RequestTrace,
}

impl RequestCtx {
    /// Writes the audit line of `event`, which happened in this request ([`crate::audit`]).
    pub(crate) fn audit(&self, event: crate::audit::Event<'_>) {
        crate::audit::record(&crate::audit::Record {
            sub: self.sub.as_deref(),
            request_id: self.request_id.to_str().unwrap_or("-"),
            trace_id: self.trace.span.trace_id_hex().as_str(),
            event,
        });
    }
}

impl App {
    /// Serves one request. Never fails: every problem becomes an answer.
    pub async fn handle(self: Arc<Self>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let line = finish::Line::of(&req);
        let mut ctx = sanitize::sanitize(&self, &mut req, peer);
        // Code without the request at hand (Redis's commands, the store finding a session revoked)
        // finds the recording through a task-local.
        let recording = self.recording(&mut ctx, started);
        let response = crate::trace::record::maybe_recording(recording, self.route(req, &mut ctx)).await;
        finish::finish(&self, response.unwrap_or_else(|answer| answer), ctx, &line, started)
    }

    /// Starts recording the request's spans when they are exported (`telemetry.otlp_endpoint`)
    /// and its trace is sampled.
    fn recording(&self, ctx: &mut RequestCtx, started: Instant) -> Option<Arc<crate::trace::record::Recording>> {
        if self.exporter.is_none() || !ctx.trace.span.sampled {
            return None;
        }
        let recording = crate::trace::record::Recording::new(ctx.trace.span, started);
        ctx.trace.recording = Some(Arc::clone(&recording));
        Some(recording)
    }

    /// Judges a request a gateway describes out of band — Envoy's gRPC `ext_authz`
    /// ([`crate::grpc_authz`]): `original`, with the client's `headers` as the gateway passed them
    /// on and the route's `narrowing`. Decided by the very function `/.trousseau/auth` uses
    /// (`endpoints::forward_auth::judge`), between the first and last phases every request goes
    /// through: [`sanitize`] (spoofed identity headers and our cookies out; request id, trace)
    /// and [`finish`] (the cookies decided along the way as `Set-Cookie`, metrics, the access line
    /// — `/.trousseau/auth`, as for nginx's form). The gateway hands a refusal to the client as it
    /// is, so a browser navigation (the request path's rule) is sent to sign in. Never fails.
    pub(crate) async fn check_external(&self, original: OriginalRequest, headers: HeaderMap, narrowing: Narrowing, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let mut req = Request::new(());
        *req.method_mut() = original.method.clone();
        *req.uri_mut() = http::Uri::from_static(AUTH_PATH);
        *req.headers_mut() = headers;
        let line = finish::Line::of(&req);
        let mut ctx = sanitize::sanitize(self, &mut req, peer);
        ctx.answered_by = AnsweredBy::Reserved;
        let navigation = is_navigation(&original.method, req.headers());
        let asked = endpoints::forward_auth::Asked::new(original, navigation, narrowing);
        let recording = self.recording(&mut ctx, started);
        ctx.trace.note_route("reserved");
        let span = ctx.trace.span;
        // Recorded like a request to `/.trousseau/auth`.
        let judging = crate::trace::within(span, endpoints::forward_auth::judge(self, &req, &asked, &mut ctx));
        let judged = crate::trace::record::maybe_recording(recording, judging).await;
        finish::finish(self, judged.unwrap_or_else(|answer| answer), ctx, &line, started)
    }

    async fn route(&self, req: Request<Incoming>, ctx: &mut RequestCtx) -> Result<Response<Body>, Answer> {
        let path = req.uri().path();
        if path.starts_with(RESERVED_PREFIX) || path == "/.trousseau" {
            ctx.answered_by = AnsweredBy::Reserved;
            ctx.trace.note_route("reserved");
            // Boxed: the endpoints' futures (the code exchange, Trousseau's calls) are larger
            // than the whole proxied path's, and would size every request's future.
            // Within the request's trace: the endpoints call Trousseau (sign-in, userinfo, keys).
            let span = ctx.trace.span;
            return Box::pin(crate::trace::within(span, endpoints::serve(self, req, ctx))).await;
        }
        let browser = is_browser_navigation(&req);
        if is_preflight(req.method(), req.headers(), ctx.jar.incoming.iter().next().is_some()) && self.policy.preflight_passes(path, self.settings.cors.preflight_pass) {
            // A CORS preflight carries no credentials: the app answers it, without an identity.
            ctx.trace.note_route("preflight");
            return Ok(forward::forward(self, req, ctx, None, false).await);
        }
        if self.policy.is_public(path) {
            // Spoofed headers are already gone; no identity is added.
            ctx.trace.note_route("public");
            return Ok(forward::forward(self, req, ctx, None, browser).await);
        }
        let session = authenticate::authenticate(self, &req, ctx, browser).await?;
        let session = match refresh::refresh(self, session, ctx).await {
            Ok(session) => session,
            Err(e) => return Err(e.answer(self, &req, ctx, browser).await),
        };
        authorize::authorize(self, &req, &session, browser, ctx)?;
        Ok(forward::forward(self, req, ctx, Some(&session), browser).await)
    }
}

/// The language of an answer: the session's `locale` claim, else the request's
/// `Accept-Language`.
pub(crate) fn lang(headers: &HeaderMap, session: Option<&Session>) -> Lang {
    Lang::for_reader(session.and_then(|s| s.identity.locale.as_deref()), headers.get(header::ACCEPT_LANGUAGE))
}

#[cfg(test)]
mod tests {
    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, F: std::future::Future>(_: &impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_request_future_stays_small() {
        // hyper moves each request's future into place once per request: at 17 KB (the upstream
        // connect and the endpoints' calls to Trousseau inline) that copy was 1.6% of a proxied
        // GET's CPU time in a profile. The rarer paths are boxed; this keeps them so.
        let size = future_size(&super::App::handle);
        assert!(size <= 6 * 1024, "App::handle's future is {size} bytes: box the new large await on a rare path");
    }
}
