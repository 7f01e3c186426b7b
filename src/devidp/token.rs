//! The token endpoint: `authorization_code` (with PKCE) and `refresh_token` grants, for a client
//! that authenticates with `client_secret_post` only, answering exactly the JSON Trousseau
//! documents.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};
use subtle::ConstantTimeEq as _;

use super::claims::{id_token_claims, IdTokenContext};
use super::grants::{GrantError, Issued, Lifetimes};
use super::web::{self, FormError, Params};
use super::{now_unix, secs, Counters, DevIdp};
use crate::body::{Body, BoxError};

/// POST `/application/o/token/`.
pub(super) async fn token<B>(idp: &DevIdp, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let delay = idp.token_delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let params = match authenticated_form(idp, req).await {
        Ok(params) => params,
        Err(refusal) => return refusal,
    };
    match params.get("grant_type") {
        Some("authorization_code") => authorization_code(idp, &params),
        Some("refresh_token") => refresh_token(idp, &params),
        None => bad_request("invalid_request", "grant_type is required"),
        Some(_) => bad_request(
            "unsupported_grant_type",
            "Only authorization_code and refresh_token are supported",
        ),
    }
}

/// Reads the form of a client request (token, introspection) and authenticates the client the
/// one way Trousseau allows, `client_secret_post`: credentials in an `Authorization` header, an
/// unknown client or a wrong secret are `invalid_client` (401); a body that is not a form or
/// repeats a parameter is `invalid_request` (400).
pub(super) async fn authenticated_form<B>(idp: &DevIdp, req: Request<B>) -> Result<Params, Response<Body>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    if parts.headers.contains_key(header::AUTHORIZATION) {
        return Err(invalid_client(
            "Client authentication must use client_secret_post (credentials in the request body)",
        ));
    }
    let params = match web::read_form(&parts.headers, body).await {
        Ok(params) => params,
        Err(FormError::ContentType) => {
            return Err(bad_request(
                "invalid_request",
                "The body must be application/x-www-form-urlencoded",
            ))
        }
        Err(FormError::Body) => {
            return Err(bad_request("invalid_request", "The request body could not be read"))
        }
    };
    if let Some(name) = params.first_repeated() {
        return Err(bad_request(
            "invalid_request",
            &format!("The parameter {name} was sent more than once"),
        ));
    }
    if !client_authenticated(idp, &params) {
        return Err(invalid_client("Unknown client or wrong client secret"));
    }
    Ok(params)
}

/// `client_id` and `client_secret` from the body; the secret compared in constant time.
fn client_authenticated(idp: &DevIdp, params: &Params) -> bool {
    let (Some(id), Some(secret)) = (params.get("client_id"), params.get("client_secret")) else {
        return false;
    };
    let secret_ok: bool = secret
        .as_bytes()
        .ct_eq(idp.config.client_secret.as_bytes())
        .into();
    id == idp.config.client_id && secret_ok
}

pub(super) fn lifetimes(idp: &DevIdp) -> Lifetimes {
    Lifetimes {
        access: idp.config.access_token_ttl,
        refresh: idp.config.refresh_token_ttl,
    }
}

fn authorization_code(idp: &DevIdp, params: &Params) -> Response<Body> {
    let Some(code) = params.get("code") else {
        return bad_request("invalid_request", "code is required");
    };
    let Some(redirect_uri) = params.get("redirect_uri") else {
        return bad_request("invalid_request", "redirect_uri is required");
    };
    let issued = idp.grants.redeem_code(
        code,
        &idp.config.client_id,
        redirect_uri,
        params.get("code_verifier"),
        lifetimes(idp),
        |sub| idp.directory.is_active(sub),
    );
    match issued {
        Ok(issued) => {
            let res = token_response(idp, issued);
            if res.status() == StatusCode::OK {
                Counters::bump(&idp.counters.code_grants);
            }
            res
        }
        Err(error) => grant_error(error),
    }
}

fn refresh_token(idp: &DevIdp, params: &Params) -> Response<Body> {
    let Some(token) = params.get("refresh_token") else {
        Counters::bump(&idp.counters.refresh_grants_failed);
        return bad_request("invalid_request", "refresh_token is required");
    };
    let issued = idp.grants.refresh(
        token,
        &idp.config.client_id,
        params.get("scope"),
        idp.config.rotate_refresh_tokens,
        lifetimes(idp),
        |sub| idp.directory.is_active(sub),
    );
    match issued {
        Ok(issued) => {
            let res = token_response(idp, issued);
            if res.status() == StatusCode::OK {
                Counters::bump(&idp.counters.refresh_grants_ok);
            } else {
                Counters::bump(&idp.counters.refresh_grants_failed);
            }
            res
        }
        Err(error) => {
            Counters::bump(&idp.counters.refresh_grants_failed);
            if error == GrantError::Reused {
                Counters::bump(&idp.counters.refresh_reuse_detected);
                tracing::warn!("dev IdP: a rotated refresh token was reused; its grant is revoked");
            }
            grant_error(error)
        }
    }
}

/// The success JSON: access_token, token_type, expires_in, refresh_token, id_token, scope.
fn token_response(idp: &DevIdp, issued: Issued) -> Response<Body> {
    let Some(user) = idp.directory.get(&issued.grant.sub) else {
        return bad_request("invalid_grant", "the user no longer exists");
    };
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": secs(idp.config.access_token_ttl),
        "refresh_token": issued.refresh_token,
    });
    if issued.grant.scopes.iter().any(|s| s == "openid") {
        let claims = id_token_claims(
            &user,
            &issued.grant.scopes,
            &IdTokenContext {
                issuer: &idp.issuer,
                client_id: &idp.config.client_id,
                now: now_unix(),
                ttl_secs: secs(idp.config.id_token_ttl),
                auth_time: issued.grant.auth_time,
                sid: &issued.grant.sid,
                nonce: issued.nonce.as_deref(),
                access_token: &issued.access_token,
            },
        );
        match idp.key.sign(&claims, "JWT") {
            Ok(id_token) => body["id_token"] = Value::String(id_token),
            Err(_) => {
                return web::oauth_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the ID token could not be signed",
                )
            }
        }
    }
    body["scope"] = Value::String(issued.grant.scopes.join(" "));
    web::json(StatusCode::OK, &body)
}

fn grant_error(error: GrantError) -> Response<Body> {
    match error {
        GrantError::Invalid(description) => bad_request("invalid_grant", description),
        GrantError::Reused => bad_request(
            "invalid_grant",
            "the refresh token was already used; every token of this grant is now revoked",
        ),
        GrantError::InvalidScope => bad_request(
            "invalid_scope",
            "the requested scope exceeds the scope originally granted",
        ),
    }
}

pub(super) fn bad_request(error: &str, description: &str) -> Response<Body> {
    web::oauth_error(StatusCode::BAD_REQUEST, error, description)
}

fn invalid_client(description: &str) -> Response<Body> {
    web::oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description)
}
