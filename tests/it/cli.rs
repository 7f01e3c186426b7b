//! The binary as users run it: check-config, keys generate, dev mode, and config.example.yaml.


use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_trousseau-proxy");

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Running {
    Running(
        Command::new(BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start trousseau-proxy"),
    )
}

async fn wait_ready(origin: &str) {
    wait_listening(origin.trim_start_matches("http://")).await;
    let mut b = Browser::new(origin);
    for _ in 0..100 {
        if b.api_get("/.trousseau/readyz").await.status == StatusCode::OK {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{origin} never became ready");
}

async fn wait_listening(addr: &str) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing listens on {addr}");
}

#[test]
fn check_config_accepts_the_example_and_redacts_secrets() {
    let out = Command::new(BIN).args(["check-config", "--config", "config.example.yaml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("client_secret: <redacted>"), "{text}");
    assert!(!text.contains("dev-only-client-secret"), "{text}");
    assert!(!text.contains("ZXhhbXBsZS1vbmx5"), "{text}");
}

#[test]
fn check_config_names_the_key_and_line_of_a_mistake() {
    let dir = std::env::temp_dir().join(format!("tp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    let example = std::fs::read_to_string("config.example.yaml").unwrap();
    std::fs::write(&bad, example.replace("  cookie_name:", "  cookie_nmae:")).unwrap();
    let out = Command::new(BIN).args(["check-config", "--config", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = example.lines().position(|l| l.starts_with("  cookie_name:")).unwrap() + 1;
    assert!(err.contains("cookie_nmae") && err.contains(&format!("line {line}")), "{err}");

    std::fs::write(&bad, example.replace("/application/o/dev/", "/application/o/dev")).unwrap();
    let out = Command::new(BIN).args(["check-config", "--config", bad.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("oidc.issuer") && err.contains("line"), "{err}");

    // Environment overrides are checked too, and named.
    let out = Command::new(BIN)
        .args(["check-config", "--config", "config.example.yaml"])
        .env("TROUSSEAU_PROXY_SESSION_MAX_LIFETIME", "forever")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TROUSSEAU_PROXY_SESSION_MAX_LIFETIME"));
}

#[test]
fn keys_generate_prints_usable_material() {
    let out = Command::new(BIN).args(["keys", "generate"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let secret = text.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap();
    assert!(trousseau_proxy::session::seal::parse_secret(secret).is_ok());
    let pem_start = text.find("-----BEGIN PRIVATE KEY-----").expect("PKCS#8 PEM");
    let pem = text[pem_start..].to_string();
    assert!(trousseau_proxy::identity::Signer::from_pem(&[pem]).is_ok());
}

#[tokio::test]
async fn dev_mode_signs_in_and_shows_the_verified_identity() {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let _dev = spawn(&["dev", "--listen", &format!("127.0.0.1:{port}")]);
    wait_ready(&origin).await;
    let mut b = Browser::new(&origin);
    let page = b.sign_in("/", JEAN).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["x-demo-assertion-verified"], "true", "{}", page.text());
    let html = page.text();
    assert!(html.contains("Jean Dupont") && html.contains("x-trousseau-sub"), "{html}");
}

#[tokio::test]
async fn dev_mode_refuses_a_public_listen_address_without_allow_remote() {
    let out = Command::new(BIN).args(["dev", "--listen", "0.0.0.0:0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-remote"));
}

#[tokio::test]
async fn the_example_config_runs_as_is_against_the_dev_idp() {
    // The example's fixed ports: 4180 (proxy), 4181 (dev IdP), 4182 (demo app).
    let _idp = spawn(&["dev", "--idp-only"]);
    wait_listening("127.0.0.1:4181").await;
    let _proxy = spawn(&["--config", "config.example.yaml"]);
    wait_ready("http://127.0.0.1:4180").await;
    let mut b = Browser::new("http://127.0.0.1:4180");
    let page = b.sign_in("/", JEAN).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_eq!(page.headers["x-demo-assertion-verified"], "true");
}

#[tokio::test]
async fn every_access_line_reaches_the_log_by_graceful_shutdown() {
    // Worker threads batch their access lines (src/logging.rs); a SIGTERM must lose none of them.
    let dir = std::env::temp_dir().join(format!("tp-cli-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("stderr.log");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut dev = Running(
        Command::new(BIN)
            .args(["dev", "--log-format", "json", "--listen", &format!("127.0.0.1:{port}")])
            .env_remove("RUST_LOG")
            .env_remove("TROUSSEAU_PROXY_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("start trousseau-proxy"),
    );
    wait_ready(&origin).await;
    let mut b = Browser::new(&origin);
    assert_eq!(b.sign_in("/", JEAN).await.status, StatusCode::OK);
    const COUNT: usize = 300;
    for i in 0..COUNT {
        let answer = b.navigate(&format!("{origin}/counted/{i}?secret=query-{i}")).await;
        assert_eq!(answer.status, StatusCode::OK);
    }

    let terminated = Command::new("kill").args(["-TERM", &dev.0.id().to_string()]).status().unwrap();
    assert!(terminated.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dev.0.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "no exit within 30 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut seen = vec![false; COUNT];
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if entry["target"] != "trousseau_proxy::access" {
            continue;
        }
        let path = entry["path"].as_str().unwrap();
        if let Some(i) = path.strip_prefix("/counted/") {
            let i: usize = i.parse().unwrap();
            assert!(!seen[i], "{path} logged twice");
            seen[i] = true;
            assert_eq!(entry["status"], 200, "{line}");
            assert_eq!(entry["sub"], JEAN, "{line}");
            assert!(entry["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{line}");
        }
    }
    let missing: Vec<usize> = (0..COUNT).filter(|&i| !seen[i]).collect();
    assert!(missing.is_empty(), "access lines missing after SIGTERM: {missing:?}");
    assert!(!log.contains("query-"), "a query string reached the log");
}

/// Runs the binary with `args` and extra environment variables; returns (exit code, stdout + stderr).
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_secret_of_the_wrong_type_is_named_but_never_printed() {
    const LEAK: &str = "c3VwZXItc2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw==";
    let dir = std::env::temp_dir().join(format!("tp-cli-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let example = std::fs::read_to_string("config.example.yaml").unwrap();
    let secrets_line = example.lines().position(|l| l.starts_with("  secrets:")).unwrap() + 1;
    let client_secret_line = example.lines().position(|l| l.starts_with("  client_secret:")).unwrap() + 1;
    let with_line = |prefix: &str, replacement: &str| {
        example.lines().map(|l| if l.starts_with(prefix) { replacement.to_string() } else { l.to_string() }).collect::<Vec<_>>().join("\n")
    };
    let cases = [
        // A string where the list of secrets is expected (the pasted-secret mistake).
        ("string-for-list.yaml", with_line("  secrets:", &format!("  secrets: \"{LEAK}\"")), "session.secrets", secrets_line, LEAK),
        // A number where the list is expected.
        ("number-for-list.yaml", with_line("  secrets:", "  secrets: 98765432109876"), "session.secrets", secrets_line, "98765432109876"),
        // A list where the client secret is expected.
        ("list-for-string.yaml", with_line("  client_secret:", &format!("  client_secret: [{LEAK}, 98765432109876]")), "oidc.client_secret", client_secret_line, LEAK),
    ];
    for (name, text, key, line, leak) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        for command in ["check-config", "run"] {
            let (code, out) = run_binary(&[command, "--config", path.to_str().unwrap()], &[]);
            assert_eq!(code, Some(2), "{command} {name}: {out}");
            assert!(out.contains(key) && out.contains(&format!("line {line}")) && out.contains("redacted"), "{command} {name}: {out}");
            assert!(!out.contains(leak) && !out.contains(&leak[..10]), "{command} {name} printed the secret: {out}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    // From the environment: the variable is named, its value never printed.
    for command in ["check-config", "run"] {
        let (code, out) = run_binary(&[command, "--config", "config.example.yaml"], &[("TROUSSEAU_PROXY_SESSION_SECRETS", "[98765432109876.5]")]);
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains("TROUSSEAU_PROXY_SESSION_SECRETS") && out.contains("redacted"), "{out}");
        assert!(!out.contains("98765432109876"), "{command} printed the secret: {out}");
    }
}

#[test]
fn an_empty_client_secret_and_a_bad_listen_variable_are_named_where_they_come_from() {
    let (code, out) = run_binary(&["check-config", "--config", "config.example.yaml"], &[("TROUSSEAU_PROXY_OIDC_CLIENT_SECRET", "")]);
    assert_eq!(code, Some(2), "an empty client secret is refused: {out}");
    assert!(out.contains("oidc.client_secret (environment variable TROUSSEAU_PROXY_OIDC_CLIENT_SECRET)") && out.contains("empty"), "{out}");

    let example = std::fs::read_to_string("config.example.yaml").unwrap();
    let listen_line = example.lines().position(|l| l.starts_with("listen:")).unwrap() + 1;
    for command in ["check-config", "run"] {
        let (code, out) = run_binary(&[command, "--config", "config.example.yaml"], &[("TROUSSEAU_PROXY_LISTEN", "nowhere")]);
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains("listen (environment variable TROUSSEAU_PROXY_LISTEN)"), "{out}");
        assert!(!out.contains(&format!("line {listen_line}")), "the file's line is not where the value came from: {out}");
    }
    let (code, out) = run_binary(&["check-config", "--config", "config.example.yaml", "--listen", "nowhere"], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("listen (flag --listen)"), "{out}");
}

#[tokio::test]
async fn refused_logout_tokens_are_logged_once_per_interval_naming_the_sender() {
    let dir = std::env::temp_dir().join(format!("tp-cli-refusals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("stderr.log");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut dev = Running(
        Command::new(BIN)
            .args(["dev", "--log-format", "json", "--listen", &format!("127.0.0.1:{port}")])
            .env_remove("RUST_LOG")
            .env_remove("TROUSSEAU_PROXY_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("start trousseau-proxy"),
    );
    wait_ready(&origin).await;
    // Anyone can POST logout tokens: 40 forgeries, each refused with 400.
    let mut b = Browser::new(&origin);
    for i in 0..40 {
        let body = bytes::Bytes::from(format!("logout_token=forged.{i}.token"));
        let r = b.request(http::Method::POST, "/.trousseau/backchannel-logout", &[("content-type", "application/x-www-form-urlencoded")], body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
    let terminated = Command::new("kill").args(["-TERM", &dev.0.id().to_string()]).status().unwrap();
    assert!(terminated.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dev.0.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "no exit within 30 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let refusals: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("back-channel logout refused"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(refusals.len(), 1, "one line for a burst of refusals, not one each:\n{log}");
    let line = &refusals[0];
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["client"], "127.0.0.1", "the sender is named: {line}");
    assert!(line["reason"].as_str().is_some_and(|r| r.contains("malformed")), "{line}");
    assert!(!log.contains("forged."), "the token itself never reaches the log");
}

#[tokio::test]
async fn connections_opened_at_once_are_spread_evenly_over_the_workers() {
    // Every worker accepts on one socket; the one awake when a burst arrives used to keep most of
    // it (src/limits/balance.rs). The binary as run, its worker threads and its metrics.
    let (port, metrics_port) = (free_port(), free_port());
    let mut proxy = Command::new(BIN);
    proxy
        .args(["run", "--config", "config.example.yaml"])
        .env_remove("RUST_LOG")
        .env("TROUSSEAU_PROXY_LISTEN", format!("127.0.0.1:{port}"))
        .env("TROUSSEAU_PROXY_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("TROUSSEAU_PROXY_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _proxy = Running(proxy.spawn().expect("start trousseau-proxy"));
    let (addr, metrics) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{metrics_port}"));
    wait_listening(&addr).await;
    wait_listening(&metrics).await;

    // 60 keep-alive connections opened together, each answered once and then held open.
    const CONNECTIONS: usize = 60;
    let opened = futures_util::future::join_all((0..CONNECTIONS).map(|_| async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b"GET /.trousseau/healthz HTTP/1.1\r\nHost: proxy\r\n\r\n").await.unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        stream
    }))
    .await;

    let text = Browser::new(&format!("http://{metrics}")).api_get("/metrics").await.text();
    let held: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("trousseau_proxy_worker_connections_open{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(held.len(), workers, "one gauge per worker:\n{text}");
    assert_eq!(held.iter().sum::<u64>(), CONNECTIONS as u64, "{held:?}");
    let (most, fewest) = (held.iter().max().unwrap(), held.iter().min().unwrap());
    // A worker two ahead hands the next one over; two deciding at the same instant may each keep one.
    assert!(most - fewest <= 3, "connections per worker {held:?}");
    if workers > 1 {
        assert!(text.contains("trousseau_proxy_connections_handed_over_total"), "{text}");
    }
    drop(opened);
}

/// `check-config --probe` against a real (twin) Trousseau on a loopback port, with the config as a
/// user writes it (config.example.yaml) and environment overrides; returns the exit code and
/// everything printed.
async fn probe(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(BIN);
    command.args(["check-config", "--probe", "--config", "config.example.yaml"]).env_remove("RUST_LOG").stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().await.unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn check_config_probe_proves_the_setup_end_to_end_and_names_the_fix_of_each_failure() {
    use trousseau_proxy::devidp::{DevIdpConfig, LocalDevIdp};
    let idp = LocalDevIdp::start(DevIdpConfig {
        base_url: url::Url::parse("http://127.0.0.1:1").unwrap(),
        slug: "app".into(),
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uris: vec!["http://127.0.0.1:4180/.trousseau/callback".into()],
        ..DevIdpConfig::default()
    })
    .await
    .unwrap();
    let issuer = idp.issuer();
    let good = [("TROUSSEAU_PROXY_OIDC_ISSUER", issuer.as_str()), ("TROUSSEAU_PROXY_OIDC_CLIENT_ID", CLIENT_ID), ("TROUSSEAU_PROXY_OIDC_CLIENT_SECRET", CLIENT_SECRET)];

    let (code, out) = probe(&good).await;
    assert_eq!(code, Some(0), "{out}");
    for line in ["✔ discovery", "✔ signing keys", "✔ client credentials", "✔ clock"] {
        assert!(out.contains(line), "{line}:\n{out}");
    }
    assert!(out.contains("# all 4 checks passed"), "{out}");
    assert!(!out.contains(CLIENT_SECRET), "the secret is never printed:\n{out}");

    // A wrong secret: discovery passes, the token endpoint refuses the client.
    let mut wrong_secret = good;
    wrong_secret[2].1 = "not-the-secret";
    let (code, out) = probe(&wrong_secret).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("✘ client credentials") && out.contains("invalid_client") && out.contains("fix: copy oidc.client_id and oidc.client_secret"), "{out}");
    assert!(out.contains("✔ discovery"), "{out}");

    // Another application's issuer (a slug that does not exist): discovery fails, and says what to fix.
    let other = issuer.replace("/application/o/app/", "/application/o/other/");
    let mut wrong_issuer = good;
    wrong_issuer[0].1 = &other;
    let (code, out) = probe(&wrong_issuer).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("✘ discovery") && out.contains("fix: oidc.issuer must be the issuer Trousseau shows"), "{out}");
    assert!(out.contains("✘ client credentials: not checked"), "{out}");

    // The issuer without its trailing slash is refused before any probe, naming the key.
    let no_slash = issuer.trim_end_matches('/').to_string();
    let mut missing_slash = good;
    missing_slash[0].1 = &no_slash;
    let (code, out) = probe(&missing_slash).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("oidc.issuer") && out.contains("end with a slash"), "{out}");

    // Redis configured but unreachable.
    let closed = format!("redis://127.0.0.1:{}/0", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let mut with_redis = good.to_vec();
    with_redis.push(("TROUSSEAU_PROXY_SESSION_REDIS_URL", &closed));
    let (code, out) = probe(&with_redis).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("✘ redis") && out.contains("fix: check the Redis settings (session.redis_url"), "{out}");
    assert!(out.contains("# 1 of 5 checks failed"), "{out}");
}

/// A real proxy process (`trousseau-proxy --config …`) in front of an in-test app, signing in at an
/// in-test Trousseau twin (access tokens of 2 s, back-channel logout to the proxy), its log in a file.
pub(super) struct ProxyProcess {
    proxy: Running,
    pub(super) origin: String,
    idp: trousseau_proxy::devidp::LocalDevIdp,
    _upstream: crate::support::upstream::Upstream,
    dir: std::path::PathBuf,
}

impl ProxyProcess {
    pub(super) async fn start(name: &str, configure: impl FnOnce(&mut trousseau_proxy::config::FileConfig)) -> ProxyProcess {
        use trousseau_proxy::config::FileConfig;
        use trousseau_proxy::devidp::{DevIdpConfig, LocalDevIdp};
        let port = free_port();
        let origin = format!("http://127.0.0.1:{port}");
        let idp = LocalDevIdp::start(DevIdpConfig {
            // Refreshed 1 s after sign-in (the skew is capped at half the token's life).
            access_token_ttl: Duration::from_secs(2),
            id_token_ttl: Duration::from_secs(2),
            ..crate::support::idp_config_for(&origin)
        })
        .await
        .unwrap();
        let upstream = crate::support::upstream::Upstream::start().await;
        let mut file =
            FileConfig { listen: Some(format!("127.0.0.1:{port}")), public_url: Some(origin.clone()), upstream: Some(upstream.url()), ..FileConfig::default() };
        file.oidc.issuer = Some(idp.issuer());
        file.oidc.client_id = Some(CLIENT_ID.into());
        file.oidc.client_secret = Some(CLIENT_SECRET.into());
        file.oidc.scopes = ["openid", "email", "profile", "trousseau:context", "trousseau:organization"].map(String::from).to_vec();
        file.session.secrets = vec![SECRET.into()];
        configure(&mut file);
        let dir = std::env::temp_dir().join(format!("tp-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.yaml");
        std::fs::write(&config, serde_yaml::to_string(&file).unwrap()).unwrap();
        let proxy = Running(
            Command::new(BIN)
                .args(["--config", config.to_str().unwrap()])
                .env_remove("RUST_LOG")
                .env_remove("TROUSSEAU_PROXY_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
                .spawn()
                .expect("start trousseau-proxy"),
        );
        wait_ready(&origin).await;
        ProxyProcess { proxy, origin, idp, _upstream: upstream, dir }
    }

    pub(super) fn terminate(&self) {
        let terminated = Command::new("kill").args(["-TERM", &self.proxy.0.id().to_string()]).status().unwrap();
        assert!(terminated.success());
    }

    /// Waits (at most `within`) for the process to exit after [`ProxyProcess::terminate`].
    pub(super) async fn wait_exit(&mut self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while self.proxy.0.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "no exit within {within:?} of SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The audit lines of a real proxy process, story by story: one JSON object per event on the
/// target `trousseau_proxy::audit` — even in a plain-text log — with the user, the request id and
/// the trace id, and never a token, a cookie or an email.
#[tokio::test]
async fn every_story_leaves_one_typed_audit_line_and_no_secret() {
    const SAM: &str = "7b1e9c4d-2f38-4a6b-8e5d-c0a9f1e2d3b4";
    let mut process = ProxyProcess::start("audit", |file| {
        file.api.bearer = crate::support::named("userinfo");
        file.routes.rules = serde_yaml::from_str("[{path: /admin/*, roles: [admin]}]").unwrap();
    })
    .await;
    let (origin, idp) = (process.origin.clone(), &process.idp);

    // Sign-in failed: the user cancels at Trousseau.
    let mut quitter = Browser::new(&origin);
    let authorize = quitter.navigate("/").await.location();
    let page = quitter.navigate(&authorize).await;
    let form = crate::support::Form::find(&page.text(), "cancel", "1").expect("the cancel button");
    let mut fields = form.fields.clone();
    fields.push(("cancel".into(), "1".into()));
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let action = url::Url::parse(&authorize).unwrap().join(&form.action).unwrap().to_string();
    let back = quitter.request(http::Method::POST, &action, &[("content-type", "application/x-www-form-urlencoded")], bytes::Bytes::from(body)).await;
    let refused = quitter.navigate(&back.location()).await;
    assert!(refused.status.is_client_error(), "the callback with access_denied: {}", refused.status);

    // Sign-in completed, an organization chosen, refused by a rule, a bearer token refused.
    let mut jean = Browser::new(&origin);
    assert_eq!(jean.sign_in("/", JEAN).await.status, StatusCode::OK);
    let listed = jean.api_get("/.trousseau/organizations").await;
    let org = listed.json()["organizations"][0]["id"].as_str().expect("Jean has organizations").to_string();
    let chosen = jean
        .request(
            http::Method::POST,
            "/.trousseau/organizations",
            &[("content-type", "application/x-www-form-urlencoded"), ("origin", &origin)],
            bytes::Bytes::from(format!("org={org}&rd=%2F")),
        )
        .await;
    assert_eq!(chosen.status, StatusCode::SEE_OTHER, "{}", chosen.text());
    let mut sam = Browser::new(&origin);
    assert_eq!(sam.sign_in("/", SAM).await.status, StatusCode::OK);
    assert_eq!(sam.api_get("/admin/settings").await.status, StatusCode::FORBIDDEN);
    let bogus = Browser::new(&origin).request(http::Method::GET, "/api/x", &[("authorization", "Bearer not-a-token-of-trousseau")], bytes::Bytes::new()).await;
    assert_eq!(bogus.status, StatusCode::UNAUTHORIZED);

    // Refresh refused: Jean's account is disabled at Trousseau, and the token is due.
    idp.idp().set_user_disabled(JEAN, true);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let jean_cookie = jean.cookie_header();
    assert_eq!(jean.api_get("/x").await.status, StatusCode::UNAUTHORIZED);

    // Sam signs out; Trousseau's end-session then sends the back-channel logout of Sam's session.
    let out = sam.navigate("/.trousseau/logout").await;
    let ended = sam.navigate(&out.location()).await;
    assert!(ended.status.is_redirection() || ended.status.is_success(), "{}", ended.status);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while idp.idp().stats().backchannel_sent == 0 {
        assert!(std::time::Instant::now() < deadline, "no back-channel logout delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    process.terminate();
    process.wait_exit(Duration::from_secs(30)).await;
    let log = process.log();
    let audit: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains("trousseau_proxy::audit"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("an audit line is one JSON object ({e}): {l}")))
        .collect();
    let find = |event: &str| -> &serde_json::Value {
        audit.iter().find(|l| l["event"] == event).unwrap_or_else(|| panic!("no `{event}` audit line in:\n{log}"))
    };
    for line in &audit {
        assert_eq!(line["target"], "trousseau_proxy::audit", "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(line["timestamp"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()), "{line}");
        assert!(line["request_id"].as_str().is_some_and(|r| !r.is_empty()), "{line}");
        assert!(line["trace_id"].as_str().is_some_and(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())), "{line}");
    }
    assert_eq!(find("sign_in_failed")["error"], "access_denied");
    let signed_in = audit.iter().filter(|l| l["event"] == "sign_in_completed").count();
    assert_eq!(signed_in, 2, "Jean and Sam");
    assert!(audit.iter().any(|l| l["event"] == "sign_in_completed" && l["sub"] == JEAN && l["sid"].is_string()));
    let switched = find("organization_switched");
    assert_eq!((&switched["sub"], &switched["to"]), (&serde_json::json!(JEAN), &serde_json::json!(org)));
    let denied = find("request_denied");
    assert_eq!(denied["sub"], SAM);
    assert_eq!(denied["rule"], "routes.rules[0] (/admin/*)");
    assert_eq!(denied["reason"], "no_organization");
    assert_eq!((&denied["method"], &denied["path"]), (&serde_json::json!("GET"), &serde_json::json!("/admin/settings")));
    assert_eq!(find("bearer_refused")["reason"], "inactive");
    let refused = find("refresh_refused");
    assert_eq!((&refused["sub"], &refused["error"]), (&serde_json::json!(JEAN), &serde_json::json!("invalid_grant")));
    assert_eq!(find("logout")["sub"], SAM);
    let backchannel = find("backchannel_logout");
    assert!(backchannel["sid"].is_string(), "{backchannel}");
    assert_eq!(audit.len(), 9, "one line per event (two sign-ins):\n{audit:#?}");
    // Nothing that would let someone in, nor an email, reaches the log.
    for (name, secret) in [("an email", "jean.dupont@hotel.com"), ("an email", "sam.taylor@example.com"), ("a bearer token", "not-a-token-of-trousseau")] {
        assert!(!log.contains(secret), "{name} in the log:\n{log}");
    }
    let cookie_value = jean_cookie.split_once('=').map(|(_, v)| v.split(';').next().unwrap_or(v)).unwrap();
    assert!(!log.contains(cookie_value), "a cookie in the log");
    assert!(!log.contains(CLIENT_SECRET));
}

/// `proxy.shutdown_delay`: after SIGTERM the process keeps serving — new connections included —
/// while readiness answers 503, then drains and exits; a second signal cuts the delay short.
#[tokio::test]
async fn after_sigterm_the_proxy_keeps_serving_for_its_shutdown_delay_with_readiness_off() {
    let delay = Duration::from_secs(2);
    let mut process = ProxyProcess::start("shutdown-delay", |file| {
        file.proxy.shutdown_delay = trousseau_proxy::config::HumanDuration(delay);
        file.routes.public = vec!["/public/*".into()];
    })
    .await;
    let origin = process.origin.clone();
    let mut b = Browser::new(&origin);
    assert_eq!(b.sign_in("/", JEAN).await.status, StatusCode::OK);
    assert_eq!(Browser::new(&origin).api_get("/.trousseau/readyz").await.status, StatusCode::OK);

    process.terminate();
    let signalled = std::time::Instant::now();
    let mut served = 0;
    while signalled.elapsed() < delay - Duration::from_millis(500) {
        // A new client each time: new connections are still accepted.
        let mut fresh = Browser::new(&origin);
        fresh.jar = b.jar.clone();
        assert_eq!(fresh.api_get("/x").await.status, StatusCode::OK, "served {:?} after SIGTERM", signalled.elapsed());
        let ready = Browser::new(&origin).api_get("/.trousseau/readyz").await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "readiness is off during the delay");
        assert!(ready.text().contains("stopping"), "{}", ready.text());
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    process.wait_exit(delay + Duration::from_secs(10)).await;
    let stopped = signalled.elapsed();
    assert!(stopped >= delay, "exited {stopped:?} after SIGTERM, before the delay");
    eprintln!("{served} requests served during the {delay:?} shutdown delay; exited {stopped:?} after SIGTERM");
    assert!(process.log().contains("proxy.shutdown_delay"), "the delay is said in the log");

    // A second SIGTERM drains at once.
    let mut again = ProxyProcess::start("shutdown-delay-twice", |file| file.proxy.shutdown_delay = trousseau_proxy::config::HumanDuration(Duration::from_secs(60))).await;
    again.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = std::time::Instant::now();
    again.terminate();
    again.wait_exit(Duration::from_secs(10)).await;
    assert!(second.elapsed() < Duration::from_secs(5), "the second signal cut the 60 s delay short");
}
