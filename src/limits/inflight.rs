//! Requests in flight: admitting them under the caps, and following their response bodies until
//! the last byte is taken (or the sweeper gives up on them).
//!
//! A request is in flight from its head to the end of its response body: that is how long a
//! proxied one holds a connection to the app. [`InFlight`] is the request's place — on its
//! connection, in the global count and in its client's — given back when it is dropped; it travels
//! inside the response body ([`Tracked`]), so a response the client is slow to read keeps its place.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderName;
use http::{Request, Version};
use http_body::{Frame, SizeHint};

use super::connection::{next_progress, Connection, Stream, StreamMark, BEGUN};
use super::{Admission, Refusal};
use crate::body::{Body, BoxError};

/// One request's place: on its connection and, once [`InFlight::admit`]ted, under the request caps.
pub(crate) struct InFlight {
    conn: Arc<Connection>,
    admitted: Option<Admission>,
    http2: bool,
    /// The tunnel this request may become (an upgrade request).
    tunnel: Option<Arc<Tunnel>>,
}

impl InFlight {
    /// Counts `req` on `conn`. Not yet admitted under the request caps.
    pub(crate) fn begin<B>(conn: &Arc<Connection>, req: &Request<B>) -> InFlight {
        let http2 = req.version() == Version::HTTP_2;
        conn.requests.fetch_add(BEGUN | 1, Ordering::Relaxed);
        if http2 {
            conn.http2.store(true, Ordering::Relaxed);
        } else {
            // Until there is a response body, it is the app's (or the proxy's) turn.
            let word = conn.progress.load(Ordering::Relaxed);
            conn.progress.store(next_progress(word, true), Ordering::Relaxed);
        }
        InFlight { conn: Arc::clone(conn), admitted: None, http2, tunnel: None }
    }

    /// Takes a place under `max_requests_per_client` and `max_requests_in_flight`, or says which is
    /// reached. The client is the TCP peer — or, behind a trusted proxy, the address it put last in
    /// `X-Forwarded-For`.
    pub(crate) fn admit<B>(&mut self, req: &Request<B>) -> Result<(), Refusal> {
        let limits = &self.conn.limits;
        let client = if limits.clients_from_forwarded() {
            last_forwarded_for(req).unwrap_or_else(|| self.conn.peer().ip())
        } else {
            self.conn.peer().ip()
        };
        self.admitted = Some(limits.admit(limits.clients.slot(client))?);
        Ok(())
    }

    /// The response body, followed until its end.
    pub(crate) fn respond(self, body: Body) -> Tracked {
        let watched = if self.http2 {
            let stream = Arc::new(Stream {
                body: Mutex::new(Some(body)),
                progress: AtomicU64::new(next_progress(0, false)),
                mark: Mutex::new(StreamMark::default()),
            });
            self.conn.streams.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::clone(&stream));
            Watched::Http2(stream)
        } else {
            let word = self.conn.progress.load(Ordering::Relaxed);
            self.conn.progress.store(next_progress(word, false), Ordering::Relaxed);
            Watched::Http1(body)
        };
        Tracked { watched, flight: self }
    }

    /// A hold for a protocol upgrade (a websocket): while the tunnel that replaces the request
    /// lives, its connection counts as open and, once the upgrade happens
    /// ([`UpgradeHold::adopt`]), the request's place under the request caps passes to the
    /// tunnel — it holds a connection to the app like any request in flight, so a client cannot
    /// open more tunnels than `max_requests_per_client`.
    pub(crate) fn upgrade_hold(&mut self) -> UpgradeHold {
        let tunnel = Arc::new(Tunnel { conn: Arc::clone(&self.conn), slot: self.admitted, state: AtomicU8::new(REQUEST) });
        self.tunnel = Some(Arc::clone(&tunnel));
        UpgradeHold { tunnel }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.requests.fetch_sub(1, Ordering::Relaxed);
        let adopted = self.tunnel.as_ref().is_some_and(|t| t.state.compare_exchange(REQUEST, ENDED, Ordering::AcqRel, Ordering::Acquire).is_err());
        if let (Some(slot), false) = (self.admitted, adopted) {
            self.conn.limits.release(slot);
        }
    }
}

