//! The app behind the proxy in tests: a real HTTP server on a loopback port that echoes what it
//! received, streams on `/stream`, counts uploads on `/upload`, sends `?bytes=N` (default 4 MiB)
//! on `/big`, sends an SSE tick every 100 ms on `/events` until the reader goes, echoes websockets
//! on `/ws` (recording how each one ended), and sets the cookies it is told to on
//! `/set-cookies?c=name%3Dvalue&c=…`. It counts the connections open to it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Every request's headers (name → values), in order of arrival.
pub type SeenHeaders = Arc<Mutex<Vec<BTreeMap<String, Vec<String>>>>>;

/// A running upstream app.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Released by the test to let `/stream` send its second chunk.
    pub release_stream: Arc<Notify>,
    /// Every request's headers, in order of arrival.
    pub seen: SeenHeaders,
    /// Bytes received on `/upload` so far.
    pub uploaded: Arc<AtomicU64>,
    /// Connections open to the app now.
    pub open_connections: Arc<AtomicU64>,
    /// How each `/ws` websocket ended: the close frame's code and reason, `None` without one.
    pub ws_closes: WsCloses,
    /// `/events` streams whose reader went away.
    pub events_ended: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// See [`Upstream::ws_closes`].
pub type WsCloses = Arc<Mutex<Vec<Option<(u16, String)>>>>;

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    release_stream: Arc<Notify>,
    seen: SeenHeaders,
    uploaded: Arc<AtomicU64>,
    ws_closes: WsCloses,
    events_ended: Arc<AtomicU64>,
}

impl Upstream {
    /// Starts the app on 127.0.0.1:0.
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared {
            release_stream: Arc::new(Notify::new()),
            seen: Arc::new(Mutex::new(Vec::new())),
            uploaded: Arc::new(AtomicU64::new(0)),
            ws_closes: Arc::new(Mutex::new(Vec::new())),
            events_ended: Arc::new(AtomicU64::new(0)),
        };
        let open_connections = Arc::new(AtomicU64::new(0));
        let open = open_connections.clone();
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let s = s.clone();
                let open = open.clone();
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    struct Closed(Arc<AtomicU64>);
                    impl Drop for Closed {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    let _closed = Closed(open);
                    let service = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(handle(req, s).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            release_stream: shared.release_stream,
            seen: shared.seen,
            uploaded: shared.uploaded,
            open_connections,
            ws_closes: shared.ws_closes,
            events_ended: shared.events_ended,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests reached the app.
    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).boxed()
}

async fn handle(mut req: Request<Incoming>, s: Shared) -> Response<Body> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers.entry(k.as_str().to_string()).or_default().push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    s.seen.lock().unwrap().push(headers.clone());
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/stream" => {
            let release = s.release_stream.clone();
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"data: first\n\n")))).await;
                release.notified().await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"data: second\n\n")))).await;
            });
            let stream = tokio_stream_from(rx);
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
        "/events" => {
            let ended = s.events_ended.clone();
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                for n in 0u64.. {
                    if tx.send(Ok(Frame::data(Bytes::from(format!("data: tick {n}\n\n"))))).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                ended.fetch_add(1, Ordering::SeqCst);
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(tokio_stream_from(rx))));
            r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
        "/big" => {
            let bytes: usize = req.uri().query().and_then(|q| q.strip_prefix("bytes=")).and_then(|n| n.parse().ok()).unwrap_or(4 << 20);
            // Made as the proxy asks for it: backpressure reaches this app as it would a real one.
            let chunks = futures_util::stream::iter((0..bytes).step_by(16 * 1024).map(move |start| {
                Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; (bytes - start).min(16 * 1024)])))
            }));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
            r.headers_mut().insert("content-length", bytes.to_string().parse().unwrap());
            r
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    total += data.len() as u64;
                    s.uploaded.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Response::new(full(total.to_string()))
        }
        "/ws" => {
            let key = req.headers().get("sec-websocket-key").cloned();
            let Some(key) = key else {
                let mut r = Response::new(full("expected a websocket"));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return r;
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            let closes = s.ws_closes.clone();
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                    let mut closed = None;
                    while let Some(Ok(msg)) = ws.next().await {
                        if let tokio_tungstenite::tungstenite::Message::Close(frame) = &msg {
                            closed = frame.as_ref().map(|f| (u16::from(f.code), f.reason.to_string()));
                            break;
                        }
                        if ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                    closes.lock().unwrap().push(closed);
                }
            });
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut().insert("connection", "upgrade".parse().unwrap());
            r.headers_mut().insert("upgrade", "websocket".parse().unwrap());
            r.headers_mut().insert("sec-websocket-accept", accept.parse().unwrap());
            r
        }
        "/set-cookies" => {
            let mut r = Response::new(full("cookies set"));
            for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
                if k == "c" {
                    r.headers_mut().append("set-cookie", v.parse().unwrap());
                }
            }
            r
        }
        _ => {
            let echo = serde_json::json!({
                "method": req.method().as_str(),
                "path": path,
                "query": req.uri().query(),
                "headers": headers,
            });
            let mut r = Response::new(full(serde_json::to_vec(&echo).unwrap()));
            r.headers_mut().insert("content-type", "application/json".parse().unwrap());
            r
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
