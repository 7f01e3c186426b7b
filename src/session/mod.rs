//! The user's session: what the proxy needs to serve a request without a network call.
//!
//! A [`Session`] is created at the OIDC callback and travels sealed (AES-256-GCM, key rotation) in
//! the session cookie, split over numbered cookies when it grows ([`cookies`]). It never reaches the
//! upstream: our cookies are removed from `Cookie:` before forwarding.

pub mod cookies;
pub mod redis;
pub mod refresh;
pub mod revocation;
pub mod seal;
pub mod sessions;
pub mod sign_ins;
pub mod store;

use serde::{Deserialize, Serialize};

use crate::claims::Identity;

/// One signed-in user's session. Field names are one letter on the wire to keep the cookie small.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Random id (128 bits, base64url), fixed for the session's life. Keys caches, never secret.
    #[serde(rename = "i")]
    pub id: String,
    /// The user's claims from the latest validated ID token.
    #[serde(rename = "u")]
    pub identity: Identity,
    /// Id of the selected organization, once one is selected.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Trousseau's session id (`sid` claim), matched by back-channel logout.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// When the user signed in (unix seconds): the absolute `max_lifetime` counts from here.
    #[serde(rename = "c")]
    pub created_at: u64,
    /// When the identity last changed (unix milliseconds): cached assertions are keyed by it.
    #[serde(rename = "m")]
    pub updated_at_ms: u64,
    /// When the access token expires (unix seconds): refresh is due shortly before.
    #[serde(rename = "e")]
    pub expires_at: u64,
    /// How long that access token was issued for (seconds): the refresh skew is at most half of it,
    /// so tokens shorter than `session.refresh_skew` are not refreshed on every request. 0 when
    /// unknown (a session sealed before this field existed): the skew applies as configured.
    #[serde(rename = "l", default, skip_serializing_if = "is_zero")]
    pub token_lifetime: u64,
    /// Trousseau refresh token, when one was issued.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Trousseau access token; kept only when `identity.pass_access_token` forwards it, or when
    /// the organizations were set aside (to ask Trousseau for them again).
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// The raw ID token, kept for the logout `id_token_hint` when it fits.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The organizations did not fit the cookie budget: they were set aside under this digest
    /// (SHA-256 of their JSON, base64url) and `identity.organizations` left out of the cookie
    /// ([`sessions::Sessions::save`]); filled in again when the session is read.
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    pub organizations_aside: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Session {
    /// The selected organization's membership, if one is selected and the user still has it.
    pub fn selected_organization(&self) -> Option<&crate::claims::Organization> {
        self.identity.organization(self.org.as_deref()?)
    }
}

/// A session of `sub` with id `id` and nothing else, for unit tests.
#[cfg(test)]
pub(crate) fn sample(id: &str, sub: &str) -> Session {
    Session {
        id: id.into(),
        identity: crate::claims::Identity { sub: sub.into(), ..Default::default() },
        org: None,
        sid: None,
        created_at: 0,
        updated_at_ms: 0,
        expires_at: 0,
        token_lifetime: 0,
        refresh_token: None,
        access_token: None,
        id_token: None,
        organizations_aside: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_sealed_before_the_token_lifetime_existed_still_opens() {
        let json = r#"{"i":"id","u":{"sub":"s"},"c":1,"m":2,"e":3,"r":"rt"}"#;
        let session: Session = serde_json::from_str(json).unwrap();
        assert_eq!(session.token_lifetime, 0, "unknown: the configured skew applies");
        // Written only when known, so sessions stay as small as they were.
        assert!(!serde_json::to_string(&session).unwrap().contains("\"l\""));
        let known = Session { token_lifetime: 300, ..session };
        assert!(serde_json::to_string(&known).unwrap().contains("\"l\":300"));
    }
}
