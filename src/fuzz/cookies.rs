//! Targets for what browsers send in `Cookie:`: the header parser, the sealed session cookie and its
//! chunks, the session inside the seal, and the sign-in state cookie.

use http::header::{HeaderMap, HeaderValue, COOKIE};

use super::fixtures::{self, browser_jar, codec, cookie_headers, expand, sealer};
use crate::identity::{X_TROUSSEAU_JWT_ASSERTION, X_TROUSSEAU_ORG_ID, X_TROUSSEAU_SUB};
use crate::util::clock::now_secs;
use crate::session::cookies::{
    strip_cookies, RequestCookies, MAX_REQUEST_COOKIES, MAX_REQUEST_COOKIE_BYTES, SESSION_PURPOSE,
};
use crate::session::Session;

/// `Cookie:` header parsing (one header per input line). Properties: the parser reads exactly the
/// pairs a plain `;`-split reading gives, within its count and byte limits; `get` returns the first
/// readable value of a name; [`strip_cookies`] leaves none of our cookies, keeps every other
/// segment in order, and leaves a lone header without ours byte for byte.
pub fn cookie_header(data: &[u8]) {
    let headers = cookie_headers(data);
    let cookies = RequestCookies::from_headers(&headers);

    let expected = reference_pairs(&headers);
    let readable: Vec<(&str, &str)> = expected
        .iter()
        .filter_map(|(n, v)| Some((std::str::from_utf8(n).ok()?, std::str::from_utf8(v).ok()?)))
        .collect();
    let got: Vec<(&str, &str)> = cookies.iter().collect();
    assert_eq!(got, readable, "pairs differ from a plain reading");
    for (name, _) in &readable {
        let first = expected
            .iter()
            .find(|(n, v)| n == name.as_bytes() && std::str::from_utf8(v).is_ok())
            .and_then(|(_, v)| std::str::from_utf8(v).ok());
        assert_eq!(cookies.get(name), first, "get({name:?})");
    }

    let settings = fixtures::cookie_settings();
    let is_ours = |name: &str| settings.is_ours(name) || name.starts_with("__Host-trousseau_session_login_");
    let mut stripped = headers.clone();
    strip_cookies(&mut stripped, is_ours);
    let expected = reference_strip(&headers, &is_ours);
    let got: Vec<&[u8]> = stripped.get_all(COOKIE).iter().map(HeaderValue::as_bytes).collect();
    match &expected {
        None => assert_eq!(stripped, headers, "nothing of ours in one header: untouched"),
        Some(line) if line.is_empty() => assert!(got.is_empty(), "only ours: no Cookie header left"),
        Some(line) => assert_eq!(got, [line.as_slice()], "the other segments, in order"),
    }
    let left = RequestCookies::from_headers(&stripped);
    assert!(left.iter().all(|(name, _)| !is_ours(name)), "one of our cookies reaches the app");
}

/// `(name, value)` byte pairs the way RFC 6265 reads a `Cookie:` header, with the parser's limits.
fn reference_pairs(headers: &HeaderMap) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pairs = Vec::new();
    let mut budget = MAX_REQUEST_COOKIE_BYTES;
    for value in headers.get_all(COOKIE) {
        for segment in value.as_bytes().split(|&b| b == b';') {
            if pairs.len() >= MAX_REQUEST_COOKIES || segment.len() > budget {
                return pairs;
            }
            budget -= segment.len();
            let segment = trim(segment);
            let Some(eq) = segment.iter().position(|&b| b == b'=') else { continue };
            let name = trim(&segment[..eq]);
            if !name.is_empty() {
                pairs.push((name.to_vec(), trim(&segment[eq + 1..]).to_vec()));
            }
        }
    }
    pairs
}

