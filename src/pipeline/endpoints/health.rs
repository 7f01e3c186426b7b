//! `/.trousseau/healthz` (the process answers) and `/.trousseau/readyz` (Trousseau's
//! configuration is loaded, and no SIGTERM is being waited out: `proxy.shutdown_delay`). Both are answered even when the request caps are reached
//! ([`crate::server`]), so a kubelet does not restart a proxy that is only busy.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::answer;
use crate::app::App;
use crate::body::Body;

/// Set once a SIGTERM arrived and the process keeps serving for `proxy.shutdown_delay`:
/// readiness answers 503 so the load balancer takes this replica out before it drains.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Readiness answers 503 from now on (the process is about to drain).
pub fn set_stopping() {
    STOPPING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `200 ok` while the process serves.
pub(super) fn healthz() -> Response<Body> {
    answer::text(StatusCode::OK, "ok\n")
}

/// `200 ready` once discovery succeeded, else 503 with `Retry-After`.
pub(super) fn readyz(app: &App) -> Response<Body> {
    if STOPPING.load(std::sync::atomic::Ordering::Relaxed) {
        return answer::text(StatusCode::SERVICE_UNAVAILABLE, "stopping: still serving until proxy.shutdown_delay ends\n");
    }
    if app.oidc.is_ready() {
        return answer::text(StatusCode::OK, "ready\n");
    }
    let mut r = answer::text(StatusCode::SERVICE_UNAVAILABLE, "identity provider not loaded yet\n");
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}
