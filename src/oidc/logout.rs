//! Back-channel logout tokens: verified against Trousseau's keys, with the checks OpenID Connect
//! Back-Channel Logout 1.0 asks for (event, no nonce, fresh `iat`, `sid` or `sub`), and the
//! rate-limited log of refusals.

use super::*;

/// The event member every back-channel logout token carries.
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How old a logout token's `iat` may be.
const LOGOUT_TOKEN_MAX_AGE: u64 = 600;

/// How often a refused back-channel logout is written to the log, at most.
pub(super) const LOGOUT_REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The log of refused back-channel logouts: one WARN line at once, then at most one per
/// [`LOGOUT_REFUSAL_LOG_INTERVAL`], saying how many more were refused meanwhile. A refusal is the
/// sender's fault (a 400 for it), and anyone can POST tokens, so they must not flood the log.
pub struct RefusalLog {
    budget: crate::logging::LogBudget,
}

impl RefusalLog {
    /// A log writing at most one line per `interval`.
    pub fn new(interval: Duration) -> RefusalLog {
        RefusalLog { budget: crate::logging::LogBudget::every(interval) }
    }

    /// Records one refused logout from `client` (its address), writing the line if it is time.
    pub fn refused(&self, client: std::net::IpAddr, reason: &dyn std::fmt::Display) {
        if let Some(meanwhile) = self.budget.take() {
            tracing::warn!(
                client = %client,
                reason = %reason,
                refused_meanwhile = meanwhile,
                "back-channel logout refused (answered 400): the sender's logout token is not acceptable"
            );
        }
    }
}

/// What a verified back-channel logout token asks to end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutRequest {
    /// Trousseau session to end, when given.
    pub sid: Option<String>,
    /// User whose sessions end, when given (and no `sid`).
    pub sub: Option<String>,
    /// The token's id (replay protection).
    pub jti: String,
}

/// Why a logout token was refused (each is a 400 for the IdP).
#[derive(Debug, thiserror::Error)]
pub enum LogoutTokenError {
    /// Not a compact JWS, or not JSON inside.
    #[error("malformed logout token: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with Trousseau's keys.
    #[error("logout token signature: {0}")]
    Signature(String),
    /// A claim is missing or wrong.
    #[error("logout token claims: {0}")]
    Claims(&'static str),
    /// The header asks for something we do not do (`crit`, RFC 7515 §4.1.11).
    #[error("logout token header: {0}")]
    Header(&'static str),
    /// The provider is not loaded.
    #[error(transparent)]
    Oidc(#[from] OidcError),
}

impl Oidc {
    /// Verifies a back-channel logout token (OpenID Connect Back-Channel Logout 1.0 §2.6):
    /// signature with Trousseau's JWKS (re-fetched once on an unknown `kid`), `iss`, `aud`, `iat`
    /// window, optional `exp`, the `events` member, `sid` and/or `sub`, and no `nonce`. `typ` may be
    /// `logout+jwt` or `JWT` (Authentik). Replay of `jti` is the caller's check.
    pub async fn verify_logout_token(&self, token: &str) -> Result<LogoutRequest, LogoutTokenError> {
        use base64::Engine as _;
        use openidconnect::JsonWebKey as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(LogoutTokenError::Malformed("not a compact JWS"));
        };
        let header: serde_json::Value = b64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(LogoutTokenError::Malformed("header"))?;
        let payload = b64.decode(p).map_err(|_| LogoutTokenError::Malformed("payload"))?;
        let signature = b64.decode(s).map_err(|_| LogoutTokenError::Malformed("signature"))?;
        // RFC 7515 §4.1.11: every extension `crit` lists must be understood, and we understand
        // none; refused before any key is looked up (or fetched).
        if header.get("crit").is_some() {
            return Err(LogoutTokenError::Header("crit names extensions this relying party does not support"));
        }
        if let Some(typ) = header.get("typ").and_then(|t| t.as_str()) {
            if !typ.eq_ignore_ascii_case("logout+jwt") && !typ.eq_ignore_ascii_case("JWT") {
                return Err(LogoutTokenError::Claims("typ is neither logout+jwt nor JWT"));
            }
        }
        let alg: CoreJwsSigningAlgorithm = serde_json::from_value(header["alg"].clone())
            .map_err(|_| LogoutTokenError::Signature("unknown alg".into()))?;
        if !ALLOWED_ALGS.contains(&alg) {
            return Err(LogoutTokenError::Signature("algorithm not allowed".into()));
        }
        let kid = header.get("kid").and_then(|k| k.as_str()).map(String::from);
        let message = format!("{h}.{p}");
        let provider = self.provider()?;
        let verify = |jwks: &CoreJsonWebKeySet| -> Result<bool, String> {
            let candidates: Vec<&CoreJsonWebKey> = jwks
                .keys()
                .iter()
                .filter(|k| kid.is_none() || k.key_id().map(|id| id.as_str()) == kid.as_deref())
                .collect();
            if candidates.is_empty() {
                return Ok(false);
            }
            if candidates.iter().any(|k| k.verify_signature(&alg, message.as_bytes(), &signature).is_ok()) {
                Ok(true)
            } else {
                Err("does not verify".into())
            }
        };
        let jwks = provider.jwks.read().unwrap_or_else(|p| p.into_inner()).clone();
        let found = match verify(&jwks).map_err(LogoutTokenError::Signature)? {
            true => true,
            false => {
                self.refetch_jwks(&provider).await.map_err(|e| LogoutTokenError::Signature(e.to_string()))?;
                let jwks = provider.jwks.read().unwrap_or_else(|p| p.into_inner()).clone();
                verify(&jwks).map_err(LogoutTokenError::Signature)?
            }
        };
        if !found {
            return Err(LogoutTokenError::Signature("no key matches its kid".into()));
        }

        // Typed once signed (§2.6: the signature first, then the claims); a claim repeated, missing
        // or of another type is refused here.
        // A JSON object only: serde's derived structs would also read an array, field by field.
        if !payload.trim_ascii_start().starts_with(b"{") {
            return Err(LogoutTokenError::Malformed("payload"));
        }
        let claims: LogoutClaims = serde_json::from_slice(&payload).map_err(|_| {
            LogoutTokenError::Claims("not the claims of a logout token (one is missing, repeated or of the wrong type)")
        })?;
        logout_claims(&claims, provider.metadata.issuer().as_str(), &self.settings.client_id, now_secs())
    }
}

/// The claims of a back-channel logout token (Back-Channel Logout 1.0 §2.4), as sent.
#[derive(Debug, Deserialize)]
struct LogoutClaims {
    iss: String,
    aud: Audience,
    iat: u64,
    /// Checked when present. Back-Channel Logout 1.0 (final) makes it required, but its drafts
    /// did not and IdPs built on them omit it; `iat` bounds the token's age either way
    /// ([`LOGOUT_TOKEN_MAX_AGE`]), and refusing would end no session at all.
    exp: Option<u64>,
    events: serde_json::Map<String, serde_json::Value>,
    /// Must be absent: a logout token with a `nonce`, even `null`, could pass for an ID token.
    #[serde(default)]
    nonce: Present,
    sid: Option<String>,
    sub: Option<String>,
    jti: String,
}

/// `aud`: one audience or several (RFC 7519 §4.1.3).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn names(&self, client_id: &str) -> bool {
        match self {
            Audience::One(aud) => aud == client_id,
            Audience::Many(list) => list.iter().any(|aud| aud == client_id),
        }
    }
}