/// The `Cookie:` line the app should get: `None` when the headers must stay untouched, else the
/// kept segments joined with `"; "` (empty: no header at all).
fn reference_strip(headers: &HeaderMap, is_ours: &dyn Fn(&str) -> bool) -> Option<Vec<u8>> {
    let name_of = |segment: &[u8]| -> Option<String> {
        let segment = trim(segment);
        let eq = segment.iter().position(|&b| b == b'=')?;
        String::from_utf8(trim(&segment[..eq]).to_vec()).ok()
    };
    let values: Vec<&HeaderValue> = headers.get_all(COOKIE).iter().collect();
    let segments = || values.iter().flat_map(|v| v.as_bytes().split(|&b| b == b';'));
    let found = segments().any(|s| name_of(s).is_some_and(|n| is_ours(&n)));
    if !found && values.len() <= 1 {
        return None;
    }
    let kept: Vec<&[u8]> = segments()
        .map(trim)
        .filter(|s| !s.is_empty() && !name_of(s).is_some_and(|n| is_ours(&n)))
        .collect();
    Some(kept.join(&b"; "[..]))
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Sealed session cookie open + chunk assembly (`Cookie:` lines; markers `@S@`, `@B0@`–`@B2@` are
/// fresh sealed sessions, see [`fixtures::expand`]). Properties: a session loads only from a
/// complete chunk set whose count is within `max_chunks`, and it is exactly what was sealed;
/// clearing and re-writing answer at most one `Set-Cookie` per chunk of ours the request carries
/// plus `max_chunks`, never a number the client chose.
pub fn session_cookie(data: &[u8]) {
    let data = expand(data);
    let headers = cookie_headers(&data);
    let cookies = RequestCookies::from_headers(&headers);
    let settings = fixtures::cookie_settings();

    let assembled = settings.read_chunked(&cookies);
    if let Some(value) = &assembled {
        let (count, first) = cookies.get(&settings.name).and_then(|v| v.split_once('.')).expect("a first chunk with a count");
        let count: usize = count.parse().expect("a decimal count");
        assert!((1..=settings.max_chunks).contains(&count), "count {count} accepted");
        assert!(!first.is_empty() && value.starts_with(first));
        assert!(value.len() <= cookies.iter().map(|(_, v)| v.len()).sum::<usize>());
    }
    let loaded = codec().load(&cookies);
    if let Some(session) = &loaded {
        let sealed = assembled.as_deref().expect("a session loads from an assembled value");
        let json = sealer().open(SESSION_PURPOSE, sealed).expect("it opens");
        let decoded: Session = serde_json::from_slice(&json).expect("it is a session");
        assert_eq!(&decoded, session.as_ref());
        round_trip(session);
    }

    // Set-Cookie lines: bounded by what the request carries, never by a count it states.
    let present: std::collections::BTreeSet<&str> = cookies.iter().map(|(n, _)| n).filter(|n| settings.is_ours(n)).collect();
    let cleared = settings.clear(&cookies);
    assert_eq!(cleared.len(), present.len(), "one removal per chunk of ours present");
    assert!(cleared.len() <= MAX_REQUEST_COOKIES);
    let fresh = sealer().seal(SESSION_PURPOSE, b"{}");
    let written = settings.write_chunked(&fresh, std::time::Duration::from_secs(60), &cookies).expect("a small value fits");
    let removals = written.iter().filter(|v| v.to_str().is_ok_and(|s| s.contains("Max-Age=0"))).count();
    assert!(written.len() - removals <= settings.max_chunks, "more chunks written than max_chunks");
    assert!(removals <= present.len(), "removals of cookies the request does not carry");
}

/// A session stores and loads back unchanged, and its identity headers are well-formed.
fn round_trip(session: &Session) {
    let set = codec().store(session, std::time::Duration::from_secs(60), &RequestCookies::default());
    if let Ok(set) = set {
        assert!(set.len() <= fixtures::cookie_settings().max_chunks);
        let loaded = codec().load(&browser_jar(&set)).expect("a stored session loads");
        assert_eq!(loaded.as_ref(), session);
    }
    check_identity_headers(session);
}

/// The session behind the seal (fuzzer bytes sealed with the test key, then loaded as a browser
/// would send them). Properties: it loads exactly when the bytes are a session's JSON (and fit in
/// the cookies); a loaded session round-trips; its identity headers and assertion are well-formed
/// and say what the session says.
pub fn session_plaintext(data: &[u8]) {
    let sealed = sealer().seal(SESSION_PURPOSE, data);
    let settings = fixtures::cookie_settings();
    let Ok(set) = settings.write_chunked(&sealed, std::time::Duration::from_secs(60), &RequestCookies::default()) else {
        assert!(sealed.len() > settings.chunk_size * settings.max_chunks, "a sealed value that fits was refused");
        return;
    };
    let loaded = codec().load(&browser_jar(&set));
    let parsed = serde_json::from_slice::<Session>(data).ok();
    assert_eq!(loaded.as_deref(), parsed.as_ref(), "loads exactly when the plaintext is a session");
    if let Some(session) = loaded {
        round_trip(&session);
    }
}

/// What the app receives for `session`: header values are visible ASCII (no CR, LF or NUL), plain
/// headers decode back to the claims, absent claims are absent, and the assertion verifies with the
/// published key and names the same user and organization.
pub fn check_identity_headers(session: &Session) {
    let mut headers = HeaderMap::new();
    headers.insert(X_TROUSSEAU_SUB, HeaderValue::from_static("spoofed"));
    fixtures::assertions().insert_identity_headers(&mut headers, session, true);
    for (name, value) in &headers {
        assert!(value.as_bytes().iter().all(|&b| (0x20..0x7F).contains(&b)), "{name}: not visible ASCII");
    }
    let sub = session.identity.sub.as_str();
    match headers.get(X_TROUSSEAU_SUB) {
        Some(value) => assert_eq!(fixtures::percent_decode(value), sub),
        None => assert!(sub.is_empty(), "X-Trousseau-Sub missing"),
    }
    let org = session.selected_organization();
    match headers.get(X_TROUSSEAU_ORG_ID) {
        Some(value) => assert_eq!(Some(fixtures::percent_decode(value).as_str()), org.map(|o| o.id.as_str())),
        None => assert!(org.is_none_or(|o| o.id.is_empty()), "X-Trousseau-Org-Id missing"),
    }

    let assertion = headers.get(X_TROUSSEAU_JWT_ASSERTION).expect("an assertion").to_str().expect("ASCII");
    let (signed, signature) = assertion.rsplit_once('.').expect("a compact JWS");
    let signature = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature).expect("base64url");
    let public = aws_lc_rs::signature::KeyPair::public_key(fixtures::key_pair());
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED, public.as_ref())
        .verify(signed.as_bytes(), &signature)
        .expect("the assertion verifies with the published key");
    let claims = fixtures::jws_part(assertion, 1).expect("JSON claims");
    assert_eq!(claims["sub"].as_str(), Some(sub));
    for name in ["email", "name", "given_name", "family_name", "picture", "trousseau_user_id", "locale"] {
        assert!(claims.get(name).is_none_or(|v| v.as_str().is_some_and(|s| !s.is_empty())), "{name}: empty or null");
    }
    // All of them, or — past the assertion's budget — their number only.
    match crate::identity::organizations_claim(session.identity.organizations.as_deref()) {
        (listed, None) => {
            let orgs = serde_json::to_value(listed).expect("organizations JSON");
            assert_eq!(claims.get("organizations").cloned().unwrap_or_default(), orgs);
        }
        (_, Some(omitted)) => {
            assert!(claims.get("organizations").is_none());
            assert_eq!(claims["organizations_omitted"].as_u64(), Some(omitted as u64));
            assert_eq!(Some(omitted), session.identity.organizations.as_ref().map(Vec::len));
        }
    }
    assert_eq!(claims.get("org").cloned().unwrap_or_default(), serde_json::to_value(org).expect("org JSON"));
}

