//! One central proxy, many routes with their own needs: a gateway narrows a route with
//! `?roles=…&orgs=…` on the auth URL it owns (and Envoy with `context_extensions`,
//! `tests/it/grpc_authz.rs`). A narrowing only narrows: never wider than the configuration, never
//! taken from the client's own query. Driven through a real nginx with two routes, and as Traefik
//! and Envoy's HTTP form ask.

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::forward_auth::{signed_in_through, start_nginx_with};
use crate::support::*;

/// Sam Taylor: no organization.
const SAM: &str = "7b1e9c4d-2f38-4a6b-8e5d-c0a9f1e2d3b4";

/// Two routes on one proxy: `/team/` for the admins of the selected organization (the gateway's
/// narrowing), everything else for any signed-in user.
fn two_routes(dir: &std::path::Path, port: u16, proxy: &str, app: &str) -> String {
    let d = dir.display();
    let check = |location: &str, auth_url: &str| {
        format!(
            "location = {location} {{ internal; proxy_pass http://{proxy}{auth_url}; proxy_pass_request_body off; \
             proxy_set_header Content-Length \"\"; proxy_set_header Host $http_host; \
             proxy_set_header X-Original-URI $request_uri; proxy_set_header X-Original-Method $request_method; }}"
        )
    };
    let protected = |location: &str, check: &str| {
        format!(
            "location {location} {{ auth_request {check}; auth_request_set $sub $upstream_http_x_trousseau_sub; \
             auth_request_set $role $upstream_http_x_trousseau_org_role; proxy_set_header X-Trousseau-Sub $sub; \
             proxy_set_header X-Trousseau-Org-Role $role; error_page 401 = @trousseau_sign_in; proxy_pass http://{app}; }}"
        )
    };
    format!(
        "worker_processes 1; daemon off; master_process off; error_log {d}/error.log warn; pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location /.trousseau/ {{ proxy_pass http://{proxy}; proxy_set_header Host $http_host; }}
    location @trousseau_sign_in {{ return 302 /.trousseau/login?rd=$request_uri; }}
    {}
    {}
    {}
    {}
  }}
}}
",
        check("/_trousseau_auth", "/.trousseau/auth"),
        check("/_trousseau_auth_admins", "/.trousseau/auth?roles=admin"),
        protected("/team/", "/_trousseau_auth_admins"),
        protected("/", "/_trousseau_auth"),
    )
}

/// Selects `slug` as the browser's organization (through `origin`).
async fn choose_organization(b: &mut Browser, origin: &str, slug: &str) {
    let listed = b.api_get("/.trousseau/organizations").await;
    let org = listed.json()["organizations"].as_array().unwrap().iter().find(|o| o["slug"] == slug).expect("the user is a member")["id"].as_str().unwrap().to_string();
    let chosen = b
        .request(Method::POST, "/.trousseau/organizations", &[("content-type", "application/x-www-form-urlencoded"), ("origin", origin)], Bytes::from(format!("org={org}&rd=%2F")))
        .await;
    assert_eq!(chosen.status, StatusCode::SEE_OTHER, "{}", chosen.text());
}

#[tokio::test]
async fn through_nginx_one_proxy_guards_an_admin_route_and_an_open_one() {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let env = Env::start_with(EnvOptions {
        configure: Box::new({
            let origin = origin.clone();
            move |c| c.public_url = Some(origin)
        }),
        idp: Box::new({
            let origin = origin.clone();
            move |i| i.redirect_uris = vec![format!("{origin}/.trousseau/callback")]
        }),
    })
    .await;
    let (proxy, app) = (env.addr.to_string(), env.upstream.addr.to_string());
    let Some(_nginx) = start_nginx_with(port, |dir| two_routes(dir, port, &proxy, &app)).await else { return };

    let anonymous = Browser::new(&origin).api_get("/team/x").await;
    assert_eq!((anonymous.status, anonymous.location()), (StatusCode::FOUND, format!("{origin}/.trousseau/login?rd=/team/x")));
    let mut jean = signed_in_through(&origin, JEAN).await;
    // A member at Riviera Nice: the open route, not the admins'.
    choose_organization(&mut jean, &origin, "hotel-riviera-nice").await;
    assert_eq!(jean.api_get("/x").await.status, StatusCode::OK);
    assert_eq!(jean.api_get("/team/x").await.status, StatusCode::FORBIDDEN);
    // Whatever the client puts in its own query: it is the original request's, not the route's.
    assert_eq!(jean.api_get("/team/x?roles=member&orgs=").await.status, StatusCode::FORBIDDEN);
    assert_eq!(jean.api_get("/x?roles=").await.status, StatusCode::OK);
    // An admin at Le Grand Paris: both.
    choose_organization(&mut jean, &origin, "hotel-le-grand-paris").await;
    let team = jean.api_get("/team/x").await;
    assert_eq!(team.status, StatusCode::OK, "{}", team.text());
    assert_eq!(team.json()["headers"]["x-trousseau-org-role"][0], "admin");
    // No organization at all: the open route only.
    let mut sam = signed_in_through(&origin, SAM).await;
    assert_eq!(sam.api_get("/x").await.status, StatusCode::OK);
    assert_eq!(sam.api_get("/team/x").await.status, StatusCode::FORBIDDEN);
}

