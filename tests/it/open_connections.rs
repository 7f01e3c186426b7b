//! A session's end reaches its open connections: websockets get a close frame 1008 and streams are
//! cut when the browser signs out, when Trousseau ends the session (back-channel logout), refuses
//! a refresh (user disabled), or refreshes claims that no longer meet the route's rule, and at
//! `max_lifetime` — and the app's side sees the end too. A websocket whose only activity is its
//! own traffic outlives its access tokens: they are refreshed in the background, once each.
//! (Across replicas through Redis: tests/it/redis.rs.)

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::*;
use trousseau_proxy::config::{HumanDuration, RuleConfig};
use trousseau_proxy::identity::Organization;
use trousseau_proxy::session::cookies::{CookieSettings, RequestCookies, SessionCodec};
use trousseau_proxy::session::Session;
use trousseau_proxy::tether::EndReason;

/// Hélène Lefèvre: HR at Hôtel des Alpes, her only organization.
const HELENE: &str = "3f6c2d1e-8a47-4b9e-9c21-5d7e8f90a1b2";
/// Oliver Bennett is denied; Sam Taylor (no organization) is the other signed-in user.
const SAM: &str = "7b1e9c4d-2f38-4a6b-8e5d-c0a9f1e2d3b4";

/// The bound the issue sets: `session.revocation_staleness` (1 s) + 1 s.
const BOUND: Duration = Duration::from_secs(2);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A websocket to the app's echo at `/ws` through the proxy at `origin`, with `cookie`.
pub async fn open_ws(origin: &str, cookie: &str) -> Ws {
    let url = format!("{}/ws", origin.replace("http://", "ws://"));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(req).await.expect("websocket through the proxy");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_echoes(&mut ws).await;
    ws
}

/// The websocket is open: a message comes back.
pub async fn assert_echoes(ws: &mut Ws) {
    ws.send(Message::text("ping")).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(2), ws.next()).await.expect("an echo in time");
    assert_eq!(echo.unwrap().unwrap(), Message::text("ping"));
}

