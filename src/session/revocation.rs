//! Sessions ended elsewhere: back-channel logout cannot reach a cookie, so every ended Trousseau
//! session (`sid`) or user (`sub`) is remembered here for as long as a session can live, and
//! sessions that match are "no session" on their next request. A sign-out of a cookie session is
//! remembered the same way, by the session's own id: a copy of the cookie is refused afterwards.

use crate::util::FastHash;
use std::sync::atomic::{AtomicU64, Ordering};
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

    /// Bytes this replica holds (Redis: none here).
    pub fn bytes(&self) -> u64 {
        match self {
            RevocationSet::Memory(set) => set.bytes(),
            RevocationSet::Redis(_) => 0,
        }
    }

    /// Revocations forgotten for want of room (Redis: none; its keys expire on their own).
    pub fn evicted(&self) -> u64 {
        match self {
            RevocationSet::Memory(set) => set.evicted(),
            RevocationSet::Redis(_) => 0,
        }
    }
}

/// Revoked `sid`s and `sub`s, with when they were revoked. A clone shares them.
#[derive(Clone)]
pub struct Revocations {
    /// `sid` → unix seconds of the logout.
    sids: moka::sync::Cache<String, u64, FastHash>,
    /// `sub` → unix seconds of the logout; sessions created later are not affected.
    subs: moka::sync::Cache<String, u64, FastHash>,
    /// Logout token ids already used (replay protection).
    jtis: moka::sync::Cache<String, ()>,
    /// Ids of sessions signed out here → until when they could have lived.
    sessions: moka::sync::Cache<String, Instant, FastHash>,
    /// Revocations forgotten for want of room before they expired (see [`REVOCATION_BYTES`]).
    evicted: std::sync::Arc<AtomicU64>,
}

/// Bytes each of the revocation maps (`sid`s, `sub`s, ended sessions, logout token ids) may hold,
/// keys and per-entry overhead counted: about 500,000 UUID-sized entries each. Bounded by bytes,
/// not count, so that long identifiers cannot grow it past that. A revocation forgotten before it
/// expires would let a copied cookie of that session in again: each one is counted
/// (`trousseau_proxy_revocations_evicted_total`) and logged — with that many back-channel logouts
/// within `session.max_lifetime`, use `session.revocations: redis`.
pub const REVOCATION_BYTES: u64 = 64 << 20;

/// What moka keeps per entry besides the key, roughly (the entry, its deque nodes, the hash slot).
const ENTRY_OVERHEAD: usize = 96;

/// An eviction listener counting (and, at each power of two, logging) the revocations forgotten for
/// want of room.
fn counting<V>(evicted: &std::sync::Arc<AtomicU64>) -> impl Fn(std::sync::Arc<String>, V, moka::notification::RemovalCause) + Send + Sync + 'static {
    let evicted = std::sync::Arc::clone(evicted);
    move |_, _, cause| {
        if cause == moka::notification::RemovalCause::Size {
            let count = evicted.fetch_add(1, Ordering::Relaxed) + 1;
            if count.is_power_of_two() {
                tracing::warn!(
                    evicted = count,
                    "the revocation set is full: revocations are forgotten before they expire, and a copied cookie of \
                     such a session would be accepted again; use session.revocations: redis"
                );
            }
        }
    }
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
        Revocations::within(max_lifetime, REVOCATION_BYTES)
    }

    /// [`Revocations::new`] holding at most `bytes` per map.
    pub fn within(max_lifetime: Duration, bytes: u64) -> Revocations {
        let evicted = std::sync::Arc::new(AtomicU64::new(0));
        #[allow(clippy::ptr_arg)] // moka's weigher signature
        fn weigh<V>(key: &String, _: &V) -> u32 {
            u32::try_from(key.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
        }
        // Least recently used goes first: moka's default (TinyLFU) admits a new key only if it is
        // read more often than the one it would replace — a revocation, written once, would be
        // refused on arrival once the map is full, and the newest logouts are the ones that matter.
        let build = || {
            moka::sync::Cache::builder()
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .weigher(weigh::<u64>)
                .max_capacity(bytes)
                .time_to_live(max_lifetime)
                .eviction_listener(counting(&evicted))
                .build_with_hasher(FastHash::default())
        };
        Revocations {
            sids: build(),
            subs: build(),
            // A replayed logout token only revokes again: forgetting one is harmless, not counted.
            jtis: moka::sync::Cache::builder()
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .weigher(weigh::<()>)
                .max_capacity(bytes)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            sessions: moka::sync::Cache::builder()
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .weigher(weigh::<Instant>)
                .max_capacity(bytes)
                .expire_after(UntilDeadline)
                .eviction_listener(counting(&evicted))
                .build_with_hasher(FastHash::default()),
            evicted,
        }
    }

    /// Bytes held (keys and overhead, as weighed; moka counts lazily: approximate).
    pub fn bytes(&self) -> u64 {
        self.sids.weighted_size() + self.subs.weighted_size() + self.jtis.weighted_size() + self.sessions.weighted_size()
    }

    /// Revocations forgotten for want of room before they expired, since start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_set_is_bounded_by_bytes_and_counts_what_it_forgets() {
        // Room for about 100 entries of 36-character ids per map.
        let set = Revocations::within(Duration::from_secs(3600), 100 * (36 + ENTRY_OVERHEAD as u64));
        for n in 0..1_000 {
            set.revoke(&format!("jti-{n:032}"), Some(&format!("sid-{n:032}")), None, 1);
        }
        set.sids.run_pending_tasks();
        set.jtis.run_pending_tasks();
        assert!(set.bytes() <= 2 * 100 * (36 + ENTRY_OVERHEAD as u64), "bounded: {} bytes", set.bytes());
        assert!(set.evicted() >= 800, "each forgotten sid is counted: {}", set.evicted());
        // The oldest go, the newest stay: a logout that just happened is never the one forgotten.
        let revoked = |n: usize| set.is_revoked(&Session { sid: Some(format!("sid-{n:032}")), ..crate::session::sample("s", "u") });
        assert!(revoked(999) && revoked(950), "the newest revocations are held");
        assert!(!revoked(0), "the oldest went first");
        let roomy = Revocations::new(Duration::from_secs(3600));
        roomy.revoke("jti", Some("sid"), None, 1);
        roomy.sids.run_pending_tasks();
        assert_eq!(roomy.evicted(), 0);
        assert!(roomy.bytes() > 0);
    }
}
