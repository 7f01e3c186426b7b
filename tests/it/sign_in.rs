//! Signing in through Trousseau and reaching the app with a verified identity.


use http::StatusCode;
use crate::support::*;

#[tokio::test]
async fn signed_in_user_reaches_the_app_with_verified_identity() {
    let env = Env::start().await;
    let mut browser = env.browser();
    let answer = browser.sign_in("/reports?month=11", JEAN).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let echo = answer.json();
    assert_eq!(echo["path"], "/reports");
    assert_eq!(echo["query"], "month=11");
    let h = &echo["headers"];
    assert_eq!(h["x-trousseau-sub"][0], JEAN);
    assert_eq!(h["x-trousseau-email"][0], "jean.dupont@hotel.com");
    assert_eq!(h["x-trousseau-name"][0], "Jean Dupont");
    assert_eq!(h["x-trousseau-locale"][0], "fr-FR");
    assert!(h["cookie"].is_null() || !h["cookie"][0].as_str().unwrap().contains("trousseau_session"));

    let jws = h["x-trousseau-jwt-assertion"][0].as_str().expect("assertion header");
    let verifier = trousseau_proxy::dev::JwksVerifier::new(format!("{}/.trousseau/jwks.json", env.origin));
    let (header, claims) = verifier.verify(jws).await.expect("assertion verifies against our JWKS");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["iss"], env.origin.as_str());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["sub"], JEAN);
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["organizations"].as_array().map(Vec::len), Some(2));
    assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());
    // Jean has two hotels and nothing requires choosing: no organization is selected yet.
    assert!(claims.get("org").is_none());
}

#[tokio::test]
async fn api_clients_get_401_json_and_browsers_a_redirect_to_trousseau() {
    let env = Env::start().await;
    let mut browser = env.browser();
    let api = browser.api_get("/api/orders").await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.json()["error"], "unauthenticated");
    assert!(api.json()["login_url"].as_str().unwrap().starts_with("/.trousseau/login?rd=/api/orders"));
    assert!(api.set_cookies().is_empty(), "an API 401 must not start a sign-in (no state cookie pile-up)");

    let post = browser.request(http::Method::POST, "/form", &[("accept", "text/html")], bytes::Bytes::new()).await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);

    let xhr = browser.request(http::Method::GET, "/x", &[("accept", "text/html"), ("x-requested-with", "XMLHttpRequest")], bytes::Bytes::new()).await;
    assert_eq!(xhr.status, StatusCode::UNAUTHORIZED);

    let nav = browser.navigate("/dashboard").await;
    assert_eq!(nav.status, StatusCode::FOUND);
    let location = url::Url::parse(&nav.location()).unwrap();
    assert!(location.as_str().starts_with(&format!("http://{}/application/o/authorize/", env.idp.addr())));
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], format!("{}/.trousseau/callback", env.origin));
    assert!(q["scope"].split(' ').any(|s| s == "trousseau:organization"));
    assert!(q.contains_key("state") && q.contains_key("nonce"));
    assert_eq!(env.upstream.hits(), 0, "nothing reached the app without a session");
}

#[tokio::test]
async fn access_denied_at_trousseau_is_a_403_page_not_a_loop() {
    let env = Env::start().await;
    let mut browser = env.browser();
    let denied = trousseau_proxy::devidp::default_users().into_iter().find(|u| u.denied).expect("a denied demo user");
    let callback = browser.sign_in_to_callback("/", &denied.sub).await;
    assert_eq!(callback.status, StatusCode::FORBIDDEN);
    assert!(callback.headers.get("location").is_none());
    let text = callback.text();
    assert!(text.contains("Access denied") || text.contains("Accès refusé"), "{text}");
    assert!(text.contains("access_denied"));
    assert!(!browser.jar.keys().any(|k| k.contains("login_")), "the attempt's state cookie is cleared");
}

