//! Answers the proxy makes itself: pages for browsers, JSON for everything else. Every one but
//! the JWKS (public, cacheable) carries `Cache-Control: no-store`, `X-Content-Type-Options:
//! nosniff` and `Referrer-Policy: no-referrer`; pages also a Content-Security-Policy that allows
//! no script.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, Body};
use crate::limits::Refusal;
use crate::oidc::OidcError;
use crate::pages::{self, Lang};
use crate::policy::Denial;
use crate::proxy::ProxyError;
use crate::request::QUERY_VALUE;
use crate::session::Session;

fn with_security_headers(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// A plain-text answer.
pub fn text(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    with_security_headers(r)
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(body::full(serde_json::to_vec(value).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    with_security_headers(r)
}

/// An HTML page.
pub fn page(status: StatusCode, html: String) -> Response<Body> {
    let mut r = Response::new(body::full(html));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    with_security_headers(r)
}

/// 302 to `location`.
pub fn redirect(location: &str) -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    with_security_headers(r)
}

/// The public keys of our assertions.
pub fn jwks(json: bytes::Bytes) -> Response<Body> {
    let mut r = Response::new(body::full(json));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    r
}

/// 401 for API clients, pointing at where a browser would sign in.
pub fn unauthenticated_json(login_url: &str) -> Response<Body> {
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({
            "authenticated": false,
            "error": "unauthenticated",
            "error_description": "No valid Trousseau session. Sign in with a browser at login_url, or send the session cookie.",
            "login_url": login_url,
        }),
    );
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"trousseau-proxy\""));
    r
}

/// 401 for a bearer token Trousseau does not accept (RFC 6750).
pub fn invalid_bearer() -> Response<Body> {
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": "invalid_token", "error_description": "The access token is not valid (expired, revoked or not issued by Trousseau)."}),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"trousseau-proxy\", error=\"invalid_token\""),
    );
    r
}

/// The session's identity and selected organization — never tokens.
pub fn userinfo(session: &Session) -> Response<Body> {
    let mut value = serde_json::to_value(&session.identity).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("organization".into(), serde_json::to_value(session.selected_organization()).unwrap_or_default());
    }
    json(StatusCode::OK, &value)
}

/// `/.trousseau/session`: who, which organization, in how many seconds the session ends
/// (`max_lifetime`) and its access token is next refreshed — never a token.
pub fn session_state(session: &Session, expires_in: u64, refresh_in: u64) -> Response<Body> {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "authenticated": true,
            "sub": session.identity.sub,
            "org": session.selected_organization().map(|o| o.id.as_str()),
            "expires_in": expires_in,
            "refresh_in": refresh_in,
        }),
    )
}

/// 503: Trousseau is needed and cannot be reached.
pub fn unavailable(browser: bool, lang: Lang) -> Response<Body> {
    let mut r = if browser {
        page(StatusCode::SERVICE_UNAVAILABLE, pages::unavailable(lang))
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "identity_provider_unavailable", "error_description": "Trousseau cannot be reached right now; retry shortly."}),
        )
    };
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    r
}

/// 503: the session store cannot answer.
pub fn store_unavailable(browser: bool, lang: Lang) -> Response<Body> {
    let mut r = if browser {
        let title = lang.pick("Sessions are temporarily unavailable", "Les sessions sont momentanément indisponibles");
        let text = lang.pick(
            "The proxy cannot reach its session store right now, so it cannot check who you are. Nothing is lost: try again in a few seconds.",
            "Le proxy ne joint pas son stockage de sessions pour le moment et ne peut donc pas vérifier qui vous êtes. Rien n'est perdu : réessayez dans quelques secondes.",
        );
        page(StatusCode::SERVICE_UNAVAILABLE, pages::try_again(lang, title, text))
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "session_store_unavailable", "error_description": "The session store cannot be reached right now; retry shortly."}),
        )
    };
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// 429 (this client) or 503 (everyone): too many requests in flight. Never queued: the
/// client retries after `Retry-After`.
pub fn over_limit(browser: bool, lang: Lang, refusal: Refusal) -> Response<Body> {
    let (status, error, retry_after, title, text) = match refusal {
        Refusal::PerClient => (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "2",
            ("Too many requests at once", "Trop de requêtes à la fois"),
            (
                "Your address has too many requests in progress with this application. Wait a moment, then try again.",
                "Votre adresse a trop de requêtes en cours avec cette application. Patientez un instant, puis réessayez.",
            ),
        ),
        Refusal::InFlight => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "5",
            ("The application is very busy", "L'application est très sollicitée"),
            (
                "Too many requests are in progress right now. Nothing is lost: try again in a few seconds.",
                "Trop de requêtes sont en cours pour le moment. Rien n'est perdu : réessayez dans quelques secondes.",
            ),
        ),
    };
    let mut r = if browser {
        let (title, text) = (lang.pick(title.0, title.1), lang.pick(text.0, text.1));
        page(status, pages::try_again(lang, title, text))
    } else {
        json(status, &serde_json::json!({"error": error, "error_description": text.0}))
    };
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
    r
}

