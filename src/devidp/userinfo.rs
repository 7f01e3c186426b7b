//! The userinfo endpoint: the same claims as the ID token, for the scopes the access token carries,
//! computed from the user as they are now.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use serde_json::Value;

use super::claims::user_claims;
use super::web;
use super::{Counters, DevIdp};
use crate::body::Body;

/// GET or POST `/application/o/userinfo/` with `Authorization: Bearer <access token>`.
pub(super) fn userinfo(idp: &DevIdp, headers: &HeaderMap) -> Response<Body> {
    Counters::bump(&idp.counters.userinfo_calls);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return unauthorized(None);
    };
    let Some(grant) = idp.grants.access(token) else {
        return unauthorized(Some("The access token is invalid, expired or revoked"));
    };
    let user = match idp.directory.get(&grant.sub) {
        Some(user) if !idp.directory.is_disabled(&user.sub) => user,
        _ => return unauthorized(Some("The user is disabled")),
    };
    web::json(
        StatusCode::OK,
        &Value::Object(user_claims(&user, &grant.scopes)),
    )
}

/// 401 with RFC 6750's challenge (`error="invalid_token"` when a token was sent).
fn unauthorized(description: Option<&str>) -> Response<Body> {
    let (body_error, challenge) = match description {
        Some(d) => (
            web::oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", d),
            format!(r#"Bearer realm="trousseau", error="invalid_token", error_description="{d}""#),
        ),
        None => (
            web::oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "A bearer access token is required",
            ),
            r#"Bearer realm="trousseau""#.to_owned(),
        ),
    };
    let mut res = body_error;
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}
