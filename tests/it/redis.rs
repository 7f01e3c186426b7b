//! Several replicas sharing one real Redis: server-side sessions, back-channel revocations and
//! refresh coordination, Redis outages (fail closed, recover on their own), and what Redis
//! actually holds (sealed records, namespaced and expiring keys).
//!
//! Each test starts its own `redis-server` (the Debian package; `.ci/run` installs it) on an
//! ephemeral loopback port, without persistence, with a password read by the proxies from
//! `session.redis_url_file`, and kills it when done. Without `redis-server` the tests say they
//! are skipped — except under CI, where they fail.


use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use crate::support::*;
use trousseau_proxy::config::HumanDuration;
use trousseau_proxy::session::Session;

const PASSWORD: &str = "test-redis-password-4f1c";
/// A second demo user (Sam Taylor, no organization).
const SAM: &str = "7b1e9c4d-2f38-4a6b-8e5d-c0a9f1e2d3b4";

/// A `redis-server` of our own on a loopback port; killed on drop.
pub(super) struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// With TLS only (`rediss://`): the CA (PEM) that signed its certificate.
    tls_ca: Option<String>,
}

impl RedisServer {
    /// Starts one, or `None` (skipped) when redis-server is not installed outside CI.
    pub(super) async fn start() -> Option<RedisServer> {
        RedisServer::start_with(false).await
    }

    /// Starts one that speaks TLS only, with a certificate from a CA made for the test.
    async fn start_tls() -> Option<RedisServer> {
        RedisServer::start_with(true).await
    }

    async fn start_with(tls: bool) -> Option<RedisServer> {
        if !parts::require_program(&parts::REDIS, &parts::redis_server()) {
            return None;
        }
        let port = crate::support::free_port();
        let dir = std::env::temp_dir().join(format!("tp-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tls_ca = tls.then(|| {
            let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca.distinguished_name.push(rcgen::DnType::CommonName, "trousseau-proxy Redis test CA");
            ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
            let issuer = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
            std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
            std::fs::write(dir.join("ca.pem"), issuer.pem()).unwrap();
            dir.join("ca.pem").display().to_string()
        });
        let mut server = RedisServer { port, dir, child: None, tls_ca };
        server.spawn().await;
        Some(server)
    }

