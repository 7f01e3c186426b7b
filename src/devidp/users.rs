//! The people of the dev IdP: the demo users, and the directory that holds them while it runs
//! (disabled flags and organization changes made by tests, ad-hoc email users).

use std::collections::HashSet;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::DevIdpError;
use crate::identity::Organization;

/// One person who can sign in at the dev IdP, with everything Trousseau's three scope tiers say
/// about them. Loadable from YAML (`--users FILE`): only `sub` and `email` are required.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevUser {
    /// Trousseau's user id (a UUID), the ID token's `sub`.
    pub sub: String,
    /// Primary email (scope `email`).
    pub email: String,
    /// Full display name (scope `profile`).
    #[serde(default)]
    pub name: String,
    /// First name (scope `profile`).
    #[serde(default)]
    pub given_name: String,
    /// Last name (scope `profile`).
    #[serde(default)]
    pub family_name: String,
    /// Avatar URL (scope `profile`); empty when not set, as Trousseau sends it.
    #[serde(default)]
    pub picture: String,
    /// Ecosystem-wide user id, a UUIDv7 (scope `trousseau:context`).
    #[serde(default)]
    pub trousseau_user_id: String,
    /// Preferred locale, BCP-47 (scope `trousseau:context`).
    #[serde(default = "default_locale")]
    pub locale: String,
    /// Organization memberships (scope `trousseau:organization`).
    #[serde(default)]
    pub organizations: Vec<Organization>,
    /// Not in the application's access group: signing in ends in `access_denied`.
    #[serde(default)]
    pub denied: bool,
    /// One line shown under the name on the sign-in page.
    #[serde(default)]
    pub description: String,
}

fn default_locale() -> String {
    "en-GB".to_owned()
}

impl DevUser {
    /// The name to show: `name`, or the email when there is none.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.email
        } else {
            &self.name
        }
    }
}

fn org(id: &str, name: &str, slug: &str, role: &str) -> Organization {
    Organization {
        id: id.to_owned(),
        name: name.to_owned(),
        slug: slug.to_owned(),
        role: role.to_owned(),
    }
}

/// The demo users: Jean Dupont from Trousseau's documentation (two organizations), a user with one
/// organization and a non-ASCII name, a user with no organization, and one who is denied access.
pub fn default_users() -> Vec<DevUser> {
    vec![
        DevUser {
            sub: "a1b2c3d4-e5f6-7890-abcd-ef1234567890".to_owned(),
            email: "jean.dupont@hotel.com".to_owned(),
            name: "Jean Dupont".to_owned(),
            given_name: "Jean".to_owned(),
            family_name: "Dupont".to_owned(),
            picture: "https://auth.keysuite.app/media/avatars/jean-dupont.jpg".to_owned(),
            trousseau_user_id: "018cc251-f3a0-7b21-9c4e-2f0c5d8e1a77".to_owned(),
            locale: "fr-FR".to_owned(),
            organizations: vec![
                org(
                    "018cc251-f400-78cc-8e0c-000fe440ee40",
                    "Hotel Le Grand Paris",
                    "hotel-le-grand-paris",
                    "admin",
                ),
                org(
                    "018dd362-a511-89dd-9f1d-111ff551ff51",
                    "Hotel Riviera Nice",
                    "hotel-riviera-nice",
                    "member",
                ),
            ],
            denied: false,
            description: "Two organizations: admin at Le Grand Paris, member at Riviera Nice"
                .to_owned(),
        },
        DevUser {
            sub: "3f6c2d1e-8a47-4b9e-9c21-5d7e8f90a1b2".to_owned(),
            email: "helene.lefevre@hotel-des-alpes.fr".to_owned(),
            name: "Hélène Lefèvre".to_owned(),
            given_name: "Hélène".to_owned(),
            family_name: "Lefèvre".to_owned(),
            picture: String::new(),
            trousseau_user_id: "018f3a6e-5c21-7d4b-9a8e-3b2c1d0e9f8a".to_owned(),
            locale: "fr-FR".to_owned(),
            organizations: vec![org(
                "018e7b14-2c90-7a3f-8d61-5e4f3a2b1c0d",
                "Hôtel des Alpes",
                "hotel-des-alpes",
                "hr",
            )],
            denied: false,
            description: "One organization (HR at Hôtel des Alpes), accented name".to_owned(),
        },
        DevUser {
            sub: "7b1e9c4d-2f38-4a6b-8e5d-c0a9f1e2d3b4".to_owned(),
            email: "sam.taylor@example.com".to_owned(),
            name: "Sam Taylor".to_owned(),
            given_name: "Sam".to_owned(),
            family_name: "Taylor".to_owned(),
            picture: String::new(),
            trousseau_user_id: "0190c2d4-7e15-7f62-b3a9-4d5e6f708192".to_owned(),
            locale: "en-GB".to_owned(),
            organizations: Vec::new(),
            denied: false,
            description: "No organization".to_owned(),
        },
        DevUser {
            sub: "c9d8e7f6-a5b4-4c3d-8e2f-1a0b9c8d7e6f".to_owned(),
            email: "oliver.bennett@example.co.uk".to_owned(),
            name: "Oliver Bennett".to_owned(),
            given_name: "Oliver".to_owned(),
            family_name: "Bennett".to_owned(),
            picture: String::new(),
            trousseau_user_id: "0191a5b6-c7d8-7e9f-a0b1-c2d3e4f5a6b7".to_owned(),
            locale: "en-GB".to_owned(),
            organizations: vec![org(
                "018dd362-a511-89dd-9f1d-111ff551ff51",
                "Hotel Riviera Nice",
                "hotel-riviera-nice",
                "accounting",
            )],
            denied: true,
            description: "Not in this application's access group: sign-in is denied".to_owned(),
        },
    ]
}

