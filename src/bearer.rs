//! API clients with a Trousseau access token (`Authorization: Bearer …`), opt-in with
//! `api.bearer: userinfo`.
//!
//! Trousseau's access tokens mean nothing to us without Trousseau, so the only way to know about
//! one is to ask it. Its userinfo endpoint is shared by every application of the same Trousseau
//! and accepts their tokens too, so when discovery advertises a token introspection endpoint
//! (RFC 7662) a token is valid only if introspection says it is active *and* was issued to our
//! client (`client_id`, or `aud`), and userinfo then names the same `sub`. Without an
//! introspection endpoint, userinfo alone decides (and a warning says so once discovery has
//! loaded).
//!
//! Every new token costs Trousseau a call, and anyone can send tokens, so before asking:
//! - a token that cannot be Trousseau's is refused on its shape alone ([`plausible_token`]);
//! - this replica checks at most `api.introspections_per_second` new tokens a second (a token
//!   bucket holding as many) and `api.introspections_in_flight` at once; beyond, 503 with
//!   `Retry-After` ([`BearerOutcome::Throttled`]). Cached tokens never count, so clients whose
//!   tokens are known keep working through a flood of made-up ones.
//!
//! Answers are cached (moka) so an API client costs one introspection and one userinfo call per
//! token per minute at most: valid tokens for [`VALID_TTL`] (Trousseau's tokens live 5 minutes, so
//! a token Trousseau revokes keeps working here for at most that long), refused ones for
//! [`INVALID_TTL`]. Concurrent requests with the same new token share one check. A back-channel
//! logout ends bearer identities too: each carries Trousseau's `sid` and when its session began
//! (from introspection), which the caller checks against the revocations on every request, and
//! [`BearerAuth::forget_sessions`] drops the matching cache entries at once.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::config::BearerLimits;
use crate::identity::Identity;
use crate::oidc::{Oidc, OidcError};
use crate::util::clock::now_secs;
use crate::util::hash::sha256;
use crate::session::Session;

/// How long a token Trousseau accepted is trusted without asking again.
pub const VALID_TTL: Duration = Duration::from_secs(60);

/// How long a token Trousseau refused is refused without asking again.
pub const INVALID_TTL: Duration = Duration::from_secs(10);

/// Shortest token considered: 120 bits of randomness in base64. Trousseau's are far longer (the
/// dev IdP's 43 characters; Authentik's JWTs hundreds).
pub const MIN_TOKEN_LEN: usize = 20;

/// Longest token considered. Authentik's access tokens are JWTs that carry the ID token's claims
/// (organizations included), so they grow with the user; 16 KiB leaves room for hundreds of
/// organizations and is still far below what a header may carry.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// How far in the past a JWT-shaped token's `exp` may be before we stop asking (clock skew).
const EXPIRY_SKEW_SECS: u64 = 60;

/// At most one "throttled" log line per this interval.
const THROTTLE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What a bearer token turned out to be.
#[derive(Debug)]
pub enum BearerOutcome {
    /// A valid token: an ephemeral session for this request.
    Valid(Box<Session>),
    /// Trousseau refused it, or it cannot be one of Trousseau's.
    Invalid,
    /// Trousseau cannot be asked right now.
    Unavailable,
    /// Too many new tokens to check right now (`api.introspections_*`): retry after this long.
    Throttled(Duration),
}

/// What a check found out about a token, cached for [`VALID_TTL`].
struct Checked {
    identity: Identity,
    /// Trousseau's session of the token, when introspection says.
    sid: Option<String>,
    /// When the session behind the token began (unix seconds): introspection's `auth_time` (or
    /// `iat`), else when we first checked it.
    since: u64,
}

/// Why a check gave no identity.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    /// Trousseau refused the token, could not be asked, or answered oddly.
    #[error(transparent)]
    Oidc(#[from] OidcError),
    /// Not asked: the cap on checks is reached; retry after this long.
    #[error("too many bearer token checks right now")]
    Throttled(Duration),
}

/// Resolves bearer tokens to identities through Trousseau's introspection and userinfo endpoints.
pub struct BearerAuth {
    oidc: Arc<Oidc>,
    valid: moka::future::Cache<[u8; 32], Arc<Checked>>,
    invalid: moka::sync::Cache<[u8; 32], ()>,
    limiter: Arc<CheckLimiter>,
}

