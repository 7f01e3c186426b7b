//! `/.trousseau/jwks.json`: the public keys that verify our signed assertions
//! (`X-Trousseau-Jwt-Assertion`), cacheable for five minutes.

use http::Response;

use crate::answer;
use crate::app::App;
use crate::body::Body;

/// The JWKS document.
pub(super) fn jwks(app: &App) -> Response<Body> {
    answer::jwks(app.assertions.signer().jwks_json())
}
