//! API clients with a Trousseau access token (`Authorization: Bearer …`), opt-in with
//! `api.bearer: userinfo`.
//!
//! Trousseau's access tokens are opaque, so the only way to know about one is to ask Trousseau.
//! Its userinfo endpoint is shared by every application of the same Trousseau and accepts their
//! tokens too, so when discovery advertises a token introspection endpoint (RFC 7662) a token is
//! valid only if introspection says it is active *and* was issued to our client (`client_id`, or
//! `aud`), and userinfo then names the same `sub`. Without an introspection endpoint, userinfo
//! alone decides (and a warning says so once discovery has loaded).
//!
//! Answers are cached (moka) so an API client costs one introspection and one userinfo call per
//! token per minute at most: valid tokens for [`VALID_TTL`] (Trousseau's tokens live 5 minutes, so
//! a revoked token keeps working here for at most that long), refused ones for [`INVALID_TTL`].
//! Concurrent requests with the same new token share one check.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::identity::Identity;
use crate::oidc::{now_secs, Oidc, OidcError};
use crate::session::refresh::sha256;
use crate::session::Session;

/// How long a token Trousseau accepted is trusted without asking again.
pub const VALID_TTL: Duration = Duration::from_secs(60);

/// How long a token Trousseau refused is refused without asking again.
pub const INVALID_TTL: Duration = Duration::from_secs(10);

/// What a bearer token turned out to be.
#[derive(Debug)]
pub enum BearerOutcome {
    /// A valid token: an ephemeral session for this request.
    Valid(Box<Session>),
    /// Trousseau refused it (or it is malformed).
    Invalid,
    /// Trousseau cannot be asked right now.
    Unavailable,
}

/// Resolves bearer tokens to identities through Trousseau's introspection and userinfo endpoints.
pub struct BearerAuth {
    oidc: Arc<Oidc>,
    valid: moka::future::Cache<[u8; 32], Arc<Identity>>,
    invalid: moka::sync::Cache<[u8; 32], ()>,
}

impl BearerAuth {
    /// A resolver asking `oidc`'s introspection and userinfo endpoints. Once discovery has loaded,
    /// it warns if Trousseau advertises no introspection endpoint.
    pub fn new(oidc: Arc<Oidc>) -> BearerAuth {
        warn_without_introspection(&oidc);
        BearerAuth {
            oidc,
            valid: moka::future::Cache::builder().max_capacity(100_000).time_to_live(VALID_TTL).build(),
            invalid: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(INVALID_TTL).build(),
        }
    }

    /// The token of an `Authorization: Bearer …` header, if that is what the header holds.
    pub fn token(header: &http::HeaderValue) -> Option<&str> {
        let text = header.to_str().ok()?;
        let (scheme, token) = text.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 4096).then_some(token)
    }

    /// Who holds this token.
    pub async fn resolve(&self, token: &str) -> BearerOutcome {
        let key = sha256(token.as_bytes());
        if self.invalid.contains_key(&key) {
            return BearerOutcome::Invalid;
        }
        let oidc = self.oidc.clone();
        let token_owned = token.to_string();
        let result = self
            .valid
            .try_get_with(key, async move { check(&oidc, &token_owned).await.map(Arc::new) })
            .await;
        match result {
            Ok(identity) => {
                let now = now_secs();
                BearerOutcome::Valid(Box::new(Session {
                    id: format!("bearer-{}", hex(&key[..12])),
                    identity: (*identity).clone(),
                    org: None,
                    sid: None,
                    created_at: now,
                    updated_at_ms: 0,
                    expires_at: now + VALID_TTL.as_secs(),
                    token_lifetime: 0,
                    refresh_token: None,
                    access_token: Some(token.to_string()),
                    id_token: None,
                }))
            }
            Err(e) => match &*e {
                OidcError::Rejected { error, .. } if error == "invalid_client" => {
                    // Our own credentials are refused: no token can be checked; not the client's fault.
                    tracing::error!(error = %e, "token introspection refused our client credentials (oidc.client_id / client_secret)");
                    BearerOutcome::Unavailable
                }
                OidcError::Rejected { .. } | OidcError::Protocol(_) => {
                    if let OidcError::Protocol(text) = &*e {
                        tracing::debug!(error = %text, "a bearer token check got an unexpected answer from Trousseau");
                    }
                    self.invalid.insert(key, ());
                    BearerOutcome::Invalid
                }
                _ => BearerOutcome::Unavailable,
            },
        }
    }
}

/// The refusal of a token Trousseau knows but that is not for us (or not live).
fn refused() -> OidcError {
    OidcError::Rejected { error: "invalid_token".into(), description: None }
}

/// Who holds `token`: introspection first when Trousseau advertises it (active, issued to our
/// client), then userinfo for the identity (same `sub`). Without introspection, userinfo alone.
async fn check(oidc: &Oidc, token: &str) -> Result<Identity, OidcError> {
    if oidc.introspection_endpoint().is_none() {
        // Also the path while discovery has not loaded: userinfo then answers `NotReady`.
        return oidc.userinfo(token).await;
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
    Ok(identity)
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
