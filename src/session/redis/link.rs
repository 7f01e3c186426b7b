//! How the proxy reaches Redis: one server, the primary that Sentinel names, or a Cluster.
//!
//! - **One server** (`session.redis_url`): redis-rs's connection manager, which reconnects to the
//!   same address by itself.
//! - **Sentinel** (`session.redis_sentinel`): the sentinels are asked which server is the primary
//!   (redis-rs checks the answer with `ROLE` before it is used), and one multiplexed connection is
//!   kept to it. A command that finds the connection gone, timed out or answered `READONLY` (the
//!   old primary, demoted to a replica) drops the connection; the command is sent once more after
//!   the sentinels are asked again, so writes always go to the current primary and a failover
//!   needs no restart. The sentinels are asked by one command at a time, and at most once every
//!   [`ASK_AGAIN_AFTER`] while they keep naming a primary that does not answer.
//! - **Cluster** (`session.redis_cluster`): redis-rs's cluster connection, which learns the slot
//!   map from the nodes given, follows `MOVED` and `ASK`, and reconnects by itself. Keys that must
//!   change together carry one hash tag ([`super::Naming`]), so each script touches one slot.
//!
//! Subscriptions need a connection of their own: to the primary (Sentinel), or to any node of a
//! cluster (a cluster forwards every `PUBLISH` to all its nodes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, MultiplexedConnection, PubSub};
use ::redis::cluster_async::ClusterConnection;
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{AsyncConnectionConfig, Client, Cmd, ConnectionAddr, FromRedisValue, RedisError, TlsCertificates, TlsMode};
use arc_swap::ArcSwapOption;

use super::{redacted_url, COMMAND_TIMEOUT, CONNECT_TIMEOUT};

/// While the sentinels name a primary that does not answer (a failover under way), how long a
/// failed lookup is the answer for the commands that follow, instead of asking again at once.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(250);

/// Where Redis is, as the configuration says it.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `session.redis_url`: one Redis (or Valkey) server.
    Single(String),
    /// `session.redis_sentinel`: the primary of a group watched by Sentinel.
    Sentinel(SentinelTarget),
    /// `session.redis_cluster`: some nodes of a Redis Cluster (`host:port`, or a `redis://` /
    /// `rediss://` URL with credentials); the others are learned from them.
    Cluster(Vec<String>),
}

/// `session.redis_sentinel`.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// The name the sentinels know the group by (`sentinel monitor <name> …`).
    pub master_name: String,
    /// The sentinels, `(host, port)`.
    pub sentinels: Vec<(String, u16)>,
    /// The Redis servers' password (`requirepass`), if any.
    pub password: Option<String>,
    /// The sentinels' own password, if they have one.
    pub sentinel_password: Option<String>,
    /// TLS to the sentinels and the servers.
    pub tls: bool,
}

impl RedisTarget {
    /// Where Redis is, without credentials: for logs, metrics and errors.
    pub fn display(&self) -> String {
        match self {
            RedisTarget::Single(url) => redacted_url(url),
            RedisTarget::Sentinel(s) => {
                let sentinels: Vec<String> = s.sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                format!("the primary of `{}` (Sentinel {})", s.master_name, sentinels.join(", "))
            }
            RedisTarget::Cluster(nodes) => {
                let nodes: Vec<String> = nodes.iter().map(|n| node_url(n).map(|u| redacted_url(&u)).unwrap_or_else(|_| "(unparsable)".into())).collect();
                format!("the cluster of {}", nodes.join(", "))
            }
        }
    }

