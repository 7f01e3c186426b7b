//! Organizations and access policy: the selector, required/allowed organizations and roles, route
//! rules, API bearer tokens and compatibility header presets.


use bytes::Bytes;
use http::{Method, StatusCode};
use crate::support::*;
use trousseau_proxy::config::RuleConfig;

fn jeans_hotels() -> Vec<trousseau_proxy::identity::Organization> {
    trousseau_proxy::devidp::default_users().into_iter().find(|u| u.sub == JEAN).unwrap().organizations
}

/// Posts the selector form for `org_id` as a browser would.
async fn choose(b: &mut Browser, org_id: &str, rd: &str) -> Answer {
    let body = format!("org={org_id}&rd={}", url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>());
    let origin = b.origin.clone();
    b.request(
        Method::POST,
        "/.trousseau/organizations",
        &[("content-type", "application/x-www-form-urlencoded"), ("origin", origin.as_str()), ("accept", "text/html")],
        Bytes::from(body),
    )
    .await
}

#[tokio::test]
async fn a_user_with_two_hotels_chooses_one_and_can_switch() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| c.organization.required = true),
        ..Default::default()
    })
    .await;
    let hotels = jeans_hotels();
    let mut b = env.browser();
    let cb = b.sign_in_to_callback("/planning?week=48", JEAN).await;
    let to_selector = b.navigate(&cb.location()).await;
    assert_eq!(to_selector.status, StatusCode::FOUND);
    assert_eq!(to_selector.location(), "/.trousseau/organizations?rd=/planning%3Fweek%3D48");
    let page = b.navigate(&to_selector.location()).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(html.contains("lang=\"fr\""), "Jean's locale is fr-FR");
    for h in &hotels {
        assert!(html.contains(&h.name), "{html}");
    }
    assert_eq!(env.upstream.hits(), 0);
    // An API call meanwhile is told to select an organization.
    let api = b.api_get("/api/rooms").await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    assert_eq!(api.json()["error"], "organization_required");

    let chosen = choose(&mut b, &hotels[1].id, "/planning?week=48").await;
    assert_eq!(chosen.status, StatusCode::SEE_OTHER);
    assert_eq!(chosen.location(), format!("{}/planning?week=48", env.origin));
    let echo = b.api_get("/planning?week=48").await.json();
    assert_eq!(echo["headers"]["x-trousseau-org-id"][0], hotels[1].id.as_str());
    assert_eq!(echo["headers"]["x-trousseau-org-role"][0], hotels[1].role.as_str());
    let (_, claims) = jws_parts(echo["headers"]["x-trousseau-jwt-assertion"][0].as_str().unwrap());
    assert_eq!(claims["org"]["slug"], hotels[1].slug.as_str());

    // Switch to the other hotel later.
    choose(&mut b, &hotels[0].id, "/").await;
    let echo = b.api_get("/").await.json();
    assert_eq!(echo["headers"]["x-trousseau-org-role"][0], "admin");
    // An organization he is not a member of is refused.
    let bad = choose(&mut b, "018cc251-f400-78cc-8e0c-ffffffffffff", "/").await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    // A cross-site form post is refused.
    let evil = b
        .request(Method::POST, "/.trousseau/organizations", &[("content-type", "application/x-www-form-urlencoded"), ("origin", "https://evil.example")], Bytes::from(format!("org={}&rd=/", hotels[1].id)))
        .await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn allowed_organizations_select_automatically_or_deny() {
    let hotels = jeans_hotels();
    let allowed = hotels[1].slug.clone();
    let env = Env::start_with(EnvOptions {
        configure: Box::new(move |c| {
            c.organization.required = true;
            c.organization.allowed = vec![allowed];
        }),
        ..Default::default()
    })
    .await;
    // Jean: one of his hotels is allowed → selected automatically.
    let mut b = env.browser();
    let page = b.sign_in("/", JEAN).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.json()["headers"]["x-trousseau-org-slug"][0], hotels[1].slug.as_str());
    // A user with no organization: 403 page that says why and offers sign-out.
    let nobody = trousseau_proxy::devidp::default_users().into_iter().find(|u| u.organizations.is_empty() && !u.denied).unwrap();
    let mut n = env.browser();
    let cb = n.sign_in_to_callback("/", &nobody.sub).await;
    let denied = n.navigate(&cb.location()).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(denied.text().contains("/.trousseau/logout"));
    assert_eq!(n.api_get("/").await.json()["reason"], "no_organization");
}

