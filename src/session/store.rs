//! Where a session lives when it does not live in the cookie.
//!
//! With `session.store: cookie` (the default) the whole [`Session`] is sealed into the cookie and no
//! store exists. With a server-side store the cookie carries only a sealed random *handle*, and the
//! session itself is kept here: small cookies whatever the claims, and a refreshed session replaces
//! the stored one so every tab sees it at once. [`MemoryStore`] keeps sessions in this process;
//! other backends (Redis) implement the same trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
    /// Stores (or replaces) the session for this handle, for `ttl`.
    fn save<'a>(&'a self, handle: &'a str, session: &'a Session, ttl: Duration) -> StoreFuture<'a, ()>;
    /// Forgets the session (sign-out).
    fn remove<'a>(&'a self, handle: &'a str) -> StoreFuture<'a, ()>;
}

/// Sessions in this process's memory (moka), each expiring with its own remaining lifetime. Lost
/// on restart and not shared between replicas: use it for one instance, or Redis for several.
pub struct MemoryStore {
    sessions: moka::future::Cache<String, (Arc<Session>, Instant)>,
}

/// Per-entry expiry: the deadline stored beside the session.
struct UntilDeadline;

impl moka::Expiry<String, (Arc<Session>, Instant)> for UntilDeadline {
    fn expire_after_create(&self, _key: &String, value: &(Arc<Session>, Instant), created_at: Instant) -> Option<Duration> {
        Some(value.1.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &(Arc<Session>, Instant),
        updated_at: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.1.saturating_duration_since(updated_at))
    }
}

impl MemoryStore {
    /// An empty store holding at most `capacity` sessions.
    pub fn new(capacity: u64) -> MemoryStore {
        MemoryStore { sessions: moka::future::Cache::builder().max_capacity(capacity).expire_after(UntilDeadline).build() }
    }

    /// How many sessions are held.
    pub fn len(&self) -> u64 {
        self.sessions.entry_count()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionStore for MemoryStore {
    fn load<'a>(&'a self, handle: &'a str) -> StoreFuture<'a, Option<Session>> {
        Box::pin(async move { Ok(self.sessions.get(handle).await.map(|(s, _)| (*s).clone())) })
    }

    fn save<'a>(&'a self, handle: &'a str, session: &'a Session, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.sessions.insert(handle.to_string(), (Arc::new(session.clone()), Instant::now() + ttl)).await;
            Ok(())
        })
    }

    fn remove<'a>(&'a self, handle: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.sessions.invalidate(handle).await;
            Ok(())
        })
    }
}
