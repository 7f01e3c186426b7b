//! OpenTelemetry export (`telemetry.otlp_endpoint`) through a real proxy to an OTLP/HTTP receiver
//! of the test's own, which decodes what the proxy posts with OpenTelemetry's protobuf messages:
//! the tree of spans (the caller's span → the request's → refresh, Redis, upstream), their
//! attributes, nothing secret in them; and with the collector down or stuck, requests unaffected
//! and the lost spans counted on `/metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use prost::Message as _;
use tokio::net::TcpListener;

use trousseau_proxy::config::RuleConfig;

use crate::redis::{with_redis, RedisServer};
use crate::support::*;

/// What the receiver answers.
#[derive(Clone, Copy, PartialEq)]
enum Collector {
    /// 200 with an empty `ExportTraceServiceResponse`, as a collector does.
    Accepting,
    /// Takes the connection and never answers.
    Stuck,
}

/// An OTLP/HTTP receiver on a loopback port: every span posted to `/v1/traces`, decoded.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    posts: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    async fn start(mode: Collector) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let posts: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (spans2, posts2) = (Arc::clone(&spans), Arc::clone(&posts));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (spans, posts) = (Arc::clone(&spans2), Arc::clone(&posts2));
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (spans, posts) = (Arc::clone(&spans), Arc::clone(&posts));
                        async move {
                            if mode == Collector::Stuck {
                                std::future::pending::<()>().await;
                            }
                            let path = req.uri().path().to_string();
                            let content_type = req.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                            posts.lock().unwrap().push((path, content_type));
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let decoded = ExportTraceServiceRequest::decode(body).expect("an OTLP ExportTraceServiceRequest");
                            for resource in decoded.resource_spans {
                                let service = resource.resource.unwrap().attributes.into_iter().find(|a| a.key == "service.name").unwrap();
                                assert_eq!(text(service.value.as_ref()), "trousseau-proxy");
                                for scope in resource.scope_spans {
                                    spans.lock().unwrap().extend(scope.spans);
                                }
                            }
                            let answer = ExportTraceServiceResponse::default().encode_to_vec();
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder().header("content-type", "application/x-protobuf").body(Full::new(Bytes::from(answer))).unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Receiver { addr, spans, posts }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans of `trace_id` once `count` of them arrived (the exporter batches for up to 1 s).
    async fn trace(&self, trace_id: &[u8], count: usize) -> Vec<Span> {
        for _ in 0..100 {
            let spans: Vec<Span> = self.spans.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect();
            if spans.len() >= count {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {count} spans of the trace arrived: {:#?}", self.spans.lock().unwrap());
    }
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(n)) => n.to_string(),
        other => panic!("not text: {other:?}"),
    }
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes.iter().map(|a| (a.key.clone(), text(a.value.as_ref()))).collect()
}

fn one<'s>(spans: &'s [Span], name: &str) -> &'s Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span in {spans:#?}");
    found[0]
}

