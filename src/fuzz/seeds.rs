//! The seed corpus, as code: what `fuzz/corpus/<target>/` starts from. Written by
//! `cargo test --test fuzz_smoke -- --ignored write_seed_corpus` (existing files are kept, so
//! libFuzzer's additions and regression inputs stay); the committed files are what the runners use.
//!
//! Values that would expire are markers ([`super::fixtures::expand`]) or relative times
//! ([`super::fixtures::relative_times`]); values sealed or signed here with the fixture keys stay
//! valid (sealed values have no expiry of their own; ID tokens expire in 2100).

use serde_json::json;

use super::fixtures::{self, BACKCHANNEL_EVENT, CLIENT_ID, ISSUER, NONCE, SUB};
use crate::session::cookies::SESSION_PURPOSE;

/// `2^23`: "now" in a relative time claim.
const NOW: u64 = fixtures::RELATIVE_TIME_LIMIT / 2;
/// A fixed past instant (2024-04-06) for literal tokens, and 2100-01-01 for their expiry.
const PAST: u64 = 1_712_399_700;
const YEAR_2100: u64 = 4_102_444_800;

/// Every seed: `(target, file name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut all = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| all.push((target, name.to_string(), bytes));
    cookie_header(&mut add);
    session_cookie(&mut add);
    session_plaintext(&mut add);
    state_cookie(&mut add);
    logout_token(&mut add);
    logout_token_claims(&mut add);
    id_token(&mut add);
    id_token_claims(&mut add);
    organizations_claim(&mut add);
    config(&mut add);
    forward_auth_headers(&mut add);
    path_rules(&mut add);
    trace_context(&mut add);
    client_certificate(&mut add);
    all
}

/// A real certificate (ECDSA P-256, the tests' CA: `CN=trousseau-proxy test CA`), cut short, and
/// a subject full of control characters is for the mutator to find from there.
fn client_certificate(add: &mut Add) {
    use base64::Engine as _;
    let t = "client_certificate";
    let der = base64::engine::general_purpose::STANDARD
        .decode(concat!(
            "MIIBeDCCAR6gAwIBAgICEAAwCgYIKoZIzj0EAwIwIjEgMB4GA1UEAwwXdHJvdXNz",
            "ZWF1LXByb3h5IHRlc3QgQ0EwIBcNMDAwMTAxMDAwMDAwWhgPMjEyNTAxMDEwMDAw",
            "MDBaMCIxIDAeBgNVBAMMF3Ryb3Vzc2VhdS1wcm94eSB0ZXN0IENBMFkwEwYHKoZI",
            "zj0CAQYIKoZIzj0DAQcDQgAERYFCTLsCns2eScwrytyflfkblHO3wALN8puUcMtN",
            "Xk2qULvxagwqJTx3JakOUFvq8XxEWJ4Je7Rz3aUM6Nzv6aNCMEAwDwYDVR0TAQH/",
            "BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAQYwHQYDVR0OBBYEFDFkq9o80r5uxbGZZ+VD",
            "/AnOyx5CMAoGCCqGSM49BAMCA0gAMEUCIQCresCjw5SDfA3CyNNtZrdTqtSb13Ix",
            "FgRQHKluQR71lQIgUG2IdsPVUTMN/yhFIAFuAPl9xUN70ecf5JH53LU10L4=",
        ))
        .expect("base64");
    add(t, "test-ca", der.clone());
    add(t, "truncated", der[..der.len() / 2].to_vec());
    // The same certificate with its common name's bytes turned into CR, LF and NUL.
    let name = b"trousseau-proxy test CA";
    let mut hostile = der.clone();
    if let Some(at) = hostile.windows(name.len()).position(|w| w == name) {
        hostile[at..at + 3].copy_from_slice(b"\r\n\0");
    }
    add(t, "control-characters-in-the-name", hostile);
    add(t, "empty", Vec::new());
}

type Add<'a> = dyn FnMut(&'static str, &str, Vec<u8>) + 'a;

