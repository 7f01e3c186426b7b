//! What a token says about a user, per granted scope (Trousseau's three tiers). The same claims go
//! into the ID token and the userinfo answer.

use serde_json::{json, Map, Value};

use super::users::DevUser;

/// Authentik's default authentication context class.
const ACR: &str = "goauthentik.io/providers/oauth2/default";

/// `sub` plus the claims `scopes` grant: `email` → email, email_verified; `profile` → name,
/// given_name, family_name, picture (empty string when unset, as Trousseau sends it);
/// `trousseau:context` → trousseau_user_id, locale; `trousseau:organization` → organizations.
pub(super) fn user_claims(user: &DevUser, scopes: &[String]) -> Map<String, Value> {
    let has = |scope: &str| scopes.iter().any(|s| s == scope);
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(user.sub));
    if has("email") {
        claims.insert("email".into(), json!(user.email));
        claims.insert("email_verified".into(), json!(true));
    }
    if has("profile") {
        claims.insert("name".into(), json!(user.name));
        claims.insert("given_name".into(), json!(user.given_name));
        claims.insert("family_name".into(), json!(user.family_name));
        claims.insert("picture".into(), json!(user.picture));
    }
    if has("trousseau:context") {
        claims.insert("trousseau_user_id".into(), json!(user.trousseau_user_id));
        claims.insert("locale".into(), json!(user.locale));
    }
    if has("trousseau:organization") {
        claims.insert("organizations".into(), json!(user.organizations));
    }
    claims
}

/// Everything an ID token needs besides the user.
pub(super) struct IdTokenContext<'a> {
    pub(super) issuer: &'a str,
    pub(super) client_id: &'a str,
    pub(super) now: i64,
    pub(super) ttl_secs: i64,
    pub(super) auth_time: i64,
    pub(super) sid: &'a str,
    /// Only on the first ID token of a grant, and only if the authorization request had one.
    pub(super) nonce: Option<&'a str>,
    pub(super) access_token: &'a str,
}

/// The ID token's claims: iss, sub, aud, exp, iat, auth_time, acr, amr, nonce (if any), at_hash,
/// sid, azp, then the scope claims.
pub(super) fn id_token_claims(
    user: &DevUser,
    scopes: &[String],
    ctx: &IdTokenContext<'_>,
) -> Value {
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(ctx.issuer));
    claims.insert("sub".into(), json!(user.sub));
    claims.insert("aud".into(), json!(ctx.client_id));
    claims.insert("exp".into(), json!(ctx.now.saturating_add(ctx.ttl_secs)));
    claims.insert("iat".into(), json!(ctx.now));
    claims.insert("auth_time".into(), json!(ctx.auth_time));
    claims.insert("acr".into(), json!(ACR));
    claims.insert("amr".into(), json!(["pwd"]));
    if let Some(nonce) = ctx.nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    claims.insert("at_hash".into(), json!(at_hash(ctx.access_token)));
    claims.insert("sid".into(), json!(ctx.sid));
    claims.insert("azp".into(), json!(ctx.client_id));
    claims.extend(user_claims(user, scopes));
    Value::Object(claims)
}

/// OIDC Core §3.1.3.6: base64url of the left half of SHA-256 of the access token.
fn at_hash(access_token: &str) -> String {
    use base64::Engine as _;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
}
