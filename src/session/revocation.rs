//! Sessions ended elsewhere: back-channel logout cannot reach a cookie, so every ended Trousseau
//! session (`sid`) or user (`sub`) is remembered here for as long as a session can live, and
//! sessions that match are "no session" on their next request. A sign-out of a cookie session is
//! remembered the same way, by the session's own id: a copy of the cookie is refused afterwards.

use std::time::{Duration, Instant};

use crate::session::redis::RedisRevocations;
use crate::session::store::StoreError;
use crate::session::Session;

/// Where revocations live: this replica's memory, or Redis for every replica
/// (`session.revocations`). A clone shares the set (a reloaded configuration keeps it).
#[derive(Clone)]
pub enum RevocationSet {
    /// This replica only.
    Memory(Revocations),
    /// Every replica, through Redis (with a short local cache).
    Redis(RedisRevocations),
}

impl RevocationSet {
    /// Records a logout. `Ok(false)` if this `jti` was seen before (a replay); an error when Redis
    /// cannot record it.
    pub async fn revoke(&self, jti: &str, sid: Option<&str>, sub: Option<&str>, now: u64) -> Result<bool, StoreError> {
        match self {
            RevocationSet::Memory(set) => Ok(set.revoke(jti, sid, sub, now)),
            RevocationSet::Redis(set) => set.revoke(jti, sid, sub, now).await,
        }
    }

    /// Records the sign-out of this one session for `ttl` (what remains of its lifetime). An
    /// error when Redis cannot record it.
    pub async fn end_session(&self, session: &Session, ttl: Duration) -> Result<(), StoreError> {
        match self {
            RevocationSet::Memory(set) => {
                set.end_session(&session.id, ttl);
                Ok(())
            }
            RevocationSet::Redis(set) => set.end_session(session, ttl).await,
        }
    }

    /// Whether this session was ended by a logout. An error when Redis cannot say:
    /// the caller fails closed.
    pub async fn is_revoked(&self, session: &Session) -> Result<bool, StoreError> {
        match self {
            RevocationSet::Memory(set) => Ok(set.is_revoked(session)),
            RevocationSet::Redis(set) => set.is_revoked(session).await,
        }
    }

    /// [`RevocationSet::is_revoked`] without the short cache of Redis answers.
    pub async fn is_revoked_uncached(&self, session: &Session) -> Result<bool, StoreError> {
        match self {
            RevocationSet::Memory(set) => Ok(set.is_revoked(session)),
            RevocationSet::Redis(set) => set.is_revoked_uncached(session).await,
        }
    }

    /// How many entries this replica holds (for metrics; Redis entries are not counted).
    pub fn len(&self) -> u64 {
        match self {
            RevocationSet::Memory(set) => set.len(),
            RevocationSet::Redis(_) => 0,
        }
    }

    /// Whether this replica holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Revoked `sid`s and `sub`s, with when they were revoked. A clone shares them.
#[derive(Clone)]
pub struct Revocations {
    /// `sid` → unix seconds of the logout.
    sids: moka::sync::Cache<String, u64>,
    /// `sub` → unix seconds of the logout; sessions created later are not affected.
    subs: moka::sync::Cache<String, u64>,
    /// Logout token ids already used (replay protection).
    jtis: moka::sync::Cache<String, ()>,
    /// Ids of sessions signed out here → until when they could have lived.
    sessions: moka::sync::Cache<String, Instant>,
}

/// Per-entry expiry: a signed-out session is remembered as long as it could have lived.
struct UntilDeadline;

impl moka::Expiry<String, Instant> for UntilDeadline {
    fn expire_after_create(&self, _key: &String, deadline: &Instant, created_at: Instant) -> Option<Duration> {
        Some(deadline.saturating_duration_since(created_at))
    }
}

impl Revocations {
    /// A revocation set whose entries live as long as the longest session.
    pub fn new(max_lifetime: Duration) -> Revocations {
        let build = || moka::sync::Cache::builder().max_capacity(1_000_000).time_to_live(max_lifetime).build();
        Revocations {
            sids: build(),
            subs: build(),
            jtis: moka::sync::Cache::builder().max_capacity(1_000_000).time_to_live(Duration::from_secs(3600)).build(),
            sessions: moka::sync::Cache::builder().max_capacity(1_000_000).expire_after(UntilDeadline).build(),
        }
    }

    /// Records a logout. Returns false if this `jti` was seen before (a replay).
    pub fn revoke(&self, jti: &str, sid: Option<&str>, sub: Option<&str>, now: u64) -> bool {
        let mut fresh = false;
        self.jtis.entry(jti.to_string()).or_insert_with_if(|| { fresh = true; }, |_| false);
        if !fresh {
            return false;
        }
        match (sid, sub) {
            (Some(sid), _) => self.sids.insert(sid.to_string(), now),
            (None, Some(sub)) => self.subs.insert(sub.to_string(), now),
            (None, None) => {}
        }
        true
    }

    /// Records the sign-out of the session `id`, for `ttl`.
    pub fn end_session(&self, id: &str, ttl: Duration) {
        self.sessions.insert(id.to_string(), Instant::now() + ttl);
    }

    /// Whether this session was ended by a logout.
    pub fn is_revoked(&self, session: &Session) -> bool {
        if self.sessions.contains_key(&session.id) {
            return true;
        }
        if let Some(sid) = &session.sid {
            if self.sids.contains_key(sid) {
                return true;
            }
        }
        self.subs.get(&session.identity.sub).is_some_and(|at| session.created_at <= at)
    }

    /// How many entries are held (for metrics).
    pub fn len(&self) -> u64 {
        self.sids.entry_count() + self.subs.entry_count() + self.sessions.entry_count()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
