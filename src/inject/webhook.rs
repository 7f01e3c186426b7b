//! The webhook's HTTPS listener: `POST /mutate` (AdmissionReview v1) and `GET /healthz`.
//!
//! The API server is the only client that matters, and it gives up after the webhook's
//! `timeoutSeconds`. The webhook fails closed (`failurePolicy: Fail`), so an injector that runs
//! out of memory blocks every labelled pod in the cluster: what one client can make it hold is
//! bounded. Connections are capped ([`MAX_CONNECTIONS`]; more are closed on arrival) and have a
//! TLS-handshake and header deadline; a review's body is capped at what the API server sends
//! ([`MAX_REVIEW_BYTES`]) and must arrive within [`REVIEW_DEADLINE`]; at most
//! [`MAX_CONCURRENT_REVIEWS`] bodies are held at once, and reading one costs little more than
//! the body (see [`super::scan`]). On SIGTERM the listener stops accepting and finishes
//! in-flight reviews for a few seconds (the chart's other replica keeps answering meanwhile).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::tls::serving::{CertError, ReloadingCert};
use super::{default_image, review, InjectorSettings, WebhookArgs};

/// The largest AdmissionReview accepted: the API server's own limit on a request body. A pod it
/// can store is smaller still (etcd keeps objects under 1.5 MiB), and a CREATE review carries
/// the pod once.
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;
/// Time for a review's body to arrive, waiting for a turn included, from its headers on. The
/// API server sends the body at once and gives up after `timeoutSeconds` (10 in the chart).
pub const REVIEW_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed on arrival. The API server multiplexes its
/// reviews over a few HTTP/2 connections, and the kubelet probes open one at a time.
pub const MAX_CONNECTIONS: usize = 64;
/// Reviews whose bodies are read and answered at once; the others wait for a turn (within
/// their deadline) with their bodies unread.
pub const MAX_CONCURRENT_REVIEWS: usize = 4;
/// HTTP/2 streams per connection.
const MAX_STREAMS: u32 = 16;
/// HTTP/2 receive windows: what a client may send ahead of the reader, per stream and per
/// connection (the default, 1 MiB, times [`MAX_CONNECTIONS`] would be 64 MiB of waiting data).
const H2_WINDOW: u32 = 256 * 1024;
/// HTTP/1 read buffer (headers must fit; bodies stream through it).
const H1_MAX_BUF: usize = 64 * 1024;
/// Time for a client to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a client to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time given to in-flight reviews on shutdown (the API server waits at most 30 s for one).
const DRAIN: Duration = Duration::from_secs(10);

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A flag is invalid.
    #[error("{0}")]
    Flag(String),
    /// The serving certificate did not load.
    #[error("serving certificate: {0}")]
    Cert(#[from] CertError),
    /// rustls refused the configuration (a build problem).
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// `trousseau-proxy inject-webhook`: serves until SIGTERM/SIGINT.
pub async fn run(args: WebhookArgs) -> Result<(), WebhookError> {
    let addr: SocketAddr = args
        .listen
        .parse()
        .map_err(|_| WebhookError::Flag(format!("--listen `{}` is not an address like 0.0.0.0:8443", args.listen)))?;
    let native_sidecar = args.native_sidecar.resolve(args.kube_version.as_deref()).map_err(WebhookError::Flag)?;
    if args.cert_reload_seconds == 0 {
        return Err(WebhookError::Flag("--cert-reload-seconds must be at least 1".into()));
    }
    let settings = Arc::new(InjectorSettings { image: args.image.unwrap_or_else(default_image), native_sidecar });
    let certs = Arc::new(ReloadingCert::load(&args.tls_cert, &args.tls_key)?);
    let listener = TcpListener::bind(addr).await.map_err(|source| WebhookError::Bind { addr, source })?;
    tokio::spawn(certs.clone().watch(Duration::from_secs(args.cert_reload_seconds)));
    tracing::info!(
        listen = %addr, image = %settings.image, native_sidecar,
        kube_version = args.kube_version.as_deref().unwrap_or("-"),
        "trousseau-proxy injector listening"
    );
    serve(listener, certs, settings, crate::server::shutdown_signal()).await
}

/// Serves reviews on `listener` with the certificate of `certs` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    certs: Arc<ReloadingCert>,
    settings: Arc<InjectorSettings>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    let acceptor = TlsAcceptor::from(Arc::new(certs.server_config(None)?));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(H1_MAX_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .initial_stream_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_WINDOW)
        .max_header_list_size(H1_MAX_BUF as u32);
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let reviews = Arc::new(Semaphore::new(MAX_CONCURRENT_REVIEWS));
    // Warn once when the cap is reached, not once per refused connection.
    let mut at_cap = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    if !at_cap {
                        tracing::warn!(%peer, max = MAX_CONNECTIONS, "connection limit reached: closing new connections");
                        at_cap = true;
                    }
                    continue;
                };
                at_cap = false;
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let settings = settings.clone();
                let reviews = reviews.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    // Held for the life of the connection.
                    let _permit = permit;
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let (settings, reviews) = (settings.clone(), reviews.clone());
                        async move { Ok::<_, Infallible>(handle(req, &settings, &reviews).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("injector shutting down: finishing in-flight reviews");
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain time over: closing the remaining connections");
    }
    Ok(())
}

