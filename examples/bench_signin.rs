//! Benchmark helper for `bench/run.sh`: signs in to a running `trousseau-proxy dev` the way a
//! browser does (the same steps as `tests/support`'s `Browser`), and measures what `wrk` cannot.
//!
//! ```text
//! bench_signin cookie  --proxy http://127.0.0.1:18082 [--user SUB] # prints a Cookie header value
//! bench_signin cold    --proxy URL [--count 200] [--concurrency 4] # cold sign-ins (callback) rate
//! bench_signin refresh --proxy URL [--count 200] [--concurrency 4] # requests that each refresh
//! bench_signin sink    --listen 127.0.0.1:18085    # an OTLP/HTTP receiver: decodes every export
//! ```
//! `sink` answers each `POST /v1/traces` as a collector does and prints `SPANS n` (the total so
//! far) once a second until it is stopped. It counts the spans of each export by walking the
//! protobuf's fields (no allocation) and decodes one export in 100 whole with OpenTelemetry's
//! messages, answering 400 if it does not decode or the counts disagree: on the benchmark's two
//! cores, a full decode of every export would take the CPU time it is measuring.
//! `cold` and `refresh` print one line `RESULT key=value …` that the script turns into table rows.
//! Only for loopback benchmarks against the dev IdP: it signs in as a demo user.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

#[path = "support/dev_idp_form.rs"]
mod dev_idp_form;
use dev_idp_form::find_form;

type Http = Client<HttpConnector, Full<Bytes>>;

/// One answer, fully read.
struct Answer {
    status: StatusCode,
    location: String,
    set_cookies: Vec<String>,
    body: String,
}

/// A cookie-keeping client for one origin (cookies are per host, like a browser's).
struct Browser {
    http: Http,
    origin: String,
    jar: BTreeMap<String, String>,
}