/// Waits (at most `within`) for the proxy's close frame; returns it and how long it took.
pub async fn closed(ws: &mut Ws, within: Duration) -> (CloseFrame, Duration) {
    let started = Instant::now();
    loop {
        let next = tokio::time::timeout(within.saturating_sub(started.elapsed()), ws.next()).await;
        match next {
            Err(_) => panic!("still open after {within:?}"),
            Ok(Some(Ok(Message::Close(Some(frame))))) => return (frame, started.elapsed()),
            Ok(Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// The websocket was closed for `reason`, with 1008, within `within`.
pub async fn assert_ended(ws: &mut Ws, reason: EndReason, within: Duration) -> Duration {
    let (frame, took) = closed(ws, within).await;
    assert_eq!(frame.code, CloseCode::Policy, "1008");
    assert_eq!(frame.reason.as_str(), reason.close_text());
    took
}

/// The app's end of the websocket got the close frame too.
async fn assert_app_saw(env: &Env, reason: EndReason) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let seen = env.upstream.ws_closes.lock().unwrap().clone();
        if seen.iter().any(|c| c.as_ref().is_some_and(|(code, text)| *code == 1008 && text == reason.close_text())) {
            return;
        }
        assert!(Instant::now() < deadline, "the app saw {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ended(env: &Env, reason: EndReason) -> u64 {
    env.app.open_connections().ended().find(|(r, _)| *r == reason).unwrap().1
}

async fn signed_in(env: &Env, sub: &str) -> Browser {
    let mut b = env.browser();
    let page = b.sign_in("/", sub).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    b
}

/// The Trousseau session id (`sid`) the dev IdP gave this browser's sign-in.
pub fn sid_of(b: &Browser) -> String {
    let key = b.jar.iter().find(|(k, _)| k.ends_with("trousseau_dev_idp_sso")).expect("the IdP's SSO cookie").1;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

async fn post_logout_token(origin: &str, token: &str) {
    let r = Browser::new(origin)
        .request(Method::POST, "/.trousseau/backchannel-logout", &[("content-type", "application/x-www-form-urlencoded")], Bytes::from(format!("logout_token={token}")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// Access tokens of `seconds` at the IdP.
fn short_tokens(seconds: u64) -> EnvOptions {
    EnvOptions { idp: Box::new(move |i| i.access_token_ttl = Duration::from_secs(seconds)), ..Default::default() }
}

#[tokio::test]
async fn signing_out_closes_that_browsers_websockets_with_1008_and_no_others() {
    let env = Env::start().await;
    let mut b = signed_in(&env, JEAN).await;
    let other = signed_in(&env, SAM).await;
    let mut ws = open_ws(&env.origin, &b.cookie_header()).await;
    let mut second = open_ws(&env.origin, &b.cookie_header()).await;
    let mut others = open_ws(&env.origin, &other.cookie_header()).await;

    let r = b.navigate("/.trousseau/logout").await;
    assert_eq!(r.status, StatusCode::FOUND);
    let took = assert_ended(&mut ws, EndReason::Logout, BOUND).await;
    assert_ended(&mut second, EndReason::Logout, BOUND).await;
    eprintln!("sign-out reached the browser's websocket after {took:?}");
    assert_app_saw(&env, EndReason::Logout).await;
    assert_echoes(&mut others).await;
    assert_eq!(ended(&env, EndReason::Logout), 2);
    let metrics = env.app.metrics_text();
    assert!(metrics.contains("trousseau_proxy_connections_ended_total{reason=\"logout\"} 2"), "{metrics}");
}

#[tokio::test]
async fn a_back_channel_logout_closes_the_websockets_of_its_session_then_of_its_user() {
    let env = Env::start().await;
    let first = signed_in(&env, JEAN).await;
    let second = signed_in(&env, JEAN).await;
    let sam = signed_in(&env, SAM).await;
    let mut ws1 = open_ws(&env.origin, &first.cookie_header()).await;
    let mut ws2 = open_ws(&env.origin, &second.cookie_header()).await;
    let mut ws_sam = open_ws(&env.origin, &sam.cookie_header()).await;

    // Trousseau ends the first sign-in's session (its sid): only that websocket closes.
    post_logout_token(&env.origin, &env.trousseau().logout_token(None, Some(&sid_of(&first)))).await;
    let took = assert_ended(&mut ws1, EndReason::Backchannel, BOUND).await;
    eprintln!("back-channel logout (sid) reached the websocket after {took:?}");
    assert_app_saw(&env, EndReason::Backchannel).await;
    assert_echoes(&mut ws2).await;

    // Then every session of the user (sub).
    post_logout_token(&env.origin, &env.trousseau().logout_token(Some(JEAN), None)).await;
    assert_ended(&mut ws2, EndReason::Backchannel, BOUND).await;
    assert_echoes(&mut ws_sam).await;
    assert_eq!(ended(&env, EndReason::Backchannel), 2);
}

#[tokio::test]
async fn a_disabled_users_websocket_closes_when_trousseau_refuses_the_refresh() {
    let env = Env::start_with(short_tokens(3)).await;
    let b = signed_in(&env, JEAN).await;
    let mut ws = open_ws(&env.origin, &b.cookie_header()).await;
    env.trousseau().set_user_disabled(JEAN, true);
    // Due 1 s before the 3 s token expires, found by the next sweep (1 s): within 3 s + the bound.
    let took = assert_ended(&mut ws, EndReason::Refused, Duration::from_secs(3) + BOUND).await;
    eprintln!("refused refresh closed the websocket {took:?} after the user was disabled");
    assert_app_saw(&env, EndReason::Refused).await;
    assert!(env.trousseau().stats().refresh_grants_failed >= 1);
}

#[tokio::test]
async fn a_websocket_closes_when_a_refresh_removes_the_role_its_route_needs() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| {
            c.routes.rules = vec![RuleConfig { path: "/ws".into(), roles: vec!["hr".into()], ..RuleConfig::default() }];
        }),
        idp: Box::new(|i| i.access_token_ttl = Duration::from_secs(3)),
    })
    .await;
    let b = signed_in(&env, HELENE).await;
    let mut ws = open_ws(&env.origin, &b.cookie_header()).await;
    // Her role at her organization becomes `member`: the next refresh carries it.
    let org = Organization {
        id: "018e7b14-2c90-7a3f-8d61-5e4f3a2b1c0d".into(),
        name: "Hôtel des Alpes".into(),
        slug: "hotel-des-alpes".into(),
        role: "member".into(),
    };
    env.trousseau().set_user_organizations(HELENE, vec![org]);
    let took = assert_ended(&mut ws, EndReason::Policy, Duration::from_secs(3) + BOUND).await;
    eprintln!("the refresh without the role closed the websocket after {took:?}");
    assert_app_saw(&env, EndReason::Policy).await;
    assert_eq!(ended(&env, EndReason::Policy), 1);
}

#[tokio::test]
async fn a_websocket_closes_at_the_sessions_max_lifetime() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| c.session.max_lifetime = HumanDuration(Duration::from_secs(60))),
        ..Default::default()
    })
    .await;
    let b = signed_in(&env, JEAN).await;
    // The same session, begun 58 s ago: 2 s of its 60 left.
    let codec = SessionCodec::new(Arc::new(env.sealer()), CookieSettings::new("trousseau_session", false));
    let mut headers = http::HeaderMap::new();
    headers.insert("cookie", b.cookie_header().parse().unwrap());
    let mut session: Session = Session::clone(&codec.load(&RequestCookies::from_headers(&headers)).unwrap());
    session.created_at -= 58;
    let set = codec.store(&session, Duration::from_secs(60), &RequestCookies::default()).unwrap();
    let cookie = set[0].to_str().unwrap().split(';').next().unwrap().to_string();
    let opened = Instant::now();
    let mut ws = open_ws(&env.origin, &cookie).await;
    assert_ended(&mut ws, EndReason::Lifetime, Duration::from_secs(2) + BOUND).await;
    eprintln!("max_lifetime closed the websocket {:?} after it opened (2 s left)", opened.elapsed());
    assert_app_saw(&env, EndReason::Lifetime).await;
}

