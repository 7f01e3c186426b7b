//! Transparent token refresh that survives concurrency and refresh-token rotation.
//!
//! Trousseau (Authentik) rotates refresh tokens on every use and treats a reused one as theft. So
//! every refresh is single-flight per refresh token (moka `try_get_with`, keyed by the SHA-256 of
//! the token), and its result is remembered for a minute: a slow tab that still carries the old
//! cookie gets the remembered session instead of replaying a rotated token. A token Trousseau
//! refused (`invalid_grant`) is remembered as dead too, so it is never sent again.
//! Transient failures (timeouts, 5xx) back off per token and serve the last known identity for a
//! bounded grace past expiry; past the grace the answer is 503.
//!
//! With several replicas, a [`RefreshCoordinator`] (Redis) extends the single flight across them:
//! the request that leads here takes the shared lock, or waits for the replica holding it and
//! continues with its result. Without Redis at hand, no refresh happens (fail closed: 503), since
//! spending the token alone could have another replica spend it too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::oidc::{Oidc, OidcError};
use crate::util::clock::{now_millis, now_secs};
use crate::util::hash::sha256;
use crate::session::redis::{RefreshCoordinator, SharedRefresh, Turn};
use crate::session::store::StoreError;
use crate::session::Session;

/// How long a refresh result is remembered for requests still carrying the old cookie.
const RESULT_TTL: Duration = Duration::from_secs(60);

/// How long a refused refresh token is remembered as dead.
const DEAD_TTL: Duration = Duration::from_secs(600);

/// Longest wait between retries after transient failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

type TokenKey = [u8; 32];

/// What became of a session at the refresh step.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// No refresh was due.
    Fresh(Arc<Session>),
    /// Refreshed (by this request or one it joined); the cookie must be re-issued.
    Refreshed(Arc<Session>),
    /// Trousseau is unreachable; serving the last known identity within the grace period.
    Stale(Arc<Session>),
    /// The session is over, and why.
    Ended(Ending),
    /// Trousseau is unreachable and the grace period is over.
    Unavailable,
    /// The refresh must be coordinated with the other replicas and their store cannot answer.
    StoreUnavailable(StoreError),
}

impl RefreshOutcome {
    /// A word for it, as a trace's span carries it: `fresh`, `refreshed`, `stale`, `ended`,
    /// `unavailable`, `store_unavailable`.
    pub fn label(&self) -> &'static str {
        match self {
            RefreshOutcome::Fresh(_) => "fresh",
            RefreshOutcome::Refreshed(_) => "refreshed",
            RefreshOutcome::Stale(_) => "stale",
            RefreshOutcome::Ended(_) => "ended",
            RefreshOutcome::Unavailable => "unavailable",
            RefreshOutcome::StoreUnavailable(_) => "store_unavailable",
        }
    }
}

/// Why a session ended at the refresh step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Trousseau refused the refresh token, answering this request (`invalid_grant`).
    Refused,
    /// The token was known dead already: refused earlier here, or by Trousseau to another replica.
    KnownDead,
    /// No refresh token, and the tokens expired.
    Expired,
}

/// Why a refresh produced no new session.
#[derive(Debug)]
enum RefreshError {
    /// Trousseau's answer (or its absence).
    Idp(OidcError),
    /// Another replica learnt that the token is dead.
    Ended,
    /// Another replica was refreshing and stopped without a result: transient.
    Abandoned,
    /// Redis cannot answer.
    Store(StoreError),
}

#[derive(Clone, Copy, Debug)]
struct Backoff {
    attempts: u32,
    next_try: u64,
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct RefreshStats {
    /// Refresh calls to Trousseau that succeeded.
    pub ok: AtomicU64,
    /// Refresh calls to Trousseau that failed (any reason).
    pub failed: AtomicU64,
    /// Requests served by another request's refresh (in flight or remembered).
    pub coalesced: AtomicU64,
}

/// Refreshes sessions, once per refresh token however many requests ask.
pub struct Refresher {
    oidc: Arc<Oidc>,
    skew: Duration,
    grace: Duration,
    results: moka::future::Cache<TokenKey, Arc<Session>>,
    dead: moka::sync::Cache<TokenKey, ()>,
    backoff: moka::sync::Cache<TokenKey, Backoff>,
    stats: Arc<RefreshStats>,
    /// Shares the refresh with the other replicas, when there are several.
    coordinator: Option<Arc<RefreshCoordinator>>,
}

impl Refresher {
    /// A refresher that refreshes `skew` before expiry and, while Trousseau is unreachable, keeps
    /// serving for `grace` past expiry.
    pub fn new(oidc: Arc<Oidc>, skew: Duration, grace: Duration) -> Refresher {
        Refresher {
            oidc,
            skew,
            grace,
            results: moka::future::Cache::builder().max_capacity(100_000).time_to_live(RESULT_TTL).build(),
            dead: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(DEAD_TTL).build(),
            backoff: backoff_cache(),
            stats: Arc::default(),
            coordinator: None,
        }
    }

