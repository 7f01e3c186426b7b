//! Robustness: random and mutated input thrown at every parser an attacker controls, asserting no
//! panic and the documented answer. mod_auth_openidc was crashed twice by crafted `Cookie` headers
//! (CVE-2023-28625, CVE-2024-24814) and had an open redirect (CVE-2022-23527); these tests keep
//! ours from following.
//!
//! Deterministic: every generator is a seeded xorshift, so a failure names its seed and case and
//! reproduces exactly. Bounded to a few seconds in debug builds.


use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};
use http::{Method, StatusCode};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use trousseau_proxy::config::{OrganizationConfig, RoutesConfig, RuleConfig};
use trousseau_proxy::identity::{self, ExtraHeaders, Identity, Organization};
use trousseau_proxy::policy::{normalize_path, PathPattern, Policy};
use trousseau_proxy::request::safe_return_to;
use trousseau_proxy::session::cookies::{strip_cookies, CookieSettings, RequestCookies, SessionCodec, MAX_REQUEST_COOKIES};
use trousseau_proxy::session::seal::Sealer;
use trousseau_proxy::session::Session;

// ---------------------------------------------------------------------------------------------
// A small deterministic generator.
// ---------------------------------------------------------------------------------------------

/// xorshift64* — tiny, fast, good enough to explore input space deterministically.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A string made of `n` pieces drawn from `pieces`.
    fn string_of(&mut self, pieces: &[&str], n: usize) -> String {
        (0..n).map(|_| *self.pick(pieces)).collect()
    }

    /// `text` with a few random edits: replace, delete or insert characters (drawn from `alphabet`),
    /// truncate, or duplicate a slice.
    fn mutate(&mut self, text: &str, alphabet: &[&str]) -> String {
        let mut chars: Vec<String> = text.chars().map(String::from).collect();
        for _ in 0..1 + self.below(3) {
            let len = chars.len();
            match self.below(6) {
                0 if len > 0 => {
                    let i = self.below(len);
                    chars[i] = self.pick(alphabet).to_string();
                }
                1 if len > 0 => {
                    chars.remove(self.below(len));
                }
                2 => {
                    let i = self.below(len + 1);
                    chars.insert(i, self.pick(alphabet).to_string());
                }
                3 if len > 1 => {
                    chars.truncate(self.below(len));
                }
                4 if len > 1 => {
                    let a = self.below(len);
                    let b = a + self.below(len - a).min(8);
                    let slice: Vec<String> = chars[a..b].to_vec();
                    let at = self.below(len + 1);
                    for (k, c) in slice.into_iter().enumerate() {
                        chars.insert(at + k, c);
                    }
                }
                _ => {
                    let i = self.below(len + 1);
                    chars.insert(i, (self.below(0x80) as u8 as char).to_string());
                }
            }
        }
        chars.concat()
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures.
// ---------------------------------------------------------------------------------------------

const DAY: Duration = Duration::from_secs(86_400);

fn sealer() -> Arc<Sealer> {
    let app = trousseau_proxy::session::seal::AppBinding { issuer: "https://auth.example/application/o/app/", client_id: "app", public_url: "https://app.example" };
    Arc::new(Sealer::new(&[b"0123456789abcdef0123456789abcdef".to_vec()], app).unwrap())
}

fn session() -> Session {
    Session {
        id: "c2Vzc2lvbi1pZC0xMjM0NQ".into(),
        identity: Identity {
            sub: JEAN.into(),
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
        sid: Some("f".repeat(64)),
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

/// A codec for `__Host-s` (secure), cutting values into `chunk_size`-byte cookies.
fn codec(chunk_size: usize) -> SessionCodec {
    SessionCodec::new(sealer(), CookieSettings { chunk_size, max_chunks: 16, ..CookieSettings::new("s", true) })
}

/// `name=value` pairs a browser would send back after these `Set-Cookie` values.
fn jar_of(set_cookies: &[HeaderValue]) -> Vec<(String, String)> {
    let mut jar: Vec<(String, String)> = Vec::new();
    for sc in set_cookies {
        let c = cookie::Cookie::parse(sc.to_str().unwrap().to_owned()).unwrap();
        jar.retain(|(n, _)| n != c.name());
        if c.max_age() != Some(cookie::time::Duration::ZERO) {
            jar.push((c.name().to_owned(), c.value().to_owned()));
        }
    }
    jar
}

fn cookie_line(jar: &[(String, String)]) -> String {
    jar.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ")
}

fn headers_with_cookies(lines: &[&[u8]]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, v);
        }
    }
    headers
}

// ---------------------------------------------------------------------------------------------
// 1. Cookies.
// ---------------------------------------------------------------------------------------------

/// What a cookie parse must always satisfy, whatever the input: bounded, no session unless the
/// chunk set reassembles to a value that opens, and nothing of ours left after stripping.
fn check_cookie_invariants(codec: &SessionCodec, headers: &HeaderMap, original: Option<(&str, &Session)>, case: &str) {
    let cookies = RequestCookies::from_headers(headers);
    assert!(cookies.iter().count() <= MAX_REQUEST_COOKIES, "{case}");
    let loaded = codec.load(&cookies);
    let reassembled = codec.cookie().read_chunked(&cookies);
    match (&loaded, original) {
        (None, _) => {}
        (Some(s), Some((sealed, expected))) => {
            // A session only ever comes out of exactly the value we sealed.
            assert_eq!(&**s, expected, "{case}");
            assert_eq!(reassembled.as_deref(), Some(sealed), "{case}: another value opened as the session");
        }
        (Some(s), None) => panic!("{case}: random input opened as a session: {s:?}"),
    }
    let _ = codec.clear(&cookies);
    let mut stripped = headers.clone();
    strip_cookies(&mut stripped, |n| codec.cookie().is_ours(n));
    let left = RequestCookies::from_headers(&stripped);
    assert!(left.iter().all(|(n, _)| !codec.cookie().is_ours(n)), "{case}: our cookie survived stripping");
    for v in stripped.get_all(COOKIE) {
        for segment in v.as_bytes().split(|&b| b == b';') {
            let name = segment.split(|&b| b == b'=').next().unwrap_or(b"");
            let name = std::str::from_utf8(name.trim_ascii()).unwrap_or("");
            if segment.contains(&b'=') {
                assert!(!codec.cookie().is_ours(name), "{case}: {name} survived stripping");
            }
        }
    }
}

#[test]
fn cookie_parser_survives_random_bytes_and_structured_garbage() {
    let codec = codec(120);
    let mut rng = Rng::new(0xC00C_1E5E_ED00_0001);
    let pieces: &[&str] = &[
        ";", "=", " ", "\t", "\"", ",", "__Host-s", "__Host-s_1", "__Host-s_2", "__Host-s_9999", "_1", "_01", "_0",
        "1.", "2.", "0.", "999.", "9999.", "10000.", "-1.", "+1.", "1 .", "AAAA", "abc", "%00", "%3B", "\u{e9}",
        "\u{ff}", "\u{1F600}", "\\", "..", "s", "trousseau_session", "=1.", "==", ";;",
    ];
    let started = Instant::now();
    for case in 0..6000 {
        let raw: Vec<u8> = if rng.chance(40) {
            let len = rng.below(200);
            rng.bytes(len)
        } else {
            let n = rng.below(30);
            rng.string_of(pieces, n).into_bytes()
        };
        // Sometimes as several headers (HTTP/2 sends one per cookie).
        let lines: Vec<Vec<u8>> = if rng.chance(30) {
            raw.split(|&b| b == b';').map(<[u8]>::to_vec).collect()
        } else {
            vec![raw.clone()]
        };
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let headers = headers_with_cookies(&refs);
        check_cookie_invariants(&codec, &headers, None, &format!("case {case}: {raw:?}"));
    }
    assert!(started.elapsed() < Duration::from_secs(20), "too slow: {:?}", started.elapsed());
}

#[test]
fn mutated_valid_session_cookies_open_as_the_same_session_or_not_at_all() {
    let session = session();
    for chunk_size in [100, 250, 3800] {
        let codec = codec(chunk_size);
        let set = codec.store(&session, DAY, &RequestCookies::default()).unwrap();
        let jar = jar_of(&set);
        let line = cookie_line(&jar);
        let sealed = codec.cookie().read_chunked(&RequestCookies::from_headers(&headers_with_cookies(&[line.as_bytes()]))).unwrap();
        // The unmutated jar loads.
        assert_eq!(codec.load(&RequestCookies::from_headers(&headers_with_cookies(&[line.as_bytes()]))).as_deref(), Some(&session));

        let alphabet: &[&str] = &["A", "B", "_", "-", ".", ";", "=", " ", "\t", "0", "1", "2", "9", "\"", ",", "%", "\u{e9}", "__Host-s_1="];
        let mut rng = Rng::new(0x5E55_1010 ^ chunk_size as u64);
        for case in 0..1500 {
            let mutated = match rng.below(5) {
                // Edits anywhere in the header line.
                0 | 1 => rng.mutate(&line, alphabet),
                // Chunks shuffled, dropped, duplicated, or an extra one from nowhere.
                2 => {
                    let mut j = jar.clone();
                    match rng.below(4) {
                        0 => j.reverse(),
                        1 if j.len() > 1 => {
                            let i = rng.below(j.len());
                            j.remove(i);
                        }
                        2 => {
                            let i = rng.below(j.len());
                            let dup = j[i].clone();
                            let at = rng.below(j.len() + 1);
                            j.insert(at, (dup.0, rng.mutate(&dup.1, alphabet)));
                        }
                        _ => j.push((format!("__Host-s_{}", 1 + rng.below(12)), "AAAA".into())),
                    }
                    cookie_line(&j)
                }
                // The count prefix rewritten.
                3 => {
                    let counts = ["0", "00", "1", "2", "3", "8", "9", "999", "9999", "10000", "-1", "+1", " 1", "1 ", "0x1", "\u{661}", ""];
                    let count = rng.pick(&counts);
                    let mut j = jar.clone();
                    let rest = j[0].1.split_once('.').map(|(_, r)| r.to_string()).unwrap_or_default();
                    j[0].1 = format!("{count}.{rest}");
                    cookie_line(&j)
                }
                // One chunk's value edited.
                _ => {
                    let mut j = jar.clone();
                    let i = rng.below(j.len());
                    j[i].1 = rng.mutate(&j[i].1, alphabet);
                    cookie_line(&j)
                }
            };
            let headers = headers_with_cookies(&[mutated.as_bytes()]);
            check_cookie_invariants(&codec, &headers, Some((&sealed, &session)), &format!("chunk {chunk_size} case {case}: {mutated:?}"));
        }
    }
}

#[test]
fn huge_and_numerous_cookie_headers_are_bounded() {
    let codec = codec(3800);
    let session = session();
    let set = codec.store(&session, DAY, &RequestCookies::default()).unwrap();
    let ours = cookie_line(&jar_of(&set));

    // One 1 MiB header full of cookies, ours last: beyond the budget, so not read — but stripped.
    let mut big = String::new();
    while big.len() < 1 << 20 {
        big.push_str(&format!("pad{}={}; ", big.len(), "x".repeat(200)));
    }
    big.push_str(&ours);
    let started = Instant::now();
    let headers = headers_with_cookies(&[big.as_bytes()]);
    let cookies = RequestCookies::from_headers(&headers);
    assert!(cookies.iter().count() <= MAX_REQUEST_COOKIES);
    assert_eq!(codec.load(&cookies), None, "a session past the byte budget is not read");
    check_cookie_invariants(&codec, &headers, Some((&ours, &session)), "1 MiB header");

    // 20 000 Cookie headers (HTTP/2 style), ours last.
    let mut many: Vec<Vec<u8>> = (0..20_000).map(|i| format!("c{i}=v").into_bytes()).collect();
    many.push(ours.clone().into_bytes());
    let refs: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
    let headers = headers_with_cookies(&refs);
    let cookies = RequestCookies::from_headers(&headers);
    assert_eq!(cookies.iter().count(), MAX_REQUEST_COOKIES);
    assert_eq!(codec.load(&cookies), None, "a session past the pair budget is not read");
    check_cookie_invariants(&codec, &headers, Some((&ours, &session)), "20 000 headers");

    // Ours first, then noise: read.
    let mut first = vec![ours.clone().into_bytes()];
    first.extend((0..5_000).map(|i| format!("c{i}=v").into_bytes()));
    let refs: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
    assert_eq!(codec.load(&RequestCookies::from_headers(&headers_with_cookies(&refs))).as_deref(), Some(&session));

    // A single enormous value for our cookie: refused without work proportional to it.
    let huge = format!("__Host-s=1.{}", "A".repeat(4 << 20));
    assert_eq!(codec.load(&RequestCookies::from_headers(&headers_with_cookies(&[huge.as_bytes()]))), None);
    assert!(started.elapsed() < Duration::from_secs(20), "too slow: {:?}", started.elapsed());
}

#[test]
fn chunk_count_edges_mean_no_session() {
    let codec = codec(100);
    let session = session();
    let set = codec.store(&session, DAY, &RequestCookies::default()).unwrap();
    let jar = jar_of(&set);
    assert!(jar.len() >= 3, "the test wants a chunk set, got {}", jar.len());
    let load = |pairs: &[(String, String)]| codec.load(&RequestCookies::from_headers(&headers_with_cookies(&[cookie_line(pairs).as_bytes()])));
    assert_eq!(load(&jar).as_deref(), Some(&session));
    let rest = jar[0].1.split_once('.').unwrap().1.to_string();
    let with_first = |first: String| {
        let mut j = jar.clone();
        j[0].1 = first;
        j
    };
    for count in ["999", "0", "00", "9999", "10000", "-1", "", "x", "1e1", "\u{661}"] {
        assert_eq!(load(&with_first(format!("{count}.{rest}"))), None, "count {count:?}");
    }
    for first in ["999.", "0.", "1.", "2.", ".", "", "1", "999"] {
        assert_eq!(load(&with_first(first.to_string())), None, "first cookie {first:?}");
    }
    // Any chunk missing, or empty.
    for i in 1..jar.len() {
        let mut missing = jar.clone();
        missing.remove(i);
        assert_eq!(load(&missing), None, "chunk {i} missing");
        let mut empty = jar.clone();
        empty[i].1.clear();
        assert_eq!(load(&empty), None, "chunk {i} empty");
    }
    // A count smaller than the chunks sent: truncated value, no session. Larger: missing chunk.
    let n = jar.len();
    assert_eq!(load(&with_first(format!("{}.{rest}", n - 1))), None);
    assert_eq!(load(&with_first(format!("{}.{rest}", n + 1))), None);
    // Leftover chunks of an earlier, bigger session beyond the count are ignored.
    let mut leftovers = jar.clone();
    leftovers.push((format!("__Host-s_{n}"), "stale".into()));
    leftovers.push(("__Host-s_7".into(), "stale".into()));
    assert_eq!(load(&leftovers).as_deref(), Some(&session));
    // Order does not matter; the first copy of a name wins.
    let mut reversed = jar.clone();
    reversed.reverse();
    assert_eq!(load(&reversed).as_deref(), Some(&session));
    let mut shadowed = jar.clone();
    shadowed.insert(0, ("__Host-s".into(), "1.AAAA".into()));
    assert_eq!(load(&shadowed), None);
}

#[test]
fn values_of_exact_multiples_of_the_chunk_size_never_write_an_empty_chunk() {
    let mut rng = Rng::new(0xC4C4);
    let octets: Vec<char> = ('!'..='~').filter(|c| !matches!(c, '"' | ',' | ';' | '\\')).collect();
    for chunk_size in [1usize, 2, 7, 64] {
        let settings = CookieSettings { chunk_size, max_chunks: 8, ..CookieSettings::new("s", false) };
        // A request still carrying chunks of an earlier, bigger value.
        let stale: Vec<(String, String)> = (0..8).map(|i| (if i == 0 { "s".to_string() } else { format!("s_{i}") }, "old".into())).collect();
        let stale_cookies = RequestCookies::from_headers(&headers_with_cookies(&[cookie_line(&stale).as_bytes()]));
        for len in 1..=chunk_size * 8 + 1 {
            let value: String = (0..len).map(|_| *rng.pick(&octets)).collect();
            let written = settings.write_chunked(&value, DAY, &stale_cookies);
            if len > chunk_size * 8 {
                assert!(written.is_err(), "len {len} fits in 8 × {chunk_size}?");
                continue;
            }
            let set = written.unwrap();
            let mut jar = stale.clone();
            for sc in &set {
                let c = cookie::Cookie::parse(sc.to_str().unwrap().to_owned()).unwrap();
                jar.retain(|(n, _)| n != c.name());
                if c.max_age() != Some(cookie::time::Duration::ZERO) {
                    assert!(!c.value().is_empty(), "empty chunk written for len {len}, chunk {chunk_size}");
                    jar.push((c.name().to_owned(), c.value().to_owned()));
                }
            }
            assert_eq!(jar.len(), len.div_ceil(chunk_size), "len {len}, chunk {chunk_size}: {jar:?}");
            let back = settings.read_chunked(&RequestCookies::from_headers(&headers_with_cookies(&[cookie_line(&jar).as_bytes()])));
            assert_eq!(back.as_deref(), Some(value.as_str()), "len {len}, chunk {chunk_size}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Return paths (login `rd`, organization selector `rd`, forward-auth `X-Forwarded-Uri`).
// ---------------------------------------------------------------------------------------------

fn payloads() -> Vec<String> {
    let payloads: Vec<String> =
        include_str!("../data/open-redirect-payloads.txt").lines().filter(|l| !l.is_empty()).map(String::from).collect();
    assert!(payloads.len() >= 834, "{} payloads", payloads.len());
    payloads
}

fn assert_same_origin(input: &str, out: &str) {
    let base = url::Url::parse("https://app.example/").unwrap();
    assert!(out.starts_with('/'), "{input:?} -> {out:?}");
    assert!(!out.starts_with("//") && !out.starts_with("/\\"), "{input:?} -> {out:?}");
    assert!(!out.bytes().any(|b| b.is_ascii_control() || b == b'\\' || b == b' ' || b >= 0x80), "{input:?} -> {out:?}");
    let joined = base.join(out).unwrap_or_else(|e| panic!("{input:?} -> {out:?}: {e}"));
    assert_eq!(joined.origin(), base.origin(), "{input:?} -> {out:?} -> {joined}");
    // What the proxy actually sends: Location = public origin + path.
    let location = url::Url::parse(&format!("https://app.example{out}")).unwrap_or_else(|e| panic!("{input:?} -> {out:?}: {e}"));
    assert_eq!(location.origin(), base.origin(), "{input:?} -> {out:?} -> {location}");
    // A path that survived is stable: checking it again keeps it.
    assert_eq!(safe_return_to(out), out, "{input:?} -> {out:?} is not stable");
}

#[test]
fn return_to_always_lands_on_our_origin_for_mutated_payloads() {
    let alphabet: &[&str] = &[
        "/", "\\", "%", "%2f", "%2F", "%5c", "%5C", "%09", "%0a", "%0d", "%00", "%2e", ".", "..", "@", ":", "#", "?", "&", "=", "\t",
        "\n", "\r", " ", "\u{3002}", "\u{ff0f}", "\u{2215}", "\u{0}", "evil.com", "//", "///", "/\\", "\\/", "http:", "https:",
        "javascript:", "%252f", "%E3%80%82", "\u{e9}",
    ];
    let mut rng = Rng::new(0x0DE4_1234_5678);
    let payloads = payloads();
    let started = Instant::now();
    let mut survived = 0;
    for payload in &payloads {
        let decoded = percent_encoding::percent_decode_str(payload).decode_utf8_lossy().into_owned();
        let twice = percent_encoding::percent_decode_str(&decoded).decode_utf8_lossy().into_owned();
        let mut inputs = vec![payload.clone(), decoded, twice, format!("/{payload}"), format!("/x/../{payload}")];
        for _ in 0..12 {
            inputs.push(rng.mutate(payload, alphabet));
        }
        for input in inputs {
            let out = safe_return_to(&input);
            if out != "/" {
                survived += 1;
            }
            assert_same_origin(&input, &out);
        }
    }
    // Pure noise too.
    for _ in 0..5000 {
        let n = rng.below(12);
        let input = rng.string_of(alphabet, n);
        assert_same_origin(&input, &safe_return_to(&input));
    }
    // Legitimate paths survive (the filter is not just "always /").
    for ok in ["/a/b?c=d", "/reports?q=1&x=%2F", "/%C3%A9t%C3%A9", "/a/./b/../c"] {
        assert_ne!(safe_return_to(ok), "/", "{ok}");
    }
    assert!(survived > 0);
    assert!(started.elapsed() < Duration::from_secs(20), "too slow: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 3. Identity headers.
// ---------------------------------------------------------------------------------------------

#[test]
fn header_values_never_carry_control_bytes_and_round_trip() {
    let pieces: &[&str] = &[
        "a", "Z", "0", " ", "  ", "%", "%25", "%0D%0A", "\r", "\n", "\r\n", "\0", "\t", "\u{7f}", "\u{85}", "\u{2028}", "\u{2029}",
        "\u{feff}", "\u{e9}", "H\u{f4}tel", "\u{1F3E8}", "\u{10FFFF}", "\"", ";", ",", ":", "X-Injected: 1", "\u{c0}\u{80}",
    ];
    let mut rng = Rng::new(0x004E_ADE4);
    for case in 0..20_000 {
        let text: String = if rng.chance(20) {
            (0..rng.below(40)).filter_map(|_| char::from_u32(rng.next() as u32 % 0x11_0000)).collect()
        } else {
            let n = rng.below(10);
            rng.string_of(pieces, n)
        };
        let value = identity::header_value(&text);
        let bytes = value.as_bytes();
        assert!(bytes.iter().all(|&b| (0x20..=0x7E).contains(&b)), "case {case}: {text:?} -> {value:?}");
        assert!(!bytes.contains(&b'\r') && !bytes.contains(&b'\n') && !bytes.contains(&0), "case {case}: {text:?}");
        assert!(!bytes.starts_with(b" ") && !bytes.ends_with(b" "), "case {case}: {text:?} -> {value:?}");
        let back = percent_encoding::percent_decode(bytes).decode_utf8().unwrap_or_else(|e| panic!("case {case}: {text:?}: {e}"));
        assert_eq!(back, text, "case {case}: {value:?}");
    }
}

/// `name` with random letter case and each `-` randomly turned into `_`.
fn spelled(rng: &mut Rng, name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '-' if rng.chance(50) => '_',
            c if rng.chance(50) => c.to_ascii_uppercase(),
            c => c,
        })
        .collect()
}

#[test]
fn spoofed_identity_headers_are_stripped_in_every_spelling() {
    let spoofs = [
        "x-trousseau-sub", "x-trousseau-email", "x-trousseau-jwt-assertion", "x-trousseau-org-role", "x-trousseau-access-token",
        "x-trousseau-", "x-trousseau-anything-new", "x-trousseau--", "x-trousseau-x_y",
    ];
    let innocents = [
        "x-trousseau", "x-trousseaux-sub", "xtrousseau-sub", "x-trousseu-sub", "x-tr0usseau-sub", "a-x-trousseau-sub", "trousseau-sub",
        "x-forwarded-for", "cookie", "accept", "x--trousseau-sub",
    ];
    let extra = ExtraHeaders::new(trousseau_proxy::identity::HeadersPreset::Oauth2Proxy, &BTreeMap::new()).unwrap();
    let preset = ["x-forwarded-user", "x-forwarded-email", "x-forwarded-preferred-username", "x-forwarded-groups"];
    let mut rng = Rng::new(0x0059_00F5);
    for case in 0..5000 {
        let mut headers = HeaderMap::new();
        let mut kept: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for _ in 0..1 + rng.below(12) {
            let value = HeaderValue::from_str(&format!("v{}", rng.below(1000))).unwrap();
            match rng.below(3) {
                0 => {
                    let base = rng_pick_str(&mut rng, &spoofs);
                    let name = spelled(&mut rng, base);
                    headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
                }
                1 => {
                    let base = rng_pick_str(&mut rng, &preset);
                    let name = spelled(&mut rng, base);
                    headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
                }
                _ => {
                    let base = rng_pick_str(&mut rng, &innocents);
                    let name = HeaderName::from_bytes(spelled(&mut rng, base).as_bytes()).unwrap();
                    headers.append(name.clone(), value.clone());
                    kept.push((name, value));
                }
            }
        }
        identity::strip_spoofed(&mut headers);
        extra.strip(&mut headers);
        for name in headers.keys() {
            let normalized = name.as_str().replace('_', "-");
            assert!(!normalized.starts_with("x-trousseau-"), "case {case}: {name} survived");
            assert!(!preset.contains(&normalized.as_str()), "case {case}: {name} survived");
        }
        for (name, value) in &kept {
            assert!(headers.get_all(name).iter().any(|v| v == value), "case {case}: innocent {name} was removed");
        }
    }
}

fn rng_pick_str<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len())]
}

// ---------------------------------------------------------------------------------------------
// 4. Paths and patterns.
// ---------------------------------------------------------------------------------------------

const PATH_PIECES: &[&str] = &[
    "/", "/", "/", "//", ".", "..", "/..", "/.", "%2e", "%2E", "%2e%2e", "%2f", "%2F", "%5c", "%", "%%", "%4", "%41", "%61", "%zz",
    "%00", "%25", "%c3%a9", "a", "admin", "assets", "api", "\u{e9}", "\u{65e5}\u{672c}", "\u{1F600}", "\\", "*", ";", "~", "-", "_",
];

#[test]
fn path_normalization_is_idempotent_and_patterns_never_panic() {
    let patterns: Vec<PathPattern> = [
        "/assets/*", "/api/*/status", "/*", "*", "/a*b/*", "/*/*/x", "/\u{e9}*/x", "/admin/*", "/x*", "/*.css", "",
    ]
    .iter()
    .map(|p| PathPattern::new(p))
    .collect();
    let mut rng = Rng::new(0x0000_9A74);
    let started = Instant::now();
    for case in 0..20_000 {
        let n = rng.below(14);
        let path = rng.string_of(PATH_PIECES, n);
        let once = normalize_path(&path).into_owned();
        let twice = normalize_path(&once).into_owned();
        assert_eq!(once, twice, "case {case}: normalize_path is not idempotent on {path:?}");
        assert!(once.starts_with('/'), "case {case}: {path:?} -> {once:?}");
        assert!(!once.contains("//"), "case {case}: {path:?} -> {once:?}");
        assert!(once.split('/').all(|seg| seg != "." && seg != ".."), "case {case}: {path:?} -> {once:?}");
        for p in &patterns {
            let _ = p.matches(&path);
            let _ = p.matches(&once);
        }
        // Random patterns too.
        let m = rng.below(6);
        let pattern = PathPattern::new(&rng.string_of(PATH_PIECES, m));
        let _ = pattern.matches(&path);
        let _ = pattern.matches(&once);
    }
    assert!(started.elapsed() < Duration::from_secs(20), "too slow: {:?}", started.elapsed());
}

#[test]
fn policy_decisions_never_panic_and_public_paths_are_unambiguous() {
    let routes = RoutesConfig {
        public: vec!["/assets/*".into(), "/api/*/health".into(), "/".into(), "/healthz".into()],
        rules: vec![
            RuleConfig { path: "/admin/*".into(), roles: vec!["admin".into()], ..Default::default() },
            RuleConfig { path: "/api/*/admin".into(), methods: vec!["POST".into()], emails: vec!["x@y".into()], ..Default::default() },
            RuleConfig { path: "/hr/*".into(), email_domains: vec!["hotel.com".into()], ..Default::default() },
        ],
    };
    let policy = Policy::new(&routes, &OrganizationConfig { required: false, allowed: vec![], roles: vec![] });
    let mut member = session();
    member.identity.organizations.as_mut().unwrap()[0].role = "member".into();
    let methods = [Method::GET, Method::POST, Method::HEAD, Method::from_bytes(b"get").unwrap(), Method::from_bytes(b"X").unwrap()];
    let mut rng = Rng::new(0x90_11C7);
    for case in 0..20_000 {
        let n = rng.below(12);
        let path = rng.string_of(PATH_PIECES, n);
        if policy.is_public(&path) {
            assert_eq!(normalize_path(&path), path.as_str(), "case {case}: ambiguous public path {path:?}");
        }
        let _ = policy.authorize(&member, rng.pick(&methods), &path);
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Through a running proxy.
// ---------------------------------------------------------------------------------------------

/// Random form bodies for the back-channel logout endpoint.
fn logout_garbage(rng: &mut Rng, env: &Env) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let valid = || env.trousseau().logout_token(Some(JEAN), None);
    let headers = [
        r#"{"alg":"none"}"#, r#"{"alg":"HS256","typ":"JWT"}"#, r#"{"alg":"RS256","kid":"nope"}"#, r#"{"alg":"RS256"}"#,
        r#"{"alg":"ES256","typ":"logout+jwt"}"#, r#"{"alg":["RS256"]}"#, r#"{"alg":null}"#, r#"[]"#, r#""x""#, "{", "",
    ];
    let payloads = [
        r#"{"iss":1,"aud":[1,2],"iat":"x","events":[]}"#, r#"{"events":{"http://schemas.openid.net/event/backchannel-logout":{}}}"#, r#"{}"#, r#"null"#,
        "{", r#"{"iat":18446744073709551615,"exp":18446744073709551615}"#, r#"{"iat":-1,"exp":1e400}"#,
    ];
    match rng.below(9) {
        0 => {
            let len = rng.below(300);
            rng.bytes(len)
        }
        1 => format!("logout_token={}", enc(&String::from_utf8_lossy(&rng.bytes(40)))).into_bytes(),
        2 => format!("logout_token={}.{}.{}", b64(rng.pick(&headers).as_bytes()), b64(rng.pick(&payloads).as_bytes()), b64(&rng.bytes(64)))
            .into_bytes(),
        // A valid token, mutated.
        3 => {
            let token = valid();
            format!("logout_token={}", enc(&rng.mutate(&token, &["A", ".", "-", "_", "=", "%", "+"]))).into_bytes()
        }
        // A valid token, given twice (duplicate parameters are refused).
        4 => {
            let token = valid();
            format!("logout_token={token}&logout_token={token}").into_bytes()
        }
        // A valid signature over another token's payload (signature transplant).
        5 => {
            let a = valid();
            let b = valid();
            let (ah, ap, _) = split3(&a);
            let (_, _, bs) = split3(&b);
            format!("logout_token={ah}.{ap}.{bs}").into_bytes()
        }
        6 => format!("logout_token=&x={}", "A".repeat(rng.below(2000))).into_bytes(),
        7 => vec![b'A'; 64 * 1024 + 1 + rng.below(4096)],
        _ => {
            let n = rng.below(6);
            rng.string_of(&["logout_token", "=", "&", "%", "%ZZ", ".", "eyJ", "\u{e9}", "+", ";"], n).into_bytes()
        }
    }
}

fn split3(token: &str) -> (&str, &str, &str) {
    let mut parts = token.split('.');
    (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap())
}

#[tokio::test]
async fn backchannel_logout_answers_garbage_with_400_never_500() {
    let env = Env::start().await;
    let mut rng = Rng::new(0xBC10_6047);
    let mut browser = env.browser();
    for case in 0..250 {
        let body = logout_garbage(&mut rng, &env);
        let r = browser
            .request(
                Method::POST,
                "/.trousseau/backchannel-logout",
                &[("content-type", "application/x-www-form-urlencoded")],
                Bytes::from(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "case {case}: {:?} -> {} {}", String::from_utf8_lossy(&body), r.status, r.text());
        assert_eq!(r.json()["error"], "invalid_request", "case {case}");
    }

    // Signed by Trousseau's own key, with claims of every wrong type: still a plain 400.
    let now = trousseau_proxy::util::clock::now_secs();
    let issuer = env.idp.issuer();
    let base = serde_json::json!({
        "iss": issuer, "aud": CLIENT_ID, "iat": now, "jti": "j", "sub": JEAN,
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
    });
    let odd_values = [
        serde_json::json!(null), serde_json::json!(-1), serde_json::json!(1.5), serde_json::json!(1e300), serde_json::json!(u64::MAX),
        serde_json::json!(i64::MIN), serde_json::json!("x"), serde_json::json!([]), serde_json::json!({}), serde_json::json!(true),
        serde_json::json!(""),
    ];
    for (i, claim) in ["iss", "aud", "iat", "exp", "jti", "sub", "sid", "events", "nonce"].iter().enumerate() {
        for (k, odd) in odd_values.iter().enumerate() {
            let mut claims = base.clone();
            claims[*claim] = odd.clone();
            claims["jti"] = if *claim == "jti" { odd.clone() } else { serde_json::json!(format!("jti-{i}-{k}")) };
            let token = env.trousseau().sign_jwt(&claims, "logout+jwt");
            let r = browser
                .request(Method::POST, "/.trousseau/backchannel-logout", &[("content-type", "application/x-www-form-urlencoded")], Bytes::from(format!("logout_token={token}")))
                .await;
            assert!(
                r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::OK,
                "{claim} = {odd}: {} {}",
                r.status,
                r.text()
            );
        }
    }
    // Still serving: a genuine logout token is accepted.
    let token = env.trousseau().logout_token(Some("someone-else"), None);
    let ok = browser
        .request(Method::POST, "/.trousseau/backchannel-logout", &[("content-type", "application/x-www-form-urlencoded")], Bytes::from(format!("logout_token={token}")))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
}

/// Panics on the proxy's worker threads (a handler panic drops its connection silently).
static WORKER_PANICS: AtomicUsize = AtomicUsize::new(0);

/// The name of the worker threads whose panics [`WORKER_PANICS`] counts: only the runtime of the
/// test below has it (other tests in this binary run their own proxies, some panicking on purpose).
const COUNTED_WORKER: &str = "robustness-rt-worker";

fn count_worker_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The proxy's tasks run on the runtime's workers; the test's own asserts run elsewhere.
            if std::thread::current().name() == Some(COUNTED_WORKER) {
                WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// One raw HTTP/1.1 exchange: the status code (None when the connection closed without one) and
/// the head and body bytes.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> (Option<u16>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10 s to {:?}", String::from_utf8_lossy(&request[..request.len().min(300)]));
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.strip_prefix("HTTP/1.1 ").or_else(|| text.strip_prefix("HTTP/1.0 ")).and_then(|s| s.get(..3)).and_then(|s| s.parse().ok());
    (status, text)
}

fn random_request(rng: &mut Rng, host: &str, session_cookie: &str) -> Vec<u8> {
    let methods = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PROPFIND", "get", "G\u{e9}T", "X-Y", "CONNECT"];
    let paths = [
        "/", "/x", "/admin/x", "/public/a", "/public/../admin", "/public/%2e%2e/admin", "/%2e%2e/%2e%2e/etc/passwd", "/a/..%2f..%2f",
        "/%00", "/a%00b", "/%", "/%zz", "/\u{e9}t\u{e9}", "/api/\u{e9}/status", "//evil.com", "/\\evil.com", "/.trousseau/", "/.trousseau/login",
        "/.trousseau/login?rd=//evil.com", "/.trousseau/login?rd=%2F%2Fevil.com", "/.trousseau/callback", "/.trousseau/callback?state=a&code=b",
        "/.trousseau/callback?error=access_denied&error_description=%0d%0aX:1", "/.trousseau/callback?state=a&state=b",
        "/.trousseau/logout", "/.trousseau/userinfo", "/.trousseau/organizations", "/.trousseau/organizations?rd=//evil",
        "/.trousseau/auth", "/.trousseau/auth/admin/x", "/.trousseau/backchannel-logout", "/.trousseau/jwks.json", "/.trousseau/nope",
        "/.trousseau", "/.trousseau/../x", "/.Trousseau/login", "*", "http://evil.com/x", "/a?b=%00&c=%zz",
    ];
    let header_pool: &[(&str, &str)] = &[
        ("accept", "text/html"), ("accept", "application/json"), ("accept", "*/*"), ("sec-fetch-mode", "navigate"), ("sec-fetch-mode", "cors"),
        ("x-requested-with", "XMLHttpRequest"), ("X-Trousseau-Sub", "attacker"), ("x_trousseau_email", "ceo@hotel.com"),
        ("X-TROUSSEAU-JWT-ASSERTION", "e30.e30."), ("x-forwarded-uri", "/admin/\\x"), ("x-forwarded-uri", "//evil.com"),
        ("x-original-uri", "/admin/x"), ("x-forwarded-method", "POST"), ("x-forwarded-method", "\u{e9}"), ("origin", "null"),
        ("origin", "https://evil.com"), ("sec-fetch-site", "cross-site"), ("content-type", "application/x-www-form-urlencoded"),
        ("authorization", "Bearer x"), ("authorization", "Basic Zm9vOmJhcg=="), ("connection", "x-trousseau-sub, close"),
        ("connection", "upgrade"), ("upgrade", "websocket"), ("x-request-id", "../../etc"), ("x-forwarded-for", "1.2.3.4"),
        ("accept-language", "fr-FR,fr;q=0.9"), ("te", "trailers"), ("expect", "100-continue"),
    ];
    let cookie_pieces = [
        "trousseau_session=", "trousseau_session_1=", "trousseau_session_login_abc=", "1.", "999.", "0.", "AAAA", ";", " ", "=", "\"",
        ",", "a=b", session_cookie, "\u{e9}", "%00",
    ];
    let mut out = Vec::new();
    let method = *rng.pick(&methods);
    let mut path = rng.pick(&paths).to_string();
    if rng.chance(20) {
        path = format!("/{}", "a/../".repeat(rng.below(400)));
    }
    if rng.chance(5) {
        path = format!("/{}", "x".repeat(rng.below(70_000)));
    }
    let version = if rng.chance(90) { "HTTP/1.1" } else { "HTTP/1.0" };
    out.extend_from_slice(format!("{method} {path} {version}\r\nHost: {host}\r\n").as_bytes());
    for _ in 0..rng.below(6) {
        let (k, v) = rng.pick(header_pool);
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    for _ in 0..rng.below(3) {
        let n = rng.below(8);
        let cookie = rng.string_of(&cookie_pieces, n);
        out.extend_from_slice(format!("Cookie: {cookie}\r\n").as_bytes());
    }
    if rng.chance(5) {
        // An overlong header.
        out.extend_from_slice(format!("X-Long: {}\r\n", "y".repeat(rng.below(600_000))).as_bytes());
    }
    if rng.chance(5) {
        // Raw bytes in a header value (obs-text) and a header name with odd characters.
        out.extend_from_slice(b"X-Obs: caf\xe9\r\nX_Trousseau_Org_Role: admin\r\n");
    }
    let body = if matches!(method, "POST" | "PUT" | "PATCH") {
        let n = rng.below(200);
        rng.bytes(n)
    } else {
        Vec::new()
    };
    out.extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn random_raw_requests_never_break_the_proxy() {
    count_worker_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name(COUNTED_WORKER).enable_all().build().unwrap();
    runtime.block_on(random_raw_requests());
}

async fn random_raw_requests() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.routes.public = vec!["/public/*".into(), "/api/*/status".into()];
            c.routes.rules = vec![RuleConfig { path: "/admin/*".into(), emails: vec!["nobody@example.com".into()], ..Default::default() }];
        }),
        ..Default::default()
    })
    .await;
    let mut browser = env.browser();
    browser.sign_in("/", JEAN).await;
    let session_cookie = format!("trousseau_session={}", browser.jar["trousseau_session"]);
    let host = env.addr.to_string();
    let mut rng = Rng::new(0x4A3_50CE7);
    let panics_before = WORKER_PANICS.load(Ordering::SeqCst);
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    // A few fixed requests first: non-ASCII paths against a pattern with an inner `*`, a public
    // path spelled with a backslash, forward-auth with an unusable URI.
    let fixed: Vec<Vec<u8>> = vec![
        format!("GET /api/\u{e9}/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("GET /api/\u{e9}/nope HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("GET /api/\u{e9} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("GET /api/\u{1F600}\u{e9}/status HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("GET /admin/\u{e9} HTTP/1.1\r\nHost: {host}\r\nCookie: {session_cookie}\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("GET /public/..\\admin HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
    ];
    for (case, request) in fixed.iter().enumerate() {
        let (status, text) = raw_exchange(env.addr, request).await;
        assert!(status.is_some(), "fixed case {case}: no answer to {:?}: {text}", String::from_utf8_lossy(request));
        assert_eq!(WORKER_PANICS.load(Ordering::SeqCst), panics_before, "fixed case {case}: a handler panicked on {:?}", String::from_utf8_lossy(request));
    }
    for case in 0..400 {
        let request = random_request(&mut rng, &host, &session_cookie);
        let shown = String::from_utf8_lossy(&request[..request.len().min(400)]).into_owned();
        let (status, text) = raw_exchange(env.addr, &request).await;
        let Some(status) = status else {
            // hyper closes silently only on input it cannot even frame; never on a handler panic.
            assert_eq!(WORKER_PANICS.load(Ordering::SeqCst), panics_before, "case {case}: a handler panicked on {shown:?}");
            continue;
        };
        *statuses.entry(status).or_default() += 1;
        if status >= 500 {
            assert!(matches!(status, 502..=504), "case {case}: {status} for {shown:?}:\n{text}");
            let lower = text.to_ascii_lowercase();
            assert!(
                lower.contains("content-type: application/json") || lower.contains("content-type: text/html"),
                "case {case}: {status} without our body for {shown:?}:\n{text}"
            );
        }
        if case % 50 == 0 {
            let health = browser.api_get("/.trousseau/healthz").await;
            assert_eq!(health.status, StatusCode::OK, "case {case}: stopped serving");
        }
    }
    assert_eq!(WORKER_PANICS.load(Ordering::SeqCst), panics_before, "a request handler panicked (see the log above)");
    eprintln!("statuses: {statuses:?}");

    // Nothing spoofed, and none of our cookies, ever reached the app.
    for headers in env.upstream.seen.lock().unwrap().iter() {
        for (name, values) in headers {
            let normalized = name.replace('_', "-");
            if normalized.starts_with("x-trousseau-") {
                assert!(!name.contains('_'), "{name} reached the app");
                assert!(values.len() == 1, "{name} twice: {values:?}");
                assert!(!values.iter().any(|v| v == "attacker" || v == "ceo@hotel.com" || v == "e30.e30." || v == "admin"), "{name}: {values:?}");
            }
            if name == "cookie" {
                for value in values {
                    for segment in value.split(';') {
                        let name = segment.split('=').next().unwrap_or("").trim();
                        let ours = name == "trousseau_session"
                            || name.strip_prefix("trousseau_session_").is_some_and(|n| n.starts_with("login_") || (!n.is_empty() && n.len() <= 4 && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit())));
                        assert!(!ours || !segment.contains('='), "our cookie {name} reached the app: {value:?}");
                    }
                }
            }
        }
    }
    // And the proxy still serves a signed-in user.
    let ok = browser.api_get("/still-here").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(ok.json()["headers"]["x-trousseau-sub"][0], JEAN);
}

// ---------------------------------------------------------------------------------------------
// 6. Ambiguous separators: what an app may read as `/` must not open a public route or slip past
//    a rule (WSGI, PHP and Python's http.server decode `%2F`; IIS and many Windows-hosted apps
//    read `\` as `/`).
// ---------------------------------------------------------------------------------------------

#[test]
fn encoded_slashes_and_backslashes_neither_open_public_routes_nor_slip_past_rules() {
    let routes = RoutesConfig {
        public: vec!["/public/*".into(), "/assets/*".into()],
        rules: vec![RuleConfig { path: "/admin/*".into(), roles: vec!["admin".into()], ..Default::default() }],
    };
    let policy = Policy::new(&routes, &OrganizationConfig::default());
    for ambiguous in [
        "/public/..\\admin", "/public/..%2Fadmin", "/public/..%2fadmin", "/public/..%5Cadmin", "/public/%2E%2E%2Fadmin",
        "/assets/x\\..\\..\\admin", "/public/a%2F..%2F..%2Fadmin",
    ] {
        assert!(!policy.is_public(ambiguous), "{ambiguous:?} is public");
    }
    assert!(policy.is_public("/public/a.css"));

    let admin = session();
    let mut member = session();
    member.identity.organizations.as_mut().unwrap()[0].role = "member".into();
    for path in ["/admin%2Fusers", "/admin%2fusers", "/admin\\users", "/admin%5Cusers", "/x/..%2Fadmin/users", "/x\\..\\admin\\users", "/%61dmin%2Fusers"] {
        assert!(
            matches!(policy.authorize(&member, &Method::GET, path), trousseau_proxy::policy::Decision::Deny(_)),
            "{path:?} let a member past the admin rule"
        );
        assert_eq!(policy.authorize(&admin, &Method::GET, path), trousseau_proxy::policy::Decision::Allow, "{path:?}");
    }
    // Paths with no rule either way stay allowed.
    for path in ["/reports%2F2024", "/files\\a.txt", "/x"] {
        assert_eq!(policy.authorize(&member, &Method::GET, path), trousseau_proxy::policy::Decision::Allow, "{path:?}");
    }
}

#[tokio::test]
async fn ambiguous_public_paths_need_a_session_through_the_proxy() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| c.routes.public = vec!["/public/*".into()]),
        ..Default::default()
    })
    .await;
    let host = env.addr.to_string();
    for path in ["/public/..\\admin", "/public/..%2Fadmin", "/public/..%5cadmin"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
        let (status, text) = raw_exchange(env.addr, request.as_bytes()).await;
        assert_eq!(status, Some(401), "{path:?} was let through without a session:\n{text}");
    }
    assert_eq!(env.upstream.hits(), 0);
}
