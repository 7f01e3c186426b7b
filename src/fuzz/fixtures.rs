//! What every target shares: fixed test keys, a relying party that never touches the network, fresh
//! sealed values and tokens for the corpus markers, and small helpers.
//!
//! The keys here are fuzzing fixtures, published with the source: nothing outside the fuzz targets
//! trusts them.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue, COOKIE};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::PrivateKeyDer;
use serde_json::{json, Value};

use crate::config::OidcSettings;
use crate::identity::{AssertionSettings, Assertions, Identity, Organization, Signer};
use crate::oidc::{LoginState, Oidc, TrousseauMetadata};
use crate::util::clock::now_secs;
use crate::session::cookies::{CookieSettings, RequestCookies, SessionCodec, SESSION_PURPOSE};
use crate::session::seal::{AppBinding, Sealer};
use crate::session::Session;

/// The session secret every target seals and opens with (32 bytes).
pub const SECRET: &[u8; 32] = b"trousseau-proxy fuzzing secret!!";
/// The ES256 key (PKCS#8) the offline relying party trusts and the assertions are signed with.
pub const SIGNING_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgl+okUvAlin1sH8u1
T7CjpcBCcQej8Wc4Kmh1/IJNFtmhRANCAATB6knHbfiJ4Mnbw5Ekh82YwVJA/OON
VUzbJjMbthFbhLkTgPx+T4ypytGhPrvxrigP0zA4oogwMccwWZ7shzcL
-----END PRIVATE KEY-----
";
/// The issuer of the offline relying party (path-based, trailing slash, as Trousseau's).
pub const ISSUER: &str = "https://auth.fuzz.invalid/application/o/fuzz/";
/// Its client id (the `aud` of tokens meant for us).
pub const CLIENT_ID: &str = "fuzz-client";
/// The nonce of the sign-in attempt ID tokens answer (exchange mode).
pub const NONCE: &str = "fuzz-nonce";
/// The user of the refreshed session (refresh mode) and of the marker tokens.
pub const SUB: &str = "fuzz-sub";
/// Trousseau session id of the marker tokens.
pub const SID: &str = "fuzz-sid";
/// The session cookie's base name; secure, so the cookie is `__Host-trousseau_session`.
pub const COOKIE_BASE_NAME: &str = "trousseau_session";
/// The event member of back-channel logout tokens.
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Numeric time claims below this are read as offsets: `now - 2^23 + value` (see [`relative_times`]).
pub const RELATIVE_TIME_LIMIT: u64 = 1 << 24;

/// The application's `public_url` (the assertion's `iss`, and part of what sealed values are bound to).
pub const PUBLIC_URL: &str = "https://app.fuzz.invalid";

/// The sealer of [`SECRET`], bound to this application ([`ISSUER`], [`CLIENT_ID`], [`PUBLIC_URL`]).
pub fn sealer() -> &'static Arc<Sealer> {
    static SEALER: OnceLock<Arc<Sealer>> = OnceLock::new();
    let binding = AppBinding { issuer: ISSUER, client_id: CLIENT_ID, public_url: PUBLIC_URL };
    SEALER.get_or_init(|| Arc::new(Sealer::new(&[SECRET.to_vec()], binding).expect("a 32-byte secret")))
}

/// The session cookie settings: `__Host-trousseau_session`, default chunking (8 × 3800).
pub fn cookie_settings() -> CookieSettings {
    CookieSettings::new(COOKIE_BASE_NAME, true)
}

/// The session codec of [`sealer`] and [`cookie_settings`].
pub fn codec() -> &'static SessionCodec {
    static CODEC: OnceLock<SessionCodec> = OnceLock::new();
    CODEC.get_or_init(|| SessionCodec::new(sealer().clone(), cookie_settings()))
}

/// The key pair of [`SIGNING_KEY_PEM`], for signing tokens with any header.
pub fn key_pair() -> &'static EcdsaKeyPair {
    static PAIR: OnceLock<EcdsaKeyPair> = OnceLock::new();
    PAIR.get_or_init(|| {
        let der = PrivateKeyDer::from_pem_slice(SIGNING_KEY_PEM.as_bytes()).expect("fixture key is PEM");
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_der()).expect("fixture key is P-256")
    })
}

