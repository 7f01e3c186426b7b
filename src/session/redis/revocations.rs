//! Back-channel revocations in Redis, seen by every replica.
//!
//! `trousseau-proxy:revoked:sid:<sid>` and `trousseau-proxy:revoked:sub:<sub>` hold the unix time
//! of the logout and expire after `max_lifetime` (no session outlives that); a logout token's `jti`
//! is claimed with `SET NX` (`trousseau-proxy:revoked:jti:<jti>`, one hour) in the same atomic
//! script that records the revocation, so a replayed token is refused on any replica and a token
//! is never half-applied.
//!
//! Checking every request against Redis would put Redis on the hot path: answers are cached here
//! for `staleness` (default 1 s, 0 = no cache), so a logout takes effect everywhere within that
//! time, and concurrent requests of one session share one lookup. When Redis cannot answer and
//! the cached answer is too old, the check fails (the request gets 503), never passes.

use std::sync::Arc;
use std::time::Duration;

use super::{Redis, KEY_PREFIX};
use crate::session::store::StoreError;
use crate::session::Session;

/// How long a logout token's `jti` is remembered (as in the in-memory revocation set).
const JTI_TTL: Duration = Duration::from_secs(3600);

/// Claims the `jti` (KEYS[1], NX, ARGV[1] seconds) and, only if it was new, records the logout
/// time ARGV[2] under KEYS[2] for ARGV[3] seconds. 1 = recorded, 0 = replay.
const REVOKE_SCRIPT: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
if KEYS[2] then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
end
return 1
";

/// What Redis says about one session's `sid` and `sub`.
#[derive(Clone, Copy, Debug)]
struct Verdict {
    sid_revoked: bool,
    /// When the user was last logged out everywhere, if ever.
    sub_revoked_at: Option<u64>,
}

/// The revocation set in Redis, with a short local cache.
pub struct RedisRevocations {
    redis: Arc<Redis>,
    max_lifetime: Duration,
    /// `(sid, sub)` → verdict; `None` when `staleness` is zero.
    cache: Option<moka::future::Cache<(Option<String>, String), Verdict>>,
}

impl RedisRevocations {
    /// Revocations kept `max_lifetime` in Redis, read through a cache at most `staleness` old.
    pub fn new(redis: Arc<Redis>, max_lifetime: Duration, staleness: Duration) -> RedisRevocations {
        let cache = (!staleness.is_zero()).then(|| moka::future::Cache::builder().max_capacity(100_000).time_to_live(staleness).build());
        RedisRevocations { redis, max_lifetime, cache }
    }

    /// Records a logout on every replica. `Ok(false)` if this `jti` was used before (a replay).
    pub async fn revoke(&self, jti: &str, sid: Option<&str>, sub: Option<&str>, now: u64) -> Result<bool, StoreError> {
        let target = match (sid, sub) {
            (Some(sid), _) => Some(format!("{KEY_PREFIX}revoked:sid:{sid}")),
            (None, Some(sub)) => Some(format!("{KEY_PREFIX}revoked:sub:{sub}")),
            (None, None) => None,
        };
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(REVOKE_SCRIPT).arg(if target.is_some() { 2 } else { 1 }).arg(format!("{KEY_PREFIX}revoked:jti:{jti}"));
        if let Some(target) = &target {
            cmd.arg(target);
        }
        cmd.arg(JTI_TTL.as_secs()).arg(now).arg(self.max_lifetime.as_secs().max(1));
        let recorded: i64 = self.redis.run(&cmd).await?;
        if recorded == 1 {
            // This replica sees it at once; the others within `staleness`.
            if let Some(cache) = &self.cache {
                cache.invalidate_all();
            }
        }
        Ok(recorded == 1)
    }

    /// Whether this session was ended by a back-channel logout, on any replica.
    pub async fn is_revoked(&self, session: &Session) -> Result<bool, StoreError> {
        let verdict = match &self.cache {
            Some(cache) => {
                let key = (session.sid.clone(), session.identity.sub.clone());
                cache.try_get_with(key, self.lookup(session)).await.map_err(|e| match &*e {
                    StoreError::Unavailable(reason) => StoreError::Unavailable(reason.clone()),
                })?
            }
            None => self.lookup(session).await?,
        };
        Ok(verdict.sid_revoked || verdict.sub_revoked_at.is_some_and(|at| session.created_at <= at))
    }

    /// One round trip: the `sid` and `sub` entries together.
    async fn lookup(&self, session: &Session) -> Result<Verdict, StoreError> {
        let sid_key = match &session.sid {
            Some(sid) => format!("{KEY_PREFIX}revoked:sid:{sid}"),
            // MGET needs a key; this one is never written.
            None => format!("{KEY_PREFIX}revoked:sid:"),
        };
        let sub_key = format!("{KEY_PREFIX}revoked:sub:{}", session.identity.sub);
        let (sid, sub): (Option<String>, Option<String>) = self.redis.run(::redis::cmd("MGET").arg(&sid_key).arg(&sub_key)).await?;
        Ok(Verdict {
            sid_revoked: session.sid.is_some() && sid.is_some(),
            sub_revoked_at: sub.and_then(|at| at.parse().ok()),
        })
    }
}
