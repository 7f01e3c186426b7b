//! What a request says about itself, read the same way wherever it is asked: whether it is a
//! browser navigation, where to come back to after sign-in, its query parameters.
//!
//! A leaf: `http`, `url` and `percent-encoding`, nothing of ours.

use http::header::{self, HeaderName};
use http::{HeaderMap, Method, Request};

/// mod_auth_openidc's rule: only a top-level browser navigation is sent to sign in; XHR, fetch,
/// API clients and non-GET requests get a 401 instead of a redirect (no state-cookie pile-up).
pub fn is_browser_navigation<B>(req: &Request<B>) -> bool {
    is_navigation(req.method(), req.headers())
}

/// [`is_browser_navigation`] for a request described by its method and headers — the request
/// itself, or the one a gateway asks about in forward-auth (its method from the trusted header
/// family, the client's own headers passed on by the gateway).
///
/// A navigation is a `GET`/`HEAD` that accepts HTML (`text/html`, `application/xhtml+xml` or
/// `*/*`) and says nothing to the contrary: no `X-Requested-With` (jQuery, Angular and others set
/// it on script requests), and Fetch Metadata, when the browser sends it, saying `navigate` and
/// `document` (an `<iframe>`, `fetch()` or `<img>` is not sent away to sign in).
pub fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return false;
    }
    // Performance: header names as constants, not strings parsed on every lookup.
    static X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
    static SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
    static SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");
    let get = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if headers.get(&X_REQUESTED_WITH).is_some_and(|v| !v.is_empty()) {
        return false;
    }
    if get(&SEC_FETCH_MODE).is_some_and(|v| !v.eq_ignore_ascii_case("navigate")) {
        return false;
    }
    if get(&SEC_FETCH_DEST).is_some_and(|v| !v.eq_ignore_ascii_case("document")) {
        return false;
    }
    match get(&header::ACCEPT) {
        Some(accept) => accept.split(',').any(|part| {
            let media = part.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("text/html") || media.eq_ignore_ascii_case("application/xhtml+xml") || media == "*/*"
        }),
        None => false,
    }
}

/// A genuine CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`, and no
/// credentials at all (browsers never send cookies or `Authorization` with one). `method` is the
/// request's (forward-auth: the one the gateway describes); `carried_cookies`: the request came
/// with cookies that were taken out of it already (ours).
pub fn is_preflight(method: &Method, h: &HeaderMap, carried_cookies: bool) -> bool {
    method == Method::OPTIONS
        && h.contains_key(header::ORIGIN)
        && h.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        && !h.contains_key(header::AUTHORIZATION)
        && !h.contains_key(header::COOKIE)
        && !carried_cookies
}

/// Where a background request's user should come back to after signing in: the page that made it
/// (`Referer`) — its path and query when that page is on `origin`, the whole URL when it is on one
/// of `allowed` (`cors.allowed_origins`: a front end served from elsewhere). `None` otherwise, or
/// without a `Referer`. (Browsers send the page's URL to its own site by default.)
pub fn referer_return<B>(req: &Request<B>, origin: &str, allowed: &[String]) -> Option<String> {
    let referer = url::Url::parse(req.headers().get(header::REFERER)?.to_str().ok()?).ok()?;
    let referer_origin = referer.origin().ascii_serialization();
    if allowed.contains(&referer_origin) {
        return allowed_return(referer.as_str(), allowed);
    }
    if referer_origin != origin {
        return None;
    }
    Some(match referer.query() {
        Some(q) => format!("{}?{q}", referer.path()),
        None => referer.path().to_string(),
    })
}

/// `rd` when it is an absolute `http(s)` URL on one of the `allowed` origins exactly (no user
/// name or password, no fragment, at most [`MAX_RETURN_TO`] bytes): a front end on another origin
/// the configuration trusts (`cors.allowed_origins`). `None` for anything else — which then goes
/// through [`safe_return_to`] and stays on our own origin.
pub fn allowed_return(rd: &str, allowed: &[String]) -> Option<String> {
    let unusual = |b: u8| b == b'\\' || b.is_ascii_control() || b == b' ' || b >= 0x80;
    if allowed.is_empty() || rd.len() > MAX_RETURN_TO || rd.bytes().any(unusual) {
        return None;
    }
    let url = url::Url::parse(rd).ok()?;
    let plain = matches!(url.scheme(), "http" | "https") && url.username().is_empty() && url.password().is_none() && url.fragment().is_none();
    (plain && allowed.contains(&url.origin().ascii_serialization())).then(|| url.to_string())
}

