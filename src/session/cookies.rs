//! Our cookies, in requests and in responses.
//!
//! * [`RequestCookies`] reads every `Cookie:` header of a request, tolerating anything a client sends.
//! * [`CookieSettings`] names our cookie and writes values too big for one cookie as a *chunk set*.
//! * [`strip_cookies`] removes our cookies before a request goes to the app.
//! * [`SessionCodec`] ties it together: session ⇄ JSON ⇄ sealed ⇄ chunk set.
//!
//! # Chunk format
//!
//! A value is cut into chunks of at most `chunk_size` bytes, none of them empty. Chunk 0 lives in the
//! cookie named [`CookieSettings::name`] and starts with the total number of chunks and a dot; chunks
//! 1.. live in `<name>_1`, `<name>_2`, … as they are:
//!
//! ```text
//! __Host-trousseau_session=3.<bytes 0..3800>
//! __Host-trousseau_session_1=<bytes 3800..7600>
//! __Host-trousseau_session_2=<bytes 7600..9100>
//! ```
//!
//! The count comes from the first cookie only, so a reader never has to guess: chunks beyond it (left
//! over by an earlier, bigger session) are ignored, and expired by the next write; a missing or empty
//! chunk means "no session". A value of exactly k × `chunk_size` bytes is k chunks, never k + 1 with an
//! empty last one (an empty cookie value looks like a deletion to browsers and to us).

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

use super::seal::Sealer;
use super::Session;

/// Most cookie pairs read from one request; the rest are ignored.
pub const MAX_REQUEST_COOKIES: usize = 256;
/// Most `Cookie:` bytes read from one request (all headers together); the rest are ignored. Large
/// enough for a full chunk set (8 × 3.8 KB) plus the app's own cookies.
pub const MAX_REQUEST_COOKIE_BYTES: usize = 64 * 1024;
/// Default most chunks in a set: 8 × 3800 ≈ 30 KB of sealed value, far below browsers' per-site limit
/// yet far above a normal session.
pub const DEFAULT_MAX_CHUNKS: usize = 8;
/// Default bytes of value per cookie, leaving room for the name, the count and the attributes within
/// the 4096 bytes browsers accept per cookie.
pub const DEFAULT_CHUNK_SIZE: usize = 3800;
/// The AEAD purpose of the session cookie.
pub const SESSION_PURPOSE: &str = "session";

/// Why a cookie could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// The value needs more chunks than allowed.
    #[error(
        "cookie value of {len} bytes needs {chunks} cookies; at most {max_chunks} are allowed"
    )]
    TooLarge {
        /// Value length in bytes.
        len: usize,
        /// Chunks it would need.
        chunks: usize,
        /// The configured maximum.
        max_chunks: usize,
    },
    /// The value is empty, or holds a byte that cannot travel in a cookie unencoded (space, `;`, `,`,
    /// `"`, `\`, control or non-ASCII).
    #[error("cookie value is empty or contains a byte that is not allowed in a cookie")]
    InvalidValue,
}

/// The cookies of one request, in the order the client sent them. Parsing never fails: pairs that are
/// not `name=value`, not UTF-8, or beyond [`MAX_REQUEST_COOKIES`] / [`MAX_REQUEST_COOKIE_BYTES`] are
/// skipped.
///
/// Performance: the pairs point into the request's own `Cookie:` values (shared, not copied: a
/// session cookie is kilobytes long), and a value is checked for UTF-8 only when it is read.
#[derive(Clone, Debug, Default)]
pub struct RequestCookies {
    values: Vec<HeaderValue>,
    pairs: Vec<Pair>,
}

/// One `name=value`: which `Cookie:` value it is in, and where (trimmed).
#[derive(Clone, Debug)]
struct Pair {
    header: usize,
    name: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

impl RequestCookies {
    /// Reads all `Cookie:` headers (HTTP/2 clients send one per cookie).
    pub fn from_headers(headers: &HeaderMap) -> RequestCookies {
        let mut cookies = RequestCookies::default();
        let mut budget = MAX_REQUEST_COOKIE_BYTES;
        'headers: for value in headers.get_all(COOKIE) {
            let bytes = value.as_bytes();
            let header = cookies.values.len();
            cookies.values.push(value.clone());
            for segment in segments(bytes) {
                if cookies.pairs.len() >= MAX_REQUEST_COOKIES || segment.len() > budget {
                    break 'headers;
                }
                budget -= segment.len();
                if let Some((name, value)) = split_pair(segment) {
                    let offset = |part: &[u8]| part.as_ptr() as usize - bytes.as_ptr() as usize;
                    let (name_at, value_at) = (offset(name), offset(value));
                    cookies.pairs.push(Pair { header, name: name_at..name_at + name.len(), value: value_at..value_at + value.len() });
                }
            }
        }
        cookies
    }

    /// The value of the first cookie with this name (browsers send the most specific path first).
    /// Only that value is checked for UTF-8: the others are compared by name, never read.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find_map(|pair| {
            let bytes = self.values[pair.header].as_bytes();
            if &bytes[pair.name.clone()] != name.as_bytes() {
                return None;
            }
            std::str::from_utf8(&bytes[pair.value.clone()]).ok()
        })
    }

    /// All `(name, value)` pairs, in request order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().filter_map(|pair| {
            let bytes = self.values[pair.header].as_bytes();
            let name = std::str::from_utf8(&bytes[pair.name.clone()]).ok()?;
            let value = std::str::from_utf8(&bytes[pair.value.clone()]).ok()?;
            Some((name, value))
        })
    }
}

