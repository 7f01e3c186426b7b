//! Revocations in Redis, seen by every replica.
//!
//! `trousseau-proxy:revoked:sid:<sid>` and `trousseau-proxy:revoked:sub:<sub>` hold the unix time
//! of a back-channel logout and expire after `max_lifetime` (no session outlives that); a logout
//! token's `jti` is claimed with `SET NX` (`trousseau-proxy:revoked:jti:<jti>`, one hour) in the
//! same atomic script that records the revocation, so a replayed token is refused on any replica
//! and a token is never half-applied. The same script deletes the session records that sid or sub
//! lists (`store: redis`, see [`super::RedisStore`]): the revocation key is then not the only thing
//! standing between a signed-out session and its return.
//!
//! `trousseau-proxy:revoked:session:<id>` ends one session at its sign-out (`/.trousseau/logout`
//! with `store: cookie`: the cookie itself cannot be taken back, so a copy of it must be refused),
//! for the session's remaining lifetime.
//!
//! Whatever is found under a revocation key counts: a value that is not a readable time (another
//! type, garbage, too long) revokes, it never lets a session through.
//!
//! Checking every request against Redis would put Redis on the hot path: answers are cached here
//! for `staleness` (default 1 s, 0 = no cache), so a logout takes effect everywhere within that
//! time, and concurrent requests of one session share one lookup. When Redis cannot answer and
//! the cached answer is too old, the check fails (the request gets 503), never passes.

use std::sync::Arc;
use std::time::Duration;

use super::{ttl_millis, Redis};
use crate::session::store::StoreError;
use crate::session::Session;

/// How long a logout token's `jti` is remembered (as in the in-memory revocation set).
const JTI_TTL: Duration = Duration::from_secs(3600);

/// Claims the `jti` (KEYS[1], NX, ARGV[1] seconds) and, only if it was new, records the logout
/// time ARGV[2] under KEYS[2] for ARGV[3] seconds, then deletes every session record listed in the
/// index KEYS[3] (record key prefix ARGV[4]) and the index. 1 = recorded, 0 = replay.
const REVOKE_SCRIPT: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
if KEYS[2] then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    redis.call('DEL', ARGV[4] .. m)
  end
  redis.call('DEL', KEYS[3])
end
return 1
";

/// For each key: `''` when absent, `'=' .. value` for a short string, `'?'` for anything else
/// (another type, or longer than any time we write). Bounded whatever Redis holds.
const LOOKUP_SCRIPT: &str = r"
local out = {}
for i, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k)['ok']
  if t == 'none' then
    out[i] = ''
  elseif t == 'string' and redis.call('STRLEN', k) <= 32 then
    out[i] = '=' .. redis.call('GET', k)
  else
    out[i] = '?'
  end
end
return out
";

/// What Redis says about one session.
#[derive(Clone, Copy, Debug)]
struct Verdict {
    /// Its `sid` was logged out, or this very session was signed out.
    revoked: bool,
    /// When the user was last logged out everywhere, if ever (`u64::MAX`: unreadable, so always).
    sub_revoked_at: Option<u64>,
}

/// The revocation set in Redis, with a short local cache. A clone shares the cache.
#[derive(Clone)]
pub struct RedisRevocations {
    redis: Arc<Redis>,
    max_lifetime: Duration,
    /// Names this application's index keys (see [`super::RedisStore`]).
    app_tag: String,
    /// `(session id, sid)` → verdict; `None` when `staleness` is zero.
    cache: Option<moka::future::Cache<(String, Option<String>), Verdict>>,
}

impl RedisRevocations {
    /// Revocations kept `max_lifetime` in Redis, read through a cache at most `staleness` old, for
    /// the application tagged `app_tag`.
    pub fn new(redis: Arc<Redis>, max_lifetime: Duration, staleness: Duration, app_tag: String) -> RedisRevocations {
        let cache = (!staleness.is_zero()).then(|| moka::future::Cache::builder().max_capacity(100_000).time_to_live(staleness).build());
        RedisRevocations { redis, max_lifetime, app_tag, cache }
    }

