//! `metrics_listen`: an operator scrapes `/metrics` and sees what the proxy did — requests by
//! outcome, upstream and Trousseau latency, refreshes, back-channel logouts and sign-ins.


use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use crate::support::*;
use trousseau_proxy::config::{HumanDuration, RuleConfig};

/// Starts the admin listener for `env`'s app on a loopback port, as `server::run` does for
/// `metrics_listen`, and returns a client for it.
async fn metrics_listener(env: &Env) -> Browser {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let app = env.app.clone();
    let limits = app.limits().clone();
    tokio::spawn(trousseau_proxy::metrics::serve_metrics(listener, move || app.metrics_text(), limits, std::future::pending()));
    Browser::new(&origin)
}

/// One scrape of `/metrics`, as `series → value`.
struct Scrape(String);

impl Scrape {
    async fn take(admin: &mut Browser) -> Scrape {
        let answer = admin.api_get("/metrics").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
        Scrape(answer.text())
    }

    /// The value of `series` (name and labels exactly as exposed); 0 when absent is a failure.
    fn get(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {series} in\n{}", self.0))
            .parse()
            .unwrap()
    }

    fn outcome(&self, outcome: &str) -> f64 {
        self.get(&format!("trousseau_proxy_requests_total{{outcome=\"{outcome}\"}}"))
    }
}

#[tokio::test]
async fn an_operator_sees_sign_ins_outcomes_refreshes_and_back_channel_logouts() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            // Every request is due for a refresh (access tokens that expire as they are issued).
            c.session.refresh_skew = HumanDuration(Duration::from_secs(30));
            c.routes.rules =
                vec![RuleConfig { path: "/admin/*".into(), emails: vec!["nobody@example.com".into()], ..Default::default() }];
        }),
        idp: Box::new(|i| {
            i.access_token_ttl = Duration::ZERO;
            i.id_token_ttl = Duration::from_secs(10);
        }),
    })
    .await;
    let mut admin = metrics_listener(&env).await;

    let before = Scrape::take(&mut admin).await;
    assert_eq!(before.outcome("proxied"), 0.0);
    assert!(before.get("trousseau_proxy_idp_request_duration_seconds_count") >= 2.0, "discovery and JWKS were timed");
    assert_eq!(before.get(&format!("trousseau_proxy_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1.0);

    // An API client without a session, then a browser that is sent to sign in and comes back.
    let mut api = env.browser();
    assert_eq!(api.api_get("/api/items").await.status, StatusCode::UNAUTHORIZED);
    let mut browser = env.browser();
    let start = browser.navigate("/").await;
    assert_eq!(start.status, StatusCode::FOUND);
    let middle = Scrape::take(&mut admin).await;
    assert_eq!(middle.get("trousseau_proxy_sign_in_flows_active"), 1.0, "one sign-in under way");
    let callback = browser.sign_in_at_idp(&start.location(), JEAN).await;
    assert_eq!(callback.status, StatusCode::FOUND, "{}", callback.text());
    let home = browser.follow(callback).await;
    assert_eq!(home.status, StatusCode::OK);

    // Signed in: the app is reached (refreshing on the way), a policy refuses /admin.
    assert_eq!(browser.api_get("/api/items").await.status, StatusCode::OK);
    assert_eq!(browser.api_get("/admin/settings").await.status, StatusCode::FORBIDDEN);

    // Trousseau ends the user's sessions through the back channel.
    let token = env.trousseau().logout_token(Some(JEAN), None);
    let logout = env
        .browser()
        .request(
            Method::POST,
            "/.trousseau/backchannel-logout",
            &[("content-type", "application/x-www-form-urlencoded")],
            Bytes::from(format!("logout_token={token}")),
        )
        .await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.text());
    assert_eq!(browser.api_get("/api/items").await.status, StatusCode::UNAUTHORIZED);

    let after = Scrape::take(&mut admin).await;
    assert_eq!(after.outcome("proxied"), 2.0, "the home page and /api/items");
    assert_eq!(after.outcome("redirected_to_sign_in"), 1.0);
    assert_eq!(after.outcome("unauthenticated_401"), 2.0);
    assert_eq!(after.outcome("forbidden_403"), 1.0);
    assert_eq!(after.outcome("upstream_5xx"), 0.0);
    assert_eq!(after.outcome("unavailable_503"), 0.0);
    assert_eq!(after.outcome("reserved"), 2.0, "the callback and the back-channel logout");
    assert_eq!(after.get("trousseau_proxy_upstream_duration_seconds_count"), 2.0);
    assert_eq!(after.get("trousseau_proxy_upstream_duration_seconds_bucket{le=\"+Inf\"}"), 2.0);
    assert!(after.get("trousseau_proxy_upstream_duration_seconds_sum") > 0.0);

    assert_eq!(after.get("trousseau_proxy_sign_ins_total{stage=\"started\"}"), 1.0);
    assert_eq!(after.get("trousseau_proxy_sign_ins_total{stage=\"completed\"}"), 1.0);
    assert_eq!(after.get("trousseau_proxy_sign_in_flows_active"), 0.0);
    let refreshed = after.get("trousseau_proxy_refreshes_total{result=\"ok\"}");
    assert!(refreshed >= 1.0, "short tokens were refreshed");
    assert_eq!(after.get("trousseau_proxy_refreshes_total{result=\"failed\"}"), 0.0);
    // The code exchange and every refresh were calls to Trousseau.
    let idp_calls = after.get("trousseau_proxy_idp_request_duration_seconds_count");
    assert!(idp_calls >= before.get("trousseau_proxy_idp_request_duration_seconds_count") + 1.0 + refreshed);
    assert_eq!(after.get("trousseau_proxy_backchannel_revocations_total"), 1.0);
    // The cache behind it counts lazily: present, not necessarily up to date at this instant.
    assert!(after.get("trousseau_proxy_revocations_held") <= 1.0);

    // The admin listener serves nothing but the metrics.
    assert_eq!(admin.api_get("/.trousseau/userinfo").await.status, StatusCode::NOT_FOUND);

    promtool_accepts(&after.0);
}

/// The exposition, after traffic touched every family, passes Prometheus's own checker
/// (`promtool check metrics`: the text format, HELP and TYPE of every family, counter names,
/// histogram buckets), as the hand-written exposition writer (`metrics::Exposition`) must.
fn promtool_accepts(exposition: &str) {
    use std::io::Write as _;
    let promtool = parts::program("PROMTOOL", "/usr/bin/promtool");
    if !parts::require_program(&parts::PROMTOOL, &promtool) {
        return;
    }
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}\n{exposition}");
}

#[tokio::test]
async fn an_unreachable_app_counts_as_upstream_5xx() {
    // A port nothing listens on: reserved by binding it, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let env = Env::start_with(EnvOptions {
        configure: Box::new(move |c| {
            c.upstream = Some(format!("http://{closed}"));
            c.routes.public = vec!["/healthz".into()];
        }),
        ..EnvOptions::default()
    })
    .await;
    let mut admin = metrics_listener(&env).await;

    let answer = env.browser().api_get("/healthz").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());

    let scrape = Scrape::take(&mut admin).await;
    assert_eq!(scrape.outcome("upstream_5xx"), 1.0);
    assert_eq!(scrape.outcome("proxied"), 0.0);
    assert_eq!(scrape.get("trousseau_proxy_upstream_duration_seconds_count"), 1.0, "failed calls are timed too");
}