#[tokio::test]
async fn route_rules_check_roles_methods_and_emails() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.routes.public = vec!["/assets/*".into()];
            c.routes.rules = vec![
                RuleConfig { path: "/admin/*".into(), roles: vec!["admin".into()], ..Default::default() },
                RuleConfig { path: "/finance/*".into(), roles: vec!["accounting".into()], ..Default::default() },
                RuleConfig { path: "/reports/*".into(), methods: vec!["DELETE".into()], email_domains: vec!["keysuite.app".into()], ..Default::default() },
            ];
        }),
        ..Default::default()
    })
    .await;
    let hotels = jeans_hotels();
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    // No organization selected yet: the admin route needs one.
    assert_eq!(b.api_get("/admin/users").await.json()["error"], "organization_required");
    choose(&mut b, &hotels[0].id, "/").await; // admin at the first hotel
    assert_eq!(b.api_get("/admin/users").await.status, StatusCode::OK);
    assert_eq!(b.api_get("/%61dmin/users").await.status, StatusCode::OK, "normalized paths get the same rule");
    let finance = b.api_get("/finance/q4").await;
    assert_eq!(finance.status, StatusCode::FORBIDDEN);
    assert_eq!(finance.json()["reason"], "role_not_allowed");
    let page = b.navigate("/finance/q4").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.text().contains("Comptabilité"), "the page says which role is needed (in French for Jean)");
    choose(&mut b, &hotels[1].id, "/").await; // member at the second
    assert_eq!(b.api_get("/admin/users").await.status, StatusCode::FORBIDDEN);
    assert_eq!(b.api_get("/admin/../admin/users").await.status, StatusCode::FORBIDDEN);
    // Per-method rules.
    assert_eq!(b.api_get("/reports/1").await.status, StatusCode::OK);
    let del = b.request(Method::DELETE, "/reports/1", &[("accept", "application/json")], Bytes::new()).await;
    assert_eq!(del.json()["reason"], "email_not_allowed");
    // Public routes need no session, and ambiguous paths are not public.
    let mut anon = env.browser();
    assert_eq!(anon.api_get("/assets/app.css").await.status, StatusCode::OK);
    assert_eq!(anon.api_get("/assets/../admin/users").await.status, StatusCode::UNAUTHORIZED);
}

async fn bearer_get(api: &mut Browser, token: &str) -> Answer {
    let auth = format!("Bearer {token}");
    api.request(Method::GET, "/api/me", &[("authorization", auth.as_str()), ("accept", "application/json")], Bytes::new()).await
}

fn assert_invalid_token(r: &Answer) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(r.headers["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    assert_eq!(r.json()["error"], "invalid_token");
}

#[tokio::test]
async fn api_clients_can_use_a_trousseau_access_token() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.api.bearer = trousseau_proxy::config::Bearer::Userinfo;
            c.identity.pass_access_token = true;
        }),
        ..Default::default()
    })
    .await;
    // Obtain a real access token: sign in and read what the app receives.
    let mut b = env.browser();
    let page = b.sign_in("/", JEAN).await;
    let token = page.json()["headers"]["x-trousseau-access-token"][0].as_str().unwrap().to_string();
    let before = env.trousseau().stats();

    let mut api = env.browser();
    for _ in 0..5 {
        let r = bearer_get(&mut api, &token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json()["headers"]["x-trousseau-sub"][0], JEAN);
        assert!(r.json()["headers"]["x-trousseau-jwt-assertion"][0].is_string());
    }
    let after = env.trousseau().stats();
    assert_eq!(after.introspection_calls, before.introspection_calls + 1, "introspection answers are cached");
    assert_eq!(after.userinfo_calls, before.userinfo_calls + 1, "userinfo answers are cached");

    // Concurrent first requests with a new token share one check.
    let mut b2 = env.browser();
    let token2 = b2.sign_in("/", JEAN).await.json()["headers"]["x-trousseau-access-token"][0].as_str().unwrap().to_string();
    assert_ne!(token2, token);
    let before = env.trousseau().stats();
    let (mut c1, mut c2, mut c3) = (env.browser(), env.browser(), env.browser());
    let (r1, r2, r3) = tokio::join!(bearer_get(&mut c1, &token2), bearer_get(&mut c2, &token2), bearer_get(&mut c3, &token2));
    for r in [r1, r2, r3] {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let after = env.trousseau().stats();
    assert_eq!(after.introspection_calls, before.introspection_calls + 1, "single-flight");
    assert_eq!(after.userinfo_calls, before.userinfo_calls + 1, "single-flight");

    let bad = bearer_get(&mut api, "not-a-token").await;
    assert_invalid_token(&bad);
}

