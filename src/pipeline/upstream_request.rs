//! Phase 6a: the one place the request going to the app is changed (as Pingora's
//! `upstream_request_filter`). After it, the request is sent as it is.
//!
//! In order: the API client's `Authorization` goes unless `identity.pass_access_token`; the
//! identity headers and the signed assertion (`X-Trousseau-*`, `identity.extra_headers`) are
//! added for a session; `X-Request-Id`; `traceparent` (the proxy's span) and the caller's
//! `tracestate`; then the transport's own changes
//! ([`crate::proxy::Upstream::rewrite_headers`]: hop-by-hop fields, `X-Forwarded-*`, `Host`).

use http::header::{self, HeaderValue};
use http::request::Parts;

use super::{RequestCtx, X_REQUEST_ID};
use crate::app::App;
use crate::proxy::ForwardContext;
use crate::session::Session;

/// About how many headers [`prepare`] adds besides `identity.extra_headers`: the identity headers
/// and the assertion (11), `X-Request-Id`, `traceparent`, `tracestate`, and `X-Forwarded-For`,
/// `-Proto` and `-Host`.
const ADDED_HEADERS: usize = 17;

/// Prepares `parts` for the app. May change: the outgoing request's headers only.
pub(super) fn prepare(app: &App, parts: &mut Parts, ctx: &RequestCtx, session: Option<&Session>) {
    let identity = &app.settings.identity;
    // Room for what is added below, at once: hyper sizes a request's map for the client's few
    // headers, and a dozen insertions grew it (moved and rehashed every entry) two or three times.
    parts.headers.reserve(ADDED_HEADERS + identity.extra_headers.len());
    if ctx.via_bearer && !identity.pass_access_token {
        // The Trousseau token is a credential for Trousseau: the app gets it only when
        // `identity.pass_access_token` says so, like for cookie sessions.
        parts.headers.remove(header::AUTHORIZATION);
    }
    if let Some(session) = session {
        app.assertions.insert_identity_headers(&mut parts.headers, session, identity.pass_access_token);
        identity.extra_headers.insert(&mut parts.headers, session);
    }
    parts.headers.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    ctx.trace.write(&mut parts.headers);
    if let Some(subject) = parts.extensions.get::<crate::server::ClientSubject>() {
        // Stripped from what the client sent like every X-Trousseau- header; set only from the
        // certificate the TLS handshake verified.
        parts.headers.insert(crate::identity::X_TROUSSEAU_CLIENT_SUBJECT, subject.0.clone());
    }
    let host = parts.headers.get(header::HOST).cloned().or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let forwarded = ForwardContext {
        client_ip: ctx.peer.ip(),
        proto: if app.settings.secure_cookies { "https" } else { "http" },
        host,
        trust_forwarded: app.settings.proxy.trust_forwarded_headers,
    };
    app.upstream.rewrite_headers(&mut parts.headers, &forwarded);
}
