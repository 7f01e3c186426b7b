//! Highly available Redis, with real processes on loopback (Debian's `redis-server`, which is
//! also the sentinel, and `redis-cli`):
//!
//! - **Sentinel**: a primary, a replica and three sentinels; two proxy replicas under steady load
//!   from signed-in clients; the primary killed. Requests that need Redis get 503 for the failover
//!   and then recover without a restart; nobody is signed out, a back-channel logout acknowledged
//!   before the kill is still in force after it, no refresh token is spent twice.
//! - **Cluster**: three primaries. The shared-state stories of `redis.rs` (two replicas, a
//!   back-channel logout on one refused on the other, 50 concurrent due refreshes → one refresh, a
//!   node's restart) hold on a cluster, and moving the proxy's slot to another node
//!   (`redis-cli --cluster reshard`) under load costs no request.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use trousseau_proxy::config::{FileConfig, HumanDuration, RedisSentinelConfig};

use super::redis::{fifty_across, post_logout_token, until_status};
use crate::support::*;

const PASSWORD: &str = "test-ha-password-91d2";
/// A second demo user (Sam Taylor, no organization).
const SAM: &str = "7b1e9c4d-2f38-4a6b-8e5d-c0a9f1e2d3b4";

/// redis-cli: `$REDIS_CLI`, else Debian's (package redis-tools, which redis-server brings).
fn redis_cli() -> PathBuf {
    parts::program("REDIS_CLI", "/usr/bin/redis-cli")
}

/// Whether redis-server and redis-cli are here (skips, or fails under CI, when not).
fn have_redis() -> bool {
    parts::require(&parts::REDIS, &parts::missing([parts::redis_server().as_path(), redis_cli().as_path()]))
}

