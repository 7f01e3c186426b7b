//! Phase 1, before anything else reads the request: what the client sent that could pose as the
//! proxy goes. Our identity headers (every spelling, and `identity.extra_headers`), hop-by-hop
//! fields — before we add anything, so a client's `Connection:` cannot name (and so remove) a
//! header the proxy vouches for — and our cookies, which the app never sees. The request keeps a
//! sane client `X-Request-Id` or gets one.

use std::net::SocketAddr;

use http::header::HeaderValue;
use http::Request;

use super::{RequestCtx, X_REQUEST_ID};
use crate::app::App;
use crate::metrics::AnsweredBy;
use crate::session::cookies::{strip_cookies, RequestCookies};
use crate::session::sessions::Jar;

/// Strips the request and starts its context. May change: the request's headers only. (Generic
/// over the body: a gRPC check's described request, [`crate::pipeline`]'s `check_external`, has none.)
pub(super) fn sanitize<B>(app: &App, req: &mut Request<B>, peer: SocketAddr) -> RequestCtx {
    let request_id = request_id(req);
    let trace = trace_of(app, req.headers(), app.settings.telemetry.sampling_ratio);
    crate::identity::strip_spoofed(req.headers_mut());
    app.settings.identity.extra_headers.strip(req.headers_mut());
    let upgrade = crate::proxy::wants_upgrade(req.headers());
    crate::proxy::remove_hop_by_hop(req.headers_mut(), upgrade);
    let cookies = RequestCookies::from_headers(req.headers());
    strip_cookies(req.headers_mut(), |name| app.sessions.is_our_cookie(name));
    RequestCtx {
        jar: Jar { incoming: cookies, outgoing: Vec::new(), ended: false },
        sub: None,
        peer,
        request_id,
        via_bearer: false,
        answered_by: AnsweredBy::Proxy,
        cors_origin: allowed_origin(app, req),
        trace,
    }
}

/// The request's trace: the caller's, continued, when `telemetry.trust_incoming` lets it be;
/// else a new one, sampled with the probability `sampling_ratio`.
pub(super) fn trace_of(app: &App, headers: &http::HeaderMap, sampling_ratio: f64) -> crate::trace::RequestTrace {
    if app.settings.telemetry.trust_incoming {
        crate::trace::RequestTrace::from_headers(headers, sampling_ratio)
    } else {
        crate::trace::RequestTrace::start(sampling_ratio)
    }
}

/// The request's `Origin`, when it is one of `cors.allowed_origins` (compared as browsers write
/// it, byte for byte).
fn allowed_origin<B>(app: &App, req: &Request<B>) -> Option<HeaderValue> {
    let allowed = &app.settings.cors.allowed_origins;
    if allowed.is_empty() {
        return None;
    }
    let origin = req.headers().get(http::header::ORIGIN)?;
    allowed.iter().any(|a| a.as_bytes() == origin.as_bytes()).then(|| origin.clone())
}

/// Keeps a sane client `X-Request-Id` or makes one.
fn request_id<B>(req: &Request<B>) -> HeaderValue {
    if let Some(v) = req.headers().get(&X_REQUEST_ID) {
        let ok = v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b));
        if ok && !v.is_empty() {
            return v.clone();
        }
    }
    new_request_id()
}

/// A fresh request id: 128 bits, base64url — 64 random bits drawn once per process, then a counter.
/// Unique, not secret (it is echoed to the client and logged), so it needs no randomness per request.
/// Performance: drawing 16 random bytes per request (`random_id`) was ~2% of a proxied request.
pub(super) fn new_request_id() -> HeaderValue {
    use base64::Engine as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(crate::util::id::random_bytes::<8>);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(prefix);
    id[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let mut text = [0u8; 22];
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(id, &mut text) {
        Ok(len) => HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static("-")),
        Err(_) => HeaderValue::from_static("-"),
    }
}