impl BearerAuth {
    /// A resolver asking `oidc`'s introspection and userinfo endpoints, at most as often as
    /// `limits` allow. Once discovery has loaded, it warns if Trousseau advertises no
    /// introspection endpoint.
    pub fn new(oidc: Arc<Oidc>, limits: BearerLimits) -> BearerAuth {
        warn_without_introspection(&oidc);
        BearerAuth {
            oidc,
            valid: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(VALID_TTL)
                .support_invalidation_closures()
                .build(),
            invalid: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(INVALID_TTL).build(),
            limiter: Arc::new(CheckLimiter::new(limits)),
        }
    }

    /// A resolver for a reloaded configuration (`oidc` with its new settings): the checks already
    /// made are kept (they are Trousseau's answers about the tokens, not about our settings), and
    /// so is the cap on new ones — its bucket and the checks in progress — unless `limits`
    /// changed it; then the new cap starts afresh (checks still running under the old one end
    /// within `oidc.timeout`). The introspection warning is not repeated.
    pub fn succeed(&self, oidc: Arc<Oidc>, limits: BearerLimits) -> BearerAuth {
        BearerAuth { oidc, valid: self.valid.clone(), invalid: self.invalid.clone(), limiter: CheckLimiter::carried(&self.limiter, limits) }
    }

    /// The token of an `Authorization: Bearer …` header, if that is what the header holds.
    pub fn token(header: &http::HeaderValue) -> Option<&str> {
        let text = header.to_str().ok()?;
        let (scheme, token) = text.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    }

    /// Who holds this token.
    pub async fn resolve(&self, token: &str) -> BearerOutcome {
        let key = sha256(token.as_bytes());
        // Known tokens first: neither the shape check nor the cap applies to them.
        if let Some(checked) = self.valid.get(&key).await {
            return BearerOutcome::Valid(Box::new(session_of(&key, &checked, token)));
        }
        if self.invalid.contains_key(&key) {
            return BearerOutcome::Invalid;
        }
        if !plausible_token(token, now_secs()) {
            tracing::debug!("bearer token refused without asking Trousseau: it cannot be one of Trousseau's tokens");
            return BearerOutcome::Invalid;
        }
        let (oidc, limiter) = (&self.oidc, &self.limiter);
        let result = self
            .valid
            .try_get_with(key, async move {
                let _permit = limiter.admit().map_err(CheckError::Throttled)?;
                Ok::<_, CheckError>(Arc::new(check(oidc, token).await?))
            })
            .await;
        match result {
            Ok(checked) => BearerOutcome::Valid(Box::new(session_of(&key, &checked, token))),
            Err(e) => match &*e {
                CheckError::Throttled(retry_after) => BearerOutcome::Throttled(*retry_after),
                CheckError::Oidc(OidcError::Rejected { error, .. }) if error == "invalid_client" => {
                    // Our own credentials are refused: no token can be checked; not the client's fault.
                    tracing::error!(error = %e, "token introspection refused our client credentials (oidc.client_id / client_secret)");
                    BearerOutcome::Unavailable
                }
                CheckError::Oidc(e @ (OidcError::Rejected { .. } | OidcError::Protocol(_))) => {
                    if let OidcError::Protocol(text) = e {
                        tracing::debug!(error = %text, "a bearer token check got an unexpected answer from Trousseau");
                    }
                    self.invalid.insert(key, ());
                    BearerOutcome::Invalid
                }
                CheckError::Oidc(_) => BearerOutcome::Unavailable,
            },
        }
    }

    /// Forgets a token found revoked (back-channel logout) and refuses it for [`INVALID_TTL`].
    pub async fn forget(&self, token: &str) {
        let key = sha256(token.as_bytes());
        self.invalid.insert(key, ());
        self.valid.invalidate(&key).await;
    }

    /// Checks `token` with Trousseau again, whatever the cache holds (concurrent checks still
    /// share one call): for a long response whose last check is [`VALID_TTL`] old.
    pub async fn recheck(&self, token: &str) -> BearerOutcome {
        self.valid.invalidate(&sha256(token.as_bytes())).await;
        self.resolve(token).await
    }