/// A free loopback port `p` whose cluster bus port `p + 10000` is free too (both below the
/// ephemeral range: see [`free_port`]).
fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < 22_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// One `redis-server` process of ours (a server or a sentinel); killed on drop.
struct Node {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Node {
    /// Starts `redis-server` on `port` with `args`, its working directory its own.
    async fn start(port: u16, args: Vec<String>) -> Node {
        let dir = std::env::temp_dir().join(format!("tp-redis-ha-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut node = Node { port, dir, args, child: None };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let child = Command::new(parts::redis_server())
            .args(&self.args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command::<String>(&redis::cmd("PING")).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not come up on port {}", self.port);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A plain server's arguments: loopback, password, no persistence unless asked.
    fn server_args(port: u16, extra: &[&str]) -> Vec<String> {
        let base = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--requirepass", PASSWORD, "--masterauth", PASSWORD];
        let base: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        let quiet = ["--save", "", "--appendonly", "no", "--loglevel", "warning", "--dir", "."];
        base.into_iter().chain(quiet.iter().map(|s| s.to_string())).chain(extra.iter().map(|s| s.to_string())).collect()
    }

    /// One command on a connection of its own (sentinels have no password; servers do).
    async fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let sentinel = self.args.iter().any(|a| a == "--sentinel");
        let url = if sentinel { format!("redis://127.0.0.1:{}", self.port) } else { format!("redis://:{PASSWORD}@127.0.0.1:{}", self.port) };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection_with_config(&config).await?;
        cmd.query_async(&mut conn).await
    }

    async fn info(&self, section: &str) -> String {
        self.command(redis::cmd("INFO").arg(section)).await.unwrap_or_default()
    }

    /// Kills it (SIGKILL: a crash, nothing flushed).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `check` every 50 ms until it holds, or fails with `what` after `within`.
async fn until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one request of the load got.
#[derive(Debug)]
struct Seen {
    at: Instant,
    status: StatusCode,
    error: String,
}

/// A client requesting `/x` with `browser`'s cookies every 20 ms until `stop`.
fn load(origin: String, browser: &Browser, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<Vec<Seen>> {
    let cookie = browser.cookie_header();
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut client = Browser::new(&origin);
        while !*stop.borrow() {
            let answer = client.request(Method::GET, "/x", &[("cookie", cookie.as_str()), ("accept", "application/json")], Bytes::new()).await;
            let error = if answer.status == StatusCode::OK { String::new() } else { answer.json()["error"].as_str().unwrap_or("").to_string() };
            seen.push(Seen { at: Instant::now(), status: answer.status, error });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    })
}

// ---------------------------------------------------------------------------------------------
// Sentinel

/// A primary, its replica and three sentinels watching them as `main`.
struct SentinelGroup {
    primary: Node,
    replica: Node,
    sentinels: Vec<Node>,
    /// Sentinel's own `down-after-milliseconds`.
    down_after: Duration,
}

impl SentinelGroup {
    async fn start() -> Option<SentinelGroup> {
        if !have_redis() {
            return None;
        }
        let primary_port = free_port_pair();
        let primary = Node::start(primary_port, Node::server_args(primary_port, &[])).await;
        let replica_port = free_port_pair();
        let replica = Node::start(replica_port, Node::server_args(replica_port, &["--replicaof", "127.0.0.1", &primary_port.to_string()])).await;
        until(Duration::from_secs(10), "the replica in sync", || async { replica.info("replication").await.contains("master_link_status:up") }).await;

        let down_after = Duration::from_millis(1000);
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port_pair();
            let dir = std::env::temp_dir().join(format!("tp-redis-ha-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let conf = format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor main 127.0.0.1 {primary_port} 2\nsentinel auth-pass main {PASSWORD}\n\
                 sentinel down-after-milliseconds main {}\nsentinel failover-timeout main 10000\nsentinel parallel-syncs main 1\n",
                dir.display(),
                down_after.as_millis()
            );
            let file = dir.join("sentinel.conf");
            std::fs::write(&file, conf).unwrap();
            sentinels.push(Node::start(port, vec![file.display().to_string(), "--sentinel".into()]).await);
        }
        // Each sentinel has found the replica and the two other sentinels.
        for sentinel in &sentinels {
            until(Duration::from_secs(20), "the sentinels know each other and the replica", || async {
                let fields: Vec<String> = sentinel.command(redis::cmd("SENTINEL").arg("MASTER").arg("main")).await.unwrap_or_default();
                let field = |name: &str| fields.iter().position(|f| f == name).and_then(|i| fields.get(i + 1)).cloned().unwrap_or_default();
                field("num-other-sentinels") == "2" && field("num-slaves") == "1"
            })
            .await;
        }
        Some(SentinelGroup { primary, replica, sentinels, down_after })
    }

    /// The primary's port, as the first sentinel names it.
    async fn named_primary(&self) -> Option<u16> {
        let addr: Vec<String> = self.sentinels[0].command(redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg("main")).await.ok()?;
        addr.get(1)?.parse().ok()
    }

    /// The proxy's configuration for this group: the servers' password from a file.
    fn configure(&self, c: &mut FileConfig) {
        let password_file = self.primary.dir.join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        c.session.redis_sentinel = Some(RedisSentinelConfig {
            master_name: "main".into(),
            sentinels: self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect(),
            password_file: Some(password_file.display().to_string()),
            sentinel_password_file: None,
            tls: false,
        });
    }
}

#[tokio::test]
async fn a_sentinel_failover_under_load_signs_nobody_out_and_loses_no_acknowledged_logout() {
    let Some(mut group) = SentinelGroup::start().await else { return };
    let configure = {
        let mut file = FileConfig::default();
        group.configure(&mut file);
        let sentinel = file.session.redis_sentinel.clone();
        move |c: &mut FileConfig| {
            c.session.store = crate::support::named("redis");
            c.session.redis_sentinel = sentinel;
            c.session.refresh_skew = HumanDuration(Duration::from_secs(3));
        }
    };
    // Access tokens of 6 s, refreshed 3 s before expiry: refreshes go on through the failover.
    let env = Env::start_with(EnvOptions {
        configure: Box::new(configure),
        idp: Box::new(|i| {
            i.access_token_ttl = Duration::from_secs(6);
            i.id_token_ttl = Duration::from_secs(6);
        }),
    })
    .await;
    let b_replica = env.start_replica().await;
    assert_eq!(group.named_primary().await, Some(group.primary.port));

    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    assert_eq!(b_replica.browser_like(&jean).api_get("/x").await.status, StatusCode::OK, "B serves the session A stored");
    // Sam is logged out by Trousseau, acknowledged (200) before the primary dies.
    let mut sam = env.browser();
    sam.sign_in("/", SAM).await;
    let logout = post_logout_token(&env.origin, &env.trousseau().logout_token(Some(SAM), None)).await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.text());
    assert_eq!(sam.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
    let base = env.trousseau().stats();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loads = [load(env.origin.clone(), &jean, stopped.clone()), load(b_replica.origin.clone(), &jean, stopped.clone())];
    tokio::time::sleep(Duration::from_millis(1500)).await;
    group.primary.kill();
    let killed = Instant::now();

    // The sentinels agree the primary is down and promote the replica.
    until(Duration::from_secs(30), "the replica promoted", || async { group.named_primary().await == Some(group.replica.port) }).await;
    let promoted = killed.elapsed();
    // Then requests succeed again, on both replicas, for a while.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.send(true).unwrap();
    let mut seen = Vec::new();
    for l in loads {
        seen.push(l.await.unwrap());
    }

    let mut last_failure = None;
    for (replica, answers) in ["A", "B"].iter().zip(&seen) {
        let after: Vec<&Seen> = answers.iter().filter(|s| s.at > killed).collect();
        assert!(answers.len() > 100 && after.len() > 50, "replica {replica}: steady load ({} requests, {} after the kill)", answers.len(), after.len());
        for s in answers {
            match s.status {
                StatusCode::OK => {}
                StatusCode::SERVICE_UNAVAILABLE if s.error == "session_store_unavailable" && s.at > killed => {
                    last_failure = last_failure.max(Some(s.at.duration_since(killed)));
                }
                other => panic!("replica {replica}: {other} `{}` {:?} after the kill — nobody may be signed out", s.error, s.at.checked_duration_since(killed)),
            }
        }
        assert!(after.iter().rev().take(20).all(|s| s.status == StatusCode::OK), "replica {replica} recovered without a restart");
    }
    let unavailable = last_failure.unwrap_or_default();
    eprintln!(
        "Sentinel failover: replica promoted {promoted:?} after the kill (down-after {:?}); requests needing Redis answered 503 until {unavailable:?} after it",
        group.down_after
    );
    assert!(unavailable <= group.down_after + Duration::from_secs(5), "503s for at most down-after + 5 s: {unavailable:?}");

    // The logout acknowledged before the kill holds on the new primary, on both replicas.
    assert_eq!(sam.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(b_replica.browser_like(&sam).api_get("/x").await.status, StatusCode::UNAUTHORIZED);
    // Refreshes went on through the failover; none spent a token twice.
    let stats = env.trousseau().stats();
    assert!(stats.refresh_grants_ok > base.refresh_grants_ok, "refreshes happened during the test");
    assert_eq!(stats.refresh_reuse_detected, 0, "no refresh token used twice");
    assert_eq!(stats.refresh_grants_failed, base.refresh_grants_failed);
    // Writes go to the new primary: a new logout is recorded and seen everywhere.
    let logout = post_logout_token(&b_replica.origin, &env.trousseau().logout_token(Some(JEAN), None)).await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.text());
    assert_eq!(jean.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
    let revoked: i64 = group.replica.command(redis::cmd("EXISTS").arg(format!("trousseau-proxy:revoked:sub:{JEAN}"))).await.unwrap();
    assert_eq!(revoked, 1, "written to the promoted replica");
}

// ---------------------------------------------------------------------------------------------
// Cluster

/// Three primaries, slots spread evenly by `redis-cli --cluster create`.
struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    async fn start() -> Option<Cluster> {
        if !have_redis() {
            return None;
        }
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port_pair();
            let conf = format!("nodes-{port}.conf");
            nodes.push(Node::start(port, Node::server_args(port, &["--cluster-enabled", "yes", "--cluster-config-file", &conf, "--cluster-node-timeout", "2000"])).await);
        }
        let mut create = Command::new(redis_cli());
        create.args(["-a", PASSWORD, "--no-auth-warning", "--cluster", "create"]);
        create.args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = create.output().expect("redis-cli runs");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = Cluster { nodes };
        cluster.until_ok().await;
        Some(cluster)
    }

    /// Until every node says `cluster_state:ok`.
    async fn until_ok(&self) {
        for node in &self.nodes {
            until(Duration::from_secs(20), "cluster_state:ok", || async {
                node.command::<String>(redis::cmd("CLUSTER").arg("INFO")).await.is_ok_and(|i| i.contains("cluster_state:ok"))
            })
            .await;
        }
    }

    /// The proxy's nodes: URLs with the password (any one node would do; all are given).
    fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("redis://:{PASSWORD}@127.0.0.1:{}", n.port)).collect()
    }

    /// Every key on every node, with the node's index.
    async fn keys(&self) -> Vec<(usize, String)> {
        let mut all = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let keys: Vec<String> = node.command(redis::cmd("KEYS").arg("*")).await.unwrap_or_default();
            all.extend(keys.into_iter().map(|k| (i, k)));
        }
        all
    }

