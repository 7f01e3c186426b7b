//! Phase 6b: the app's answer. The prepared request goes to the app ([`crate::proxy`]: pooled
//! per worker, bodies streamed both ways, websockets spliced); what comes back loses any
//! `Set-Cookie` that would write one of our cookies. When the app cannot be reached the proxy
//! answers itself (502/504, or 400/408 when the client's body was at fault).
//!
//! An answer for a session is tied to it ([`crate::live`]): a websocket is tracked once the app
//! switched protocols, a streaming body once it proves long; either ends when the session does.

use std::sync::Arc;
use std::time::Instant;

use http::header;
use http::{Request, Response};
use hyper::body::Incoming;

use super::RequestCtx;
use crate::answer;
use crate::app::App;
use crate::body::{self, Body};
use crate::live::{Kind, Opened};
use crate::metrics::AnsweredBy;
use crate::pages::Lang;
use crate::proxy::wants_upgrade;
use crate::session::Session;
use crate::tether::Tether;

/// Bodies of at most this many bytes, announced by `Content-Length`, are not tied to their
/// session: a page or an API answer, not a long response. (The rest are tracked only once they
/// prove long: `crate::live::body`.)
const SHORT_BODY: u64 = 64 * 1024;

/// An empty body, or one whose announced length is at most [`SHORT_BODY`].
fn is_short(body: &Body) -> bool {
    use http_body::Body as _;
    body.is_end_stream() || body.size_hint().exact().is_some_and(|len| len <= SHORT_BODY)
}

/// Forwards to the app, with the identity of `session` when there is one. `browser` chooses the
/// form of the error answer when the app cannot be reached. May change: `ctx.answered_by`.
pub(super) async fn forward(app: &App, req: Request<Incoming>, ctx: &mut RequestCtx, session: Option<&Arc<Session>>, browser: bool) -> Response<Body> {
    let (mut parts, incoming) = req.into_parts();
    // For the error page only: its language is worked out if it is needed.
    let accept_language = parts.headers.get(header::ACCEPT_LANGUAGE).cloned();
    // What a connection tied to the session needs of the request, kept before it goes: its
    // method and target (two reference counts), and an API client's token.
    let request = session.filter(|_| app.live.enabled()).map(|_| {
        let bearer = ctx.via_bearer.then(|| parts.headers.get(header::AUTHORIZATION).cloned()).flatten();
        (parts.method.clone(), parts.uri.clone(), bearer)
    });
    let tunnel = request.as_ref().filter(|_| wants_upgrade(&parts.headers)).map(|_| Tether::new());
    if let Some(tether) = &tunnel {
        parts.extensions.insert(tether.clone());
    }
    super::upstream_request::prepare(app, &mut parts, ctx, session.map(|s| &**s));
    let mut span = ctx.trace.child("upstream", crate::trace::record::SpanKind::Client).map(|mut span| {
        // The app's parent is then this span, which the export records, rather than the request's.
        parts.headers.insert(crate::trace::TRACEPARENT, span.span().header());
        span.set("http.request.method", crate::trace::record::Value::method(&parts.method));
        span
    });
    let sent = Instant::now();
    let result = app.upstream.send(Request::from_parts(parts, body::stream(incoming))).await;
    app.metrics.upstream_latency(sent.elapsed());
    if let Some(span) = &mut span {
        match &result {
            Ok(response) => span.set("http.response.status_code", i64::from(response.status().as_u16())),
            Err(_) => span.fail(),
        }
    }
    // Ends at the app's answer's headers, as `upstream_duration_seconds` does.
    drop(span);
    match result {
        Ok(mut response) => {
            ctx.answered_by = AnsweredBy::Upstream;
            app.sessions.drop_app_cookies_of_ours(response.headers_mut());
            let (Some(session), Some((method, uri, bearer))) = (session, request) else { return response };
            let switched = tunnel.is_some() && response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
            if !switched && is_short(response.body()) {
                return response;
            }
            let opened = Opened { session: session.clone(), bearer, method, uri, request_id: ctx.request_id.clone() };
            match tunnel {
                Some(tether) if switched => {
                    app.live.track(opened, Kind::Websocket, tether.cutter());
                    response
                }
                _ => response.map(|body| crate::live::body::tether(body, &app.live, opened)),
            }
        }
        Err(e) => {
            let request_id = ctx.request_id.to_str().unwrap_or("-");
            match e.client_fault() {
                // The client's doing (its body broke off, was malformed, or trickled): not an
                // app failure, and not worth more than a line a second.
                Some(fault) => app.limits.client_fault(fault, ctx.peer.ip(), request_id, &e),
                None => tracing::warn!(error = %e, request_id, "upstream request failed"),
            }
            let locale = session.and_then(|s| s.identity.locale.as_deref());
            answer::upstream_failed(browser, Lang::for_reader(locale, accept_language.as_ref()), &e)
        }
    }
}
