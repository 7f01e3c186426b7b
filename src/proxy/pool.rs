//! Connections to the app, kept by the server worker that opened them.
//!
//! One [`Pool`] per worker thread: a stack of idle HTTP/1.1 connections (the most recently used on
//! top, so a busy worker keeps reusing warm ones and the cold ones age out) and, when the app
//! negotiated HTTP/2 through ALPN, one multiplexed HTTP/2 connection shared by the worker's
//! requests. A connection's task runs on the runtime that opened it, so handing a request to the
//! app and getting its answer back never wakes another thread.
//!
//! An HTTP/1.1 connection goes back on the stack when the response body has been read to its end
//! ([`Pooled`]): no task waits for it to become idle. A connection whose body was not read to the
//! end (the browser went away) is closed by hyper, not reused. Before reuse a connection must say
//! it is ready — the app may have closed it while it was idle — and a request the connection did
//! not take is sent again on another one; a request that was written is never sent twice.
//!
//! hyper-util's pooled client did the same with a pool shared by key (hashed with SipHash byte by
//! byte, several times a request), a checkout future and a task spawned per request to wait for
//! the connection to become idle: 15% of a proxied request's instructions. This is the part of it a
//! proxy with a single upstream needs.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tower_service::Service;

use crate::body::{self, Body, BoxError};

/// The most an HTTP/1.1 connection to the app reads ahead of what the browser takes.
const MAX_READ_AHEAD: usize = 64 * 1024;

/// Why [`Pool::send`] failed.
#[derive(Debug)]
pub(super) enum SendError {
    /// No connection: DNS, TCP connect (refused, timed out) or the TLS handshake failed.
    Connect(BoxError),
    /// The connection failed during the exchange, or the answer is not HTTP.
    Exchange(BoxError),
}

/// What a pool is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// Ordinary requests: connections are kept and reused.
    Requests,
    /// Upgrade requests (websockets): each gets a new HTTP/1.1 connection of its own, which
    /// becomes the tunnel after `101`.
    Upgrades,
}

/// Connections to one app for one worker; see the module doc.
pub(super) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// Where the connector dials: the app's scheme and authority.
    address: Uri,
    /// `Host` for HTTP/1.1 requests that do not carry the browser's: the app's host, with its port
    /// unless it is the scheme's default.
    own_host: HeaderValue,
    purpose: Purpose,
    max_idle: usize,
    idle_timeout: Duration,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    /// Idle HTTP/1.1 connections, the most recently used last, with the moment each went idle.
    http1: Vec<(http1::SendRequest<Body>, Instant)>,
    /// The worker's HTTP/2 connection, while it lasts.
    http2: Option<http2::SendRequest<Body>>,
}

/// A connection taken from the pool or just opened.
enum Conn {
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

impl Pool {
    /// A pool of connections made with `connector` to `address` (scheme and authority).
    pub(super) fn new(
        connector: HttpsConnector<HttpConnector>,
        address: Uri,
        own_host: HeaderValue,
        purpose: Purpose,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Pool {
        Pool { connector, address, own_host, purpose, max_idle, idle_timeout, idle: Mutex::new(Idle::default()) }
    }

    /// Sends `req` (absolute URI: the app's scheme and authority, the request's path and query)
    /// on a pooled or new connection and returns the response head; the body streams from the app.
    pub(super) async fn send(self: &Arc<Self>, mut req: Request<Body>) -> Result<Response<Body>, SendError> {
        loop {
            let (conn, fresh) = match self.checkout() {
                Some(conn) => (conn, false),
                // Boxed: connecting (TCP, TLS, the HTTP handshake) is a large state machine, and
                // kept inline it would be part of every request's future — moved into place by
                // hyper on each request (the handler's future was 17 KB with it, KB without).
                None => (Box::pin(self.connect()).await?, true),
            };
            let unsent = match conn {
                Conn::Http2(mut sender) => match sender.try_send_request(req).await {
                    Ok(response) => return Ok(response.map(body::stream)),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) if !fresh => {
                            self.forget_http2();
                            unsent
                        }
                        _ => return Err(SendError::Exchange(e.into_error().into())),
                    },
                },
                Conn::Http1(mut sender) => {
                    // A pooled connection was checked ready; a new one takes its first request
                    // before its task has run (hyper buffers one).
                    origin_form(&mut req, &self.own_host);
                    match sender.try_send_request(req).await {
                        Ok(response) => return Ok(self.pooled(sender, response)),
                        Err(mut e) => match e.take_message() {
                            Some(unsent) if !fresh => unsent,
                            _ => return Err(SendError::Exchange(e.into_error().into())),
                        },
                    }
                }
            };
            // The connection closed before taking the request: nothing reached the app.
            req = unsent;
        }
    }

