//! API clients with a Trousseau access token (`Authorization: Bearer …`), opt-in with
//! `api.bearer: userinfo`.
//!
//! Trousseau's access tokens are opaque, so the only way to know who holds one is to ask its
//! userinfo endpoint. Answers are cached (moka) so an API client costs one userinfo call per token
//! per minute at most: valid tokens for [`VALID_TTL`] (Trousseau's tokens live 5 minutes, so a
//! revoked token keeps working here for at most that long), refused ones for [`INVALID_TTL`].
//! Concurrent requests with the same new token share one call.

use std::sync::Arc;
use std::time::Duration;

use crate::identity::Identity;
use crate::oidc::{now_secs, Oidc, OidcError};
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

/// Resolves bearer tokens to identities through Trousseau's userinfo endpoint.
pub struct BearerAuth {
    oidc: Arc<Oidc>,
    valid: moka::future::Cache<[u8; 32], Arc<Identity>>,
    invalid: moka::sync::Cache<[u8; 32], ()>,
}

impl BearerAuth {
    /// A resolver asking `oidc`'s userinfo endpoint.
    pub fn new(oidc: Arc<Oidc>) -> BearerAuth {
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
            .try_get_with(key, async move { oidc.userinfo(&token_owned).await.map(Arc::new) })
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
                    refresh_token: None,
                    access_token: Some(token.to_string()),
                    id_token: None,
                }))
            }
            Err(e) => match *e {
                OidcError::Rejected { .. } | OidcError::Protocol(_) => {
                    self.invalid.insert(key, ());
                    BearerOutcome::Invalid
                }
                _ => BearerOutcome::Unavailable,
            },
        }
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