    /// Drops every cached identity of Trousseau session `sid`, or of user `sub` whose session
    /// began at or before `at` (unix seconds): a back-channel logout arrived for them.
    pub fn forget_sessions(&self, sid: Option<&str>, sub: Option<&str>, at: u64) {
        let (sid, sub) = (sid.map(String::from), sub.map(String::from));
        let predicate = move |_: &[u8; 32], checked: &Arc<Checked>| match (&sid, &sub) {
            (Some(sid), _) => checked.sid.as_deref() == Some(sid.as_str()),
            (None, Some(sub)) => checked.identity.sub == *sub && checked.since <= at,
            (None, None) => false,
        };
        if let Err(e) = self.valid.invalidate_entries_if(predicate) {
            // Only when the cache was built without closure support, which `new` never does; the
            // per-request revocation check still refuses these identities.
            tracing::warn!(error = %e, "could not drop cached bearer identities after a back-channel logout");
        }
    }
}

/// The ephemeral session of one request made with a checked token.
fn session_of(key: &[u8; 32], checked: &Checked, token: &str) -> Session {
    let now = now_secs();
    Session {
        id: format!("bearer-{}", hex(&key[..12])),
        identity: checked.identity.clone(),
        org: None,
        sid: checked.sid.clone(),
        created_at: checked.since,
        updated_at_ms: 0,
        expires_at: now + VALID_TTL.as_secs(),
        token_lifetime: 0,
        refresh_token: None,
        access_token: Some(token.to_string()),
        id_token: None,
        organizations_aside: None,
    }
}

/// Whether `token` could be one of Trousseau's access tokens; anything else is refused without a
/// call. Deliberately tolerant — it must never refuse a real token:
/// - [`MIN_TOKEN_LEN`] to [`MAX_TOKEN_LEN`] bytes;
/// - without a dot, an opaque token: RFC 6750's `b64token` alphabet (letters, digits, `-._~+/`,
///   then `=` padding only at the end), which covers base64, base64url, hex and Authentik's random
///   ids (the dev IdP's tokens are 43 characters of base64url);
/// - with dots, a JOSE token, which is what Authentik (behind Trousseau) issues as access tokens: a
///   JWS (3 base64url parts, header a JSON object with an `alg` other than `none`, payload a JSON
///   object whose `exp`, if a number, is not past by more than a minute) or a JWE (5 base64url
///   parts, header a JSON object with `alg` and `enc`). Nothing here is trusted for access — the
///   signature is Trousseau's to check, through introspection; the shape only spares it the
///   tokens that cannot be its own.
pub fn plausible_token(token: &str, now: u64) -> bool {
    if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) {
        return false;
    }
    if !token.contains('.') {
        let body = token.trim_end_matches('=');
        return !body.is_empty()
            && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'+' | b'/'));
    }
    // Counted before splitting: a token of thousands of dots costs one pass, not a list.
    if !matches!(memchr::memchr_iter(b'.', token.as_bytes()).count(), 2 | 4) {
        return false;
    }
    let parts: Vec<&str> = token.split('.').collect();
    let base64url = |part: &str| part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if parts.iter().any(|p| !base64url(p)) {
        return false;
    }
    let json_object = |part: &str| -> Option<serde_json::Map<String, serde_json::Value>> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            serde_json::Value::Object(map) => Some(map),
            _ => None,
        }
    };
    let Some(header) = json_object(parts[0]) else { return false };
    let alg = header.get("alg").and_then(|a| a.as_str());
    if parts.len() == 5 {
        return alg.is_some() && header.get("enc").is_some_and(|e| e.is_string());
    }
    if alg.is_none_or(|alg| alg.eq_ignore_ascii_case("none")) || parts[2].is_empty() {
        return false;
    }
    let Some(payload) = json_object(parts[1]) else { return false };
    payload.get("exp").and_then(|e| e.as_u64()).is_none_or(|exp| exp.saturating_add(EXPIRY_SKEW_SECS) >= now)
}

/// The cap on token checks this replica sends Trousseau: a token bucket refilling
/// `per_second` a second and holding as many, plus at most `in_flight` checks at once. A check
/// that finds either exhausted is not made (no queueing: the client is told when to retry).
struct CheckLimiter {
    limits: BearerLimits,
    per_second: f64,
    bucket: Mutex<Bucket>,
    in_flight: tokio::sync::Semaphore,
    throttled: Mutex<ThrottleLog>,
}

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

struct ThrottleLog {
    last_line: Option<Instant>,
    meanwhile: u64,
}

impl CheckLimiter {
    fn new(limits: BearerLimits) -> CheckLimiter {
        let per_second = f64::from(limits.per_second.max(1));
        CheckLimiter {
            limits,
            per_second,
            bucket: Mutex::new(Bucket { tokens: per_second, refilled_at: Instant::now() }),
            in_flight: tokio::sync::Semaphore::new(limits.in_flight.max(1) as usize),
            throttled: Mutex::new(ThrottleLog { last_line: None, meanwhile: 0 }),
        }
    }