    /// An idle connection, if one is usable: the shared HTTP/2 one, or the most recently used
    /// HTTP/1.1 one that has not been idle too long and is ready for a request now.
    ///
    /// A connection is never waited for. One found closed (the app's keep-alive timeout) is
    /// dropped; so is one not ready yet: its response ended while the browser was still uploading
    /// the request body (the app answered without reading it all), and it is ready only when that
    /// upload is over — hyper closes it after the upload instead of it holding up this request.
    fn checkout(&self) -> Option<Conn> {
        if self.purpose == Purpose::Upgrades {
            return None;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = &idle.http2 {
            if !sender.is_closed() {
                return Some(Conn::Http2(sender.clone()));
            }
            idle.http2 = None;
        }
        while let Some((sender, since)) = idle.http1.pop() {
            if since.elapsed() > self.idle_timeout {
                // The rest of the stack went idle even earlier.
                idle.http1.clear();
                return None;
            }
            if sender.is_ready() {
                return Some(Conn::Http1(sender));
            }
        }
        None
    }

    /// Opens a connection: TCP (and TLS for `https`), then the HTTP handshake the ALPN result asks
    /// for. The connection's task runs on this worker's runtime.
    async fn connect(&self) -> Result<Conn, SendError> {
        let io = self.connector.clone().call(self.address.clone()).await.map_err(SendError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| SendError::Connect(e.into()))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "HTTP/2 connection to the app ended");
                }
            });
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.http2 = Some(sender.clone());
            return Ok(Conn::Http2(sender));
        }
        let (sender, connection) = http1::Builder::new()
            // What one connection may read ahead of the browser: hyper's default (~400 KB) let
            // each response a client was slow to take hold that much (a hundred streams never
            // read: 100 MB); 64 KB still fills a fast link with few reads.
            .max_buf_size(MAX_READ_AHEAD)
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        match self.purpose {
            Purpose::Upgrades => tokio::spawn(async move {
                if let Err(e) = connection.with_upgrades().await {
                    tracing::debug!(error = %e, "connection to the app ended");
                }
            }),
            Purpose::Requests => tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection to the app ended");
                }
            }),
        };
        Ok(Conn::Http1(sender))
    }

    /// The response, its body returning `sender` to the pool once read to the end.
    fn pooled(self: &Arc<Self>, sender: http1::SendRequest<Body>, response: Response<Incoming>) -> Response<Body> {
        if self.purpose == Purpose::Upgrades {
            return response.map(body::stream);
        }
        if http_body::Body::is_end_stream(response.body()) {
            self.checkin(sender);
            return response.map(body::stream);
        }
        let pool = Arc::clone(self);
        response.map(|inner| body::stream(Pooled { inner, sender: Some(sender), pool }))
    }

    /// Puts an HTTP/1.1 connection whose exchange is over back on the stack.
    fn checkin(&self, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.http1.len() < self.max_idle {
            idle.http1.push((sender, Instant::now()));
        }
    }

    /// Stops handing out the HTTP/2 connection (it refused a request: it is going away).
    fn forget_http2(&self) {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).http2 = None;
    }
}

/// HTTP/1.1 wants the origin form (`/path?query`) and a `Host`: the browser's when the caller kept
/// it (`preserve_host`), the app's own otherwise.
fn origin_form(req: &mut Request<Body>, own_host: &HeaderValue) {
    if !req.headers().contains_key(header::HOST) {
        req.headers_mut().insert(header::HOST, own_host.clone());
    }
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
}

/// A response body from a pooled HTTP/1.1 connection: at its end the connection goes back to the
/// pool; dropped before its end, the connection goes with it.
struct Pooled {
    inner: Incoming,
    sender: Option<http1::SendRequest<Body>>,
    pool: Arc<Pool>,
}

impl http_body::Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(_)) if !self.inner.is_end_stream() => {}
            Some(Err(_)) => self.sender = None,
            _ => {
                if let Some(sender) = self.sender.take() {
                    self.pool.checkin(sender);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