    /// A refresher for a reloaded configuration that shares this one's refreshes — those in
    /// flight, those remembered, the refused tokens, the back-off — and its counters: a refresh
    /// begun before a reload is joined, not repeated with the same rotating refresh token.
    pub fn succeed(&self, oidc: Arc<Oidc>, skew: Duration, grace: Duration) -> Refresher {
        Refresher {
            skew,
            grace,
            results: self.results.clone(),
            dead: self.dead.clone(),
            // Backing off from another Trousseau client (settings that failed, perhaps): try anew.
            backoff: if Arc::ptr_eq(&oidc, &self.oidc) { self.backoff.clone() } else { backoff_cache() },
            oidc,
            stats: Arc::clone(&self.stats),
            coordinator: None,
        }
    }

    /// Coordinates every refresh with the other replicas through `coordinator`.
    pub fn with_coordinator(mut self, coordinator: Arc<RefreshCoordinator>) -> Refresher {
        self.coordinator = Some(coordinator);
        self
    }

    /// The counters.
    pub fn stats(&self) -> &RefreshStats {
        &self.stats
    }

    /// When (unix seconds) the session's access token is due for a refresh.
    pub fn due_at(&self, session: &Session) -> u64 {
        session.expires_at.saturating_sub(self.skew_for(session))
    }

    /// Whether the session's access token expires within the skew: [`Refresher::refresh_if_due`]
    /// would refresh it.
    pub fn is_due(&self, session: &Session) -> bool {
        session.expires_at <= now_secs() + self.skew_for(session)
    }

    /// Refreshes the session if its access token expires within the skew.
    /// The session travels as an `Arc`: a request's session is usually the one cached for its
    /// cookie, shared rather than copied (a copy was ~17 allocations a request).
    pub async fn refresh_if_due(&self, session: Arc<Session>) -> RefreshOutcome {
        let now = now_secs();
        if session.expires_at > now + self.skew_for(&session) {
            return RefreshOutcome::Fresh(session);
        }
        let Some(refresh_token) = session.refresh_token.clone() else {
            // Without a refresh token the session lives as long as its tokens.
            return if session.expires_at > now { RefreshOutcome::Fresh(session) } else { RefreshOutcome::Ended(Ending::Expired) };
        };
        let key: TokenKey = sha256(refresh_token.as_bytes());
        if self.dead.contains_key(&key) {
            return RefreshOutcome::Ended(Ending::KnownDead);
        }
        if let Some(b) = self.backoff.get(&key) {
            if b.next_try > now {
                return self.within_grace(session, now);
            }
        }

        let led = AtomicBool::new(false);
        // Boxed as `dyn Future + Send`: keeps the borrow of `self` out of the request future's
        // type, which rustc otherwise cannot prove Send for every lifetime.
        let load: Pin<Box<dyn Future<Output = Result<Arc<Session>, RefreshError>> + Send + '_>> = Box::pin(async {
            let Some(coordinator) = &self.coordinator else {
                return self.call_trousseau(&session, &refresh_token, key, &led).await;
            };
            match coordinator.begin(&key).await.map_err(RefreshError::Store)? {
                Turn::Done(SharedRefresh::Refreshed(new)) if new.identity.sub == session.identity.sub => Ok(Arc::new(*new)),
                Turn::Done(_) => Err(RefreshError::Ended),
                Turn::Abandoned => Err(RefreshError::Abandoned),
                Turn::Lead(lock) => {
                    let result = self.call_trousseau(&session, &refresh_token, key, &led).await;
                    let shared = match &result {
                        Ok(new) => Some(SharedRefresh::Refreshed(Box::new((**new).clone()))),
                        Err(RefreshError::Idp(e)) if is_dead(e) => Some(SharedRefresh::Ended),
                        Err(_) => None,
                    };
                    if let Err(e) = coordinator.finish(lock, shared.as_ref()).await {
                        // The token is spent either way: this request goes on with the result; the
                        // others find the lock until it expires, then see Trousseau's verdict.
                        tracing::warn!(sub = %session.identity.sub, error = %e, "could not share the refresh result with the other replicas");
                    }
                    result
                }
            }
        });
        let result = self.results.try_get_with(key, load).await;
        if !led.load(Ordering::Relaxed) {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(new) => RefreshOutcome::Refreshed(with_own_choice(&session, new)),
            Err(e) => match &*e {
                RefreshError::Idp(e) if is_dead(e) => {
                    self.dead.insert(key, ());
                    // The request that called Trousseau, or one that joined it: said once, by the caller.
                    RefreshOutcome::Ended(if led.load(Ordering::Relaxed) { Ending::Refused } else { Ending::KnownDead })
                }
                RefreshError::Ended => {
                    self.dead.insert(key, ());
                    RefreshOutcome::Ended(Ending::KnownDead)
                }
                RefreshError::Store(StoreError::Unavailable(reason)) => {
                    RefreshOutcome::StoreUnavailable(StoreError::Unavailable(reason.clone()))
                }
                RefreshError::Idp(_) | RefreshError::Abandoned => self.within_grace(session, now),
            },
        }
    }

    /// The refresh grant itself (this request leads): counts, backs off, remembers dead tokens.
    async fn call_trousseau(&self, session: &Session, refresh_token: &str, key: TokenKey, led: &AtomicBool) -> Result<Arc<Session>, RefreshError> {
        led.store(true, Ordering::Relaxed);
        match self.oidc.refresh(refresh_token, &session.identity.sub).await {
            Ok(refreshed) => {
                self.stats.ok.fetch_add(1, Ordering::Relaxed);
                self.backoff.invalidate(&key);
                tracing::info!(sub = %session.identity.sub, "session refreshed");
                Ok(Arc::new(apply(session, refreshed)))
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                if e.is_invalid_grant() {
                    self.dead.insert(key, ());
                    tracing::info!(sub = %session.identity.sub, "refresh refused by Trousseau (invalid_grant): session ended");
                } else {
                    let attempts = self.backoff.get(&key).map(|b| b.attempts + 1).unwrap_or(1);
                    let delay = Duration::from_secs(1u64 << attempts.min(6)).min(MAX_BACKOFF);
                    self.backoff.insert(key, Backoff { attempts, next_try: now_secs() + delay.as_secs() });
                    tracing::warn!(sub = %session.identity.sub, error = %e, retry_in = ?delay, "refresh failed; serving the last known identity within the grace period");
                }
                Err(RefreshError::Idp(e))
            }
        }
    }

    /// How long before expiry this session's refresh is due: `session.refresh_skew`, but at most
    /// half the access token's lifetime. Otherwise a token shorter than the skew would be "due" from
    /// the moment it is issued, and every request would refresh it.
    fn skew_for(&self, session: &Session) -> u64 {
        match session.token_lifetime {
            0 => self.skew.as_secs(),
            lifetime => self.skew.as_secs().min(lifetime / 2),
        }
    }

    fn within_grace(&self, session: Arc<Session>, now: u64) -> RefreshOutcome {
        if now < session.expires_at.saturating_add(self.grace.as_secs()) {
            RefreshOutcome::Stale(session)
        } else {
            RefreshOutcome::Unavailable
        }
    }
}

