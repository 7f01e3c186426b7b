//! Redis (or Valkey): the state every replica must share.
//!
//! Cookie sessions let any replica serve any request, except for three things, which live here:
//! server-side session records ([`RedisStore`]), back-channel revocations ([`RedisRevocations`]) and
//! the refresh of a rotating refresh token ([`RefreshCoordinator`]).
//!
//! Everything is under `trousseau-proxy:` and expires on its own. Values that hold tokens are
//! sealed with the session secrets (AES-256-GCM, one purpose per kind of value), so Redis — its
//! dumps, its replicas, its `MONITOR` — never sees a token, an email or a claim in clear.
//!
//! One [`Redis`] connection is shared by all three: one server (redis-rs's connection manager,
//! which reconnects by itself after a restart), the primary Sentinel names (followed through
//! failovers), or a Cluster ([`link`]). Every command is bounded by a timeout; any failure is a
//! [`StoreError`] for the caller to fail closed on (503), and the state change (down, back up) is
//! logged once, not once per request.

mod link;
mod refresh;
mod revocations;
mod store;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use ::redis::{Cmd, FromRedisValue};

pub use link::{node_url, RedisTarget, SentinelTarget};
pub use refresh::{RefreshCoordinator, SharedRefresh, Turn};
pub use revocations::RedisRevocations;
pub use store::RedisStore;

use crate::session::store::StoreError;

/// Prefix of every key the proxy writes to one server or through Sentinel (see [`Naming`]), and of
/// its channels.
pub const KEY_PREFIX: &str = "trousseau-proxy:";

/// How key names are written.
///
/// With one server or Sentinel, as they always were (`trousseau-proxy:…`). In a Cluster, a script
/// may only touch keys of one slot, and the proxy's scripts change several keys at once: a sign-in
/// writes its record and the user's and the Trousseau session's indexes and ends the user's
/// oldest records; a back-channel logout by `sid` ends records of a user it does not name; a
/// revocation check reads the session's, the user's and the `sid`'s entries. So sessions, their
/// indexes and revocations share one hash tag (`{trousseau-proxy}:…`, one slot: a few hundred bytes
/// per session and one read per request at most, well within one node). A refresh's lock and
/// result share a tag of their own, the token's hash (`trousseau-proxy:refresh:{<hash>}:…`), so
/// refreshes spread over the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// One server, or Sentinel.
    Plain,
    /// A Cluster: hash tags.
    Tagged,
}

impl Naming {
    /// The prefix of sessions, their indexes and revocations.
    pub fn prefix(self) -> &'static str {
        match self {
            Naming::Plain => KEY_PREFIX,
            Naming::Tagged => "{trousseau-proxy}:",
        }
    }

    /// `rest` under [`Naming::prefix`].
    pub fn key(self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}{rest}", self.prefix())
    }

    /// The prefix of session records, followed by the handle's SHA-256.
    pub fn record_prefix(self) -> String {
        self.key(format_args!("session:"))
    }

    /// A refresh's shared result and its lock, for the token's SHA-256 (hex).
    pub fn refresh(self, hash: &str) -> (String, String) {
        match self {
            Naming::Plain => (format!("{KEY_PREFIX}refresh:result:{hash}"), format!("{KEY_PREFIX}refresh:lock:{hash}")),
            Naming::Tagged => (format!("{KEY_PREFIX}refresh:{{{hash}}}:result"), format!("{KEY_PREFIX}refresh:{{{hash}}}:lock")),
        }
    }

    /// The index of one user's session records in this application (`store: redis`): a sorted
    /// set of record hashes scored by creation time, for the per-user cap and for back-channel
    /// logout by `sub`. Named by a hash of the application tag and the `sub`, so no claim shows in
    /// key names.
    fn user_index(self, app_tag: &str, sub: &str) -> String {
        self.key(format_args!("user:{}", sha256_hex(format!("{app_tag}\n{sub}").as_bytes())))
    }

    /// The index of the session records of one Trousseau session (`sid`) in this application,
    /// for back-channel logout by `sid`. Same shape as [`Naming::user_index`].
    fn sid_index(self, app_tag: &str, sid: &str) -> String {
        self.key(format_args!("sid:{}", sha256_hex(format!("{app_tag}\n{sid}").as_bytes())))
    }
}