impl Browser {
    fn new(http: Http, origin: &str) -> Browser {
        Browser { http, origin: origin.trim_end_matches('/').to_string(), jar: BTreeMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn request(&mut self, method: Method, url: &str, headers: &[(&str, &str)], body: String) -> Result<Answer, String> {
        let url = if url.starts_with("http") { url.to_string() } else { format!("{}{url}", self.origin) };
        let mut builder = Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if !self.jar.is_empty() {
            builder = builder.header(header::COOKIE, self.cookie_header());
        }
        let request = builder.body(Full::new(Bytes::from(body))).map_err(|e| format!("{url}: {e}"))?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.http.request(request))
            .await
            .map_err(|_| format!("{url}: timed out"))?
            .map_err(|e| format!("{url}: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
        let answer = Answer {
            status: parts.status,
            location: parts.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string(),
            set_cookies: parts.headers.get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).map(String::from).collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        for set_cookie in &answer.set_cookies {
            let Ok(c) = cookie::Cookie::parse(set_cookie.as_str()) else { continue };
            if c.max_age().is_some_and(|age| age.is_zero() || age.is_negative()) {
                self.jar.remove(c.name());
            } else {
                self.jar.insert(c.name().to_string(), c.value().to_string());
            }
        }
        Ok(answer)
    }

    async fn navigate(&mut self, url: &str) -> Result<Answer, String> {
        self.request(Method::GET, url, &[("accept", "text/html"), ("sec-fetch-mode", "navigate")], String::new()).await
    }

    /// From a protected path to the callback's answer; returns the callback's own latency too.
    async fn sign_in(&mut self, user: &str) -> Result<(Answer, Duration), String> {
        let start = self.navigate("/").await?;
        expect(&start, StatusCode::FOUND, "the first navigation")?;
        let authorize = start.location.clone();
        let page = self.navigate(&authorize).await?;
        expect(&page, StatusCode::OK, "the dev IdP's sign-in page")?;
        let (action, mut fields) =
            find_form(&page.body, user).ok_or_else(|| format!("no sign-in button for {user} on the dev IdP page"))?;
        fields.push(("user".into(), user.into()));
        let form = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let action = url::Url::parse(&authorize).and_then(|base| base.join(&action)).map_err(|e| e.to_string())?;
        let redirect = self
            .request(Method::POST, action.as_str(), &[("content-type", "application/x-www-form-urlencoded"), ("accept", "text/html")], form)
            .await?;
        expect(&redirect, StatusCode::FOUND, "the dev IdP's answer")?;
        let started = Instant::now();
        let callback = self.navigate(&redirect.location).await?;
        let latency = started.elapsed();
        expect(&callback, StatusCode::FOUND, "the callback")?;
        Ok((callback, latency))
    }
}

fn expect(answer: &Answer, status: StatusCode, what: &str) -> Result<(), String> {
    if answer.status == status {
        Ok(())
    } else {
        Err(format!("{what}: expected {status}, got {} {}", answer.status, answer.body.chars().take(300).collect::<String>()))
    }
}


/// A demo user with exactly one organization: it is auto-selected, so every request carries the
/// full identity (organization headers and `org` claim included).
fn bench_user() -> String {
    trousseau_proxy::devidp::default_users()
        .into_iter()
        .find(|u| u.organizations.len() == 1 && !u.denied)
        .map(|u| u.sub)
        .expect("the dev IdP has a user with one organization")
}

struct Options {
    mode: String,
    proxy: String,
    count: usize,
    concurrency: usize,
    /// The demo user to sign in as (default: [`bench_user`]).
    user: Option<String>,
    /// `sink`: where to listen.
    listen: String,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or("usage: bench_signin cookie|cold|refresh --proxy URL [--count N] [--concurrency C]")?;
    let mut options = Options { mode, proxy: "http://127.0.0.1:4180".into(), count: 200, concurrency: 4, user: None, listen: "127.0.0.1:4318".into() };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--proxy" => options.proxy = value,
            "--count" => options.count = value.parse().map_err(|_| "--count: a number")?,
            "--concurrency" => options.concurrency = value.parse().map_err(|_| "--concurrency: a number")?,
            "--user" => options.user = Some(value),
            "--listen" => options.listen = value,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(options)
}

/// Runs `count` jobs over `concurrency` workers; each job reports one latency.
async fn measure<F, Fut>(count: usize, concurrency: usize, job: F) -> Result<(Duration, Vec<Duration>), String>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<Duration, String>> + Send,
{
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency.max(1) {
        let job = job.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in (worker..count).step_by(concurrency.max(1)) {
                latencies.push(job(i).await?);
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.map_err(|e| e.to_string())??);
    }
    Ok((started.elapsed(), latencies))
}

fn report(what: &str, count: usize, elapsed: Duration, mut latencies: Vec<Duration>) {
    latencies.sort();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
        latencies.get(index).map(|d| d.as_micros()).unwrap_or(0)
    };
    println!(
        "RESULT what={what} count={count} seconds={:.3} rate={:.1} p50_us={} p99_us={}",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        percentile(0.50),
        percentile(0.99)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_signin: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let options = options()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: Http = Client::builder(TokioExecutor::new()).build(connector);
    let user = options.user.clone().unwrap_or_else(bench_user);
    match options.mode.as_str() {
        "sink" => return sink(&options.listen).await,
        "cookie" => {
            let mut browser = Browser::new(http, &options.proxy);
            browser.sign_in(&user).await?;
            // Only the session's cookies remain: the sign-in attempt's cookie was cleared.
            println!("{}", browser.cookie_header());
        }
        "cold" => {
            // Whole sign-ins from a fresh browser each; the callback (code exchange, ID token
            // validation, sealing the session) is timed on its own.
            let (proxy, http2) = (options.proxy.clone(), http.clone());
            let (elapsed, latencies) = measure(options.count, options.concurrency, move |_| {
                let (proxy, http, user) = (proxy.clone(), http2.clone(), user.clone());
                async move { Ok(Browser::new(http, &proxy).sign_in(&user).await?.1) }
            })
            .await?;
            report("cold_sign_in", options.count, elapsed, latencies);
        }
        "refresh" => {
            // Each worker signs in once; the dev proxy's access tokens expire as they are issued
            // (`--access-token-ttl 0s`), so every request is due: one refresh per request, and the
            // rotated cookie is sent with the next one.
            let mut browsers = Vec::new();
            for _ in 0..options.concurrency.max(1) {
                let mut browser = Browser::new(http.clone(), &options.proxy);
                browser.sign_in(&user).await?;
                browsers.push(std::sync::Arc::new(tokio::sync::Mutex::new(browser)));
            }
            let concurrency = browsers.len();
            let (elapsed, latencies) = measure(options.count, concurrency, move |i| {
                let browser = browsers[i % concurrency].clone();
                async move {
                    let mut browser = browser.lock().await;
                    let started = Instant::now();
                    let answer = browser.request(Method::GET, "/bench", &[("accept", "application/json")], String::new()).await?;
                    let latency = started.elapsed();
                    expect(&answer, StatusCode::OK, "a request due for refresh")?;
                    if answer.set_cookies.is_empty() {
                        return Err("the request was not refreshed (no new cookie): is the dev proxy run with --access-token-ttl 0s?".into());
                    }
                    Ok(latency)
                }
            })
            .await?;
            report("refresh_per_request", options.count, elapsed, latencies);
        }
        other => return Err(format!("unknown mode {other}: cookie, cold or refresh")),
    }
    Ok(())
}

/// An OTLP/HTTP receiver for the benchmark's traced runs: counts each export's spans (checking
/// one export in 100 by decoding it whole) and prints the running count once a second.
async fn sink(listen: &str) -> Result<(), String> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SPANS: AtomicU64 = AtomicU64::new(0);
    static EXPORTS: AtomicU64 = AtomicU64::new(0);
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("--listen {listen}: {e}"))?;
    tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            println!("SPANS {}", SPANS.load(Ordering::Relaxed));
        }
    });
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let counted = count_spans(&body);
                let checked = !EXPORTS.fetch_add(1, Ordering::Relaxed).is_multiple_of(100)
                    || ExportTraceServiceRequest::decode(body.clone()).is_ok_and(|export| {
                        Some(export.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum::<usize>()) == counted
                    });
                let status = match counted {
                    Some(n) if checked => {
                        SPANS.fetch_add(n as u64, Ordering::Relaxed);
                        StatusCode::OK
                    }
                    _ => StatusCode::BAD_REQUEST,
                };
                Ok::<_, std::convert::Infallible>(http::Response::builder().status(status).body(Full::new(Bytes::new())).unwrap())
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
        });
    }
}

