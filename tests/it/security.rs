//! What the proxy must never let through: spoofed identity, foreign cookies, open redirects.


use bytes::Bytes;
use http::{Method, StatusCode};
use crate::support::*;

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_app() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| c.routes.public = vec!["/public/*".into()]),
        ..Default::default()
    })
    .await;
    let spoofs: &[(&str, &str)] = &[
        ("X-Trousseau-Sub", "attacker"),
        ("x-trousseau-email", "ceo@hotel.com"),
        ("X-TROUSSEAU-ORG-ROLE", "admin"),
        ("x_trousseau_sub", "underscore-smuggling"),
        ("X-Trousseau-Jwt-Assertion", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhdHRhY2tlciJ9."),
        ("x-trousseau-anything-new", "x"),
    ];
    let mut browser = env.browser();
    // Anonymous, on a public route: stripped too.
    let public = browser.request(Method::GET, "/public/page", spoofs, Bytes::new()).await;
    assert_eq!(public.status, StatusCode::OK);
    let headers = public.json()["headers"].clone();
    for (name, _) in spoofs {
        let lower = name.to_ascii_lowercase();
        assert!(headers.get(&lower).is_none(), "{name} reached the app on a public route: {headers}");
    }
    assert!(headers.as_object().unwrap().keys().all(|k| !k.replace('_', "-").starts_with("x-trousseau-")));

    // Signed in: only our values arrive, exactly once.
    browser.sign_in("/", JEAN).await;
    let signed_in = browser.request(Method::GET, "/private", &[spoofs, &[("accept", "application/json")]].concat(), Bytes::new()).await;
    let headers = signed_in.json()["headers"].clone();
    assert_eq!(headers["x-trousseau-sub"], serde_json::json!([JEAN]));
    assert_eq!(headers["x-trousseau-email"], serde_json::json!(["jean.dupont@hotel.com"]));
    assert!(headers.get("x_trousseau_sub").is_none());
    assert!(headers.get("x-trousseau-anything-new").is_none());
    assert!(headers.get("x-trousseau-org-role").is_none(), "no organization selected, so no role header");
    let jws = headers["x-trousseau-jwt-assertion"][0].as_str().unwrap();
    assert_eq!(jws_parts(jws).0["alg"], "ES256");
}

#[tokio::test]
async fn the_session_cookie_never_reaches_the_app_but_other_cookies_do() {
    let env = Env::start().await;
    let mut browser = env.browser();
    browser.sign_in("/", JEAN).await;
    browser.jar.insert("app_pref".into(), "dark".into());
    let echo = browser.api_get("/x").await.json();
    let cookie = echo["headers"]["cookie"][0].as_str().unwrap_or("");
    assert!(cookie.contains("app_pref=dark"), "{cookie}");
    assert!(!cookie.contains("trousseau_session"), "{cookie}");
    assert!(!cookie.contains("_login_"), "{cookie}");
}

