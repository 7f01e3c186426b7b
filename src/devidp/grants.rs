//! Codes and tokens: what was granted to whom, and the rules that keep each token single-purpose.
//!
//! Everything issued from one authorization code forms a *family*. A family is revoked, with every
//! access and refresh token in it, when its code is presented a second time, when a rotated
//! refresh token is presented again (theft, RFC 9700 §4.14.2), or when its IdP session ends.
//! All state changes happen under one lock, so two concurrent redemptions of the same code or
//! refresh token can never both succeed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq as _;

use super::web::{random_token, sha256_b64};

/// What the user approved at the authorize endpoint, bound to the code.
#[derive(Clone, Debug)]
pub(super) struct Authorization {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) scopes: Vec<String>,
    pub(super) nonce: Option<String>,
    pub(super) code_challenge: String,
    pub(super) sub: String,
    pub(super) auth_time: i64,
    pub(super) sid: String,
}

/// Who a token speaks for and what it may see.
#[derive(Clone, Debug)]
pub(super) struct Grant {
    pub(super) sub: String,
    pub(super) scopes: Vec<String>,
    pub(super) auth_time: i64,
    pub(super) sid: String,
}

/// What introspection tells about a live token.
#[derive(Clone, Debug)]
pub(super) struct TokenInfo {
    /// The client the token was issued to.
    pub(super) client_id: String,
    pub(super) sub: String,
    pub(super) scopes: Vec<String>,
    pub(super) auth_time: i64,
    /// The IdP session the grant belongs to (Authentik's introspection carries the ID token's claims).
    pub(super) sid: String,
    /// Expiry, Unix seconds.
    pub(super) exp: i64,
    /// `true` for an access token, `false` for a refresh token.
    pub(super) access: bool,
}

/// A fresh token pair and what it grants.
#[derive(Debug)]
pub(super) struct Issued {
    pub(super) access_token: String,
    pub(super) refresh_token: String,
    pub(super) grant: Grant,
    /// The authorization request's nonce, for the first ID token only.
    pub(super) nonce: Option<String>,
}

/// Token lifetimes for one issuance.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lifetimes {
    pub(super) access: Duration,
    pub(super) refresh: Duration,
}

/// Why a grant was refused; everything but `InvalidScope` is `invalid_grant`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum GrantError {
    /// `invalid_grant` with this description.
    Invalid(&'static str),
    /// A rotated refresh token came back: `invalid_grant`, and its family is now revoked.
    Reused,
    /// The refresh request asked for a scope the grant does not have.
    InvalidScope,
}

type FamilyId = u64;

enum CodeState {
    Fresh,
    /// Presented with a wrong verifier, client or redirect URI: never usable again.
    Burned,
    /// Exchanged for the tokens of this family.
    Redeemed(FamilyId),
}

struct CodeEntry {
    authz: Authorization,
    expires: Instant,
    state: CodeState,
}

struct Family {
    client_id: String,
    sub: String,
    scopes: Vec<String>,
    auth_time: i64,
    sid: String,
    revoked: bool,
    /// When the last token of the family expires (then it can be forgotten).
    expires: Instant,
}

struct RefreshEntry {
    family: FamilyId,
    expires: Instant,
    /// Already exchanged under rotation: presenting it again is reuse.
    rotated: bool,
}

struct AccessEntry {
    family: FamilyId,
    scopes: Vec<String>,
    expires: Instant,
}

/// The grant store.
pub(super) struct Grants {
    inner: Mutex<Inner>,
}

struct Inner {
    codes: HashMap<String, CodeEntry>,
    families: HashMap<FamilyId, Family>,
    refresh: HashMap<String, RefreshEntry>,
    access: HashMap<String, AccessEntry>,
    next_family: FamilyId,
    last_purge: Instant,
}

const PURGE_EVERY: Duration = Duration::from_secs(60);