#[cfg(test)]
impl RequestCookies {
    /// The cookies of a request sending these pairs in one `Cookie:` header.
    pub(crate) fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> RequestCookies {
        let value = pairs.into_iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(&value).unwrap());
        RequestCookies::from_headers(&headers)
    }

    /// The pairs, owned.
    pub(crate) fn to_pairs(&self) -> Vec<(String, String)> {
        self.iter().map(|(n, v)| (n.to_owned(), v.to_owned())).collect()
    }
}

impl PartialEq for RequestCookies {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for RequestCookies {}

/// Splits one `;`-separated segment into a trimmed name and value, still bytes. `None` for anything
/// that is not `name=value` with a non-empty name.
fn split_pair(segment: &[u8]) -> Option<(&[u8], &[u8])> {
    let segment = trim_ows(segment);
    let eq = memchr::memchr(b'=', segment)?;
    let name = trim_ows(&segment[..eq]);
    if name.is_empty() {
        return None;
    }
    Some((name, trim_ows(&segment[eq + 1..])))
}

/// Removes the spaces and tabs around a segment.
fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// The `;`-separated segments of a `Cookie:` value, exactly as `split(|b| b == b';')` yields them.
/// Performance: memchr finds the separators a vector at a time; a session cookie is kilobytes long
/// and is cut here on every request (a byte-at-a-time split was ~20% of the proxy's instructions).
fn segments(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b';', current) {
            Some(end) => {
                rest = Some(&current[end + 1..]);
                Some(&current[..end])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// The name of a `;`-separated segment, if it has one that is UTF-8.
fn segment_name(segment: &[u8]) -> Option<&str> {
    let segment = trim_ows(segment);
    let end = memchr::memchr(b'=', segment)?;
    std::str::from_utf8(trim_ows(&segment[..end])).ok()
}

/// How one of our cookies is named and written. Invariant: `secure` ⇔ `name` starts with `__Host-`
/// (when built by [`CookieSettings::new`]); cookies are always `Path=/`, never `Domain`, `HttpOnly`
/// and `SameSite=Lax`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieSettings {
    /// Final name of the first cookie, `__Host-` prefix included when secure.
    pub name: String,
    /// Adds `Secure` (public URL is https).
    pub secure: bool,
    /// Most cookies one value may take.
    pub max_chunks: usize,
    /// Most value bytes per cookie (the count prefix of the first cookie comes on top).
    pub chunk_size: usize,
}

impl CookieSettings {
    /// Settings for `base_name`: `__Host-<base_name>` when `secure` (so the browser pins the cookie to
    /// this host, https and `Path=/`), the plain name otherwise; default chunking.
    pub fn new(base_name: &str, secure: bool) -> CookieSettings {
        CookieSettings {
            name: if secure {
                format!("__Host-{base_name}")
            } else {
                base_name.to_owned()
            },
            secure,
            max_chunks: DEFAULT_MAX_CHUNKS,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// True for our first cookie's name and for every chunk name (`<name>_<digits>`), including chunk
    /// numbers beyond `max_chunks`, so no leftover of ours is ever forwarded.
    pub fn is_ours(&self, name: &str) -> bool {
        self.chunk_index(name).is_some()
    }

    /// 0 for the first cookie, n for `<name>_n`; `None` for other cookies.
    fn chunk_index(&self, name: &str) -> Option<usize> {
        let rest = name.strip_prefix(self.name.as_str())?;
        if rest.is_empty() {
            return Some(0);
        }
        let digits = rest.strip_prefix('_')?;
        if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        match digits.parse::<usize>() {
            // "_0" and "_01" are not names we write; leave them to whoever did.
            Ok(n) if n > 0 && !digits.starts_with('0') => Some(n),
            _ => None,
        }
    }

    fn chunk_name(&self, index: usize) -> String {
        if index == 0 {
            self.name.clone()
        } else {
            format!("{}_{index}", self.name)
        }
    }

    /// The value stored by [`CookieSettings::write_chunked`], or `None` when there is none or it is
    /// incomplete (missing or empty chunk, bad count).
    pub fn read_chunked(&self, cookies: &RequestCookies) -> Option<String> {
        let first = cookies.get(&self.name)?;
        let (count, chunk0) = first.split_once('.')?;
        if count.is_empty() || count.len() > 4 || !count.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let count: usize = count.parse().ok()?;
        if count == 0 || count > self.max_chunks || chunk0.is_empty() {
            return None;
        }
        let mut value = String::with_capacity(chunk0.len() * count);
        value.push_str(chunk0);
        for index in 1..count {
            let chunk = cookies.get(&self.chunk_name(index))?;
            if chunk.is_empty() {
                return None;
            }
            value.push_str(chunk);
        }
        Some(value)
    }

    /// `Set-Cookie` values storing `value` for `max_age`, plus removals for chunks of ours that the
    /// request carries and the new value does not use.
    ///
    /// Fails with [`CookieError::TooLarge`] beyond `max_chunks` cookies, and with
    /// [`CookieError::InvalidValue`] for an empty value or one that is not made of cookie octets
    /// (sealed values, base64url, always are).
    pub fn write_chunked(
        &self,
        value: &str,
        max_age: Duration,
        cookies: &RequestCookies,
    ) -> Result<Vec<HeaderValue>, CookieError> {
        if value.is_empty() || !value.bytes().all(is_cookie_octet) {
            return Err(CookieError::InvalidValue);
        }
        let chunk_size = self.chunk_size.max(1);
        let count = value.len().div_ceil(chunk_size);
        if count > self.max_chunks {
            return Err(CookieError::TooLarge {
                len: value.len(),
                chunks: count,
                max_chunks: self.max_chunks,
            });
        }
        let max_age =
            cookie::time::Duration::seconds(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX));

        let mut out = Vec::with_capacity(count + 1);
        // `value` is ASCII (checked above), so byte chunks are char boundaries.
        for (index, chunk) in value.as_bytes().chunks(chunk_size).enumerate() {
            let chunk = std::str::from_utf8(chunk).map_err(|_| CookieError::InvalidValue)?;
            let chunk = if index == 0 {
                format!("{count}.{chunk}")
            } else {
                chunk.to_owned()
            };
            let mut cookie = self.cookie(self.chunk_name(index), chunk);
            cookie.set_max_age(max_age);
            out.push(to_header(&cookie)?);
        }
        for index in self.present_chunks(cookies) {
            if index >= count {
                out.push(self.removal(index)?);
            }
        }
        Ok(out)
    }

    /// `Set-Cookie` values expiring every cookie of ours the request carries.
    pub fn clear(&self, cookies: &RequestCookies) -> Vec<HeaderValue> {
        self.present_chunks(cookies)
            .into_iter()
            .filter_map(|index| self.removal(index).ok())
            .collect()
    }

    /// Chunk indexes of ours present in the request, without duplicates.
    fn present_chunks(&self, cookies: &RequestCookies) -> Vec<usize> {
        let mut indexes: Vec<usize> = cookies
            .iter()
            .filter_map(|(name, _)| self.chunk_index(name))
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        indexes
    }

    /// A `Set-Cookie` value for one cookie with our attributes (`Path=/`, `HttpOnly`,
    /// `SameSite=Lax`, `Secure` over https) under any name — a sign-in attempt's state cookie —
    /// kept `max_age`, or expired at once when `max_age` is zero.
    pub fn single(&self, name: &str, value: &str, max_age: Duration) -> HeaderValue {
        let mut cookie = self.cookie(name.to_string(), value.to_string());
        if max_age.is_zero() {
            cookie.make_removal();
        } else {
            cookie.set_max_age(cookie::time::Duration::seconds(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)));
        }
        to_header(&cookie).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
    }

    fn cookie(&self, name: String, value: String) -> Cookie<'static> {
        Cookie::build((name, value))
            .path("/")
            .secure(self.secure)
            .http_only(true)
            .same_site(SameSite::Lax)
            .build()
    }

    fn removal(&self, index: usize) -> Result<HeaderValue, CookieError> {
        let mut cookie = self.cookie(self.chunk_name(index), String::new());
        cookie.make_removal();
        to_header(&cookie)
    }
}

/// RFC 6265 `cookie-octet`: visible ASCII except `"`, `,`, `;` and `\`.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn to_header(cookie: &Cookie<'_>) -> Result<HeaderValue, CookieError> {
    HeaderValue::from_str(&cookie.to_string()).map_err(|_| CookieError::InvalidValue)
}

