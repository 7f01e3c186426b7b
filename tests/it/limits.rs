//! Resource limits (issue 14, items 6, 8, 22, 23 and 18): an attacker's cheap ways of holding the
//! proxy's connections, descriptors, memory and connections to the app — silent sockets, half-sent
//! heads, idle keep-alives, hundreds of HTTP/2 streams, trickled uploads, responses never read —
//! each meet a bound, over real sockets, with short limits configured so the tests run quickly.


use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trousseau_proxy::config::{FileConfig, HumanDuration, LimitsConfig};

/// A proxy whose `/stream`, `/upload` and `/big` are public routes (no sign-in needed), with
/// `limits` changed by `configure`.
async fn start(configure: impl FnOnce(&mut LimitsConfig) + Send + 'static) -> Env {
    Env::start_with(EnvOptions {
        configure: Box::new(|c: &mut FileConfig| {
            c.routes.public = ["/stream", "/upload", "/big"].map(String::from).to_vec();
            configure(&mut c.limits);
        }),
        ..EnvOptions::default()
    })
    .await
}

fn ms(n: u64) -> HumanDuration {
    HumanDuration(Duration::from_millis(n))
}

/// The value of `series` in the proxy's `/metrics` text.
fn metric(env: &Env, series: &str) -> f64 {
    let text = env.app.metrics_text();
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// Reads until the peer closes (EOF or reset); `None` if it is still open after `within`. What was
/// read comes back too.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((started.elapsed(), seen)),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads an HTTP/1.1 response head; its status code and the whole head as text.
async fn read_head(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await.expect("a response head").unwrap();
        assert_eq!(n, 1, "connection closed before a response head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

async fn send(addr: SocketAddr, request: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Waits until `condition` holds, for at most `within`.
async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// An HTTP/2 client (prior knowledge, no TLS) whose streams get `window` bytes of flow control:
/// 0 is a client that never reads.
async fn h2_client(addr: SocketAddr, window: u32) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new().initial_window_size(window).handshake(tcp).await.unwrap();
    (client, tokio::spawn(connection))
}

fn h2_request(method: Method, path: &str) -> Request<()> {
    Request::builder().method(method).uri(format!("http://proxy.test{path}")).header("accept", "application/json").body(()).unwrap()
}

// ----- item 8: silent and idle connections -----

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_after_the_header_timeout() {
    let env = start(|l| l.header_timeout = ms(300)).await;
    let mut silent = TcpStream::connect(env.addr).await.unwrap();
    let (after, _) = closed_within(&mut silent, Duration::from_secs(5)).await.expect("a silent connection is closed");
    assert!(after >= Duration::from_millis(250) && after < Duration::from_secs(2), "closed after {after:?}");
    assert_eq!(metric(&env, "trousseau_proxy_connections_closed_total{reason=\"header_timeout\"}"), 1.0);
}

/// Starts a request head on `conn`, then sends a header line every 100 ms, `lines` at most: the
/// connection never falls silent and the head never ends. True when the proxy cut it meanwhile.
async fn trickle_a_head(conn: &mut TcpStream, lines: usize) -> bool {
    conn.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    for i in 0..lines {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if conn.write_all(format!("X-Slow-{i}: a\r\n").as_bytes()).await.is_err() {
            return true;
        }
        // What is left of an earlier answer is read away; the end of the stream is the cut.
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), conn.read(&mut [0u8; 4096])).await {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn a_request_head_sent_a_little_at_a_time_is_cut_at_the_header_timeout() {
    let env = start(|l| l.header_timeout = ms(500)).await;
    let mut slow = TcpStream::connect(env.addr).await.unwrap();
    let started = Instant::now();
    assert!(trickle_a_head(&mut slow, 40).await, "the slow head was not cut");
    assert!(started.elapsed() < Duration::from_secs(2), "cut after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_second_request_head_sent_a_little_at_a_time_is_cut_at_the_idle_timeout() {
    // After a first request, a slow head is bounded by `idle_timeout`: the sweeper's alone (hyper
    // arms no timer of its own on request heads).
    let env = start(|l| {
        l.header_timeout = ms(300);
        l.idle_timeout = ms(600);
    })
    .await;
    let mut conn = send(env.addr, "GET /.trousseau/healthz HTTP/1.1\r\nHost: proxy.test\r\n\r\n").await;
    let (status, _) = read_head(&mut conn).await;
    assert_eq!(status, 200);
    let started = Instant::now();
    assert!(trickle_a_head(&mut conn, 60).await, "the slow second head was not cut");
    let after = started.elapsed();
    assert!(after >= Duration::from_millis(500) && after < Duration::from_secs(4), "cut after {after:?}");
    assert_eq!(metric(&env, "trousseau_proxy_connections_closed_total{reason=\"idle_timeout\"}"), 1.0);
}

#[tokio::test]
async fn a_kept_alive_connection_with_nothing_in_flight_is_closed_after_the_idle_timeout() {
    let env = start(|l| l.idle_timeout = ms(400)).await;
    let mut conn = send(env.addr, "GET /.trousseau/healthz HTTP/1.1\r\nHost: proxy.test\r\n\r\n").await;
    let (status, _) = read_head(&mut conn).await;
    assert_eq!(status, 200);
    let (after, _) = closed_within(&mut conn, Duration::from_secs(5)).await.expect("the idle connection is closed");
    assert!(after < Duration::from_secs(2), "closed after {after:?}");
    assert_eq!(metric(&env, "trousseau_proxy_connections_closed_total{reason=\"idle_timeout\"}"), 1.0);
}

#[tokio::test]
async fn an_idle_http2_connection_is_sent_away_after_the_idle_timeout() {
    let env = start(|l| l.idle_timeout = ms(400)).await;
    let (mut client, connection) = h2_client(env.addr, 65_535).await;
    let (response, _) = client.send_request(h2_request(Method::GET, "/.trousseau/healthz"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), StatusCode::OK);
    let ended = tokio::time::timeout(Duration::from_secs(3), connection).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection is still open");
}

// ----- item 8: the connection cap -----

#[tokio::test]
async fn a_full_listener_closes_the_next_connection_and_counts_it() {
    let env = start(|l| l.max_connections = 2).await;
    // Two connections busy with an event stream: nothing to evict.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut conn = send(env.addr, "GET /stream HTTP/1.1\r\nHost: proxy.test\r\n\r\n").await;
        assert_eq!(read_head(&mut conn).await.0, 200);
        busy.push(conn);
    }
    let mut third = send(env.addr, "GET /.trousseau/healthz HTTP/1.1\r\nHost: proxy.test\r\n\r\n").await;
    let (_, answer) = closed_within(&mut third, Duration::from_secs(2)).await.expect("the third connection is closed");
    assert!(answer.is_empty(), "no answer on a refused connection: {}", String::from_utf8_lossy(&answer));
    assert_eq!(metric(&env, "trousseau_proxy_connections_refused_total{listener=\"main\"}"), 1.0);
    assert_eq!(metric(&env, "trousseau_proxy_connections_open{listener=\"main\"}"), 2.0);

    // Once one of them ends, a new connection gets in.
    drop(busy.pop());
    assert!(eventually(Duration::from_secs(2), || metric(&env, "trousseau_proxy_connections_open{listener=\"main\"}") == 1.0).await);
    let mut fourth = send(env.addr, "GET /.trousseau/healthz HTTP/1.1\r\nHost: proxy.test\r\n\r\n").await;
    assert_eq!(read_head(&mut fourth).await.0, 200);
}

#[tokio::test]
async fn at_the_cap_a_new_connection_takes_the_place_of_an_idle_one() {
    let env = start(|l| l.max_connections = 2).await;
    let mut silent = [TcpStream::connect(env.addr).await.unwrap(), TcpStream::connect(env.addr).await.unwrap()];
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut newcomer = send(env.addr, "GET /.trousseau/healthz HTTP/1.1\r\nHost: proxy.test\r\n\r\n").await;
    assert_eq!(read_head(&mut newcomer).await.0, 200);
    let [first, second] = &mut silent;
    let (a, b) = tokio::join!(closed_within(first, Duration::from_millis(500)), closed_within(second, Duration::from_millis(500)));
    assert!(a.is_some() != b.is_some(), "exactly one silent connection made room: {:?} {:?}", a.is_some(), b.is_some());
    assert_eq!(metric(&env, "trousseau_proxy_connections_closed_total{reason=\"evicted\"}"), 1.0);
    assert_eq!(metric(&env, "trousseau_proxy_connections_refused_total{listener=\"main\"}"), 0.0);
}

// ----- item 22: the metrics listener -----

/// The admin listener of `env`'s app, as `server::run` starts it for `metrics_listen`.
async fn metrics_listener(env: &Env) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = env.app.clone();
    let limits = app.limits().clone();
    tokio::spawn(trousseau_proxy::metrics::serve_metrics(listener, move || app.metrics_text(), limits, std::future::pending()));
    addr
}

#[tokio::test]
async fn the_metrics_listener_closes_half_sent_requests_and_has_a_cap_of_its_own() {
    let env = start(|l| {
        l.header_timeout = ms(300);
        l.metrics_max_connections = 3;
    })
    .await;
    let admin = metrics_listener(&env).await;

    let mut half = send(admin, "GET /metrics HTTP/1.1\r\nHost: adm").await;
    let (after, _) = closed_within(&mut half, Duration::from_secs(5)).await.expect("a half-sent request is closed");
    assert!(after < Duration::from_secs(2), "closed after {after:?}");

    // A flood of silent connections stays within its own cap: the main listener is not touched.
    let mut flood = Vec::new();
    for _ in 0..10 {
        flood.push(TcpStream::connect(admin).await.unwrap());
    }
    assert!(eventually(Duration::from_secs(1), || metric(&env, "trousseau_proxy_connections_open{listener=\"metrics\"}") <= 3.0).await);
    assert_eq!(metric(&env, "trousseau_proxy_connections_open{listener=\"main\"}"), 0.0);
    assert!(metric(&env, "trousseau_proxy_connections_closed_total{reason=\"evicted\"}") >= 7.0);
    let mut scrape = send(admin, "GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n").await;
    assert_eq!(read_head(&mut scrape).await.0, 200);
}

// ----- items 6 and 23: requests in flight -----

#[tokio::test]
async fn one_http2_connection_cannot_pin_more_slow_uploads_than_the_client_cap() {
    let env = start(|l| l.max_requests_per_client = 10).await;
    let (mut client, _connection) = h2_client(env.addr, 65_535).await;
    let mut uploads = Vec::new();
    let mut refused = 0;
    let mut pending = Vec::new();
    for _ in 0..30 {
        client = client.ready().await.unwrap();
        let (response, mut body) = client.send_request(h2_request(Method::POST, "/upload"), false).unwrap();
        body.send_data(Bytes::from_static(b"first bytes"), false).unwrap();
        uploads.push(body);
        pending.push(response);
    }
    // The refused ones are answered at once; the admitted ones wait for their uploads to end.
    for response in pending {
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_millis(300), response).await {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert!(response.headers().contains_key("retry-after"));
            refused += 1;
        }
    }
    assert_eq!(refused, 20);
    assert_eq!(env.upstream.hits(), 10, "the app saw only the admitted uploads");
    assert_eq!(metric(&env, "trousseau_proxy_requests_refused_total{limit=\"per_client\"}"), 20.0);
    assert_eq!(metric(&env, "trousseau_proxy_requests_total{outcome=\"limited\"}"), 20.0);
    assert_eq!(metric(&env, "trousseau_proxy_requests_in_flight"), 10.0);

    // Their places come back when they end.
    drop(uploads);
    assert!(eventually(Duration::from_secs(2), || metric(&env, "trousseau_proxy_requests_in_flight") == 0.0).await);
}

#[tokio::test]
async fn beyond_the_global_cap_everyone_gets_503_but_health_probes_are_answered() {
    let env = start(|l| l.max_requests_in_flight = 2).await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut conn = send(env.addr, "GET /stream HTTP/1.1\r\nHost: proxy.test\r\n\r\n").await;
        assert_eq!(read_head(&mut conn).await.0, 200);
        streams.push(conn);
    }
    let mut browser = env.browser();
    let at_once = Duration::from_secs(5);
    let api = tokio::time::timeout(at_once, browser.api_get("/stream")).await.expect("answered at once, not queued");
    assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.headers["retry-after"], "5");
    assert_eq!(api.json()["error"], "overloaded");
    let page = tokio::time::timeout(at_once, browser.navigate("/stream")).await.expect("answered at once, not queued");
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(browser.api_get("/.trousseau/healthz").await.status, StatusCode::OK);
    assert_eq!(browser.api_get("/.trousseau/readyz").await.status, StatusCode::OK);
    assert_eq!(metric(&env, "trousseau_proxy_requests_refused_total{limit=\"in_flight\"}"), 2.0);
    assert_eq!(env.upstream.hits(), 2);
}