/// The proxy's signer over [`SIGNING_KEY_PEM`]: its `kid` and JWKS are the ones the offline
/// relying party trusts.
pub fn signer() -> &'static Arc<Signer> {
    static SIGNER: OnceLock<Arc<Signer>> = OnceLock::new();
    SIGNER.get_or_init(|| Arc::new(Signer::from_pem(&[SIGNING_KEY_PEM.to_string()]).expect("fixture key loads")))
}

/// Assertions signed by [`signer`], never cached (a one-second TTL disables the cache), so each
/// one is minted from the session it is asked for.
pub fn assertions() -> &'static Assertions {
    static ASSERTIONS: OnceLock<Assertions> = OnceLock::new();
    ASSERTIONS.get_or_init(|| {
        Assertions::new(
            signer().clone(),
            AssertionSettings {
                issuer: PUBLIC_URL.into(),
                audience: CLIENT_ID.into(),
                ttl: Duration::from_secs(1),
            },
        )
    })
}

/// A compact JWS with exactly these header and payload bytes, ES256 with [`key_pair`].
pub fn sign_jws(header: &[u8], payload: &[u8]) -> String {
    let mut jws = URL_SAFE_NO_PAD.encode(header);
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut jws);
    let signature = key_pair().sign(&SystemRandom::new(), jws.as_bytes()).expect("ES256 signing");
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jws);
    jws
}

/// The header [`Signer::sign`] and Trousseau would write, for [`sign_jws`].
pub fn default_header(typ: &str) -> Vec<u8> {
    json!({ "alg": "ES256", "kid": signer().kid(), "typ": typ }).to_string().into_bytes()
}

/// The relying party of [`ISSUER`] / [`CLIENT_ID`] trusting [`signer`]'s key set, offline: it never
/// re-fetches keys, so every call completes without waiting.
pub fn oidc() -> &'static Oidc {
    static OIDC: OnceLock<Oidc> = OnceLock::new();
    OIDC.get_or_init(|| {
        let settings = OidcSettings {
            issuer: ISSUER.into(),
            client_id: CLIENT_ID.into(),
            client_secret: "fuzz-client-secret".into(),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            redirect_uri: "https://app.fuzz.invalid/.trousseau/callback".into(),
            post_logout_redirect_uri: "https://app.fuzz.invalid/".into(),
            ca_file: None,
            timeout: Duration::from_secs(1),
            jwks_refetch_interval: Duration::from_secs(60),
        };
        let discovery = json!({
            "issuer": ISSUER,
            "authorization_endpoint": "https://auth.fuzz.invalid/application/o/authorize/",
            "token_endpoint": "https://auth.fuzz.invalid/application/o/token/",
            "userinfo_endpoint": "https://auth.fuzz.invalid/application/o/userinfo/",
            "end_session_endpoint": "https://auth.fuzz.invalid/application/o/fuzz/end-session/",
            "introspection_endpoint": "https://auth.fuzz.invalid/application/o/introspect/",
            "jwks_uri": "https://auth.fuzz.invalid/application/o/fuzz/jwks/",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "backchannel_logout_supported": true,
        });
        let jwks = serde_json::from_slice(&signer().jwks_json()).expect("the signer's JWKS parses");
        let metadata: TrousseauMetadata = serde_json::from_value::<TrousseauMetadata>(discovery)
            .expect("fixture discovery document parses")
            .set_jwks(jwks);
        Oidc::offline(settings, metadata).expect("offline relying party")
    })
}

/// Runs a future that must complete without waiting (the offline relying party never does I/O).
///
/// # Panics
/// If the future is not ready at once: a decoder tried to reach the network.
pub fn now_or_never<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("an offline decoder waited (tried to reach the network?)"),
    }
}

/// Rewrites the numeric time claims `names` of a claims object that are below
/// [`RELATIVE_TIME_LIMIT`] to `now - 2^23 + value`, so a committed seed says "issued now, expires in
/// five minutes" (`8388608`, `8388908`) forever. Larger numbers and other types are left alone.
pub fn relative_times(claims: &mut Value, names: &[&str], now: u64) {
    let Some(object) = claims.as_object_mut() else { return };
    for name in names {
        if let Some(v) = object.get_mut(*name) {
            if let Some(n) = v.as_u64().filter(|n| *n < RELATIVE_TIME_LIMIT) {
                *v = json!((now + n).saturating_sub(RELATIVE_TIME_LIMIT / 2));
            }
        }
    }
}

