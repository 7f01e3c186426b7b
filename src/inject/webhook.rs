//! The webhook's HTTPS listener: `POST /mutate` (AdmissionReview v1) and `GET /healthz`.
//!
//! The API server is the only client that matters, and it gives up after the webhook's
//! `timeoutSeconds`: so every connection has a TLS-handshake and header deadline, bodies are
//! capped, and on SIGTERM the listener stops accepting and finishes in-flight reviews for a few
//! seconds (the chart's other replica keeps answering meanwhile).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::certs::{CertError, ReloadingCert};
use super::{default_image, review, InjectorSettings, WebhookArgs};

/// The largest AdmissionReview accepted (the API server's own request limit is 3 MiB; a review
/// carries the object once, plus envelope).
const MAX_BODY: usize = 6 * 1024 * 1024;
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
    let acceptor = TlsAcceptor::from(Arc::new(certs.server_config()?));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
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
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let settings = settings.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
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
                        let settings = settings.clone();
                        async move { Ok::<_, Infallible>(handle(req, &settings).await) }
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
async fn handle(req: Request<Incoming>, settings: &InjectorSettings) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/mutate") => mutate(req, settings).await,
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (_, "/mutate" | "/healthz") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into()),
        _ => text(StatusCode::NOT_FOUND, "not found: the injector serves POST /mutate and GET /healthz\n".into()),
    }
}

async fn mutate(req: Request<Incoming>, settings: &InjectorSettings) -> Response<Full<Bytes>> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected Content-Type: application/json\n".into());
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, format!("cannot read the AdmissionReview: {e}\n"));
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

fn text(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(message)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
