//! The session's life after sign-in: transparent refresh under concurrency and rotation, the end of
//! a grant, Trousseau outages, logout, and back-channel logout.


use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use crate::support::*;
use trousseau_proxy::identity::Organization;

/// The demo user with exactly one organization (auto-selected after sign-in).
fn helene() -> String {
    trousseau_proxy::devidp::default_users().into_iter().find(|u| u.organizations.len() == 1 && !u.denied).unwrap().sub
}

/// Access tokens that expire as they are issued: every request is due for a refresh, so refresh
/// behaviour is tested without waiting. (A token of a few seconds would not do: the refresh skew is
/// capped at half the token's life.)
fn short_tokens() -> EnvOptions {
    EnvOptions {
        configure: Box::new(|c| c.session.refresh_skew = trousseau_proxy::config::HumanDuration(Duration::from_secs(30))),
        idp: Box::new(|i| {
            i.access_token_ttl = Duration::ZERO;
            i.id_token_ttl = Duration::from_secs(10);
        }),
    }
}

#[tokio::test]
async fn refresh_is_transparent_and_brings_claim_changes() {
    let env = Env::start_with(short_tokens()).await;
    let mut b = env.browser();
    b.sign_in("/", &helene()).await; // Hélène, one hotel: auto-selected
    let before = b.jar["trousseau_session"].clone();
    let refreshes = env.trousseau().stats().refresh_grants_ok;
    let first = b.api_get("/x").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(env.trousseau().stats().refresh_grants_ok, refreshes + 1);
    assert_ne!(b.jar["trousseau_session"], before, "the refreshed session is set on the response");
    assert_eq!(first.json()["headers"]["x-trousseau-org-role"][0], "hr");

    // Trousseau changes her role: the next refresh shows it.
    let orgs = vec![Organization {
        id: first.json()["headers"]["x-trousseau-org-id"][0].as_str().unwrap().to_string(),
        name: "Hôtel des Alpes".into(),
        slug: first.json()["headers"]["x-trousseau-org-slug"][0].as_str().unwrap().to_string(),
        role: "admin".into(),
    }];
    env.trousseau().set_user_organizations(&helene(), orgs);
    let second = b.api_get("/x").await;
    assert_eq!(second.json()["headers"]["x-trousseau-org-role"][0], "admin");
    assert_eq!(second.json()["headers"]["x-trousseau-org-name"][0], "H%C3%B4tel des Alpes");
    assert_eq!(env.trousseau().stats().refresh_reuse_detected, 0);
}

#[tokio::test]
async fn concurrent_requests_share_one_refresh() {
    let env = Arc::new(Env::start_with(short_tokens()).await);
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let old_cookie = b.cookie_header();
    let base = env.trousseau().stats().refresh_grants_ok;
    env.trousseau().set_token_endpoint_delay(Duration::from_millis(300));

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let mut client = env.browser();
        let cookie = old_cookie.clone();
        tasks.push(tokio::spawn(async move {
            client.request(Method::GET, "/api", &[("cookie", cookie.as_str()), ("accept", "application/json")], Bytes::new()).await
        }));
    }
    let mut refreshed_cookies = std::collections::HashSet::new();
    for t in tasks {
        let answer = t.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(answer.json()["headers"]["x-trousseau-sub"][0], JEAN);
        refreshed_cookies.extend(answer.set_cookies());
    }
    let stats = env.trousseau().stats();
    assert_eq!(stats.refresh_grants_ok, base + 1, "exactly one refresh for 50 concurrent requests");
    assert_eq!(stats.refresh_reuse_detected, 0);
    let refresh_tokens: std::collections::HashSet<String> = refreshed_cookies
        .iter()
        .map(|sc| open_session(&env, sc.split(';').next().unwrap()).refresh_token.expect("a refresh token"))
        .collect();
    assert_eq!(refresh_tokens.len(), 1, "every request got the same refreshed session");

    // A slow tab still carrying the old cookie a moment later: served from the remembered result,
    // never replaying the rotated refresh token (which Trousseau would treat as theft).
    let mut slow_tab = env.browser();
    let late = slow_tab.request(Method::GET, "/api", &[("cookie", old_cookie.as_str()), ("accept", "application/json")], Bytes::new()).await;
    assert_eq!(late.status, StatusCode::OK);
    let stats = env.trousseau().stats();
    assert_eq!(stats.refresh_grants_ok, base + 1);
    assert_eq!(stats.refresh_reuse_detected, 0);

    // The session lives on with the new cookie.
    env.trousseau().set_token_endpoint_delay(Duration::ZERO);
    let new_cookie = refreshed_cookies.into_iter().next().unwrap();
    let new_cookie = new_cookie.split(';').next().unwrap().to_string();
    let next = slow_tab.request(Method::GET, "/api", &[("cookie", new_cookie.as_str()), ("accept", "application/json")], Bytes::new()).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(env.trousseau().stats().refresh_grants_ok, base + 2);
    assert_eq!(env.trousseau().stats().refresh_reuse_detected, 0);
}