/// Splits `data` at the first `0xFF` byte (never part of UTF-8 text): `(before, Some(after))`.
pub fn split_ff(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}

/// One `Cookie:` header per line of `data` (an HTTP/2 client sends one per cookie); lines that are
/// not valid header values are left out, as hyper would have refused them. At most 64 headers.
pub fn cookie_headers(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n').take(64) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, value);
        }
    }
    headers
}

/// A signed-in session as the callback makes it, created at `now`.
pub fn session(now: u64, organizations: usize) -> Session {
    let roles = ["admin", "member", "hr", "accounting"];
    let organizations: Vec<Organization> = (0..organizations)
        .map(|i| Organization {
            id: format!("018cc251-f400-78cc-8e0c-{i:012}"),
            name: format!("Hôtel Le Grand Paris n°{i}"),
            slug: format!("hotel-le-grand-paris-{i}"),
            role: roles[i % roles.len()].into(),
        })
        .collect();
    Session {
        id: "ZnV6ei1zZXNzaW9uLWlkAA".into(),
        org: organizations.first().map(|o| o.id.clone()),
        identity: Identity {
            sub: SUB.into(),
            email: Some("jean.dupont@hotel.example".into()),
            email_verified: Some(true),
            name: Some("Jean Dupont".into()),
            given_name: Some("Jean".into()),
            family_name: Some("Dupont".into()),
            picture: None,
            trousseau_user_id: Some("018cc251-f400-78cc-8e0c-000fe440ee40".into()),
            locale: Some("fr-FR".into()),
            organizations: Some(organizations),
        },
        sid: Some(SID.into()),
        created_at: now,
        updated_at_ms: now * 1000,
        token_lifetime: 300,
        expires_at: now + 300,
        refresh_token: Some("fuzz-refresh-token".into()),
        access_token: None,
        id_token: None,
        organizations_aside: None,
    }
}

/// Claims of an ID token for [`oidc`] (exchange mode: carries [`NONCE`]), issued at `now`.
pub fn id_token_claims(now: u64) -> Value {
    json!({
        "iss": ISSUER, "aud": CLIENT_ID, "sub": SUB, "sid": SID, "nonce": NONCE,
        "iat": now, "exp": now + 300, "auth_time": now,
        "email": "jean.dupont@hotel.example", "email_verified": true,
        "name": "Jean Dupont", "given_name": "Jean", "family_name": "Dupont",
        "trousseau_user_id": "018cc251-f400-78cc-8e0c-000fe440ee40", "locale": "fr-FR",
        "organizations": [
            {"id": "018cc251-f400-78cc-8e0c-000fe440ee40", "name": "Hotel Le Grand Paris", "slug": "hotel-le-grand-paris", "role": "admin"},
            {"id": "018dd362-a511-89dd-9f1d-111ff551ff51", "name": "Hotel Riviera Nice", "slug": "hotel-riviera-nice", "role": "member"}
        ]
    })
}

/// Claims of a back-channel logout token for [`oidc`], issued at `now`.
pub fn logout_token_claims(now: u64) -> Value {
    json!({
        "iss": ISSUER, "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": "fuzz-jti",
        "sid": SID, "sub": SUB, "events": { BACKCHANNEL_EVENT: {} }
    })
}

/// A token endpoint answer carrying `id_token`.
pub fn token_response(id_token: &str) -> Vec<u8> {
    json!({
        "access_token": "fuzz-access-token", "token_type": "Bearer", "expires_in": 300,
        "refresh_token": "fuzz-refresh-token", "id_token": id_token,
    })
    .to_string()
    .into_bytes()
}

/// Fresh values for the corpus markers; remade every minute so none ever expires mid-run.
struct Fresh {
    made: Instant,
    /// `@S@`: a sealed one-cookie session (value only, without the `1.` count).
    session: String,
    /// `@B0@` … `@B2@`: the three chunk values of a sealed big session (the first without count).
    big: Vec<String>,
    /// `@L@`: a sealed login state, state [`login_state`]'s.
    login: String,
    /// `@LT@`: a signed logout token.
    logout_token: String,
    /// `@IT@`: a signed ID token.
    id_token: String,
}

const MARKER_TTL: Duration = Duration::from_secs(60);

