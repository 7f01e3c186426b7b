//! Targets for the JWTs Trousseau sends: back-channel logout tokens and ID tokens (in the token
//! endpoint's answer), both raw and validly signed with fuzzer-chosen headers and claims. Bearer
//! headers ride along (the token inside is opaque; only its header is parsed here).

use http::HeaderValue;
use serde_json::Value;

use super::fixtures::{self, expand, now_or_never, oidc, split_ff, CLIENT_ID, ISSUER, NONCE, SUB};
use crate::bearer::BearerAuth;
use crate::identity::Organization;
use crate::util::clock::now_secs;

/// Time claims of logout tokens that [`fixtures::relative_times`] rewrites.
const LOGOUT_TIMES: &[&str] = &["iat", "exp", "nbf"];
/// Time claims of ID tokens that [`fixtures::relative_times`] rewrites.
const ID_TOKEN_TIMES: &[&str] = &["iat", "exp", "nbf", "auth_time"];

/// Raw logout tokens: the input is the form body `POST /.trousseau/backchannel-logout` receives
/// (marker `@LT@` is a fresh valid token) and, as is, a token. Properties: an accepted token
/// satisfies Back-Channel Logout 1.0 §2.6 as checked independently here; any input (1 MB of dots,
/// huge headers) is refused in bounded time and memory; `Authorization: Bearer <input>` yields a
/// non-empty token of at most 4096 bytes or none.
pub fn logout_token(data: &[u8]) {
    let data = expand(data);
    let form = String::from_utf8_lossy(&data);
    if let Some(token) = crate::request::query_param(Some(&form), "logout_token") {
        check_logout_token(&token);
    }
    if let Ok(token) = std::str::from_utf8(&data) {
        check_logout_token(token);
    }
    check_bearer(&data);
}

/// Validly signed logout tokens: `header 0xFF claims` (or just claims, under the usual header),
/// signed ES256 with the key the relying party trusts; small numeric `iat`/`exp`/`nbf` are offsets
/// from now ([`fixtures::relative_times`]). Property: accepted only when the claims satisfy §2.6.
pub fn logout_token_claims(data: &[u8]) {
    let (header, claims) = header_and_claims(data, "logout+jwt", LOGOUT_TIMES);
    check_logout_token(&fixtures::sign_jws(&header, &claims));
}

fn check_logout_token(token: &str) {
    let before = now_secs();
    let result = now_or_never(oidc().verify_logout_token(token));
    let after = now_secs();
    let Ok(logout) = result else { return };
    let (header, claims) = verified_parts(token);
    if let Some(typ) = header.get("typ") {
        let typ = typ.as_str().expect("typ is a string").to_ascii_lowercase();
        assert!(typ == "logout+jwt" || typ == "jwt", "typ {typ}");
    }
    check_issuer_and_audience(&claims);
    let iat = claims["iat"].as_u64().expect("iat is a number");
    assert!(iat <= after + 60 && iat + 600 >= before, "iat {iat} outside the window");
    if let Some(exp) = claims.get("exp").filter(|e| !e.is_null()) {
        assert!(exp.as_u64().expect("exp is a number") + 60 >= before, "expired");
    }
    assert!(claims["events"][fixtures::BACKCHANNEL_EVENT].is_object(), "no back-channel event");
    assert!(claims.get("nonce").is_none(), "nonce present");
    assert_eq!(logout.sid.as_deref(), claims["sid"].as_str().filter(|s| !s.is_empty()));
    assert_eq!(logout.sub.as_deref(), claims["sub"].as_str().filter(|s| !s.is_empty()));
    assert!(logout.sid.is_some() || logout.sub.is_some(), "neither sid nor sub");
    assert!(!logout.jti.is_empty() && claims["jti"].as_str() == Some(logout.jti.as_str()));
}

/// Raw ID tokens: the input is the token endpoint's answer when it starts with `{`, else the
/// `id_token` inside a well-formed answer (marker `@IT@` is a fresh valid token). Both the
/// sign-in (nonce) and the refresh (same `sub`) validations run. Properties: an accepted ID token is
/// signed by a trusted key and names us, our nonce or the same user, with claims typed into an
/// identity without empty strings; anything else is refused in bounded time and memory.
pub fn id_token(data: &[u8]) {
    let data = expand(data);
    if data.trim_ascii_start().starts_with(b"{") {
        check_id_token(&data);
    } else {
        check_id_token(&fixtures::token_response(&String::from_utf8_lossy(&data)));
    }
    check_bearer(&data);
}

/// Validly signed ID tokens: `header 0xFF claims` (or just claims), signed ES256 with the trusted
/// key; small numeric time claims are offsets from now. Properties as for [`id_token`].
pub fn id_token_claims(data: &[u8]) {
    let (header, claims) = header_and_claims(data, "JWT", ID_TOKEN_TIMES);
    check_id_token(&fixtures::token_response(&fixtures::sign_jws(&header, &claims)));
}