    /// The index of the node serving `key`'s slot, and the node's id.
    async fn owner_of(&self, key: &str) -> (usize, String) {
        let slot: i64 = self.nodes[0].command(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).await.unwrap();
        for (i, node) in self.nodes.iter().enumerate() {
            let nodes: String = node.command(redis::cmd("CLUSTER").arg("NODES")).await.unwrap();
            let me = nodes.lines().find(|l| l.contains("myself")).unwrap();
            let id = me.split(' ').next().unwrap().to_string();
            // Slots are `a-b` ranges or single numbers; `[…]` entries are migrations under way.
            let serves = me.split(' ').skip(8).any(|range| match range.split_once('-') {
                Some((a, b)) => a.parse::<i64>().ok().zip(b.parse::<i64>().ok()).is_some_and(|(a, b)| (a..=b).contains(&slot)),
                None => range.parse::<i64>().ok() == Some(slot),
            });
            if serves {
                return (i, id);
            }
        }
        panic!("no node serves the slot of {key}");
    }
}

/// Proxy options on the cluster: sessions in it (`store`), `/public/*` open.
fn on_cluster(cluster: &Cluster, store: &'static str, tweak: impl FnOnce(&mut FileConfig) + Send + 'static) -> EnvOptions {
    let urls = cluster.urls();
    EnvOptions {
        configure: Box::new(move |c| {
            c.session.store = crate::support::named(store);
            c.session.redis_cluster = Some(urls);
            c.routes.public = vec!["/public/*".into()];
            tweak(c);
        }),
        idp: Box::new(|_| {}),
    }
}

#[tokio::test]
async fn the_shared_state_stories_hold_on_a_redis_cluster() {
    let Some(mut cluster) = Cluster::start().await else { return };
    // Access tokens of 8 s refreshed 5 s early (capped at half their life, 4 s), as in redis.rs.
    let mut options = on_cluster(&cluster, "redis", |c| c.session.refresh_skew = HumanDuration(Duration::from_secs(5)));
    options.idp = Box::new(|i| {
        i.access_token_ttl = Duration::from_secs(8);
        i.id_token_ttl = Duration::from_secs(8);
    });
    let env = Env::start_with(options).await;
    let b_replica = env.start_replica().await;

    // Two replicas share the session.
    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    let mut jean_on_b = b_replica.browser_like(&jean);
    assert_eq!(jean_on_b.api_get("/x").await.status, StatusCode::OK, "replica B serves the session stored by A");

    // 50 concurrent requests with the same due session, over both replicas: one refresh.
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let base = env.trousseau().stats();
    env.trousseau().set_token_endpoint_delay(Duration::from_millis(300));
    for a in fifty_across([&env.origin, &b_replica.origin], &jean.cookie_header()).await {
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    }
    env.trousseau().set_token_endpoint_delay(Duration::ZERO);
    let stats = env.trousseau().stats();
    assert_eq!(stats.refresh_grants_ok, base.refresh_grants_ok + 1, "one refresh for 50 requests on 2 replicas");
    assert_eq!(stats.refresh_reuse_detected, 0);

    // What the cluster holds: sessions and their indexes under one tag, one node; the refresh's
    // lock released and its result under the token's own tag.
    let keys = cluster.keys().await;
    let shared: Vec<&(usize, String)> = keys.iter().filter(|(_, k)| k.starts_with("{trousseau-proxy}:")).collect();
    assert!(shared.iter().any(|(_, k)| k.starts_with("{trousseau-proxy}:session:")), "{keys:?}");
    assert!(shared.iter().any(|(_, k)| k.starts_with("{trousseau-proxy}:user:")), "{keys:?}");
    assert!(shared.windows(2).all(|w| w[0].0 == w[1].0), "one slot, one node: {shared:?}");
    let result = keys.iter().find(|(_, k)| k.starts_with("trousseau-proxy:refresh:{") && k.ends_with("}:result")).expect("a shared refresh result");
    assert!(!keys.iter().any(|(_, k)| k.ends_with("}:lock")), "locks released: {keys:?}");
    eprintln!("cluster keys: {} shared-state keys on node {}, refresh result {} on node {}", shared.len(), shared[0].0, result.1, result.0);
    assert!(keys.iter().all(|(_, k)| k.starts_with("{trousseau-proxy}:") || k.starts_with("trousseau-proxy:refresh:{")), "{keys:?}");

    // A back-channel logout on A is refused on B.
    let mut sam = env.browser();
    sam.sign_in("/", SAM).await;
    let sam_on_b = b_replica.browser_like(&sam);
    let logout = post_logout_token(&env.origin, &env.trousseau().logout_token(Some(JEAN), None)).await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.text());
    assert_eq!(jean.api_get("/x").await.status, StatusCode::UNAUTHORIZED, "replica A: at once");
    until_status(Duration::from_secs(3), StatusCode::UNAUTHORIZED, || {
        let mut b = jean_on_b.clone();
        async move { b.api_get("/x").await }
    })
    .await;
    assert_eq!(b_replica.browser_like(&sam_on_b).api_get("/x").await.status, StatusCode::OK, "other sessions live on");

