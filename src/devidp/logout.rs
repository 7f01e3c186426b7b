//! RP-initiated logout (the per-slug end-session endpoint) and the back-channel logout tokens it
//! sends to the client.
//!
//! Ending a session here ends the browser's IdP session (the SSO cookie) and the session named by
//! `id_token_hint`, revokes every grant issued under them (as Authentik deletes a session's
//! tokens), and POSTs one `logout_token` per ended session to `backchannel_logout_uri` before
//! answering, so a test can assert on the relying party right after the redirect.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Map, Value};

use super::authorize::current_sso;
use super::pages::{self, PageError, SignedOutNote};
use super::web::{self, Params};
use super::{now_unix, BackchannelClient, Counters, DevIdp};
use crate::body::{Body, BoxError};
use crate::pages::Lang;

/// How long a relying party gets to answer a back-channel logout.
const BACKCHANNEL_TIMEOUT: Duration = Duration::from_secs(5);

/// Claims of a back-channel logout token (OIDC Back-Channel Logout 1.0 §2.4).
pub(super) fn logout_claims(idp: &DevIdp, sub: Option<&str>, sid: Option<&str>) -> Value {
    let now = now_unix();
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(idp.issuer));
    claims.insert("aud".into(), json!(idp.config.client_id));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + 120));
    claims.insert("jti".into(), json!(web::random_token(16)));
    claims.insert(
        "events".into(),
        json!({ "http://schemas.openid.net/event/backchannel-logout": {} }),
    );
    if let Some(sid) = sid {
        claims.insert("sid".into(), json!(sid));
    }
    if let Some(sub) = sub {
        claims.insert("sub".into(), json!(sub));
    }
    Value::Object(claims)
}

/// GET or POST `/application/o/{slug}/end-session/`.
pub(super) async fn end_session<B>(idp: &DevIdp, req: Request<B>, lang: Lang) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    Counters::bump(&idp.counters.end_sessions);
    let (parts, body) = req.into_parts();
    let params = if parts.method == Method::POST {
        match web::read_form(&parts.headers, body).await {
            Ok(params) => params,
            Err(_) => return page_error(PageError::BadForm, lang),
        }
    } else {
        Params::parse(parts.uri.query().unwrap_or("").as_bytes())
    };
    if params.first_repeated().is_some() {
        return page_error(PageError::BadForm, lang);
    }

    // Who is asking: the hint must be one of our ID tokens for our client (expired is fine).
    let hint = params.get("id_token_hint");
    let hint_claims = hint.and_then(|t| verify_hint(idp, t));
    let hint_invalid = hint.is_some() && hint_claims.is_none();
    let client_id = params.get("client_id");
    let client_mismatch = client_id.is_some_and(|c| c != idp.config.client_id);
    let client_identified =
        !hint_invalid && !client_mismatch && (hint_claims.is_some() || client_id.is_some());

    end_sessions(idp, &parts.headers, hint_claims.as_ref()).await;
    let mut res = signed_out(idp, &params, hint_invalid, client_identified, lang);
    if let Some(cookie) = web::sso_cookie(&idp.prefix, idp.base.starts_with("https:"), None) {
        res.headers_mut().append(header::SET_COOKIE, cookie);
    }
    res
}

/// Ends the browser's Trousseau session and the hinted one: their SSO cookies' sessions, their
/// grants, and a back-channel logout to the client for each.
async fn end_sessions(idp: &DevIdp, headers: &http::HeaderMap, hint_claims: Option<&Map<String, Value>>) {
    // Which sessions end: the browser's, and the hinted one.
    let mut ended: Vec<(Option<String>, String)> = Vec::new();
    if let Some((key, session)) = current_sso(idp, headers) {
        idp.sso.invalidate(&key);
        ended.push((Some(session.sub), session.sid));
    }
    if let Some(claims) = hint_claims {
        if let Some(sid) = claims.get("sid").and_then(Value::as_str) {
            if !ended.iter().any(|(_, s)| s == sid) {
                let sub = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
                ended.push((sub, sid.to_owned()));
            }
        }
    }
    for (sub, sid) in &ended {
        let matching: Vec<String> = idp
            .sso
            .iter()
            .filter(|(_, s)| s.sid == *sid)
            .map(|(k, _)| (*k).clone())
            .collect();
        for key in matching {
            idp.sso.invalidate(&key);
        }
        idp.grants.revoke_sid(sid);
        if let Some(uri) = &idp.config.backchannel_logout_uri {
            let claims = logout_claims(idp, sub.as_deref(), Some(sid));
            match idp.key.sign(&claims, "logout+jwt") {
                Ok(token) => send_backchannel(idp, uri, &token).await,
                Err(_) => Counters::bump(&idp.counters.backchannel_failed),
            }
        }
    }

}