impl Grants {
    pub(super) fn new() -> Grants {
        Grants {
            inner: Mutex::new(Inner {
                codes: HashMap::new(),
                families: HashMap::new(),
                refresh: HashMap::new(),
                access: HashMap::new(),
                next_family: 1,
                last_purge: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.purge_if_due();
        inner
    }

    /// A new single-use code for `authz`, valid for `ttl`.
    pub(super) fn issue_code(&self, authz: Authorization, ttl: Duration) -> String {
        let code = random_token(32);
        let entry = CodeEntry {
            authz,
            expires: Instant::now() + ttl,
            state: CodeState::Fresh,
        };
        self.lock().codes.insert(code.clone(), entry);
        code
    }

    /// Exchanges a code: it must exist, be unexpired and unused, belong to `client_id` and
    /// `redirect_uri`, and `verifier` must hash (S256) to its challenge. Any failed attempt burns
    /// the code; a second exchange of a redeemed code also revokes what the first one issued.
    pub(super) fn redeem_code(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
        life: Lifetimes,
        user_ok: impl Fn(&str) -> bool,
    ) -> Result<Issued, GrantError> {
        const UNKNOWN: &str = "the authorization code is unknown or has expired";
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(entry) = inner.codes.get_mut(code) else {
            return Err(GrantError::Invalid(UNKNOWN));
        };
        if entry.expires <= now {
            inner.codes.remove(code);
            return Err(GrantError::Invalid(UNKNOWN));
        }
        match entry.state {
            CodeState::Fresh => {}
            CodeState::Burned => {
                return Err(GrantError::Invalid(
                    "the authorization code was already used",
                ))
            }
            CodeState::Redeemed(family) => {
                inner.revoke_family(family);
                return Err(GrantError::Invalid(
                    "the authorization code was already used; the tokens issued for it are revoked",
                ));
            }
        }
        let authz = &entry.authz;
        let refusal = if authz.client_id != client_id {
            Some("the authorization code was issued to another client")
        } else if authz.redirect_uri != redirect_uri {
            Some("redirect_uri does not match the authorization request")
        } else if let Some(reason) = pkce_refusal(verifier, &authz.code_challenge) {
            Some(reason)
        } else if !user_ok(&authz.sub) {
            Some("the user is disabled")
        } else {
            None
        };
        if let Some(reason) = refusal {
            entry.state = CodeState::Burned;
            return Err(GrantError::Invalid(reason));
        }
        let authz = authz.clone();
        let family = inner.next_family;
        inner.next_family += 1;
        if let Some(entry) = inner.codes.get_mut(code) {
            entry.state = CodeState::Redeemed(family);
        }
        inner.families.insert(
            family,
            Family {
                client_id: authz.client_id.clone(),
                sub: authz.sub.clone(),
                scopes: authz.scopes.clone(),
                auth_time: authz.auth_time,
                sid: authz.sid.clone(),
                revoked: false,
                expires: now,
            },
        );
        let (access_token, refresh_token) = inner.issue(family, &authz.scopes, life, None);
        Ok(Issued {
            access_token,
            refresh_token,
            grant: Grant {
                sub: authz.sub,
                scopes: authz.scopes,
                auth_time: authz.auth_time,
                sid: authz.sid,
            },
            nonce: authz.nonce,
        })
    }

    /// Exchanges a refresh token. Under `rotate`, the token is spent and a new one issued; a spent
    /// token presented again revokes the family ([`GrantError::Reused`]). `scope`, if sent, may
    /// only narrow the access token's scopes (the refresh token keeps the grant's).
    pub(super) fn refresh(
        &self,
        token: &str,
        client_id: &str,
        scope: Option<&str>,
        rotate: bool,
        life: Lifetimes,
        user_ok: impl Fn(&str) -> bool,
    ) -> Result<Issued, GrantError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(entry) = inner.refresh.get(token) else {
            return Err(GrantError::Invalid("the refresh token is unknown"));
        };
        let (family_id, expired, rotated) = (entry.family, entry.expires <= now, entry.rotated);
        let Some(family) = inner.families.get(&family_id) else {
            return Err(GrantError::Invalid("the refresh token is unknown"));
        };
        if family.client_id != client_id {
            return Err(GrantError::Invalid(
                "the refresh token was issued to another client",
            ));
        }
        if family.revoked {
            return Err(GrantError::Invalid("the refresh token has been revoked"));
        }
        if expired {
            return Err(GrantError::Invalid("the refresh token has expired"));
        }
        if rotated {
            inner.revoke_family(family_id);
            return Err(GrantError::Reused);
        }
        if !user_ok(&family.sub) {
            return Err(GrantError::Invalid("the user is disabled"));
        }
        let scopes = match scope {
            None => family.scopes.clone(),
            Some(requested) => {
                let requested: Vec<String> = requested
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if requested.is_empty() || !requested.iter().all(|s| family.scopes.contains(s)) {
                    return Err(GrantError::InvalidScope);
                }
                requested
            }
        };
        let grant = Grant {
            sub: family.sub.clone(),
            scopes: scopes.clone(),
            auth_time: family.auth_time,
            sid: family.sid.clone(),
        };
        let keep = if rotate {
            if let Some(entry) = inner.refresh.get_mut(token) {
                entry.rotated = true;
            }
            None
        } else {
            Some(token.to_owned())
        };
        let (access_token, refresh_token) = inner.issue(family_id, &scopes, life, keep);
        Ok(Issued {
            access_token,
            refresh_token,
            grant,
            nonce: None,
        })
    }

    /// What a live access token grants: unexpired, family not revoked.
    pub(super) fn access(&self, token: &str) -> Option<Grant> {
        let inner = self.lock();
        let entry = inner.access.get(token)?;
        if entry.expires <= Instant::now() {
            return None;
        }
        let family = inner.families.get(&entry.family)?;
        if family.revoked {
            return None;
        }
        Some(Grant {
            sub: family.sub.clone(),
            scopes: entry.scopes.clone(),
            auth_time: family.auth_time,
            sid: family.sid.clone(),
        })
    }

    /// What a live token (access or refresh; unexpired, family not revoked, refresh token not
    /// rotated away) grants and to which client, for introspection.
    pub(super) fn introspect(&self, token: &str) -> Option<TokenInfo> {
        let now = Instant::now();
        let inner = self.lock();
        let (family, scopes, expires, access) = if let Some(entry) = inner.access.get(token) {
            (entry.family, Some(entry.scopes.clone()), entry.expires, true)
        } else {
            let entry = inner.refresh.get(token).filter(|r| !r.rotated)?;
            (entry.family, None, entry.expires, false)
        };
        if expires <= now {
            return None;
        }
        let family = inner.families.get(&family).filter(|f| !f.revoked)?;
        Some(TokenInfo {
            client_id: family.client_id.clone(),
            sub: family.sub.clone(),
            scopes: scopes.unwrap_or_else(|| family.scopes.clone()),
            auth_time: family.auth_time,
            sid: family.sid.clone(),
            exp: unix_secs_at(expires, now),
            access,
        })
    }

    /// A new grant family for `client_id` without any authorization step (a test control: a
    /// token as another application of the same IdP would have it). Returns its access token.
    pub(super) fn issue_for_client(
        &self,
        client_id: &str,
        sub: &str,
        scopes: &[String],
        sid: String,
        life: Lifetimes,
    ) -> String {
        let mut inner = self.lock();
        let family = inner.next_family;
        inner.next_family += 1;
        inner.families.insert(
            family,
            Family {
                client_id: client_id.to_owned(),
                sub: sub.to_owned(),
                scopes: scopes.to_vec(),
                auth_time: super::now_unix(),
                sid,
                revoked: false,
                expires: Instant::now(),
            },
        );
        inner.issue(family, scopes, life, None).0
    }

    /// Revokes every family of the IdP session `sid` (the session ended).
    pub(super) fn revoke_sid(&self, sid: &str) {
        let mut inner = self.lock();
        for family in inner.families.values_mut() {
            if family.sid == sid {
                family.revoked = true;
            }
        }
    }
}

impl Inner {
    /// Issues an access token and a refresh token (or keeps `keep_refresh`) for `family`.
    fn issue(
        &mut self,
        family: FamilyId,
        scopes: &[String],
        life: Lifetimes,
        keep_refresh: Option<String>,
    ) -> (String, String) {
        let now = Instant::now();
        let access_token = random_token(32);
        let access_expires = now + life.access;
        self.access.insert(
            access_token.clone(),
            AccessEntry {
                family,
                scopes: scopes.to_vec(),
                expires: access_expires,
            },
        );
        let (refresh_token, refresh_expires) = match keep_refresh {
            Some(token) => {
                let expires = self.refresh.get(&token).map_or(now, |e| e.expires);
                (token, expires)
            }
            None => {
                let token = random_token(32);
                let expires = now + life.refresh;
                self.refresh.insert(
                    token.clone(),
                    RefreshEntry {
                        family,
                        expires,
                        rotated: false,
                    },
                );
                (token, expires)
            }
        };
        if let Some(f) = self.families.get_mut(&family) {
            f.expires = f.expires.max(access_expires).max(refresh_expires);
        }
        (access_token, refresh_token)
    }

    fn revoke_family(&mut self, family: FamilyId) {
        if let Some(f) = self.families.get_mut(&family) {
            f.revoked = true;
        }
    }

    /// Forgets what has expired, at most once a minute. Spent refresh tokens and redeemed codes
    /// are kept until they expire so that their reuse is still recognized.
    fn purge_if_due(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_purge) < PURGE_EVERY {
            return;
        }
        self.last_purge = now;
        self.codes.retain(|_, c| c.expires > now);
        self.access.retain(|_, a| a.expires > now);
        self.refresh.retain(|_, r| r.expires > now);
        self.families.retain(|_, f| f.expires > now);
    }
}

/// `at` as Unix seconds, given that `now` is the present.
fn unix_secs_at(at: Instant, now: Instant) -> i64 {
    let ahead = i64::try_from(at.saturating_duration_since(now).as_secs()).unwrap_or(i64::MAX);
    super::now_unix().saturating_add(ahead)
}

/// Why `verifier` does not prove possession of `challenge` (RFC 7636 §4.1, §4.6), if it doesn't.
fn pkce_refusal(verifier: Option<&str>, challenge: &str) -> Option<&'static str> {
    let Some(verifier) = verifier else {
        return Some("code_verifier is required: PKCE is mandatory");
    };
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return Some("code_verifier must be 43 to 128 characters from [A-Za-z0-9-._~]");
    }
    let computed = sha256_b64(verifier.as_bytes());
    if bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
        None
    } else {
        Some("code_verifier does not match the code_challenge")
    }
}