/// 502/504: the app behind the proxy did not answer; 400/408 when the client's request body
/// was at fault.
pub fn upstream_failed(browser: bool, lang: Lang, e: &ProxyError) -> Response<Body> {
    let status = match e {
        ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ProxyError::InvalidRequest(_) => {
            return json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": "bad_request", "error_description": "This request cannot be forwarded (e.g. an asterisk-form or CONNECT request)."}));
        }
        ProxyError::ClientBody(_) => {
            return json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": "bad_request", "error_description": "The request body could not be read: it was malformed or cut off."}));
        }
        ProxyError::SlowClientBody => {
            return json(StatusCode::REQUEST_TIMEOUT, &serde_json::json!({"error": "request_timeout", "error_description": "The request body arrived too slowly."}));
        }
        _ => StatusCode::BAD_GATEWAY,
    };
    if browser {
        page(status, pages::upstream_failed(lang, status))
    } else {
        json(status, &serde_json::json!({"error": "upstream_unavailable", "error_description": "The application behind the proxy did not answer."}))
    }
}

/// 403 for a policy denial.
pub fn forbidden(browser: bool, lang: Lang, denial: &Denial, session: &Session) -> Response<Body> {
    if browser {
        page(StatusCode::FORBIDDEN, pages::forbidden(lang, denial, session))
    } else {
        json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({"error": "forbidden", "reason": denial.code(), "error_description": pages::denial_text(Lang::En, denial)}),
        )
    }
}

/// The user must pick an organization first.
pub fn choose_organization(browser: bool, _lang: Lang, return_to: &str) -> Response<Body> {
    let url = format!(
        "/.trousseau/organizations?rd={}",
        percent_encoding::utf8_percent_encode(return_to, QUERY_VALUE)
    );
    if browser {
        redirect(&url)
    } else {
        json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({"error": "organization_required", "error_description": "Select an organization first.", "select_url": url}),
        )
    }
}

/// Trousseau answered the callback with an error (`access_denied`, …): no redirect loop.
pub fn idp_error(lang: Lang, error: &str, description: Option<&str>) -> Response<Body> {
    let status = if error == "access_denied" { StatusCode::FORBIDDEN } else { StatusCode::BAD_REQUEST };
    page(status, pages::idp_error(lang, error, description))
}

/// The callback has no matching sign-in attempt (expired, other browser, replayed).
pub fn login_expired(lang: Lang, start_again: &str) -> Response<Body> {
    page(StatusCode::BAD_REQUEST, pages::login_expired(lang, start_again))
}

/// The code exchange or the ID token failed.
pub fn sign_in_failed(lang: Lang, e: &OidcError) -> Response<Body> {
    page(StatusCode::BAD_GATEWAY, pages::sign_in_failed(lang, e))
}

/// The session cannot be stored in cookies.
pub fn session_too_large(lang: Lang) -> Response<Body> {
    page(StatusCode::INTERNAL_SERVER_ERROR, pages::session_too_large(lang))
}

/// Unknown reserved path.
pub fn not_found(browser: bool, lang: Lang) -> Response<Body> {
    if browser {
        page(StatusCode::NOT_FOUND, pages::not_found(lang))
    } else {
        json(StatusCode::NOT_FOUND, &serde_json::json!({"error": "not_found"}))
    }
}