fn fresh() -> Arc<Fresh> {
    static FRESH: Mutex<Option<Arc<Fresh>>> = Mutex::new(None);
    let mut guard = FRESH.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = guard.as_ref().filter(|f| f.made.elapsed() < MARKER_TTL) {
        return f.clone();
    }
    let now = now_secs();
    let seal = |s: &Session| sealer().seal(SESSION_PURPOSE, &serde_json::to_vec(s).expect("session JSON"));
    let big_sealed = seal(&session(now, 60));
    let chunk = cookie_settings().chunk_size;
    let big: Vec<String> = big_sealed.as_bytes().chunks(chunk).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    assert_eq!(big.len(), 3, "the big fixture session spans three cookies");
    let made = Arc::new(Fresh {
        made: Instant::now(),
        session: seal(&session(now, 2)),
        big,
        login: sealer().seal(
            crate::session::sessions::LOGIN_STATE_PURPOSE,
            &serde_json::to_vec(&login_state(now)).expect("login state JSON"),
        ),
        logout_token: sign_jws(&default_header("logout+jwt"), logout_token_claims(now).to_string().as_bytes()),
        id_token: sign_jws(&default_header("JWT"), id_token_claims(now).to_string().as_bytes()),
    });
    *guard = Some(made.clone());
    made
}

/// A sign-in attempt started at `now`.
pub fn login_state(now: u64) -> LoginState {
    LoginState {
        state: "ZnV6ei1zdGF0ZS0wMTIzNDU2Nzg5".into(),
        nonce: NONCE.into(),
        pkce_verifier: "ZnV6ei1wa2NlLXZlcmlmaWVyLTAxMjM0NTY3ODlhYmNkZWY".into(),
        return_to: "/reports?year=2024".into(),
        started_at: now,
    }
}

/// `data` with the corpus markers replaced by fresh values: `@S@` (sealed session), `@B0@`–`@B2@`
/// (chunks of a sealed three-cookie session), `@L@` (sealed login state), `@LT@` (logout token),
/// `@IT@` (ID token). Other bytes, and unknown `@…@`, stay as they are.
pub fn expand(data: &[u8]) -> Cow<'_, [u8]> {
    if !data.contains(&b'@') {
        return Cow::Borrowed(data);
    }
    let fresh = fresh();
    let markers: [(&[u8], &str); 7] = [
        (b"@S@", &fresh.session),
        (b"@B0@", &fresh.big[0]),
        (b"@B1@", &fresh.big[1]),
        (b"@B2@", &fresh.big[2]),
        (b"@L@", &fresh.login),
        (b"@LT@", &fresh.logout_token),
        (b"@IT@", &fresh.id_token),
    ];
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    'scan: while let Some(at) = rest.iter().position(|&b| b == b'@') {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at..];
        for (marker, value) in markers {
            if rest.starts_with(marker) {
                out.extend_from_slice(value.as_bytes());
                rest = &rest[marker.len()..];
                continue 'scan;
            }
        }
        out.push(b'@');
        rest = &rest[1..];
    }
    out.extend_from_slice(rest);
    Cow::Owned(out)
}

/// The request cookies of a browser that received these `Set-Cookie` values (name=value only).
pub fn browser_jar(set_cookies: &[HeaderValue]) -> RequestCookies {
    let mut jar: Vec<(String, String)> = Vec::new();
    for value in set_cookies {
        let text = value.to_str().expect("Set-Cookie is ASCII");
        let cookie = cookie::Cookie::parse(text.to_owned()).expect("Set-Cookie parses");
        let removal = cookie.max_age().is_some_and(|age| age.is_zero());
        jar.retain(|(n, _)| n != cookie.name());
        if !removal {
            jar.push((cookie.name().to_owned(), cookie.value().to_owned()));
        }
    }
    let line = jar.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
    let mut headers = HeaderMap::new();
    if !line.is_empty() {
        headers.insert(COOKIE, HeaderValue::from_str(&line).expect("cookie pairs are a header value"));
    }
    RequestCookies::from_headers(&headers)
}

/// Decodes a base64url JWS part as JSON, if it is that.
pub fn jws_part(token: &str, index: usize) -> Option<Value> {
    let part = token.split('.').nth(index)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

/// Percent-decodes a header value made by [`crate::identity::header_value`].
pub fn percent_decode(value: &HeaderValue) -> String {
    let text = value.to_str().expect("identity header values are visible ASCII");
    percent_encoding::percent_decode_str(text).decode_utf8().expect("percent-encoded UTF-8").into_owned()
}