/// The answer once signed out: back to a registered `post_logout_redirect_uri` for a client
/// that identified itself (with `state`), else the signed-out page saying why not.
fn signed_out(idp: &DevIdp, params: &Params, hint_invalid: bool, client_identified: bool, lang: Lang) -> Response<Body> {
    let target = params.get("post_logout_redirect_uri");
    let note = match target {
        None => None,
        Some(_) if hint_invalid => Some(SignedOutNote::InvalidHint),
        Some(_) if !client_identified => Some(SignedOutNote::ClientUnknown),
        Some(uri)
            if !idp
                .config
                .post_logout_redirect_uris
                .iter()
                .any(|u| u == uri) =>
        {
            Some(SignedOutNote::UnregisteredRedirect)
        }
        Some(_) => None,
    };
    match (target, note) {
        (Some(uri), None) => match url::Url::parse(uri) {
            Ok(mut url) => {
                if let Some(state) = params.get("state") {
                    url.query_pairs_mut().append_pair("state", state);
                }
                web::redirect(&url)
            }
            Err(_) => web::html(
                StatusCode::OK,
                pages::signed_out(Some(SignedOutNote::UnregisteredRedirect), lang),
            ),
        },
        (_, note) => {
            let note = note.or(hint_invalid.then_some(SignedOutNote::InvalidHint));
            let status = if hint_invalid {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            web::html(status, pages::signed_out(note, lang))
        }
    }
}

/// The claims of `token` if it is an ID token this IdP issued to its client (expiry ignored).
fn verify_hint(idp: &DevIdp, token: &str) -> Option<Map<String, Value>> {
    let claims = idp.key.verify(token)?;
    let iss_ok = claims.get("iss").and_then(Value::as_str) == Some(idp.issuer.as_str());
    let aud_ok = match claims.get("aud") {
        Some(Value::String(aud)) => *aud == idp.config.client_id,
        Some(Value::Array(auds)) => auds
            .iter()
            .any(|a| a.as_str() == Some(&idp.config.client_id)),
        _ => false,
    };
    (iss_ok && aud_ok).then_some(claims)
}

/// POSTs `logout_token=<token>` to `uri`; failures are logged and counted, never surfaced.
async fn send_backchannel(idp: &DevIdp, uri: &str, token: &str) {
    let Some(client) = idp.backchannel.get_or_init(build_client) else {
        Counters::bump(&idp.counters.backchannel_failed);
        return;
    };
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", token)
        .finish();
    let request = Request::post(uri)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .body(Full::new(Bytes::from(form)));
    let request = match request {
        Ok(r) => r,
        Err(error) => {
            tracing::warn!(%error, uri, "dev IdP: bad back-channel logout URI");
            Counters::bump(&idp.counters.backchannel_failed);
            return;
        }
    };
    match tokio::time::timeout(BACKCHANNEL_TIMEOUT, client.request(request)).await {
        Ok(Ok(response)) if response.status().is_success() => {
            Counters::bump(&idp.counters.backchannel_sent);
            tracing::debug!(uri, status = %response.status(), "dev IdP: back-channel logout delivered");
        }
        Ok(Ok(response)) => {
            Counters::bump(&idp.counters.backchannel_failed);
            tracing::warn!(uri, status = %response.status(), "dev IdP: back-channel logout refused");
        }
        Ok(Err(error)) => {
            Counters::bump(&idp.counters.backchannel_failed);
            tracing::warn!(uri, %error, "dev IdP: back-channel logout failed");
        }
        Err(_) => {
            Counters::bump(&idp.counters.backchannel_failed);
            tracing::warn!(uri, "dev IdP: back-channel logout timed out");
        }
    }
}

fn build_client() -> Option<BackchannelClient> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let connector =
        match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_webpki_roots(provider) {
            Ok(builder) => builder.https_or_http().enable_http1().build(),
            Err(error) => {
                tracing::warn!(%error, "dev IdP: no TLS client for back-channel logout");
                return None;
            }
        };
    Some(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector),
    )
}

fn page_error(error: PageError, lang: Lang) -> Response<Body> {
    web::html(StatusCode::BAD_REQUEST, pages::error(error, lang))
}
