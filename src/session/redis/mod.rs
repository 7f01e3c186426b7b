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
//! One [`Redis`] connection is shared by all three: a multiplexed connection behind redis-rs's
//! connection manager, which reconnects by itself after a restart. Every command is bounded by a
//! timeout; any failure is a [`StoreError`] for the caller to fail closed on (503), and the state
//! change (down, back up) is logged once, not once per request.

mod refresh;
mod revocations;
mod store;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{Cmd, FromRedisValue};

pub use refresh::{RefreshCoordinator, SharedRefresh, Turn};
pub use revocations::RedisRevocations;
pub use store::RedisStore;

use crate::session::store::StoreError;

/// Prefix of every key the proxy writes.
pub const KEY_PREFIX: &str = "trousseau-proxy:";

/// The longest one Redis command may take, reconnection included, before the request gives up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Time to open a TCP (and TLS) connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What the proxy last saw of Redis.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A shared, self-healing connection to Redis, with its health.
pub struct Redis {
    conn: ConnectionManager,
    /// For the connections that cannot be shared: subscriptions.
    client: ::redis::Client,
    /// `redis://host:port/db` without credentials, for logs.
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
    /// `ca_pem`: the CA that signed a `rediss://` Redis's certificate, trusted instead of the
    /// system's roots.
    pub fn connect(url: &str, ca_pem: Option<Vec<u8>>) -> Result<Redis, String> {
        let client = match ca_pem {
            None => ::redis::Client::open(url),
            Some(pem) => ::redis::Client::build_with_tls(url, ::redis::TlsCertificates { client_tls: None, root_cert: Some(pem) }),
        }
        .map_err(|e| format!("{}: {e}", redacted_url(url)))?;
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            // A failed reconnection fails the waiting commands quickly; the next command tries again.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|e| format!("{}: {e}", redacted_url(url)))?;
        Ok(Redis { conn, client, display: redacted_url(url), state: AtomicU8::new(UNKNOWN), stats: RedisStats::default() })
    }

    /// Runs one command (or a script) with the timeout, recording Redis's health. A command that
    /// finds its connection dropped (Redis restarted since the last command) is sent once more on
    /// the connection the manager re-opens, so a restart costs no request.
    pub async fn run<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let attempts = async {
            let mut retried = false;
            loop {
                let mut conn = self.conn.clone();
                match cmd.query_async::<T>(&mut conn).await {
                    Ok(value) => return Ok(value),
                    Err(e) if !retried && (e.is_connection_dropped() || e.is_unrecoverable_error()) => retried = true,
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        let result = match tokio::time::timeout(COMMAND_TIMEOUT, attempts).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {COMMAND_TIMEOUT:?}")),
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
        let subscribing = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, ::redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, subscribing).await {
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
            u.to_string()
        }
        Err(_) => "(unparsable Redis URL)".into(),
    }
}

/// SHA-256, lower-case hex: how handles and refresh tokens become key names.
use crate::util::hash::sha256_hex;

/// `trousseau-proxy:session:`: the prefix of session records, followed by the handle's SHA-256.
const RECORD_PREFIX: &str = "trousseau-proxy:session:";

/// The index of one user's session records in this application (`store: redis`): a sorted set of
/// record hashes scored by creation time, for the per-user cap and for back-channel logout by
/// `sub`. Named by a hash of the application tag and the `sub`, so no claim shows in key names.
fn user_index_key(app_tag: &str, sub: &str) -> String {
    format!("{KEY_PREFIX}user:{}", sha256_hex(format!("{app_tag}\n{sub}").as_bytes()))
}

/// The index of the session records of one Trousseau session (`sid`) in this application, for
/// back-channel logout by `sid`. Same shape as [`user_index_key`].
fn sid_index_key(app_tag: &str, sid: &str) -> String {
    format!("{KEY_PREFIX}sid:{}", sha256_hex(format!("{app_tag}\n{sid}").as_bytes()))
}

/// `PX` milliseconds for a TTL: at least 1 ms (Redis refuses 0).
fn ttl_millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_in_logs() {
        assert_eq!(redacted_url("redis://:s3cret@cache:6379/2"), "redis://cache:6379/2");
        assert_eq!(redacted_url("rediss://user:s3cret@cache.example.com"), "rediss://cache.example.com");
        assert!(!redacted_url("not a url s3cret").contains("s3cret"));
    }

    #[test]
    fn handles_hash_to_fixed_hex_names() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(ttl_millis(Duration::ZERO), 1);
    }
}