    /// Records a logout on every replica. `Ok(false)` if this `jti` was used before (a replay).
    pub async fn revoke(&self, jti: &str, sid: Option<&str>, sub: Option<&str>, now: u64) -> Result<bool, StoreError> {
        let naming = self.redis.naming();
        let target = match (sid, sub) {
            (Some(sid), _) => Some((naming.key(format_args!("revoked:sid:{sid}")), naming.sid_index(&self.app_tag, sid))),
            (None, Some(sub)) => Some((naming.key(format_args!("revoked:sub:{sub}")), naming.user_index(&self.app_tag, sub))),
            (None, None) => None,
        };
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(REVOKE_SCRIPT).arg(if target.is_some() { 3 } else { 1 }).arg(naming.key(format_args!("revoked:jti:{jti}")));
        if let Some((revoked, index)) = &target {
            cmd.arg(revoked).arg(index);
        }
        cmd.arg(JTI_TTL.as_secs()).arg(now).arg(self.max_lifetime.as_secs().max(1)).arg(naming.record_prefix());
        let recorded: i64 = self.redis.run_replicated(&cmd).await?;
        if recorded == 1 {
            // This replica sees it at once; the others within `staleness`.
            if let Some(cache) = &self.cache {
                cache.invalidate_all();
            }
        }
        Ok(recorded == 1)
    }

    /// Ends one session everywhere (its sign-out), for `ttl` (what remains of its lifetime).
    pub async fn end_session(&self, session: &Session, ttl: Duration) -> Result<(), StoreError> {
        let key = self.redis.naming().key(format_args!("revoked:session:{}", session.id));
        self.redis.run_replicated::<()>(::redis::cmd("SET").arg(key).arg("1").arg("PX").arg(ttl_millis(ttl))).await?;
        if let Some(cache) = &self.cache {
            cache.invalidate(&(session.id.clone(), session.sid.clone())).await;
        }
        Ok(())
    }

    /// Whether this session was ended by a logout, on any replica.
    pub async fn is_revoked(&self, session: &Session) -> Result<bool, StoreError> {
        let verdict = match &self.cache {
            Some(cache) => {
                let key = (session.id.clone(), session.sid.clone());
                cache.try_get_with(key, self.lookup(session)).await.map_err(|e| match &*e {
                    StoreError::Unavailable(reason) => StoreError::Unavailable(reason.clone()),
                })?
            }
            None => self.lookup(session).await?,
        };
        Ok(verdict.revoked || verdict.sub_revoked_at.is_some_and(|at| session.created_at <= at))
    }

    /// [`RedisRevocations::is_revoked`], asking Redis whatever the cache holds: for a check that
    /// must not miss a revocation made in the last `staleness` (a replica catching up after its
    /// subscription was down).
    pub async fn is_revoked_uncached(&self, session: &Session) -> Result<bool, StoreError> {
        let verdict = self.lookup(session).await?;
        Ok(verdict.revoked || verdict.sub_revoked_at.is_some_and(|at| session.created_at <= at))
    }

    /// One round trip: the session, `sub` and `sid` entries together.
    async fn lookup(&self, session: &Session) -> Result<Verdict, StoreError> {
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(LOOKUP_SCRIPT).arg(if session.sid.is_some() { 3 } else { 2 });
        let naming = self.redis.naming();
        cmd.arg(naming.key(format_args!("revoked:session:{}", session.id)));
        cmd.arg(naming.key(format_args!("revoked:sub:{}", session.identity.sub)));
        if let Some(sid) = &session.sid {
            cmd.arg(naming.key(format_args!("revoked:sid:{sid}")));
        }
        // Bytes, not Strings: a value that is not UTF-8 must not look like a Redis failure.
        let found: Vec<Vec<u8>> = self.redis.run(&cmd).await?;
        let present = |i: usize| found.get(i).is_some_and(|v| !v.is_empty());
        let sub_revoked_at = match found.get(1).map(Vec::as_slice) {
            None | Some(b"") => None,
            Some(value) => Some(read_time(value).unwrap_or_else(|| {
                tracing::warn!(sub = %session.identity.sub, "unreadable revocation entry for this user in Redis: treated as revoked");
                u64::MAX
            })),
        };
        Ok(Verdict { revoked: present(0) || present(2), sub_revoked_at })
    }
}

/// The unix time after the `=` marker of [`LOOKUP_SCRIPT`], if it is one.
fn read_time(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value.strip_prefix(b"=")?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::read_time;

    #[test]
    fn only_a_plain_time_reads_as_a_time() {
        assert_eq!(read_time(b"=1712400000"), Some(1_712_400_000));
        for unreadable in [&b"?"[..], b"=", b"=garbage", b"=-1", b"= 1", b"=1e9", b"=\xff\xfe", b"1712400000"] {
            assert_eq!(read_time(unreadable), None, "{unreadable:?}");
        }
    }
}