/// Metrics as `/metrics` renders them, one value.
fn metric(env: &Env, series: &str) -> u64 {
    let text = env.app.metrics_text();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or_else(|| panic!("{series} in {text}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Access tokens of 2 s (refreshed 1 s early), spans exported to `receiver`.
async fn env_exporting_to(receiver_endpoint: String, tweak: impl FnOnce(&mut trousseau_proxy::config::FileConfig) + Send + 'static) -> Env {
    Env::start_with(EnvOptions {
        configure: Box::new(move |c| {
            c.telemetry.otlp_endpoint = Some(receiver_endpoint);
            c.routes.rules = vec![RuleConfig { path: "/admin/*".into(), emails: vec!["nobody@example.com".into()], ..Default::default() }];
            tweak(c);
        }),
        idp: Box::new(|i| {
            i.access_token_ttl = Duration::from_secs(2);
            i.id_token_ttl = Duration::from_secs(2);
        }),
    })
    .await
}

#[tokio::test]
async fn a_request_is_exported_as_a_tree_of_spans_with_its_decision_and_nothing_secret() {
    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let receiver = Receiver::start(Collector::Accepting).await;
    let env = env_exporting_to(receiver.endpoint(), |_| {}).await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // A due access token: the request refreshes, then goes to the app.
    let before_idp = env.trousseau().traceparents().len();
    let seen = b.request(Method::GET, "/x", &[("traceparent", CALLER), ("accept", "application/json")], Bytes::new()).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.text());
    let trace_id = [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36];
    let spans = receiver.trace(&trace_id, 3).await;

    let request = one(&spans, "GET");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(hex(&request.parent_span_id), "00f067aa0ba902b7", "the caller's span is the request's parent");
    let a = attributes(request);
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["url.path"], "/x");
    assert_eq!(a["http.response.status_code"], "200");
    assert_eq!(a["trousseau.route"], "protected");
    assert_eq!(a["trousseau.session"], "refreshed");
    assert_eq!(a["enduser.id"], JEAN);
    assert_eq!(a["trousseau.request_id"], seen.headers["x-request-id"].to_str().unwrap());
    assert!(request.start_time_unix_nano > 0 && request.start_time_unix_nano <= request.end_time_unix_nano);

    let refresh = one(&spans, "refresh");
    assert_eq!((refresh.kind, &refresh.parent_span_id), (SpanKind::Internal as i32, &request.span_id));
    assert_eq!(attributes(refresh)["trousseau.refresh.outcome"], "refreshed");
    assert!(request.start_time_unix_nano <= refresh.start_time_unix_nano && refresh.end_time_unix_nano <= request.end_time_unix_nano);
    // Trousseau's token call hangs from the refresh span the collector has.
    let at_idp: Vec<(String, String)> = env.trousseau().traceparents().into_iter().skip(before_idp).collect();
    let token_call = at_idp.iter().find(|(path, _)| path.ends_with("/token/")).expect("the refresh reached Trousseau");
    assert_eq!(token_call.1, format!("00-{}-{}-01", hex(&trace_id), hex(&refresh.span_id)));

    let upstream = one(&spans, "upstream");
    assert_eq!((upstream.kind, &upstream.parent_span_id), (SpanKind::Client as i32, &request.span_id));
    assert_eq!(attributes(upstream)["http.response.status_code"], "200");
    let at_app = seen.json()["headers"]["traceparent"][0].as_str().unwrap().to_string();
    assert_eq!(at_app, format!("00-{}-{}-01", hex(&trace_id), hex(&upstream.span_id)), "the app's parent is the upstream span");

    // Refused by a rule, and without a session: the decision is on the span.
    let denied = b.request(Method::GET, "/admin/x", &[("accept", "application/json")], Bytes::new()).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let mut anonymous = env.browser();
    let none = anonymous.request(Method::GET, "/y", &[("accept", "application/json")], Bytes::new()).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let by_request_id = |answer: &Answer| {
        let id = answer.headers["x-request-id"].to_str().unwrap().to_string();
        let spans = receiver.spans.lock().unwrap().clone();
        spans.into_iter().find(|s| s.kind == SpanKind::Server as i32 && attributes(s).get("trousseau.request_id") == Some(&id))
    };
    let mut found = (None, None);
    for _ in 0..60 {
        found = (by_request_id(&denied), by_request_id(&none));
        if found.0.is_some() && found.1.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (denied_span, none_span) = (found.0.expect("the denied request's span"), found.1.expect("the anonymous request's span"));
    assert_eq!((attributes(&denied_span)["trousseau.route"].as_str(), attributes(&denied_span)["http.response.status_code"].as_str()), ("denied", "403"));
    assert_eq!(attributes(&none_span)["trousseau.session"], "none");
    assert!(!attributes(&none_span).contains_key("enduser.id"));

    // Nothing secret: no attribute holds the cookie, a token, the email, or the query.
    let q = b.request(Method::GET, "/search?code=s3cret-query", &[("accept", "application/json")], Bytes::new()).await;
    assert_eq!(q.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let cookie = b.cookie_header();
    let cookie_value = cookie.split_once('=').unwrap().1.split(';').next().unwrap().to_string();
    let all = receiver.spans.lock().unwrap().clone();
    let allowed_keys = [
        "http.request.method", "url.path", "http.response.status_code", "trousseau.route", "trousseau.session", "trousseau.request_id",
        "enduser.id", "trousseau.refresh.outcome", "db.system.name", "db.operation.name",
    ];
    for span in &all {
        for (key, value) in attributes(span) {
            assert!(allowed_keys.contains(&key.as_str()), "unexpected attribute {key} on {}", span.name);
            for secret in [cookie_value.as_str(), "s3cret-query", "jean.dupont", "@", "eyJ"] {
                assert!(!value.contains(secret), "{key} = {value} holds {secret:?}");
            }
        }
    }
    assert!(receiver.posts.lock().unwrap().iter().all(|(path, ct)| path == "/v1/traces" && ct == "application/x-protobuf"));
    assert!(metric(&env, "trousseau_proxy_trace_spans_exported_total") >= all.len() as u64);
    assert_eq!(metric(&env, "trousseau_proxy_trace_spans_dropped_total{reason=\"export_failed\"}"), 0);

    // Bounded: a client's long path or made-up endpoint makes neither a long attribute nor a
    // name of its own.
    let long = format!("/{}", "a".repeat(3000));
    let _ = b.request(Method::GET, &long, &[("traceparent", "00-12121212121212121212121212121212-00f067aa0ba902b7-01")], Bytes::new()).await;
    let _ = b.request(Method::GET, "/.trousseau/made-up-endpoint", &[("traceparent", "00-13131313131313131313131313131313-00f067aa0ba902b7-01")], Bytes::new()).await;
    let long_span = receiver.trace(&[0x12; 16], 1).await;
    assert_eq!(attributes(one(&long_span, "GET"))["url.path"].len(), 1024);
    let made_up = receiver.trace(&[0x13; 16], 1).await;
    assert_eq!(made_up[0].name, "GET /.trousseau/*");

    // An unsampled caller: nothing of its trace is exported.
    const UNSAMPLED: &str = "00-11111111111111111111111111111111-2222222222222222-00";
    let seen = b.request(Method::GET, "/x", &[("traceparent", UNSAMPLED), ("accept", "application/json")], Bytes::new()).await;
    assert_eq!(seen.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(receiver.spans.lock().unwrap().iter().all(|s| s.trace_id != [0x11; 16]), "an unsampled trace is not exported");

    // Signed out, the old cookie comes back: its session is revoked, and the span says so.
    let mut old = env.browser();
    old.jar = b.jar.clone();
    let _ = b.request(Method::POST, "/.trousseau/logout", &[("origin", env.origin.as_str())], Bytes::new()).await;
    let again = old.request(Method::GET, "/x", &[("traceparent", "00-14141414141414141414141414141414-00f067aa0ba902b7-01"), ("accept", "application/json")], Bytes::new()).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    let revoked = receiver.trace(&[0x14; 16], 1).await;
    assert_eq!(attributes(one(&revoked, "GET"))["trousseau.session"], "revoked");
    env.stop().await;
}

#[tokio::test]
async fn sub_can_be_left_out_of_the_spans() {
    let receiver = Receiver::start(Collector::Accepting).await;
    let env = env_exporting_to(receiver.endpoint(), |c| c.telemetry.include_sub = false).await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let seen = b.request(Method::GET, "/x", &[("traceparent", "00-abababababababababababababababab-00f067aa0ba902b7-01")], Bytes::new()).await;
    assert_eq!(seen.status, StatusCode::OK);
    let spans = receiver.trace(&[0xab; 16], 2).await;
    let request = one(&spans, "GET");
    assert_eq!(attributes(request)["trousseau.session"], "valid");
    assert!(!attributes(request).contains_key("enduser.id"), "telemetry.include_sub: false");
    env.stop().await;
}

#[tokio::test]
async fn a_collector_that_is_down_or_stuck_costs_requests_nothing_and_the_lost_spans_are_counted() {
    // Down: nothing listens at the endpoint.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let env = env_exporting_to(down, |c| c.routes.public = vec!["/public/*".into()]).await;
    let mut b = env.browser();
    for i in 0..50 {
        let seen = b.request(Method::GET, &format!("/public/{i}"), &[], Bytes::new()).await;
        assert_eq!(seen.status, StatusCode::OK);
    }
    let mut failed = 0;
    for _ in 0..60 {
        failed = metric(&env, "trousseau_proxy_trace_spans_dropped_total{reason=\"export_failed\"}");
        if failed >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed, 100, "each request's two spans (request, upstream) dropped, counted");
    assert_eq!(metric(&env, "trousseau_proxy_trace_spans_exported_total"), 0);
    env.stop().await;

    // Stuck: the collector takes the connection and never answers. The exporter waits up to its
    // timeout for that batch; meanwhile the queue fills and further spans are dropped — the
    // requests go on at their pace, none fails.
    let receiver = Receiver::start(Collector::Stuck).await;
    let env = env_exporting_to(receiver.endpoint(), |c| c.routes.public = vec!["/public/*".into()]).await;
    let origin = env.origin.clone();
    // Two spans a request (its own, the upstream's): more requests than the queue and a batch hold.
    let total = trousseau_proxy::trace::otlp::QUEUE / 2 + trousseau_proxy::trace::otlp::BATCH + 300;
    let answered = futures_util::future::join_all((0..8).map(|worker| {
        let origin = origin.clone();
        async move {
            let mut b = Browser::new(&origin);
            let mut ok = 0;
            for i in (worker..total).step_by(8) {
                ok += usize::from(b.request(Method::GET, &format!("/public/{i}"), &[], Bytes::new()).await.status == StatusCode::OK);
            }
            ok
        }
    }))
    .await;
    assert_eq!(answered.iter().sum::<usize>(), total, "every request answered 200 while the collector is stuck");
    let dropped = metric(&env, "trousseau_proxy_trace_spans_dropped_total{reason=\"queue_full\"}");
    assert!(dropped >= 2 * 300, "the queue held {} spans; the rest were dropped: {dropped}", trousseau_proxy::trace::otlp::QUEUE);
    env.stop().await;
}

#[tokio::test]
async fn redis_commands_are_spans_of_the_work_they_serve() {
    let Some(redis) = RedisServer::start().await else { return };
    let receiver = Receiver::start(Collector::Accepting).await;
    let endpoint = receiver.endpoint();
    let mut options = with_redis(&redis, "redis", move |c| c.telemetry.otlp_endpoint = Some(endpoint));
    options.idp = Box::new(|i| {
        i.access_token_ttl = Duration::from_secs(2);
        i.id_token_ttl = Duration::from_secs(2);
    });
    let env = Env::start_with(options).await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let seen = b.request(Method::GET, "/x", &[("traceparent", "00-cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd-00f067aa0ba902b7-01")], Bytes::new()).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.text());
    let spans = receiver.trace(&[0xcd; 16], 5).await;
    let request = one(&spans, "GET");
    let refresh = one(&spans, "refresh");
    let commands: Vec<&Span> = spans.iter().filter(|s| s.name == "redis").collect();
    for command in &commands {
        let a = attributes(command);
        assert_eq!((command.kind, a["db.system.name"].as_str()), (SpanKind::Client as i32, "redis"));
        assert!(!a["db.operation.name"].is_empty());
        assert!(a.len() == 2, "the command's name only, never its keys or values: {a:?}");
    }
    assert!(commands.iter().any(|c| c.parent_span_id == request.span_id), "the session's record loaded for the request: {commands:#?}");
    assert!(commands.iter().any(|c| c.parent_span_id == refresh.span_id), "the refresh's lock and result, under the refresh: {commands:#?}");
    env.stop().await;
}

#[tokio::test]
async fn an_edge_that_trusts_no_caller_starts_every_trace_itself() {
    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let receiver = Receiver::start(Collector::Accepting).await;
    let env = env_exporting_to(receiver.endpoint(), |c| c.telemetry.trust_incoming = false).await;
    let mut b = env.browser();
    b.sign_in("/", JEAN).await;
    let seen = b.request(Method::GET, "/x", &[("traceparent", CALLER), ("tracestate", "vendor=opaque"), ("accept", "application/json")], Bytes::new()).await;
    assert_eq!(seen.status, StatusCode::OK);
    let headers = &seen.json()["headers"];
    let at_app = trousseau_proxy::trace::TraceParent::parse(headers["traceparent"][0].as_str().unwrap().as_bytes()).unwrap();
    assert_ne!(at_app.trace_id_hex().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736", "the caller's trace is not continued");
    assert!(headers.get("tracestate").is_none_or(|v| v.is_null()), "nor its tracestate: {headers}");
    let spans = receiver.trace(&at_app.trace_id, 2).await;
    assert!(one(&spans, "GET").parent_span_id.is_empty(), "the request's span is the root of its trace");
    env.stop().await;
}

#[tokio::test]
async fn the_last_requests_spans_are_posted_before_the_process_exits() {
    let receiver = Receiver::start(Collector::Accepting).await;
    let endpoint = receiver.endpoint();
    let mut process = crate::cli::ProxyProcess::start("otlp-flush", move |file| {
        file.telemetry.otlp_endpoint = Some(endpoint);
        file.routes.public = vec!["/public/*".into()];
    })
    .await;
    let mut b = Browser::new(&process.origin);
    let seen = b.request(Method::GET, "/public/last", &[("traceparent", "00-15151515151515151515151515151515-00f067aa0ba902b7-01")], Bytes::new()).await;
    assert_eq!(seen.status, StatusCode::OK);
    // At once: well within the exporter's one-second batch delay.
    process.terminate();
    process.wait_exit(Duration::from_secs(15)).await;
    let spans: Vec<Span> = receiver.spans.lock().unwrap().iter().filter(|s| s.trace_id == [0x15; 16]).cloned().collect();
    assert_eq!(spans.len(), 2, "the request's and the upstream's spans, posted before the exit: {spans:#?}");
}
