//! `trousseau-proxy dev` in a real browser: headless Chromium signs in through the embedded
//! Trousseau twin, reaches the demo app, switches organization and signs out — against the binary
//! exactly as a developer runs it. Every page is saved to `target/screenshots/` for people to look
//! at, and checked for what a person needs: a language, a title, one heading, labelled fields, no
//! external loads, no horizontal scrolling on a phone.
//!
//! Without Chromium the tests say "skipped" and pass, except under CI (`$CI` set), which installs it.


use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::chromium::{self, Chromium};
use http::StatusCode;
use serde_json::Value;
use crate::support::Browser;

const BIN: &str = env!("CARGO_BIN_EXE_trousseau-proxy");

/// An extra demo user, given to `dev --users`.
const USERS_YAML: &str = r#"
- sub: 5e0c9a7b-1d2f-4c3b-9a8e-7f6d5c4b3a21
  email: camille.martin@boulangerie-martin.fr
  name: Camille Martin
  given_name: Camille
  family_name: Martin
  locale: fr-FR
  organizations:
    - id: 0191a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5b
      slug: boulangerie-martin
      name: Boulangerie Martin
      role: accounting
  description: From --users (accounting at Boulangerie Martin)
"#;

/// `trousseau-proxy dev` running as a child process on a free loopback port.
struct DevServer {
    child: Child,
    origin: String,
    dir: PathBuf,
}