/// The sign-in state cookie and the return path it carries. The input is tried as a cookie value
/// (marker `@L@` is a fresh sealed state) and, sealed with the test key, as the plaintext behind
/// the seal (a small `t` is an offset from now); it is also given to the return-path validator as
/// `rd`, and as a sign-in trail cookie. Properties: a state opens only when unexpired; every
/// return path that comes out is a same-origin relative path, and stays one; a return URL to an
/// allowed front end stays on that origin exactly; a trail re-encodes to itself.
pub fn state_cookie(data: &[u8]) {
    let now = now_secs();
    let value = expand(data);
    if let Ok(value) = std::str::from_utf8(&value) {
        if let Some(login) = crate::session::sessions::open_login_state(sealer(), value, now) {
            check_return_to(&crate::request::safe_return_to(&login.return_to));
        }
        check_sign_in_trail(value, now);
    }
    // A small `t` (start time) is an offset from now, so committed seeds stay unexpired.
    let plaintext = match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(mut value) if value.is_object() => {
            fixtures::relative_times(&mut value, &["t"], now);
            serde_json::to_vec(&value).expect("a JSON value serializes")
        }
        _ => data.to_vec(),
    };
    let sealed = sealer().seal(crate::session::sessions::LOGIN_STATE_PURPOSE, &plaintext);
    let opened = crate::session::sessions::open_login_state(sealer(), &sealed, now);
    if let Some(login) = &opened {
        assert!(login.started_at.saturating_add(600) >= now, "an expired state opened");
        assert!(login.started_at <= now + 60, "a state from the future opened");
        check_return_to(&crate::request::safe_return_to(&login.return_to));
    }
    if let Ok(rd) = std::str::from_utf8(data) {
        check_return_to(&crate::request::safe_return_to(rd));
        check_allowed_return(rd);
    }
}