/// Removes the cookies for which `is_ours(name)` holds from the request's `Cookie:` header(s).
///
/// Other cookies are kept byte-for-byte, in order. When the request has several `Cookie:` headers
/// (HTTP/2 sends one per cookie) the rest are joined into one with `"; "`, as RFC 9113 §8.2.3 asks
/// before passing them to HTTP/1.1. No header is left when nothing remains. With a single header and
/// nothing of ours in it, the headers are not touched at all.
pub fn strip_cookies(headers: &mut HeaderMap, is_ours: impl Fn(&str) -> bool) {
    let values = headers.get_all(COOKIE);
    let mut count = 0;
    let mut found = false;
    for value in values.iter() {
        count += 1;
        found = found
            || segments(value.as_bytes()).any(|s| segment_name(s).is_some_and(&is_ours));
    }
    if !found && count <= 1 {
        return;
    }

    let mut kept: Vec<u8> = Vec::new();
    for value in values.iter() {
        for segment in segments(value.as_bytes()) {
            let segment = trim_ows(segment);
            if segment.is_empty() || segment_name(segment).is_some_and(&is_ours) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(segment);
        }
    }
    headers.remove(COOKIE);
    if kept.is_empty() {
        return;
    }
    // The bytes all come from valid header values and "; ", so this holds; if it ever did not, the
    // app loses its cookies rather than receiving ours.
    if let Ok(value) = HeaderValue::from_bytes(&kept) {
        headers.insert(COOKIE, value);
    }
}

/// Most bytes (sealed value and session, roughly) of opened sessions [`SessionCodec`] keeps.
const OPENED_CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// How long an opened session stays in memory without a request carrying it.
const OPENED_CACHE_IDLE: Duration = Duration::from_secs(300);

/// Session ⇄ cookies: JSON, sealed with purpose [`SESSION_PURPOSE`], written as a chunk set.
#[derive(Clone, Debug)]
pub struct SessionCodec {
    sealer: Arc<Sealer>,
    cookie: CookieSettings,
    opened: OpenedSessions,
}

/// Sessions already opened, by sealed value. A browser sends the same cookie with every request
/// until it changes, so base64, AES-GCM and JSON (together ~25% of a proxied request's
/// instructions) run once per cookie value instead of once per request. A sealed value always
/// opens to the same session (the keys are fixed for the process's life), so this is invisible;
/// revocation and lifetime checks still run on every request, after [`SessionCodec::load`].
#[derive(Clone)]
struct OpenedSessions(moka::sync::Cache<Arc<str>, Arc<Session>, TailHash>);

