//! Sessions under attack (issue 14): what is sealed belongs to one application, sign-out is final
//! for copied cookies, one account cannot fill the memory store, and short-lived access tokens are
//! not refreshed on every request. The Redis variants are in `tests/it/redis.rs`.


use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use crate::support::*;
use trousseau_proxy::config::HumanDuration;

/// Sam Taylor, a second demo user.
const SAM: &str = "7b1e9c4d-2f38-4a6b-8e5d-c0a9f1e2d3b4";

fn configured(configure: impl FnOnce(&mut trousseau_proxy::config::FileConfig) + Send + 'static) -> EnvOptions {
    EnvOptions { configure: Box::new(configure), ..Default::default() }
}

/// A browser at `env` carrying `other`'s cookies (the same cookie names: both proxies use the
/// default `trousseau_session` on http).
fn with_cookies_of(env: &Env, other: &Browser) -> Browser {
    let mut b = env.browser();
    b.jar = other.jar.clone();
    b
}

async fn forward_auth(b: &mut Browser) -> Answer {
    b.request(Method::GET, "/.trousseau/auth", &[("accept", "application/json"), ("x-forwarded-uri", "/x")], Bytes::new()).await
}

#[tokio::test]
async fn a_cookie_sealed_for_another_application_with_the_same_secret_is_no_session() {
    // Two applications, each with its own Trousseau client and public URL, configured (by
    // mistake) with the same session secret.
    let app_a = Env::start().await;
    let app_b = Env::start().await;
    assert_eq!(app_a.file.session.secrets, app_b.file.session.secrets);
    let mut at_a = app_a.browser();
    assert_eq!(at_a.sign_in("/", JEAN).await.json()["headers"]["x-trousseau-sub"][0], JEAN);
    let hits = app_b.upstream.hits();

    // At B, A's cookie is nobody: no identity, no assertion, and B's app never hears of it.
    let mut at_b = with_cookies_of(&app_b, &at_a);
    assert_eq!(at_b.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
    let auth = forward_auth(&mut at_b).await;
    assert_eq!(auth.status, StatusCode::UNAUTHORIZED, "{}", auth.text());
    assert!(!auth.headers.contains_key("x-trousseau-jwt-assertion"), "B signs no assertion for A's user");
    let nav = with_cookies_of(&app_b, &at_a).navigate("/x").await;
    assert_eq!(nav.status, StatusCode::FOUND);
    assert!(nav.location().starts_with(&app_b.idp.issuer()[..app_b.idp.issuer().find("/application").unwrap()]), "sent to sign in at B's Trousseau: {}", nav.location());
    assert_eq!(app_b.upstream.hits(), hits, "B's app saw no request with A's session");
    assert_eq!(at_a.api_get("/x").await.status, StatusCode::OK, "the cookie still works where it belongs");

    // A sign-in attempt started at A cannot be finished at B: B does not open A's login state.
    let mut browser = app_a.browser();
    let start = browser.navigate("/x").await;
    let page = browser.navigate(&start.location()).await;
    let form = Form::find(&page.text(), "user", JEAN).expect("sign-in form");
    let mut fields = form.fields.clone();
    fields.push(("user".into(), JEAN.into()));
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let to_callback = browser
        .request(Method::POST, &absolute(&start.location(), &form.action), &[("content-type", "application/x-www-form-urlencoded"), ("accept", "text/html")], Bytes::from(body))
        .await
        .location();
    let query = url::Url::parse(&to_callback).unwrap().query().unwrap().to_string();
    let grants = app_b.trousseau().stats().code_grants;
    let at_b_callback = with_cookies_of(&app_b, &browser).navigate(&format!("/.trousseau/callback?{query}")).await;
    assert_eq!(at_b_callback.status, StatusCode::BAD_REQUEST, "B treats A's login state as none: {}", at_b_callback.text());
    assert_eq!(app_b.trousseau().stats().code_grants, grants);
    assert!(!at_b_callback.set_cookies().iter().any(|c| c.starts_with("trousseau_session=")), "no session at B");
    // The same callback at A signs in.
    let at_a_callback = browser.navigate(&to_callback).await;
    assert_eq!(at_a_callback.status, StatusCode::FOUND, "{}", at_a_callback.text());
}

#[tokio::test]
async fn a_copied_cookie_is_dead_after_logout_and_cannot_refresh() {
    // Cookie sessions (the default), access tokens that are always due for a refresh: a copy of the
    // cookie, used after the sign-out, would otherwise refresh and live on for 30 days.
    let env = Env::start_with(EnvOptions {
        idp: Box::new(|i| i.access_token_ttl = Duration::ZERO),
        ..Default::default()
    })
    .await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    assert_eq!(b.api_get("/x").await.status, StatusCode::OK);
    // Copied now, with the current (not yet rotated) refresh token.
    let copy = b.clone();
    let refreshes = env.trousseau().stats().refresh_grants_ok;

    let out = b.request(Method::POST, "/.trousseau/logout", &[("accept", "text/html")], Bytes::new()).await;
    assert_eq!(out.status, StatusCode::FOUND);
    assert!(!b.jar.contains_key("trousseau_session"));

    for _ in 0..3 {
        let mut thief = copy.clone();
        let r = thief.api_get("/x").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a copy of the cookie after sign-out: {}", r.text());
        assert_eq!(forward_auth(&mut thief).await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(thief.api_get("/.trousseau/userinfo").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(env.trousseau().stats().refresh_grants_ok, refreshes, "the copy never refreshed");
    // Other sessions of the same user are not affected; a new sign-in works.
    let mut again = env.browser();
    assert_eq!(again.sign_in("/", JEAN).await.status, StatusCode::OK);
    assert_eq!(again.api_get("/x").await.status, StatusCode::OK);
}

#[tokio::test]
async fn one_account_signing_in_again_and_again_keeps_at_most_the_cap() {
    let env = Env::start_with(configured(|c| {
        c.session.store = trousseau_proxy::config::StoreKind::Memory;
        c.session.max_sessions_per_user = 3;
    }))
    .await;
    let mut browsers = Vec::new();
    for _ in 0..5 {
        let mut b = env.browser();
        assert_eq!(b.sign_in("/", JEAN).await.status, StatusCode::OK);
        browsers.push(b);
    }
    let mut sam = env.browser();
    sam.sign_in("/", SAM).await;
    for (i, b) in browsers.iter_mut().enumerate() {
        let want = if i < 2 { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
        assert_eq!(b.api_get("/x").await.status, want, "Jean's sign-in #{i}: the two oldest ended");
    }
    assert_eq!(sam.api_get("/x").await.status, StatusCode::OK, "another user is not affected");
    // A refresh or an organization choice is not a new session: it ends nobody.
    let mut newest = browsers.pop().unwrap();
    let org = jean_first_org(&mut newest).await;
    let r = newest
        .request(
            Method::POST,
            "/.trousseau/organizations",
            &[("content-type", "application/x-www-form-urlencoded"), ("sec-fetch-site", "same-origin")],
            Bytes::from(format!("org={org}&rd=/")),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    for b in browsers.iter_mut().skip(2) {
        assert_eq!(b.api_get("/x").await.status, StatusCode::OK);
    }
    assert_eq!(newest.api_get("/x").await.status, StatusCode::OK);
}

async fn jean_first_org(b: &mut Browser) -> String {
    let orgs = b.api_get("/.trousseau/organizations").await.json();
    orgs["organizations"][0]["id"].as_str().expect("Jean has organizations").to_string()
}

#[tokio::test]
async fn the_memory_store_is_bounded_by_bytes_and_ends_the_least_recently_used_sessions() {
    // 1 MiB for ~10 KB sessions (40 organizations each): about a hundred fit.
    let user = big_user(40);
    let sub = user.sub.clone();
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.session.store = trousseau_proxy::config::StoreKind::Memory;
            c.session.memory_store_max_mib = 1;
            c.session.max_sessions_per_user = 1000;
        }),
        idp: Box::new(move |i| i.users.push(user)),
    })
    .await;
    let mut browsers = Vec::new();
    for _ in 0..200 {
        let mut b = env.browser();
        assert_eq!(b.sign_in("/", &sub).await.status, StatusCode::OK);
        browsers.push(b);
    }
    let mut alive = 0;
    for b in browsers.iter_mut() {
        if b.api_get("/x").await.status == StatusCode::OK {
            alive += 1;
        }
    }
    eprintln!("{alive} of 200 sessions of ~10 KB live in a 1 MiB memory store");
    assert!(alive < 150, "the store holds about 1 MiB of sessions, not all 200: {alive} alive");
    assert!(alive >= 40, "the bound is used: {alive} alive");
    assert_eq!(browsers[0].api_get("/x").await.status, StatusCode::UNAUTHORIZED, "the least recently used ended first");
    assert_eq!(browsers[199].api_get("/x").await.status, StatusCode::OK, "the newest lives");
}

/// A demo user with many organizations (big claims).
fn big_user(n: usize) -> trousseau_proxy::devidp::DevUser {
    let mut u = trousseau_proxy::devidp::default_users().into_iter().find(|u| u.sub == JEAN).unwrap();
    u.sub = "0b9e6f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into();
    u.email = "group.admin@hotel-group.example".into();
    u.organizations = (0..n)
        .map(|i| trousseau_proxy::identity::Organization {
            id: format!("018cc251-f400-78cc-8e0c-{i:012}"),
            name: format!("Hôtel numéro {i} du groupe"),
            slug: format!("hotel-{i}"),
            role: "admin".into(),
        })
        .collect();
    u
}

#[tokio::test]
async fn access_tokens_shorter_than_the_skew_are_refreshed_at_half_life_not_on_every_request() {
    // Trousseau issues 8 s access tokens; session.refresh_skew stays at its default (30 s). The
    // refresh is due at most half a token's life before expiry: 4 s after it was issued.
    let env = Env::start_with(EnvOptions {
        idp: Box::new(|i| i.access_token_ttl = Duration::from_secs(8)),
        ..Default::default()
    })
    .await;
    assert_eq!(env.file.session.refresh_skew, HumanDuration(Duration::from_secs(30)));
    let mut b = env.browser();
    let before_sign_in = Instant::now();
    b.sign_in("/", JEAN).await;
    let base = env.trousseau().stats().refresh_grants_ok;

    // 20 requests in 2 s: none is due.
    for _ in 0..20 {
        assert_eq!(b.api_get("/x").await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.trousseau().stats().refresh_grants_ok, base, "no refresh in the first half of the token's life");

    // Past half its life, the next requests share exactly one refresh, and the new token is fresh.
    tokio::time::sleep((before_sign_in + Duration::from_millis(4200)).saturating_duration_since(Instant::now())).await;
    for _ in 0..10 {
        assert_eq!(b.api_get("/x").await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = env.trousseau().stats();
    assert_eq!(stats.refresh_grants_ok, base + 1, "one refresh at half-life");
    assert_eq!(stats.refresh_reuse_detected, 0);
}

/// A user whose claims cannot fit the session cookie even with the organizations set aside (a
/// display name of 3,000 characters: the organizations are not the problem here) gets a page that
/// says so and names the fix — no loop, no half-written cookie — and the same user signs in with
/// `session.store: memory`.
#[tokio::test]
async fn a_session_too_large_for_cookies_gets_a_page_and_fits_a_server_side_store() {
    let mut user = trousseau_proxy::devidp::default_users().into_iter().find(|u| u.sub == JEAN).unwrap();
    user.sub = "5e0c9b1a-7d2f-4c3e-9a8b-1f2e3d4c5b6a".into();
    user.email = "long.name@hotel-group.example".into();
    user.name = "Jean-Baptiste ".repeat(220);
    let sub = user.sub.clone();
    for store in ["cookie", "memory"] {
        let user = user.clone();
        let env = Env::start_with(EnvOptions {
            configure: Box::new(move |c| c.session.store = crate::support::named(store)),
            idp: Box::new(move |i| i.users.push(user)),
        })
        .await;
        let mut b = env.browser();
        let callback = b.sign_in_to_callback("/", &sub).await;
        if store == "cookie" {
            assert_eq!(callback.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", callback.text());
            assert!(callback.text().contains("Your session is too large") && callback.text().contains("session.store"), "{}", callback.text());
            assert!(!b.jar.keys().any(|k| k.starts_with("trousseau_session") && !k.contains("_login_")), "no session cookie, no trail: {:?}", b.jar.keys());
        } else {
            assert_eq!(callback.status, StatusCode::FOUND, "{}", callback.text());
            let page = b.follow(callback).await;
            assert_eq!(page.status, StatusCode::OK);
        }
    }
}
