//! Server-side sessions in Redis: `trousseau-proxy:session:<sha256(handle)>` → the sealed session,
//! expiring with the session (`{trousseau-proxy}:…` in a Cluster: [`super::Naming`]).
//!
//! The key is a hash of the handle, so reading Redis's keys gives no cookie away. The value is
//! sealed (purpose `session-record`) and carries the same hash inside: a record copied under
//! another key (by someone with write access to Redis) does not open as that other session.
//!
//! Each user's records are listed in a sorted set (`trousseau-proxy:user:…`, oldest first), and
//! the records of one Trousseau session in another (`trousseau-proxy:sid:…`). A sign-in adds its
//! record to both and ends the user's oldest records beyond `session.max_sessions_per_user`, in one
//! atomic script; back-channel logout deletes the records they list
//! ([`super::RedisRevocations`]), so a signed-out session does not come back when someone deletes
//! its revocation key.
//!
//! What is read back is bounded and checked: a value that is not a string, or longer than any
//! session we write, is "no session" for that handle — never a large allocation, never a Redis
//! failure.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{sha256_hex, ttl_millis, Redis};
use crate::session::seal::Sealer;
use crate::session::store::{SessionStore, StoreError, StoreFuture};
use crate::session::Session;

/// Sealing purpose of a stored session record.
pub const RECORD_PURPOSE: &str = "session-record";

/// The longest record read back (characters). Sealed sessions are a few KB; the cookie codec
/// refuses sealed values above the same size.
const MAX_RECORD_CHARS: usize = 256 * 1024;

/// The record under KEYS[1] if it is a string of at most ARGV[1] bytes; `''` if something else
/// is there (another type, too long); nil if nothing is.
const LOAD_SCRIPT: &str = r"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return false end
if t ~= 'string' or redis.call('STRLEN', KEYS[1]) > tonumber(ARGV[1]) then return '' end
return redis.call('GET', KEYS[1])
";

/// A sign-in: stores the record KEYS[1] (ARGV[1], for ARGV[2] ms), lists its hash ARGV[3] (score
/// ARGV[4], the time in ms) in the user index KEYS[2] and, when the session has a `sid`, in the
/// sid index KEYS[3]. Each index first drops hashes whose record is gone (ARGV[7] is the record
/// key prefix); then the user's oldest records beyond ARGV[5] are deleted. Indexes live ARGV[6] ms
/// past the newest sign-in. Returns how many sessions ended. Both indexes hold at most the cap
/// (plus one) afterwards, so the loops stay short.
const CREATE_SCRIPT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local ended = 0
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[4], ARGV[3])
  for _, m in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
    if redis.call('EXISTS', ARGV[7] .. m) == 0 then redis.call('ZREM', KEYS[i], m) end
  end
  local extra = redis.call('ZCARD', KEYS[i]) - tonumber(ARGV[5])
  if extra > 0 then
    for _, m in ipairs(redis.call('ZRANGE', KEYS[i], 0, extra - 1)) do
      if i == 2 then
        redis.call('DEL', ARGV[7] .. m)
        ended = ended + 1
      end
    end
    redis.call('ZREMRANGEBYRANK', KEYS[i], 0, extra - 1)
  end
  redis.call('PEXPIRE', KEYS[i], ARGV[6])
end
return ended
";

/// Sessions in Redis, sealed, shared by every replica.
pub struct RedisStore {
    redis: Arc<Redis>,
    sealer: Arc<Sealer>,
    /// Names this application's index keys ([`crate::session::seal::AppBinding::tag`]).
    app_tag: String,
    max_per_user: u32,
    /// How long an index lives past its newest record (no record outlives `max_lifetime`).
    max_lifetime: Duration,
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
    /// A store on this connection, sealing with the session secrets; at most `max_per_user`
    /// sessions per user of the application tagged `app_tag`.
    pub fn new(redis: Arc<Redis>, sealer: Arc<Sealer>, app_tag: String, max_per_user: u32, max_lifetime: Duration) -> RedisStore {
        RedisStore { redis, sealer, app_tag, max_per_user: max_per_user.max(1), max_lifetime }
    }