impl DevServer {
    /// Starts `trousseau-proxy dev --listen 127.0.0.1:PORT --users FILE` and waits until ready.
    async fn start(name: &str) -> DevServer {
        let dir = std::env::temp_dir().join(format!("trousseau-dev-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("users.yaml");
        std::fs::write(&users, USERS_YAML).unwrap();
        let port = crate::support::free_port();
        let listen = format!("127.0.0.1:{port}");
        let log_dir = chromium::screenshot_dir();
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = std::fs::File::create(log_dir.join(format!("{name}.dev-server.log"))).unwrap();
        let child = Command::new(BIN)
            .args(["dev", "--listen", &listen, "--users"])
            .arg(&users)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start trousseau-proxy dev");
        let server = DevServer { child, origin: format!("http://{listen}"), dir };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let addr = self.origin.trim_start_matches("http://");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let mut probe = Browser::new(&self.origin);
                if probe.api_get("/.trousseau/readyz").await.status == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("trousseau-proxy dev never became ready at {}", self.origin);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Saves a screenshot and checks what every page owes its reader.
async fn look_at(browser: &mut Chromium, dev: &DevServer, name: &str) {
    let path = browser.screenshot(name).await;
    let report = browser
        .eval(
            r#"(() => ({
                lang: document.documentElement.lang,
                title: document.title,
                h1: document.querySelectorAll('h1').length,
                unlabelled: [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                    .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.outerHTML),
                nameless: [...document.querySelectorAll('button, a')]
                    .filter(e => !e.innerText.trim() && !e.getAttribute('aria-label')).map(e => e.outerHTML),
                resources: performance.getEntriesByType('resource').map(e => e.name),
                images: [...document.images].map(i => i.src),
                scripts: document.scripts.length,
                width: document.documentElement.scrollWidth,
            }))()"#,
        )
        .await;
    let context = format!("page `{name}` ({})", path.display());
    assert!(matches!(report["lang"].as_str(), Some("en" | "fr")), "{context}: lang is {}", report["lang"]);
    assert!(report["title"].as_str().is_some_and(|t| !t.is_empty()), "{context}: no <title>");
    assert_eq!(report["h1"], 1, "{context}: one <h1> per page");
    assert_eq!(report["unlabelled"], Value::Array(vec![]), "{context}: form fields without a label");
    assert_eq!(report["nameless"], Value::Array(vec![]), "{context}: buttons or links without a name");
    assert_eq!(report["images"], Value::Array(vec![]), "{context}: images (pictures are shown as links)");
    assert_eq!(report["scripts"], 0, "{context}: pages work without JavaScript");
    for resource in report["resources"].as_array().into_iter().flatten() {
        let resource = resource.as_str().unwrap_or_default();
        assert!(resource.starts_with(&dev.origin), "{context}: loads an external asset {resource}");
    }
    let viewport = i64::from(browser.viewport().0);
    assert!(report["width"].as_i64().unwrap_or(0) <= viewport, "{context}: {}px wide in a {viewport}px viewport", report["width"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_signs_in_switches_hotel_and_signs_out_in_a_real_browser() {
    let Some(mut browser) = Chromium::launch_or_skip().await else { return };
    let dev = DevServer::start("journey").await;

    // The app is protected: the first visit lands on the dev IdP's sign-in page.
    browser.navigate(&dev.url("/")).await;
    assert!(browser.url().await.starts_with(&dev.url("/.trousseau/dev-idp/")), "at {}", browser.url().await);
    let page = browser.text().await;
    assert!(page.contains("Jean Dupont") && page.contains("Demo users"), "sign-in page:\n{page}");
    assert!(page.contains("Camille Martin") && page.contains("Boulangerie Martin"), "the --users file's user is offered:\n{page}");
    look_at(&mut browser, &dev, "01-dev-idp-sign-in").await;

    // One click as Jean Dupont (fr-FR): the demo app greets him and verified the assertion.
    browser.click_text("Jean Dupont").await;
    assert_eq!(browser.url().await, dev.url("/"));
    assert_eq!(browser.lang().await, "fr", "Jean's locale is fr-FR");
    let page = browser.text().await;
    assert!(page.contains("Jean Dupont"), "demo app:\n{page}");
    assert!(page.contains("Signature vérifiée"), "demo app verifies the assertion:\n{page}");
    assert!(page.contains("jean.dupont@hotel.com"), "demo app shows the email:\n{page}");
    assert!(page.contains("Le cookie de session n'atteint jamais l'application"), "{page}");
    look_at(&mut browser, &dev, "02-demo-app").await;

    // Jean has two hotels: he picks Riviera Nice and the app sees it.
    browser.navigate(&dev.url("/.trousseau/organizations")).await;
    let page = browser.text().await;
    assert!(page.contains("Hotel Le Grand Paris") && page.contains("Hotel Riviera Nice"), "selector:\n{page}");
    look_at(&mut browser, &dev, "03-organization-selector").await;
    browser.click_text("Hotel Riviera Nice").await;
    assert_eq!(browser.url().await, dev.url("/"), "after choosing:\n{}", browser.text().await);
    let page = browser.text().await;
    assert!(page.contains("Hotel Riviera Nice") && page.contains("hotel-riviera-nice"), "the app sees the chosen hotel:\n{page}");
    look_at(&mut browser, &dev, "04-demo-app-riviera").await;

    // The selector marks the current choice.
    browser.navigate(&dev.url("/.trousseau/organizations")).await;
    let current = browser.eval("document.querySelector('[aria-current=true]')?.innerText ?? ''").await;
    assert!(current.as_str().unwrap_or_default().contains("Riviera"), "current organization: {current}");
    look_at(&mut browser, &dev, "05-organization-selector-current").await;
    browser.navigate(&dev.url("/")).await;

    // Signing out from the app ends both sessions: back at the IdP, nobody to continue as.
    browser.click_text("Se déconnecter").await;
    let page = browser.text().await;
    assert!(browser.url().await.starts_with(&dev.url("/.trousseau/dev-idp/")), "after sign-out at {}:\n{page}", browser.url().await);
    assert!(!page.contains("Continue as"), "the IdP session ended too:\n{page}");
    look_at(&mut browser, &dev, "06-after-sign-out").await;

    // Visiting the app again asks to sign in again.
    browser.navigate(&dev.url("/")).await;
    assert!(browser.url().await.starts_with(&dev.url("/.trousseau/dev-idp/")), "at {}", browser.url().await);
    assert!(browser.text().await.contains("Demo users"));
    let cookies = browser.cookie_names(&dev.url("/")).await;
    let session = cookies.iter().filter(|c| c.starts_with("trousseau_session") && !c.contains("_login_")).count();
    assert_eq!(session, 0, "no proxy session is left (pending sign-ins only): {cookies:?}");

    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_and_phone_sized_pages_look_finished() {
    let Some(mut browser) = Chromium::launch_or_skip().await else { return };
    let dev = DevServer::start("pages").await;

    // A callback that matches no sign-in attempt of this browser.
    // (This browser has a sign-in of its own under way: the callback names another.)
    browser.navigate(&dev.url("/")).await;
    browser.navigate(&dev.url("/.trousseau/callback?state=x&code=y")).await;
    let page = browser.text().await;
    assert!(page.contains("This sign-in link has expired"), "{page}");
    look_at(&mut browser, &dev, "10-error-sign-in-link-expired").await;

    // A user Trousseau refuses: a 403 page that says so, and no redirect loop.
    browser.navigate(&dev.url("/")).await;
    browser.click_text("Oliver Bennett").await;
    let page = browser.text().await;
    assert!(page.contains("Access denied by Trousseau"), "{page}");
    assert!(browser.url().await.starts_with(&dev.url("/.trousseau/callback")), "stays on the callback: {}", browser.url().await);
    look_at(&mut browser, &dev, "11-error-access-denied").await;

    // A reserved path with no page.
    browser.navigate(&dev.url("/.trousseau/nothing-here")).await;
    assert!(browser.text().await.contains("Page not found"));
    look_at(&mut browser, &dev, "12-error-not-found").await;

    // On a phone: sign-in, demo app and organization selector fit the screen.
    browser.set_viewport(390, 844, true).await;
    browser.navigate(&dev.url("/")).await;
    look_at(&mut browser, &dev, "20-dev-idp-sign-in-390px").await;
    // The keyboard reaches the first demo user, with a visible focus ring.
    let mut focused = String::new();
    for _ in 0..12 {
        focused = browser.tab(1).await;
        if focused.contains("Jean Dupont") {
            break;
        }
    }
    assert!(focused.contains("Jean Dupont"), "Tab never reached Jean Dupont (last: {focused})");
    let outline = browser.eval("getComputedStyle(document.activeElement).outlineStyle").await;
    assert_eq!(outline, "solid", "focused buttons show a focus ring");
    look_at(&mut browser, &dev, "21-dev-idp-focus-390px").await;

    browser.click_text("Jean Dupont").await;
    assert!(browser.text().await.contains("Jean Dupont"));
    look_at(&mut browser, &dev, "22-demo-app-390px").await;
    browser.navigate(&dev.url("/.trousseau/organizations")).await;
    look_at(&mut browser, &dev, "23-organization-selector-390px").await;

    // Dark mode, desktop.
    browser.set_viewport(chromium::DESKTOP.0, chromium::DESKTOP.1, false).await;
    browser.set_color_scheme("dark").await;
    browser.navigate(&dev.url("/")).await;
    look_at(&mut browser, &dev, "30-demo-app-dark").await;
    browser.navigate(&dev.url("/.trousseau/organizations")).await;
    look_at(&mut browser, &dev, "31-organization-selector-dark").await;

    browser.close().await;
}

/// Issue 17: the demo app's live page holds a websocket through the proxy; the user signs out
/// in another tab, and the page shows at once that the proxy closed it (1008, with the reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_page_shows_its_websocket_closed_when_the_user_signs_out_in_another_tab() {
    let Some(mut browser) = Chromium::launch_or_skip().await else { return };
    let dev = DevServer::start("live").await;
    browser.navigate(&dev.url("/")).await;
    browser.click_text("Hélène Lefèvre").await;
    assert_eq!(browser.url().await, dev.url("/"));
    browser.click_text("Voir un websocket se fermer avec la session").await;
    assert_eq!(browser.url().await, dev.url("/live"));

    // Open, and the app's messages arrive.
    let state = "document.getElementById('state').dataset.state";
    let last = "document.getElementById('last').textContent";
    let mut waited = Duration::ZERO;
    while browser.eval(last).await.as_str().unwrap_or_default() == "—" {
        assert!(waited < Duration::from_secs(10), "no message on the websocket: {}", browser.text().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    assert_eq!(browser.eval(state).await, "open");
    assert!(browser.eval(last).await.as_str().unwrap_or_default().contains("helene.lefevre@hotel-des-alpes.fr"), "the app knows who is connected");
    browser.screenshot("07-live-connection-open").await;

    // Signing out in another tab of the same browser.
    browser.in_another_tab(&dev.url("/.trousseau/logout"), Duration::from_millis(1500)).await;
    let mut waited = Duration::ZERO;
    while browser.eval(state).await != "closed" {
        assert!(waited < Duration::from_secs(5), "the page still shows an open connection: {}", browser.text().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    assert_eq!(browser.eval("document.getElementById('state').dataset.code").await, "1008");
    let page = browser.text().await;
    assert!(page.contains("1008") && page.contains("session ended: signed out"), "the page says why:\n{page}");
    assert!(page.contains("Se reconnecter"), "and offers to sign in again:\n{page}");
    browser.screenshot("08-live-connection-closed-by-sign-out").await;
    browser.close().await;
}

/// A page server for a single-page app on its own origin (another port): every path answers the
/// same empty page, from which the test runs `fetch` calls at the proxy.
async fn spa_origin() -> (String, tokio::task::JoinHandle<()>) {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let page = "<!doctype html><html lang=en><title>SPA</title><h1>Orders</h1><textarea aria-label=draft>half-typed</textarea>";
                    let mut r = http::Response::new(Full::new(bytes::Bytes::from_static(page.as_bytes())));
                    r.headers_mut().insert("content-type", "text/html; charset=utf-8".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (origin, task)
}

/// Issue 18: a front end on another (allowed) origin calls the API after its session is gone: it
/// reads the 401 JSON — no redirect followed, no opaque CORS error, no sign-in started by fifty
/// background calls — signs in at the top level at `login_url`, and its calls carry the session
/// from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_page_app_on_another_origin_reads_the_401_and_signs_in_at_the_top_level() {
    use crate::support::{Env, EnvOptions, JEAN};
    let Some(mut browser) = Chromium::launch_or_skip().await else { return };
    let (spa, _spa_task) = spa_origin().await;
    let allowed = spa.clone();
    let env = Env::start_with(EnvOptions { configure: Box::new(move |c| c.cors.allowed_origins = vec![allowed]), ..Default::default() }).await;
    let api = env.origin.clone();
    browser.navigate(&format!("{spa}/orders/42")).await;

    let call = format!(
        "fetch('{api}/api/orders/42', {{credentials: 'include'}}).then(async r => ({{status: r.status, redirected: r.redirected, body: await r.json()}}))"
    );
    let answer = browser.eval(&call).await;
    assert_eq!(answer["status"], 401, "{answer}");
    assert_eq!(answer["redirected"], false);
    let login_url = answer["body"]["login_url"].as_str().expect("the 401 JSON is readable across origins").to_string();
    assert!(login_url.starts_with("/.trousseau/login?rd="), "{login_url}");
    // A cross-origin fetch carries only the page's origin as `Referer`: the front end's root.
    let query = login_url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let rd = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "rd").map(|(_, v)| v.into_owned());
    assert_eq!(rd, Some(format!("{spa}/")), "back to the front end: {login_url}");

    let fifty = format!("Promise.all(Array.from({{length: 50}}, () => fetch('{api}/api/orders', {{credentials: 'include'}}).then(r => r.status)))");
    let statuses = browser.eval(&fifty).await;
    assert!(statuses.as_array().is_some_and(|s| s.len() == 50 && s.iter().all(|v| v == 401)), "{statuses}");
    let cookies = browser.cookie_names(&api).await;
    assert!(cookies.iter().all(|c| !c.contains("_login_")), "no sign-in attempt started by background calls: {cookies:?}");
    assert_eq!(env.upstream.hits(), 0);
    browser.screenshot("09-spa-before-sign-in").await;

    // The app saves its draft and sends the user to sign in at the top level, naming its page.
    let sign_in = browser.eval(&format!("'{api}/.trousseau/login?rd=' + encodeURIComponent(location.href)")).await;
    browser.navigate(sign_in.as_str().unwrap()).await;
    browser.click_text("Jean Dupont").await;
    // Back on the page the front end was on (an allowed origin may be returned to).
    assert_eq!(browser.url().await, format!("{spa}/orders/42"));
    assert!(browser.text().await.contains("Orders"));

    // Its calls carry the session now.
    let state = browser
        .eval(&format!("fetch('{api}/.trousseau/session', {{credentials: 'include'}}).then(async r => ({{status: r.status, body: await r.json()}}))"))
        .await;
    assert_eq!(state["status"], 200, "{state}");
    assert_eq!(state["body"]["authenticated"], true);
    assert_eq!(state["body"]["sub"], JEAN);
    browser.close().await;
}

/// Issue 18: the app opened under another name than `public_url` (localhost instead of
/// 127.0.0.1): the sign-in's cookie belongs to one name, Trousseau sends the browser back to the
/// other. The callback says so on a page, instead of sending the browser round again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_started_under_another_host_name_explains_itself() {
    use crate::support::Env;
    let Some(mut browser) = Chromium::launch_or_skip().await else { return };
    let env = Env::start().await;
    let elsewhere = format!("http://localhost:{}/orders", env.addr.port());
    browser.navigate(&elsewhere).await;
    assert!(browser.url().await.contains("/authorize") || browser.text().await.contains("Jean Dupont"), "at the IdP: {}", browser.url().await);
    browser.click_text("Jean Dupont").await;
    let page = browser.text().await;
    assert!(browser.url().await.starts_with(&format!("{}/.trousseau/callback", env.origin)), "{}", browser.url().await);
    assert!(page.contains("The sign-in cookie did not come back"), "{page}");
    assert!(page.contains(&env.origin) && page.contains("open it at that address"), "names where to open the app:\n{page}");
    assert!(page.contains("sign_in_cookie_lost"), "{page}");
    browser.screenshot("10-sign-in-cookie-lost").await;
    // Its button opens the app where the sign-in works.
    browser.click_text("Open the application").await;
    assert!(browser.text().await.contains("Jean Dupont") || browser.url().await.contains("authorize"), "{}", browser.url().await);
    browser.close().await;
}