impl std::fmt::Debug for OpenedSessions {
    // Never prints the sessions: they hold refresh tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedSessions").field("entries", &self.0.entry_count()).finish()
    }
}

/// The hash of [`OpenedSessions`], keyed by whole sealed values: equality compares every byte,
/// the hash reads only the last 24 bytes — the AES-GCM tag, which nobody can choose without the
/// key — so hashing a 2 KB cookie costs what hashing 24 bytes does. Only values that opened are
/// inserted, so nobody can plant colliding keys.
#[derive(Clone, Default)]
struct TailHash(std::collections::hash_map::RandomState);

impl BuildHasher for TailHash {
    type Hasher = TailHasher;
    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

struct TailHasher(std::collections::hash_map::DefaultHasher);

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(&bytes[bytes.len().saturating_sub(24)..]);
    }
    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

impl SessionCodec {
    /// A codec sealing with `sealer` into the cookie described by `cookie`.
    pub fn new(sealer: Arc<Sealer>, cookie: CookieSettings) -> SessionCodec {
        let opened = moka::sync::Cache::builder()
            // A session weighs about its sealed form, plus organizations filled back in after
            // being set aside ([`SessionCodec::remember`]).
            .weigher(|key: &Arc<str>, session: &Arc<Session>| {
                let organizations: usize = session.identity.organizations.iter().flatten().map(crate::claims::Organization::approx_size).sum();
                u32::try_from(key.len() * 2 + organizations).unwrap_or(u32::MAX)
            })
            .max_capacity(OPENED_CACHE_BYTES)
            .time_to_idle(OPENED_CACHE_IDLE)
            .build_with_hasher(TailHash::default());
        SessionCodec { sealer, cookie, opened: OpenedSessions(opened) }
    }

    /// The cookie settings (name, chunking), e.g. for [`strip_cookies`] via [`CookieSettings::is_ours`].
    pub fn cookie(&self) -> &CookieSettings {
        &self.cookie
    }

    /// The session the request carries; `None` when absent, incomplete, tampered, sealed by an unknown
    /// key or not a session. Never panics.
    pub fn load(&self, cookies: &RequestCookies) -> Option<Arc<Session>> {
        let sealed = self.cookie.read_chunked(cookies)?;
        if let Some(session) = self.opened.0.get(sealed.as_str()) {
            return Some(session);
        }
        let json = self.sealer.open(SESSION_PURPOSE, &sealed)?;
        let session: Arc<Session> = Arc::new(serde_json::from_slice(&json).ok()?);
        self.opened.0.insert(sealed.into(), Arc::clone(&session));
        Some(session)
    }

    /// Keeps `session` as what this request's cookie opens to (the organizations set aside filled
    /// back in), so the next requests with it find it whole.
    pub fn remember(&self, cookies: &RequestCookies, session: Arc<Session>) {
        if let Some(sealed) = self.cookie.read_chunked(cookies) {
            self.opened.0.insert(sealed.into(), session);
        }
    }

    /// `Set-Cookie` values storing `session` for `max_age` (and expiring leftover chunks).
    pub fn store(
        &self,
        session: &Session,
        max_age: Duration,
        cookies: &RequestCookies,
    ) -> Result<Vec<HeaderValue>, CookieError> {
        let sealed = self.sealer.seal(SESSION_PURPOSE, &session_json(session));
        self.cookie.write_chunked(&sealed, max_age, cookies)
    }

    /// `Set-Cookie` values ending the session (every chunk the request carries).
    pub fn clear(&self, cookies: &RequestCookies) -> Vec<HeaderValue> {
        self.cookie.clear(cookies)
    }

    /// Length in bytes of the sealed session (before chunking), for size reports and tests.
    pub fn sealed_len(&self, session: &Session) -> usize {
        Sealer::sealed_len(session_json(session).len())
    }
}

