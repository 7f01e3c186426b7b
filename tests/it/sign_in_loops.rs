//! Redirect loops diagnosed, not repeated (issue 18): a browser whose sign-ins complete but whose
//! session never comes back gets, at its third sign-in within a minute, a page naming the cause —
//! each misconfiguration produced for real with two proxy replicas behind a "load balancer" (the
//! test picks the replica each request reaches, as a round-robin would).

use http::StatusCode;

use crate::support::{Browser, Env, EnvOptions, Replica, JEAN};

/// The `/metrics` value of `series` on this proxy.
fn metric(app: &trousseau_proxy::app::App, series: &str) -> f64 {
    let text = app.metrics_text();
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// A navigation to `to` that finds no session: the sign-in it starts is completed at `callback_at`
/// (the replica the load balancer sends Trousseau's redirect to).
async fn sign_in_again(b: &mut Browser, to: &str, callback_at: &str, env: &Env) {
    let start = b.navigate(to).await;
    assert_eq!(start.status, StatusCode::FOUND, "a new sign-in: {}", start.text());
    let callback = b.callback_url_from_idp(&start.location(), JEAN).await.replace(&env.origin, callback_at);
    let done = b.navigate(&callback).await;
    assert_eq!(done.status, StatusCode::FOUND, "the sign-in completes at {callback_at}: {}", done.text());
}

/// The loop page: 500, its error code, the cause, a way to try again; no new sign-in attempt.
fn assert_loop_page(b: &Browser, answer: &crate::support::Answer, cause: &str) {
    let text = answer.text();
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
    assert!(text.contains("sign_in_loop") && text.contains(cause), "expected {cause:?} in:\n{text}");
    assert!(answer.headers.get("location").is_none());
    assert!(!b.jar.keys().any(|k| k.contains("_login_")), "no sign-in attempt started: {:?}", b.jar.keys());
}

async fn two_replicas(store: &'static str) -> (Env, Replica) {
    let env = Env::start_with(EnvOptions { configure: Box::new(move |c| c.session.store = crate::support::named(store)), ..Default::default() }).await;
    let replica = env.start_replica().await;
    (env, replica)
}

/// The classic: `session.store: memory` on two replicas. Each sign-in lands on one of them, the
/// next request on the other, which does not know the session.
#[tokio::test]
async fn replicas_each_with_their_own_memory_store_get_the_page_at_the_third_sign_in() {
    let (env, replica) = two_replicas("memory").await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/", JEAN).await.status, StatusCode::OK, "signed in at the first replica");
    // The next navigation reaches the second replica: no such session there; a second sign-in,
    // whose callback the balancer sends to the second replica.
    sign_in_again(&mut b, &format!("{}/", replica.origin), &replica.origin, &env).await;
    assert!(!b.jar.keys().any(|k| k.contains("_login_")));
    // Then a navigation reaches the first replica again: a third sign-in would only repeat this.
    let looped = b.navigate(&format!("{}/reports?year=2026", env.origin)).await;
    assert_loop_page(&b, &looped, "another instance than the one answering");
    assert!(looped.text().contains("session.store: redis"));
    assert_eq!(metric(&env.app, "trousseau_proxy_sign_ins_total{stage=\"loop_stopped\"}"), 1.0);

    // An API call in the same state is a plain 401: only navigations start sign-ins.
    assert_eq!(b.api_get(&format!("{}/api", env.origin)).await.status, StatusCode::UNAUTHORIZED);
    // "Try again" starts one more sign-in anyway, back to the page that looped.
    let try_again = "/.trousseau/login?rd=/reports%3Fyear%3D2026";
    assert!(looped.text().contains(&format!("href=\"{try_again}\"")), "{}", looped.text());
    let again = b.navigate(&format!("{}{try_again}", env.origin)).await;
    assert_eq!(again.status, StatusCode::FOUND);
    assert!(again.location().starts_with(&env.idp.issuer().replace("/application/o/app/", "")), "{}", again.location());
}

/// Two replicas whose secrets differ (a rotation done on one of them only): each one's session
/// cookie is unreadable to the other.
#[tokio::test]
async fn replicas_with_different_secrets_get_the_page_naming_the_secrets() {
    let env = Env::start().await;
    let other = trousseau_proxy::session::seal::generate_secret();
    let replica = env.start_replica_with(move |c| c.session.secrets = vec![other]).await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/", JEAN).await.status, StatusCode::OK);
    sign_in_again(&mut b, &format!("{}/", replica.origin), &replica.origin, &env).await;
    let looped = b.navigate(&format!("{}/", env.origin)).await;
    assert_loop_page(&b, &looped, "different session.secrets");
    // The other way round too: signed in at the second replica, then at the first.
    let mut b = env.browser();
    sign_in_again(&mut b, &format!("{}/", replica.origin), &replica.origin, &env).await;
    sign_in_again(&mut b, &format!("{}/", env.origin), &env.origin, &env).await;
    let looped = b.navigate(&format!("{}/", replica.origin)).await;
    assert_loop_page(&b, &looped, "different session.secrets");
}

/// Something between the browser and the proxy drops the session cookie (a CDN keeping an allow
/// list of cookies, a header size limit that truncates): here the test's browser loses it after
/// each sign-in, as such a middlebox would.
#[tokio::test]
async fn a_session_cookie_dropped_on_the_way_gets_the_page_with_its_size() {
    let env = Env::start().await;
    let mut b = env.browser();
    let drop_session = |b: &mut Browser| b.jar.retain(|name, _| !name.starts_with("trousseau_session") || name.ends_with("_signins"));
    assert_eq!(b.sign_in("/", JEAN).await.status, StatusCode::OK);
    drop_session(&mut b);
    sign_in_again(&mut b, "/", &env.origin, &env).await;
    drop_session(&mut b);
    let looped = b.navigate("/").await;
    assert_loop_page(&b, &looped, "strips Cookie");
    assert!(looped.text().contains(" bytes)"), "{}", looped.text());
}

/// Signing in and out again and again, several tabs signing in at once, a session that does come
/// back: never the page. The trail cookie never reaches the app.
#[tokio::test]
async fn sign_ins_whose_session_comes_back_are_never_taken_for_a_loop() {
    let env = Env::start().await;
    let mut b = env.browser();
    for _ in 0..3 {
        assert_eq!(b.sign_in("/", JEAN).await.status, StatusCode::OK);
        let seen = b.api_get("/echo").await.json();
        let cookies = seen["headers"]["cookie"].as_str().unwrap_or_default().to_string();
        assert!(!cookies.contains("trousseau_session"), "none of our cookies reach the app: {cookies}");
        let out = b.request(http::Method::POST, "/.trousseau/logout", &[("accept", "text/html")], bytes::Bytes::new()).await;
        assert!(out.status.is_redirection(), "{}", out.text());
        assert!(!b.jar.keys().any(|k| k.contains("_signins")), "sign-out clears the trail: {:?}", b.jar.keys());
    }
    // Three tabs opened at once: three sign-ins complete within a second, and each session works.
    let mut tabs: Vec<String> = Vec::new();
    for _ in 0..3 {
        let start = b.navigate("/").await;
        tabs.push(b.callback_url_from_idp(&start.location(), JEAN).await);
    }
    for callback in tabs {
        assert_eq!(b.navigate(&callback).await.status, StatusCode::FOUND);
    }
    assert_eq!(b.navigate("/").await.status, StatusCode::OK, "the session came back: no page");
    assert_eq!(metric(&env.app, "trousseau_proxy_sign_ins_total{stage=\"loop_stopped\"}"), 0.0);
}

/// A session that worked and then ended normally — here a back-channel logout after the second
/// sign-in of the minute — sends the browser to sign in again, not to the loop page: the trail
/// is only read when the session did not come back (found by the soak: 300 browsers, 10-second
/// tokens, churn).
#[tokio::test]
async fn a_back_channel_logout_after_sign_ins_that_worked_is_no_loop() {
    for store in ["cookie", "memory"] {
        a_back_channel_logout_after_sign_ins_is_no_loop_with(store).await;
    }
}

async fn a_back_channel_logout_after_sign_ins_is_no_loop_with(store: &'static str) {
    let env = Env::start_with(EnvOptions { configure: Box::new(move |c| c.session.store = crate::support::named(store)), ..Default::default() }).await;
    let mut b = env.browser();
    for _ in 0..3 {
        assert_eq!(b.sign_in("/", JEAN).await.status, StatusCode::OK);
        let token = env.trousseau().logout_token(Some(JEAN), None);
        let answer = Browser::new(&env.origin)
            .request(http::Method::POST, "/.trousseau/backchannel-logout", &[("content-type", "application/x-www-form-urlencoded")], bytes::Bytes::from(format!("logout_token={token}")))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let next = b.navigate("/").await;
        assert_eq!(next.status, StatusCode::FOUND, "{store}: sent to sign in again: {}", next.text());
        // Sessions created in the second of the logout count as revoked: the next one is later.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    assert_eq!(metric(&env.app, "trousseau_proxy_sign_ins_total{stage=\"loop_stopped\"}"), 0.0);
}

/// A refresh Trousseau refuses after two sign-ins in a minute (the account was disabled): the
/// proxy ends the session itself and says so with a sign-in, not the loop page.
#[tokio::test]
async fn a_refused_refresh_after_sign_ins_that_worked_is_no_loop() {
    let env = Env::start_with(EnvOptions { idp: Box::new(|i| i.access_token_ttl = std::time::Duration::from_secs(1)), ..Default::default() }).await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/", JEAN).await.status, StatusCode::OK);
    b.jar.retain(|name, _| !name.starts_with("trousseau_session") || name.ends_with("_signins"));
    assert_eq!(b.sign_in("/", JEAN).await.status, StatusCode::OK, "a second sign-in within the minute");
    env.trousseau().set_user_disabled(JEAN, true);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let refused = b.navigate("/").await;
    assert_eq!(refused.status, StatusCode::FOUND, "the refused refresh sends the browser to sign in: {}", refused.text());
    let again = b.navigate("/").await;
    assert_eq!(again.status, StatusCode::FOUND, "and so does the next navigation, not the loop page: {}", again.text());
    assert_eq!(metric(&env.app, "trousseau_proxy_sign_ins_total{stage=\"loop_stopped\"}"), 0.0);
}
