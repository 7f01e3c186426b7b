//! The token introspection endpoint (RFC 7662), where Authentik serves it: shared by every
//! application, the client authenticating exactly as at the token endpoint (`client_secret_post`).
//!
//! A live token (access or refresh) is `active` with the client it was issued to (`client_id`,
//! `aud`), its user, scope, expiry, `auth_time` and session `sid` (Authentik answers with the ID
//! token's claims); anything else — unknown, expired, revoked, rotated away, a
//! disabled user's — is just `{"active": false}`. Authentik answers `{"active": false}` for a token
//! of another application; the twin answers it `active` with that application's `client_id`,
//! the harder case for a relying party, which must check that the token is its own.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::token::{authenticated_form, bad_request};
use super::{web, Counters, DevIdp};
use crate::body::{Body, BoxError};

/// POST `/application/o/introspect/` with `token` (and optionally `token_type_hint`, which only
/// orders the search and is otherwise ignored, as RFC 7662 §2.1 allows).
pub(super) async fn introspect<B>(idp: &DevIdp, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    Counters::bump(&idp.counters.introspection_calls);
    let params = match authenticated_form(idp, req).await {
        Ok(params) => params,
        Err(refusal) => return refusal,
    };
    let Some(token) = params.get("token") else {
        return bad_request("invalid_request", "token is required");
    };
    let info = idp
        .grants
        .introspect(token)
        .filter(|info| idp.directory.is_active(&info.sub));
    let Some(info) = info else {
        return web::json(StatusCode::OK, &json!({ "active": false }));
    };
    let mut body = json!({
        "active": true,
        "client_id": info.client_id,
        "aud": info.client_id,
        "iss": idp.issuer,
        "sub": info.sub,
        "scope": info.scopes.join(" "),
        "exp": info.exp,
        "auth_time": info.auth_time,
        "sid": info.sid,
    });
    if info.access {
        body["token_type"] = Value::String("Bearer".to_owned());
    }
    web::json(StatusCode::OK, &body)
}