fn session_json(session: &Session) -> Vec<u8> {
    // A Session is strings, numbers and options: serializing it cannot fail.
    serde_json::to_vec(session).expect("a Session always serializes to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Organization};
    use base64::Engine as _;

    fn request(cookie_headers: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for h in cookie_headers {
            headers.append(COOKIE, HeaderValue::from_str(h).unwrap());
        }
        headers
    }

    /// The request a browser sends back after receiving these `Set-Cookie` values.
    fn browser_jar(set_cookies: &[HeaderValue]) -> RequestCookies {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for sc in set_cookies {
            let c = Cookie::parse(sc.to_str().unwrap().to_owned()).unwrap();
            pairs.retain(|(n, _)| n != c.name());
            if c.max_age() != Some(cookie::time::Duration::ZERO) {
                pairs.push((c.name().to_owned(), c.value().to_owned()));
            }
        }
        RequestCookies::from_pairs(pairs)
    }

    fn settings(chunk_size: usize, max_chunks: usize) -> CookieSettings {
        CookieSettings {
            chunk_size,
            max_chunks,
            ..CookieSettings::new("s", true)
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn request_cookies_are_read_from_every_header_and_garbage_is_skipped() {
        let headers = request(&["a=1; b = 2 ;;  =x; noequals; c=", "d=\"q\"; a=shadowed"]);
        let cookies = RequestCookies::from_headers(&headers);
        assert_eq!(cookies.get("a"), Some("1"));
        assert_eq!(cookies.get("b"), Some("2"));
        assert_eq!(cookies.get("c"), Some(""));
        assert_eq!(cookies.get("d"), Some("\"q\""));
        assert_eq!(cookies.get("noequals"), None);
        assert_eq!(cookies.iter().count(), 5);

        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_bytes(b"x=\xff\xfe; y=ok; \xc3=1").unwrap(),
        );
        let cookies = RequestCookies::from_headers(&headers);
        assert_eq!(cookies.iter().collect::<Vec<_>>(), vec![("y", "ok")]);
    }

    #[test]
    fn request_cookies_are_capped() {
        let many: Vec<String> = (0..1000).map(|i| format!("c{i}=v")).collect();
        let cookies = RequestCookies::from_headers(&request(&[&many.join("; ")]));
        assert_eq!(cookies.iter().count(), MAX_REQUEST_COOKIES);

        let huge = format!("a=1; big={}; b=2", "x".repeat(MAX_REQUEST_COOKIE_BYTES));
        let cookies = RequestCookies::from_headers(&request(&[&huge]));
        assert_eq!(cookies.get("a"), Some("1"));
        assert_eq!(cookies.get("big"), None);
        assert_eq!(cookies.get("b"), None);
    }

    #[test]
    fn settings_name_secure_cookies_with_the_host_prefix() {
        let secure = CookieSettings::new("trousseau_session", true);
        assert_eq!(secure.name, "__Host-trousseau_session");
        let plain = CookieSettings::new("trousseau_session", false);
        assert_eq!(plain.name, "trousseau_session");
        assert!(secure.is_ours("__Host-trousseau_session"));
        assert!(secure.is_ours("__Host-trousseau_session_1"));
        assert!(secure.is_ours("__Host-trousseau_session_12"));
        assert!(!secure.is_ours("trousseau_session"));
        assert!(!secure.is_ours("__Host-trousseau_session_"));
        assert!(!secure.is_ours("__Host-trousseau_session_x"));
        assert!(!secure.is_ours("__Host-trousseau_session_0"));
        assert!(!secure.is_ours("__Host-trousseau_sessions"));
    }

    #[test]
    fn written_cookies_have_the_safe_attributes() {
        let set = CookieSettings::new("trousseau_session", true)
            .write_chunked("abc", DAY, &RequestCookies::default())
            .unwrap();
        assert_eq!(set.len(), 1);
        let text = set[0].to_str().unwrap();
        assert!(
            text.starts_with("__Host-trousseau_session=1.abc;"),
            "{text}"
        );
        for attribute in [
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/",
            "Max-Age=86400",
        ] {
            assert!(text.contains(attribute), "{attribute} missing in {text}");
        }
        assert!(!text.contains("Domain"));

        let plain = CookieSettings::new("trousseau_session", false)
            .write_chunked("abc", DAY, &RequestCookies::default())
            .unwrap();
        assert!(!plain[0].to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn values_round_trip_at_every_size_around_chunk_boundaries() {
        let s = settings(10, 4);
        for len in 1..=40usize {
            let value: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let set = s
                .write_chunked(&value, DAY, &RequestCookies::default())
                .unwrap();
            assert_eq!(set.len(), len.div_ceil(10), "len {len}");
            let jar = browser_jar(&set);
            assert!(
                jar.iter().all(|(_, v)| !v.is_empty()),
                "an empty chunk was written for len {len}"
            );
            assert_eq!(
                s.read_chunked(&jar).as_deref(),
                Some(value.as_str()),
                "len {len}"
            );
        }
    }

    #[test]
    fn exact_multiple_of_chunk_size_has_no_empty_trailing_chunk() {
        let s = settings(10, 4);
        let value = "x".repeat(30);
        let set = s
            .write_chunked(&value, DAY, &RequestCookies::default())
            .unwrap();
        let names: Vec<String> = set
            .iter()
            .map(|v| {
                Cookie::parse(v.to_str().unwrap().to_owned())
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect();
        assert_eq!(names, ["__Host-s", "__Host-s_1", "__Host-s_2"]);
        assert_eq!(s.read_chunked(&browser_jar(&set)), Some(value));
    }

    #[test]
    fn stale_chunks_of_a_bigger_session_are_ignored_and_expired() {
        let s = settings(10, 8);
        let big = s
            .write_chunked(&"B".repeat(45), DAY, &RequestCookies::default())
            .unwrap();
        let jar = browser_jar(&big);
        assert_eq!(jar.iter().count(), 5);

        let small = s.write_chunked(&"s".repeat(15), DAY, &jar).unwrap();
        // 2 chunks written, 3 stale ones (_2, _3, _4) expired.
        assert_eq!(small.len(), 5);
        let removed: Vec<String> = small[2..]
            .iter()
            .map(|v| Cookie::parse(v.to_str().unwrap().to_owned()).unwrap())
            .inspect(|c| assert_eq!(c.max_age(), Some(cookie::time::Duration::ZERO)))
            .map(|c| c.name().to_owned())
            .collect();
        assert_eq!(removed, ["__Host-s_2", "__Host-s_3", "__Host-s_4"]);

        // Even before the browser applies the removals, the count in the first cookie decides.
        let mut mixed = jar.to_pairs();
        let fresh = browser_jar(&small[..2]);
        for (name, value) in fresh.iter() {
            mixed.retain(|(n, _)| n != name);
            mixed.push((name.to_owned(), value.to_owned()));
        }
        let mixed = RequestCookies::from_pairs(mixed);
        assert_eq!(s.read_chunked(&mixed), Some("s".repeat(15)));
        assert_eq!(s.read_chunked(&browser_jar(&small)), Some("s".repeat(15)));
    }

    #[test]
    fn missing_or_empty_chunk_means_no_value() {
        let s = settings(10, 8);
        let jar = browser_jar(
            &s.write_chunked(&"v".repeat(25), DAY, &RequestCookies::default())
                .unwrap(),
        );
        let without = |name: &str| RequestCookies::from_pairs(jar.to_pairs().into_iter().filter(|(n, _)| n != name));
        assert_eq!(s.read_chunked(&without("__Host-s_1")), None);
        assert_eq!(s.read_chunked(&without("__Host-s_2")), None);
        assert_eq!(s.read_chunked(&without("__Host-s")), None);
        let mut emptied = jar.to_pairs();
        emptied[1].1.clear();
        let emptied = RequestCookies::from_pairs(emptied);
        assert_eq!(s.read_chunked(&emptied), None);
    }

    #[test]
    fn malformed_first_cookie_means_no_value() {
        let s = settings(10, 8);
        for first in [
            "", "abc", ".abc", "0.abc", "9.abc", "1.", "x.abc", "99999.a", "-1.a", "+1.a",
        ] {
            let jar = RequestCookies::from_pairs([("__Host-s".into(), first.into())]);
            assert_eq!(s.read_chunked(&jar), None, "{first:?}");
        }
    }

    #[test]
    fn too_many_chunks_is_an_error() {
        let s = settings(10, 3);
        assert!(s
            .write_chunked(&"x".repeat(30), DAY, &RequestCookies::default())
            .is_ok());
        assert_eq!(
            s.write_chunked(&"x".repeat(31), DAY, &RequestCookies::default()),
            Err(CookieError::TooLarge {
                len: 31,
                chunks: 4,
                max_chunks: 3
            })
        );
        for bad in ["", "a;b", "a b", "é"] {
            assert_eq!(
                s.write_chunked(bad, DAY, &RequestCookies::default()),
                Err(CookieError::InvalidValue)
            );
        }
    }

    #[test]
    fn clear_expires_every_chunk_present() {
        let s = settings(10, 8);
        let mut jar = browser_jar(
            &s.write_chunked(&"v".repeat(25), DAY, &RequestCookies::default())
                .unwrap(),
        )
        .to_pairs();
        jar.push(("__Host-s_7".into(), "stale".into()));
        jar.push(("other".into(), "keep".into()));
        let jar = RequestCookies::from_pairs(jar);
        let cleared = s.clear(&jar);
        assert_eq!(cleared.len(), 4);
        assert_eq!(browser_jar(&cleared).iter().count(), 0);
        for v in &cleared {
            let text = v.to_str().unwrap();
            assert!(
                text.contains("Max-Age=0") && text.contains("Secure") && text.contains("Path=/"),
                "{text}"
            );
        }
        assert!(s.clear(&RequestCookies::default()).is_empty());
    }

    #[test]
    fn strip_cookies_removes_ours_and_keeps_the_rest_byte_for_byte() {
        let s = CookieSettings::new("trousseau_session", true);
        let mut headers = request(&[
            "theme=dark;__Host-trousseau_session=1.abc; q=\"a b\";  lang=fr-FR ; __Host-trousseau_session_3=x",
        ]);
        strip_cookies(&mut headers, |n| s.is_ours(n));
        assert_eq!(
            headers.get_all(COOKIE).iter().collect::<Vec<_>>(),
            ["theme=dark; q=\"a b\"; lang=fr-FR"]
        );

        // Only ours: the header goes away.
        let mut headers = request(&[
            "__Host-trousseau_session=1.abc",
            "__Host-trousseau_session_1=x",
        ]);
        strip_cookies(&mut headers, |n| s.is_ours(n));
        assert!(headers.get(COOKIE).is_none());

        // Nothing of ours: untouched, byte for byte, including odd spacing and non-UTF-8 bytes.
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_bytes(b"a=1 ;b=\xe9;  c").unwrap());
        let before = headers.clone();
        strip_cookies(&mut headers, |n| s.is_ours(n));
        assert_eq!(headers, before);

        // HTTP/2 crumbs are joined into one header.
        let mut headers = request(&["a=1", "__Host-trousseau_session=1.x", "b=2"]);
        strip_cookies(&mut headers, |n| s.is_ours(n));
        assert_eq!(
            headers.get_all(COOKIE).iter().collect::<Vec<_>>(),
            ["a=1; b=2"]
        );
    }

    #[test]
    fn garbage_cookie_headers_never_panic_and_never_leak_ours() {
        let s = CookieSettings::new("s", true);
        let codec = codec(3800);
        let pieces: [&[u8]; 12] = [
            b";",
            b"=",
            b" ",
            b"\t",
            b"\"",
            b"__Host-s",
            b"_1",
            b"2.",
            b"\xc3\xa9",
            b"\xff",
            b"abc",
            b"%00",
        ];
        let mut noise = Noise(0xDEAD_BEEF_CAFE_F00D);
        for _ in 0..3000 {
            let mut raw = Vec::new();
            for _ in 0..(noise.hex(1).as_bytes()[0] % 24) {
                raw.extend_from_slice(
                    pieces[usize::from(noise.hex(1).as_bytes()[0]) % pieces.len()],
                );
            }
            let Ok(value) = HeaderValue::from_bytes(&raw) else {
                continue;
            };
            let mut headers = HeaderMap::new();
            headers.append(COOKIE, value.clone());
            headers.append(COOKIE, value);
            let cookies = RequestCookies::from_headers(&headers);
            let _ = s.read_chunked(&cookies);
            let _ = s.clear(&cookies);
            assert_eq!(codec.load(&cookies), None);
            strip_cookies(&mut headers, |n| s.is_ours(n));
            let left = RequestCookies::from_headers(&headers);
            assert!(left.iter().all(|(name, _)| !s.is_ours(name)), "{raw:?}");
        }
    }

    fn sample_session() -> Session {
        Session {
            id: "c2Vzc2lvbi1pZC0xMjM0NQ".into(),
            identity: Identity {
                sub: "a1b2c3d4-e5f6-7890-abcd-ef1234567890".into(),
                email: Some("jean.dupont@hotel.com".into()),
                email_verified: Some(true),
                name: Some("Jean Dupont".into()),
                organizations: Some(vec![Organization {
                    id: "018cc251-f400-78cc-8e0c-000fe440ee40".into(),
                    name: "Hôtel Le Grand Paris".into(),
                    slug: "hotel-le-grand-paris".into(),
                    role: "admin".into(),
                }]),
                ..Identity::default()
            },
            org: Some("018cc251-f400-78cc-8e0c-000fe440ee40".into()),
            sid: None,
            created_at: 1_712_399_700,
            updated_at_ms: 1_712_399_700_000,
            expires_at: 1_712_400_000,
            token_lifetime: 0,
            refresh_token: Some("r".repeat(128)),
            access_token: None,
            id_token: None,
            organizations_aside: None,
        }
    }

    const TEST_APP: crate::session::seal::AppBinding<'static> = crate::session::seal::AppBinding {
        issuer: "https://auth.keysuite.app/application/o/app/",
        client_id: "app-oidc",
        public_url: "https://app.example.com",
    };

    fn codec(chunk_size: usize) -> SessionCodec {
        let sealer = Sealer::new(&[b"0123456789abcdef0123456789abcdef".to_vec()], TEST_APP).unwrap();
        SessionCodec::new(Arc::new(sealer), settings(chunk_size, 8))
    }

    #[test]
    fn session_round_trips_through_cookies() {
        let codec = codec(100);
        let session = sample_session();
        let set = codec
            .store(&session, DAY, &RequestCookies::default())
            .unwrap();
        assert_eq!(set.len(), codec.sealed_len(&session).div_ceil(100));
        let jar = browser_jar(&set);
        assert_eq!(codec.load(&jar).as_deref(), Some(&session));
        assert_eq!(codec.clear(&jar).len(), set.len());
    }

    #[test]
    fn an_opened_session_is_remembered_but_only_for_the_exact_same_value() {
        let codec = codec(3800);
        let session = sample_session();
        let jar = browser_jar(&codec.store(&session, DAY, &RequestCookies::default()).unwrap());
        assert_eq!(codec.load(&jar).as_deref(), Some(&session));
        assert_eq!(codec.load(&jar).as_deref(), Some(&session), "served again, from memory");
        codec.opened.0.run_pending_tasks();
        assert_eq!(codec.opened.0.entry_count(), 1);

        // Same tail (same hash), one byte different before it: not the remembered session.
        let value = jar.get("__Host-s").unwrap().to_owned();
        for i in [2, value.len() / 2, value.len() - 30] {
            let mut bytes = value.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let forged = RequestCookies::from_pairs([("__Host-s".into(), String::from_utf8(bytes).unwrap())]);
            assert_eq!(codec.load(&forged), None, "byte {i} changed");
        }
        assert!(!format!("{codec:?}").contains("refresh"), "Debug never shows sessions");
    }

    #[test]
    fn tampered_or_foreign_session_cookie_is_no_session() {
        let codec = codec(3800);
        let set = codec
            .store(&sample_session(), DAY, &RequestCookies::default())
            .unwrap();
        let jar = browser_jar(&set);
        let value = jar.get("__Host-s").unwrap().to_owned();
        for i in 2..value.len() {
            let mut bytes = value.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let forged = RequestCookies::from_pairs([("__Host-s".into(), String::from_utf8(bytes).unwrap())]);
            assert_eq!(codec.load(&forged), None);
        }
        // A value sealed for another purpose does not load as a session.
        let sealer = Sealer::new(&[b"0123456789abcdef0123456789abcdef".to_vec()], TEST_APP).unwrap();
        let json = serde_json::to_vec(&sample_session()).unwrap();
        let state = format!("1.{}", sealer.seal("state", &json));
        assert_eq!(
            codec.load(&RequestCookies::from_pairs([("__Host-s".into(), state)])),
            None
        );
        // Valid seal, not a session.
        let junk = format!(
            "1.{}",
            sealer.seal(SESSION_PURPOSE, b"{\"not\":\"a session\"}")
        );
        assert_eq!(
            codec.load(&RequestCookies::from_pairs([("__Host-s".into(), junk)])),
            None
        );
    }

    /// Deterministic hex for realistic-looking ids and signatures.
    struct Noise(u64);
    impl Noise {
        fn hex(&mut self, n: usize) -> String {
            (0..n)
                .map(|_| {
                    self.0 ^= self.0 << 13;
                    self.0 ^= self.0 >> 7;
                    self.0 ^= self.0 << 17;
                    char::from(b"0123456789abcdef"[(self.0 % 16) as usize])
                })
                .collect()
        }
        fn uuid_v7(&mut self) -> String {
            format!(
                "018f{}-{}-7{}-8{}-{}",
                self.hex(4),
                self.hex(4),
                self.hex(3),
                self.hex(3),
                self.hex(12)
            )
        }
        fn b64(&mut self, bytes: usize) -> String {
            let raw: Vec<u8> = self
                .hex(bytes * 2)
                .into_bytes()
                .chunks(2)
                .map(|c| c[0] ^ c[1].rotate_left(3))
                .collect();
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        }
    }

    /// A session as Trousseau would produce it, with `orgs` memberships (names of ~25 characters).
    fn realistic_session(orgs: usize, with_access_token: bool) -> Session {
        let mut noise = Noise(0x9E37_79B9_7F4A_7C15 ^ orgs as u64);
        let organizations: Vec<Organization> = (0..orgs)
            .map(|i| {
                let roles = ["admin", "member", "hr", "accounting"];
                Organization {
                    id: noise.uuid_v7(),
                    name: format!("Hôtel Riviera Côte {i:02} SAS"),
                    slug: format!("hotel-riviera-cote-{i:02}"),
                    role: roles[i % roles.len()].into(),
                }
            })
            .collect();
        let identity = Identity {
            sub: noise.uuid_v7(),
            email: Some("jean.dupont@hotel-riviera.com".into()),
            email_verified: Some(true),
            name: Some("Jean Dupont".into()),
            given_name: Some("Jean".into()),
            family_name: Some("Dupont".into()),
            picture: Some("https://auth.keysuite.app/media/avatars/jean-dupont.jpg".into()),
            trousseau_user_id: Some(noise.uuid_v7()),
            locale: Some("fr-FR".into()),
            organizations: Some(organizations),
        };
        let sid = noise.hex(64);
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let header = serde_json::json!({"alg": "RS256", "kid": noise.hex(32), "typ": "JWT"});
        let mut claims = serde_json::to_value(&identity).unwrap();
        let extra = serde_json::json!({
            "iss": "https://auth.keysuite.app/application/o/pms-riviera/",
            "aud": "pms-riviera-oidc", "exp": 1_712_400_000u64, "iat": 1_712_399_700u64,
            "auth_time": 1_712_399_690u64, "acr": "goauthentik.io/providers/oauth2/default",
            "amr": ["pwd", "mfa"], "nonce": noise.b64(32), "at_hash": noise.b64(16), "sid": sid,
            "preferred_username": "jean.dupont", "nickname": "jean.dupont",
        });
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        // RS256 with a 2048-bit key: 256-byte signature.
        let id_token = format!("{}.{}.{}", b64(&header), b64(&claims), noise.b64(256));
        let access_token = with_access_token.then(|| {
            let claims = serde_json::json!({
                "iss": "https://auth.keysuite.app/application/o/pms-riviera/", "sub": identity.sub,
                "aud": "pms-riviera-oidc", "exp": 1_712_400_000u64, "iat": 1_712_399_700u64,
                "auth_time": 1_712_399_690u64, "acr": "goauthentik.io/providers/oauth2/default",
                "azp": "pms-riviera-oidc", "uid": noise.b64(30), "sid": sid,
                "scope": "openid email profile trousseau:context trousseau:organization offline_access",
            });
            format!("{}.{}.{}", b64(&header), b64(&claims), noise.b64(256))
        });
        Session {
            id: noise.b64(16),
            org: identity
                .organizations
                .as_ref()
                .and_then(|o| o.first())
                .map(|o| o.id.clone()),
            identity,
            sid: Some(sid),
            created_at: 1_712_399_700,
            updated_at_ms: 1_712_399_700_000,
            expires_at: 1_712_400_000,
            token_lifetime: 0,
            refresh_token: Some(noise.b64(96)), // 128 characters
            access_token,
            id_token: Some(id_token),
            organizations_aside: None,
        }
    }

    #[test]
    fn sealed_session_size_report() {
        let codec = SessionCodec::new(
            Arc::new(Sealer::new(&[b"0123456789abcdef0123456789abcdef".to_vec()], TEST_APP).unwrap()),
            CookieSettings::new("trousseau_session", true),
        );
        for (orgs, with_access_token) in [(2, false), (20, false), (2, true), (20, true)] {
            let session = realistic_session(orgs, with_access_token);
            assert_eq!(session.refresh_token.as_ref().unwrap().len(), 128);
            let json = serde_json::to_vec(&session).unwrap().len();
            let id_token = session.id_token.as_ref().unwrap().len();
            let sealed = codec.sealed_len(&session);
            let set = codec
                .store(&session, DAY, &RequestCookies::default())
                .unwrap();
            let header_bytes: usize = browser_jar(&set)
                .iter()
                .map(|(n, v)| n.len() + v.len() + 3)
                .sum();
            eprintln!(
                "session with {orgs:2} organizations{}: JSON {json} B (ID token {id_token} B), sealed {sealed} B, \
                 {} cookie(s), {header_bytes} B in the Cookie header",
                if with_access_token { " + access token" } else { "" },
                set.len(),
            );
            let without_id_token = codec.sealed_len(&Session {
                id_token: None,
                ..session.clone()
            });
            eprintln!("    (sealed without the raw ID token: {without_id_token} B)");
            assert_eq!(codec.load(&browser_jar(&set)).as_deref(), Some(&session));
        }
    }
}
