//! API clients with Trousseau access tokens under attack and after a logout: made-up tokens cost
//! Trousseau nothing or a capped trickle, known tokens keep working through a flood, and a
//! back-channel logout ends bearer identities like it ends sessions.


use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use crate::support::*;

/// Bearer tokens on, and the access token forwarded so the test can read a real one.
pub(crate) fn bearer_env() -> EnvOptions {
    EnvOptions {
        configure: Box::new(|c| {
            c.api.bearer = trousseau_proxy::config::Bearer::Userinfo;
            c.identity.pass_access_token = true;
        }),
        ..Default::default()
    }
}

async fn bearer_get(origin: &str, token: &str) -> Answer {
    let auth = format!("Bearer {token}");
    Browser::new(origin).request(Method::GET, "/api/me", &[("authorization", auth.as_str()), ("accept", "application/json")], Bytes::new()).await
}

/// Signs `sub` in with a browser and returns the Trousseau access token the app received, and the
/// browser's session cookie.
pub(crate) async fn real_access_token(env: &Env, sub: &str) -> (String, String) {
    let mut b = env.browser();
    let page = b.sign_in("/", sub).await;
    let token = page.json()["headers"]["x-trousseau-access-token"][0].as_str().expect("pass_access_token").to_string();
    (token, b.jar["trousseau_session"].clone())
}

/// The Trousseau `sid` inside a session cookie.
fn sid_of(env: &Env, cookie: &str) -> String {
    use trousseau_proxy::session::cookies::*;
    let codec = SessionCodec::new(Arc::new(env.sealer()), CookieSettings::new("trousseau_session", false));
    let mut headers = http::HeaderMap::new();
    headers.insert("cookie", format!("trousseau_session={cookie}").parse().unwrap());
    codec.load(&RequestCookies::from_headers(&headers)).expect("a valid session cookie").sid.clone().expect("a sid")
}

async fn post_logout_token(env: &Env, token: &str) -> Answer {
    env.browser()
        .request(Method::POST, "/.trousseau/backchannel-logout", &[("content-type", "application/x-www-form-urlencoded")], Bytes::from(format!("logout_token={token}")))
        .await
}

fn assert_invalid_token(r: &Answer) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_token", "{}", r.text());
}

#[tokio::test]
async fn tokens_that_cannot_be_trousseaus_are_refused_without_asking_it() {
    let env = Env::start_with(bearer_env()).await;
    let before = env.trousseau().stats();
    let jws_alg_none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhdHRhY2tlciJ9.";
    let long = "A".repeat(20_000);
    for token in ["garbage", "not-a-token", "12345", "a.b", "x.y.z.w", jws_alg_none, "tok=en=with=padding=inside", "%00%01%02%03%04%05%06%07%08", &long] {
        assert_invalid_token(&bearer_get(&env.origin, token).await);
    }
    let after = env.trousseau().stats();
    assert_eq!(after.introspection_calls, before.introspection_calls, "not one introspection");
    assert_eq!(after.userinfo_calls, before.userinfo_calls, "not one userinfo call");
    assert_eq!(env.upstream.hits(), 0);

    // A real token still works, and costs one check.
    let (token, _) = real_access_token(&env, JEAN).await;
    let r = bearer_get(&env.origin, &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(env.trousseau().stats().introspection_calls, before.introspection_calls + 1);
}

#[tokio::test]
async fn a_flood_of_random_tokens_costs_trousseau_at_most_the_cap_and_known_tokens_keep_working() {
    let env = Arc::new(Env::start_with(bearer_env()).await);
    let (known, _) = real_access_token(&env, JEAN).await;
    assert_eq!(bearer_get(&env.origin, &known).await.status, StatusCode::OK);
    let before = env.trousseau().stats();
    let app_hits = env.upstream.hits();

    // 300 random tokens of the right shape (as an attacker would make them), 30 at a time, with
    // the known token's client going on meanwhile.
    let started = Instant::now();
    let (mut refused, mut throttled) = (0, 0);
    for _ in 0..10 {
        let mut tasks = Vec::new();
        for _ in 0..30 {
            let env = env.clone();
            let random = format!("{}{}", trousseau_proxy::util::id::random_id(), trousseau_proxy::util::id::random_id());
            tasks.push(tokio::spawn(async move { bearer_get(&env.origin, &random).await }));
        }
        let known_answer = bearer_get(&env.origin, &known).await;
        assert_eq!(known_answer.status, StatusCode::OK, "a known token keeps working during the flood: {}", known_answer.text());
        for task in tasks {
            let r = task.await.unwrap();
            match r.status {
                StatusCode::UNAUTHORIZED => refused += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    throttled += 1;
                    assert_eq!(r.json()["error"], "token_checks_throttled", "{}", r.text());
                    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
                    assert!((1..=2).contains(&retry), "Retry-After {retry}");
                }
                other => panic!("a random token got {other}: {}", r.text()),
            }
        }
    }
    let elapsed = started.elapsed();
    let calls = env.trousseau().stats().introspection_calls - before.introspection_calls;
    // Default cap: 10 a second, in bursts of 10.
    let cap = 10 + (elapsed.as_secs_f64() * 10.0).ceil() as u64;
    eprintln!("300 random tokens in {elapsed:?}: {calls} introspections (cap {cap}), {refused} refused, {throttled} throttled");
    assert!(calls <= cap, "{calls} introspections in {elapsed:?}, cap {cap}");
    assert_eq!(refused as u64, calls, "every token Trousseau was asked about was refused; the others were not asked");
    assert!(throttled > 0);
    assert_eq!(env.upstream.hits(), app_hits + 10, "only the known token's requests reached the app");
}

#[tokio::test]
async fn a_back_channel_logout_ends_bearer_tokens_by_sid_and_by_sub() {
    let env = Env::start_with(bearer_env()).await;

    // By sid: Jean's token from one sign-in stops working, his other sign-in's token does not.
    let (token, cookie) = real_access_token(&env, JEAN).await;
    let (other_token, _) = real_access_token(&env, JEAN).await;
    assert_eq!(bearer_get(&env.origin, &token).await.status, StatusCode::OK);
    assert_eq!(bearer_get(&env.origin, &other_token).await.status, StatusCode::OK);
    let r = post_logout_token(&env, &env.trousseau().logout_token(None, Some(&sid_of(&env, &cookie)))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Trousseau itself still calls the token active (it was only told through the logout token):
    // the proxy refuses it on its own, cached or asked again.
    assert_invalid_token(&bearer_get(&env.origin, &token).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_invalid_token(&bearer_get(&env.origin, &token).await);
    assert_eq!(bearer_get(&env.origin, &other_token).await.status, StatusCode::OK, "another session of the user lives on");

    // By sub: every token of the user from before the logout.
    let helene = trousseau_proxy::devidp::default_users().into_iter().find(|u| u.organizations.len() == 1 && !u.denied).unwrap().sub;
    let (hers, _) = real_access_token(&env, &helene).await;
    let r = post_logout_token(&env, &env.trousseau().logout_token(Some(JEAN), None)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_invalid_token(&bearer_get(&env.origin, &other_token).await);
    assert_eq!(bearer_get(&env.origin, &hers).await.status, StatusCode::OK, "other users live on");
    // A sign-in after the logout (a later second) brings a token that works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (fresh, _) = real_access_token(&env, JEAN).await;
    assert_eq!(bearer_get(&env.origin, &fresh).await.status, StatusCode::OK);
}
