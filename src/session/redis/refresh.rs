//! One refresh per refresh token across every replica.
//!
//! Trousseau rotates refresh tokens and treats a reused one as theft, so when N replicas receive
//! the same expired cookie exactly one may spend the token. Per refresh token (keys named by its
//! SHA-256, never the token):
//!
//! - `trousseau-proxy:refresh:lock:<hash>` — `SET NX PX`: whoever sets it calls Trousseau. Its TTL
//!   outlives the slowest refresh, so it is never taken over while the token is being spent.
//! - `trousseau-proxy:refresh:result:<hash>` — the outcome, sealed (purpose `refresh-result`), kept
//!   60 s: the refreshed session, or "ended" when Trousseau refused the token. It is written
//!   before the lock is released, and "is there a result? else take the lock" is one atomic
//!   script, so nobody can take the lock after the token was spent.
//!
//! The others poll the result (20 ms, doubling up to 200 ms) while the lock is held. Within one
//! replica, concurrent requests are already coalesced by the [`crate::session::refresh::Refresher`]:
//! only one request per replica talks to Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{ttl_millis, Redis};
use crate::session::seal::Sealer;
use crate::session::store::StoreError;
use crate::session::Session;

/// Sealing purpose of a shared refresh result.
pub const RESULT_PURPOSE: &str = "refresh-result";

/// How long a refresh result is shared (late requests with the old cookie find it).
const RESULT_TTL: Duration = Duration::from_secs(60);

/// First and longest wait between two looks at the result.
const FIRST_POLL: Duration = Duration::from_millis(20);
const MAX_POLL: Duration = Duration::from_millis(200);

/// If the result exists, returns it; otherwise takes the lock (KEYS[2] = ARGV[1], PX ARGV[2]) if
/// free. Atomic, so nobody leads once a result is published.
const BEGIN_SCRIPT: &str = r"
local done = redis.call('GET', KEYS[1])
if done then return {'done', done} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'lead'} end
return {'wait'}
";

/// Publishes the result (ARGV[2], unless empty, for ARGV[3] ms), then releases the lock if it is
/// still ours (ARGV[1]).
const FINISH_SCRIPT: &str = r"
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return 1
";

/// What the replica that refreshed tells the others.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SharedRefresh {
    /// Trousseau answered with new tokens: the session everybody continues with.
    #[serde(rename = "ok")]
    Refreshed(Box<Session>),
    /// Trousseau refused the token (`invalid_grant`): the session is over everywhere.
    #[serde(rename = "ended")]
    Ended,
}

/// What this replica does about a due refresh.
#[derive(Debug)]
pub enum Turn {
    /// This replica holds the lock: it calls Trousseau, then [`RefreshCoordinator::finish`].
    Lead(Lock),
    /// Another replica already refreshed (or learnt the session ended).
    Done(SharedRefresh),
    /// Another replica was refreshing and stopped without a result (Trousseau failed, or the
    /// replica died): a transient failure for this request; the next one tries again.
    Abandoned,
}

/// The refresh lock this replica holds.
#[derive(Debug)]
pub struct Lock {
    hash: String,
    owner: String,
}

/// The sealed form of a result: bound to its refresh token's hash.
#[derive(Serialize, Deserialize)]
struct Sealed {
    #[serde(rename = "k")]
    hash: String,
    #[serde(rename = "r")]
    result: SharedRefresh,
}

/// Refresh locks and shared results in Redis.
pub struct RefreshCoordinator {
    redis: Arc<Redis>,
    sealer: Arc<Sealer>,
    lock_ttl: Duration,
}

impl RefreshCoordinator {
    /// `lock_ttl` must outlive the slowest refresh call (a few times the IdP timeout).
    pub fn new(redis: Arc<Redis>, sealer: Arc<Sealer>, lock_ttl: Duration) -> RefreshCoordinator {
        RefreshCoordinator { redis, sealer, lock_ttl }
    }

    /// Leads the refresh of this token, or waits for the replica that does.
    pub async fn begin(&self, token_sha256: &[u8; 32]) -> Result<Turn, StoreError> {
        let hash = hex(token_sha256);
        let (result_key, lock_key) = self.redis.naming().refresh(&hash);
        let owner = random_owner();
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(BEGIN_SCRIPT).arg(2).arg(&result_key).arg(&lock_key).arg(&owner).arg(ttl_millis(self.lock_ttl));
        let answer: Vec<String> = self.redis.run(&cmd).await?;
        match answer.first().map(String::as_str) {
            Some("lead") => return Ok(Turn::Lead(Lock { hash, owner })),
            Some("done") => return Ok(self.open(&hash, answer.get(1)).map_or(Turn::Abandoned, Turn::Done)),
            _ => {}
        }

        // Another replica is calling Trousseau: wait for its result while its lock lives.
        let deadline = Instant::now() + self.lock_ttl + Duration::from_secs(1);
        let mut delay = FIRST_POLL;
        while Instant::now() < deadline {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_POLL);
            let (result, lock): (Option<String>, Option<String>) =
                self.redis.run(::redis::cmd("MGET").arg(&result_key).arg(&lock_key)).await?;
            if result.is_some() {
                return Ok(self.open(&hash, result.as_ref()).map_or(Turn::Abandoned, Turn::Done));
            }
            if lock.is_none() {
                return Ok(Turn::Abandoned);
            }
        }
        Ok(Turn::Abandoned)
    }

    /// Publishes what came of this replica's refresh (`None` for a transient failure, which is
    /// not shared: the next request retries) and releases the lock.
    pub async fn finish(&self, lock: Lock, result: Option<&SharedRefresh>) -> Result<(), StoreError> {
        let (result_key, lock_key) = self.redis.naming().refresh(&lock.hash);
        let sealed = match result {
            Some(result) => {
                let plain = serde_json::to_vec(&Sealed { hash: lock.hash.clone(), result: result.clone() })
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                self.sealer.seal(RESULT_PURPOSE, &plain)
            }
            None => String::new(),
        };
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(FINISH_SCRIPT).arg(2).arg(&result_key).arg(&lock_key).arg(&lock.owner).arg(sealed).arg(ttl_millis(RESULT_TTL));
        self.redis.run::<i64>(&cmd).await.map(|_| ())
    }

    fn open(&self, hash: &str, sealed: Option<&String>) -> Option<SharedRefresh> {
        let plain = self.sealer.open(RESULT_PURPOSE, sealed?)?;
        let sealed: Sealed = serde_json::from_slice(&plain).ok()?;
        (sealed.hash == hash).then_some(sealed.result)
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_owner() -> String {
    crate::util::hash::hex(&crate::util::id::random_bytes::<16>())
}