/// Reads an SSE response until it ends; returns how long after `since` it ended and whether
/// it ended with an error (cut) rather than cleanly.
async fn read_until_end(body: hyper::body::Incoming, since: Instant) -> (Duration, bool) {
    let mut body = body;
    loop {
        match body.frame().await {
            Some(Ok(_)) => continue,
            Some(Err(_)) => return (since.elapsed(), true),
            None => return (since.elapsed(), false),
        }
    }
}

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, http_body_util::Empty<Bytes>>;

/// A client speaking HTTP/1.1, or HTTP/2 with prior knowledge (one connection for all its streams).
fn client(http2: bool) -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(http2).build_http()
}

async fn open_events(env: &Env, auth: (&str, &str)) -> hyper::body::Incoming {
    open_events_over(env, auth, &client(false)).await
}

/// `GET /events` with `client`.
async fn open_events_over(env: &Env, auth: (&str, &str), client: &Client) -> hyper::body::Incoming {
    let req = http::Request::get(format!("{}/events", env.origin))
        .header(auth.0, auth.1)
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some_and(|d| d.starts_with(b"data: tick")));
    body
}

#[tokio::test]
async fn an_event_stream_is_cut_by_a_back_channel_logout_over_http1_and_http2() {
    for http2 in [false, true] {
        let env = Env::start().await;
        let b = signed_in(&env, JEAN).await;
        let cookie = b.cookie_header();
        let client = client(http2);
        let body = open_events_over(&env, ("cookie", &cookie), &client).await;
        // Another user's stream, on the same HTTP/2 connection: the reset is the stream's only.
        let sam = signed_in(&env, SAM).await;
        let sam_cookie = sam.cookie_header();
        let mut sams = open_events_over(&env, ("cookie", &sam_cookie), &client).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let logout = Instant::now();
        post_logout_token(&env.origin, &env.trousseau().logout_token(Some(JEAN), None)).await;
        let (took, cut) = tokio::time::timeout(BOUND, read_until_end(body, logout)).await.expect("the stream ends within the bound");
        assert!(cut, "the stream is cut (an error), not ended as if complete");
        eprintln!("back-channel logout cut the event stream (HTTP/{}) after {took:?}", if http2 { 2 } else { 1 });
        // The app's side: its writer finds the reader gone.
        let deadline = Instant::now() + Duration::from_secs(2);
        while env.upstream.events_ended.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the app still streams");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ended(&env, EndReason::Backchannel), 1);
        // Sam's stream goes on.
        for _ in 0..3 {
            let frame = tokio::time::timeout(Duration::from_secs(1), sams.frame()).await.expect("Sam's ticks go on");
            assert!(frame.unwrap().unwrap().data_ref().is_some_and(|d| d.starts_with(b"data: tick")));
        }
    }
}

/// A proxy accepting bearer tokens, and an API client's event stream open with Jean's real
/// Trousseau access token (read from what the app received).
async fn api_client_streaming() -> (Env, hyper::body::Incoming) {
    let env = Env::start_with(crate::bearer::bearer_env()).await;
    let (token, _) = crate::bearer::real_access_token(&env, JEAN).await;
    let body = open_events(&env, ("authorization", &format!("Bearer {token}"))).await;
    (env, body)
}

#[tokio::test]
async fn an_api_clients_event_stream_ends_with_its_users_back_channel_logout() {
    let (env, body) = api_client_streaming().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logout = Instant::now();
    post_logout_token(&env.origin, &env.trousseau().logout_token(Some(JEAN), None)).await;
    let (took, cut) = tokio::time::timeout(BOUND, read_until_end(body, logout)).await.expect("the stream ends within the bound");
    assert!(cut);
    eprintln!("back-channel logout cut the bearer client's stream after {took:?}");
}

