//! Forwarding to the app: streaming both ways, websockets, forwarded headers, upstream failures.


use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use crate::support::*;

/// A signed-in browser's cookie header, for clients other than [`Browser`].
async fn signed_in_cookie(env: &Env) -> String {
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    b.cookie_header()
}

/// Signs in and opens the app's `/stream` (it sends one event, then waits for `release_stream`).
async fn open_event_stream(env: &Env) -> hyper::body::Incoming {
    let cookie = signed_in_cookie(env).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let req = http::Request::get(format!("{}/stream", env.origin))
        .header("cookie", cookie)
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body()
}

#[tokio::test]
async fn server_sent_events_stream_through_without_buffering() {
    let env = Env::start().await;
    let mut body = open_event_stream(&env).await;
    // The first event arrives while the app is still holding the second one back:
    // the proxy does not wait for the whole body.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    env.upstream.release_stream.notify_one();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&second[..], b"data: second\n\n");
}

#[tokio::test]
async fn large_uploads_stream_to_the_app() {
    let env = Env::start().await;
    let cookie = signed_in_cookie(&env).await;
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 256; // 256 MiB, generated on the fly: never held in memory at once
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let rx = futures_util::stream::iter((0..CHUNKS).map(move |_| Ok::<_, std::io::Error>(http_body::Frame::data(chunk.clone()))));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::StreamBody<_>>();
    let req = http::Request::post(format!("{}/upload", env.origin))
        .header("cookie", cookie)
        .header("accept", "application/json")
        .body(http_body_util::StreamBody::new(rx))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&body), (CHUNK * CHUNKS).to_string());
}

#[tokio::test]
async fn websockets_are_proxied_for_signed_in_users_only() {
    let env = Env::start().await;
    let ws_url = format!("ws://{}/ws", env.addr);
    // Without a session the upgrade is refused.
    let anonymous = tokio_tungstenite::connect_async(ws_url.as_str()).await;
    assert!(anonymous.is_err());

    let cookie = signed_in_cookie(&env).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(req).await.expect("websocket through the proxy");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["bonjour", "hello", "🔑"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text)).await.unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
    // The upgrade request carried the identity like any other.
    let seen = env.upstream.seen.lock().unwrap().clone();
    let upgrade = seen.iter().find(|h| h.contains_key("sec-websocket-key")).unwrap();
    assert_eq!(upgrade["x-trousseau-sub"], vec![JEAN.to_string()]);
}

#[tokio::test]
async fn forwarded_headers_describe_the_client() {
    let env = Env::start().await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let echo = b
        .request(Method::GET, "/who", &[("accept", "application/json"), ("x-forwarded-for", "6.6.6.6"), ("connection", "keep-alive, x-private"), ("x-private", "hop")], Bytes::new())
        .await
        .json();
    let h = &echo["headers"];
    assert_eq!(h["x-forwarded-for"], serde_json::json!(["127.0.0.1"]), "client-sent X-Forwarded-For is not trusted by default");
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(h["x-forwarded-host"], serde_json::json!([env.addr.to_string()]));
    assert_eq!(h["host"], serde_json::json!([env.addr.to_string()]), "Host is preserved by default");
    assert!(h.get("x-private").is_none(), "headers named in Connection are hop-by-hop");
    assert!(h["x-request-id"][0].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn a_down_app_is_a_502_page_or_json() {
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|c| c.upstream = Some("http://127.0.0.1:9".into())),
        ..Default::default()
    })
    .await;
    let mut b = env.browser();
    let page = b.sign_in("/", JEAN).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert!(page.text().contains("<html"));
    let api = b.api_get("/api").await;
    assert_eq!(api.status, StatusCode::BAD_GATEWAY);
    assert_eq!(api.json()["error"], "upstream_unavailable");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let env = Env::start().await;
    let mut body = open_event_stream(&env).await;
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: first\n\n");

    // SIGTERM-equivalent while the stream is in flight.
    let addr = env.addr;
    let release = env.upstream.release_stream.clone();
    let stopping = tokio::spawn(env.stop());
    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "the listener still accepts after shutdown began");
    // The in-flight response still completes.
    release.notify_one();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&second[..], b"data: second\n\n");
    stopping.await.unwrap();
}

/// W3C trace context through a real proxy: a valid `traceparent` is continued (same trace, the
/// proxy's span as the app's parent, `tracestate` passed on); anything else starts a new trace and
/// drops the caller's `tracestate`; the calls to Trousseau made for a request are spans of its trace.
#[tokio::test]
async fn the_callers_trace_reaches_the_app_and_trousseau_and_a_broken_one_is_replaced() {
    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // Access tokens of 2 s, refreshed 1 s early (the skew is capped at half their life).
    let env = Env::start_with(EnvOptions {
        configure: Box::new(|_| {}),
        idp: Box::new(|i| {
            i.access_token_ttl = std::time::Duration::from_secs(2);
            i.id_token_ttl = std::time::Duration::from_secs(2);
        }),
    })
    .await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    assert!(
        env.trousseau().traceparents().iter().any(|(path, _)| path.ends_with("/token/")),
        "the sign-in's code exchange carried a traceparent: {:?}",
        env.trousseau().traceparents()
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let parse = |v: &serde_json::Value| trousseau_proxy::trace::TraceParent::parse(v.as_str().unwrap().as_bytes()).expect("a valid traceparent");

    // Continued: same trace id, sampled as the caller said, our own span as the parent. The
    // access token is due: the request refreshes, and that call to Trousseau is a span of the
    // same trace.
    let before = env.trousseau().traceparents().len();
    let seen = b.request(Method::GET, "/x", &[("traceparent", CALLER), ("tracestate", "vendor=opaque"), ("accept", "application/json")], Bytes::new()).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.text());
    let headers = &seen.json()["headers"];
    let at_app = parse(&headers["traceparent"][0]);
    assert_eq!(at_app.trace_id_hex().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(at_app.sampled);
    assert_ne!(headers["traceparent"][0], CALLER, "the proxy's span is the app's parent");
    assert_eq!(headers["tracestate"], serde_json::json!(["vendor=opaque"]));
    let at_idp: Vec<(String, String)> = env.trousseau().traceparents().into_iter().skip(before).collect();
    assert!(at_idp.iter().any(|(path, _)| path.ends_with("/token/")), "the refresh reached Trousseau: {at_idp:?}");
    for (path, value) in &at_idp {
        let call = trousseau_proxy::trace::TraceParent::parse(value.as_bytes()).expect("valid at Trousseau");
        assert_eq!(call.trace_id, at_app.trace_id, "{path}: the same trace");
        assert_ne!(call.span_id, at_app.span_id, "{path}: a span of its own");
    }

    // Broken, or absent: a new trace, and the caller's tracestate does not go on alone.
    for broken in ["00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "garbage"] {
        let seen = b.request(Method::GET, "/x", &[("traceparent", broken), ("tracestate", "vendor=opaque"), ("accept", "application/json")], Bytes::new()).await;
        let headers = &seen.json()["headers"];
        let fresh = parse(&headers["traceparent"][0]);
        assert_ne!(fresh.trace_id_hex().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736", "{broken}");
        assert!(headers.get("tracestate").is_none_or(|v| v.is_null()), "{broken}: {headers}");
    }
    let first = parse(&b.api_get("/x").await.json()["headers"]["traceparent"][0]);
    let second = parse(&b.api_get("/x").await.json()["headers"]["traceparent"][0]);
    assert_ne!(first.trace_id, second.trace_id, "each request without a trace starts its own");
    assert!(first.sampled, "telemetry.sampling_ratio defaults to 1");
}
