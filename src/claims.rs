//! Who the user is, as Trousseau says: the typed claims of its ID token (all three scope tiers).
//! A leaf, used by the relying party that reads them, the session that keeps them and the
//! identity headers that pass them on.

use serde::{Deserialize, Serialize};

/// One organization membership, as Trousseau's `organizations` claim (tier 3) carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    /// Organization id in KeySuite (UUIDv7).
    pub id: String,
    /// Display name.
    pub name: String,
    /// URL-safe identifier.
    pub slug: String,
    /// The user's role in it: `admin`, `hr`, `accounting` or `member`.
    pub role: String,
}

impl Organization {
    /// About the bytes it takes as JSON, and in memory: its four values and some 40 bytes of keys
    /// and punctuation (or of allocation overhead). Budgets and cache weights, not an exact size.
    pub fn approx_size(&self) -> usize {
        40 + self.id.len() + self.name.len() + self.slug.len() + self.role.len()
    }
}

/// The user's claims, typed. A claim the user's scopes did not grant is `None`, never an empty string.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Trousseau's user id (`sub`), stable across sessions.
    pub sub: String,
    /// Primary email (scope `email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Always true at Trousseau when present (scope `email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// Full display name (scope `profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// First name (scope `profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Last name (scope `profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Avatar URL (scope `profile`); Trousseau's empty string becomes `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    /// Ecosystem-wide user id (scope `trousseau:context`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trousseau_user_id: Option<String>,
    /// Preferred locale, BCP-47 (scope `trousseau:context`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Organization memberships (scope `trousseau:organization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizations: Option<Vec<Organization>>,
}

impl Identity {
    /// The membership with this organization id, if the user has it.
    pub fn organization(&self, id: &str) -> Option<&Organization> {
        self.organizations.as_deref()?.iter().find(|o| o.id == id)
    }
}