/// Whether a member is there at all, whatever its value (`null` included).
#[derive(Debug, Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

/// The claims a back-channel logout token must carry (OpenID Connect Back-Channel Logout 1.0
/// §2.4, §2.6), checked once its signature is: our issuer and client, a fresh `iat`, the logout
/// event, no `nonce`, `sid` or `sub`, and a `jti`.
fn logout_claims(claims: &LogoutClaims, issuer: &str, client_id: &str, now: u64) -> Result<LogoutRequest, LogoutTokenError> {
    if claims.iss != issuer {
        return Err(LogoutTokenError::Claims("iss is not our issuer"));
    }
    if !claims.aud.names(client_id) {
        return Err(LogoutTokenError::Claims("aud is not our client_id"));
    }
    if claims.iat > now + CLOCK_SKEW.as_secs() || claims.iat.saturating_add(LOGOUT_TOKEN_MAX_AGE) < now {
        return Err(LogoutTokenError::Claims("iat outside the accepted window"));
    }
    if claims.exp.is_some_and(|exp| exp.saturating_add(CLOCK_SKEW.as_secs()) < now) {
        return Err(LogoutTokenError::Claims("expired"));
    }
    if !claims.events.get(BACKCHANNEL_EVENT).is_some_and(|e| e.is_object()) {
        return Err(LogoutTokenError::Claims("events member missing"));
    }
    if claims.nonce.0 {
        return Err(LogoutTokenError::Claims("nonce must not be present"));
    }
    let named = |value: &Option<String>| value.clone().filter(|s| !s.is_empty());
    let (sid, sub) = (named(&claims.sid), named(&claims.sub));
    if sid.is_none() && sub.is_none() {
        return Err(LogoutTokenError::Claims("neither sid nor sub"));
    }
    if claims.jti.is_empty() {
        return Err(LogoutTokenError::Claims("jti missing"));
    }
    Ok(LogoutRequest { sid, sub, jti: claims.jti.clone() })
}