/// The longest one Redis command may take, reconnection included, before the request gives up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Time to open a TCP (and TLS) connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// With Sentinel, how long a revocation waits for a replica to confirm it ([`Redis::run_replicated`]).
const REPLICA_WAIT: Duration = Duration::from_millis(1000);

/// What the proxy last saw of Redis.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A shared, self-healing connection to Redis, with its health.
pub struct Redis {
    link: link::Link,
    naming: Naming,
    /// Where Redis is, without credentials, for logs.
    display: String,
    state: AtomicU8,
    stats: RedisStats,
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Commands that succeeded.
    pub commands_ok: AtomicU64,
    /// Commands that failed or timed out (each one was answered 503 or degraded).
    pub commands_failed: AtomicU64,
}

impl Redis {
    /// Prepares the connection without opening it: the proxy starts (and serves what needs no
    /// Redis) while Redis is still down; the first command connects.
    /// `ca_pem`: the CA that signed the certificate of a Redis reached over TLS, trusted instead
    /// of the system's roots.
    pub fn connect(target: &RedisTarget, ca_pem: Option<Vec<u8>>) -> Result<Redis, String> {
        let link = link::Link::open(target, ca_pem)?;
        let naming = match target {
            RedisTarget::Cluster(_) => Naming::Tagged,
            RedisTarget::Single(_) | RedisTarget::Sentinel(_) => Naming::Plain,
        };
        Ok(Redis { link, naming, display: target.display(), state: AtomicU8::new(UNKNOWN), stats: RedisStats::default() })
    }

    /// How this deployment's keys are named.
    pub fn naming(&self) -> Naming {
        self.naming
    }

    /// Runs one command (or a script) with the timeout, recording Redis's health. A command that
    /// finds its connection dropped (Redis restarted since the last command, or with Sentinel, a
    /// primary gone or demoted) is sent once more on the connection re-opened, so a restart costs
    /// no request.
    pub async fn run<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let span = command_span(cmd);
        traced(span, self.bounded(|| self.link.query::<T>(cmd)).await)
    }

    /// [`Redis::run`] for a write that must not be lost once acknowledged (a revocation): with
    /// Sentinel, it is confirmed by a replica (up to [`REPLICA_WAIT`]) before it counts, so a
    /// failover right after cannot undo it.
    pub async fn run_replicated<T: FromRedisValue + Send>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let span = command_span(cmd);
        traced(span, self.bounded(|| self.link.query_replicated::<T>(cmd, REPLICA_WAIT)).await)
    }

    /// Sends a command (`send`), once more if the link says it may succeed then, within
    /// [`COMMAND_TIMEOUT`], and records Redis's health.
    async fn bounded<T, F, Fut>(&self, mut send: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, link::Failed>>,
    {
        let attempts = async {
            let mut retried = false;
            loop {
                match send().await {
                    Ok(value) => return Ok(value),
                    Err(failed) if !retried && failed.retry => retried = true,
                    Err(failed) => return Err(failed.reason),
                }
            }
        };
        let result = match tokio::time::timeout(COMMAND_TIMEOUT, attempts).await {
            Ok(result) => result,
            Err(_) => {
                self.link.timed_out();
                Err(format!("no answer within {COMMAND_TIMEOUT:?}"))
            }
        };
        match result {
            Ok(value) => {
                self.stats.commands_ok.fetch_add(1, Ordering::Relaxed);
                if self.state.swap(UP, Ordering::Relaxed) != UP {
                    tracing::info!(redis = %self.display, "Redis is reachable: shared sessions, revocations and refreshes are available");
                }
                Ok(value)
            }
            Err(reason) => {
                self.stats.commands_failed.fetch_add(1, Ordering::Relaxed);
                if self.state.swap(DOWN, Ordering::Relaxed) != DOWN {
                    tracing::error!(
                        redis = %self.display,
                        error = %reason,
                        "Redis is unavailable: requests that need it are answered 503 until it is back (reconnecting automatically)"
                    );
                }
                Err(StoreError::Unavailable(format!("Redis at {}: {reason}", self.display)))
            }
        }
    }

    /// A connection of its own subscribed to `channel` (publish with [`Redis::run`] and
    /// `PUBLISH`). Not retried: the caller subscribes again when the connection ends.
    pub async fn subscribe(&self, channel: &str) -> Result<::redis::aio::PubSub, StoreError> {
        match tokio::time::timeout(COMMAND_TIMEOUT, self.link.subscribe(channel)).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("Redis at {}: {e}", self.display))),
            Err(_) => Err(StoreError::Unavailable(format!("Redis at {}: no answer within {COMMAND_TIMEOUT:?}", self.display))),
        }
    }

    /// One `PING`, for its log line: whether Redis is reachable now.
    pub async fn ping(&self) {
        let _ = self.run::<String>(&::redis::cmd("PING")).await;
    }

    /// Whether the last command succeeded (`None` before the first one).
    pub fn is_up(&self) -> Option<bool> {
        match self.state.load(Ordering::Relaxed) {
            UP => Some(true),
            DOWN => Some(false),
            _ => None,
        }
    }

    /// The counters.
    pub fn stats(&self) -> &RedisStats {
        &self.stats
    }

    /// Where Redis is, without credentials.
    pub fn display(&self) -> &str {
        &self.display
    }
}