    /// The cap for a reloaded configuration: this one, bucket and checks in progress, while
    /// `limits` are the same; a fresh one when they changed.
    fn carried(this: &Arc<CheckLimiter>, limits: BearerLimits) -> Arc<CheckLimiter> {
        if this.limits == limits { Arc::clone(this) } else { Arc::new(CheckLimiter::new(limits)) }
    }

    /// A permit for one check (held until it ends), or how long to wait before trying again.
    fn admit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Duration> {
        let Ok(permit) = self.in_flight.try_acquire() else {
            return Err(self.throttled(Duration::from_secs(1)));
        };
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.refilled_at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.per_second);
        bucket.refilled_at = now;
        if bucket.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second);
            drop(bucket);
            return Err(self.throttled(wait));
        }
        bucket.tokens -= 1.0;
        Ok(permit)
    }

    /// Notes one refused check (a WARN line at most every [`THROTTLE_LOG_INTERVAL`]) and gives the
    /// `Retry-After`, in whole seconds, at least one.
    fn throttled(&self, wait: Duration) -> Duration {
        let now = Instant::now();
        let mut log = self.throttled.lock().unwrap_or_else(|p| p.into_inner());
        if log.last_line.is_none_or(|at| now.duration_since(at) >= THROTTLE_LOG_INTERVAL) {
            let meanwhile = std::mem::take(&mut log.meanwhile);
            log.last_line = Some(now);
            drop(log);
            tracing::warn!(
                throttled_meanwhile = meanwhile,
                "api.introspections_per_second / _in_flight reached: new bearer tokens get 503 until Trousseau may be asked again"
            );
        } else {
            log.meanwhile += 1;
        }
        Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64)
    }
}

/// The refusal of a token Trousseau knows but that is not for us (or not live).
fn refused() -> OidcError {
    OidcError::Rejected { error: "invalid_token".into(), description: None }
}

/// Who holds `token`: introspection first when Trousseau advertises it (active, issued to our
/// client), then userinfo for the identity (same `sub`). Without introspection, userinfo alone.
async fn check(oidc: &Oidc, token: &str) -> Result<Checked, OidcError> {
    let now = now_secs();
    if oidc.introspection_endpoint().is_none() {
        // Also the path while discovery has not loaded: userinfo then answers `NotReady`.
        let identity = oidc.userinfo(token).await?;
        return Ok(Checked { identity, sid: None, since: now });
    }
    let introspection = oidc.introspect(token).await?;
    if !introspection.active {
        tracing::debug!("bearer token refused: introspection says it is not active");
        return Err(refused());
    }
    if !introspection.for_us {
        tracing::info!("bearer token refused: Trousseau issued it to another application");
        return Err(refused());
    }
    let identity = oidc.userinfo(token).await?;
    if introspection.sub.as_deref().is_some_and(|sub| sub != identity.sub) {
        tracing::warn!("bearer token refused: introspection and userinfo name different users");
        return Err(refused());
    }
    // A session cannot begin in the future; a clock ahead of ours must not dodge a logout by `sub`.
    let since = introspection.since.unwrap_or(now).min(now);
    Ok(Checked { identity, sid: introspection.sid, since })
}