#[tokio::test]
async fn streams_a_client_does_not_read_lose_their_app_connections_after_the_send_timeout() {
    let env = start(|l| l.send_timeout = ms(500)).await;
    // A client advertising a zero window: the app's answers can never be sent.
    let (mut client, connection) = h2_client(env.addr, 0).await;
    let mut unread = Vec::new();
    for _ in 0..5 {
        client = client.ready().await.unwrap();
        let (response, _) = client.send_request(h2_request(Method::GET, "/big"), true).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), response).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        unread.push(response);
    }
    assert_eq!(env.upstream.open_connections.load(Ordering::SeqCst), 5, "each stream holds a connection to the app");
    assert!(
        eventually(Duration::from_secs(3), || env.upstream.open_connections.load(Ordering::SeqCst) == 0).await,
        "the app's connections are still held: {}",
        env.upstream.open_connections.load(Ordering::SeqCst)
    );
    assert_eq!(metric(&env, "trousseau_proxy_responses_abandoned_total"), 5.0);
    // Still not read a send timeout later: the connection is closed.
    let ended = tokio::time::timeout(Duration::from_secs(3), connection).await;
    assert!(ended.is_ok(), "the stalled HTTP/2 connection is still open");
    assert_eq!(metric(&env, "trousseau_proxy_connections_closed_total{reason=\"send_timeout\"}"), 1.0);
    assert!(eventually(Duration::from_secs(2), || metric(&env, "trousseau_proxy_requests_in_flight") == 0.0).await);
}