    /// Whether TLS is used (a CA file only makes sense then).
    pub fn uses_tls(&self) -> bool {
        let tls_url = |u: &str| u.starts_with("rediss://") || u.starts_with("valkeys://");
        match self {
            RedisTarget::Single(url) => tls_url(url),
            RedisTarget::Sentinel(s) => s.tls,
            RedisTarget::Cluster(nodes) => nodes.iter().any(|n| tls_url(n)),
        }
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// A cluster node as a URL: `host:port` becomes `redis://host:port`.
pub fn node_url(node: &str) -> Result<String, String> {
    let url = if node.contains("://") { node.to_string() } else { format!("redis://{node}") };
    let parsed = url::Url::parse(&url).map_err(|e| format!("`{}`: {e}", redacted_url(&url)))?;
    if !matches!(parsed.scheme(), "redis" | "rediss" | "valkey" | "valkeys") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{}` must be host:port, or a redis:// or rediss:// URL", redacted_url(&url)));
    }
    Ok(url)
}

/// A command that failed, and whether sending it once more may succeed.
pub(super) struct Failed {
    pub(super) reason: String,
    pub(super) retry: bool,
}

/// The connection, by kind of deployment.
pub(super) enum Link {
    /// (The client, for subscriptions, boxed: this variant is the common one, kept small.)
    Single { conn: ConnectionManager, client: Box<Client> },
    Sentinel(Box<Primary>),
    Cluster { conn: ClusterConnection, seeds: Vec<Client> },
}

impl Link {
    /// Prepares the connection without opening it (Redis may be down when the proxy starts).
    pub(super) fn open(target: &RedisTarget, ca_pem: Option<Vec<u8>>) -> Result<Link, String> {
        let certificates = || TlsCertificates { client_tls: None, root_cert: ca_pem.clone() };
        match target {
            RedisTarget::Single(url) => {
                let shown = redacted_url(url);
                let client = match &ca_pem {
                    None => Client::open(url.as_str()),
                    Some(_) => Client::build_with_tls(url.as_str(), certificates()),
                }
                .map_err(|e| format!("{shown}: {e}"))?;
                let config = ::redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    // A failed reconnection fails the waiting commands quickly; the next command tries again.
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                let conn = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|e| format!("{shown}: {e}"))?;
                Ok(Link::Single { conn, client: Box::new(client) })
            }
            RedisTarget::Sentinel(target) => Ok(Link::Sentinel(Box::new(Primary::new(target, ca_pem)?))),
            RedisTarget::Cluster(nodes) => {
                let urls = nodes.iter().map(|n| node_url(n)).collect::<Result<Vec<_>, _>>()?;
                let mut builder = ::redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(COMMAND_TIMEOUT);
                if ca_pem.is_some() {
                    builder = builder.certs(certificates());
                }
                let client = builder.build().map_err(|e| format!("{}: {e}", target.display()))?;
                let conn = client.get_pending_async_connection_with_config(
                    ::redis::cluster::ClusterConfig::new().set_connection_timeout(CONNECT_TIMEOUT).set_response_timeout(COMMAND_TIMEOUT),
                );
                let seeds = urls
                    .iter()
                    .map(|u| match &ca_pem {
                        None => Client::open(u.as_str()),
                        Some(_) => Client::build_with_tls(u.as_str(), certificates()),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{}: {e}", target.display()))?;
                Ok(Link::Cluster { conn, seeds })
            }
        }
    }

    /// Sends one command.
    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Failed> {
        match self {
            Link::Single { conn, .. } => cmd.query_async::<T>(&mut conn.clone()).await.map_err(|e| Failed {
                // The manager reconnects when it sees the connection dropped: once more is worth it.
                retry: e.is_connection_dropped() || e.is_unrecoverable_error(),
                reason: e.to_string(),
            }),
            // Boxed: the type of the whole lookup would otherwise be part of every request's future.
            Link::Sentinel(primary) => {
                let query: std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Failed>> + Send + '_>> = Box::pin(primary.query(cmd));
                query.await
            }
            // redis-rs retries within the cluster itself (MOVED, ASK, TRYAGAIN, a node reconnecting).
            Link::Cluster { conn, .. } => cmd.query_async::<T>(&mut conn.clone()).await.map_err(|e| Failed { reason: e.to_string(), retry: false }),
        }
    }

    /// [`Link::query`] for a write that must survive a failover once acknowledged: with
    /// Sentinel, confirmed by a replica ([`Primary::query_replicated`]). One server has no
    /// failover; a Cluster's own failover is not covered (see the README).
    pub(super) async fn query_replicated<T: FromRedisValue + Send>(&self, cmd: &Cmd, wait: Duration) -> Result<T, Failed> {
        match self {
            Link::Sentinel(primary) => {
                let query: std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Failed>> + Send + '_>> =
                    Box::pin(primary.query_replicated(cmd, wait));
                query.await
            }
            _ => self.query(cmd).await,
        }
    }

    /// A command got no answer in time: with Sentinel, the primary may be gone without a word
    /// (a host down, a partition), so the next command asks the sentinels again.
    pub(super) fn timed_out(&self) {
        if let Link::Sentinel(primary) = self {
            primary.current.store(None);
        }
    }

    /// A connection of its own subscribed to `channel`.
    pub(super) async fn subscribe(&self, channel: &str) -> Result<PubSub, String> {
        let subscribed = |client: Client| async move {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        match self {
            Link::Single { client, .. } => subscribed((**client).clone()).await.map_err(|e| e.to_string()),
            Link::Sentinel(primary) => {
                let current = primary.connection().await?;
                subscribed(current.client.clone()).await.map_err(|e| e.to_string())
            }
            Link::Cluster { seeds, .. } => {
                let mut last = String::from("no node given");
                for seed in seeds {
                    match subscribed(seed.clone()).await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = format!("{}: {e}", seed.get_connection_info().addr()),
                    }
                }
                Err(last)
            }
        }
    }
}

/// The timeouts of a connection to a server Sentinel names.
fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new().set_connection_timeout(Some(CONNECT_TIMEOUT)).set_response_timeout(Some(COMMAND_TIMEOUT))
}

/// The primary Sentinel names, and the connection to it.
pub(super) struct Primary {
    /// The connection in use; `None` until the sentinels are asked (again).
    current: ArcSwapOption<Current>,
    /// Asks the sentinels; one command at a time.
    asking: tokio::sync::Mutex<Asking>,
    master_name: String,
}

struct Current {
    conn: MultiplexedConnection,
    /// For subscriptions, which need a connection of their own.
    client: Client,
}

struct Asking {
    sentinel: SentinelClient,
    /// The last lookup that failed, and why: the answer until [`ASK_AGAIN_AFTER`] has passed.
    failed: Option<(Instant, String)>,
    /// The primary last connected to, to log a change once.
    primary: Option<String>,
}

impl Primary {
    fn new(target: &SentinelTarget, ca_pem: Option<Vec<u8>>) -> Result<Primary, String> {
        let sentinels = target.sentinels.iter().map(|(host, port)| match target.tls {
            false => ConnectionAddr::Tcp(host.clone(), *port),
            true => ConnectionAddr::TcpTls { host: host.clone(), port: *port, insecure: false, tls_params: None },
        });
        let mut builder = SentinelClientBuilder::new(sentinels, &target.master_name, SentinelServerType::Master).map_err(|e| e.to_string())?;
        if let Some(password) = &target.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(password) = &target.sentinel_password {
            builder = builder.set_client_to_sentinel_password(password);
        }
        if target.tls {
            builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure).set_client_to_sentinel_tls_mode(TlsMode::Secure);
            if let Some(pem) = ca_pem {
                let certificates = || TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) };
                builder = builder.set_client_to_redis_certificates(certificates()).set_client_to_sentinel_certificates(certificates());
            }
        }
        let sentinel = builder.build().map_err(|e| format!("session.redis_sentinel: {e}"))?;
        Ok(Primary {
            current: ArcSwapOption::empty(),
            asking: tokio::sync::Mutex::new(Asking { sentinel, failed: None, primary: None }),
            master_name: target.master_name.clone(),
        })
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Failed> {
        let current = self.connection().await.map_err(|reason| Failed { reason, retry: false })?;
        cmd.query_async::<T>(&mut current.conn.clone()).await.map_err(|e| self.failed(&e, &current))
    }

    /// `cmd` on a connection of its own, then `WAIT 1`: Redis replicates asynchronously, and a
    /// write the primary acknowledged but no replica received is lost when that replica is made
    /// primary. (`WAIT` counts the writes of its own connection, and blocks it: never on the shared
    /// one.) A write no replica confirmed within `wait` still counts (the primary has it), with
    /// a warning: the group may have no replica left.
    async fn query_replicated<T: FromRedisValue + Send>(&self, cmd: &Cmd, wait: Duration) -> Result<T, Failed> {
        let current = self.connection().await.map_err(|reason| Failed { reason, retry: false })?;
        let mut own = current.client.get_multiplexed_async_connection_with_config(&connection_config()).await.map_err(|e| self.failed(&e, &current))?;
        let value = cmd.query_async::<T>(&mut own).await.map_err(|e| self.failed(&e, &current))?;
        // The write is done: whatever WAIT says (or fails to say: an ACL user without it, a
        // dropped connection), the command is not sent again.
        let replicas = ::redis::cmd("WAIT").arg(1).arg(wait.as_millis() as u64).query_async::<i64>(&mut own).await;
        if !matches!(replicas, Ok(n) if n >= 1) {
            tracing::warn!(
                master = %self.master_name,
                "Redis: no replica confirmed a revocation within {wait:?} ({}); a failover now could lose it",
                match &replicas {
                    Ok(_) => "has the group a replica?".to_string(),
                    Err(e) => format!("WAIT failed: {e}"),
                }
            );
        }
        Ok(value)
    }

    /// What a failed command means: a connection gone, timed out or answered `READONLY` (the old
    /// primary, demoted) is dropped, so the next command asks the sentinels, and the command is
    /// worth sending once more.
    fn failed(&self, e: &RedisError, current: &Arc<Current>) -> Failed {
        let lost = e.is_connection_dropped()
            || e.is_unrecoverable_error()
            || e.is_io_error()
            || e.is_timeout()
            || matches!(e.kind(), ::redis::ErrorKind::Server(::redis::ServerErrorKind::ReadOnly | ::redis::ServerErrorKind::MasterDown));
        // Unless another command already replaced it.
        if lost {
            self.current.compare_and_swap(current, None::<Arc<Current>>);
        }
        Failed { reason: e.to_string(), retry: lost }
    }

    /// The connection to the primary, asking the sentinels first when there is none.
    async fn connection(&self) -> Result<Arc<Current>, String> {
        if let Some(current) = self.current.load_full() {
            return Ok(current);
        }
        let mut asking = self.asking.lock().await;
        // Another command may have asked while this one waited.
        if let Some(current) = self.current.load_full() {
            return Ok(current);
        }
        if let Some((at, reason)) = &asking.failed {
            if at.elapsed() < ASK_AGAIN_AFTER {
                return Err(reason.clone());
            }
        }
        match self.ask(&mut asking.sentinel).await {
            Ok((current, address)) => {
                if asking.primary.as_deref() != Some(address.as_str()) {
                    tracing::info!(master = %self.master_name, primary = %address, "Redis: Sentinel names this server the primary; writes go there");
                    asking.primary = Some(address);
                }
                asking.failed = None;
                let current = Arc::new(current);
                self.current.store(Some(current.clone()));
                Ok(current)
            }
            Err(reason) => {
                asking.failed = Some((Instant::now(), reason.clone()));
                Err(reason)
            }
        }
    }

    /// The primary's address from the sentinels (checked with `ROLE`), and a connection to it.
    async fn ask(&self, sentinel: &mut SentinelClient) -> Result<(Current, String), String> {
        let client = sentinel.async_get_client().await.map_err(|e| format!("no primary for `{}` from the sentinels: {e}", self.master_name))?;
        let address = client.get_connection_info().addr().to_string();
        let conn = client
            .get_multiplexed_async_connection_with_config(&connection_config())
            .await
            .map_err(|e| format!("the primary of `{}` at {address}: {e}", self.master_name))?;
        Ok((Current { conn, client }, address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_are_host_port_or_urls_and_never_show_a_password() {
        assert_eq!(node_url("10.0.0.1:7000").unwrap(), "redis://10.0.0.1:7000");
        assert_eq!(node_url("rediss://:pw@cache.example.com:6380").unwrap(), "rediss://:pw@cache.example.com:6380");
        for bad in ["http://cache:6379", "redis://", ":7000"] {
            let e = node_url(bad).unwrap_err();
            assert!(!e.contains("pw"), "{e}");
        }
        let shown = RedisTarget::Cluster(vec!["rediss://:s3cret@a:7000".into(), "b:7001".into()]).display();
        assert_eq!(shown, "the cluster of rediss://a:7000, redis://b:7001");
        let sentinel = RedisTarget::Sentinel(SentinelTarget {
            master_name: "main".into(),
            sentinels: vec![("s1".into(), 26379)],
            password: Some("s3cret".into()),
            sentinel_password: Some("s3cret2".into()),
            tls: false,
        });
        assert!(!format!("{sentinel:?}").contains("s3cret"));
        assert_eq!(sentinel.display(), "the primary of `main` (Sentinel s1:26379)");
    }
}