/// A bearer token's check with Trousseau is cached for a minute (`bearer::VALID_TTL`); an open
/// response is checked again when that minute is over, and ends when Trousseau no longer vouches
/// for the token (here: the user was disabled). Takes a minute.
#[tokio::test]
async fn an_api_clients_event_stream_ends_when_its_token_is_refused_at_the_next_check() {
    let (env, body) = api_client_streaming().await;
    let opened = Instant::now();
    env.trousseau().set_user_disabled(JEAN, true);
    let limit = trousseau_proxy::bearer::VALID_TTL + Duration::from_secs(1) + BOUND;
    let (took, cut) = tokio::time::timeout(limit, read_until_end(body, opened)).await.expect("the stream ends at the next check");
    assert!(cut);
    assert!(took >= trousseau_proxy::bearer::VALID_TTL - Duration::from_secs(2), "not before the cached check expired: {took:?}");
    assert_eq!(ended(&env, EndReason::Refused), 1);
    eprintln!("the refused token ended the stream {took:?} after it opened");
}

#[tokio::test]
async fn a_websocket_outlives_its_access_tokens_each_refreshed_once_in_the_background() {
    for store in ["cookie", "memory"] {
        let env = Env::start_with(EnvOptions {
            configure: Box::new(move |c| c.session.store = crate::support::named(store)),
            idp: Box::new(|i| i.access_token_ttl = Duration::from_secs(3)),
        })
        .await;
        let mut b = signed_in(&env, JEAN).await;
        let mut ws = open_ws(&env.origin, &b.cookie_header()).await;
        let started = Instant::now();
        // The socket is the tab's only traffic; its token is refreshed before each expiry.
        while env.trousseau().stats().refresh_grants_ok < 3 {
            assert!(started.elapsed() < Duration::from_secs(20), "store {store}: three refreshes in time");
            assert_echoes(&mut ws).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(started.elapsed() >= Duration::from_secs(4), "three refreshes of 3 s tokens take at least two lifetimes");
        assert_echoes(&mut ws).await;
        let stats = env.trousseau().stats();
        assert_eq!((stats.refresh_grants_ok, stats.refresh_grants_failed, stats.refresh_reuse_detected), (3, 0, 0), "store {store}: {stats:?}");
        assert_eq!(ended(&env, EndReason::Refused), 0);

        // The browser still holds the cookie from before the three refreshes: it is handed the
        // refreshed session, and no rotated refresh token is ever replayed.
        let r = b.api_get("/after").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        if store == "cookie" {
            assert!(r.set_cookies().iter().any(|c| c.starts_with("trousseau_session=")), "the browser gets the newer session");
        }
        let stats = env.trousseau().stats();
        assert_eq!((stats.refresh_grants_failed, stats.refresh_reuse_detected), (0, 0), "store {store}: {stats:?}");
        assert!(stats.refresh_grants_ok <= 4, "{stats:?}");
        assert_echoes(&mut ws).await;
        eprintln!("store {store}: three background refreshes in {:?}, none replayed", started.elapsed());
    }
}

#[tokio::test]
async fn with_the_switch_off_connections_outlive_their_session() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| c.session.end_open_connections = false),
        ..Default::default()
    })
    .await;
    let mut b = signed_in(&env, JEAN).await;
    let mut ws = open_ws(&env.origin, &b.cookie_header()).await;
    b.navigate("/.trousseau/logout").await;
    tokio::time::sleep(BOUND).await;
    assert_echoes(&mut ws).await;
    assert_eq!(ended(&env, EndReason::Logout), 0);
}

/// An organization chosen after a websocket opened survives the background refresh made for that
/// websocket from the session it opened with (found by the soak: the app saw no organization).
#[tokio::test]
async fn an_organization_chosen_after_a_websocket_opened_survives_its_background_refresh() {
    let env = Env::start_with(EnvOptions { idp: Box::new(|i| i.access_token_ttl = Duration::from_secs(2)), ..Default::default() }).await;
    let mut b = signed_in(&env, JEAN).await;
    let mut ws = open_ws(&env.origin, &b.cookie_header()).await;
    let hotel = trousseau_proxy::devidp::default_users().into_iter().find(|u| u.sub == JEAN).unwrap().organizations[0].id.clone();
    let origin = env.origin.clone();
    let chosen = b
        .request(
            Method::POST,
            "/.trousseau/organizations",
            &[("content-type", "application/x-www-form-urlencoded"), ("origin", origin.as_str()), ("accept", "text/html")],
            Bytes::from(format!("org={hotel}&rd=/")),
        )
        .await;
    assert_eq!(chosen.status, StatusCode::SEE_OTHER, "{}", chosen.text());
    let started = Instant::now();
    while env.trousseau().stats().refresh_grants_ok < 1 {
        assert!(started.elapsed() < Duration::from_secs(10), "a background refresh in time");
        assert_echoes(&mut ws).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = b.api_get("/after").await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.text());
    assert_eq!(seen.json()["headers"]["x-trousseau-org-id"][0], hotel.as_str(), "the choice is kept: {}", seen.text());
    assert_eq!(env.trousseau().stats().refresh_reuse_detected, 0);
}