/// A named change to a valid claims object.
type Variant<'a> = (&'a str, &'a dyn Fn(&mut serde_json::Value));

fn cookie_header(add: &mut Add) {
    let t = "cookie_header";
    add(t, "app-and-ours", b"theme=dark; __Host-trousseau_session=1.abc; lang=fr-FR".to_vec());
    add(t, "http2-crumbs", b"a=1\n__Host-trousseau_session=1.x\nb=2".to_vec());
    add(t, "quoted-and-spaces", b"q=\"a b\"; x=1 ;  \t y = 2 \t".to_vec());
    add(t, "odd-segments", b";;=; =x; a=; b; ;c=d=e".to_vec());
    add(t, "not-utf8", b"a=\xe9; \xff=1; __Host-trousseau_session_1=x; a=ok".to_vec());
    add(t, "chunk-names", b"__Host-trousseau_session_01=x; __Host-trousseau_session_0=y; __Host-trousseau_session_99999=z; __Host-trousseau_session_9999=w; __Host-trousseau_session_=v".to_vec());
    add(t, "login-cookies", b"__Host-trousseau_session_login_abc=v; __Host-trousseau_session_loginx=1; other=1".to_vec());
    add(t, "commas", b"a=b, __Host-trousseau_session=1.x, c=d".to_vec());
    add(t, "case", b"__host-trousseau_session=1.x; __HOST-TROUSSEAU_SESSION=1.y; trousseau_session=1.z".to_vec());
    let many: Vec<String> = (0..300).map(|i| format!("c{i}=v{i}")).collect();
    add(t, "over-the-count-limit", format!("{}; __Host-trousseau_session=1.late", many.join("; ")).into_bytes());
    add(t, "single-header-untouched", b"a=1 ;b=2;  c".to_vec());
}