/// The sign-in trail cookie ([`crate::session::sign_ins`]): what parses re-encodes to itself,
/// holds at most three ordered times, and never counts more than it holds.
fn check_sign_in_trail(value: &str, now: u64) {
    use crate::session::sign_ins::SignInTrail;
    let Some(trail) = SignInTrail::parse(value) else { return };
    assert_eq!(SignInTrail::parse(&trail.encode()).as_ref(), Some(&trail), "a trail re-encodes to itself");
    assert!(!trail.times.is_empty() && trail.times.len() <= 3 && trail.times.is_sorted());
    assert!(trail.recent(now) <= trail.times.len());
    let next = SignInTrail::after_sign_in(Some(trail), 0, 0, 0, now);
    assert!(next.times.len() <= 3 && next.times.contains(&now));
    assert_eq!(SignInTrail::parse(&next.encode()), Some(next), "the next trail reads back");
}

/// A return URL to an allowed front end ([`crate::request::allowed_return`]): only ever on the
/// allowed origin exactly, as a browser reads it, and stable.
fn check_allowed_return(rd: &str) {
    const ALLOWED: &str = "https://spa.fuzz.invalid";
    let Some(url) = crate::request::allowed_return(rd, &[ALLOWED.to_string()]) else { return };
    let parsed = url::Url::parse(&url).expect("an allowed return is a URL");
    assert_eq!(parsed.origin().ascii_serialization(), ALLOWED, "{rd:?} → {url:?} leaves the allowed origin");
    assert!(parsed.username().is_empty() && parsed.password().is_none(), "{url:?}");
    assert!(!url.bytes().any(|b| b == b'\\' || b.is_ascii_control() || b == b' ' || b >= 0x80), "{url:?}");
    assert_eq!(crate::request::allowed_return(&url, &[ALLOWED.to_string()]).as_deref(), Some(url.as_str()), "not stable: {url:?}");
}

/// `rd` after [`crate::request::safe_return_to`]: a path on our origin however a browser reads it.
fn check_return_to(rd: &str) {
    assert!(rd.starts_with('/') && !rd.starts_with("//"), "{rd:?}: not a relative path");
    assert!(!rd.bytes().any(|b| b == b'\\' || b.is_ascii_control() || b == b' ' || b >= 0x80), "{rd:?}");
    let origin = url::Url::parse("https://app.fuzz.invalid/").expect("origin");
    let resolved = origin.join(rd).expect("a relative path resolves");
    assert_eq!(resolved.origin(), origin.origin(), "{rd:?} leaves the origin");
    assert_eq!(crate::request::safe_return_to(rd), rd, "not stable: {rd:?}");
}