/// Once discovery has loaded (checked every half second, for as long as `oidc` lives), warns if
/// Trousseau advertises no introspection endpoint: userinfo alone cannot tell which application a
/// token was issued to. Nothing happens outside a Tokio runtime.
fn warn_without_introspection(oidc: &Arc<Oidc>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let oidc: Weak<Oidc> = Arc::downgrade(oidc);
    runtime.spawn(async move {
        loop {
            {
                let Some(oidc) = oidc.upgrade() else { return };
                if oidc.is_ready() {
                    if oidc.introspection_endpoint().is_none() {
                        tracing::warn!(
                            issuer = %oidc.issuer(),
                            "api.bearer: userinfo: Trousseau does not advertise token introspection, so bearer \
                             tokens are checked with userinfo only, which accepts access tokens issued to other \
                             applications of the same Trousseau"
                        );
                    }
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn trousseau_shaped_tokens_pass_and_the_rest_is_refused_on_sight() {
        let now = 1_800_000_000;
        let jws = |header: &str, payload: &str| format!("{}.{}.{}", b64(header), b64(payload), "c2lnbmF0dXJlLWJ5dGVz");
        let good = [
            // The dev IdP's: 32 random bytes, base64url.
            "q0Zr3m8XjK1yLw2vB7nC4tD9eF6gH5iJ0kL3mN8oP1Q".to_string(),
            // Authentik's random ids (letters and digits), hex, base64 with padding.
            "a".repeat(40) + &"Z9".repeat(44),
            "0123456789abcdef0123456789abcdef".into(),
            "dGVzdC10b2tlbi13aXRoLXBhZGRpbmc+/w==".into(),
            // Authentik's JWT access tokens (RS256 with the provider key, or HS256).
            jws(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#, &format!(r#"{{"sub":"x","exp":{},"azp":"app"}}"#, now + 300)),
            jws(r#"{"alg":"HS256","typ":"JWT"}"#, r#"{"sub":"x"}"#),
            // Just expired is still asked about (clock skew).
            jws(r#"{"alg":"ES256"}"#, &format!(r#"{{"exp":{}}}"#, now - 30)),
            // Encrypted (a provider with an encryption key).
            format!("{}.{}.{}.{}.{}", b64(r#"{"alg":"RSA-OAEP-256","enc":"A256GCM"}"#), "a2V5", "aXY", "Y2lwaGVy", "dGFn"),
        ];
        for token in &good {
            assert!(plausible_token(token, now), "{token}");
        }
        let bad = [
            String::new(),
            "short".into(),
            "garbage".into(),
            "x".repeat(MAX_TOKEN_LEN + 1),
            "has spaces in the middle of it ok".into(),
            "non-ascii-ééééééééééééééééééé".into(),
            "padding=in=the=middle=of=the=token".into(),
            "=========================".into(),
            "not.a.token.at.all.really".into(),
            ".".repeat(MAX_TOKEN_LEN),
            "two.parts-onlyxxxxxxxxxxxxxxx".into(),
            jws(r#"{"alg":"none"}"#, r#"{"sub":"x"}"#),
            format!("{}.{}.", b64(r#"{"alg":"RS256"}"#), b64(r#"{"sub":"x"}"#)),
            jws(r#"{"typ":"JWT"}"#, r#"{"sub":"x"}"#),
            jws(r#"["alg","RS256"]"#, r#"{"sub":"x"}"#),
            jws(r#"{"alg":"RS256"}"#, "not json"),
            jws(r#"{"alg":"RS256"}"#, &format!(r#"{{"exp":{}}}"#, now - 3600)),
            format!("{}.{}.{}.{}.{}", b64(r#"{"alg":"RSA-OAEP-256"}"#), "a2V5", "aXY", "Y2lwaGVy", "dGFn"),
        ];
        for token in &bad {
            assert!(!plausible_token(token, now), "{token}");
        }
    }

    #[test]
    fn a_reload_keeps_the_check_limiter_unless_its_limits_change() {
        let limits = BearerLimits { per_second: 3, in_flight: 1 };
        let limiter = Arc::new(CheckLimiter::new(limits));
        let held = limiter.admit().unwrap();
        let same = CheckLimiter::carried(&limiter, limits);
        assert!(same.admit().is_err(), "the check in progress still counts after the reload");
        drop(held);
        assert_eq!((0..5).filter_map(|_| same.admit().ok()).count(), 2, "and so does the bucket it emptied");
        let other = CheckLimiter::carried(&limiter, BearerLimits { per_second: 10, in_flight: 10 });
        assert_eq!((0..20).filter_map(|_| other.admit().ok()).count(), 10, "new limits, a new cap");
    }

    #[test]
    fn the_check_limiter_lets_a_burst_through_then_the_rate() {
        let limiter = CheckLimiter::new(BearerLimits { per_second: 5, in_flight: 100 });
        let admitted = (0..50).filter_map(|_| limiter.admit().ok()).count();
        assert_eq!(admitted, 5, "a burst of one second's worth");
        let retry = limiter.admit().unwrap_err();
        assert_eq!(retry, Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(450));
        assert!((0..10).filter_map(|_| limiter.admit().ok()).count() >= 2, "refilled at 5 a second");

        let limiter = CheckLimiter::new(BearerLimits { per_second: 100, in_flight: 2 });
        let held: Vec<_> = (0..5).filter_map(|_| limiter.admit().ok()).collect();
        assert_eq!(held.len(), 2, "two at once");
        drop(held);
        assert!(limiter.admit().is_ok(), "a finished check frees its place");
    }
}