/// Tokens whose refresh failed for want of Trousseau, and when to try again.
fn backoff_cache() -> moka::sync::Cache<TokenKey, Backoff> {
    moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(600)).build()
}

/// A refresh error after which the token must never be sent again.
fn is_dead(e: &OidcError) -> bool {
    e.is_invalid_grant() || matches!(e, OidcError::InvalidIdToken(_))
}

/// A refresh this request joined (in flight, remembered, or led by another replica), or made in the
/// background for the session's open connections, was made from another copy of the session —
/// maybe the same browser's cookie from before an organization was chosen. The choice is this
/// request's own: its session's, kept when the refreshed membership still has it.
pub(crate) fn with_own_choice(session: &Session, new: Arc<Session>) -> Arc<Session> {
    if new.org == session.org {
        return new;
    }
    let known = new.organizations_aside.is_none() || new.identity.organizations.is_some();
    if known && session.org.as_deref().is_some_and(|id| new.identity.organization(id).is_none()) {
        return new;
    }
    let mut own = (*new).clone();
    own.org = session.org.clone();
    Arc::new(own)
}

/// The session after a successful refresh: new tokens, and new claims when an ID token came.
fn apply(old: &Session, refreshed: crate::oidc::Refreshed) -> Session {
    let mut s = old.clone();
    s.expires_at = refreshed.expires_at;
    s.token_lifetime = refreshed.expires_at.saturating_sub(now_secs());
    if let Some(rt) = refreshed.refresh_token {
        s.refresh_token = Some(rt);
    }
    // `Sessions::save` decides whether the cookie or the store keeps it.
    s.access_token = Some(refreshed.access_token);
    if let Some((identity, sid, id_token)) = refreshed.id {
        // A whole identity: nothing of it is set aside any more (saving decides again).
        s.identity = identity;
        s.organizations_aside = None;
        if sid.is_some() {
            s.sid = sid;
        }
        if s.id_token.is_some() {
            s.id_token = Some(id_token);
        }
    }
    // A membership that is gone is no longer selected; the policy step decides what is next.
    // (Organizations set aside and not read back are not known to be gone.)
    let known = s.organizations_aside.is_none() || s.identity.organizations.is_some();
    if known && s.org.as_deref().is_some_and(|id| s.identity.organization(id).is_none()) {
        s.org = None;
    }
    s.updated_at_ms = now_millis();
    s
}