#[tokio::test]
async fn one_stream_left_unread_loses_its_app_connection_but_the_clients_other_requests_go_on() {
    let env = start(|l| l.send_timeout = ms(300)).await;
    // Each stream gets 64 KiB of window, the connection 16 MiB: like a browser tab pausing one
    // video while the page keeps fetching over the same connection.
    let tcp = TcpStream::connect(env.addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new().initial_connection_window_size(16 << 20).handshake::<_, Bytes>(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let (response, _) = client.send_request(h2_request(Method::GET, "/big"), true).unwrap();
    let paused = response.await.unwrap();
    assert_eq!(paused.status(), StatusCode::OK);

    // Eight send timeouts of other requests, one every 150 ms, each read to its end.
    let until = Instant::now() + Duration::from_millis(2400);
    let mut answered = 0;
    while Instant::now() < until {
        client = client.ready().await.expect("the connection was closed under the client");
        let (response, _) = client.send_request(h2_request(Method::GET, "/big?bytes=2000"), true).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(3), response).await.unwrap().expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("the body arrives whole");
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        answered += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(answered >= 8, "{answered} requests answered");
    assert_eq!(metric(&env, "trousseau_proxy_responses_abandoned_total"), 1.0, "the paused stream lost its app connection");
    assert_eq!(metric(&env, "trousseau_proxy_connections_closed_total{reason=\"send_timeout\"}"), 0.0);
    assert!(!connection.is_finished(), "the client's connection was closed");
    drop(paused);
}

#[tokio::test]
async fn an_http1_client_that_stops_reading_is_disconnected_after_the_send_timeout() {
    let env = start(|l| l.send_timeout = ms(500)).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(env.addr).await.unwrap();
    conn.write_all(b"GET /big?bytes=67108864 HTTP/1.1\r\nHost: proxy.test\r\n\r\n").await.unwrap();
    assert!(eventually(Duration::from_secs(2), || env.upstream.open_connections.load(Ordering::SeqCst) == 1).await);
    // Never read: the buffers fill, then nothing moves.
    assert!(
        eventually(Duration::from_secs(5), || env.upstream.open_connections.load(Ordering::SeqCst) == 0).await,
        "the app's connection is still held"
    );
    assert_eq!(metric(&env, "trousseau_proxy_responses_abandoned_total"), 1.0);
    assert_eq!(metric(&env, "trousseau_proxy_connections_closed_total{reason=\"send_timeout\"}"), 1.0);
}

#[tokio::test]
async fn a_quiet_event_stream_outlives_every_timeout_over_http1_and_http2() {
    let env = start(|l| {
        l.header_timeout = ms(200);
        l.idle_timeout = ms(200);
        l.send_timeout = ms(200);
    })
    .await;
    let mut h1 = send(env.addr, "GET /stream HTTP/1.1\r\nHost: proxy.test\r\n\r\n").await;
    assert_eq!(read_head(&mut h1).await.0, 200);
    let (mut client, _connection) = h2_client(env.addr, 65_535).await;
    let (response, _) = client.send_request(h2_request(Method::GET, "/stream"), true).unwrap();
    let mut h2_body = response.await.unwrap().into_body();
    assert_eq!(h2_body.data().await.unwrap().unwrap(), "data: first\n\n");

    // The app says nothing for many times every timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.upstream.release_stream.notify_waiters();

    let mut text = Vec::new();
    while !String::from_utf8_lossy(&text).contains("data: second") {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(3), h1.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the HTTP/1 stream was closed: {}", String::from_utf8_lossy(&text));
        text.extend_from_slice(&buf[..n]);
    }
    let second = tokio::time::timeout(Duration::from_secs(3), h2_body.data()).await.unwrap().unwrap().unwrap();
    assert_eq!(second, "data: second\n\n");
    assert_eq!(metric(&env, "trousseau_proxy_responses_abandoned_total"), 0.0);
}

#[tokio::test]
async fn websocket_tunnels_count_as_requests_in_flight_until_they_close() {
    let env = start(|l| l.max_requests_per_client = 2).await;
    let mut browser = env.browser();
    browser.sign_in("/", JEAN).await;
    let cookie = browser.cookie_header();
    let open = || {
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{}/ws", env.addr)).unwrap();
        req.headers_mut().insert("cookie", cookie.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    let (first, _) = open().await.expect("a first tunnel");
    let (second, _) = open().await.expect("a second tunnel");
    // Two tunnels hold two connections to the app: the client's cap.
    match open().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS),
        other => panic!("a third tunnel was not refused: {:?}", other.map(|(_, r)| r.status())),
    }
    assert_eq!(metric(&env, "trousseau_proxy_requests_in_flight"), 2.0);
    drop(first);
    assert!(eventually(Duration::from_secs(3), || metric(&env, "trousseau_proxy_requests_in_flight") == 1.0).await, "a closed tunnel keeps its place");
    let (third, _) = open().await.expect("a place was given back");
    drop((second, third));
    assert!(eventually(Duration::from_secs(3), || metric(&env, "trousseau_proxy_requests_in_flight") == 0.0).await);
}

// ----- item 6: request bodies -----

#[tokio::test]
async fn a_trickled_upload_is_cut_by_the_minimum_rate_and_answered_408() {
    let env = start(|l| {
        l.request_body_timeout = ms(400);
        l.request_body_min_rate = 1000;
    })
    .await;
    let mut conn = send(env.addr, "POST /upload HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 100000\r\n\r\n").await;
    conn.write_all(&[b'x'; 100]).await.unwrap();
    let started = Instant::now();
    let (mut read, mut write) = conn.into_split();
    let trickle = tokio::spawn(async move {
        // One byte every 100 ms: 10 bytes a second, far below 1,000.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3), "cut after {:?}", started.elapsed());
    trickle.abort();
    assert_eq!(metric(&env, "trousseau_proxy_client_faults_total{kind=\"slow_body\"}"), 1.0);
    assert_eq!(metric(&env, "trousseau_proxy_requests_total{outcome=\"client_error\"}"), 1.0);
    assert_eq!(metric(&env, "trousseau_proxy_requests_total{outcome=\"upstream_5xx\"}"), 0.0);
    assert!(eventually(Duration::from_secs(2), || env.upstream.open_connections.load(Ordering::SeqCst) == 0).await, "the app's request was aborted");
}

#[tokio::test]
async fn an_upload_that_keeps_the_minimum_rate_is_not_cut() {
    let env = start(|l| {
        l.request_body_timeout = ms(400);
        l.request_body_min_rate = 1000;
    })
    .await;
    let mut conn = send(env.addr, "POST /upload HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 20000\r\n\r\n").await;
    // 1,000 bytes every 100 ms: ten times the rate, over two seconds (five times the timeout).
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.write_all(&[b'x'; 1000]).await.unwrap();
    }
    let (status, _) = read_head(&mut conn).await;
    assert_eq!(status, 200);
    assert_eq!(env.upstream.uploaded.load(Ordering::SeqCst), 20_000);
}

// ----- item 18: client faults -----

#[tokio::test]
async fn a_malformed_chunked_body_is_answered_400_and_counted_as_the_clients_fault() {
    let env = start(|_| {}).await;
    let mut conn = send(
        env.addr,
        "POST /upload HTTP/1.1\r\nHost: proxy.test\r\nAccept: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ-not-hex\r\n\r\n",
    )
    .await;
    let (status, _) = read_head(&mut conn).await;
    assert_eq!(status, 400);
    assert_eq!(metric(&env, "trousseau_proxy_requests_total{outcome=\"client_error\"}"), 1.0);
    assert_eq!(metric(&env, "trousseau_proxy_requests_total{outcome=\"upstream_5xx\"}"), 0.0);
    assert_eq!(metric(&env, "trousseau_proxy_client_faults_total{kind=\"broken_body\"}"), 1.0);
}
