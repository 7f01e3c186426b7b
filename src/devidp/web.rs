//! Small HTTP helpers shared by the endpoints: answers (JSON, pages, redirects), form and query
//! parsing with OAuth's rules, body reading, the SSO cookie.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use crate::body::{empty, full, Body, BoxError};
use crate::pages::Lang;

/// Largest form body the IdP reads (token, authorize and end-session forms are tiny).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The IdP's browser-session cookie.
pub(super) const SSO_COOKIE: &str = "trousseau_dev_idp_sso";

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
/// Pages need nothing but their inline styles.
const PAGE_CSP: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'",
);

/// A JSON answer that is never cached.
pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut res = Response::new(full(value.to_string()));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, JSON);
    h.insert(header::CACHE_CONTROL, NO_STORE);
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// An OAuth error body: `{"error", "error_description"}`.
pub(super) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "error": error, "error_description": description }),
    )
}

/// An HTML page that is never cached nor framed.
pub(super) fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut res = Response::new(full(page));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HTML);
    h.insert(header::CACHE_CONTROL, NO_STORE);
    h.insert(header::CONTENT_SECURITY_POLICY, PAGE_CSP);
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// A 302 to `location` (a serialized [`url::Url`], so always a valid header value).
pub(super) fn redirect(location: &url::Url) -> Response<Body> {
    let mut res = Response::new(empty());
    *res.status_mut() = StatusCode::FOUND;
    let h = res.headers_mut();
    match HeaderValue::from_str(location.as_str()) {
        Ok(v) => {
            h.insert(header::LOCATION, v);
        }
        Err(_) => {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "bad redirect",
            );
        }
    }
    h.insert(header::CACHE_CONTROL, NO_STORE);
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// 404 for anything the IdP does not serve.
pub(super) fn not_found() -> Response<Body> {
    oauth_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint on the dev identity provider",
    )
}

/// 405 with the methods the endpoint takes.
pub(super) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut res = oauth_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "this endpoint does not take that HTTP method",
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// 503 for the simulated outage ([`super::DevIdp::set_unavailable`]).
pub(super) fn unavailable(api: bool, lang: Lang) -> Response<Body> {
    let mut res = if api {
        oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the identity provider is unavailable (simulated outage)",
        )
    } else {
        html(
            StatusCode::SERVICE_UNAVAILABLE,
            super::pages::unavailable(lang),
        )
    };
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

/// The page language from `Accept-Language`.
pub(super) fn lang(headers: &HeaderMap) -> Lang {
    Lang::from_accept_language(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Form or query parameters under OAuth's rules: a parameter sent without a value counts as
/// absent (RFC 6749 §3.1) and none may be sent twice.
#[derive(Debug, Default)]
pub(super) struct Params {
    values: HashMap<String, String>,
    repeated: Vec<String>,
}

impl Params {
    /// Parses `application/x-www-form-urlencoded` bytes (a body or a query string).
    pub(super) fn parse(input: &[u8]) -> Params {
        let mut params = Params::default();
        for (name, value) in url::form_urlencoded::parse(input) {
            if value.is_empty() {
                continue;
            }
            if params.values.contains_key(name.as_ref()) {
                if !params.repeated.iter().any(|r| r == name.as_ref()) {
                    params.repeated.push(name.into_owned());
                }
            } else {
                params.values.insert(name.into_owned(), value.into_owned());
            }
        }
        params
    }

    /// The value of `name`, if sent exactly once (a repeated parameter has no trustworthy value).
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        if self.is_repeated(name) {
            return None;
        }
        self.values.get(name).map(String::as_str)
    }

    /// Whether `name` was sent more than once.
    pub(super) fn is_repeated(&self, name: &str) -> bool {
        self.repeated.iter().any(|r| r == name)
    }

    /// The first repeated parameter, if any.
    pub(super) fn first_repeated(&self) -> Option<&str> {
        self.repeated.first().map(String::as_str)
    }
}

/// Why a form body could not be read.
#[derive(Debug)]
pub(super) enum FormError {
    /// `Content-Type` is not `application/x-www-form-urlencoded`.
    ContentType,
    /// The body is larger than [`MAX_FORM_BYTES`] or the connection failed.
    Body,
}

/// Reads a url-encoded form body.
pub(super) async fn read_form<B>(headers: &HeaderMap, body: B) -> Result<Params, FormError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(FormError::ContentType);
    }
    let bytes = http_body_util::Limited::new(body, MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|_| FormError::Body)?
        .to_bytes();
    Ok(Params::parse(&bytes))
}

/// The value of cookie `name` in the request, if present.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
}

/// A `Set-Cookie` for the SSO cookie (`value: None` deletes it). Its path is
/// `{prefix}/application/o/`, the only place it is read (authorize, end-session): on a shared host
/// such as `127.0.0.1`, where cookies ignore the port, it never reaches the proxy or the app.
pub(super) fn sso_cookie(prefix: &str, secure: bool, value: Option<&str>) -> Option<HeaderValue> {
    let path = format!("{prefix}/application/o/");
    let secure = if secure { "; Secure" } else { "" };
    let cookie = match value {
        Some(v) => format!("{SSO_COOKIE}={v}; Path={path}; HttpOnly; SameSite=Lax{secure}"),
        None => format!(
            "{SSO_COOKIE}=; Path={path}; HttpOnly; SameSite=Lax; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT{secure}"
        ),
    };
    HeaderValue::from_str(&cookie).ok()
}

pub(super) use crate::util::hash::{sha256_b64url as sha256_b64, sha256_hex};
pub(super) use crate::util::id::random_token;