/// `/.trousseau/auth` asked as Traefik asks (`address` is the gateway's, with its query).
async fn traefik(b: &mut Browser, auth_url: &str, uri: &str) -> Answer {
    b.request(Method::GET, auth_url, &[("x-forwarded-method", "GET"), ("x-forwarded-uri", uri), ("accept", "application/json")], Bytes::new()).await
}

#[tokio::test]
async fn the_narrowing_comes_only_from_the_auth_url_the_gateway_owns() {
    let env = Env::start_with(EnvOptions { configure: Box::new(crate::forward_auth::assets_public_admin_for_nobody), ..Default::default() }).await;
    let mut jean = env.browser();
    jean.sign_in("/", JEAN).await;
    choose_organization(&mut jean, &env.origin, "hotel-le-grand-paris").await; // admin there

    let status = |a: Answer| a.status;
    assert_eq!(status(traefik(&mut jean, "/.trousseau/auth?roles=admin", "/team").await), StatusCode::OK);
    assert_eq!(status(traefik(&mut jean, "/.trousseau/auth?rd=%2Fteam&orgs=hotel-le-grand-paris,other&roles=owner,admin", "/team").await), StatusCode::OK);
    // Each list given is one more requirement, so a second copy never undoes the first; an empty
    // list refuses everyone.
    for url in ["/.trousseau/auth?roles=owner", "/.trousseau/auth?roles=admin&roles=owner", "/.trousseau/auth?roles=", "/.trousseau/auth?orgs=hotel-riviera-nice"] {
        let refused = traefik(&mut jean, url, "/team").await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{url}");
        assert_eq!(refused.json()["error"], "forbidden", "{url}");
    }
    // Never wider than the configuration.
    let refused = traefik(&mut jean, "/.trousseau/auth?roles=admin", "/admin/x").await;
    assert_eq!((refused.status, refused.json()["reason"].as_str()), (StatusCode::FORBIDDEN, Some("email_not_allowed")));
    // A narrowed public route needs a session; the same route unnarrowed does not.
    let mut anonymous = env.browser();
    assert_eq!(status(traefik(&mut anonymous, "/.trousseau/auth?roles=admin", "/assets/a.css").await), StatusCode::UNAUTHORIZED);
    assert_eq!(status(traefik(&mut anonymous, "/.trousseau/auth", "/assets/a.css").await), StatusCode::OK);

    // The client's query is never the narrowing: not in the described URI (nginx, Traefik)...
    let member = traefik(&mut jean, "/.trousseau/auth?roles=member", "/team?roles=admin").await;
    assert_eq!(member.status, StatusCode::FORBIDDEN, "the client's ?roles=admin cannot satisfy the gateway's roles=member");
    assert_eq!(status(traefik(&mut jean, "/.trousseau/auth", "/team?roles=&orgs=nobody").await), StatusCode::OK);
    // ...nor in Envoy's HTTP form, where the original path and query follow ours: there the
    // query is the client's (and the app's: `/api/users?roles=admin` is a filter, not a demand).
    for target in ["/.trousseau/auth/team?roles=", "/.trousseau/auth/team?orgs=nobody&roles=owner", "/.trousseau/auth/?roles="] {
        let envoy = jean.request(Method::GET, target, &[("accept", "application/json")], Bytes::new()).await;
        assert_eq!(envoy.status, StatusCode::OK, "{target}: {}", envoy.text());
    }
}
