//! The proxy as the front door (issue 19): HTTPS on `listen` with a certificate chain made at test
//! time, driven by real clients — curl over HTTP/2 and HTTP/1.1, `openssl s_client`, a websocket
//! over wss, the sign-in — mutual TLS, HSTS, the certificate renewed in place (a Kubernetes
//! Secret's symlink swap), and the plain listener that redirects to https.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::support::pki::TestCa;
use crate::support::*;
use trousseau_proxy::config::HumanDuration;

/// A directory removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("tp-tls-{name}-{}-{}", std::process::id(), trousseau_proxy::util::id::random_id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A proxy serving HTTPS with a chain `ca` signed, its `public_url` and Trousseau's redirect URIs
/// in https; `configure` changes the rest.
async fn https_env(ca: &TestCa, dir: &Dir, configure: impl FnOnce(&mut trousseau_proxy::config::FileConfig) + Send + 'static) -> (Env, String) {
    let (chain, key) = ca.server_pair("proxy.test");
    let (cert_file, key_file) = (dir.write("tls.crt", &chain), dir.write("tls.key", &key));
    let env = Env::start_with(EnvOptions {
        configure: Box::new(move |c| {
            c.public_url = c.public_url.take().map(|u| u.replace("http://", "https://"));
            c.tls.cert_file = Some(cert_file);
            c.tls.key_file = Some(key_file);
            configure(c);
        }),
        idp: Box::new(|i| {
            i.redirect_uris = i.redirect_uris.iter().map(|u| u.replace("http://", "https://")).collect();
            i.post_logout_redirect_uris = i.post_logout_redirect_uris.iter().map(|u| u.replace("http://", "https://")).collect();
        }),
    })
    .await;
    let origin = env.origin.replace("http://", "https://");
    (env, origin)
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn have(part: &parts::Part, program: &str) -> bool {
    parts::require_program(part, Path::new(program))
}

/// `openssl s_client` against `addr` with `extra` arguments; its whole output.
fn s_client(addr: &str, ca_file: &str, extra: &[&str]) -> String {
    let mut args = vec!["s_client", "-connect", addr, "-CAfile", ca_file, "-servername", "localhost"];
    args.extend_from_slice(extra);
    run("/usr/bin/openssl", &args).1
}

#[tokio::test]
async fn https_speaks_http2_and_http11_by_alpn_sends_the_whole_chain_and_hsts() {
    if !have(&parts::CURL, "/usr/bin/curl") || !have(&parts::OPENSSL, "/usr/bin/openssl") {
        return;
    }
    let (ca, dir) = (TestCa::new("front door"), Dir::new("alpn"));
    let root = dir.write("root.pem", &ca.root_pem());
    let (env, origin) = https_env(&ca, &dir, |_| {}).await;
    let addr = env.addr.to_string();
    let blocking = {
        let (root, origin) = (root.clone(), origin.clone());
        tokio::task::spawn_blocking(move || {
            let curl = |version: &str, path: &str| run("/usr/bin/curl", &["-sS", version, "--cacert", &root, "-o", "/dev/null", "-D", "-", &format!("{origin}{path}")]);
            let (ok, h2) = curl("--http2", "/.trousseau/healthz");
            assert!(ok && h2.starts_with("HTTP/2 200"), "{h2}");
            assert!(h2.to_ascii_lowercase().contains("strict-transport-security: max-age=31536000"), "{h2}");
            let (ok, h1) = curl("--http1.1", "/reports");
            assert!(ok && h1.starts_with("HTTP/1.1 302"), "curl accepts */*, like a browser: sent to sign in: {h1}");
            assert!(h1.contains("redirect_uri=https%3A%2F%2F127.0.0.1"), "the callback is https: {h1}");
            assert!(h1.to_ascii_lowercase().contains("strict-transport-security"), "the proxy's own answers too: {h1}");
        })
    };
    blocking.await.unwrap();
    let (root2, addr2) = (root.clone(), addr.clone());
    tokio::task::spawn_blocking(move || {
        let h2 = s_client(&addr2, &root2, &["-alpn", "h2,http/1.1", "-showcerts"]);
        assert!(h2.contains("ALPN protocol: h2"), "{h2}");
        assert!(h2.contains("Verify return code: 0 (ok)"), "the chain verifies up to the root: {h2}");
        assert_eq!(h2.matches("-----BEGIN CERTIFICATE-----").count(), 2, "leaf and intermediate are sent: {h2}");
        assert!(h2.contains("TLSv1.3"), "{h2}");
        let h1 = s_client(&addr2, &root2, &["-alpn", "http/1.1", "-tls1_2"]);
        assert!(h1.contains("ALPN protocol: http/1.1") && h1.contains("TLSv1.2"), "{h1}");
        let old = s_client(&addr2, &root2, &["-tls1_1"]);
        assert!(old.contains("alert handshake failure") && old.contains("Cipher is (NONE)"), "no TLS 1.1: {old}");
    })
    .await
    .unwrap();
    // Plain http on the https port gets no answer, and the listener goes on.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<http_body_util::Full<bytes::Bytes>>();
    let uri: http::Uri = format!("{}/.trousseau/healthz", env.origin).parse().unwrap();
    let plain = tokio::time::timeout(Duration::from_secs(10), client.get(uri)).await.expect("a plain-http connection is closed, not kept waiting");
    assert!(plain.is_err(), "no plain-http answer on the https port");
    let mut b = Browser::trusting(&origin, ca.roots());
    assert_eq!(b.api_get("/.trousseau/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_sign_in_over_https_sets_host_prefixed_cookies_and_the_app_hears_https() {
    let (ca, dir) = (TestCa::new("sign-in"), Dir::new("signin"));
    let (env, origin) = https_env(&ca, &dir, |_| {}).await;
    let mut b = Browser::trusting(&origin, ca.roots());
    let page = b.sign_in("/", JEAN).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert!(page.headers.contains_key("strict-transport-security"), "the app's answers carry HSTS too");
    assert!(b.jar.keys().any(|k| k == "__Host-trousseau_session"), "{:?}", b.jar.keys());
    let seen = b.api_get("/echo").await.json();
    assert_eq!(seen["headers"]["x-forwarded-proto"], serde_json::json!(["https"]));
    assert_eq!(seen["headers"]["x-trousseau-sub"], serde_json::json!([JEAN]));
    // Someone's own X-Trousseau-Client-Subject never reaches the app.
    let spoofed = b.request(http::Method::GET, "/echo", &[("accept", "application/json"), ("x-trousseau-client-subject", "CN=admin")], bytes::Bytes::new()).await;
    assert!(spoofed.json()["headers"].get("x-trousseau-client-subject").is_none());

    // A websocket over wss, with the session, reaches the app's echo.
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(ca.roots())
            .with_no_client_auth(),
    ));
    let tcp = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    let tls = connector.connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.expect("TLS handshake");
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("wss://localhost:{}/ws", env.addr.port()).into_client_request().unwrap();
    req.headers_mut().insert("cookie", b.cookie_header().parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::client_async(req, tls).await.expect("a websocket over wss");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    use futures_util::{SinkExt as _, StreamExt as _};
    ws.send(tokio_tungstenite::tungstenite::Message::text("bonjour")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "bonjour");
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_and_tells_the_app_its_subject() {
    if !have(&parts::CURL, "/usr/bin/curl") {
        return;
    }
    let (ca, dir) = (TestCa::new("mtls"), Dir::new("mtls"));
    let root = dir.write("root.pem", &ca.root_pem());
    let client_ca = root.clone();
    let (robot_chain, robot_key) = ca.client_pair("ops-robot", "Hotel Group");
    let (cert, key) = (dir.write("robot.crt", &robot_chain), dir.write("robot.key", &robot_key));
    let other = TestCa::new("someone else");
    let (stranger_chain, stranger_key) = other.client_pair("stranger", "Elsewhere");
    let (stranger_cert, stranger_key) = (dir.write("stranger.crt", &stranger_chain), dir.write("stranger.key", &stranger_key));
    let (mut env, origin) = https_env(&ca, &dir, move |c| {
        c.tls.client_ca_file = Some(client_ca);
        c.routes.public = vec!["/public/*".into()];
    })
    .await;
    let url = format!("{origin}/public/echo");
    let curl = move |extra: &[&str]| {
        let mut args = vec!["-sS", "--cacert", root.as_str(), "-H", "X-Trousseau-Client-Subject: CN=admin"];
        args.extend_from_slice(extra);
        args.push(url.as_str());
        run("/usr/bin/curl", &args)
    };
    let (stranger, robot) = ([stranger_cert.clone(), stranger_key.clone()], [cert.clone(), key.clone()]);
    let before = curl.clone();
    tokio::task::spawn_blocking(move || {
        let curl = before;
        let (ok, without) = curl(&[]);
        assert!(!ok, "no client certificate, no connection: {without}");
        let (ok, stranger) = curl(&["--cert", &stranger_cert, "--key", &stranger_key]);
        assert!(!ok, "a certificate of another CA is refused: {stranger}");
        let (ok, body) = curl(&["--cert", &cert, "--key", &key]);
        assert!(ok, "{body}");
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
        assert_eq!(seen["headers"]["x-trousseau-client-subject"], serde_json::json!(["CN=ops-robot, O=Hotel Group"]), "{body}");
    })
    .await
    .unwrap();

    // Another client CA put in force by a reload (tls.client_ca_file is watched): new connections
    // are held to it at once — the other CA's client gets in, the first one's no longer does — and
    // a connection the first one's client kept open is closed once its request is answered.
    let mut kept = mutual_tls_connection(&ca, &robot_chain, &robot_key, env.addr).await;
    assert!(get_over(&mut kept).await.starts_with("HTTP/1.1 200"), "served before the reload");
    let other_root = dir.write("other-root.pem", &other.root_pem());
    env.reload(move |c| c.tls.client_ca_file = Some(other_root)).expect("the reload is put in force");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read_to_end(&mut kept, &mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the connection of a client whose CA was removed is closed: {closed:?}");
    tokio::task::spawn_blocking(move || {
        let (ok, body) = curl(&["--cert", &stranger[0], "--key", &stranger[1]]);
        assert!(ok, "the new CA's client is let in: {body}");
        assert!(body.contains("CN=stranger, O=Elsewhere"), "{body}");
        let (ok, refused) = curl(&["--cert", &robot[0], "--key", &robot[1]]);
        assert!(!ok, "the CA no longer configured is refused: {refused}");
    })
    .await
    .unwrap();
}

/// A keep-alive TLS connection presenting `chain`/`key` (PEM) as its client certificate.
async fn mutual_tls_connection(ca: &TestCa, chain: &str, key: &str, addr: std::net::SocketAddr) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_client_auth_cert(certs, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("a mutual TLS handshake")
}

/// One keep-alive request on `stream`; the response head.
async fn get_over(stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream.write_all(b"GET /public/echo HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// cert-manager, certbot or the kubelet renew the files in place: the kubelet writes a new
/// directory and swaps the `..data` symlink the mounted names point through. New connections get
/// the new certificate within seconds; nothing restarts.
#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let (ca, dir) = (TestCa::new("renewal"), Dir::new("renewal"));
    let mount = |generation: &str, chain: &str, key: &str| {
        let data = dir.0.join(generation);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("tls.crt"), chain).unwrap();
        std::fs::write(data.join("tls.key"), key).unwrap();
        let link = dir.0.join("..data.tmp");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(generation, &link).unwrap();
        std::fs::rename(&link, dir.0.join("..data")).unwrap();
    };
    let (chain, key) = ca.server_pair("first.proxy.test");
    mount("..2026_12_04_first", &chain, &key);
    std::os::unix::fs::symlink("..data/tls.crt", dir.0.join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", dir.0.join("tls.key")).unwrap();
    let (cert_file, key_file) = (dir.0.join("tls.crt").display().to_string(), dir.0.join("tls.key").display().to_string());
    let env = Env::start_with(EnvOptions {
        configure: Box::new(move |c| {
            c.public_url = c.public_url.take().map(|u| u.replace("http://", "https://"));
            c.tls.cert_file = Some(cert_file);
            c.tls.key_file = Some(key_file);
        }),
        ..Default::default()
    })
    .await;
    let served = |addr: std::net::SocketAddr, roots: rustls::RootCertStore| async move {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        ));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector.connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.expect("handshake");
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        trousseau_proxy::tls::serving::subject_of(leaf.as_ref()).unwrap()
    };
    assert_eq!(served(env.addr, ca.roots()).await, "CN=first.proxy.test");
    let (chain, key) = ca.server_pair("second.proxy.test");
    mount("..2026_12_05_second", &chain, &key);
    for _ in 0..100 {
        if served(env.addr, ca.roots()).await == "CN=second.proxy.test" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the renewed certificate was not served within 10 s");
}

/// `http_redirect_listen` with the binary as users run it: every request to the plain port is sent
/// to the same host and path over https (308), except the health probe; SIGHUP keeps it running.
#[tokio::test]
async fn the_plain_listener_redirects_to_https_and_answers_the_health_probe() {
    if !have(&parts::CURL, "/usr/bin/curl") {
        return;
    }
    let (ca, dir) = (TestCa::new("redirect"), Dir::new("redirect"));
    let (chain, key) = ca.server_pair("proxy.test");
    let (https, http) = (free_port(), free_port());
    let config = format!(
        "listen: 127.0.0.1:{https}\nhttp_redirect_listen: 127.0.0.1:{http}\npublic_url: https://localhost:{https}\nupstream: http://127.0.0.1:9\n\
         oidc:\n  issuer: http://127.0.0.1:9/application/o/app/\n  client_id: c\n  client_secret: s\n\
         session:\n  secrets: [\"{}\"]\ntls:\n  cert_file: {}\n  key_file: {}\n",
        trousseau_proxy::session::seal::generate_secret(),
        dir.write("tls.crt", &chain),
        dir.write("tls.key", &key),
    );
    let config_file = dir.write("config.yaml", &config);
    let mut child = Killed(Command::new(env!("CARGO_BIN_EXE_trousseau-proxy"))
        .args(["--config", &config_file])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", http)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let head = |url: &str, method: &str| run("/usr/bin/curl", &["-sS", "-X", method, "-o", "/dev/null", "-D", "-", url]).1;
        let moved = head(&format!("http://localhost:{http}/reports?year=2026"), "POST");
        assert!(moved.starts_with("HTTP/1.1 308"), "{moved}");
        assert!(moved.contains(&format!("location: https://localhost:{https}/reports?year=2026")), "{moved}");
        assert!(head(&format!("http://localhost:{http}/.trousseau/healthz"), "GET").starts_with("HTTP/1.1 200"));
        let odd = run("/usr/bin/curl", &["-sS", "-o", "/dev/null", "-D", "-", "-H", "Host: evil.example@x", &format!("http://127.0.0.1:{http}/")]).1;
        assert!(odd.starts_with("HTTP/1.1 400") && !odd.contains("location"), "{odd}");
    })
    .await
    .unwrap();
    // `systemctl reload` sends SIGHUP: the proxy re-reads its certificate and goes on serving.
    let hup = Command::new("kill").args(["-HUP", &child.0.id().to_string()]).status().unwrap();
    assert!(hup.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(child.0.try_wait().unwrap().is_none(), "SIGHUP does not stop the proxy");
    let still = tokio::task::spawn_blocking(move || run("/usr/bin/curl", &["-sS", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{http}/.trousseau/healthz")]).1).await.unwrap();
    assert_eq!(still, "200");
}

/// A child process killed when dropped, whatever the test's end.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn hsts_can_be_turned_off() {
    let (ca, dir) = (TestCa::new("hsts"), Dir::new("hsts"));
    let (_env, origin) = https_env(&ca, &dir, |c| c.tls.hsts_max_age = HumanDuration(Duration::ZERO)).await;
    let mut b = Browser::trusting(&origin, ca.roots());
    let r = b.api_get("/.trousseau/healthz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.headers.contains_key("strict-transport-security"), "hsts_max_age: 0s sends none");
}