    async fn spawn(&mut self) {
        let port = self.port.to_string();
        let (plain_port, tls_args) = match &self.tls_ca {
            None => (port.as_str(), Vec::new()),
            Some(ca) => {
                let file = |name: &str| self.dir.join(name).display().to_string();
                let args = ["--tls-port", &port, "--tls-cert-file", &file("server.pem"), "--tls-key-file", &file("server.key")];
                let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
                args.extend(["--tls-ca-cert-file".into(), ca.clone(), "--tls-auth-clients".into(), "no".into()]);
                ("0", args)
            }
        };
        let child = Command::new(parts::redis_server())
            .args(["--port", plain_port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", PASSWORD, "--dir", self.dir.to_str().unwrap(), "--loglevel", "warning"])
            .args(tls_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = self.try_connection().await {
                if redis::cmd("PING").query_async::<String>(&mut c).await.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not come up on port {}", self.port);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The URL the proxies use, password included.
    fn url(&self) -> String {
        match self.tls_ca {
            None => format!("redis://:{PASSWORD}@127.0.0.1:{}/0", self.port),
            Some(_) => format!("rediss://:{PASSWORD}@localhost:{}/0", self.port),
        }
    }

    /// A file holding [`Self::url`], for `session.redis_url_file`.
    fn url_file(&self) -> String {
        let path = self.dir.join("redis-url");
        std::fs::write(&path, format!("{}\n", self.url())).unwrap();
        path.display().to_string()
    }

    async fn try_connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let client = match &self.tls_ca {
            None => redis::Client::open(self.url())?,
            Some(ca) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates { client_tls: None, root_cert: Some(std::fs::read(ca).unwrap()) },
            )?,
        };
        client.get_multiplexed_async_connection().await
    }

    /// A direct connection, to look at what the proxies stored.
    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.try_connection().await.expect("connect to the test redis-server")
    }

    /// Stops Redis. With `keep_data`, the dataset is saved first and comes back at the restart
    /// (a restart or failover that loses nothing); without, it is gone (a crash without
    /// persistence).
    async fn stop(&mut self, keep_data: bool) {
        if keep_data {
            let mut c = self.connection().await;
            redis::cmd("SAVE").query_async::<()>(&mut c).await.unwrap();
        } else {
            let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (and with the same data directory).
    async fn restart(&mut self) {
        self.spawn().await;
    }

    /// Every key the proxies wrote.
    async fn keys(&self) -> Vec<String> {
        let mut c = self.connection().await;
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.unwrap();
        keys.sort();
        keys
    }

    async fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query_async(&mut self.connection().await).await.unwrap()
    }

    async fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL").arg(key).query_async(&mut self.connection().await).await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Proxy options: Redis from a file, sessions stored as `store` (`cookie` or `redis`), and
/// `/public/*` reachable without a session.
pub(super) fn with_redis(redis: &RedisServer, store: &'static str, tweak: impl FnOnce(&mut trousseau_proxy::config::FileConfig) + Send + 'static) -> EnvOptions {
    let url_file = redis.url_file();
    EnvOptions {
        configure: Box::new(move |c| {
            c.session.store = crate::support::named(store);
            c.session.redis_url_file = Some(url_file);
            c.routes.public = vec!["/public/*".into()];
            tweak(c);
        }),
        idp: Box::new(|_| {}),
    }
}

/// The store handle inside a browser's session cookie (`<count>.<sealed handle>`).
fn handle_of(env: &Env, b: &Browser) -> String {
    let value = &b.jar["trousseau_session"];
    let (_, sealed) = value.split_once('.').expect("a chunked session cookie");
    String::from_utf8(env.sealer().open("session-handle", sealed).expect("a sealed handle")).unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens a session record read from Redis, as the proxy does.
fn open_record(env: &Env, sealed: &str) -> Session {
    let plain = env.sealer().open("session-record", sealed).expect("the record opens with the session secret");
    let record: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    serde_json::from_value(record["s"].clone()).unwrap()
}

pub(super) async fn post_logout_token(origin: &str, token: &str) -> Answer {
    Browser::new(origin)
        .request(
            Method::POST,
            "/.trousseau/backchannel-logout",
            &[("content-type", "application/x-www-form-urlencoded")],
            Bytes::from(format!("logout_token={token}")),
        )
        .await
}

/// Polls until `f` gives `want` (or the deadline); returns how long it took.
pub(super) async fn until_status<F, Fut>(deadline: Duration, want: StatusCode, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let started = Instant::now();
    loop {
        let got = f().await.status;
        if got == want {
            return started.elapsed();
        }
        assert!(started.elapsed() < deadline, "still {got} after {deadline:?} (want {want})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn backchannel_logout_on_one_replica_ends_the_session_on_the_other() {
    let Some(redis) = RedisServer::start().await else { return };
    let env = Env::start_with(with_redis(&redis, "redis", |_| {})).await;
    let b_replica = env.start_replica().await;

    let mut on_a = env.browser();
    on_a.sign_in("/", JEAN).await;
    let mut on_b = b_replica.browser_like(&on_a);
    assert_eq!(on_b.api_get("/x").await.status, StatusCode::OK, "replica B serves the session stored by A");
    // Someone else's session, to see it survive.
    let mut other = env.browser();
    other.sign_in("/", SAM).await;
    let other_on_b = b_replica.browser_like(&other);

    // Trousseau tells replica A that Jean's session (sid) ended.
    let stored = redis.get(&format!("trousseau-proxy:session:{}", sha256_hex(handle_of(&env, &on_a).as_bytes()))).await.unwrap();
    let sid = open_record(&env, &stored).sid.expect("the session has a sid");
    let token = env.trousseau().logout_token(None, Some(&sid));
    let r = post_logout_token(&env.origin, &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(on_a.api_get("/x").await.status, StatusCode::UNAUTHORIZED, "replica A: at once");
    let took = until_status(Duration::from_secs(3), StatusCode::UNAUTHORIZED, || {
        let mut b = on_b.clone();
        async move { b.api_get("/x").await }
    })
    .await;
    assert!(took <= Duration::from_millis(1500), "replica B within revocation_staleness (1 s): took {took:?}");
    eprintln!("back-channel logout on A reached B after {took:?}");
    assert_eq!(b_replica.browser_like(&other_on_b).api_get("/x").await.status, StatusCode::OK, "other sessions live on");

    // The same logout token again, at the other replica: a replay.
    assert_eq!(post_logout_token(&b_replica.origin, &token).await.status, StatusCode::BAD_REQUEST);

    // The revocation is namespaced and expires with the longest session (30 days by default).
    let ttl = redis.pttl(&format!("trousseau-proxy:revoked:sid:{sid}")).await;
    assert!(ttl > 29 * 86_400_000 && ttl <= 30 * 86_400_000, "revocation TTL {ttl} ms");
}

#[tokio::test]
async fn cookie_sessions_share_revocations_through_redis() {
    let Some(redis) = RedisServer::start().await else { return };
    let env = Env::start_with(with_redis(&redis, "cookie", |c| {
        c.session.revocations = Some(trousseau_proxy::config::RevocationKind::Redis);
        c.session.revocation_staleness = HumanDuration(Duration::ZERO);
    }))
    .await;
    let b_replica = env.start_replica().await;
    let mut on_a = env.browser();
    on_a.sign_in("/", JEAN).await;
    let mut on_b = b_replica.browser_like(&on_a);
    assert_eq!(on_b.api_get("/x").await.status, StatusCode::OK);

    // Logout by sub, received by B: A refuses the cookie on its very next request (staleness 0).
    let r = post_logout_token(&b_replica.origin, &env.trousseau().logout_token(Some(JEAN), None)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(on_a.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(on_b.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
    // Signing in again afterwards works, on both (sessions of the logout's second are revoked too).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut again = env.browser();
    assert_eq!(again.sign_in("/", JEAN).await.json()["headers"]["x-trousseau-sub"][0], JEAN);
    assert_eq!(b_replica.browser_like(&again).api_get("/x").await.status, StatusCode::OK);
}

/// Fires 50 concurrent requests carrying the same cookies, alternating between two replicas.
pub(super) async fn fifty_across(origins: [&str; 2], cookie: &str) -> Vec<Answer> {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut client = Browser::new(origins[i % 2]);
        let cookie = cookie.to_string();
        tasks.push(tokio::spawn(async move {
            client.request(Method::GET, "/api", &[("cookie", cookie.as_str()), ("accept", "application/json")], Bytes::new()).await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

#[tokio::test]
async fn fifty_expired_sessions_across_two_replicas_refresh_once() {
    let Some(redis) = RedisServer::start().await else { return };
    // Access tokens of 8 s, refreshed 5 s before expiry — capped at half the token's life, 4 s: due
    // at most 4 s after sign-in, and fresh again for at least 3 s after the refresh.
    let mut options = with_redis(&redis, "redis", |c| c.session.refresh_skew = HumanDuration(Duration::from_secs(5)));
    options.idp = Box::new(|i| {
        i.access_token_ttl = Duration::from_secs(8);
        i.id_token_ttl = Duration::from_secs(8);
    });
    let env = Env::start_with(options).await;
    let b_replica = env.start_replica().await;
    let mut browser = env.browser();
    browser.sign_in("/", JEAN).await;
    let cookie = browser.cookie_header();
    tokio::time::sleep(Duration::from_millis(4100)).await;

    let base = env.trousseau().stats();
    env.trousseau().set_token_endpoint_delay(Duration::from_millis(300));
    let started = Instant::now();
    let answers = fifty_across([&env.origin, &b_replica.origin], &cookie).await;
    let took = started.elapsed();
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert_eq!(a.json()["headers"]["x-trousseau-sub"][0], JEAN);
    }
    let stats = env.trousseau().stats();
    assert_eq!(stats.refresh_grants_ok, base.refresh_grants_ok + 1, "one refresh for 50 requests on 2 replicas");
    assert_eq!(stats.refresh_reuse_detected, 0);
    assert_eq!(stats.refresh_grants_failed, base.refresh_grants_failed);
    let coalesced = |app: &trousseau_proxy::app::App| {
        app.metrics_text().lines().find(|l| l.starts_with("trousseau_proxy_refreshes_total{result=\"coalesced\"}")).unwrap().to_string()
    };
    eprintln!("50 requests over 2 replicas: {took:?}; A {}; B {}", coalesced(&env.app), coalesced(&b_replica.app));

    // The session lives on, refreshed, on both replicas — no further refresh needed.
    env.trousseau().set_token_endpoint_delay(Duration::ZERO);
    assert_eq!(browser.api_get("/x").await.status, StatusCode::OK);
    assert_eq!(b_replica.browser_like(&browser).api_get("/x").await.status, StatusCode::OK);
    assert_eq!(env.trousseau().stats().refresh_grants_ok, base.refresh_grants_ok + 1);
    // Locks are released; the shared result stays a minute, sealed.
    let keys = redis.keys().await;
    assert!(!keys.iter().any(|k| k.starts_with("trousseau-proxy:refresh:lock:")), "{keys:?}");
    let result_key = keys.iter().find(|k| k.starts_with("trousseau-proxy:refresh:result:")).expect("a shared result");
    let ttl = redis.pttl(result_key).await;
    assert!(ttl > 0 && ttl <= 60_000, "result TTL {ttl} ms");
}

#[tokio::test]
async fn fifty_expired_cookies_across_two_replicas_refresh_once() {
    let Some(redis) = RedisServer::start().await else { return };
    // Cookie sessions, Redis for revocations and refresh coordination only. Access tokens that
    // expire as they are issued: every request is due for a refresh.
    let mut options = with_redis(&redis, "cookie", |_| {});
    options.idp = Box::new(|i| {
        i.access_token_ttl = Duration::ZERO;
        i.id_token_ttl = Duration::from_secs(10);
    });
    let env = Env::start_with(options).await;
    let b_replica = env.start_replica().await;
    let mut browser = env.browser();
    browser.sign_in("/", JEAN).await;
    let old_cookie = browser.cookie_header();
    let base = env.trousseau().stats();
    env.trousseau().set_token_endpoint_delay(Duration::from_millis(300));

    let answers = fifty_across([&env.origin, &b_replica.origin], &old_cookie).await;
    let mut refreshed = std::collections::HashSet::new();
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert_eq!(a.json()["headers"]["x-trousseau-sub"][0], JEAN);
        refreshed.extend(a.set_cookies().into_iter().map(|sc| sc.split(';').next().unwrap().to_string()));
    }
    let stats = env.trousseau().stats();
    assert_eq!(stats.refresh_grants_ok, base.refresh_grants_ok + 1, "one refresh for 50 requests on 2 replicas");
    assert_eq!(stats.refresh_reuse_detected, 0);
    let tokens: std::collections::HashSet<String> = refreshed
        .iter()
        .map(|c| {
            let mut headers = http::HeaderMap::new();
            headers.insert("cookie", c.parse().unwrap());
            let codec = trousseau_proxy::session::cookies::SessionCodec::new(
                Arc::new(env.sealer()),
                trousseau_proxy::session::cookies::CookieSettings::new("trousseau_session", false),
            );
            let cookies = trousseau_proxy::session::cookies::RequestCookies::from_headers(&headers);
            codec.load(&cookies).expect("a session cookie").refresh_token.clone().expect("a refresh token")
        })
        .collect();
    assert_eq!(tokens.len(), 1, "both replicas hand out the same refreshed session");

    // A third replica, started after the refresh, receives the old cookie: it finds the shared
    // result in Redis instead of replaying the rotated token.
    let c_replica = env.start_replica().await;
    let late = Browser::new(&c_replica.origin)
        .request(Method::GET, "/api", &[("cookie", old_cookie.as_str()), ("accept", "application/json")], Bytes::new())
        .await;
    assert_eq!(late.status, StatusCode::OK, "{}", late.text());
    let stats = env.trousseau().stats();
    assert_eq!(stats.refresh_grants_ok, base.refresh_grants_ok + 1);
    assert_eq!(stats.refresh_reuse_detected, 0);

    // The session lives on with the new cookie.
    env.trousseau().set_token_endpoint_delay(Duration::ZERO);
    let new_cookie = refreshed.into_iter().next().unwrap();
    let next = Browser::new(&b_replica.origin)
        .request(Method::GET, "/api", &[("cookie", new_cookie.as_str()), ("accept", "application/json")], Bytes::new())
        .await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(env.trousseau().stats().refresh_reuse_detected, 0);
}

#[tokio::test]
async fn redis_outage_fails_closed_and_recovers_on_its_own() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let env = Env::start_with(with_redis(&redis, "redis", |_| {})).await;
    let b_replica = env.start_replica().await;
    let mut on_a = env.browser();
    on_a.sign_in("/", JEAN).await;
    let mut on_b = b_replica.browser_like(&on_a);
    assert_eq!(on_b.api_get("/x").await.status, StatusCode::OK);
    assert!(env.app.metrics_text().contains("trousseau_proxy_redis_up 1"));

    redis.stop(true).await;
    let down_at = Instant::now();
    for (name, b) in [("A", &mut on_a), ("B", &mut on_b)] {
        let api = b.api_get("/x").await;
        assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE, "replica {name}: {}", api.text());
        assert_eq!(api.json()["error"], "session_store_unavailable");
        assert!(api.headers.contains_key("retry-after"));
        let page = b.navigate("/x").await;
        assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "replica {name}: a navigation is not sent to sign in");
        assert!(b.jar.contains_key("trousseau_session"), "an outage signs nobody out");
        // What needs no Redis keeps working.
        assert_eq!(b.api_get("/public/status").await.status, StatusCode::OK);
        assert_eq!(b.api_get("/.trousseau/healthz").await.status, StatusCode::OK);
    }
    let stranger = env.browser().api_get("/x").await;
    assert_eq!(stranger.status, StatusCode::UNAUTHORIZED, "no cookie, no Redis needed");
    let logout = post_logout_token(&b_replica.origin, &env.trousseau().logout_token(Some(JEAN), None)).await;
    assert_eq!(logout.status, StatusCode::SERVICE_UNAVAILABLE, "a logout that cannot be recorded is not acknowledged");
    let answered_in = down_at.elapsed();
    assert!(answered_in < Duration::from_secs(5), "503s come fast: {answered_in:?} for 11 requests");
    assert!(env.app.metrics_text().contains("trousseau_proxy_redis_up 0"));

    // Redis is back: both replicas recover without a restart.
    redis.restart().await;
    let a_took = until_status(Duration::from_secs(10), StatusCode::OK, || {
        let mut b = on_a.clone();
        async move { b.api_get("/x").await }
    })
    .await;
    let b_took = until_status(Duration::from_secs(10), StatusCode::OK, || {
        let mut b = on_b.clone();
        async move { b.api_get("/x").await }
    })
    .await;
    eprintln!("after the Redis restart: replica A recovered in {a_took:?}, B in {b_took:?}; 11 requests during the outage took {answered_in:?}");
    assert!(env.app.metrics_text().contains("trousseau_proxy_redis_up 1"));

    // A crash that loses everything: sessions are gone (no session, not an error) and signing in
    // again works.
    redis.stop(false).await;
    redis.restart().await;
    until_status(Duration::from_secs(10), StatusCode::UNAUTHORIZED, || {
        let mut b = on_a.clone();
        async move { b.api_get("/x").await }
    })
    .await;
    let mut again = env.browser();
    assert_eq!(again.sign_in("/", JEAN).await.json()["headers"]["x-trousseau-sub"][0], JEAN);
    assert_eq!(b_replica.browser_like(&again).api_get("/x").await.status, StatusCode::OK, "B's stale connection is replaced, not failed");
}

#[tokio::test]
async fn cookie_sessions_fail_closed_when_revocations_cannot_be_checked() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let env = Env::start_with(with_redis(&redis, "cookie", |_| {})).await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    assert_eq!(b.api_get("/x").await.status, StatusCode::OK);

    redis.stop(false).await;
    // Within revocation_staleness (1 s) the cached answer may serve; after it, 503 — never a pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = b.api_get("/x").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(b.jar.contains_key("trousseau_session"));
    redis.restart().await;
    until_status(Duration::from_secs(10), StatusCode::OK, || {
        let mut b = b.clone();
        async move { b.api_get("/x").await }
    })
    .await;
}

#[tokio::test]
async fn redis_holds_only_sealed_records_under_namespaced_expiring_keys() {
    let Some(redis) = RedisServer::start().await else { return };
    // The access token is kept in the session too: nothing of it may show in Redis either.
    let env = Env::start_with(with_redis(&redis, "redis", |c| c.identity.pass_access_token = true)).await;
    let mut b = env.browser();
    let page = b.sign_in("/", JEAN).await;
    assert_eq!(page.status, StatusCode::OK);
    let forwarded = b.api_get("/x").await.json();
    let access_token = forwarded["headers"]["x-trousseau-access-token"][0].as_str().expect("the access token is forwarded").to_string();

    let handle = handle_of(&env, &b);
    let keys = redis.keys().await;
    assert!(keys.iter().all(|k| k.starts_with("trousseau-proxy:")), "{keys:?}");
    let key = format!("trousseau-proxy:session:{}", sha256_hex(handle.as_bytes()));
    assert!(keys.contains(&key), "the record is keyed by the handle's SHA-256: {keys:?}");
    assert!(!keys.iter().any(|k| k.contains(&handle)), "no key names the handle itself");

    let raw = redis.get(&key).await.unwrap();
    let session = open_record(&env, &raw);
    eprintln!("sealed session record for Jean (2 organizations, tokens kept): {} bytes", raw.len());
    let refresh_token = session.refresh_token.clone().expect("a refresh token");
    let secrets = [
        ("refresh token", refresh_token.as_str()),
        ("access token", access_token.as_str()),
        ("id token", session.id_token.as_deref().unwrap_or("eyJ")),
        ("email", session.identity.email.as_deref().unwrap()),
        ("sub", session.identity.sub.as_str()),
        ("handle", handle.as_str()),
    ];
    for (what, secret) in secrets {
        assert!(!raw.contains(secret), "the raw record shows the {what}");
    }
    for clear in ["Jean", "Dupont", "@", "organizations", "\"u\""] {
        assert!(!raw.contains(clear), "the raw record shows {clear:?}");
    }
    assert_eq!(session.refresh_token.as_deref(), Some(refresh_token.as_str()));
    assert_eq!(session.access_token.as_deref(), Some(access_token.as_str()));

    // The record expires with the session (max_lifetime, 30 days by default).
    let ttl = redis.pttl(&key).await;
    assert!(ttl > 29 * 86_400_000 && ttl <= 30 * 86_400_000, "record TTL {ttl} ms");

    // A record moved under another session's key does not open there.
    let mut c = redis.connection().await;
    let mut thief = env.browser();
    thief.sign_in("/", SAM).await;
    let thief_key = format!("trousseau-proxy:session:{}", sha256_hex(handle_of(&env, &thief).as_bytes()));
    redis::cmd("SET").arg(&thief_key).arg(&raw).query_async::<()>(&mut c).await.unwrap();
    assert_eq!(thief.api_get("/x").await.status, StatusCode::UNAUTHORIZED, "a copied record is no session");

    // Sign-out removes the record.
    b.request(Method::POST, "/.trousseau/logout", &[("accept", "text/html")], Bytes::new()).await;
    assert_eq!(redis.get(&key).await, None);
}

#[tokio::test]
async fn rediss_with_a_private_ca_works_and_is_verified() {
    let Some(redis) = RedisServer::start_tls().await else { return };
    let ca = redis.tls_ca.clone().unwrap();
    let env = Env::start_with(with_redis(&redis, "redis", move |c| c.session.redis_ca_file = Some(ca))).await;
    let b_replica = env.start_replica().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/", JEAN).await.json()["headers"]["x-trousseau-sub"][0], JEAN);
    assert_eq!(b_replica.browser_like(&b).api_get("/x").await.status, StatusCode::OK);
    let key = format!("trousseau-proxy:session:{}", sha256_hex(handle_of(&env, &b).as_bytes()));
    assert_eq!(open_record(&env, &redis.get(&key).await.unwrap()).identity.sub, JEAN, "the record went over TLS");

    // Without the CA, the certificate is not trusted: no connection, and sign-in fails closed.
    let untrusting = Env::start_with(with_redis(&redis, "redis", |_| {})).await;
    let mut b = untrusting.browser();
    let callback = b.sign_in_to_callback("/", JEAN).await;
    assert_eq!(callback.status, StatusCode::SERVICE_UNAVAILABLE, "{}", callback.text());
    assert!(untrusting.app.metrics_text().contains("trousseau_proxy_redis_up 0"));
}

#[tokio::test]
async fn a_back_channel_logout_on_one_replica_ends_bearer_tokens_on_the_other() {
    let Some(redis) = RedisServer::start().await else { return };
    let env = Env::start_with(with_redis(&redis, "cookie", |c| {
        c.api.bearer = trousseau_proxy::config::Bearer::Userinfo;
        c.identity.pass_access_token = true;
    }))
    .await;
    let b_replica = env.start_replica().await;
    let mut b = env.browser();
    let token = b.sign_in("/", JEAN).await.json()["headers"]["x-trousseau-access-token"][0].as_str().unwrap().to_string();
    let bearer_on_b = || {
        let (origin, auth) = (b_replica.origin.clone(), format!("Bearer {token}"));
        async move { Browser::new(&origin).request(Method::GET, "/api", &[("authorization", auth.as_str()), ("accept", "application/json")], Bytes::new()).await }
    };
    assert_eq!(bearer_on_b().await.status, StatusCode::OK, "replica B knows (and caches) the token");

    // Trousseau tells replica A that Jean is logged out everywhere.
    let r = post_logout_token(&env.origin, &env.trousseau().logout_token(Some(JEAN), None)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let took = until_status(Duration::from_secs(3), StatusCode::UNAUTHORIZED, bearer_on_b).await;
    assert!(took <= Duration::from_millis(1500), "replica B within revocation_staleness (1 s): took {took:?}");
}

// ---------------------------------------------------------------------------------------------
// Hardening (issue 14): application binding, final sign-out, per-user cap, short tokens, and what
// someone with write access to Redis can (not) do.
// ---------------------------------------------------------------------------------------------

/// Every WARN and ERROR line logged on this thread while the guard lives (the proxies of a
/// `#[tokio::test]` run on the test's own thread).
struct LogCapture {
    lines: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct CaptureWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    fn warnings() -> LogCapture {
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = CaptureWriter(lines.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        LogCapture { lines, _guard: tracing::subscriber::set_default(subscriber) }
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.lines.lock().unwrap()).lines().map(String::from).collect()
    }
}

/// The `trousseau_proxy_redis_up` line of an app's metrics.
fn redis_up(app: &trousseau_proxy::app::App) -> String {
    app.metrics_text().lines().find(|l| l.starts_with("trousseau_proxy_redis_up")).unwrap_or("").to_string()
}

/// The record key of a browser's `store: redis` session.
fn record_key(env: &Env, b: &Browser) -> String {
    format!("trousseau-proxy:session:{}", sha256_hex(handle_of(env, b).as_bytes()))
}

async fn redis_cmd<T: redis::FromRedisValue>(redis: &RedisServer, cmd: &mut redis::Cmd) -> T {
    cmd.query_async(&mut redis.connection().await).await.unwrap()
}

#[tokio::test]
async fn an_application_sharing_redis_and_secrets_cannot_use_another_applications_sessions() {
    let Some(redis) = RedisServer::start().await else { return };
    // Two applications on one Redis (against the advice, but it happens), with the same secret.
    let app_a = Env::start_with(with_redis(&redis, "redis", |_| {})).await;
    let app_b = Env::start_with(with_redis(&redis, "redis", |_| {})).await;
    let mut at_a = app_a.browser();
    at_a.sign_in("/", JEAN).await;
    assert!(redis.get(&record_key(&app_a, &at_a)).await.is_some());

    let mut at_b = app_b.browser();
    at_b.jar = at_a.jar.clone();
    assert_eq!(at_b.api_get("/x").await.status, StatusCode::UNAUTHORIZED, "A's handle is nothing at B");
    let auth = at_b.request(Method::GET, "/.trousseau/auth", &[("accept", "application/json"), ("x-forwarded-uri", "/x")], Bytes::new()).await;
    assert_eq!(auth.status, StatusCode::UNAUTHORIZED);
    assert!(!auth.headers.contains_key("x-trousseau-jwt-assertion"));
    // Even A's record itself, planted under a handle B issued, does not open at B.
    let mut own_b = app_b.browser();
    own_b.sign_in("/", SAM).await;
    let raw = redis.get(&record_key(&app_a, &at_a)).await.unwrap();
    redis_cmd::<()>(&redis, redis::cmd("SET").arg(record_key(&app_b, &own_b)).arg(&raw)).await;
    assert_eq!(own_b.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(at_a.api_get("/x").await.status, StatusCode::OK, "A still serves its own session");
}

#[tokio::test]
async fn one_account_keeps_at_most_the_cap_of_sessions_across_replicas() {
    let Some(redis) = RedisServer::start().await else { return };
    let env = Env::start_with(with_redis(&redis, "redis", |c| c.session.max_sessions_per_user = 3)).await;
    let b_replica = env.start_replica().await;
    let mut browsers = Vec::new();
    for i in 0..5 {
        let mut b = if i % 2 == 0 { env.browser() } else { Browser::new(&b_replica.origin) };
        assert_eq!(b.sign_in("/", JEAN).await.status, StatusCode::OK);
        browsers.push(b);
    }
    let mut sam = env.browser();
    sam.sign_in("/", SAM).await;
    for (i, b) in browsers.iter().enumerate() {
        let want = if i < 2 { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
        for origin in [&env.origin, &b_replica.origin] {
            let mut on = Browser::new(origin);
            on.jar = b.jar.clone();
            assert_eq!(on.api_get("/x").await.status, want, "Jean's sign-in #{i} at {origin}");
        }
        let present = redis.get(&record_key(&env, b)).await.is_some();
        assert_eq!(present, i >= 2, "record of sign-in #{i}");
    }
    assert_eq!(sam.api_get("/x").await.status, StatusCode::OK, "another user is not affected");
    // Two per-user indexes (Jean, Sam), bounded, expiring; nothing names the user in clear.
    let keys = redis.keys().await;
    let users: Vec<&String> = keys.iter().filter(|k| k.starts_with("trousseau-proxy:user:")).collect();
    assert_eq!(users.len(), 2, "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains(JEAN)), "{keys:?}");
    let sizes: Vec<i64> = futures_util::future::join_all(users.iter().map(|k| async { redis_cmd::<i64>(&redis, redis::cmd("ZCARD").arg(*k)).await })).await;
    assert!(sizes.contains(&3) && sizes.contains(&1), "{sizes:?}");
    for k in users {
        assert!(redis.pttl(k).await > 29 * 86_400_000);
    }
}

#[tokio::test]
async fn a_copied_cookie_is_dead_after_logout_on_every_replica() {
    let Some(redis) = RedisServer::start().await else { return };
    // Cookie sessions with Redis revocations; access tokens always due for a refresh.
    let mut options = with_redis(&redis, "cookie", |_| {});
    options.idp = Box::new(|i| i.access_token_ttl = Duration::ZERO);
    let env = Env::start_with(options).await;
    let b_replica = env.start_replica().await;
    let on = |origin: &str, cookies: &Browser| {
        let mut b = Browser::new(origin);
        b.jar = cookies.jar.clone();
        b
    };
    let mut owner = env.browser();
    owner.sign_in("/", JEAN).await;
    assert_eq!(owner.api_get("/x").await.status, StatusCode::OK);
    // B serves (and refreshes) the session too, and caches "not revoked" for revocation_staleness.
    let mut owner_on_b = on(&b_replica.origin, &owner);
    assert_eq!(owner_on_b.api_get("/x").await.status, StatusCode::OK);
    let mut owner = on(&env.origin, &owner_on_b);
    // Copied now, with the latest refresh token.
    let copy = owner.clone();
    let refreshes = env.trousseau().stats().refresh_grants_ok;

    let out = owner.request(Method::POST, "/.trousseau/logout", &[("accept", "text/html")], Bytes::new()).await;
    assert_eq!(out.status, StatusCode::FOUND);
    for _ in 0..3 {
        assert_eq!(on(&env.origin, &copy).api_get("/x").await.status, StatusCode::UNAUTHORIZED, "at once on the replica that signed out");
    }
    assert_eq!(env.trousseau().stats().refresh_grants_ok, refreshes, "the copy never refreshed");
    let took = until_status(Duration::from_secs(3), StatusCode::UNAUTHORIZED, || {
        let mut b = on(&b_replica.origin, &copy);
        async move { b.api_get("/x").await }
    })
    .await;
    assert!(took <= Duration::from_millis(1500), "on the other replica within revocation_staleness (1 s): {took:?}");
    eprintln!("a sign-out on A reached B after {took:?}");

    // The sign-out is kept for what remains of the session's life (30 days by default).
    let keys = redis.keys().await;
    let key = keys.iter().find(|k| k.starts_with("trousseau-proxy:revoked:session:")).expect("the sign-out is in Redis");
    let ttl = redis.pttl(key).await;
    assert!(ttl > 29 * 86_400_000 && ttl <= 30 * 86_400_000, "TTL {ttl} ms");
}

#[tokio::test]
async fn access_tokens_of_three_seconds_over_two_replicas_refresh_once() {
    let Some(redis) = RedisServer::start().await else { return };
    // 3 s access tokens with rotation, the default 30 s skew, sessions in Redis.
    let mut options = with_redis(&redis, "redis", |_| {});
    options.idp = Box::new(|i| {
        i.access_token_ttl = Duration::from_secs(3);
        i.rotate_refresh_tokens = true;
    });
    let env = Env::start_with(options).await;
    let b_replica = env.start_replica().await;
    let mut browser = env.browser();
    browser.sign_in("/", JEAN).await;
    tokio::time::sleep(Duration::from_millis(2100)).await; // past half the token's life: due
    let base = env.trousseau().stats();

    // 48 requests, 8 waves of 6 at once, alternating replicas, each wave with the latest cookies.
    for _ in 0..8 {
        let mut tasks = Vec::new();
        for i in 0..6 {
            let mut client = Browser::new(if i % 2 == 0 { &env.origin } else { &b_replica.origin });
            client.jar = browser.jar.clone();
            tasks.push(tokio::spawn(async move { client.api_get("/api").await }));
        }
        for t in tasks {
            let a = t.await.unwrap();
            assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        }
    }
    let stats = env.trousseau().stats();
    assert_eq!(stats.refresh_grants_ok, base.refresh_grants_ok + 1, "one refresh for 48 requests on 2 replicas");
    assert_eq!(stats.refresh_reuse_detected, 0);
    assert_eq!(stats.refresh_grants_failed, base.refresh_grants_failed);
}

#[tokio::test]
async fn deleting_a_revocation_key_in_redis_does_not_revive_a_signed_out_session() {
    let Some(redis) = RedisServer::start().await else { return };
    let env = Env::start_with(with_redis(&redis, "redis", |c| c.session.revocation_staleness = HumanDuration(Duration::ZERO))).await;
    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    let mut sam = env.browser();
    sam.sign_in("/", SAM).await;
    let jean_record = record_key(&env, &jean);
    let sam_record = record_key(&env, &sam);
    let sid = open_record(&env, &redis.get(&jean_record).await.unwrap()).sid.expect("a sid");

    // Jean's Trousseau session ends (by sid), Sam is signed out everywhere (by sub).
    assert_eq!(post_logout_token(&env.origin, &env.trousseau().logout_token(None, Some(&sid))).await.status, StatusCode::OK);
    assert_eq!(post_logout_token(&env.origin, &env.trousseau().logout_token(Some(SAM), None)).await.status, StatusCode::OK);
    assert_eq!(redis.get(&jean_record).await, None, "the record itself is gone");
    assert_eq!(redis.get(&sam_record).await, None, "the record itself is gone");

    // Someone with write access to Redis deletes the revocations: nothing comes back.
    let mut c = redis.connection().await;
    let deleted: i64 = redis::cmd("DEL")
        .arg(format!("trousseau-proxy:revoked:sid:{sid}"))
        .arg(format!("trousseau-proxy:revoked:sub:{SAM}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(jean.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(sam.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_unreadable_revocation_entry_counts_as_revoked() {
    let Some(redis) = RedisServer::start().await else { return };
    let env = Env::start_with(with_redis(&redis, "cookie", |c| c.session.revocation_staleness = HumanDuration(Duration::ZERO))).await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    assert_eq!(b.api_get("/x").await.status, StatusCode::OK);
    let key = format!("trousseau-proxy:revoked:sub:{JEAN}");
    let garbage: [(&str, redis::Cmd); 4] = [
        ("a string that is not a time", redis::cmd("SET").arg(&key).arg("garbage").clone()),
        ("bytes that are not UTF-8", redis::cmd("SET").arg(&key).arg(&b"\xff\xfe\x00"[..]).clone()),
        ("a long value", redis::cmd("SET").arg(&key).arg("9".repeat(100)).clone()),
        ("another type", redis::cmd("HSET").arg(&key).arg("at").arg("1").clone()),
    ];
    for (what, mut cmd) in garbage {
        redis_cmd::<()>(&redis, redis::cmd("DEL").arg(&key)).await;
        redis_cmd::<()>(&redis, &mut cmd).await;
        let r = b.api_get("/x").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text());
        assert_eq!(redis_up(&env.app), "trousseau_proxy_redis_up 1", "{what}");
    }
    redis_cmd::<()>(&redis, redis::cmd("DEL").arg(&key)).await;
    assert_eq!(b.api_get("/x").await.status, StatusCode::OK, "the entry, and only it, revoked the session");
}

#[tokio::test]
async fn a_huge_or_malformed_session_record_is_no_session_not_an_outage() {
    let Some(redis) = RedisServer::start().await else { return };
    let env = Env::start_with(with_redis(&redis, "redis", |_| {})).await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let key = record_key(&env, &b);
    let logs = LogCapture::warnings();

    // 50 MB under the session's key (made inside Redis, zero-filled: the test never holds it).
    redis_cmd::<()>(&redis, redis::cmd("SETRANGE").arg(&key).arg(50 * 1024 * 1024 - 1).arg("A")).await;
    // The proxy runs on this test's thread: its heap, not the process's (other tests share it).
    let heap = crate::support::heap::PeakGrowth::start();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut client = b.clone();
        tasks.push(async move { client.api_get("/x").await.status });
    }
    let statuses = futures_util::future::join_all(tasks).await;
    let grew_mib = heap.bytes() / (1 << 20);
    eprintln!("8 concurrent requests over a 50 MB record: {statuses:?}, the proxy's heap peaked {grew_mib} MiB higher");
    assert!(grew_mib < 32, "a 50 MB value is never read whole: the proxy's heap peaked {grew_mib} MiB higher");
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED), "no session, not an outage: {statuses:?}");

    // Another type, or bytes that are not UTF-8: that session is over; Redis is fine.
    for (what, value) in [("a hash", None), ("not UTF-8", Some(&b"\xff\xfe\xfd"[..]))] {
        redis_cmd::<()>(&redis, redis::cmd("DEL").arg(&key)).await;
        match value {
            None => redis_cmd::<()>(&redis, redis::cmd("HSET").arg(&key).arg("s").arg("x")).await,
            Some(bytes) => redis_cmd::<()>(&redis, redis::cmd("SET").arg(&key).arg(bytes)).await,
        }
        let r = b.clone().api_get("/x").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text());
    }
    assert_eq!(redis_up(&env.app), "trousseau_proxy_redis_up 1");
    assert!(logs.lines().is_empty(), "nothing to warn about: {:?}", logs.lines());
    // Other sessions are served as usual.
    let mut other = env.browser();
    assert_eq!(other.sign_in("/", SAM).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_redis_outage_is_logged_once_not_once_per_request() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let env = Env::start_with(with_redis(&redis, "redis", |_| {})).await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let logs = LogCapture::warnings();
    redis.stop(true).await;
    for _ in 0..10 {
        assert_eq!(b.api_get("/x").await.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b.navigate("/x").await.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let lines = logs.lines();
    assert_eq!(lines.len(), 1, "one line for the outage, not one per 503: {lines:#?}");
    assert!(lines[0].contains("Redis is unavailable"), "{}", lines[0]);
    redis.restart().await;
    until_status(Duration::from_secs(10), StatusCode::OK, || {
        let mut b = b.clone();
        async move { b.api_get("/x").await }
    })
    .await;
}

/// The IdP session id (`sid`) in this browser's ID token: the dev IdP derives it from its SSO
/// cookie, as Authentik does from its session key.
fn sid_of(b: &Browser) -> String {
    let key = b.jar.iter().find(|(k, _)| k.ends_with("trousseau_dev_idp_sso")).expect("the IdP's SSO cookie").1;
    sha256_hex(key.as_bytes())
}

/// Asks `/.trousseau/auth` about `GET /x`, as Traefik and Caddy do.
async fn forward_auth(b: &mut Browser) -> Answer {
    b.request(Method::GET, "/.trousseau/auth", &[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/x"), ("accept", "application/json")], Bytes::new())
        .await
}

/// Authentik CVE-2025-29928 (a session deletion not applied to one storage backend), the Redis
/// half of the matrix in tests/it/advisories.rs: a back-channel logout by `sid` or by `sub` ends a
/// `store: redis` session and a cookie session whose revocations live in Redis, on both replicas,
/// copies of the cookie included.
#[tokio::test]
async fn a_back_channel_logout_by_sid_or_sub_ends_redis_backed_sessions_and_their_copies() {
    let Some(redis) = RedisServer::start().await else { return };
    for store in ["redis", "cookie"] {
        for by in ["sid", "sub"] {
            let env = Env::start_with(with_redis(&redis, store, |c| c.session.revocation_staleness = HumanDuration(Duration::ZERO))).await;
            let replica = env.start_replica().await;
            let mut b = env.browser();
            b.sign_in("/", JEAN).await;
            let mut copy_on_b = replica.browser_like(&b);
            assert_eq!(copy_on_b.api_get("/x").await.status, StatusCode::OK, "{store} by {by}");
            let token = match by {
                "sid" => env.trousseau().logout_token(None, Some(&sid_of(&b))),
                _ => env.trousseau().logout_token(Some(JEAN), None),
            };
            let r = post_logout_token(&replica.origin, &token).await;
            assert_eq!(r.status, StatusCode::OK, "{store} by {by}: {}", r.text());
            assert_eq!(b.api_get("/x").await.status, StatusCode::UNAUTHORIZED, "{store} by {by}: replica A");
            assert_eq!(copy_on_b.api_get("/x").await.status, StatusCode::UNAUTHORIZED, "{store} by {by}: a copy on replica B");
            assert!(!forward_auth(&mut copy_on_b).await.status.is_success(), "{store} by {by}: forward-auth");
            // Let the next round's sign-in start after this logout's second.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
}

/// Envoy CVE-2024-23324 (ext_authz failing open), with Redis down: forward-auth answers 503 for a
/// `store: redis` session and, once the cached revocation answer is stale, for a cookie session
/// whose revocations live in Redis — never 2xx.
#[tokio::test]
async fn forward_auth_never_answers_2xx_while_redis_is_down() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let stored = Env::start_with(with_redis(&redis, "redis", |_| {})).await;
    let cookies = Env::start_with(with_redis(&redis, "cookie", |_| {})).await;
    let mut on_stored = stored.browser();
    on_stored.sign_in("/", JEAN).await;
    let mut on_cookies = cookies.browser();
    on_cookies.sign_in("/", JEAN).await;
    assert_eq!(forward_auth(&mut on_stored).await.status, StatusCode::OK);
    assert_eq!(forward_auth(&mut on_cookies).await.status, StatusCode::OK);
    redis.stop(true).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past revocation_staleness
    for (what, b) in [("store: redis", &mut on_stored), ("store: cookie", &mut on_cookies)] {
        let r = forward_auth(b).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {}", r.text());
        assert!(r.headers.get("x-trousseau-sub").is_none(), "{what}");
    }
}

/// caddy-security (logout leaving the session alive): with `store: redis`, a copy of the cookie
/// taken before sign-out is no session afterwards, on any replica.
#[tokio::test]
async fn a_copied_redis_session_cookie_is_dead_after_logout() {
    let Some(redis) = RedisServer::start().await else { return };
    let env = Env::start_with(with_redis(&redis, "redis", |_| {})).await;
    let replica = env.start_replica().await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let mut copy_on_b = replica.browser_like(&b);
    assert_eq!(copy_on_b.api_get("/x").await.status, StatusCode::OK);
    b.request(Method::POST, "/.trousseau/logout", &[("accept", "text/html")], Bytes::new()).await;
    assert_eq!(copy_on_b.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
    assert!(!forward_auth(&mut copy_on_b).await.status.is_success());
}

/// Oathkeeper GHSA-4mq7-pvjg-xp2r (a cache key missing a dimension): two applications sharing one
/// Redis and one session secret. A session of app A is no session at app B.
#[tokio::test]
async fn a_session_of_app_a_is_refused_by_app_b_sharing_redis_and_secrets() {
    let Some(redis) = RedisServer::start().await else { return };
    let app_a = Env::start_with(with_redis(&redis, "redis", |_| {})).await;
    let mut b = app_a.browser();
    b.sign_in("/", JEAN).await;
    let mut options = with_redis(&redis, "redis", |c| c.oidc.client_id = Some("app-b-oidc".into()));
    options.idp = Box::new(|i| i.client_id = "app-b-oidc".into());
    let app_b = Env::start_with(options).await;
    let mut at_b = app_b.browser();
    at_b.jar = b.jar.clone();
    assert_eq!(at_b.api_get("/x").await.status, StatusCode::UNAUTHORIZED, "app A's session opened at app B");
    assert!(!forward_auth(&mut at_b).await.status.is_success());
}

/// Issue 17: a websocket open on replica B ends when replica A learns that its session ended —
/// a back-channel logout, or the browser signing out on A — through Redis, within
/// `revocation_staleness` (1 s) + 1 s; other users' websockets stay open.
#[tokio::test]
async fn a_websocket_on_one_replica_closes_when_the_other_learns_its_session_ended() {
    use crate::open_connections::{assert_echoes, assert_ended, open_ws};
    use trousseau_proxy::tether::EndReason;
    for store in ["cookie", "redis"] {
        // A Redis each: the first round's logout of Jean would end the second round's sign-in.
        let Some(redis) = RedisServer::start().await else { return };
        let env = Env::start_with(with_redis(&redis, store, |c| c.session.revocations = Some(trousseau_proxy::config::RevocationKind::Redis))).await;
        let b_replica = env.start_replica().await;
        // Let both replicas subscribe to the channel (a replica that subscribes late checks its
        // sessions against the revocations instead).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut jean = env.browser();
        jean.sign_in("/", JEAN).await;
        let mut sam = env.browser();
        sam.sign_in("/", SAM).await;
        let mut ws = open_ws(&b_replica.origin, &jean.cookie_header()).await;
        let mut ws_sam = open_ws(&b_replica.origin, &sam.cookie_header()).await;

        let r = post_logout_token(&env.origin, &env.trousseau().logout_token(Some(JEAN), None)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let took = assert_ended(&mut ws, EndReason::Backchannel, Duration::from_secs(2)).await;
        eprintln!("store {store}: back-channel logout on A closed the websocket on B after {took:?}");
        assert_echoes(&mut ws_sam).await;

        // Sam signs out on A; his websocket on B closes.
        assert_eq!(sam.navigate("/.trousseau/logout").await.status, StatusCode::FOUND);
        let took = assert_ended(&mut ws_sam, EndReason::Logout, Duration::from_secs(2)).await;
        eprintln!("store {store}: sign-out on A closed the websocket on B after {took:?}");
    }
}

/// Issue 17: an end published while a replica's subscription was down is not lost — the replica
/// checks its connections' sessions against the revocations when it subscribes again.
#[tokio::test]
async fn a_replica_that_missed_the_published_end_closes_the_websocket_when_it_resubscribes() {
    use crate::open_connections::{assert_ended, open_ws};
    use trousseau_proxy::tether::EndReason;
    // A back-channel logout with cookie sessions (a revocation to find), a sign-out with Redis
    // sessions (a record gone).
    for (store, reason) in [("cookie", EndReason::Backchannel), ("redis", EndReason::Logout)] {
        let Some(redis) = RedisServer::start().await else { return };
        let env = Env::start_with(with_redis(&redis, store, |c| c.session.revocations = Some(trousseau_proxy::config::RevocationKind::Redis))).await;
        let b_replica = env.start_replica().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut jean = env.browser();
        jean.sign_in("/", JEAN).await;
        let mut ws = open_ws(&b_replica.origin, &jean.cookie_header()).await;

        // Every subscription is cut; the end is published to nobody.
        let killed: i64 = redis_cmd(&redis, redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub")).await;
        assert!(killed >= 2, "both replicas were subscribed ({killed})");
        if reason == EndReason::Backchannel {
            let r = post_logout_token(&env.origin, &env.trousseau().logout_token(Some(JEAN), None)).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        } else {
            assert_eq!(jean.navigate("/.trousseau/logout").await.status, StatusCode::FOUND);
        }
        let took = assert_ended(&mut ws, reason, Duration::from_secs(3)).await;
        eprintln!("store {store}: a replica that missed the published end closed the websocket after {took:?} (resubscribed and checked)");
    }
}

/// A reload with the Redis store: the store is made again with the new secrets, and the records
/// sealed before open with them; Redis itself (its connections) is kept; another Redis URL is a
/// restart's business.
#[tokio::test]
async fn a_reload_rotates_the_secret_of_redis_records_and_refuses_another_redis() {
    let Some(redis) = RedisServer::start().await else { return };
    let mut env = Env::start_with(with_redis(&redis, "redis", |_| {})).await;
    let mut before = env.browser();
    assert_eq!(before.sign_in("/", JEAN).await.json()["headers"]["x-trousseau-sub"][0], JEAN);
    let new_secret = trousseau_proxy::session::seal::generate_secret();
    env.reload(|c| c.session.secrets.insert(0, new_secret)).expect("a new secret is put in force");
    assert_eq!(before.api_get("/x").await.status, StatusCode::OK, "a record sealed before the reload still opens");
    let mut after = env.browser();
    assert_eq!(after.sign_in("/", JEAN).await.json()["headers"]["x-trousseau-sub"][0], JEAN);
    env.reload(|c| c.session.secrets.truncate(1)).expect("the old secret removed");
    assert_eq!(after.api_get("/x").await.status, StatusCode::OK, "sealed with the new secret");
    assert_eq!(before.api_get("/x").await.status, StatusCode::UNAUTHORIZED, "only the removed secret opened it");
    assert!(redis_up(&env.app).contains('1'), "{}", redis_up(&env.app));

    let refused = env
        .reload(|c| {
            c.session.redis_url_file = None;
            c.session.redis_url = Some("redis://127.0.0.1:1".into());
        })
        .unwrap_err()
        .to_string();
    assert!(refused.contains("session.redis_url") && refused.contains("needs a restart"), "{refused}");
}