#[tokio::test]
async fn a_token_trousseau_issued_to_another_application_is_refused() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| c.api.bearer = trousseau_proxy::config::Bearer::Userinfo),
        ..Default::default()
    })
    .await;
    // Trousseau's userinfo endpoint, shared by all its applications, accepts the foreign token...
    let foreign = env.trousseau().issue_foreign_access_token(JEAN);
    let userinfo_url = format!("http://{}/application/o/userinfo/", env.idp.addr());
    let mut idp_client = Browser::new(&userinfo_url);
    let at_idp = idp_client.request(Method::GET, &userinfo_url, &[("authorization", &format!("Bearer {foreign}"))], Bytes::new()).await;
    assert_eq!(at_idp.status, StatusCode::OK, "{}", at_idp.text());
    assert_eq!(at_idp.json()["sub"], JEAN);

    // ...but introspection says it is not ours: 401, without asking userinfo, and the refusal is cached.
    let before = env.trousseau().stats();
    let mut api = env.browser();
    for _ in 0..3 {
        assert_invalid_token(&bearer_get(&mut api, &foreign).await);
    }
    let after = env.trousseau().stats();
    assert_eq!(after.introspection_calls, before.introspection_calls + 1);
    assert_eq!(after.userinfo_calls, before.userinfo_calls);
    assert_eq!(env.upstream.hits(), 0);

    // Garbage is refused the same way.
    assert_invalid_token(&bearer_get(&mut api, "garbage").await);
}

#[tokio::test]
async fn bearer_tokens_cannot_be_checked_when_trousseau_refuses_our_client() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.api.bearer = trousseau_proxy::config::Bearer::Userinfo;
            c.oidc.client_secret = Some("not-the-registered-secret".into());
        }),
        ..Default::default()
    })
    .await;
    let foreign = env.trousseau().issue_foreign_access_token(JEAN);
    let r = bearer_get(&mut env.browser(), &foreign).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "our misconfiguration is not the client's invalid token: {}", r.text());
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn header_presets_speak_oauth2_proxy_and_authentik() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.identity.headers_preset = trousseau_proxy::identity::HeadersPreset::Oauth2Proxy;
            c.identity.headers.insert("X-User-Locale".into(), "locale".into());
            c.routes.public = vec!["/open".into()];
        }),
        ..Default::default()
    })
    .await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let h = b.request(Method::GET, "/x", &[("accept", "application/json"), ("x-forwarded-user", "attacker")], Bytes::new()).await.json()["headers"].clone();
    assert_eq!(h["x-forwarded-user"], serde_json::json!([JEAN]));
    assert_eq!(h["x-forwarded-email"][0], "jean.dupont@hotel.com");
    let groups = h["x-forwarded-groups"][0].as_str().unwrap();
    for o in jeans_hotels() {
        assert!(groups.split(',').any(|g| g == o.slug));
        assert!(groups.split(',').any(|g| g == format!("{}:{}", o.slug, o.role)));
    }
    assert_eq!(h["x-user-locale"][0], "fr-FR");
    // Spoofed preset headers are stripped on public routes too.
    let mut anon = env.browser();
    let open = anon.request(Method::GET, "/open", &[("x-forwarded-user", "attacker"), ("x_forwarded_email", "x@evil"), ("x-user-locale", "xx")], Bytes::new()).await.json();
    assert!(open["headers"].get("x-forwarded-user").is_none());
    assert!(open["headers"].get("x_forwarded_email").is_none());
    assert!(open["headers"].get("x-user-locale").is_none());

    let env = Env::start_with(EnvOptions { configure: Box::new(|c| c.identity.headers_preset = trousseau_proxy::identity::HeadersPreset::Authentik), ..Default::default() }).await;
    let mut b = env.browser();
    let h = b.sign_in("/", JEAN).await.json()["headers"].clone();
    assert_eq!(h["x-authentik-uid"], serde_json::json!([JEAN]));
    assert_eq!(h["x-authentik-name"][0], "Jean Dupont");
    assert!(h["x-authentik-groups"][0].as_str().unwrap().contains('|'));
}

/// The organization chosen outlives refreshes, including one that another request of the same
/// browser started with the cookie from before the choice (found by the soak: 10-second tokens,
/// switches, concurrent requests).
#[tokio::test]
async fn the_chosen_organization_outlives_refreshes_started_before_the_choice() {
    let env = Env::start_with(EnvOptions { idp: Box::new(|i| i.access_token_ttl = std::time::Duration::from_secs(1)), ..Default::default() }).await;
    let hotels = jeans_hotels();
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let before_choice = b.clone();
    assert_eq!(choose(&mut b, &hotels[0].id, "/").await.status, StatusCode::SEE_OTHER);
    let org = |answer: &Answer| answer.json()["headers"]["x-trousseau-org-id"][0].as_str().map(String::from);
    assert_eq!(org(&b.api_get("/x").await).as_deref(), Some(hotels[0].id.as_str()));
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    // A request with the cookie from before the choice refreshes the token first…
    let mut old = before_choice;
    let _ = old.api_get("/y").await;
    // …then the browser's own request, with the cookie that has the choice and the same token.
    let after = b.api_get("/x").await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text());
    assert_eq!(org(&after).as_deref(), Some(hotels[0].id.as_str()), "the choice survives the refresh: {}", after.text());
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let later = b.api_get("/x").await;
    assert_eq!(org(&later).as_deref(), Some(hotels[0].id.as_str()), "and the next one: {}", later.text());
}