#[tokio::test]
async fn a_disabled_user_is_signed_out_at_the_next_refresh() {
    let env = Env::start_with(short_tokens()).await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    env.trousseau().set_user_disabled(JEAN, true);
    let mut api = b.clone();
    let r = api.api_get("/x").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!api.jar.contains_key("trousseau_session"), "the dead session's cookie is cleared");
    let nav = b.navigate("/x?y=1").await;
    assert_eq!(nav.status, StatusCode::FOUND);
    assert!(nav.location().contains("/application/o/authorize/"), "{}", nav.location());
    // The return URL is kept for after the new sign-in.
    env.trousseau().set_user_disabled(JEAN, false);
    let cb = b.sign_in_at_idp(&nav.location(), JEAN).await;
    assert_eq!(cb.location(), format!("{}/x?y=1", env.origin));
}

#[tokio::test]
async fn trousseau_outage_serves_within_grace_then_503() {
    // Within the grace period: the last known identity keeps working.
    let env = Env::start_with(short_tokens()).await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    env.trousseau().set_unavailable(true);
    for _ in 0..3 {
        let r = b.api_get("/x").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["headers"]["x-trousseau-sub"][0], JEAN);
    }
    env.trousseau().set_unavailable(false);

    // Past the grace period: 503 with Retry-After, and the session is kept for later.
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.session.refresh_skew = trousseau_proxy::config::HumanDuration(Duration::from_secs(0));
            c.session.refresh_grace = trousseau_proxy::config::HumanDuration(Duration::from_secs(0));
        }),
        // The access token alone makes the session due (an ID token of a second can expire before
        // a sign-in on a loaded machine reaches the callback).
        idp: Box::new(|i| {
            i.access_token_ttl = Duration::from_secs(1);
            i.id_token_ttl = Duration::from_secs(60);
        }),
    })
    .await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    env.trousseau().set_unavailable(true);
    tokio::time::sleep(Duration::from_millis(2100)).await; // let the 1 s access token expire
    let api = b.api_get("/x").await;
    assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(api.headers.contains_key("retry-after"));
    let page = b.navigate("/x").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(b.jar.contains_key("trousseau_session"), "an outage does not sign anyone out");
    env.trousseau().set_unavailable(false);
    // Trousseau is back (after the backoff): the session refreshes and works again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(b.api_get("/x").await.status, StatusCode::OK);
}

