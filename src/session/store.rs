//! Where a session lives when it does not live in the cookie.
//!
//! With `session.store: cookie` (the default) the whole [`Session`] is sealed into the cookie and no
//! store exists. With a server-side store the cookie carries only a sealed random *handle*, and the
//! session itself is kept here: small cookies whatever the claims, and a refreshed session replaces
//! the stored one so every tab sees it at once. [`MemoryStore`] keeps sessions in this process;
//! other backends (Redis) implement the same trait.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::session::Session;

/// The future every store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store that cannot answer. The request path fails closed on it (503), never open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or failed.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// A server-side session store, keyed by the random handle sealed in the cookie.
pub trait SessionStore: Send + Sync + 'static {
    /// The session for this handle, if it exists and has not expired.
    fn load<'a>(&'a self, handle: &'a str) -> StoreFuture<'a, Option<Session>>;
    /// Stores a new session (a sign-in) for `ttl`. If its user then has more than the per-user cap,
    /// the user's oldest sessions end.
    fn create<'a>(&'a self, handle: &'a str, session: &'a Session, ttl: Duration) -> StoreFuture<'a, ()>;
    /// Replaces a stored session (a refresh, an organization choice) for `ttl`, only if it is still
    /// stored: `false` when it ended meanwhile (sign-out, the per-user cap), which is not undone.
    fn replace<'a>(&'a self, handle: &'a str, session: &'a Session, ttl: Duration) -> StoreFuture<'a, bool>;
    /// Forgets the session (sign-out).
    fn remove<'a>(&'a self, handle: &'a str) -> StoreFuture<'a, ()>;
    /// Whether every replica sees the same sessions (Redis), not only this process (memory).
    fn shared(&self) -> bool;
}

/// Sessions in this process's memory (moka), each expiring with its own remaining lifetime. Lost
/// on restart and not shared between replicas: use it for one instance, or Redis for several.
///
/// Bounded two ways: at most `max_per_user` sessions per `sub` (a new sign-in ends the user's
/// oldest), and at most `max_bytes` in all, weighed by each session's size (the least recently
/// used sessions end first). So one account signing in a thousand times holds a few sessions, not
/// a thousand, and a flood of sign-ins cannot take the process's memory.
pub struct MemoryStore {
    sessions: moka::future::Cache<String, Stored>,
    /// `sub` → that user's handles, oldest first. Kept in step with `sessions` by its eviction
    /// listener (expired, evicted or removed sessions leave their user's list).
    by_user: Arc<Mutex<HashMap<String, VecDeque<String>>>>,
    max_per_user: usize,
}

/// One stored session, with its deadline and its weight.
#[derive(Clone)]
struct Stored {
    session: Arc<Session>,
    deadline: Instant,
    /// Approximate bytes held: the session's JSON plus the handle and bookkeeping.
    weight: u32,
}

/// Bytes counted per entry beyond the session itself: handle, map entry, moka's node, user list.
const ENTRY_OVERHEAD: usize = 256;

/// Per-entry expiry: the deadline stored beside the session.
struct UntilDeadline;

impl moka::Expiry<String, Stored> for UntilDeadline {
    fn expire_after_create(&self, _key: &String, value: &Stored, created_at: Instant) -> Option<Duration> {
        Some(value.deadline.saturating_duration_since(created_at))
    }

    fn expire_after_update(&self, _key: &String, value: &Stored, updated_at: Instant, _remaining: Option<Duration>) -> Option<Duration> {
        Some(value.deadline.saturating_duration_since(updated_at))
    }
}

impl MemoryStore {
    /// An empty store holding at most `max_bytes` of sessions and `max_per_user` sessions per user.
    pub fn new(max_bytes: u64, max_per_user: usize) -> MemoryStore {
        let by_user: Arc<Mutex<HashMap<String, VecDeque<String>>>> = Arc::default();
        let index = by_user.clone();
        let sessions = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_handle: &String, stored: &Stored| stored.weight)
            // Least recently used first: an idle session goes before an active one, and a new
            // sign-in is always admitted (TinyLFU could refuse it and loop the user through sign-in).
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .expire_after(UntilDeadline)
            .eviction_listener(move |handle: Arc<String>, stored: Stored, cause| {
                if cause == moka::notification::RemovalCause::Replaced {
                    return;
                }
                let mut users = lock(&index);
                let sub = &stored.session.identity.sub;
                if let Some(list) = users.get_mut(sub) {
                    list.retain(|h| h != handle.as_str());
                    if list.is_empty() {
                        users.remove(sub);
                    }
                }
            })
            .build();
        MemoryStore { sessions, by_user, max_per_user: max_per_user.max(1) }
    }

    /// How many sessions are held.
    pub fn len(&self) -> u64 {
        self.sessions.entry_count()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes held (what the byte bound counts), after pending evictions.
    pub async fn weighted_size(&self) -> u64 {
        self.sessions.run_pending_tasks().await;
        self.sessions.weighted_size()
    }

    fn stored(session: &Session, handle: &str, ttl: Duration) -> Stored {
        let json = serde_json::to_vec(session).map(|j| j.len()).unwrap_or(16 * 1024);
        let weight = u32::try_from(json + handle.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX);
        Stored { session: Arc::new(session.clone()), deadline: Instant::now() + ttl, weight }
    }
}