    // The node holding the sessions stops (its data saved) and comes back: 503 meanwhile, nobody
    // signed out, and both replicas recover without a restart.
    let (owner, _) = cluster.owner_of("{trousseau-proxy}").await;
    cluster.nodes[owner].command::<()>(&redis::cmd("SAVE")).await.unwrap();
    cluster.nodes[owner].kill();
    let down = sam.api_get("/x").await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE, "{}", down.text());
    assert_eq!(down.json()["error"], "session_store_unavailable");
    assert_eq!(sam.api_get("/public/status").await.status, StatusCode::OK, "what needs no Redis keeps working");
    // Its directory holds nodes.conf and dump.rdb: the node rejoins with its slots and data.
    cluster.nodes[owner].spawn().await;
    cluster.until_ok().await;
    for origin in [&env.origin, &b_replica.origin] {
        let mut b = Browser::new(origin);
        b.jar = sam.jar.clone();
        let started = Instant::now();
        loop {
            let status = b.api_get("/x").await.status;
            if status == StatusCode::OK {
                break;
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{origin}: nobody is signed out by an outage");
            assert!(started.elapsed() < Duration::from_secs(15), "{origin} did not recover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("{origin} recovered {:?} after the node was back", started.elapsed());
    }
}

#[tokio::test]
async fn moving_the_proxys_slot_to_another_node_under_load_costs_no_request() {
    let Some(cluster) = Cluster::start().await else { return };
    // Every request reads Redis: the session record and (staleness 0) the revocations.
    // (Sam signs in again and again below: the per-user cap must not end the session under load.)
    let env = Env::start_with(on_cluster(&cluster, "redis", |c| {
        c.session.revocation_staleness = HumanDuration(Duration::ZERO);
        c.session.max_sessions_per_user = 1000;
    }))
    .await;
    let b_replica = env.start_replica().await;
    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    let mut sam = env.browser();
    sam.sign_in("/", SAM).await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loads = vec![
        load(env.origin.clone(), &jean, stopped.clone()),
        load(b_replica.origin.clone(), &jean, stopped.clone()),
        load(env.origin.clone(), &sam, stopped.clone()),
        load(b_replica.origin.clone(), &sam, stopped.clone()),
    ];
    // Sign-ins during the move too: each writes a record and two indexes in one script.
    let origin = env.origin.clone();
    let signing_in = {
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let mut count = 0;
            while !*stopped.borrow() {
                let mut b = Browser::new(&origin);
                let landed = b.sign_in("/", SAM).await;
                assert_eq!(landed.status, StatusCode::OK, "a sign-in during the move: {}", landed.text());
                count += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            count
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (from, from_id) = cluster.owner_of("{trousseau-proxy}").await;
    let to = (from + 1) % cluster.nodes.len();
    let to_id = {
        let nodes: String = cluster.nodes[to].command(redis::cmd("CLUSTER").arg("NODES")).await.unwrap();
        nodes.lines().find(|l| l.contains("myself")).unwrap().split(' ').next().unwrap().to_string()
    };
    // All of that node's slots (5,461): ours among them, whichever order redis-cli takes them in.
    let started = Instant::now();
    // On a thread of its own: the proxies and the load share this test's runtime.
    let mut reshard = Command::new(redis_cli());
    reshard.args(["-a", PASSWORD, "--no-auth-warning", "--cluster", "reshard", &format!("127.0.0.1:{}", cluster.nodes[from].port)]);
    reshard.args(["--cluster-from", &from_id, "--cluster-to", &to_id, "--cluster-slots", "16384", "--cluster-yes"]);
    let out = tokio::task::spawn_blocking(move || reshard.output().expect("redis-cli runs")).await.unwrap();
    assert!(out.status.success(), "reshard: {}", String::from_utf8_lossy(&out.stderr));
    let moved_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();
    let sign_ins = signing_in.await.unwrap();
    let mut requests = 0;
    for l in loads {
        for s in l.await.unwrap() {
            assert_eq!(s.status, StatusCode::OK, "a request during the move: `{}`", s.error);
            requests += 1;
        }
    }
    let (now_at, _) = cluster.owner_of("{trousseau-proxy}").await;
    assert_eq!(now_at, to, "the proxy's slot moved");
    eprintln!("slot migration: node {from} → {to} in {moved_in:?}; {requests} requests and {sign_ins} sign-ins meanwhile, all answered 200");
    assert!(requests > 100 && sign_ins > 3, "steady load: {requests} requests, {sign_ins} sign-ins");
    assert_eq!(env.trousseau().stats().refresh_reuse_detected, 0);
}