/// The URL with any user name and password removed, for logs and errors.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            let _ = u.set_username("");
            // `redis+unix:///run/redis.sock?pass=…` carries it in the query.
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "(unparsable Redis URL)".into(),
    }
}

/// SHA-256, lower-case hex: how handles and refresh tokens become key names.
use crate::util::hash::sha256_hex;


/// `PX` milliseconds for a TTL: at least 1 ms (Redis refuses 0).
fn ttl_millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}


/// The span of one command, when the request being served is recorded
/// ([`crate::trace::record`]): its name (`EVALSHA`, `GET`), never its keys or values.
fn command_span(cmd: &Cmd) -> Option<crate::trace::record::ChildSpan> {
    let mut span = crate::trace::record::child_of_current("redis", crate::trace::record::SpanKind::Client)?;
    span.set("db.system.name", "redis");
    if let Some(::redis::Arg::Simple(name)) = cmd.args_iter().next() {
        span.set("db.operation.name", String::from_utf8_lossy(name).to_ascii_uppercase());
    }
    Some(span)
}

/// Ends a command's span, failed when the command failed.
fn traced<T>(span: Option<crate::trace::record::ChildSpan>, result: Result<T, StoreError>) -> Result<T, StoreError> {
    if let (Some(mut span), Err(_)) = (span, &result) {
        span.fail();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_in_logs() {
        assert_eq!(redacted_url("redis://:s3cret@cache:6379/2"), "redis://cache:6379/2");
        assert_eq!(redacted_url("rediss://user:s3cret@cache.example.com"), "rediss://cache.example.com");
        assert!(!redacted_url("not a url s3cret").contains("s3cret"));
        assert_eq!(redacted_url("redis+unix:///run/redis.sock?db=1&pass=s3cret"), "redis+unix:///run/redis.sock");
    }

    #[test]
    fn a_cluster_puts_what_changes_together_in_one_slot_and_spreads_refreshes() {
        // Redis Cluster hashes the part between the first `{` and the next `}`, when not empty.
        fn tag(key: &str) -> &str {
            match key.find('{').and_then(|open| key[open + 1..].find('}').map(|len| &key[open + 1..open + 1 + len])) {
                Some(tag) if !tag.is_empty() => tag,
                _ => key,
            }
        }
        let tagged = Naming::Tagged;
        let together =
            [tagged.record_prefix() + "ab12", tagged.user_index("app", "alice"), tagged.sid_index("app", "s1"), tagged.key(format_args!("revoked:sub:alice"))];
        assert!(together.iter().all(|k| tag(k) == "trousseau-proxy"), "{together:?}");
        let (result, lock) = tagged.refresh("00ff");
        assert_eq!((tag(&result), tag(&lock)), ("00ff", "00ff"));
        // One server and Sentinel keep the names they always had.
        assert_eq!(Naming::Plain.record_prefix(), "trousseau-proxy:session:");
        assert_eq!(Naming::Plain.refresh("00ff").1, "trousseau-proxy:refresh:lock:00ff");
    }

    #[test]
    fn handles_hash_to_fixed_hex_names() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(ttl_millis(Duration::ZERO), 1);
    }
}