/// The users while the IdP runs. Lock order: the grant store may read the directory while
/// holding its own lock; the directory never calls into the grant store.
pub(super) struct Directory {
    inner: RwLock<Inner>,
}

struct Inner {
    users: Vec<DevUser>,
    disabled: HashSet<String>,
}

impl Directory {
    pub(super) fn new(users: Vec<DevUser>) -> Result<Directory, DevIdpError> {
        let mut seen = HashSet::new();
        for user in &users {
            if !seen.insert(user.sub.as_str()) {
                return Err(DevIdpError::DuplicateUser(user.sub.clone()));
            }
        }
        Ok(Directory {
            inner: RwLock::new(Inner {
                users,
                disabled: HashSet::new(),
            }),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The user with this `sub`, as they are now.
    pub(super) fn get(&self, sub: &str) -> Option<DevUser> {
        self.read().users.iter().find(|u| u.sub == sub).cloned()
    }

    /// Whether `sub` exists and is not disabled (denied users are active: they were never let in).
    pub(super) fn is_active(&self, sub: &str) -> bool {
        let inner = self.read();
        inner.users.iter().any(|u| u.sub == sub) && !inner.disabled.contains(sub)
    }

    pub(super) fn is_disabled(&self, sub: &str) -> bool {
        self.read().disabled.contains(sub)
    }

    /// Every user, in page order, with their disabled flag.
    pub(super) fn list(&self) -> Vec<(DevUser, bool)> {
        let inner = self.read();
        inner
            .users
            .iter()
            .map(|u| (u.clone(), inner.disabled.contains(&u.sub)))
            .collect()
    }

    pub(super) fn set_disabled(&self, sub: &str, disabled: bool) {
        let mut inner = self.write();
        if disabled {
            inner.disabled.insert(sub.to_owned());
        } else {
            inner.disabled.remove(sub);
        }
    }

    pub(super) fn set_organizations(&self, sub: &str, orgs: Vec<Organization>) {
        if let Some(user) = self.write().users.iter_mut().find(|u| u.sub == sub) {
            user.organizations = orgs;
        }
    }

    /// The user for a typed-in email: an existing user with that email, or a new one with no
    /// organization whose ids derive from the email (same email, same `sub` every time).
    pub(super) fn for_email(&self, email: &str, locale: &str) -> DevUser {
        let mut inner = self.write();
        if let Some(user) = inner
            .users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
        {
            return user.clone();
        }
        let local = email.split('@').next().unwrap_or(email);
        let mut parts = local
            .split(['.', '_', '-', '+'])
            .filter(|p| !p.is_empty())
            .map(capitalize);
        let given_name = parts.next().unwrap_or_default();
        let family_name = parts.collect::<Vec<_>>().join(" ");
        let name = [given_name.as_str(), family_name.as_str()]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let lowered = email.to_ascii_lowercase();
        let user = DevUser {
            sub: uuid_from(&format!("sub:{lowered}"), '4'),
            email: email.to_owned(),
            name,
            given_name,
            family_name,
            picture: String::new(),
            trousseau_user_id: uuid_from(&format!("trousseau_user_id:{lowered}"), '7'),
            locale: locale.to_owned(),
            organizations: Vec::new(),
            denied: false,
            description: "Signed in by email on the dev identity provider".to_owned(),
        };
        inner.users.push(user.clone());
        user
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A UUID-shaped id derived from `seed` (SHA-256), with `version` as its version digit.
fn uuid_from(seed: &str, version: char) -> String {
    let hex = crate::util::hash::sha256_hex(seed.as_bytes());
    format!(
        "{}-{}-{}{}-{}{}-{}",
        &hex[0..8],
        &hex[8..12],
        version,
        &hex[13..16],
        // RFC 9562 variant bits: 8, 9, a or b.
        ['8', '9', 'a', 'b'][usize::from(hex.as_bytes()[16] % 4)],
        &hex[17..20],
        &hex[20..32]
    )
}