/// The path and query of the request: where to come back to after sign-in (made safe by
/// [`safe_return_to`] before use).
pub fn return_to_of<B>(req: &Request<B>) -> String {
    req.uri().path_and_query().map(|pq| pq.as_str().to_string()).unwrap_or_else(|| "/".into())
}

/// The longest return path kept through sign-in, in bytes (see [`safe_return_to`]).
pub const MAX_RETURN_TO: usize = 1024;

/// Keeps `rd` only if it is a same-origin relative path; anything else becomes `/`.
///
/// Browsers forgive a lot (`\` as `/`, tabs and newlines dropped, `//host` as another origin), so
/// anything with a backslash, a control character or whitespace is refused outright, the rest is
/// resolved as a URL against a dummy origin exactly like a browser would, and the result must stay
/// on that origin with a path that does not start with `//`.
///
/// A return path longer than [`MAX_RETURN_TO`] loses its query, and becomes `/` if even its path is
/// that long: it travels in the sign-in state cookie, which must stay under the browsers' 4 KB.
pub fn safe_return_to(rd: &str) -> String {
    const BASE: &str = "https://return-to.invalid/";
    if !rd.starts_with('/')
        || rd.starts_with("//")
        || rd.len() > 4 * MAX_RETURN_TO
        || rd.bytes().any(|b| b == b'\\' || b.is_ascii_control() || b == b' ' || b >= 0x80)
    {
        return "/".into();
    }
    let Ok(base) = url::Url::parse(BASE) else { return "/".into() };
    let Ok(resolved) = base.join(rd) else { return "/".into() };
    if resolved.origin() != base.origin() || resolved.path().starts_with("//") {
        return "/".into();
    }
    let mut out = resolved.path().to_string();
    if out.len() > MAX_RETURN_TO {
        return "/".into();
    }
    if let Some(q) = resolved.query().filter(|q| out.len() + 1 + q.len() <= MAX_RETURN_TO) {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// One query parameter, percent-decoded. A parameter given twice is refused (None): two values
/// are two readings, and the proxy never picks one.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let mut found = None;
    for (k, v) in url::form_urlencoded::parse(query?.as_bytes()) {
        if k == name {
            if found.is_some() {
                return None;
            }
            found = Some(v.into_owned());
        }
    }
    found
}

/// `/.trousseau/login?rd=<return_to>`: where a client is told to sign in.
pub fn login_url(return_to: &str) -> String {
    format!("/.trousseau/login?rd={}", percent_encoding::utf8_percent_encode(return_to, QUERY_VALUE))
}

/// Characters escaped in a query value we build.
pub const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_allowed_front_ends_exact_origin_is_a_return_url() {
        let allowed = vec!["https://spa.example.com".to_string(), "http://localhost:5173".to_string()];
        assert_eq!(allowed_return("https://spa.example.com/orders/42?tab=1", &allowed).as_deref(), Some("https://spa.example.com/orders/42?tab=1"));
        assert_eq!(allowed_return("http://localhost:5173", &allowed).as_deref(), Some("http://localhost:5173/"));
        for rd in [
            "https://spa.example.com.evil.example/",
            "https://spa.example.com@evil.example/",
            "https://user:pw@spa.example.com/",
            "http://spa.example.com/",
            "https://spa.example.com:8443/",
            "https://spa.example.com/#frag",
            "https://spa.example.com/\\evil",
            "javascript://spa.example.com/%0aalert(1)",
            "//spa.example.com/",
            "/orders",
        ] {
            assert_eq!(allowed_return(rd, &allowed), None, "{rd}");
        }
        assert_eq!(allowed_return("https://spa.example.com/", &[]), None, "nothing allowed: nothing returned");
        assert_eq!(allowed_return(&format!("https://spa.example.com/{}", "a".repeat(MAX_RETURN_TO)), &allowed), None, "too long");
    }

    #[test]
    fn no_open_redirect_payload_is_a_return_url_to_an_allowed_front_end() {
        // The public payloads name other hosts every way a browser might read them; with a front
        // end allowed, none may come out as a return URL (to it or anywhere).
        let allowed = vec!["https://spa.example.com".to_string()];
        for payload in include_str!("../tests/data/open-redirect-payloads.txt").lines().filter(|l| !l.is_empty()) {
            assert_eq!(allowed_return(payload, &allowed), None, "{payload:?}");
            let decoded = percent_encoding::percent_decode_str(payload).decode_utf8_lossy();
            assert_eq!(allowed_return(&decoded, &allowed), None, "{payload:?} decoded");
        }
    }

    #[test]
    fn the_referer_is_a_return_path_on_our_origin_and_a_url_on_an_allowed_one() {
        let req = |referer: &str| Request::get("/api/x").header(header::REFERER, referer).body(()).unwrap();
        let allowed = vec!["https://spa.example.com".to_string()];
        let ours = "https://app.example.com";
        assert_eq!(referer_return(&req("https://app.example.com/orders?x=1"), ours, &allowed).as_deref(), Some("/orders?x=1"));
        assert_eq!(referer_return(&req("https://spa.example.com/orders"), ours, &allowed).as_deref(), Some("https://spa.example.com/orders"));
        assert_eq!(referer_return(&req("https://evil.example/orders"), ours, &allowed), None);
        assert_eq!(referer_return(&req("not a url"), ours, &allowed), None);
    }

    #[test]
    fn return_to_keeps_same_origin_paths_only() {
        assert_eq!(safe_return_to("/a/b?c=d"), "/a/b?c=d");
        for bad in [
            "//evil.com", "/\\evil.com", "https://evil.com", "/\t/evil.com", "\\/evil.com", "/.//evil.com",
            "evil.com", "", "/%0a/evil", "javascript:alert(1)", "/\u{3002}evil",
        ] {
            let out = safe_return_to(bad);
            assert!(out.starts_with('/') && !out.starts_with("//"), "{bad:?} -> {out}");
            assert!(!out.contains("evil.com") || out.starts_with("/%"), "{bad:?} -> {out}");
        }
    }

    #[test]
    fn browser_detection_follows_fetch_metadata() {
        let req = |pairs: &[(&str, &str)], method: Method| {
            let mut b = Request::builder().method(method).uri("/");
            for (k, v) in pairs {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap()
        };
        assert!(is_browser_navigation(&req(&[("accept", "text/html,application/xhtml+xml")], Method::GET)));
        assert!(!is_browser_navigation(&req(&[("accept", "text/html")], Method::POST)));
        assert!(!is_browser_navigation(&req(&[("accept", "application/json")], Method::GET)));
        assert!(!is_browser_navigation(&req(&[("accept", "*/*"), ("sec-fetch-mode", "cors")], Method::GET)));
        assert!(!is_browser_navigation(&req(&[("accept", "text/html"), ("x-requested-with", "XMLHttpRequest")], Method::GET)));
        assert!(!is_browser_navigation(&req(&[], Method::GET)));
    }

    #[test]
    fn one_rule_for_requests_and_the_requests_a_gateway_asks_about() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            h
        };
        let html = [("accept", "text/html")];
        assert!(is_navigation(&Method::GET, &headers(&html)));
        assert!(is_navigation(&Method::HEAD, &headers(&[("accept", "*/*")])));
        assert!(!is_navigation(&Method::POST, &headers(&html)), "the described method counts");
        assert!(!is_navigation(&Method::GET, &headers(&[("accept", "text/html"), ("x-requested-with", "fetch")])), "any X-Requested-With");
        assert!(!is_navigation(&Method::GET, &headers(&[("accept", "text/html"), ("sec-fetch-dest", "iframe")])));
        assert!(!is_navigation(&Method::GET, &headers(&[("accept", "application/json, text/htmlx")])), "media types, not substrings");
    }

    #[test]
    fn duplicated_query_parameters_are_refused() {
        assert_eq!(query_param(Some("state=a&code=b"), "state").as_deref(), Some("a"));
        assert_eq!(query_param(Some("state=a&state=b"), "state"), None);
    }
}