    /// The Redis key of a handle's hash.
    fn key_of(&self, hash: &str) -> String {
        self.redis.naming().record_prefix() + hash
    }

    fn open(&self, handle_hash: &str, sealed: &str) -> Option<Session> {
        let plain = self.sealer.open(RECORD_PURPOSE, sealed)?;
        let record: Record<'_> = serde_json::from_slice(&plain).ok()?;
        (record.key == handle_hash).then(|| record.session.into_owned())
    }

    fn seal(&self, hash: &str, session: &Session) -> Result<String, StoreError> {
        let record = Record { key: hash.into(), session: std::borrow::Cow::Borrowed(session) };
        let plain = serde_json::to_vec(&record).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(self.sealer.seal(RECORD_PURPOSE, &plain))
    }
}

impl SessionStore for RedisStore {
    fn shared(&self) -> bool {
        true
    }

    fn load<'a>(&'a self, handle: &'a str) -> StoreFuture<'a, Option<Session>> {
        Box::pin(async move {
            let hash = sha256_hex(handle.as_bytes());
            let mut cmd = ::redis::cmd("EVAL");
            cmd.arg(LOAD_SCRIPT).arg(1).arg(self.key_of(&hash)).arg(MAX_RECORD_CHARS);
            // Bytes, not a String: a value that is not UTF-8 is a bad record, not a Redis failure.
            let raw: Option<Vec<u8>> = self.redis.run(&cmd).await?;
            let Some(raw) = raw else { return Ok(None) };
            let session = std::str::from_utf8(&raw).ok().and_then(|sealed| self.open(&hash, sealed));
            if session.is_none() {
                // Sealed with a secret no longer configured, for another application, or not ours.
                tracing::debug!("a stored session record is unreadable (other secrets or application, wrong type, too long): no session");
            }
            Ok(session)
        })
    }

    fn create<'a>(&'a self, handle: &'a str, session: &'a Session, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let hash = sha256_hex(handle.as_bytes());
            let sealed = self.seal(&hash, session)?;
            let now_ms = crate::util::clock::now_millis();
            let mut cmd = ::redis::cmd("EVAL");
            cmd.arg(CREATE_SCRIPT).arg(if session.sid.is_some() { 3 } else { 2 });
            let naming = self.redis.naming();
            cmd.arg(self.key_of(&hash)).arg(naming.user_index(&self.app_tag, &session.identity.sub));
            if let Some(sid) = &session.sid {
                cmd.arg(naming.sid_index(&self.app_tag, sid));
            }
            cmd.arg(sealed).arg(ttl_millis(ttl)).arg(&hash).arg(now_ms).arg(self.max_per_user);
            cmd.arg(ttl_millis(self.max_lifetime)).arg(naming.record_prefix());
            let ended: i64 = self.redis.run(&cmd).await?;
            if ended > 0 {
                tracing::info!(sub = %session.identity.sub, ended, "signed in beyond session.max_sessions_per_user: the oldest sessions ended");
            }
            Ok(())
        })
    }

    fn replace<'a>(&'a self, handle: &'a str, session: &'a Session, ttl: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let hash = sha256_hex(handle.as_bytes());
            let sealed = self.seal(&hash, session)?;
            // XX: only over a record that still exists; an ended session stays ended.
            let cmd = ::redis::cmd("SET").arg(self.key_of(&hash)).arg(sealed).arg("PX").arg(ttl_millis(ttl)).arg("XX").clone();
            let done: Option<String> = self.redis.run(&cmd).await?;
            Ok(done.is_some())
        })
    }

    fn remove<'a>(&'a self, handle: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.redis.run::<()>(::redis::cmd("DEL").arg(self.key_of(&sha256_hex(handle.as_bytes())))).await })
    }
}