/// The user index's lock; a panic elsewhere while it was held leaves a usable index.
fn lock(index: &Mutex<HashMap<String, VecDeque<String>>>) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<String>>> {
    index.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SessionStore for MemoryStore {
    fn shared(&self) -> bool {
        false
    }

    fn load<'a>(&'a self, handle: &'a str) -> StoreFuture<'a, Option<Session>> {
        Box::pin(async move { Ok(self.sessions.get(handle).await.map(|s| (*s.session).clone())) })
    }

    fn create<'a>(&'a self, handle: &'a str, session: &'a Session, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // Listed before it is stored, so a concurrent sign-in of the same user counts it.
            let ended: Vec<String> = {
                let mut users = lock(&self.by_user);
                let list = users.entry(session.identity.sub.clone()).or_default();
                list.push_back(handle.to_string());
                let excess = list.len().saturating_sub(self.max_per_user);
                list.drain(..excess).collect()
            };
            self.sessions.insert(handle.to_string(), Self::stored(session, handle, ttl)).await;
            // Outside the lock: the eviction listener takes it.
            for old in ended {
                self.sessions.invalidate(&old).await;
            }
            Ok(())
        })
    }

    fn replace<'a>(&'a self, handle: &'a str, session: &'a Session, ttl: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let stored = Self::stored(session, handle, ttl);
            // Atomic "only if present": a session ended meanwhile is not brought back.
            let result = self
                .sessions
                .entry(handle.to_string())
                .and_compute_with(|existing| {
                    let op = match existing {
                        Some(_) => moka::ops::compute::Op::Put(stored),
                        None => moka::ops::compute::Op::Nop,
                    };
                    std::future::ready(op)
                })
                .await;
            Ok(matches!(result, moka::ops::compute::CompResult::ReplacedWith(_)))
        })
    }

    fn remove<'a>(&'a self, handle: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.sessions.invalidate(handle).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn session(sub: &str, claims: usize) -> Session {
        let identity: Identity = serde_json::from_value(serde_json::json!({"sub": sub, "name": "x".repeat(claims)})).unwrap();
        Session { identity, ..crate::session::sample("", sub) }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[tokio::test]
    async fn a_users_oldest_sessions_end_beyond_the_cap() {
        let store = MemoryStore::new(1 << 30, 3);
        for i in 0..5 {
            store.create(&format!("jean-{i}"), &session("jean", 10), DAY).await.unwrap();
        }
        store.create("sam-0", &session("sam", 10), DAY).await.unwrap();
        for i in 0..2 {
            assert!(store.load(&format!("jean-{i}")).await.unwrap().is_none(), "jean-{i} ended");
        }
        for i in 2..5 {
            assert!(store.load(&format!("jean-{i}")).await.unwrap().is_some(), "jean-{i} lives");
        }
        assert!(store.load("sam-0").await.unwrap().is_some(), "other users are not affected");
        // A refresh replaces in place: it neither counts as a new session nor revives an ended one.
        assert!(store.replace("jean-4", &session("jean", 11), DAY).await.unwrap());
        assert!(!store.replace("jean-0", &session("jean", 11), DAY).await.unwrap());
        assert!(store.load("jean-0").await.unwrap().is_none());
        assert!(store.load("jean-2").await.unwrap().is_some());
        // Sign-out frees a place: the next sign-in ends nobody.
        store.remove("jean-3").await.unwrap();
        store.sessions.run_pending_tasks().await;
        store.create("jean-5", &session("jean", 10), DAY).await.unwrap();
        for live in ["jean-2", "jean-4", "jean-5"] {
            assert!(store.load(live).await.unwrap().is_some(), "{live} lives");
        }
        assert_eq!(lock(&store.by_user)["jean"].len(), 3);
    }

    #[tokio::test]
    async fn the_store_holds_at_most_its_byte_bound_least_recently_used_first() {
        let store = MemoryStore::new(1024 * 1024, 1000);
        // ~10 KB sessions: 300 of them are ~3 MB, three times the bound.
        for i in 0..300 {
            store.create(&format!("h-{i}"), &session(&format!("user-{i}"), 10_000), DAY).await.unwrap();
        }
        let held = store.weighted_size().await;
        assert!(held <= 1024 * 1024, "{held} bytes held");
        assert!(held > 900 * 1024, "the bound is used, not undershot: {held}");
        assert!(store.load("h-0").await.unwrap().is_none(), "the least recently used went first");
        assert!(store.load("h-299").await.unwrap().is_some(), "the newest stays");
        // Evicted sessions leave the user index too.
        assert!(lock(&store.by_user).len() < 120, "{} users indexed", lock(&store.by_user).len());
    }
}
