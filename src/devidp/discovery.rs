//! Discovery (`.well-known/openid-configuration`) and the JWKS, laid out as Authentik lays them
//! out: per-slug issuer, JWKS and end-session; shared authorize, token, userinfo and introspection.

use http::{Response, StatusCode};
use serde_json::json;

use super::web;
use super::DevIdp;
use crate::body::Body;

/// The claims the IdP can put in tokens.
const CLAIMS: [&str; 21] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "acr",
    "amr",
    "nonce",
    "at_hash",
    "sid",
    "azp",
    "email",
    "email_verified",
    "name",
    "given_name",
    "family_name",
    "picture",
    "trousseau_user_id",
    "locale",
    "organizations",
];

/// GET `/application/o/{slug}/.well-known/openid-configuration`.
pub(super) fn configuration(idp: &DevIdp) -> Response<Body> {
    let base = &idp.base;
    let slug = &idp.config.slug;
    let doc = json!({
        "issuer": idp.issuer,
        "authorization_endpoint": format!("{base}/application/o/authorize/"),
        "token_endpoint": format!("{base}/application/o/token/"),
        "userinfo_endpoint": format!("{base}/application/o/userinfo/"),
        "introspection_endpoint": format!("{base}/application/o/introspect/"),
        "jwks_uri": format!("{base}/application/o/{slug}/jwks/"),
        "end_session_endpoint": format!("{base}/application/o/{slug}/end-session/"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": idp.config.allowed_scopes,
        "claims_supported": CLAIMS,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_post"],
        "acr_values_supported": ["goauthentik.io/providers/oauth2/default"],
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
    });
    web::json(StatusCode::OK, &doc)
}

/// GET `/application/o/{slug}/jwks/`.
pub(super) fn jwks(idp: &DevIdp) -> Response<Body> {
    web::json(StatusCode::OK, &json!({ "keys": [idp.key.jwk()] }))
}