/// The spans of an `ExportTraceServiceRequest`: the `spans` (2) of each `scope_spans` (2) of each
/// `resource_spans` (1), counted by walking the fields. `None` when it is not well-formed.
fn count_spans(message: &[u8]) -> Option<usize> {
    /// Each field of `message`: its number, and its bytes when length-delimited.
    fn fields(mut buf: &[u8], mut each: impl FnMut(u32, Option<&[u8]>) -> Option<()>) -> Option<()> {
        use prost::encoding::decode_varint;
        while !buf.is_empty() {
            let key = decode_varint(&mut buf).ok()?;
            let (field, wire) = ((key >> 3) as u32, key & 7);
            let skip = match wire {
                0 => {
                    decode_varint(&mut buf).ok()?;
                    0
                }
                1 => 8,
                5 => 4,
                2 => {
                    let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                    let body = buf.get(..len)?;
                    each(field, Some(body))?;
                    len
                }
                _ => return None,
            };
            buf = buf.get(skip..)?;
        }
        Some(())
    }
    let mut n = 0;
    fields(message, |f, body| match (f, body) {
        (1, Some(resource_spans)) => fields(resource_spans, |f, body| match (f, body) {
            (2, Some(scope_spans)) => fields(scope_spans, |f, body| {
                n += usize::from(f == 2 && body.is_some());
                Some(())
            }),
            _ => Some(()),
        }),
        _ => Some(()),
    })?;
    Some(n)
}
