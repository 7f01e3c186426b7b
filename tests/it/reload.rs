//! Live reload (issue 19), with the binary as users run it and its configuration in real files:
//! a changed file or SIGHUP puts the new configuration in force for new requests — rules,
//! session secrets, signing keys, the upstream, timeouts — while what is in flight (a streamed
//! response, a websocket) finishes on the old one; a file that does not validate, or a change only
//! a restart can make, keeps the running configuration and says why (log, metrics). A Kubernetes
//! ConfigMap update (the kubelet's `..data` symlink swap) is followed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;

use crate::open_connections::{assert_echoes, open_ws};
use crate::support::*;
use trousseau_proxy::devidp::{DevIdpConfig, LocalDevIdp};

const BIN: &str = env!("CARGO_BIN_EXE_trousseau-proxy");

/// A proxy process reading `config.yaml` in a directory of its own, with the twin Trousseau and
/// an app; its log (JSON lines) kept in a file.
struct Rig {
    dir: PathBuf,
    /// The file `--config` names (in the ConfigMap layout: a symlink through `..data`).
    config: PathBuf,
    origin: String,
    metrics: String,
    idp: LocalDevIdp,
    child: Child,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `text` to `path` as an editor does: a new file renamed over the old, so the proxy
/// never reads half of it.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp-{}", trousseau_proxy::util::id::random_id()));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Rig {
    /// Starts the proxy with `config(port)` as its file; `configmap` lays the file out as a
    /// mounted Kubernetes ConfigMap does (`config.yaml -> ..data/config.yaml`, `..data -> ..v1`).
    async fn start(name: &str, configmap: bool, config: impl Fn(&Rig) -> String) -> Rig {
        let dir = std::env::temp_dir().join(format!("tp-reload-{name}-{}-{}", std::process::id(), trousseau_proxy::util::id::random_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        let origin = format!("http://127.0.0.1:{port}");
        let idp = LocalDevIdp::start(DevIdpConfig {
            base_url: url::Url::parse("http://127.0.0.1:1").unwrap(),
            slug: "app".into(),
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            redirect_uris: vec![format!("{origin}/.trousseau/callback")],
            ..DevIdpConfig::default()
        })
        .await
        .unwrap();
        let config_path = dir.join("config.yaml");
        let log = std::fs::File::create(dir.join("proxy.log")).unwrap();
        // The child is started below, once the file exists; a placeholder until then.
        let placeholder = Command::new("true").spawn().unwrap();
        let mut rig = Rig { dir, config: config_path, origin, metrics: format!("http://127.0.0.1:{metrics_port}"), idp, child: placeholder };
        let text = config(&rig);
        if configmap {
            rig.publish_configmap("..v1", &text);
            std::os::unix::fs::symlink("..data/config.yaml", &rig.config).unwrap();
        } else {
            std::fs::write(&rig.config, text).unwrap();
        }
        let _ = rig.child.wait();
        rig.child = Command::new(BIN)
            .args(["--log-format", "json", "--config"])
            .arg(&rig.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start trousseau-proxy");
        let ready = Instant::now();
        loop {
            let up = reqwest_status(&format!("{}/.trousseau/readyz", rig.origin)).await;
            if up == Some(200) {
                break;
            }
            assert!(ready.elapsed() < Duration::from_secs(30) && rig.child.try_wait().unwrap().is_none(), "not ready within 30 s:\n{}", rig.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rig
    }

    /// The start of a configuration for this rig: where it listens, its Trousseau, its app.
    fn base(&self, upstream: &str) -> String {
        let port = self.origin.rsplit(':').next().unwrap();
        let metrics = self.metrics.rsplit(':').next().unwrap();
        format!(
            "listen: 127.0.0.1:{port}\npublic_url: {}\nmetrics_listen: 127.0.0.1:{metrics}\nupstream: {upstream}\n\
             oidc:\n  issuer: {}\n  client_id: {CLIENT_ID}\n  client_secret: {CLIENT_SECRET}\n  \
             scopes: [openid, email, profile, \"trousseau:context\", \"trousseau:organization\"]\n",
            self.origin,
            self.idp.issuer(),
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a ConfigMap version `version` and points `..data` at it, as the kubelet does: the
    /// new directory first, then a new symlink renamed over the old one.
    fn publish_configmap(&self, version: &str, text: &str) {
        let versioned = self.dir.join(version);
        std::fs::create_dir_all(&versioned).unwrap();
        std::fs::write(versioned.join("config.yaml"), text).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = Browser::new(&self.metrics).api_get("/metrics").await.text();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.parse().unwrap()))
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
    }

    /// Waits (at most 20 s) for `trousseau_proxy_config_reloads_total` (or the failures, with
    /// `failed`) to reach `count`.
    async fn reloads_reach(&self, failed: bool, count: f64) {
        let name = if failed { "trousseau_proxy_config_reload_failures_total" } else { "trousseau_proxy_config_reloads_total" };
        let started = Instant::now();
        while self.metric(name).await < count {
            assert!(started.elapsed() < Duration::from_secs(20), "{name} did not reach {count} within 20 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn hangup(&self) {
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    async fn jwks_kids(&self) -> Vec<String> {
        let jwks = Browser::new(&self.origin).api_get("/.trousseau/jwks.json").await.json();
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
    }
}

/// The status of a GET, `None` when nothing answers.
async fn reqwest_status(url: &str) -> Option<u16> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<http_body_util::Empty<Bytes>>();
    let req = http::Request::get(url).body(http_body_util::Empty::new()).unwrap();
    match tokio::time::timeout(Duration::from_secs(2), client.request(req)).await {
        Ok(Ok(resp)) => Some(resp.status().as_u16()),
        _ => None,
    }
}

/// The assertion's `kid`, from the last request the app saw.
fn last_assertion_kid(upstream: &Upstream) -> String {
    let seen = upstream.seen.lock().unwrap();
    let assertion = &seen.last().unwrap()["x-trousseau-jwt-assertion"][0];
    jws_parts(assertion).0["kid"].as_str().unwrap().to_string()
}

/// The JSON log lines with this message.
fn lines_with(log: &str, message: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| l.starts_with('{') && l.contains(message))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn rules_secrets_keys_and_timeouts_change_live_and_a_bad_file_keeps_the_running_configuration() {
    let upstream = Upstream::start().await;
    let (secret_a, secret_b) = (trousseau_proxy::session::seal::generate_secret(), trousseau_proxy::session::seal::generate_secret());
    let (key_1, key_2) = (trousseau_proxy::identity::generate_pkcs8_pem(), trousseau_proxy::identity::generate_pkcs8_pem());
    let app = upstream.url();
    // identity.signing_key_file takes a list: the first key signs, all are published.
    let config = move |rig: &Rig, keys: &[&str], rules: &str, extra: &str| {
        let keys: Vec<String> = keys.iter().map(|k| format!("\"{}\"", rig.path(k).display())).collect();
        format!(
            "{}session:\n  secrets_file: {}\nidentity:\n  signing_key_file: [{}]\nroutes:\n  rules: {rules}\n{extra}",
            rig.base(&app),
            rig.path("secrets").display(),
            keys.join(", "),
        )
    };
    let first = config.clone();
    let rig = Rig::start("live", false, move |rig| {
        std::fs::write(rig.path("secrets"), format!("{secret_a}\n")).unwrap();
        std::fs::write(rig.path("key-1.pem"), &key_1).unwrap();
        std::fs::write(rig.path("key-2.pem"), &key_2).unwrap();
        first(rig, &["key-1.pem"], "[]", "")
    })
    .await;
    let with_keys = |keys: &[&str], rules: &str, extra: &str| config(&rig, keys, rules, extra);
    let loaded_at = rig.metric("trousseau_proxy_config_last_reload_success_timestamp_seconds").await;

    // Signed in; the whole app is open to any signed-in user.
    let mut jean = Browser::new(&rig.origin);
    assert_eq!(jean.sign_in("/reports/2026", JEAN).await.status, StatusCode::OK);
    let kids = rig.jwks_kids().await;
    assert_eq!(kids.len(), 1, "{kids:?}");
    assert_eq!(last_assertion_kid(&upstream), kids[0]);

    // A rule added to the file: in force for the next request, no restart, the session kept.
    write_atomically(&rig.config, &with_keys(&["key-1.pem"], "[{path: \"/reports/*\", emails: [auditor@example.com]}]", ""));
    rig.reloads_reach(false, 1.0).await;
    let forbidden = jean.navigate("/reports/2026").await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN, "{:?} {}\n{}", forbidden.headers, forbidden.text(), rig.log());
    assert_eq!(jean.navigate("/home").await.status, StatusCode::OK, "the session outlives the reload");
    assert!(rig.metric("trousseau_proxy_config_last_reload_success_timestamp_seconds").await >= loaded_at);
    let reloaded = lines_with(&rig.log(), "configuration reloaded");
    assert!(reloaded.iter().any(|l| l["changed"].as_str().is_some_and(|c| c.contains("routes.rules"))), "the log names what changed: {reloaded:?}");

    // A new session secret prepended (the file a Secret mounts): old cookies still open, new ones
    // are sealed with it — proven by then removing the old secret.
    let secrets = rig.path("secrets");
    let (a, b) = (std::fs::read_to_string(&secrets).unwrap(), format!("{secret_b}\n"));
    write_atomically(&secrets, &format!("{b}{a}"));
    rig.reloads_reach(false, 2.0).await;
    assert_eq!(jean.navigate("/home").await.status, StatusCode::OK, "a cookie sealed with the old secret still opens");
    let mut marie = Browser::new(&rig.origin);
    assert_eq!(marie.sign_in("/home", JEAN).await.status, StatusCode::OK);
    write_atomically(&secrets, &b);
    rig.reloads_reach(false, 3.0).await;
    assert_eq!(marie.navigate("/home").await.status, StatusCode::OK, "sealed with the new secret");
    assert_eq!(jean.navigate("/home").await.status, StatusCode::FOUND, "only the removed secret opened this one: sign in again");
    assert!(!rig.log().contains(&secret_b) && !rig.log().contains(secret_b.trim_end_matches('=')), "a secret never reaches the log");

    // A new signing key first in the list: published at once, and signing.
    write_atomically(&rig.config, &with_keys(&["key-2.pem", "key-1.pem"], "[{path: \"/reports/*\", emails: [auditor@example.com]}]", ""));
    rig.reloads_reach(false, 4.0).await;
    let both = rig.jwks_kids().await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both.contains(&kids[0]), "the old key stays published while assertions it signed live");
    assert_eq!(marie.navigate("/home").await.status, StatusCode::OK);
    let signing = last_assertion_kid(&upstream);
    assert!(signing != kids[0] && both.contains(&signing), "the new key signs: {signing} in {both:?}");

    // A file that does not validate: refused, one ERROR naming the key and the line, the running
    // configuration kept (the rule still holds).
    let good = with_keys(&["key-2.pem", "key-1.pem"], "[{path: \"/reports/*\", emails: [auditor@example.com]}]", "");
    write_atomically(&rig.config, &format!("{good}limits:\n  max_connections: many\n"));
    rig.reloads_reach(true, 1.0).await;
    let refused = lines_with(&rig.log(), "configuration reload refused");
    assert_eq!(refused.len(), 1, "one line: {refused:?}");
    assert_eq!(refused[0]["level"], "ERROR");
    let error = refused[0]["error"].as_str().unwrap();
    let line = good.lines().count() + 2;
    assert!(error.contains("limits.max_connections") && error.contains(&format!("line {line}")), "names the key and the line: {error}");
    assert_eq!(marie.navigate("/reports/2026").await.status, StatusCode::FORBIDDEN, "the running configuration is kept");
    assert_eq!(rig.metric("trousseau_proxy_config_reloads_total").await, 4.0);

    // A change only a restart can make: refused, saying so.
    let port = rig.origin.rsplit(':').next().unwrap().to_string();
    write_atomically(&rig.config, &good.replace(&format!("listen: 127.0.0.1:{port}"), "listen: 127.0.0.1:1"));
    rig.reloads_reach(true, 2.0).await;
    let refused = lines_with(&rig.log(), "configuration reload refused");
    assert!(refused[1]["error"].as_str().unwrap().contains("listen changed, which needs a restart"), "{refused:?}");
    assert_eq!(marie.navigate("/home").await.status, StatusCode::OK);

    // SIGHUP (`systemctl reload`) with a good file: in force, and the limits with it — a shorter
    // header timeout closes a silent connection in about a second instead of thirty.
    std::fs::write(&rig.config, with_keys(&["key-2.pem", "key-1.pem"], "[]", "limits:\n  header_timeout: 1s\n")).unwrap();
    rig.hangup();
    rig.reloads_reach(false, 5.0).await;
    assert!(lines_with(&rig.log(), "configuration reloaded").iter().any(|l| l["cause"] == "SIGHUP" || l["changed"].as_str().is_some_and(|c| c.contains("limits"))));
    assert_eq!(marie.navigate("/reports/2026").await.status, StatusCode::OK, "the rule is gone");
    let silent = tokio::net::TcpStream::connect(rig.origin.trim_start_matches("http://")).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        silent.readable().await.unwrap();
        silent.try_read(&mut buf)
    })
    .await;
    assert!(matches!(closed, Ok(Ok(0))), "closed by the new header timeout: {closed:?} after {:?}", started.elapsed());
    assert!(rig.metric("trousseau_proxy_config_reload_failures_total").await == 2.0);
}

#[tokio::test]
async fn a_configmap_update_moves_the_upstream_while_a_stream_and_a_websocket_finish_on_the_old_one() {
    let (old_app, new_app) = (Upstream::start().await, Upstream::start().await);
    let old_url = old_app.url();
    // The memory store and an ephemeral signing key: both outlive a reload.
    let config = move |rig: &Rig, upstream: &str| {
        format!("{}session:\n  secrets: [\"{SECRET}\"]\n  store: memory\n", rig.base(upstream))
    };
    let first = config;
    let rig = Rig::start("configmap", true, move |rig| first(rig, &old_url)).await;
    let mut jean = Browser::new(&rig.origin);
    assert_eq!(jean.sign_in("/home", JEAN).await.status, StatusCode::OK);
    let kids = rig.jwks_kids().await;

    // In flight: a streamed response (first event read), and a websocket.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<http_body_util::Empty<Bytes>>();
    let req = http::Request::get(format!("{}/stream", rig.origin))
        .header("cookie", jean.cookie_header())
        .body(http_body_util::Empty::new())
        .unwrap();
    let mut stream = client.request(req).await.unwrap().into_body();
    let first_event = stream.frame().await.unwrap().unwrap();
    assert_eq!(first_event.data_ref().unwrap().as_ref(), b"data: first\n\n");
    let mut ws = open_ws(&rig.origin, &jean.cookie_header()).await;
    let old_hits = old_app.hits();

    // The kubelet publishes a new version of the ConfigMap: another upstream.
    rig.publish_configmap("..v2", &config(&rig, &new_app.url()));
    rig.reloads_reach(false, 1.0).await;

    // What was in flight finishes on the old configuration…
    old_app.release_stream.notify_one();
    let second = tokio::time::timeout(Duration::from_secs(5), stream.frame()).await.expect("the rest of the stream").unwrap().unwrap();
    assert_eq!(second.data_ref().unwrap().as_ref(), b"data: second\n\n");
    assert_echoes(&mut ws).await;
    // …and new requests go to the new app, with the session kept in memory across the reload.
    let answer = jean.navigate("/after").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(new_app.hits(), 1, "the new app got the request");
    assert_eq!(old_app.hits(), old_hits, "the old app got nothing new");
    assert_eq!(rig.jwks_kids().await, kids, "the ephemeral signing key is kept (apps cached its JWKS)");
    let reloaded = lines_with(&rig.log(), "configuration reloaded");
    assert!(reloaded.iter().any(|l| l["cause"] == "a watched file changed" && l["changed"] == "upstream"), "{reloaded:?}");
}

/// In process, the reload `Env::reload` makes (what SIGHUP does): a back-channel logout received
/// before a reload still ends that session after it (the revocations are kept), the other session
/// goes on, and a change only a restart can make is refused whole.
#[tokio::test]
async fn revocations_outlive_a_reload_and_a_store_change_is_refused() {
    let mut env = Env::start().await;
    let (mut first, mut second) = (env.browser(), env.browser());
    first.sign_in("/", JEAN).await;
    second.sign_in("/", "3f6c2d1e-8a47-4b9e-9c21-5d7e8f90a1b2").await;
    let sid = crate::open_connections::sid_of(&first);
    let token = env.trousseau().logout_token(None, Some(&sid));
    let answer = Browser::new(&env.origin)
        .request(http::Method::POST, "/.trousseau/backchannel-logout", &[("content-type", "application/x-www-form-urlencoded")], Bytes::from(format!("logout_token={token}")))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());

    env.reload(|c| c.routes.public = vec!["/open/*".into()]).expect("a rule change is put in force");
    assert_eq!(first.api_get("/x").await.status, StatusCode::UNAUTHORIZED, "revoked before the reload, refused after it");
    assert_eq!(second.api_get("/x").await.status, StatusCode::OK);
    assert_eq!(Browser::new(&env.origin).api_get("/open/page").await.status, StatusCode::OK, "the new public route");

    let refused = env.reload(|c| c.session.store = trousseau_proxy::config::StoreKind::Memory).unwrap_err().to_string();
    assert!(refused.contains("session.store changed, which needs a restart"), "{refused}");
    assert_eq!(Browser::new(&env.origin).api_get("/open/page").await.status, StatusCode::OK, "the running configuration is kept");
    assert_eq!(second.api_get("/x").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_renamed_session_cookie_under_its_old_name_never_reaches_the_app() {
    let mut env = Env::start().await;
    let mut browser = env.browser();
    browser.sign_in("/", JEAN).await;
    browser.jar.insert("app_pref".into(), "dark".into());
    assert!(browser.jar.contains_key("trousseau_session"));

    env.reload(|c| c.session.cookie_name = "renamed_session".into()).expect("session.cookie_name changes live");
    // The browser still sends the cookie under the old name: no session under the new one (the
    // person signs in again), and the app sees neither the old cookie nor its sign-in trail.
    assert_eq!(browser.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
    env.reload(|c| c.routes.public = vec!["/open/*".into()]).expect("another reload");
    let echo = browser.api_get("/open/echo").await.json();
    let cookie = echo["headers"]["cookie"][0].as_str().unwrap_or("");
    assert!(cookie.contains("app_pref=dark"), "{cookie}");
    assert!(!cookie.contains("trousseau_session") && !cookie.contains("_signins"), "{cookie}");
    // Under the new name, the app's cookies are guarded as before.
    let planted = browser.api_get("/open/set-cookies?c=renamed_session%3Dforged").await;
    assert!(planted.set_cookies().iter().all(|c| !c.starts_with("renamed_session")), "{:?}", planted.headers);
}