/// Routes one request.
async fn handle(req: Request<Incoming>, settings: &InjectorSettings, reviews: &Semaphore) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/mutate") => mutate(req, settings, reviews).await,
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (_, "/mutate" | "/healthz") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into()),
        _ => text(StatusCode::NOT_FOUND, "not found: the injector serves POST /mutate and GET /healthz\n".into()),
    }
}

async fn mutate(req: Request<Incoming>, settings: &InjectorSettings, reviews: &Semaphore) -> Response<Full<Bytes>> {
    let deadline = Instant::now() + REVIEW_DEADLINE;
    let version = req.version();
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected Content-Type: application/json\n".into());
    }
    let announced = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_REVIEW_BYTES as u64) {
        return closing(version, too_large());
    }
    // A turn first, then the body: waiting reviews hold nothing but their connection.
    let Ok(Ok(_turn)) = tokio::time::timeout_at(deadline, reviews.acquire()).await else {
        tracing::warn!("review not read within its deadline: the injector is busy");
        return closing(version, text(StatusCode::SERVICE_UNAVAILABLE, "the injector is busy: try again\n".into()));
    };
    let capacity = announced.map_or(0, |n| n as usize);
    let body = match tokio::time::timeout_at(deadline, read_body(req.into_body(), capacity)).await {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => return closing(version, too_large()),
        Ok(Err(BodyError::Read(e))) => {
            return closing(version, text(StatusCode::BAD_REQUEST, format!("cannot read the AdmissionReview: {e}\n")));
        }
        Err(_) => {
            tracing::warn!(deadline = ?REVIEW_DEADLINE, "review body not received within its deadline: cut");
            let late = text(StatusCode::REQUEST_TIMEOUT, "the AdmissionReview did not arrive in time\n".into());
            return closing(version, late);
        }
    };
    match review(&body, settings) {
        Ok(answer) => match serde_json::to_vec(&answer) {
            Ok(json) => {
                let mut r = Response::new(Full::new(Bytes::from(json)));
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the answer: {e}\n")),
        },
        Err(e) => {
            tracing::warn!(error = %e, "malformed admission request");
            text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
    }
}

/// Why a review's body could not be read.
#[derive(Debug)]
enum BodyError {
    /// Over [`MAX_REVIEW_BYTES`].
    TooLarge,
    /// The connection failed.
    Read(hyper::Error),
}

/// Reads a body of at most [`MAX_REVIEW_BYTES`] into one buffer (sized from `Content-Length`
/// when given, so the body is never held twice).
async fn read_body(mut body: Incoming, capacity: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(capacity.min(MAX_REVIEW_BYTES));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_REVIEW_BYTES {
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

fn too_large() -> Response<Full<Bytes>> {
    text(StatusCode::PAYLOAD_TOO_LARGE, format!("an AdmissionReview is at most {MAX_REVIEW_BYTES} bytes\n"))
}

/// `response`, closing an HTTP/1 connection whose request body was left unread (HTTP/2 resets
/// only the stream).
fn closing(version: Version, mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    if version <= Version::HTTP_11 {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn text(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(message)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