/// Keeps a connection counted as open, and its tunnel's place under the request caps, while its
/// upgraded tunnel (a websocket) lives; carried in the request's extensions to the tunnel.
#[derive(Clone)]
pub struct UpgradeHold {
    tunnel: Arc<Tunnel>,
}

impl UpgradeHold {
    /// The upgrade happens: the request's place under the caps is the tunnel's from now on, given
    /// back when the last copy of this hold is dropped.
    pub fn adopt(&self) {
        let _ = self.tunnel.state.compare_exchange(REQUEST, ADOPTED, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Who gives back the place of an upgrade request: the request ([`REQUEST`], then [`ENDED`]) or,
/// once adopted, its tunnel ([`ADOPTED`]). Exactly one of them does.
struct Tunnel {
    conn: Arc<Connection>,
    slot: Option<Admission>,
    state: AtomicU8,
}

const REQUEST: u8 = 0;
const ADOPTED: u8 = 1;
const ENDED: u8 = 2;

impl Drop for Tunnel {
    fn drop(&mut self) {
        if let (Some(slot), ADOPTED) = (self.slot, self.state.load(Ordering::Acquire)) {
            self.conn.limits.release(slot);
        }
    }
}

impl std::fmt::Debug for UpgradeHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpgradeHold")
    }
}

/// The address a trusted proxy saw: the last `X-Forwarded-For` entry, as `IP`, `IP:port`
/// (Azure Application Gateway), `[IPv6]` or `[IPv6]:port`.
fn last_forwarded_for<B>(req: &Request<B>) -> Option<IpAddr> {
    static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    let last = req.headers().get_all(&X_FORWARDED_FOR).iter().next_back()?;
    forwarded_address(last.to_str().ok()?.rsplit(',').next()?.trim())
}

fn forwarded_address(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

enum Watched {
    Http1(Body),
    Http2(Arc<Stream>),
}

/// A response body on its way to the client, holding its request's [`InFlight`] place and telling
/// the sweeper, at every poll, whose turn it is: the app's (nothing to send yet) or the client's
/// (data handed over, waiting to be asked for more).
pub struct Tracked {
    watched: Watched,
    flight: InFlight,
}

/// The error a response abandoned by the sweeper ends with (hyper resets the stream).
#[derive(Debug, thiserror::Error)]
#[error("response abandoned: the client did not read it for limits.send_timeout")]
struct Abandoned;

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let (polled, progress) = match &mut this.watched {
            Watched::Http1(body) => (Pin::new(body).poll_frame(cx), &this.flight.conn.progress),
            Watched::Http2(stream) => {
                let mut body = stream.body.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(body) = body.as_mut() else { return Poll::Ready(Some(Err(Abandoned.into()))) };
                (Pin::new(body).poll_frame(cx), &stream.progress)
            }
        };
        let word = progress.load(Ordering::Relaxed);
        progress.store(next_progress(word, polled.is_pending()), Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.watched {
            Watched::Http1(body) => body.is_end_stream(),
            // An abandoned body is not at its end: it ends with an error.
            Watched::Http2(stream) => stream.body.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|b| b.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.watched {
            Watched::Http1(body) => body.size_hint(),
            Watched::Http2(stream) => stream.body.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|b| b.size_hint()).unwrap_or_default(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Watched::Http2(stream) = &self.watched {
            let mut streams = self.flight.conn.streams.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = streams.iter().position(|s| Arc::ptr_eq(s, stream)) {
                streams.swap_remove(i);
            }
        }
    }
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked").field("http2", &self.flight.http2).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_forwarded_address_may_carry_a_port_or_brackets() {
        for (entry, ip) in [
            ("192.0.2.7", "192.0.2.7"),
            ("192.0.2.7:50132", "192.0.2.7"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
        ] {
            assert_eq!(super::forwarded_address(entry), Some(ip.parse().unwrap()), "{entry}");
        }
        for entry in ["unknown", "_hidden", "", "192.0.2.7:x", "[192.0.2.7"] {
            assert_eq!(super::forwarded_address(entry), None, "{entry}");
        }
    }
}