fn session_cookie(add: &mut Add) {
    let t = "session_cookie";
    let n = "__Host-trousseau_session";
    add(t, "one-cookie", format!("{n}=1.@S@").into_bytes());
    add(t, "three-chunks", format!("{n}=3.@B0@; {n}_1=@B1@; {n}_2=@B2@").into_bytes());
    add(t, "three-chunks-http2", format!("{n}=3.@B0@\n{n}_2=@B2@\n{n}_1=@B1@").into_bytes());
    add(t, "missing-chunk", format!("{n}=3.@B0@; {n}_2=@B2@").into_bytes());
    add(t, "empty-chunk", format!("{n}=2.@S@; {n}_1=").into_bytes());
    add(t, "stale-extra-chunks", format!("{n}=1.@S@; {n}_1=stale; {n}_7=old; {n}_9999=x").into_bytes());
    add(t, "count-999999999", format!("{n}=999999999.@S@").into_bytes());
    add(t, "count-minus-one", format!("{n}=-1.@S@").into_bytes());
    add(t, "count-overflow", format!("{n}=18446744073709551616.@S@").into_bytes());
    add(t, "count-zero", format!("{n}=0.@S@").into_bytes());
    add(t, "count-over-max-chunks", format!("{n}=9.@S@; {n}_1=a; {n}_2=b; {n}_3=c; {n}_4=d; {n}_5=e; {n}_6=f; {n}_7=g; {n}_8=h").into_bytes());
    add(t, "count-with-plus", format!("{n}=+1.@S@").into_bytes());
    add(t, "no-count", format!("{n}=@S@").into_bytes());
    add(t, "duplicate-first-cookie", format!("{n}=1.garbage; {n}=1.@S@").into_bytes());
    add(t, "state-cookie-as-session", format!("{n}=1.@L@").into_bytes());
    add(t, "other-name", b"trousseau_session=1.@S@".to_vec());
    let sealed = fixtures::sealer().seal(SESSION_PURPOSE, &serde_json::to_vec(&fixtures::session(PAST, 1)).expect("JSON"));
    add(t, "literal-sealed-session", format!("{n}=1.{sealed}").into_bytes());
    let junk = fixtures::sealer().seal(SESSION_PURPOSE, br#"{"not":"a session"}"#);
    add(t, "sealed-but-not-a-session", format!("{n}=1.{junk}").into_bytes());
    let mut truncated = sealed.clone();
    truncated.truncate(sealed.len() - 5);
    add(t, "truncated-seal", format!("{n}=1.{truncated}").into_bytes());
}

fn session_plaintext(add: &mut Add) {
    let t = "session_plaintext";
    let session = serde_json::to_value(fixtures::session(PAST, 2)).expect("JSON");
    add(t, "session", session.to_string().into_bytes());
    add(t, "minimal", br#"{"i":"x","u":{"sub":"s"},"c":0,"m":0,"e":0}"#.to_vec());
    let mut v = session.clone();
    v["o"] = json!("not-a-member");
    add(t, "selected-org-not-a-member", v.to_string().into_bytes());
    let mut v = session.clone();
    v["u"]["name"] = json!("Hôtel\r\nX-Trousseau-Sub: admin");
    v["u"]["sub"] = json!("a\u{0}b\tc d ");
    v["a"] = json!("token\r\nwith CRLF");
    add(t, "control-characters", v.to_string().into_bytes());
    let mut v = session.clone();
    v["u"]["email"] = json!("");
    v["u"]["locale"] = json!("");
    v["u"]["sub"] = json!("");
    add(t, "empty-strings", v.to_string().into_bytes());
    let mut v = session.clone();
    v["c"] = json!(u64::MAX);
    v["m"] = json!(u64::MAX);
    v["e"] = json!(u64::MAX);
    add(t, "huge-times", v.to_string().into_bytes());
    add(t, "negative-time", br#"{"i":"x","u":{"sub":"s"},"c":-1,"m":0,"e":0}"#.to_vec());
    add(t, "duplicate-keys", br#"{"i":"x","u":{"sub":"s","sub":"t"},"c":0,"m":0,"e":0,"i":"y"}"#.to_vec());
    add(t, "nulls", br#"{"i":"x","u":{"sub":"s","email":null,"organizations":null},"o":null,"c":0,"m":0,"e":0,"r":null}"#.to_vec());
    add(t, "deep-nesting", format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes());
    add(t, "not-json", b"\x00\xff{".to_vec());
}

fn state_cookie(add: &mut Add) {
    let t = "state_cookie";
    add(t, "fresh-state", b"@L@".to_vec());
    let login = json!({"s": "c3RhdGU", "n": NONCE, "v": "verifier", "r": "/reports?year=2024", "t": NOW});
    add(t, "plaintext-now", login.to_string().into_bytes());
    let mut v = login.clone();
    v["t"] = json!(NOW - 601);
    add(t, "plaintext-expired", v.to_string().into_bytes());
    let mut v = login.clone();
    v["r"] = json!("//evil.example/");
    add(t, "plaintext-evil-return", v.to_string().into_bytes());
    let mut v = login.clone();
    v["t"] = json!(u64::MAX);
    add(t, "regression-state-time-overflow", v.to_string().into_bytes());
    let mut v = login.clone();
    v["t"] = json!(NOW + 3600);
    add(t, "plaintext-from-the-future", v.to_string().into_bytes());
    let stale = fixtures::sealer().seal(crate::session::sessions::LOGIN_STATE_PURPOSE, &serde_json::to_vec(&fixtures::login_state(PAST)).expect("JSON"));
    add(t, "literal-sealed-expired", stale.into_bytes());
    let session = fixtures::sealer().seal(SESSION_PURPOSE, b"{}");
    add(t, "session-purpose", session.into_bytes());
    add(t, "sign-in-trail", b"1.deadbeef.0000abcd.3812.1764800000.1764800010.1764800020".to_vec());
    for (i, rd) in [
        "/", "/reports?year=2024&q=a%20b", "//evil.example", "/\\evil.example", "/%2F%2Fevil.example",
        "https://evil.example/", "/..//evil.example", "/\t/evil.example", "/a/../../b", "/%5C%5Cevil.example",
        "/.trousseau/logout", "/x#frag", "/?rd=//evil", "/%E2%80%AE", "/\u{3002}evil",
    ]
    .iter()
    .enumerate()
    {
        add(t, &format!("rd-{i:02}"), rd.as_bytes().to_vec());
    }
}

fn logout_claims(now: u64) -> serde_json::Value {
    json!({"iss": ISSUER, "aud": CLIENT_ID, "iat": now, "jti": "fuzz-jti", "sid": fixtures::SID, "events": {BACKCHANNEL_EVENT: {}}})
}

fn logout_token(add: &mut Add) {
    let t = "logout_token";
    add(t, "form", b"logout_token=@LT@".to_vec());
    add(t, "bare-token", b"@LT@".to_vec());
    add(t, "duplicate-parameter", b"logout_token=@LT@&logout_token=@LT@".to_vec());
    add(t, "percent-encoded", b"logout_token=@LT@%2E&x=1".to_vec());
    add(t, "dots", format!("logout_token={}", ".".repeat(4000)).into_bytes());
    add(t, "four-parts", b"logout_token=a.b.c.d".to_vec());
    let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(logout_claims(PAST).to_string().as_bytes()));
    add(t, "alg-none", format!("logout_token={none}").into_bytes());
    let hs = fixtures::sign_jws(br#"{"alg":"HS256","kid":"x"}"#, logout_claims(PAST).to_string().as_bytes());
    add(t, "alg-hs256", format!("logout_token={hs}").into_bytes());
    let huge_header = format!(r#"{{"alg":"ES256","x":"{}"}}"#, "A".repeat(3000));
    add(t, "huge-header", format!("logout_token={}.e30.AAAA", b64(huge_header.as_bytes())).into_bytes());
    let stale = fixtures::sign_jws(&fixtures::default_header("logout+jwt"), logout_claims(PAST).to_string().as_bytes());
    add(t, "literal-stale", format!("logout_token={stale}").into_bytes());
    add(t, "bearer", b"  fuzz-opaque-access-token  ".to_vec());
}

fn logout_token_claims(add: &mut Add) {
    let t = "logout_token_claims";
    let base = logout_claims(NOW);
    add(t, "valid", base.to_string().into_bytes());
    let variants: [Variant; 16] = [
        ("with-exp", &|v| v["exp"] = json!(NOW + 120)),
        ("expired", &|v| v["exp"] = json!(NOW - 600)),
        ("aud-array", &|v| v["aud"] = json!(["other", CLIENT_ID])),
        ("aud-other", &|v| v["aud"] = json!("other-client")),
        ("sub-only", &|v| {
            v.as_object_mut().map(|o| o.remove("sid"));
            v["sub"] = json!(SUB);
        }),
        ("neither-sid-nor-sub", &|v| {
            v.as_object_mut().map(|o| o.remove("sid"));
        }),
        ("empty-sid", &|v| v["sid"] = json!("")),
        ("with-nonce", &|v| v["nonce"] = json!("n")),
        ("events-array", &|v| v["events"] = json!([BACKCHANNEL_EVENT])),
        ("events-string", &|v| v["events"] = json!({BACKCHANNEL_EVENT: "yes"})),
        ("iat-future", &|v| v["iat"] = json!(NOW + 3600)),
        ("iat-old", &|v| v["iat"] = json!(NOW - 3600)),
        ("iat-string", &|v| v["iat"] = json!("now")),
        ("issuer-without-slash", &|v| v["iss"] = json!(ISSUER.trim_end_matches('/'))),
        ("jti-empty", &|v| v["jti"] = json!("")),
        ("jti-number", &|v| v["jti"] = json!(7)),
    ];
    for (name, change) in variants {
        let mut v = base.clone();
        change(&mut v);
        add(t, name, v.to_string().into_bytes());
    }
    let with_header = |header: &[u8]| [header, &[0xFF], base.to_string().as_bytes()].concat();
    add(t, "typ-jwt", with_header(&fixtures::default_header("JWT")));
    add(t, "typ-at-jwt", with_header(&fixtures::default_header("at+jwt")));
    add(t, "no-kid", with_header(br#"{"alg":"ES256"}"#));
    add(t, "unknown-kid", with_header(br#"{"alg":"ES256","kid":"unknown"}"#));
    add(t, "alg-rs256", with_header(format!(r#"{{"alg":"RS256","kid":"{}"}}"#, fixtures::signer().kid()).as_bytes()));
    add(t, "alg-none", with_header(br#"{"alg":"none"}"#));
    add(t, "header-not-json", with_header(b"not json"));
}

fn id_claims(now: u64, exp: u64) -> serde_json::Value {
    let mut v = fixtures::id_token_claims(now);
    v["iat"] = json!(now);
    v["auth_time"] = json!(now);
    v["exp"] = json!(exp);
    v
}

fn id_token(add: &mut Add) {
    let t = "id_token";
    add(t, "fresh-token", b"@IT@".to_vec());
    add(t, "fresh-token-response", br#"{"access_token":"a","token_type":"Bearer","expires_in":300,"id_token":"@IT@"}"#.to_vec());
    let literal = fixtures::sign_jws(&fixtures::default_header("JWT"), id_claims(PAST, YEAR_2100).to_string().as_bytes());
    add(t, "literal-valid-until-2100", literal.clone().into_bytes());
    add(t, "literal-response", fixtures::token_response(&literal));
    let mut refreshed = id_claims(PAST, YEAR_2100);
    refreshed.as_object_mut().map(|o| o.remove("nonce"));
    let refreshed = fixtures::sign_jws(&fixtures::default_header("JWT"), refreshed.to_string().as_bytes());
    add(t, "literal-refreshed-without-nonce", refreshed.into_bytes());
    add(t, "response-without-id-token", br#"{"access_token":"a","token_type":"Bearer","expires_in":300}"#.to_vec());
    add(t, "response-odd-fields", br#"{"access_token":"a","token_type":"mac","expires_in":-5,"refresh_token":7,"id_token":"@IT@"}"#.to_vec());
    add(t, "response-huge-expiry", br#"{"access_token":"a","token_type":"Bearer","expires_in":18446744073709551615,"id_token":"@IT@"}"#.to_vec());
    add(t, "id-token-not-a-string", br#"{"access_token":"a","token_type":"Bearer","id_token":{"a":1}}"#.to_vec());
    add(t, "dots", ".".repeat(4000).into_bytes());
    add(t, "two-parts", b"a.b".to_vec());
    add(t, "five-parts-jwe", b"eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d".to_vec());
    let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(id_claims(PAST, YEAR_2100).to_string().as_bytes()));
    add(t, "alg-none", none.into_bytes());
    let huge_header = format!(r#"{{"alg":"ES256","x":"{}"}}"#, "A".repeat(3000));
    add(t, "huge-header", format!("{}.e30.AAAA", b64(huge_header.as_bytes())).into_bytes());
    add(t, "bearer-like", b"fuzz-opaque-access-token".to_vec());
}

fn id_token_claims(add: &mut Add) {
    let t = "id_token_claims";
    let base = id_claims(NOW, NOW + 300);
    add(t, "valid", base.to_string().into_bytes());
    let variants: [Variant; 19] = [
        ("empty-email", &|v| v["email"] = json!("")),
        ("empty-sub", &|v| v["sub"] = json!("")),
        ("empty-strings", &|v| {
            for k in ["name", "given_name", "family_name", "picture", "locale", "trousseau_user_id"] {
                v[k] = json!("");
            }
        }),
        ("email-verified-without-email", &|v| {
            v.as_object_mut().map(|o| o.remove("email"));
        }),
        ("aud-array-extra", &|v| v["aud"] = json!([CLIENT_ID, "other"])),
        ("azp-other", &|v| v["azp"] = json!("other")),
        ("wrong-nonce", &|v| v["nonce"] = json!("other")),
        ("no-nonce", &|v| {
            v.as_object_mut().map(|o| o.remove("nonce"));
        }),
        ("other-sub", &|v| v["sub"] = json!("someone-else")),
        ("expired", &|v| v["exp"] = json!(NOW - 10)),
        ("issued-in-the-future", &|v| v["iat"] = json!(NOW + 3600)),
        ("exp-float", &|v| v["exp"] = json!((NOW + 300) as f64 + 0.5)),
        ("localized-names", &|v| {
            v["name#fr-FR"] = json!("Jean Dupont");
            v["name#en"] = json!("John");
        }),
        ("picture-not-url", &|v| v["picture"] = json!("not a url")),
        ("email-not-string", &|v| v["email"] = json!(["a@b"])),
        ("organizations-wrong", &|v| v["organizations"] = json!([{"id": 1}])),
        ("organizations-null", &|v| v["organizations"] = json!(null)),
        ("sid-number", &|v| v["sid"] = json!(5)),
        ("issuer-other", &|v| v["iss"] = json!("https://evil.example/application/o/fuzz/")),
    ];
    for (name, change) in variants {
        let mut v = base.clone();
        change(&mut v);
        add(t, name, v.to_string().into_bytes());
    }
    let with_header = |header: &[u8]| [header, &[0xFF], base.to_string().as_bytes()].concat();
    add(t, "no-kid", with_header(br#"{"alg":"ES256"}"#));
    add(t, "unknown-kid", with_header(br#"{"alg":"ES256","kid":"unknown"}"#));
    add(t, "alg-hs256", with_header(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, fixtures::signer().kid()).as_bytes()));
    add(t, "crit", with_header(format!(r#"{{"alg":"ES256","kid":"{}","crit":["exp"]}}"#, fixtures::signer().kid()).as_bytes()));
}

fn organizations_claim(add: &mut Add) {
    let t = "organizations_claim";
    let docs = json!([
        {"id": "018cc251-f400-78cc-8e0c-000fe440ee40", "name": "Hotel Le Grand Paris", "slug": "hotel-le-grand-paris", "role": "admin"},
        {"id": "018dd362-a511-89dd-9f1d-111ff551ff51", "name": "Hotel Riviera Nice", "slug": "hotel-riviera-nice", "role": "member"}
    ]);
    add(t, "from-the-docs", docs.to_string().into_bytes());
    add(t, "one", json!([docs[0]]).to_string().into_bytes());
    add(t, "empty", b"[]".to_vec());
    add(t, "null", b"null".to_vec());
    add(t, "missing-fields", br#"[{"id":"x","name":"X"}]"#.to_vec());
    add(t, "extra-fields", br#"[{"id":"x","name":"X","slug":"x","role":"admin","extra":{"a":[1]}}]"#.to_vec());
    add(t, "html-in-names", br#"[{"id":"<b>","name":"<script>alert(1)</script>","slug":"\"onmouseover=\"x","role":"admin'--"},{"id":"y","name":"Y","slug":"y","role":"hr"}]"#.to_vec());
    add(t, "duplicate-ids-different-roles", br#"[{"id":"x","name":"X","slug":"x","role":"member"},{"id":"x","name":"X","slug":"x","role":"admin"}]"#.to_vec());
    add(t, "slug-equals-other-id", br#"[{"id":"hotel-riviera-nice","name":"A","slug":"a","role":"member"},{"id":"b","name":"B","slug":"018dd362-a511-89dd-9f1d-111ff551ff51","role":"admin"}]"#.to_vec());
    add(t, "unicode-and-controls", "[{\"id\":\"é\\u0000\",\"name\":\"Hôtel\\r\\nX-Evil: 1\",\"slug\":\"\\u202e\",\"role\":\"\"}]".as_bytes().to_vec());
    add(t, "wrong-types", br#"[{"id":1,"name":null,"slug":[],"role":{}}]"#.to_vec());
    add(t, "object-not-array", br#"{"id":"x","name":"X","slug":"x","role":"admin"}"#.to_vec());
    let many: Vec<serde_json::Value> =
        (0..100).map(|i| json!({"id": format!("id-{i}"), "name": format!("Org {i}"), "slug": format!("org-{i}"), "role": "member"})).collect();
    add(t, "hundred", serde_json::Value::Array(many).to_string().into_bytes());
}

fn config(add: &mut Add) {
    let t = "config";
    add(t, "config-example", include_str!("../../config.example.yaml").as_bytes().to_vec());
    let minimal = "public_url: https://app.example.com\nupstream: http://127.0.0.1:8080\noidc:\n  issuer: https://auth.keysuite.app/application/o/x/\n  client_id: x\n  client_secret: s3cr3t-client-secret\nsession:\n  secrets: [\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"]\n";
    add(t, "minimal", minimal.as_bytes().to_vec());
    let env = [minimal.as_bytes(), &[0xFF], b"OIDC_CLIENT_SECRET=from-the-environment\nSESSION_SECRETS=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=,bm90LWJhc2U2NA\nROUTES_RULES=[{path: /admin/*, roles: [admin]}]\nIDENTITY_PASS_ACCESS_TOKEN=true"].concat();
    add(t, "environment-overrides", env);
    add(t, "unknown-env", [minimal.as_bytes(), &[0xFF], b"TROUSSEAU_PROXY_NOPE=1"].concat());
    add(t, "redis", format!("{minimal}  store: redis\n  redis_url: redis://:p4ssw0rd-redis@redis:6379/0\n").into_bytes());
    add(t, "redis-unparsable", format!("{minimal}  store: redis\n  redis_url: \"redis://:p4ss word@[::1\"\n").into_bytes());
    add(t, "unknown-key", format!("{minimal}  cookie_nmae: oops\n").into_bytes());
    add(t, "bad-durations", format!("{minimal}  max_lifetime: 5 weeks\n  refresh_skew: 99999999999999999999d\n").into_bytes());
    add(t, "rules", format!("{minimal}routes:\n  public: [\"/healthz\", \"/assets/*\", \"relative\"]\n  rules:\n    - path: /admin/*\n      methods: [get, POST, \"BAD METHOD\"]\n      roles: [admin]\n      email_domains: [\"@hotel.example\"]\n").into_bytes());
    add(t, "headers", format!("{minimal}identity:\n  headers_preset: oauth2-proxy\n  headers:\n    X-User-Email: email\n    X-Trousseau-Sub: sub\n    \"bad header\": org.role\n").into_bytes());
    add(t, "organization", format!("{minimal}organization:\n  required: true\n  allowed: [hotel-a]\n  roles: [admin, hr]\n").into_bytes());
    add(t, "aliases", b"a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n".to_vec());
    add(t, "not-a-mapping", b"- just\n- a list\n".to_vec());
    add(t, "empty", Vec::new());
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

fn forward_auth_headers(add: &mut Add) {
    let t = "forward_auth_headers";
    add(t, "nginx", b"GET /.trousseau/auth\nx-original-uri: /admin/users?page=2\nx-original-method: DELETE\naccept: application/json".to_vec());
    add(t, "traefik", b"GET /.trousseau/auth\nX-Forwarded-Method: POST\nX-Forwarded-Uri: /reports/2026\nX-Forwarded-Proto: https".to_vec());
    add(t, "envoy", b"PUT /.trousseau/auth/admin/x?y=1\ncookie: a=b".to_vec());
    add(t, "bare", b"GET /.trousseau/auth".to_vec());
    add(t, "envoy-with-a-client-uri", b"GET /.trousseau/auth/admin/x\nx-forwarded-uri: /public/x".to_vec());
    add(t, "envoy-with-a-client-method", b"DELETE /.trousseau/auth/reports/1\nx-original-method: GET".to_vec());
    add(t, "two-families", b"GET /.trousseau/auth\nx-original-uri: /admin\nx-forwarded-uri: /public/x".to_vec());
    add(t, "repeated", b"GET /.trousseau/auth\nx-original-uri: /admin\nx-original-uri: /public/x".to_vec());
    add(t, "fragment", b"GET /.trousseau/auth\nx-original-uri: /public#/../admin".to_vec());
    add(t, "not-a-path", b"GET /.trousseau/auth\nx-forwarded-uri: admin/x".to_vec());
    add(t, "obs-text", b"GET /.trousseau/auth\nx-original-uri: /admin/\xc3\xa9t\xc3\xa9".to_vec());
    add(t, "empty-values", b"GET /.trousseau/auth\nx-original-uri: \nx-forwarded-uri: /x\nx-forwarded-method: ".to_vec());
}

fn trace_context(add: &mut Add) {
    let t = "trace_context";
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    add(t, "continued", format!("traceparent: {valid}\ntracestate: vendor=opaque,other=1").into_bytes());
    add(t, "not-sampled", b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".to_vec());
    add(t, "later-version", b"traceparent: cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more".to_vec());
    add(t, "upper-case", b"traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01\ntracestate: a=b".to_vec());
    add(t, "zero-trace", b"traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_vec());
    add(t, "version-ff", b"traceparent: ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec());
    add(t, "two-parents", format!("traceparent: {valid}\ntraceparent: {valid}").into_bytes());
    add(t, "two-states", format!("traceparent: {valid}\ntracestate: a=1\ntracestate: b=2").into_bytes());
    add(t, "long-state", format!("traceparent: {valid}\ntracestate: {}", "k=v,".repeat(200)).into_bytes());
    add(t, "state-alone", b"tracestate: vendor=opaque".to_vec());
    add(t, "bare-value", valid.as_bytes().to_vec());
}

fn path_rules(add: &mut Add) {
    let t = "path_rules";
    // The first byte picks the method: 0 GET, 1 get, 2 HEAD, 3 head, 4 DELETE, 5 delete, 6 Delete, 7 POST.
    let paths: &[(&str, u8, &str)] = &[
        ("admin-index", 0, "/admin"),
        ("admin-page", 0, "/admin/users"),
        ("servlet-parameter", 0, "/admin;x/x"),
        ("tomcat-dotdot-parameter", 0, "/public/..;/admin/x"),
        ("encoded-parameter", 0, "/admin%3Bx/x"),
        ("case", 0, "/ADMIN/x"),
        ("encoded-letter", 0, "/%41dmin/x"),
        ("encoded-dots", 0, "/public/%2e%2e/admin"),
        ("encoded-slash", 0, "/public%2F..%2Fadmin/x"),
        ("backslash-escape", 0, "/public/..%5Cadmin"),
        ("double-slash", 0, "//admin//x"),
        ("dot-segment", 0, "/./admin/./x"),
        ("upper-case-rule", 0, "/api/v1/secret"),
        ("upper-case-rule-exact", 0, "/Api/v1/secret"),
        ("email-rule", 7, "/mail/inbox"),
        ("delete-lower", 5, "/reports/1"),
        ("delete-mixed", 6, "/reports/1"),
        ("head", 2, "/reports/1"),
        ("post", 7, "/reports/1"),
        ("public", 0, "/public/app.js"),
        ("public-css", 0, "/assets/site.css"),
        ("public-css-deeper", 0, "/assets/x/site.css"),
        ("healthz", 0, "/healthz"),
        ("healthz-slash", 0, "/healthz/"),
        ("public-with-query", 0, "/admin?x=/public/a"),
        ("encoded-question-mark", 0, "/admin%3F/public/a"),
        ("double-encoding", 0, "/%2561dmin/x"),
        ("non-ascii", 0, "/admin/%C3%A9t%C3%A9"),
    ];
    for (name, method, path) in paths {
        let mut bytes = vec![*method];
        bytes.extend_from_slice(path.as_bytes());
        add(t, name, bytes);
    }
}
