//! Measurement helper for `bench/connections.sh`: many websockets open through one proxy, one
//! user signs out, and only that user's websockets close.
//!
//! ```text
//! open_connections app     --listen 127.0.0.1:18091        # the app: a websocket echo
//! open_connections clients --proxy http://127.0.0.1:18090 --proxy-pid PID \
//!     --leaving COOKIE --staying COOKIE [--staying COOKIE …] [--count 10000] [--leaving-count 100]
//! ```
//! `clients` opens `--leaving-count` websockets with the leaving user's cookie and the rest of
//! `--count` with the staying users' cookies (in turn), reads the proxy's resident memory before
//! and after, then signs the leaving user out (`/.trousseau/logout`) and measures how long until
//! each of their websockets received the proxy's close frame (1008), and checks that every other
//! websocket is still open and echoing. It prints `RESULT key=value …` lines.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Websockets opened at once.
const OPENING_CONCURRENCY: usize = 200;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("app") => app(flag(&args, "--listen").unwrap_or("127.0.0.1:18091")).await,
        Some("clients") => clients(&args).await,
        _ => Err("usage: open_connections app --listen ADDR | clients --proxy URL --proxy-pid PID --leaving COOKIE --staying COOKIE…".into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("open_connections: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].as_str())
}

fn flags<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    args.windows(2).filter(|w| w[0] == name).map(|w| w[1].as_str()).collect()
}

/// A websocket echo on every path, for as many connections as come.
async fn app(listen: &str) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("{listen}: {e}"))?;
    println!("READY app {listen}");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() || ws.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str, cookie: &str) -> Result<Ws, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert("cookie", cookie.parse().map_err(|_| "unusable cookie")?);
    let (ws, response) = tokio_tungstenite::connect_async(req).await.map_err(|e| e.to_string())?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("status {}", response.status()));
    }
    Ok(ws)
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

async fn clients(args: &[String]) -> Result<(), String> {
    let proxy = flag(args, "--proxy").ok_or("--proxy URL")?.trim_end_matches('/').to_string();
    let pid = flag(args, "--proxy-pid").ok_or("--proxy-pid PID")?.to_string();
    let leaving = flag(args, "--leaving").ok_or("--leaving COOKIE")?.to_string();
    let staying: Vec<String> = flags(args, "--staying").into_iter().map(String::from).collect();
    if staying.is_empty() {
        return Err("at least one --staying COOKIE".into());
    }
    let count: usize = flag(args, "--count").unwrap_or("10000").parse().map_err(|_| "--count: a number")?;
    let leaving_count: usize = flag(args, "--leaving-count").unwrap_or("100").parse().map_err(|_| "--leaving-count: a number")?;
    let url = format!("{}/ws", proxy.replace("http://", "ws://"));

    let rss_before = rss_kib(&pid);
    let opened = Instant::now();
    let cookies: Vec<String> =
        (0..count).map(|i| if i < leaving_count { leaving.clone() } else { staying[i % staying.len()].clone() }).collect();
    let mut sockets: Vec<Option<Ws>> = Vec::with_capacity(count);
    for batch in cookies.chunks(OPENING_CONCURRENCY) {
        let opening = batch.iter().map(|cookie| open(&url, cookie));
        for result in futures_util::future::join_all(opening).await {
            sockets.push(Some(result.map_err(|e| format!("websocket {} of {count}: {e}", sockets.len() + 1))?));
        }
    }
    let open_took = opened.elapsed();
    // Let the proxy's sweep (once a second) count them, and its memory settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = rss_kib(&pid);
    println!(
        "RESULT what=open count={count} seconds={:.2} proxy_rss_before_kib={rss_before} proxy_rss_after_kib={rss_after} per_websocket_bytes={}",
        open_took.as_secs_f64(),
        (rss_after.saturating_sub(rss_before) * 1024) / count as u64
    );

    // Split the sockets: the leaving user's are watched for their close frame, the others for any.
    let closed_others = Arc::new(AtomicUsize::new(0));
    let mut leaving_watch = Vec::new();
    let mut staying_sockets = Vec::new();
    for (i, socket) in sockets.iter_mut().enumerate() {
        let ws = socket.take().expect("each socket once");
        if i < leaving_count {
            leaving_watch.push(tokio::spawn(async move {
                let mut ws = ws;
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Close(Some(frame)))) => return (Instant::now(), u16::from(frame.code)),
                        Some(Ok(_)) => continue,
                        _ => return (Instant::now(), 0),
                    }
                }
            }));
        } else {
            staying_sockets.push(ws);
        }
    }

    // The leaving user signs out.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let logout = http::Request::get(format!("{proxy}/.trousseau/logout"))
        .header("cookie", leaving.as_str())
        .header("accept", "text/html")
        .body(http_body_util::Empty::new())
        .map_err(|e| e.to_string())?;
    let signed_out = Instant::now();
    let answer = client.request(logout).await.map_err(|e| format!("sign-out: {e}"))?;
    let answered = signed_out.elapsed();
    if answer.status() != StatusCode::FOUND {
        return Err(format!("sign-out answered {}", answer.status()));
    }
    let mut last = Duration::ZERO;
    let mut codes_1008 = 0;
    for watch in leaving_watch {
        let (at, code) = tokio::time::timeout(Duration::from_secs(10), watch).await.map_err(|_| "a leaving websocket never closed")?.map_err(|e| e.to_string())?;
        last = last.max(at.saturating_duration_since(signed_out));
        codes_1008 += usize::from(code == 1008);
    }

    // Every other websocket is still open: one message each, echoed.
    let echoed = Arc::new(AtomicUsize::new(0));
    let checks = staying_sockets.into_iter().map(|mut ws| {
        let (echoed, closed_others) = (echoed.clone(), closed_others.clone());
        async move {
            if ws.send(Message::text("still here?")).await.is_err() {
                closed_others.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "still here?" => {
                    echoed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    closed_others.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    futures_util::future::join_all(checks).await;
    println!(
        "RESULT what=sign_out leaving={leaving_count} closed_1008={codes_1008} sign_out_answer_ms={:.2} last_close_ms={:.2} others={} others_echoing={} others_closed={}",
        answered.as_secs_f64() * 1e3,
        last.as_secs_f64() * 1e3,
        count - leaving_count,
        echoed.load(Ordering::Relaxed),
        closed_others.load(Ordering::Relaxed)
    );
    if codes_1008 != leaving_count || closed_others.load(Ordering::Relaxed) != 0 {
        return Err("the sign-out did not end exactly the leaving user's websockets".into());
    }
    Ok(())
}