#[tokio::test]
async fn a_callback_with_a_foreign_state_is_refused() {
    let env = Env::start().await;
    let mut browser = env.browser();
    let start = browser.navigate("/").await;
    let authorize = url::Url::parse(&start.location()).unwrap();
    let real_state: String = authorize.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    // An attacker's callback URL (their own code and state) must not sign this browser in.
    let forged = browser.navigate(&format!("/.trousseau/callback?code=attacker-code&state=x{real_state}")).await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    assert!(!browser.jar.keys().any(|k| k == "trousseau_session"));
    // And a callback without any sign-in attempt in this browser neither.
    let mut other = env.browser();
    let replay = other.navigate(&format!("/.trousseau/callback?code=x&state={real_state}")).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    // With no sign-in cookie at all, the page explains how a sign-in cookie gets lost.
    assert!(replay.text().contains("sign_in_cookie_lost"), "{}", replay.text());
    assert!(!other.jar.keys().any(|k| k == "trousseau_session"));
}

/// A state cookie that opens but claims to start at the end of time (found by the `state_cookie`
/// fuzz target: the expiry check overflowed, a panic in debug builds) is an expired sign-in, not a
/// crash and not a valid one.
#[tokio::test]
async fn a_state_cookie_from_the_far_future_is_an_expired_sign_in() {
    let env = Env::start().await;
    let sealer = env.sealer();
    for started_at in [u64::MAX, u64::MAX - 599, trousseau_proxy::util::clock::now_secs() + 3600] {
        let login = trousseau_proxy::oidc::LoginState {
            state: "c3RhdGVmcm9tdGhlZnV0dXJl".into(),
            nonce: "n".into(),
            pkce_verifier: "v".repeat(43),
            return_to: "/reports".into(),
            started_at,
        };
        let sealed = sealer.seal(trousseau_proxy::session::sessions::LOGIN_STATE_PURPOSE, &serde_json::to_vec(&login).unwrap());
        let mut browser = env.browser();
        browser.jar.insert("trousseau_session_login_c3RhdGVmcm9t".into(), sealed);
        let callback = browser.navigate(&format!("/.trousseau/callback?code=x&state={}", login.state)).await;
        assert_eq!(callback.status, StatusCode::BAD_REQUEST, "started at {started_at}: {}", callback.text());
        assert!(callback.text().contains("expired"));
    }
}

#[tokio::test]
async fn two_tabs_signing_in_at_once_both_succeed() {
    let env = Env::start().await;
    let mut browser = env.browser();
    let tab1 = browser.navigate("/one").await;
    let tab2 = browser.navigate("/two").await;
    assert_eq!(browser.jar.keys().filter(|k| k.contains("_login_")).count(), 2);
    // Tab 2 finishes first, then tab 1: each lands where it started.
    let cb2 = browser.sign_in_at_idp(&tab2.location(), JEAN).await;
    assert_eq!(cb2.status, StatusCode::FOUND);
    assert_eq!(cb2.location(), format!("{}/two", env.origin));
    let cb1 = browser.sign_in_at_idp(&tab1.location(), JEAN).await;
    assert_eq!(cb1.status, StatusCode::FOUND, "{}", cb1.text());
    assert_eq!(cb1.location(), format!("{}/one", env.origin));
    assert_eq!(browser.navigate("/one").await.status, StatusCode::OK);
}

#[tokio::test]
async fn sign_in_attempts_are_capped() {
    let env = Env::start().await;
    let mut browser = env.browser();
    for i in 0..12 {
        let r = browser.navigate(&format!("/page{i}")).await;
        assert_eq!(r.status, StatusCode::FOUND);
    }
    let attempts = browser.jar.keys().filter(|k| k.contains("_login_")).count();
    assert!(attempts <= 4, "{attempts} state cookies kept");
    // The newest attempt still works.
    let last = browser.navigate("/latest").await;
    let cb = browser.sign_in_at_idp(&last.location(), JEAN).await;
    assert_eq!(cb.location(), format!("{}/latest", env.origin));
}

#[tokio::test]
async fn userinfo_shows_the_identity_and_never_tokens() {
    let env = Env::start().await;
    let mut browser = env.browser();
    assert_eq!(browser.api_get("/.trousseau/userinfo").await.status, StatusCode::UNAUTHORIZED);
    browser.sign_in("/", JEAN).await;
    let info = browser.api_get("/.trousseau/userinfo").await;
    assert_eq!(info.status, StatusCode::OK);
    let json = info.json();
    assert_eq!(json["sub"], JEAN);
    assert_eq!(json["organizations"].as_array().unwrap().len(), 2);
    let text = info.text();
    for forbidden in ["refresh", "access_token", "id_token", "eyJ"] {
        assert!(!text.contains(forbidden), "userinfo leaks {forbidden}: {text}");
    }
}

