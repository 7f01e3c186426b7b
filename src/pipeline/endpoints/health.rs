//! `/.trousseau/healthz` (the process answers) and `/.trousseau/readyz` (Trousseau's
//! configuration is loaded). Both are answered even when the request caps are reached
//! ([`crate::server`]), so a kubelet does not restart a proxy that is only busy.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::answer;
use crate::app::App;
use crate::body::Body;

/// `200 ok` while the process serves.
pub(super) fn healthz() -> Response<Body> {
    answer::text(StatusCode::OK, "ok\n")
}

/// `200 ready` once discovery succeeded, else 503 with `Retry-After`.
pub(super) fn readyz(app: &App) -> Response<Body> {
    if app.oidc.is_ready() {
        return answer::text(StatusCode::OK, "ready\n");
    }
    let mut r = answer::text(StatusCode::SERVICE_UNAVAILABLE, "identity provider not loaded yet\n");
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}