#[tokio::test]
async fn logout_clears_cookies_and_ends_the_trousseau_session() {
    let env = Env::start().await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let stolen_copy = b.jar.clone();
    let out = b.request(Method::POST, "/.trousseau/logout", &[("accept", "text/html")], Bytes::new()).await;
    assert_eq!(out.status, StatusCode::FOUND);
    assert!(!b.jar.contains_key("trousseau_session"));
    let end = url::Url::parse(&out.location()).unwrap();
    assert!(end.path().ends_with("/application/o/app/end-session/"), "{end}");
    let q: std::collections::HashMap<_, _> = end.query_pairs().into_owned().collect();
    // Jean's ID token does not fit the cookie budget with the rest of the session: the sign-out
    // names the client instead (a server-side store keeps it: see memory_store_… below).
    assert!(!q.contains_key("id_token_hint"));
    assert_eq!(q["client_id"], env.file.oidc.client_id.clone().unwrap());
    assert_eq!(q["post_logout_redirect_uri"], format!("{}/", env.origin));
    assert!(!q["state"].is_empty());

    // Trousseau ends its session, tells us over the back channel, and sends the browser home.
    let back = b.navigate(out.location().as_str()).await;
    assert_eq!(back.status, StatusCode::FOUND, "{}", back.text());
    assert!(back.location().starts_with(&format!("{}/", env.origin)));
    assert_eq!(env.trousseau().stats().backchannel_sent, 1);
    // Even a copy of the old cookie is no session any more.
    let mut thief = env.browser();
    thief.jar = stolen_copy;
    assert_eq!(thief.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
}

async fn post_logout_token(env: &Env, token: &str) -> Answer {
    let body = format!("logout_token={token}");
    env.browser()
        .request(Method::POST, "/.trousseau/backchannel-logout", &[("content-type", "application/x-www-form-urlencoded")], Bytes::from(body))
        .await
}

#[tokio::test]
async fn backchannel_logout_by_sub_ends_every_session_of_the_user() {
    let env = Env::start().await;
    let mut laptop = env.browser();
    laptop.sign_in("/", JEAN).await;
    let mut phone = env.browser();
    phone.sign_in("/", JEAN).await;
    let mut other_user = env.browser();
    other_user.sign_in("/", &helene()).await;

    let token = env.trousseau().logout_token(Some(JEAN), None);
    let r = post_logout_token(&env, &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(laptop.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(phone.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(other_user.api_get("/x").await.status, StatusCode::OK);
    // The same token again is a replay.
    assert_eq!(post_logout_token(&env, &token).await.status, StatusCode::BAD_REQUEST);
    // Signing in again afterwards works.
    let mut again = env.browser();
    assert_eq!(again.sign_in("/", JEAN).await.status, StatusCode::OK);
}

#[tokio::test]
async fn forged_logout_tokens_are_refused() {
    let env = Env::start().await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let idp = env.trousseau();
    let good = jws_parts(&idp.logout_token(Some(JEAN), None)).1;
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut c = good.clone();
        c["jti"] = serde_json::json!(format!("jti-{}", rand_suffix()));
        edit(&mut c);
        c
    };
    // Another IdP's key (same claims) does not verify.
    let impostor = trousseau_proxy::devidp::DevIdp::new(trousseau_proxy::devidp::DevIdpConfig::default()).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("wrong key", impostor.sign_jwt(&with(&|_| {}), "logout+jwt")),
        ("missing events", idp.sign_jwt(&with(&|c| { c.as_object_mut().unwrap().remove("events"); }), "logout+jwt")),
        ("nonce present", idp.sign_jwt(&with(&|c| c["nonce"] = "n".into()), "logout+jwt")),
        ("wrong aud", idp.sign_jwt(&with(&|c| c["aud"] = "someone-else".into()), "logout+jwt")),
        ("wrong iss", idp.sign_jwt(&with(&|c| c["iss"] = "https://evil.example/application/o/app/".into()), "logout+jwt")),
        ("old iat", idp.sign_jwt(&with(&|c| c["iat"] = (c["iat"].as_u64().unwrap() - 3600).into()), "logout+jwt")),
        ("no sid nor sub", idp.sign_jwt(&with(&|c| { let o = c.as_object_mut().unwrap(); o.remove("sub"); o.remove("sid"); }), "logout+jwt")),
        ("no jti", idp.sign_jwt(&with(&|c| { c.as_object_mut().unwrap().remove("jti"); }), "logout+jwt")),
        // RFC 7515 §4.1.11: a `crit` extension we do not understand makes the token invalid.
        (
            "crit header",
            idp.sign_jwt_with_header(&serde_json::json!({"alg": "RS256", "kid": idp.key_id(), "typ": "logout+jwt", "crit": ["exp"]}), &with(&|_| {})),
        ),
        ("alg none", format!("eyJhbGciOiJub25lIn0.{}.", base64_url(&serde_json::to_vec(&with(&|_| {})).unwrap()))),
        ("garbage", "not.a.token".into()),
    ];
    for (what, token) in cases {
        let r = post_logout_token(&env, &token).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what} was accepted");
    }
    // Two logout_token parameters are refused too.
    let valid = idp.logout_token(Some(JEAN), None);
    let r = env
        .browser()
        .request(Method::POST, "/.trousseau/backchannel-logout", &[("content-type", "application/x-www-form-urlencoded")], Bytes::from(format!("logout_token={valid}&logout_token={valid}")))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // None of that ended the session.
    assert_eq!(b.api_get("/x").await.status, StatusCode::OK);
    // Authentik-style tokens (typ JWT, no exp) are accepted.
    let mut authentik = good.clone();
    authentik.as_object_mut().unwrap().remove("exp");
    authentik["jti"] = "authentik-style".into();
    assert_eq!(post_logout_token(&env, &idp.sign_jwt(&authentik, "JWT")).await.status, StatusCode::OK);
    assert_eq!(b.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
}

/// Opens a `name=value` session cookie with the test secret.
fn open_session(env: &Env, cookie: &str) -> trousseau_proxy::session::Session {
    use trousseau_proxy::session::cookies::*;
    let codec = SessionCodec::new(Arc::new(env.sealer()), CookieSettings::new("trousseau_session", false));
    let mut headers = http::HeaderMap::new();
    headers.insert("cookie", cookie.parse().unwrap());
    trousseau_proxy::session::Session::clone(&codec.load(&RequestCookies::from_headers(&headers)).expect("a valid session cookie"))
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A demo user with many organizations (big claims).
fn big_user(n: usize) -> trousseau_proxy::devidp::DevUser {
    let mut u = trousseau_proxy::devidp::default_users().into_iter().find(|u| u.sub == JEAN).unwrap();
    u.sub = "0b9e6f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into();
    u.email = "group.admin@hotel-group.example".into();
    u.organizations = (0..n)
        .map(|i| Organization {
            id: format!("018cc251-f400-78cc-8e0c-{i:012}"),
            name: format!("Hôtel numéro {i} du groupe"),
            slug: format!("hotel-{i}"),
            role: "admin".into(),
        })
        .collect();
    u
}

#[tokio::test]
async fn big_sessions_set_their_organizations_aside_and_still_work() {
    let user = big_user(20);
    let sub = user.sub.clone();
    let env = Env::start_with(EnvOptions { idp: Box::new(move |i| i.users.push(user)), ..Default::default() }).await;
    let mut b = env.browser();
    let page = b.sign_in("/", &sub).await;
    assert_eq!(page.status, StatusCode::OK);
    let chunks: Vec<_> = b.jar.keys().filter(|k| k.starts_with("trousseau_session") && !k.ends_with("_signins")).cloned().collect();
    assert_eq!(chunks, ["trousseau_session"], "20 organizations are set aside: one cookie");
    assert!(b.jar["trousseau_session"].len() <= trousseau_proxy::session::sessions::COOKIE_BUDGET, "within the budget");
    let listed = b.api_get("/.trousseau/organizations").await.json();
    assert_eq!(listed["organizations"].as_array().map(Vec::len), Some(20), "every organization is still there");
    let echo = b.api_get("/x").await.json();
    assert_eq!(echo["headers"]["x-trousseau-sub"][0], sub.as_str());
    assert!(!echo["headers"]["cookie"].to_string().contains("trousseau_session"));
    // Over the cookie budget: the ID token is not kept, so sign-out uses client_id.
    let out = b.request(Method::POST, "/.trousseau/logout", &[], Bytes::new()).await;
    let q: std::collections::HashMap<_, _> = url::Url::parse(&out.location()).unwrap().query_pairs().into_owned().collect();
    assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID));
    assert!(!q.contains_key("id_token_hint"));
    assert!(!b.jar.keys().any(|k| k.starts_with("trousseau_session")), "every chunk is cleared");
}

#[tokio::test]
async fn memory_store_keeps_the_cookie_small_and_logout_final() {
    let user = big_user(40);
    let sub = user.sub.clone();
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| c.session.store = trousseau_proxy::config::StoreKind::Memory),
        idp: Box::new(move |i| i.users.push(user)),
    })
    .await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/", &sub).await.status, StatusCode::OK);
    let cookie = b.jar["trousseau_session"].clone();
    assert!(cookie.len() < 200, "the cookie carries only a sealed handle ({} bytes)", cookie.len());
    assert_eq!(b.jar.keys().filter(|k| k.starts_with("trousseau_session") && !k.ends_with("_signins")).count(), 1);
    let echo = b.api_get("/x").await.json();
    assert_eq!(echo["headers"]["x-trousseau-sub"][0], sub.as_str());
    // The ID token fits server-side: sign-out sends the hint.
    let copy = b.jar.clone();
    let out = b.request(Method::POST, "/.trousseau/logout", &[], Bytes::new()).await;
    assert!(out.location().contains("id_token_hint="));
    // The record is gone: a copy of the cookie is no session.
    let mut thief = env.browser();
    thief.jar = copy;
    assert_eq!(thief.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn memory_store_refresh_is_seen_by_every_tab_at_once() {
    let env = Arc::new(
        Env::start_with(EnvOptions {
            configure: Box::new(|c| {
                c.session.store = trousseau_proxy::config::StoreKind::Memory;
                c.session.refresh_skew = trousseau_proxy::config::HumanDuration(Duration::from_secs(30));
            }),
            idp: Box::new(|i| {
                i.access_token_ttl = Duration::ZERO;
                i.id_token_ttl = Duration::from_secs(10);
            }),
        })
        .await,
    );
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let cookie = b.cookie_header();
    let base = env.trousseau().stats().refresh_grants_ok;
    env.trousseau().set_token_endpoint_delay(Duration::from_millis(200));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut c = env.browser();
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            c.request(Method::GET, "/api", &[("cookie", cookie.as_str()), ("accept", "application/json")], Bytes::new()).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(env.trousseau().stats().refresh_grants_ok, base + 1);
    assert_eq!(env.trousseau().stats().refresh_reuse_detected, 0);
}

/// POSTs every token at once; returns the statuses.
async fn post_logout_tokens_at_once(env: &Env, tokens: Vec<String>) -> Vec<StatusCode> {
    let posts = tokens.iter().map(|t| post_logout_token(env, t));
    futures_util::future::join_all(posts).await.into_iter().map(|a| a.status).collect()
}

#[tokio::test]
async fn forged_logout_tokens_with_made_up_key_ids_cost_trousseau_one_key_fetch_per_interval() {
    let interval = Duration::from_secs(2);
    let env = Env::start_with(EnvOptions {
        configure: Box::new(move |c| c.oidc.jwks_refetch_interval = trousseau_proxy::config::HumanDuration(interval)),
        ..Default::default()
    })
    .await;
    let idp = env.trousseau().clone();
    let claims = jws_parts(&idp.logout_token(Some(JEAN), None)).1;
    let forged = |n: usize| {
        let mut c = claims.clone();
        c["jti"] = serde_json::json!(format!("forged-{n}-{}", rand_suffix()));
        idp.sign_jwt_with_header(&serde_json::json!({"alg": "RS256", "kid": format!("made-up-{n}"), "typ": "logout+jwt"}), &c)
    };
    // The key set loaded at discovery is older than the interval from here on.
    tokio::time::sleep(interval + Duration::from_millis(100)).await;

    // Trousseau is down: the first forged token costs one fetch attempt, which fails; every later
    // one within the interval shares that failure instead of trying again.
    idp.set_unavailable(true);
    let before = idp.stats().jwks_calls;
    for n in 0..10 {
        assert_eq!(post_logout_token(&env, &forged(n)).await.status, StatusCode::BAD_REQUEST);
    }
    let statuses = post_logout_tokens_at_once(&env, (10..30).map(forged).collect()).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::BAD_REQUEST), "{statuses:?}");
    assert_eq!(idp.stats().jwks_calls - before, 1, "one key fetch attempt while Trousseau is down");

    // Trousseau is back and the interval has passed: a burst of forged tokens shares one fetch.
    idp.set_unavailable(false);
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let before = idp.stats().jwks_calls;
    let statuses = post_logout_tokens_at_once(&env, (30..60).map(forged).collect()).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::BAD_REQUEST), "{statuses:?}");
    assert_eq!(idp.stats().jwks_calls - before, 1, "concurrent unknown key ids share one fetch");

    // Genuine logouts (and sign-ins) are unaffected.
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    assert_eq!(post_logout_token(&env, &idp.logout_token(Some(JEAN), None)).await.status, StatusCode::OK);
    assert_eq!(b.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
}
