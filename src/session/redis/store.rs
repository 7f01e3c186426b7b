//! Server-side sessions in Redis: `trousseau-proxy:session:<sha256(handle)>` → the sealed session,
//! expiring with the session.
//!
//! The key is a hash of the handle, so reading Redis's keys gives no cookie away. The value is
//! sealed (purpose `session-record`) and carries the same hash inside: a record copied under
//! another key (by someone with write access to Redis) does not open as that other session.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{sha256_hex, ttl_millis, Redis, KEY_PREFIX};
use crate::session::seal::Sealer;
use crate::session::store::{SessionStore, StoreFuture};
use crate::session::Session;

/// Sealing purpose of a stored session record.
pub const RECORD_PURPOSE: &str = "session-record";

/// Sessions in Redis, sealed, shared by every replica.
pub struct RedisStore {
    redis: Arc<Redis>,
    sealer: Arc<Sealer>,
}

/// What is sealed: the session and the key it belongs under.
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    /// SHA-256 hex of the handle: the record opens only under its own key.
    #[serde(rename = "k")]
    key: std::borrow::Cow<'a, str>,
    #[serde(rename = "s")]
    session: std::borrow::Cow<'a, Session>,
}

impl RedisStore {
    /// A store on this connection, sealing with the session secrets.
    pub fn new(redis: Arc<Redis>, sealer: Arc<Sealer>) -> RedisStore {
        RedisStore { redis, sealer }
    }

    /// The Redis key of a handle.
    pub fn key_of(handle: &str) -> String {
        format!("{KEY_PREFIX}session:{}", sha256_hex(handle.as_bytes()))
    }

    fn open(&self, handle_hash: &str, sealed: &str) -> Option<Session> {
        let plain = self.sealer.open(RECORD_PURPOSE, sealed)?;
        let record: Record<'_> = serde_json::from_slice(&plain).ok()?;
        (record.key == handle_hash).then(|| record.session.into_owned())
    }
}

impl SessionStore for RedisStore {
    fn load<'a>(&'a self, handle: &'a str) -> StoreFuture<'a, Option<Session>> {
        Box::pin(async move {
            let hash = sha256_hex(handle.as_bytes());
            let sealed: Option<String> = self.redis.run(::redis::cmd("GET").arg(format!("{KEY_PREFIX}session:{hash}"))).await?;
            let Some(sealed) = sealed else { return Ok(None) };
            let session = self.open(&hash, &sealed);
            if session.is_none() {
                // Sealed with a secret no longer configured, or not ours: no session.
                tracing::debug!("a stored session record does not open with the current secrets: no session");
            }
            Ok(session)
        })
    }

    fn save<'a>(&'a self, handle: &'a str, session: &'a Session, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let hash = sha256_hex(handle.as_bytes());
            let record = Record { key: hash.as_str().into(), session: std::borrow::Cow::Borrowed(session) };
            let plain = serde_json::to_vec(&record).map_err(|e| crate::session::store::StoreError::Unavailable(e.to_string()))?;
            let sealed = self.sealer.seal(RECORD_PURPOSE, &plain);
            let cmd = ::redis::cmd("SET").arg(format!("{KEY_PREFIX}session:{hash}")).arg(sealed).arg("PX").arg(ttl_millis(ttl)).clone();
            self.redis.run::<()>(&cmd).await
        })
    }

    fn remove<'a>(&'a self, handle: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.redis.run::<()>(::redis::cmd("DEL").arg(Self::key_of(handle))).await })
    }
}