#[tokio::test]
async fn health_readiness_and_jwks_are_served() {
    let env = Env::start().await;
    let mut browser = env.browser();
    assert_eq!(browser.api_get("/.trousseau/healthz").await.status, StatusCode::OK);
    assert_eq!(browser.api_get("/.trousseau/readyz").await.status, StatusCode::OK);
    let jwks = browser.api_get("/.trousseau/jwks.json").await.json();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert!(key.get("d").is_none(), "no private part in the JWKS");
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn readiness_waits_for_an_unreachable_trousseau() {
    // Point the proxy at an issuer where nothing listens yet.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hole.local_addr().unwrap().port();
    drop(hole);
    let mut file = trousseau_proxy::config::FileConfig {
        public_url: Some("http://127.0.0.1:9".into()),
        upstream: Some("http://127.0.0.1:9".into()),
        ..Default::default()
    };
    file.oidc.issuer = Some(format!("http://127.0.0.1:{port}/application/o/app/"));
    file.oidc.client_id = Some("x".into());
    file.oidc.client_secret = Some("y".into());
    file.session.secrets = vec![SECRET.into()];
    let app = trousseau_proxy::app::App::new(settings(&file)).unwrap();
    assert!(app.oidc().discover().await.is_err());
    assert!(!app.oidc().is_ready());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(trousseau_proxy::server::serve(listener, app.clone(), std::future::pending(), std::time::Duration::from_secs(1)));
    let mut b = Browser::new(&format!("http://{addr}"));
    let ready = b.api_get("/.trousseau/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    // A browser that needs to sign in meanwhile gets a clear 503 with Retry-After.
    let nav = b.navigate("/").await;
    assert_eq!(nav.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(nav.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_forged_error_callback_shows_no_attacker_text() {
    let env = Env::start().await;
    let mut b = env.browser();
    let r = b.navigate("/.trousseau/callback?error=access_denied&error_description=Call+0800+SCAM+to+unlock&state=x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!r.text().contains("SCAM"), "text from someone else's link is not shown");
}

/// A Trousseau user with an empty `email` (found by the `id_token_claims` fuzz target): the
/// assertion then says nothing about email, rather than `email_verified: true` about no address,
/// whether the identity comes from the ID token (cookie session) or from userinfo (bearer token).
#[tokio::test]
async fn an_empty_email_claim_leaves_no_email_claims_in_the_assertion() {
    const NO_EMAIL: &str = "5e0c1a2b-0000-4000-8000-00000000e0e0";
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.api.bearer = trousseau_proxy::config::Bearer::Userinfo;
            c.identity.pass_access_token = true;
        }),
        idp: Box::new(|idp| {
            let mut user = idp.users[0].clone();
            user.sub = NO_EMAIL.into();
            user.email = String::new();
            idp.users.push(user);
        }),
    })
    .await;
    let verifier = trousseau_proxy::dev::JwksVerifier::new(format!("{}/.trousseau/jwks.json", env.origin));
    let mut browser = env.browser();
    let answer = browser.sign_in("/reports", NO_EMAIL).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let h = &answer.json()["headers"];
    let token = h["x-trousseau-access-token"][0].as_str().expect("access token passed").to_string();

    let mut api = env.browser();
    let auth = format!("Bearer {token}");
    let bearer = api.request(http::Method::GET, "/api/me", &[("authorization", auth.as_str()), ("accept", "application/json")], bytes::Bytes::new()).await;
    assert_eq!(bearer.status, StatusCode::OK, "{}", bearer.text());

    for (how, h) in [("cookie session", h.clone()), ("bearer token", bearer.json()["headers"].clone())] {
        assert!(h["x-trousseau-email"].is_null(), "{how}");
        let jws = h["x-trousseau-jwt-assertion"][0].as_str().expect("assertion header");
        let (_, claims) = verifier.verify(jws).await.expect("assertion verifies");
        assert_eq!(claims["sub"], NO_EMAIL, "{how}");
        assert!(claims.get("email").is_none(), "{how}: {claims}");
        assert!(claims.get("email_verified").is_none(), "{how}: email_verified about no email: {claims}");
    }
}