fn check_id_token(body: &[u8]) {
    for (nonce, expected_sub) in [(Some(NONCE), None), (None, Some(SUB))] {
        let before = now_secs();
        let result = now_or_never(oidc().validate_token_response(body, nonce, expected_sub));
        let after = now_secs();
        let Ok(tokens) = result else { continue };
        let answer: Value = serde_json::from_slice(body).expect("an accepted answer is JSON");
        assert_eq!(answer["id_token"].as_str(), Some(tokens.id_token.as_str()));
        let (_, claims) = verified_parts(&tokens.id_token);
        check_issuer_and_audience(&claims);
        // OpenID Connect Core 3.1.3.7 (6): with several audiences, `azp` must be present and ours.
        // (With one audience `azp` is only a SHOULD, which the openidconnect crate does not check.)
        if claims["aud"].as_array().is_some_and(|a| a.len() > 1) {
            assert_eq!(claims.get("azp").and_then(Value::as_str), Some(CLIENT_ID), "azp with several audiences");
        }
        let exp = claims["exp"].as_f64().expect("exp is a number");
        assert!(exp + 1.0 >= before as f64, "expired ID token accepted");
        if let Some(iat) = claims["iat"].as_f64() {
            assert!(iat <= (after + 61) as f64, "ID token issued in the future accepted");
        }
        match nonce {
            Some(nonce) => assert_eq!(claims["nonce"].as_str(), Some(nonce), "nonce"),
            None => assert_eq!(claims["sub"].as_str(), expected_sub, "refreshed ID token of another user"),
        }

        let identity = &tokens.identity;
        assert_eq!(claims["sub"].as_str(), Some(identity.sub.as_str()));
        assert!(!identity.sub.is_empty(), "empty sub accepted");
        for (name, value) in [
            ("email", &identity.email),
            ("name", &identity.name),
            ("given_name", &identity.given_name),
            ("family_name", &identity.family_name),
            ("picture", &identity.picture),
            ("trousseau_user_id", &identity.trousseau_user_id),
            ("locale", &identity.locale),
        ] {
            assert!(value.as_deref() != Some(""), "{name}: empty string instead of absent");
        }
        assert!(identity.email_verified.is_none() || identity.email.is_some(), "email_verified without email");
        if let Some(email) = &identity.email {
            assert_eq!(claims["email"].as_str(), Some(email.as_str()), "email read from another claim");
        }
        let organizations: Option<Vec<Organization>> =
            claims.get("organizations").and_then(|o| serde_json::from_value(o.clone()).ok());
        assert_eq!(identity.organizations, organizations);
        assert_eq!(tokens.sid.as_deref(), claims.get("sid").and_then(Value::as_str));
    }
}

/// The header and claims of a token the relying party accepted, after checking independently that
/// the signature is the trusted key's (the only key in its key set).
fn verified_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        panic!("an accepted token is not a compact JWS");
    };
    let header = fixtures::jws_part(token, 0).expect("an accepted token has a JSON header");
    assert_eq!(header["alg"].as_str(), Some("ES256"), "only ES256 can verify with the trusted key");
    let signature = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s).expect("base64url signature");
    let public = aws_lc_rs::signature::KeyPair::public_key(fixtures::key_pair());
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED, public.as_ref())
        .verify(format!("{h}.{p}").as_bytes(), &signature)
        .expect("an accepted token is signed by the trusted key");
    let claims = fixtures::jws_part(token, 1).expect("an accepted token has JSON claims");
    assert!(claims.is_object(), "claims are not an object");
    (header, claims)
}

fn check_issuer_and_audience(claims: &Value) {
    assert_eq!(claims["iss"].as_str(), Some(ISSUER), "another issuer");
    let for_us = match &claims["aud"] {
        Value::String(aud) => aud == CLIENT_ID,
        Value::Array(list) => list.iter().any(|a| a.as_str() == Some(CLIENT_ID)),
        _ => false,
    };
    assert!(for_us, "aud does not name us");
}

/// `header 0xFF claims`, or the default header and all of `data` as claims; claims that are a JSON
/// object get their small time claims made relative to now.
fn header_and_claims(data: &[u8], typ: &str, times: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let (header, claims) = match split_ff(data) {
        (header, Some(claims)) => (header.to_vec(), claims),
        (claims, None) => (fixtures::default_header(typ), claims),
    };
    let claims = match serde_json::from_slice::<Value>(claims) {
        Ok(mut value) if value.is_object() => {
            fixtures::relative_times(&mut value, times, now_secs());
            serde_json::to_vec(&value).expect("a JSON value serializes")
        }
        _ => claims.to_vec(),
    };
    (header, claims)
}

/// `Authorization: Bearer <data>`: a non-empty token or none; Trousseau is only asked about a
/// plausible one, of `MIN_TOKEN_LEN..=MAX_TOKEN_LEN` bytes, in bounded time whatever it holds.
fn check_bearer(data: &[u8]) {
    let mut header = b"Bearer ".to_vec();
    header.extend_from_slice(data);
    if let Ok(value) = HeaderValue::from_bytes(&header) {
        if let Some(token) = BearerAuth::token(&value) {
            assert!(!token.is_empty(), "an empty bearer token");
            if crate::bearer::plausible_token(token, now_secs()) {
                let len = token.len();
                assert!((crate::bearer::MIN_TOKEN_LEN..=crate::bearer::MAX_TOKEN_LEN).contains(&len), "a plausible bearer token of {len} bytes");
            }
        }
    }
}