#[tokio::test]
async fn tampered_truncated_and_foreign_cookies_are_no_session() {
    let env = Env::start().await;
    let mut browser = env.browser();
    browser.sign_in("/", JEAN).await;
    let good = browser.jar["trousseau_session"].clone();
    assert_eq!(browser.api_get("/ok").await.status, StatusCode::OK);

    let mut variants: Vec<String> = vec![
        String::new(),
        "garbage".into(),
        "%%%".into(),
        good[..good.len() / 2].to_string(),
        good[1..].to_string(),
        format!("{good}A"),
        "A".repeat(5000),
    ];
    for i in (0..good.len()).step_by(7) {
        let mut bytes = good.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        variants.push(String::from_utf8(bytes).unwrap());
    }
    // Sealed with another secret (another deployment).
    let other = Env::start_with(EnvOptions {
        configure: Box::new(|c| c.session.secrets = vec!["b3RoZXItc2VjcmV0LWZvci1hbm90aGVyLWRlcGxveW1lbnQ=".into()]),
        ..Default::default()
    })
    .await;
    let mut foreigner = other.browser();
    foreigner.sign_in("/", JEAN).await;
    variants.push(foreigner.jar["trousseau_session"].clone());

    for v in variants {
        let mut b = env.browser();
        b.jar.insert("trousseau_session".into(), v.clone());
        let api = b.api_get("/x").await;
        assert_eq!(api.status, StatusCode::UNAUTHORIZED, "cookie {v:?} gave {}", api.status);
        let nav = b.navigate("/x").await;
        assert_eq!(nav.status, StatusCode::FOUND, "cookie {v:?} gave {}", nav.status);
    }
    // A raw Cookie header with junk never breaks anything either.
    for raw in ["trousseau_session", "=;=;;", "a=b; trousseau_session_1=x; trousseau_session_99999=y"] {
        let mut b = env.browser();
        let r = b.request(Method::GET, "/x", &[("cookie", raw), ("accept", "application/json")], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{raw:?}");
    }
}

#[tokio::test]
async fn session_secret_rotation_keeps_users_signed_in() {
    const OLD: &str = SECRET;
    const NEW: &str = "bmV3LXNlY3JldC10aGF0LWlzLWFsc28tMzItYnl0ZXMhIQ==";
    let before = Env::start().await;
    let mut browser = before.browser();
    browser.sign_in("/", JEAN).await;
    let old_cookie = browser.jar["trousseau_session"].clone();

    // Same deployment restarted with [NEW, OLD]: the old cookie still opens. (A replica of the same
    // application: what is sealed is bound to the application, so another one would refuse it.)
    let rotated = before.start_replica_with(|c| c.session.secrets = vec![NEW.into(), OLD.into()]).await;
    let mut b = Browser::new(&rotated.origin);
    b.jar.insert("trousseau_session".into(), old_cookie.clone());
    assert_eq!(b.api_get("/x").await.status, StatusCode::OK);

    // Sessions it writes are sealed with NEW (here: choosing an organization re-seals it)...
    let orgs = b.api_get("/.trousseau/organizations").await.json();
    let org = orgs["organizations"][0]["id"].as_str().unwrap().to_string();
    let chosen = b
        .request(
            Method::POST,
            "/.trousseau/organizations",
            &[("content-type", "application/x-www-form-urlencoded"), ("sec-fetch-site", "same-origin")],
            Bytes::from(format!("org={org}&rd=/")),
        )
        .await;
    assert_eq!(chosen.status, StatusCode::SEE_OTHER, "{}", chosen.text());
    let new_cookie = b.jar["trousseau_session"].clone();
    assert_ne!(new_cookie, old_cookie);
    // ...which a NEW-only deployment opens...
    let new_only = before.start_replica_with(|c| c.session.secrets = vec![NEW.into()]).await;
    let mut n = Browser::new(&new_only.origin);
    n.jar.insert("trousseau_session".into(), new_cookie);
    assert_eq!(n.api_get("/x").await.status, StatusCode::OK);
    // ...and once OLD is retired, old cookies are no session.
    let mut o = Browser::new(&new_only.origin);
    o.jar.insert("trousseau_session".into(), old_cookie);
    assert_eq!(o.api_get("/x").await.status, StatusCode::UNAUTHORIZED);
}

/// Signs in through `/.trousseau/login?rd=…` and returns where the callback sends the browser.
async fn land_after_sign_in(env: &Env, login_path: &str) -> String {
    let mut b = env.browser();
    let start = b.navigate(login_path).await;
    assert_eq!(start.status, StatusCode::FOUND, "{login_path}");
    let cb = b.sign_in_at_idp(&start.location(), JEAN).await;
    assert_eq!(cb.status, StatusCode::FOUND, "{login_path}: {}", cb.text());
    cb.location()
}

#[tokio::test]
async fn every_open_redirect_payload_lands_on_our_own_origin() {
    let env = std::sync::Arc::new(Env::start().await);
    let payloads: Vec<String> = include_str!("../data/open-redirect-payloads.txt")
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    assert!(payloads.len() >= 834, "{} payloads", payloads.len());
    let origin = url::Url::parse(&env.origin).unwrap().origin();
    let mut paths = Vec::new();
    for p in &payloads {
        // As a careful link would encode it...
        let encoded: String = url::form_urlencoded::byte_serialize(p.as_bytes()).collect();
        paths.push((p.clone(), format!("/.trousseau/login?rd={encoded}")));
        // ...and raw, as an attacker would paste it (when it is a valid request target at all).
        let raw = format!("/.trousseau/login?rd={p}");
        if raw.parse::<http::Uri>().is_ok() {
            paths.push((p.clone(), raw));
        }
    }
    let mut checked = 0;
    for batch in paths.chunks(16) {
        let mut tasks = Vec::new();
        for (payload, path) in batch.iter().cloned() {
            let env = env.clone();
            tasks.push(tokio::spawn(async move { (payload, land_after_sign_in(&env, &path).await) }));
        }
        for t in tasks {
            let (payload, location) = t.await.unwrap();
            let url = url::Url::parse(&location).unwrap_or_else(|e| panic!("{payload:?} -> unparsable {location:?}: {e}"));
            assert_eq!(url.origin(), origin, "{payload:?} -> {location}");
            assert!(location.starts_with(&format!("{}/", env.origin)), "{payload:?} -> {location}");
            assert!(!url.path().starts_with("//"), "{payload:?} -> {location}");
            checked += 1;
        }
    }
    assert!(checked >= 834, "checked {checked}");
}

#[tokio::test]
async fn same_origin_return_paths_are_kept() {
    let env = Env::start().await;
    for (rd, expected) in [
        ("/reports?month=11&year=2026", "/reports?month=11&year=2026"),
        ("/a/b/", "/a/b/"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("", "/"),
    ] {
        let encoded: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        let location = land_after_sign_in(&env, &format!("/.trousseau/login?rd={encoded}")).await;
        assert_eq!(location, format!("{}{}", env.origin, expected), "rd={rd:?}");
    }
}

/// Mei's Trousseau `locale` is `中文` (not a BCP-47 tag, and multi-byte from its first byte).
const MEI: &str = "5e0c7a31-9b2d-4f6e-8a1c-3d4b5e6f7a80";

/// A demo user like Jean (two organizations) whose `locale` claim is `中文`.
fn mei() -> trousseau_proxy::devidp::DevUser {
    let mut u = trousseau_proxy::devidp::default_users().into_iter().find(|u| u.sub == JEAN).unwrap();
    u.sub = MEI.into();
    u.email = "mei@hotel.example".into();
    u.name = "王美".into();
    u.locale = "中文".into();
    u
}

#[tokio::test]
async fn a_user_whose_locale_is_chinese_gets_every_page_and_forward_auth_answers() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.routes.rules = vec![trousseau_proxy::config::RuleConfig {
                path: "/admin/*".into(),
                emails: vec!["nobody@example.com".into()],
                ..Default::default()
            }]
        }),
        idp: Box::new(|c| c.users.push(mei())),
    })
    .await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/", MEI).await.status, StatusCode::OK);

    // Forward-auth (nginx auth_request, Traefik, Caddy): allowed, and the locale travels encoded.
    let json = [("accept", "application/json")];
    let allowed = b.request(Method::GET, "/.trousseau/auth", &[&json[..], &[("x-forwarded-uri", "/reports")]].concat(), Bytes::new()).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text());
    assert_eq!(allowed.headers["x-trousseau-sub"], MEI);
    assert_eq!(allowed.headers["x-trousseau-locale"], "%E4%B8%AD%E6%96%87");
    let denied = b.request(Method::GET, "/.trousseau/auth", &[&json[..], &[("x-original-uri", "/admin/users")]].concat(), Bytes::new()).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text());

    // The organization selector and the error page, in English (the locale is neither fr nor en).
    let selector = b.navigate("/.trousseau/organizations").await;
    assert_eq!(selector.status, StatusCode::OK, "{}", selector.text());
    assert!(selector.text().contains("<html lang=\"en\">") && selector.text().contains("王美"), "{}", selector.text());
    let page = b.navigate("/admin/users").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.text().contains("<html lang=\"en\">") && page.text().contains("email_not_allowed"), "{}", page.text());
    let api = b.api_get("/admin/users").await;
    assert_eq!(api.json()["reason"], "email_not_allowed");
    // The app itself still gets the user, and the userinfo endpoint answers.
    assert_eq!(b.api_get("/x").await.json()["headers"]["x-trousseau-locale"][0], "%E4%B8%AD%E6%96%87");
    assert_eq!(b.api_get("/.trousseau/userinfo").await.json()["locale"], "中文");
}
